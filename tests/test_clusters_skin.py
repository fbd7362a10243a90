"""Air at the skin against a repositioned baseline (issue 18; docs/methods/clusters.md#air-at-the-skin).

Soft tissue moves between sessions. Where the skin lies a voxel or two further in on the post image than on
the baseline, the post image has air where the baseline had fat, and that air reads as new darkening (the
bundled sample's day 7 reported 5 such "clusters" at the belly skin). Here the simulator reproduces it:
iron foci in the body, some of them 0.15-0.6 mm under the skin, and a baseline whose outer soft tissue was
pushed 1-2 voxels in or out (a smooth radial displacement that grows from the inner body to the skin), then
repositioned, re-gained, re-biased and noisy. Truth: the simulator's tissue map (label 0 = air) and foci.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from test_baseline_repositioned import repositioned_baseline
from test_clusters import centroids, decoys_hit, match

from napari_immunotrack.analysis import body as body_mod
from napari_immunotrack.analysis import clusters as C
from napari_immunotrack.errors import ImmunotrackWarning
from napari_immunotrack.simulate import cluster_scene
from napari_immunotrack.simulate.phantom import world_coords

SKIN_DEPTHS_MM = (0.15, 0.2, 0.3, 0.45, 0.6)  # foci this far under the body surface (the fat layer is 0.3 mm)


def skin_scene(seed: int, snr: float = 20.0, n_inner: int = 6):
    """cluster_scene's body with ``n_inner`` foci where it puts them and two foci at each of SKIN_DEPTHS_MM."""
    rng = np.random.default_rng(seed)
    shape = (64, 96, 96)
    first = cluster_scene(seed=seed, snr=snr, n_clusters=n_inner, shape=shape)
    inner = [np.asarray(c["centroid_ras_mm"]) for c in first["truth"]["clusters"]]
    taken = inner + [np.asarray(d["centroid_ras_mm"]) for d in first["truth"]["decoys"]]
    half = (np.array(shape[::-1], float) - 1) / 2 * 0.1
    a, b = 0.86 * half[0], 0.80 * half[1]  # the scene's elliptic body (x, y semi-axes, mm)
    skin = []
    for _ in range(500):
        if len(skin) == 2 * len(SKIN_DEPTHS_MM):
            break
        theta = rng.uniform(0, 2 * np.pi)
        depth = SKIN_DEPTHS_MM[len(skin) % len(SKIN_DEPTHS_MM)]
        edge = np.array([a * np.cos(theta), b * np.sin(theta)])
        normal = np.array([np.cos(theta) / a, np.sin(theta) / b])
        p = np.r_[edge - depth * normal / np.linalg.norm(normal), rng.uniform(-0.6, 0.6) * half[2]]
        if all(np.linalg.norm(p - q) > 1.6 for q in taken):
            taken.append(p)
            skin.append(p)
    assert len(skin) == 2 * len(SKIN_DEPTHS_MM)
    irons = np.exp(rng.uniform(np.log(1000.0), np.log(10000.0), len(inner) + len(skin)))
    clusters = [{"centroid_ras_mm": [float(v) for v in p], "iron_pg": float(fe)} for p, fe in zip(inner + skin, irons)]
    scene = cluster_scene(seed=seed, snr=snr, shape=shape, clusters=clusters)
    scene["skin_foci"] = [c["centroid_ras_mm"] for c in scene["truth"]["clusters"][len(inner) :]]
    return scene


def skin_shifted(volume, seed: int, amplitude_mm: float = 0.2):
    """``volume`` with its outer soft tissue moved radially by up to ``amplitude_mm`` (in and out around the
    body, smooth), nothing moved inside 80 % of the body's radius; and the largest shift, mm."""
    rng = np.random.default_rng(seed)
    x, y, z = np.broadcast_arrays(*world_coords(volume.spatial_shape, volume.affine))
    a, b = 0.86 * np.abs(x).max(), 0.80 * np.abs(y).max()
    rho = np.hypot(x / a, y / b)
    theta = np.arctan2(y / b, x / a)
    around = 0.6 * np.sin(2 * theta + rng.uniform(0, 2 * np.pi)) + 0.4 * np.cos(3 * theta + rng.uniform(0, 2 * np.pi))
    shift = amplitude_mm * around * np.cos(z / 4 + rng.uniform(0, 2 * np.pi)) * np.clip((rho - 0.8) / 0.15, 0, 1)
    # the shifted image at p is the original at p - u(p): content moves outward where the shift is positive
    src = np.stack([x - shift * np.cos(theta), y - shift * np.sin(theta), z])
    inv = np.linalg.inv(volume.affine)
    index = np.einsum("ij,j...->i...", inv[:3, :3], src) + inv[:3, 3][:, None, None, None]
    moved = ndimage.map_coordinates(volume.numpy().astype(np.float32), index, order=1, mode="nearest")
    return volume.replace(data=moved.astype(np.float32)), float(np.abs(shift).max())


def skin_pair(seed: int, aligned: bool = False):
    """Scene, baseline (skin shifted, then repositioned), post world -> baseline world, tolerance (voxels)."""
    scene = skin_scene(seed)
    shifted, largest = skin_shifted(scene["pre_noiseless"], 7 + seed)
    assert 0.1 <= largest <= 0.2  # the skin moved 1-2 voxels
    baseline, pose = repositioned_baseline(dict(scene, pre_noiseless=shifted), 100 + seed)
    if not aligned:  # the true pose: this is about the air, not the registration
        return scene, baseline, pose, 1
    from napari_immunotrack.alignment import baseline_alignment

    transform, record = baseline_alignment(scene["post"], baseline)
    return scene, baseline, transform, record["tolerance_voxels"]


