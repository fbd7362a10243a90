"""Write an HTML report of a study: every session analysed (or reused), followed over time, with figures,
tables and the provenance of every number (and a PDF when Chromium or wkhtmltopdf is installed).

Example: immunotrack report sample_data/mouse_study -o mouse_report
"""

HELP = "analyse a study over time and write an HTML report (figures, tables, provenance)"


def _efflux(text: str) -> dict:
    import argparse

    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or rate < 0:
            raise argparse.ArgumentTypeError(f"{part!r}: give READOUT=RATE per day, e.g. 19F=0.02,PET=0.05")
        out[name.strip()] = rate
    return out


def add_arguments(parser):
    """Add the arguments of ``immunotrack report`` to a parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The verb's sub-parser (:func:`napari_immunotrack.cli.build_parser` passes it); changed in place.
        The study, ``--kinetics`` and ``--cell-counts`` must name existing paths (checked when parsing);
        ``--efflux`` is parsed to ``{readout: fraction per day}``.

    Returns
    -------
    None

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="immunotrack report")
    >>> add_arguments(parser)
    >>> args = parser.parse_args([".", "-o", "report", "--efflux", "19F=0.02,PET=0.05"])
    >>> args.output, args.subject, args.injected_cells, args.dpi, args.no_pdf, args.efflux
    ('report', None, None, 150, False, {'19F': 0.02, 'PET': 0.05})
    """
    from ._common import existing_path, positive_float, positive_int

    parser.add_argument("study", type=existing_path, help="study folder (sub-*/ses-*/<type>/ layout)")
    parser.add_argument("-o", "--output", required=True, help="report folder (created)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="update an existing report folder (analyses whose inputs did not change are reused)",
    )
    parser.add_argument("--subject", help="subject label (default: the first)")
    parser.add_argument(
        "--kinetics",
        type=existing_path,
        help='JSON of kinetic priors: {"sites": {site: {"doubling_days", "loss_per_day"}}, '
        '"efflux_per_day": {readout: rate}, "injected_cells": N}',
    )
    parser.add_argument(
        "--cell-counts",
        type=existing_path,
        help="CSV site,day,cells of label-independent live-cell counts (reporter, biopsy)",
    )
    parser.add_argument("--injected-cells", type=positive_float, help="cells injected (PET/SPECT %%ID -> cells)")
    parser.add_argument("--efflux", type=_efflux, help="per-cell label efflux per readout, e.g. 19F=0.02,PET=0.05")
    parser.add_argument("--dpi", type=positive_int, default=150, help="PNG resolution (default 150)")
    parser.add_argument("--no-pdf", action="store_true", help="do not try to convert the HTML to PDF")


def run(args) -> int:
    """Run ``immunotrack report``: analyse every session of a study and write the HTML report.

    Calls :func:`napari_immunotrack.report.build_report` (figures, tables and provenance in the output
    folder; a PDF too when a converter is installed, unless ``--no-pdf``), then prints where it was
    written, which sessions were reused and which sites are flagged as macrophage-held signal.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments (see :func:`add_arguments`).

    Returns
    -------
    int
        0, or 1 when a part of the report failed with an internal error (the rest is written; the part is
        named on standard error). Bad input (``--dpi`` above 1200, a ``--cell-counts`` CSV without the
        columns site, day, cells, a study without images, ...) raises
        :class:`~napari_immunotrack.errors.InputError` (exit status 2 from :func:`napari_immunotrack.cli.main`).

    Examples
    --------
    >>> import os, tempfile
    >>> from napari_immunotrack.cli import main
    >>> with tempfile.TemporaryDirectory() as d:
    ...     # stderr: immunotrack report: error: --dpi 5000 is too large; use at most 1200.
    ...     main(["report", d, "-o", os.path.join(d, "report"), "--dpi", "5000"])
    ...     main(["report", d, "-o", os.path.join(d, "report")])  # stderr: ... holds no images ...
    2
    2
    """
    import sys

    from ..errors import InputError
    from ..progress import text_progress
    from ..report import build_report

    counts = None
    if args.cell_counts:
        import pandas as pd

        try:
            counts = pd.read_csv(args.cell_counts)
        except Exception as exc:  # pandas raises many types for a bad CSV
            raise InputError(f"--cell-counts {args.cell_counts}: not a readable CSV ({type(exc).__name__}).") from None
        counts.columns = [str(c).strip().lower() for c in counts.columns]
        if not {"site", "day", "cells"} <= set(counts.columns):
            raise InputError(f"--cell-counts {args.cell_counts} needs the columns site, day, cells.")
    if args.dpi > 1200:
        raise InputError(f"--dpi {args.dpi} is too large; use at most 1200.")
    result = build_report(
        args.study,
        args.output,
        overwrite=args.overwrite,
        subject=args.subject,
        kinetics_file=args.kinetics,
        cell_counts=counts,
        injected_cells=args.injected_cells,
        efflux_per_day=args.efflux,
        dpi=args.dpi,
        pdf=not args.no_pdf,
        progress=text_progress("report"),
    )
    sites = result.longitudinal.sites if result.longitudinal is not None else None
    print(
        f"report written to {result.html} in {result.elapsed_s:.1f} s "
        f"({len(result.figures)} figures, {len(result.tables)} tables, each with a .provenance.json)"
    )
    reused = [s for s, info in result.sessions.items() if info["reused"]]
    if reused:
        print(f"reused the analyses of session(s) {', '.join(reused)} (inputs unchanged)")
    if sites is not None and len(sites):
        flagged = [r["site"] for _, r in sites.iterrows() if r["macrophage_flag"] is True]
        print("sites flagged as macrophage-held signal: " + (", ".join(flagged) if flagged else "none"))
    print(result.pdf_note)
    for note in result.partial:
        sys.stderr.write(f"immunotrack report: partial: {note}\n")
    internal = [n for n in result.partial if "internal error" in n]
    return 1 if internal else 0
