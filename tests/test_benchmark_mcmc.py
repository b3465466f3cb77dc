"""benchmarks/mcmc.py --quick runs (so it cannot rot) where NumPyro is installed (the ``bench`` extra; CI does not
install it): every case reports both tools, and their posterior means agree within Monte Carlo error."""

import math

import pytest
from benchmark_scripts import load_benchmark

SIGMAS = 6.0
"""Combined Monte Carlo standard errors two posterior means of the same posterior may differ by (about 20
parameters per run, 100 draws each)."""


@pytest.mark.slow
def test_quick_benchmark_reports_both_tools_and_their_posteriors_agree():
    pytest.importorskip("numpyro", reason="NumPyro is the bench extra (pip install -e .[bench]); CI skips this")
    results = load_benchmark("mcmc").main(["--quick"])
    assert [r["case"] for r in results] == ["mixture", "hmm", "declared"]
    for result in results:
        assert result["ess_per_s_ratio"] > 0 and result["ess_per_s_ratio_compiled"] > 0
        emvi, numpyro = result["emvi"]["posterior_mean_mcse"], result["numpyro"]["posterior_mean_mcse"]
        assert emvi.keys() == numpyro.keys()
        for name, (mean, error) in emvi.items():
            other, other_error = numpyro[name]
            assert abs(mean - other) <= SIGMAS * math.hypot(error, other_error) + 1e-4, (result["case"], name)
