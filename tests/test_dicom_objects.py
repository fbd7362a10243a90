"""DICOM SEG and RTSTRUCT in, DICOM SEG and TID 1500 SR out: against highdicom's own writer and reader,
analytic masks, and the same labels in world space after a round trip."""

from __future__ import annotations

import json
import warnings

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset

from napari_immunotrack.cli import main
from napari_immunotrack.errors import InputError
from napari_immunotrack.io import load_volume, load_volumes, save_labels
from napari_immunotrack.io.dicom import make_study, write_dicom_series
from napari_immunotrack.io.dicom_export import column_code, read_sr, write_seg, write_sr
from napari_immunotrack.io.dicom_seg import read_seg
from napari_immunotrack.io.rtstruct import read_rtstruct
from napari_immunotrack.volume import Volume

PET_AFFINE = np.array([[0, 0, -0.8, 12.0], [0, -0.8, 0, 9.0], [1.2, 0, 0, -6.0], [0, 0, 0, 1.0]])  # axial, 0.8 mm


def _series(tmp_path, name="pet", shape=(12, 24, 26), affine=PET_AFFINE, modality="PT", study=None):
    vol = Volume(
        np.random.default_rng(0).random(shape).astype(np.float32) * 1000,
        affine,
        modality=modality,
        unit="Bq/mL" if modality == "PT" else "a.u.",
    )
    return write_dicom_series(vol, tmp_path / name, study=study), vol


def _datasets(folder):
    """The series' datasets in the order of the reader's slices."""
    vol = load_volume(folder)
    return [pydicom.dcmread(h["file"]) for h in vol.metadata["slice_headers"] if h["frame"] == 0], vol


def _description(n, label):
    return hd.seg.SegmentDescription(
        segment_number=n,
        segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("78961009", "SCT", "Spleen"),
        algorithm_type="MANUAL",
    )


def _hd_seg(datasets, pixels, kind, labels=("spleen", "node"), **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=pixels,
            segmentation_type=kind,
            segment_descriptions=[_description(i + 1, name) for i, name in enumerate(labels)],
            series_instance_uid=hd.UID(),
            series_number=20,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="test",
            manufacturer_model_name="test",
            software_versions="1",
            device_serial_number="1",
            **kwargs,
        )


def _truth(shape):
    truth = np.zeros(shape, np.uint8)
    truth[3:8, 5:12, 6:15] = 1
    truth[9, 15:20, 2:5] = 2
    return truth


# ------------------------------------------------------------------ SEG in (files written by highdicom)
@pytest.mark.parametrize("kind", ["BINARY", "LABELMAP"])
def test_seg_written_by_highdicom_reads_as_labels_in_world_space(tmp_path, kind):
    folder, _ = _series(tmp_path)
    datasets, ref = _datasets(folder)
    truth = _truth(ref.spatial_shape)
    seg = _hd_seg(datasets, truth, kind)
    seg.save_as(tmp_path / "seg.dcm")
    alone = read_seg(tmp_path / "seg.dcm")  # placed by its own plane positions (sparse: only labelled slices)
    on_ref = load_volume(tmp_path / "seg.dcm", reference=folder)
    np.testing.assert_array_equal(on_ref.numpy(), truth)
    np.testing.assert_allclose(on_ref.affine, ref.affine)
    assert on_ref.metadata["label_names"] == {1: "spleen", 2: "node"}
    assert on_ref.metadata["segments"][1]["type"]["meaning"] == "Spleen"
    # the stand-alone read holds the same labelled world points
    for value in (1, 2):
        pts = alone.index_to_world(np.argwhere(alone.numpy() == value))
        idx = np.rint(ref.world_to_index(pts)).astype(int)
        assert len(pts) == int((truth == value).sum())
        assert np.all(truth[tuple(idx.T)] == value)


