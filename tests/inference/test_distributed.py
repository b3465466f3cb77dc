"""Fits on two processes (gloo, CPU) equal fits in one, a killed rank ends the others with one line, and a run
started on two processes resumes on one.

Each test starts its ranks with the environment torchrun gives them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT on
a free port); the one-process references run in the test process.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import distributed_cases as cases
import pytest
import torch

from emvi.inference import distributed

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PYTHON = sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}",
               EMVI_DIST_TIMEOUT="60")
    env.update(extra)
    return env


def _start_ranks(args: list[str], world: int = 2) -> list[subprocess.Popen]:
    port = str(_free_port())
    return [subprocess.Popen([PYTHON, str(TESTS / "distributed_worker.py"), *args], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=_environment(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world),
                                              LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
            for r in range(world)]


def _wait(processes, timeout: float) -> list[tuple[int, str]]:
    outcomes = []
    for p in processes:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in processes:
                q.kill()
            pytest.fail(f"a rank did not finish within {timeout} s (a hang)")
        outcomes.append((p.returncode, out + err))
    return outcomes


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "results.pt"
    outcomes = _wait(_start_ranks(["equivalence", str(out)]), timeout=240)
    for code, log in outcomes:
        assert code == 0, log[-3000:]
    return torch.load(out, weights_only=True)


def _assert_close(two, one, rel: float, abs_: float = 0.0, what: str = ""):
    assert two.keys() == one.keys(), what
    for key in one:
        a, b = two[key].double(), one[key].double()
        assert torch.allclose(a, b, rtol=rel, atol=abs_), f"{what}{key}: max diff {(a - b).abs().max().item():.3g}"


def test_single_process_initialises_nothing_distributed():
    assert not torch.distributed.is_initialized()
    assert distributed.world_size() == 1 and distributed.rank() == 0 and not distributed.is_distributed()


@pytest.mark.slow
@pytest.mark.parametrize("stratified", [False, True])
def test_svi_on_two_ranks_takes_the_steps_of_one_rank_on_the_same_global_batches(two_process_results, stratified):
    assert two_process_results["world_size"] == 2
    one = cases.svi_fit(stratified=stratified)
    two = two_process_results["svi_stratified" if stratified else "svi"]
    _assert_close(two["params"], one["params"], rel=0.0, abs_=1e-6, what="svi ")
    _assert_close(two["params"], one["params"], rel=1e-9, abs_=1e-12, what="svi ")
    for h2, h1 in zip(two["history"], one["history"], strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-10)
        assert h2["valid_loss"] == pytest.approx(h1["valid_loss"], rel=1e-10)  # held-out loss summed over ranks


@pytest.mark.parametrize("fit", ["mixture-full", "mixture-poisson", "hmm", "ppca", "factor-analysis"])
def test_em_on_two_ranks_equals_em_on_one(two_process_results, fit):
    one = _one_process_em()[fit]
    _assert_close(two_process_results["em"][fit], one, rel=1e-10, abs_=1e-12, what=f"{fit} ")


_EM_CACHE = {}


def _one_process_em():
    if not _EM_CACHE:
        _EM_CACHE.update(cases.em_fits())
    return _EM_CACHE


@pytest.mark.slow
def test_killed_rank_ends_the_others_with_one_line_and_the_run_resumes_on_one_process(tmp_path):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    (code0, log0), (code1, _) = _wait(_start_ranks(["kill", str(run_dir)]), timeout=120)
    assert code1 == -9  # SIGKILL
    assert code0 == 3, log0[-3000:]
    errors = [line for line in log0.splitlines() if line.startswith("emvi: error:")]
    assert len(errors) == 1 and "rank 0 of 2" in errors[0] and "--resume" in errors[0], log0[-2000:]
    assert time.monotonic() - started < 120
    from emvi.rundir import RunDirectory

    assert RunDirectory(run_dir).load_checkpoint()["epoch"] == 2  # rank 0's last complete epoch
    resumed = cases.svi_fit(run_dir=run_dir, resume=True)  # one process now
    uninterrupted = cases.svi_fit()
    _assert_close(resumed["params"], uninterrupted["params"], rel=1e-9, abs_=1e-12, what="resumed ")
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in uninterrupted["history"]], rel=1e-10)


@pytest.mark.slow
def test_emvi_fit_nproc_2_starts_torchrun_and_fits_as_one_process(tmp_path):
    """``emvi fit ... --nproc 2`` runs torchrun's elastic agent; rank 0 alone prints and writes the run directory."""
    import json

    from emvi.cli import main

    data = str(ROOT / "examples" / "data" / "counts.csv")
    options = ["fit", "mixture", data, "--family", "poisson", "-k", "3", "--method", "em", "--no-plots"]
    two = subprocess.run([PYTHON, "-m", "emvi", *options, "--run-dir", str(tmp_path / "two"), "--nproc", "2"],
                         env=_environment(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, (two.stdout + two.stderr)[-3000:]
    assert two.stdout.count("run directory:") == 1 and two.stdout.count("outputs written to") == 1
    assert main([*options, "--run-dir", str(tmp_path / "one")]) == 0
    summary_two = json.loads((tmp_path / "two" / "summary.json").read_text())
    summary_one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary_two["num_processes"] == 2 and "num_processes" not in summary_one
    assert summary_two["n_iter"] == summary_one["n_iter"]
    assert summary_two["log_likelihood_per_item"] == pytest.approx(summary_one["log_likelihood_per_item"], rel=1e-10)
