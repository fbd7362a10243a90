"""Bruker ParaVision reader: JCAMP parsing, values, frame groups, slice packages, and rodent poses.

Test scans are written from the format definition (simulate/scanner_files.py)
and cross-checked with brukerapi (MIT), an independent reader, and with the
same geometry exported as a DICOM series written here with pydicom.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import brukerapi.dataset as brukerapi  # noqa: E402
import numpy as np
import pytest
from scipy import ndimage

from napari_immunotrack.errors import InputError
from napari_immunotrack.io import detect_format, load_volume, load_volumes
from napari_immunotrack.io.bruker import SUBJECT_POSITIONS, subject_from_magnet
from napari_immunotrack.io.jcamp import parse_jcamp
from napari_immunotrack.simulate.scanner_files import write_paravision

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: markers in the animal's own RAS (R = its right, A = ventral, S = cranial), mm, with distinct amplitudes
MARKERS = np.array([[5.0, 0.5, -1.0], [0.0, 4.0, 0.5], [-1.0, -0.5, 5.5], [-3.5, -4.0, -4.5], [2.0, -2.5, 3.0]])
AMPLITUDES = np.array([300.0, 250.0, 200.0, 150.0, 100.0])
SIGMA = 0.7


# ------------------------------------------------------------------------------------------ JCAMP
def test_jcamp_values_arrays_strings_structs_and_run_length():
    text = (
        "##TITLE=visu_pars\n$$ a comment\n##$A=( 2, 3 )\n1 2 3 \n4 5 6\n##$B=( 65 )\n<Head first, prone>\n"
        "##$C=( 4 )\n@3*(1.5) 2\n##$D=Quadruped\n##$E=( 2 )\n(5, <FG_SLICE>, <>, 0, 2) (3, <FG_ECHO>, <>, 2, 1)\n"
        "##$F=(0, 1)\n##$G=-2.5e-3\n##$H=( 2, 65 )\n<mm> <mm>\n##END=\n"
    )
    p = parse_jcamp(text)
    assert p["A"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert p["B"] == "Head first, prone"
    assert p["C"].tolist() == [1.5, 1.5, 1.5, 2.0]
    assert p["D"] == "Quadruped"
    assert p["E"] == [(5, "FG_SLICE", "", 0, 2), (3, "FG_ECHO", "", 2, 1)]
    assert p["F"] == (0, 1)
    assert p["G"] == -2.5e-3
    assert p["H"] == ["mm", "mm"]


# ------------------------------------------------------------------------------------------ helpers
def magnet_grid(kind: str):
    """Rows (read, phase, slice) of a magnet-frame slice orientation."""
    e = np.eye(3)
    return {"axial": e, "coronal": e[[0, 2, 1]], "sagittal": e[[1, 2, 0]]}[kind]


def phantom_scan(
    tmp_path, pose, kind="axial", subject_offset=(0.5, -1.0, 1.0), n=(36, 36, 36), step=0.5, subject_type="Quadruped"
):
    """Write a marker-phantom scan acquired in the magnet frame with the animal in ``pose``.

    ParaVision stores the geometry in subject coordinates (its patient system,
    pose applied): VisuCoreOrientation rows = S @ magnet directions,
    VisuCorePosition = S @ magnet position + offset.
    """
    S = subject_from_magnet(pose)
    rows_m = magnet_grid(kind)
    nx, ny, nz = n
    origin_m = -(np.array([nx, ny, nz]) - 1) / 2.0 * step
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    coords = (
        (origin_m[0] + i * step)[..., None] * rows_m[0]
        + (origin_m[1] + j * step)[..., None] * rows_m[1]
        + (origin_m[2] + k * step)[..., None] * rows_m[2]
    )
    ras = (coords @ S.T + np.asarray(subject_offset)) @ LPS_TO_RAS.T
    values = np.zeros(ras.shape[:3])
    for m, a in zip(MARKERS, AMPLITUDES):
        values += a * np.exp(-np.sum((ras - m) ** 2, axis=-1) / (2 * SIGMA**2))
    stored = np.round(values / 0.01).astype(np.int16)  # (slice, y, x)
    orient = np.tile((S @ rows_m.T).T.ravel(), (nz, 1))
    positions = np.array(
        [
            S @ (origin_m[0] * rows_m[0] + origin_m[1] * rows_m[1] + (origin_m[2] + kk * step) * rows_m[2])
            + subject_offset
            for kk in range(nz)
        ]
    )
    pdata = write_paravision(
        tmp_path / f"{pose}_{kind}" / "5",
        stored,
        extent=(nx * step, ny * step),
        orientation=orient,
        positions=positions,
        slopes=[0.01] * nz,
        subject_type=subject_type,
        subject_position=pose,
    )
    return pdata, stored, positions, orient, step


def marker_world(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World positions of the blobs, in the order of MARKERS (matched by peak amplitude)."""
    labels, n = ndimage.label(data > 20.0)
    assert n == len(MARKERS), f"found {n} blobs"
    found = []
    for lab in range(1, n + 1):
        mask = labels == lab
        w = np.where(mask, data, 0.0)
        com = np.array(ndimage.center_of_mass(w))
        found.append((data[mask].max(), com))
    found.sort(key=lambda t: -t[0])
    idx = np.array([c for _, c in found])
    return idx @ affine[:3, :3].T + affine[:3, 3]


