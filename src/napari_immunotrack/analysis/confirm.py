"""T1–T2 self-confirmation of dual-mode labels (``docs/methods/confirmation.md``).

Dual-mode agents (ultrasmall iron oxide, Gd-doped iron oxide, ...) shorten
both T1 and T2: labelled cells are bright on a T1-weighted image and dark on a
T2-weighted image at the same place. A region counts as labelled only where
both happen *and* both are new compared with a pre-injection baseline: a
subacute haemorrhage (methaemoglobin) and melanin are T1-bright and T2-dark on
their own, and fat is T1-bright. Only the baseline rules them out.

How each side (T1, T2) is decided, chosen from the inputs given
---------------------------------------------------------------
``"delta_r"`` (quantitative maps before and after, T1/T2 in ms)
    ΔR1 = 1000/T1_post − 1000/T1_pre and ΔR2 = 1000/T2_post − 1000/T2_pre in
    1/s; a voxel changed when ΔR > k·σ_ΔR (and ΔR > ``min_delta_r1/2``).
    ΔR2/ΔR1 of each region is compared with the agent's r2/r1.
``"relative"`` (weighted images before and after)
    E1 = (T1w_post − T1w_pre)/T1w_pre > t1 and T1w_post − T1w_pre > k·σ_d1;
    E2 = (T2w_post − T2w_pre)/T2w_pre < −t2 and T2w_post − T2w_pre < −k·σ_d2,
    where the baseline has signal (SNR ≥ ``min_baseline_snr``; the relative
    change of noise in air means nothing). The relative rule is the field's;
    the k·σ rule keeps noise from passing it by chance. A baseline from another
    session (carried through ``pre_transform``) has its own receiver gain and
    coil profile: the post image is first divided by the smooth post/baseline
    ratio field of unchanged tissue (``normalise``; the differential bias
    correction of serial MRI), else the T1 side passes on a gain alone.
``"ratio"`` (no baseline at all)
    T1n = T1w/ref1 > 1 + t1 and T2n = T2w/ref2 < 1 − t2, each normalised to a
    reference region (or the median of the search mask, or of the tissue).
    The result is a *candidate* mask, unconfirmed everywhere it appears.

σ is the SD inside the reference region when one is given, else 1.4826 × the
median absolute deviation over the tissue (robust to the few labelled voxels).

Regions (hysteresis, as Canny's edges): a region is a connected set of voxels
passing both sides' rules with k = ``k_sigma_grow`` (2 by default) that holds
at least one voxel passing both with k = ``k_sigma`` (3 by default), and at
least ``min_size`` voxels. A noisy labelled region then stays one region
instead of breaking into specks, while noise alone (which would need both
sides beyond 3σ at once) starts none.

All outputs are on T1POST's grid. Other images are used as they are when they
share that grid, and are carried onto it through world coordinates only when
a transform says how (``transform`` for the T2 side, ``pre_transform`` for the
baseline session); a grid mismatch without a transform is an error.

The tunable parameters, their defaults, units and ranges are written once, in
:data:`CONFIRM_PARAMETERS` (a :class:`~napari_immunotrack.params.ParamModel`):
:func:`confirm_dual_mode`, ``immunotrack confirm``, the "T1-T2 confirmation"
dock, the batch step ``confirm`` and the saved study state all take them from it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..params import FROM_MODEL, Param, ParamModel
from ..volume import Volume

#: The tunable parameters of :func:`confirm_dual_mode`: the one place their defaults and limits are written.
CONFIRM_PARAMETERS = ParamModel(
    "confirm",
    [
        Param(
            "t1_threshold",
            float,
            0.2,
            "minimum T1w enhancement (post-pre)/pre",
            unit="fraction",
            minimum=0.0,
            maximum=1.0,
            exclusive_maximum=True,
            rule="a fraction between 0 and 1 (e.g. 0.2 for 20 %)",
            label="T1 threshold",
            step=0.05,
            form_maximum=0.99,
        ),
        Param(
            "t2_threshold",
            float,
            0.2,
            "minimum T2w darkening -(post-pre)/pre",
            unit="fraction",
            minimum=0.0,
            maximum=1.0,
            exclusive_maximum=True,
            rule="a fraction between 0 and 1 (e.g. 0.2 for 20 %)",
            label="T2 threshold",
            step=0.05,
            form_maximum=0.99,
        ),
        Param(
            "k_sigma",
            float,
            3.0,
            "a region starts where both changes exceed k x noise sigma (0 = off for weighted images)",
            unit="sigma",
            minimum=0.0,
            label="k sigma (start)",
            step=0.5,
            form_maximum=10.0,
        ),
        Param(
            "k_sigma_grow",
            float,
            2.0,
            "a region grows into voxels beyond k x sigma (at most k sigma)",
            unit="sigma",
            minimum=0.0,
            label="k sigma (grow)",
            step=0.5,
            form_maximum=10.0,
        ),
        Param(
            "min_baseline_snr",
            float,
            5.0,
            "leave out baseline voxels darker than this many noise sigma (air)",
            unit="sigma",
            minimum=0.0,
            label="min baseline SNR",
            step=0.5,
            form_maximum=100.0,
        ),
        Param(
            "min_size",
            int,
            3,
            "smallest region kept",
            unit="voxels",
            minimum=1,
            label="min size (voxels)",
            form_maximum=10_000_000,
        ),
        Param(
            "opening",
            bool,
            False,
            "binary opening of the joint mask before labelling",
            label="opening before labelling",
        ),
        Param("connectivity", int, 26, "voxel connectivity of a region", choices=(6, 18, 26)),
        Param(
            "normalise",
            str,
            "reference",
            "scale post to baseline by the reference region (only if given; a baseline from another session: "
            "the smooth post/baseline ratio field), the smooth ratio field, the tissue median, or not at all",
            choices=("reference", "field", "tissue", "none"),
        ),
        Param(
            "r2_over_r1",
            float,
            None,
            "the agent's r2/r1, checked against dR2/dR1",
            minimum=0.0,
            exclusive_minimum=True,
            optional=True,
            rule="a positive number",
            label="r2/r1",
        ),
        Param(
            "min_delta_r1",
            float,
            0.0,
            "floor for dR1 on top of k sigma (maps only)",
            unit="1/s",
            minimum=0.0,
            label="min dR1",
            flag="--min-delta-r1",
        ),
        Param(
            "min_delta_r2",
            float,
            0.0,
            "floor for dR2 on top of k sigma (maps only)",
            unit="1/s",
            minimum=0.0,
            label="min dR2",
            flag="--min-delta-r2",
        ),
    ],
)

#: Okabe–Ito colours (colour-blind safe) of the fusion view.
FUSION_COLOURS = {
    "t1_enhancement": "#E69F00",  # orange
    "t2_darkening": "#56B4E9",  # sky blue
    "overlap": "#009E73",  # bluish green
}

#: The warning every unconfirmed (no-baseline) result carries.
UNCONFIRMED_WARNING = (
    "UNCONFIRMED: no pre-injection baseline, so T1-bright/T2-dark regions are only candidates; "
    "subacute haemorrhage (methaemoglobin) and melanin are also T1-bright and T2-dark and fat is "
    "T1-bright; scan a baseline (pre-injection T1w and T2w) to confirm."
)

#: Table columns, in order (NaN where a quantity does not apply to the run).
TABLE_COLUMNS = [
    "label",
    "status",
    "voxels",
    "volume_mm3",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "mean_t1_enhancement_fraction",
    "mean_t2_change_fraction",
    "change_vs",
    "mean_t1w_over_t2w",
    "mean_delta_r1_per_s",
    "mean_delta_r2_per_s",
    "delta_r2_over_delta_r1",
    "delta_r2_over_delta_r1_se",
    "agent_r2_over_r1",
    "r2_over_r1_deviation",
]

_MAX_SAMPLE = 1_000_000  # voxels used for medians/Otsu (a deterministic stride beyond that)


@dataclass
class ConfirmResult:
    """What :func:`confirm_dual_mode` returns.

    Attributes
    ----------
    t1_change, t2_change : Volume
        The quantity each side was decided on, on T1POST's grid: ΔR1/ΔR2 in
        1/s (``"delta_r"``), the relative signal change E1/E2 as a fraction
        (``"relative"``; E2 < 0 is darker), or the signal normalised to the
        reference minus 1 (``"ratio"``). NaN where undefined.
    t1_mask, t2_mask : Volume
        uint8 masks of the voxels passing each side's rule with k = ``k_sigma``.
    labels : Volume
        Confirmed regions (or unconfirmed candidates), 1..N, on T1POST's grid.
    fusion : dict of Volume
        ``t1_enhancement`` (T1 only), ``t2_darkening`` (T2 only) and ``overlap``
        (the regions) as exclusive uint8 masks, for a three-colour view with
        :data:`FUSION_COLOURS`; the single-side channels keep only components
        of at least ``min_size`` voxels.
    table : pandas.DataFrame
        One row per region (:data:`TABLE_COLUMNS`).
    confirmed : bool
        False when there was no baseline (ratio mode): nothing is confirmed.
    mode : dict
        How each side was decided: ``{"t1": "delta_r"|"relative"|"ratio", "t2": ...}``.
    ratio : Volume or None
        T1w/T2w, each normalised to its reference (ratio mode only).
    quantities : dict of Volume or None
        Every per-voxel quantity behind the table: ``t1_enhancement`` and
        ``t2_change`` (relative change, or signal/reference − 1 in ratio mode),
        ``ratio``, ``delta_r1`` and ``delta_r2`` (1/s); None where not computed.
        :func:`region_table` uses them for hand-edited labels.
    warnings : list of str
        Everything doubtful, also issued as :class:`ImmunotrackWarning`.
    parameters : dict
        Parameters and the rules actually applied (thresholds, σ and where it came from).
    """

    t1_change: Volume
    t2_change: Volume
    t1_mask: Volume
    t2_mask: Volume
    labels: Volume
    fusion: dict
    table: object
    confirmed: bool
    mode: dict
    ratio: Volume | None = None
    quantities: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"confirmed"`` or ``"unconfirmed"``."""
        return "confirmed" if self.confirmed else "unconfirmed"

    @property
    def n_regions(self) -> int:
        return int(len(self.table))


