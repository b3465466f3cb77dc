"""Issue 17's invariant under generated bad input (see :mod:`fuzzing`): every case exits 0, or exits 2 with one line
``emvi: error: ...``; nothing escapes ``emvi.cli.main``; a failed command changes no existing file, run directories
included, and writes nothing outside the run directory it was asked to create.

CI runs a fixed-seed budget (``derandomize=True``, :data:`CI_EXAMPLES` per category, about a minute in all);
``pytest tests/cli/test_fuzz.py --fuzz-long`` runs :data:`LONG_EXAMPLES` per category. ``benchmarks/fuzz.py`` runs the
same cases and prints the counts as JSON.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzing import CATEGORIES, STRATEGIES, Workspace
from hypothesis import HealthCheck, Phase, given, settings

CI_EXAMPLES = 40
LONG_EXAMPLES = 1000
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_bad_input_is_answered_in_one_line_and_changes_no_run(workspace, request, category):
    examples = LONG_EXAMPLES if request.config.getoption("--fuzz-long") else CI_EXAMPLES

    # No shrinking: a case is a whole CLI run, so shrinking one failure can take longer than CI's budget; the
    # failing argv is in the assertion message already.
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(STRATEGIES[category]())
    def check(case):
        outcome = workspace.run(category, case)
        assert not outcome.failures, f"{outcome.argv}: {outcome.failures}"

    check()


@pytest.mark.parametrize("argv", [
    ["fit", "vae", "{data}/missing.csv", "--run-dir", "r"],
    ["fit", "vae", "{data}/unit.csv", "--epochs", "1", "--clip-grad-norm", "-1", "--run-dir", "r"],
    ["evaluate", "{runs}/vae", "--num-samples", "-3"],
    ["sample", "{runs}/mixture-em", "--output", "/missing/dir/s.npy"],
    ["fit", "mixture", "{data}/counts.csv", "--method", "em", "-k", "50", "--run-dir", "r"],
])
def test_no_traceback_escapes_the_process(workspace, tmp_path, argv):
    """The same invariant through a real ``python -m emvi.cli`` process (exit status, stderr, no files)."""
    argv = [a.format(data=workspace.data, runs=workspace.runs) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("EMVI_DEBUG", None)
    done = subprocess.run([sys.executable, "-m", "emvi.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("emvi: error:"), done.stderr
    assert list(tmp_path.iterdir()) == []