def write_dicom_export(folder, stored, positions, orient, step):
    """The same scan as a ParaVision DICOM export: IPP = VisuCorePosition, IOP = first two orientation rows."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    for k, plane in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = "MR", series, study, frame
        ds.PatientName, ds.PatientID, ds.InstanceNumber = "phantom", "p1", k + 1
        ds.ImagePositionPatient = [float(v) for v in positions[k]]
        ds.ImageOrientationPatient = [float(v) for v in orient[k][:6]]
        ds.PixelSpacing = [step, step]
        ds.SliceThickness = step
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 0.01, 0.0
        ds.PixelData = plane.astype("<i2").tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return folder


# ------------------------------------------------------------------------------------------ poses
@pytest.mark.parametrize("kind", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("pose", SUBJECT_POSITIONS)
def test_rodent_poses_place_every_marker_where_it_is(tmp_path, pose, kind):
    from napari_immunotrack.io.dicom import read_dicom

    pdata, stored, positions, orient, step = phantom_scan(tmp_path, pose, kind)
    vol = load_volume(pdata.parent.parent)  # the scan folder
    assert vol.spatial_shape == stored.shape and vol.modality == "MR"
    assert vol.metadata["SubjectPosition"] == pose and vol.metadata["SubjectType"] == "Quadruped"
    world = marker_world(vol.numpy(), vol.affine)
    err = np.linalg.norm(world - MARKERS, axis=1)
    assert err.max() < 0.5 * step, (pose, kind, err)  # no flip, every marker within half a voxel
    # the same scan exported as DICOM lands on the same world points
    dcm = read_dicom(write_dicom_export(tmp_path / "dicom", stored, positions, orient, step))[0]
    world_dcm = marker_world(dcm.numpy(), dcm.affine)
    assert np.abs(world_dcm - world).max() < 1e-3
    # brukerapi: its patient-frame (LPS) affine, index (x, y, slice), turned to RAS
    ds = brukerapi.Dataset(str(pdata / "2dseq"))
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ds.affine_of_package(0)
    world_api = marker_world(np.asarray(ds.data, float), ras)
    assert np.abs(world_api - world).max() < 1e-3


def test_the_pose_is_not_applied_twice(tmp_path):
    """Relabelling the pose without moving the geometry must not move the image (brkraw issue #33's trap)."""
    pdata, *_ = phantom_scan(tmp_path, "Head_Prone")
    a = load_volume(pdata)
    text = (pdata / "visu_pars").read_text().replace("Head_Prone", "Foot_Supine")
    (pdata / "visu_pars").write_text(text)
    b = load_volume(pdata)
    assert np.allclose(a.affine, b.affine) and b.metadata["SubjectPosition"] == "Foot_Supine"


def test_pose_matrices_are_rotations_and_distinct():
    mats = [subject_from_magnet(p) for p in SUBJECT_POSITIONS]
    for m in mats:
        assert np.allclose(m @ m.T, np.eye(3)) and np.isclose(np.linalg.det(m), 1.0)
    assert len({m.round(6).tobytes() for m in mats}) == 8
    # head first prone: the animal's left is the magnet's -x, its back is up (-y), its head into the bore (+z)
    assert np.allclose(subject_from_magnet("Head_Prone").T @ [1, 0, 0], [-1, 0, 0])
    # lying on its left side: its left points down (+y of the magnet)
    assert np.allclose(subject_from_magnet("Head_Left").T @ [1, 0, 0], [0, 1, 0])


# ------------------------------------------------------------------------------------------ values
@pytest.mark.parametrize(
    "word,order",
    [
        ("i2", "littleEndian"),
        ("i2", "bigEndian"),
        ("i4", "bigEndian"),
        ("u1", "littleEndian"),
        ("f4", "bigEndian"),
        ("f4", "littleEndian"),
    ],
)
def test_word_types_byte_orders_and_per_frame_slope(tmp_path, word, order):
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 120, (4, 6, 7)).astype(np.float64)
    if word == "f4":
        stored += 0.25
    slopes, offsets = [0.5, 1.0, 2.0, 3.5], [0.0, -1.0, 10.0, 0.25]
    pdata = write_paravision(
        tmp_path / "s" / "1",
        stored,
        extent=(7.0, 6.0),
        orientation=np.eye(3),
        positions=[[0, 0, z] for z in range(4)],
        slopes=slopes,
        offsets=offsets,
        word=word,
        byte_order=order,
    )
    vol = load_volume(pdata / "2dseq")
    expected = stored * np.array(slopes)[:, None, None] + np.array(offsets)[:, None, None]
    assert np.allclose(vol.numpy(), expected, rtol=1e-6)
    api = brukerapi.Dataset(str(pdata / "2dseq"))
    assert np.allclose(np.asarray(api.data).transpose(2, 1, 0), expected, rtol=1e-6)


