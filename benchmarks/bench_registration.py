"""Benchmark of multimodal registration against known transforms (issue 5).

Run:  .venv/bin/python benchmarks/bench_registration.py [--seeds 8] [--repeats 3] [--quick]

What it measures, each figure printed beside its requirement:

1. MNI152 T1 template (2 mm, shipped in nilearn) as fixed against a PET-like
   image derived from the same template (FDG-like contrast from the grey and
   white matter maps shipped beside it, 6 mm FWHM blur, 3 mm grid, Gaussian
   noise of 5 % of the maximum) moved by a random rigid transform of up to
   10 degrees per axis and 10 mm: target registration error (TRE) over 5000
   points inside the brain, for this package's method and for SimpleITK's
   textbook multimodal recipe (Mattes MI 50 bins, 1 % random sampling,
   gradient descent, shrink 4/2/1), and the time of both on the same pair.
2. The simulator's mouse MRI/PET pairs (``simulate.registration_pair``).
3. A simulated sample study (``simulate.make_study``, size "sample"): the
   MRI (T2w) against the PET, SPECT, MPI and 19F of a session, against the
   study's ``ground_truth.json``.
4. The whole ``immunotrack register`` command (start-up included) against
   the recipe's time.
5. Capture range: random poses within +-30 degrees per axis and +-20 mm (simulator
   MRI vs PET/SPECT), the share captured (TRE <= 1 mm at every landmark) and the
   time with the orientation search (the default) and without it, and the
   search's time cost on small misalignments.
6. Landmarks: 6 noisy pairs, fiducial registration error against its expectation.
7. Capture on sparse images: the sample's PET moved by 12 random poses (+-30 degrees, +-20 mm).
8. Repositioned studies (``--only-repositioned``): PET, SPECT and MPI of labelled cells (sparse hot
   spots) against the MRI of simulated sessions each in its own pose, TRE against the truth.

Times: the machine may be shared, so each method runs ``--repeats`` times,
interleaved with the other, and the median is kept (wall clock and CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from napari_immunotrack import registration as reg
from napari_immunotrack.errors import ImmunotrackWarning, InputError
from napari_immunotrack.volume import Volume

warnings.simplefilter("ignore", ImmunotrackWarning)


# ----------------------------------------------------------------------------- the textbook recipe
def textbook(fixed: Volume, moving: Volume) -> np.ndarray:
    """SimpleITK's introductory multimodal recipe (notebook 60_Registration_Introduction), as published.

    Returns the fixed-to-moving RAS matrix. The random sampling is seeded from
    the clock, as in the notebook, so its result varies from run to run.
    """
    import SimpleITK as sitk

    f = reg.volume_to_sitk(fixed, sitk.sitkFloat32)
    m = reg.volume_to_sitk(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(0.01)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsGradientDescent(
        learningRate=1.0, numberOfIterations=100, convergenceMinimumValue=1e-6, convergenceWindowSize=10
    )
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetShrinkFactorsPerLevel(shrinkFactors=[4, 2, 1])
    r.SetSmoothingSigmasPerLevel(smoothingSigmas=[2, 1, 0])
    r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    r.SetInitialTransform(initial, inPlace=False)
    tx = r.Execute(f, m)
    return reg.sitk_transform_to_matrix(tx)


def ours(fixed: Volume, moving: Volume) -> np.ndarray:
    return reg.register(fixed, moving, transform="rigid").fixed_to_moving


# ----------------------------------------------------------------------------- pairs
def euler(angles_deg, translation, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    c = np.asarray(center, float)
    m[:3, 3] = c - m[:3, :3] @ c + np.asarray(translation, float)
    return m


_MNI = {}


def _nifti_volume(img, **kw) -> Volume:
    reverse = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
    return Volume(np.asarray(img.get_fdata(), np.float32).transpose(2, 1, 0), img.affine @ reverse, **kw)


def mni_pair(seed: int):
    """(fixed MRI, moving PET-like, true fixed_to_moving, brain points) for one seed."""
    from scipy import ndimage

    if not _MNI:
        from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

        _MNI["t1"] = _nifti_volume(load_mni152_template(resolution=2), modality="MR", name="mni152_t1")
        _MNI["gm"] = _nifti_volume(load_mni152_gm_template(resolution=2)).numpy()
        _MNI["wm"] = _nifti_volume(load_mni152_wm_template(resolution=2)).numpy()
    t1 = _MNI["t1"]
    rng = np.random.default_rng(seed)
    truth = euler(rng.uniform(-10, 10, 3), rng.uniform(-10, 10, 3))
    brain = t1.numpy() > 0.05
    # FDG-like: grey matter 1, white matter 0.3, CSF 0.05; blurred to 6 mm FWHM
    pet = 1.0 * _MNI["gm"] + 0.3 * _MNI["wm"] + 0.05 * brain
    pet = ndimage.gaussian_filter(pet.astype(np.float32), 6.0 / 2.3548 / 2.0)
    lo, hi = t1.bounds_world()
    shape = tuple(int(n) for n in np.ceil((hi - lo)[::-1] / 3.0) + 1)  # (S, A, R) axes at 3 mm
    affine = np.zeros((4, 4))
    affine[2, 0] = affine[1, 1] = affine[0, 2] = 3.0
    affine[:3, 3] = lo
    affine[3, 3] = 1
    moving = t1.replace(data=pet).resample_to((shape, affine), transform=np.linalg.inv(truth))
    noisy = moving.numpy() + rng.normal(0, 0.05 * moving.numpy().max(), moving.spatial_shape)
    moving = moving.replace(data=noisy.astype(np.float32), modality="PT", unit="a.u.", name="pet_like")
    idx = np.argwhere(brain)
    pts = t1.index_to_world(idx[np.random.default_rng(1000 + seed).choice(len(idx), 5000, replace=False)])
    return t1, moving, truth, pts


def sim_pair(seed: int):
    from napari_immunotrack.simulate import registration_pair

    rng = np.random.default_rng(seed)
    d = registration_pair(seed=seed, rotation_deg=rng.uniform(-10, 10, 3), translation_mm=rng.uniform(-3, 3, 3))
    fixed = d["fixed"]
    data = fixed.numpy()
    idx = np.argwhere(data > np.percentile(data, 60))  # the body (air is the darker ~half)
    pts = fixed.index_to_world(idx[np.random.default_rng(1000 + seed).choice(len(idx), 5000, replace=False)])
    return fixed, d["moving"], d["fixed_to_moving"], pts


def tre(estimate, truth, points):
    ph = np.c_[points, np.ones(len(points))]
    d = np.linalg.norm((ph @ estimate.T - ph @ truth.T)[:, :3], axis=1)
    return float(d.mean()), float(d.max())


def timed(fn, *args):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


def compare(name, pairs, repeats):
    """Both methods on every pair: TRE of the first run, median times of ``repeats`` interleaved runs."""
    print(f"\n== {name}: {len(pairs)} pairs, TRE over 5000 points; times are medians of {repeats} interleaved runs")
    print(
        f"{'pair':>5} {'identity':>9} | {'ours mean/max mm':>17} {'wall s':>7} {'cpu s':>6} | "
        f"{'recipe mean/max mm':>19} {'wall s':>7} {'cpu s':>6}"
    )
    rows = []
    for i, (fixed, moving, truth, pts) in enumerate(pairs):
        runs = {"ours": [], "recipe": []}
        for _ in range(repeats):
            for key, fn in (("ours", ours), ("recipe", textbook)):
                runs[key].append(timed(fn, fixed, moving))
        row = {"identity": tre(np.eye(4), truth, pts)[0]}
        for key, rr in runs.items():
            row[key] = (
                *tre(rr[0][0], truth, pts),
                float(np.median([r[1] for r in rr])),
                float(np.median([r[2] for r in rr])),
            )
        rows.append(row)
        o, t = row["ours"], row["recipe"]
        print(
            f"{i:>5} {row['identity']:9.2f} | {o[0]:8.2f} /{o[1]:6.2f} {o[2]:7.2f} {o[3]:6.2f} | "
            f"{t[0]:9.2f} /{t[1]:6.2f} {t[2]:7.2f} {t[3]:6.2f}"
        )
    o = np.array([r["ours"] for r in rows])
    t = np.array([r["recipe"] for r in rows])
    print(
        f"  ours:   mean TRE {o[:, 0].mean():.2f} mm (worst pair {o[:, 0].max():.2f}; requirement <= 1 mm), "
        f"max TRE {o[:, 1].max():.2f} mm (requirement <= 2 mm)"
    )
    print(
        f"  recipe: mean TRE {t[:, 0].mean():.2f} mm (worst pair {t[:, 0].max():.2f}), max TRE {t[:, 1].max():.2f} mm"
    )
    wall = np.median(o[:, 2] / t[:, 2])
    cpu = np.median(o[:, 3] / t[:, 3])
    print(f"  time ours/recipe: wall {wall:.2f}x, cpu {cpu:.2f}x (median over pairs; requirement <= 1)")
    return o, t


def study_pairs(root: Path):
    """The sample study's MRI (T2w) against each other modality of its first post-injection session."""
    from napari_immunotrack.io import load_volume

    truth = json.loads((root / "ground_truth.json").read_text())
    subject = sorted(truth["subjects"])[0]
    sessions = truth["subjects"][subject]["sessions"]
    session = next(k for k in sorted(sessions) if "pet" in sessions[k])
    ses = root / f"sub-{subject}" / session
    mri = load_volume(next((ses / "anat").glob("*_T2w.nii.gz")))
    data = mri.numpy()
    idx = np.argwhere(data > np.percentile(data, 50))
    pts = mri.index_to_world(idx[np.random.default_rng(0).choice(len(idx), 5000, replace=False)])
    paths = {
        "pet": ses / "pet",
        "spect": ses / "spect",
        "mpi": next((ses / "mpi").glob("*_mpi.nii.gz")),
        "f19": next((ses / "f19").glob("*_19F.nii.gz")),
    }
    for key, path in paths.items():
        yield key, mri, load_volume(path), np.array(sessions[session][key][f"mri_to_{key}"]), pts


