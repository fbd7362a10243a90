"""The animal in an image: a body mask and the air around it (docs/methods/clusters.md#outside-the-body).

Shared by the session alignment (:mod:`napari_immunotrack.alignment`, which
needs the body to centre and weight its registration) and the cluster
segmentation (:mod:`.clusters`, which must not report the air around the
animal as a dark "cluster" when there is no baseline to remove it). Pure
NumPy/SciPy; no napari, no file I/O.

- :func:`otsu_threshold`: Otsu's threshold of a set of values.
- :func:`body_mask`: the animal as one filled part (what the alignment uses).
- :func:`outside_body`: the air and other voxels outside the animal, safe to
  leave out of a search for dark voids: inner dark structures (lungs, gut gas,
  bone, vessels, voids) are kept inside even when the field of view cuts
  through them, and an image without air-like background excludes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The dark class must be at most this fraction of the bright class (medians) to be air
#: (air is noise, ~1-10 % of tissue signal; two tissue classes are rarely further apart than 1:4).
AIR_CONTRAST = 0.25
#: The dark class must hold at least this share of the image to be a background (a few voids in an
#: image cropped inside the body are not air around it).
MIN_AIR_SHARE = 0.01


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1D array (maximum between-class variance of a 256-bin histogram).

    Parameters
    ----------
    values : array
        Finite values (any shape; flattened by the histogram).
    bins : int
        Histogram bins.

    Returns
    -------
    float
        The bin centre that separates the two classes best.

    Examples
    --------
    >>> t = otsu_threshold(np.r_[np.zeros(100), np.ones(100) * 10])
    >>> bool(0 < t < 10)
    True
    """
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist).astype(float)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def body_mask(data: np.ndarray) -> np.ndarray:
    """The animal: voxels above an Otsu threshold of the lightly smoothed image, holes filled, largest part.

    Parameters
    ----------
    data : array (3D)
        Magnitude image.

    Returns
    -------
    numpy.ndarray of bool
        The largest bright part with its enclosed holes filled (3D).

    Examples
    --------
    >>> img = np.zeros((20, 20, 20), np.float32); img[5:15, 5:15, 5:15] = 100
    >>> mask = body_mask(img + np.random.default_rng(0).normal(0, 5, img.shape))
    >>> bool(mask[6:14, 6:14, 6:14].all()), bool(mask[:3].any())   # the cube (its smoothed rim aside), no air
    (True, False)
    """
    import SimpleITK as sitk  # not scipy.ndimage: its import alone costs `immunotrack align` about 0.3 s

    data = np.asarray(data, np.float32)
    smooth = sitk.GetArrayFromImage(sitk.BoxMean(sitk.GetImageFromArray(data), [1, 1, 1]))
    finite = smooth[np.isfinite(smooth)]
    if finite.size == 0 or float(finite.max()) <= float(finite.min()):
        return np.zeros(data.shape, bool)
    mask = sitk.GetImageFromArray((smooth > otsu_threshold(finite)).astype(np.uint8))
    # the largest 6-connected part, its enclosed holes filled
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(mask, False), sortByObjectSize=True) == 1
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(largest, False)).astype(bool)


@dataclass
class OutsideBody:
    """What :func:`outside_body` found.

    Attributes
    ----------
    mask : numpy.ndarray of bool
        True outside the animal (on the subsampled grid when ``step`` > 1).
    step : int
        Stride per axis of the grid ``mask`` lies on (1: the image's own grid).
    threshold : float
        The air/tissue threshold (Otsu of the smoothed image), signal units.
    air_found : bool
        False when the image has no air-like background (nothing excluded).
    reason : str
        One line: what was excluded, or why nothing was.
    """

    mask: np.ndarray
    step: int
    threshold: float
    air_found: bool
    reason: str

    @property
    def voxels(self) -> int:
        """Voxels excluded, counted on the image's own grid (approximately, when subsampled)."""
        return int(np.count_nonzero(self.mask)) * self.step**3

    def as_dict(self) -> dict:
        """The provenance record of the exclusion."""
        return {
            "excluded": bool(self.air_found),
            "voxels_excluded": self.voxels,
            "air_threshold_signal": self.threshold,
            "mask_grid_step": self.step,
            "method": "Otsu threshold of the 3x3x3-smoothed image (tissue also above half of it unsmoothed); "
            "holes filled slice by slice along each axis and in 3D; the dark voxels left open to the field of "
            f"view's edge are outside (when dark voxels are >= {100 * MIN_AIR_SHARE:g} % of the image and under "
            f"{AIR_CONTRAST:g} of the tissue's median; docs/methods/clusters.md#outside-the-body)",
            "note": self.reason,
        }