def test_unscaled_integers_keep_their_type(tmp_path):
    stored = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    pdata = write_paravision(
        tmp_path / "s" / "1",
        stored,
        extent=(4.0, 3.0),
        orientation=np.eye(3),
        positions=[[0, 0, 0], [0, 0, 1]],
        byte_order="bigEndian",
    )
    vol = load_volume(pdata)
    assert vol.data.dtype == np.int16 and vol.data.dtype.isnative and np.array_equal(vol.data, stored)


def test_3d_acquisition_with_repetitions(tmp_path):
    rng = np.random.default_rng(2)
    stored = rng.random((3, 5, 6, 8)).astype(np.float32)  # 3 repetitions of a 8x6x5 volume
    rot = np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]])  # read along y, phase along z, "slice" along x
    pdata = write_paravision(
        tmp_path / "s" / "2",
        stored,
        dim=3,
        extent=(4.0, 3.0, 2.5),
        orientation=rot,
        positions=[[1.0, 2.0, 3.0]],
        word="f4",
        frame_groups=[(3, "FG_CYCLE")],
        slopes=[1.0, 2.0, 3.0],
    )
    vol = load_volume(pdata)
    assert vol.shape == (3, 5, 6, 8) and vol.metadata["leading_axis"] == "time"
    assert np.allclose(vol.numpy(), stored * np.array([1.0, 2.0, 3.0])[:, None, None, None], rtol=1e-6)
    # voxel (z=1, y=2, x=3) sits at position + 3*0.5*row0 + 2*0.5*row1 + 1*0.5*row2 (LPS), negated x/y
    lps = np.array([1.0, 2.0, 3.0]) + 3 * 0.5 * rot[0] + 2 * 0.5 * rot[1] + 1 * 0.5 * rot[2]
    assert np.allclose(vol.index_to_world([[1, 2, 3]])[0], LPS_TO_RAS @ lps)
    api = brukerapi.Dataset(str(pdata / "2dseq"))
    assert np.allclose(
        np.diag([-1, -1, 1, 1.0]) @ api.affine_of_package(0) @ [3, 2, 1, 1],
        np.append(vol.index_to_world([[1, 2, 3]])[0], 1),
    )


