"""Property-based search for crashes of the enhanced multi-frame, DICOM SEG and RTSTRUCT readers.

Same contract and budgets as tests/test_fuzz_readers.py (whose helpers are used): a damaged file opens as
Volumes the plugin can use, or is refused with a one-line InputError; anything else is a bug. The damage:
files cut short, flipped bytes, and hand-edited functional-group / segment / contour values.
"""

from __future__ import annotations

import functools
import io
import tempfile
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_readers import _set_raw, _write_series, budget, opens_or_refuses, series_bytes


def _series_datasets(folder: Path):
    return sorted((pydicom.dcmread(p) for p in sorted(folder.iterdir())), key=lambda d: int(d.InstanceNumber))


@functools.lru_cache(maxsize=1)
def objects_bytes():
    """(series files, enhanced MR file, SEG file, RTSTRUCT file) as bytes, made once from the fuzz series."""
    from napari_immunotrack.io import load_volume

    with tempfile.TemporaryDirectory() as tmp:
        folder = _write_series(Path(tmp) / "s", series_bytes())
        datasets = _series_datasets(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
                legacy_datasets=datasets,
                series_instance_uid="1.2.826.0.1.3680043.10.511.9.1",
                series_number=5,
                sop_instance_uid="1.2.826.0.1.3680043.10.511.9.2",
                instance_number=1,
            )
        buf = io.BytesIO()
        enhanced.save_as(buf)
        enhanced_bytes = buf.getvalue()
        volume = load_volume(folder)
        ordered = [pydicom.dcmread(h["file"]) for h in volume.metadata["slice_headers"]]
        mask = np.zeros(volume.spatial_shape + (2,), bool)
        mask[:, 20:40, 20:40, 0] = True
        mask[1, 5:15, 5:15, 1] = True
        desc = [
            hd.seg.SegmentDescription(
                segment_number=i + 1,
                segment_label=f"s{i + 1}",
                segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
                segmented_property_type=hd.sr.CodedConcept("78961009", "SCT", "Spleen"),
                algorithm_type="MANUAL",
            )
            for i in range(2)
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            seg = hd.seg.Segmentation(
                source_images=ordered,
                pixel_array=mask,
                segmentation_type="BINARY",
                segment_descriptions=desc,
                series_instance_uid="1.2.826.0.1.3680043.10.511.9.3",
                series_number=9,
                sop_instance_uid="1.2.826.0.1.3680043.10.511.9.4",
                instance_number=1,
                manufacturer="t",
                manufacturer_model_name="t",
                software_versions="1",
                device_serial_number="1",
            )
        buf = io.BytesIO()
        seg.save_as(buf)
        seg_bytes = buf.getvalue()
        rt_bytes = _rtstruct_bytes(volume)
        return series_bytes(), enhanced_bytes, seg_bytes, rt_bytes


def _rtstruct_bytes(volume) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    # fixed UIDs (and fixed files): the fuzz examples damage the same bytes on every run
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", "1.2.826.0.1.3680043.10.511.9.5"
    ds.Modality, ds.SeriesInstanceUID = "RTSTRUCT", "1.2.826.0.1.3680043.10.511.9.6"
    series, study, frame = Dataset(), Dataset(), Dataset()
    series.SeriesInstanceUID = volume.metadata["SeriesInstanceUID"]
    study.RTReferencedSeriesSequence = [series]
    frame.FrameOfReferenceUID = str(volume.metadata.get("FrameOfReferenceUID", "1.2.3"))
    frame.RTReferencedStudySequence = [study]
    ds.ReferencedFrameOfReferenceSequence = [frame]
    roi, rc = Dataset(), Dataset()
    roi.ROINumber, roi.ROIName = 1, "box"
    ds.StructureSetROISequence = [roi]
    rc.ReferencedROINumber = 1
    rc.ContourSequence = []
    for s in range(volume.spatial_shape[0]):
        for half in (20, 8):  # outer square and a hole
            corners = np.array(
                [[32 - half, 32 - half], [32 - half, 32 + half], [32 + half, 32 + half], [32 + half, 32 - half]], float
            )
            ras = volume.index_to_world(np.c_[np.full(4, s), corners])
            item = Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = 4
            item.ContourData = [f"{v:.4f}" for v in (ras * [-1, -1, 1]).ravel()]
            rc.ContourSequence.append(item)
    ds.ROIContourSequence = [rc]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _place(tmp_path_factory, which: int, content: bytes) -> Path:
    """The object file beside an unharmed copy of its series (where the readers look for the reference)."""
    folder = _write_series(tmp_path_factory.mktemp("o") / "s", objects_bytes()[0])
    path = folder / "object.dcm"
    path.write_bytes(content)
    return path


def test_the_unharmed_objects_open(tmp_path_factory):
    _, enhanced, seg, rt = objects_bytes()
    (vol,) = opens_or_refuses(_place(tmp_path_factory, 1, enhanced))
    assert vol.spatial_shape == (3, 64, 64)
    (labels,) = opens_or_refuses(_place(tmp_path_factory, 2, seg))
    assert labels.metadata["label_names"] == {1: "s1", 2: "s2"} and int((labels.numpy() == 2).sum()) == 100
    (contours,) = opens_or_refuses(_place(tmp_path_factory, 3, rt))
    # a square ring: edge pixels of a polygon may fall either way, the interiors may not
    assert 3 * (39 * 39 - 17 * 17) <= int(contours.numpy().sum()) <= 3 * (41 * 41 - 15 * 15)
    assert contours.numpy()[:, 32, 32].sum() == 0 and contours.numpy()[:, 32, 15].all()


damage = dict(
    which=st.sampled_from([1, 2, 3]),
    cut=st.floats(0.0, 0.999),
    flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(0, 255)), max_size=6),
)


