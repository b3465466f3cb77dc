"""Pages of the emvi site written from the code at build time, so that they cannot drift from it.

``write_generated(srcdir)`` (called by ``conf.py`` before Sphinx reads anything) writes, all ignored by git:

* ``api/modules/MODULE.rst``: an autosummary of every public name of each documented module (``__all__``, or the
  public functions and classes defined in each ``emvi.analysis`` submodule, which has no ``__all__``), whose entries autosummary writes
  into ``api/objects/``;
* ``generated/spec_tables.md``: every key a spec file accepts, read off ``emvi.spec`` (its tables, ``DataSpec``,
  ``OutputSpec``), the registered models' and starts' config dataclasses and the method table's config classes;
* ``generated/examples.md``: every spec file under ``examples/`` with what it fits (parsed by ``emvi.spec``) and its
  source;
* ``gallery/notebooks/*.ipynb``: copies of ``notebooks/*.ipynb`` (myst-nb reads notebooks inside the source folder
  only; ``notebooks/`` stays where tests and the README name it).

``tests/test_docs_reference.py`` reads the same functions.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
API_MODULES = ("emvi", "emvi.declaration", "emvi.estimators", "emvi.inference", "emvi.data")
LONG_VALUE = 100  # characters: a longer constant is shown without its value


def write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless the file already holds it (an unchanged file keeps its time: no needless rebuild)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# --- API reference -----------------------------------------------------------------------------------------------

def public_names(module_name: str) -> list[str]:
    """The documented names of a module: its ``__all__``, else its public functions and classes defined in it."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module_name]


def api_modules() -> list[str]:
    """``API_MODULES`` and every public submodule of ``emvi.analysis`` (a package without ``__all__``)."""
    import pkgutil

    import emvi.analysis

    return [*API_MODULES, *(f"emvi.analysis.{info.name}" for info in pkgutil.iter_modules(emvi.analysis.__path__)
                            if not info.name.startswith("_"))]


def _kind(value) -> str:
    if inspect.isclass(value):
        return "Exceptions" if issubclass(value, BaseException) else "Classes"
    if callable(value):
        return "Functions"
    return "Constants"


def home(module_name: str, name: str) -> str:
    """The module whose page documents ``module_name.name``: a class or function ``emvi`` re-exports from a subpackage
    is documented there once (two descriptions of one object would be a duplicate), and ``emvi``'s page links to it."""
    value = getattr(importlib.import_module(module_name), name)
    if module_name == "emvi" and (inspect.isclass(value) or inspect.isfunction(value)):
        for sub in API_MODULES[1:]:
            if name in public_names(sub) and getattr(importlib.import_module(sub), name) is value:
                return sub
    return module_name


def api_page(module_name: str) -> str:
    """reStructuredText for one module: its docstring, then an autosummary table per kind of public name (one per
    documenting module on ``emvi``'s page, so that each summary's short references resolve where it is documented)."""
    module = importlib.import_module(module_name)
    groups: dict[str, dict[str, list[str]]] = {"Classes": {}, "Exceptions": {}, "Functions": {}, "Constants": {}}
    for name in public_names(module_name):
        kind = _kind(getattr(module, name))
        groups[kind].setdefault(module_name if kind == "Constants" else home(module_name, name), []).append(name)
    lines = [module_name, "=" * len(module_name), "", f".. automodule:: {module_name}", "   :no-members:", ""]
    for title, by_home in groups.items():
        if not by_home:
            continue
        lines += [title, "-" * len(title), ""]
        for where, names in by_home.items():
            lines += [f".. currentmodule:: {where}", ""]
            if title == "Constants":  # no docstring of their own (autodata would show their type's): type, value
                for name in names:
                    value = getattr(module, name)
                    kind = type(value).__name__ if type(value).__module__ == "builtins" else (
                        f"{type(value).__module__}.{type(value).__qualname__}")
                    lines += [f".. py:data:: {name}", f"   :type: {kind}"]
                    if len(repr(value)) <= LONG_VALUE:
                        lines += [f"   :value: {value!r}"]
                    lines += [""]
                continue
            lines += [".. autosummary::", "   :toctree: ../objects", "   :nosignatures:", ""]
            lines += [f"   {name}" for name in names] + [""]
    lines += [f".. currentmodule:: {module_name}", ""]
    return "\n".join(lines)


# --- spec files --------------------------------------------------------------------------------------------------

def _type_name(field: dataclasses.Field) -> str:
    return field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    return toml_value(value)


def toml_value(value) -> str:
    """``value`` as a spec file writes it (TOML: ``"text"``, ``[64, 64]``, ``true``); None, the unset default, as
    *unset*."""
    import tomli_w

    if value is None:
        return "*unset*"
    plain = list(value) if isinstance(value, tuple) else value
    try:
        return "`" + tomli_w.dumps({"v": plain}).split("=", 1)[1].strip() + "`"
    except TypeError:  # a value TOML cannot hold (none today): its Python form
        return f"`{value!r}`"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def key_table(cls, extra: list[tuple[str, str, str, str]] = ()) -> list[str]:
    """A Markdown table of ``cls``'s fields: key, type, default, the field's docstring (``emvi.config.field_docs``)."""
    from emvi.config import field_docs

    docs = field_docs(cls)
    rows = [*extra, *((f.name, _type_name(f), _default(f), docs.get(f.name, ""))
                      for f in dataclasses.fields(cls))]
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | `{_escape(kind)}` | {_escape(default)} | {_escape(text)} |"
              for key, kind, default, text in rows]
    return lines + [""]


