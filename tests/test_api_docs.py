"""The API reference is generated from the docstrings and covers every public module."""

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_api_docs", ROOT / "scripts" / "build_api_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_public_module_gets_a_page_with_its_functions(tmp_path):
    build = _builder()
    assert build.main(["--out", str(tmp_path), "--check"]) == 0
    modules = build.public_modules()
    # the modules a user imports are all there, private ones are not
    for name in (
        "napari_immunotrack.volume",
        "napari_immunotrack.io",
        "napari_immunotrack.registration",
        "napari_immunotrack.analysis.clusters",
        "napari_immunotrack.simulate.scenes",
    ):
        assert name in modules
    assert not [m for m in modules if any(part.startswith("_") for part in m.split("."))]
    pages = {p.stem for p in tmp_path.glob("napari_immunotrack*.md")}
    assert pages == set(modules)
    index = (tmp_path / "index.md").read_text()
    assert all(f"]({m}.md)" in index for m in modules)
    # a page holds each public function with its real signature and its numpydoc sections as Markdown
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.registration import register

    io_page = (tmp_path / "napari_immunotrack.io.md").read_text()
    assert f"## function `load_volume{inspect.signature(load_volume)}`" in io_page
    reg_page = (tmp_path / "napari_immunotrack.registration.md").read_text()
    assert f"## function `register{inspect.signature(register)}`" in reg_page
    assert "- **bins** (*int*) — Histogram bins of the Mattes metric" in reg_page
    assert "```pycon\n>>> from napari_immunotrack.simulate import registration_pair" in reg_page
    volume_page = (tmp_path / "napari_immunotrack.volume.md").read_text()
    assert "## class `Volume(" in volume_page and "### method `Volume.resample_to(" in volume_page


def test_docstring_sections_are_found_and_reported_when_missing(tmp_path):
    build = _builder()
    doc = """One line.

    Parameters
    ----------
    x : int
        The value,
        on two lines.

    Examples
    --------
    >>> 1 + 1
    2
    """
    text, present = build.docstring_to_markdown(doc)
    assert present == {"Parameters", "Examples"}
    assert "- **x** (*int*) — The value, on two lines." in text
    assert "```pycon\n>>> 1 + 1\n2\n```" in text
    build.build(tmp_path)
    coverage = (tmp_path / "coverage.md").read_text()
    # a function with all three sections is not listed; every listed one really lacks what it is listed for
    assert "`napari_immunotrack.registration.register`" not in coverage
    rows = re.findall(r"^\| `(napari_immunotrack[\w.]+)` \| ([\w, ]+) \|$", coverage, flags=re.M)
    # the count in the header is the number of rows listed (0 once every public function is documented)
    counted = int(re.search(r"(\d+) lack at least one", coverage).group(1))
    assert counted == len(rows)
    # a docstring without Returns is reported as lacking it
    _, partial = build.docstring_to_markdown(doc.replace("    Examples\n    --------\n    >>> 1 + 1\n    2\n", ""))
    assert {"Returns", "Examples"}.isdisjoint(partial) and "Parameters" in partial
    for qualified, lacks in rows[:: max(1, len(rows) // 25)]:
        module, name = qualified.rsplit(".", 1)
        doc = inspect.cleandoc(getattr(importlib.import_module(module), name).__doc__ or "")
        for section in lacks.split(", "):
            has = re.search(rf"^{section}\n-+$", doc, flags=re.M) or (section == "Examples" and ">>>" in doc)
            assert not has, (qualified, section)