def _fill_holes_every_way(mask: np.ndarray) -> np.ndarray:
    """Holes filled in 3D and in every slice along each axis (a structure the field of view cuts open in
    one direction is still enclosed in the slices across it).

    Equal to ``ndimage.binary_fill_holes`` of the volume OR-ed with that of every slice along each
    axis, but with three labellings of the background instead of one fill per slice: a background
    voxel is in a hole of its slice when its in-plane (edge-connected) component touches none of the
    slice's four edges. The 3D fill adds nothing: a 3D hole's voxels are, in any slice, in an in-plane
    component that lies inside that enclosed 3D component, so they are holes of their slices already.
    """
    from scipy import ndimage

    out = mask.copy()
    # only the mask's bounding box and a one-voxel rim need labelling: the rim (background, or the field
    # of view's face) is open to the slice's edges, so whatever reaches it is open, whatever does not is not
    bounds: list[slice] = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        if hit.size == 0:
            return out  # no mask: all background, open to the edges, no holes
        bounds.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, mask.shape[axis])))
    box = tuple(bounds)
    background = ~mask[box]
    filled = out[box]  # a view: holes are set in place
    for plane_axis in range(3):
        # face-connected links only inside each slice across plane_axis
        structure = ndimage.generate_binary_structure(3, 1) & (np.indices((3, 3, 3))[plane_axis] == 1)
        labels, n = ndimage.label(background, structure=structure)
        if n == 0:
            continue
        open_to_edge = np.zeros(n + 1, bool)
        for axis in range(3):
            if axis != plane_axis:  # a slice's edges are on the other two axes' faces
                open_to_edge[np.take(labels, 0, axis=axis)] = True
                open_to_edge[np.take(labels, -1, axis=axis)] = True
        open_to_edge[0] = True
        filled |= ~open_to_edge[labels]
    return out


