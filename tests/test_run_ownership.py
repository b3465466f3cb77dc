"""One writer per run directory: a lock the kernel releases when its process ends, and unique default names."""

import subprocess
import sys

import pytest

from emvi.errors import ConfigError
from emvi.rundir import LOCK, RunDirectory, default_run_path

HOLD = """
import sys, time
from emvi.rundir import RunDirectory
RunDirectory(sys.argv[1]).lock("fit")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_in_another_process(path, seconds=60.0):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_run_held_by_another_process_is_refused_in_one_line_and_freed_when_it_ends(tmp_path):
    run = RunDirectory(tmp_path / "run").create()
    holder = hold_in_another_process(run.path)
    try:
        with pytest.raises(ConfigError, match=rf"in use by another emvi process \(pid {holder.pid}, fit\)") as caught:
            run.lock("fit")
        assert "\n" not in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    run.lock("fit")  # a killed holder leaves no stale lock
    run.unlock()


def test_the_lock_file_is_not_part_of_the_run(tmp_path):
    run = RunDirectory(tmp_path / "run").create().lock()
    try:
        assert run.is_empty() and run.is_reusable()
        run.write_config({"model": "vae"})
        run.clear_partial()
        assert (run.path / LOCK).exists() and not run.config_path.exists()
        assert run.lock() is run  # taken twice in one process: a no-op
    finally:
        run.unlock()


def test_default_names_differ_within_a_second_and_exclusive_creation_refuses_a_taken_one(tmp_path):
    first, second = default_run_path(tmp_path, "mixture"), default_run_path(tmp_path, "mixture")
    assert first != second and first.name.startswith("mixture-")
    RunDirectory(first).create(exclusive=True)
    with pytest.raises(ConfigError, match="same moment"):
        RunDirectory(first).create(exclusive=True)
