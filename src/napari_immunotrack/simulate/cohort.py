"""A simulated cohort: N animals with biological variation, written like a real study.

:func:`make_cohort` builds on :mod:`.study`: every subject gets its own
anatomy (organ sizes and positions, cell foci: :func:`~.study.make_subject`)
and its own biology, drawn from log-normal distributions around the
:class:`~.study.StudyDesign` defaults:

==============  ==========================================================
factor          what varies (independently per subject, and per site)
==============  ==========================================================
``cells``       number of CAR-T cells and of vaccine DCs injected
``homing``      homing rate to each site (``k_in``)
``doubling``    division time in each site where cells divide
``death``       death rate in each site
``weight``      body weight (PET SUV normalisation)
==============  ==========================================================

The per-cell label loads (iron, 19F atoms, activity) are *not* varied: a
lab measures them on the labelled batch, and the analysis is given them.

Layout: the one of :func:`~.study.make_study` (``sub-01/ses-day0/anat/...``),
with one cohort-level ``ground_truth.json`` (``subjects[label]`` holds each
animal's sessions, as for a study, plus its ``variation`` factors and
design) and a BIDS ``participants.tsv`` (one row per animal: weight, cells
injected, the factors drawn).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputExistsError
from ..outputs import atomic_output_dir
from ..progress import report, scaled

#: Log-normal SD (about the coefficient of variation) of each factor by default.
DEFAULT_VARIATION = {"cells": 0.3, "homing": 0.25, "doubling": 0.2, "death": 0.2, "weight": 0.1}


def _variation(variation) -> dict:
    """The factors' SDs from ``None`` (defaults), a number (defaults scaled by it) or a mapping."""
    if variation is None:
        return dict(DEFAULT_VARIATION)
    if isinstance(variation, (int, float)) and not isinstance(variation, bool):
        if not np.isfinite(variation) or variation < 0:
            raise InputError(f"variation={variation} must be a number >= 0 (a scale of the default spreads).")
        return {k: v * float(variation) for k, v in DEFAULT_VARIATION.items()}
    if isinstance(variation, Mapping):
        out = {k: 0.0 for k in DEFAULT_VARIATION}
        for k, v in variation.items():
            if k not in DEFAULT_VARIATION:
                raise InputError(f"variation factor {k!r} is unknown; use {', '.join(DEFAULT_VARIATION)}.")
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise InputError(f"variation[{k!r}]={v!r} must be a number >= 0 (log-normal SD).")
            out[k] = float(v)
        return out
    raise InputError(f"variation={variation!r} must be None, a number or a mapping of {sorted(DEFAULT_VARIATION)}.")


def vary_design(design, rng: np.random.Generator, variation: Mapping[str, float]):
    """A copy of ``design`` (a :class:`~.study.StudyDesign`) with one animal's biology drawn.

    Each factor is log-normal with mean one (the cohort's average stays the design's value).

    Parameters
    ----------
    design : StudyDesign
        The cohort's design (not changed).
    rng : numpy.random.Generator
        The random source.
    variation : mapping of str to float
        Log-normal SD of each factor: "cells" (cells injected), "homing" (per site), "doubling"
        (per dividing site), "death" (per site), "weight" (body weight); missing keys do not vary.

    Returns
    -------
    (design, factors): the new design and the multiplicative factors drawn (for the truth).

    Examples
    --------
    >>> from napari_immunotrack.simulate.study import StudyDesign
    >>> animal, factors = vary_design(StudyDesign(), np.random.default_rng(0), {"cells": 0.2, "weight": 0.1})
    >>> round(animal.car_t.cells), round(animal.patient_weight_kg, 5), round(factors["cells"], 4)
    (5025797, 0.02455, 1.0052)
    """
    from dataclasses import replace

    def ln(key, size=None):
        sd = variation.get(key, 0.0)
        # mean-one log-normal: the cohort's average stays at the design's value
        return np.exp(rng.normal(-0.5 * sd * sd, sd, size)) if sd > 0 else (np.ones(size) if size else 1.0)

    factors = {"cells": float(ln("cells")), "weight": float(ln("weight"))}
    car = copy.deepcopy(design.car_t)
    dc = copy.deepcopy(design.dc_vaccine)
    car.cells = car.cells * factors["cells"]
    dc.cells = dc.cells * factors["cells"]
    for pop in (car, dc):
        sites = sorted(pop.k_in)
        f_home = ln("homing", len(sites))
        pop.k_in = {s: pop.k_in[s] * float(f) for s, f in zip(sites, f_home)}
        div = sorted(s for s, t in pop.doubling_days.items() if t)
        f_div = ln("doubling", len(div)) if div else []
        pop.doubling_days = dict(pop.doubling_days, **{s: pop.doubling_days[s] * float(f) for s, f in zip(div, f_div)})
        dead = sorted(pop.death)
        f_death = ln("death", len(dead))
        pop.death = {s: pop.death[s] * float(f) for s, f in zip(dead, f_death)}
        factors[pop.name] = {
            "homing": dict(zip(sites, np.round(f_home, 6).tolist())),
            "doubling": dict(zip(div, np.round(f_div, 6).tolist())),
            "death": dict(zip(dead, np.round(f_death, 6).tolist())),
        }
    new = replace(design, car_t=car, dc_vaccine=dc, patient_weight_kg=design.patient_weight_kg * factors["weight"])
    return new, factors


