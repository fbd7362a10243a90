"""The whole analysis of one study session, without a screen (pure, no napari).

:func:`analyse_session` chains what an analyst does by hand on one
post-injection session of a study laid out as :mod:`napari_immunotrack.study`
describes, with the pre-injection session as baseline:

1. register PET, SPECT and MPI to the anatomy (MRI) by mutual information;
2. segment iron clusters on the T2*-weighted image against the baseline;
3. confirm dual-mode (T1-bright and T2-dark) sites against the baseline;
4. read PET and SPECT (Bq/mL, SUVbw, %ID), 19F (atoms, cells) and MPI (iron,
   cells) per organ ROI, carried from the MRI grid to each native grid.

Each step that fails is recorded and the rest go on; the result says which
steps are partial. :func:`analyse_inputs` runs the same steps on explicit input
files, a chosen subset of steps and per-step parameters (what ``immunotrack
batch`` runs for each subject and session). :func:`compare_with_truth` sets the numbers beside a
simulated study's ``ground_truth.json``.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, collect_warnings, one_line
from .progress import report, scaled

#: Organ labels of the sample study's ``dseg`` maps (``*_dseg.tsv`` beside them overrides).
READOUT_ORGANS = (
    "liver",
    "spleen",
    "tumour",
    "ln_inguinal_right",
    "ln_inguinal_left",
    "ln_iliac",
    "kidney_left",
    "kidney_right",
    "muscle",
)


@dataclass
class SessionResult:
    """Everything :func:`analyse_session` made: Volumes, tables, transforms, errors."""

    subject: str
    session: str
    volumes: dict[str, object] = field(default_factory=dict)
    tables: dict[str, object] = field(default_factory=dict)
    transforms: dict[str, np.ndarray] = field(default_factory=dict)
    registrations: dict[str, object] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    #: {datatype: (fixed, moving)} image records of each transform (see io.transforms.describe_image)
    transform_images: dict[str, tuple] = field(default_factory=dict)
    #: DICOM objects made by the ``dicom`` step: {"organs_seg": Dataset, "pet_sr": Dataset}
    dicom: dict[str, object] = field(default_factory=dict)
    #: {step: [warning, ...]}: the package's warnings each step raised (also shown to the caller)
    warnings: dict[str, list] = field(default_factory=dict)


def _label_names(dseg_path: Path) -> dict[int, str]:
    """Kept for old callers: :func:`napari_immunotrack.study.read_label_names` (the one .tsv reader)."""
    from .study import read_label_names

    return read_label_names(dseg_path)


def _pick(files, session, datatype, suffix=None):
    for f in files:
        if f.session == session and f.datatype == datatype and (suffix is None or f.suffix == suffix):
            return f
    return None


#: The steps of a session analysis, in the order they run (names used by pipeline files).
STEPS = ("register", "clusters", "confirm", "pet", "spect", "f19", "mpi", "relax", "cest", "dicom")
#: Steps run when none are named: every one but ``dicom`` (DICOM SEG/SR export is asked for explicitly).
DEFAULT_STEPS = tuple(s for s in STEPS if s != "dicom")

#: The inputs (roles) of a session and where a study laid out as :mod:`.study` describes keeps them:
#: glob patterns relative to the session folder. ``baseline_<role>`` inputs (T1w, T2w, T2starw) come
#: from the baseline session's folder with the same pattern.
DEFAULT_INPUT_PATTERNS = {
    "T1w": "anat/*_T1w.nii.gz",
    "T2w": "anat/*_T2w.nii.gz",
    "T2starw": "anat/*_T2starw.nii.gz",
    "dseg": "rois/*_dseg.nii.gz",
    "pet": "pet",
    "spect": "spect",
    "f19": "f19/*_19F.nii.gz",
    "f19_reftube": "f19/*_desc-reftube_mask.nii.gz",
    "mpi": "mpi/*_mpi.nii.gz",
    "mpi_fiducials": "mpi/*_fiducials.csv",
    "MEGRE": "anat/*_MEGRE.nii.gz",  # multi-echo GRE for the relax step
    "cest": "cest/*_cest.nii.gz",  # saturation-offset series (offsets in its JSON sidecar) for the cest step
    "cest_wassr": "cest/*_wassr.nii.gz",
}
#: Roles also read from the baseline (pre-injection) session.
BASELINE_ROLES = ("T1w", "T2w", "T2starw", "MEGRE")


def study_session_inputs(files, session: str, baseline_session: str | None) -> dict[str, Path]:
    """The inputs of one session as :func:`analyse_session` finds them in a discovered study.

    Found roles: the anatomy (T1w, T2w, T2starw, MEGRE) of the session and, as ``baseline_<role>``, of
    ``baseline_session``; the organ map (``dseg``); the first PET, SPECT and MPI file; the 19F image and
    its reference tube (``f19_reftube``, a file with "reftube" in its path); the MPI fiducial table
    beside the MPI image. The CEST roles of :data:`DEFAULT_INPUT_PATTERNS` (``cest``, ``cest_wassr``)
    are not looked for here: give them to :func:`analyse_inputs` directly.

    Parameters
    ----------
    files : list of StudyFile
        :func:`~napari_immunotrack.study.discover`'s list for one subject.
    session : str
        The session (``"day3"``, without "ses-").
    baseline_session : str or None
        The pre-injection session, for the ``baseline_*`` roles.

    Returns
    -------
    dict
        ``{role: Path}`` for the roles that exist.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import discover
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day in (0, 1):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = save_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4), "MR"),
    ...                         anat / f"sub-01_ses-day{day}_T2starw.nii.gz")
    ...     found = study_session_inputs(discover(Path(tmp)), "day1", "day0")
    >>> {role: path.name for role, path in found.items()}
    {'T2starw': 'sub-01_ses-day1_T2starw.nii.gz', 'baseline_T2starw': 'sub-01_ses-day0_T2starw.nii.gz'}
    """
    found: dict[str, Path] = {}
    for s in BASELINE_ROLES:
        f = _pick(files, session, "anat", s)
        if f is not None:
            found[s] = Path(f.path)
        b = _pick(files, baseline_session, "anat", s) if baseline_session else None
        if b is not None:
            found["baseline_" + s] = Path(b.path)
    dseg = _pick(files, session, "rois", "dseg")
    if dseg is not None:
        found["dseg"] = Path(dseg.path)
    for datatype in ("pet", "spect", "mpi"):
        f = _pick(files, session, datatype)
        if f is not None:
            found[datatype] = Path(f.path)
    f19 = _pick(files, session, "f19", "19F")
    if f19 is not None:
        found["f19"] = Path(f19.path)
    tube = next((g for g in files if g.session == session and g.datatype == "f19" and "reftube" in str(g.path)), None)
    if tube is not None:
        found["f19_reftube"] = Path(tube.path)
    if "mpi" in found:
        fid = sorted(Path(found["mpi"]).parent.glob("*_fiducials.csv"))
        if fid:
            found["mpi_fiducials"] = fid[0]
    return found


def analyse_session(
    root,
    session: str,
    baseline_session: str | None = None,
    subject: str | None = None,
    iron_per_cell_pg: float | None = None,
    fluorine_per_cell: float | None = None,
    register_modalities=("pet", "spect", "mpi"),
    progress=None,
    steps=None,
) -> SessionResult:
    """Run the whole pipeline on one session (see the module docstring); ``steps`` as in :func:`analyse_inputs`.

    The session's files are found with :func:`study_session_inputs`; the steps then run as
    :func:`analyse_inputs` runs them (a step that fails is recorded in ``errors``, the others go on).

    Parameters
    ----------
    root : str or Path
        The study folder (``sub-*/ses-*/<type>/``, :mod:`napari_immunotrack.study`).
    session : str
        The session to analyse (``"day3"`` or ``"ses-day3"``).
    baseline_session : str, optional
        The pre-injection session; default: the session of day 0, if any.
    subject : str, optional
        The subject (default: the first).
    iron_per_cell_pg : float, optional
        Iron per labelled cell (pg) for the MPI cell counts; default: the MPI model's (5 pg).
    fluorine_per_cell : float, optional
        19F atoms per labelled cell; None takes the 19F sidecar's value.
    register_modalities : sequence of str, default ("pet", "spect", "mpi")
        Modalities registered to the MRI by mutual information.
    progress : callable, optional
        ``progress(fraction, message)`` callback.
    steps : sequence of str, optional
        Which of :data:`STEPS` to run (default :data:`DEFAULT_STEPS`).

    Returns
    -------
    SessionResult
        Volumes (labels), tables (one per step, with a provenance record), transforms (RAS mm),
        errors, timings (s) and the parameters used.

    Raises
    ------
    InputError
        An unknown session or step, or a folder that is not a study.

    Examples
    --------
    A two-session study (day 0 baseline, day 1 with a 27-voxel void) and the cluster step only:

    >>> import tempfile, warnings
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> pre = (100 + np.random.default_rng(0).normal(0, 2, (12, 12, 12))).astype(np.float32)
    >>> post = pre.copy()
    >>> post[4:7, 4:7, 4:7] = 10.0
    >>> with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")          # no reference ROI: a guessed reference, warned
    ...     for day, image in ((0, pre), (1, post)):
    ...         anat = Path(tmp) / "sub-01" / f"ses-day{day}" / "anat"
    ...         anat.mkdir(parents=True)
    ...         _ = save_volume(Volume(image, np.eye(4), "MR"), anat / f"sub-01_ses-day{day}_T2starw.nii.gz")
    ...     res = analyse_session(tmp, "day1", steps=["clusters"])
    >>> res.parameters["baseline_session"], res.errors
    ('day0', {})
    >>> res.tables["clusters"][["voxels", "centroid_x_mm"]].round(3).values.tolist()
    [[27.0, 5.0]]
    """
    from .study import discover, sessions

    root = Path(root)
    files = discover(root)
    subject = subject or files[0].subject
    files = [f for f in files if f.subject == subject]
    names = sessions(files)
    session = session[4:] if session.startswith("ses-") else session
    if session not in names:
        raise InputError(f"session {session!r} not found for subject {subject}; sessions are {', '.join(names)}.")
    if baseline_session is None:
        baseline_session = next((s for s in names if any(f.day == 0 for f in files if f.session == s)), None)
    inputs = study_session_inputs(files, session, baseline_session)
    parameters = {
        "register": {"modalities": tuple(register_modalities)},
        "mpi": {} if iron_per_cell_pg is None else {"iron_per_cell_pg": iron_per_cell_pg},
        "f19": {"fluorine_per_cell": fluorine_per_cell},
    }
    return analyse_inputs(
        inputs,
        subject,
        session,
        baseline_session=baseline_session,
        parameters=parameters,
        progress=progress,
        steps=steps,
    )


#: Parameters of a step that are not arguments of its analysis function (see :func:`analyse_inputs`).
STEP_EXTRAS = {
    "register": {"modalities": ("pet", "spect", "mpi")},
    "clusters": {"chunks": None},
    # partial-volume correction of the readouts (analysis/pvc.py; f19 takes pvc/psf as fluorine_cells arguments)
    "pet": {"pvc": "none", "psf_fwhm": None},
    "spect": {"pvc": "none", "psf_fwhm": None},
    "mpi": {"pvc": "none", "psf_fwhm": None},
}


def analyse_inputs(
    inputs: dict[str, object],
    subject: str = "",
    session: str = "",
    *,
    steps=None,
    parameters: dict | None = None,
    baseline_session: str | None = None,
    progress=None,
) -> SessionResult:
    """The session pipeline on explicit input files (what :func:`analyse_session` and ``immunotrack batch`` run).

    Parameters
    ----------
    inputs : {role: path}
        Files of the session by role (see :data:`DEFAULT_INPUT_PATTERNS`; ``baseline_T1w``,
        ``baseline_T2w``, ``baseline_T2starw`` from the pre-injection session). Missing roles
        make the steps that need them fail (recorded in ``errors``), not the whole run.
    subject, session : str
        Names recorded in the result.
    steps : sequence of str, optional
        Which of :data:`STEPS` to run (all by default). Without "register", PET, SPECT and MPI
        are taken to share the MRI's world (e.g. a PET/MR scanner).
    parameters : {step: {name: value}}, optional
        Keyword arguments of each step's function (``register``, ``segment_clusters``,
        ``confirm_dual_mode``, ``quantify_pet``, ``fluorine_cells``, ``mpi_iron``), plus
        ``register.modalities``, ``clusters.chunks`` (read the T2*-weighted images lazily in
        chunks of this shape: processed chunk by chunk); ``f19.reference_concentration_mm``
        / ``f19.fluorine_per_cell`` left at None (their model default) are the 19F sidecar's values.
    baseline_session : str, optional
        Name recorded in the result's parameters.
    progress : callable, optional
        ``progress(fraction, message)`` callback; may raise Cancelled.

    Returns
    -------
    SessionResult

    Examples
    --------
    A baseline and a post-injection T2*-weighted image with a 27-voxel void, the cluster step only:

    >>> import tempfile, warnings
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> pre = (100 + np.random.default_rng(0).normal(0, 2, (12, 12, 12))).astype(np.float32)
    >>> post = pre.copy()
    >>> post[4:7, 4:7, 4:7] = 10.0
    >>> with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")          # no reference ROI: a guessed reference, warned
    ...     _ = save_volume(Volume(pre, np.eye(4), "MR"), Path(tmp) / "pre.nii.gz")
    ...     _ = save_volume(Volume(post, np.eye(4), "MR"), Path(tmp) / "post.nii.gz")
    ...     res = analyse_inputs({"T2starw": Path(tmp) / "post.nii.gz", "baseline_T2starw": Path(tmp) / "pre.nii.gz"},
    ...                          "01", "day1", steps=["clusters"], parameters={"clusters": {"threshold": 0.4}})
    >>> res.errors, res.tables["clusters"]["voxels"].tolist()
    ({}, [27])
    """
    import pandas as pd

    from .analysis.clusters import segment_clusters
    from .analysis.confirm import confirm_dual_mode
    from .analysis.fluorine import FLUORINE_PARAMETERS, fluorine_cells
    from .analysis.mpi import MPI_PARAMETERS, mpi_iron
    from .analysis.pet import quantify_pet
    from .io import load_volume
    from .io.transforms import describe_image
    from .registration import register

    steps = tuple(DEFAULT_STEPS if steps is None else steps)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise InputError(f"unknown step {unknown[0]!r}; steps are {', '.join(STEPS)}.")
    parameters = {k: dict(v or {}) for k, v in (parameters or {}).items()}

    def params(name):
        """(extras, keyword arguments) of a step."""
        given = dict(parameters.get(name, {}))
        extras = dict(STEP_EXTRAS.get(name, {}))
        for key in list(given):
            if key in extras:
                extras[key] = given.pop(key)
        return extras, given

    inputs = {k: Path(v) for k, v in inputs.items() if v is not None}
    out = SessionResult(subject, session)
    iron_per_cell_pg = parameters.get("mpi", {}).get("iron_per_cell_pg", MPI_PARAMETERS["iron_per_cell_pg"].default)
    out.parameters = {
        "baseline_session": baseline_session,
        "iron_per_cell_pg": iron_per_cell_pg,
        "fluorine_per_cell": parameters.get("f19", {}).get(
            "fluorine_per_cell", FLUORINE_PARAMETERS["fluorine_per_cell"].default
        ),
    }

    def step(name, fraction_start, fraction_stop, func):
        report(progress, fraction_start, name)
        t0 = time.perf_counter()
        try:
            with collect_warnings(show=True) as log:  # kept for the step's provenance, still shown
                try:
                    func(scaled(progress, fraction_start, fraction_stop))
                finally:
                    if len(log):
                        out.warnings[name] = log.messages()
        except InputError as exc:
            out.errors[name] = one_line(exc)
        except Exception as exc:  # keep the other steps going; the report says what failed
            out.errors[name] = f"internal error: {type(exc).__name__}: {one_line(exc)[:200]}"
            out.errors[name + "_traceback"] = traceback.format_exc(limit=4)
        out.timings_s[name] = round(time.perf_counter() - t0, 2)

    anat = {s: inputs.get(s) for s in BASELINE_ROLES}
    base = {s: inputs.get("baseline_" + s) for s in BASELINE_ROLES}
    dseg_path = inputs.get("dseg")
    if anat["T2starw"] is None and anat["T1w"] is None:
        raise InputError(f"session {session} has no anatomical MRI (anat/*_T1w or *_T2starw); nothing to analyse.")
    registering = "register" in steps
    reference = load_volume(anat["T2w"] or anat["T1w"] or anat["T2starw"]) if registering else None
    # a huge scan analysed chunk by chunk (clusters only) never loads its label map whole
    chunked_only = params("clusters")[0]["chunks"] is not None and set(steps) <= {"register", "clusters"}
    dseg = load_volume(dseg_path).replace(modality="SEG", unit="label") if dseg_path and not chunked_only else None
    label_names = _label_names(dseg_path) if dseg_path else {}
    index_of = {v: k for k, v in label_names.items()}
    out.volumes["dseg"] = dseg

    def organ_mask(*names_):
        if dseg is None:
            return None
        data = np.isin(dseg.numpy(), [index_of[n] for n in names_ if n in index_of]).astype(np.uint8)
        return dseg.replace(data=data, name="+".join(names_))

    def organ_rois():
        """The readout organs as one label map (label values as in the dseg)."""
        if dseg is None:
            raise InputError("no ROI label map (rois/*_dseg.nii.gz) in this session; draw ROIs first.")
        keep = [index_of[n] for n in READOUT_ORGANS if n in index_of]
        data = np.where(np.isin(dseg.numpy(), keep), dseg.numpy(), 0).astype(np.int32)
        return dseg.replace(data=data)

    def name_rows(df):
        df = df.copy()
        df.insert(1, "organ", [label_names.get(int(v), str(v)) for v in df["label"]])
        return df

    # 1. registration of the other scanners' images to the MRI (data kept on their grids)
    moved = {}
    if registering:
        extras, kwargs = params("register")
        for i, datatype in enumerate(extras["modalities"]):
            path = inputs.get(datatype)
            if path is None:
                continue

            def run_registration(p, path=path, datatype=datatype):
                moving = load_volume(path)
                # MPI and 19F show only hot spots, no anatomy: register them to the PET already
                # placed in MRI world (fixed -> moving is then MRI world -> their world directly)
                fixed = moved["pet"] if datatype in ("mpi", "f19") and "pet" in moved else reference
                result = register(fixed, moving, progress=p, **kwargs)
                out.registrations[datatype] = result
                out.transforms[datatype] = result.fixed_to_moving
                # fixed is the MRI world (for MPI/19F: the PET already moved into it), moving the scanner's world
                out.transform_images[datatype] = (
                    describe_image(reference, role="MRI world (fixed)", datatype="anat"),
                    describe_image(moving, role=f"{datatype} scanner world (moving)", path=path, datatype=datatype),
                )
                # a moving voxel at world q sits at MRI world T^-1 q: move the affine, keep the data
                moved[datatype] = moving.replace(affine=np.linalg.inv(result.fixed_to_moving) @ moving.affine)

            step(f"register_{datatype}", 0.02 + 0.12 * i, 0.14 + 0.12 * i, run_registration)

    def in_mri_world(datatype):
        """The image of ``datatype`` in MRI world (registered, or as it is without a register step)."""
        if datatype in moved:
            return moved[datatype]
        path = inputs.get(datatype)
        if path is None:
            raise InputError(f"no {datatype} image in this session.")
        if registering:
            raise InputError(
                f"{datatype} was not registered to the MRI "
                f"({out.errors.get('register_' + datatype, 'not among the registered modalities')})."
            )
        return load_volume(path)  # no register step: the scanners share the MRI's world

    # 2. iron clusters on the T2*-weighted image against the baseline
    def run_clusters(p):
        extras, kwargs = params("clusters")
        if anat["T2starw"] is None:
            raise InputError("no T2*-weighted image (anat/*_T2starw) in this session.")
        chunks = extras["chunks"]

        def load(path):
            if chunks is None:
                return load_volume(path)
            vol = load_volume(path, lazy=True) if str(path).lower().endswith((".nii", ".nii.gz")) else load_volume(path)
            import dask.array as da

            data = vol.data if hasattr(vol.data, "rechunk") else da.from_array(vol.data, chunks=tuple(chunks))
            return vol.replace(data=data.rechunk(tuple(chunks)))

        def lazy_organ_mask(name):
            """An organ of the label map as a lazy (dask) mask, computed chunk by chunk with the image."""
            if dseg_path is None:
                return None
            import dask.array as da

            labels = load(dseg_path)
            index = [index_of[name]] if name in index_of else []
            return labels.replace(
                data=da.isin(labels.data, index).astype(np.uint8), modality="SEG", unit="label", name=name
            )

        post = load(anat["T2starw"])
        pre = load(base["T2starw"]) if base.get("T2starw") else None
        mask = organ_mask if chunks is None else lazy_organ_mask
        if pre is not None and "baseline_transform" not in kwargs:  # a repositioned baseline: the sessions' alignment
            from .alignment import baseline_transform_between

            kwargs["baseline_transform"], tol = baseline_transform_between(anat["T2starw"], base["T2starw"], post, pre)
            kwargs["baseline_tolerance_voxels"] = max(tol or 1, kwargs.get("baseline_tolerance_voxels", 1))
        result = segment_clusters(
            post, baseline=pre, reference_mask=mask("muscle"), background_mask=mask("air"), progress=p, **kwargs
        )
        out.volumes["clusters"] = result.labels
        out.tables["clusters"] = result.table
        out.tables["clusters_provenance"] = result.parameters

    if "clusters" in steps:
        step("clusters", 0.40, 0.55, run_clusters)

    # 3. T1-T2 self-confirmation against the baseline
    def run_confirm(p):
        _, kwargs = params("confirm")
        if anat["T1w"] is None or anat["T2w"] is None:
            raise InputError("T1w and T2w images are needed for the T1-T2 confirmation.")
        pre = {}
        t1_post = load_volume(anat["T1w"])
        if base.get("T1w") and base.get("T2w"):
            pre = {"t1_pre": load_volume(base["T1w"]), "t2_pre": load_volume(base["T2w"])}
            from .alignment import baseline_transform_between  # a repositioned baseline: the sessions' alignment

            matrix, tol = baseline_transform_between(anat["T1w"], base["T1w"], t1_post, pre["t1_pre"])
            pre.update(pre_transform=matrix, baseline_tolerance_voxels=tol)
        result = confirm_dual_mode(
            t1_post,
            load_volume(anat["T2w"]),
            reference_mask=organ_mask("muscle"),
            progress=p,
            **pre,
            **kwargs,
        )
        out.volumes["confirmed"] = result.labels
        out.tables["confirmed"] = result.table

    if "confirm" in steps:
        step("confirm", 0.55, 0.65, run_confirm)

    # 4. readouts per organ on each native grid
    def run_pet(datatype):
        def inner(p):
            extras, kwargs = params(datatype)
            kwargs.setdefault("label_names", label_names)  # per-organ densities for %ID/g
            df = quantify_pet(in_mri_world(datatype), organ_rois(), progress=p, **kwargs)
            if extras["pvc"] != "none":  # factors on the image as stored (Bq/mL up to a global scale)
                from .analysis.pvc import add_readout_pvc

                df, _ = add_readout_pvc(df, in_mri_world(datatype), organ_rois(), extras["pvc"], extras["psf_fwhm"])
            out.tables[datatype] = name_rows(df)

        return inner

    if "pet" in steps:
        step("pet", 0.65, 0.75, run_pet("pet"))
    if "spect" in steps:
        step("spect", 0.75, 0.82, run_pet("spect"))

    def run_f19(p):
        _, kwargs = params("f19")
        f, tube = inputs.get("f19"), inputs.get("f19_reftube")
        if f is None or tube is None:
            raise InputError("no 19F image with its reference-tube mask in this session.")
        f19 = load_volume(f)
        side = {}
        side_path = Path(str(f).replace(".nii.gz", ".json"))
        if side_path.exists():
            side = json.loads(side_path.read_text())
        # None (the model's default): the sidecar's values
        c_ref = kwargs.pop("reference_concentration_mm", FLUORINE_PARAMETERS["reference_concentration_mm"].default)
        if c_ref is None:
            c_ref = float(side.get("ReferenceConcentration_mM", side.get("reference_mM", 100.0)))
        per_cell = kwargs.pop("fluorine_per_cell", FLUORINE_PARAMETERS["fluorine_per_cell"].default) or float(
            side.get("FluorineAtomsPerCell", side.get("FluorinePerCell", 1e12))
        )
        out.parameters.update(f19_reference_mM=c_ref, fluorine_per_cell=per_cell)
        df = fluorine_cells(f19, organ_rois(), load_volume(tube), c_ref, per_cell, progress=p, **kwargs)
        out.tables["f19"] = name_rows(df)

    if "f19" in steps:
        step("f19", 0.82, 0.90, run_f19)

    def run_mpi(p):
        extras, kwargs = params("mpi")
        if registering and "mpi" not in moved:
            raise InputError(f"MPI was not registered to the MRI ({out.errors.get('register_mpi', 'no MPI image')}).")
        if inputs.get("mpi") is None:
            raise InputError("no MPI image in this session.")
        if inputs.get("mpi_fiducials") is None:
            raise InputError("no MPI fiducials file (mpi/*_fiducials.csv) in this session.")
        fiducials = pd.read_csv(inputs["mpi_fiducials"])
        # fiducial positions are in the MPI scanner's world, so the image stays there and the
        # ROIs come from the MRI world through the registration (MPI world -> MRI world)
        mpi_native = load_volume(inputs["mpi"])
        transform = np.linalg.inv(out.transforms["mpi"]) if registering else None
        df = mpi_iron(mpi_native, organ_rois(), fiducials, transform=transform, progress=p, **kwargs)
        if extras["pvc"] != "none":  # iron_ng_pvc, cell_count_pvc (analysis/pvc.py)
            from .analysis.pvc import add_mpi_pvc

            df, _ = add_mpi_pvc(df, mpi_native, organ_rois(), extras["pvc"], extras["psf_fwhm"], transform=transform)
        out.tables["mpi"] = name_rows(df)

    if "mpi" in steps:
        step("mpi", 0.90, 0.99, run_mpi)
    if "relax" in steps and inputs.get("MEGRE") is not None:  # only sessions with a multi-echo series
        from .analysis.relaxometry import relax_step

        def run_relax(p):
            res = relax_step(
                load_volume(inputs["MEGRE"]),
                organ_rois() if dseg is not None else None,
                progress=p,
                baseline=load_volume(base["MEGRE"]) if base.get("MEGRE") else None,
                **params("relax")[1],
            )
            if res["table"] is not None:
                out.tables["relax"] = name_rows(res["table"])

        step("relax", 0.99, 1.0, run_relax)
    if "dicom" in steps and dseg is not None and inputs.get("pet") is not None:
        from .io.dicom_export import build_seg, build_sr

        def run_dicom(p):
            # the organ labels as a DICOM SEG on the PET series, and the PET readouts as a TID 1500 SR
            # referencing it (docs/methods/dicom-objects.md); the labels go into the PET's world first
            labels = organ_rois()
            if out.transforms.get("pet") is not None:
                labels = labels.replace(affine=out.transforms["pet"] @ labels.affine)
            seg, datasets = build_seg(labels, inputs["pet"], label_names=label_names, **params("dicom")[1])
            out.dicom["organs_seg"] = seg
            if out.tables.get("pet") is not None:
                out.dicom["pet_sr"] = build_sr(out.tables["pet"], seg, datasets)

        step("dicom", 0.995, 1.0, run_dicom)
    if "cest" in steps and inputs.get("cest") is not None:  # only sessions with a CEST series
        from .analysis.cest import cest_step

        def run_cest(p):
            files = {k: inputs[k] for k in ("cest", "cest_wassr", "cest_m0", "dseg") if inputs.get(k) is not None}
            maps, table = cest_step(files, label_names=label_names, progress=p, **params("cest")[1])
            for name, vol in maps.items():
                out.volumes[f"cest_{name}"] = vol
            out.tables["cest"] = table

        step("cest", 0.995, 1.0, run_cest)
    report(progress, 1.0, "done")
    return out


def compare_with_truth(result: SessionResult, truth: dict):
    """A table of measured versus true values for a simulated study (one row per quantity).

    Compared: each transform's target registration error over the MRI field of view (mean and max,
    mm); the iron clusters (count, recall and precision within 1 mm of the true foci in view, clusters
    on confounders); the dual-mode sites confirmed; 19F atoms and MPI iron per organ against the
    label the simulator put there (live cells and macrophages); PET and SPECT %ID per organ.

    Parameters
    ----------
    result : SessionResult
        From :func:`analyse_session` on a simulated study.
    truth : dict
        The study's ``ground_truth.json`` (:mod:`napari_immunotrack.simulate.study`).

    Returns
    -------
    pandas.DataFrame
        Columns ``quantity``, ``site``, ``measured``, ``truth``, ``unit``, ``error_percent`` (NaN where
        the truth is 0 or unknown).

    Examples
    --------
    A PET registered 1 mm off along x:

    >>> truth_pet = np.eye(4)
    >>> truth_pet[0, 3] = 1.0
    >>> ses = {"mri": {"affine": np.eye(4).tolist(), "shape": [10, 10, 10]}, "pet": {"mri_to_pet": truth_pet.tolist()}}
    >>> truth = {"subjects": {"01": {"sessions": {"ses-day1": ses}}}}
    >>> table = compare_with_truth(SessionResult("01", "day1", transforms={"pet": np.eye(4)}), truth)
    >>> table[["quantity", "measured", "unit"]].values.tolist()
    [['registration TRE mean (pet)', 1.0, 'mm'], ['registration TRE max (pet)', 1.0, 'mm']]
    """
    import pandas as pd

    ses = truth["subjects"][result.subject]["sessions"][f"ses-{result.session}"]
    rows = []
    # the confounders are recorded once, in the phantom's world; a repositioned session sees them moved by its pose
    pose = np.asarray((ses.get("session_pose") or {}).get("phantom_to_mri_world", np.eye(4)), float)
    confounders = [
        dict(c, centroid_ras_mm=(pose @ np.r_[c["centroid_ras_mm"], 1.0])[:3]) for c in truth.get("confounders", [])
    ]

    def add(quantity, site, measured, true, unit, tolerance=None):
        err = (measured - true) / true * 100 if true not in (0, None) and measured is not None else np.nan
        rows.append(
            {
                "quantity": quantity,
                "site": site,
                "measured": measured,
                "truth": true,
                "unit": unit,
                "error_percent": err,
            }
        )

    # registration: target registration error over the MRI field of view
    for datatype, matrix in result.transforms.items():
        key = f"mri_to_{datatype}"
        true = ses.get(datatype, {}).get(key)
        if true is None:
            continue
        mri_affine = np.array(ses["mri"]["affine"])
        shape = np.array(ses["mri"]["shape"])
        grid = np.stack(np.meshgrid(*[np.linspace(0.2, 0.8, 5) * (n - 1) for n in shape], indexing="ij"), -1)
        pts = grid.reshape(-1, 3) @ mri_affine[:3, :3].T + mri_affine[:3, 3]
        hom = np.c_[pts, np.ones(len(pts))]
        tre = np.linalg.norm((hom @ np.asarray(matrix).T)[:, :3] - (hom @ np.array(true).T)[:, :3], axis=1)
        add(f"registration TRE mean ({datatype})", "MRI field of view", float(tre.mean()), 0.0, "mm")
        add(f"registration TRE max ({datatype})", "MRI field of view", float(tre.max()), 0.0, "mm")

    # iron clusters: detected clusters near a true iron focus inside the MRI field of view
    if "clusters" in result.tables:
        table = result.tables["clusters"]
        found = (
            table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy() if len(table) else np.zeros((0, 3))
        )
        add("iron clusters detected", "all", float(len(found)), None, "clusters")
        # true iron foci inside the MRI field of view (their blooms are what the MRI sees)
        mri_affine = np.array(ses["mri"]["affine"])
        shape = np.array(ses["mri"]["shape"])
        foci = np.array([f["centroid_ras_mm"] for f in ses.get("foci", []) if f.get("iron_pg", 0) > 0]).reshape(-1, 3)
        if len(foci):
            idx = (np.c_[foci, np.ones(len(foci))] @ np.linalg.inv(mri_affine).T)[:, :3]
            foci = foci[np.all((idx >= 2) & (idx <= shape - 3), axis=1)]
        if len(foci) and len(found):
            d = np.linalg.norm(found[:, None, :] - foci[None, :, :], axis=2)
            recall = float(np.mean(d.min(axis=0) < 1.0))
            precision = float(np.mean(d.min(axis=1) < 1.0))
            add("iron foci found within 1 mm (recall)", f"{len(foci)} foci in view", recall, 1.0, "fraction")
            add("clusters within 1 mm of a true focus (precision)", "all", precision, 1.0, "fraction")
        decoys = confounders
        near_decoy = sum(
            1
            for c in decoys
            if len(found) and np.min(np.linalg.norm(found - np.array(c["centroid_ras_mm"]), axis=1)) < 0.5
        )
        add("clusters on a confounder (pre-existing dark spot)", "all", float(near_decoy), 0.0, "clusters")

    # dual-mode sites
    if "confirmed" in result.tables:
        table = result.tables["confirmed"]
        found = (
            table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy() if len(table) else np.zeros((0, 3))
        )
        for region in ses["mri"].get("dual_mode_regions", []):
            hit = bool(len(found)) and np.min(
                np.linalg.norm(found - np.array(region["centroid_ras_mm"]), axis=1)
            ) < max(1.0, region["radius_mm"] * 1.5)
            add("dual-mode site confirmed", region["site"], float(hit), 1.0, "yes/no")
        for c in confounders:
            hit = bool(len(found)) and np.min(np.linalg.norm(found - np.array(c["centroid_ras_mm"]), axis=1)) < 1.0
            add("confounder confirmed", c["label"], float(hit), 0.0, "yes/no")

    # PET: percent of injected dose per organ against the activity the simulator put there
    sites = ses.get("sites", {})
    for key, column, unit, quantity in (
        ("f19", "fluorine_atoms", "19F atoms", "19F atoms"),
        ("mpi", "iron_ng", "ng Fe", "MPI iron"),
    ):
        if key not in result.tables:
            continue
        label_key = "f19" if key == "f19" else "iron"
        scale = 1.0 if key == "f19" else 1e-3  # truth iron is in pg
        df = result.tables[key]
        for _, row in df.iterrows():
            site = sites.get(row["organ"])
            if not site:
                continue
            true = (
                site.get("label_live", {}).get(label_key, 0.0) + site.get("label_macrophage", {}).get(label_key, 0.0)
            ) * scale
            if true > 0:
                add(quantity, row["organ"], float(row[column]) if np.isfinite(row[column]) else None, true, unit)

    # PET and SPECT: %ID per organ against the activity the simulator put in that organ (its sources at scan
    # time over the injected activity decayed to the scan), so that nuclear readouts are compared too
    for key, quantity in (("pet", "PET %ID"), ("spect", "SPECT %ID")):
        if key not in result.tables or not isinstance(ses.get(key), dict):
            continue
        nuc = ses[key]
        injected = float(nuc.get("injected_bq") or 0.0) * float(nuc.get("decay_factor") or 0.0)
        if injected <= 0:
            continue
        per_site = {}
        for src in nuc.get("sources", []):
            name = str(src.get("name", "")).split("#")[0]
            per_site[name] = per_site.get(name, 0.0) + float(src.get("bq_at_scan", 0.0))
        for _, row in result.tables[key].iterrows():
            true = 100.0 * per_site.get(row["organ"], 0.0) / injected
            if true > 0:
                value = float(row["percent_id"])
                add(quantity, row["organ"], value if np.isfinite(value) else None, true, "%ID")
    return pd.DataFrame(rows)