def test_fractional_seg_thresholded_at_half(tmp_path):
    folder, _ = _series(tmp_path)
    datasets, ref = _datasets(folder)
    frac = np.zeros(ref.spatial_shape + (1,), np.float32)
    frac[4:9, 6:14, 6:16, 0] = np.linspace(0.0, 1.0, 10)[None, None, :]  # rising along the columns
    seg = _hd_seg(datasets, frac, "FRACTIONAL", labels=("uptake",), max_fractional_value=255)
    seg.save_as(tmp_path / "frac.dcm")
    back = read_seg(tmp_path / "frac.dcm", reference=folder)
    stored = np.round(frac[..., 0] * 255) / 255  # what an 8-bit fractional SEG can hold
    np.testing.assert_array_equal(back.numpy(), (stored >= 0.5).astype(np.uint8))
    assert back.metadata["segmentation_type"] == "FRACTIONAL" and back.metadata["threshold"] == 0.5


def test_overlapping_binary_segments_warn_and_keep_the_higher_number(tmp_path):
    folder, _ = _series(tmp_path)
    datasets, ref = _datasets(folder)
    planes = np.zeros(ref.spatial_shape + (2,), bool)
    planes[2:6, 4:10, 4:10, 0] = True
    planes[4:8, 8:12, 8:12, 1] = True  # overlaps segment 1 in 2*2*2 voxels
    _hd_seg(datasets, planes, "BINARY").save_as(tmp_path / "overlap.dcm")
    with pytest.warns(Warning, match="8 voxel"):
        back = read_seg(tmp_path / "overlap.dcm", reference=folder)
    assert back.numpy()[5, 9, 9] == 2 and back.numpy()[3, 5, 5] == 1