def _class_median(values: np.ndarray, t: float, n_dark: int, dark: bool) -> float:
    """``np.median`` of the values ``<= t`` (dark) or ``> t`` (bright), without gathering the whole class.

    The median's order statistics are bracketed from a regular subsample, counted exactly in the full
    array, and only the values between the brackets are partitioned; the result is the very number
    ``np.median`` gives (it falls back to it when the brackets miss).
    """
    side = (lambda v: v <= t) if dark else (lambda v: v > t)
    n = n_dark if dark else values.size - n_dark
    stride = max(1, values.size // 200_000)
    sample = values[::stride]
    sample = np.sort(sample[side(sample)])
    if n < 4096 or sample.size < 1000:
        return float(np.median(values[side(values)]))
    k_hi = n // 2
    k_lo = k_hi - 1 if n % 2 == 0 else k_hi
    pos = k_hi / n * sample.size
    a = sample[max(int(pos - 0.02 * sample.size) - 2, 0)]
    b = sample[min(int(pos + 0.02 * sample.size) + 2, sample.size - 1)]
    # below a, in the class: for the dark class all values under a (a <= t); for the bright one, minus the dark
    below = int(np.count_nonzero(values < a)) - (0 if dark else n_dark)
    window = values[(values >= a) & (values <= b)]  # b <= t (dark) or a > t (bright): all in the class
    if not (below <= k_lo and k_hi < below + window.size):
        return float(np.median(values[side(values)]))
    ks = sorted({k_lo - below, k_hi - below})
    part = np.partition(window, ks)
    return float(np.median(part[k_lo - below : k_hi - below + 1]))


def outside_body(data, step: int = 1) -> OutsideBody:
    """The voxels outside the animal in a magnitude image (air and the background around the body).

    The tissue is what lies above Otsu's threshold of the 3x3x3-smoothed
    image and above half of it unsmoothed (so the smoothing does not grow the
    body by a rim of air). Dark parts enclosed by tissue in 3D or in any slice
    along any axis stay inside (lungs, gut gas, bone, vessels and voids, also
    where one face of the field of view cuts them open); the remaining dark
    voxels are outside. Nothing is excluded when the dark class is not a
    background: its median above :data:`AIR_CONTRAST` of the bright class's,
    or under :data:`MIN_AIR_SHARE` of the image (an image cropped inside the body).

    Parameters
    ----------
    data : array (3D)
        Magnitude image (NaN allowed: treated as dark).
    step : int
        Compute on every ``step``-th voxel per axis (for very large images).

    Returns
    -------
    OutsideBody

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = np.abs(rng.normal(0, 5, (30, 30, 30)) + 1j * rng.normal(0, 5, (30, 30, 30)))
    >>> img[5:25, 5:25, :] += 100                   # a body cut by the field of view's two z edges
    >>> img[12:15, 12:15, :] = 3.0                  # a dark vessel running through it, open at both edges
    >>> out = outside_body(img)
    >>> bool(out.mask[0, 0, 0]), bool(out.mask[13, 13, 0]), bool(out.mask[10, 10, 15])
    (True, False, False)
    """
    from scipy import ndimage

    sub = data[::step, ::step, ::step] if step > 1 else data
    sub = np.asarray(sub.compute() if hasattr(sub, "compute") else sub, np.float32)
    finite = np.isfinite(sub)
    all_finite = bool(finite.all())
    # no copies of a finite image: the values are then the whole (smoothed) volume, in the same order
    raw = sub if all_finite else np.where(finite, sub, 0.0).astype(np.float32)
    # a light 3x3x3 smoothing against noise at full resolution; on a subsample it would bridge real gaps
    smooth = ndimage.uniform_filter(raw, 3) if step == 1 else raw
    values = smooth.ravel() if all_finite else smooth[finite]
    nothing = np.zeros(sub.shape, bool)
    if values.size == 0 or float(values.max()) <= float(values.min()):
        return OutsideBody(nothing, step, float("nan"), False, "a constant image: no air found, nothing excluded")
    t = otsu_threshold(values)
    n_dark = int(np.count_nonzero(values <= t))
    lo, hi = _class_median(values, t, n_dark, dark=True), _class_median(values, t, n_dark, dark=False)
    if not (hi > 0 and lo <= AIR_CONTRAST * hi and n_dark >= MIN_AIR_SHARE * values.size):
        return OutsideBody(
            nothing,
            step,
            t,
            False,
            f"no air-like background (dark class: {100 * n_dark / values.size:.2g} % of the image, median "
            f"{lo:.4g} against the tissue's {hi:.4g}): nothing excluded",
        )
    tissue = (smooth > t) & (raw > 0.5 * t)
    outside = ~_fill_holes_every_way(tissue)
    if not outside.any():
        return OutsideBody(nothing, step, t, False, "no air around the body in the field of view: nothing excluded")
    share = outside.mean()
    return OutsideBody(
        outside,
        step,
        t,
        True,
        f"{100 * share:.0f} % of the field of view is air or background outside the body (under {t:.4g})",
    )


# ------------------------------------------------------------ air at the skin (with a baseline)
#: Air is under this many noise sigmas: a Rician air voxel (Rayleigh) exceeds 4 sigma with probability 3e-4,
#: so the air around the animal stays 6-connected while tissue, even fat at the skin, lies far above.
AIR_SIGMAS = 4.0
#: A candidate is air, not iron, when at least this share of its voxels is exterior air. A bloom next to the
#: skin keeps its rim of partly dephased tissue above the air threshold and is surrounded by tissue on most
#: sides: on simulated foci 0.15-0.3 mm under the skin the share was 0.3-0.8, on air the skin left 0.95-1.
EXTERIOR_AIR_SHARE = 0.9


class ExteriorAir:
    """The air around the animal at full resolution: voxels under ``threshold`` 6-connected to the field of
    view's border through such voxels, in a connected air region holding at least :data:`MIN_AIR_SHARE` of
    the image (a small dark spot cut open by the edge of the field of view is not the air around the body).

    Decided only where asked (:meth:`count`): first in a small box around the voxels asked about (air
    enclosed in the box, like a bloom's dark core inside tissue, is not exterior), and only when that air
    leaves the box, from one labelling of the whole image's air (made once, then reused).
    docs/methods/clusters.md#air-at-the-skin

    Parameters
    ----------
    data : numpy.ndarray (3D)
        The magnitude image (NaN: not air).
    threshold : float
        The air threshold, signal units (e.g. :data:`AIR_SIGMAS` noise sigmas).

    Examples
    --------
    >>> img = np.full((12, 12, 12), 100.0, np.float32)
    >>> img[:, :, :3] = 1.0                                   # air along one face of the field of view
    >>> img[:, 4:6, 3] = 1.0                                  # a dent of air in the skin, open to it
    >>> img[5:7, 5:7, 7:9] = 1.0                              # a void enclosed by tissue
    >>> dent = np.zeros(img.shape, bool); dent[:, 4:6, 3] = True
    >>> void = np.zeros(img.shape, bool); void[5:7, 5:7, 7:9] = True
    >>> air = ExteriorAir(img, 10.0)
    >>> air.count(np.flatnonzero(dent)), air.count(np.flatnonzero(void))
    (24, 0)
    """

    #: voxels of margin around the voxels asked about
    PAD = 3

    def __init__(self, data: np.ndarray, threshold: float):
        self.data = data
        self.threshold = np.float32(threshold)
        self._everywhere: np.ndarray | None = None
        self.whole_image_labelled = False

    def _air(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(block) < self.threshold  # NaN compares False: not air

    def everywhere(self) -> np.ndarray:
        """The exterior air of the whole image (bool, the image's shape); one labelling, made once."""
        if self._everywhere is None:
            from scipy import ndimage

            air = self._air(self.data)
            labels, n = ndimage.label(air)
            border = np.zeros(n + 1, bool)
            for axis in range(3):
                border[np.take(labels, 0, axis=axis)] = True
                border[np.take(labels, -1, axis=axis)] = True
            border[0] = False
            big = np.bincount(labels.ravel(), minlength=n + 1) >= MIN_AIR_SHARE * labels.size
            self._everywhere = (border & big)[labels]
            self.whole_image_labelled = True
        return self._everywhere

    def count(self, flat_index: np.ndarray) -> int:
        """How many of the voxels ``flat_index`` (flat indices into the image) are exterior air."""
        return int(np.count_nonzero(self.flags(flat_index)))

    def flags(self, flat_index: np.ndarray) -> np.ndarray:
        """Which of the voxels ``flat_index`` (flat indices into the image) are exterior air (bool array)."""
        from scipy import ndimage

        shape = self.data.shape
        idx = np.asarray(flat_index)
        coords = np.unravel_index(idx, shape)
        air = self._air(self.data[coords])
        out = np.zeros(idx.size, bool)
        if not air.any():
            return out
        if self._everywhere is None:
            lo = [max(int(c.min()) - self.PAD, 0) for c in coords]
            hi = [min(int(c.max()) + self.PAD + 1, n) for c, n in zip(coords, shape)]
            labels, n = ndimage.label(self._air(self.data[tuple(slice(a, b) for a, b in zip(lo, hi))]))
            ids = labels[tuple(c[air] - a for c, a in zip(coords, lo))]
            leaves = np.zeros(n + 1, bool)
            for axis in range(3):
                leaves[np.take(labels, 0, axis=axis)] = True
                leaves[np.take(labels, -1, axis=axis)] = True
            if not leaves[ids].any():
                return out  # all its air is enclosed in the box: a void inside tissue
        out[air] = self.everywhere()[tuple(c[air] for c in coords)]
        return out
