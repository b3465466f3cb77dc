"""Run one benchmark and append its result, with where and how it was measured, to ``benchmarks/results/NAME.jsonl``.

    python benchmarks/record.py hmm --quick                  # runs benchmarks/hmm.py --quick
    python benchmarks/record.py --out other.jsonl hmm --quick

The benchmark runs unchanged in a child process (this file with ``--child``, which runs the script as ``__main__``
and afterwards writes the torch thread count it ended with); its output passes through. Every benchmark prints one
JSON object as its last JSON line: that object is the record's ``result``. The record, one line appended to the file:

* ``benchmark`` (the script's name) and ``argv`` (its arguments), ``command`` (the line that reproduces it);
* ``date`` (UTC, ISO 8601) and ``commit`` (``git rev-parse HEAD`` of this checkout, ``+dirty`` when ``emvi/`` or the
  benchmark's script differ from it), both taken at the start; ``emvi_version``;
* ``machine``: ``cpu_cores`` (``os.cpu_count()``), ``cpu`` (model name), ``torch_threads`` and
  ``torch_interop_threads`` (as the benchmark left them), ``load_average`` (1 minute, at the start: the cores
  may be shared), ``platform``, ``python``, ``torch``;
* ``seconds``: the benchmark's wall time; ``result``.

``benchmarks/pages.py`` renders the docs/experiments pages from these files. Lines are only ever appended; a page
reads the latest record of each command it shows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def _child(script: str, args: list[str], facts_path: str) -> None:
    """Run ``script`` as ``__main__`` with ``args``, then write the torch threads it left set to ``facts_path``."""
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).resolve().parent)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        import torch

        Path(facts_path).write_text(json.dumps({"torch_threads": torch.get_num_threads(),
                                                "torch_interop_threads": torch.get_num_interop_threads(),
                                                "torch": torch.__version__}))


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def commit(script: Path) -> str:
    """HEAD of this checkout, ``+dirty`` when the measured code (emvi/ and the benchmark's script) differs from it."""
    head = _git("rev-parse", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--", "emvi", str(script))
    return head + ("+dirty" if changed else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def last_json_object(lines: list[str]) -> dict | None:
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_and_record(name: str, args: list[str], out: Path) -> dict:
    """Run ``benchmarks/NAME.py ARGS`` (output passed through), append its record to ``out``, return the record."""
    script = HERE / f"{name}.py"
    if not script.is_file():
        raise SystemExit(f"record.py: error: no benchmark {script.relative_to(ROOT)}; give a file name in benchmarks/")
    sys.path.insert(0, str(ROOT))
    import emvi

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    date = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    measured = commit(script)  # before the run: the code that runs is the code at its start
    with tempfile.TemporaryDirectory() as folder:
        facts_path = os.path.join(folder, "facts.json")
        began = time.perf_counter()
        lines = []
        with subprocess.Popen([sys.executable, __file__, "--child", str(script), facts_path, *args],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) as child:
            for line in child.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                lines.append(line)
        if child.returncode != 0:
            raise SystemExit(f"record.py: error: {name}.py exited with status {child.returncode}; nothing recorded")
        seconds = time.perf_counter() - began
        facts = json.loads(Path(facts_path).read_text())
    result = last_json_object(lines)
    if result is None:
        raise SystemExit(f"record.py: error: {name}.py printed no JSON object; nothing recorded")
    record = {
        "benchmark": name, "argv": args,
        "command": shlex.join(["python", f"benchmarks/{name}.py", *args]),
        "date": date, "emvi_version": emvi.__version__, "commit": measured,
        "machine": {"cpu_cores": os.cpu_count(), "cpu": cpu_model(), "torch_threads": facts["torch_threads"],
                    "torch_interop_threads": facts["torch_interop_threads"], "load_average": load,
                    "platform": platform.platform(), "python": platform.python_version(), "torch": facts["torch"]},
        "seconds": seconds, "result": result,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as file:
        file.write(json.dumps(record) + "\n")
    print(f"recorded in {out}", file=sys.stderr)
    return record


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        script, facts_path, *args = argv[1:]
        return _child(script, args, facts_path)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="JSON-lines file to append to (default benchmarks/results/NAME.jsonl)")
    parser.add_argument("name", help="benchmark file name without .py (hmm, mixture, ...)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own arguments")
    options = parser.parse_args(argv)
    run_and_record(options.name, options.args, options.out or RESULTS / f"{options.name}.jsonl")


if __name__ == "__main__":
    main()
