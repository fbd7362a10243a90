"""Property-based search for crashes in the scanner-format readers (ParaVision, Inveon, MDF, NRRD/MetaImage).

Same contract and budget helper as tests/test_fuzz_readers.py: a damaged file
opens as usable Volumes or is refused with a one-line InputError; anything
else is a bug. About 2600 examples in all, about a minute on one core (IMMUNOTRACK_FUZZ_SCALE
multiplies).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from test_fuzz_readers import budget, opens_or_refuses

from napari_immunotrack.simulate.scanner_files import write_inveon, write_paravision

#: values a hand-edited or damaged parameter may hold
GARBAGE = [
    "0",
    "-1",
    "nan",
    "inf",
    "1e308",
    "-1e308",
    "( 2 )\n0 0",
    "( 3 )\n1 2 3",
    "<>",
    "",
    "( 9 )\nnan nan nan",
    "( 2 )\n1e9 1e9",
    "@99999999999*(1)",
    "( 2 )\n@2*(0)",
    "Head_Upside",
    "_64BIT_COMPLEX",
    "bigEndian",
    "(0, 9)",
    "( 1 )\n(0, 99)",
    "( 1 )\n(999, <FG_SLICE>, <>, 0, 0)",
    "( 2, 9 )\n1 0 0 0 1 0 0 0 1",
    "( 4, 3 )\n0 0 0 0 0 0 0 0 0 0 0 0",
    "abc",
    "3.5",
    "( 65 )\n<x>",
]


def _paravision_base() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz_pv_"))
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 500, (6, 5, 4)).astype(np.int16)  # 3 slices x 2 echoes
    orient = np.tile(np.eye(3).ravel(), (3, 1))
    return write_paravision(
        folder / "scan" / "1",
        stored,
        extent=(4.0, 5.0),
        orientation=orient,
        positions=[[0, 0, z] for z in (0.0, 1.0, 2.0)],
        slopes=[0.5] * 6,
        frame_groups=[(3, "FG_SLICE"), (2, "FG_ECHO")],
        echo_times=[10.0, 20.0],
    )


PV = _paravision_base()
PV_FILES = {name: (PV / name).read_bytes() for name in ("2dseq", "visu_pars", "reco")}
PV_KEYS = re.findall(r"##\$(\w+)=", PV_FILES["visu_pars"].decode())


def _write_pv(root: Path, files: dict) -> Path:
    pdata = root / "scan" / "pdata" / "1"
    pdata.mkdir(parents=True)
    for name, data in files.items():
        (pdata / name).write_bytes(data)
    return pdata


def _replace(text: str, key: str, value: str) -> str:
    return re.sub(rf"(?ms)^##\${key}=.*?(?=^##)", lambda m: f"##${key}={value}\n", text, count=1)


@budget(400)
@given(edits=st.lists(st.tuples(st.sampled_from(PV_KEYS), st.sampled_from(GARBAGE)), min_size=1, max_size=3))
@example(edits=[("VisuCoreSize", "( 2 )\n1e9 1e9")])
@example(edits=[("VisuCoreDataSlope", "@99999999999*(1)")])
@example(edits=[("VisuCoreOrientation", "( 4, 3 )\n0 0 0 0 0 0 0 0 0 0 0 0")])
def test_paravision_with_absurd_visu_pars(tmp_path_factory, edits):
    text = PV_FILES["visu_pars"].decode()
    for key, value in edits:
        text = _replace(text, key, value)
    pdata = _write_pv(tmp_path_factory.mktemp("pv"), dict(PV_FILES, visu_pars=text.encode()))
    opens_or_refuses(pdata)


@budget(300)
@given(cut=st.integers(0, len(PV_FILES["2dseq"]) - 1))
def test_truncated_2dseq(tmp_path_factory, cut):
    pdata = _write_pv(tmp_path_factory.mktemp("pv"), dict(PV_FILES, **{"2dseq": PV_FILES["2dseq"][:cut]}))
    assert opens_or_refuses(pdata.parent.parent) is None  # a cut file never opens as if complete


@budget(300)
@given(
    which=st.sampled_from(["visu_pars", "reco"]),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_paravision_parameter_files_with_flipped_bytes(tmp_path_factory, which, flips):
    buf = bytearray(PV_FILES[which])
    for pos, value in flips:
        buf[pos % len(buf)] = value
    pdata = _write_pv(tmp_path_factory.mktemp("pv"), dict(PV_FILES, **{which: bytes(buf)}))
    opens_or_refuses(pdata / "2dseq")


# ------------------------------------------------------------------------------------------ Inveon
def _inveon_base() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="fuzz_inveon_"))
    return write_inveon(
        folder / "pet",
        np.arange(2 * 3 * 4 * 5, dtype=float).reshape(2, 3, 4, 5),
        data_type=2,
        scale_factors=[0.5, 0.25],
        calibration_factor=10.0,
        frame_starts=[0, 60],
        frame_durations=[60, 60],
    )


INV = _inveon_base()
INV_HDR = INV.read_text()
INV_IMG = (INV.parent / "pet.img").read_bytes()
INV_KEYS = sorted({ln.split()[0] for ln in INV_HDR.splitlines() if ln.strip() and not ln.startswith("#")})
INV_GARBAGE = [
    "0",
    "-1",
    "nan",
    "inf",
    "1e308",
    "99999999999",
    "",
    "x",
    "8",
    "0 -5",
    "Wed Feb 30 25:61:00 2024",
    "2 2 2",
    "-0",
]


def _write_inveon(root: Path, header: str, img: bytes) -> Path:
    (root / "pet.img").write_bytes(img)
    (root / "pet.img.hdr").write_text(header)
    return root / "pet.img.hdr"


@budget(400)
@given(
    edits=st.lists(st.tuples(st.sampled_from(INV_KEYS), st.sampled_from(INV_GARBAGE)), min_size=1, max_size=3),
    open_img=st.booleans(),
)
@example(edits=[("x_dimension", "99999999999")], open_img=False)
@example(edits=[("total_frames", "99999999999")], open_img=True)
def test_inveon_with_absurd_header_values(tmp_path_factory, edits, open_img):
    header = INV_HDR
    for key, value in edits:
        line = f"{key} {value}"
        header = re.sub(rf"(?m)^(\s*){key} .*$", lambda m, line=line: m.group(1) + line, header, count=1)
    hdr = _write_inveon(tmp_path_factory.mktemp("inv"), header, INV_IMG)
    opens_or_refuses(hdr.parent / "pet.img" if open_img else hdr)


@budget(200)
@given(cut=st.integers(0, len(INV_IMG) - 1))
def test_inveon_with_short_data(tmp_path_factory, cut):
    hdr = _write_inveon(tmp_path_factory.mktemp("inv"), INV_HDR, INV_IMG[:cut])
    assert opens_or_refuses(hdr) is None


# ------------------------------------------------------------------------------------------ MDF, NRRD, MHA
@budget(300)
@given(
    size=st.lists(st.integers(-2, 6), min_size=0, max_size=4),
    fov=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=4),
    shape=st.lists(st.integers(0, 13), min_size=1, max_size=4),
    order=st.sampled_from(["xyz", "zyx", "xxz", ""]),
)
def test_mdf_with_absurd_grids(tmp_path_factory, size, fov, shape, order):
    import h5py

    path = tmp_path_factory.mktemp("mdf") / "r.mdf"
    with h5py.File(path, "w") as f:
        g = f.create_group("reconstruction")
        g["data"] = np.ones(shape, np.float32)
        g["size"] = np.asarray(size, np.int64)
        g["fieldOfView"] = np.asarray(fov, float)
        if order:
            g["order"] = order
    opens_or_refuses(path)


def _itk_bytes(ext: str) -> bytes:
    import SimpleITK as sitk

    im = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    im.SetSpacing((0.5, 0.6, 0.7))
    path = Path(tempfile.mkdtemp(prefix="fuzz_itk_")) / f"x.{ext}"
    sitk.WriteImage(im, str(path))
    return path.read_bytes()


ITK = {ext: _itk_bytes(ext) for ext in ("nrrd", "mha")}


@budget(400)
@given(
    ext=st.sampled_from(sorted(ITK)),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.booleans(),
)
def test_nrrd_and_metaimage_with_damaged_headers(tmp_path_factory, ext, flips, cut):
    buf = bytearray(ITK[ext])
    for pos, value in flips:
        buf[pos % len(buf)] = value
    if cut:
        buf = buf[: len(buf) - 17]
    path = tmp_path_factory.mktemp("itk") / f"x.{ext}"
    path.write_bytes(bytes(buf))
    opens_or_refuses(path)


@budget(300)
@given(
    noise=st.binary(min_size=0, max_size=600),
    name=st.sampled_from(["2dseq", "x.img.hdr", "x.hdr", "x.mdf", "x.h5", "x.nrrd", "x.nhdr", "x.mha", "x.mhd"]),
)
def test_random_bytes_with_a_scanner_file_name(tmp_path_factory, noise, name):
    path = tmp_path_factory.mktemp("junk") / name
    path.write_bytes(noise)
    opens_or_refuses(path)
