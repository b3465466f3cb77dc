"""Special floats and bad sizes in model options: one line, exit 2, no traceback, and no run directory created."""

import subprocess
import sys

import pytest

from emvi.errors import ConfigError
from emvi.models.composed import ComposedConfig
from emvi.models.mixture import MixtureConfig
from emvi.models.ppca import PPCAConfig

CASES = [
    (MixtureConfig, {"floor": float("inf")}, "floor"),
    (MixtureConfig, {"floor": float("nan")}, "floor"),
    (MixtureConfig, {"prior_strength": float("inf")}, "prior_strength"),
    (MixtureConfig, {"weight_concentration": float("inf")}, "weight_concentration"),
    (ComposedConfig, {"weight_concentration": float("nan")}, "weight_concentration"),
    (ComposedConfig, {"weight_concentration": -1.0}, "weight_concentration"),
    (ComposedConfig, {"weight_concentration": 0.0}, "weight_concentration"),
    (ComposedConfig, {"hidden_dims": (0,)}, "hidden_dims"),
    (PPCAConfig, {"hidden_dims": (-1,)}, "hidden_dims"),
]


@pytest.mark.parametrize("config_class, options, name", CASES)
def test_special_floats_and_bad_sizes_are_refused_by_the_config(config_class, options, name):
    with pytest.raises(ConfigError, match=name) as caught:
        config_class(**options)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("args", [
    ["mixture", "-k", "2", "--floor", "inf"],
    ["mixture", "-k", "2", "--family", "gaussian-diag", "--prior-strength", "inf"],
    ["ppca", "--hidden-dims", "-1"],
    ["composed", "--latent", "discrete", "--mapping", "index", "--num-components", "2", "--method", "em",
     "--weight-concentration", "nan"],
])
@pytest.mark.slow
def test_the_cli_refuses_them_in_one_line_and_writes_nothing(tmp_path, args):
    out = subprocess.run([sys.executable, "-m", "emvi.cli", "fit", *args, "--dataset", "digits",
                          "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0, out.stderr
    assert not (tmp_path / "runs").exists()
