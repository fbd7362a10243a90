"""The cohort tables and figures gathered from the finished tasks' folders."""

from __future__ import annotations

from pathlib import Path

from .tasks import task_folder

#: Per-organ columns of each readout that go into the cohort table (``<step>_<column>``).
COHORT_COLUMNS = {
    "pet": ("volume_ml", "mean_bq_ml", "suv_bw_mean", "suv_bw_peak", "percent_id", "percent_id_per_g"),
    "spect": ("mean_bq_ml", "suv_bw_mean", "percent_id"),
    "f19": ("fluorine_atoms", "cell_count", "status"),
    "mpi": ("iron_ng", "cell_count"),
}
#: Per-task tables concatenated into ``cohort_<name>.csv``.
TASK_TABLES = ("pet", "spect", "f19", "mpi", "clusters", "confirmed", "relax", "cest")


# =============================================================================== cohort tables and figure
def _read_csv(path):
    import pandas as pd

    # round_trip: the numbers read back are the bits written, so the cohort table equals the task tables
    return pd.read_csv(path, float_precision="round_trip", keep_default_na=True)


def bids_label(prefix: str, name: str) -> str:
    """BIDS-style label (``sub-01``, ``ses-day1``): text in every CSV reader, joins participants.tsv.

    Parameters
    ----------
    prefix : str
        The entity ("sub", "ses").
    name : str
        The label's value; empty for none.

    Returns
    -------
    str
        ``"<prefix>-<name>"``, or "" for an empty name.

    Examples
    --------
    >>> bids_label("sub", "01"), bids_label("ses", "day1"), bids_label("ses", "")
    ('sub-01', 'ses-day1', '')
    """
    return f"{prefix}-{name}" if name else ""


def cohort_tables(out_dir, records: list[dict]) -> dict[str, object]:
    """The cohort tables from the finished tasks' folders: ``cohort`` and ``cohort_<table>``.

    ``cohort_<table>`` is every task's ``<table>.csv`` (:data:`TASK_TABLES`) with ``subject``
    (``sub-01``), ``session`` (``ses-day1``) and ``day`` in front; ``cohort`` has one row per subject,
    session and site (organ) with the readouts of :data:`COHORT_COLUMNS` as ``<step>_<column>``. Tasks
    that failed are left out; numbers are read back bit for bit (round-trip float parsing).

    Parameters
    ----------
    out_dir : str or Path
        The batch's output folder.
    records : list of dict
        The tasks' records (:func:`~napari_immunotrack.batch.tasks.run_task`: ``subject``,
        ``session``, ``day``, ``status``).

    Returns
    -------
    dict
        ``{name: pandas.DataFrame}``, only for tables some task wrote; ``cohort`` when a readout of
        :data:`COHORT_COLUMNS` was found.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for session, pid in (("day1", 2.0), ("day3", 3.5)):
    ...         folder = Path(tmp) / "sub-01" / f"ses-{session}"
    ...         folder.mkdir(parents=True)
    ...         pd.DataFrame({"organ": ["tumour"], "percent_id": [pid]}).to_csv(folder / "pet.csv", index=False)
    ...     records = [{"subject": "01", "session": s, "day": d, "status": "ok"} for s, d in (("day1", 1.0), ("day3", 3.0))]
    ...     tables = cohort_tables(tmp, records)
    >>> sorted(tables)
    ['cohort', 'cohort_pet']
    >>> print(tables["cohort"].to_string(index=False))
    subject  session  day   site  pet_percent_id
     sub-01 ses-day1  1.0 tumour             2.0
     sub-01 ses-day3  3.0 tumour             3.5
    """
    import pandas as pd

    tables: dict[str, list] = {name: [] for name in TASK_TABLES}
    for rec in sorted(records, key=lambda r: (r["subject"], r["day"] if r["day"] is not None else -1, r["session"])):
        if rec["status"] not in ("ok", "partial", "skipped"):
            continue
        folder = task_folder(out_dir, rec)
        for name in TASK_TABLES:
            path = folder / f"{name}.csv"
            if path.exists():
                df = _read_csv(path)
                df.insert(0, "day", rec["day"] if rec["day"] is not None else float("nan"))
                df.insert(0, "session", bids_label("ses", rec["session"]))
                df.insert(0, "subject", bids_label("sub", rec["subject"]))
                tables[name].append(df)
    out = {f"cohort_{k}": pd.concat(v, ignore_index=True) for k, v in tables.items() if v}
    keys = ["subject", "session", "day", "site"]
    merged = None
    for step, columns in COHORT_COLUMNS.items():
        df = out.get(f"cohort_{step}")
        if df is None:
            continue
        # a preclinical SUVpeak names its sphere volume (suv_bw_peak_14ul): take whichever peak column is there
        cols = [c for c in columns if c in df.columns] + [
            c for c in df.columns if c.startswith("suv_bw_peak_") and "suv_bw_peak" in columns
        ]
        part = df[["subject", "session", "day", "organ"] + cols].rename(
            columns={"organ": "site", **{c: f"{step}_{c}" for c in cols}}
        )
        merged = part if merged is None else merged.merge(part, on=keys, how="outer", sort=False)
    if merged is not None:
        merged = merged.sort_values(["subject", "day", "session", "site"], kind="stable").reset_index(drop=True)
        out["cohort"] = merged
    return out


