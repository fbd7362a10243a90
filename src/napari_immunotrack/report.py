"""A study report: every session analysed, followed over time, drawn and tabulated, with provenance.

:func:`build_report` does what ``immunotrack report STUDY -o REPORT_DIR`` does:

1. analyse each post-injection session with
   :func:`napari_immunotrack.pipeline.analyse_session` (registration to the
   MRI, iron clusters, T1-T2 confirmation, PET/SPECT/19F/MPI per organ), or
   reuse the outputs of an earlier report when the session's input files and
   the parameters hash the same (``sessions/ses-*/session.provenance.json``);
2. register every session's anatomy to the first one and follow the iron
   clusters over time; fit the dilution-and-clearance model per organ and
   flag macrophage-held signal (:mod:`napari_immunotrack.analysis.longitudinal`);
3. draw the figures (:mod:`napari_immunotrack.figures`) and write the tables;
4. write ``index.html`` (figures, tables with units in the headers, the
   parameters and the provenance of every number) and ``report.pdf`` when a
   converter (Chromium or wkhtmltopdf) is installed.

Every table (CSV) and figure (PNG + SVG) has a ``.provenance.json`` sidecar.
A step that fails is reported in the HTML as partial; the rest goes on.

Kinetic priors
--------------
The doubling time is not identifiable from label totals and the
macrophage-held share of the signal needs a model of the live cells (see
:mod:`~napari_immunotrack.analysis.longitudinal`). Give them as a JSON file
(``{"sites": {"tumour": {"doubling_days": 2.0, "loss_per_day": 0.1}, ...},
"efflux_per_day": {"19F": 0.02, ...}, "injected_cells": 5e6}``). Without
such a file the report uses literature defaults
(``docs/methods/longitudinal.md#priors``) and says so; a simulated study's
ground truth is only compared with, never used as a prior, so the model's
accuracy in the truth table is a validation.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImmunotrackWarning, InputError, one_line
from .progress import report as _report
from .progress import scaled

#: Organs drawn as ROI outlines in the fused figure.
_OUTLINE_ORGANS = ("tumour", "ln_inguinal_right", "ln_inguinal_left", "ln_iliac", "liver", "spleen")
_ANALYSIS_VERSION = 1  # bump when the cached session outputs change meaning


@dataclass
class ReportResult:
    """What :func:`build_report` wrote and found."""

    out_dir: Path
    html: Path
    pdf: Path | None = None
    pdf_note: str = ""
    sessions: dict[str, dict] = field(default_factory=dict)  # per session: reused, errors, timings
    longitudinal: object = None
    tables: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    partial: list = field(default_factory=list)
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- inputs
def _session_files(files, session, baseline):
    return [f for f in files if f.session == session or (f.session == baseline and f.datatype in ("anat", "rois"))]


def _inputs_hash(files, parameters) -> str:
    import hashlib

    from .provenance import sha256_path

    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: str(f.path)):
        h.update(str(f.path.name).encode())
        h.update(sha256_path(f.path).encode())
        # side files (JSON sidecars, fiducials, label names) change results too
        parent = f.path.parent if f.path.is_file() else f.path
        for side in sorted(parent.glob("*")) if f.path.is_file() else []:
            if (
                side.is_file()
                and side.suffix in (".json", ".csv", ".tsv")
                and not side.name.endswith(".provenance.json")
            ):
                h.update(side.name.encode())
                h.update(side.read_bytes())
    h.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    return h.hexdigest()


def load_priors(path=None, study_root=None) -> dict:
    """Kinetic priors from a JSON file, else the literature defaults (never a study's ground truth).

    The file is ``{"sites": {site: {"doubling_days": d, "loss_per_day": l}}, "efflux_per_day":
    {readout: 1/day}, "injected_cells": n}`` (the module docstring). Without a file the literature
    defaults of :mod:`napari_immunotrack.analysis.longitudinal` are used (docs/methods/longitudinal.md#priors),
    resolved by site name later; the injected cell number is then read from a simulated study's design
    record (``ground_truth.json``, the experiment's input, not an outcome) when there is one.

    Parameters
    ----------
    path : str or Path, optional
        The kinetics JSON file.
    study_root : str or Path, optional
        The study folder, for the injected cell number of a simulated study (only without ``path``).

    Returns
    -------
    dict
        ``sites`` ({site: SiteKinetics}, empty without a file), ``efflux_per_day`` ({readout: 1/day}),
        ``injected_cells`` (float or None), ``source`` (text), ``literature`` (bool) and, without a
        file, ``literature_sites`` (:data:`~napari_immunotrack.analysis.longitudinal.LITERATURE_SITE_PRIORS`).

    Raises
    ------
    InputError
        A missing or invalid file, or a negative or non-numeric rate.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp) / "kinetics.json"
    ...     _ = path.write_text('{"sites": {"tumour": {"doubling_days": 1.5, "loss_per_day": 0.2}}, "injected_cells": 1e6}')
    ...     priors = load_priors(path)
    >>> priors["sites"]["tumour"].doubling_days, priors["injected_cells"], priors["source"]
    (1.5, 1000000.0, 'kinetics file kinetics.json')
    >>> defaults = load_priors()
    >>> defaults["literature"], defaults["efflux_per_day"]["PET"], defaults["injected_cells"]
    (True, 0.05, None)
    """
    from .analysis.longitudinal import SiteKinetics

    out = {"sites": {}, "efflux_per_day": {}, "injected_cells": None, "source": "none", "literature": False}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"kinetics file {path} does not exist.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"kinetics file {path} is not valid JSON ({exc.msg} at line {exc.lineno}).") from None
        if not isinstance(data, dict):
            raise InputError(f"kinetics file {path} must hold a JSON object with 'sites'.")
        for site, k in (data.get("sites") or {}).items():
            if not isinstance(k, dict):
                raise InputError(f"kinetics for site {site!r} must be an object with doubling_days/loss_per_day.")
            for key in ("doubling_days", "loss_per_day"):
                v = k.get(key)
                if v is not None and (not isinstance(v, (int, float)) or v < 0):
                    raise InputError(f"kinetics {site}.{key}={v!r} must be a number >= 0 or null.")
            out["sites"][site] = SiteKinetics(k.get("doubling_days") or None, k.get("loss_per_day"), str(path.name))
        out["efflux_per_day"] = {str(k): float(v) for k, v in (data.get("efflux_per_day") or {}).items()}
        out["injected_cells"] = data.get("injected_cells")
        out["source"] = f"kinetics file {path.name}"
        return out
    # No file: literature priors, never the study's ground truth (the truth only compares, so the model's
    # accuracy below is a validation; docs/methods/longitudinal.md#priors).
    from .analysis.longitudinal import LITERATURE_EFFLUX_PER_DAY, LITERATURE_SITE_PRIORS, LITERATURE_SOURCE

    out["literature"] = True  # sites resolved by name (analysis.longitudinal.literature_priors)
    out["efflux_per_day"] = dict(LITERATURE_EFFLUX_PER_DAY)
    out["source"] = LITERATURE_SOURCE + "; give --kinetics for your own"
    out["literature_sites"] = dict(LITERATURE_SITE_PRIORS)
    # the injected cell number is an input of the experiment (what was injected), not an outcome: a simulated
    # study records it in its design, a real one passes --injected-cells
    truth_path = Path(study_root) / "ground_truth.json" if study_root is not None else None
    if truth_path is not None and truth_path.exists():
        design = (json.loads(truth_path.read_text()).get("design") or {}).get("car_t") or {}
        if design.get("cells"):
            out["injected_cells"] = float(design["cells"])
            out["source"] += "; injected cells from the experiment's record (simulation design)"
    return out


# --------------------------------------------------------------------------- one session
def _write_session(result, ses_dir: Path, prov: dict):
    from .io import save_labels
    from .io.transforms import describe_image, write_transform
    from .outputs import write_table

    ses_dir.mkdir(parents=True, exist_ok=True)
    written = {"tables": [], "volumes": [], "transforms": []}
    for name in ("clusters", "confirmed"):
        if result.volumes.get(name) is not None:
            save_labels(
                result.volumes[name], ses_dir / f"{name}.nii.gz", overwrite=True, provenance={**prov, "output": name}
            )
            written["volumes"].append(name)
    for name, table in result.tables.items():
        if hasattr(table, "to_csv"):
            write_table(table, ses_dir / f"{name}.csv", provenance={**prov, "output": name}, overwrite=True)
            written["tables"].append(name)
    for datatype, matrix in result.transforms.items():
        reg = result.registrations.get(datatype)
        write_transform(
            ses_dir / f"from-{datatype}_to-anat.tfm",
            matrix,
            overwrite=True,
            fixed=(getattr(result, "transform_images", {}).get(datatype) or [None])[0]
            or describe_image(role="MRI world", datatype="anat"),
            moving=(getattr(result, "transform_images", {}).get(datatype) or [None, None])[1]
            or describe_image(role=f"{datatype} scanner world", datatype=datatype),
            provenance={**prov, "output": datatype, "registration": reg.to_dict() if hasattr(reg, "to_dict") else None},
        )
        written["transforms"].append(datatype)
    return written


def _load_session(ses_dir: Path, record: dict):
    import pandas as pd

    from .io import load_volume
    from .io.transforms import read_transform

    tables = {name: pd.read_csv(ses_dir / f"{name}.csv") for name in record["written"]["tables"]}
    volumes = {
        name: load_volume(ses_dir / f"{name}.nii.gz").replace(modality="SEG", unit="label")
        for name in record["written"]["volumes"]
    }
    transforms = {d: read_transform(ses_dir / f"from-{d}_to-anat.tfm") for d in record["written"]["transforms"]}
    return tables, volumes, transforms


def analyse_or_reuse(
    root, session: str, baseline: str | None, ses_dir: Path, files, parameters: dict, precomputed=None, progress=None
) -> dict:
    """Run :func:`~napari_immunotrack.pipeline.analyse_session` or reuse its outputs in ``ses_dir``.

    Reused when ``ses_dir/session.provenance.json`` records the same input hash (files of the session
    and its baseline's anatomy and ROIs, their JSON/CSV/TSV side files, and the parameters); a damaged
    cache is recomputed. A new analysis writes its tables (CSV), label images (NIfTI) and transforms
    (.tfm) into ``ses_dir``, each with a provenance sidecar.

    Parameters
    ----------
    root : str or Path
        The study folder.
    session : str
        Session name as :func:`napari_immunotrack.study.discover` gives it (``"day3"``).
    baseline : str or None
        The baseline (pre-injection) session.
    ses_dir : Path
        The report's folder of this session.
    files : list of StudyFile
        The study's files (:func:`napari_immunotrack.study.discover`).
    parameters : dict
        Keyword arguments of :func:`~napari_immunotrack.pipeline.analyse_session`.
    precomputed : SessionResult, optional
        A session already analysed (written, not recomputed).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    dict
        ``tables`` ({name: DataFrame}), ``volumes`` ({"clusters"/"confirmed": label Volume}),
        ``transforms`` ({datatype: 4x4}), ``errors`` ({step: message}), ``timings_s``, ``reused`` (bool)
        and ``inputs_sha256``.

    Examples
    --------
    A one-session study and an analysis result made elsewhere: the first call writes it, the second
    finds the same inputs and reads it back.

    >>> import tempfile
    >>> from types import SimpleNamespace
    >>> import pandas as pd
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import discover
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     anat = Path(tmp) / "study" / "sub-01" / "ses-day1" / "anat"
    ...     anat.mkdir(parents=True)
    ...     _ = save_volume(Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), "MR"), anat / "sub-01_ses-day1_T2w.nii.gz")
    ...     files = discover(Path(tmp) / "study")
    ...     done = SimpleNamespace(tables={"pet": pd.DataFrame({"organ": ["tumour"], "percent_id": [2.5]})},
    ...                            volumes={}, transforms={}, registrations={}, errors={}, parameters={}, timings_s={})
    ...     ses_dir = Path(tmp) / "report" / "ses-day1"
    ...     first = analyse_or_reuse(Path(tmp) / "study", "day1", None, ses_dir, files, {}, precomputed=done)
    ...     again = analyse_or_reuse(Path(tmp) / "study", "day1", None, ses_dir, files, {})
    ...     written = sorted(p.name for p in ses_dir.iterdir())
    >>> first["reused"], again["reused"], again["tables"]["pet"].to_dict("records")
    (False, True, [{'organ': 'tumour', 'percent_id': 2.5}])
    >>> written
    ['pet.csv', 'pet.csv.provenance.json', 'session.provenance.json']
    """
    from .outputs import write_json
    from .pipeline import analyse_session
    from .provenance import record

    digest = _inputs_hash(
        _session_files(files, session, baseline),
        {**parameters, "session": session, "baseline": baseline, "version": _ANALYSIS_VERSION},
    )
    rec_path = ses_dir / "session.provenance.json"
    if precomputed is None and rec_path.exists():
        try:
            rec = json.loads(rec_path.read_text())
            if rec.get("inputs_sha256") == digest:
                tables, volumes, transforms = _load_session(ses_dir, rec)
                _report(progress, 1.0, f"{session}: reused")
                return {
                    "tables": tables,
                    "volumes": volumes,
                    "transforms": transforms,
                    "errors": rec.get("errors", {}),
                    "timings_s": rec.get("timings_s", {}),
                    "reused": True,
                    "inputs_sha256": digest,
                }
        except (OSError, ValueError, KeyError, InputError):
            pass  # a damaged cache is recomputed
    result = (
        precomputed
        if precomputed is not None
        else analyse_session(root, session, baseline_session=baseline, progress=progress, **parameters)
    )
    errors = {k: v for k, v in result.errors.items() if not k.endswith("_traceback")}
    prov = record(
        "report:analyse_session",
        inputs={"study": str(root)},
        parameters={"session": session, "baseline_session": baseline, **result.parameters},
        warnings=[f"step {k} did not complete: {v}" for k, v in errors.items()]
        + [f"{step}: {m}" for step, shown in getattr(result, "warnings", {}).items() for m in shown],
        inputs_sha256=digest,
        errors=errors,
        timings_s=result.timings_s,
    )
    written = _write_session(result, ses_dir, prov)
    write_json(rec_path, {**prov, "written": written, "analysis_version": _ANALYSIS_VERSION}, overwrite=True)
    tables = {k: v for k, v in result.tables.items() if hasattr(v, "to_csv")}
    volumes = {k: v for k, v in result.volumes.items() if k in ("clusters", "confirmed") and v is not None}
    return {
        "tables": tables,
        "volumes": volumes,
        "transforms": dict(result.transforms),
        "errors": errors,
        "timings_s": result.timings_s,
        "reused": False,
        "inputs_sha256": digest,
    }


# --------------------------------------------------------------------------- helpers for figures
def f19_in_mM(f19, tube_mask, reference_mM: float):
    """A 19F image in mM of 19F compound, calibrated by the mean of the reference tube.

    ``C = S / mean(S_tube) x reference_mM`` (docs/methods/fluorine.md).

    Parameters
    ----------
    f19 : Volume
        The 19F image.
    tube_mask : Volume
        Mask of the reference tube (any grid; carried to the 19F grid by nearest neighbour).
    reference_mM : float
        Concentration of 19F compound in the tube (mM).

    Returns
    -------
    Volume
        float32 on the 19F grid, unit "mM", name "19F".

    Raises
    ------
    InputError
        An empty tube mask, or a tube without signal.

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> f19 = Volume(np.full((2, 2, 2), 50.0, np.float32), np.eye(4))
    >>> f19.data[0] = 200.0                                   # the tube
    >>> tube = Volume((np.arange(8).reshape(2, 2, 2) < 4).astype(np.uint8), np.eye(4))
    >>> mm = f19_in_mM(f19, tube, 10.0)
    >>> mm.unit, mm.data[:, 0, 0].tolist()
    ('mM', [10.0, 2.5])
    """
    data = f19.numpy().astype(np.float32)
    mask = tube_mask.resample_to(f19, order=0).numpy() > 0 if not tube_mask.same_grid(f19) else tube_mask.numpy() > 0
    if not mask.any():
        raise InputError("the 19F reference-tube mask is empty; cannot calibrate the 19F image to mM.")
    ref = float(data[mask].mean())
    if not ref > 0:
        raise InputError("the 19F reference tube has no signal; cannot calibrate the 19F image to mM.")
    return f19.replace(data=data / ref * float(reference_mM), unit="mM", name="19F")


def _organ_table(tables: dict):
    """One row per organ with the readouts of a session (units in the column names)."""
    import pandas as pd

    parts = []
    spec = {
        "pet": [("percent_id", "pet_percent_id"), ("suv_bw_mean", "pet_suv_bw_mean"), ("suv_bw_sd", "pet_suv_bw_sd")],
        "spect": [("percent_id", "spect_percent_id"), ("suv_bw_mean", "spect_suv_bw_mean")],
        "f19": [("fluorine_atoms", "f19_atoms"), ("cell_count", "f19_cells"), ("status", "f19_status")],
        "mpi": [("iron_ng", "mpi_iron_ng"), ("cell_count", "mpi_cells"), ("status", "mpi_status")],
    }
    for key, cols in spec.items():
        df = tables.get(key)
        if df is None or "organ" not in df:
            continue
        keep = [c for c, _ in cols if c in df.columns]
        parts.append(df[["organ"] + keep].rename(columns=dict(cols)).set_index("organ"))
    if not parts:
        return pd.DataFrame()
    return pd.concat(parts, axis=1).reset_index()


def _centroid_of(dseg, index: int):
    idx = np.argwhere(dseg.numpy() == index)
    return dseg.index_to_world(idx.mean(0))[0] if len(idx) else None


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font-family:DejaVu Sans,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.78em;margin:.6em 0;display:block;overflow-x:auto}
td.t{max-width:26em;text-align:left}td.l{min-width:22em;max-width:34em;text-align:left}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0}td.t{text-align:left}.flag{background:#fde0c5;font-weight:bold}.partial{color:#D55E00}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:.8em;max-width:520px}
img{max-width:520px;border:1px solid #ddd}.note{font-size:.85em;color:#555}code{font-size:.9em}
"""


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "&ndash;"
    if isinstance(v, (float, np.floating)):
        if v == np.inf:
            return "&infin;"
        a = abs(v)
        return f"{v:.3g}" if (a >= 1e4 or (0 < a < 1e-2)) else f"{v:.3g}" if a < 10 else f"{v:,.1f}"
    return html.escape(str(v))


def _cell_class(v) -> str:
    if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)):
        return ""
    return " class=l" if isinstance(v, str) and len(v) > 40 else " class=t"


