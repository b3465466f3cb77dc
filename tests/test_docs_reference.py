"""The site's generated references cover the code: every option of the ``emvi`` parser appears under its command in
the CLI page as sphinx-argparse renders it, and every key a spec file accepts appears in the spec-file reference.

The CLI page (docs/cli.rst, as committed) is built alone by Sphinx, and the options in its doctree are compared with an
independent walk of argparse's actions. Spec keys come from ``Spec.to_dict()`` (the file layout, every default
filled in) of a spec parsed for each registered model and method.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from emvi.cli import build_parser
from emvi.inference.methods import method_names
from emvi.registry import available_models
from emvi.spec import TABLES, parse_spec, read_spec_file

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import emvi_docs  # noqa: E402


def parser_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("emvi",)):
    """``{command path: option strings}`` of ``parser`` and of every subcommand below it (positionals by the name
    argparse shows: metavar, else dest)."""
    found = {path: set()}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= parser_options(sub, (*path, name))
        found[path] |= set(action.option_strings) or {action.metavar or action.dest}
    return found


def section_id(path: tuple[str, ...]) -> str:
    """The id sphinx-argparse gives a command's section: ``emvi-fit-vae`` for ``emvi fit vae``."""
    from docutils import nodes

    return nodes.make_id("-".join(path))


def rendered_options(tmp_path: Path) -> dict[str, set[str]]:
    """``{section id: option strings}`` of docs/cli.rst built by Sphinx: each option counted under the nearest
    enclosing section whose id names a command (``emvi-fit-vae``), else under ``emvi``."""
    sphinx = pytest.importorskip("sphinx.application", reason="the docs extra (pip install -e '.[docs]')")
    pytest.importorskip("sphinxarg", reason="the docs extra (pip install -e '.[docs]')")
    from docutils import nodes

    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(DOCS / "cli.rst", source / "index.rst")
    (source / "conf.py").write_text("extensions = ['sphinxarg.ext']\nsmartquotes_action = 'qe'\n")
    app = sphinx.Sphinx(str(source), str(source), str(tmp_path / "out"), str(tmp_path / "doctrees"), "dummy",
                        status=None, warning=None, warningiserror=False)
    app.build()
    tree = app.env.get_doctree("index")
    commands = {section_id(path) for path in parser_options(build_parser())}
    found: dict[str, set[str]] = {}
    for option in tree.findall(nodes.option_string):
        owner, node = "emvi", option.parent
        while node is not None:
            ids = set(node.get("ids", [])) & commands if isinstance(node, nodes.section) else set()
            if ids:
                owner = ids.pop()
                break
            node = node.parent
        found.setdefault(owner, set()).update(option.astext().split(", "))
    return found


def builtin_parser_options() -> dict[tuple[str, ...], set[str]]:
    """:func:`parser_options` of the parser a fresh process builds: the built-in models' commands only (tests that
    ran before may have registered their own models in this process, which the reference rightly lacks)."""
    script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from test_docs_reference import parser_options; "
              "from emvi.cli import build_parser; "
              "print(json.dumps([[list(k), sorted(v)] for k, v in parser_options(build_parser()).items()]))")
    output = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], check=True,
                            capture_output=True, text=True).stdout
    return {tuple(path): set(options) for path, options in json.loads(output.splitlines()[-1])}


def test_every_cli_option_is_in_the_rendered_reference_under_its_command(tmp_path):
    expected = builtin_parser_options()
    assert ("emvi", "fit", "vae") in expected and "--latent-dim" in expected["emvi", "fit", "vae"]  # the walk works
    assert {("emvi", name) for name in ("fit", "evaluate", "sample", "analyze")} <= set(expected)
    rendered = rendered_options(tmp_path)
    missing = {" ".join(path): sorted(options - rendered.get(section_id(path), set()))
               for path, options in expected.items()}
    missing = {command: options for command, options in missing.items() if options}
    assert not missing, f"options the CLI reference (docs/cli.rst) lacks: {missing}"