def spec_reference() -> str:
    """Markdown: every table and key of a spec file, per model, start and method (headings ``(spec-...)=``)."""
    from emvi.declaration import SITE_KEYS
    from emvi.inference.methods import method_names
    from emvi.registry import available_models
    from emvi.runs import method_config_class
    from emvi.spec import TABLES, DataSpec, OutputSpec

    models = available_models()
    lines = ["<!-- Generated by docs/_ext/emvi_docs.py from emvi.spec and the config dataclasses; not in git. -->", "",
             f"A spec file holds the tables {', '.join(f'`[{t}]`' for t in TABLES)}; any other table or key is an "
             "error naming the allowed ones.", ""]
    lines += ["(spec-model)=", "## `[model]`", "",
              "`name` (required) picks a registered model; `module` (optional) is a Python module imported first, "
              "relative to the spec file's folder, that registers it. The other keys are the model's configuration:",
              ""]
    for name, entry in models.items():
        lines += [f"(spec-model-{name})=", f"### `name = \"{name}\"`", "", _escape(entry.description), ""]
        lines += key_table(entry.config_class)
        if name == "declared":
            lines += ["Each `[model.sites.NAME]` table declares one site with the keys "
                      + ", ".join(f"`{key}`" for key in SITE_KEYS)
                      + ", and its family's parameters (see the declarations guide).", ""]
    lines += ["(spec-inference)=", "## `[inference]`", "",
              f"`method` is one of {', '.join(f'`{m}`' for m in method_names())} (default: the model's own); the "
              "other keys are that method's configuration:", ""]
    for method in method_names():
        cls = method_config_class(method)
        lines += [f"(spec-inference-{method})=", f"### `method = \"{method}\"` ({cls.__name__})", ""]
        lines += key_table(cls)
    lines += ["(spec-start)=", "## `[start]`", "", "The start before SVI, for the models that have one:", ""]
    for name, entry in models.items():
        if entry.start_config is not None:
            lines += [f"(spec-start-{name})=", f"### `{name}` ({entry.start_config.__name__})", ""]
            lines += key_table(entry.start_config)
    lines += ["(spec-data)=", "## `[data]`", ""] + key_table(DataSpec)
    lines += ["(spec-outputs)=", "## `[outputs]`", ""] + key_table(OutputSpec)
    return "\n".join(lines)


# --- examples ----------------------------------------------------------------------------------------------------

def example_specs() -> list[Path]:
    return sorted(path for pattern in ("*.toml", "*.yaml") for path in (ROOT / "examples").rglob(pattern))


def _leading_comment(path: Path) -> list[str]:
    """The comment lines a spec file starts with (its description), without the ``#``."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def examples_page() -> str:
    """Markdown: for each spec file, what it fits (model, method, data, as ``emvi.spec.load_spec`` reads it), the
    command that fits it and its source; then the Python declarations module."""
    from emvi.spec import load_spec

    lines = ["<!-- Generated by docs/_ext/emvi_docs.py from examples/; not in git. -->", ""]
    for path in example_specs():
        relative = path.relative_to(ROOT).as_posix()
        spec = load_spec(path)
        dataset = spec.data.dataset
        shown = Path(dataset).relative_to(ROOT).as_posix() if Path(dataset).is_absolute() else dataset
        module = f" (registered by `{spec.module}`)" if spec.module else ""
        language = "toml" if path.suffix == ".toml" else "yaml"
        comment = _leading_comment(path)
        lines += [f"## {path.name}", "", " ".join(comment).replace("$", "\\$"), "",  # "$EMVI_DATA" is no math
                  "| fits | method | data |", "| --- | --- | --- |",
                  f"| `{spec.model}`{module} | `{spec.method}` | `{shown}` |", "",
                  "```bash", f"emvi fit {relative}", "```", "",
                  f"```{{literalinclude}} /../{relative}", f":language: {language}",
                  f":lines: {len(comment) + 1}-", "```", ""]  # the comment is the prose above
    lines += ["## models.py", "",
              "The declared examples in Python (`examples/declared/models.py`): importing the module registers them "
              "(`emvi --import models fit ...`, or `module = \"models\"` in a spec file).", "",
              "```{literalinclude} /../examples/declared/models.py", ":language: python", "```", ""]
    return "\n".join(lines)


# --- the whole set -----------------------------------------------------------------------------------------------

def copy_notebooks(srcdir: Path) -> list[str]:
    """Copy ``notebooks/*.ipynb`` into ``gallery/notebooks/`` (changed ones only) and drop copies of removed ones."""
    target = srcdir / "gallery" / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted((ROOT / "notebooks").glob("*.ipynb"))
    for source in sources:
        copy = target / source.name
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)
    for stale in set(target.glob("*.ipynb")) - {target / source.name for source in sources}:
        stale.unlink()
    return [source.stem for source in sources]


def write_generated(srcdir: str | Path) -> None:
    srcdir = Path(srcdir)
    shutil.rmtree(srcdir / "api" / "objects", ignore_errors=True)  # autosummary rewrites them; none may go stale
    modules = api_modules()
    for module_name in modules:
        write_if_changed(srcdir / "api" / "modules" / f"{module_name}.rst", api_page(module_name))
    write_if_changed(srcdir / "generated" / "spec_tables.md", spec_reference())
    write_if_changed(srcdir / "generated" / "examples.md", examples_page())
    copy_notebooks(srcdir)


def resolve_reexport(app, env, node, contnode):
    """``emvi.NAME`` for a class or function ``emvi`` re-exports resolves to its one description at :func:`home`
    (``{py:class}`emvi.TrainConfig``` reads as users import it, and links to ``emvi.inference.TrainConfig``)."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("emvi.") or target.count(".") != 1:
        return None
    name = target.split(".", 1)[1]
    if name not in public_names("emvi") or (module := home("emvi", name)) == "emvi":
        return None
    return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder, node["reftype"], f"{module}.{name}",
                                             node, contnode)
