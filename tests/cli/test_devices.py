"""Device strings: cpu, cuda and auto are accepted; every other backend is refused in one line, from the CLI too."""

import subprocess
import sys

import pytest
import torch

from emvi.errors import ConfigError
from emvi.validation import resolve_device


@pytest.mark.parametrize("device", ["meta", "mps", "xpu", "hpu", "ipu", "privateuseone", "cuda:x", "", "cuda:99"])
def test_unsupported_or_absent_devices_are_refused_in_one_line(device):
    if device == "cuda:99" and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    with pytest.raises(ConfigError) as caught:
        resolve_device(device)
    assert "\n" not in str(caught.value)


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_the_cli_exits_2_without_a_traceback_and_creates_nothing(tmp_path, device):
    out = subprocess.run([sys.executable, "-m", "emvi.cli", "fit", "mixture", "--dataset", "digits", "-k", "2",
                          "--device", device, "--out", str(tmp_path / "runs")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0
    assert not (tmp_path / "runs").exists()
