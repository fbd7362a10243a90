"""Property-based search for reader crashes: random damage to valid files.

The contract of every reader: a file opens as Volumes that the rest of the
plugin can use (``immunotrack info``'s description and napari's layer data
are built from them), or it is refused with an
:class:`~napari_immunotrack.errors.InputError` whose message is one line.
Any other exception is a bug. The damage is what real files suffer: exports
cut short, bytes flipped on a bad disk, header fields hand-typed at the
scanner (zero, negative, NaN, infinite or enormous values), missing fields.

Budget: about 2400 examples in all in about 30 s on one core; cheap targets get more.
IMMUNOTRACK_FUZZ_SCALE multiplies it (see :data:`FUZZ_SCALE`).
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from napari_immunotrack.commands.info import describe
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.io import load_volumes
from napari_immunotrack.volume import Volume
from napari_immunotrack.widgets._common import volume_layer_data

#: IMMUNOTRACK_FUZZ_SCALE=20 (say, in a nightly job) multiplies every budget and draws fresh random
#: examples each run; the default (1) is a fixed, reproducible set that fits the CI time.
FUZZ_SCALE = max(1, int(os.environ.get("IMMUNOTRACK_FUZZ_SCALE", "1")))


def budget(n):
    return settings(
        max_examples=n * FUZZ_SCALE, deadline=None, derandomize=FUZZ_SCALE == 1, suppress_health_check=list(HealthCheck)
    )


def opens_or_refuses(path):
    """Load ``path``; return the volumes or None when refused with a one-line InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImmunotrackWarning)
            volumes = load_volumes(path)
    except InputError as exc:
        text = str(exc)
        assert text and "\n" not in text and "Traceback" not in text
        return None
    assert volumes and all(isinstance(v, Volume) for v in volumes)
    for v in volumes:
        # what `immunotrack info` and the napari reader do next with an opened volume
        assert np.all(np.isfinite(v.affine)) and v.voxel_volume_mm3 > 0
        describe(v)
        try:
            volume_layer_data(v)
        except InputError:
            pass
    return volumes


# ------------------------------------------------------------------------- NIfTI
def _nifti_bytes(dtype=np.int16, shape=(5, 4, 3)) -> bytes:
    data = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    affine = np.array([[0.0, 0, 2.0, -10], [0, 1.5, 0, 20], [-1.0, 0, 0, 30], [0, 0, 0, 1]])
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio), "header": nib.FileHolder(fileobj=bio)})
    return bio.getvalue()


VALID_NII = _nifti_bytes()
VALID_NII_F32 = _nifti_bytes(np.float32, (3, 4, 2))

#: NIfTI-1 header fields (byte offset, struct format) that users' files get wrong.
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i"),
    "dim0": (40, "<h"),
    "dim1": (42, "<h"),
    "dim2": (44, "<h"),
    "dim3": (46, "<h"),
    "dim4": (48, "<h"),
    "dim5": (50, "<h"),
    "datatype": (70, "<h"),
    "bitpix": (72, "<h"),
    "pixdim0": (76, "<f"),
    "pixdim1": (80, "<f"),
    "pixdim2": (84, "<f"),
    "pixdim3": (88, "<f"),
    "pixdim4": (92, "<f"),
    "vox_offset": (108, "<f"),
    "scl_slope": (112, "<f"),
    "scl_inter": (116, "<f"),
    "xyzt_units": (123, "<B"),
    "cal_max": (124, "<f"),
    "qform_code": (252, "<h"),
    "sform_code": (254, "<h"),
    "quatern_b": (256, "<f"),
    "quatern_c": (260, "<f"),
    "quatern_d": (264, "<f"),
    "qoffset_x": (268, "<f"),
    "srow_x0": (280, "<f"),
    "srow_x3": (292, "<f"),
    "srow_y1": (300, "<f"),
    "srow_z2": (320, "<f"),
    "srow_z3": (324, "<f"),
    "magic": (344, "<i"),
}
SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, -1.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"), float("-inf")])
SPECIAL_INTS = st.sampled_from([0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 64, 255, 32767, -32768, 2**31 - 1])


