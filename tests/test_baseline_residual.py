"""The residual misalignment a baseline keeps after its transform, and the baseline tolerance it calls for
(issue 18, item 5; docs/methods/baseline-residual.md).

A rigid alignment cannot undo soft tissue that moved between sessions: the baseline's vessels and bone can
stay 2-3 voxels off while the optimiser's restarts agree to 0.06 mm. The tolerance of the baseline test is
now sized by block matching between the post image and the baseline carried through the transform. Truth:
the simulator's pose (post world -> baseline world), composed with a known leftover shift or rotation, and
the skin-deformed pairs of test_clusters_skin (seeds 3 and 4 left 6 and 4 vessel/bone decoys with the old
precision-only tolerance of 1 voxel).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from test_baseline_repositioned import repositioned_baseline
from test_clusters_skin import score, segment, skin_pair

from napari_immunotrack.alignment import baseline_alignment
from napari_immunotrack.analysis import clusters as C
from napari_immunotrack.analysis.residual import MAX_TOLERANCE, baseline_tolerance, residual_misalignment
from napari_immunotrack.errors import ImmunotrackWarning
from napari_immunotrack.simulate import cluster_scene


def _shift(d):
    m = np.eye(4)
    m[:3, 3] = d
    return m


def _pair(seed):
    scene = cluster_scene(seed=seed, snr=20)
    baseline, pose = repositioned_baseline(scene, 100 + seed)
    return scene, baseline, pose


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_of_a_known_leftover_shift_and_rotation(seed):
    """The true pose composed with a known error: the measured residual is that error (0.1 mm voxels)."""
    scene, baseline, pose = _pair(seed)
    post = scene["post"]
    for d, voxels, tolerance in (
        ((0, 0, 0), 0.0, 1),
        ((0.1, 0, 0), 1.0, 1),
        ((0.2, 0, 0), 2.0, 2),
        ((0, 0.2, 0), 2.0, 2),
    ):
        est = residual_misalignment(post, baseline, pose @ _shift(d))
        assert est.n_blocks >= 100
        assert est.residual_voxels == pytest.approx(voxels, abs=0.3), d  # measured 0.20-0.21 / 1.15 / 2.14
        assert est.residual_mm == pytest.approx(np.linalg.norm(d), abs=0.03), d
        assert baseline_tolerance(post, baseline, pose @ _shift(d))[0] == tolerance
    # along the axis the scene's tubes and body run along, most blocks cannot see a shift: the few that do
    # (ends, spheres) measure it (2.42 / 2.54 voxels; the 90th percentile over all blocks read 0.26 / 1.09)
    along = residual_misalignment(post, baseline, pose @ _shift((0, 0, 0.25)))
    assert along.residual_voxels == pytest.approx(2.5, abs=0.3)
    # a 1.5 degree turn about the field of view's centre: 0.90 voxels (90th percentile over the body, per axis)
    c, a = post.center_world(), np.deg2rad(1.5)
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    turn[:3, 3] = c - turn[:3, :3] @ c
    body = post.index_to_world(np.argwhere(scene["tissue_labels"].numpy() > 0)[::50])
    moved = body @ turn[:3, :3].T + turn[:3, 3] - body
    truth = np.percentile(np.abs(moved).max(axis=1) / 0.1, 90)
    assert residual_misalignment(post, baseline, pose @ turn).residual_voxels == pytest.approx(truth, abs=0.3)


def test_a_residual_beyond_the_cap_warns_and_is_recorded():
    scene, baseline, pose = _pair(0)
    with pytest.warns(ImmunotrackWarning, match="soft tissue moved"):
        tolerance, record = baseline_tolerance(scene["post"], baseline, pose @ _shift((0.45, 0, 0)))
    assert tolerance == MAX_TOLERANCE and record["capped"] and record["from_residual"] > MAX_TOLERANCE
    assert record["residual"]["residual_mm"] == pytest.approx(0.4, abs=0.06)  # 0.40 measured (search edge 0.4)


def test_segment_clusters_takes_the_residual_with_a_transform_and_not_on_the_same_grid():
    scene, baseline, pose = _pair(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        off = C.segment_clusters(
            scene["post"],
            baseline=baseline,
            baseline_transform=pose @ _shift((0.2, 0, 0)),
            reference_mask=scene["reference_mask"],
            background_mask=scene["background_mask"],
            baseline_tolerance_voxels=1,
        )
        same = C.segment_clusters(
            scene["post"],
            baseline=scene["pre"],
            reference_mask=scene["reference_mask"],
            background_mask=scene["background_mask"],
            baseline_tolerance_voxels=1,
        )
    assert off.parameters["baseline_tolerance_voxels"] == 2
    assert off.parameters["baseline_residual"]["from_residual"] == 2
    assert same.parameters["baseline_tolerance_voxels"] == 1 and same.parameters["baseline_residual"] is None


def test_confirm_with_a_given_pre_transform_measures_its_residual():
    from test_confirm_repositioned import _pair as confirm_pair

    from napari_immunotrack.analysis.confirm import confirm_dual_mode

    sc, pre, pose = confirm_pair(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        exact = confirm_dual_mode(sc["t1_post"], sc["t2_post"], pre["t1"], pre["t2"], pre_transform=pose)
        off = confirm_dual_mode(
            sc["t1_post"], sc["t2_post"], pre["t1"], pre["t2"], pre_transform=pose @ _shift((0.3, 0, 0))
        )
    assert exact.parameters["baseline_tolerance_voxels"] == 1  # the old default for a given transform
    assert off.parameters["baseline_tolerance_voxels"] == 2  # 0.3 mm on 0.15 mm voxels
    rec = off.parameters["pre_alignment"]
    assert rec["method"] == "given transform" and rec["baseline_tolerance"]["from_residual"] == 2
    # 0.6 mm (4 voxels) left: capped at 3 voxels, and the result says why
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        far = confirm_dual_mode(
            sc["t1_post"], sc["t2_post"], pre["t1"], pre["t2"], pre_transform=pose @ _shift((0.6, 0, 0))
        )
    assert far.parameters["baseline_tolerance_voxels"] == MAX_TOLERANCE
    assert any("soft tissue moved" in w for w in far.warnings)


@pytest.mark.slow
def test_residual_after_alignment_is_the_true_small_error():
    """Repositioned pairs without any deformation, aligned by baseline_alignment: the measured residual
    (90th percentile) stays the true error of the alignment (largest at the truth's foci and decoys)."""
    for seed in range(4):
        scene, baseline, pose = _pair(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImmunotrackWarning)
            transform, record = baseline_alignment(scene["post"], baseline)
        pts = [c["centroid_ras_mm"] for c in scene["truth"]["clusters"]] + [
            d["centroid_ras_mm"] for d in scene["truth"]["decoys"]
        ]
        p = np.c_[np.asarray(pts), np.ones(len(pts))]
        true_max = float(np.linalg.norm((p @ transform.T - p @ pose.T)[:, :3], axis=1).max())
        measured = record["baseline_tolerance"]["residual"]["residual_mm"]
        assert measured == pytest.approx(true_max, abs=0.03), seed  # measured 0.025-0.041 for 0.017-0.040
        assert record["tolerance_voxels"] == 1


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.slow) if s not in (3, 4) else s for s in range(6)])
def test_skin_moved_baseline_aligned_takes_no_baseline_dark_structure(seed):
    """The baseline's outer tissue moved up to 0.2 mm, then repositioned and aligned (rigid): its vessels and
    bone stay up to 0.3 mm off (seeds 3, 4). With the tolerance from precision alone (1 voxel) 6 and 4 decoys
    were taken (F1 0.84 / 0.89); sized by the measured residual, none."""
    scene, baseline, transform, tolerance = skin_pair(seed, aligned=True)
    result = segment(scene, baseline, transform, tolerance)
    in_air, f1, skin_tp, decoys = score(scene, result)
    assert decoys == 0 and in_air == 0 and f1 >= 0.95
    # a 2-voxel neighbourhood (seed 1: the optimiser's spread of 1.04 voxels, rounded up) can hide the shallowest
    # focus, 0.15 mm under the skin, beside the air outside: the price of never taking a baseline-dark structure
    assert skin_tp >= len(scene["skin_foci"]) - (tolerance > 1)
    assert 1 <= tolerance <= MAX_TOLERANCE
    assert result.parameters["baseline_residual"]["residual"]["blocks_trusted"] >= 100


