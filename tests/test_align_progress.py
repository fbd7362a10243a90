"""Progress and cancel inside session alignment (issue 18: the Registration dock could cancel only between
stages). ``align_mri(progress=...)`` reports every optimiser iteration; a callback raising Cancelled stops the
optimiser at its next iteration, so a cancel takes effect in a fraction of a second even in the B-spline stage
(seconds long), and changes nothing when no one cancels (same result, still right against the true pose)."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from napari_immunotrack.alignment import align_mri, align_study
from napari_immunotrack.errors import Cancelled, ImmunotrackWarning
from napari_immunotrack.simulate import sessions as S
from napari_immunotrack.simulate.phantom import make_mouse

CENTRE = (1.0, -1.0, 4.0)
VOXEL = 0.25  # 800k voxels: the full-resolution level runs (below ~500k the middle level is the last)
FOV = (19.2, 25.6, 25.6)
POSE = S.pose_matrix((8, -4, 10), (2, 1, -1), CENTRE)


@pytest.fixture(scope="module")
def pair():
    mouse = make_mouse(0)
    ref = S.session_mri(mouse, np.eye(4), voxel_mm=VOXEL, fov_mm=FOV, seed=1, bias_strength=0.2)
    moving = S.session_mri(mouse, POSE, voxel_mm=VOXEL, fov_mm=FOV, seed=31, gain=1.2, bias_strength=0.2)
    return ref, moving


def _tre(result, ref):
    pts = S.grid_points(ref.volume, 1.5, ref.labels > 0)
    return S.target_registration_error(result.fixed_to_moving, np.eye(4), POSE, pts)


class _CancelAt:
    """A progress callback that raises Cancelled at the ``nth`` report whose message starts with ``prefix``
    and counts what it is called with after that (nothing may come)."""

    def __init__(self, prefix: str, nth: int = 3):
        self.prefix, self.nth = prefix, nth
        self.seen: list = []
        self.raised_at: float | None = None
        self.after = 0

    def __call__(self, fraction, message):
        if self.raised_at is not None:
            self.after += 1
            return
        self.seen.append((fraction, message))
        if message.startswith(self.prefix) and "iteration" in message:
            self.nth -= 1
            if self.nth == 0:
                self.raised_at = time.perf_counter()
                raise Cancelled("cancelled by the user")


def test_progress_rises_through_every_stage_and_changes_nothing(pair):
    ref, moving = pair
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        plain = align_mri(ref.volume, moving.volume, precision_check=True)
        reported = align_mri(ref.volume, moving.volume, precision_check=True, progress=lambda f, m: seen.append((f, m)))
    np.testing.assert_array_equal(reported.fixed_to_moving, plain.fixed_to_moving)
    assert _tre(reported, ref).mean() <= 0.5 * VOXEL
    fractions = np.array([f for f, _ in seen])
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert np.all(np.diff(fractions) >= 0)  # never goes back
    assert len(np.unique(fractions)) >= 20  # it moves during the stages, not only between them
    messages = [m for _, m in seen]
    for stage in ("coarse level, start 1", "middle level", "full resolution", "precision check, restart 2"):
        assert any(m.startswith(stage + ": iteration") for m in messages), stage


@pytest.mark.parametrize("stage", ["coarse level, start 1", "middle level", "full resolution"])
def test_cancel_inside_a_rigid_stage_stops_at_once(pair, stage):
    ref, moving = pair
    cancel = _CancelAt(stage)
    with pytest.raises(Cancelled):
        align_mri(ref.volume, moving.volume, progress=cancel)
    returned = time.perf_counter()
    assert cancel.raised_at is not None
    assert cancel.after == 0  # the optimiser stopped: no later iteration, no later stage reported
    assert returned - cancel.raised_at < 0.5


def test_cancel_inside_the_bspline_stage_takes_effect_within_a_second(pair, capfd):
    """The B-spline stage runs for seconds (its 50 iterations); a cancel at its third report must not wait
    for it to finish (L-BFGS-B ignores SimpleITK's StopRegistration: it was 23 s under load), and must leave
    no traceback on standard error and the interpreter's excepthook as it was."""
    import sys

    ref, moving = pair
    hook = sys.excepthook
    seen_times = []

    def timed(fraction, message):
        seen_times.append((time.perf_counter(), message))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        full = align_mri(ref.volume, moving.volume, "bspline", progress=timed)
    in_stage = [t for t, m in seen_times if m.startswith("B-spline deformation: iteration")]
    stage_seconds = in_stage[-1] - in_stage[0]
    assert full.deformable is not None and stage_seconds > 2.0  # long enough for the test to mean something

    cancel = _CancelAt("B-spline deformation")
    with pytest.raises(Cancelled):
        align_mri(ref.volume, moving.volume, "bspline", progress=cancel)
    latency = time.perf_counter() - cancel.raised_at
    assert cancel.after == 0
    assert latency < 1.0, (latency, stage_seconds)
    assert sys.excepthook is hook
    assert "Traceback" not in capfd.readouterr().err


def test_cancel_in_align_study_writes_nothing_for_that_session(tmp_path, pair):
    from napari_immunotrack.io import save_volume

    ref, moving = pair
    root = tmp_path / "study"
    for ses, img in (("day0", ref), ("day3", moving)):
        folder = root / "sub-01" / f"ses-{ses}" / "anat"
        folder.mkdir(parents=True)
        save_volume(img.volume, folder / f"sub-01_ses-{ses}_T2w.nii.gz")
    before = sorted(p for p in root.rglob("*"))
    cancel = _CancelAt("middle level")
    with pytest.raises(Cancelled):
        align_study(root, progress=cancel)
    assert cancel.after == 0
    assert sorted(p for p in root.rglob("*")) == before  # no xfm/ folder, no transform, no sidecar
    fractions = [f for f, _ in cancel.seen]
    assert np.all(np.diff(fractions) >= 0) and 0 < fractions[-1] < 1