def test_seg_with_wrong_reference_is_one_line_naming_the_series(tmp_path, capsys):
    study = make_study()
    folder, _ = _series(tmp_path, study=study)
    other, _ = _series(tmp_path, name="other", study=study)
    datasets, ref = _datasets(folder)
    _hd_seg(datasets, _truth(ref.spatial_shape), "BINARY").save_as(tmp_path / "seg.dcm")
    uid = datasets[0].SeriesInstanceUID
    with pytest.raises(InputError, match=f"drawn on series {uid}, which is not in"):
        load_volume(tmp_path / "seg.dcm", reference=other)
    assert main(["info", str(tmp_path / "seg.dcm"), "--reference", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and uid in err[0] and "--reference" in err[0]


def test_seg_without_plane_positions_needs_its_series(tmp_path, capsys):
    """Frames placed only by their source images: without the series, one line naming it; with it, the labels."""
    folder, _ = _series(tmp_path)
    datasets, ref = _datasets(folder)
    truth = _truth(ref.spatial_shape)
    seg = _hd_seg(datasets, truth, "BINARY")
    for item in seg.PerFrameFunctionalGroupsSequence:
        del item.PlanePositionSequence
    del seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    seg.DimensionIndexSequence = seg.DimensionIndexSequence[:1]  # the segment number only
    for item in seg.PerFrameFunctionalGroupsSequence:
        item.FrameContentSequence[0].DimensionIndexValues = [item.FrameContentSequence[0].DimensionIndexValues[0]]
    (tmp_path / "alone").mkdir()
    seg.save_as(tmp_path / "alone" / "nopos.dcm")
    uid = datasets[0].SeriesInstanceUID
    with pytest.raises(InputError, match=f"no plane positions.*{uid}"):
        read_seg(tmp_path / "alone" / "nopos.dcm")
    assert main(["info", str(tmp_path / "alone" / "nopos.dcm")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    back = read_seg(tmp_path / "alone" / "nopos.dcm", reference=folder)
    np.testing.assert_array_equal(back.numpy(), truth)
    # beside its series (a PACS export's layout) the series is found without --reference
    seg.save_as(folder / "nopos.dcm")
    np.testing.assert_array_equal(load_volume(folder / "nopos.dcm").numpy(), truth)


def test_series_folder_holding_a_seg_still_opens_as_the_series(tmp_path):
    folder, vol = _series(tmp_path)
    datasets, ref = _datasets(folder)
    _hd_seg(datasets, _truth(ref.spatial_shape), "BINARY").save_as(folder / "zz_seg.dcm")
    again = load_volumes(folder)
    assert len(again) == 1 and again[0].spatial_shape == ref.spatial_shape


# ------------------------------------------------------------------ RTSTRUCT in
def _contour(points_ras, z_index, ref):
    """ContourSequence item of a polygon given in (row, col) index space on slice z_index of ref."""
    idx = np.c_[np.full(len(points_ras), z_index), points_ras]
    ras = ref.index_to_world(idx)
    lps = ras * [-1, -1, 1]
    item = Dataset()
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(lps)
    item.ContourData = [f"{v:.6f}" for v in lps.ravel()]
    return item


def _circle(centre, radius, n=256):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[centre[0] + radius * np.sin(t), centre[1] + radius * np.cos(t)]


def _rtstruct(path, ref, series_uid, frame_uid, rois):
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.StructureSetLabel = "test"
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = series_uid
    rt_study = Dataset()
    rt_study.RTReferencedSeriesSequence = [rt_series]
    frame = Dataset()
    frame.FrameOfReferenceUID = frame_uid
    frame.RTReferencedStudySequence = [rt_study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    ds.StructureSetROISequence, ds.ROIContourSequence = [], []
    for number, name, contours in rois:
        roi = Dataset()
        roi.ROINumber, roi.ROIName, roi.ReferencedFrameOfReferenceUID = number, name, frame_uid
        ds.StructureSetROISequence.append(roi)
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = contours
        ds.ROIContourSequence.append(rc)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_rtstruct_with_holes_and_island_dice_against_analytic_mask(tmp_path):
    """Ring (a hole) with an island inside the hole, and a second ROI: rasterised on the series grid with Dice
    >= 0.98 against the analytic mask at the voxel centres."""
    shape = (10, 64, 60)
    aff = np.array([[0, 0, -0.5, 10.0], [0, -0.5, 0, 15.0], [2.0, 0, 0, -5.0], [0, 0, 0, 1.0]])
    folder, _ = _series(tmp_path, name="mr", shape=shape, affine=aff, modality="MR")
    ref = load_volume(folder)
    centre = (30.0, 28.0)
    rows, cols = np.indices(shape[1:])
    r = np.hypot(rows - centre[0], cols - centre[1])
    ring_truth = ((r <= 20) & (r > 10)) | (r <= 4)  # outer ring, hole, island
    truth = np.zeros(shape, np.uint8)
    contours = []
    for z in range(2, 8):
        truth[z][ring_truth] = 1
        contours += [
            _contour(_circle(centre, 20), z, ref),
            _contour(_circle(centre, 10), z, ref),
            _contour(_circle(centre, 4), z, ref),
        ]
    square = np.array([[4, 4], [4, 14], [14, 14], [14, 4]], float)
    truth[8][4:14, 4:14] = 7  # the square [4, 14]^2 covers 10 x 10 pixels (half-open spans keep its area)
    rtstruct = _rtstruct(
        tmp_path / "rs.dcm",
        ref,
        ref.metadata["SeriesInstanceUID"],
        ref.metadata["FrameOfReferenceUID"],
        [(1, "ring", contours), (7, "square", [_contour(square, 8, ref)])],
    )
    got = load_volume(rtstruct, reference=folder)
    assert got.metadata["label_names"] == {1: "ring", 7: "square"}
    np.testing.assert_allclose(got.affine, ref.affine)
    for value in (1, 7):
        a, b = got.numpy() == value, truth == value
        dice = 2 * np.count_nonzero(a & b) / (a.sum() + b.sum())
        assert dice >= 0.98, (value, dice)
    assert got.numpy()[4, 30, 28] == 1 and got.numpy()[4, 30, 36] == 0  # island in, hole out


def test_rtstruct_without_reference_is_one_line(tmp_path, capsys):
    folder, _ = _series(tmp_path, name="mr", modality="MR")
    ref = load_volume(folder)
    (tmp_path / "alone").mkdir()
    box = _contour(np.array([[2, 2], [2, 8], [8, 8], [8, 2]], float), 3, ref)
    path = _rtstruct(
        tmp_path / "alone" / "rs.dcm",
        ref,
        ref.metadata["SeriesInstanceUID"],
        ref.metadata["FrameOfReferenceUID"],
        [(1, "box", [box])],
    )
    with pytest.raises(InputError, match="is not beside it; give that series with --reference"):
        read_rtstruct(path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ref.metadata["SeriesInstanceUID"] in err[0]
    assert main(["info", str(path), "--reference", str(folder)]) == 0
    assert "box" in capsys.readouterr().out
    # stored beside its series (as a PACS or Slicer export does), it opens without --reference
    (tmp_path / "mr" / "RS.dcm").write_bytes(path.read_bytes())
    beside = load_volume(tmp_path / "mr" / "RS.dcm")
    assert beside.numpy()[3, 2:8, 2:8].all() and int(beside.numpy().sum()) == 36  # [2, 8]^2: 6 x 6 pixels


# ------------------------------------------------------------------ SEG + SR out, round trip
def _mri_labels(pet: Volume):
    """Labels on a finer MRI grid (0.4 mm, other origin) in the PET's world, made of PET voxels (exact round trip)."""
    mri_aff = pet.affine.copy()
    mri_aff[:3, :3] = pet.affine[:3, :3] / 2
    mri_aff[:3, 3] = pet.affine[:3, 3] - pet.affine[:3, :3].sum(axis=1) / 4  # MRI voxel centres split PET voxels
    mri_shape = tuple(2 * s for s in pet.spatial_shape)
    pet_truth = np.zeros(pet.spatial_shape, np.uint8)
    pet_truth[2:5, 3:9, 4:10] = 4
    pet_truth[7:9, 12:15, 14:20] = 9
    mri = np.repeat(np.repeat(np.repeat(pet_truth, 2, 0), 2, 1), 2, 2)
    assert mri.shape == mri_shape
    return Volume(mri, mri_aff, "SEG", "label", {"label_names": {4: "lymph node", 9: "spleen cluster"}}), pet_truth


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_export_round_trip_labels_and_measurements(tmp_path, kind):
    folder, pet = _series(tmp_path)
    ref = load_volume(folder)
    labels, truth = _mri_labels(ref)
    seg_path = write_seg(labels, folder, tmp_path / "out.seg.dcm", segmentation_type=kind)
    table = pd.DataFrame(
        {
            "label": [4, 9],
            "suv_bw_mean": [1.2345678901234567, 0.1 + 0.2],
            "suv_bw_peak": [2.5, 1e-7],
            "percent_id_per_g": [3.7, 12.25],
            "volume_ml": [0.1, 0.002],
            "iron_ng": [120.5, np.nan],
            "cell_count": [15000.0, 250.0],
            "voxels": [36, 36],
        }
    )
    with pytest.warns(Warning, match="voxels"):
        sr_path = write_sr(table, seg_path, folder, tmp_path / "out.sr.dcm")
    # labels: this plugin's reader and highdicom's, in world space on the PET grid
    ours = read_seg(seg_path, reference=folder)
    np.testing.assert_array_equal(ours.numpy(), truth)
    assert ours.metadata["label_names"] == {4: "lymph node", 9: "spleen cluster"}
    seg = hd.seg.segread(str(seg_path))
    assert seg.segmentation_type.value == kind.upper()
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ref.metadata["SeriesInstanceUID"]
    hv = seg.get_volume(combine_segments=True, relabel=False)
    hd_affine = np.diag([-1.0, -1, 1, 1]) @ hv.affine
    for number, value in ((1, 4), (2, 9)):
        pts = (hd_affine @ np.c_[np.argwhere(hv.array == number), np.ones(int((hv.array == number).sum()))].T).T
        idx = ref.world_to_index(pts[:, :3])
        assert np.abs(idx - np.rint(idx)).max() < 1e-4
        got = np.zeros_like(truth)
        got[tuple(np.rint(idx).astype(int).T)] = value
        np.testing.assert_array_equal(got == value, truth == value)
    # measurements: exactly the table's values, read back through highdicom
    back = read_sr(sr_path).set_index("label")
    for column in ("suv_bw_mean", "suv_bw_peak", "percent_id_per_g", "volume_ml", "cell_count"):
        assert back.loc[4, column] == table.loc[0, column] and back.loc[9, column] == table.loc[1, column]
    assert back.loc[4, "iron_ng"] == 120.5 and np.isnan(back.loc[9, "iron_ng"])
    assert "voxels" not in back.columns
    sr = hd.sr.srread(str(sr_path))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.referenced_segment.referenced_segment_numbers for g in groups] == [[1], [2]]
    suv = groups[0].get_measurements(name=hd.sr.CodedConcept("126401", "DCM", "SUVbw"))
    assert {m.unit.value for m in suv} == {"{SUVbw}g/ml"}


def test_column_codes_units_are_ucum():
    assert column_code("percent_id_per_g")[1] == ("%/g", "UCUM", "percent per gram")
    assert column_code("mean_bq_ml")[1][0] == "Bq/ml" and column_code("mean_bq_ml")[2][2] == "Mean"
    assert column_code("volume_mm3")[0][2] == "Volume" and column_code("centroid_x_mm") is None


def test_export_cli_writes_seg_sr_and_provenance(tmp_path, capsys):
    folder, _ = _series(tmp_path)
    ref = load_volume(folder)
    labels, truth = _mri_labels(ref)
    save_labels(labels, tmp_path / "labels.nii.gz")
    (tmp_path / "labels.tsv").write_text("index\tname\n4\tlymph node\n9\tspleen cluster\n")  # BIDS dseg names
    pd.DataFrame({"label": [4, 9], "percent_id_per_g": [3.5, 4.5]}).to_csv(tmp_path / "readouts.csv", index=False)
    rc = main(
        [
            "export",
            str(tmp_path / "labels.nii.gz"),
            "--source",
            str(folder),
            "--seg",
            str(tmp_path / "o.dcm"),
            "--table",
            str(tmp_path / "readouts.csv"),
            "--sr",
            str(tmp_path / "o_sr.dcm"),
            "--seg-type",
            "labelmap",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    for name in ("o.dcm", "o_sr.dcm"):
        assert (tmp_path / f"{name}.provenance.json").exists()
    seg = load_volume(tmp_path / "o.dcm", reference=folder)
    np.testing.assert_array_equal(seg.numpy(), truth)
    assert seg.metadata["label_names"] == {4: "lymph node", 9: "spleen cluster"}
    assert "labels" in json.loads((tmp_path / "o.dcm.provenance.json").read_text())["inputs"]
    assert read_sr(tmp_path / "o_sr.dcm").set_index("label").loc[9, "percent_id_per_g"] == 4.5
    # existing output without --overwrite: refused
    assert (
        main(["export", str(tmp_path / "labels.nii.gz"), "--source", str(folder), "--seg", str(tmp_path / "o.dcm")])
        == 2
    )


@pytest.mark.parametrize("case", ["nifti_source", "unknown_label", "sr_without_table", "labels_elsewhere"])
def test_export_bad_input_one_line_nothing_written(tmp_path, capsys, case):
    folder, _ = _series(tmp_path)
    ref = load_volume(folder)
    labels, _ = _mri_labels(ref)
    if case == "labels_elsewhere":
        moved = labels.affine.copy()
        moved[0, 3] += 500.0  # half a metre away: another scan
        labels = labels.replace(affine=moved)
    save_labels(labels, tmp_path / "labels.nii.gz")
    source = str(folder)
    if case == "nifti_source":
        source = str(tmp_path / "labels.nii.gz")
    pd.DataFrame({"label": [4, 5], "percent_id_per_g": [1.0, 2.0]}).to_csv(tmp_path / "t.csv", index=False)
    argv = ["export", str(tmp_path / "labels.nii.gz"), "--source", source, "--seg", str(tmp_path / "o.dcm")]
    if case != "sr_without_table":
        argv += ["--table", str(tmp_path / "t.csv")]
    argv += ["--sr", str(tmp_path / "o_sr.dcm")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    expected = {
        "nifti_source": "not a DICOM series",
        "unknown_label": "label 5",
        "sr_without_table": "--table and --sr",
        "labels_elsewhere": "no labelled voxel",
    }[case]
    assert expected in err[0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]  # no output, no temp
    assert not (tmp_path / "o.dcm").exists() and not (tmp_path / "o_sr.dcm").exists()


def test_even_odd_fill_agrees_with_scikit_image_polygons_xor():
    """The scanline fill equals scikit-image's polygon fill combined by XOR, except on edge pixels."""
    from skimage.draw import polygon2mask

    from napari_immunotrack.io.rtstruct import even_odd_mask

    rng = np.random.default_rng(3)
    shape = (80, 90)
    for _ in range(20):
        polygons = []
        for r in (30, 18, 7):  # nested: outer, hole, island; jittered, random start and winding
            t = np.sort(rng.uniform(0, 2 * np.pi, 40))[:: rng.choice([-1, 1])]
            radius = r * (1 + 0.1 * rng.uniform(-1, 1, t.size))
            polygons.append(np.c_[40.3 + radius * np.sin(t), 44.7 + radius * np.cos(t)])
        ours = even_odd_mask(polygons, shape)
        theirs = np.zeros(shape, bool)
        for poly in polygons:
            theirs ^= polygon2mask(shape, poly)
        differ = ours != theirs
        assert differ.sum() <= 0.01 * theirs.sum()
        # every differing pixel centre is within one pixel of an edge
        rows, cols = np.nonzero(differ)
        for y, x in zip(rows, cols):
            d = min(np.min(np.hypot(p[:, 0] - y, p[:, 1] - x)) for p in polygons)
            assert d < 5.0  # vertices are at most ~4.7 pixels apart: near an edge


@pytest.mark.parametrize("kind", ["binary", "labelmap"])
def test_export_against_an_enhanced_multiframe_source(tmp_path, kind):
    """The source may be one enhanced multi-frame file (frames in the file's own order): same labels back."""
    folder, _ = _series(tmp_path, name="mr", modality="MR", shape=(6, 8, 9))
    datasets, _ = _datasets(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            legacy_datasets=datasets[::-1],
            series_instance_uid=hd.UID(),
            series_number=5,
            sop_instance_uid=hd.UID(),
            instance_number=1,
        )
    (tmp_path / "enh").mkdir()
    enhanced.save_as(tmp_path / "enh" / "e.dcm")
    ref = load_volume(tmp_path / "enh")
    labels = np.zeros(ref.spatial_shape, np.uint8)
    labels[1:4, 2:5, 3:7] = 2
    labels[5, 0, 0] = 1
    seg = write_seg(
        Volume(labels, ref.affine, "SEG", "label"), tmp_path / "enh", tmp_path / "seg.dcm", segmentation_type=kind
    )
    np.testing.assert_array_equal(load_volume(seg, reference=tmp_path / "enh").numpy(), labels)
    assert hd.seg.segread(str(seg)).ReferencedSeriesSequence[0].SeriesInstanceUID == ref.metadata["SeriesInstanceUID"]