def test_cli_segment_with_a_transform_file_records_the_residual(tmp_path, capsys):
    """`segment --baseline-transform FILE`: the tolerance is sized by the residual the file leaves, and the
    measurement is in the provenance."""
    import json

    from napari_immunotrack.cli import main
    from napari_immunotrack.io import save_volume
    from napari_immunotrack.io.transforms import write_transform

    scene, baseline, pose = _pair(0)
    paths = {}
    for key, vol in (("post", scene["post"]), ("pre", baseline), ("ref", scene["reference_mask"])):
        paths[key] = str(tmp_path / f"{key}.nii.gz")
        save_volume(vol, paths[key])
    tfm = write_transform(tmp_path / "off.tfm", pose @ _shift((0.2, 0, 0)))
    out = tmp_path / "labels.nii.gz"
    argv = ["segment", paths["post"], "--baseline", paths["pre"], "--reference-mask", paths["ref"]]
    argv += ["--baseline-transform", str(tfm), "--baseline-transform-fixed", "image", "-o", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    params = json.loads(out.with_name(out.name + ".provenance.json").read_text())["parameters"]
    assert params["baseline_tolerance_voxels"] == 2
    residual = params["baseline_residual"]
    assert residual["from_residual"] == 2 and residual["residual"]["residual_mm"] == pytest.approx(0.2, abs=0.03)


def test_an_imprecise_alignment_alone_is_capped_with_a_warning_and_nothing_measured_on_a_blank_image():
    """No structure to match (a blank image): the residual is not measured and the precision rules; a
    precision of 0.5 mm on 0.1 mm voxels calls for 5 voxels, capped at 3 with a warning naming the precision."""
    from napari_immunotrack.volume import Volume

    blank = Volume(np.full((40, 40, 40), 100.0, np.float32), np.diag([0.1, 0.1, 0.1, 1.0]))
    assert residual_misalignment(blank, blank).residual_voxels is None
    assert baseline_tolerance(blank, blank, None, precision_mm=0.15)[0] == 2
    with pytest.warns(ImmunotrackWarning, match="alignment precision"):
        tolerance, record = baseline_tolerance(blank, blank, None, precision_mm=0.5)
    assert tolerance == MAX_TOLERANCE and record["from_precision"] == 5 and record["from_residual"] is None
    assert "not measured" in record["note"]