def run_study(root: Path):
    print(
        f"\n== sample study {root} (fixed: MRI T2w; truth: ground_truth.json mri_to_<modality>; TRE over 5000 "
        "body points of the MRI)"
    )
    pairs = list(study_pairs(root))
    registered = {}
    for key, mri, moving, truth, pts in pairs:
        line = f"  {key:6s} {str(moving.spatial_shape):15s} identity {tre(np.eye(4), truth, pts)[0]:5.2f} mm -> "
        try:
            (result, wall, cpu) = timed(reg.register, mri, moving)
            mean, worst = tre(result.fixed_to_moving, truth, pts)
            line += f"ours {mean:.2f}/{worst:.2f} mm (mean/max) in {wall:.2f} s"
            registered[key] = moving.replace(affine=result.apply_to_affine(moving.affine))
        except InputError as exc:
            line += f"refused: {str(exc)[:100]}..."
        try:
            mean, worst = tre(textbook(mri, moving), truth, pts)
            line += f" | recipe {mean:.2f}/{worst:.2f} mm"
        except RuntimeError as exc:
            line += f" | recipe failed ({str(exc).splitlines()[-1][:60]})"
        print(line)
    if "pet" not in registered:
        return
    print(
        "  hot-spot images registered to the registered PET (metric around the PET's hot spots), "
        "TRE against mri_to_<modality>:"
    )
    for key, _mri, moving, truth, pts in pairs:
        if key == "pet":
            continue
        line = f"  {key:6s} -> PET: "
        try:
            (result, wall, cpu) = timed(reg.register, registered["pet"], moving)
            mean, worst = tre(result.fixed_to_moving, truth, pts)
            line += f"ours {mean:.2f}/{worst:.2f} mm (mean/max) in {wall:.2f} s"
        except InputError as exc:
            line += f"refused: {str(exc)[:100]}..."
        print(line)
    print("  (19F shares the MRI's scanner and session: its truth is the identity, which needs no registration)")