def make_cohort(
    out_dir,
    n_subjects: int = 8,
    seed: int = 0,
    timepoints_days: Sequence[float] = (0, 1, 3),
    size: str = "tiny",
    variation: None | float | Mapping[str, float] = None,
    overwrite: bool = False,
    progress=None,
    design=None,
) -> Path:
    """Simulate and write a cohort of ``n_subjects`` animals with biological variation.

    Parameters
    ----------
    out_dir : folder to create (refused if it exists, unless ``overwrite``).
    n_subjects : number of animals (sub-01, sub-02, ...).
    seed : everything (anatomy, biology, noise, scanner poses) follows from it.
    timepoints_days : days after injection; 0 = the baseline MRI before injection.
    size : "tiny" (tests, seconds per session), "sample" or "full" (see :data:`.study.SIZES`).
    variation : None (the defaults of :data:`DEFAULT_VARIATION`), a number (the defaults times it;
        0 = identical biology, only the anatomy differs) or ``{factor: log-normal SD}``.
    overwrite : replace an existing ``out_dir``.
    progress : callable(fraction, message), optional.
    design : :class:`~.study.StudyDesign` around which animals vary (defaults documented there).

    Returns
    -------
    Path of the cohort folder.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_cohort(Path(tmp) / "cohort", n_subjects=2, timepoints_days=(0,))
    ...     sorted(p.name for p in root.iterdir())
    ['dataset_description.json', 'ground_truth.json', 'participants.tsv', 'sub-01', 'sub-02']
    """
    from . import study as S

    design = design or S.StudyDesign()
    design.check()
    S.check_size(size)
    days = S.check_timepoints(timepoints_days)
    spreads = _variation(variation)
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) or n_subjects < 1:
        raise InputError(f"n_subjects={n_subjects!r} must be a whole number, at least 1.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputExistsError(f"{out_dir} already exists; choose another folder or pass overwrite=True.")
    # written in a temporary folder renamed at the end: a crash leaves the old folder or none, never half
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        truth = {
            "description": "Ground truth of a napari-immunotrack simulated cohort (see simulate/cohort.py); "
            "each subject as in a simulated study (simulate/study.py), plus its variation.",
            "conventions": {
                "world": "RAS millimetres; the MRI world is the phantom world",
                "transforms": "mri_to_<modality>: MRI world -> modality world (RAS mm)",
                "times": "days after injection; day 0 is the baseline MRI",
                "labels": S.LABEL_UNITS_DOC,
                "variation": "multiplicative factors drawn per subject (log-normal, mean 1)",
            },
            "seed": int(seed),
            "size": size,
            "timepoints_days": days,
            "n_subjects": int(n_subjects),
            "variation_sd": spreads,
            "design": S.design_to_dict(design),
            "subjects": {},
            "confounders": [],
        }
        files: list = []
        participants = []
        n_steps = int(n_subjects) * len(days)
        done = 0
        for index in range(1, int(n_subjects) + 1):
            rng = np.random.default_rng([int(seed), index, 1109])
            sub_design, factors = vary_design(design, rng, spreads)
            subject = S.make_subject(index, seed)
            mouse = subject.mouse
            confounders = [
                {
                    "kind": "haemorrhage",
                    "label": "haemorrhage",
                    "centroid_ras_mm": mouse.confounders["haemorrhage"].center.tolist(),
                },
                {"kind": "air", "label": "gut_gas", "centroid_ras_mm": mouse.confounders["gut_gas"].center.tolist()},
            ]
            car = sub_design.car_t
            sub_truth = {
                "seed": subject.seed,
                "variation": factors,
                "design": S.design_to_dict(sub_design),
                "sites": {
                    k: {"label": v["label"], "center_ras_mm": v["center_mm"].tolist(), "radius_mm": v["radius_mm"]}
                    for k, v in mouse.sites.items()
                },
                "confounders": confounders,
                "injected": {
                    "car_t_cells": car.cells,
                    "car_t_label_per_cell": car.label_per_cell,
                    "dc_vaccine_cells": sub_design.dc_vaccine.cells,
                    "injection_datetime": sub_design.injection_datetime,
                    "doses_bq": {
                        "89Zr-oxine": car.cells * car.label_per_cell["zr89"],
                        "111In-oxine": car.cells * car.label_per_cell["in111"],
                    },
                    "iron_ng": car.cells * car.label_per_cell["iron"] / 1000.0,
                    "patient_weight_kg": sub_design.patient_weight_kg,
                },
                "sessions": {},
            }
            if index == 1:
                truth["confounders"] = confounders
            for day in days:
                sub_progress = scaled(progress, done / n_steps, (done + 0.9) / n_steps)
                res = S.simulate_timepoint(day, subject=subject, size=size, design=sub_design, progress=sub_progress)
                ses_dir = tmp / f"sub-{subject.label}" / f"ses-{S.session_name(day)}"
                ses_dir.mkdir(parents=True, exist_ok=True)
                S.write_timepoint(res, ses_dir, subject.label, day, seed, sub_design, files)
                sub_truth["sessions"][f"ses-{S.session_name(day)}"] = res["truth"]
                done += 1
                report(progress, done / n_steps, f"sub-{subject.label} day {day:g} written")
            truth["subjects"][subject.label] = sub_truth
            participants.append(
                (
                    f"sub-{subject.label}",
                    sub_design.patient_weight_kg,
                    car.cells,
                    sub_design.dc_vaccine.cells,
                    factors["cells"],
                    factors["weight"],
                )
            )
        truth["files"] = sorted(os.path.relpath(f, tmp) for f in files)
        S.write_truth_json(tmp / "ground_truth.json", truth)
        S.write_truth_json(
            tmp / "dataset_description.json",
            {
                "Name": "napari-immunotrack simulated cohort",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [
                    {
                        "Name": "napari_immunotrack.simulate.cohort.make_cohort",
                        "Description": f"n_subjects={n_subjects}, seed={seed}, size={size}, "
                        f"timepoints_days={days}, variation={spreads}",
                    }
                ],
            },
        )
        (tmp / "participants.tsv").write_text(
            "participant_id\tweight_kg\tcar_t_cells\tdc_vaccine_cells\tcells_factor\tweight_factor\n"
            + "".join(f"{p}\t{w:.6g}\t{c:.6g}\t{d:.6g}\t{fc:.6f}\t{fw:.6f}\n" for p, w, c, d, fc, fw in participants),
            encoding="utf-8",
        )
    return out_dir


def _main(argv=None) -> int:
    """``python -m napari_immunotrack.simulate.cohort OUT_DIR [--subjects N] [--days 0 1 3] [--size tiny]``."""
    import argparse
    import sys

    from ..errors import one_line
    from ..progress import text_progress

    parser = argparse.ArgumentParser(
        prog="python -m napari_immunotrack.simulate.cohort",
        description="Write a simulated cohort (N animals with biological variation).",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--subjects", type=int, default=8, help="number of animals (default 8)")
    parser.add_argument(
        "--days",
        type=float,
        nargs="+",
        default=[0, 1, 3],
        help="timepoints, days after injection; 0 = baseline (default 0 1 3)",
    )
    parser.add_argument("--size", default="tiny", help="tiny (default), sample or full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variation", type=float, default=1.0, help="scale of the default biological spreads")
    args = parser.parse_args(argv)
    try:
        root = make_cohort(
            args.out_dir,
            n_subjects=args.subjects,
            seed=args.seed,
            timepoints_days=args.days,
            size=args.size,
            variation=args.variation,
            progress=text_progress("cohort"),
        )
    except InputError as exc:
        sys.stderr.write(f"error: {one_line(exc)}\n")
        return 2
    print(f"{args.subjects} simulated subjects x days {args.days} ({args.size}) -> {root}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