@st.composite
def field_edits(draw):
    """1-3 header fields set to hand-typed-looking or absurd values."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(NIFTI_FIELDS)))
        offset, fmt = NIFTI_FIELDS[name]
        if fmt == "<f":
            value = draw(SPECIAL_FLOATS | st.floats(-1e6, 1e6, allow_nan=False, width=32))
        elif fmt == "<B":
            value = draw(st.integers(0, 255))
        elif fmt == "<h":
            value = draw(SPECIAL_INTS.filter(lambda v: -32768 <= v <= 32767) | st.integers(-32768, 32767))
        else:
            value = draw(SPECIAL_INTS | st.integers(-(2**31), 2**31 - 1))
        edits.append((offset, fmt, value))
    return edits


def _apply(raw: bytes, edits) -> bytes:
    buf = bytearray(raw)
    for offset, fmt, value in edits:
        struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@budget(1000)
@given(edits=field_edits(), gz=st.booleans(), base=st.sampled_from(["int16", "float32"]))
@example(edits=[(42, "<h", 32767), (44, "<h", 32767), (46, "<h", 32767)], gz=False, base="int16")  # enormous dims
@example(edits=[(42, "<h", 32767), (44, "<h", 32767), (46, "<h", 32767)], gz=True, base="float32")
@example(edits=[(80, "<f", 0.0), (254, "<h", 0), (252, "<h", 1)], gz=False, base="int16")  # zero voxel size
@example(edits=[(280, "<f", float("nan"))], gz=True, base="int16")  # NaN in the sform
@example(edits=[(112, "<f", float("inf"))], gz=False, base="float32")  # infinite scale slope
def test_nifti_with_absurd_header_fields(tmp_path_factory, edits, gz, base):
    raw = _apply(VALID_NII if base == "int16" else VALID_NII_F32, edits)
    path = tmp_path_factory.mktemp("nii") / ("img.nii.gz" if gz else "img.nii")
    path.write_bytes(gzip.compress(raw, compresslevel=1) if gz else raw)
    opens_or_refuses(path)


@budget(800)
@given(cut=st.integers(0, len(VALID_NII) - 1), gz=st.booleans())
def test_truncated_nifti(tmp_path_factory, cut, gz):
    path = tmp_path_factory.mktemp("nii") / ("cut.nii.gz" if gz else "cut.nii")
    data = gzip.compress(VALID_NII, compresslevel=1) if gz else VALID_NII
    if gz:
        cut = cut * len(data) // len(VALID_NII)
    path.write_bytes(data[:cut])
    assert opens_or_refuses(path) is None  # a cut file never opens as if it were complete


@budget(800)
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID_NII) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_nifti_with_flipped_bytes(tmp_path_factory, flips):
    buf = bytearray(VALID_NII)
    for pos, value in flips:
        buf[pos] = value
    path = tmp_path_factory.mktemp("nii") / "flip.nii"
    path.write_bytes(bytes(buf))
    opens_or_refuses(path)


@budget(400)
@given(noise=st.binary(min_size=0, max_size=600), suffix=st.sampled_from([".nii", ".nii.gz", ".dcm", ".tif", ""]))
def test_random_bytes_with_an_image_name(tmp_path_factory, noise, suffix):
    path = tmp_path_factory.mktemp("junk") / f"scan{suffix}"
    path.write_bytes(noise)
    assert opens_or_refuses(path) is None


def test_enormous_dimensions_are_refused_before_reading(tmp_path):
    """A header claiming 32767^3 voxels over a 1 kB file: a clear refusal, no attempt to allocate 70 TB."""
    raw = _apply(VALID_NII, [(42, "<h", 32767), (44, "<h", 32767), (46, "<h", 32767)])
    for name, content in (("huge.nii", raw), ("huge.nii.gz", gzip.compress(raw))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(InputError, match="truncated|corrupt|too (large|big)|voxels"):
            load_volumes(tmp_path / name)


# ------------------------------------------------------------------------- DICOM
def _dicom_series(folder: Path, n=3):
    """A 3-slice MR series written from pydicom's MR_small.dcm (so every tag a scanner writes is there)."""
    import pydicom
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pos = [float(v) for v in base.ImagePositionPatient]
    normal = np.cross(
        np.array(base.ImageOrientationPatient[:3], float), np.array(base.ImageOrientationPatient[3:], float)
    )
    paths = []
    for i in range(n):
        ds = base.copy()
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.add(pos, 2.0 * i * normal)]
        ds.InstanceNumber = i + 1
        # each slice its own pixels (the image shifted by i rows), so a slice mixed up with another shows
        ds.PixelData = np.roll(base.pixel_array, 5 * i, axis=0).astype(base.pixel_array.dtype).tobytes()
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{i + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        paths.append(folder / f"slice{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


@functools.lru_cache(maxsize=1)
def series_bytes():
    """The bytes of the three files of :func:`_dicom_series` (made once)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return tuple(p.read_bytes() for p in _dicom_series(Path(tmp) / "s"))


@functools.lru_cache(maxsize=1)
def series_pixels() -> np.ndarray:
    """The voxels of the unharmed series as the reader gives them (slices first), read once."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (volume,) = load_volumes(_write_series(Path(tmp) / "s", series_bytes()))
        return np.asarray(volume.numpy())


def assert_only_intact_slices(volumes, intact: np.ndarray) -> None:
    """Each opened volume is a run of slices of the unharmed series, voxel for voxel and in order."""
    for v in volumes or ():
        data = np.asarray(v.numpy())
        assert data.ndim == 3 and data.shape[1:] == intact.shape[1:], (data.shape, intact.shape)
        where = []
        for k, plane in enumerate(data):
            same = [j for j, good in enumerate(intact) if np.array_equal(plane, good)]
            assert same, f"slice {k} of a {data.shape} volume holds pixels of no intact slice"
            where.append(same[0])
        assert where == sorted(where), f"slices out of order: {where}"


def _write_series(folder: Path, contents):
    folder.mkdir()
    for i, content in enumerate(contents):
        (folder / f"slice{i}.dcm").write_bytes(content)
    return folder


def test_the_unharmed_series_opens(tmp_path):
    (volume,) = opens_or_refuses(_write_series(tmp_path / "s", series_bytes()))
    assert volume.spatial_shape == (3, 64, 64)
    assert volume.spacing[0] == pytest.approx(2.0, abs=1e-3)
    # the reference the damaged series are compared with, checked against pydicom's own decoding
    import pydicom

    decoded = [pydicom.dcmread(io.BytesIO(content)).pixel_array for content in series_bytes()]
    data = np.asarray(volume.numpy())
    assert np.array_equal(data, series_pixels())
    order = [next(j for j, d in enumerate(decoded) if np.array_equal(plane, d)) for plane in data]
    assert sorted(order) == [0, 1, 2] and order in ([0, 1, 2], [2, 1, 0])


@budget(500)
@given(which=st.integers(0, 2), cut=st.floats(0.0, 0.999))
@example(which=0, cut=0.1408930261510626)  # cut inside Columns
def test_dicom_series_with_a_truncated_file(tmp_path_factory, which, cut):
    contents = list(series_bytes())
    contents[which] = contents[which][: int(cut * len(contents[which]))]
    volumes = opens_or_refuses(_write_series(tmp_path_factory.mktemp("d") / "s", contents))
    # A series with a slice cut short never opens holding wrong pixels: what opens is the intact slices,
    # voxel for voxel, in their places (the cut file dropped, or the whole series refused). A cut into the
    # trailing padding after the pixel data may still open all three slices, then exactly as they were.
    assert_only_intact_slices(volumes, series_pixels())


@budget(500)
@given(
    which=st.integers(0, 2),
    flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_dicom_series_with_flipped_bytes(tmp_path_factory, which, flips):
    contents = list(series_bytes())
    buf = bytearray(contents[which])
    for where, value in flips:
        buf[int(where * len(buf))] = value
    contents[which] = bytes(buf)
    opens_or_refuses(_write_series(tmp_path_factory.mktemp("d") / "s", contents))


#: Header fields with the values hand-typed or left out at the scanner.
DICOM_EDITS = {
    "PixelSpacing": [None, ["0", "0"], ["-1", "1"], ["nan", "1"], ["inf", "1"], ["1"], ["1e30", "1e30"], ["abc", "1"]],
    "ImagePositionPatient": [None, ["0", "0"], ["nan", "0", "0"], ["inf", "0", "0"], ["1e308", "0", "0"]],
    "ImageOrientationPatient": [None, ["0"] * 6, ["1", "0", "0", "1", "0", "0"], ["nan"] * 6, ["1", "0", "0"]],
    "Rows": [None, 0, 1, 65535],
    "Columns": [None, 0, 1, 65535],
    "BitsAllocated": [None, 0, 1, 7, 12, 32, 64],
    "BitsStored": [None, 0, 40],
    "HighBit": [None, 99],
    "PixelRepresentation": [None, 1, 7],
    "SamplesPerPixel": [None, 0, 3],
    "PhotometricInterpretation": [None, "RGB", "PALETTE COLOR", ""],
    "RescaleSlope": [None, "0", "nan", "inf", "-1e38"],
    "RescaleIntercept": ["nan", "1e308"],
    "NumberOfFrames": [None, "0", "5", "-1", "abc"],
    "SliceThickness": [None, "0", "-2", "nan"],
    "SeriesInstanceUID": [None, ""],
    "Modality": [None, "", "PT", "NM", "SR"],
    "SpacingBetweenSlices": ["0", "-3", "nan"],
    "PixelData": [None, b"", b"\x00" * 10],
}


def _set_raw(ds, keyword, value):
    """Put ``value`` in the file as it is, unchecked, as a hand-edited or buggy export would."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    tag = Tag(tag_for_keyword(keyword))
    vr = dictionary_VR(tag)
    vr = "OW" if vr == "OB or OW" else vr  # the pixel data of a 16-bit image
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, int):
        raw = struct.pack("<H", value) if vr in ("US", "SS") else str(value).encode()
    elif isinstance(value, list):
        raw = "\\".join(value).encode()
    else:
        raw = str(value).encode()
    if len(raw) % 2:
        raw += b"\x00" if vr in ("UI", "OB", "OW") else b" "
    ds._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)


@st.composite
def dicom_edits(draw):
    keys = draw(st.lists(st.sampled_from(sorted(DICOM_EDITS)), min_size=1, max_size=3, unique=True))
    return [(k, draw(st.sampled_from(DICOM_EDITS[k]))) for k in keys]


@budget(700)
@given(edits=dicom_edits(), every_file=st.booleans())
def test_dicom_series_with_absurd_header_values(tmp_path_factory, edits, every_file):
    import pydicom

    contents = []
    for i, content in enumerate(series_bytes()):
        if i == 1 or every_file:
            ds = pydicom.dcmread(io.BytesIO(content))
            for keyword, value in edits:
                if value is None:
                    if keyword in ds:
                        delattr(ds, keyword)
                else:
                    _set_raw(ds, keyword, value)
            out = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(out, enforce_file_format=False)
            content = out.getvalue()
        contents.append(content)
    opens_or_refuses(_write_series(tmp_path_factory.mktemp("d") / "s", contents))


@budget(300)
@given(drop=st.sets(st.integers(0, 2), max_size=2), duplicate=st.booleans(), junk=st.booleans())
def test_dicom_series_with_missing_duplicated_and_foreign_files(tmp_path_factory, drop, duplicate, junk):
    contents = [c for i, c in enumerate(series_bytes()) if i not in drop]
    if duplicate:
        contents.append(contents[0])
    folder = _write_series(tmp_path_factory.mktemp("d") / "s", contents)
    if junk:
        (folder / "README").write_text("exported from the scanner\n")
        (folder / "DICOMDIR.dcm").write_bytes(b"\x00" * 200)
    opens_or_refuses(folder)


@budget(300)
@given(cut=st.floats(0.0, 0.999), flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=4))
def test_multiframe_dicom_damaged(tmp_path_factory, cut, flips):
    """A real multi-frame file (pydicom's RT dose grid) cut short or with flipped bytes."""
    from pydicom.data import get_testdata_file

    buf = bytearray(Path(get_testdata_file("rtdose.dcm")).read_bytes())
    for where, value in flips:
        buf[int(where * len(buf))] = value
    path = tmp_path_factory.mktemp("mf") / "dose.dcm"
    path.write_bytes(bytes(buf[: max(int(cut * len(buf)), 1)] if cut > 0 else buf))
    opens_or_refuses(path)


# ------------------------------------------------------------------------- OME-TIFF and OME-Zarr
@functools.lru_cache(maxsize=1)
def ome_tiff_bytes() -> bytes:
    """A small OME-TIFF written by the plugin (physical sizes in its OME-XML)."""
    import tempfile

    from napari_immunotrack.io.tiff import write_ome_tiff

    vol = Volume(np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8), np.diag([2.0, 0.5, 0.5, 1.0]), "OPT")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_ome_tiff(vol, Path(tmp) / "img.ome.tif")
        return Path(path).read_bytes()


@budget(2000)
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=6))
@example(cut=1.0, flips=[(0.0011, 9)])  # a tag read as a zero size: numpy's reshape error, not a message
@example(cut=1.0, flips=[(0.01, 1)])  # read as a 1-bit image: the display window's percentiles failed
def test_ome_tiff_cut_short_or_with_flipped_bytes(tmp_path_factory, cut, flips):
    buf = bytearray(ome_tiff_bytes())
    for where, value in flips:
        buf[int(where * len(buf))] = value
    path = tmp_path_factory.mktemp("tif") / "img.ome.tif"
    path.write_bytes(bytes(buf[: max(1, int(cut * len(buf)))]))
    opens_or_refuses(path)


ZARR_EDITS = st.sampled_from(
    [
        ("multiscales", None),
        ("multiscales", []),
        ("multiscales", "abc"),
        ("axes", None),
        ("axes", []),
        ("axes", [{"name": "z"}, {"name": "y"}]),
        ("unit", "parsec"),
        ("unit", None),
        ("scale", [0.0, 1.0, 1.0]),
        ("scale", [-1.0, 1.0, 1.0]),
        ("scale", [float("nan"), 1.0, 1.0]),
        ("scale", [1.0]),
        ("scale", "abc"),
        ("translation", [1e308, 0.0, 0.0]),
        ("translation", ["a", 0, 0]),
        ("path", "missing"),
        ("path", None),
        ("datasets", []),
        ("version", "9.9"),
        ("transforms", None),
    ]
)


@budget(2000)
@given(edits=st.lists(ZARR_EDITS, min_size=1, max_size=3))
def test_ome_zarr_with_damaged_metadata(tmp_path_factory, edits):
    import json

    from napari_immunotrack.io.zarr import write_ome_zarr

    vol = Volume(np.ones((4, 6, 6), np.float32), np.diag([2.0, 0.5, 0.5, 1.0]), "OPT")
    store = write_ome_zarr(vol, tmp_path_factory.mktemp("z") / "img.ome.zarr", levels=1, chunks=(4, 6, 6))
    attrs_path = next(p for p in (Path(store) / "zarr.json", Path(store) / ".zattrs") if p.exists())
    doc = json.loads(attrs_path.read_text())
    attrs = doc.get("attributes", doc)
    ms = attrs.get("ome", attrs).get("multiscales")
    for key, value in edits:
        if key in ("multiscales",):
            target = attrs.get("ome", attrs)
        elif key in ("axes", "datasets", "version"):
            target = ms[0] if isinstance(ms, list) and ms else {}
        elif key == "unit":
            target = (ms[0].get("axes") or [{}])[0] if isinstance(ms, list) and ms else {}
        elif key == "path":
            target = (ms[0].get("datasets") or [{}])[0] if isinstance(ms, list) and ms else {}
        elif key == "transforms":
            target = (ms[0].get("datasets") or [{}])[0] if isinstance(ms, list) and ms else {}
            key = "coordinateTransformations"
        else:  # scale / translation of level 0
            ds = (ms[0].get("datasets") or [{}])[0] if isinstance(ms, list) and ms else {}
            transforms = ds.get("coordinateTransformations") or []
            target = next((t for t in transforms if isinstance(t, dict) and key in t), {})
        if not isinstance(target, dict):
            continue
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    attrs_path.write_text(json.dumps(doc))
    opens_or_refuses(store)