# --------------------------------------------------------------------------- helpers
def _warn(messages: list, text: str) -> None:
    messages.append(text)
    warnings.warn(text, ImmunotrackWarning, stacklevel=3)


def _sub(array: np.ndarray) -> np.ndarray:
    """A deterministic strided sample (a view) of a C-contiguous array: medians, MADs and Otsu on
    at most ~1 million voxels cost little and change nothing measurable."""
    flat = array.reshape(-1)
    return flat[:: flat.size // _MAX_SAMPLE + 1] if flat.size > _MAX_SAMPLE else flat


def _robust_sigma(values: np.ndarray) -> tuple:
    """(median, 1.4826 × MAD) of the finite values (NaN, NaN if none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    med = float(np.median(v))
    return med, float(1.4826 * np.median(np.abs(v - med)))


def _otsu_log(values: np.ndarray) -> float | None:
    """Otsu's threshold of log intensity over positive finite ``values`` (None if it cannot split them).

    Log intensity puts the big air/tissue gap, not the tissue/fat one, between
    Otsu's two classes.
    """
    from skimage.filters import threshold_otsu

    v = values[np.isfinite(values) & (values > 0)]
    if v.size < 16 or np.ptp(v) == 0:
        return None
    return float(np.exp(threshold_otsu(np.log(v.astype(np.float64)))))


def _tissue(image: np.ndarray) -> np.ndarray:
    """Full-size mask of the voxels brighter than :func:`_otsu_log` (tissue vs air)."""
    thr = _otsu_log(_sub(image))
    return image > (0 if thr is None else thr)


class _Body:
    """The tissue on T1POST, eroded once so that bright noise specks in air do not count.

    A zero baseline or map voxel there is news; outside it, a masked background.
    Computed only when asked (it costs a full-volume erosion).
    """

    def __init__(self, image: np.ndarray):
        self.image = image
        self._mask = None

    def count(self, where: np.ndarray) -> int:
        if not where.any():
            return 0
        if self._mask is None:
            from scipy import ndimage

            self._mask = ndimage.binary_erosion(_tissue(self.image), structure=ndimage.generate_binary_structure(3, 1))
        return int(np.count_nonzero(where & self._mask))


def _as_3d(volume: Volume, role: str) -> Volume:
    if not isinstance(volume, Volume):
        raise InputError(f"{role} must be a Volume (got {type(volume).__name__}); load it with io.load_volume.")
    if volume.data.ndim != 3:
        raise InputError(
            f"{role} has {volume.data.ndim} dimensions; give one 3D volume: save one echo "
            "or frame as its own file first (e.g. fslroi in.nii.gz frame0.nii.gz 0 1)."
        )
    return volume


def _grid_text(v: Volume) -> str:
    return f"shape {list(v.spatial_shape)}, voxel {np.round(v.spacing, 3).tolist()} mm"


def _finite_count(role: str, data: np.ndarray, messages: list) -> np.ndarray:
    """Finite-value mask of a source image; warn about NaN/inf, refuse an image with none."""
    finite = np.isfinite(data)
    bad = int(finite.size - np.count_nonzero(finite))
    if bad == finite.size:
        raise InputError(f"{role} has no finite values (all NaN or infinite); check the file.")
    if bad:
        _warn(messages, f"{role} has {bad} NaN or infinite voxel(s); they were left out (never confirmed).")
    return finite


def _carry(
    volume: Volume, role: str, target: Volume, matrix: np.ndarray | None, hint: str, messages: list
) -> np.ndarray:
    """``volume``'s values on ``target``'s grid as float32 (NaN outside its field of view)."""
    data = volume.numpy()
    _finite_count(role, data, messages)
    if volume.same_grid(target):
        return np.ascontiguousarray(data, np.float32)
    if matrix is None:
        raise InputError(
            f"{role} ({_grid_text(volume)}) is not on T1POST's grid ({_grid_text(target)}) and no transform was "
            f"given; {hint}"
        )
    moved = volume.replace(data=np.asarray(data, np.float32)).resample_to(
        target, order=1, transform=matrix, fill=np.nan
    )
    out = np.ascontiguousarray(moved.data, np.float32)
    if not np.isfinite(out).any():
        raise InputError(f"{role} does not overlap T1POST in world space after the transform; check the transform.")
    return out


def _mask_on(mask: Volume | None, role: str, target: Volume) -> np.ndarray | None:
    """A mask Volume (non-zero = inside) on ``target``'s grid, carried through world coordinates."""
    if mask is None:
        return None
    mask = _as_3d(mask, role)
    m = mask.numpy()
    m = np.isfinite(m) & (m != 0) if np.issubdtype(m.dtype, np.floating) else (m != 0)
    if not mask.same_grid(target):
        m = mask.replace(data=m.astype(np.uint8)).resample_to(target, order=0).numpy() != 0
    if not m.any():
        raise InputError(f"{role} is empty on T1POST's grid; draw it inside the image's field of view.")
    return m


def _sigma(diff: np.ndarray, valid: np.ndarray, ref: np.ndarray | None, sample_region: np.ndarray) -> tuple:
    """(σ, where it came from) of ``diff``: SD in the reference region, else robust over ``sample_region``
    (a mask over the strided sample :func:`_sub` of the grid)."""
    if ref is not None:
        vals = diff[valid & ref]
        if vals.size < 10:
            raise InputError(
                "the reference region holds fewer than 10 valid voxels; draw a larger reference region "
                "inside tissue seen on every image."
            )
        return float(np.std(vals, ddof=1)), "SD in the reference region"
    _, s = _robust_sigma(_sub(diff)[sample_region])
    if not np.isfinite(s):
        raise InputError(
            "no unchanged tissue is left to estimate the noise from; check that the images overlap "
            "and hold tissue, or give a reference region."
        )
    return s, "1.4826 x MAD over tissue"


# --------------------------------------------------------------------------- sides
def _side_delta_r(
    name: str,
    pre_ms: np.ndarray,
    post_ms: np.ndarray,
    k_sigma: float,
    k_grow: float,
    min_delta: float,
    ref: np.ndarray | None,
    body: _Body,
    messages: list,
) -> tuple:
    """ΔR (1/s) from relaxation-time maps in ms: (ΔR, strong mask, weak mask, valid, rule)."""
    label = f"{name} map"
    valid = (pre_ms > 0) & (post_ms > 0) & np.isfinite(pre_ms) & np.isfinite(post_ms)
    if not valid.any():
        raise InputError(
            f"the {label}s have no voxel with positive values before and after; give {name} in ms (values > 0)."
        )
    nonpos = (pre_ms <= 0) | (post_ms <= 0)  # NaN compares False: only true zeros/negatives
    inside = body.count(nonpos)
    if inside:
        _warn(
            messages,
            f"the {label}s have {inside} zero or negative voxel(s) inside the tissue (no fit); "
            "ΔR is undefined there (division by zero) and they were left out.",
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        r_pre = np.float32(1000.0) / pre_ms
        delta = np.float32(1000.0) / post_ms
    delta -= r_pre
    invalid = ~valid
    if invalid.any():
        delta[invalid] = np.nan
    valid_s = _sub(valid)
    median_post = float(np.median(_sub(post_ms)[valid_s]))
    if median_post < 10:
        _warn(
            messages,
            f"the {label} values look like seconds (median {median_post:.3g}); "
            "they were read as ms as documented; convert them to ms if they are seconds.",
        )
    sigma, source = _sigma(delta, valid, ref, valid_s)
    # a floor (0.1 % of the median rate) so that noise-free data do not turn rounding into findings
    floor = 1e-3 * abs(float(np.median(_sub(r_pre)[valid_s])))
    sigma = max(sigma, floor)
    strong_thr = max(k_sigma * sigma, float(min_delta))
    weak_thr = max(k_grow * sigma, float(min_delta))
    strong = delta > strong_thr  # NaN compares False
    weak = delta > weak_thr
    rule = {
        "mode": "delta_r",
        "quantity": f"delta_{'r1' if name == 'T1' else 'r2'}_per_s",
        "unit": "1/s",
        "non_positive_voxels": int(np.count_nonzero(nonpos)),
        "rule": f"delta R > {strong_thr:.4g} 1/s to start a region, > {weak_thr:.4g} 1/s to grow it "
        f"(k={k_sigma:g} and {k_grow:g} x sigma={sigma:.4g} 1/s from {source}"
        f"{'; min ' + format(min_delta, 'g') + ' 1/s' if min_delta else ''})",
        "sigma": sigma,
        "sigma_source": source,
        "threshold": strong_thr,
        "grow_threshold": weak_thr,
    }
    return delta, strong, weak, valid, rule


def _side_relative(
    name: str,
    pre: np.ndarray,
    post: np.ndarray,
    threshold: float,
    k_sigma: float,
    k_grow: float,
    brighter: bool,
    ref: np.ndarray | None,
    normalise: str,
    min_snr: float,
    body: _Body,
    messages: list,
    tolerance: int = 0,
    carried: bool = False,
) -> tuple:
    """Relative change of a weighted image against its baseline: (E, strong, weak, valid, rule).

    ``carried``: the baseline comes from another session (carried onto the grid through a transform); the
    default ``normalise="reference"`` then divides out the smooth post/baseline ratio field
    (:func:`_differential_field`: gain and coil profile together) instead of one factor.

    ``tolerance`` > 0 (voxels): a voxel also has to pass the relative rule against the brightest (T1 side)
    or darkest (T2 side) baseline value within that many voxels, so the partial-volume rim of a
    structure that was there before (haemorrhage, melanin) does not read as new when the baseline
    was resampled from another session or is misaligned by a fraction of a voxel
    (docs/methods/session-alignment.md#baselines).
    """
    role = f"{name}PRE"
    valid = pre > 0  # NaN compares False
    valid &= np.isfinite(post)
    if not valid.any():
        raise InputError(
            f"{role} has no positive voxels; the relative change (post - pre)/pre is undefined. "
            "Give the pre-injection magnitude image."
        )
    nonpos = pre <= 0
    inside = body.count(nonpos)
    if inside:
        _warn(
            messages,
            f"{role} has {inside} zero or negative voxel(s) inside the tissue; the relative change is "
            "undefined there (division by zero) and they were left out.",
        )
    pre_s, post_s, valid_s = _sub(pre), _sub(post), _sub(valid)
    thr = _otsu_log(pre_s[valid_s])
    tissue_s = valid_s & (pre_s > (0 if thr is None else thr))
    if not tissue_s.any():
        tissue_s = valid_s
    scale, scale_source, field_range = 1.0, "none", None
    if normalise == "field" or (normalise == "reference" and carried):
        # another session: its gain AND its coil profile differ, so one factor cannot make them comparable
        log_field, field_range = _differential_field(pre, post, valid)
        np.negative(log_field, out=log_field)
        post = post * np.exp(log_field, out=log_field)
        scale_source = "differential field (smooth post/baseline ratio, quadratic in log, robust fit over tissue)"
    elif normalise == "reference" and ref is not None:
        region = valid & ref
        # post scaled so that the unchanged reference tissue has the pre's mean: removes a gain change
        scale, scale_source = float(np.mean(pre[region]) / np.mean(post[region])), "reference region mean"
    elif normalise == "tissue":
        scale = float(np.median(pre_s[tissue_s]) / np.median(post_s[tissue_s]))
        scale_source = "tissue median"
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"{name}POST has no signal in the reference tissue; cannot scale it to {role}.")
    diff = post * np.float32(scale) if scale != 1.0 else post.copy()
    diff -= pre
    sigma, source = _sigma(diff, valid, ref, tissue_s)
    # the relative change of a baseline at the noise floor (air) means nothing: need SNR >= min_snr
    # (sigma of one image = sigma of the difference / sqrt 2)
    floor = float(min_snr) * sigma / np.sqrt(2.0)
    valid &= pre > floor
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / pre
    invalid = ~valid
    if invalid.any():
        rel[invalid] = np.nan
        diff[invalid] = np.nan
    if scale_source == "none":
        # a scan scaled differently from its baseline makes every voxel "change": say so
        med = float(np.nanmedian(_sub(rel)[tissue_s]))
        if abs(med) > 0.1:
            _warn(
                messages,
                f"{name}POST differs from {role} by {100 * med:+.0f}% in the median tissue voxel; "
                "the scans may be scaled differently: give a reference region (normalise='reference') "
                "or use normalise='tissue'.",
            )
    sign = 1.0 if brighter else -1.0
    # NaN compares False; written out per direction to spare full-volume temporaries
    if brighter:
        passed = rel > threshold
        strong = diff > k_sigma * sigma
        weak = diff > k_grow * sigma
    else:
        passed = rel < -threshold
        strong = diff < -k_sigma * sigma
        weak = diff < -k_grow * sigma
    if tolerance > 0:
        passed &= _passes_against_neighbourhood(pre, post * np.float32(scale), threshold, brighter, int(tolerance))
    strong &= passed
    weak &= passed
    op = ">" if brighter else "<"
    t = threshold if brighter else -threshold
    rule = {
        "mode": "relative",
        "quantity": "relative signal change (post-pre)/pre",
        "unit": "fraction",
        "non_positive_voxels": int(np.count_nonzero(nonpos)),
        "rule": f"(post-pre)/pre {op} {t:g} and post-pre {op} {sign * k_sigma:g} x sigma to start a region, "
        f"{sign * k_grow:g} x sigma to grow it (sigma={sigma:.4g}, {source}; post scaled by {scale:.4g} "
        f"from {scale_source}; baseline SNR >= {min_snr:g})",
        "sigma": sigma,
        "sigma_source": source,
        "threshold": threshold,
        "post_scale": scale,
        "post_scale_source": scale_source,
        "differential_field_range": field_range,
        "baseline_floor": floor,
        "baseline_tolerance_voxels": int(tolerance),
    }
    return rel, strong, weak, valid, rule


def _differential_field(pre: np.ndarray, post: np.ndarray, valid: np.ndarray) -> tuple:
    """log(post/baseline) of unchanged tissue as a smooth field: (log field on the full grid, its range).

    Two sessions of one animal differ by a receiver gain and by the ratio of their coil profiles, both
    smooth over the body; after alignment log(post/pre) of tissue that did not change is that smooth
    field plus noise (the differential bias of serial MRI). It is fitted by a quadratic polynomial of the
    grid coordinates (a coil profile moved rigidly stays quadratic) on a strided sample of tissue voxels,
    robustly: voxels more than 2.5 robust SD off the fit (cells that arrived, a bleed that matured,
    misregistered edges) are dropped and the fit redone, three times (docs/methods/confirmation.md#harmonisation).
    """
    shape = pre.shape
    step = max(1, int(round((pre.size / 200_000) ** (1 / 3))))
    sub = (slice(None, None, step),) * 3
    p, q = pre[sub], post[sub]
    # tissue on both images: above the baseline's air/tissue threshold and with signal after
    thr = _otsu_log(p[np.isfinite(p) & (p > 0)])
    ok = valid[sub] & (p > (0 if thr is None else thr)) & (q > 0) & np.isfinite(p) & np.isfinite(q)
    coords = [np.linspace(-1.0, 1.0, n)[::step] for n in shape]

    def design(grid_coords):
        z, y, x = grid_coords
        return [np.ones_like(z), z, y, x, z * z, y * y, x * x, z * y, z * x, y * x]

    if np.count_nonzero(ok) < 100:
        # too little tissue for a field: one robust factor (median ratio)
        ratio = np.log(q[ok] / p[ok]) if ok.any() else np.zeros(1)
        c = float(np.median(ratio))
        return np.full(shape, c, np.float32), [round(float(np.exp(c)), 4)] * 2
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    terms = np.stack([t[ok] for t in design((zz, yy, xx))], 1)
    y_obs = np.log(q[ok].astype(np.float64) / p[ok])
    keep = np.ones(y_obs.size, bool)
    for _ in range(3):
        # normal equations: 10 unknowns on coordinates in [-1, 1] are well conditioned, and far cheaper than an SVD
        kept = terms[keep]
        coef = np.linalg.lstsq(kept.T @ kept, kept.T @ y_obs[keep], rcond=None)[0]
        resid = y_obs - terms @ coef
        spread = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep])))
        keep = np.abs(resid) < 2.5 * max(spread, 1e-6)
    # the field on the full grid: P(z, y) + Q(z, y) x + R(x), two full-size operations
    z = np.linspace(-1.0, 1.0, shape[0])[:, None]
    y = np.linspace(-1.0, 1.0, shape[1])[None, :]
    x = np.linspace(-1.0, 1.0, shape[2])
    c = coef
    p_zy = c[0] + c[1] * z + c[2] * y + c[4] * z * z + c[5] * y * y + c[7] * z * y
    q_zy = c[3] + c[8] * z + c[9] * y
    field = q_zy.astype(np.float32)[:, :, None] * x.astype(np.float32)
    field += p_zy.astype(np.float32)[:, :, None]
    field += (c[6] * x * x).astype(np.float32)
    fitted = terms @ coef
    return field, [round(float(np.exp(fitted.min())), 4), round(float(np.exp(fitted.max())), 4)]


