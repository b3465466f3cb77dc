"""Several processes only as a launcher sets them up: a stray WORLD_SIZE, or --nproc with a bad option, is one line
(exit 2) before any process group or run directory exists."""

import os
import subprocess
import sys

import pytest

FIT = ["fit", "mixture", "--dataset", "digits", "-k", "2", "--no-plots"]


def emvi(args, env=None, cwd=None):
    clean = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT")}
    return subprocess.run([sys.executable, "-m", "emvi.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**clean, **(env or {})}, cwd=cwd)


@pytest.mark.parametrize("env, message", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, "is set but not LOCAL_RANK, MASTER_ADDR, MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29511"},
     "RANK=5 must lie in 0..1"),
    ({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "29511"},
     "whole numbers"),
])
def test_a_world_size_no_launcher_set_up_is_refused_in_one_line(tmp_path, env, message):
    out = emvi([*FIT, "--out", str(tmp_path / "runs")], env=env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_nproc_reads_its_options_once_before_starting_processes(tmp_path):
    out = emvi([*FIT, "--nproc", "2", "--bogus", "--out", str(tmp_path / "runs")])
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["emvi: error: emvi: unrecognized arguments: --bogus; see 'emvi --help'"]
