"""The pages in docs/experiments/ are generated from recorded benchmark runs, never hand-copied.

* Each committed page equals what ``benchmarks/pages.py`` renders, in memory, from its template in
  ``benchmarks/templates/`` and the committed ``benchmarks/results/*.jsonl``; every page has a template.
* No page holds a number outside its generated tables. The rule, applied to each committed page:

  - a *number* is an ASCII digit that is not part of a word beginning with a letter or underscore, so names such as
    ``M2``, ``N2D``, ``log2``, ``float64`` or ``x_n`` are not numbers, while ``0.45``, ``12x``, ``2-core`` and
    ``10^6`` are;
  - numbers may stand only inside a generated table (between pages.py's begin and end markers, which also hold the
    provenance line of the run), inside an inline code span (code, option values and constants a reader can check
    in the source: ``latent_dim = 2``, ``2**16``), and as the year of a citation ("Jiang et al. 2017");
  - section numbers are not used, so none is allowed. Measurements written out in words would pass the check;
    prose states conclusions, and reviewers keep it qualitative.

* Every record carries its command, date, emvi version and commit, and the machine's cores and torch threads
  (``benchmarks/record.py``), and ``record.py`` writes exactly that for a benchmark it runs.
* Module docstrings in emvi/ carry no measurement (a number followed by a time unit, "%" or "x faster/slower").
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "docs" / "experiments"
INDEX = "index.md"  # the site's hand-written table of contents over the generated pages

pages = load_benchmark("pages")

GENERATED_BLOCK = re.compile(r"<!-- begin generated table .*?<!-- end generated table -->", re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]+`")
CITATION_YEAR = re.compile(r"et al\.,?\s+(1[89]|20)\d\d\b")
NAME_WITH_DIGITS = re.compile(r"(?<![\w])[A-Za-z_][\w]*")
NUMBER = re.compile(r"\d[\d.,]*")


def numbers_outside_tables(page: str) -> list[str]:
    """The numbers of ``page`` that stand where the module docstring's rule allows none, each with its line."""
    found = []
    text = CITATION_YEAR.sub(" ", CODE_SPAN.sub(" ", GENERATED_BLOCK.sub("", page)))  # a citation may wrap
    for line in text.splitlines():
        prose = NAME_WITH_DIGITS.sub(" ", line)
        found += [f"{match.group()!r} in: {line.strip()}" for match in NUMBER.finditer(prose)]
    return found


def test_the_number_rule_flags_measurements_and_allows_names_code_tables_and_citation_years():
    allowed = ("M1+M2 on N2D codes with log2 T steps in float64", "`latent_dim = 2` and `SMALL_STEP_ELEMENTS` (`2**16`)",
               "VaDE (Jiang et al. 2017), Dilokthanakul et al.\n2016",
               "<!-- begin generated table x: y -->\n| 0.45 | 12 s |\n<!-- end generated table -->")
    for text in allowed:
        assert numbers_outside_tables(text) == [], text
    flagged = {"accuracy 0.45 against 0.17": ["0.45", "0.17"], "it ran 12x slower": ["12"],
               "on a 2-core machine": ["2"], "one 10^6-step sequence": ["10", "6"], "up to 90 % better": ["90"],
               "took 1,000-2,000 rows": ["1,000", "2,000"]}
    for text, numbers in flagged.items():
        assert [item.split(" in: ")[0].strip("'") for item in numbers_outside_tables(text)] == numbers, text


def test_every_page_is_its_rendering_from_the_committed_results():
    rendered = pages.render_all()
    committed = {path.name for path in PAGES.glob("*.md")} - {INDEX}
    assert committed == set(rendered), "every docs/experiments page needs a template in benchmarks/templates/"
    assert INDEX not in rendered, "no template may be called index.md: docs/experiments/index.md is the hand-written toctree"
    stale = [name for name, text in rendered.items() if (PAGES / name).read_text() != text]
    assert not stale, f"pages differ from their rendering: {stale}; run python benchmarks/pages.py"


@pytest.mark.parametrize("name", sorted(path.name for path in PAGES.glob("*.md")))
def test_no_page_holds_a_number_outside_its_generated_tables(name):
    offending = numbers_outside_tables((PAGES / name).read_text())
    assert not offending, f"{name}: numbers outside the generated tables: {offending[:5]}"


def test_every_template_table_is_known_and_every_table_is_used():
    used = {match.group(1) for path in pages.TEMPLATES.glob("*.md")
            for match in pages.PLACEHOLDER.finditer(path.read_text())}
    assert used == set(pages.TABLES)


def test_every_record_says_how_and_where_it_was_measured():
    records = pages.read_records()
    assert records, "no benchmark results are committed"
    for name, lines in records.items():
        for record in lines:
            assert record["benchmark"] == name
            assert record["command"].split()[:2] == ["python", f"benchmarks/{name}.py"]
            assert record["command"].split()[2:] == record["argv"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["date"])
            assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", record["commit"]), record["commit"]
            assert record["emvi_version"] and isinstance(record["result"], dict)
            assert record["machine"]["cpu_cores"] >= 1 and record["machine"]["torch_threads"] >= 1


def test_record_runs_a_benchmark_and_appends_its_last_json_object_with_provenance(tmp_path, monkeypatch):
    record = load_benchmark("record")
    script = tmp_path / "tiny.py"
    script.write_text("import json, sys, torch\ntorch.set_num_threads(1)\nprint('not json')\n"
                      "print(json.dumps({'partial': True}))\nprint(json.dumps({'argv': sys.argv[1:], 'value': 0.5}))\n")
    monkeypatch.setattr(record, "HERE", tmp_path)
    out = tmp_path / "results" / "tiny.jsonl"
    out.parent.mkdir()
    out.write_text('{"earlier": "record"}\n')
    written = record.run_and_record("tiny", ["--quick", "--size", "3"], out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines == [{"earlier": "record"}, written]  # appended, never rewritten
    assert written["result"] == {"argv": ["--quick", "--size", "3"], "value": 0.5}
    assert written["argv"] == ["--quick", "--size", "3"]
    assert written["command"] == "python benchmarks/tiny.py --quick --size 3"
    assert written["machine"]["torch_threads"] == 1  # as the benchmark left them, not the parent's


MEASUREMENT = re.compile(r"\b\d+(?:[.,]\d+)*\s?(?:ms|µs|us|s|seconds|minutes|%|x (?:faster|slower)"
                         r"|times (?:faster|slower))(?!\w)|[Mm]easured \d")


def test_no_module_docstring_in_emvi_carries_a_measurement():
    assert [m.group() for m in MEASUREMENT.finditer("about 0.3 ms of a 7 ms step, 12 x faster, 90 % and 2.5 s; "
                                                    "shapes (1, S) and (N, 2) are not")] == \
        ["0.3 ms", "7 ms", "12 x faster", "90 %", "2.5 s"]
    offenders = []
    for path in sorted((ROOT / "emvi").rglob("*.py")):
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        offenders += [f"{path.relative_to(ROOT)}: {m.group()}" for m in MEASUREMENT.finditer(docstring)]
    assert not offenders, f"measurements belong in docs/experiments (benchmarks/pages.py): {offenders}"