def _html_table(df, link: str | None = None, flag_col: str | None = None, max_rows: int = 200) -> str:
    if df is None or not len(df):
        return "<p class='note'>(empty)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.head(max_rows).iterrows():
        cls = " class='flag'" if flag_col and r.get(flag_col) is True else ""
        cells = "".join(f"<td{_cell_class(v)}>{_fmt(v)}</td>" for v in r.values)
        rows.append(f"<tr{cls}>{cells}</tr>")
    more = f"<p class='note'>first {max_rows} of {len(df)} rows; all in the CSV.</p>" if len(df) > max_rows else ""
    src = (
        (
            f"<p class='note'>CSV: <a href='{link}'>{link}</a> &middot; provenance: "
            f"<a href='{link}.provenance.json'>{link}.provenance.json</a></p>"
        )
        if link
        else ""
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>{more}{src}"


def _figure_html(rel_png: str, caption: str) -> str:
    svg = rel_png[:-4] + ".svg"
    return (
        f"<figure><a href='{svg}'><img src='{rel_png}' alt='{html.escape(caption)}'></a><figcaption>"
        f"{html.escape(caption)} <span class='note'>(<a href='{svg}'>SVG</a>, "
        f"<a href='{rel_png}.provenance.json'>provenance</a>)</span></figcaption></figure>"
    )


# --------------------------------------------------------------------------- PDF
def find_pdf_converter() -> list | None:
    """The command line of an installed HTML-to-PDF converter (Chromium or wkhtmltopdf), or None.

    Parameters
    ----------
    None

    Returns
    -------
    list of str or None
        The executable and its options (the input and output are appended by :func:`html_to_pdf`);
        Chromium (headless, no header/footer) is preferred to wkhtmltopdf. None when neither is on
        the PATH.

    Examples
    --------
    >>> cmd = find_pdf_converter()
    >>> cmd is None or cmd[1] in ("--headless", "--quiet")
    True
    """
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        exe = shutil.which(name)
        if exe:
            return [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"]
    exe = shutil.which("wkhtmltopdf")
    return [exe, "--quiet", "--enable-local-file-access"] if exe else None


def html_to_pdf(html_path: Path, pdf_path: Path, timeout_s: float = 60.0):
    """Convert an HTML file to PDF with the converter found; returns (path or None, note).

    The PDF is written atomically (nothing half-written on failure); a failure or a missing
    converter is not an error: the note says why and the HTML stays the report.

    Parameters
    ----------
    html_path : Path
        The HTML file.
    pdf_path : Path
        The PDF to write (replaced if it exists).
    timeout_s : float, default 60.0
        Seconds the converter may run.

    Returns
    -------
    tuple of (Path or None, str)
        The PDF written (None when there is none) and a one-line note for the report.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     page = Path(tmp) / "report.html"
    ...     _ = page.write_text("<html><body><p>1 cluster</p></body></html>")
    ...     pdf, note = html_to_pdf(page, Path(tmp) / "report.pdf")
    ...     written = pdf is not None and pdf.stat().st_size > 0
    >>> written == (find_pdf_converter() is not None) or note.startswith("PDF conversion")
    True
    """
    from .outputs import atomic_output

    cmd = find_pdf_converter()
    if cmd is None:
        return None, "no PDF converter installed (chromium or wkhtmltopdf); the HTML report is complete."
    try:
        with atomic_output(pdf_path, overwrite=True) as tmp:
            if "wkhtmltopdf" in cmd[0]:
                args = cmd + [str(html_path), str(tmp)]
            else:
                args = cmd + [f"--print-to-pdf={tmp}", html_path.resolve().as_uri()]
            subprocess.run(args, check=True, timeout=timeout_s, capture_output=True)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise RuntimeError("the converter wrote nothing")
        return pdf_path, f"PDF written with {Path(cmd[0]).name}."
    except (subprocess.SubprocessError, OSError, RuntimeError) as exc:
        return (
            None,
            f"PDF conversion with {Path(cmd[0]).name} failed ({one_line(exc)[:120]}); the HTML report is complete.",
        )


# --------------------------------------------------------------------------- the report
def build_report(
    study,
    out_dir,
    *,
    overwrite: bool = False,
    subject: str | None = None,
    kinetics_file=None,
    cell_counts=None,
    injected_cells: float | None = None,
    efflux_per_day: dict | None = None,
    dpi: int = 150,
    pdf: bool = True,
    precomputed: dict | None = None,
    progress=None,
) -> ReportResult:
    """Analyse (or reuse), follow over time, draw and write the HTML report of a study.

    Parameters
    ----------
    study : str or Path
        The study folder (``sub-*/ses-*/<type>/``, see :mod:`napari_immunotrack.study`).
    out_dir : str or Path
        The report folder; an existing non-empty one needs ``overwrite=True`` (analyses whose inputs
        did not change are then reused, everything else is rewritten).
    overwrite : bool, default False
        Update an existing report folder.
    subject : str, optional
        Which subject (default: the first).
    kinetics_file : str or Path, optional
        JSON of kinetic priors (see the module docstring and :func:`load_priors`).
    cell_counts : pandas.DataFrame, optional
        ``site, day, cells`` of label-independent live-cell counts.
    injected_cells : float, optional
        Cells injected (turns PET/SPECT %ID into apparent cells); overrides the priors'.
    efflux_per_day : dict, optional
        ``{readout: 1/day}``; overrides the priors'.
    dpi : int, default 150
        PNG resolution of the figures.
    pdf : bool, default True
        Try to write ``report.pdf`` (needs Chromium or wkhtmltopdf).
    precomputed : dict, optional
        ``{session: SessionResult}`` already analysed (``immunotrack demo`` passes its own).
    progress : callable, optional
        ``progress(fraction, message)`` callback.

    Returns
    -------
    ReportResult
        The folder, ``index.html``, the PDF (or None and why), per-session reuse/errors/timings, the
        longitudinal result, the tables and figures written, the steps that were partial and the
        elapsed time (s).

    Raises
    ------
    InputError
        A study that cannot be read, an unknown subject, sessions without a day, or an output folder
        that is a file, is not empty (without ``overwrite``) or has no parent.

    Examples
    --------
    A whole study takes seconds to minutes (``immunotrack demo`` builds and reports one); what is
    checked before any work is quick to show:

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "report").mkdir()
    ...     _ = (Path(tmp) / "report" / "notes.txt").write_text("mine")
    ...     try:
    ...         build_report(Path(tmp) / "study", Path(tmp) / "report")
    ...     except InputError as exc:
    ...         print(str(exc).replace(tmp, "TMP"))
    TMP/report exists and is not empty; pass --overwrite to update it (unchanged analyses are reused) or choose another folder.
    """
    import pandas as pd

    from . import __version__
    from .analysis import longitudinal as lg
    from .io import load_volume
    from .outputs import write_json, write_table, write_text
    from .provenance import record, versions
    from .study import discover
    from .study import sessions as session_names

    t_start = time.perf_counter()
    root = Path(study)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the report.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out} exists and is not empty; pass --overwrite to update it (unchanged analyses are "
            "reused) or choose another folder."
        )
    if not out.parent.exists():
        raise InputError(f"the folder {out.parent} does not exist; create it first or choose another output path.")
    files = discover(root)
    subject = subject or files[0].subject
    if subject not in {f.subject for f in files}:
        raise InputError(
            f"subject {subject!r} is not in {root}; subjects are {', '.join(sorted({f.subject for f in files}))}."
        )
    files = [f for f in files if f.subject == subject]
    names = session_names(files)
    days = {s: next((f.day for f in files if f.session == s), None) for s in names}
    if any(d is None for d in days.values()):
        bad = [s for s, d in days.items() if d is None]
        raise InputError(
            f"session(s) {bad} have no day in their name (ses-day<N>); the time course needs the day of each session."
        )
    baseline = next((s for s in names if days[s] == 0), None)
    post = [s for s in names if s != baseline]
    if not post:
        raise InputError(f"{root} has no post-injection session (only the baseline); nothing to report.")
    priors = load_priors(kinetics_file, root)
    if injected_cells is not None:
        priors["injected_cells"] = float(injected_cells)
    if efflux_per_day:
        priors["efflux_per_day"].update(efflux_per_day)
    for d in ("sessions", "tables", "figures"):
        (out / d).mkdir(parents=True, exist_ok=True)
    res = ReportResult(out, out / "index.html")
    partial = res.partial
    from .analysis.mpi import MPI_PARAMETERS

    params = {"iron_per_cell_pg": MPI_PARAMETERS["iron_per_cell_pg"].default}  # the MPI analysis' own default

    # 1. sessions -------------------------------------------------------------
    analysed = {}
    for i, s in enumerate(post):
        sub = scaled(progress, 0.02 + 0.6 * i / len(post), 0.02 + 0.6 * (i + 1) / len(post))
        _report(sub, 0.0, f"session {s}")
        try:
            analysed[s] = analyse_or_reuse(
                root,
                s,
                baseline,
                out / "sessions" / f"ses-{s}",
                files,
                params,
                precomputed=(precomputed or {}).get(s),
                progress=sub,
            )
        except InputError as exc:
            partial.append(f"session {s} could not be analysed: {one_line(exc)}")
            continue
        for step, msg in analysed[s]["errors"].items():
            # a readout left out because its registration failed is said once, by the registration step
            if f"register_{step}" in analysed[s]["errors"] and "was not registered" in msg:
                msg = f"left out (its registration to the MRI failed, see register_{step})"
            partial.append(f"session {s}, step {step}: {msg}")
        res.sessions[s] = {
            "reused": analysed[s]["reused"],
            "errors": analysed[s]["errors"],
            "timings_s": analysed[s]["timings_s"],
            "day": days[s],
        }
    if not analysed:
        raise InputError("no session of the study could be analysed: " + "; ".join(partial))

    def anat(s, suffix):
        f = next((f for f in files if f.session == s and f.datatype == "anat" and f.suffix == suffix), None)
        return load_volume(f.path) if f else None

    # 2. registration of the timepoints and cluster tracks ----------------------
    _report(progress, 0.64, "registering the timepoints")
    first = baseline or post[0]
    anatomy = {}
    for s in [first] + [s for s in analysed if s != first]:
        v = anat(s, "T2w") or anat(s, "T2starw") or anat(s, "T1w")
        if v is not None:
            anatomy[days[s]] = v
    transforms, reg_errors = ({}, {})
    if anatomy:
        # every timepoint in the reference session's frame: the study's saved session alignments
        # (immunotrack align) when there, else the same-contrast session alignment now
        transforms, reg_errors = _timepoints_in_reference_frame(anatomy, days, first, files)
    for d, msg in reg_errors.items():
        partial.append(
            f"day {d:g} could not be registered to day {days[first]:g} ({msg}); its clusters are not "
            "followed over time (its organ readouts still are: ROIs are per session)"
        )
    cluster_tables = {
        days[s]: a["tables"].get("clusters") for s, a in analysed.items() if a["tables"].get("clusters") is not None
    }
    tracks = lg.track_clusters(cluster_tables, transforms) if cluster_tables else pd.DataFrame()

    # 3. longitudinal model ---------------------------------------------------
    _report(progress, 0.7, "fitting the dilution and clearance model")
    session_tables = {days[s]: a["tables"] for s, a in analysed.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImmunotrackWarning)
        tc = lg.timecourse_table(session_tables, injected_cells=priors["injected_cells"])
        site_priors = priors["sites"]
        if priors.get("literature"):
            site_priors = lg.literature_priors(sorted(set(tc["site"])))
        long = lg.analyse_timecourse(
            tc, kinetics=site_priors, cell_counts=cell_counts, efflux_per_day=priors["efflux_per_day"]
        )
    long_warnings = [one_line(w.message) for w in caught]
    res.longitudinal = long
    n_days = len(session_tables)
    if n_days < 3:
        partial.append(
            f"only {n_days} post-injection timepoint(s): the dilution-and-clearance model needs 3; "
            "raw values are reported without a fit"
        )

    # 4. tables ---------------------------------------------------------------
    _report(progress, 0.74, "writing tables")
    inputs_prov = {f"ses-{s}": {"sha256_inputs": a["inputs_sha256"]} for s, a in analysed.items()}
    base_prov = {
        "inputs": {},
        "study": str(root.resolve()),
        "subject": subject,
        "session_inputs": inputs_prov,
        "priors_source": priors["source"],
    }

    def table(name, df, step, parameters=None, warn=()):
        prov = record(f"report:{step}", parameters=parameters or {}, warnings=list(warn), **base_prov)
        prov["inputs"] = {"study": {"path": str(root.resolve())}, **inputs_prov}
        path = out / "tables" / f"{name}.csv"
        write_table(df, path, provenance=prov, overwrite=True)
        res.tables[name] = path
        return df

    organ_rows = []
    for s, a in analysed.items():
        ot = _organ_table(a["tables"])
        if len(ot):
            ot.insert(0, "day", days[s])
            ot.insert(0, "session", s)
            organ_rows.append(ot)
    organs = pd.concat(organ_rows, ignore_index=True) if organ_rows else pd.DataFrame()
    table("organ_readouts", organs, "organ_readouts")
    from .analysis.longitudinal import COLUMN_DESCRIPTIONS

    # the model columns carry their assumptions (cells_corrected is not a measurement)
    table(
        "timecourse",
        long.timecourse,
        "longitudinal",
        {
            **long.parameters,
            "column_descriptions": {c: d for c, d in COLUMN_DESCRIPTIONS.items() if c in long.timecourse.columns},
        },
        long_warnings,
    )
    table("longitudinal_fits", long.fits, "longitudinal", long.parameters, long_warnings)
    table("site_flags", long.sites, "longitudinal", long.parameters, long_warnings)
    if len(tracks):
        table(
            "cluster_tracks",
            tracks,
            "track_clusters",
            {
                "max_distance_mm": 1.5,
                "reference_day": days[first],
                "transforms": {f"{d:g}": np.round(m, 6).tolist() for d, m in transforms.items()},
            },
        )
    truth_cmp = _compare_with_truth(root, subject, long, days, analysed)
    if truth_cmp is not None:
        table("comparison_with_truth", truth_cmp, "truth_comparison")

    # 5. figures --------------------------------------------------------------
    _report(progress, 0.78, "drawing figures")
    fig_notes = {}
    try:
        _figures(
            res,
            root,
            files,
            analysed,
            days,
            long,
            tracks,
            transforms,
            anatomy,
            first,
            dpi,
            base_prov,
            inputs_prov,
            fig_notes,
            progress=scaled(progress, 0.78, 0.95),
        )
    except InputError as exc:
        partial.append(f"figures: {one_line(exc)}")

    # 6. HTML -----------------------------------------------------------------
    _report(progress, 0.96, "writing the HTML")
    res.elapsed_s = time.perf_counter() - t_start
    if pdf:
        conv = find_pdf_converter()
        res.pdf_note = (
            f"report.pdf beside this page (converted with {Path(conv[0]).name})"
            if conv
            else "no PDF converter installed (chromium or wkhtmltopdf); this HTML is the report"
        )
    else:
        res.pdf_note = "not requested"
    page = _html(
        res,
        root,
        subject,
        days,
        analysed,
        organs,
        long,
        tracks,
        truth_cmp,
        priors,
        transforms,
        reg_errors,
        fig_notes,
        versions(),
        __version__,
        long_warnings,
    )
    write_text(res.html, page, overwrite=True)
    write_json(
        out / "index.html.provenance.json",
        record(
            "report",
            inputs={"study": root},
            parameters={"subject": subject, "dpi": dpi, **params, "priors_source": priors["source"]},
            warnings=partial + long_warnings,
            session_inputs=inputs_prov,
            tables={k: str(v.relative_to(out)) for k, v in res.tables.items()},
            figures={k: str(v.relative_to(out)) for k, v in res.figures.items()},
        ),
        overwrite=True,
    )
    if pdf:
        res.pdf, res.pdf_note = html_to_pdf(res.html, out / "report.pdf")
    else:
        res.pdf_note = "PDF not requested."
    res.elapsed_s = time.perf_counter() - t_start
    _report(progress, 1.0, "report written")
    return res


def _compare_with_truth(root, subject, long, days, analysed):
    """Flags and model cell numbers against a simulated study's truth (None for a real study)."""
    import pandas as pd

    path = Path(root) / "ground_truth.json"
    if not path.exists():
        return None
    truth = json.loads(path.read_text())
    ses = truth.get("subjects", {}).get(subject, {}).get("sessions", {})
    last = max(days[s] for s in analysed)
    last_ses = next((s for s in analysed if days[s] == last), None)
    tsites = ses.get(f"ses-{last_ses}", {}).get("sites", {})
    rows = []
    tc = long.timecourse
    for _, r in long.sites.iterrows():
        t = tsites.get(r["site"])
        if not t or "false_positive_fraction_iron" not in t:
            continue
        live = float(t["live_cells"])
        # every readout that measured the site on the last day (19F, MPI, PET, SPECT), one row each
        sel = tc[(tc["site"] == r["site"]) & (tc["day"] == last)]
        order = {k: i for i, k in enumerate(("19F", "MPI iron", "PET", "SPECT"))}
        sel = sel.sort_values("readout", key=lambda s: s.map(order))
        for _, row in sel.iterrows():
            model = float(row["cells_model"]) if np.isfinite(float(row.get("cells_model", np.nan))) else np.nan
            corrected = float(row.get("cells_corrected", np.nan))
            apparent = float(row.get("apparent_cells", np.nan))
            if not (np.isfinite(model) or np.isfinite(apparent)):
                continue
            rows.append(
                {
                    "site": r["site"],
                    "day": last,
                    "readout": row["readout"],
                    "macrophage_flag": r["macrophage_flag"],
                    "true_macrophage_fraction_iron": t["false_positive_fraction_iron"],
                    "true_live_cells": live,
                    "apparent_cells": apparent,
                    "apparent_cells_error_percent": (apparent - live) / live * 100 if live > 0 else np.nan,
                    "cells_model": model,
                    "cells_model_error_percent": (model - live) / live * 100 if live > 0 else np.nan,
                    "cells_corrected": corrected,
                    "cells_corrected_error_percent": (corrected - live) / live * 100 if live > 0 else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _figures(
    res,
    root,
    files,
    analysed,
    days,
    long,
    tracks,
    transforms,
    anatomy,
    first,
    dpi,
    base_prov,
    inputs_prov,
    notes,
    progress=None,
):
    """Draw the report's figures (each PNG + SVG with provenance)."""
    from . import figures as F
    from .io import load_volume
    from .study import read_label_names

    out = res.out_dir / "figures"
    ordered = sorted(analysed, key=lambda s: days[s])
    s0 = ordered[0]

    def save(name, fig_result, caption, parameters=None):
        paths = F.save_figure(
            fig_result,
            out / name,
            formats=("png", "svg"),
            dpi=dpi,
            overwrite=True,
            provenance={"step": f"report:figure:{name}", "parameters": parameters or {}, "session_inputs": inputs_prov},
        )
        res.figures[name] = paths[0]
        notes[name] = caption
        fig_result.figure.clear()

    def find(s, datatype, suffix=None, contains=None):
        return next(
            (
                f
                for f in files
                if f.session == s
                and f.datatype == datatype
                and (suffix is None or f.suffix == suffix)
                and (contains is None or contains in str(f.path))
            ),
            None,
        )

    dseg_f = find(s0, "rois", "dseg")
    dseg = load_volume(dseg_f.path).replace(modality="SEG", unit="label", name="organs") if dseg_f else None
    names = read_label_names(dseg_f.path) if dseg_f else {}
    index_of = {v: k for k, v in names.items()}
    organ_outline = None
    z_mm = None
    if dseg is not None:
        keep = [index_of[o] for o in _OUTLINE_ORGANS if o in index_of]
        organ_outline = dseg.replace(data=np.where(np.isin(dseg.numpy(), keep), dseg.numpy(), 0).astype(np.int32))
        organ_outline.metadata["label_names"] = dict(names)  # outlines in each site's own colour (site_style)
        if "tumour" in index_of:
            c = _centroid_of(dseg, index_of["tumour"])
            z_mm = float(c[2]) if c is not None else None
    t2 = analysed[s0]
    mri = anatomy.get(days[s0])
    # 1. fused axial slice through the tumour: T2w + PET (kBq/mL) with organ and cluster outlines
    pet_f = find(s0, "pet")
    if mri is not None and pet_f is not None and "pet" in t2["transforms"]:
        pet = load_volume(pet_f.path)
        pet = F.in_reference_world(pet, t2["transforms"]["pet"])
        pet = pet.replace(data=pet.numpy().astype(np.float32) / 1000.0, unit="kBq/mL", name="PET 89Zr")
        labels = []
        if organ_outline is not None:
            labels.append(organ_outline)
        if t2["volumes"].get("clusters") is not None:
            labels.append((t2["volumes"]["clusters"].replace(name="iron clusters"), "#56B4E9"))
        hi = float(np.percentile(pet.numpy(), 99.9))
        r = F.fused_slice(
            mri,
            pet,
            labels,
            plane="axial",
            position_mm=z_mm,
            overlay_range=(0.0, hi),
            overlay_threshold=0.05 * hi,
            title=f"day {days[s0]:g}: T2w + 89Zr PET",
            width_in=4.0,
        )
        save(
            "fused_pet_axial",
            r,
            f"Day {days[s0]:g}, axial slice through the tumour: T2-weighted MRI (grey), "
            f"89Zr PET registered to the MRI (kBq/mL), organ ROIs (Okabe-Ito outlines) and iron clusters "
            f"(sky-blue outlines).",
            {"position_mm": z_mm, "overlay_range": [0.0, hi]},
        )
        _report(progress, 0.25, "fused slice")
        r = F.mip(pet, plane="coronal", title=f"day {days[s0]:g}: 89Zr PET MIP")
        save("pet_mip_coronal", r, f"Day {days[s0]:g}: coronal maximum-intensity projection of the 89Zr PET (kBq/mL).")
    elif pet_f is None or "pet" not in t2["transforms"]:
        res.partial.append(f"figure of PET on MRI left out: no registered PET in session {s0}")
    # 2. montage over time: T2*w + 19F (mM) at the same slice
    panels, hi, noise = [], 0.0, []
    for s in ordered:
        f19_f, tube_f = find(s, "f19", "19F"), find(s, "f19", contains="reftube")
        t2s = anat_of(files, s, "T2starw")
        if f19_f is None or tube_f is None or t2s is None:
            continue
        side = Path(str(f19_f.path).replace(".nii.gz", ".json"))
        c_ref = float(json.loads(side.read_text()).get("ReferenceConcentration_mM", 100.0)) if side.exists() else 100.0
        tube = load_volume(tube_f.path)
        f19 = f19_in_mM(load_volume(f19_f.path), tube, c_ref)
        values = f19.numpy()
        outside = values[tube.resample_to(f19, order=0).numpy() == 0]
        # Rician noise floor from the median of the (mostly empty) image: sigma = median / sqrt(2 ln 2)
        noise.append(float(np.median(outside)) / np.sqrt(2 * np.log(2)))
        hi = max(hi, float(outside.max()))
        labels = (
            [(analysed[s]["volumes"]["clusters"].replace(name="iron clusters"), "#56B4E9")]
            if analysed[s]["volumes"].get("clusters") is not None
            else []
        )
        panels.append(
            {
                "anatomy": load_volume(t2s.path),
                "overlay": f19,
                "labels": labels,
                "position_mm": z_mm,
                "title": f"day {days[s]:g}",
            }
        )
    if panels:
        # show 19F above the detection threshold (SNR 3.5; docs/methods/fluorine.md)
        threshold = 3.5 * float(np.max(noise))
        for p in panels:
            p["overlay_threshold"] = threshold
        # one colour range for all days, on robust percentiles of the values shown (figures.robust_range)
        r = F.montage(panels, colorbar_label="19F (mM, reference-tube calibrated)", suptitle="T2*w + 19F over time")
        save(
            "montage_19f_days",
            r,
            "The same axial slice on each day: T2*-weighted MRI (grey), 19F in mM "
            f"calibrated against the reference tube (one colour range; shown above SNR 3.5, {threshold:.1f} mM), "
            "iron clusters (sky-blue outlines).",
            {"position_mm": z_mm, "range_mM": list(r.info.get("colorbar_range", (0.0, hi))), "threshold_mM": threshold},
        )
    _report(progress, 0.6, "montage")
    # 3. per-organ bar charts and time courses
    organs = []
    for s in ordered:
        pet_t = analysed[s]["tables"].get("pet")
        if pet_t is not None and {"organ", "suv_bw_mean", "suv_bw_sd"} <= set(pet_t.columns):
            sub = pet_t[pet_t["organ"].isin(_OUTLINE_ORGANS + ("kidney_left", "kidney_right"))].copy()
            sub["day"] = days[s]
            organs.append(sub)
    if organs:
        import pandas as pd

        r = F.organ_bars(
            pd.concat(organs),
            "suv_bw_mean",
            error="suv_bw_sd",
            group="day",
            unit="SUVbw (mean ± SD)",
            title="89Zr PET per organ",
        )
        save("bars_pet_suv", r, "89Zr PET SUVbw per organ (mean ± SD of the voxels) on each day.")
    tc = long.timecourse
    for readout in ("19F", "PET"):
        sub = tc[(tc["readout"] == readout) & np.isfinite(tc["apparent_cells"].astype(float))]
        sub = sub[sub["site"].isin([s for s in dict.fromkeys(sub["site"]) if s not in ("muscle",)])]
        if not len(sub) or sub["day"].nunique() < 1:
            continue
        flags = {
            r_["site"]: bool(r_["macrophage_flag"]) for _, r_ in long.sites.iterrows() if r_["macrophage_flag"] is True
        }
        r = F.time_course(
            sub,
            "apparent_cells",
            model="live_label_model",
            limit="detection_limit_cells_cluster" if readout == "19F" else None,
            flags=flags,
            unit="apparent cells (label / label per cell at injection)",
            title=f"{readout}: label per site over time",
        )
        save(
            f"timecourse_{readout.lower()}",
            r,
            f"{readout}: label per site in apparent cells (markers, solid); dashed: the label the live-cell model "
            "leaves in live cells; dotted: detection limit. Open markers: flagged as macrophage-held.",
        )
    if len(tracks) and "volume_mm3" in tracks:
        present = tracks[tracks["status"].isin(["present", "missing"])]
        big = present.groupby("track")["volume_mm3"].max().sort_values(ascending=False).head(8).index
        sub = present[present["track"].isin(big)].copy()
        sub["site"] = ["cluster " + str(t) for t in sub["track"]]
        if sub["day"].nunique() > 1:
            r = F.time_course(sub, "volume_mm3", unit="void volume (mm³)", title="iron clusters over time", log=False)
            save(
                "cluster_volumes",
                r,
                "Void volume of the 8 largest iron clusters followed over time (timepoints registered to the first).",
            )
    _report(progress, 1.0, "figures done")


def anat_of(files, session, suffix):
    """The anatomical file of a session with a BIDS suffix, or None.

    Parameters
    ----------
    files : iterable of StudyFile
        Study files (:func:`napari_immunotrack.study.discover`).
    session : str
        Session name (``"day3"``).
    suffix : str
        BIDS suffix of the anatomical image (``"T2w"``, ``"T2starw"``, ...).

    Returns
    -------
    StudyFile or None
        The first matching file of datatype "anat".

    Examples
    --------
    >>> from types import SimpleNamespace as File
    >>> files = [File(session="day1", datatype="anat", suffix="T2w", path="a.nii.gz"),
    ...          File(session="day1", datatype="pet", suffix="pet", path="b.nii.gz")]
    >>> anat_of(files, "day1", "T2w").path, anat_of(files, "day1", "T1w")
    ('a.nii.gz', None)
    """
    return next((f for f in files if f.session == session and f.datatype == "anat" and f.suffix == suffix), None)


def _html(
    res,
    root,
    subject,
    days,
    analysed,
    organs,
    long,
    tracks,
    truth_cmp,
    priors,
    transforms,
    reg_errors,
    notes,
    software,
    version,
    long_warnings,
) -> str:
    """The report page (self-contained HTML; figures and CSVs linked relatively)."""
    import pandas as pd

    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>napari-immunotrack report: "
        f"{esc(Path(root).name)}</title><style>{_CSS}</style></head><body>"
    ]
    parts.append(f"<h1>Labelled-cell tracking report: {esc(Path(root).name)}, subject {esc(subject)}</h1>")
    parts.append(
        f"<p class='note'>napari-immunotrack {esc(version)}. Study: <code>{esc(str(Path(root).resolve()))}"
        f"</code>. Sessions: {', '.join(esc(f'{s} (day {d:g})') for s, d in days.items())}.</p>"
    )
    # summary
    flagged = [r["site"] for _, r in long.sites.iterrows() if r["macrophage_flag"] is True]
    parts.append("<h2>Summary</h2><ul>")
    parts.append(
        f"<li>{len(analysed)} post-injection session(s) analysed"
        + (f" ({sum(1 for a in analysed.values() if a['reused'])} reused from an earlier run)" if analysed else "")
        + ".</li>"
    )
    parts.append(
        "<li>Sites flagged as macrophage-held signal (false positive for cell counts): "
        + (", ".join(f"<b>{esc(s)}</b>" for s in flagged) if flagged else "none")
        + ".</li>"
    )
    parts.append(f"<li>Kinetic priors: {esc(priors['source'])}.</li>")
    if res.partial:
        parts.append(
            "<li class='partial'>Partial results:<ul>"
            + "".join(f"<li>{esc(p)}</li>" for p in res.partial)
            + "</ul></li>"
        )
    else:
        parts.append("<li>Every step completed.</li>")
    parts.append("</ul>")
    parts.append(
        "<p class='note'>What the numbers measure: imaging counts the <i>label</i>, not live cells. Label per "
        "cell halves at each division and label taken up by host macrophages from dead cells looks like "
        "cells. Apparent cells = label / label per cell at injection; the live-cell model predicts the label live "
        "cells can still carry. <b>cells_corrected</b> = apparent x 2<sup>t/T<sub>d</sub></sup> "
        "e<sup>e t</sup> is not a measurement: it assumes the prior doubling time and efflux hold at the "
        "site from day 0 and that no label sits outside live cells (see the column descriptions).</p>"
    )
    # figures
    if res.figures:
        parts.append("<h2>Figures</h2>")
        for name, path in res.figures.items():
            parts.append(_figure_html(f"figures/{path.name}", notes.get(name, name)))
    # longitudinal
    parts.append("<h2>Following the sites over time</h2>")
    parts.append(
        "<p class='note'>Model (docs/methods/longitudinal.md): label per live cell q(t) = q<sub>0</sub> 2<sup>-t/T<sub>d"
        "</sub></sup> e<sup>-e t</sup>; label in live cells L(t) = L(t<sub>ref</sub>) e<sup>-k (t - t<sub>ref"
        "</sub>)</sup>. k<sub>signal</sub> is fitted to the measured label (least squares on log values, "
        "&ge; 3 timepoints); T<sub>d</sub> cannot be fitted from label totals (division conserves label): "
        "it is fitted only with label-independent cell counts, else taken from the priors ('prior') or "
        "left unknown. A site is flagged when the signal persists while the live-cell model (k<sub>live</sub> "
        f"= cell loss + efflux) leaves &ge; {100 * long.parameters['flag_fraction']:.0f}% of it unexplained, "
        "or puts the live cells below the detection limit while the signal stays above it.</p>"
    )
    order = [
        c
        for c in (
            "site",
            "macrophage_flag",
            "flag_reason",
            "unexplained_fraction_last",
            "k_signal_per_day",
            "k_live_per_day",
            "doubling_days",
            "doubling_source",
            "day_below_limit",
            "readouts",
        )
        if c in long.sites.columns
    ]
    sites = long.sites[order]
    parts.append("<h3>Sites</h3>" + _html_table(sites, "tables/site_flags.csv", flag_col="macrophage_flag"))
    fit_cols = [
        c
        for c in (
            "site",
            "readout",
            "n_points",
            "status",
            "k_signal_per_day",
            "k_signal_se",
            "k_live_per_day",
            "k_live_source",
            "doubling_days",
            "doubling_source",
            "day_below_limit",
            "unexplained_fraction_last",
            "macrophage_flag",
            "missing_days",
        )
        if c in long.fits.columns
    ]
    fits = long.fits[fit_cols]
    parts.append(
        "<h3>Model fits per site and readout</h3>"
        + _html_table(fits, "tables/longitudinal_fits.csv", flag_col="macrophage_flag")
    )
    cols = [
        c
        for c in (
            "site",
            "day",
            "readout",
            "value",
            "unit",
            "apparent_cells",
            "cells_corrected",
            "live_label_model",
            "cells_model",
            "unexplained_fraction",
            "detection_limit_cells_roi",
            "detection_limit_cells_cluster",
            "status",
        )
        if c in long.timecourse.columns
    ]
    from .analysis.longitudinal import COLUMN_DESCRIPTIONS

    described = "".join(
        f"<li><b>{esc(c)}</b>: {esc(COLUMN_DESCRIPTIONS[c])}</li>" for c in cols if c in COLUMN_DESCRIPTIONS
    )
    parts.append(
        "<h3>Time course (raw values and model)</h3><ul class='note'>"
        + described
        + "</ul>"
        + _html_table(long.timecourse[cols], "tables/timecourse.csv")
    )
    if long_warnings:
        parts.append("<p class='partial'>" + "<br>".join(esc(w) for w in long_warnings) + "</p>")
    if truth_cmp is not None and len(truth_cmp):
        parts.append(
            "<h3>Against the simulation's ground truth</h3><p class='note'>This study is simulated: "
            "the truth says how much of each site's iron is held by macrophages and how many live cells "
            "are there.</p>" + _html_table(truth_cmp, "tables/comparison_with_truth.csv", flag_col="macrophage_flag")
        )
    # organ readouts
    parts.append("<h2>Readouts per organ and session</h2>")
    parts.append(
        "<p class='note'>PET/SPECT: decay-corrected percent of injected dose and SUVbw on the native grid "
        "(ROIs carried through the registration); 19F: atoms and cells against the reference tube; MPI: "
        "iron (ng) from the fiducial calibration. Blank: the step did not run (see partial results).</p>"
    )
    parts.append(_html_table(organs, "tables/organ_readouts.csv"))
    if len(tracks):
        parts.append(
            "<h3>Iron clusters followed over time</h3><p class='note'>Centroids in the first timepoint's "
            "world (timepoints registered rigidly to it); matched within 1.5 mm.</p>"
            + _html_table(tracks, "tables/cluster_tracks.csv", max_rows=60)
        )
    # parameters and provenance
    parts.append("<h2>Parameters and provenance</h2>")
    rows = []
    for s, a in analysed.items():
        rows.append(
            {
                "session": s,
                "day": days[s],
                "reused": a["reused"],
                "inputs_sha256": a["inputs_sha256"][:16] + "…",
                "steps_failed": ", ".join(a["errors"]) or "none",
                "time_s": round(sum(v for v in a["timings_s"].values() if isinstance(v, (int, float))), 1),
                "outputs": f"sessions/ses-{s}/",
            }
        )
    parts.append("<h3>Sessions</h3>" + _html_table(pd.DataFrame(rows)))
    parts.append(
        "<p class='note'>Each session's tables, labels and transforms are in <code>sessions/ses-*/</code>, "
        "each with a <code>.provenance.json</code> (inputs and their SHA-256, parameters, software, time). "
        "<code>session.provenance.json</code> holds the hash that decides whether a later report reuses "
        "them.</p>"
    )
    reg_rows = [
        {
            "day": d,
            "registered_to_day": min(days.values()) if days else 0,
            "translation_mm": np.round(m[:3, 3], 3).tolist(),
            "status": "ok" if d not in reg_errors else reg_errors[d],
        }
        for d, m in sorted(transforms.items())
    ]
    reg_rows += [{"day": d, "status": msg} for d, msg in reg_errors.items()]
    parts.append("<h3>Timepoint registration (rigid, to the first)</h3>" + _html_table(pd.DataFrame(reg_rows)))
    prior_rows = [
        {"site": s, "doubling_days": k.doubling_days, "loss_per_day": k.loss_per_day, "source": k.source}
        for s, k in priors["sites"].items()
    ]
    parts.append(f"<h3>Kinetic priors ({esc(priors['source'])})</h3>" + _html_table(pd.DataFrame(prior_rows)))
    parts.append(
        "<p class='note'>Per-cell label efflux (1/day): "
        + (", ".join(f"{esc(k)} {v:g}" for k, v in priors["efflux_per_day"].items()) or "none")
        + f". Injected cells: {_fmt(priors['injected_cells'])}.</p>"
    )
    parts.append(
        "<h3>Software</h3><p class='note'>" + ", ".join(f"{esc(k)} {esc(str(v))}" for k, v in software.items()) + "</p>"
    )
    parts.append(
        f"<p class='note'>PDF: {esc(res.pdf_note or 'see the command output')}. Report made in "
        f"{res.elapsed_s:.1f} s.</p></body></html>"
    )
    return "\n".join(parts)


def _timepoints_in_reference_frame(anatomy: dict, days: dict, first: str, files) -> tuple:
    """{day: reference world -> that day's world} and {day: why not} for the report's cluster tracks.

    Saved session alignments (``xfm/*_from-anat_to-ses<REF>.tfm`` of :func:`alignment.align_study`) are chained
    to the report's reference session; a day without one is aligned now (:func:`alignment.align_mri`, same
    contrast, doubt checks; docs/methods/session-alignment.md). A doubtful alignment leaves the day out.
    """
    from .alignment import align_mri, saved_session_transform

    by_day = {d: s for s, d in days.items()}
    ref_day = days[first]

    def anat_path(session):
        for suffix in ("T2w", "T2starw", "T1w"):
            f = next((f for f in files if f.session == session and f.datatype == "anat" and f.suffix == suffix), None)
            if f is not None:
                return f.path
        return None

    saved = {}
    for d in anatomy:
        path = anat_path(by_day[d])
        if path is not None:
            matrix, ref = saved_session_transform(path)
            if matrix is not None:
                saved[d] = (matrix, ref)
    transforms, errors = {ref_day: np.eye(4)}, {}
    ref_saved = saved.get(ref_day)
    for d in sorted(anatomy):
        if d == ref_day:
            continue
        if ref_saved is not None and d in saved and saved[d][1] == ref_saved[1]:
            transforms[d] = saved[d][0] @ np.linalg.inv(ref_saved[0])
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImmunotrackWarning)  # the doubt is said once, below
                result = align_mri(anatomy[ref_day], anatomy[d])
        except (InputError, RuntimeError) as exc:
            errors[d] = one_line(exc)
            continue
        if result.doubtful:
            errors[d] = "alignment doubtful: " + "; ".join(result.warnings)
        else:
            transforms[d] = np.asarray(result.fixed_to_moving, float)
    return transforms, errors