def grid_tre(matrix, session: dict, key: str):
    """Mean and max TRE (mm) over a 5x5x5 grid of the MRI field of view, as ``immunotrack demo`` reports it."""
    affine, shape = np.array(session["mri"]["affine"]), np.array(session["mri"]["shape"])
    grid = np.stack(np.meshgrid(*[np.linspace(0.2, 0.8, 5) * (n - 1) for n in shape], indexing="ij"), -1)
    pts = grid.reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]
    return tre(np.asarray(matrix), np.array(session[key][f"mri_to_{key}"]), pts)


def run_repositioned(seeds, days=(1, 3, 7)):
    """Hot-spot images of repositioned sessions (issue 18 item 3): PET and SPECT registered to the MRI, MPI to
    the PET already placed (as the pipeline does), TRE against the simulator's truth; studies of ``seeds``
    (2024 is the bundled sample's seed) simulated with ``StudyDesign(repositioned=True)``."""
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.simulate.study import StudyDesign, make_study

    print(
        f"\n== repositioned studies (size sample, seeds {list(seeds)}, days {list(days)}): PET/SPECT -> MRI, "
        "MPI -> registered PET; TRE mean/max over the MRI field of view (5x5x5 grid), mm"
    )
    means, worst, cpu = [], [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            root = make_study(
                Path(tmp) / f"s{seed}", seed=seed, timepoints_days=days, size="sample",
                design=StudyDesign(repositioned=True),
            )  # fmt: skip
            truth = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]["sessions"]
            for day in days:
                session, folder = truth[f"ses-day{day:g}"], root / "sub-01" / f"ses-day{day:g}"
                mri = load_volume(next((folder / "anat").glob("*_T2w.nii.gz")))
                line, pet_in_mri = f"  seed {seed:5d} day {day:g}:", None
                for key in ("pet", "spect", "mpi"):
                    files = sorted((folder / key).glob("*.nii.gz"))
                    moving = load_volume(files[0] if files else folder / key)
                    fixed = pet_in_mri if key == "mpi" and pet_in_mri is not None else mri
                    try:
                        result, _, c = timed(reg.register, fixed, moving)
                    except InputError as exc:
                        line += f" {key} refused ({str(exc)[:40]})"
                        continue
                    cpu += c
                    mean, top = grid_tre(result.fixed_to_moving, session, key)
                    means.append(mean)
                    worst.append(top)
                    line += f" {key} {mean:.3f}/{top:.3f}"
                    if key == "pet":
                        pet_in_mri = moving.replace(affine=np.linalg.inv(result.fixed_to_moving) @ moving.affine)
                print(line)
    m = np.array(means)
    print(
        f"  {len(m)} pairs: mean of the mean TREs {m.mean():.3f} mm, median {np.median(m):.3f} mm, worst mean "
        f"{m.max():.3f} mm, worst max {max(worst):.3f} mm; {int(np.sum(m > 1.0))} above 1 mm; registration CPU "
        f"{cpu:.1f} s"
    )


