import os
import sys
from pathlib import Path

import pyro
import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # toy_models, resume_script, benchmark_scripts

DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"

if os.environ.get("PYTEST_XDIST_WORKER"):  # pytest -n: one torch thread per worker, so workers do not oversubscribe
    torch.set_num_threads(1)


def mnist_root() -> Path | None:
    """MNIST root from $EMVI_DATA (CI sets it), else the shared folder beside the checkout, else None."""
    env = os.environ.get("EMVI_DATA")
    for candidate in ([Path(env)] if env else []) + [DEFAULT_DATA_ROOT]:
        if (candidate / "MNIST" / "raw").is_dir():
            return candidate
    if os.environ.get("CI") and env:
        raise RuntimeError(f"CI sets EMVI_DATA={env} but MNIST/raw is not there")
    return None


@pytest.fixture
def mnist_data_root():
    root = mnist_root()
    if root is None:
        pytest.skip("MNIST data root absent (set EMVI_DATA); CI always has it")
    return root


@pytest.fixture(autouse=True)
def _fresh_seed():
    torch.manual_seed(0)
    pyro.clear_param_store()  # a test that leaves pyro.param values behind must not reach the next one
    yield


def pytest_addoption(parser):
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="run tests/cli/test_fuzz.py with a large example budget (CI runs a fixed-seed small one)")


@pytest.fixture
def float64():
    """Run the test with torch's default dtype float64 (restored afterwards): exact-identity checks at 1e-10."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(previous)


@pytest.fixture
def record_calls(monkeypatch):
    """``(seen, wrap)``: ``wrap(module, name)`` replaces ``module.name`` for the test by a function that calls it and
    keeps its last call in ``seen[name] = (args, result)``."""
    seen = {}

    def wrap(module, name):
        function = getattr(module, name)

        def recorded(*args, **kwargs):
            seen[name] = (args, result := function(*args, **kwargs))
            return result
        monkeypatch.setattr(module, name, recorded)
    return seen, wrap
