"""Enhanced multi-frame MR and PET DICOM: files written by highdicom's legacy converters and by pydicom by hand
(per-frame functional groups), cross-checked against the classic-series route and SimpleITK in world space."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from napari_immunotrack.cli import main
from napari_immunotrack.errors import InputError
from napari_immunotrack.io import load_volume, load_volumes
from napari_immunotrack.io.dicom import make_study, write_dicom_series
from napari_immunotrack.volume import Volume


def _oblique_affine(origin=(3.0, -4.0, 5.0)):
    """An oblique, orthogonal RAS affine (slices 1.5 mm, rows 0.6 mm, columns 0.7 mm)."""
    q, _ = np.linalg.qr(np.array([[0.2, 0.1, 1.0], [0.1, -1.0, 0.05], [1.0, 0.05, -0.2]]))
    aff = np.eye(4)
    aff[:3, :3] = q @ np.diag([1.5, 0.6, 0.7])
    if np.linalg.det(aff[:3, :3]) < 0:  # keep the slice axis along DICOM's normal (reads back in this order)
        aff[:3, 0] *= -1
    aff[:3, 3] = origin
    return aff


def _smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 900 + 50).astype(np.float32)


def _files(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_file())


def _world_points(vol: Volume, n=50, seed=0):
    """Random voxel centres of ``vol`` in RAS mm, with their indices."""
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, s, n) for s in vol.spatial_shape], axis=1)
    return idx, (vol.affine @ np.c_[idx, np.ones(n)].T).T[:, :3]


def _legacy(cls, singles, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's note on the one-component patient name
        return cls(
            legacy_datasets=singles,
            series_instance_uid=hd.UID(),
            series_number=7,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            **kwargs,
        )


# ------------------------------------------------------------------ highdicom legacy converted enhanced
def test_legacy_converted_enhanced_mr_multi_echo_matches_classic_series(tmp_path):
    """Two echoes in one Legacy Converted Enhanced MR file (highdicom): the same voxels at the same world points
    as the classic series it was made from, and the echo list in metadata["echo_times_ms"]."""
    vol = Volume(
        _smooth((2, 5, 6, 7)),
        _oblique_affine(),
        modality="MR",
        metadata={"leading_axis": "echo", "EchoTime": [4.5, 12.0]},
    )
    classic_dir = write_dicom_series(vol, tmp_path / "classic", shuffle_names=True)
    classic = load_volume(classic_dir)
    enhanced = _legacy(hd.legacy.LegacyConvertedEnhancedMRImage, [pydicom.dcmread(p) for p in _files(classic_dir)])
    enhanced.save_as(tmp_path / "enhanced.dcm")
    back = load_volume(tmp_path / "enhanced.dcm")
    assert back.shape == classic.shape == (2, 5, 6, 7)
    assert back.metadata["leading_axis"] == "echo"
    assert back.metadata["echo_times_ms"] == [4.5, 12.0]
    idx, world = _world_points(classic)
    back_idx = np.linalg.solve(back.affine, np.c_[world, np.ones(len(world))].T).T[:, :3]
    np.testing.assert_allclose(back_idx, idx, atol=1e-3 / 0.6)  # same world points within 1e-3 mm
    np.testing.assert_allclose(
        back.affine @ np.c_[idx, np.ones(len(idx))].T, classic.affine @ np.c_[idx, np.ones(len(idx))].T, atol=1e-3
    )
    np.testing.assert_array_equal(back.numpy(), classic.numpy())  # same stored values, same rescale


def test_legacy_converted_enhanced_pet_keeps_units_and_world_positions(tmp_path):
    vol = Volume(_smooth((6, 8, 9), 3) * 10, _oblique_affine((10, 20, -30)), modality="PT", unit="Bq/mL")
    study = make_study(StudyDate="20240301", StudyTime="090000")
    classic_dir = write_dicom_series(
        vol,
        tmp_path / "pet",
        study=study,
        patient={"PatientWeight": 0.025},
        pet={
            "RadionuclideTotalDose": 7.4e6,
            "RadionuclideHalfLife": 6586.2,
            "RadiopharmaceuticalStartTime": "093000",
            "SeriesTime": "100000",
            "AcquisitionTime": "100000",
        },
    )
    classic = load_volume(classic_dir)
    enhanced = _legacy(hd.legacy.LegacyConvertedEnhancedPETImage, [pydicom.dcmread(p) for p in _files(classic_dir)])
    out = tmp_path / "folder"
    out.mkdir()
    enhanced.save_as(out / "IMG0001")  # a folder holding one enhanced file, no extension
    back = load_volume(out)
    assert back.unit == "Bq/mL" and back.modality == "PT"
    assert back.metadata["RadionuclideTotalDose"] == pytest.approx(7.4e6)
    assert back.metadata["PatientWeight"] == pytest.approx(0.025)
    from napari_immunotrack.analysis.pet import read_pet_header, suv_factor

    # SUV from the enhanced file exactly as from the classic series (same header fields found)
    assert suv_factor(read_pet_header(back)) == suv_factor(read_pet_header(classic))
    np.testing.assert_allclose(back.affine, classic.affine, atol=1e-4)
    np.testing.assert_allclose(back.numpy(), classic.numpy(), rtol=1e-6)
    # and the values the simulator wrote, voxel by voxel at the same world points (within the 16-bit quantisation)
    idx = np.indices(back.spatial_shape).reshape(3, -1)
    in_vol = np.linalg.solve(vol.affine, back.affine @ np.r_[idx, np.ones((1, idx.shape[1]))])[:3]
    assert np.abs(in_vol - np.rint(in_vol)).max() < 1e-4
    in_vol = np.rint(in_vol).astype(int)
    np.testing.assert_allclose(back.numpy()[tuple(idx)], vol.numpy()[tuple(in_vol)], atol=vol.numpy().max() / 65535)


def test_enhanced_file_agrees_with_simpleitk_in_world_space(tmp_path):
    import SimpleITK as sitk

    vol = Volume(_smooth((5, 6, 7), 5), _oblique_affine(), modality="MR")
    classic_dir = write_dicom_series(vol, tmp_path / "mr", rescale="global")
    enhanced = _legacy(hd.legacy.LegacyConvertedEnhancedMRImage, [pydicom.dcmread(p) for p in _files(classic_dir)])
    enhanced.save_as(tmp_path / "enh.dcm")
    ours = load_volume(tmp_path / "enh.dcm")
    img = sitk.ReadImage(str(tmp_path / "enh.dcm"), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(60):
        ijk = [int(rng.integers(0, s)) for s in img.GetSize()]
        lps = np.array(img.TransformIndexToPhysicalPoint(ijk))
        ras = lps * [-1, -1, 1]
        ours_idx = np.linalg.solve(ours.affine, np.r_[ras, 1.0])[:3]
        near = np.rint(ours_idx).astype(int)
        assert np.abs(ours_idx - near).max() < 1e-3, "SimpleITK's voxel centre is not one of ours"
        assert ours.numpy()[tuple(near)] == pytest.approx(arr[ijk[2], ijk[1], ijk[0]], rel=1e-5, abs=1e-3)
        checked += 1
    assert checked == 60


# ------------------------------------------------------------------ per-frame variants written by hand
def _enhanced_by_hand(
    singles,
    path,
    *,
    order,
    shared_orientation=True,
    echo_of=None,
    temporal_of=None,
    stack_of=None,
    sop="1.2.840.10008.5.1.4.1.1.4.1",
    modality="MR",
    units=None,
):
    """An Enhanced MR (or PET) Image file from classic slices, frames in ``order``: per-frame plane position,
    rescale (and orientation unless shared), FrameContent with DimensionIndexValues/StackID/InStackPosition,
    MREchoSequence EffectiveEchoTime per frame; no classic EchoTime anywhere."""
    first = singles[0]
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop, pydicom.uid.generate_uid()
    for key in (
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
        "PatientID",
    ):
        setattr(ds, key, first.data_element(key).value)
    ds.Modality = modality
    if units:
        ds.Units = units
    ds.NumberOfFrames = len(order)
    shared, measures = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    shared.PixelMeasuresSequence = [measures]
    if shared_orientation:
        orient = Dataset()
        orient.ImageOrientationPatient = first.ImageOrientationPatient
        shared.PlaneOrientationSequence = [orient]
    ds.SharedFunctionalGroupsSequence = [shared]
    # in-stack position: rank of the slice along its stack's normal (1 = first)
    orientation = np.array(first.ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    depth = {i: round(float(np.dot(np.array(s.ImagePositionPatient, float), normal)), 3) for i, s in enumerate(singles)}
    in_stack_of = {i: sorted(set(depth.values())).index(d) + 1 for i, d in depth.items()}
    per_frame = []
    for i in order:
        item, pos, rescale, content = Dataset(), Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = singles[i].ImagePositionPatient
        rescale.RescaleSlope, rescale.RescaleIntercept = singles[i].RescaleSlope, singles[i].RescaleIntercept
        rescale.RescaleType = units or "US"
        in_stack = in_stack_of[i]
        content.StackID = str(stack_of(i) if stack_of else 1)
        content.InStackPositionNumber = in_stack
        index = [in_stack]
        if echo_of is not None:
            echo = Dataset()
            echo.EffectiveEchoTime = echo_of(i)
            item.MREchoSequence = [echo]
            index.append(int(singles[i].EchoNumbers))
        if temporal_of is not None:
            content.TemporalPositionIndex = temporal_of(i)
            content.FrameAcquisitionDuration = 60000.0
            index.append(temporal_of(i))
        content.DimensionIndexValues = index
        item.PlanePositionSequence, item.PixelValueTransformationSequence = [pos], [rescale]
        item.FrameContentSequence = [content]
        if not shared_orientation:  # orientation and pixel size per frame
            orient, frame_measures = Dataset(), Dataset()
            orient.ImageOrientationPatient = singles[i].ImageOrientationPatient
            frame_measures.PixelSpacing = singles[i].PixelSpacing
            frame_measures.SliceThickness = singles[i].SliceThickness
            item.PlaneOrientationSequence, item.PixelMeasuresSequence = [orient], [frame_measures]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = b"".join(singles[i].PixelData for i in order)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_per_frame_orientation_echo_and_dimension_index(tmp_path):
    """Per-frame orientation, per-frame rescale, shuffled frames, echo only in MREchoSequence: the echoes are
    ordered by EffectiveEchoTime, and every voxel sits where the classic route puts it."""
    vol = Volume(
        _smooth((3, 4, 5, 6), 7),
        _oblique_affine(),
        modality="MR",
        metadata={"leading_axis": "echo", "EchoTime": [3.0, 9.0, 27.0]},
    )
    classic_dir = write_dicom_series(vol, tmp_path / "classic")
    classic = load_volume(classic_dir)
    singles = [pydicom.dcmread(p) for p in _files(classic_dir)]
    echo_ms = {i: float(s.EchoTime) for i, s in enumerate(singles)}
    for s in singles:
        del s.EchoTime
    order = np.random.default_rng(4).permutation(len(singles))
    path = _enhanced_by_hand(
        singles, tmp_path / "enh.dcm", order=order, shared_orientation=False, echo_of=lambda i: echo_ms[i]
    )
    back = load_volume(path)
    assert back.shape == (3, 4, 5, 6) and back.metadata["leading_axis"] == "echo"
    assert back.metadata["echo_times_ms"] == [3.0, 9.0, 27.0]
    np.testing.assert_allclose(back.affine, classic.affine, atol=1e-6)
    np.testing.assert_array_equal(back.numpy(), classic.numpy())


def test_enhanced_pet_temporal_positions_by_frame_content(tmp_path):
    """A dynamic enhanced PET: frames told apart only by FrameContent TemporalPositionIndex."""
    vol = Volume(
        _smooth((3, 4, 5, 6), 9), _oblique_affine(), modality="PT", unit="Bq/mL", metadata={"leading_axis": "time"}
    )
    classic_dir = write_dicom_series(vol, tmp_path / "classic")
    classic = load_volume(classic_dir)
    singles = [pydicom.dcmread(p) for p in _files(classic_dir)]
    frame_of = {i: int(s.TemporalPositionIdentifier) for i, s in enumerate(singles)}
    order = np.random.default_rng(5).permutation(len(singles))
    path = _enhanced_by_hand(
        singles,
        tmp_path / "pet.dcm",
        order=order,
        temporal_of=lambda i: frame_of[i],
        sop="1.2.840.10008.5.1.4.1.1.130",
        modality="PT",
        units="BQML",
    )
    back = load_volume(path)
    assert back.metadata["leading_axis"] == "time" and back.unit == "Bq/mL"
    assert [f["TemporalPositionIdentifier"] for f in back.metadata["frames"]] == [1, 2, 3]
    assert back.metadata["frames"][0]["ActualFrameDuration"] == 60000.0
    np.testing.assert_allclose(back.affine, classic.affine, atol=1e-6)
    np.testing.assert_array_equal(back.numpy(), classic.numpy())


def test_two_stacks_in_one_file_are_two_volumes(tmp_path):
    """Two slice packages (different orientations) in one enhanced file: one volume per StackID."""
    a = Volume(_smooth((4, 5, 6), 1), _oblique_affine(), modality="MR")
    b = Volume(
        _smooth((4, 5, 6), 2), np.array([[0, 0, -0.5, 5], [0, -0.5, 0, 5], [1.0, 0, 0, 0], [0, 0, 0, 1]]), modality="MR"
    )
    study = make_study()
    sa = [pydicom.dcmread(p) for p in _files(write_dicom_series(a, tmp_path / "a", study=study))]
    sb = [pydicom.dcmread(p) for p in _files(write_dicom_series(b, tmp_path / "b", study=study))]
    for s in sb:
        s.SeriesInstanceUID = sa[0].SeriesInstanceUID
    singles = sa + sb
    path = _enhanced_by_hand(
        singles,
        tmp_path / "two.dcm",
        order=list(range(len(singles))),
        shared_orientation=False,
        stack_of=lambda i: 1 if i < len(sa) else 2,
    )
    vols = load_volumes(path)
    assert len(vols) == 2
    by_shape = sorted(vols, key=lambda v: v.metadata["slice_normal_lps"][2])
    refs = sorted(
        [load_volume(tmp_path / "a"), load_volume(tmp_path / "b")], key=lambda v: v.metadata["slice_normal_lps"][2]
    )
    for got, ref in zip(by_shape, refs):
        np.testing.assert_allclose(got.affine, ref.affine, atol=1e-6)
        np.testing.assert_array_equal(got.numpy(), ref.numpy())


def test_enhanced_frames_count_mismatch_is_one_line(tmp_path, capsys):
    vol = Volume(_smooth((3, 4, 5), 1), _oblique_affine(), modality="MR")
    singles = [pydicom.dcmread(p) for p in _files(write_dicom_series(vol, tmp_path / "a"))]
    path = _enhanced_by_hand(singles, tmp_path / "e.dcm", order=[0, 1, 2])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 5
    ds.save_as(path)
    with pytest.raises(InputError, match="per-frame functional groups describe 3 frames"):
        load_volume(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NumberOfFrames" in err[0]


# ------------------------------------------------------------------ sampling lists for relaxometry
def test_variable_flip_angle_series_orders_frames_and_lists_the_angles(tmp_path):
    """A classic VFA series with no temporal position: frames told apart (and ordered) by FlipAngle only;
    metadata flip_angles_deg and repetition_time_ms for the relaxometry fit."""
    vol = Volume(_smooth((3, 4, 5, 6), 11), _oblique_affine(), modality="MR", metadata={"leading_axis": "time"})
    angles = [2.0, 5.0, 15.0]
    folder = write_dicom_series(
        vol,
        tmp_path / "vfa",
        shuffle_names=True,
        extra={
            "TemporalPositionIdentifier": None,
            "NumberOfTemporalPositions": None,
            "FlipAngle": lambda s, f: angles[f],
            "RepetitionTime": 15.0,
        },
    )
    back = load_volume(folder)
    assert back.metadata["flip_angles_deg"] == angles and back.metadata["repetition_time_ms"] == 15.0
    idx = np.indices(back.spatial_shape).reshape(3, -1)
    in_vol = np.rint(np.linalg.solve(vol.affine, back.affine @ np.r_[idx, np.ones((1, idx.shape[1]))])[:3]).astype(int)
    for f in range(3):
        np.testing.assert_allclose(
            back.numpy()[f][tuple(idx)], vol.numpy()[f][tuple(in_vol)], atol=vol.numpy().max() / 30000
        )
