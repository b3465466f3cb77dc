"""benchmarks/device_check.py runs in its reduced form on the CPU (so it cannot rot) and, where CUDA is present, on
the GPU against the CPU."""

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
])
def test_every_case_runs_and_agrees_with_the_cpu(device, capsys):
    report = load_benchmark("device_check").main(["--quick", "--device", device])
    assert set(report["cases"]) == {"vae", "gmvae", "mixture_em", "hmm_em", "declared_svi", "nuts"}
    for name, case in report["cases"].items():
        assert case["ok"], f"{name}: {case}"
        if device == "cpu":  # the same seed on the same device is the same computation
            assert case["rel_diff"] == 0.0, name
