"""Write the API reference (Markdown) from the package's numpydoc docstrings.

One page per public module (no component of its dotted name starts with ``_``) in ``docs/api/``, and
an index. Each page holds the module docstring, then every public class and function defined in the
module (or listed in its ``__all__``): the signature, and the docstring with its numpydoc sections
(Parameters, Returns, Raises, Notes, Examples, ...) turned into Markdown. Examples become ``pycon``
code blocks; they are the doctests CI runs.

It also lists the public functions whose docstring lacks a Parameters, Returns or Examples section
(``docs/api/coverage.md``), the way scikit-image documents every public function.

Usage::

    python scripts/build_api_docs.py              # write docs/api/
    python scripts/build_api_docs.py --out DIR    # elsewhere
    python scripts/build_api_docs.py --check      # also fail if a public module has no page

Only the standard library is used (inspect, pkgutil): nothing to install.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "napari_immunotrack"
#: numpydoc section titles, in the order numpydoc lists them.
SECTIONS = (
    "Parameters",
    "Returns",
    "Yields",
    "Receives",
    "Other Parameters",
    "Raises",
    "Warns",
    "Warnings",
    "See Also",
    "Notes",
    "References",
    "Examples",
    "Attributes",
    "Methods",
)
#: Sections whose entries are ``name : type`` lines followed by an indented description.
ENTRY_SECTIONS = {"Parameters", "Returns", "Yields", "Receives", "Other Parameters", "Raises", "Warns", "Attributes"}
#: What every public function should have (scikit-image's standard).
REQUIRED = ("Parameters", "Returns", "Examples")


@dataclass
class ModuleDoc:
    name: str
    summary: str
    page: str
    functions: list = field(default_factory=list)  # (qualified name, sections present)


def is_gui_or_cli(qualified: str) -> bool:
    """Whether a dotted name lives above the GUI line (the command line or the napari docks)."""
    parts = qualified.split(".")
    return len(parts) > 1 and parts[1] in ("cli", "commands", "widgets")


def public_modules(package: str = PACKAGE) -> list[str]:
    """Dotted names of the package's public modules (no ``_`` component), sorted."""
    root = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def split_sections(doc: str) -> tuple[str, dict[str, str]]:
    """(text before the first section, {section title: its body}) of a cleaned docstring."""
    lines = doc.splitlines()
    intro, sections, current = [], {}, None
    i = 0
    while i < len(lines):
        line = lines[i]
        underline = lines[i + 1] if i + 1 < len(lines) else ""
        title = line.strip()
        if title in SECTIONS and re.fullmatch(r"\s*-{3,}\s*", underline):
            current = title
            sections[current] = []
            i += 2
            continue
        (sections[current] if current else intro).append(line)
        i += 1
    return "\n".join(intro).strip(), {k: "\n".join(v).strip("\n") for k, v in sections.items()}


def _entries_to_markdown(body: str) -> str:
    """``name : type`` + indented description -> a Markdown list."""
    out, item = [], None
    for line in body.splitlines():
        if line and not line[0].isspace():
            if item:
                out.append(item)
            name, _, kind = line.partition(" : ")
            item = f"- **{name.strip()}**" + (f" (*{kind.strip()}*)" if kind.strip() else "")
            first = True
        elif item is not None and line.strip():
            item += (" — " if first else " ") + line.strip()
            first = False
    if item:
        out.append(item)
    return "\n".join(out)


def _examples_to_markdown(body: str) -> str:
    """Doctest lines in ``pycon`` blocks, prose between them as text."""
    out, block, prose = [], [], []

    def flush_block():
        if block:
            out.append("```pycon\n" + "\n".join(block).rstrip() + "\n```")
            block.clear()

    def flush_prose():
        if prose:
            out.append(" ".join(p.strip() for p in prose))
            prose.clear()

    in_block = False
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith(">>>"):
            flush_prose()
            in_block = True
            block.append(stripped)
        elif in_block and stripped:
            block.append(stripped if stripped.startswith("...") else line.rstrip())
        else:
            if in_block and not stripped:
                flush_block()
                in_block = False
                continue
            if stripped:
                prose.append(stripped)
            else:
                flush_prose()
    flush_block()
    flush_prose()
    return "\n\n".join(out)


