"""The CLI's output: `emvi sample --output` never replaces a file it did not write unless asked (--overwrite), and
warnings come after the result or the one-line error, one line each."""

import numpy as np
import pytest

from emvi.cli import main


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae") / "run"
    assert main(["fit", "vae", "--dataset", "digits", "--limit", "40", "--latent-dim", "2", "--hidden-dims", "8",
                 "--epochs", "1", "--run-dir", str(folder), "--no-plots", "--progress", "false"]) == 0
    return folder


@pytest.mark.parametrize("existing", ["draws.npy", "draws.png"])
def test_an_existing_output_or_its_picture_is_refused_without_overwrite(tmp_path, capsys, vae_run, existing):
    (tmp_path / existing).write_bytes(b"someone else's file")
    assert main(["sample", str(vae_run), "--num-samples", "2", "--output", str(tmp_path / "draws.npy")]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.strip().count("\n") == 0
    assert (tmp_path / existing).read_bytes() == b"someone else's file"
    assert main(["sample", str(vae_run), "--num-samples", "2", "--output", str(tmp_path / "draws.npy"),
                 "--overwrite"]) == 0
    assert np.load(tmp_path / "draws.npy").shape[0] == 2


def test_the_runs_own_samples_are_replaced(vae_run):
    for count in (2, 3):
        assert main(["sample", str(vae_run), "--num-samples", str(count)]) == 0
    assert np.load(vae_run / "samples.npy").shape[0] == 3


def test_warnings_come_after_the_one_line_error_one_line_each(tmp_path, capsys, monkeypatch):
    import warnings

    import emvi.cli as cli

    def noisy(argv):
        warnings.warn("first line\nsecond line of a long upstream report", RuntimeWarning, stacklevel=1)
        raise cli.ConfigError("the problem, the value and the fix")

    monkeypatch.setattr(cli, "_dispatch", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert cli.main(["fit"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["emvi: error: the problem, the value and the fix",
                     "emvi: warning: RuntimeWarning: first line second line of a long upstream report"]


def test_newlines_and_terminal_escapes_in_names_stay_on_one_inert_line(tmp_path, capsys):
    name = tmp_path / "bad\nname\x1b[31m.npy"
    assert main(["fit", "mixture", str(name), "-k", "2", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err
    assert "\\n" in err and "\\x1b[31m" in err