def test_echoes_become_the_leading_axis_and_repetitions_split(tmp_path):
    n_sl, n_echo, n_rep = 4, 3, 2
    frames = n_sl * n_echo * n_rep
    stored = np.zeros((frames, 5, 6))
    for f in range(frames):  # first group fastest: slice, then echo, then repetition
        s, e, r = f % n_sl, (f // n_sl) % n_echo, f // (n_sl * n_echo)
        stored[f] = 100 * r + 10 * e + s
    pdata = write_paravision(
        tmp_path / "s" / "3",
        stored,
        extent=(6.0, 5.0),
        orientation=np.eye(3),
        positions=[[0, 0, 2.0 * s] for s in range(n_sl)],
        echo_times=[10.0, 20.0, 30.0],
        frame_groups=[(n_sl, "FG_SLICE"), (n_echo, "FG_ECHO"), (n_rep, "FG_CYCLE")],
    )
    vols = load_volumes(pdata)
    assert len(vols) == n_rep
    for r, v in enumerate(vols):
        assert v.shape == (n_echo, n_sl, 5, 6) and v.metadata["leading_axis"] == "echo"
        assert v.metadata["EchoTime"] == [10.0, 20.0, 30.0]
        assert [fr["EchoTime"] for fr in v.metadata["frames"]] == [10.0, 20.0, 30.0]
        for e in range(n_echo):
            assert np.array_equal(v.data[e, :, 0, 0], 100 * r + 10 * e + np.arange(n_sl))
    with pytest.raises(InputError, match="load_volumes"):
        load_volume(pdata)


def test_slice_packages_are_separate_volumes(tmp_path):
    # package 1: 3 axial slices; package 2: 2 sagittal slices (a tri-pilot-like scan)
    axial, sagittal = np.eye(3), np.array([[0.0, 1, 0], [0, 0, -1], [1, 0, 0]])
    orient = np.array([axial.ravel()] * 3 + [sagittal.ravel()] * 2)
    positions = [[0, 0, -1.0], [0, 0, 0.0], [0, 0, 1.0], [-0.5, 0, 0], [0.5, 0, 0]]
    stored = np.arange(5)[:, None, None] * np.ones((5, 4, 4))
    for packs in ([3, 2], None):  # with VisuCoreSlicePacksSlices, and PV 5.1 style without it
        pdata = write_paravision(
            tmp_path / str(packs) / "1",
            stored,
            extent=(4.0, 4.0),
            orientation=orient,
            positions=positions,
            slice_packs=packs,
        )
        vols = load_volumes(pdata)
        assert [v.spatial_shape for v in vols] == [(3, 4, 4), (2, 4, 4)]
        assert vols[0].orientation() != vols[1].orientation()
        assert np.array_equal(vols[1].data[:, 0, 0], [3, 4])
        with pytest.raises(InputError, match="package=N"):
            load_volume(pdata)
        one = load_volume(pdata, package=1)
        assert one.spatial_shape == (2, 4, 4) and one.metadata["slice_package"] == [1, 2]


def test_scan_folder_pdata_folder_and_2dseq_are_the_same(tmp_path):
    pdata, *_ = phantom_scan(tmp_path, "Head_Supine", n=(10, 8, 6))
    scan = pdata.parent.parent
    a, b, c = load_volume(scan), load_volume(pdata), load_volume(pdata / "2dseq")
    d = load_volume(scan / "pdata")
    assert a.same_grid(b) and b.same_grid(c) and c.same_grid(d) and np.array_equal(a.numpy(), c.numpy())
    assert detect_format(scan) == detect_format(pdata / "2dseq") == "paravision"


def test_reverse_disk_slice_order(tmp_path):
    stored = np.arange(4)[:, None, None] * np.ones((4, 3, 3))
    positions = [[0, 0, z] for z in (0.0, 1.0, 2.0, 3.0)]
    pdata = write_paravision(
        tmp_path / "s" / "1",
        stored,
        extent=(3.0, 3.0),
        orientation=np.eye(3),
        positions=positions,
        extra={"VisuCoreDiskSliceOrder": "disk_reverse_slice_order"},
    )
    vol = load_volume(pdata)
    # disk frame i belongs to the position listed last-first: frame 3 sits at z = 0
    assert vol.index_to_world([[0, 0, 0]])[0][2] == 0.0 and vol.data[0, 0, 0] == 3


# ------------------------------------------------------------------------------------------ bad input
def test_truncated_2dseq_is_refused_in_one_line(tmp_path):
    pdata, *_ = phantom_scan(tmp_path, "Head_Prone", n=(10, 8, 6))
    raw = (pdata / "2dseq").read_bytes()
    (pdata / "2dseq").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(InputError, match="truncated"):
        load_volume(pdata)


def test_missing_visu_pars_is_refused(tmp_path):
    pdata, *_ = phantom_scan(tmp_path, "Head_Prone", n=(10, 8, 6))
    (pdata / "visu_pars").unlink()
    with pytest.raises(InputError, match="no visu_pars"):
        load_volume(pdata.parent.parent)


def test_scan_without_reconstruction_is_refused(tmp_path):
    scan = tmp_path / "7"
    (scan / "pdata").mkdir(parents=True)
    (scan / "acqp").write_text("##$NR=1\n##END=\n")
    (scan / "method").write_text("##$Method=<RARE>\n##END=\n")
    with pytest.raises(InputError, match="reconstruct"):
        load_volume(scan)


def test_cli_info_on_a_truncated_scan_exits_2_with_one_line(tmp_path):
    pdata, *_ = phantom_scan(tmp_path, "Head_Prone", n=(10, 8, 6))
    (pdata / "2dseq").write_bytes((pdata / "2dseq").read_bytes()[:50])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    run = subprocess.run(
        [sys.executable, "-m", "napari_immunotrack.cli", "info", str(pdata)], capture_output=True, text=True
    )
    assert run.returncode == 2
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "2dseq" in lines[0] and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_cli_info_describes_a_scan(tmp_path):
    pdata, *_ = phantom_scan(tmp_path, "Head_Prone", n=(10, 8, 6))
    run = subprocess.run(
        [sys.executable, "-m", "napari_immunotrack.cli", "info", str(pdata.parent.parent), "--json"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    import json

    vol = json.loads(run.stdout)["volumes"][0]
    assert vol["shape"] == [6, 8, 10] and vol["SubjectPosition"] == "Head_Prone"
    assert vol["voxel_size_mm"] == [0.5, 0.5, 0.5]


def test_napari_reader_claims_scan_folders_and_2dseq(tmp_path):
    from napari_immunotrack._reader import get_reader

    pdata, *_ = phantom_scan(tmp_path, "Head_Prone", n=(10, 8, 6))
    assert get_reader(str(pdata.parent.parent)) is not None
    assert get_reader(str(pdata / "2dseq")) is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = get_reader(str(pdata / "2dseq"))(str(pdata / "2dseq"))
    assert len(layers) == 1 and layers[0][0].shape[-3:] == (6, 8, 10)


def test_echo_group_first_and_positions_given_per_frame(tmp_path):
    """MSME-like order (echoes fastest) with VisuCorePosition/Orientation repeated for every frame."""
    n_echo, n_sl = 3, 4
    stored = np.zeros((n_echo * n_sl, 4, 5))
    positions, orient = [], []
    for f in range(n_echo * n_sl):
        e, s = f % n_echo, f // n_echo
        stored[f] = 10 * e + s
        positions.append([0.0, 0.0, 1.5 * (n_sl - 1 - s)])  # slices listed head to foot
        orient.append(np.eye(3).ravel())
    pdata = write_paravision(
        tmp_path / "s" / "4",
        stored,
        extent=(5.0, 4.0),
        orientation=orient,
        positions=positions,
        frame_groups=[(n_echo, "FG_ECHO"), (n_sl, "FG_SLICE")],
        echo_times=[8.0, 16.0, 24.0],
    )
    vol = load_volume(pdata)
    assert vol.shape == (n_echo, n_sl, 4, 5) and vol.metadata["leading_axis"] == "echo"
    # slices sorted foot to head along the normal: array slice 0 is the last listed one (z = 0)
    assert np.allclose(vol.index_to_world([[0, 0, 0], [3, 0, 0]])[:, 2], [0.0, 4.5])
    assert np.array_equal(vol.data[2, :, 0, 0], 20 + np.array([3, 2, 1, 0]))


def test_a_study_folder_names_its_scans(tmp_path):
    for n in (1, 3):
        write_paravision(
            tmp_path / "study" / str(n),
            np.ones((2, 3, 3)),
            extent=(3.0, 3.0),
            orientation=np.eye(3),
            positions=[[0, 0, 0], [0, 0, 1]],
        )
    (tmp_path / "study" / "subject").write_text("##$SUBJECT_id=<m1>\n##END=\n")
    with pytest.raises(InputError, match=r"ParaVision study with 2 scans \(1, 3\)"):
        load_volume(tmp_path / "study")


def test_frame_count_missing_is_taken_from_the_file(tmp_path):
    stored = np.arange(3)[:, None, None] * np.ones((3, 2, 2))
    pdata = write_paravision(
        tmp_path / "s" / "1",
        stored,
        extent=(2.0, 2.0),
        orientation=np.eye(3),
        positions=[[0, 0, z] for z in (0.0, 1.0, 2.0)],
    )
    text = (pdata / "visu_pars").read_text()
    (pdata / "visu_pars").write_text("\n".join(ln for ln in text.splitlines() if "VisuCoreFrameCount" not in ln))
    vol = load_volume(pdata)
    assert vol.shape == (3, 2, 2) and np.array_equal(vol.data[:, 0, 0], [0, 1, 2])


PV7_STYLE = """##TITLE=Parameter List, ParaVision 7.0.0
##JCAMPDX=4.24
##DATATYPE=Parameter Values
$$ @vis= VisuVersion VisuUid VisuCreator
##$VisuCreatorVersion=( 195 )
<7.0.0>
##$VisuCoreFrameCount=4
##$VisuCoreDim=2
##$VisuCoreSize=( 2 )
16 16
##$VisuCoreDimDesc=( 2 )
spatial spatial
##$VisuCoreExtent=( 2 )
20 20
##$VisuCoreFrameThickness=( 1 )
2
##$VisuCoreOrientation=( 1, 9 )
1 0 0 0 1 0 0 0 1
##$VisuCorePosition=( 1, 3 )
-10 -10 3
$$ @vis= VisuCoreOrientation VisuCorePosition VisuCoreDataMin VisuCoreDataMax
##$VisuCoreDataSlope=( 4 )
0.000245341790903415 0.000245341790903415 
0.000245341790903415 0.000245341790903415
##$VisuCoreDataOffs=( 4 )
@4*(0)
##$VisuCoreFrameType=( 1 )
MAGNITUDE_IMAGE
##$VisuCoreWordType=_16BIT_SGN_INT
##$VisuCoreByteOrder=littleEndian
##$VisuFGOrderDescDim=1
##$VisuFGOrderDesc=( 1 )
(4, <FG_CYCLE>, <>, 0, 0)
##$VisuGroupDepVals=( 1 )
(<>, 0)
##$VisuSubjectInstanceCreationDate=(1744188369, 252, 120)
##$VisuStudyDescription=( 2048 )
<\\
A phantom, several lines long...>
##$VisuSubjectType=Quadruped
##$VisuSubjectWeight=0.35
##$VisuSubjectPosition=Head_Prone
##$VisuAcqEchoTime=( 1 )
0.985
##$VisuAcquisitionProtocol=( 65 )
<FLASH_dynamic>
##END=
$$ File finished by PARX
"""


def test_a_visu_pars_in_paravision_7_layout(tmp_path):
    """Comment lines between records, wrapped values ending in a space, run-length, a one-slice time series."""
    pdata = tmp_path / "15" / "pdata" / "1"
    pdata.mkdir(parents=True)
    (pdata / "visu_pars").write_text(PV7_STYLE)
    np.arange(4 * 16 * 16, dtype="<i2").tofile(pdata / "2dseq")
    vol = load_volume(tmp_path / "15")
    assert vol.shape == (4, 1, 16, 16) and vol.metadata["leading_axis"] == "time"
    assert vol.metadata["EchoTime"] == 0.985 and vol.metadata["PatientWeight"] == 0.35
    assert np.allclose(vol.numpy()[1, 0, 0, :3], (256 + np.arange(3)) * 0.000245341790903415)
    # centre of the first voxel at (-10, -10, 3) LPS -> (10, 10, 3) RAS; 1.25 mm pixels
    assert np.allclose(vol.index_to_world([[0, 0, 0], [0, 0, 1]]), [[10, 10, 3], [8.75, 10, 3]])
    api = brukerapi.Dataset(str(pdata / "2dseq"))
    assert np.allclose(np.diag([-1, -1, 1, 1.0]) @ api.affine_of_package(0) @ [1, 0, 0, 1], [8.75, 10, 3, 1])
