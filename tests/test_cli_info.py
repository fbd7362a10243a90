"""``immunotrack info``: what it prints for images and outputs, and how it fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from nibabel.testing import data_path

from napari_immunotrack import provenance
from napari_immunotrack.cli import main
from napari_immunotrack.outputs import write_table

VENV_BIN = Path(sys.executable).parent


def run_json(capsys, *args):
    rc = main(["info", *map(str, args), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return json.loads(captured.out)


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz"])
def test_info_matches_nibabel_header(capsys, name):
    path = os.path.join(data_path, name)
    img = nib.load(path)
    info = run_json(capsys, path)["volumes"][0]
    shape = img.shape
    expected_shape = ([shape[3]] if len(shape) == 4 else []) + list(shape[:3][::-1])
    assert info["shape"] == expected_shape
    np.testing.assert_allclose(info["voxel_size_mm"], img.header.get_zooms()[:3][::-1], rtol=1e-5)
    # nibabel's axis codes are for (i, j, k); ours for the reversed array (k, j, i)
    assert info["orientation"] == "".join(nib.aff2axcodes(img.affine))[::-1]
    ijk = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
    world = (img.affine @ ijk.T).T[:, :3]
    np.testing.assert_allclose(info["world_bounds_ras_mm"]["min"], world.min(0), atol=1e-3)
    np.testing.assert_allclose(info["world_bounds_ras_mm"]["max"], world.max(0), atol=1e-3)
    assert info["modality"] == "MR" and info["dtype"] == str(img.get_data_dtype().newbyteorder("="))


def test_info_text_output(capsys):
    rc = main(["info", os.path.join(data_path, "example4d.nii.gz")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "shape: [2, 24, 96, 128]" in out and "orientation: SAL" in out and "leading_axis: time" in out
    assert "voxel_size_mm: [2.199999, 2.0, 2.0]" in out


def test_info_tiff_needs_voxel_size(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "photo.tif", np.zeros((20, 30), np.uint16))
    rc = main(["info", str(tmp_path / "photo.tif")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pixel size" in err
    info = run_json(capsys, tmp_path / "photo.tif", "--voxel-size", "0.05")["volumes"][0]
    assert info["shape"] == [1, 20, 30] and info["voxel_size_mm"] == [0.05, 0.05, 0.05]
    assert info["modality"] == "OPT" and info["orientation_nominal"] is True


@pytest.mark.parametrize("make", ["missing", "unknown", "truncated", "garbage_nii", "folder_without_images"])
def test_info_bad_inputs_exit_2_with_one_line(tmp_path, capsys, make):
    if make == "missing":
        path = tmp_path / "nothing.nii.gz"
    elif make == "unknown":
        path = tmp_path / "notes.xyz"
        path.write_text("hello")
    elif make == "truncated":
        raw = open(os.path.join(data_path, "example4d.nii.gz"), "rb").read()
        path = tmp_path / "cut.nii.gz"
        path.write_bytes(raw[: len(raw) // 2])
    elif make == "garbage_nii":
        path = tmp_path / "junk.nii"
        path.write_bytes(os.urandom(500))
    else:
        path = tmp_path / "empty_folder"
        path.mkdir()
        (path / "readme.txt").write_text("no images here")
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["info", str(path)])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("immunotrack info: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_info_of_output_table_shows_provenance(tmp_path, capsys):
    source = tmp_path / "pet.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(source))
    df = pd.DataFrame({"label": [1], "mean_bq_ml": [1234.5]})
    rec = provenance.record("quantify", inputs={"pet": source}, parameters={"threshold": 0.4})
    table = write_table(df, tmp_path / "stats.csv", provenance=rec)
    rc = main(["info", str(table)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "step: quantify" in out and str(source.resolve()) in out
    assert provenance.sha256_path(source)[:16] in out and "parameter threshold: 0.4" in out
    assert "table of 1 rows; columns: label, mean_bq_ml" in out
    data = run_json(capsys, table)
    assert data["provenance"]["inputs"]["pet"]["sha256"] == provenance.sha256_path(source)
    assert data["table"] == {"rows": 1, "columns": ["label", "mean_bq_ml"]}
    assert data["provenance"]["output_sha256"] == provenance.sha256_path(table)
    assert (
        data["provenance_matches_output"] is True
        and "output sha256: matches this file" in (main(["info", str(table)]), capsys.readouterr().out)[1]
    )
    # the table edited by hand (or a new table beside an old record): info says the record is not for it
    table.write_text(table.read_text().replace("1234.5", "999.0"))
    assert main(["info", str(table)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: this record was written for other content" in out
    assert run_json(capsys, table)["provenance_matches_output"] is False


def test_info_of_table_without_provenance_is_bad_input(tmp_path, capsys):
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    assert main(["info", str(tmp_path / "plain.csv")]) == 2
    assert "unknown image format" in capsys.readouterr().err


def test_info_zarr_pyramid(tmp_path, capsys):
    from napari_immunotrack.io.zarr import write_ome_zarr
    from napari_immunotrack.volume import Volume

    write_ome_zarr(
        Volume(np.zeros((8, 16, 16), np.uint16), np.diag([0.01, 0.01, 0.02, 1.0])),
        tmp_path / "s.ome.zarr",
        levels=2,
        chunks=(8, 8, 8),
    )
    info = run_json(capsys, tmp_path / "s.ome.zarr")["volumes"][0]
    # the diagonal affine runs axis 0 along x (R): the file stores it in canonical (z, y, x) order
    assert info["pyramid_shapes"] == [[16, 16, 8], [8, 8, 4]] and info["orientation"] == "SAR"
    assert info["voxel_size_mm"] == [0.02, 0.01, 0.01]


def test_cli_does_not_import_napari_or_qt():
    code = (
        "import napari_immunotrack.cli, napari_immunotrack.commands.info, napari_immunotrack.io, sys; "
        "napari_immunotrack.cli.build_parser(); "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt6', 'PyQt5', 'vispy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_real_subprocess(tmp_path):
    exe = VENV_BIN / "immunotrack"
    assert exe.exists(), exe
    ok = subprocess.run(
        [str(exe), "info", os.path.join(data_path, "anatomical.nii")], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and "shape: [25, 41, 33]" in ok.stdout and ok.stderr == ""
    bad = subprocess.run([str(exe), "info", str(tmp_path / "missing.nii")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_info_on_a_folder_holding_an_ome_tiff_describes_it(tmp_path, capsys):
    """A folder with an OME-TIFF (written by tifffile) is no DICOM series: info says so and describes the
    file, with the shape and voxel size the OME-XML gives; other verbs name the file to give instead."""
    folder = tmp_path / "microscopy"
    folder.mkdir()
    data = np.arange(4 * 16 * 24, dtype=np.uint16).reshape(4, 16, 24)
    meta = {"axes": "ZYX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0, "PhysicalSizeZ": 5.0}  # micrometres
    tifffile.imwrite(folder / "cells.ome.tif", data, ome=True, metadata=meta)
    (folder / "notes.txt").write_text("acquired on the spinning disc")
    rc = main(["info", str(folder)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "no DICOM" not in captured.out + captured.err
    assert "is not a DICOM series" in captured.out and "cells.ome.tif (TIFF/OME-TIFF)" in captured.out
    out = run_json(capsys, folder)
    assert [Path(i["path"]).name for i in out["folder"]["images"]] == ["cells.ome.tif"]
    (vol,) = out["volumes"]
    reference = tifffile.TiffFile(folder / "cells.ome.tif")
    assert vol["file"] == "cells.ome.tif" and sorted(vol["shape"]) == sorted(reference.series[0].shape)
    assert sorted(vol["voxel_size_mm"]) == pytest.approx([0.002, 0.002, 0.005])
    # another verb on the folder: one line naming the file to give
    rc = main(["segment", str(folder), "-o", str(tmp_path / "c.nii.gz")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "cells.ome.tif" in err and "give the file" in err


@pytest.mark.parametrize("make", ["not_gzip", "garbage_nii", "garbage_mha", "empty_zarr"])
def test_error_messages_name_the_path_once(tmp_path, capsys, make):
    """The libraries' own texts repeat the path (nibabel 'File x is not a gzip file', SimpleITK, zarr)."""
    if make == "not_gzip":
        path = tmp_path / "scan.nii.gz"
        path.write_bytes(b"hello")
    elif make == "garbage_nii":
        path = tmp_path / "scan.nii"
        path.write_bytes(b"x" * 10)
    elif make == "garbage_mha":
        path = tmp_path / "scan.mha"
        path.write_bytes(b"x")
    else:
        path = tmp_path / "scan.zarr"
        path.mkdir()
    rc = main(["info", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.count(path.name) == 1, err


def test_info_on_an_empty_folder_says_it_is_empty(tmp_path, capsys):
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    assert main(["info", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "empty folder" in err and err.count("\n") == 1


@pytest.mark.parametrize("verb", ["segment", "relax"])
def test_a_verb_names_a_broken_inputs_role_and_path_once(tmp_path, capsys, verb):
    """'POST x.nii.gz: x.nii.gz is not a readable NIfTI file' printed the path twice."""
    bad = tmp_path / "post_scan.nii.gz"
    bad.write_bytes(b"not gzip at all")
    args = [verb, str(bad), "-o", str(tmp_path / "out.nii.gz")]
    if verb == "relax":
        args += ["--model", "t2star"]
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.count("post_scan.nii.gz") == 1, err