def run_sparse_capture(poses: int = 12):
    """Capture range on sparse hot-spot images: the bundled sample's PET (days 1, 3, 7; nonzero in 2-15 % of its
    voxels) moved by random poses within +-30 degrees per axis and +-20 mm about the MRI's centre."""
    from napari_immunotrack.data import sample_study_root
    from napari_immunotrack.io import load_volume

    root = sample_study_root()
    sessions = json.loads((root / "ground_truth.json").read_text())["subjects"]["01"]["sessions"]
    print(
        f"\n== capture sweep on the sample's sparse PET ({root}): {poses} random poses within +-30 deg per axis and "
        "+-20 mm; captured = TRE max over the MRI field of view <= 1 mm"
    )
    rng = np.random.default_rng(18)
    worst = []
    for k in range(poses):
        day = ("day1", "day3", "day7")[k % 3]
        session, folder = sessions[f"ses-{day}"], root / "sub-01" / f"ses-{day}"
        mri = load_volume(next((folder / "anat").glob("*_T2w.nii.gz")))
        pet = load_volume(folder / "pet")
        centre = mri.index_to_world((np.array(mri.spatial_shape) - 1) / 2.0).ravel()
        rotation, shift = rng.uniform(-30, 30, 3), rng.uniform(-20, 20, 3)
        move = euler(rotation, shift, center=centre)
        moved = {"mri": session["mri"], "pet": {"mri_to_pet": (move @ np.array(session["pet"]["mri_to_pet"])).tolist()}}
        try:
            result, wall, _ = timed(reg.register, mri, pet.replace(affine=move @ pet.affine))
            mean, top = grid_tre(result.fixed_to_moving, moved, "pet")
        except InputError:
            mean = top = wall = float("nan")
        worst.append(top)
        print(
            f"  {k:2d} {day} {str(rotation.round(1).tolist()):>22} {str(shift.round(1).tolist()):>22} "
            f"TRE {mean:.2f}/{top:.2f} mm, {wall:.2f} s"
        )
    worst = np.array(worst)
    print(f"  captured {int(np.sum(worst <= 1.0))}/{poses} (requirement 100 %)")