#: Readouts of the cohort table drawn as time courses at the end: (column, axis label).
COHORT_FIGURES = (
    ("pet_percent_id", "PET %ID"),
    ("spect_percent_id", "SPECT %ID"),
    ("f19_cell_count", "19F cells"),
    ("mpi_cell_count", "MPI cells"),
)


def cohort_figures(cohort, out_dir, provenance: dict | None = None) -> list[Path]:
    """Per-site time courses (mean ± SD over subjects) of the cohort table's readouts, one PNG each.

    Drawn with :func:`napari_immunotrack.figures.time_course`; written as ``cohort_<column>.png``
    with a provenance sidecar. Readouts without any value are left out (:data:`COHORT_FIGURES`).

    Parameters
    ----------
    cohort : pandas.DataFrame
        The ``cohort`` table of :func:`cohort_tables` (``subject``, ``day``, ``site`` and readouts).
    out_dir : str or Path
        Where the figures go (replaced if they exist).
    provenance : dict, optional
        Provenance fields recorded in each figure's sidecar (``step`` is set to "batch").

    Returns
    -------
    list of Path
        The files written.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> cohort = pd.DataFrame({"subject": ["sub-01", "sub-01", "sub-02", "sub-02"], "day": [1.0, 3.0, 1.0, 3.0],
    ...                        "site": "tumour", "pet_percent_id": [2.0, 3.5, 2.4, 3.1]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = cohort_figures(cohort, tmp)
    ...     names = sorted(p.name for p in Path(tmp).iterdir())
    >>> [p.name for p in written], names
    (['cohort_pet_percent_id.png'], ['cohort_pet_percent_id.png', 'cohort_pet_percent_id.png.provenance.json'])
    """
    from .. import figures

    written = []
    n = cohort["subject"].nunique()
    for column, label in COHORT_FIGURES:
        if column not in cohort.columns or not cohort[column].notna().any():
            continue
        agg = (
            cohort.groupby(["site", "day"], sort=False)[column]
            .agg(["mean", "std"])
            .reset_index()
            .rename(columns={"mean": column, "std": "sd"})
        )
        result = figures.time_course(
            agg, column, error="sd", unit=f"{label} (mean ± SD, {n} subjects)", title=f"{label} per site"
        )
        written += figures.save_figure(
            result,
            Path(out_dir) / f"cohort_{column}.png",
            dpi=150,
            overwrite=True,
            provenance=dict(provenance or {}, step="batch"),
        )
    return written
