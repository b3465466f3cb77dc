"""User code runs only when the user names it: network classes by path (never a function, never the standard
library), modules searched after the installed packages with sys.path restored, and a run naming a module that is
not installed needs --trust-run-code."""

import sys

import numpy as np
import pytest
import torch

from emvi.errors import ConfigError
from emvi.models.declared import import_object
from emvi.registry import import_user_module


@pytest.mark.parametrize("path, message", [
    ("os:kill", "standard library"),
    ("subprocess:run", "standard library"),
    ("torch.nn.functional:relu", "not an nn.Module class"),
    ("nowhere", "must look like"),
])
def test_a_module_expression_names_a_network_class_only(path, message):
    with pytest.raises(ConfigError, match=message):
        import_object(path)
    assert import_object("torch.nn:Linear") is torch.nn.Linear


def test_a_module_in_the_working_directory_never_shadows_an_installed_one_and_sys_path_is_restored(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tomli_w.py").write_text("raise RuntimeError('the shadowing file ran')\n")
    (tmp_path / "my_models_for_test.py").write_text("import tomli_w\nVALUE = tomli_w.dumps({'a': 1})\n")
    before = list(sys.path)
    try:
        import_user_module("my_models_for_test")
        assert sys.modules["my_models_for_test"].VALUE.strip() == "a = 1"
        assert sys.path == before
    finally:
        sys.modules.pop("my_models_for_test", None)


@pytest.mark.parametrize("source, message", [
    ("raise ValueError('broken on purpose')", "raised ValueError: broken on purpose"),
    ("def f(:\n", "raised SyntaxError"),
    ("import sys\nsys.exit(7)", "called sys.exit(7)"),
])
def test_a_user_module_that_fails_is_one_line(tmp_path, monkeypatch, source, message):
    monkeypatch.chdir(tmp_path)
    name = f"failing_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        import_user_module(name)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["..x", "a/b", "", "x-y"])
def test_import_takes_module_names_only(name):
    with pytest.raises(ConfigError, match="module name"):
        import_user_module(name)


def test_a_run_naming_a_module_that_is_not_installed_needs_consent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "consent_models.py").write_text(
        "from emvi import declare, register_declaration\n"
        "from emvi.declaration import latent, observed, table\n"
        "register_declaration(declare('consent_mixture', latent('z', 'categorical', categories=2),\n"
        "    observed('x', 'normal', loc=table('z'), scale=1.0)))\n")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 1)))
    code = ("import sys; from emvi.cli import main; sys.exit(main(sys.argv[1:]))")
    import subprocess

    def cli(*args):
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                              cwd=tmp_path)

    fitted = cli("--import", "consent_models", "fit", "consent_mixture", "x.npy", "--epochs", "1", "--run-dir", "run",
                 "--no-plots", "--progress", "false")
    assert fitted.returncode == 0, fitted.stderr
    refused = cli("evaluate", "run", "--num-samples", "2")
    assert refused.returncode == 2 and "--trust-run-code" in refused.stderr, refused.stderr
    assert not list((tmp_path / "run").glob("evaluation_*.json"))
    allowed = cli("evaluate", "run", "--num-samples", "2", "--trust-run-code")
    assert allowed.returncode == 0, allowed.stderr