def run_cli(repeats: int):
    from napari_immunotrack.io import save_volume

    fixed, moving, truth, pts = mni_pair(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_volume(fixed, tmp / "mri.nii.gz")
        save_volume(moving, tmp / "pet.nii.gz")
        exe = Path(sys.executable).with_name("immunotrack")
        # as an installed package runs: byte-code cached (in a temporary folder, not in the source tree)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        cli, recipe = [], []
        for k in range(repeats + 1):
            out = tmp / f"t{k}.tfm"
            t0 = time.perf_counter()
            done = subprocess.run(
                [str(exe), "register", str(tmp / "mri.nii.gz"), str(tmp / "pet.nii.gz"), "-o", str(out)],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode != 0:
                print(done.stderr)
                return
            if k == 0:
                continue  # the first run writes the byte-code cache
            cli.append(time.perf_counter() - t0)
            recipe.append(timed(textbook, fixed, moving)[1])
        from napari_immunotrack.io.transforms import read_transform

        mean, worst = tre(read_transform(out), truth, pts)
        c, r = float(np.median(cli)), float(np.median(recipe))
        print(f"\n== command line: immunotrack register on MNI pair 0 (NIfTI in, .tfm out), median of {repeats}")
        print(
            f"  whole command {c:.2f} s (start-up, reading, registration, writing); recipe in-process {r:.2f} s; "
            f"ratio {c / r:.2f}x (requirement <= 2); TRE of the written file {mean:.2f}/{worst:.2f} mm"
        )


def run_capture(poses: int, repeats: int):
    """Capture range (issue 18): random poses within +-30 degrees per axis and +-20 mm, PET and SPECT
    alternating, registered with the orientation search (default) and without it (translation start only)."""
    from napari_immunotrack.simulate import registration_pair

    print(
        f"\n== capture sweep: simulator mouse MRI vs PET/SPECT, {poses} random poses within +-30 deg per axis and "
        "+-20 mm; captured = TRE at every landmark <= 1 mm"
    )
    print(
        f"{'pose':>4} {'mod':>3} {'rotation deg':>20} {'shift mm':>20} | {'search TRE max':>14} {'s':>6} "
        f"{'doubt':>5} | {'no search TRE max':>17} {'s':>6}"
    )
    rng = np.random.default_rng(18)
    rows = []
    for k in range(poses):
        modality = ("PT", "NM")[k % 2]
        rotation, shift = rng.uniform(-30, 30, 3), rng.uniform(-20, 20, 3)
        d = registration_pair(seed=200 + k, rotation_deg=rotation, translation_mm=shift, modality=modality)
        pts = d["landmarks_fixed"]
        row = {}
        for key, kw in (("search", {}), ("none", {"capture_range_deg": 0, "force": True})):
            times, worst, doubtful = [], float("nan"), None
            for _ in range(repeats):
                try:
                    result, wall, _ = timed(lambda d=d, kw=kw: reg.register(d["fixed"], d["moving"], **kw))
                    worst = tre(result.fixed_to_moving, d["fixed_to_moving"], pts)[1]
                    doubtful = result.parameters["doubtful"]
                except InputError:
                    wall = float("nan")
                times.append(wall)
            row[key] = (worst, float(np.nanmedian(times)) if np.isfinite(times).any() else float("nan"), doubtful)
        rows.append(row)
        s_, n_ = row["search"], row["none"]
        print(
            f"{k:>4} {modality:>3} {str(rotation.round(1).tolist()):>20} {str(shift.round(1).tolist()):>20} | "
            f"{s_[0]:14.2f} {s_[1]:6.2f} {str(bool(s_[2])):>5} | {n_[0]:17.2f} {n_[1]:6.2f}"
        )
    s_worst = np.array([r["search"][0] for r in rows])
    n_worst = np.array([r["none"][0] for r in rows])
    s_time = np.array([r["search"][1] for r in rows])
    n_time = np.array([r["none"][1] for r in rows])
    print(
        f"  with search:    {np.mean(s_worst <= 1.0):.0%} captured ({int(np.sum(s_worst <= 1.0))}/{poses}; requirement "
        f"100 %), median {np.nanmedian(s_time):.2f} s per pair; flagged doubtful "
        f"{sum(bool(r['search'][2]) for r in rows)}/{poses}"
    )
    print(
        f"  without search: {np.mean(n_worst <= 1.0):.0%} captured ({int(np.sum(n_worst <= 1.0))}/{poses}), "
        f"median {np.nanmedian(n_time):.2f} s per pair"
    )

    # the price of the search where it is not needed: small misalignments (the figures of section 2)
    print("  cost of the search on small misalignments (<= 10 deg, 3 mm), simulator pairs:")
    ratios = []
    for seed in range(min(poses, 4)):
        fixed, moving, truth, pts = sim_pair(seed)
        on = [timed(reg.register, fixed, moving) for _ in range(repeats)]
        off = [timed(lambda f=fixed, m=moving: reg.register(f, m, capture_range_deg=0)) for _ in range(repeats)]
        t_on, t_off = float(np.median([r[1] for r in on])), float(np.median([r[1] for r in off]))
        ratios.append(t_on / t_off)
        print(
            f"    pair {seed}: search {t_on:.2f} s (TRE {tre(on[0][0].fixed_to_moving, truth, pts)[0]:.2f} mm), "
            f"no search {t_off:.2f} s (TRE {tre(off[0][0].fixed_to_moving, truth, pts)[0]:.2f} mm)"
        )
    print(f"  search / no search time: median {np.median(ratios):.2f}x")


def run_landmarks(trials: int = 1000):
    rng = np.random.default_rng(0)
    sigma = 0.5
    fle = np.sqrt(6) * sigma  # RMS 3D localisation error of a pair: 0.5 mm per axis on each image
    fre2, tres = [], []
    for _ in range(trials):
        truth = euler(rng.uniform(-30, 30, 3), rng.uniform(-20, 20, 3))
        p = rng.uniform(-40, 40, (6, 3))
        q = p @ truth[:3, :3].T + truth[:3, 3]
        r = reg.register_landmarks(p + rng.normal(0, sigma, p.shape), q + rng.normal(0, sigma, q.shape))
        fre2.append(np.mean(r.fre_mm**2))
        tres.append(tre(r.fixed_to_moving, truth, np.zeros((1, 3)))[0])
    expected = reg.expected_fre(fle, 6, "rigid")
    print(f"\n== landmarks: 6 pairs, 0.5 mm noise per axis on each image, {trials} trials")
    print(
        f"  RMS FRE {np.sqrt(np.mean(fre2)):.3f} mm, expected sqrt(1 - 2/N) * FLE = {expected:.3f} mm; "
        f"mean TRE at the landmarks' centre region {np.mean(tres):.3f} mm "
        f"(expected about FLE/sqrt(N) = {fle / np.sqrt(6):.3f} mm)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="random transforms per data set (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method and pair (default 3)")
    parser.add_argument("--quick", action="store_true", help="3 seeds, 1 repeat")
    parser.add_argument(
        "--capture-poses",
        type=int,
        default=10,
        help="random far poses (+-30 deg, +-20 mm) of the capture sweep (default 10)",
    )
    parser.add_argument("--only-capture", action="store_true", help="run the capture sweep only")
    parser.add_argument(
        "--repositioned",
        default="2024,7,11,3,5",
        help="seeds of the simulated repositioned studies (hot-spot images vs MRI; default 2024,7,11,3,5)",
    )
    parser.add_argument("--only-repositioned", action="store_true", help="run the repositioned studies only")
    parser.add_argument("--study", help="a simulated study folder with ground_truth.json (default: simulate one)")
    args = parser.parse_args(argv)
    seeds, repeats = (3, 1) if args.quick else (args.seeds, args.repeats)
    import SimpleITK as sitk

    print(
        f"SimpleITK {sitk.Version.VersionString()}, {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    repositioned = [int(v) for v in str(args.repositioned).split(",") if v.strip()]
    if args.only_repositioned:
        run_repositioned(repositioned[:2] if args.quick else repositioned)
        return 0
    if args.only_capture:
        run_capture(args.capture_poses, 1 if args.quick else min(repeats, 2))
        run_sparse_capture(4 if args.quick else 12)
        return 0
    compare(
        "MNI152 T1 (2 mm) vs PET-like (3 mm, 6 mm FWHM, 5 % noise), <= 10 deg and 10 mm",
        [mni_pair(s) for s in range(seeds)],
        repeats,
    )
    compare(
        "simulator mouse T2w MRI (0.4 mm) vs PET (0.6 mm), <= 10 deg and 3 mm",
        [sim_pair(s) for s in range(seeds)],
        repeats,
    )
    if args.study:
        run_study(Path(args.study))
    else:
        from napari_immunotrack.simulate import make_study

        with tempfile.TemporaryDirectory() as tmp:
            run_study(make_study(Path(tmp) / "study", timepoints_days=(1,), size="sample"))
    run_cli(max(repeats, 3))
    run_capture(args.capture_poses if not args.quick else 4, 1 if args.quick else min(repeats, 2))
    run_sparse_capture(4 if args.quick else 12)
    run_repositioned(repositioned[:2] if args.quick else repositioned)
    run_landmarks()
    print(f"\npeak memory of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