@budget(300)
@given(**damage)
def test_enhanced_seg_rtstruct_cut_or_flipped(tmp_path_factory, which, cut, flips):
    buf = bytearray(objects_bytes()[which])
    for where, value in flips:
        buf[int(where * len(buf))] = value
    content = bytes(buf[: max(int(cut * len(buf)), 1)] if cut > 0 else buf)
    path = _place(tmp_path_factory, which, content)
    volumes = opens_or_refuses(path)
    if volumes is not None and which in (2, 3):  # labels opened: they are labels
        assert all(np.issubdtype(v.data.dtype, np.integer) for v in volumes)


#: (object, sequence path, keyword, hand-typed values)
EDITS = [
    (
        1,
        ("PerFrameFunctionalGroupsSequence", 1, "PlanePositionSequence", 0),
        "ImagePositionPatient",
        [None, ["nan", "0", "0"], ["1e308", "0", "0"], ["0", "0"], ["abc", "1", "2"]],
    ),
    (
        1,
        ("SharedFunctionalGroupsSequence", 0, "PlaneOrientationSequence", 0),
        "ImageOrientationPatient",
        [None, ["0"] * 6, ["1", "0", "0", "1", "0", "0"], ["nan"] * 6],
    ),
    (
        1,
        ("SharedFunctionalGroupsSequence", 0, "PixelMeasuresSequence", 0),
        "PixelSpacing",
        [None, ["0", "0"], ["-1", "1"], ["inf", "1"]],
    ),
    (
        1,
        ("PerFrameFunctionalGroupsSequence", 0, "PixelValueTransformationSequence", 0),
        "RescaleSlope",
        [None, "0", "nan", "-1e38"],
    ),
    (1, (), "NumberOfFrames", [None, "0", "7", "-1", "abc"]),
    (2, (), "NumberOfFrames", [None, "0", "9", "abc"]),
    (2, (), "SegmentationType", [None, "", "FRACTIONAL", "NONSENSE"]),
    (2, ("SegmentSequence", 0), "SegmentNumber", [None, 0, 7, 65535]),
    (
        2,
        ("PerFrameFunctionalGroupsSequence", 0, "PlanePositionSequence", 0),
        "ImagePositionPatient",
        [None, ["nan", "0", "0"], ["0", "0"]],
    ),
    (
        2,
        ("PerFrameFunctionalGroupsSequence", 0, "SegmentIdentificationSequence", 0),
        "ReferencedSegmentNumber",
        [None, 0, 9],
    ),
    (
        3,
        ("ROIContourSequence", 0, "ContourSequence", 0),
        "ContourData",
        [None, ["1", "2"], ["nan", "0", "0", "1", "1", "1", "2", "2", "2"], ["1e308"] * 9, ["a", "b", "c"]],
    ),
    (3, ("ROIContourSequence", 0), "ReferencedROINumber", [None, 0, 99]),
    (3, ("StructureSetROISequence", 0), "ROINumber", [None, "x", "-4"]),
    (3, ("ROIContourSequence", 0, "ContourSequence", 1), "ContourGeometricType", [None, "POINT", "OPEN_PLANAR"]),
    (3, ("ReferencedFrameOfReferenceSequence", 0), "RTReferencedStudySequence", [None]),
]


@st.composite
def object_edits(draw):
    which = draw(st.sampled_from([1, 2, 3]))
    choices = [e for e in EDITS if e[0] == which]
    picked = draw(st.lists(st.sampled_from(range(len(choices))), min_size=1, max_size=3, unique=True))
    return which, [(choices[i][1], choices[i][2], draw(st.sampled_from(choices[i][3]))) for i in picked]


def _item(ds, where):
    for step in where:
        if isinstance(step, int):
            ds = ds[step]
        else:
            ds = ds.get(step) if step in ds else None
        if ds is None:
            return None
    return ds


@budget(300)
@given(edit=object_edits())
def test_enhanced_seg_rtstruct_with_hand_edited_values(tmp_path_factory, edit):
    which, changes = edit
    ds = pydicom.dcmread(io.BytesIO(objects_bytes()[which]))
    for where, keyword, value in changes:
        item = _item(ds, where)
        if item is None:
            continue
        if value is None:
            if keyword in item:
                delattr(item, keyword)
        else:
            _set_raw(item, keyword, value)
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=False)
    opens_or_refuses(_place(tmp_path_factory, which, out.getvalue()))
