"""Tried as a new user would (issue 12): files nobody wrote for these tests, and real files spoilt
the ways users spoil them, given to ``immunotrack info`` / an analysis verb and to File > Open in napari.

Every file ships with an installed package (pydicom, nibabel, scikit-image, nilearn); the spoilt
variants are made in ``tmp_path`` from those files (cut in half, renamed, compressed twice, zeroed,
zipped, copied into a mixed folder). For each bad file the command line exits 2 with exactly one line
on standard error naming the problem and what to do, leaves no output, and the napari reader either
shows that same line once (no layer, no exception) or leaves the file to napari's other readers.
Files that are legitimately readable are checked against their own headers.
"""

from __future__ import annotations

import gzip
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_immunotrack.cli import main


# ------------------------------------------------------------------------ where the files are
def _pydicom(name: str) -> Path:
    from pydicom.data import get_testdata_file

    root = Path(get_testdata_file("CT_small.dcm")).parent  # test_files/
    path = root.parent / name if name.startswith("palettes/") else root / name
    assert path.exists(), f"pydicom no longer ships {name}"
    return path


def _nibabel(name: str) -> Path:
    from nibabel.testing import data_path

    path = Path(data_path) / name
    assert path.exists(), f"nibabel no longer ships {name}"
    return path


def _skimage(name: str) -> Path:
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    assert path.exists(), f"scikit-image no longer ships {name}"
    return path


def _nilearn(name: str) -> Path:
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets" / "data" / name
    assert path.exists(), f"nilearn no longer ships {name}"
    return path


def _copy(src: Path, d: Path) -> Path:
    """A copy in tmp_path: the installed file is never touched, and nothing is left beside it."""
    dst = d / src.name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    return dst


def shipped(where, name):
    def build(d):
        return _copy(where(name), d)

    build.__name__ = name.replace("/", "_")
    return build


# ------------------------------------------------------------------------ real files spoilt by a user
MNI_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"