def segment(scene, baseline, transform, tolerance):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        return C.segment_clusters(
            scene["post"],
            baseline=baseline,
            baseline_transform=transform,
            baseline_tolerance_voxels=tolerance,
            reference_mask=scene["reference_mask"],
            background_mask=scene["background_mask"],
        )


def score(scene, result):
    """Clusters mostly in air (truth tissue map), F1 on all foci, skin foci found, baseline-dark structures hit."""
    labels = np.asarray(result.labels.numpy())
    tissue = scene["tissue_labels"].numpy()
    in_air = sum(bool(np.mean(tissue[labels == lab] == 0) > 0.5) for lab in result.table.label)
    found = centroids(result.table)
    tp, fp, fn, _ = match(found, [c["centroid_ras_mm"] for c in scene["truth"]["clusters"]])
    skin_tp = match(found, scene["skin_foci"])[0]
    return in_air, 2 * tp / max(2 * tp + fp + fn, 1), skin_tp, decoys_hit(found, scene["truth"]["decoys"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_air_the_skin_left_is_not_a_cluster(seed, monkeypatch):
    scene, baseline, transform, tolerance = skin_pair(seed)
    result = segment(scene, baseline, transform, tolerance)
    in_air, f1, skin_tp, decoys = score(scene, result)
    assert in_air == 0 and decoys == 0
    assert f1 >= 0.95 and skin_tp == len(scene["skin_foci"])  # foci 0.15-0.6 mm under the skin all found
    record = result.parameters["exterior_air"]
    assert record["clusters_left_out"] >= 1 and record["air_threshold_signal"] == pytest.approx(4 * result.sigma)
    assert any("skin moved since the baseline" in w for w in result.warnings)
    # without the rule the air comes back as clusters (the scene does reproduce the problem)
    monkeypatch.setattr(body_mod, "AIR_SIGMAS", 0.0)
    without = segment(scene, baseline, transform, tolerance)
    assert score(scene, without)[0] >= 3
    assert len(without.table) == len(result.table) + record["clusters_left_out"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_air_at_the_skin_with_the_baseline_aligned(seed):
    """The same with the baseline brought back by the session alignment, as a user runs it."""
    scene, baseline, transform, tolerance = skin_pair(seed, aligned=True)
    in_air, f1, skin_tp, decoys = score(scene, segment(scene, baseline, transform, tolerance))
    assert decoys == 0 and in_air == 0 and f1 >= 0.95
    # a 2-voxel neighbourhood (seed 1: the optimiser's spread of 1.04 voxels, rounded up) can hide the shallowest
    # focus, 0.15 mm under the skin, beside the air outside: the price of never taking a baseline-dark structure
    assert skin_tp >= len(scene["skin_foci"]) - (tolerance > 1)


def test_exterior_air_is_the_air_around_the_body_only():
    """A dent of air open to the outside is exterior air; a void in tissue, and a small dark spot cut open
    by the edge of the field of view, are not; the whole image is labelled only when air leaves the box."""
    img = np.full((30, 30, 30), 1000.0, np.float32)
    img[:, :, :8] = 20.0  # the air beside the body, along one face of the field of view
    img[10:14, 10:14, 8:10] = 20.0  # a dent in the skin, open to that air
    img[20:23, 20:23, 18:21] = 20.0  # a void enclosed by tissue
    img[0:2, 5:8, 20:23] = 20.0  # a small void cut open by the field of view's edge (a bloom at the edge)
    air = body_mod.ExteriorAir(img, 100.0)
    dent, void, edge = (np.zeros(img.shape, bool) for _ in range(3))
    dent[10:14, 10:14, 8:10] = True
    void[20:23, 20:23, 18:21] = True
    edge[0:2, 5:8, 20:23] = True
    assert air.count(np.flatnonzero(void)) == 0 and not air.whole_image_labelled  # decided in its box
    assert air.count(np.flatnonzero(edge)) == 0  # leaves its box: the whole image is labelled once
    assert air.whole_image_labelled
    assert air.count(np.flatnonzero(dent)) == 32


def test_sample_day7_reports_no_air_at_the_belly_skin():
    """The bundled repositioned sample, day 7 against day 0 through the saved session alignments (what
    ``immunotrack report`` runs per day): the air the belly skin left was 5 false clusters (21 clusters,
    precision 0.76); now every cluster lies within 1 mm of a true focus, none holds an air voxel of day 7's
    tissue map, and recall stays that of days 1 and 3 (0.74)."""
    import json

    from napari_immunotrack.data import sample_study_root
    from napari_immunotrack.io import load_volume
    from napari_immunotrack.pipeline import analyse_session, compare_with_truth

    root = sample_study_root()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        result = analyse_session(root, "day7", steps=["clusters"])
    assert not result.errors
    rows = compare_with_truth(result, json.loads((root / "ground_truth.json").read_text()))
    measured = dict(zip(rows.quantity, rows.measured))
    assert measured["clusters within 1 mm of a true focus (precision)"] == 1.0
    assert measured["iron foci found within 1 mm (recall)"] == pytest.approx(20 / 27)
    assert result.tables["clusters_provenance"]["exterior_air"]["clusters_left_out"] >= 1
    dseg = load_volume(next(root.glob("sub-*/ses-day7/rois/*_dseg.nii.gz"))).numpy()
    labels = np.asarray(result.volumes["clusters"].numpy())
    assert labels.shape == dseg.shape and not np.any(labels[dseg == 0])
