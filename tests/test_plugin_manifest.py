"""The npe2 manifest: valid, discoverable, and the same file at the top level and in the package."""

from pathlib import Path

import napari_immunotrack

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_in_package_is_the_top_level_file():
    top = (ROOT / "napari.yaml").read_text()
    packaged = (Path(napari_immunotrack.__file__).parent / "napari.yaml").read_text()
    assert packaged == top


def test_manifest_validates_and_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-immunotrack")
    assert manifest.name == "napari-immunotrack"
    manifest.validate_imports()  # every python_name in the manifest imports
    readers = manifest.contributions.readers
    assert readers and readers[0].accepts_directories
    patterns = set(readers[0].filename_patterns)
    assert {"*.nii", "*.nii.gz", "*.dcm", "*.tif", "*.zarr"} <= patterns
    writers = manifest.contributions.writers
    assert writers[0].layer_types == ["labels"] and ".nii.gz" in writers[0].filename_extensions


def test_every_verb_has_working_help(capsys):
    from napari_immunotrack.cli import _verb_modules, main

    verbs = [verb for verb, _ in _verb_modules()]
    assert {
        "info",
        "register",
        "segment",
        "confirm",
        "quantify",
        "fluorine",
        "mpi",
        "demo",
        "report",
        "batch",
        "view",
    } <= set(verbs)
    for verb in verbs:
        try:
            main([verb, "--help"])
        except SystemExit as exc:  # argparse exits 0 after printing help
            assert exc.code == 0, verb
        assert f"usage: immunotrack {verb}" in capsys.readouterr().out
