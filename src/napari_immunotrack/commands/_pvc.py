"""The partial-volume options shared by `quantify`, `fluorine` and `mpi` (docs/methods/pvc.md).

``--pvc {none,gtm,rbv}`` (default none), ``--psf-fwhm MM`` (one value or x,y,z mm; the
image header's PSF wins when it has one, else this, else the modality's default) and
``--positron-range ISOTOPE`` (adds 89Zr, 64Cu, 18F, 68Ga or 124I positron range in
quadrature). The corrected values are extra ``<column>_pvc`` columns beside the
uncorrected ones, plus ``recovery_coefficient`` (measured / corrected mean of each ROI).
"""

from __future__ import annotations

from ..errors import InputError

#: Columns of `quantify` that are ROI means or sums (scaled by the ROI's correction factor).
PET_COLUMNS = ("mean_bq_ml", "total_activity_kbq", "total_activity_mbq", "percent_id", "percent_id_per_g")


def add_arguments(parser, positron_range: bool = True) -> None:
    g = parser.add_argument_group("partial-volume correction (docs/methods/pvc.md)")
    g.add_argument(
        "--pvc",
        default="none",
        metavar="{none,gtm,rbv}",
        help="none (default), gtm (regional means) or rbv (voxel-wise image)",
    )
    g.add_argument(
        "--psf-fwhm",
        metavar="MM",
        help="PSF FWHM in mm: one value or x,y,z (used when the header has none; default per modality)",
    )
    if positron_range:
        g.add_argument(
            "--positron-range",
            metavar="ISOTOPE",
            help="add this isotope's positron range to the PSF (89Zr, 64Cu, 18F, 68Ga, 124I)",
        )


def requested(args) -> bool:
    """Check the options (one line on error) and say whether a correction is asked for."""
    from ..analysis.pvc import PVC_METHODS, parse_fwhm

    method = str(getattr(args, "pvc", "none") or "none").lower()
    if method not in PVC_METHODS:
        raise InputError(f"--pvc must be one of {', '.join(PVC_METHODS)} (got {args.pvc!r}).")
    parse_fwhm(getattr(args, "psf_fwhm", None))
    return method != "none"


def correct(args, image, rois, df, columns, progress=None, **carry):
    """Add the ``_pvc`` columns of ``columns`` to ``df`` for ``image`` (a linear image of what the
    columns measure); returns (df, provenance dict).

    ``rois`` is the whole label image (every label becomes a GTM region, even when the table
    reports only some: an unsegmented organ would otherwise join the background region) or a
    RoiMap already on the image grid; ``carry`` (transform, supersample) carries the label image.
    """
    from ..analysis.pvc import add_readout_pvc

    chosen = [c for c in df.columns if c in columns or (c.startswith("suv_") and c.endswith("_mean"))]
    return add_readout_pvc(
        df,
        image,
        rois,
        args.pvc,
        getattr(args, "psf_fwhm", None),
        isotope=getattr(args, "positron_range", None),
        columns=chosen,
        progress=progress,
        **carry,
    )


def correct_mpi(args, mpi, rois, df, progress=None, **carry):
    """MPI: iron and cells from the corrected signal (see :func:`~napari_immunotrack.analysis.pvc.add_mpi_pvc`)."""
    from ..analysis.pvc import add_mpi_pvc

    return add_mpi_pvc(df, mpi, rois, args.pvc, getattr(args, "psf_fwhm", None), progress=progress, **carry)
