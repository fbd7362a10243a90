"""Export labels as a DICOM SEG referencing their source series and, with --table/--sr, the readouts as a
DICOM SR (TID 1500 measurement report) referencing the segments, for PACS, 3D Slicer and OHIF.

The labels may be on another grid than the source (MRI clusters exported
against the PET series): they are carried into the source series' geometry
through world space (nearest neighbour). Segment names come from the labels (a DICOM SEG's
segment labels, or the BIDS ``.tsv`` beside a NIfTI label map), else "label N". The source must be the DICOM series
the labels belong to; no UIDs are invented for a NIfTI source. Both files are
built before either is written; each gets a .provenance.json beside it
(docs/methods/dicom-objects.md).
"""

from __future__ import annotations

HELP = "write labels as DICOM SEG (and readouts as a DICOM SR measurement report)"


def add_arguments(parser):
    """Add the arguments of ``immunotrack export`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        LABELS, ``--source`` and ``--table`` must name existing paths (checked when parsing).

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack export")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([".", "--source", ".", "--seg", "clusters.dcm"])
    >>> args.seg, args.seg_type, args.table, args.sr, args.overwrite
    ('clusters.dcm', 'binary', None, None, False)
    """
    from ._common import existing_path

    parser.add_argument("labels", type=existing_path, help="label image (NIfTI, DICOM SEG, ...; 0 = background)")
    parser.add_argument(
        "--source",
        required=True,
        type=existing_path,
        help="the DICOM series folder the labels belong to (the SEG references it)",
    )
    parser.add_argument("--seg", required=True, help="the DICOM SEG file to write")
    parser.add_argument(
        "--seg-type",
        choices=("binary", "labelmap"),
        default="binary",
        help="binary (default: Segmentation Storage, read by Slicer, OHIF and PACS) or labelmap "
        "(Label Map Segmentation Storage, DICOM 2024, for receivers that read it)",
    )
    parser.add_argument("--table", type=existing_path, help="readout table (CSV with a 'label' column)")
    parser.add_argument("--sr", help="the DICOM SR file to write (with --table)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def run(args) -> int:
    """Run ``immunotrack export``: write label images as DICOM SEG, and readouts as a DICOM SR.

    The SEG (and SR) reference the Study, Series, SOP Instance and Frame of Reference UIDs of the source
    DICOM series; none are invented, so ``--source`` must be that series. Each file gets a provenance
    sidecar. See :mod:`napari_immunotrack.io.dicom_export`.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0. Bad input (``--table`` without ``--sr`` or the reverse, a source that is not a DICOM series, an
        existing output without ``--overwrite``, ...) raises :class:`~napari_immunotrack.errors.InputError`
        (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    >>> import os, tempfile
    >>> import nibabel as nib
    >>> import numpy as np
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), np.eye(4)), os.path.join(d, "labels.nii.gz"))
    ...     main(["export", os.path.join(d, "labels.nii.gz"), "--source", os.path.join(d, "labels.nii.gz"),
    ...           "--seg", os.path.join(d, "labels.dcm")])  # stderr: ... is not a DICOM series (nifti); ...
    ...     print(sorted(os.listdir(d)))  # nothing half-written
    2
    ['labels.nii.gz']
    """
    import warnings

    from .. import provenance
    from ..errors import ImmunotrackWarning, InputError
    from ..io.dicom_export import build_seg, build_sr, read_table, save_dataset
    from ..outputs import check_output, sidecar_path
    from ._common import load

    if (args.table is None) != (args.sr is None):
        raise InputError("--table and --sr go together: give both (the readouts and the SR file to write) or neither.")
    outputs = [args.seg] + ([args.sr] if args.sr else [])
    if len(set(map(str, outputs))) != len(outputs):
        raise InputError("--seg and --sr name the same file; give two file names.")
    for out in outputs:  # refused before any work
        check_output(out, args.overwrite)
        check_output(sidecar_path(out), overwrite=True)
    labels = load(args.labels, f"LABELS {args.labels}")
    if not labels.metadata.get("label_names"):
        from pathlib import Path

        from .._sample_data import label_names_beside

        names = label_names_beside(Path(args.labels))  # a BIDS dseg .tsv beside the NIfTI names the segments
        if names:
            labels.metadata["label_names"] = names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImmunotrackWarning)
        seg, datasets = build_seg(labels, args.source, segmentation_type=args.seg_type)
        sr = build_sr(read_table(args.table), seg, datasets) if args.table else None
    notes = [str(w.message) for w in caught if issubclass(w.category, ImmunotrackWarning)]
    for note in notes:
        warnings.warn(note, ImmunotrackWarning, stacklevel=2)
    params = {"seg_type": args.seg_type, "segments": int(len(seg.SegmentSequence))}
    inputs = {"labels": args.labels, "source": args.source, "table": args.table}
    record = provenance.record(
        "export",
        inputs=inputs,
        parameters=params,
        warnings=notes,
        seg_sop_instance_uid=str(seg.SOPInstanceUID),
        source_series_instance_uid=str(datasets[0].SeriesInstanceUID),
    )
    save_dataset(seg, args.seg, overwrite=args.overwrite, provenance=record)
    message = f"DICOM SEG ({args.seg_type}, {len(seg.SegmentSequence)} segment(s)) -> {args.seg}"
    if sr is not None:
        try:
            save_dataset(
                sr,
                args.sr,
                overwrite=args.overwrite,
                provenance=dict(record, sr_sop_instance_uid=str(sr.SOPInstanceUID)),
            )
        except BaseException:
            # nothing half-written: the SEG of this run goes too
            from pathlib import Path

            for written in (Path(args.seg), sidecar_path(args.seg)):
                written.unlink(missing_ok=True)
            raise
        message += f"; DICOM SR (TID 1500, {len(read_table(args.table))} measurement group(s)) -> {args.sr}"
    print(message)
    return 0
