"""docs/guide/declaring.md runs as written: its Python blocks in order in one namespace, its `emvi` commands through the
CLI, from a copy of the repository's examples; the values its comments state are checked."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from emvi.cli import main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide" / "declaring.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block, in order."""
    return re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.slow
def test_every_example_of_the_declarations_guide_runs(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples" / "declared", tmp_path / "examples" / "declared")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "declarations_guide"}
    found = blocks(GUIDE.read_text(encoding="utf-8"))
    assert {language for language, _ in found} == {"python", "bash"}
    for language, code in found:
        if language == "python":
            exec(compile(code, str(GUIDE), "exec"), namespace)  # noqa: S102 - the guide's own examples
            continue
        for line in code.strip().splitlines():
            assert main(shlex.split(line)[1:]) == 0, line
    fitted = namespace["fitted"]
    assert fitted["x_rate_weight_c"].shape == (2, 1) and fitted["x_rate_bias"].shape == (2, 1)
    assert namespace["idata"].posterior["x_rate_weight_c"].dims == ("chain", "draw", "z", "x_feature")
    assert namespace["idata"].posterior.attrs["log_likelihood"] == ("the exact log p(x_n | c_n), with z summed out "
                                                                    "exactly")
    assert namespace["model"].parameters_dict()["x_scale"].shape == (3, 2)
    gmm_means = namespace["model"].parameters_dict()["x_loc"]
    assert torch.isfinite(gmm_means).all()
    assert (tmp_path / "runs" / "gmm_em" / "inference_data.nc").is_file()
    assert "held_out_log_likelihood" in capsys.readouterr().out
