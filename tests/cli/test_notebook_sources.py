"""Each notebook is built by its script in notebooks/sources/: the committed notebook holds the cells its script
writes, so an edit made to one alone (which the next rebuild would silently undo) fails here."""

import runpy
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "sources").glob("*.py"))


def test_every_notebook_has_a_source():
    built = {path.stem for path in SOURCES}
    assert built == {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: path.stem)
def test_committed_notebook_matches_its_source(source, monkeypatch):
    written = {}
    monkeypatch.setattr(nbformat, "write", lambda notebook, path: written.setdefault(path, notebook))
    runpy.run_path(str(source))
    [(path, built)] = written.items()
    committed = nbformat.read(ROOT / path, as_version=4)
    assert [(c.cell_type, c.source) for c in built.cells] == [(c.cell_type, c.source) for c in committed.cells]
