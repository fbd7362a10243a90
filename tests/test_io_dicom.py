"""DICOM reader and writer: geometry against analytic truth, real pydicom test files, bad input."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_immunotrack.cli import main
from napari_immunotrack.errors import ImmunotrackWarning, InputError, OutputExistsError
from napari_immunotrack.io import load_volume, load_volumes
from napari_immunotrack.io.dicom import SLICE_HEADER_KEYS, dicom_seconds, make_study, read_dicom, write_dicom_series
from napari_immunotrack.volume import Volume

TEST_FILES = Path(get_testdata_file("CT_small.dcm")).parent
DIRTESTS = TEST_FILES / "dicomdirtests"


# --------------------------------------------------------------- helpers
def rotation(axis, degrees):
    """Rotation matrix about ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k


def make_affine(directions, spacing, origin):
    """RAS affine whose array axis a runs along unit vector directions[a] with spacing[a]."""
    aff = np.eye(4)
    aff[:3, :3] = np.column_stack([np.asarray(d, float) * s for d, s in zip(directions, spacing)])
    aff[:3, 3] = origin
    return aff


S, A, R = np.array([0, 0, 1.0]), np.array([0, 1.0, 0]), np.array([1.0, 0, 0])
GEOMETRIES = {
    # name: (directions of array axes 0 (slices), 1 (rows), 2 (columns) in RAS)
    "axial": (S, -A, -R),  # as scanners write it: ImageOrientationPatient [1,0,0, 0,1,0]
    "axial_canonical": (S, A, R),  # Volume.canonical() order
    "coronal": (-A, -S, -R),  # IOP [1,0,0, 0,0,-1]
    "sagittal": (R, -S, -A),  # IOP [0,1,0, 0,0,-1]
    "oblique20": tuple(rotation([1, 0.3, 0.2], 20) @ d for d in (S, -A, -R)),
    "left_handed": (S, A, -R),  # slices run against row x column cosines: read back reversed
    "coronal_left_handed": (A, -S, -R),
}


RH = make_affine((S, A, R), (1.0, 1.0, 1.0), (0, 0, 0))  # 1 mm grid that reads back in the same slice order


def right_handed(directions):
    """True when the slice axis runs along row_cosine x column_cosine (DICOM's slice normal)."""
    d0, d1, d2 = directions
    return float(np.dot(d0, np.cross(d2, d1))) > 0


def quant_tol(slope, vmax):
    """Largest round-trip error: half a quantisation step plus float32 rounding of the rescaled value."""
    return np.asarray(slope, float) / 2 + 2 * np.finfo(np.float32).eps * np.asarray(vmax, float)


def smooth_volume(shape, seed=0):
    """Positive float values, unique per voxel (so a misplaced voxel cannot go unnoticed)."""
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 1000 + 1).astype(np.float32)