def _passes_against_neighbourhood(pre: np.ndarray, post: np.ndarray, threshold: float, brighter: bool, radius: int):
    """The relative rule against the baseline's extreme within ``radius`` voxels (of a baseline smoothed by a
    one-voxel Gaussian, so the extreme is not just the largest noise sample)."""
    from scipy import ndimage

    finite = np.isfinite(pre)
    fill = 0.0 if brighter else float(np.nanmax(pre)) if finite.any() else 0.0
    base = ndimage.gaussian_filter(np.where(finite, pre, fill).astype(np.float32), 1.0)
    size = 2 * int(radius) + 1
    base = ndimage.maximum_filter(base, size) if brighter else ndimage.minimum_filter(base, size)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = post / base - 1.0
    return rel > threshold if brighter else rel < -threshold


def _reference_level(
    image: np.ndarray, valid: np.ndarray, ref: np.ndarray | None, search: np.ndarray | None, role: str
) -> tuple:
    if ref is not None:
        vals, source = image[valid & ref], "mean of the reference region"
        level = float(np.mean(vals)) if vals.size else float("nan")
    elif search is not None:
        vals, source = image[valid & search], "median of the search mask"
        level = float(np.median(vals)) if vals.size else float("nan")
    else:
        sample = _sub(image)[_sub(valid)]
        thr = _otsu_log(sample)
        vals, source = sample[sample > (0 if thr is None else thr)], "median of the tissue (Otsu)"
        level = float(np.median(vals)) if vals.size else float("nan")
    if not level > 0:
        raise InputError(
            f"{role}'s reference level ({source}) is not positive; draw a reference region in tissue with signal."
        )
    return level, source


