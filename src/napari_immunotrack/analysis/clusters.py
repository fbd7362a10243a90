"""Hypointense (iron) cluster segmentation on T2/T2*-weighted MRI.

Iron-oxide-labelled cells appear as dark "blooming" voids. This module finds
them, removes the dark spots that were there before injection, and reports
each cluster (docs/methods/clusters.md). Pure functions: Volumes in, a label
Volume and a pandas table out; no napari, Qt or file I/O.

Noise estimation and mask carrying live in :mod:`.cluster_noise`, the connected-components engine in
:mod:`.cluster_components` (both re-exported here); this module holds the rules and drives the engine.

Pipeline of :func:`segment_clusters`
------------------------------------
1. Everything is carried onto the post-injection image's grid: masks
   (reference, search, background) by nearest neighbour through world
   coordinates; the baseline through a registration transform, or used as is
   when it has exactly the same grid (see :func:`prepare`).
2. Noise: the Rician sigma from a background (air) ROI, SD/0.6551 or
   mean/sqrt(pi/2); without one, from the post-minus-baseline difference in
   the reference ROI (SD/sqrt(2)), from the air at the border of the field of
   view, or, as an upper bound, from the reference ROI's spread.
3. Normalisation: ``r = S / mean(S in the reference ROI)``.
4. Candidate voxels by one rule (``method``):

   - ``"fraction"``: ``r < threshold`` (default 0.5, Tremblay et al. 2018);
   - ``"percentile"``: the darkest ``threshold`` % of the search ROI
     (default 10);
   - ``"ksigma"``: ``S < mean_ref - threshold * SD_ref`` (default 3);
   - ``"blob"``: local contrast ``c = 1 - G_s1(S) / G_s2(S) > threshold``
     (default 0.2; Gaussian scales s1 = 0.5, s2 = 3 voxels, a
     difference-of-Gaussians void detector) with the local deficit above
     5 times its noise SD (seeds); voxels above half the threshold join a
     cluster when connected to a seed (hysteresis), so a one-voxel void
     keeps its partial-volume rim and passes ``min_size``. It finds voids of
     one or two voxels that partial volume keeps above 50 % of the reference.

   The Rician floor guard warns when the threshold in signal units is under
   3 sigma.
5. Baseline confirmation (with a pre-injection scan): a voxel must have
   darkened, ``post < baseline_ratio * pre`` (default 0.6) or, with
   ``baseline_rule="delta_r2s"``, ``ln(pre/post)`` above ``baseline_k`` times
   its noise SD (post floored at sigma, where the Rician magnitude has no
   meaningful R2*); and it must not have been dark before (no baseline voxel
   in its 3x3x3 neighbourhood is a candidate of the same rule). Voxels dark
   in both scans (air, bone, vessels, haemorrhage) are thus never reported.
6. 3D connected components (6, 18 or 26-connected; recorded), restricted to
   the search ROI, smaller than ``min_size`` voxels removed.
7. Touching blooms: a component whose smoothed normalised signal has two or
   more minima at least ``split_h`` deep (h-minima) is split by a watershed
   from those minima; the split is recorded in the table (``split`` column).
8. A table with one row per label (see :func:`measure_clusters`).

Dask-backed volumes are processed chunk by chunk (the rule with overlapping
chunks; each chunk labelled alone and labels merged across chunk faces), and
give exactly the labels of the in-memory path.

Table columns
-------------
``label``, ``voxels``, ``volume_mm3``, ``centroid_x_mm``, ``centroid_y_mm``,
``centroid_z_mm`` (world RAS; centroid weighted by the signal deficit
``clip(1 - r, 0, 1)``, which is closer to the dipole centre than the plain
mask centroid because a bloom's dark core is symmetric about the particle),
``min_signal_norm`` and ``mean_signal_norm`` (fractions of the reference
mean), ``baseline_ratio`` (mean post / mean pre over the cluster, NaN
without a baseline), ``cnr`` = (mean_ref - mean_cluster) / sigma, ``split``.
A void volume is reported, not a cell count: the bloom size depends on iron,
field, TE and orientation (Sehl et al. 2020).

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> rng = np.random.default_rng(0)
>>> img = np.abs(100 + rng.normal(0, 5, (20, 20, 20)) + 1j * rng.normal(0, 5, (20, 20, 20)))
>>> img[8:11, 8:11, 8:11] = 5.0                     # one dark void of 27 voxels
>>> post = Volume(img.astype(np.float32), np.diag([0.1, 0.1, 0.1, 1.0]), modality="MR")
>>> ref = Volume((np.indices(img.shape)[0] < 5).astype(np.uint8), post.affine)
>>> result = segment_clusters(post, reference_mask=ref)
>>> len(result.table), int(result.table.voxels[0])
(1, 27)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ImmunotrackWarning, InputError
from ..params import FROM_MODEL, Param, ParamModel
from ..progress import report, scaled
from ..volume import Volume
from .cluster_components import (  # noqa: F401  (re-exported: the names stay importable from here)
    CONNECTIVITIES,
    MAX_STAT_KEYS,
    MIN_STAT_KEYS,
    SUM_STAT_KEYS,
    SplitSpec,
    block_components,
    crop_bounds,
    merge_label_stats,
    pack_mask,
    sparse_label_stats,
    split_component,
    split_component_in_crop,
    union_across_faces,
    unpack_mask,
)
from .cluster_noise import (  # noqa: F401  (re-exported: the public names stay importable from here)
    MAX_NOISE_SAMPLE,
    RAYLEIGH_MEAN,
    RAYLEIGH_MEDIAN,
    RAYLEIGH_SD,
    NoiseEstimate,
    border_air_sigma,
    estimate_rician_sigma,
    is_dask_array,
    mask_on_grid,
    masked_moments,
    masked_values,
    moment_sums,
    noise_from_background,
    require_3d,
    sample_step,
    warn_and_collect,
)

METHODS = ("fraction", "percentile", "ksigma", "blob")
#: Default threshold of each rule (fraction of reference, percent, k, local contrast).
DEFAULT_THRESHOLDS = {"fraction": 0.5, "percentile": 10.0, "ksigma": 3.0, "blob": 0.2}
BASELINE_RULES = ("ratio", "delta_r2s")

#: A threshold under FLOOR_K * sigma cannot separate a void from noise.
FLOOR_K = 3.0
#: Blob detector: the local deficit must exceed this many noise SDs of the filter.
BLOB_NOISE_K = 5.0
#: Every rule needs voxels darker than the reference tissue: under mean_ref - DARKER_K * SD_ref
#: (outside about 98 % of the reference's own voxels; docs/methods/clusters.md#darker-than-reference).
DARKER_K = 2.0

TABLE_COLUMNS = [
    "label",
    "voxels",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "min_signal_norm",
    "mean_signal_norm",
    "baseline_ratio",
    "cnr",
    "split",
]


# ---------------------------------------------------------------- small types


@dataclass
class ReferenceStats:
    """Mean and SD of the reference tissue (signal units) and where they came from."""

    mean: float
    sd: float
    n_voxels: int
    source: str


@dataclass
class Rule:
    """A candidate rule with every number it needs, in normalised units (fractions of the reference).

    Made by :meth:`PreparedInputs.rule`; apply it with :meth:`PreparedInputs.candidates`.
    """

    method: str
    threshold: float
    cut: float  # voxel rules: r < cut; blob: local contrast > cut
    ref_mean: float
    pre_ref_mean: float | None
    sigma: float
    baseline_rule: str = "ratio"
    baseline_ratio: float = 0.6
    baseline_k: float = 3.0
    blob_sigmas: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.5,) * 3, (3.0,) * 3)
    blob_noise_sd: float = 0.0  # noise SD of the blob deficit (signal units)
    darker_cap: float = 1.0  # every voxel must be under darker_cap * ref_mean (darker than the reference)
    fixed_share: bool = False  # the rule marks a fixed share of the search region by construction
    baseline_tolerance: int = 1  # voxels around each candidate that must not have been dark at baseline

    @property
    def threshold_signal(self) -> float:
        """The rule's threshold in the post image's signal units (voxel rules)."""
        return self.cut * self.ref_mean

    def depth(self, has_baseline: bool) -> tuple[int, int, int]:
        """Halo (voxels per axis) a block needs so that the rule gives the same result as on the whole volume.

        Parameters
        ----------
        has_baseline : bool
            Whether a baseline is used (its neighbourhood check reaches ``baseline_tolerance`` voxels).

        Returns
        -------
        tuple of int
            Voxels per axis: the blob filter's outer Gaussian reach (4 sigma + 1), else the baseline
            tolerance with a baseline, else 0.

        Examples
        --------
        >>> rule = Rule("fraction", 0.5, 0.5, 100.0, None, 2.0)
        >>> rule.depth(False), rule.depth(True)
        ((0, 0, 0), (1, 1, 1))
        """
        if self.method == "blob":
            return tuple(int(4.0 * s + 0.5) + 1 for s in self.blob_sigmas[1])
        r = int(self.baseline_tolerance)
        return (r, r, r) if has_baseline else (0, 0, 0)

    def as_dict(self) -> dict:
        """The rule's numbers for provenance (JSON-ready).

        Parameters
        ----------
        None

        Returns
        -------
        dict
            ``method``, ``threshold``, ``cut_normalised``, ``threshold_signal`` (signal units; None for
            blob), the baseline rule and its ratio and k, the blob sigmas (voxels; blob only), the
            darker-than-reference cap (normalised), the baseline tolerance (voxels) and
            ``fixed_share_of_search_region``.

        Examples
        --------
        >>> d = Rule("fraction", 0.5, 0.5, 100.0, None, 2.0).as_dict()
        >>> d["threshold_signal"], d["cut_normalised"], d["blob_sigmas_voxels"]
        (50.0, 0.5, None)
        """
        return {
            "method": self.method,
            "threshold": self.threshold,
            "cut_normalised": self.cut,
            "threshold_signal": self.threshold_signal if self.method != "blob" else None,
            "baseline_rule": self.baseline_rule,
            "baseline_ratio": self.baseline_ratio,
            "baseline_k": self.baseline_k,
            "blob_sigmas_voxels": [list(s) for s in self.blob_sigmas] if self.method == "blob" else None,
            "darker_than_reference_below_normalised": self.darker_cap,
            "baseline_tolerance_voxels": self.baseline_tolerance,
            "fixed_share_of_search_region": self.fixed_share,
        }


@dataclass
class ClusterResult:
    """What :func:`segment_clusters` returns.

    Attributes
    ----------
    labels : Volume
        Integer labels on the post image's grid (0 background, 1..N clusters),
        NumPy or dask like the input.
    table : pandas.DataFrame
        One row per label (columns in the module docstring).
    sigma : float
        Rician noise sigma used (signal units).
    noise : NoiseEstimate
    reference : ReferenceStats
    rule : Rule
    warnings : list of str
        Everything doubtful, also emitted as ImmunotrackWarning.
    parameters : dict
        All parameters, for provenance.
    """

    labels: Volume
    table: Any
    sigma: float
    noise: NoiseEstimate
    reference: ReferenceStats
    rule: Rule
    warnings: list[str]
    parameters: dict[str, Any]

    def provenance(self, inputs: dict | None = None, step: str = "segment") -> dict:
        """A provenance record (:func:`napari_immunotrack.provenance.record`) for this result.

        Parameters
        ----------
        inputs : dict, optional
            The input files or Volumes (``{role: path or Volume}``).
        step : str, default "segment"
            The step's name in the record.

        Returns
        -------
        dict
            The record: step, inputs, parameters, warnings, software versions and ``results`` (cluster
            count, sigma and how it was found, the reference mean and its source, split components).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((8, 8, 8), 100.0, np.float32)
        >>> img[2:4, 2:4, 2:4] = 20.0
        >>> res = segment_clusters(Volume(img, np.eye(4)), reference_mask=Volume((img > 50).astype(np.uint8), np.eye(4)),
        ...                        sigma=2.0)
        >>> rec = res.provenance(step="segment")
        >>> rec["step"], rec["results"]["clusters"], rec["results"]["sigma"]
        ('segment', 1, 2.0)
        """
        from ..provenance import record

        return record(
            step,
            inputs,
            self.parameters,
            self.warnings,
            results={
                "clusters": int(len(self.table)),
                "sigma": self.sigma,
                "noise_method": self.noise.method,
                "reference_mean": self.reference.mean,
                "reference_source": self.reference.source,
                "split_components": int(self.parameters.get("split_components", 0)),
            },
        )


# ------------------------------------------------------------------ helpers


def structure_for(connectivity: int) -> np.ndarray:
    """The 3x3x3 structuring element of 6-, 18- or 26-connectivity.

    Parameters
    ----------
    connectivity : {6, 18, 26}
        Neighbours a voxel touches: faces (6), faces and edges (18), or faces, edges and corners (26).

    Returns
    -------
    numpy.ndarray
        bool, shape (3, 3, 3), for :func:`scipy.ndimage.label`.

    Raises
    ------
    InputError
        Any other connectivity.

    Examples
    --------
    >>> [int(structure_for(c).sum()) for c in (6, 18, 26)]    # the centre voxel and its neighbours
    [7, 19, 27]
    """
    if connectivity not in CONNECTIVITIES:
        raise InputError(f"connectivity={connectivity} is not supported; use 6, 18 or 26.")
    return ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity])


def baseline_on_grid(baseline: Volume, post: Volume, transform=None, collected: list | None = None) -> Volume:
    """The baseline carried onto the post image's grid.

    Rules (documented choice): a baseline with exactly the post image's grid
    (shape and affine) is used as is. Any other baseline needs ``transform``,
    the 4x4 world-to-world map from post world points to baseline world points
    (a registration result; ``numpy.eye(4)`` when both are already in the same
    world) and is then resampled linearly; voxels outside its field of view
    become NaN and cannot be confirmed (warned when more than 1% of the post image). The same shape with
    another affine is not the same grid and is refused without a transform: it is usually two
    scans that were never registered (docs/methods/transforms.md#direction).

    Parameters
    ----------
    baseline : Volume
        Pre-injection image (3D).
    post : Volume
        Post-injection image whose grid is the target.
    transform : (4, 4) array, optional
        Post world (mm) -> baseline world (mm).
    collected : list, optional
        Warnings are appended here as text (and also emitted as ImmunotrackWarning).

    Returns
    -------
    Volume
        ``baseline`` itself when it is already on the grid, else a new Volume on ``post``'s grid
        (NaN outside the baseline's field of view).

    Raises
    ------
    InputError
        A different grid without a transform, a transform that is not a finite affine, or a baseline
        that lies outside the post image after the transform.

    Examples
    --------
    >>> import numpy as np
    >>> post = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    >>> pre = Volume(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    >>> baseline_on_grid(pre, post) is pre
    True
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 1.0                                   # post x -> baseline x + 1 mm
    >>> moved = baseline_on_grid(pre, post, shift, collected=[])
    >>> moved.data[0, 0].tolist(), float(moved.data[3, 0, 0])    # the last slab falls outside: NaN
    ([16.0, 17.0, 18.0, 19.0], nan)
    """
    require_3d(baseline, "the baseline")
    if transform is None:
        if baseline.same_grid(post):
            return baseline
        if baseline.spatial_shape == post.spatial_shape:
            raise InputError(
                "the baseline has the post image's shape but another affine (position or orientation), "
                "so they are not the same grid; register them and give the transform "
                "(--baseline-transform), or fix the header."
            )
        raise InputError(
            f"the baseline grid {baseline.spatial_shape} differs from the post image grid "
            f"{post.spatial_shape} and no transform was given; register them and pass the transform "
            "(--baseline-transform FILE, or 'identity' if both are already in the same world)."
        )
    t = np.asarray(transform, float)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)) or not np.allclose(t[3], [0, 0, 0, 1]):
        raise InputError("the baseline transform must be a finite 4x4 affine matrix with last row 0 0 0 1.")
    if baseline.same_grid(post) and np.allclose(t, np.eye(4), atol=1e-9):
        return baseline
    out = baseline.resample_to(post, order=1, transform=t, fill=np.nan)
    outside = float(np.mean(~np.isfinite(out.numpy())))
    if outside >= 0.999:
        raise InputError(
            "the baseline lies outside the post image after the transform; check the transform's "
            "direction (post world -> baseline world) and the files."
        )
    if outside > 0.01:
        warn_and_collect(
            f"{100 * outside:.1f}% of the post image lies outside the baseline's field of view; clusters there "
            "cannot be confirmed and are not reported.",
            collected,
        )
    return out


# ---------------------------------------------------------------- preparation
@dataclass
class PreparedInputs:
    """The inputs of a segmentation carried onto the post image's grid, with their statistics.

    Made once by :func:`prepare`; rules with different methods and thresholds
    are then cheap (:meth:`rule`, :meth:`candidates`, :meth:`preview`), which
    is what a live preview needs.
    """

    post: Volume
    pre: Any  # array on post's grid or None
    search: Any  # bool array or None
    reference: ReferenceStats
    pre_reference: ReferenceStats | None
    noise: NoiseEstimate
    warnings: list[str]
    n_nonfinite: int = 0
    _search_sorted: np.ndarray | None = None
    #: without a baseline: the air/outside-body exclusion's provenance record (None with a baseline)
    outside_body: dict | None = None
    #: an in-memory image whose body was measured on a subsample: the outline, applied to the candidate
    #: voxels only (:class:`_BodyOutline`); ``search`` is then the user's ROI alone
    body: Any = None

    @property
    def has_baseline(self) -> bool:
        return self.pre is not None

    def search_values_sorted(self) -> np.ndarray:
        """Sorted finite normalised values of the search ROI (or the whole image), cached for the percentile rule.

        Parameters
        ----------
        None

        Returns
        -------
        numpy.ndarray
            float64, the values divided by the reference mean, ascending.

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((4, 4, 4), 100.0, np.float32)
        >>> img[0, 0, 0] = 20.0
        >>> prep = prepare(Volume(img, np.eye(4)), reference_mask=Volume(np.ones((4, 4, 4), np.uint8), np.eye(4)), sigma=2.0)
        >>> values = prep.search_values_sorted()           # reference mean (63 x 100 + 20) / 64 = 98.75
        >>> values.size, round(float(values[0]), 4), round(float(values[-1]), 4)
        (64, 0.2025, 1.0127)
        """
        if self._search_sorted is None:
            search = self.search
            if self.body is not None:  # the percentile rule needs the whole search region: the outline read back
                inside = self.body.full_inside(self.post.data)
                search = inside if search is None else search & inside
            if search is not None:
                vals = masked_values(self.post.data, search)
            else:
                vals = np.asarray(self.post.numpy(), np.float64).ravel()
            vals = vals[np.isfinite(vals)] / self.reference.mean
            self._search_sorted = np.sort(vals)
        return self._search_sorted

    def rule(
        self,
        method: str = "fraction",
        threshold: float | None = None,
        baseline_rule: str = "ratio",
        baseline_ratio: float = 0.6,
        baseline_k: float = 3.0,
        blob_scales_voxels=(0.5, 3.0),
        collected: list | None = None,
        baseline_tolerance_voxels: int = 1,
    ) -> Rule:
        """The candidate :class:`Rule` for a method and threshold; warns under the Rician floor.

        Every rule also keeps voxels darker than the reference only (a cut above ``1 - 2 SD/mean`` is
        lowered to it; docs/methods/clusters.md#darker-than-reference); a threshold under 3 sigma, or a
        blob contrast under 5 filtered-noise SDs, is warned about.

        Parameters
        ----------
        method : {"fraction", "percentile", "ksigma", "blob"}, default "fraction"
            Candidate rule (docs/methods/clusters.md#rules).
        threshold : float, optional
            The rule's parameter (default of :data:`DEFAULT_THRESHOLDS`).
        baseline_rule : {"ratio", "delta_r2s"}, default "ratio"
            How a voxel counts as darkened against the baseline.
        baseline_ratio : float, default 0.6
            post/pre below which a voxel counts as darkened.
        baseline_k : float, default 3.0
            For "delta_r2s": required significance in noise SDs.
        blob_scales_voxels : (float, float), default (0.5, 3.0)
            Inner and outer Gaussian scales of the blob detector (voxels of the finest axis).
        collected : list, optional
            Warnings are appended here as text (and also emitted as ImmunotrackWarning).
        baseline_tolerance_voxels : int, default 1
            Voxels around a candidate that must not have been dark at baseline.

        Returns
        -------
        Rule
            The rule with its cut in normalised units (``threshold_signal`` in signal units).

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((8, 8, 8), 100.0, np.float32)
        >>> img[2:4, 2:4, 2:4] = 20.0
        >>> prep = prepare(Volume(img, np.eye(4)), reference_mask=Volume((img > 50).astype(np.uint8), np.eye(4)), sigma=2.0)
        >>> rule = prep.rule("fraction", 0.5)
        >>> rule.cut, rule.threshold_signal
        (0.5, 50.0)
        """
        thr = check_rule_parameters(method, threshold, baseline_rule, baseline_ratio, baseline_k, blob_scales_voxels)
        ref = self.reference
        sigma = self.noise.sigma
        spacing = self.post.spacing
        s1, s2 = (float(s) for s in blob_scales_voxels)
        # blob scales are in voxels of the finest axis, converted per axis so the filter is isotropic in mm
        fine = float(spacing.min())
        sig1 = tuple(float(s1 * fine / sp) for sp in spacing)
        sig2 = tuple(float(s2 * fine / sp) for sp in spacing)
        noise_sd = 0.0
        if method == "fraction":
            cut = thr
        elif method == "percentile":
            vals = self.search_values_sorted()
            if vals.size == 0:
                raise InputError("the search ROI holds no finite voxel; draw it on the image.")
            cut = float(np.percentile(vals, thr))
        elif method == "ksigma":
            cut = 1.0 - thr * ref.sd / ref.mean
            if cut <= 0:
                raise InputError(
                    f"mean - {thr:g} SD of the reference is below zero (mean {ref.mean:.4g}, SD "
                    f"{ref.sd:.4g}): the reference ROI is too heterogeneous; draw it on uniform tissue "
                    "or use another rule."
                )
        else:  # blob
            cut = thr
            noise_sd = sigma * _dog_noise_gain(sig1, sig2)
        # every rule: darker than the reference tissue (the percentile of a region without voids is just its
        # darkest noise, which would otherwise always come out as "clusters")
        darker_cap = max(1.0 - DARKER_K * ref.sd / ref.mean, 0.0)
        if method == "percentile":
            warn_and_collect(
                f"the percentile rule marks the darkest {thr:g} % of the search region by construction (a fixed "
                f"share, voids or not); only voxels also darker than the reference (under {darker_cap:.3g} of its "
                "mean) and, with a baseline, darker than before are kept.",
                collected,
            )
        if method != "blob" and cut > darker_cap:
            if method != "percentile":
                warn_and_collect(
                    f"the {method} threshold ({cut:.3g} of the reference) is not darker than the reference tissue "
                    f"(mean - {DARKER_K:g} SD = {darker_cap:.3g}); it is lowered to {darker_cap:.3g}.",
                    collected,
                )
            cut = darker_cap
        rule = Rule(
            method,
            thr,
            float(cut),
            ref.mean,
            self.pre_reference.mean if self.pre_reference is not None else None,
            sigma,
            baseline_rule,
            float(baseline_ratio),
            float(baseline_k),
            (sig1, sig2),
            noise_sd,
            darker_cap=float(darker_cap),
            fixed_share=method == "percentile",
            baseline_tolerance=int(baseline_tolerance_voxels),
        )
        floor = FLOOR_K * sigma
        if method != "blob" and rule.threshold_signal < floor:
            warn_and_collect(
                f"the {method} threshold ({rule.threshold_signal:.4g} in image units, {cut:.3g} of the reference) "
                f"is under the Rician noise floor 3 sigma = {floor:.4g}: voids cannot be told from noise; raise "
                "the threshold or use an image with more signal-to-noise.",
                collected,
            )
        if method == "blob" and thr * ref.mean < BLOB_NOISE_K * noise_sd:
            warn_and_collect(
                f"the blob contrast threshold {thr:g} ({thr * ref.mean:.4g} in image units) is under "
                f"{BLOB_NOISE_K:g} times the filtered noise ({noise_sd:.4g}); only voids deeper than "
                f"{BLOB_NOISE_K * noise_sd / ref.mean:.3g} of the reference are detected.",
                collected,
            )
        return rule

    def candidates(
        self, rule: Rule, region: tuple[slice, slice, slice] | None = None, progress=None, raw: bool = False
    ) -> np.ndarray:
        """Candidate mask (bool) of ``rule`` on the whole grid or on a ``region`` (3 slices) of it.

        The result on a region is exactly the whole-volume result cut to the region.
        With ``raw`` the blob rule gives uint8: 2 for seeds, 1 for weak voxels
        (kept only in components that hold a seed).

        Parameters
        ----------
        rule : Rule
            From :meth:`rule`.
        region : tuple of 3 slices, optional
            Part of the post image's grid (default: all of it).
        progress : callable, optional
            ``progress(fraction, message)`` callback.
        raw : bool, default False
            Return the blob rule's seed/weak labels instead of a boolean mask.

        Returns
        -------
        numpy.ndarray
            bool (or uint8 with ``raw`` for blob), the region's shape.

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((8, 8, 8), 100.0, np.float32)
        >>> img[2:4, 2:4, 2:4] = 20.0
        >>> prep = prepare(Volume(img, np.eye(4)), reference_mask=Volume((img > 50).astype(np.uint8), np.eye(4)), sigma=2.0)
        >>> rule = prep.rule("fraction", 0.5)
        >>> int(prep.candidates(rule).sum()), int(prep.candidates(rule, (slice(0, 3), slice(None), slice(None))).sum())
        (8, 4)
        """
        shape = self.post.spatial_shape
        if region is None:
            region = tuple(slice(0, n) for n in shape)
        region = tuple(slice(*s.indices(n)[:2]) for s, n in zip(region, shape))
        out = _candidates_region(self.post.data, self.pre, self.search, rule, region, progress, body=self.body)
        return out if raw or out.dtype == bool else out > 0

    def preview(self, rule: Rule, axis: int, index: int) -> np.ndarray:
        """The 2D candidate mask of the slice ``index`` along array ``axis`` (exact, fast: one slice).

        Parameters
        ----------
        rule : Rule
            From :meth:`rule`.
        axis : int
            Array axis (0, 1 or 2) across which the slice is taken.
        index : int
            The slice's index along ``axis``.

        Returns
        -------
        numpy.ndarray
            bool, 2D: the whole-volume candidates of that slice.

        Examples
        --------
        >>> import numpy as np
        >>> img = np.full((8, 8, 8), 100.0, np.float32)
        >>> img[2:4, 2:4, 2:4] = 20.0
        >>> prep = prepare(Volume(img, np.eye(4)), reference_mask=Volume((img > 50).astype(np.uint8), np.eye(4)), sigma=2.0)
        >>> mask = prep.preview(prep.rule("fraction", 0.5), axis=0, index=2)
        >>> mask.shape, int(mask.sum())
        ((8, 8), 4)
        """
        region = [slice(None)] * 3
        region[axis] = slice(int(index), int(index) + 1)
        return np.take(self.candidates(rule, tuple(region)), 0, axis=axis)


def check_rule_parameters(
    method: str = "fraction",
    threshold: float | None = None,
    baseline_rule: str = "ratio",
    baseline_ratio: float = 0.6,
    baseline_k: float = 3.0,
    blob_scales_voxels=(0.5, 3.0),
) -> float:
    """Check a rule's parameters before any work; returns the threshold (the method's default if None).

    The rules and their parameters are in docs/methods/clusters.md#rules.

    Parameters
    ----------
    method : {"fraction", "percentile", "ksigma", "blob"}, default "fraction"
        Candidate rule.
    threshold : float, optional
        The rule's parameter: fraction of the reference (0 to 1, default 0.5), percentile (0 to 100,
        default 10), k in reference SDs (> 0, default 3) or local contrast (0 to 1, default 0.2).
    baseline_rule : {"ratio", "delta_r2s"}, default "ratio"
        How a voxel counts as darkened against the baseline.
    baseline_ratio : float, default 0.6
        post/pre below which a voxel counts as darkened (0 to 1).
    baseline_k : float, default 3.0
        For "delta_r2s": required significance in noise SDs (> 0).
    blob_scales_voxels : (float, float), default (0.5, 3.0)
        Inner and outer Gaussian scales (voxels) of the blob detector; 0 < inner < outer.

    Returns
    -------
    float
        The threshold to use.

    Raises
    ------
    InputError
        An unknown method or baseline rule, or a value out of its range.

    Examples
    --------
    >>> check_rule_parameters("fraction"), check_rule_parameters("percentile"), check_rule_parameters("ksigma", 2)
    (0.5, 10.0, 2.0)
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is unknown; use one of {', '.join(METHODS)}.")
    thr = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    try:
        thr = float(thr)
    except (TypeError, ValueError):
        raise InputError(f"threshold={threshold!r} is not a number.") from None
    if not np.isfinite(thr):
        raise InputError(f"threshold={threshold} is not a finite number.")
    if method == "fraction" and not 0 < thr < 1:
        raise InputError(
            f"threshold={thr:g} for 'fraction' must be between 0 and 1 (fraction of the reference; 0.5 by default)."
        )
    if method == "percentile" and not 0 < thr < 100:
        raise InputError(f"threshold={thr:g} for 'percentile' must be between 0 and 100 (10 by default).")
    if method == "ksigma" and not thr > 0:
        raise InputError(f"threshold={thr:g} for 'ksigma' must be greater than 0 (k; 3 by default).")
    if method == "blob":
        if not 0 < thr < 1:
            raise InputError(f"threshold={thr:g} for 'blob' must be between 0 and 1 (local contrast; 0.2 by default).")
        s1, s2 = (float(v) for v in blob_scales_voxels)
        if not 0 < s1 < s2:
            raise InputError(f"blob scales {tuple(blob_scales_voxels)} must satisfy 0 < inner < outer (voxels).")
    if baseline_rule not in BASELINE_RULES:
        raise InputError(f"baseline_rule={baseline_rule!r} is unknown; use 'ratio' or 'delta_r2s'.")
    if not 0 < float(baseline_ratio) < 1:
        raise InputError(f"baseline_ratio={baseline_ratio} must be between 0 and 1 (post/pre; 0.6 by default).")
    if not float(baseline_k) > 0:
        raise InputError(f"baseline_k={baseline_k} must be greater than 0.")
    return thr


def _dog_noise_gain(sig1, sig2) -> float:
    """Noise SD of G_s2(x) - G_s1(x) for unit white noise (norm of the kernel difference)."""
    half = [int(4.0 * s + 0.5) + 1 for s in sig2]
    delta = np.zeros([2 * h + 1 for h in half])
    delta[tuple(half)] = 1.0
    k = ndimage.gaussian_filter(delta, sig2, mode="constant") - ndimage.gaussian_filter(delta, sig1, mode="constant")
    return float(np.sqrt(np.sum(k * k)))


def reference_statistics(
    image: Volume, reference_mask=None, search_mask=None, collected: list | None = None
) -> ReferenceStats:
    """Mean and SD of the reference tissue of ``image``.

    With a reference ROI: the mean and sample SD of its finite voxels. Without one (a guess, warned):
    the median and robust SD (1.4826 MAD) of the search ROI, or of the voxels above the image's
    median when there is no search ROI either (on a regular subsample of at most about 4 million
    voxels). Signals are then normalised to the mean (docs/methods/clusters.md#inputs-and-normalisation).

    Parameters
    ----------
    image : Volume
        The image (3D, NumPy or dask).
    reference_mask : Volume or numpy.ndarray, optional
        Reference tissue ROI: a Volume on any grid (carried to the image's by nearest neighbour) or a
        boolean array on the image's grid.
    search_mask : Volume or numpy.ndarray, optional
        Search ROI, used only without a reference ROI.
    collected : list, optional
        Warnings are appended here as text (and also emitted as ImmunotrackWarning).

    Returns
    -------
    ReferenceStats
        ``mean`` and ``sd`` (signal units), ``n_voxels`` and ``source`` (where they came from).

    Raises
    ------
    InputError
        A reference ROI with only NaN voxels, no finite voxel at all, or a mean that is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> img = Volume(np.tile(np.float32([100, 110, 90, 100]), 16).reshape(4, 4, 4), np.eye(4))
    >>> ref = np.zeros((4, 4, 4), bool)
    >>> ref[:2] = True
    >>> s = reference_statistics(img, ref)
    >>> s.mean, round(s.sd, 3), s.n_voxels, s.source
    (100.0, 7.184, 32, 'reference ROI')
    """

    def as_mask(m, what):
        if m is None or not isinstance(m, Volume):
            return m
        return mask_on_grid(m, image, what, collected)

    ref = as_mask(reference_mask, "the reference ROI")
    if ref is not None:
        n_all, n, mean, sd = masked_moments(image.data, ref)
        if n == 0:
            raise InputError("the reference ROI covers only NaN voxels of the image; draw it on valid tissue.")
        if n < n_all:
            warn_and_collect(f"{n_all - n} NaN voxels in the reference ROI were ignored.", collected)
        stats = ReferenceStats(mean, sd, int(n), "reference ROI")
    else:
        # a guess from a regular subsample (at most ~4 million voxels): the median needs no more
        step = sample_step(image.spatial_shape)
        sub = tuple(slice(None, None, step) for _ in range(3))
        search = as_mask(search_mask, "the search ROI")
        if search is not None:
            vals = masked_values(image.data[sub], search[sub])
            where = "the search ROI"
        else:
            vals = _np(image.data[sub]).astype(np.float64).ravel()
            vals = vals[np.isfinite(vals)]
            vals = vals[vals >= np.median(vals)] if vals.size else vals
            where = "the brighter half of the image"
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            raise InputError("no finite voxel to normalise to; give a reference ROI on tissue.")
        med = float(np.median(vals))
        sd = 1.4826 * float(np.median(np.abs(vals - med)))
        stats = ReferenceStats(med, sd, int(vals.size), f"median of {where} (automatic)")
        warn_and_collect(
            f"no reference ROI: signal normalised to the median of {where} ({med:.4g}); draw a reference ROI "
            "(same organ without cells, contralateral node, muscle) for values that can be compared.",
            collected,
        )
    if not stats.mean > 0:
        raise InputError(
            f"the reference tissue has mean {stats.mean:.4g} (not positive); draw the reference ROI on "
            "tissue with signal."
        )
    return stats


def _estimate_noise(
    post: Volume, pre, background_mask, ref_mask, reference: ReferenceStats, sigma: float | None, collected: list
) -> NoiseEstimate:
    """The noise sigma: given, from a background ROI, or automatic (see module docstring)."""
    if sigma is not None:
        try:
            s = float(sigma)
        except (TypeError, ValueError):
            raise InputError(f"sigma={sigma!r} is not a number.") from None
        if not (np.isfinite(s) and s > 0):
            raise InputError(f"sigma={sigma} must be a positive number (signal units).")
        return NoiseEstimate(s, "given", 0)
    if background_mask is not None:
        return noise_from_background(post, background_mask, "sd", collected)
    if pre is not None and ref_mask is not None:
        diff = masked_values(post.data, ref_mask) - masked_values(pre, ref_mask)
        diff = diff[np.isfinite(diff)]
        if diff.size >= 50:
            mad = 1.4826 * float(np.median(np.abs(diff - np.median(diff))))
            s = mad / math.sqrt(2.0)
            if s > 0:
                return NoiseEstimate(
                    s, "post - baseline difference in the reference ROI (robust SD / sqrt 2)", int(diff.size)
                )
    border = border_air_sigma(post.data)
    if border is not None and border[0] < 0.1 * reference.mean and border[0] > 0:
        s = border[0] / RAYLEIGH_MEDIAN
        return NoiseEstimate(s, "air at the field-of-view border (median / 1.1774)", border[1])
    if reference.sd > 0:
        warn_and_collect(
            f"no background ROI: noise sigma taken from the reference tissue's spread ({reference.sd:.4g}), an "
            "upper bound that includes tissue texture; draw a background (air) ROI for a true Rician sigma.",
            collected,
        )
        return NoiseEstimate(reference.sd, "reference ROI spread (upper bound)", reference.n_voxels)
    raise InputError(
        "the noise cannot be estimated (no background ROI and a constant reference); draw a background (air) ROI."
    )


def prepare(
    post: Volume,
    baseline: Volume | None = None,
    reference_mask: Volume | None = None,
    search_mask: Volume | None = None,
    background_mask: Volume | None = None,
    baseline_transform=None,
    sigma: float | None = None,
) -> PreparedInputs:
    """Check the inputs, carry them onto ``post``'s grid and measure reference and noise.

    Raises InputError on bad input (empty or outside ROIs, grids that do not match, an all-zero or
    all-NaN image) and warns (ImmunotrackWarning, also kept in ``.warnings``) on doubtful input (NaN
    voxels, no reference ROI, ...). Rules with other methods and thresholds are then cheap
    (:meth:`PreparedInputs.rule`), which is what a live preview needs.

    Parameters
    ----------
    post : Volume
        Post-injection magnitude image (3D, NumPy or dask).
    baseline : Volume, optional
        Pre-injection scan, carried with :func:`baseline_on_grid`.
    reference_mask : Volume, optional
        Reference tissue ROI (any grid); see :func:`reference_statistics`.
    search_mask : Volume, optional
        Where to look (any grid); the whole image without it.
    background_mask : Volume, optional
        Air ROI for the Rician noise sigma (any grid); otherwise estimated automatically
        (docs/methods/clusters.md#inputs-and-normalisation).
    baseline_transform : (4, 4) array, optional
        Post world -> baseline world (mm), needed when the baseline is on another grid.
    sigma : float, optional
        Noise sigma (signal units), if known.

    Returns
    -------
    PreparedInputs
        The post image, the baseline and masks on its grid, the reference statistics, the noise
        estimate and the warnings; pass it to :func:`segment_clusters` as ``prepared``.

    Examples
    --------
    >>> import numpy as np
    >>> post = Volume(np.full((8, 8, 8), 100.0, np.float32), np.eye(4))
    >>> ref = Volume(np.ones((8, 8, 8), np.uint8), np.eye(4))
    >>> prep = prepare(post, reference_mask=ref, sigma=5.0)
    >>> prep.reference.mean, prep.rule("fraction").threshold_signal
    (100.0, 50.0)
    """
    collected: list = []
    require_3d(post, "the post-injection image")
    data = post.data
    if data.dtype.kind not in "iuf":
        raise InputError(f"the post-injection image has {data.dtype} values; a real-valued magnitude image is needed.")
    if is_dask_array(data):
        n_finite, n_nonzero = (
            int(v) for v in _dask_compute(_da_isfinite(data).sum(), ((data != 0) & _da_isfinite(data)).sum())
        )
    else:
        arr = np.asarray(data)
        finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
        n_finite = int(np.count_nonzero(finite)) if finite is not None else arr.size
        del finite
        n_nonzero = int(np.count_nonzero(arr)) - (arr.size - n_finite)  # NaN and inf count as non-zero
    size = int(np.prod(post.spatial_shape))
    if n_finite == 0:
        raise InputError("the post-injection image has no finite voxel (all NaN); check the file.")
    if n_nonzero == 0:
        raise InputError("the post-injection image is all zero; check the file (an empty or masked export?).")
    if n_finite < size:
        warn_and_collect(
            f"the post-injection image has {size - n_finite} NaN/inf voxels ({100 * (size - n_finite) / size:.2g}%); "
            "they are ignored (never part of a cluster or of the reference).",
            collected,
        )
    ref_mask = mask_on_grid(reference_mask, post, "the reference ROI", collected)
    search = mask_on_grid(search_mask, post, "the search ROI", collected)
    pre = None
    if baseline is not None:
        pre_vol = baseline_on_grid(baseline, post, baseline_transform, collected)
        pre = pre_vol.data
        if is_dask_array(data) and not is_dask_array(pre):
            import dask.array as da

            pre = da.from_array(np.asarray(pre), chunks=data.chunks)
        elif is_dask_array(pre) and not is_dask_array(data):
            pre = np.asarray(pre.compute())
        elif is_dask_array(pre):
            pre = pre.rechunk(data.chunks)
    elif baseline_transform is not None:
        raise InputError("a baseline transform was given without a baseline image.")
    # the reference guess (no reference ROI) keeps using the user's search ROI or the image's brighter half
    reference = reference_statistics(post, ref_mask, search, collected)
    outside_body = body = None
    if pre is None:  # no baseline to tell air from new voids: the air around the animal is left out
        search, outside_body, body = _search_inside_body(post, search, collected)
    pre_reference = None
    if pre is not None:
        pre_vol_grid = post.replace(data=pre)
        if ref_mask is not None:
            # a carried baseline is NaN outside its field of view (a lazy or integer one has none to check here)
            carried_nan = isinstance(pre, np.ndarray) and pre.dtype.kind == "f"
            if carried_nan and not np.isfinite(pre[np.asarray(ref_mask, bool)]).any():
                raise InputError(
                    "the reference ROI lies outside the baseline's field of view once the baseline is brought onto "
                    "the post image; draw it where both images show tissue, or check the baseline transform."
                )
            pre_reference = reference_statistics(pre_vol_grid, ref_mask, None, collected)
        else:
            with warnings.catch_warnings():  # the same guess was already reported for the post image
                warnings.simplefilter("ignore", ImmunotrackWarning)
                pre_reference = reference_statistics(pre_vol_grid, None, search, None)
        if ref_mask is not None:
            drop = reference.mean / pre_reference.mean
            if drop < 0.8 or drop > 1.25:
                warn_and_collect(
                    f"the reference tissue changed between baseline and post ({drop:.2f} of its baseline mean); "
                    "check that the reference ROI has no labelled cells and that the scans match.",
                    collected,
                )
    noise = _estimate_noise(post, pre, background_mask, ref_mask, reference, sigma, collected)
    if reference.mean < FLOOR_K * noise.sigma:
        raise InputError(
            f"the reference tissue mean ({reference.mean:.4g}) is under 3 sigma of noise "
            f"({FLOOR_K * noise.sigma:.4g}); the reference ROI is in air or the image is only noise."
        )
    return PreparedInputs(
        post,
        pre,
        search,
        reference,
        pre_reference,
        noise,
        collected,
        size - n_finite,
        outside_body=outside_body,
        body=body,
    )


def _search_inside_body(post: Volume, search, collected: list):
    """The search region without the air around the animal (no baseline), and the exclusion's record.

    Without a baseline nothing tells the air outside the body (Rician noise, far
    under any cut) from a void, so the whole surroundings would come out as one
    huge "cluster". The body is found on the image itself (:func:`.body.outside_body`);
    a dask image is measured on a regular subsample and the mask read back lazily; an in-memory image
    measured on a subsample keeps the outline (a :class:`_BodyOutline`, third value) and applies it to
    the candidate voxels only (the same voxels are left out as with the full mask, at a fraction of the cost).
    """
    from .body import outside_body

    data = post.data
    # an image over 2 million voxels is measured on a regular subsample and its outline decided at full
    # resolution (keeps the exclusion under the cost of one labelling; a lazy one: seconds, not minutes);
    # so is one with voxels of 0.125 mm or finer, on every second voxel: a 0.25 mm grid still resolves
    # the skin and the body's voids (the same clusters on 48 simulated 0.1 mm scenes), at an eighth of the cost
    step = sample_step(post.spatial_shape, target=1 << 22 if is_dask_array(data) else 1 << 21)
    if float(np.min(post.spacing)) <= FINE_BODY_VOXEL_MM and min(post.spatial_shape) >= 16:
        step = max(step, 2)
    found = outside_body(data, step=step)  # a dask image: only the subsample is computed
    record = found.as_dict()
    if not found.air_found:
        record["baseline_would_add"] = _BASELINE_ADDS
        return search, record, None
    body = None
    if step == 1:
        inside = ~found.mask
        if is_dask_array(data):
            import dask.array as da

            inside = da.from_array(inside, chunks=data.chunks)
    elif is_dask_array(data):
        inside = _upsampled_inside(found, data)
    else:
        body = _BodyOutline(found)
    if search is not None and not is_dask_array(search):
        touches = body.touches(search, data) if body is not None else bool(np.any(search & inside))
        if not touches:
            record.update(excluded=False, note="the search ROI lies wholly outside the body found; kept as drawn")
            return search, record, None
    if body is None:
        search = inside if search is None else search & inside
    record["baseline_would_add"] = _BASELINE_ADDS
    warn_and_collect(
        f"no baseline: the air around the body is left out ({found.voxels} voxels, "
        f"{100 * found.voxels / max(int(np.prod(post.spatial_shape)), 1):.0f} % of the field of view; body from the "
        f"image itself, docs/methods/clusters.md#outside-the-body). {_BASELINE_ADDS}",
        collected,
    )
    return search, record, body


class _BodyOutline:
    """The body measured on a subsample, decided voxel by voxel where asked (no full-grid mask).

    The same rule as :func:`_upsampled_inside`: a voxel takes its coarse voxel's decision, except within
    two coarse voxels of the coarse outline, where it is body when its own value is above half the air
    threshold. Applied to the candidate voxels of a region only, so its cost follows the candidates, not
    the grid.
    """

    def __init__(self, found):
        self.found = found
        self.outside, self.step, self.cut = found.mask, found.step, np.float32(0.5 * found.threshold)
        outside = self.outside
        self.band = _grow(_grow(outside)) & _grow(_grow(~outside))

    def inside_at(self, coords, values) -> np.ndarray:
        """Body (True) or outside at the voxels ``coords`` (3 index arrays of the full grid) of ``values``."""
        coarse = tuple(np.minimum(c // self.step, n - 1) for c, n in zip(coords, self.outside.shape))
        in_band = self.band[coarse]
        inside = ~self.outside[coarse]
        if in_band.any():
            inside[in_band] = np.nan_to_num(np.asarray(values)[in_band], nan=0.0) > self.cut
        return inside

    def apply(self, cand: np.ndarray, post_values: np.ndarray, origin) -> None:
        """Clear, in place, the candidates of a C-contiguous region (starting at voxel ``origin``) outside the body."""
        idx = np.flatnonzero(cand)
        if idx.size == 0:
            return
        if idx.size > cand.size // 8:  # dense (no search ROI: the air itself): the coarse masks repeated
            rows = [np.arange(int(o), int(o) + n) // self.step for o, n in zip(origin, cand.shape)]
            sub = np.ix_(*[np.minimum(r, n - 1) for r, n in zip(rows, self.outside.shape)])
            band, inside = self.band[sub], ~self.outside[sub]
            inside[band] = np.nan_to_num(np.asarray(post_values)[band], nan=0.0) > self.cut
            cand[~inside] = 0
            return
        local = np.unravel_index(idx, cand.shape)
        coords = tuple(local[a] + int(origin[a]) for a in range(3))
        inside = self.inside_at(coords, np.asarray(post_values)[local])
        cand.reshape(-1)[idx[~inside]] = 0

    def touches(self, search: np.ndarray, data) -> bool:
        """Whether any voxel of ``search`` (full grid) is body."""
        deep = ~self.outside & ~self.band  # these coarse voxels are body at full resolution too
        st = self.step
        if np.any(np.asarray(search)[::st, ::st, ::st] & deep):
            return True
        idx = np.flatnonzero(search)
        if idx.size == 0:
            return False
        coords = np.unravel_index(idx, search.shape)
        return bool(self.inside_at(coords, np.asarray(data)[coords]).any())

    def full_inside(self, data) -> np.ndarray:
        """The body on the whole grid (what :func:`_upsampled_inside` gives)."""
        return _upsampled_inside(self.found, data)


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` dilated by its six face neighbours (``ndimage.binary_dilation``'s default, by shifted ORs)."""
    out = mask.copy()
    for axis in range(mask.ndim):
        lo = [slice(None)] * mask.ndim
        hi = [slice(None)] * mask.ndim
        lo[axis], hi[axis] = slice(1, None), slice(None, -1)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


#: Without a baseline, the body of an image with voxels this fine (mm) or finer is found on every second voxel.
FINE_BODY_VOXEL_MM = 0.125

#: What a pre-injection baseline adds to a segmentation without one (said once, in one line).
_BASELINE_ADDS = (
    "A pre-injection baseline would also remove the dark structures inside the body that were there before "
    "(lungs, gut gas, bone, vessels, haemorrhage) and keep voids at the skin whole."
)


def _upsampled_inside(found, data):
    """The body (not outside) on the full grid from a mask measured on a subsample (NumPy or, chunk by
    chunk, dask).

    Read back by nearest neighbour; within two coarse voxels of the coarse outline each voxel is decided
    at full resolution (tissue above half the air threshold), so no rim of air comes in. Two, not one:
    the coarse outline itself may sit a coarse voxel off the true one where the skin runs obliquely to
    the grid (an animal lying turned), and a voxel may sit a coarse voxel from its sample.
    """
    from scipy import ndimage

    outside, step, cut = found.mask, found.step, np.float32(0.5 * found.threshold)
    band = ndimage.binary_dilation(outside, iterations=2) & ndimage.binary_dilation(~outside, iterations=2)

    def block(x, loc):
        idx = np.ix_(*[np.minimum(np.arange(a, b) // step, n - 1) for (a, b), n in zip(loc, outside.shape)])
        x = np.asarray(x)
        return np.where(band[idx], np.nan_to_num(x, nan=0.0) > cut, ~outside[idx])

    if not is_dask_array(data):
        # the coarse masks repeated to the full grid (contiguous copies, much cheaper than fancy indexing),
        # the full-resolution test only in the band
        def up(mask):
            for axis, n in enumerate(data.shape):
                mask = np.repeat(mask, step, axis=axis)[(slice(None),) * axis + (slice(0, n),)]
            return mask

        band_full = up(band)
        inside = ~up(outside)
        values = np.asarray(data)[band_full]
        inside[band_full] = np.nan_to_num(values, nan=0.0) > cut
        return inside
    import dask.array as da

    return da.map_blocks(lambda x, block_info=None: block(x, block_info[0]["array-location"]), data, dtype=bool)


def _da_isfinite(x):
    import dask.array as da

    return da.isfinite(x) if x.dtype.kind == "f" else da.ones_like(x, dtype=bool)


def _dask_compute(*things):
    import dask

    return dask.compute(*things)


# ------------------------------------------------------------ candidate rule
def _candidates_block(post, pre, search, rule: Rule) -> np.ndarray:
    """Candidate mask of one block (NumPy arrays that include the rule's halo)."""
    post = np.asarray(post, dtype=np.float32)
    finite = np.isfinite(post)
    if pre is not None:
        pre = np.asarray(pre, dtype=np.float32)
    if rule.method == "blob":
        sig1, sig2 = rule.blob_sigmas
        filled = np.where(finite, post, np.float32(rule.ref_mean))
        g1 = ndimage.gaussian_filter(filled, sig1, mode="nearest")
        g2 = ndimage.gaussian_filter(filled, sig2, mode="nearest")
        deficit = g2 - g1
        with np.errstate(divide="ignore", invalid="ignore"):
            # seeds: contrast above the threshold and significant; weak: above half the threshold
            # (kept only when connected to a seed, so a one-voxel void keeps its partial-volume rim)
            weak = (deficit > 0.5 * rule.cut * g2) & finite & (g2 > 0) & (filled < rule.darker_cap * rule.ref_mean)
            seed = weak & (deficit > rule.cut * g2) & (deficit > BLOB_NOISE_K * rule.blob_noise_sd)
            cand = weak
            if pre is not None:
                pre_ok = np.isfinite(pre)
                pfill = np.where(pre_ok, pre, np.float32(rule.pre_ref_mean))
                p1 = ndimage.gaussian_filter(pfill, sig1, mode="nearest")
                p2 = ndimage.gaussian_filter(pfill, sig2, mode="nearest")
                # new: no void here before, and the local signal dropped against the baseline
                cand &= pre_ok & ((p2 - p1) < rule.cut * p2)
                cand &= _darkened(g1 / rule.ref_mean, p1 / rule.pre_ref_mean, rule, smoothed=True)
        if search is not None:
            cand &= np.asarray(search, bool)
        out = cand.astype(np.uint8)
        out[cand & seed] = 2
        return out
    else:
        cand = post < np.float32(rule.cut * rule.ref_mean)  # NaN compares False
        if search is not None:
            cand &= np.asarray(search, bool)
        if pre is not None:
            _confirm_sparse(cand, post, pre, rule)
        return cand


def _darkened(r_post, r_pre, rule: Rule, smoothed: bool = False) -> np.ndarray:
    """Baseline confirmation on normalised signals: the voxel darkened since the baseline."""
    if rule.baseline_rule == "ratio":
        return r_post < rule.baseline_ratio * r_pre
    # delta R2*: ln(pre/post) significant against its noise, post floored at sigma (Rician floor)
    # (on smoothed signals, as the blob rule uses, the full-noise SD keeps the test conservative)
    s = rule.sigma / rule.ref_mean
    sp = rule.sigma / rule.pre_ref_mean
    post_f = np.maximum(r_post, s)
    pre_f = np.maximum(r_pre, sp)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(pre_f / post_f)
        sd = np.sqrt((sp / pre_f) ** 2 + (s / post_f) ** 2)
    return d > rule.baseline_k * sd


def _offsets(radius: int) -> np.ndarray:
    """Neighbour offsets within ``radius`` voxels per axis (the centre left out)."""
    r = range(-int(radius), int(radius) + 1)
    return np.array([(a, b, c) for a in r for b in r for c in r if (a, b, c) != (0, 0, 0)])


def _confirm_sparse(cand: np.ndarray, post: np.ndarray, pre: np.ndarray, rule: Rule) -> None:
    """Baseline confirmation of the candidate voxels of a block, in place.

    A candidate stays when it darkened (:func:`_darkened`) and no baseline
    voxel within ``rule.baseline_tolerance`` voxels (3x3x3 by default) was
    itself dark (under the rule's cut): the margin removes the partial-volume
    rim of voids that were there before, and a residual misalignment of the
    baseline of up to that many voxels (docs/methods/clusters.md). Done on the candidate voxels only (a sparse list), so it costs
    little; outside the block the neighbourhood is clipped, which at the
    volume's edge is the 'nearest' rule (and inside it the block's halo).
    """
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return
    dark_cut = np.float32(rule.cut * rule.pre_ref_mean)
    pv = post.ravel()[idx]
    qv = pre.ravel()[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = (qv >= dark_cut) & _darkened(pv / np.float32(rule.ref_mean), qv / np.float32(rule.pre_ref_mean), rule)
    sel = idx[keep]
    if sel.size:
        coords = np.unravel_index(sel, cand.shape)
        ok = np.ones(sel.size, bool)
        shape = cand.shape
        r = int(rule.baseline_tolerance)
        # neighbour coordinates clipped at the block's edges, once per axis and shift (not per offset)
        moved = [{o: np.clip(coords[a] + o, 0, shape[a] - 1) for o in range(-r, r + 1)} for a in range(3)]
        for off in _offsets(r):
            v = pre[moved[0][off[0]], moved[1][off[1]], moved[2][off[2]]]
            ok &= v >= dark_cut  # NaN (outside the baseline) is not confirmed
        keep[keep] = ok
    cand.ravel()[idx[~keep]] = False


def _candidates_region(
    post_data, pre_data, search, rule: Rule, region, progress=None, slab: int = 16, body=None, origin=(0, 0, 0)
) -> np.ndarray:
    """The rule on ``region`` of the full arrays, computed in slabs along axis 0 with the rule's halo.

    ``body`` (a :class:`_BodyOutline`) leaves out the candidates outside the animal; ``origin`` is the
    voxel of the whole grid where ``post_data`` starts (a crop).
    """
    shape = tuple(post_data.shape)
    depth = rule.depth(pre_data is not None)
    out_shape = tuple(s.stop - s.start for s in region)
    out = np.zeros(out_shape, np.uint8 if rule.method == "blob" else bool)
    z0, z1 = region[0].start, region[0].stop
    starts = list(range(z0, z1, slab))
    for i, a in enumerate(starts):
        b = min(a + slab, z1)
        lo = [max(a - depth[0], 0)] + [max(region[k].start - depth[k], 0) for k in (1, 2)]
        hi = [min(b + depth[0], shape[0])] + [min(region[k].stop + depth[k], shape[k]) for k in (1, 2)]
        src = tuple(slice(l, h) for l, h in zip(lo, hi))
        post_blk = _np(post_data[src])
        blk = _candidates_block(
            post_blk,
            None if pre_data is None else _np(pre_data[src]),
            None if search is None else _np(search[src]),
            rule,
        )
        keep = (
            slice(a - lo[0], b - lo[0]),
            slice(region[1].start - lo[1], region[1].stop - lo[1]),
            slice(region[2].start - lo[2], region[2].stop - lo[2]),
        )
        out[a - z0 : b - z0] = blk[keep]
        if body is not None:
            at = (a + origin[0], region[1].start + origin[1], region[2].start + origin[2])
            body.apply(out[a - z0 : b - z0], post_blk[keep], at)
        report(progress, (i + 1) / len(starts), "finding dark voxels")
    return out


def _np(a):
    return np.asarray(a.compute() if is_dask_array(a) else a)


# -------------------------------------------------------------- the pipeline
#: The tunable parameters of :func:`segment_clusters`: the one place their defaults and limits are
#: written (``immunotrack segment``, the "Iron clusters" dock, the batch step ``clusters`` and the
#: saved study state take them from here). ``threshold``'s default depends on ``method``
#: (:data:`DEFAULT_THRESHOLDS`), and its range too (:func:`check_rule_parameters`).
CLUSTER_PARAMETERS = ParamModel(
    "clusters",
    [
        Param(
            "method",
            str,
            "fraction",
            "candidate rule: fraction of reference, darkest percentile of the search region (a fixed "
            "share by construction), mean - k SD of the reference, or local-contrast blob detector; "
            "every rule keeps only voxels darker than the reference (docs/methods/clusters.md)",
            choices=METHODS,
        ),
        Param(
            "threshold",
            float,
            None,
            "the rule's parameter (defaults: "
            + ", ".join(f"{m} {v:g}" for m, v in DEFAULT_THRESHOLDS.items())
            + "; the method's default when not given)",
            optional=True,
        ),
        Param(
            "min_size",
            int,
            3,
            "smallest cluster kept",
            unit="voxels",
            minimum=1,
            label="min size (voxels)",
            form_maximum=10_000_000,
        ),
        Param("connectivity", int, 26, "voxel connectivity of a cluster", choices=tuple(CONNECTIVITIES)),
        Param(
            "baseline_ratio",
            float,
            0.6,
            "with a baseline: post/pre below which a voxel counts as darkened",
            unit="post/pre",
            minimum=0.0,
            maximum=1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
            step=0.05,
            form_minimum=0.05,
            form_maximum=0.95,
        ),
        Param(
            "baseline_rule",
            str,
            "ratio",
            "darkening test: post/pre ratio or delta R2* above k noise SD",
            choices=BASELINE_RULES,
        ),
        Param(
            "baseline_k",
            float,
            3.0,
            "k for baseline_rule delta_r2s",
            unit="noise SD",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "split_touching",
            bool,
            True,
            "split touching blooms (watershed from separate minima)",
            label="split touching blooms",
            flag="--split",
            off_help="do not split touching blooms (watershed from separate minima)",
        ),
        Param(
            "split_h",
            float,
            0.1,
            "depth of a minimum needed to split touching blooms",
            unit="normalised signal",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "sigma",
            float,
            None,
            "noise sigma in image units, if known (else estimated)",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
        ),
        Param(
            "baseline_tolerance_voxels",
            int,
            1,
            "a cluster voxel needs no dark baseline voxel within this many voxels: structures dark "
            "before that moved by a fraction of a voxel are not new iron",
            unit="voxels",
            minimum=1,
            maximum=5,
        ),
    ],
)


@CLUSTER_PARAMETERS.bind
def segment_clusters(
    post: Volume,
    baseline: Volume | None = None,
    reference_mask: Volume | None = None,
    search_mask: Volume | None = None,
    background_mask: Volume | None = None,
    method: str = FROM_MODEL,
    threshold: float | None = FROM_MODEL,
    min_size: int = FROM_MODEL,
    connectivity: int = FROM_MODEL,
    baseline_ratio: float = FROM_MODEL,
    baseline_rule: str = FROM_MODEL,
    baseline_k: float = FROM_MODEL,
    baseline_transform=None,
    split_touching: bool = FROM_MODEL,
    split_h: float = FROM_MODEL,
    sigma: float | None = FROM_MODEL,
    blob_scales_voxels=(0.5, 3.0),
    progress=None,
    prepared: PreparedInputs | None = None,
    baseline_tolerance_voxels: int = FROM_MODEL,
) -> ClusterResult:
    """Find hypointense (iron) clusters in a T2/T2*-weighted image.

    The tunable parameters (``method`` ... ``baseline_tolerance_voxels``, but not
    ``blob_scales_voxels``) take their defaults from :data:`CLUSTER_PARAMETERS`
    (shown in this signature) and are checked against it: a value out of its range is
    an InputError in one line.

    Parameters
    ----------
    post : Volume
        Post-injection magnitude image (3D, NumPy or dask). Labels come out on its grid.
    baseline : Volume, optional
        Pre-injection scan. Voxels that were already dark are never reported.
    reference_mask : Volume, optional
        Reference tissue ROI (any grid). Without it the median of the search ROI is used (warned).
    search_mask : Volume, optional
        Where to look (any grid). Without it, the whole image.
    background_mask : Volume, optional
        Air ROI for the Rician noise sigma (any grid); otherwise estimated automatically.
    method : {"fraction", "percentile", "ksigma", "blob"}
    threshold : float, optional
        The rule's parameter; None: the method's default (:data:`DEFAULT_THRESHOLDS`).
    min_size : int
        Smallest cluster kept, voxels.
    connectivity : {6, 18, 26}
    baseline_ratio : float
        post/pre below which a voxel counts as darkened.
    baseline_rule : {"ratio", "delta_r2s"}
    baseline_k : float
        For "delta_r2s": required significance in noise SDs.
    baseline_transform : (4, 4) array, optional
        Post world -> baseline world (a registration result); required when the
        baseline is on another grid (identity if they share the world).
    baseline_tolerance_voxels : int
        A candidate must have no dark baseline voxel within this many voxels (1 is the
        3x3x3 neighbourhood): raise it to the baseline registration's residual error in voxels
        (:func:`napari_immunotrack.alignment.baseline_alignment` gives it) so a structure that was
        dark before and moved by a fraction of a voxel is not reported. A baseline carried through
        ``baseline_transform`` or from another grid gets at least the residual measured now
        (:func:`napari_immunotrack.analysis.residual.baseline_tolerance`, ``parameters["baseline_residual"]``).
    split_touching : bool
        Split components with several well-separated minima (watershed).
    split_h : float
        Depth of a minimum (normalised units) needed to split.
    sigma : float, optional
        Noise sigma, if known (signal units); else estimated.
    blob_scales_voxels : (float, float)
        Inner and outer Gaussian scales of the blob detector (voxels of the finest axis).
    progress : callable, optional
        ``progress(fraction, message)``; may raise Cancelled.
    prepared : PreparedInputs, optional
        Reuse inputs prepared by :func:`prepare` (the image/ROI arguments are then ignored).

    Returns
    -------
    ClusterResult

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((16, 16, 16), 100.0, np.float32)
    >>> img += np.random.default_rng(0).normal(0, 3, img.shape).astype(np.float32)
    >>> pre = Volume(img.copy(), np.eye(4))
    >>> img[4:7, 4:7, 4:7] = 3.0                          # new void after injection
    >>> img[10:13, 10:13, 10:13] = 3.0; pre.data[10:13, 10:13, 10:13] = 3.0   # was there before
    >>> res = segment_clusters(Volume(img, np.eye(4)), baseline=pre, reference_mask=Volume((img > 50).astype(np.uint8), np.eye(4)))
    >>> res.table.label.tolist(), res.table.voxels.tolist(), res.table.centroid_x_mm.round(6).tolist()
    ([1], [27], [5.0])
    """
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise InputError(f"min_size={min_size} must be a whole number of voxels, at least 1.")
    structure = structure_for(connectivity)
    if not split_h > 0:
        raise InputError(f"split_h={split_h} must be greater than 0.")
    check_rule_parameters(method, threshold, baseline_rule, baseline_ratio, baseline_k, blob_scales_voxels)
    report(progress, 0.0, "checking inputs")
    if prepared is None:
        prepared = prepare(post, baseline, reference_mask, search_mask, background_mask, baseline_transform, sigma)
    post = prepared.post
    collected = list(prepared.warnings)
    if int(baseline_tolerance_voxels) != baseline_tolerance_voxels or not 1 <= baseline_tolerance_voxels <= 5:
        raise InputError(f"baseline_tolerance_voxels={baseline_tolerance_voxels} must be a whole number from 1 to 5.")
    residual = None
    carried = baseline is not None and (baseline_transform is not None or not baseline.same_grid(post))
    if prepared.has_baseline and carried and baseline is not None:
        # carried through a transform: at least the residual misalignment it leaves
        # (docs/methods/baseline-residual.md); a baseline on the post grid keeps its tolerance
        from .residual import baseline_tolerance

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImmunotrackWarning)
            measured, residual = baseline_tolerance(post, baseline, baseline_transform)
        for w in caught:  # emitted again, and kept in the result's warnings
            warn_and_collect(str(w.message), collected)
        baseline_tolerance_voxels = max(int(baseline_tolerance_voxels), measured)
    rule = prepared.rule(
        method,
        threshold,
        baseline_rule,
        baseline_ratio,
        baseline_k,
        blob_scales_voxels,
        collected,
        baseline_tolerance_voxels=int(baseline_tolerance_voxels),
    )
    report(progress, 0.05, "finding dark voxels")
    spec = SplitSpec.for_grid(post, split_touching, connectivity, min_size, split_h, rule.ref_mean)
    voxels_of = None
    if is_dask_array(post.data):
        stats, presplit, relabel = _components_dask(prepared, rule, structure, spec, scaled(progress, 0.05, 0.8))
    else:
        stats, presplit, relabel, voxels_of = _components_memory(
            prepared, rule, structure, spec, scaled(progress, 0.05, 0.8)
        )
    # blob components must hold a seed (always true for the other rules)
    with np.errstate(divide="ignore", invalid="ignore"):
        darker = stats["sr"] < stats["count"]  # mean normalised signal < 1: CNR > 0 (a brighter "void" is dropped)
    keep = np.flatnonzero((stats["count"] >= min_size) & (stats["seeds"] >= 1) & darker)
    keep = keep[keep > 0]
    report(progress, 0.85, "separating touching blooms")
    rows, final_of_group, patches, n_split = _finalise(prepared, rule, structure, stats, keep, spec, presplit)
    report(progress, 0.95, "writing labels")
    labels_data = relabel(final_of_group, patches)
    exterior_air = None
    if prepared.has_baseline:  # air the skin left since the baseline is not new darkening
        rows, exterior_air = _drop_exterior_air(prepared, rule, rows, labels_data, voxels_of, min_size, collected)
    n_clusters = int(rows["count"].size)
    table = _table_from_arrays(
        rows,
        np.arange(1, n_clusters + 1),
        rows["split"],
        post,
        rule.ref_mean,
        prepared.noise.sigma,
        prepared.has_baseline,
    )
    params = {
        "method": method,
        "threshold": rule.threshold,
        "min_size": int(min_size),
        "connectivity": int(connectivity),
        "baseline": prepared.has_baseline,
        "baseline_tolerance_voxels": int(baseline_tolerance_voxels) if prepared.has_baseline else None,
        "baseline_residual": residual,  # the misalignment a transformed baseline still has (None on its grid)
        "baseline_rule": baseline_rule if prepared.has_baseline else None,
        "baseline_ratio": float(baseline_ratio) if prepared.has_baseline else None,
        "baseline_k": float(baseline_k) if prepared.has_baseline and baseline_rule == "delta_r2s" else None,
        "baseline_transform": None if baseline_transform is None else np.asarray(baseline_transform).tolist(),
        "search_roi": prepared.search is not None,
        # without a baseline: the air around the body left out (what, how many voxels, what a baseline adds)
        "outside_body": prepared.outside_body,
        # with a baseline: candidates that were the air around the body (the skin moved since the baseline)
        "exterior_air": exterior_air,
        "split_touching": bool(split_touching),
        "split_h": float(split_h),
        "split_components": int(n_split),
        "sigma": prepared.noise.sigma,
        "noise_method": prepared.noise.method,
        "reference_mean": rule.ref_mean,
        "reference_sd": prepared.reference.sd,
        "reference_source": prepared.reference.source,
        "baseline_reference_mean": rule.pre_ref_mean,
        "rule": rule.as_dict(),
        "centroid": "signal-deficit weighted (1 - r clipped to [0, 1])",
        "cnr": "(mean_ref - mean_cluster) / sigma",
    }
    meta = {"connectivity": int(connectivity), "method": method, "source": post.name, "n_clusters": n_clusters}
    labels = Volume(
        labels_data,
        post.affine,
        modality="SEG",
        unit="label",
        metadata=meta,
        name=f"{post.name}_clusters" if post.name else "clusters",
    )
    report(progress, 1.0, f"{n_clusters} clusters")
    return ClusterResult(
        labels, table, prepared.noise.sigma, prepared.noise, prepared.reference, rule, collected, params
    )


def _components_memory(prepared: PreparedInputs, rule: Rule, structure, spec: SplitSpec, progress):
    """In-memory path: the rule in slabs, one labelling, sparse statistics, splits in place."""
    post = prepared.post
    shape = post.spatial_shape
    cand = prepared.candidates(rule, progress=scaled(progress, 0.0, 0.7), raw=True)
    report(progress, 0.75, "labelling components")
    pre = None if prepared.pre is None else np.asarray(prepared.pre)
    blk = block_components(
        cand, np.asarray(post.data), pre, (0, 0, 0), shape, structure, rule.ref_mean, split=spec, keep_labels=True
    )
    del cand
    labels = blk["labels"]
    flat_index = blk["flat_index"]

    def relabel(final_of_group, patches):
        lut = final_of_group.astype(np.int32)
        # in place, only where a component is (the rest stays 0): no pass over the whole volume
        flat = labels.reshape(-1)
        flat[flat_index] = lut[flat[flat_index]]
        for slices, sub in patches:
            view = labels[slices]
            view[sub > 0] = sub[sub > 0]
        return labels

    def voxels_of():
        """The candidate voxels (flat indices) and the component of each."""
        return flat_index, labels.reshape(-1)[flat_index]

    return blk["stats"], blk["splits"], relabel, voxels_of


def _drop_exterior_air(
    prepared: PreparedInputs, rule: Rule, rows: dict, labels, voxels_of, min_size: int, collected: list
):
    """With a baseline: the air around the animal is not iron (docs/methods/clusters.md#air-at-the-skin).

    Soft tissue moves between sessions: where the skin lies a voxel or two further in than at baseline,
    the post image has air where the baseline had fat, which reads as new darkening. Exterior air is what
    lies under :data:`.body.AIR_SIGMAS` noise sigmas and is 6-connected through such voxels to the air at
    the field of view's border (:class:`.body.ExteriorAir`). A cluster at least
    :data:`.body.EXTERIOR_AIR_SHARE` of whose voxels are exterior air is air, and left out; a cluster with
    fewer (a bloom next to the skin, run into by such air) loses its exterior-air voxels and is measured
    again on the rest (left out when under ``min_size``). A bloom in tissue is surrounded by tissue: its
    dark core is enclosed, so it has none. Judged on the final clusters (after touching blooms are split).
    Only clusters with a voxel that dark are looked at, each first in a small box, so this costs next to
    nothing when there is no such air. ``labels`` (the final labels, in memory) are changed in place;
    returns the rows kept and the provenance record.
    """
    from .body import AIR_SIGMAS, EXTERIOR_AIR_SHARE, ExteriorAir

    threshold = float(min(AIR_SIGMAS * prepared.noise.sigma, rule.threshold_signal))
    record = {
        "air_threshold_signal": threshold,
        "rule": f"voxels under {AIR_SIGMAS:g} noise sigmas 6-connected through such voxels to the air at the "
        f"field of view's border are air, not iron: a cluster with >= {EXTERIOR_AIR_SHARE:g} of them is left "
        "out, others lose them",
        "clusters_left_out": 0,
        "clusters_trimmed": 0,
        "voxels_left_out": 0,
    }
    n = int(rows["count"].size)
    if voxels_of is None:
        record["note"] = "not checked on a lazy (chunked) image"
        warn_and_collect(
            "the air at the skin is not checked on a chunked image: where the skin moved since the baseline, air "
            "may be reported as clusters; run without chunks to check it (docs/methods/clusters.md#air-at-the-skin).",
            collected,
        )
        return rows, record
    if n == 0:
        return rows, record
    data = np.asarray(prepared.post.data)
    flat, _ = voxels_of()
    flat_labels = labels.reshape(-1)[flat]
    coords = np.unravel_index(flat, data.shape)
    dark = data[coords] < np.float32(threshold)
    suspects = np.flatnonzero(np.bincount(flat_labels[dark], minlength=n + 1)[1:]) + 1
    if suspects.size == 0:
        return rows, record
    mine = np.isin(flat_labels, suspects)
    sub_flat, sub_lab = flat[mine], flat_labels[mine]
    order = np.argsort(sub_lab, kind="stable")
    found, starts = np.unique(sub_lab[order], return_index=True)
    air = ExteriorAir(data, threshold)
    drop, trims, removed = [], {}, []
    for lab, part in zip(found, np.split(sub_flat[order], starts[1:])):
        outside = air.flags(part)
        n_out = int(np.count_nonzero(outside))
        if n_out == 0:
            continue
        removed.append(part[outside])
        if n_out >= EXTERIOR_AIR_SHARE * part.size or part.size - n_out < min_size:
            drop.append(int(lab))
        else:
            trims[int(lab)] = part[~outside]
    record["whole_image_air_labelled"] = air.whole_image_labelled
    if not removed:
        return rows, record
    gone = np.concatenate(removed)
    labels.reshape(-1)[gone] = 0
    pre = None if prepared.pre is None else np.asarray(prepared.pre)
    for lab, rest in trims.items():  # measured again on the voxels left
        at = np.unravel_index(rest, data.shape)
        st = sparse_label_stats(
            np.ones(rest.size, np.int64), 1, at, data[at], None if pre is None else pre[at], rule.ref_mean, data.shape
        )
        for key, values in st.items():
            if key in rows and key != "seeds":
                rows[key][lab - 1] = values[1]
    kept = np.ones(n, bool)
    kept[np.asarray(drop, np.int64) - 1] = False
    if drop:
        lut = np.zeros(n + 1, labels.dtype)
        lut[1:][kept] = np.arange(1, int(kept.sum()) + 1)
        still = flat[np.isin(flat_labels, np.flatnonzero(kept) + 1)]
        labels.reshape(-1)[still] = lut[labels.reshape(-1)[still]]
        rows = {k: v[kept] for k, v in rows.items()}
    record.update(clusters_left_out=len(drop), clusters_trimmed=len(trims), voxels_left_out=int(gone.size))
    warn_and_collect(
        f"{gone.size} dark voxels lie in the air around the body (under {threshold:.4g}, connected to the air "
        f"at the field of view's border), most likely where the skin moved since the baseline: {len(drop)} "
        f"cluster(s) of such air are not reported and {len(trims)} lost those voxels "
        "(docs/methods/clusters.md#air-at-the-skin).",
        collected,
    )
    return rows, record


def _components_dask(prepared: PreparedInputs, rule: Rule, structure, spec: SplitSpec, progress):
    """Chunked path: rule with overlap, each chunk labelled, labels merged across chunk faces.

    Chunks are computed one layer (along axis 0) at a time; only small
    per-chunk results come back (statistics, faces, splits, and the candidate
    mask as packed bits or sparse indices). The label image is a lazy dask
    array that relabels each chunk from its stored mask and maps it to the
    final numbers, without reading the inputs again, so it can be written
    chunk by chunk.
    """
    import dask
    import dask.array as da

    shape = prepared.post.spatial_shape
    depth = rule.depth(prepared.pre is not None)
    # every chunk must be at least as thick as the halo (small trailing chunks are merged)
    chunks = _chunks_at_least(prepared.post.data.chunks, depth)
    depth = tuple(d if len(c) > 1 else 0 for d, c in zip(depth, chunks))
    post_da = prepared.post.data.rechunk(chunks)
    pre_da = None if prepared.pre is None else prepared.pre.rechunk(chunks)
    search_da = None
    if prepared.search is not None:
        s = prepared.search
        search_da = s.rechunk(chunks) if is_dask_array(s) else da.from_array(np.asarray(s), chunks=chunks)
    has_pre, has_search = pre_da is not None, search_da is not None
    out_dtype = np.uint8 if rule.method == "blob" else bool

    def rule_fn(*arrays):
        p = arrays[0]
        q = arrays[1] if has_pre else None
        s = arrays[1 + has_pre] if has_search else None
        return _candidates_block(p, q, s, rule)

    args = [post_da] + ([pre_da] if has_pre else []) + ([search_da] if has_search else [])
    if any(depth):
        # boundary="none": blocks at the volume edge get no padding, like the in-memory slabs
        cand = da.map_overlap(
            rule_fn,
            *args,
            depth=dict(enumerate(depth)),
            boundary="none",
            trim=True,
            dtype=out_dtype,
            allow_rechunk=False,
        )
    else:
        cand = da.map_blocks(rule_fn, *args, dtype=out_dtype)
    bounds = [np.r_[0, np.cumsum(c)] for c in chunks]
    grid = tuple(len(c) for c in chunks)
    cand_d = cand.to_delayed()
    post_d = post_da.to_delayed()
    pre_d = pre_da.to_delayed() if has_pre else None
    positions = list(np.ndindex(*grid))
    tasks = []
    for pos in positions:
        origin = tuple(int(bounds[a][pos[a]]) for a in range(3))
        tasks.append(
            dask.delayed(block_components)(
                cand_d[pos],
                post_d[pos],
                None if pre_d is None else pre_d[pos],
                origin,
                shape,
                structure,
                rule.ref_mean,
                spec,
            )
        )
    # one layer of chunks along axis 0 at a time: the memory held is that of a few layers of chunks
    # (a layer, its halo neighbours and the dask scheduler's read-ahead), whatever the volume's depth
    blocks = [None] * len(tasks)
    layers = sorted({pos[0] for pos in positions})
    for i, layer in enumerate(layers):
        which = [k for k, pos in enumerate(positions) if pos[0] == layer]
        for k, res in zip(which, dask.compute(*[tasks[k] for k in which])):
            blocks[k] = res
        report(progress, 0.8 * (i + 1) / len(layers), "labelling chunks")
    offsets, total = [], 0
    for pos, b in zip(positions, blocks):
        b["pos"] = pos
        offsets.append(total)
        total += b["n"]
    report(progress, 0.85, "merging labels across chunks")
    groups = union_across_faces(blocks, chunks, structure, offsets, total)
    # statistics of every global id, then of every group (group 0 = background)
    all_stats = {
        k: np.concatenate([b["stats"][k][1:] for b in blocks]) if total else np.zeros(0) for k in blocks[0]["stats"]
    }
    all_stats = {
        k: np.r_[0.0 if k in SUM_STAT_KEYS else (np.inf if k in MIN_STAT_KEYS else -np.inf), v]
        for k, v in all_stats.items()
    }
    uniq, group_ids = np.unique(groups, return_inverse=True)
    # make the background's group 0
    bg = group_ids[0]
    group_ids = np.where(group_ids == bg, 0, np.where(group_ids == 0, bg, group_ids))
    n_groups = int(uniq.size)
    stats = merge_label_stats(all_stats, group_ids, n_groups)
    for k in SUM_STAT_KEYS:
        stats[k][0] = 0.0
    # splits made inside blocks, by group (such a component never spans blocks, so its group is itself)
    presplit = {}
    for b, off in zip(blocks, offsets):
        for j, res in b["splits"].items():
            presplit[int(group_ids[off + j])] = res

    masks = {pos: b.pop("mask") for pos, b in zip(positions, blocks)}

    def relabel(final_of_group, patches):
        lut_global = final_of_group[group_ids].astype(np.int32)
        offset_of = dict(zip(positions, offsets))

        def fn(block, block_info=None):
            # the block's labels again from its stored candidates (the same labelling as the first pass)
            loc = block_info[0]["array-location"]
            pos = tuple(block_info[0]["chunk-location"])
            labels, _ = ndimage.label(unpack_mask(masks[pos]), structure=structure, output=np.int32)
            off = offset_of[pos]
            out = np.where(labels > 0, lut_global[np.minimum(labels + off, lut_global.size - 1)], 0).astype(np.int32)
            for slices, sub in patches:
                inter = [(max(s.start, l[0]), min(s.stop, l[1])) for s, l in zip(slices, loc)]
                if any(a >= b for a, b in inter):
                    continue
                src = tuple(slice(a - s.start, b - s.start) for (a, b), s in zip(inter, slices))
                dst = tuple(slice(a - l[0], b - l[0]) for (a, b), l in zip(inter, loc))
                piece = sub[src]
                view = out[dst]
                view[piece > 0] = piece[piece > 0]
            return out

        return da.map_blocks(fn, da.zeros(shape, chunks=chunks, dtype=np.int32), dtype=np.int32)

    return stats, presplit, relabel


def _chunks_at_least(chunks, depth):
    """Chunk sizes with every chunk at least ``depth`` thick along its axis (small ones merged into a neighbour)."""
    out = []
    for sizes, d in zip(chunks, depth):
        merged: list[int] = []
        for c in sizes:
            if merged and merged[-1] < d:
                merged[-1] += c
            else:
                merged.append(int(c))
        if len(merged) > 1 and merged[-1] < d:
            merged[-2] += merged.pop()
        out.append(tuple(merged))
    return tuple(out)


def _split_by_crop(prepared: PreparedInputs, rule: Rule, structure, stats, g: int, spec: SplitSpec):
    """Split group ``g`` from crops of the inputs (components that span chunks or reach a chunk's edge).

    The crop holds the component's box, the rule's halo and the smoothing
    margin (clipped to the volume), read at once (one dask compute), so the
    rule and the split give exactly what the whole volume gives.
    """
    shape = prepared.post.spatial_shape
    lo = [int(stats[f"lo{a}"][g]) for a in range(3)]
    hi = [int(stats[f"hi{a}"][g]) + 1 for a in range(3)]
    depth = rule.depth(prepared.pre is not None)
    ext = [max(d, m) for d, m in zip(depth, spec.margin)]
    elo, ehi = crop_bounds(lo, hi, ext, shape)
    big = tuple(slice(l, h) for l, h in zip(elo, ehi))
    parts = [
        prepared.post.data[big],
        None if prepared.pre is None else prepared.pre[big],
        None if prepared.search is None else prepared.search[big],
    ]
    if any(is_dask_array(p) for p in parts if p is not None):
        import dask

        parts = list(dask.compute(*parts))
    post_c, pre_c, search_c = (None if p is None else np.asarray(p) for p in parts)
    # the component: the candidates of its box, the connected part holding its first voxel
    box = tuple(slice(l - e, h - e) for l, h, e in zip(lo, hi, elo))
    cand = _candidates_region(post_c, pre_c, search_c, rule, box, body=prepared.body, origin=elo) > 0
    lab, _ = ndimage.label(cand, structure=structure)
    first = np.unravel_index(int(stats["first"][g]), shape)
    comp_id = lab[tuple(first[a] - lo[a] for a in range(3))]
    clo, chi = crop_bounds(lo, hi, spec.margin, shape)
    comp = np.zeros(tuple(h - l for l, h in zip(clo, chi)), bool)
    comp[tuple(slice(l - c, h - c) for l, h, c in zip(lo, hi, clo))] = lab == comp_id
    sl = tuple(slice(c - e, h - e) for c, h, e in zip(clo, chi, elo))
    return split_component_in_crop(post_c[sl], None if pre_c is None else pre_c[sl], comp, clo, spec, shape)


def _finalise(prepared: PreparedInputs, rule: Rule, structure, stats, keep, spec: SplitSpec, presplit: dict):
    """Rows of the table (in final label order), the group -> label map, the label patches of split groups.

    Final labels follow the raster order of each cluster's first voxel, which
    is the same in memory and in chunks.
    """
    n_groups = stats["count"].size
    big = keep[stats["count"][keep] >= spec.min_voxels] if spec.enabled else keep[:0]
    results = {}
    for g in big:
        g = int(g)
        results[g] = presplit[g] if g in presplit else _split_by_crop(prepared, rule, structure, stats, g, spec)
    split_groups = np.array(sorted(g for g, r in results.items() if r is not None), np.int64)
    whole = keep[~np.isin(keep, split_groups)]
    parts = [{k: stats[k][whole] for k in stats}]
    group_of_row = [whole]
    piece_of_row = [np.zeros(whole.size, np.int64)]
    for g in split_groups:
        st, k = results[g]["stats"], results[g]["k"]
        parts.append({key: st[key][1 : k + 1] for key in stats})
        group_of_row.append(np.full(k, g))
        piece_of_row.append(np.arange(1, k + 1))
    rows = {k: np.concatenate([p[k] for p in parts]) for k in stats}
    group_of_row = np.concatenate(group_of_row)
    piece_of_row = np.concatenate(piece_of_row)
    order = np.argsort(rows["first"], kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    group_of_row, piece_of_row = group_of_row[order], piece_of_row[order]
    rows["split"] = piece_of_row > 0
    final = np.arange(1, order.size + 1)
    final_of_group = np.zeros(n_groups, np.int64)
    whole_rows = piece_of_row == 0
    final_of_group[group_of_row[whole_rows]] = final[whole_rows]
    patches = []
    for g in split_groups:
        res = results[g]
        lut = np.zeros(res["k"] + 1, np.int32)
        mine = group_of_row == g
        lut[piece_of_row[mine]] = final[mine]
        patches.append((res["slices"], lut[res["sub"]]))
    return rows, final_of_group, patches, int(split_groups.size)


# ---------------------------------------------------------------- the table
def _table_from_arrays(s, labels, split_flags, post: Volume, ref_mean, sigma, has_baseline):
    import pandas as pd

    count = s["count"]
    with np.errstate(divide="ignore", invalid="ignore"):
        weighted = s["sw"] > 0
        cz = np.where(weighted, s["swz"] / s["sw"], s["sz"] / count)
        cy = np.where(weighted, s["swy"] / s["sw"], s["sy"] / count)
        cx = np.where(weighted, s["swx"] / s["sw"], s["sx"] / count)
        world = post.index_to_world(np.stack([cz, cy, cx], axis=1)) if count.size else np.zeros((0, 3))
        mean_r = s["sr"] / count
        ratio = s["spost"] / s["spre"] if has_baseline else np.full(count.size, np.nan)
    return pd.DataFrame(
        {
            "label": labels.astype(np.int64),
            "voxels": count.astype(np.int64),
            "volume_mm3": count * post.voxel_volume_mm3,
            "centroid_x_mm": world[:, 0],
            "centroid_y_mm": world[:, 1],
            "centroid_z_mm": world[:, 2],
            "min_signal_norm": s["min_r"],
            "mean_signal_norm": mean_r,
            "baseline_ratio": ratio,
            "cnr": ref_mean * (1.0 - mean_r) / sigma,
            "split": split_flags.astype(bool),
        }
    )


def measure_clusters(labels: Volume, post: Volume, reference_mean: float, sigma: float, baseline: Volume | None = None):
    """The per-cluster table of a label image (e.g. after manual correction).

    Same columns and formulas as :func:`segment_clusters` (``split`` is False;
    docs/methods/clusters.md#components-and-table). ``labels`` is carried to ``post``'s grid by
    nearest neighbour when it is on another grid; ``baseline`` must be on ``post``'s grid.

    Parameters
    ----------
    labels : Volume
        Integer labels (0 background, positive clusters); float labels are truncated to integers (NaN -> 0).
    post : Volume
        Post-injection image (3D).
    reference_mean : float
        Mean of the reference tissue (signal units), the normaliser of ``*_signal_norm``.
    sigma : float
        Noise sigma (signal units), the denominator of ``cnr``.
    baseline : Volume, optional
        Pre-injection image on ``post``'s grid, for ``baseline_ratio``.

    Returns
    -------
    pandas.DataFrame
        One row per label: ``label``, ``voxels``, ``volume_mm3``, ``centroid_{x,y,z}_mm`` (world,
        deficit-weighted), ``min_signal_norm``, ``mean_signal_norm`` (fractions of the reference),
        ``baseline_ratio`` (mean post / mean pre, NaN without a baseline), ``cnr`` =
        (reference_mean - mean_cluster) / sigma, ``split``.

    Raises
    ------
    InputError
        Negative labels, or a baseline on another grid.

    Examples
    --------
    >>> import numpy as np
    >>> post = Volume(np.full((5, 5, 5), 100.0), np.eye(4))
    >>> post.data[1:3, 1:3, 1:3] = 20.0
    >>> lab = Volume((post.data < 50).astype(np.int32), np.eye(4))
    >>> measure_clusters(lab, post, 100.0, 5.0)[["voxels", "mean_signal_norm", "cnr"]].round(6).values.tolist()
    [[8.0, 0.2, 16.0]]
    """
    require_3d(post, "the image")
    if not isinstance(labels, Volume):
        raise InputError("labels must be a Volume.")
    if not labels.same_grid(post):
        labels = labels.resample_to(post, order=0)
    lab_arr = np.asarray(labels.numpy())
    if lab_arr.dtype.kind == "f":
        lab_arr = np.nan_to_num(lab_arr).astype(np.int64)
    if lab_arr.size and lab_arr.min() < 0:
        raise InputError("labels has negative values; labels must be 0 (background) or positive integers.")
    pre_arr = None
    if baseline is not None:
        if not baseline.same_grid(post):
            raise InputError("the baseline must be on the image's grid to measure clusters; carry it there first.")
        pre_arr = baseline.numpy()
    idx = np.flatnonzero(lab_arr)
    lab = lab_arr.ravel()[idx].astype(np.int64)
    ids = np.unique(lab)
    dense = np.searchsorted(ids, lab) + 1
    coords = np.unravel_index(idx, lab_arr.shape)
    st = sparse_label_stats(
        dense,
        ids.size,
        coords,
        np.asarray(post.numpy())[coords],
        None if pre_arr is None else np.asarray(pre_arr)[coords].astype(np.float64),
        float(reference_mean),
        lab_arr.shape,
    )
    s = {k: v[1:] for k, v in st.items()}
    return _table_from_arrays(
        s, ids, np.zeros(ids.size, bool), post, float(reference_mean), float(sigma), baseline is not None
    )