def docstring_to_markdown(doc: str | None) -> tuple[str, set[str]]:
    """Markdown of a numpydoc docstring, and the section titles it has."""
    doc = inspect.cleandoc(doc or "")
    intro, sections = split_sections(doc)
    parts = [_examples_to_markdown(intro) if ">>>" in intro else intro] if intro else []
    present = set(sections)
    if ">>>" in intro:
        present.add("Examples")  # a bare doctest in the description counts as an example
    for title in SECTIONS:
        if title not in sections:
            continue
        body = sections[title]
        if title in ENTRY_SECTIONS:
            text = _entries_to_markdown(body)
        elif title == "Examples":
            text = _examples_to_markdown(body)
        else:
            text = textwrap.dedent(body)
        parts.append(f"**{title}**\n\n{text}")
    return "\n\n".join(p for p in parts if p), present


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _takes_arguments(func) -> bool:
    """Whether a function has any parameter (a Parameters section is then required)."""
    try:
        return bool(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return True


def _members(module) -> list[tuple[str, object]]:
    """Public classes and functions the module defines (or exports through ``__all__``)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    members = []
    for name in names:
        try:
            obj = getattr(module, name)
        except AttributeError:  # a lazy name (module __getattr__) that fails to import here
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        exported = hasattr(module, "__all__") and name in module.__all__
        if exported or getattr(obj, "__module__", None) == module.__name__:
            members.append((name, obj))
    return members


def _class_members(cls) -> list[tuple[str, object]]:
    out = []
    for name, obj in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if inspect.isfunction(obj) or isinstance(obj, property):
            out.append((name, obj))
    return out


def module_page(name: str) -> tuple[str, ModuleDoc]:
    """Markdown page of one module, and what its functions' docstrings hold."""
    module = importlib.import_module(name)
    intro_md, _ = docstring_to_markdown(module.__doc__)
    summary = inspect.cleandoc(module.__doc__ or "").split("\n", 1)[0]
    info = ModuleDoc(name=name, summary=summary, page=f"{name}.md")
    lines = [f"# `{name}`", "", intro_md or "*(no module docstring)*", ""]
    for member_name, obj in _members(module):
        qualified = f"{name}.{member_name}"
        doc_md, present = docstring_to_markdown(obj.__doc__)
        kind = "class" if inspect.isclass(obj) else "function"
        lines += [f"## {kind} `{member_name}{_signature(obj)}`", "", doc_md or "*(no docstring)*", ""]
        if kind == "function":
            if not _takes_arguments(obj):  # numpydoc: no Parameters section for a function without any
                present = present | {"Parameters"}
            info.functions.append((qualified, present))
            continue
        for attr, member in _class_members(obj):
            if isinstance(member, property):
                text, _ = docstring_to_markdown(member.__doc__)
                lines += [f"### property `{member_name}.{attr}`", "", text or "*(no docstring)*", ""]
            else:
                text, present = docstring_to_markdown(member.__doc__)
                lines += [f"### method `{member_name}.{attr}{_signature(member)}`", "", text or "*(no docstring)*", ""]
    return "\n".join(lines).rstrip() + "\n", info


def build(out_dir: Path) -> list[ModuleDoc]:
    """Write every page and the index into ``out_dir``; return what each module holds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{PACKAGE}*.md"):
        old.unlink()  # a module that was removed or renamed loses its page
    docs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in public_modules():
            text, info = module_page(name)
            (out_dir / info.page).write_text(text, encoding="utf-8")
            docs.append(info)
    index = [
        "# API reference",
        "",
        "Generated from the docstrings by `python scripts/build_api_docs.py`; do not edit by hand.",
        "The methods behind the functions are in [../methods/index.md](../methods/index.md).",
        "",
        "| module | what it is |",
        "|---|---|",
    ]
    index += [f"| [`{d.name}`]({d.page}) | {d.summary.replace('|', '/')} |" for d in docs]
    (out_dir / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    missing = [(f, sorted(set(REQUIRED) - present)) for d in docs for f, present in d.functions]
    missing = [(f, m) for f, m in missing if m]
    total = sum(len(d.functions) for d in docs)
    cover = [
        "# Docstring coverage",
        "",
        f"{total} public functions; {total - len(missing)} have Parameters, Returns and Examples sections, "
        f"{len(missing)} lack at least one (listed below, the pure layers first). Methods of classes are not "
        "counted. Generated by `python scripts/build_api_docs.py`.",
    ]
    for title, gui in (("Below the GUI line (the Python API)", False), ("Command line and napari", True)):
        rows = [(f, m) for f, m in missing if is_gui_or_cli(f) == gui]
        cover += ["", f"## {title}: {len(rows)}", "", "| function | lacks |", "|---|---|"]
        cover += [f"| `{f}` | {', '.join(m)} |" for f, m in rows]
    (out_dir / "coverage.md").write_text("\n".join(cover) + "\n", encoding="utf-8")
    return docs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "api", help="output folder (docs/api)")
    parser.add_argument("--check", action="store_true", help="fail if a public module has no page")
    args = parser.parse_args(argv)
    docs = build(args.out)
    pages = {p.stem for p in args.out.glob(f"{PACKAGE}*.md")}
    absent = [m for m in public_modules() if m not in pages]
    missing = sum(1 for d in docs for _, present in d.functions if set(REQUIRED) - present)
    total = sum(len(d.functions) for d in docs)
    print(
        f"api docs: {len(docs)} modules -> {args.out}; {missing} of {total} public functions lack "
        f"Parameters, Returns or Examples (see coverage.md)"
    )
    if absent:
        print(f"api docs: no page for {', '.join(absent)}", file=sys.stderr)
    return 1 if (args.check and absent) else 0


if __name__ == "__main__":
    sys.exit(main())