def spec_sections(text: str) -> dict[str, set[str]]:
    """``{label: keys}`` of the spec reference: the backquoted first cell of each table row, under its ``(label)=``."""
    sections: dict[str, set[str]] = {}
    label = None
    for line in text.splitlines():
        heading = re.fullmatch(r"\((spec-[\w-]+)\)=", line)
        if heading:
            label = heading.group(1)
            sections[label] = set()
        row = re.match(r"\| `(\w+)` \|", line)
        if row and label is not None:
            sections[label].add(row.group(1))
    return sections


def resolved_specs():
    """``(model, method, Spec.to_dict())`` for every registered model and method (a declared model from its
    example, as it needs sites)."""
    declared = read_spec_file(ROOT / "examples" / "declared" / "gaussian_mixture_em.toml")
    for name in available_models():
        raw = declared if name == "declared" else {"model": {"name": name}}
        for method in method_names():
            spec = parse_spec({**raw, "inference": {"method": method}}, base_dir=ROOT / "examples" / "declared")
            yield name, method, spec.to_dict()


def test_every_spec_key_is_in_the_spec_reference():
    text = emvi_docs.spec_reference()
    sections = spec_sections(text)
    for table in TABLES:
        assert f"(spec-{table})=" in text, f"table [{table}] has no section"
    checked = 0
    for model, method, resolved in resolved_specs():
        assert set(resolved) <= set(TABLES)
        wanted = {
            f"spec-model-{model}": set(resolved["model"]) - {"name", "module"},
            f"spec-inference-{method}": set(resolved["inference"]) - {"method"},
            f"spec-start-{model}": set(resolved.get("start", {})),
            "spec-data": set(resolved["data"]),
            "spec-outputs": set(resolved["outputs"]),
        }
        for label, keys in wanted.items():
            lacking = keys - sections.get(label, set())
            assert not lacking, f"{label} lacks {sorted(lacking)} ({model}, {method})"
            checked += len(keys)
    assert checked > 100
    assert "`name`" in text and "`module`" in text
    assert "```{include} generated/spec_tables.md" in (DOCS / "spec.md").read_text(encoding="utf-8")


def test_spec_reference_rows_carry_each_fields_docstring():
    from emvi.config import field_docs
    from emvi.spec import DataSpec

    text = emvi_docs.spec_reference()
    for key, doc in field_docs(DataSpec).items():
        assert re.search(rf"^\| `{key}` \|.*\| {re.escape(doc.replace('|', chr(92) + '|'))} \|$", text, re.M), key


def own_docstring(value) -> str:
    """``value``'s own docstring: none for a dataclass whose ``__doc__`` is the signature dataclasses writes."""
    doc = (value.__doc__ or "").strip()
    return "" if doc.startswith(f"{value.__name__}(") else doc


def test_api_pages_list_every_public_name_and_each_class_and_function_has_a_docstring():
    import importlib
    import inspect

    undocumented = []
    for module_name in emvi_docs.api_modules():
        page = emvi_docs.api_page(module_name)
        module = importlib.import_module(module_name)
        for name in emvi_docs.public_names(module_name):
            assert re.search(rf"^(   |\.\. py:data:: ){re.escape(name)}$", page, re.M), (module_name, name)
            value = getattr(module, name)
            if (inspect.isclass(value) or inspect.isfunction(value)) and not own_docstring(value):
                undocumented.append(f"{module_name}.{name}")
    assert not undocumented, f"public names without a docstring: {undocumented}"
    assert {"emvi", "emvi.estimators", "emvi.analysis.hmm"} <= set(emvi_docs.api_modules())


def readme_commands() -> list[str]:
    """The README's set-up commands: the one-line ``bash`` blocks of its "Set up and run" section."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_getting_started_shows_the_readmes_commands_verbatim():
    commands = readme_commands()
    assert len(commands) == 2, "the README's set-up section should hold two one-line commands"
    page = (DOCS / "getting_started.md").read_text()
    for command in commands:
        assert command in page, f"docs/getting_started.md lacks the README's command: {command}"