def assert_same_world(written: Volume, read: Volume, value_tol: float):
    """Every voxel of ``read`` sits on a voxel centre of ``written`` (1e-3 mm) and holds its value."""
    idx = np.indices(read.spatial_shape).reshape(3, -1).T
    world = read.index_to_world(idx)
    src = written.world_to_index(world)
    rounded = np.rint(src)
    # world distance between where the reader puts the voxel and where the writer had it
    dist = np.linalg.norm(written.index_to_world(rounded) - world, axis=1)
    assert dist.max() < 1e-3
    assert np.all(rounded >= 0) and np.all(rounded < np.array(written.spatial_shape))
    r = rounded.astype(int)
    w_vals = written.numpy()[..., r[:, 0], r[:, 1], r[:, 2]]
    r_vals = read.numpy()[..., idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.abs(w_vals.astype(float) - r_vals.astype(float)).max() <= value_tol


def files_of(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err
    return err


# --------------------------------------------------------------- geometry round trips
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_geometry_round_trip_every_voxel(tmp_path, name):
    shape = (7, 9, 11)
    affine = make_affine(GEOMETRIES[name], (2.5, 0.8, 1.1), (-31.4, 12.7, 55.5))
    vol = Volume(smooth_volume(shape), affine, modality="PT", unit="Bq/mL", name=name)
    calls = []
    folder = write_dicom_series(vol, tmp_path / name, shuffle_names=True)
    back = load_volumes(folder, progress=lambda f, msg: calls.append(f))[0]
    assert calls[-1] == 1.0 and calls == sorted(calls)
    assert back.spatial_shape == shape
    assert back.data.dtype == np.float32 and back.unit == "Bq/mL" and back.modality == "PT"
    slopes = np.array([h["RescaleSlope"] for h in back.metadata["slice_headers"]])
    assert_same_world(vol, back, value_tol=quant_tol(slopes.max(), vol.numpy().max()))
    # the affine itself: identical, or the slice axis reversed for a left-handed index frame
    if not right_handed(GEOMETRIES[name]):
        flipped = affine.copy()
        flipped[:3, 3] = affine[:3, 3] + (shape[0] - 1) * affine[:3, 0]
        flipped[:3, 0] = -affine[:3, 0]
        np.testing.assert_allclose(back.affine, flipped, atol=1e-6)
    else:
        np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    # file names and InstanceNumbers were shuffled, so neither could have given this order
    inst = [h["InstanceNumber"] for h in back.metadata["slice_headers"]]
    assert inst != sorted(inst) and inst != sorted(inst, reverse=True)
    names = [Path(h["file"]).name for h in back.metadata["slice_headers"]]
    assert names != sorted(names)


def test_writer_headers_are_lps_by_hand(tmp_path):
    """Independent of the reader: the written DICOM tags equal hand-computed LPS values."""
    affine = make_affine((S, -A, -R), (3.0, 0.5, 0.25), (10.0, 20.0, 30.0))
    vol = Volume(np.zeros((4, 5, 6), np.float32), affine, modality="MR")
    folder = write_dicom_series(vol, tmp_path / "s")
    datasets = [pydicom.dcmread(p) for p in files_of(folder)]  # no force: proper Part 10 files
    by_z = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    # RAS (10, 20, 30) -> LPS (-10, -20, 30); slices 3 mm apart towards superior (+z in both)
    np.testing.assert_allclose([float(v) for v in by_z[0].ImagePositionPatient], [-10, -20, 30], atol=1e-9)
    np.testing.assert_allclose([float(v) for v in by_z[-1].ImagePositionPatient], [-10, -20, 39], atol=1e-9)
    # columns run to L = LPS (+1, 0, 0); rows run to posterior = LPS (0, +1, 0): the usual axial IOP
    np.testing.assert_allclose([float(v) for v in by_z[0].ImageOrientationPatient], [1, 0, 0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose([float(v) for v in by_z[0].PixelSpacing], [0.5, 0.25])
    assert float(by_z[0].SliceThickness) == 3.0 and float(by_z[0].SpacingBetweenSlices) == 3.0
    ds = by_z[0]
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({d.SOPInstanceUID for d in datasets}) == 4 and len({d.SeriesInstanceUID for d in datasets}) == 1
    assert sorted(int(d.InstanceNumber) for d in datasets) == [1, 2, 3, 4]


def test_simpleitk_agrees_on_every_voxel_of_an_oblique_series(tmp_path):
    """A second, independent DICOM reader (ITK/GDCM) puts every voxel at the same world point."""
    import SimpleITK as sitk

    shape = (6, 8, 10)
    affine = make_affine(GEOMETRIES["oblique20"], (2.0, 1.0, 1.5), (5.0, -7.0, 11.0))
    vol = Volume(smooth_volume(shape, 3), affine, modality="CT")
    folder = write_dicom_series(vol, tmp_path / "obl", rescale="global")
    ours = load_volume(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = sitk.GetArrayFromImage(img)  # (slice, row, column)
    assert arr.shape == shape
    idx = np.indices(shape).reshape(3, -1).T
    itk_lps = np.array([img.TransformIndexToPhysicalPoint([int(k), int(j), int(i)]) for i, j, k in idx])
    itk_ras = itk_lps * [-1, -1, 1]
    np.testing.assert_allclose(ours.index_to_world(idx), itk_ras, atol=1e-3)
    np.testing.assert_allclose(ours.numpy(), arr, rtol=1e-5, atol=1e-3)


def test_per_slice_rescale_slopes(tmp_path):
    shape = (6, 5, 4)
    data = smooth_volume(shape) * (10.0 ** np.arange(-3, 3))[:, None, None]  # 6 decades
    vol = Volume(data.astype(np.float32), make_affine((S, A, R), (1, 1, 1), (0, 0, 0)), modality="PT")
    data = vol.numpy().astype(float)  # the float32 values actually written
    back = load_volume(write_dicom_series(vol, tmp_path / "p", rescale="per-slice", shuffle_names=7))
    slopes = np.array([h["RescaleSlope"] for h in back.metadata["slice_headers"]])
    # each slice's slope is its own maximum over 65535 (uint16), so they span the same 6 decades
    np.testing.assert_allclose(slopes, data.reshape(6, -1).max(1) / 65535, rtol=1e-9)
    err = np.abs(back.numpy().astype(float) - data).reshape(6, -1).max(1)
    assert np.all(err <= quant_tol(slopes, data.reshape(6, -1).max(1)))
    assert np.all(err[:3] < 1e-3)  # the faint slices keep their own precision (a global slope would lose them)
    # global: one slope, the error bound grows to half of it everywhere
    back_g = load_volume(write_dicom_series(vol, tmp_path / "g", rescale="global"))
    g = {h["RescaleSlope"] for h in back_g.metadata["slice_headers"]}
    assert len(g) == 1 and np.abs(back_g.numpy() - data).max() <= quant_tol(g.pop(), data.max())


def test_integer_data_written_raw_keeps_integer_type(tmp_path):
    data = np.arange(-300, 300, dtype=np.int16).reshape(6, 10, 10)
    vol = Volume(data, make_affine((S, A, R), (1, 1, 1), (0, 0, 0)), modality="CT")
    back = load_volume(write_dicom_series(vol, tmp_path / "ct", rescale="none"))
    assert back.data.dtype == np.int16 and np.array_equal(back.numpy(), data) and back.unit == "HU"
    u = Volume(np.arange(600, dtype=np.uint16).reshape(6, 10, 10) * 100, vol.affine, modality="MR")
    back_u = load_volume(write_dicom_series(u, tmp_path / "mr", rescale="none"))
    assert back_u.data.dtype == np.uint16 and np.array_equal(back_u.numpy(), u.numpy()) and back_u.unit == "a.u."
    with pytest.raises(InputError, match="whole-number"):
        write_dicom_series(Volume(data + 0.5, vol.affine), tmp_path / "x", rescale="none")
    with pytest.raises(InputError, match="16-bit"):
        write_dicom_series(Volume(data.astype(np.int32) * 1000, vol.affine), tmp_path / "y", rescale="none")


def test_mixed_slopes_make_float_and_are_applied_per_slice(tmp_path):
    """Slices with slope 1 next to slices with other slopes: each slice gets its own."""
    data = np.full((4, 3, 3), 100, np.int16)
    vol = Volume(data, make_affine((S, A, R), (1, 1, 1), (0, 0, 0)), modality="PT")
    slopes = [1.0, 0.5, 2.0, 1.0]
    folder = write_dicom_series(
        vol,
        tmp_path / "m",
        rescale="none",
        extra={"RescaleSlope": lambda s, f: slopes[s], "RescaleIntercept": lambda s, f: s},
    )
    back = load_volume(folder)
    assert back.data.dtype == np.float32
    np.testing.assert_allclose(back.numpy()[:, 0, 0], [100 * sl + s for s, sl in enumerate(slopes)])


def test_nifti_and_dicom_of_one_object_agree_in_world(tmp_path):
    """Gaussian markers at known RAS points, sampled on an axis-aligned NIfTI grid (LAS) and an oblique
    DICOM grid: their centroids land on the same world points (and on the truth) within 0.01 mm."""
    from napari_immunotrack.io.nifti import write_nifti

    markers = np.array([[12.0, -6.0, 22.0], [-12.0, 8.0, 10.0], [-4.0, -14.0, 38.0]])  # >= 30 mm apart
    sigma = 2.0

    def sample(affine, shape):
        world = Volume(np.zeros(shape, np.float32), affine).index_to_world(np.indices(shape).reshape(3, -1).T)
        val = sum(np.exp(-np.sum((world - m) ** 2, 1) / (2 * sigma**2)) for m in markers)
        return (1000 * val).reshape(shape).astype(np.float32)

    def centred(directions, spacing, shape):
        aff = make_affine(directions, spacing, (0, 0, 0))
        aff[:3, 3] = markers.mean(0) - aff[:3, :3] @ ((np.array(shape) - 1) / 2)
        return aff

    nii_aff = centred((S, A, -R), (1.0, 1.0, 1.0), (56, 50, 50))  # radiological (L) columns
    nii_vol = Volume(sample(nii_aff, (56, 50, 50)), nii_aff, name="n")
    dcm_aff = centred(GEOMETRIES["oblique20"], (1.2, 0.9, 0.9), (54, 64, 64))
    dcm_vol = Volume(sample(dcm_aff, (54, 64, 64)), dcm_aff, modality="PT")
    write_nifti(nii_vol, tmp_path / "obj.nii.gz")
    write_dicom_series(dcm_vol, tmp_path / "obj_dcm")
    n = load_volume(tmp_path / "obj.nii.gz")
    d = load_volume(tmp_path / "obj_dcm")

    def centroids(v):
        data = v.numpy().astype(float)
        idx = np.indices(v.spatial_shape).reshape(3, -1).T
        world = v.index_to_world(idx)
        out = []
        for m in markers:
            near = np.linalg.norm(world - m, axis=1) < 6 * sigma  # the tails beyond are < 1e-7 of the peak
            assert near.sum() > 1000  # the whole marker is inside this grid
            w = data.reshape(-1)[near]
            out.append((world[near] * w[:, None]).sum(0) / w.sum())
        return np.array(out)

    cn, cd = centroids(n), centroids(d)
    np.testing.assert_allclose(cn, cd, atol=0.01)
    np.testing.assert_allclose(cd, markers, atol=0.01)
    np.testing.assert_allclose(cn, markers, atol=0.01)
    # and the brightest voxel of each marker: the same world neighbourhood in both
    for m in markers:
        for v in (n, d):
            i = v.world_to_index([m])[0]
            assert np.linalg.norm(v.index_to_world(np.rint(i)) - m) <= np.linalg.norm(v.spacing) / 2 + 1e-6


# --------------------------------------------------------------- real pydicom files
def test_real_ct_series_header_values_land_in_the_affine():
    """dicomdirtests/98892001: a 5-slice CT (descending InstanceNumber vs position) and a 2-view scout."""
    with pytest.warns(ImmunotrackWarning, match="Scout"):
        vols = read_dicom(DIRTESTS / "98892001")
    assert len(vols) == 1
    v = vols[0]
    assert v.name == "SmartScore - Gated 0.5 sec" and v.modality == "CT" and v.unit == "HU"
    assert v.spatial_shape == (5, 16, 16)
    # headers: IOP [1,0,0,0,1,0], PixelSpacing 0.488281, IPP z from 8.7625 (instance 6) down to -1.2375 (instance 10)
    expected = np.array([[0, 0, -0.488281, 72.199997], [0, -0.488281, 0, 143.0], [2.5, 0, 0, -1.2375], [0, 0, 0, 1]])
    np.testing.assert_allclose(v.affine, expected, atol=1e-6)
    lowest = pydicom.dcmread(DIRTESTS / "98892001" / "CT5N" / "3353")
    assert float(lowest.ImagePositionPatient[2]) == pytest.approx(-1.2375)
    np.testing.assert_array_equal(v.numpy()[0], lowest.pixel_array.astype(np.float32) - 1024)  # intercept -1024
    assert [h["InstanceNumber"] for h in v.metadata["slice_headers"]] == [10, 9, 8, 7, 6]
    assert v.metadata["SeriesDescription"] == "SmartScore - Gated 0.5 sec"


def test_real_ct_series_with_a_gap(tmp_path):
    shutil.copytree(DIRTESTS / "77654033" / "CT2", tmp_path / "CT2")
    with pytest.raises(InputError, match=r"161 slice\(s\) missing.*-99.480 to 103.020 mm.*1.25 mm apart.*copy all"):
        load_volume(tmp_path / "CT2")


def test_real_localizers_are_refused_with_reasons():
    with pytest.raises(InputError) as exc:
        read_dicom(DIRTESTS / "98892003")
    msg = str(exc.value)
    assert "none forms a 3D volume" in msg and "3 different orientations" in msg and "one 2D slice" in msg


def test_real_single_slices_need_the_series(tmp_path):
    for name in ("MR_small.dcm", "CT_small.dcm"):
        with pytest.raises(InputError, match="a 3D volume is needed: give the series folder"):
            load_volume(get_testdata_file(name))
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "only.dcm")
    with pytest.raises(InputError, match="one 2D slice"):
        load_volume(tmp_path)


def _series_from_real_file(src, folder, n=4, step=3.0, order=(2, 0, 3, 1)):
    """A series assembled from one of pydicom's files: n copies moved along the slice normal."""
    folder.mkdir()
    base = pydicom.dcmread(src)
    ipp = np.array([float(x) for x in base.ImagePositionPatient])
    iop = np.array([float(x) for x in base.ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    for k in order[:n]:
        ds = pydicom.dcmread(src)
        ds.ImagePositionPatient = [f"{x:.4f}" for x in ipp + k * step * normal]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = 10 - k  # opposite to the positions
        ds.save_as(folder / f"slice{k}", enforce_file_format=True)
    return base, ipp, iop


def test_series_assembled_from_mr_small(tmp_path):
    base, ipp, iop = _series_from_real_file(get_testdata_file("MR_small.dcm"), tmp_path / "mr")
    v = load_volume(tmp_path / "mr")
    assert v.spatial_shape == (4, 64, 64) and v.modality == "MR" and v.unit == "a.u."
    assert v.data.dtype == np.int16  # no rescale in MR_small: integers kept
    # MR_small: IPP [-83.9063, -91.2000, 6.6406], IOP [1,0,0, 0,1,0], PixelSpacing [0.3125, 0.3125]
    expected = np.array([[0, 0, -0.3125, 83.9063], [0, -0.3125, 0, 91.2], [3.0, 0, 0, 6.6406], [0, 0, 0, 1]])
    np.testing.assert_allclose(v.affine, expected, atol=1e-6)
    np.testing.assert_array_equal(v.numpy()[2], base.pixel_array)
    assert v.metadata["EchoTime"] == 240.0 and v.metadata["RepetitionTime"] == 4000.0
    assert v.metadata["FlipAngle"] == 90


def test_compressed_series_decoded_or_clear_message(tmp_path):
    from pydicom.pixels import get_decoder

    ref = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    for name in ("MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm"):
        folder = tmp_path / name
        _series_from_real_file(get_testdata_file(name), folder, n=3, order=(0, 1, 2))
        ts = pydicom.dcmread(get_testdata_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID
        if get_decoder(ts).is_available:
            v = load_volume(folder)
            np.testing.assert_array_equal(v.numpy()[1], ref)
        else:  # e.g. JPEG-LS without pylibjpeg/gdcm in this environment
            with pytest.raises(InputError) as exc:
                load_volume(folder)
            msg = str(exc.value)
            assert ts.name in msg and "install" in msg and ("pylibjpeg" in msg or "gdcm" in msg)
            assert "\n" not in msg


def test_real_multiframe_rtdose():
    """rtdose.dcm: 15 frames placed by GridFrameOffsetVector (0, 5, ..., 70 mm), DoseGridScaling 1e-6."""
    v = load_volume(get_testdata_file("rtdose.dcm"))
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    assert v.spatial_shape == (15, 10, 10) and v.modality == "OT" and v.metadata["Modality"] == "RTDOSE"
    expected = np.array([[0, 0, -10, -189.43125], [0, -10, 0, -199.43125], [5, 0, 0, -761.87], [0, 0, 0, 1]])
    np.testing.assert_allclose(v.affine, expected, atol=1e-6)
    np.testing.assert_allclose(v.numpy(), ds.pixel_array * 1e-6, rtol=1e-6)


def test_nm_multiframe_spect_round_trip(tmp_path):
    shape = (8, 12, 10)
    affine = make_affine(GEOMETRIES["oblique20"], (4.4, 4.4, 4.4), (-20, 30, -40))
    vol = Volume(smooth_volume(shape, 5), affine, modality="NM", unit="counts")
    folder = write_dicom_series(vol, tmp_path / "spect", multiframe=True)
    (f,) = files_of(folder)
    ds = pydicom.dcmread(f)
    assert int(ds.NumberOfFrames) == 8 and "ImagePositionPatient" not in ds
    assert "ImagePositionPatient" in ds.DetectorInformationSequence[0] and list(ds.SliceVector) == list(range(1, 9))
    back = load_volume(f)  # the single file is a volume by itself
    assert back.modality == "NM" and back.unit == "counts"
    assert_same_world(vol, back, value_tol=quant_tol(float(ds.RescaleSlope), vol.numpy().max()))
    # left-handed volume: the writer reverses the frames so that they run along the normal
    lh = Volume(vol.data, make_affine((S, A, -R), (4.0, 4.0, 4.0), (0, 0, 0)), modality="NM")
    back_lh = load_volume(write_dicom_series(lh, tmp_path / "lh", multiframe=True))
    assert_same_world(lh, back_lh, value_tol=quant_tol(lh.numpy().max() / 65535, lh.numpy().max()))
    # no slice spacing at all: refused; SliceThickness only: used, with a warning
    with pytest.raises(InputError, match="neither SpacingBetweenSlices nor SliceThickness"):
        load_volume(
            write_dicom_series(
                vol, tmp_path / "nos", multiframe=True, extra={"SpacingBetweenSlices": None, "SliceThickness": None}
            )
        )
    with pytest.warns(ImmunotrackWarning, match="SliceThickness"):
        v2 = load_volume(
            write_dicom_series(vol, tmp_path / "st", multiframe=True, extra={"SpacingBetweenSlices": None})
        )
    np.testing.assert_allclose(v2.affine, affine, atol=1e-6)


def test_enhanced_multiframe_from_functional_groups(tmp_path):
    """An enhanced MR file (frames in shuffled order, per-frame positions and rescale) built from a written series."""
    from pydicom.dataset import Dataset, FileMetaDataset

    shape = (6, 7, 8)
    affine = make_affine(GEOMETRIES["oblique20"], (1.5, 0.7, 0.9), (3, -4, 5))
    vol = Volume(smooth_volume(shape, 13), affine, modality="MR")
    singles = [pydicom.dcmread(p) for p in files_of(write_dicom_series(vol, tmp_path / "singles"))]
    order = np.random.default_rng(1).permutation(len(singles))
    first = singles[0]
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4.1", pydicom.uid.generate_uid()  # Enhanced MR
    for key in (
        "Modality",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "SeriesNumber",
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
    ):
        setattr(ds, key, first.data_element(key).value)
    ds.NumberOfFrames = len(singles)
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = first.ImageOrientationPatient
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orient], [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for i in order:
        item, pos, rescale, content = Dataset(), Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = singles[i].ImagePositionPatient
        rescale.RescaleSlope, rescale.RescaleIntercept = singles[i].RescaleSlope, singles[i].RescaleIntercept
        rescale.RescaleType = "US"
        content.FrameAcquisitionDateTime = "20240101120000"
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [rescale]
        item.FrameContentSequence = [content]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(singles[i].PixelData for i in order)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    back = load_volume(tmp_path / "enhanced.dcm")
    slopes = [float(d.RescaleSlope) for d in singles]
    assert back.spatial_shape == shape and back.modality == "MR"
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    assert_same_world(vol, back, value_tol=quant_tol(max(slopes), vol.numpy().max()))
    assert back.metadata["AcquisitionTime"] == "120000"


# --------------------------------------------------------------- metadata and units
def test_pet_metadata_and_headers(tmp_path):
    vol = Volume(
        smooth_volume((5, 6, 7)), make_affine((S, A, R), (2, 1, 1), (0, 0, 0)), modality="PT", unit="Bq/mL", name="pet"
    )
    study = make_study(StudyDate="20240301", StudyTime="090000")
    acq_times = ["101530", "101500", "101600", "101515", "101545"]  # per slice, earliest on slice 1
    folder = write_dicom_series(
        vol,
        tmp_path / "pet",
        series_description="PET WB",
        study=study,
        shuffle_names=True,
        series_number=3,
        patient={"PatientWeight": 0.0251, "PatientSize": 0.09, "PatientSex": "F", "PatientID": "m1"},
        pet={
            "DecayCorrection": "START",
            "CorrectedImage": ["ATTN", "DECY", "SCAT"],
            "SeriesDate": "20240301",
            "SeriesTime": "101500",
            "RadionuclideTotalDose": 7.4e6,
            "RadionuclideHalfLife": 282240.0,
            "RadiopharmaceuticalStartDateTime": "20240228093000",
            "Radiopharmaceutical": "89Zr-oxine",
            "RadionuclideCodeSequence": {
                "CodeValue": "C-1313",
                "CodingSchemeDesignator": "SRT",
                "CodeMeaning": "^89^Zirconium",
            },
            "FrameReferenceTime": 0.0,
            "ActualFrameDuration": 600000,
            "DecayFactor": 1.0,
        },
        extra={"AcquisitionTime": lambda s, f: acq_times[s]},
    )
    v = load_volume(folder)
    m = v.metadata
    assert v.name == "PET WB" and v.unit == "Bq/mL" and m["format"] == "dicom"
    assert m["Units"] == "BQML" and m["DecayCorrection"] == "START" and m["CorrectedImage"] == ["ATTN", "DECY", "SCAT"]
    assert m["RadionuclideTotalDose"] == 7.4e6 and m["RadionuclideHalfLife"] == 282240.0
    assert m["RadiopharmaceuticalStartDateTime"] == "20240228093000" and m["Radionuclide"] == "^89^Zirconium"
    assert m["PatientWeight"] == 0.0251 and m["PatientSize"] == 0.09 and m["PatientSex"] == "F"
    assert m["SeriesTime"] == "101500" and m["SeriesNumber"] == 3 and m["StudyInstanceUID"] == study["StudyInstanceUID"]
    assert m["AcquisitionTime"] == "101500"  # the earliest slice's, whatever the file order
    assert m["ActualFrameDuration"] == 600000 and m["FrameReferenceTime"] == 0.0
    assert [h["AcquisitionTime"] for h in m["slice_headers"]] == acq_times
    assert [h["slice"] for h in m["slice_headers"]] == list(range(5))
    assert all(set(h) == set(SLICE_HEADER_KEYS) for h in m["slice_headers"])
    assert m["slice_headers"][0]["ImagePositionPatient"] == [0.0, 0.0, 0.0]
    hdr = m["dicom_header"]
    assert isinstance(hdr, pydicom.Dataset) and "PixelData" not in hdr and hdr.Modality == "PT"
    assert str(Path(folder)) == m["source_path"]
    # the whole plain metadata is JSON-friendly
    json.dumps({k: val for k, val in m.items() if k != "dicom_header"})


def test_private_tags_stay_readable(tmp_path):
    vol = Volume(smooth_volume((3, 4, 4)), np.eye(4), modality="PT")
    folder = write_dicom_series(vol, tmp_path / "p")
    for p in files_of(folder):
        ds = pydicom.dcmread(p)
        block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
        block.add_new(0x00, "DS", "0.000123")
        block.add_new(0x09, "DS", "1.5")
        ds.save_as(p)
    hdr = load_volume(folder).metadata["dicom_header"]
    assert float(hdr[0x7053, 0x1000].value) == pytest.approx(0.000123)
    assert float(hdr[0x7053, 0x1009].value) == 1.5


@pytest.mark.parametrize(
    "modality, units, suv_type, unit",
    [
        ("PT", "BQML", None, "Bq/mL"),
        ("PT", "GML", None, "SUVbw"),
        ("PT", "GML", "BSA", "SUVbsa"),
        ("PT", "CNTS", None, "counts"),
        ("PT", "CM2ML", None, "SUVbsa"),
        ("NM", None, None, "counts"),
        ("NM", "BQML", None, "Bq/mL"),
        ("MR", None, None, "a.u."),
        ("CT", None, None, "HU"),
    ],
)
def test_units(tmp_path, modality, units, suv_type, unit):
    vol = Volume(np.ones((3, 2, 2), np.float32), np.eye(4), modality=modality, unit="a.u.")
    pet = {"Units": units} if units else None
    if pet and suv_type:
        pet["SUVType"] = suv_type
    v = load_volume(write_dicom_series(vol, tmp_path / "u", pet=pet))
    assert v.unit == unit and v.modality == modality


def test_study_dict_shares_uids_and_two_series(tmp_path, capsys):
    study = {"StudyDate": "20240102"}
    (tmp_path / "both").mkdir()
    vol = Volume(smooth_volume((3, 4, 4)), np.eye(4), modality="PT", name="pet")
    write_dicom_series(vol, tmp_path / "both" / "a", study=study, series_number=2, series_description="PET")
    mr = Volume(smooth_volume((4, 4, 4)), np.eye(4), modality="MR", name="mr")
    write_dicom_series(mr, tmp_path / "both" / "b", study=study, series_number=1, series_description="T2")
    assert "StudyInstanceUID" in study and "FrameOfReferenceUID" in study
    vols = load_volumes(tmp_path / "both")
    assert [v.name for v in vols] == ["T2", "PET"]  # by SeriesNumber
    assert {v.metadata["StudyInstanceUID"] for v in vols} == {study["StudyInstanceUID"]}
    assert {v.metadata["FrameOfReferenceUID"] for v in vols} == {study["FrameOfReferenceUID"]}
    with pytest.raises(InputError, match=r"holds 2 series \(T2 \(MR, \(4, 4, 4\)\); PET \(PT, \(3, 4, 4\)\)\)"):
        load_volume(tmp_path / "both")
    assert main(["info", str(tmp_path / "both")]) == 0
    out = capsys.readouterr().out
    assert "T2" in out and "PET" in out and "Bq/mL" in out


def test_4d_dynamic_pet_sorted_by_frame_time(tmp_path):
    shape = (3, 4, 5, 6)
    data = smooth_volume(shape, 9)
    data[0] *= 3  # frames differ in scale, so a wrong order is seen
    affine = make_affine((S, A, R), (2, 1, 1), (1, 2, 3))
    vol = Volume(data, affine, modality="PT", metadata={"leading_axis": "time"})
    # frame times in reverse of the frame index relation used by TemporalPositionIdentifier (removed)
    folder = write_dicom_series(
        vol,
        tmp_path / "dyn",
        shuffle_names=True,
        pet={"FrameReferenceTime": [30000.0, 90000.0, 150000.0], "ActualFrameDuration": [60000, 60000, 60000]},
        extra={"TemporalPositionIdentifier": None},
    )
    back = load_volume(folder)
    assert back.shape == shape and back.metadata["leading_axis"] == "time"
    assert [f["FrameReferenceTime"] for f in back.metadata["frames"]] == [30000.0, 90000.0, 150000.0]
    slopes = np.array([h["RescaleSlope"] for h in back.metadata["slice_headers"]]).reshape(3, 4)
    assert np.all(np.abs(back.numpy() - data) <= quant_tol(slopes[:, :, None, None], data.max()))
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    order = [(h["frame"], h["slice"]) for h in back.metadata["slice_headers"][:5]]
    assert order == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]
    # a missing file: unequal counts per position
    os.remove(back.metadata["slice_headers"][6]["file"])
    with pytest.raises(InputError, match="unequal numbers of images"):
        load_volume(folder)


def test_4d_multi_echo_mr(tmp_path):
    data = smooth_volume((3, 4, 5, 5), 11).round()
    vol = Volume(data, RH, modality="MR", metadata={"leading_axis": "echo", "EchoTime": [5.0, 10.0, 20.0]})
    back = load_volume(write_dicom_series(vol, tmp_path / "me", rescale="none", shuffle_names=True))
    assert back.metadata["leading_axis"] == "echo" and back.metadata["EchoTime"] == [5.0, 10.0, 20.0]
    assert np.array_equal(back.numpy(), data)
    # same echo and no time: images at one position cannot be ordered
    folder = write_dicom_series(vol, tmp_path / "bad", rescale="none", extra={"EchoNumbers": None, "EchoTime": 5.0})
    with pytest.raises(InputError, match="have the same time and echo"):
        load_volume(folder)


def test_gantry_tilt_gives_an_exact_sheared_affine(tmp_path):
    vol = Volume(smooth_volume((5, 4, 4)), make_affine((S, -A, -R), (2, 1, 1), (0, 0, 0)), modality="CT")
    # shift each slice 0.3 mm posterior (LPS +y) per slice, as a tilted gantry does
    folder = write_dicom_series(
        vol, tmp_path / "tilt", extra={"ImagePositionPatient": lambda s, f: [0.0, 0.3 * s, 2.0 * s]}
    )
    with warnings.catch_warnings(record=True) as caught:  # recorded here, whatever filters earlier tests left
        warnings.simplefilter("always")
        back = load_volume(folder)
    assert any(issubclass(w.category, ImmunotrackWarning) and "gantry tilt" in str(w.message) for w in caught)
    np.testing.assert_allclose(back.affine[:3, 0], [0, -0.3, 2.0], atol=1e-9)
    assert back.metadata["gantry_tilt_deg"] == pytest.approx(np.degrees(np.arctan(0.3 / 2.0)))


def test_duplicate_copies_are_ignored_with_a_warning(tmp_path):
    vol = Volume(smooth_volume((3, 4, 4)), np.eye(4), modality="MR")
    folder = write_dicom_series(vol, tmp_path / "d")
    (folder / "copy").mkdir()
    shutil.copy(files_of(folder)[0], folder / "copy" / "again.dcm")
    with pytest.warns(ImmunotrackWarning, match="duplicate"):
        assert load_volume(folder).spatial_shape == (3, 4, 4)


def test_dicom_seconds():
    assert dicom_seconds("20240102", "000000") - dicom_seconds("20240101", "235959.5") == pytest.approx(0.5)
    assert dicom_seconds(None, "10:15:30") == 36930.0 and dicom_seconds("2024", "x") is None


# --------------------------------------------------------------- bad input
@pytest.fixture
def series(tmp_path):
    """Writes a 6-slice axial MR series with optional header changes; returns its folder."""

    def make(name="s", **kwargs):
        vol = Volume(smooth_volume((6, 5, 5)), make_affine((S, -A, -R), (2.0, 1.0, 1.0), (0, 0, 0)), modality="MR")
        return write_dicom_series(vol, tmp_path / name, **kwargs)

    return make


def test_missing_slice(series, capsys):
    folder = series()
    os.remove(folder / "IM00004.dcm")  # slice index 3 (positions 0, 2, 4, [6], 8, 10 mm)
    with pytest.raises(InputError, match=r"1 slice\(s\) missing.*4.000 to 8.000 mm.*2 mm apart"):
        load_volume(folder)
    assert main(["info", str(folder)]) == 2
    assert "slice(s) missing" in one_line_error(capsys)


def test_inconsistent_spacing(series):
    z = [0, 2, 4, 6.7, 8.7, 10.7]
    folder = series(extra={"ImagePositionPatient": lambda s, f: [0, 0, z[s]]})
    with pytest.raises(
        InputError,
        match=r"inconsistent slice spacing: steps of \[2.7\] mm between positions 4.000 "
        r"to 6.700",
    ):
        load_volume(folder)
    # within tolerance (0.01 mm): accepted
    z_ok = [0, 2, 4.005, 6, 8, 10]
    assert load_volume(series("ok", extra={"ImagePositionPatient": lambda s, f: [0, 0, z_ok[s]]})).spatial_shape[0] == 6


@pytest.mark.parametrize("keyword", ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"])
def test_missing_geometry(series, capsys, keyword):
    folder = series(extra={keyword: None})
    with pytest.raises(InputError, match=f"has no valid {keyword}.*does not guess"):
        load_volume(folder)
    assert main(["info", str(folder)]) == 2
    assert keyword in one_line_error(capsys)


def test_missing_pixel_spacing_on_one_slice_only(series):
    folder = series(extra={"PixelSpacing": lambda s, f: None if s == 2 else [1.0, 1.0]})
    with pytest.raises(InputError, match=r"PixelSpacing \(1 of 6 slices\)"):
        load_volume(folder)


def test_truncated_files(series, tmp_path, capsys):
    folder = series()
    victim = folder / "IM00003.dcm"
    raw = victim.read_bytes()
    victim.write_bytes(raw[:-20])  # pixel data cut short
    with pytest.raises(InputError, match="IM00003.dcm.*truncated"):
        load_volume(folder)
    assert main(["info", str(folder)]) == 2
    assert "IM00003.dcm" in one_line_error(capsys)
    # header cut short, file given directly
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(raw[:400])
    with pytest.raises(InputError, match="cut.dcm.*incomplete.*truncated"):
        load_volume(cut)
    # the real truncated file of pydicom, as part of a series
    base = tmp_path / "real"
    _series_from_real_file(get_testdata_file("MR_small.dcm"), base, n=3, order=(0, 1, 2))
    ds = pydicom.dcmread(get_testdata_file("MR_truncated.dcm"))
    ds.ImagePositionPatient = pydicom.dcmread(base / "slice1").ImagePositionPatient
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(base / "slice1")
    with pytest.raises(InputError, match="slice1.*truncated"):
        load_volume(base)


def test_non_dicom_and_empty(tmp_path, series, capsys):
    fake = tmp_path / "fake.dcm"
    fake.write_text("not an image\n")
    with pytest.raises(InputError, match="fake.dcm is not a DICOM file"):
        load_volume(fake)
    assert main(["info", str(fake)]) == 2
    assert "not a DICOM file" in one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("hello")
    shutil.copy(DIRTESTS / "DICOMDIR", empty / "DICOMDIR")
    with pytest.raises(InputError, match="holds no DICOM image"):
        load_volume(empty)
    assert main(["info", str(empty)]) == 2
    assert "no DICOM image" in one_line_error(capsys)
    # a series with a README, a DICOMDIR and a fake .dcm beside it still reads (the fake one is named)
    folder = series()
    (folder / "README").write_text("notes")
    shutil.copy(DIRTESTS / "DICOMDIR", folder / "DICOMDIR")
    shutil.copy(fake, folder / "zz.dcm")
    with pytest.warns(ImmunotrackWarning, match="zz.dcm has a DICOM extension but is not a DICOM file"):
        assert load_volume(folder).spatial_shape == (6, 5, 5)


def test_mixed_sizes_and_orientations(series):
    folder = series(extra={"ImageOrientationPatient": lambda s, f: [1, 0, 0, 0, 1, 0] if s else [0, 1, 0, 0, 0, -1]})
    with pytest.raises(InputError, match="2 different orientations"):
        load_volume(folder)
    folder = series("ps", extra={"PixelSpacing": lambda s, f: [1.0, 1.0] if s else [1.0, 1.2]})
    with pytest.raises(InputError, match="different PixelSpacing"):
        load_volume(folder)


# --------------------------------------------------------------- writer behaviour
def test_writer_refuses_and_is_atomic(tmp_path):
    vol = Volume(smooth_volume((3, 4, 4)), np.eye(4), modality="PT")
    out = write_dicom_series(vol, tmp_path / "out")
    with pytest.raises(OutputExistsError):
        write_dicom_series(vol, tmp_path / "out")
    first = {p.name for p in files_of(out)}
    write_dicom_series(vol, tmp_path / "out", overwrite=True, shuffle_names=3)
    assert {p.name for p in files_of(out)}.isdisjoint(first) and len(files_of(out)) == 3
    sheared = np.eye(4)
    sheared[0, 1] = 0.2
    with pytest.raises(InputError, match="not orthogonal"):
        write_dicom_series(vol.replace(affine=sheared), tmp_path / "shear")
    with pytest.raises(InputError, match="not a DICOM keyword"):  # fails while writing files
        write_dicom_series(vol, tmp_path / "bad", extra={"NoSuchKeyword": 1})
    with pytest.raises(InputError, match="NaN"):
        write_dicom_series(vol.replace(data=np.full((3, 4, 4), np.nan, np.float32)), tmp_path / "nan")
    with pytest.raises(InputError, match="does not exist"):
        write_dicom_series(vol, tmp_path / "no" / "such" / "dir")
    # nothing half-written is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
