"""Segmentation without a baseline leaves out the air around the body (docs/methods/clusters.md#outside-the-body).

Checked on whole-body images with a known tissue map: the simulator's study (tiny) and the sample
study's day-1 T2*w. Truth is the simulator's label map (label 0 = air) and its iron foci: no cluster
may hold an air voxel, and recall must equal the recall with the TRUE body given as the search ROI
(what a perfect air exclusion would give). Also: bodies cut by the field of view's edge, an image
without air (nothing excluded), the dask path, and the provenance record.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from napari_immunotrack.analysis.body import outside_body
from napari_immunotrack.analysis.clusters import segment_clusters
from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import ImmunotrackWarning
from napari_immunotrack.io import load_volume
from napari_immunotrack.volume import Volume


def _session(root, day):
    subject = next(p.name for p in sorted(root.glob("sub-*")))
    ses = root / subject / f"ses-day{day}"
    post = load_volume(next((ses / "anat").glob("*_T2starw.nii.gz")))
    dseg = load_volume(next((ses / "rois").glob("*_dseg.nii.gz"))).numpy().astype(int)
    truth = json.loads((root / "ground_truth.json").read_text())
    sessions = next(iter(truth["subjects"].values()))["sessions"]
    foci = np.array(
        [f["centroid_ras_mm"] for f in sessions[f"ses-day{day}"].get("foci", []) if f.get("iron_pg", 0) > 0]
    ).reshape(-1, 3)
    return post, dseg, foci


def _foci_in_view(foci, post):
    idx = (np.c_[foci, np.ones(len(foci))] @ np.linalg.inv(post.affine).T)[:, :3]
    return foci[np.all((idx >= 2) & (idx <= np.array(post.spatial_shape) - 3), axis=1)]


def _recall(table, foci):
    found = table[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy()
    if not len(found) or not len(foci):
        return 0.0
    d = np.linalg.norm(found[:, None, :] - foci[None, :, :], axis=2)
    return float(np.mean(d.min(axis=0) < 1.0))


def _segment(post, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImmunotrackWarning)
        return segment_clusters(post, **kw)


def _check_no_air_and_recall(post, dseg, foci):
    auto = _segment(post)
    labels = np.asarray(auto.labels.numpy())
    in_air = np.unique(labels[(dseg == 0) & (labels > 0)])
    assert in_air.size == 0, f"clusters {in_air.tolist()} hold air voxels"
    truth_body = Volume((dseg != 0).astype(np.uint8), post.affine)
    perfect = _segment(post, search_mask=truth_body)
    foci = _foci_in_view(foci, post)
    assert len(foci) >= 3
    assert _recall(auto.table, foci) == pytest.approx(_recall(perfect.table, foci))
    assert _recall(auto.table, foci) > 0.3  # the foci are found at all (tiny study: coarse voxels)
    record = auto.parameters["outside_body"]
    assert record["excluded"] is True
    assert record["voxels_excluded"] == pytest.approx(int(np.sum(dseg == 0)), rel=0.05)
    assert "baseline" in record["baseline_would_add"]
    return auto, perfect


def test_sample_day1_without_baseline_reports_no_air():
    post, dseg, foci = _session(sample_study_root(), 1)
    auto, _ = _check_no_air_and_recall(post, dseg, foci)
    # the air around the body was cluster 1 (832,265 voxels) before: now the largest is an inner structure
    assert auto.table.voxels.max() < 0.02 * dseg.size
    assert any("air around the body is left out" in w and "baseline would" in w for w in auto.warnings)


def test_simulated_study_without_baseline_reports_no_air(simulated_study):
    post, dseg, foci = _session(simulated_study, 1)
    _check_no_air_and_recall(post, dseg, foci)


@pytest.mark.parametrize("cut", ["lateral", "both_ends_and_side"])
def test_body_touching_the_field_of_view_edge(cut):
    """The body cut open by the field of view: inner dark structures cut by the edge stay inside."""
    post, dseg, foci = _session(sample_study_root(), 1)
    body = np.argwhere(dseg != 0)
    lo, hi = body.min(0), body.max(0)
    mid = (lo + hi) // 2
    if cut == "lateral":  # cut through the body along axis 1 (one side of the body on the edge)
        box = (slice(None), slice(int(lo[1] + 0.25 * (hi[1] - lo[1])), None), slice(None))
    else:  # cut along axes 1 and 2 on one side each (the corner of the body touches two edges)
        box = (slice(None), slice(int(lo[1]) + 6, None), slice(None, int(mid[2]) + 20))
    data = post.numpy()[box]
    start = np.array([s.start or 0 for s in box] + [1.0])
    affine = post.affine.copy()
    affine[:3, 3] = (post.affine @ start)[:3]
    cropped = Volume(np.ascontiguousarray(data), affine, modality="MR", name="cropped")
    sub = dseg[box]
    # the cut is real: body voxels lie on the cropped image's edge
    assert (sub[:, 0, :] != 0).any()
    _check_no_air_and_recall(cropped, sub, foci)


def test_an_image_without_air_excludes_nothing():
    post, dseg, _ = _session(sample_study_root(), 1)
    body = np.argwhere(dseg != 0)
    c = (body.min(0) + body.max(0)) // 2
    box = tuple(slice(int(v) - 12, int(v) + 12) for v in c)  # a cube inside the body: no air at all
    assert (dseg[box] != 0).all()
    found = outside_body(post.numpy()[box])
    assert not found.air_found and not found.mask.any() and "nothing excluded" in found.reason
    res = _segment(Volume(np.ascontiguousarray(post.numpy()[box]), post.affine))
    assert res.parameters["outside_body"]["excluded"] is False


def test_with_a_baseline_no_body_mask_is_applied():
    rng = np.random.default_rng(1)
    img = np.abs(rng.normal(0, 5, (24, 24, 24)) + 1j * rng.normal(0, 5, (24, 24, 24))).astype(np.float32)
    img[4:20, 4:20, 4:20] += 100
    pre = Volume(img.copy(), np.eye(4))
    img[10:13, 10:13, 10:13] = 3.0
    res = _segment(Volume(img, np.eye(4)), baseline=pre)
    assert res.parameters["outside_body"] is None
    assert res.table.voxels.tolist() == [27]


@pytest.mark.parametrize("lazy", [True, False])
def test_subsampled_body_mask_matches(monkeypatch, lazy):
    """A large image (lazy, or over 16 million voxels in memory): the body is measured on a subsample and
    read back (chunk by chunk when lazy), the outline decided at full resolution."""
    import dask.array as da

    import napari_immunotrack.analysis.clusters as clusters

    post, dseg, foci = _session(sample_study_root(), 1)
    monkeypatch.setattr(clusters, "sample_step", lambda shape, target=0: 2)
    data = post.numpy().astype(np.float32)
    image = post.replace(data=da.from_array(data, chunks=(48, 48, 48)) if lazy else data)
    res = _segment(image)
    labels = np.asarray(res.labels.data.compute() if lazy else res.labels.data)
    assert not np.any(labels[dseg == 0]), "a cluster in the air"
    assert res.parameters["outside_body"]["mask_grid_step"] == 2
    assert _recall(res.table, _foci_in_view(foci, post)) > 0.5