# --------------------------------------------------------------------------- components and table
def _regions(seeds: np.ndarray, grow: np.ndarray, min_size: int, connectivity: int, opening: bool) -> np.ndarray:
    """Connected components of ``grow`` holding a seed voxel and at least ``min_size`` voxels, labelled 1..N."""
    from scipy import ndimage

    if opening:
        grow = ndimage.binary_opening(grow, structure=ndimage.generate_binary_structure(3, 1))
    out = np.zeros(grow.shape, np.int32)
    # label only the box holding the mask: the joint mask is sparse, the volume large
    box = []
    for axis in range(3):
        hit = np.flatnonzero(grow.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return out
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    box = tuple(box)
    rank = {6: 1, 18: 2, 26: 3}[connectivity]
    labels, n = ndimage.label(grow[box], structure=ndimage.generate_binary_structure(3, rank))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    seeded = np.zeros(n + 1, bool)
    seeded[labels[seeds[box]]] = True
    keep = seeded & (sizes >= min_size)
    keep[0] = False
    new_id = np.zeros(n + 1, np.int32)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    out[box] = new_id[labels]
    return out


def _drop_small(mask: np.ndarray, min_size: int, connectivity: int) -> np.ndarray:
    """``mask`` without its connected components under ``min_size`` voxels.

    For a display channel: sparse masks (noise specks) are handled as a graph
    of their voxels, which costs far less than labelling the whole volume.
    """
    idx = np.flatnonzero(mask)
    if min_size <= 1 or idx.size == 0:
        return mask
    if idx.size > 100_000:
        from scipy import ndimage

        rank = {6: 1, 18: 2, 26: 3}[connectivity]
        labels, _ = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, rank))
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        return keep[labels]
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    shape = np.array(mask.shape)
    coords = np.stack(np.unravel_index(idx, mask.shape), 1)
    rows, cols = [], []
    # half of the neighbour offsets (the other half are their negatives: the graph is undirected)
    for off in np.array([o for o in np.ndindex(3, 3, 3)]) - 1:
        if tuple(off) <= (0, 0, 0) or np.abs(off).sum() > {6: 1, 18: 2, 26: 3}[connectivity]:
            continue
        nb = coords + off
        inside = np.all((nb >= 0) & (nb < shape), axis=1)
        lin = np.ravel_multi_index(tuple(nb[inside].T), mask.shape)
        pos = np.searchsorted(idx, lin)
        pos[pos == idx.size] = 0
        hit = idx[pos] == lin
        rows.append(np.flatnonzero(inside)[hit])
        cols.append(pos[hit])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(idx.size, idx.size))
    _, comp = connected_components(graph, directed=False)
    keep = np.bincount(comp)[comp] >= min_size
    out = np.zeros(mask.shape, bool)
    out.reshape(-1)[idx[keep]] = True
    return out


