"""Results out as DICOM: labels as a DICOM SEG, readout tables as a TID 1500 measurement report (highdicom).

:func:`write_seg` carries a label Volume (on any grid) into the geometry of
the DICOM series it belongs to through world space (nearest neighbour; exact
when the grids coincide) and writes a SEG that references that series:
``"binary"`` (Segmentation Storage, read by 3D Slicer, OHIF, PACS viewers) or
``"labelmap"`` (Label Map Segmentation Storage, DICOM 2024: smaller, read by
highdicom and recent viewers). Segment numbers run 1..N in label order; each
segment keeps its label value as TrackingID ``"label <value>"`` and its name as
SegmentLabel, so reading the SEG back gives the same labels.

:func:`write_sr` writes a Comprehensive 3D SR, TID 1500 Measurement Report,
with one measurement group (TID 1411) per table row: the tracking identifier,
the referenced segment of the SEG and its source series, and each known
column as a coded measurement with a UCUM unit (:data:`COLUMN_CODES`;
``docs/methods/dicom-objects.md#measurement-codes``). :func:`read_sr` reads
such a report back into a table.

Nothing here invents identity: the source must be the DICOM series the labels
were drawn on or computed from (its Study, Series, SOP Instance and Frame of
Reference UIDs are what the SEG references); a NIfTI or other source is
refused with what to give instead.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImmunotrackWarning, InputError
from ..volume import Volume

#: Local coding scheme for concepts DICOM has no code for (PS3.16 8.2: private schemes start with "99").
LOCAL_SCHEME = "99IMMUNOTRACK"

# statistic suffix -> derivation code (PS3.16 CID 7464 "General Region of Interest Measurement Modifiers")
_DERIVATION = {
    "mean": ("373098007", "SCT", "Mean"),
    "max": ("56851009", "SCT", "Maximum"),
    "min": ("255605001", "SCT", "Minimum"),
    "median": ("373099004", "SCT", "Median"),
    "sd": ("386136009", "SCT", "Standard Deviation"),
    "peak": ("126031", "DCM", "Peak Value Within ROI"),
}
_SUV = {
    "bw": ("126401", "SUVbw", "{SUVbw}g/ml"),
    "lbm": ("126402", "SUVlbm", "{SUVlbm}g/ml"),
    "bsa": ("126403", "SUVbsa", "{SUVbsa}cm2/ml"),
    "ibw": ("126404", "SUVibw", "{SUVibw}g/ml"),
}

#: Table column -> (concept name (value, scheme, meaning), UCUM unit (code, meaning)); statistics columns
#: (``suv_<type>_<stat>``, ``<stat>_bq_ml``) are added below with their derivation.
COLUMN_CODES: dict[str, tuple[tuple[str, str, str], tuple[str, str]]] = {
    "volume_ml": (("118565006", "SCT", "Volume"), ("ml", "milliliter")),
    "volume_mm3": (("118565006", "SCT", "Volume"), ("mm3", "cubic millimeter")),
    "percent_id": (("PCTID", LOCAL_SCHEME, "Percent injected dose"), ("%", "percent")),
    "percent_id_per_g": (("PCTIDG", LOCAL_SCHEME, "Percent injected dose per gram"), ("%/g", "percent per gram")),
    "total_activity_kbq": (("TOTACT", LOCAL_SCHEME, "Total activity in region"), ("kBq", "kilobecquerel")),
    "total_activity_mbq": (("TOTACT", LOCAL_SCHEME, "Total activity in region"), ("MBq", "megabecquerel")),
    "cell_count": (("CELLS", LOCAL_SCHEME, "Number of labelled cells"), ("{cells}", "cells")),
    "cells": (("CELLS", LOCAL_SCHEME, "Number of labelled cells"), ("{cells}", "cells")),
    "cells_corrected": (
        ("CELLSCORR", LOCAL_SCHEME, "Number of labelled cells, partial-volume corrected"),
        ("{cells}", "cells"),
    ),
    "apparent_cells": (("CELLSAPP", LOCAL_SCHEME, "Apparent number of labelled cells"), ("{cells}", "cells")),
    "detection_limit_cells": (("CELLSLOD", LOCAL_SCHEME, "Cell detection limit"), ("{cells}", "cells")),
    "fluorine_atoms": (("F19ATOMS", LOCAL_SCHEME, "Number of fluorine-19 atoms"), ("{atoms}", "atoms")),
    "iron_ng": (("IRONMASS", LOCAL_SCHEME, "Iron mass"), ("ng", "nanogram")),
    "iron_pg": (("IRONMASS", LOCAL_SCHEME, "Iron mass"), ("pg", "picogram")),
}
_IMAGE_PROCESSING = ("110001", "DCM", "Image Processing")
_STAT_COLUMN = re.compile(r"^(?:suv_(bw|lbm|bsa|ibw)_|)(mean|max|min|median|sd|peak)(_bq_ml)?$")


def column_code(column: str):
    """The measurement a table column reports: (name, unit, derivation) as (value, scheme, meaning) tuples
    (derivation None for plain quantities), or None for a column that is not a measurement of the region.

    Parameters
    ----------
    column : str
        A readout table column: a key of :data:`COLUMN_CODES`, ``suv_<type>_<stat>`` or
        ``<stat>_bq_ml`` (stat: mean, max, peak, ...).

    Returns
    -------
    tuple or None
        ``(name, unit, derivation)``: the concept name (DCM or local code), the UCUM unit and the
        statistic (e.g. "Peak Value Within ROI"; None for a plain quantity) as
        ``(value, scheme, meaning)`` tuples; None when the column is not coded (it is left out of an SR).

    Examples
    --------
    >>> column_code("mean_bq_ml")[1]
    ('Bq/ml', 'UCUM', 'becquerel per milliliter')
    >>> column_code("suv_bw_peak")[0][2], column_code("suv_bw_peak")[1][0], column_code("suv_bw_peak")[2][2]
    ('SUVbw', '{SUVbw}g/ml', 'Peak Value Within ROI')
    >>> column_code("voxels") is None
    True
    """
    if column in COLUMN_CODES:
        name, (unit, unit_meaning) = COLUMN_CODES[column]
        return name, (unit, "UCUM", unit_meaning), None
    m = _STAT_COLUMN.match(column)
    if m and (m.group(1) or m.group(3)) and not (m.group(1) and m.group(3)):
        derivation = _DERIVATION[m.group(2)]
        if m.group(1):
            value, meaning, unit = _SUV[m.group(1)]
            return (value, "DCM", meaning), (unit, "UCUM", f"Standardized Uptake Value {meaning[3:]}"), derivation
        return (
            ("ACTCONC", LOCAL_SCHEME, "Activity concentration"),
            ("Bq/ml", "UCUM", "becquerel per milliliter"),
            derivation,
        )
    return None


def _column_of(name: tuple[str, str, str], unit: str, derivation: tuple[str, str, str] | None) -> str | None:
    """The table column a coded measurement came from (the inverse of :func:`column_code`)."""
    for column in list(COLUMN_CODES):
        code = column_code(column)
        if code[0][:2] == name[:2] and code[1][0] == unit and derivation is None:
            return column
    stat = next((s for s, d in _DERIVATION.items() if derivation is not None and d[:2] == derivation[:2]), None)
    if stat is None:
        return None
    if name[1] == "DCM":
        suv = next((t for t, (value, _, _) in _SUV.items() if value == name[0]), None)
        return f"suv_{suv}_{stat}" if suv else None
    if name[:2] == ("ACTCONC", LOCAL_SCHEME):
        return f"{stat}_bq_ml"
    return None


# ------------------------------------------------------------------------------- the source series
def source_series(source) -> tuple[Volume, list]:
    """The DICOM series ``source`` (folder or file) as a Volume and its pydicom datasets in slice order.

    Refuses a non-DICOM source (a SEG must reference the UIDs of real images;
    none are invented), a folder holding several series, and a 4D enhanced file.

    Parameters
    ----------
    source : str or Path
        A DICOM series folder or a (multi-frame) DICOM file.

    Returns
    -------
    volume : Volume
        The series as read by :func:`~napari_immunotrack.io.dicom.read_dicom`.
    datasets : list of pydicom.Dataset
        Its headers, in the volume's slice order.

    Raises
    ------
    InputError
        See above.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> volume, datasets = source_series(series)
    >>> volume.spatial_shape, len(datasets), datasets[0].Modality
    ((4, 5, 6), 4, 'PT')
    >>> tmp.cleanup()
    """
    import pydicom

    from . import detect_format
    from .dicom import read_dicom

    path = Path(source)
    fmt = detect_format(path)
    if fmt != "dicom":
        raise InputError(
            f"{path} is not a DICOM series ({fmt}); a DICOM SEG/SR references the Study, Series, SOP "
            "Instance and Frame of Reference UIDs of the images the labels belong to, and none are "
            "invented: give the original DICOM series folder (e.g. the scanner export the NIfTI was "
            "converted from), or write the image as DICOM first (io.dicom.write_dicom_series)."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        volumes = read_dicom(path)
    if len(volumes) > 1:
        names = "; ".join(f"{v.name} ({v.modality})" for v in volumes[:5])
        raise InputError(
            f"{path} holds {len(volumes)} series ({names}); give the folder of the one series the labels belong to."
        )
    volume = volumes[0]
    headers = [h for h in volume.metadata["slice_headers"] if h["frame"] == 0]
    files = [h["file"] for h in headers]
    if any("#frame" in f for f in files):
        if volume.data.ndim != 3 or len({f.split("#frame")[0] for f in files}) != 1:
            raise InputError(
                f"{path}: a 4D or multi-file enhanced series cannot be a SEG source here; give the "
                "classic (one file per slice) export of the series."
            )
        ds = pydicom.dcmread(files[0].split("#frame")[0], stop_before_pixels=True)
        return volume, [ds]
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    return volume, datasets


def labels_on_source(labels: Volume, source: Volume, what: str = "labels") -> Volume:
    """``labels`` carried onto the source series' 3D grid through world space (nearest neighbour).

    Raises InputError when no labelled voxel lands in the source's field of
    view; warns with the count when some fall outside it.

    Parameters
    ----------
    labels : Volume
        Integer labels on any grid in the source's world.
    source : Volume
        The source series.
    what : str, default "labels"
        How messages name the labels.

    Returns
    -------
    Volume
        The labels on ``source``'s 3D grid (unchanged when the grids already coincide).

    Examples
    --------
    >>> import numpy as np
    >>> source = Volume(np.zeros((4, 5, 6)), np.diag([0.5, 0.5, 1.0, 1.0]), "PT")
    >>> fine = Volume(np.zeros((8, 10, 12), np.uint8), np.diag([0.25, 0.25, 0.5, 1.0]), "SEG", "label")
    >>> fine.data[2:6, 4:8, 4:10] = 1
    >>> on_source = labels_on_source(fine, source)
    >>> on_source.spatial_shape, int(on_source.numpy().sum())
    ((4, 5, 6), 12)
    """
    from ..volume import as_labels

    labels = as_labels(labels, what)
    if labels.data.ndim != 3:
        raise InputError(f"the {what} are {labels.data.ndim}D; give a 3D label image.")
    target = (source.spatial_shape, source.affine)
    on_grid = labels if labels.same_grid(source) else labels.resample_to(target, order=0)
    data = np.asarray(on_grid.numpy())
    before = {int(v): int(c) for v, c in zip(*np.unique(labels.numpy(), return_counts=True)) if v}
    if not before:
        raise InputError(f"the {what} hold no label (all voxels are 0); nothing to export.")
    if not np.any(data):
        raise InputError(
            f"no labelled voxel of the {what} lies inside the source series in world space; the labels "
            "and the series are of different scans or frames of reference: give the series the labels "
            "were drawn on (or register them first)."
        )
    lost = sorted(set(before) - set(int(v) for v in np.unique(data)))
    if lost:
        warnings.warn(
            f"labels {lost} fall outside the source series' field of view and are not exported.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    return on_grid


def _frames_for(datasets, source: Volume, data: np.ndarray) -> np.ndarray:
    """The label array in the order of the source images (one frame per slice file, or the enhanced file's
    frame order)."""
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        headers = [h for h in source.metadata["slice_headers"] if h["frame"] == 0]
        out = np.zeros((int(datasets[0].NumberOfFrames),) + data.shape[1:], data.dtype)
        for s, h in enumerate(headers):
            out[int(h["file"].rsplit("#frame", 1)[1]) - 1] = data[s]
        return out
    return data


# ------------------------------------------------------------------------------- SEG
def build_seg(
    labels: Volume,
    source,
    *,
    segmentation_type: str = "binary",
    label_names=None,
    series_description: str = "",
    series_number: int = 300,
):
    """The DICOM SEG of ``labels`` on the source series, in memory: ``(seg, source_datasets)``.

    Nothing is written.

    Parameters
    ----------
    labels : Volume
        Integer labels (0 background), on any grid in the source's world.
    source : str or Path
        The DICOM series folder (or enhanced file) the labels belong to.
    segmentation_type : {"binary", "labelmap"}, default "binary"
        See :func:`write_seg`.
    label_names : dict, optional
        {label: name}; default ``labels.metadata["label_names"]``, else "label N".
    series_description : str, optional
        Of the new SEG series.
    series_number : int, default 300
        Of the new SEG series.

    Returns
    -------
    seg : highdicom.seg.Segmentation
        One segment per label present (TrackingID "label N").
    source_datasets : list of pydicom.Dataset
        The source series' headers in slice order (the SEG's references).

    Raises
    ------
    InputError
        See :func:`source_series` and :func:`labels_on_source`.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> seg, datasets = build_seg(labels, series)
    >>> seg.SOPClassUID.name, [s.SegmentLabel for s in seg.SegmentSequence], len(datasets)
    ('Segmentation Storage', ['tumour'], 4)
    >>> tmp.cleanup()
    """
    import highdicom as hd

    from .. import __version__

    kind = str(segmentation_type).lower()
    if kind not in ("binary", "labelmap"):
        raise InputError(f"segmentation type must be 'binary' or 'labelmap', not {segmentation_type!r}.")
    source_volume, datasets = source_series(source)
    on_grid = labels_on_source(labels, source_volume)
    data = np.asarray(on_grid.numpy())
    values = [int(v) for v in np.unique(data) if v]
    names = dict(label_names if label_names is not None else labels.metadata.get("label_names") or {})
    names = {int(k): str(v) for k, v in names.items()}
    segment_of = {v: i + 1 for i, v in enumerate(values)}  # segment numbers must run 1..N
    lut = np.zeros(int(data.max()) + 1, np.uint16 if len(values) > 255 else np.uint8)
    for v, n in segment_of.items():
        lut[v] = n
    pixels = _frames_for(datasets, source_volume, lut[data])
    algorithm = hd.AlgorithmIdentificationSequence(
        name="napari-immunotrack", version=str(__version__), family=hd.sr.CodedConcept(*_IMAGE_PROCESSING)
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=segment_of[v],
            segment_label=names.get(v, f"label {v}")[:64],
            segmented_property_category=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type="AUTOMATIC",
            algorithm_identification=algorithm,
            tracking_id=f"label {v}",
            tracking_uid=hd.UID(),
        )
        for v in values
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # highdicom's notes on person names of the source
            seg = hd.seg.Segmentation(
                source_images=datasets,
                pixel_array=pixels,
                segmentation_type="LABELMAP" if kind == "labelmap" else "BINARY",
                segment_descriptions=descriptions,
                series_instance_uid=hd.UID(),
                series_number=int(series_number),
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="napari-immunotrack",
                manufacturer_model_name="napari-immunotrack",
                software_versions=str(__version__),
                device_serial_number="0",
                series_description=series_description or "immunotrack labels",
                omit_empty_frames=kind == "binary",
            )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InputError(
            f"the SEG cannot be built on {source} ({' '.join(str(exc).split())[:160]}); the source "
            "series lacks what a SEG must reference (UIDs, geometry): give the original DICOM "
            "series."
        ) from None
    return seg, datasets


def save_dataset(ds, path, *, overwrite: bool = False, provenance: dict | None = None) -> Path:
    """Write a pydicom/highdicom dataset atomically, with its provenance sidecar when given.

    Parameters
    ----------
    ds : pydicom.Dataset
        The object to write (``save_as``).
    path : str or Path
        The file.
    overwrite : bool, default False
        Replace an existing file (refused otherwise).
    provenance : dict, optional
        Written beside the file as ``<path>.provenance.json`` with the file's SHA-256.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> from napari_immunotrack.io.dicom_seg import dicom_object_kind
    >>> seg, _ = build_seg(labels, series)
    >>> dicom_object_kind(save_dataset(seg, Path(tmp.name) / "seg.dcm", provenance={"command": "demo"}))
    'seg'
    >>> sorted(p.name for p in Path(tmp.name).iterdir())
    ['pet', 'seg.dcm', 'seg.dcm.provenance.json']
    >>> tmp.cleanup()
    """
    from ..outputs import atomic_output, check_output, sidecar_path, write_sidecar

    path = check_output(Path(path), overwrite)
    if provenance is not None:
        check_output(sidecar_path(path), overwrite=True)
    with atomic_output(path, overwrite) as tmp:
        ds.save_as(str(tmp))
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path


def write_seg(
    labels: Volume,
    source,
    path,
    *,
    segmentation_type: str = "binary",
    label_names=None,
    overwrite: bool = False,
    provenance: dict | None = None,
    series_description: str = "",
    series_number: int = 300,
) -> Path:
    """Write labels as a DICOM SEG referencing the source series.

    Parameters
    ----------
    labels : Volume
        Integer labels (0 background), on any grid in the same world as the source.
    source : path
        The DICOM series folder (or enhanced file) the labels belong to.
    path : path
        The SEG file to write (atomically; a provenance sidecar when ``provenance`` is given).
    segmentation_type : {"binary", "labelmap"}
        Binary (Segmentation Storage: the most widely read) or labelmap (Label
        Map Segmentation Storage, DICOM 2024: one frame per slice, for
        receivers that read it).
    label_names : dict, optional
        {label: name}; default ``labels.metadata["label_names"]``, else "label N".
    overwrite : bool
        Replace an existing file.
    provenance : dict, optional
        Provenance record written beside the file.
    series_description, series_number
        Of the new SEG series.

    Returns
    -------
    Path of the SEG.

    Examples
    --------
    See :mod:`napari_immunotrack.io.dicom_seg` (a SEG written and read back).
    """
    from ..outputs import check_output

    check_output(Path(path), overwrite)  # before the work
    seg, _ = build_seg(
        labels,
        source,
        segmentation_type=segmentation_type,
        label_names=label_names,
        series_description=series_description,
        series_number=series_number,
    )
    return save_dataset(seg, path, overwrite=overwrite, provenance=provenance)


# ------------------------------------------------------------------------------- SR
def build_sr(table, seg, datasets, *, series_description: str = "", series_number: int = 301):
    """The TID 1500 report of ``table`` in memory (see :func:`write_sr`); ``seg`` a SEG dataset or file,
    ``datasets`` the source series' datasets (:func:`source_series`).

    Parameters
    ----------
    table : pandas.DataFrame or path
        The readout table (see :func:`write_sr`).
    seg : pydicom.Dataset or path
        The SEG the regions refer to.
    datasets : list of pydicom.Dataset
        The source series' datasets (evidence of the report).
    series_description : str, optional
        Of the new SR series.
    series_number : int, default 301
        Of the new SR series.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        One measurement group per table row.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> import pandas as pd
    >>> seg, datasets = build_seg(labels, series)
    >>> sr = build_sr(pd.DataFrame({"label": [1], "mean_bq_ml": [1234.5]}), seg, datasets)
    >>> sr.SOPClassUID.name
    'Comprehensive 3D SR Storage'
    >>> tmp.cleanup()
    """
    import highdicom as hd

    from .. import __version__

    table = read_table(table)
    label_column = next((c for c in ("label", "cluster", "cluster_id") if c in table.columns), None)
    if label_column is None:
        raise InputError(
            f"the readout table has no 'label' column (columns: {', '.join(map(str, table.columns))}); "
            "give a table with one row per label, as the readout commands write."
        )
    measured = [c for c in table.columns if c != label_column and column_code(str(c)) is not None]
    skipped = [str(c) for c in table.columns if c != label_column and c not in measured]
    if not measured:
        raise InputError(
            f"the readout table has no column this report knows how to code (columns: "
            f"{', '.join(map(str, table.columns))}); see docs/methods/dicom-objects.md#measurement-codes."
        )
    if skipped:
        warnings.warn(
            f"columns not reported in the SR (not measurements of a region, or no code for them): "
            f"{', '.join(skipped)}.",
            ImmunotrackWarning,
            stacklevel=2,
        )
    seg_path = "the SEG"
    if not hasattr(seg, "SOPInstanceUID"):
        seg_path, seg = seg, _read_dataset(seg, "DICOM SEG")
    segment_of = {}
    for item in seg.get("SegmentSequence", []):
        m = re.fullmatch(r"label (\d+)", str(item.get("TrackingID", "")))
        segment_of[int(m.group(1)) if m else int(item.SegmentNumber)] = item
    ref_series = [str(i.SeriesInstanceUID) for i in seg.get("ReferencedSeriesSequence", [])]
    if ref_series and str(datasets[0].SeriesInstanceUID) not in ref_series:
        raise InputError(
            f"{seg_path} references series {ref_series[0]}, not the source series "
            f"{datasets[0].SeriesInstanceUID}; give the source the SEG was written for."
        )
    groups = []
    for _, row in table.iterrows():
        try:
            label = int(row[label_column])
        except (TypeError, ValueError):
            raise InputError(f"label {row[label_column]!r} in the table is not an integer label.") from None
        if label not in segment_of:
            raise InputError(
                f"label {label} of the table is not a segment of {seg_path} (segments: "
                f"{sorted(segment_of)}); give the SEG written from the same labels."
            )
        item = segment_of[label]
        measurements = []
        for column in measured:
            value = row[column]
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if not np.isfinite(value):
                continue
            name, unit, derivation = column_code(str(column))
            measurements.append(
                hd.sr.Measurement(
                    name=hd.sr.CodedConcept(*name),
                    value=value,
                    unit=hd.sr.CodedConcept(*unit),
                    derivation=hd.sr.CodedConcept(*derivation) if derivation else None,
                )
            )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=str(item.get("TrackingUID", "") or hd.UID()), identifier=f"label {label}"
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=int(item.SegmentNumber),
                    source_series=hd.sr.SourceSeriesForSegmentation(str(datasets[0].SeriesInstanceUID)),
                ),
                finding_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
                measurements=measurements,
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="napari-immunotrack", model_name=str(__version__)
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sr = hd.sr.Comprehensive3DSR(
                evidence=[seg] + list(datasets),
                content=report,
                series_instance_uid=hd.UID(),
                series_number=int(series_number),
                sop_instance_uid=hd.UID(),
                instance_number=1,
                manufacturer="napari-immunotrack",
                is_complete=True,
                series_description=series_description or "immunotrack readouts",
            )
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"the SR cannot be built ({' '.join(str(exc).split())[:160]}).") from None
    return sr


def read_table(table):
    """A readout table from a DataFrame or a CSV path (InputError when unreadable).

    Parameters
    ----------
    table : pandas.DataFrame or str or Path
        A table (returned as it is) or a CSV file.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    InputError
        A CSV that cannot be read.

    Examples
    --------
    >>> import pandas as pd, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "readout.csv").write_text("label,mean_bq_ml\\n1,1234.5\\n")
    ...     read_table(Path(tmp) / "readout.csv").to_dict("list")
    {'label': [1], 'mean_bq_ml': [1234.5]}
    """
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        return table
    try:
        return pd.read_csv(table)
    except Exception as exc:
        raise InputError(
            f"{table}: the readout table cannot be read ({' '.join(str(exc).split())[:100]}); give "
            "the CSV a readout command wrote."
        ) from None


def write_sr(
    table,
    seg_path,
    source,
    path,
    *,
    overwrite: bool = False,
    provenance: dict | None = None,
    series_description: str = "",
    series_number: int = 301,
) -> Path:
    """Write a readout table as a TID 1500 measurement report (Comprehensive 3D SR) referencing a SEG.

    Parameters
    ----------
    table : pandas.DataFrame or path
        One row per region with a ``label`` column (the label value, as in the
        SEG's TrackingID "label N") and measurement columns (see :data:`COLUMN_CODES`;
        ``suv_<type>_<stat>``, ``<stat>_bq_ml``). Other columns are left out
        with a warning naming them; empty (NaN) values are left out.
    seg_path : path
        The SEG written by :func:`write_seg` for these labels.
    source : path
        The source DICOM series (the SEG's and the SR's evidence).
    path : path
        The SR file to write (atomically, with a provenance sidecar when given).

    overwrite : bool, default False
        Replace an existing file.
    provenance : dict, optional
        Provenance record written beside the file.
    series_description : str, optional
        Of the new SR series.
    series_number : int, default 301
        Of the new SR series.

    Returns
    -------
    Path
        The SR file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> from napari_immunotrack.io.dicom import write_dicom_series
    >>> tmp = tempfile.TemporaryDirectory()
    >>> pet = Volume(np.zeros((4, 5, 6), np.float32), np.diag([0.5, 0.5, 1.0, 1.0]), "PT", "Bq/mL")
    >>> series = write_dicom_series(pet, Path(tmp.name) / "pet")
    >>> labels = Volume(np.zeros((4, 5, 6), np.uint8), pet.affine, "SEG", "label", {"label_names": {1: "tumour"}})
    >>> labels.data[1:3, 2:4, 2:5] = 1
    >>> import pandas as pd, warnings
    >>> seg = write_seg(labels, series, Path(tmp.name) / "seg.dcm")
    >>> table = pd.DataFrame({"label": [1], "mean_bq_ml": [1234.5], "voxels": [12]})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     sr = write_sr(table, seg, series, Path(tmp.name) / "sr.dcm")
    >>> str(caught[0].message).split(": ")[-1]             # a voxel count is not a measurement
    'voxels.'
    >>> read_sr(sr).to_dict("list")
    {'label': [1], 'segment_number': [1], 'mean_bq_ml': [1234.5]}
    >>> tmp.cleanup()
    """
    from ..outputs import check_output

    check_output(Path(path), overwrite)
    _, datasets = source_series(source)
    sr = build_sr(
        read_table(table), seg_path, datasets, series_description=series_description, series_number=series_number
    )
    return save_dataset(sr, path, overwrite=overwrite, provenance=provenance)


def _read_dataset(path, what: str):
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable {what} ({' '.join(str(exc).split())[:100]}).") from None


def read_sr(path):
    """A TID 1500 measurement report as a table: one row per measurement group, ``label`` (from the tracking
    identifier "label N", else the referenced segment number), ``segment_number`` and one column per coded
    measurement this package writes (:func:`column_code`; others as "<meaning> [<unit>]").

    Values are the report's FloatingPointValue where present (exact), else its decimal string.

    Parameters
    ----------
    path : str or Path
        A Comprehensive 3D SR (TID 1500) file, e.g. from :func:`write_sr` or another tool.

    Returns
    -------
    pandas.DataFrame
        One row per measurement group.

    Raises
    ------
    InputError
        A file that is not a readable measurement report.

    Examples
    --------
    See :func:`write_sr` (an SR written and read back).

    >>> from pydicom.data import get_testdata_file
    >>> try:
    ...     read_sr(get_testdata_file("CT_small.dcm"))
    ... except InputError as error:
    ...     print("refused")
    refused
    """
    import highdicom as hd
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sr = hd.sr.srread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM SR ({' '.join(str(exc).split())[:100]}).") from None
    rows: list[dict] = []
    for group in sr.content.get_volumetric_roi_measurement_groups():
        row: dict = {}
        ident = str(group.tracking_identifier or "")
        m = re.fullmatch(r"label (\d+)", ident)
        segment = group.referenced_segment
        numbers = list(segment.referenced_segment_numbers or []) if segment is not None else []
        number = int(numbers[0]) if numbers else None
        row["label"] = int(m.group(1)) if m else number
        row["segment_number"] = number
        for measurement in group.get_measurements():
            name = (str(measurement.name.value), str(measurement.name.scheme_designator), str(measurement.name.meaning))
            unit = str(measurement.unit.value)
            derivation = measurement.derivation
            derivation = (
                None
                if derivation is None
                else (str(derivation.value), str(derivation.scheme_designator), str(derivation.meaning))
            )
            column = _column_of(name, unit, derivation) or f"{name[2]} [{unit}]"
            num = measurement[0]  # the NUM content item
            item = num.MeasuredValueSequence[0] if "MeasuredValueSequence" in num else None
            if item is not None and "FloatingPointValue" in item:
                value = float(item.FloatingPointValue)
            else:
                value = float(measurement.value)
            row[column] = value
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = [
    "write_seg",
    "write_sr",
    "build_seg",
    "build_sr",
    "save_dataset",
    "read_table",
    "read_sr",
    "column_code",
    "source_series",
    "labels_on_source",
    "COLUMN_CODES",
    "LOCAL_SCHEME",
]
