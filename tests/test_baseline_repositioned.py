"""Iron clusters against a pre-injection baseline acquired in another pose (issue 18): the baseline is
rendered on its own scanner grid with the animal rotated and shifted, its own receiver gain and coil
bias, and is brought back by `alignment.baseline_alignment`; structures dark at baseline (air, vessel,
haemorrhage, bone) must not be reported, and with the alignment switched off they are (the gain shown)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_clusters import centroids, decoys_hit, match

from napari_immunotrack.alignment import baseline_alignment
from napari_immunotrack.analysis import clusters as C
from napari_immunotrack.errors import ImmunotrackWarning
from napari_immunotrack.simulate import cluster_scene
from napari_immunotrack.simulate.mri import rician
from napari_immunotrack.simulate.phantom import grid_affine
from napari_immunotrack.simulate.sessions import bias_field, pose_matrix
from napari_immunotrack.volume import Volume


def repositioned_baseline(scene, seed, rotation_deg=8.0, shift_mm=1.0, gain=1.3, bias=0.2):
    """The scene's noiseless baseline seen by a scanner in which the animal lies elsewhere (pose P:
    scene world -> baseline world) on that scanner's own axis-aligned grid, with gain, bias and noise."""
    rng = np.random.default_rng(seed)
    pre0 = scene["pre_noiseless"]
    centre = pre0.center_world()
    P = pose_matrix(rng.uniform(-rotation_deg, rotation_deg, 3), rng.uniform(-shift_mm, shift_mm, 3), centre)
    shape = pre0.spatial_shape
    B = grid_affine(shape, float(pre0.spacing[0]), P[:3, :3] @ centre + P[:3, 3] + rng.uniform(-0.3, 0.3, 3))
    img = pre0.resample_to(Volume(np.zeros(shape, np.float32), B), order=3, transform=np.linalg.inv(P)).numpy()
    img = np.nan_to_num(np.maximum(img, 0)) * bias_field(shape, bias, rng)
    noisy = rician(img.astype(np.float32), scene["sigma"], rng) * gain
    return Volume(noisy.astype(np.float32), B, "MR", "a.u.", {}, "pre (repositioned)"), P


def _score(scene, baseline, transform, tolerance):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        res = C.segment_clusters(
            scene["post"],
            baseline=baseline,
            reference_mask=scene["reference_mask"],
            search_mask=scene["search_mask"],
            background_mask=scene["background_mask"],
            baseline_transform=transform,
            baseline_tolerance_voxels=tolerance,
        )
    tp, fp, fn, _ = match(centroids(res.table), [c["centroid_ras_mm"] for c in scene["truth"]["clusters"]])
    return 2 * tp / max(2 * tp + fp + fn, 1), decoys_hit(centroids(res.table), scene["truth"]["decoys"])


def _pair(seed, **scene_kw):
    scene = cluster_scene(seed=seed, **scene_kw)
    baseline, pose = repositioned_baseline(scene, 100 + seed)
    transform, record = baseline_alignment(scene["post"], baseline)
    return scene, baseline, pose, transform, record


@pytest.mark.parametrize("seed", [0, 1])
def test_repositioned_baseline_aligned_keeps_dark_structures_out(seed):
    scene, baseline, pose, transform, record = _pair(seed, snr=20)
    assert np.abs(transform[:3, 3] - pose[:3, 3]).max() < 0.1  # post world -> baseline world recovered
    f1, decoys = _score(scene, baseline, transform, record["tolerance_voxels"])
    assert f1 >= 0.95 and decoys == 0
    # without the alignment (the baseline taken as lying in the post world) the dark structures come back
    _, decoys_off = _score(scene, baseline, np.eye(4), 1)
    assert decoys_off >= 2


@pytest.mark.slow
def test_ten_repositioned_pairs_at_the_detection_limit():
    """Weak iron, blooms 1-2 voxels apart, voxel SNR 11: F1 >= 0.95 and no baseline-dark structure in each
    of 10 repositioned, re-gained, re-biased pairs."""
    f1s, decoys = [], []
    for seed in range(10):
        scene, baseline, _, transform, record = _pair(seed, snr=11, near_touching=True, iron_pg_range=(1500.0, 6000.0))
        f1, hits = _score(scene, baseline, transform, record["tolerance_voxels"])
        f1s.append(f1)
        decoys.append(hits)
    assert min(f1s) >= 0.95, f1s
    assert sum(decoys) == 0, decoys


def test_reference_roi_outside_the_baselines_view_is_said_in_one_line():
    """A baseline whose field of view misses the reference ROI (cropped before it, or turned out of it): the
    message names the baseline's field of view, not a 'NaN image' the user never made."""
    from napari_immunotrack.errors import InputError

    scene = cluster_scene(seed=0)
    ref = np.asarray(scene["reference_mask"].numpy(), bool)
    first = int(np.argwhere(ref)[:, 2].min())  # the ROI starts here along the last axis
    pre = scene["pre"]
    cropped = Volume(np.ascontiguousarray(pre.numpy()[:, :, :first]), pre.affine, "MR", "a.u.", {}, "pre (cropped)")
    with pytest.raises(InputError, match="outside the baseline's field of view"):
        C.segment_clusters(
            scene["post"],
            baseline=cropped,
            reference_mask=scene["reference_mask"],
            background_mask=scene["background_mask"],
            baseline_transform=np.eye(4),
        )


def test_a_half_turn_doubt_the_retry_settles_is_not_a_refusal():
    """A baseline turned (27, -8, 17) degrees and shifted 4 mm: on this small, near-symmetric field of view a
    half turn scored better in the coarse search, so the first alignment was doubtful; the retry that
    searched the half turns too settled on the unturned pose with every check passed (its correlation is
    not comparable with the first's). It used to be refused; the pose is now kept and the iron found."""
    scene = cluster_scene(seed=1, snr=11, near_touching=True, iron_pg_range=(1500.0, 6000.0))
    baseline, pose = repositioned_baseline(scene, 101, rotation_deg=30.0, shift_mm=5.0)
    transform, record = baseline_alignment(scene["post"], baseline)
    assert np.abs(transform[:3, 3] - pose[:3, 3]).max() < 0.05
    f1, decoys = _score(scene, baseline, transform, record["tolerance_voxels"])
    assert f1 >= 0.95 and decoys == 0
