"""benchmarks/declared.py runs in its quick form (so it cannot rot): every case reports its times and ratio, and
the declared model and the model it replaces did the same work (equal loss and gradient norm on one batch at the
same parameters and seed; equal EM objective histories). No timing is asserted: the machine may be loaded."""

import json
import math

import pytest
import torch
from benchmark_scripts import load_benchmark

CASES = {"gaussian_mixture_em": "em", "gmvae_svi": "svi", "poisson_vae_svi": "svi",
         "poisson_regression_mixture_svi": "svi"}


@pytest.mark.slow
def test_quick_run_reports_every_case_and_equal_work(capsys):
    threads = torch.get_num_threads()
    try:
        summary = load_benchmark("declared").main(["--quick"])
    finally:
        torch.set_num_threads(threads)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    cases, last = lines[:-1], lines[-1]
    assert last == summary
    assert {case["case"]: case["kind"] for case in cases} == CASES
    for case in cases:
        kind = case["kind"]
        for key in ("declared_s", "hand_s", f"{kind}_ratio", "declared_cpu_s", "hand_cpu_s", f"{kind}_cpu_ratio"):
            assert math.isfinite(case[key]) and case[key] > 0, (case["case"], key)
        assert case["pairs"] == 3 == len(case["declared_all_s"]) == len(case["hand_all_s"])
        assert case["equal_work"] is True
        if kind == "svi":
            assert math.isclose(case["loss_declared"], case["loss_hand"], rel_tol=1e-4)
            assert math.isclose(case["grad_norm_declared"], case["grad_norm_hand"], rel_tol=1e-4)
        else:
            assert case["max_gap_nats_per_item"] < 1e-4
    assert set(summary["svi_ratio"]) == {name for name, kind in CASES.items() if kind == "svi"}
    assert set(summary["em_ratio"]) == {name for name, kind in CASES.items() if kind == "em"}
    assert summary["equal_work"] is True
    for key in ("max_svi_ratio", "max_em_ratio", "svi_goal_met", "em_goal_met", "cpu_ratio", "load_average"):
        assert key in summary


def test_unequal_work_is_refused():
    """The equal-work check is a real check: a hand-written model with one parameter changed fails it."""
    bench = load_benchmark("declared")
    x = torch.poisson(torch.full((32, 64), 3.0), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    declared = bench.build_declared(bench.declaration_of("poisson_vae.toml"), bench.DeclaredConfig(),
                                    bench._Info({"x": x}))
    hand = bench.HandPoissonVAE(2, 64, (64,), (64,))
    hand.copy_from(*declared)
    elbo = bench.make_elbo("trace", max_plate_nesting=1)
    bench.check_equal_svi(elbo, declared, hand, (x,), 32, seed=0)
    with torch.no_grad():
        hand.decoder[0].bias.add_(0.1)
    with pytest.raises(AssertionError, match="unequal work"):
        bench.check_equal_svi(elbo, declared, hand, (x,), 32, seed=0)
