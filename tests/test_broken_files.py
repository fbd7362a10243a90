"""Broken files, end to end: each gives the one-line message it must, on the command line and in napari.

Two corpora, both opened by ``immunotrack info`` (exit 2, exactly one line on
standard error, no traceback) and by the plugin's napari reader (no layer,
exactly one error notification with the same text, no exception into napari):

- files broken the ways real exports break, generated here (truncated NIfTI
  and DICOM, wrong magic, absurd header values, mixed and incomplete series);
- files nobody wrote for these tests: the odd and broken test files shipped
  with pydicom and nibabel, opened as a new user would. Formats the plugin
  does not read are left to napari's other readers (``get_reader`` says no)
  and named, with what to convert them to, on the command line.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_immunotrack.cli import main
from napari_immunotrack.io import load_volume
from napari_immunotrack.io.dicom import write_dicom_series
from napari_immunotrack.volume import Volume

# ------------------------------------------------------------------------ builders
AFFINE = np.array([[0.0, 0, 0.5, -10], [0, 0.5, 0, 20], [-2.0, 0, 0, 30], [0, 0, 0, 1]])


def _nifti(path: Path, data=None, edit=None, cut=None, gz=False):
    data = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) if data is None else data
    img = nib.Nifti1Image(data, AFFINE)
    img.set_qform(AFFINE, code=1)
    img.header.set_data_offset(352)
    raw = bytearray(img.header.binaryblock + b"\x00" * 4 + np.asarray(data).tobytes(order="F"))
    for offset, fmt, value in edit or []:
        struct.pack_into(fmt, raw, offset, value)
    raw = bytes(raw[:cut] if cut else raw)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _series(folder: Path, **kwargs):
    vol = Volume(np.random.default_rng(0).random((5, 6, 6)).astype(np.float32) * 100, AFFINE, modality="MR")
    return write_dicom_series(vol, folder, **kwargs)


def nii_cut_in_the_data(d):
    return _nifti(d / "cut.nii", cut=352 + 100)


def nii_gz_cut_short(d):
    full = gzip.compress(_nifti(d / "full.nii").read_bytes())
    (d / "cut.nii.gz").write_bytes(full[: len(full) // 2])
    return d / "cut.nii.gz"


def nii_vox_offset_inside_the_header(d):  # a writer that left vox_offset at 0: voxels read from the header
    return _nifti(d / "offset.nii", edit=[(108, "<f", 0.0)])


def nii_wrong_magic(d):
    return _nifti(d / "magic.nii", edit=[(344, "4s", b"xyz\x00")])


def nii_zero_voxel_size(d):  # qform only, pixdim[1] = 0
    return _nifti(d / "zero.nii", edit=[(254, "<h", 0), (80, "<f", 0.0)])


def nii_nan_in_the_sform(d):
    return _nifti(d / "nan.nii", edit=[(254, "<h", 1), (280, "<f", float("nan"))])


def nii_invalid_unit_code(d):
    return _nifti(d / "units.nii", edit=[(123, "<B", 5)])


def nii_enormous_dimensions(d):  # 32767^3 voxels claimed over a 1 kB file
    return _nifti(d / "huge.nii", edit=[(42, "<h", 32767), (44, "<h", 32767), (46, "<h", 32767)])


def nii_a_single_slice_2d(d):
    img = nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4))
    nib.save(img, d / "slice.nii")
    return d / "slice.nii"


def nii_no_orientation(d):
    return _nifti(d / "noorient.nii", edit=[(252, "<h", 0), (254, "<h", 0)])


def nii_rgb_voxels(d):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), d / "rgb.nii")
    return d / "rgb.nii"


def dcm_text_file_named_dcm(d):
    (d / "scan.dcm").write_text("Patient notes, exported as .dcm by mistake\n")
    return d / "scan.dcm"


def dcm_series_with_a_cut_file(d):
    folder = _series(d / "series")
    victim = sorted(folder.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:-30])
    return folder


def dcm_series_missing_a_slice(d):
    folder = _series(d / "series")
    os.remove(sorted(folder.iterdir())[2])
    return folder


def dcm_series_without_pixel_spacing(d):
    return _series(d / "series", extra={"PixelSpacing": None})


def dcm_series_with_mixed_orientations(d):
    return _series(
        d / "series", extra={"ImageOrientationPatient": lambda s, f: [1, 0, 0, 0, 1, 0] if s else [0, 1, 0, 0, 0, -1]}
    )


def dcm_one_slice_file(d):
    folder = _series(d / "series")
    return sorted(folder.iterdir())[0]


def dcm_empty_folder_with_readme(d):
    (d / "export").mkdir()
    (d / "export" / "README.txt").write_text("the images were not copied\n")
    (d / "export" / "IM0001").write_bytes(b"\x00" * 64)
    return d / "export"


def tiff_cut_short(d):
    import tifffile

    tifffile.imwrite(d / "stack.ome.tif", np.zeros((4, 16, 16), np.uint16), metadata={"axes": "ZYX"})
    raw = (d / "stack.ome.tif").read_bytes()
    (d / "cut.ome.tif").write_bytes(raw[:200])
    return d / "cut.ome.tif"


def tiff_without_pixel_size(d):
    import tifffile

    tifffile.imwrite(d / "plain.tif", np.zeros((4, 16, 16), np.uint16))
    return d / "plain.tif"


def zarr_with_broken_metadata(d):
    store = d / "image.ome.zarr"
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    (store / ".zattrs").write_text('{"multiscales": [{"version": "0.4", "axes": [')
    return store


#: builder -> what the one line must say (a regular expression, case-insensitive)
CORPUS = {
    nii_cut_in_the_data: r"truncated or corrupt",
    nii_gz_cut_short: r"complete and not corrupt",
    nii_vox_offset_inside_the_header: r"vox_offset 0 points inside the header.*export it again",
    nii_wrong_magic: r"not a readable nifti file.*check that the file is complete",
    nii_zero_voxel_size: r"zero voxel size in pixdim and no sform.*fix pixdim",
    nii_nan_in_the_sform: r"non-finite values in its sform",
    nii_invalid_unit_code: r"invalid spatial unit code 5.*fix the header",
    nii_enormous_dimensions: r"truncated or corrupt",
    nii_a_single_slice_2d: r"2D image.*3D volume is needed",
    nii_no_orientation: r"no valid orientation.*fix the header",
    nii_rgb_voxels: r"RGB.*grey-scale",
    dcm_text_file_named_dcm: r"not a DICOM file",
    dcm_series_with_a_cut_file: r"truncated.*copy it again",
    dcm_series_missing_a_slice: r"slice\(s\) missing",
    dcm_series_without_pixel_spacing: r"no valid PixelSpacing",
    dcm_series_with_mixed_orientations: r"2 different orientations",
    dcm_one_slice_file: r"one 2D slice.*give the series folder",
    dcm_empty_folder_with_readme: r"holds no DICOM image",
    tiff_cut_short: r"truncated or corrupt",
    tiff_without_pixel_size: r"(voxel|pixel) size",
    zarr_with_broken_metadata: r"not a readable zarr group.*give an OME-Zarr",
}


def _cli_one_line(capsys, path) -> str:
    rc = main(["info", str(path)])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2, (path, captured.err)
    assert len(lines) == 1 and lines[0].startswith("immunotrack info: error: "), lines
    assert "Traceback" not in captured.err
    return lines[0]


def _napari_one_error(path, notifications) -> str:
    from napari_immunotrack._reader import get_reader

    reader = get_reader(str(path))
    assert reader is not None, f"the plugin should claim {path} and explain the problem"
    assert reader(str(path)) == [(None,)]  # napari: read, nothing to add (no "returned no data" after it)
    errors = [text for level, text in notifications if level == "error"]
    assert len(errors) == 1 and "\n" not in errors[0], notifications
    assert not errors[0].startswith("internal error"), errors[0]
    return errors[0]


@pytest.mark.parametrize("build", list(CORPUS), ids=lambda f: f.__name__)
def test_broken_file_gives_its_message(tmp_path, capsys, notifications, build):
    import re

    path = build(tmp_path)
    expected = CORPUS[build]
    line = _cli_one_line(capsys, path)
    assert re.search(expected, line, re.I), line
    shown = _napari_one_error(path, notifications)
    assert re.search(expected, shown, re.I), shown
    assert shown in line  # the same words on the command line and in napari


def test_mixed_series_folder(tmp_path, capsys, notifications):
    """Two series in one folder: info and napari show both; a verb needing one image names them."""
    folder = tmp_path / "export"
    folder.mkdir()
    _series(folder / "a", series_description="T2 axial", series_number=3)
    _series(folder / "b", series_description="T1 axial", series_number=4)
    assert main(["info", str(folder)]) == 0
    capsys.readouterr()
    from napari_immunotrack._reader import read_layers

    assert len(read_layers(str(folder))) == 2 and not notifications
    rc = main(["segment", str(folder), "-o", str(tmp_path / "c.nii.gz")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "holds 2 series" in lines[0] and "T2 axial" in lines[0], lines
    assert not (tmp_path / "c.nii.gz").exists()


def test_a_volume_that_opens_but_cannot_be_shown_is_a_notification(tmp_path, notifications):
    """A voxel 1 km wide beside 1 mm ones (a typo in the sform) would ask napari for a display grid of
    billions of voxels: the reader says so instead of freezing the viewer."""
    path = _nifti(tmp_path / "typo.nii", edit=[(254, "<h", 1), (280, "<f", -1e6), (284, "<f", 0.0), (288, "<f", 1.0)])
    assert load_volume(path).spacing.max() > 1e5  # it opens: the header is only absurd
    shown = _napari_one_error(path, notifications)
    assert "cannot be shown" in shown and "voxel sizes" in shown


# ------------------------------------------------------------------------ files we did not write
def _pydicom(name):
    from pydicom.data import get_testdata_file

    return get_testdata_file(name)


def _nibabel(name):
    from nibabel.testing import data_path

    return os.path.join(data_path, name)


#: (where it comes from, file, what the one line must say). Run as a new user would: `immunotrack info FILE`
#: and File > Open in napari.
THIRD_PARTY = [
    ("pydicom", "MR_truncated.dcm", r"one 2D slice.*give the series folder"),
    ("pydicom", "rtplan_truncated.dcm", r"holds no image \(Modality RTPLAN\).*give a DICOM image"),
    ("pydicom", "no_meta.dcm", r"not a DICOM file.*must be converted first"),
    ("pydicom", "badVR.dcm", r"one 2D slice"),
    ("pydicom", "SC_rgb_small_odd.dcm", r"colour image.*only greyscale"),
    ("pydicom", "liver_1frame.dcm", r"describe 3 frames but the file holds 1.*export it again"),
    ("pydicom", "UN_sequence.dcm", r"header is incomplete.*truncated: copy it again"),
    ("pydicom", "test-SR.dcm", r"holds no image \(Modality SR\)"),
    ("pydicom", "zipMR.gz", r"gzip-compressed; decompress it first"),
    ("nibabel", "row_major.dconn.nii", r"not a NIfTI-1/2 volume \(Cifti2Image\); convert it"),
    ("nibabel", "0.dcm", r"Siemens mosaic.*dcm2niix"),
    ("nibabel", "nifti1.hdr", r"NIfTI-pair.*convert it to NIfTI"),
    ("nibabel", "tiny.mnc", r"MINC file.*convert it to NIfTI"),
    ("nibabel", "phantom_truncated.REC", r"PAR/REC.*convert it to NIfTI"),
]


@pytest.mark.parametrize("source, name, expected", THIRD_PARTY, ids=[t[1] for t in THIRD_PARTY])
def test_odd_files_shipped_with_pydicom_and_nibabel(tmp_path, capsys, notifications, source, name, expected):
    import re

    from napari_immunotrack._reader import get_reader

    path = _pydicom(name) if source == "pydicom" else _nibabel(name)
    assert path and os.path.exists(path), f"{source} no longer ships {name}"
    copy = tmp_path / name  # never touch the installed file
    shutil.copy(path, copy)
    before = copy.read_bytes()
    line = _cli_one_line(capsys, copy)
    assert re.search(expected, line, re.I), line
    if get_reader(str(copy)) is None:  # a format of another tool: napari's other readers get their turn
        assert "convert it to NIfTI" in line or "decompress it first" in line
    else:
        shown = _napari_one_error(copy, notifications)
        assert shown in line
    assert copy.read_bytes() == before
