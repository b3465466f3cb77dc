"""The issue-17 fuzzer at scale: generate bad inputs of every category (CLI options, data files, spec files,
checkpoints, run-directory states; see ``tests/fuzzing.py``), run each through ``emvi.cli.main`` and check the
invariant (exit 0, or exit 2 with one ``emvi: error:`` line; no exception escapes; a failed command changes no run
directory and writes nothing outside the one it was asked to create).

    python benchmarks/fuzz.py --cases 10000        # about evenly split over the five categories
    python benchmarks/fuzz.py --quick              # 250 cases

Prints each failing case, then one JSON line last: ``cases``, ``failures``, ``tracebacks``, ``changed_run_dirs``,
``touched_outside``, ``seconds`` and counts ``by_category``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzzing import CATEGORIES, STRATEGIES, Workspace, summarise  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402


def _run_category(workspace, category: str, budget: int, seed: int, outcomes: list) -> None:
    from hypothesis import seed as hypothesis_seed

    @hypothesis_seed(seed)
    @settings(max_examples=budget, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[category]())
    def run(case):
        outcome = workspace.run(category, case)
        outcomes.append(outcome)
        if len(outcomes) % 500 == 0:  # partial counts, in case a long run is stopped
            print(json.dumps({"progress": summarise(outcomes)}), file=sys.stderr, flush=True)
        if outcome.failures:
            print(json.dumps({"category": category, "argv": outcome.argv, "failures": outcome.failures}), flush=True)

    run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="total cases (split over the categories)")
    parser.add_argument("--quick", action="store_true", help="250 cases")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (runs are reproducible per seed)")
    args = parser.parse_args()
    total = 250 if args.quick else args.cases
    outcomes = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        workspace = Workspace(Path(root))
        active, seed = list(CATEGORIES), args.seed
        while len(outcomes) < total and active:
            # A category whose search space is smaller than its share (rundir's states) gives the rest to the
            # others: the later rounds draw with another seed.
            share = -(-(total - len(outcomes)) // len(active))
            for category in list(active):
                before = len(outcomes)
                _run_category(workspace, category, min(share, total - len(outcomes)), seed, outcomes)
                if len(outcomes) - before < share and len(outcomes) < total:
                    active.remove(category)
            seed += 1
    summary = summarise(outcomes)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["cases_per_second"] = round(len(outcomes) / max(summary["seconds"], 1e-9), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
