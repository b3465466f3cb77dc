"""Every example spec under examples/ parses, round-trips through its resolved form and trains for a few steps."""

from pathlib import Path

import pytest
from conftest import mnist_root

from emvi.spec import load_spec, parse_spec, run_spec

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "examples").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_spec_parses_round_trips_and_trains(path, tmp_path):
    spec = load_spec(path)
    assert parse_spec(spec.to_dict()) == spec
    overrides = [f"outputs.run_dir={str(tmp_path / 'run')!r}", "outputs.plots=false", "inference.progress=false"]
    if spec.method == "svi":
        overrides += ["inference.epochs=1"]
    if spec.data.dataset in ("mnist", "fashion-mnist"):
        root = mnist_root()
        if root is None:
            pytest.skip("MNIST data root absent (set EMVI_DATA); CI always has it")
        overrides += [f"data.data_root={str(root)!r}", "data.limit=256"]
    small = load_spec(path, overrides)
    run_dir = run_spec(small)
    assert (run_dir / "spec.toml").is_file() and (run_dir / "summary.json").is_file()