def _region_means(index: np.ndarray, values: np.ndarray | None, n: int) -> np.ndarray:
    """Mean of the finite ``values`` per region index 0..n-1 (NaN where none)."""
    if values is None:
        return np.full(n, np.nan)
    v = values.astype(np.float64)
    ok = np.isfinite(v)
    s = np.bincount(index[ok], weights=v[ok], minlength=n)
    c = np.bincount(index[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, s / np.maximum(c, 1), np.nan)


def _table(
    labels: np.ndarray,
    grid: Volume,
    status: str,
    change_vs: str,
    quantities: dict,
    sigma1: float,
    sigma2: float,
    r2_over_r1: float | None,
):
    """One row per label present in ``labels`` (any positive ids, gaps allowed)."""
    import pandas as pd

    where = np.nonzero(labels)
    ids, index = np.unique(labels[where], return_inverse=True)
    n = len(ids)
    if n == 0:
        return pd.DataFrame(
            {
                c: pd.Series(
                    dtype=object if c in ("status", "change_vs") else int if c in ("label", "voxels") else float
                )
                for c in TABLE_COLUMNS
            }
        )
    count = np.bincount(index, minlength=n)
    idx = np.stack([np.bincount(index, weights=w.astype(np.float64), minlength=n) / count for w in where], 1)
    centroid = grid.index_to_world(idx)

    def mean(key):
        values = quantities.get(key)
        return _region_means(index, None if values is None else values[where], n)

    m_dr1, m_dr2 = mean("delta_r1"), mean("delta_r2")
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio_obs = m_dr2 / m_dr1
        # standard error of a ratio of two means, from each side's voxel noise
        se = np.abs(ratio_obs) * np.sqrt((sigma2 / m_dr2) ** 2 + (sigma1 / m_dr1) ** 2) / np.sqrt(count)
    agent = np.full(n, np.nan if r2_over_r1 is None else float(r2_over_r1))
    table = pd.DataFrame(
        {
            "label": ids.astype(int),
            "status": status,
            "voxels": count.astype(int),
            "volume_mm3": count * grid.voxel_volume_mm3,
            "centroid_x_mm": centroid[:, 0],
            "centroid_y_mm": centroid[:, 1],
            "centroid_z_mm": centroid[:, 2],
            "mean_t1_enhancement_fraction": mean("t1_enhancement"),
            "mean_t2_change_fraction": mean("t2_change"),
            "change_vs": change_vs,
            "mean_t1w_over_t2w": mean("ratio"),
            "mean_delta_r1_per_s": m_dr1,
            "mean_delta_r2_per_s": m_dr2,
            "delta_r2_over_delta_r1": ratio_obs,
            "delta_r2_over_delta_r1_se": se,
            "agent_r2_over_r1": agent,
            "r2_over_r1_deviation": ratio_obs / agent - 1.0,
        }
    )
    return table[TABLE_COLUMNS]


def region_table(labels: Volume, result: ConfirmResult):
    """The per-region table of (hand-edited) ``labels`` from a result's change maps.

    Use it after correcting ``result.labels`` with napari's label tools: the
    labels are carried to the result's grid (nearest neighbour) when they are
    on another one, and every positive id present gets a row (docs/methods/confirmation.md#output).

    Parameters
    ----------
    labels : Volume
        Integer labels (0 background), 3D, on any grid.
    result : ConfirmResult
        A :func:`confirm_dual_mode` result whose change maps (``result.quantities``) are averaged.

    Returns
    -------
    pandas.DataFrame
        One row per label, the columns of :data:`TABLE_COLUMNS`: ``label``, ``status``, ``voxels``,
        ``volume_mm3``, ``centroid_{x,y,z}_mm`` (world, mm), the mean T1 enhancement and T2 change
        (fractions), ``change_vs``, the mean T1w/T2w ratio, the mean ΔR1 and ΔR2 (1/s, NaN without
        maps), ΔR2/ΔR1 with its standard error, the agent's r2/r1 and the relative deviation from it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> rng = np.random.default_rng(1)
    >>> pre = Volume(100 + rng.normal(0, 1, (10, 10, 10)), np.eye(4))
    >>> post1, post2 = pre.numpy() * 1.0, pre.numpy() * 1.0
    >>> post1[2:5, 2:5, 2:5] *= 2.0; post2[2:5, 2:5, 2:5] *= 0.5
    >>> res = confirm_dual_mode(pre.replace(data=post1), pre.replace(data=post2), pre, pre)
    >>> edited = res.labels.numpy().copy(); edited[2, 2:5, 2:5] = 0   # remove one slice by hand
    >>> int(region_table(res.labels.replace(data=edited), res).voxels[0])
    18
    """
    from ..volume import as_labels

    grid = result.labels
    lab = as_labels(_as_3d(labels, "labels"), name="labels")
    if not lab.same_grid(grid):
        lab = lab.resample_to(grid, order=0)
    quantities = {k: (None if v is None else v.numpy()) for k, v in result.quantities.items()}
    rules = result.parameters.get("rules", {})
    sigma1 = rules.get("t1", {}).get("sigma", float("nan")) if result.mode.get("t1") == "delta_r" else float("nan")
    sigma2 = rules.get("t2", {}).get("sigma", float("nan")) if result.mode.get("t2") == "delta_r" else float("nan")
    return _table(
        np.asarray(lab.numpy()),
        grid,
        result.status,
        "baseline" if result.confirmed else "reference tissue",
        quantities,
        sigma1,
        sigma2,
        result.parameters.get("r2_over_r1"),
    )


# --------------------------------------------------------------------------- main entry
@CONFIRM_PARAMETERS.bind
def confirm_dual_mode(
    t1_post: Volume,
    t2_post: Volume,
    t1_pre: Volume | None = None,
    t2_pre: Volume | None = None,
    t1_map_pre: Volume | None = None,
    t1_map_post: Volume | None = None,
    t2_map_pre: Volume | None = None,
    t2_map_post: Volume | None = None,
    t1_threshold: float = FROM_MODEL,
    t2_threshold: float = FROM_MODEL,
    k_sigma: float = FROM_MODEL,
    k_sigma_grow: float = FROM_MODEL,
    min_size: int = FROM_MODEL,
    opening: bool = FROM_MODEL,
    connectivity: int = FROM_MODEL,
    search_mask: Volume | None = None,
    reference_mask: Volume | None = None,
    r2_over_r1: float | None = FROM_MODEL,
    transform: np.ndarray | None = None,
    pre_transform: np.ndarray | None = None,
    normalise: str = FROM_MODEL,
    min_baseline_snr: float = FROM_MODEL,
    min_delta_r1: float = FROM_MODEL,
    min_delta_r2: float = FROM_MODEL,
    baseline_tolerance_voxels: int | None = None,
    pre_alignment_record: dict | None = None,
    progress=None,
) -> ConfirmResult:
    """Find regions that are T1-bright AND T2-dark, new since the baseline.

    The defaults and limits of the tunable parameters are those of
    :data:`CONFIRM_PARAMETERS` (shown in this signature); values outside
    their limits raise InputError before any work.

    Parameters
    ----------
    t1_post, t2_post : Volume
        Post-injection T1-weighted and T2-weighted images. T1POST's grid is
        the grid of every output.
    t1_pre, t2_pre : Volume, optional
        Pre-injection baselines. Give both or neither: with neither (and no
        maps) only unconfirmed candidates come out (ratio mode).
    t1_map_pre, t1_map_post, t2_map_pre, t2_map_post : Volume, optional
        Quantitative T1/T2 maps in ms, in pairs (pre and post). A side with a
        map pair is decided on ΔR = 1000/T_post − 1000/T_pre (1/s); a map pair
        counts as that side's baseline.
    t1_threshold, t2_threshold : float
        Minimum relative change of the weighted signal: E1 > t1, E2 < −t2
        (fractions; 0.2 = 20 %). In ratio mode: T1n > 1 + t1, T2n < 1 − t2.
    k_sigma : float
        Noise rule to start a region: the change must exceed k·σ (σ of the
        difference image, or of ΔR) on both sides. 0 turns it off.
    k_sigma_grow : float
        Noise rule for the voxels a region grows into (at most ``k_sigma``).
    min_size : int
        Smallest region kept, in voxels (after the optional opening).
    opening : bool
        Binary opening (6-connected cross) of the joint mask before labelling.
    connectivity : {6, 18, 26}
        Voxel connectivity of a region.
    search_mask, reference_mask : Volume, optional
        Where to look, and an unchanged reference tissue (σ, normalisation,
        ratio-mode reference). Carried to T1POST's grid through world
        coordinates (nearest neighbour) when on another grid.
    r2_over_r1 : float, optional
        The agent's relaxivity ratio r2/r1, compared with ΔR2/ΔR1 per region.
    transform : (4, 4) array, optional
        T1POST world -> T2 world (RAS mm, ``fixed_to_moving`` of a
        registration of T2 onto T1). Needed when the T2 images are on another
        grid; ``np.eye(4)`` says they share T1POST's scanner frame.
    pre_transform : (4, 4) array, optional
        T1POST world -> baseline-session world, for baselines on another grid.
        To register the baseline session now, call
        :func:`napari_immunotrack.alignment.confirm_with_aligned_baseline` (CLI ``--pre-transform auto``).
        A T2 baseline on neither T1POST's nor T2POST's grid is carried through
        ``transform @ pre_transform``.
    normalise : {"reference", "field", "tissue", "none"}
        How post images are made comparable with their baseline before comparing.
        ``"reference"`` (default): a baseline carried from another grid (another
        session: its own gain and coil profile) gets the differential field, a
        baseline on T1POST's grid the reference region's mean (only when one is
        given; else nothing). ``"field"``: always the differential field, the
        smooth post/baseline ratio of unchanged tissue (quadratic in log, fitted
        robustly; docs/methods/confirmation.md#harmonisation). ``"tissue"``: one
        factor, the tissue medians' ratio. ``"none"``: not at all.
    min_baseline_snr : float
        Weighted baselines darker than this many noise σ (air) are left out:
        their relative change is noise divided by noise.
    min_delta_r1, min_delta_r2 : float
        Optional floors (1/s) for ΔR1 and ΔR2 on top of k·σ.
    baseline_tolerance_voxels : int, optional
        Weighted baselines: a voxel must also be new against the brightest (T1) / darkest (T2)
        baseline value within this many voxels, so structures present before do not show at their rim
        after resampling or a residual misalignment. Default: 0 for a baseline on T1POST's grid, the
        alignment's estimate when registered now, else the residual misalignment ``pre_transform``
        leaves, measured by block matching (docs/methods/baseline-residual.md).
    pre_alignment_record : dict, optional
        How ``pre_transform`` was found (kept in ``parameters["pre_alignment"]``; its
        ``tolerance_voxels`` is the default tolerance).
    progress : callable, optional
        ``progress(fraction, message)``; may raise Cancelled.

    Returns
    -------
    ConfirmResult

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> rng = np.random.default_rng(0)
    >>> pre1 = Volume(100 + rng.normal(0, 2, (20, 20, 20)), np.eye(4))
    >>> pre2 = Volume(100 + rng.normal(0, 2, (20, 20, 20)), np.eye(4))
    >>> post1, post2 = pre1.numpy().copy(), pre2.numpy().copy()
    >>> post1[8:11, 8:11, 8:11] *= 1.6     # T1-bright
    >>> post2[8:11, 8:11, 8:11] *= 0.4     # and T2-dark at the same place
    >>> res = confirm_dual_mode(pre1.replace(data=post1), pre2.replace(data=post2), pre1, pre2)
    >>> res.confirmed, res.n_regions, int(res.table.voxels[0])
    (True, 1, 27)
    """
    messages: list = []
    t1_post = _as_3d(t1_post, "T1POST")
    t2_post = _as_3d(t2_post, "T2POST")
    # the scalar parameters were checked against CONFIRM_PARAMETERS by the decorator
    k_sigma_grow = min(float(k_sigma_grow), float(k_sigma))  # growing is never stricter than starting
    for pre, post, name in ((t1_map_pre, t1_map_post, "T1"), (t2_map_pre, t2_map_post, "T2")):
        if (pre is None) != (post is None):
            missing = "pre" if pre is None else "post"
            raise InputError(
                f"the {name} map {missing}-injection is missing; give {name} maps in pairs (pre and post) or none."
            )
    t1_has = t1_pre is not None or t1_map_pre is not None
    t2_has = t2_pre is not None or t2_map_pre is not None
    if t1_has != t2_has:
        have, lack = ("T1", "T2") if t1_has else ("T2", "T1")
        raise InputError(
            f"a baseline was given for {have} only; give the pre-injection {lack} image too "
            f"(--{lack.lower()}-pre), or no baseline at all for unconfirmed candidates."
        )
    baseline = t1_has and t2_has
    pre_alignment = pre_alignment_record
    transforms = {}
    for value, name in ((transform, "transform"), (pre_transform, "pre_transform")):
        if value is not None:
            m = np.asarray(value, float)
            if m.shape != (4, 4) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-9:
                raise InputError(f"{name} must be an invertible 4x4 world-to-world matrix.")
            value = m
        transforms[name] = value
    transform, pre_transform = transforms["transform"], transforms["pre_transform"]

    # ---- everything onto T1POST's grid
    grid = t1_post
    t2_hint = (
        "register T2 to T1 and pass the transform (--transform T.tfm), or --transform identity if both "
        "are in the same scanner frame."
    )
    pre_hint = (
        "register the baseline to the post-injection scan and pass --pre-transform, or give a baseline on "
        "the same grid."
    )
    if pre_transform is not None:
        t2_pre_matrix = pre_transform if transform is None else transform @ pre_transform
    else:
        t2_pre_matrix = None

    def t2_side(vol, role, is_pre):
        vol = _as_3d(vol, role)
        if vol.same_grid(grid):
            return _carry(vol, role, grid, None, "", messages)
        if vol.same_grid(t2_post) and not t2_post.same_grid(grid):
            # a T2-side image on T2POST's grid goes where T2POST goes
            return _carry(vol, role, grid, transform, t2_hint, messages)
        matrix = t2_pre_matrix if is_pre else transform
        return _carry(vol, role, grid, matrix, pre_hint if is_pre else t2_hint, messages)

    def t1_side(vol, role, is_pre):
        vol = _as_3d(vol, role)
        return _carry(
            vol,
            role,
            grid,
            pre_transform if is_pre else None,
            pre_hint if is_pre else "resample it onto T1POST's grid first.",
            messages,
        )

    a1 = _carry(t1_post, "T1POST", grid, None, "", messages)
    a2 = t2_side(t2_post, "T2POST", False)
    p1 = t1_side(t1_pre, "T1PRE", True) if t1_pre is not None else None
    p2 = t2_side(t2_pre, "T2PRE", True) if t2_pre is not None else None
    m1 = (
        (t1_side(t1_map_pre, "T1 map pre", True), t1_side(t1_map_post, "T1 map post", False))
        if t1_map_pre is not None
        else None
    )
    m2 = (
        (t2_side(t2_map_pre, "T2 map pre", True), t2_side(t2_map_post, "T2 map post", False))
        if t2_map_pre is not None
        else None
    )
    search = _mask_on(search_mask, "search mask", grid)
    ref = _mask_on(reference_mask, "reference mask", grid)
    _progress.report(progress, 0.3, "images on T1POST's grid")

    # ---- each side
    rules: dict = {}
    e1 = e2 = dr1 = dr2 = ratio = None
    sigma1 = sigma2 = float("nan")
    body = _Body(a1)
    # a baseline carried from another grid is another session (another gain and coil profile)
    carried_pre = t1_pre is not None and not _as_3d(t1_pre, "T1PRE").same_grid(grid)
    if baseline_tolerance_voxels is None:
        carried = carried_pre
        if pre_alignment is not None and "tolerance_voxels" in pre_alignment:
            baseline_tolerance_voxels = int(pre_alignment["tolerance_voxels"])
        elif (
            carried and t1_pre is not None
        ):  # the residual a given transform leaves (docs/methods/baseline-residual.md)
            from .residual import baseline_tolerance

            with warnings.catch_warnings(record=True) as caught:  # kept with the result's other warnings
                warnings.simplefilter("always", ImmunotrackWarning)
                baseline_tolerance_voxels, measured = baseline_tolerance(
                    _as_3d(t1_post, "T1POST"), _as_3d(t1_pre, "T1PRE"), pre_transform
                )
            for w in caught:
                _warn(messages, str(w.message))
            pre_alignment = dict(pre_alignment or {}, method="given transform", baseline_tolerance=measured)
        else:
            baseline_tolerance_voxels = 0
    tolerance = int(baseline_tolerance_voxels)
    if tolerance != baseline_tolerance_voxels or not 0 <= tolerance <= 5:
        raise InputError(f"baseline_tolerance_voxels={baseline_tolerance_voxels} must be a whole number from 0 to 5.")
    if baseline:
        change_vs = "baseline"
        sides = {}
        for key, pre, post, thr, brighter in (("t1", p1, a1, t1_threshold, True), ("t2", p2, a2, t2_threshold, False)):
            if pre is not None:
                sides[key] = _side_relative(
                    key.upper(),
                    pre,
                    post,
                    thr,
                    k_sigma,
                    k_sigma_grow,
                    brighter,
                    ref,
                    normalise,
                    min_baseline_snr,
                    body,
                    messages,
                    tolerance,
                    carried=carried_pre,
                )
        _progress.report(progress, 0.5, "relative change")
        for key, maps, min_delta in (("t1", m1, min_delta_r1), ("t2", m2, min_delta_r2)):
            if maps is not None:
                if key in sides:  # the weighted change stays in the table; the maps decide
                    rules[f"{key}_weighted"] = sides[key][4]
                sides[key + "_maps"] = _side_delta_r(
                    key.upper(), maps[0], maps[1], k_sigma, k_sigma_grow, min_delta, ref, body, messages
                )
        e1 = sides["t1"][0] if "t1" in sides else None
        e2 = sides["t2"][0] if "t2" in sides else None
        dr1 = sides["t1_maps"][0] if "t1_maps" in sides else None
        dr2 = sides["t2_maps"][0] if "t2_maps" in sides else None
        side1 = sides.get("t1_maps", sides.get("t1"))
        side2 = sides.get("t2_maps", sides.get("t2"))
        t1_change, strong1, weak1, valid1, rules["t1"] = side1
        t2_change, strong2, weak2, valid2, rules["t2"] = side2
        mode1, mode2 = rules["t1"]["mode"], rules["t2"]["mode"]
        unit1, unit2 = rules["t1"]["unit"], rules["t2"]["unit"]
        if dr1 is not None:
            sigma1 = rules["t1"]["sigma"]
        if dr2 is not None:
            sigma2 = rules["t2"]["sigma"]
    else:
        change_vs = "reference tissue"
        mode1 = mode2 = "ratio"
        valid1 = np.isfinite(a1) & (a1 > 0)
        valid2 = np.isfinite(a2)
        if not valid1.any():
            raise InputError("T1POST has no positive voxels; give the T1-weighted magnitude image.")
        ref1, src1 = _reference_level(a1, valid1, ref, search, "T1POST")
        ref2, src2 = _reference_level(a2, valid2 & (a2 > 0), ref, search, "T2POST")
        e1 = a1 / np.float32(ref1)
        e2 = a2 / np.float32(ref2)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = e1 / e2
        ratio[~(valid1 & valid2 & (e2 > 0))] = np.nan
        strong1 = weak1 = valid1 & (e1 > 1 + t1_threshold)
        strong2 = weak2 = valid2 & (e2 < 1 - t2_threshold)
        e1 -= np.float32(1)
        e2 -= np.float32(1)
        e1[~valid1] = np.nan
        e2[~valid2] = np.nan
        t1_change, t2_change = e1, e2
        unit1 = unit2 = "fraction (signal / reference - 1)"
        rules["t1"] = {
            "mode": "ratio",
            "rule": f"T1w/ref > {1 + t1_threshold:g} (ref {ref1:.4g} = {src1})",
            "reference_level": ref1,
            "reference_source": src1,
        }
        rules["t2"] = {
            "mode": "ratio",
            "rule": f"T2w/ref < {1 - t2_threshold:g} (ref {ref2:.4g} = {src2})",
            "reference_level": ref2,
            "reference_source": src2,
        }
        _warn(messages, UNCONFIRMED_WARNING)
    _progress.report(progress, 0.7, "joint mask")

    # ---- joint mask, regions, table
    seeds = strong1 & strong2
    grow = weak1 & weak2
    if search is not None:
        seeds &= search
        grow &= search
    labels = _regions(seeds, grow, int(min_size), connectivity, opening)
    _progress.report(progress, 0.85, "regions")
    status = "confirmed" if baseline else "unconfirmed"
    quantities = {"t1_enhancement": e1, "t2_change": e2, "ratio": ratio, "delta_r1": dr1, "delta_r2": dr2}
    table = _table(labels, grid, status, change_vs, quantities, sigma1, sigma2, r2_over_r1)
    if r2_over_r1 is not None and (dr1 is None or dr2 is None):
        _warn(
            messages,
            "r2_over_r1 was given but delta R1/delta R2 need T1 and T2 maps before and after; "
            "the relaxivity check was not done.",
        )
    elif r2_over_r1 is not None and len(table):
        dev = (table["delta_r2_over_delta_r1"] - r2_over_r1).abs()
        off = table[(dev > 3 * table["delta_r2_over_delta_r1_se"]) & (table["r2_over_r1_deviation"].abs() > 0.25)]
        for row in off.itertuples():
            _warn(
                messages,
                f"region {row.label}: delta R2/delta R1 = {row.delta_r2_over_delta_r1:.3g} where the "
                f"agent's r2/r1 is {r2_over_r1:g} (r1 quenched by compartmentalisation, "
                "or not this agent).",
            )
    _progress.report(progress, 0.95, "fusion")

    # ---- outputs on T1POST's grid
    overlap = labels > 0
    name = "confirmed" if baseline else "candidates_UNCONFIRMED"
    description = (
        "immunotrack confirm: T1-T2 confirmed regions"
        if baseline
        else "UNCONFIRMED T1-T2 candidates (no baseline): haemorrhage/melanin/fat possible"
    )
    meta = {"confirmed": baseline, "status": status, "description": description, "mode": {"t1": mode1, "t2": mode2}}
    # keep T1POST's NIfTI orientation codes, so a written output matches its header too
    meta.update({k: grid.metadata[k] for k in ("sform_code", "qform_code") if k in grid.metadata})

    def vol(data, vname, unit, modality="OT"):
        return Volume(data, grid.affine.copy(), modality=modality, unit=unit, name=vname, metadata=dict(meta))

    suffix = "" if baseline else " (UNCONFIRMED)"
    # single-side channels cleaned like the regions (no specks under min_size), for a readable view
    only1 = _drop_small(strong1 & ~overlap, int(min_size), connectivity)
    only2 = _drop_small(strong2 & ~overlap, int(min_size), connectivity)
    fusion = {
        "t1_enhancement": vol(only1.view(np.uint8), "T1 enhancement" + suffix, "mask"),
        "t2_darkening": vol(only2.view(np.uint8), "T2 darkening" + suffix, "mask"),
        "overlap": vol(overlap.view(np.uint8), "T1+T2 overlap" + suffix, "mask"),
    }
    parameters = {
        "t1_threshold": t1_threshold,
        "t2_threshold": t2_threshold,
        "k_sigma": k_sigma,
        "k_sigma_grow": k_sigma_grow,
        "min_size": int(min_size),
        "opening": bool(opening),
        "connectivity": connectivity,
        "normalise": normalise,
        "min_baseline_snr": min_baseline_snr,
        "min_delta_r1": min_delta_r1,
        "min_delta_r2": min_delta_r2,
        "r2_over_r1": r2_over_r1,
        "transform": None if transform is None else transform.tolist(),
        "pre_transform": None if pre_transform is None else pre_transform.tolist(),
        "pre_alignment": pre_alignment,
        "baseline_tolerance_voxels": tolerance if baseline else None,
        "search_mask": search_mask is not None,
        "reference_mask": reference_mask is not None,
        "confirmed": baseline,
        "status": status,
        "mode": {"t1": mode1, "t2": mode2},
        "rules": rules,
        "grid": {"shape": list(grid.spatial_shape), "affine": grid.affine.tolist()},
        "valid_voxels": {"t1": int(np.count_nonzero(valid1)), "t2": int(np.count_nonzero(valid2))},
        "regions": int(len(table)),
    }
    result = ConfirmResult(
        t1_change=vol(t1_change, "T1 change" if baseline else "T1w normalised - 1" + suffix, unit1),
        t2_change=vol(t2_change, "T2 change" if baseline else "T2w normalised - 1" + suffix, unit2),
        t1_mask=vol(strong1.view(np.uint8), "T1 enhanced" + suffix, "mask"),
        t2_mask=vol(strong2.view(np.uint8), "T2 darkened" + suffix, "mask"),
        labels=vol(labels, name, "label", modality="SEG"),
        fusion=fusion,
        table=table,
        confirmed=baseline,
        mode={"t1": mode1, "t2": mode2},
        ratio=None if ratio is None else vol(ratio, "T1w/T2w (normalised)" + suffix, "ratio"),
        quantities={
            "t1_enhancement": None if e1 is None else vol(e1, "T1w relative change" + suffix, "fraction"),
            "t2_change": None if e2 is None else vol(e2, "T2w relative change" + suffix, "fraction"),
            "ratio": None if ratio is None else vol(ratio, "T1w/T2w (normalised)" + suffix, "ratio"),
            "delta_r1": None if dr1 is None else vol(dr1, "delta R1", "1/s"),
            "delta_r2": None if dr2 is None else vol(dr2, "delta R2", "1/s"),
        },
        warnings=messages,
        parameters=parameters,
    )
    _progress.report(progress, 1.0, f"{len(table)} {status} region(s)")
    return result


__all__ = [
    "CONFIRM_PARAMETERS",
    "confirm_dual_mode",
    "region_table",
    "ConfirmResult",
    "FUSION_COLOURS",
    "UNCONFIRMED_WARNING",
    "TABLE_COLUMNS",
]