def mni_template_cut_in_half(d):  # an interrupted download or copy
    raw = _nilearn(MNI_GM).read_bytes()
    (d / "template.nii.gz").write_bytes(raw[: len(raw) // 2])
    return d / "template.nii.gz"


def nii_gz_renamed_nii(d):
    shutil.copy(_nilearn(MNI_GM), d / "template.nii")
    return d / "template.nii"


def nii_renamed_nii_gz(d):
    shutil.copy(_nibabel("anatomical.nii"), d / "anatomical.nii.gz")
    return d / "anatomical.nii.gz"


def nii_gz_compressed_twice(d):
    (d / "template.nii.gz").write_bytes(gzip.compress(_nilearn(MNI_GM).read_bytes()))
    return d / "template.nii.gz"


def rtdose_with_zeroed_header_bytes(d):  # a disk or transfer error: 1000 header bytes lost
    raw = bytearray(_pydicom("rtdose.dcm").read_bytes())
    raw[400:1400] = bytes(1000)
    (d / "rtdose.dcm").write_bytes(raw)
    return d / "rtdose.dcm"


def rtdose_cut_short(d):
    raw = _pydicom("rtdose.dcm").read_bytes()
    (d / "rtdose.dcm").write_bytes(raw[:-2000])
    return d / "rtdose.dcm"


def mr_exported_without_preamble(d):  # a raw dataset, as some PACS dumps write them
    import pydicom
    from pydicom.filewriter import dcmwrite

    ds = pydicom.dcmread(_pydicom("MR_small.dcm"))
    ds.preamble = None
    del ds.file_meta
    dcmwrite(d / "mr.dcm", ds, enforce_file_format=False)
    return d / "mr.dcm"


def folder_of_single_files_of_several_kinds(d):  # "everything the scanner gave me" in one folder
    folder = d / "export"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "waveform_ecg.dcm", "test-SR.dcm", "rtplan.dcm"):
        shutil.copy(_pydicom(name), folder / name)
    return folder


def zipped_dicom_series(d):  # the series as it came by e-mail
    root = _pydicom("dicomdirtests")
    with zipfile.ZipFile(d / "series.zip", "w") as zf:
        for f in sorted((root / "98892001").rglob("*")):
            zf.write(f, f.relative_to(root))
    return d / "series.zip"


def dicomdir_file(d):  # the index file of a DICOM CD, picked instead of the folder
    return _copy(_pydicom("dicomdirtests"), d) / "DICOMDIR"


def incomplete_ct_series(d):  # slices 18, 180, 181, 182 of a brain CT: most of the series was not copied
    return _copy(_pydicom("dicomdirtests/77654033/CT2"), d)


#: builder -> (what the one line must say (regular expression, case-insensitive), napari: "same" = the plugin
#: claims the file and shows the same line; "others" = left to napari's other readers)
BAD = {
    # pydicom's odd test objects
    shipped(_pydicom, "rtstruct.dcm"): (
        r"holds no image: it is a DICOM object of class RT Structure Set Storage "
        r"\(Modality RTSTRUCT\), stored without the DICOM file header; give a "
        r"DICOM image file",
        "same",
    ),
    shipped(_pydicom, "ExplVR_BigEndNoMeta.dcm"): (
        r"holds no image: .*RT Ion Plan Storage \(Modality RTPLAN\)",
        "same",
    ),
    shipped(_pydicom, "waveform_ecg.dcm"): (r"holds no image \(Modality ECG\); give a DICOM image file", "same"),
    shipped(_pydicom, "meta_missing_tsyntax.dcm"): (r"DICOM header is damaged.*copy or export it again", "same"),
    shipped(_pydicom, "empty_charset_LEI.dcm"): (
        r"holds no image \(its header has no Modality, SOP class or "
        r"pixel data\)",
        "same",
    ),
    shipped(_pydicom, "palettes/pet.dcm"): (
        r"holds no image \(a DICOM object of class Color Palette Storage\)",
        "same",
    ),
    shipped(_pydicom, "JPEG-lossy.dcm"): (r"holds one 2D slice; a 3D volume is needed: give the series folder", "same"),
    shipped(_pydicom, "examples_ybr_color.dcm"): (r"colour image \(3 samples per pixel\); only greyscale", "same"),
    # other tools' formats a PET/MR user has lying around
    shipped(_nibabel, "tinypet.v"): (r"is an ECAT file.*convert it to NIfTI first", "others"),
    shipped(_nibabel, "test.mgz"): (r"is a FreeSurfer MGH file.*convert it to NIfTI first", "others"),
    shipped(_nibabel, "simple.trk"): (r"tractography streamline file, not a volume image; give a NIfTI", "others"),
    shipped(_nilearn, "fsaverage5/pial_left.gii.gz"): (r"GIFTI surface.*not a volume image; give a NIfTI", "others"),
    shipped(_skimage, "astronaut.png"): (r"2D picture without a voxel size or position.*give the original", "others"),
    shipped(_skimage, "lfw_subset.npy"): (r"array file without voxel size.*save the array as NIfTI", "others"),
    shipped(_skimage, "multipage.tif"): (r"no physical pixel size.*set it in the file and save again \(Fiji", "same"),
    # real files spoilt
    mni_template_cut_in_half: (r"image data cannot be read.*truncated or corrupt: copy or export it again", "same"),
    nii_gz_renamed_nii: (r"is gzip-compressed but its name ends in \.nii; rename it to \.nii\.gz", "same"),
    nii_renamed_nii_gz: (r"is not gzip-compressed although its name ends in \.gz; rename it to \.nii\.", "same"),
    nii_gz_compressed_twice: (r"gzip-compressed twice; decompress it once", "same"),
    rtdose_with_zeroed_header_bytes: (r"image header is incomplete \(no Rows/Columns\).*copy it again", "same"),
    rtdose_cut_short: (r"pixel data are 4000 bytes where 6000 are expected.*copy it again", "same"),
    mr_exported_without_preamble: (
        r"DICOM image of class MR Image Storage \(Modality MR\), stored without the "
        r"128-byte preamble.*convert it to a standard DICOM file first",
        "same",
    ),
    folder_of_single_files_of_several_kinds: (
        r"holds 2 DICOM series but none forms a 3D volume.*give the series "
        r"folder with all its slices",
        "same",
    ),
    zipped_dicom_series: (r"is an archive; extract it first", "others"),
    dicomdir_file: (r"is a DICOMDIR.*give the folder that holds it", "same"),
    incomplete_ct_series: (r"161 slice\(s\) missing.*copy all of its files", "same"),
}


def _listing(d: Path) -> set:
    return {p for p in d.rglob("*")}


def _one_error_line(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith(f"immunotrack {argv[0]}: error: "), lines
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


@pytest.mark.parametrize("build", list(BAD), ids=lambda f: f.__name__)
def test_a_bad_file_says_what_is_wrong_and_what_to_do(tmp_path, capsys, notifications, build):
    from napari_immunotrack._reader import get_reader

    d = tmp_path / "in"
    d.mkdir()
    path = build(d)
    expected, napari = BAD[build]
    before = _listing(tmp_path)
    line = _one_error_line(capsys, ["info", str(path)])
    assert re.search(expected, line, re.I), line
    # an analysis verb refuses it with the same words and writes nothing
    out = tmp_path / "labels.nii.gz"
    seg = _one_error_line(capsys, ["segment", str(path), "-o", str(out)])
    assert line.split("error: ", 1)[1] in seg, seg
    assert _listing(tmp_path) == before, "an output or temporary file was left"
    reader = get_reader(str(path))
    if napari == "others":
        assert reader is None  # napari's own readers (or none) get the file; the plugin does not claim it
    else:
        assert reader is not None
        assert reader(str(path)) == [(None,)]
        errors = [text for level, text in notifications if level == "error"]
        assert len(errors) == 1 and "\n" not in errors[0], notifications
        assert errors[0] in line  # the same words on the command line and in napari
    assert _listing(tmp_path) == before


# ------------------------------------------------------------------------ files that are fine
def _info_json(capsys, argv) -> dict:
    import json

    assert main(["info", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_rtdose_grid_is_read_from_its_header(tmp_path, capsys, notifications):
    """pydicom's RT dose grid: 15 frames placed by GridFrameOffsetVector (5 mm), 10 mm pixels."""
    import pydicom

    from napari_immunotrack._reader import get_reader

    path = _copy(_pydicom("rtdose.dcm"), tmp_path)
    ds = pydicom.dcmread(path)
    (vol,) = _info_json(capsys, [str(path)])["volumes"]
    assert vol["shape"] == [int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns)] == [15, 10, 10]
    step = float(np.diff(np.asarray(ds.GridFrameOffsetVector, float))[0])
    assert vol["voxel_size_mm"] == pytest.approx([step, *map(float, ds.PixelSpacing)])
    assert vol["unit"] == "relative dose" and ds.DoseUnits == "RELATIVE"
    # the first voxel is at ImagePositionPatient (LPS -> RAS flips x and y)
    x, y, z = map(float, ds.ImagePositionPatient)
    from napari_immunotrack.io import load_volume

    assert load_volume(path).index_to_world([[0, 0, 0]])[0] == pytest.approx([-x, -y, z])
    layers = get_reader(str(path))(str(path))
    assert len(layers) == 1 and layers[0][0].shape == (15, 10, 10) and not notifications


def test_dicom_disc_folder_opens_its_one_volume_and_says_what_it_skipped(tmp_path, capsys, notifications):
    """pydicom's copy of a DICOM CD: one CT series is a volume; the localizers, single slices and stripped
    objects are named in warnings, one line each."""
    import pydicom

    from napari_immunotrack._reader import get_reader

    folder = _copy(_pydicom("dicomdirtests"), tmp_path)
    assert main(["info", "--json", str(folder)]) == 0
    captured = capsys.readouterr()
    import json

    (vol,) = json.loads(captured.out)["volumes"]
    warnings_ = captured.err.strip().splitlines()
    assert len(warnings_) == 2 and all(w.startswith("immunotrack: warning: ") for w in warnings_), warnings_
    assert "DICOM series skipped" in warnings_[1] and "holds one 2D slice" in warnings_[1]
    first = pydicom.dcmread(sorted((folder / "98892001" / "CT5N").iterdir())[0])
    assert vol["modality"] == "CT" and vol["unit"] == "HU"
    assert vol["shape"] == [5, int(first.Rows), int(first.Columns)]
    assert vol["voxel_size_mm"][1:] == pytest.approx([float(v) for v in first.PixelSpacing], abs=1e-6)
    layers = get_reader(str(folder))(str(folder))
    assert len(layers) == 1 and layers[0][0].shape == (5, 16, 16)
    assert not [n for n in notifications if n[0] == "error"]


def test_4d_nifti_opens_and_a_3d_verb_says_how_to_proceed(tmp_path, capsys):
    """nibabel's example4d.nii.gz is a time series: info describes it; segment wants one 3D volume."""
    import nibabel as nib

    path = _copy(_nibabel("example4d.nii.gz"), tmp_path)
    img = nib.load(path)
    (vol,) = _info_json(capsys, [str(path)])["volumes"]
    assert vol["shape"] == [img.shape[3], *img.shape[2::-1]]
    assert vol["voxel_size_mm"] == pytest.approx(img.header.get_zooms()[2::-1], abs=1e-5)
    out = tmp_path / "labels.nii.gz"
    line = _one_error_line(capsys, ["segment", str(path), "-o", str(out)])
    assert "4 dimensions; give one 3D volume" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example4d.nii.gz"]


def test_tiff_without_pixel_size_opens_once_the_user_gives_it(tmp_path, capsys):
    """scikit-image's multipage.tif has no pixel size; with --voxel-size, as the refusal says, it opens."""
    import tifffile

    path = _copy(_skimage("multipage.tif"), tmp_path)
    (vol,) = _info_json(capsys, [str(path), "--voxel-size", "0.1"])["volumes"]
    assert vol["shape"] == list(tifffile.TiffFile(path).series[0].shape) == [2, 15, 10]
    assert vol["voxel_size_mm"] == pytest.approx([0.1, 0.1, 0.1])


def test_jpeg_ls_series_needs_a_decoder_and_says_which(tmp_path, capsys, notifications):
    """A 4-slice series built from pydicom's JPEG-LS MR slice: without a JPEG-LS decoder installed the
    refusal gives the pip command; with one, the series opens."""
    import pydicom
    from pydicom.pixels import get_decoder
    from pydicom.uid import generate_uid

    from napari_immunotrack._reader import get_reader

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(4):
        ds = pydicom.dcmread(_pydicom("MR_small_jpeg_ls_lossless.dcm"))
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.0 * i], [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber, ds.SOPInstanceUID = i + 1, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"IM{i}.dcm")
    ts = pydicom.dcmread(folder / "IM0.dcm").file_meta.TransferSyntaxUID
    if get_decoder(ts).is_available:
        (vol,) = _info_json(capsys, [str(folder)])["volumes"]
        assert vol["shape"] == [4, int(ds.Rows), int(ds.Columns)]
        return
    line = _one_error_line(capsys, ["info", str(folder)])
    assert re.search(
        r"compressed as JPEG-LS Lossless.*no installed decoder.*install a decoder: pip install \S+", line
    ), line
    assert get_reader(str(folder))(str(folder)) == [(None,)]
    errors = [text for level, text in notifications if level == "error"]
    assert len(errors) == 1 and errors[0] in line
