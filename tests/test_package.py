"""Packaging properties: the source tree imports without installation, layers import one way, the CLI exits cleanly."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emvi"


def test_source_tree_imports_without_installation(tmp_path):
    code = "import sys; sys.path.insert(0, sys.argv[1]); import emvi, emvi.cli; print(emvi.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-S", "-c", "import site; site.main(); " + code, str(ROOT)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()).resolve() == (PACKAGE / "__init__.py").resolve()


def test_import_is_light():
    code = "import sys, emvi; print(sorted(m for m in ('matplotlib', 'arviz', 'torchvision', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                parts = list(path.relative_to(ROOT).with_suffix("").parts)[: -node.level]
                names.add(".".join(parts + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


# What each layer may import from emvi (ARCHITECTURE.md).
ALLOWED = {
    "guides": {"emvi.guides", "emvi._plates", "emvi.distributions", "emvi.nn", "emvi.errors", "emvi._validation"},
    "models": {"emvi.models", "emvi.guides", "emvi._plates", "emvi.distributions", "emvi.nn", "emvi.errors",
               "emvi._validation", "emvi.registry"},
    "data": {"emvi.data", "emvi.errors", "emvi._validation", "emvi.registry"},
    "inference": {"emvi.inference", "emvi._plates", "emvi.distributions", "emvi.models", "emvi.guides", "emvi.nn", "emvi.errors", "emvi._validation",
                  "emvi.registry", "emvi.config"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_one_way(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in _imports(path):
            if name == "emvi" or name.startswith("emvi."):
                if name == "emvi" or not any(name == a or name.startswith(a + ".") for a in ALLOWED[layer]):
                    offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_nothing_imports_the_cli():
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if p.name != "cli.py" and "emvi.cli" in _imports(p)]
    assert not offenders


def _emvi(*args, env=None):
    return subprocess.run([sys.executable, "-m", "emvi.cli", *args], capture_output=True, text=True, env=env)


def test_cli_help_lists_commands():
    out = _emvi("--help")
    assert out.returncode == 0
    for command in ("fit", "evaluate", "sample", "models"):
        assert command in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "no-such-model"], "invalid choice"),
        (["evaluate", "/no/such/run"], "not an emvi run directory"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_exit_nonzero_with_one_line(args, message):
    out = _emvi(*args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emvi: error:") and message in lines[0]
