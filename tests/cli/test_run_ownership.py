"""One writer per run directory: a lock the kernel releases when its process ends, and unique default names."""

import subprocess
import sys

import pytest

from emvi.errors import ConfigError
from emvi.rundir import RunDirectory, default_run_path

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
        with pytest.raises(ConfigError, match="in use by another emvi process") as caught:
            run.lock("fit")
        assert "\n" not in str(caught.value)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    run.lock("fit")  # a killed holder leaves no stale lock
    run.unlock()


def test_the_lock_writes_nothing_in_the_run(tmp_path):
    run = RunDirectory(tmp_path / "run").create().lock()
    try:
        assert run.is_empty() and run.is_reusable()
        run.write_config({"model": "vae"})
        run.clear_partial()
        assert not any(run.path.iterdir())
        assert run.lock() is run  # taken twice in one process: a no-op
    finally:
        run.unlock()


def test_default_names_differ_within_a_second_and_exclusive_creation_refuses_a_taken_one(tmp_path):
    first, second = default_run_path(tmp_path, "mixture"), default_run_path(tmp_path, "mixture")
    assert first != second and first.name.startswith("mixture-")
    RunDirectory(first).create(exclusive=True)
    with pytest.raises(ConfigError, match="same moment"):
        RunDirectory(first).create(exclusive=True)


def emvi_cli(*args, wait=True):
    command = [sys.executable, "-m", "emvi.cli", *map(str, args)]
    if wait:
        return subprocess.run(command, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


SLOW_VAE = ["fit", "vae", "--dataset", "digits", "--latent-dim", "2", "--hidden-dims", "32", "--epochs", "40",
            "--no-plots", "--progress", "false"]


@pytest.mark.slow
def test_a_second_fit_into_a_running_fits_directory_is_refused_and_the_first_stays_intact(tmp_path):
    import time

    run = tmp_path / "run"
    first = emvi_cli(*SLOW_VAE, "--run-dir", run, wait=False)
    try:
        deadline = time.monotonic() + 300
        while not (run / "config.json").exists():  # the first fit holds the run once it writes there
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = emvi_cli("fit", "vae", "--dataset", "digits", "--latent-dim", "3", "--epochs", "1",
                          "--run-dir", run, "--no-plots")
        assert second.returncode == 2 and "in use by another emvi process" in second.stderr, second.stderr
        assert second.stderr.strip().count("\n") == 0
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    evaluated = emvi_cli("evaluate", run, "--num-samples", "2")
    assert evaluated.returncode == 0, evaluated.stderr
    assert '"latent_dim": 2' in (run / "config.json").read_text()


@pytest.mark.slow
def test_two_default_named_fits_started_together_get_two_intact_runs(tmp_path):
    args = ["fit", "mixture", "--dataset", "digits", "-k", "2", "--no-plots", "--out", tmp_path]
    processes = [emvi_cli(*args, wait=False) for _ in range(2)]
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2 and all((run / "checkpoint.pt").exists() for run in runs)


@pytest.mark.slow
def test_a_refused_fit_into_a_new_folder_leaves_nothing(tmp_path):
    out = emvi_cli("fit", "mixture", "--dataset", "digits", "-k", "2", "--method", "gibbs", "--run-dir",
                   tmp_path / "new")
    assert out.returncode == 2 and not (tmp_path / "new").exists()


def test_a_run_refuses_to_resume_or_evaluate_on_data_that_changed_since_the_fit(tmp_path):
    import numpy as np

    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).random((30, 3)))
    run = tmp_path / "run"
    fit = ["fit", "vae", data, "--hidden-dims", "4", "--latent-dim", "2", "--run-dir", run, "--no-plots",
           "--progress", "false"]
    assert emvi_cli(*fit, "--epochs", "1").returncode == 0
    assert emvi_cli("evaluate", run, "--num-samples", "2", "--split", "train").returncode == 0
    np.save(data, np.random.default_rng(1).random((31, 3)))  # the file gained a row
    resumed = emvi_cli(*fit, "--epochs", "2", "--resume")
    assert resumed.returncode == 2 and "data changed since the fit" in resumed.stderr, resumed.stderr
    evaluated = emvi_cli("evaluate", run, "--num-samples", "2", "--split", "train")
    assert evaluated.returncode == 2 and "changed since the fit" in evaluated.stderr, evaluated.stderr
