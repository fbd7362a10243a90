"""Publication figures from Volumes and tables (matplotlib, Agg; no napari needed).

Panels
------
:func:`fused_slice`
    One slice through world coordinates: the anatomy in grey, a quantitative
    overlay (PET/SPECT/19F/MPI) in colour with a colour bar in its physical
    unit, ROI and cluster outlines, a scale bar in mm and orientation letters.
    Every volume is resampled onto one 2D display grid in world mm (through
    its own affine, and a registration transform if given), so images of
    different grids line up wherever they are drawn.
:func:`montage`
    Several fused slices (slices of one study, or one slice over timepoints)
    sharing one colour range and one colour bar.
:func:`mip`
    A maximum-intensity projection along a world axis.
:func:`organ_bars`, :func:`time_course`
    Per-organ bar charts with error bars; time courses per site with the
    fitted model, the detection limit and flagged sites.
:func:`save_figure`
    PNG at a chosen DPI and vector SVG/PDF, each with a provenance sidecar.

Conventions
-----------
- Axes are in world millimetres; the scale bar is drawn in those data
  coordinates, so its length in pixels is (length mm) x (pixels per mm).
- Orientation letters come from RAS. By default the subject's right is on
  the image's right (neurological); ``radiological=True`` mirrors it.
- Colour-blind-safe style: Okabe-Ito for categories, perceptually uniform
  maps (inferno, viridis, cividis, magma) for values.
- Deterministic output: the same inputs give byte-identical PNG and SVG
  (fixed SVG hash salt, no dates in the file metadata).

Examples
--------
>>> import numpy as np
>>> from napari_immunotrack.volume import Volume
>>> mri = Volume(np.ones((20, 40, 40), np.float32), np.diag([0.5, 0.5, 0.5, 1.0]), "MR", "a.u.")
>>> pet = mri.replace(data=np.random.default_rng(0).random((20, 40, 40)).astype(np.float32), modality="PT",
...                   unit="Bq/mL")
>>> result = fused_slice(mri, pet, plane="axial", overlay_range=(0.2, 1.0), scale_bar_mm=5)
>>> result.info["colorbar_range"]
(0.2, 1.0)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ImmunotrackWarning, InputError
from .volume import Volume

#: Okabe & Ito (2008) colour-blind-safe categorical palette.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")

#: Continuous colour map per modality (perceptually uniform, colour-blind safe).
MODALITY_CMAP = {
    "PT": "inferno",
    "NM": "magma",
    "F19": "viridis",
    "MPI": "cividis",
    "OPT": "viridis",
    "MR": "gray",
    "CT": "gray",
}

#: Style of every figure (Agg, DejaVu Sans which matplotlib ships, so it renders the same everywhere).
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "axes.prop_cycle": None,  # set below (Okabe-Ito)
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "lines.linewidth": 1.2,
    "svg.hashsalt": "napari-immunotrack",
    "svg.fonttype": "path",
    "pdf.fonttype": 42,
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
    "path.simplify": False,
}

#: Planes: normal world axis, horizontal and vertical world axes (0=x, 1=y, 2=z) and edge letters
#: (left, right, bottom, top) for the neurological display.
PLANES = {
    "axial": {"normal": 2, "h": 0, "v": 1, "letters": ("L", "R", "P", "A")},
    "coronal": {"normal": 1, "h": 0, "v": 2, "letters": ("L", "R", "I", "S")},
    "sagittal": {"normal": 0, "h": 1, "v": 2, "letters": ("P", "A", "I", "S")},
}

#: Markers cycled with the Okabe-Ito colours: style k is colour k % 8 with marker (k + k // 8) % 8,
#: so the first 64 sites all differ in colour or marker.
SITE_MARKERS = ("o", "s", "D", "^", "v", "<", ">", "p")
#: Sites every figure knows, in a fixed order: a site keeps its colour and marker in every figure
#: (19F, PET, MPI, cohort), whatever other sites a figure shows.
KNOWN_SITES = (
    "tumour",
    "ln_inguinal_right",
    "ln_inguinal_left",
    "ln_iliac",
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "lung",
    "bladder",
    "muscle",
    "bone",
    "injection_site",
    "blood",
    "heart",
    "brain",
    "ln_axillary_right",
    "ln_axillary_left",
    "ln_popliteal",
    "ln_mesenteric",
    "fat",
    "gut",
    "vessel",
)
_SITE_INDEX = {name: i for i, name in enumerate(KNOWN_SITES)}


def _site_key(name) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def site_style(name) -> dict:
    """The colour and marker of a site, the same in every figure and every call.

    Known sites (:data:`KNOWN_SITES`) have fixed styles; another name gets the next free style the
    first time any figure draws it and keeps it for the rest of the session.

    Parameters
    ----------
    name : str
        A site name; case, spaces and hyphens are ignored ("LN inguinal-right" is "ln_inguinal_right").

    Returns
    -------
    dict
        ``color`` (an Okabe-Ito hex colour) and ``marker`` (a matplotlib marker).

    Examples
    --------
    >>> site_style("liver"), site_style("tumour")
    ({'color': '#0072B2', 'marker': 'v'}, {'color': '#E69F00', 'marker': 'o'})
    >>> site_style("liver") == site_style("Liver") == site_style("liver")
    True
    >>> site_style("tumour")["color"] != site_style("ln_inguinal_right")["color"]
    True
    """
    key = _site_key(name)
    if key not in _SITE_INDEX:
        _SITE_INDEX[key] = len(_SITE_INDEX)
    k = _SITE_INDEX[key]
    return {"color": OKABE_ITO[k % 8], "marker": SITE_MARKERS[(k + k // 8) % 8]}


SCALE_BAR_COLOR = "#FFFFFF"
OUTLINE_COLORS = OKABE_ITO


def _style() -> dict:
    from cycler import cycler

    style = dict(STYLE)
    style["axes.prop_cycle"] = cycler(color=list(OKABE_ITO))
    return style


@contextlib.contextmanager
def figure_style():
    """Context manager applying :data:`STYLE` (used by every function here).

    The matplotlib settings (font sizes, line widths, no top/right spines, the Okabe-Ito colour
    cycle) hold inside the ``with`` block only.

    Returns
    -------
    contextlib.AbstractContextManager

    Examples
    --------
    >>> import matplotlib
    >>> with figure_style():
    ...     inside = matplotlib.rcParams["font.size"]
    >>> inside, inside == STYLE["font.size"]
    (8.0, True)
    """
    import matplotlib

    with matplotlib.rc_context(_style()):
        yield


def _new_figure(size_in, layout=None):
    """A pyplot-free Agg figure (thread-safe: the napari widget draws in a worker)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in, layout=layout)
    FigureCanvasAgg(fig)
    return fig


@dataclass
class FigureResult:
    """A figure and what it shows (for tests, captions and provenance).

    ``info`` holds per panel: plane, position (mm), field of view, colour-bar range, unit,
    scale-bar length (mm), pixel size of the display grid and warnings.
    """

    figure: object
    axes: dict[str, object] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    def save(
        self,
        path,
        *,
        dpi: int = 300,
        formats: Sequence[str] | None = None,
        overwrite: bool = False,
        provenance: dict | None = None,
    ):
        """Shortcut for :func:`save_figure`."""
        return save_figure(self, path, dpi=dpi, formats=formats, overwrite=overwrite, provenance=provenance)


# --------------------------------------------------------------------------- geometry
def _check_volume(volume, role: str, need_unit: bool = False) -> Volume:
    if not isinstance(volume, Volume):
        raise InputError(f"the {role} must be a Volume (got {type(volume).__name__}).")
    if need_unit and (volume.unit is None or not str(volume.unit).strip()):
        raise InputError(
            f"the {role} {volume.name!r} has no unit, so its colour bar cannot say what it shows; "
            "set its unit (e.g. 'Bq/mL', 'SUVbw', 'mM') or pass unit=..."
        )
    return volume


def in_reference_world(volume: Volume, fixed_to_moving: np.ndarray | None) -> Volume:
    """The volume placed in the reference (fixed) world by a registration, unresampled.

    ``fixed_to_moving`` maps a reference world point to this volume's world
    (``RegistrationResult.fixed_to_moving``); the affine becomes ``inv(T) @ affine``.

    Parameters
    ----------
    volume : Volume
        A moving image (e.g. PET in its scanner's world).
    fixed_to_moving : (4, 4) array or None
        Reference world -> this volume's world, mm (None: the volume is returned as it is).

    Returns
    -------
    Volume
        The same voxels with the new affine (nothing is resampled).

    Raises
    ------
    InputError
        A transform that is not a finite 4x4 matrix.

    Examples
    --------
    >>> shift = np.eye(4); shift[0, 3] = 5.0          # the PET world is 5 mm right of the reference world
    >>> in_reference_world(Volume(np.zeros((2, 3, 4)), np.eye(4), "PT"), shift).affine[:3, 3]
    array([-5.,  0.,  0.])
    """
    if fixed_to_moving is None:
        return volume
    t = np.asarray(fixed_to_moving, float)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise InputError("the transform must be a finite 4x4 matrix (reference world -> volume world).")
    return volume.replace(affine=np.linalg.inv(t) @ volume.affine)


def world_box(volume: Volume) -> np.ndarray:
    """(2, 3) world box of a volume's field of view (voxel edges).

    Parameters
    ----------
    volume : Volume
        Any volume.

    Returns
    -------
    ndarray, shape (2, 3)
        Lowest and highest world coordinate (mm, x y z) over the outer voxel edges.

    Examples
    --------
    >>> import numpy as np
    >>> world_box(Volume(np.zeros((2, 3, 4)), np.diag([2.0, 1.0, 1.0, 1.0]))).tolist()
    [[-1.0, -0.5, -0.5], [3.0, 2.5, 3.5]]
    """
    n = np.array(volume.spatial_shape)
    corners = np.array([[i, j, k] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5) for k in (-0.5, n[2] - 0.5)])
    w = volume.index_to_world(corners)
    return np.stack([w.min(0), w.max(0)])


def display_grid(plane: str, position_mm: float, h_range, v_range, pixel_mm: float):
    """The (shape, affine, extent) of a one-voxel-thick 3D grid sampling a plane in world mm.

    Array axes (0, rows, columns): row 0 at the top (largest vertical coordinate),
    columns along the horizontal world axis increasing to the right.

    Parameters
    ----------
    plane : {"axial", "coronal", "sagittal"}
        The plane (see :data:`PLANES`: its horizontal, vertical and normal world axes).
    position_mm : float
        World coordinate of the plane along its normal, mm.
    h_range, v_range : (float, float)
        Horizontal and vertical world range shown, mm.
    pixel_mm : float
        Display pixel size, mm (> 0).

    Returns
    -------
    shape : (1, rows, columns)
    affine : (4, 4) ndarray
        Index -> world RAS mm.
    extent : (left, right, bottom, top)
        For matplotlib's ``imshow``, mm.

    Raises
    ------
    InputError
        A pixel size <= 0.

    Examples
    --------
    >>> shape, affine, extent = display_grid("axial", 0.0, (-4, 4), (-2, 2), 1.0)
    >>> shape, extent, (affine @ [0, 0, 0, 1]).tolist()      # first pixel: top left, x = -3.5, y = 1.5
    ((1, 4, 8), (-4, 4.0, -2.0, 2), [-3.5, 1.5, 0.0, 1.0])
    """
    p = PLANES[plane]
    if not pixel_mm > 0:
        raise InputError(f"pixel_mm={pixel_mm} must be > 0 mm.")
    nh = max(int(round((h_range[1] - h_range[0]) / pixel_mm)), 1)
    nv = max(int(round((v_range[1] - v_range[0]) / pixel_mm)), 1)
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    affine[p["normal"], 0] = 1.0  # the slab is one voxel of 1 mm (only its centre is sampled)
    affine[p["normal"], 3] = position_mm
    affine[p["v"], 1] = -pixel_mm
    affine[p["v"], 3] = v_range[1] - pixel_mm / 2
    affine[p["h"], 2] = pixel_mm
    affine[p["h"], 3] = h_range[0] + pixel_mm / 2
    extent = (h_range[0], h_range[0] + nh * pixel_mm, v_range[1] - nv * pixel_mm, v_range[1])
    return (1, nv, nh), affine, extent


def sample_plane(volume: Volume, grid, order: int = 1, fill: float = np.nan) -> np.ndarray:
    """A volume's values on a display grid (2D array, rows top to bottom); ``fill`` outside its field of view.

    Parameters
    ----------
    volume : Volume
        Any volume (the first frame of a 4D one).
    grid : tuple
        From :func:`display_grid` (shape and affine used).
    order : int, default 1
        Interpolation order; integer and boolean data are always sampled nearest (0 outside).
    fill : float, default NaN
        Value outside the volume.

    Returns
    -------
    (rows, columns) ndarray

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> cube = Volume(np.arange(512, dtype=np.float32).reshape(8, 8, 8), zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4)))
    >>> sample_plane(cube, display_grid("axial", 0.0, (-4, 4), (-4, 4), 2.0), order=0)[0].tolist()
    [313.0, 315.0, 317.0, 319.0]
    """
    shape, affine = grid[0], grid[1]
    vol = volume
    if vol.data.ndim == 4:
        vol = vol.replace(data=vol.numpy()[0])
    data = vol.numpy()
    if order == 0 or np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        out = vol.resample_to((shape, affine), order=0, fill=0).numpy()
    else:
        out = (
            vol.replace(data=data.astype(np.float32, copy=False))
            .resample_to((shape, affine), order=order, fill=fill)
            .numpy()
        )
    return np.asarray(out)[0]


def _auto_position(volume: Volume, plane: str) -> float:
    return float(volume.center_world()[PLANES[plane]["normal"]])


# --------------------------------------------------------------------------- drawing helpers
def _nice_length(span_mm: float) -> float:
    """A round scale-bar length about a fifth of the field of view."""
    target = span_mm / 5.0
    for v in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500):
        if v >= target * 0.7:
            return float(v)
    return float(round(target))


def _scale_bar(ax, extent, length_mm: float, color=SCALE_BAR_COLOR, radiological=False):
    """A bar of ``length_mm`` in data coordinates (mm) at the lower right corner of the screen.

    Mirrored (radiological) axes run from h1 on the left to h0 on the right, so the bar then
    starts at h0.
    """
    from matplotlib.patches import Rectangle

    h0, h1, v0, v1 = extent
    width, height = h1 - h0, v1 - v0
    if length_mm > 0.9 * width:
        raise InputError(
            f"scale bar of {length_mm:g} mm does not fit in the {width:.1f} mm wide field of view; "
            "choose a shorter one."
        )
    margin = 0.04 * width
    thickness = max(0.012 * height, 0.15)
    x_left = h0 + margin if radiological else h1 - margin - length_mm
    y = v0 + 0.05 * height
    rect = Rectangle(
        (x_left, y), length_mm, thickness, facecolor=color, edgecolor="none", linewidth=0, antialiased=False, zorder=10
    )
    ax.add_patch(rect)
    ax.text(
        x_left + length_mm / 2,
        y + thickness + 0.01 * height,
        f"{length_mm:g} mm",
        color=color,
        ha="center",
        va="bottom",
        fontsize=7,
        zorder=10,
    )
    return rect


def emptiest_corner(signal: np.ndarray | None, fraction: float = 0.18, avoid=()) -> str:
    """The display corner ("upper left", "upper right", "lower left", "lower right") whose
    ``fraction`` x ``fraction`` box holds the least signal (rows top to bottom, as displayed).

    Ties (e.g. no signal) go to the upper left; corners in ``avoid`` (the scale bar's) are not used.

    Parameters
    ----------
    signal : 2D array or None
        What is shown (None or not 2D: the first allowed corner).
    fraction : float, default 0.18
        Side of each corner box, as a fraction of the image's rows and columns.
    avoid : iterable of str, optional
        Corners not to use.

    Returns
    -------
    str

    Examples
    --------
    >>> img = np.zeros((100, 100)); img[:30, :30] = 1.0; img[70:, 70:] = 1.0; img[:20, 80:] = 0.2
    >>> emptiest_corner(img)
    'lower left'
    """
    corners = [c for c in ("upper left", "upper right", "lower left", "lower right") if c not in avoid]
    if signal is None or np.asarray(signal).ndim != 2 or not np.asarray(signal).size:
        return corners[0]
    img = np.nan_to_num(np.abs(np.asarray(signal, float)))
    nr, nc = img.shape
    hr, hc = max(int(round(fraction * nr)), 1), max(int(round(fraction * nc)), 1)
    boxes = {
        "upper left": img[:hr, :hc],
        "upper right": img[:hr, nc - hc :],
        "lower left": img[nr - hr :, :hc],
        "lower right": img[nr - hr :, nc - hc :],
    }
    return min(corners, key=lambda k: (round(float(boxes[k].sum()), 9), corners.index(k)))


#: Axes-fraction anchor of the orientation marker in each corner, and the direction its arrows grow.
_CORNERS = {
    "upper left": (0.04, 0.96, 1, -1),
    "upper right": (0.96, 0.96, -1, -1),
    "lower left": (0.04, 0.04, 1, 1),
    "lower right": (0.96, 0.04, -1, 1),
}


def _orientation_letters(
    ax, plane: str, radiological: bool, image: np.ndarray | None = None, corner: str | None = None, avoid=()
) -> dict:
    """An orientation marker in the image corner with the least signal, away from the data.

    Two short arrows from the corner point along the screen's horizontal and vertical
    directions, each tipped with the letter of the side it points to (e.g. "R" and "A" on an
    axial slice in the neurological convention), so the letters never sit on a tumour at the
    edge of the field of view. ``image`` is the displayed signal (rows top to bottom, columns as
    shown); ``corner`` forces one. Returns ``{"corner", "letters", "texts"}``.
    """
    import matplotlib.patheffects as pe

    left, right, bottom, top = PLANES[plane]["letters"]
    if radiological and plane in ("axial", "coronal"):
        left, right = right, left
    corner = corner or emptiest_corner(image, avoid=avoid)
    x0, y0, sx, sy = _CORNERS[corner]
    h_letter = right if sx > 0 else left  # the arrow points inwards: towards the side on that screen edge
    v_letter = top if sy > 0 else bottom
    effects = [pe.withStroke(linewidth=1.5, foreground="black")]
    kw = dict(color="white", fontsize=8, fontweight="bold", transform=ax.transAxes, zorder=11, path_effects=effects)
    length = 0.09
    arrow = dict(arrowstyle="-|>", color="white", linewidth=1.0, mutation_scale=7)
    ah = ax.annotate(
        "", xy=(x0 + sx * length, y0), xytext=(x0, y0), xycoords="axes fraction", arrowprops=arrow, zorder=11
    )
    av = ax.annotate(
        "", xy=(x0, y0 + sy * length), xytext=(x0, y0), xycoords="axes fraction", arrowprops=arrow, zorder=11
    )
    th = ax.text(x0 + sx * (length + 0.015), y0, h_letter, ha="left" if sx > 0 else "right", va="center", **kw)
    tv = ax.text(x0, y0 + sy * (length + 0.015), v_letter, ha="center", va="bottom" if sy > 0 else "top", **kw)
    return {"corner": corner, "letters": (h_letter, v_letter), "texts": (th, tv), "artists": (ah, av, th, tv)}


def _outlines(ax, labels2d: np.ndarray, extent, color, linewidth=0.8, values=None):
    """Contours of each label value at the boundaries between pixel centres (data coordinates)."""
    h0, h1, v0, v1 = extent
    nv, nh = labels2d.shape
    px_h, px_v = (h1 - h0) / nh, (v1 - v0) / nv
    xs = h0 + (np.arange(nh) + 0.5) * px_h
    ys = v1 - (np.arange(nv) + 0.5) * px_v
    values = sorted(int(v) for v in np.unique(labels2d) if v != 0) if values is None else values
    drawn = []
    for i, value in enumerate(values):
        mask = (labels2d == value).astype(float)
        if not mask.any():
            continue
        c = color[i % len(color)] if isinstance(color, (list, tuple)) else color
        # pad so a label touching the edge still closes
        padded = np.pad(mask, 1)
        xp = np.concatenate([[xs[0] - px_h], xs, [xs[-1] + px_h]])
        yp = np.concatenate([[ys[0] + px_v], ys, [ys[-1] - px_v]])
        ax.contour(xp, yp, padded, levels=[0.5], colors=[c], linewidths=linewidth, antialiased=True, zorder=5)
        drawn.append(value)
    return drawn


def robust_range(values, low: float = 1.0, high: float = 99.5, *, nonzero: bool = True, value_range=None) -> tuple:
    """A colour range on robust percentiles of the data shown: (``low``, ``high``) percentiles of the
    finite (and, by default, non-zero) values, so a few hot voxels or an empty background do not
    squash the map (a 19F image whose reference tube reads 800 mM still shows 5-50 mM spots).

    Parameters
    ----------
    values : array of the values drawn (any shape; NaN ignored).
    low, high : percentiles (default 1st and 99.5th).
    nonzero : leave exact zeros out (background, outside the field of view).
    value_range : (low, high) given by the user: checked and returned as is.

    Returns
    -------
    (low, high) floats with high > low.

    Examples
    --------
    >>> v = np.zeros(3000); v[:1000] = np.linspace(1, 10, 1000); v[:3] = 800.0   # 3 hot voxels, 2000 zeros
    >>> lo, hi = robust_range(v)
    >>> round(lo, 1), round(hi, 1)
    (1.1, 10.0)
    """
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise InputError(f"value range {value_range} must be two finite numbers, low < high.")
        return lo, hi
    values = np.asarray(values, dtype=float).ravel()
    finite = values[np.isfinite(values)]
    if nonzero and np.any(finite != 0):
        finite = finite[finite != 0]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo), 1.0) * 1e-3 if lo else 1.0)


def _shown_values(values: np.ndarray, threshold: float | None) -> np.ndarray:
    """The finite values an overlay draws: those at or above its display threshold (all without one)."""
    values = np.asarray(values, dtype=float).ravel()
    if threshold is None:
        return values
    above = values[np.isfinite(values) & (values >= float(threshold))]
    return above if above.size else values


def _range_of(values: np.ndarray, value_range, nonzero: bool = False) -> tuple:
    return robust_range(values, nonzero=nonzero, value_range=value_range)


def _unit_label(volume: Volume, unit: str | None, warn: list) -> str:
    unit = unit if unit is not None else volume.unit
    if unit is None or not str(unit).strip():
        raise InputError(
            f"the overlay {volume.name!r} has no unit, so its colour bar cannot say what it shows; "
            "set its unit (e.g. 'Bq/mL', 'SUVbw', 'mM') or pass unit=..."
        )
    if str(unit).strip().lower() in ("a.u.", "au", "arbitrary"):
        msg = (
            f"the overlay {volume.name or volume.modality!r} is in arbitrary units (a.u.); calibrate it "
            "(PET Bq/mL or SUV, 19F mM against the reference tube, MPI ng Fe) for a colour bar in physical units."
        )
        warnings.warn(msg, ImmunotrackWarning, stacklevel=3)
        warn.append(msg)
    name = volume.name or volume.modality
    return f"{name} ({unit})"


# --------------------------------------------------------------------------- panels
def draw_fused(
    ax,
    anatomy: Volume | None,
    overlay: Volume | None = None,
    labels=(),
    *,
    plane: str = "axial",
    position_mm: float | None = None,
    fov_mm=None,
    pixel_mm: float | None = None,
    anatomy_range=None,
    overlay_range=None,
    overlay_cmap: str | None = None,
    overlay_alpha: float = 0.85,
    overlay_threshold: float | None = None,
    unit: str | None = None,
    outline_colors=None,
    outline_width: float = 0.8,
    scale_bar_mm: float | None = None,
    letters: bool = True,
    radiological: bool = False,
    title: str | None = None,
    letter_corner: str | None = None,
) -> dict:
    """Draw one fused slice into a matplotlib ``ax``; returns the panel's info (see :func:`fused_slice`).

    ``letter_corner`` forces the corner of the orientation marker (default: the one with the least signal).

    Parameters
    ----------
    ax : matplotlib Axes
        Where to draw.
    anatomy, overlay, labels, plane, position_mm
        As for :func:`fused_slice`.
    fov_mm, pixel_mm, anatomy_range, overlay_range, overlay_cmap, overlay_alpha, overlay_threshold, unit,
    outline_colors, outline_width, scale_bar_mm, letters, radiological, title
        The drawing options listed in :func:`fused_slice`'s ``**kwargs``.
    letter_corner : str, optional
        "upper left", "upper right", "lower left" or "lower right" for the orientation marker.

    Returns
    -------
    dict
        The panel's info: plane, position and extent (mm), pixel size, anatomy and colour-bar range,
        colour-bar label, threshold, outlines drawn, scale bar, orientation letters, warnings; and
        the private ``_mappable`` (for a colour bar), ``_marker``, ``_letter_avoid``.

    Raises
    ------
    InputError
        An unknown plane, nothing to draw, a position outside the volume, or an overlay without unit.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from matplotlib.backends.backend_agg import FigureCanvasAgg
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))          # 8 mm cubes centred on 0
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR")
    >>> hot = np.zeros((8, 8, 8), np.float32); hot[3:5, 3:5, 3] = 1000.0; hot[3:5, 3:5, 4] = 3000.0
    >>> pet = Volume(hot, grid, "PT", "Bq/mL")
    >>> figure = Figure(); _ = FigureCanvasAgg(figure)
    >>> info = draw_fused(figure.add_subplot(), anatomy, pet, position_mm=0.0, title="day 1")
    >>> info["plane"], info["colorbar_range"], info["colorbar_label"]
    ('axial', (1000.0, 3000.0), 'PT (Bq/mL)')
    """
    from matplotlib import colormaps

    if plane not in PLANES:
        raise InputError(f"plane={plane!r} is unknown; use one of {list(PLANES)}.")
    if anatomy is None and overlay is None:
        raise InputError("nothing to draw: give an anatomy and/or an overlay volume.")
    if anatomy is not None:
        _check_volume(anatomy, "anatomy")
    if overlay is not None:
        _check_volume(overlay, "overlay")
    labels = [labels] if isinstance(labels, Volume) else list(labels or ())
    for lab in labels:
        _check_volume(lab[0] if isinstance(lab, tuple) else lab, "outline label volume")
    base = anatomy if anatomy is not None else overlay
    p = PLANES[plane]
    warn: list = []
    box = world_box(base)
    if fov_mm is None:
        h_range, v_range = (box[0][p["h"]], box[1][p["h"]]), (box[0][p["v"]], box[1][p["v"]])
    else:
        (h_range, v_range) = fov_mm
    position = _auto_position(base, plane) if position_mm is None else float(position_mm)
    if not box[0][p["normal"]] <= position <= box[1][p["normal"]]:
        raise InputError(
            f"{plane} position {position:g} mm is outside the volume "
            f"({box[0][p['normal']]:.1f} to {box[1][p['normal']]:.1f} mm)."
        )
    if pixel_mm is None:
        sp = base.spacing
        pixel_mm = float(np.min(sp))
    grid = display_grid(plane, position, h_range, v_range, pixel_mm)
    extent = grid[2]
    info = {
        "plane": plane,
        "position_mm": position,
        "extent_mm": tuple(float(e) for e in extent),
        "pixel_mm": float(pixel_mm),
        "letters": PLANES[plane]["letters"],
        "radiological": bool(radiological),
    }
    ax.set_facecolor("black")
    if anatomy is not None:
        a2d = sample_plane(anatomy, grid, order=1)
        lo, hi = _range_of(a2d, anatomy_range)
        ax.imshow(
            np.nan_to_num(a2d, nan=lo),
            cmap="gray",
            vmin=lo,
            vmax=hi,
            extent=extent,
            origin="upper",
            interpolation="nearest",
            zorder=1,
        )
        info["anatomy_range"] = (lo, hi)
    mappable = None
    if overlay is not None:
        unit_text = _unit_label(overlay, unit, warn)
        o2d = sample_plane(overlay, grid, order=1)
        # the colour range on the values drawn: above the display threshold when one is given (a mostly
        # empty 19F image's noise, hidden under it, would otherwise set the range and saturate every spot)
        lo, hi = _range_of(_shown_values(o2d, overlay_threshold), overlay_range, nonzero=True)
        cmap = colormaps[overlay_cmap or MODALITY_CMAP.get(overlay.modality, "inferno")].with_extremes(
            bad=(0.0, 0.0, 0.0, 0.0)
        )
        # default: 5 % up the colour range, so a faint background of the overlay does not veil the anatomy
        threshold = lo + 0.05 * (hi - lo) if overlay_threshold is None else float(overlay_threshold)
        shown = np.ma.masked_where(~np.isfinite(o2d) | (o2d < threshold), o2d)
        ax.imshow(
            shown,
            cmap=cmap,
            vmin=lo,
            vmax=hi,
            alpha=overlay_alpha,
            extent=extent,
            origin="upper",
            interpolation="nearest",
            zorder=2,
        )
        # the colour bar shows the map itself (opaque), not the overlay blended over grey
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        mappable = ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=cmap)
        info.update(
            colorbar_range=(lo, hi), colorbar_label=unit_text, overlay_cmap=cmap.name, overlay_threshold=threshold
        )
    drawn = []
    colors = list(outline_colors or OUTLINE_COLORS)
    for _i, lab in enumerate(labels):
        vol, col = lab if isinstance(lab, tuple) else (lab, None)
        l2d = sample_plane(vol, grid, order=0)
        # the colour given with the volume; else each named site's own colour (site_style: the same as in
        # the time courses), else one colour per label value
        names = {int(k): v for k, v in (vol.metadata.get("label_names") or {}).items()} if not col else {}
        if names and outline_colors is None:
            present = sorted(int(v) for v in np.unique(l2d) if v != 0)
            by_value = [
                site_style(names[v])["color"] if v in names else colors[i % len(colors)] for i, v in enumerate(present)
            ]
            values = _outlines(ax, l2d, extent, by_value, linewidth=outline_width, values=present)
        else:
            values = _outlines(ax, l2d, extent, col if col else colors, linewidth=outline_width)
        drawn.append({"name": vol.name, "labels": values})
    info["outlines"] = drawn
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    if radiological and plane in ("axial", "coronal"):
        ax.set_xlim(extent[1], extent[0])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if scale_bar_mm is None:
        scale_bar_mm = _nice_length(extent[1] - extent[0])
    if scale_bar_mm:
        if scale_bar_mm <= 0:
            raise InputError(f"scale_bar_mm={scale_bar_mm} must be > 0 mm (or 0 for none).")
        _scale_bar(ax, extent, float(scale_bar_mm), radiological=radiological and plane in ("axial", "coronal"))
    info["scale_bar_mm"] = float(scale_bar_mm or 0)
    if letters:
        signal = None
        if anatomy is not None:
            lo_a, hi_a = info["anatomy_range"]
            signal = np.clip((np.nan_to_num(a2d, nan=lo_a) - lo_a) / (hi_a - lo_a), 0, 1)
        if overlay is not None:
            lo_o, hi_o = info["colorbar_range"]
            shown_o = np.clip((np.nan_to_num(o2d, nan=lo_o) - lo_o) / (hi_o - lo_o), 0, 1) * 4  # hot spots count most
            signal = shown_o if signal is None else signal + shown_o
        if signal is not None and radiological and plane in ("axial", "coronal"):
            signal = signal[:, ::-1]  # as displayed
        bar_corner = "lower left" if radiological and plane in ("axial", "coronal") else "lower right"
        marker = _orientation_letters(
            ax, plane, radiological, image=signal, corner=letter_corner, avoid=(bar_corner,) if scale_bar_mm else ()
        )
        info["letter_corner"] = marker["corner"]
        info["letters_shown"] = marker["letters"]
        info["_marker"] = marker
        info["_letter_avoid"] = (bar_corner,) if scale_bar_mm else ()
    if title:
        ax.set_title(title)
    info["warnings"] = warn
    info["_mappable"] = mappable
    return info


def _describe_inputs(**volumes) -> dict:
    from .provenance import describe_input

    out = {}
    for key, value in volumes.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                v = v[0] if isinstance(v, tuple) else v
                out[f"{key}_{i}"] = describe_input(v)
        else:
            out[key] = describe_input(value)
    return out


def fused_slice(
    anatomy: Volume | None,
    overlay: Volume | None = None,
    labels=(),
    *,
    plane: str = "axial",
    position_mm: float | None = None,
    width_in: float = 3.4,
    colorbar: bool = True,
    **kwargs,
) -> FigureResult:
    """A publication panel: one fused slice through world coordinates.

    Parameters
    ----------
    anatomy : Volume (MRI/CT), drawn in grey; None for the overlay alone.
    overlay : Volume in physical units (PET Bq/mL or SUV, 19F mM, MPI ng Fe ...), drawn in colour
        above ``overlay_threshold`` (default: 5 % up the colour range) with a colour bar.
        Place a registered image first with :func:`in_reference_world`.
    labels : Volume or list of Volumes (or ``(Volume, colour)`` pairs): outlines of every label.
    plane : "axial", "coronal" or "sagittal".
    position_mm : world coordinate of the slice along the plane's normal (z, y or x);
        default the centre of the anatomy.
    width_in : figure width in inches (the height follows the field of view).
    **kwargs : ``fov_mm=((h0, h1), (v0, v1))``, ``pixel_mm``, ``anatomy_range``, ``overlay_range``,
        ``overlay_cmap``, ``overlay_alpha``, ``overlay_threshold``, ``unit``, ``outline_colors``,
        ``scale_bar_mm`` (0 for none), ``letters``, ``radiological``, ``title``.

    colorbar : bool, default True
        Draw the overlay's colour bar.

    Returns
    -------
    FigureResult; ``info["panel"]`` has the plane, position, field of view (mm), colour-bar
    range and label, scale-bar length and display pixel size.

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))          # 8 mm cubes centred on 0
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR")
    >>> hot = np.zeros((8, 8, 8), np.float32); hot[3:5, 3:5, 3] = 1000.0; hot[3:5, 3:5, 4] = 3000.0
    >>> pet = Volume(hot, grid, "PT", "Bq/mL")
    >>> panel = fused_slice(anatomy, pet, plane="axial", position_mm=0.0).info["panel"]
    >>> panel["colorbar_range"], panel["extent_mm"], panel["overlay_threshold"]   # threshold 5 % up the range
    ((1000.0, 3000.0), (-4.5, 3.5, -4.5, 3.5), 1100.0)
    """
    with figure_style():
        base = anatomy if anatomy is not None else overlay
        if base is None:
            raise InputError("nothing to draw: give an anatomy and/or an overlay volume.")
        p = PLANES.get(plane)
        if p is None:
            raise InputError(f"plane={plane!r} is unknown; use one of {list(PLANES)}.")
        box = world_box(base)
        fov = kwargs.get("fov_mm")
        w = (fov[0][1] - fov[0][0]) if fov else box[1][p["h"]] - box[0][p["h"]]
        h = (fov[1][1] - fov[1][0]) if fov else box[1][p["v"]] - box[0][p["v"]]
        extra = 0.9 if (overlay is not None and colorbar) else 0.0
        fig = _new_figure((width_in, max((width_in - extra) * h / w, 1.0) + 0.35))
        ax = fig.add_axes([0.02, 0.03, 0.72 if extra else 0.96, 0.9])
        info = draw_fused(ax, anatomy, overlay, labels, plane=plane, position_mm=position_mm, **kwargs)
        mappable = info.pop("_mappable")
        info.pop("_marker", None)
        info.pop("_letter_avoid", None)
        axes = {"image": ax}
        if mappable is not None and colorbar:
            cax = fig.add_axes([0.78, 0.1, 0.035, 0.75])
            cb = fig.colorbar(mappable, cax=cax)
            cb.set_label(info["colorbar_label"])
            cax.tick_params(labelsize=7)
            axes["colorbar"] = cax
        result = FigureResult(
            fig,
            axes,
            {"panel": info, **{k: v for k, v in info.items() if k != "warnings"}},
            _describe_inputs(
                anatomy=anatomy, overlay=overlay, labels=list([labels] if isinstance(labels, Volume) else labels or ())
            ),
            list(info["warnings"]),
        )
        return result


def montage(
    panels: Sequence[dict],
    *,
    ncols: int | None = None,
    shared_range=None,
    panel_width_in: float = 2.2,
    colorbar_label: str | None = None,
    suptitle: str | None = None,
) -> FigureResult:
    """Several fused slices in a grid, one colour range and one colour bar.

    Parameters
    ----------
    panels : list of dicts of :func:`draw_fused` arguments (``anatomy``, ``overlay``, ``labels``,
        ``plane``, ``position_mm``, ``title``, ...): slices of one study or one slice over timepoints.
    ncols : columns (default: all in one row up to 4).
    shared_range : (low, high) for every overlay (default: robust percentiles of the values shown on
        all panels).
    panel_width_in : width of one panel, inches.
    colorbar_label : label of the shared colour bar (default: the first overlay's unit).
    suptitle : title above the grid.

    Returns
    -------
    FigureResult; ``info["panels"]`` holds each panel's info, ``info["colorbar_range"]`` the shared range.

    Raises
    ------
    InputError
        No panels, or a first panel with neither anatomy nor overlay.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.ones((10, 20, 20), np.float32), np.eye(4), "PT", "Bq/mL")
    >>> r = montage([{"anatomy": None, "overlay": v, "position_mm": z} for z in (2.0, 5.0)], shared_range=(0, 2))
    >>> len(r.info["panels"])
    2
    """
    if not panels:
        raise InputError("a montage needs at least one panel.")
    with figure_style():
        n = len(panels)
        ncols = ncols or min(n, 4)
        nrows = int(np.ceil(n / ncols))
        first = panels[0]
        base = first.get("anatomy") if first.get("anatomy") is not None else first.get("overlay")
        if base is None:
            raise InputError("the first montage panel has neither an anatomy nor an overlay.")
        plane = first.get("plane", "axial")
        p = PLANES.get(plane, PLANES["axial"])
        box = world_box(base)
        fov = first.get("fov_mm")
        w = (fov[0][1] - fov[0][0]) if fov else box[1][p["h"]] - box[0][p["h"]]
        h = (fov[1][1] - fov[1][0]) if fov else box[1][p["v"]] - box[0][p["v"]]
        has_overlay = any(pn.get("overlay") is not None for pn in panels)
        cbar_w = 0.9 if has_overlay else 0.0
        panel_h = panel_width_in * h / w
        fig = _new_figure((panel_width_in * ncols + cbar_w, panel_h * nrows + 0.3 * nrows + (0.3 if suptitle else 0)))
        if shared_range is None and has_overlay:
            shown = []  # one robust range over the values of every panel (not the widest panel's extremes)
            for pn in panels:
                if pn.get("overlay") is not None:
                    base_pn = pn.get("anatomy") if pn.get("anatomy") is not None else pn["overlay"]
                    pl = pn.get("plane", "axial")
                    bx = world_box(base_pn)
                    pp = PLANES[pl]
                    fv = pn.get("fov_mm") or ((bx[0][pp["h"]], bx[1][pp["h"]]), (bx[0][pp["v"]], bx[1][pp["v"]]))
                    pos = pn.get("position_mm", _auto_position(base_pn, pl))
                    grid = display_grid(pl, pos, fv[0], fv[1], pn.get("pixel_mm") or float(np.min(base_pn.spacing)))
                    shown.append(_shown_values(sample_plane(pn["overlay"], grid), pn.get("overlay_threshold")))
            shared_range = robust_range(np.concatenate(shown))
        infos, axes, warn, mappable, label = [], {}, [], None, colorbar_label
        left_frac = (panel_width_in * ncols) / (panel_width_in * ncols + cbar_w)
        for i, pn in enumerate(panels):
            r, c = divmod(i, ncols)
            ax = fig.add_axes(
                [
                    c / ncols * left_frac + 0.005,
                    1 - (r + 1) / nrows + 0.02,
                    left_frac / ncols - 0.01,
                    1 / nrows - 0.02 - (0.06 if suptitle else 0.05),
                ]
            )
            kw = {k: v for k, v in pn.items() if k not in ("anatomy", "overlay", "labels")}
            if pn.get("overlay") is not None:
                kw.setdefault("overlay_range", shared_range)
            info = draw_fused(ax, pn.get("anatomy"), pn.get("overlay"), pn.get("labels", ()), **kw)
            m = info.pop("_mappable")
            if m is not None:
                mappable = m
                label = label or info["colorbar_label"]
            warn.extend(info["warnings"])
            infos.append(info)
            axes[f"panel_{i}"] = ax
        # one corner for the orientation marker in every panel: the one most panels found emptiest
        corners = [i_.get("letter_corner") for i_ in infos if i_.get("letter_corner")]
        if len(set(corners)) > 1:
            corner = max(dict.fromkeys(corners), key=corners.count)
            for i, info in enumerate(infos):
                if info.get("letter_corner") not in (None, corner):
                    for artist in info["_marker"]["artists"]:
                        artist.remove()
                    marker = _orientation_letters(
                        axes[f"panel_{i}"], info["plane"], info["radiological"], corner=corner
                    )
                    info["letter_corner"], info["letters_shown"] = marker["corner"], marker["letters"]
        for info in infos:
            info.pop("_marker", None)
            info.pop("_letter_avoid", None)
        if mappable is not None:
            cax = fig.add_axes([left_frac + 0.02 * (1 - left_frac), 0.12, 0.25 * (1 - left_frac), 0.7])
            cb = fig.colorbar(mappable, cax=cax)
            cb.set_label(label)
            axes["colorbar"] = cax
        if suptitle:
            fig.suptitle(suptitle, fontsize=9)
        inputs = {}
        for i, pn in enumerate(panels):
            for k, v in _describe_inputs(anatomy=pn.get("anatomy"), overlay=pn.get("overlay")).items():
                inputs[f"panel{i}_{k}"] = v
        return FigureResult(
            fig,
            axes,
            {"panels": infos, "colorbar_range": tuple(shared_range) if has_overlay else None},
            inputs,
            list(dict.fromkeys(warn)),
        )


def mip(
    volume: Volume,
    *,
    plane: str = "coronal",
    value_range=None,
    cmap: str | None = None,
    unit: str | None = None,
    pixel_mm: float | None = None,
    scale_bar_mm: float | None = None,
    title: str | None = None,
    width_in: float = 3.0,
    radiological: bool = False,
) -> FigureResult:
    """Maximum-intensity projection of a volume along the normal of ``plane`` (world axes).

    The volume is first resampled onto an axis-aligned world grid (linear), so
    oblique and LPS-ordered images project along true world directions.

    Parameters
    ----------
    volume : Volume
        The image (its unit labels the colour bar).
    plane : {"coronal", "axial", "sagittal"}, default "coronal"
        The projection is along this plane's normal.
    value_range : (float, float), optional
        Colour range (default: robust percentiles of the projection's non-zero values).
    cmap : str, optional
        Matplotlib colour map (default by modality).
    unit : str, optional
        Overrides the volume's unit in the label.
    pixel_mm : float, optional
        Resampling grid spacing, mm (default: the smallest voxel size).
    scale_bar_mm : float, optional
        Scale bar length, mm (default about a fifth of the width; 0 for none).
    title : str, optional
        Panel title.
    width_in : float, default 3.0
        Figure width, inches.
    radiological : bool, default False
        Show the patient's right on the image's left.

    Returns
    -------
    FigureResult
        ``info`` has the plane, extent (mm), pixel size, colour-bar range and label, scale bar.

    Raises
    ------
    InputError
        An unknown plane or a volume without unit.

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> grid = zyx_grid_affine((1.0, 1.0, 1.0), (-4, -4, -4))          # 8 mm cubes centred on 0
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), grid, "MR")
    >>> hot = np.zeros((8, 8, 8), np.float32); hot[3:5, 3:5, 3] = 1000.0; hot[3:5, 3:5, 4] = 3000.0
    >>> pet = Volume(hot, grid, "PT", "Bq/mL")
    >>> projection = mip(pet)
    >>> projection.info["plane"], projection.info["colorbar_range"], projection.info["extent_mm"]
    ('coronal', (1000.0, 3000.0), (-4.5, 3.5, -4.5, 3.5))
    """
    from matplotlib import colormaps

    _check_volume(volume, "volume")
    if plane not in PLANES:
        raise InputError(f"plane={plane!r} is unknown; use one of {list(PLANES)}.")
    with figure_style():
        warn: list = []
        label = _unit_label(volume, unit, warn)
        spacing = pixel_mm or float(np.min(volume.spacing))
        shape, affine = volume.axis_aligned_grid(spacing)
        data = (
            volume.replace(data=volume.numpy().astype(np.float32))
            .resample_to((shape, affine), order=1, fill=np.nan)
            .numpy()
        )
        # grid axes 0, 1, 2 run along z, y, x (see Volume.axis_aligned_grid)
        p = PLANES[plane]
        axis_of = {2: 0, 1: 1, 0: 2}
        with warnings.catch_warnings():  # rays that miss the image (outside its field of view) stay NaN
            warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
            proj = np.nanmax(data, axis=axis_of[p["normal"]]) if np.isfinite(data).any() else np.zeros(1)
        # remaining axes: the two of (z, y, x) left, in that order -> rows = larger world index axis
        remaining = [w for w in (2, 1, 0) if w != p["normal"]]  # world axes in array order
        img = proj
        if remaining[0] == p["h"]:  # rows run along the horizontal axis: transpose
            img = img.T
        # rows run along the vertical world axis, increasing with the index: flip so up is up
        img = img[::-1]
        lo_w = affine[:3, 3] - spacing / 2
        n_xyz = {0: shape[2], 1: shape[1], 2: shape[0]}
        extent = (
            lo_w[p["h"]],
            lo_w[p["h"]] + n_xyz[p["h"]] * spacing,
            lo_w[p["v"]],
            lo_w[p["v"]] + n_xyz[p["v"]] * spacing,
        )
        lo, hi = _range_of(img, value_range, nonzero=True)
        w, h = extent[1] - extent[0], extent[3] - extent[2]
        fig = _new_figure((width_in, max((width_in - 0.9) * h / w, 1.0) + 0.35))
        ax = fig.add_axes([0.02, 0.03, 0.72, 0.9])
        ax.set_facecolor("black")
        cm = colormaps[cmap or MODALITY_CMAP.get(volume.modality, "inferno")]
        m = ax.imshow(
            np.nan_to_num(img, nan=lo),
            cmap=cm,
            vmin=lo,
            vmax=hi,
            extent=extent,
            origin="upper",
            interpolation="nearest",
        )
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        if radiological and plane in ("axial", "coronal"):
            ax.set_xlim(extent[1], extent[0])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        bar = _nice_length(w) if scale_bar_mm is None else scale_bar_mm
        if bar:
            _scale_bar(ax, extent, float(bar), radiological=radiological and plane in ("axial", "coronal"))
        shown_img = img[:, ::-1] if radiological and plane in ("axial", "coronal") else img
        marker = _orientation_letters(
            ax,
            plane,
            radiological,
            image=np.clip((np.nan_to_num(shown_img, nan=lo) - lo) / (hi - lo), 0, 1),
            avoid=("lower left" if radiological and plane in ("axial", "coronal") else "lower right",) if bar else (),
        )
        cax = fig.add_axes([0.78, 0.1, 0.035, 0.75])
        cb = fig.colorbar(m, cax=cax)
        cb.set_label(label)
        ax.set_title(title or f"MIP ({plane})")
        info = {
            "plane": plane,
            "extent_mm": tuple(float(e) for e in extent),
            "colorbar_range": (lo, hi),
            "colorbar_label": label,
            "scale_bar_mm": float(bar or 0),
            "pixel_mm": spacing,
            "letter_corner": marker["corner"],
        }
        return FigureResult(fig, {"image": ax, "colorbar": cax}, info, _describe_inputs(volume=volume), warn)


def organ_bars(
    table,
    value: str,
    *,
    error: str | None = None,
    group: str | None = None,
    category: str = "organ",
    unit: str | None = None,
    title: str | None = None,
    log: bool = False,
    width_in: float = 4.5,
    height_in: float = 2.6,
) -> FigureResult:
    """Bar chart per organ (category), optionally grouped (e.g. by day), with error bars.

    Parameters
    ----------
    table : pandas.DataFrame
        With ``category``, ``value`` (and ``error``, ``group``) columns; one row per category and group
        (a second row of the same pair is ignored).
    value : str
        Column of the bar heights. A missing category in a group draws no bar (height 0).
    error : str, optional
        Column of the error-bar half-lengths (same unit as ``value``).
    group : str, optional
        Column whose values become side-by-side bars in a grey ramp, light to dark (e.g. "day", whose
        numbers the legend shows as "day 3").
    category : str, default "organ"
        Column naming the bars' positions along x, in order of first appearance (underscores shown as
        spaces).
    unit : str, optional
        The y-axis label (default the ``value`` column's name).
    title : str, optional
        Title above the axes.
    log : bool, default False
        Logarithmic y axis.
    width_in, height_in : float, default 4.5 and 2.6
        Figure size in inches.

    Returns
    -------
    FigureResult
        The figure (pyplot-free Agg), ``axes["bars"]`` and ``info``: ``categories``, ``groups``, ``value``,
        ``error``.

    Raises
    ------
    InputError
        For an empty table or a column it does not have.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"organ": ["liver", "spleen", "liver", "spleen"], "day": [1, 1, 7, 7],
    ...                       "cells": [4000.0, 2500.0, 3000.0, 3500.0], "sd": [300.0, 250.0, 280.0, 310.0]})
    >>> res = organ_bars(table, "cells", error="sd", group="day", unit="cells")
    >>> ax = res.axes["bars"]
    >>> [round(bar.get_height()) for bar in ax.patches], [round(float(bar.get_x() + bar.get_width() / 2), 1) for bar in ax.patches]
    ([4000, 2500, 3000, 3500], [-0.2, 0.8, 0.2, 1.2])
    >>> res.info["categories"], [t.get_text() for t in ax.get_legend().get_texts()], ax.get_ylabel()
    (['liver', 'spleen'], ['day 1', 'day 7'], 'cells')
    """
    if table is None or not len(table):
        raise InputError("the table for the bar chart is empty.")
    for col in [c for c in (value, error, group, category) if c]:
        if col not in table.columns:
            raise InputError(f"the table has no column {col!r}; columns are {list(table.columns)}.")
    from matplotlib import cm
    from matplotlib.colors import to_hex

    with figure_style():
        df = table.copy()
        cats = list(dict.fromkeys(df[category]))
        groups = list(dict.fromkeys(df[group])) if group else [None]
        fig = _new_figure((width_in, height_in), layout="constrained")  # rotated organ names never cut
        ax = fig.add_subplot()
        width = 0.8 / len(groups)
        x = np.arange(len(cats))
        # groups (days) in a grey ramp, light to dark: the Okabe-Ito colours belong to the sites (site_style),
        # so no day may look like a site of the time courses
        group_colors = [to_hex(cm.Greys(f)) for f in np.linspace(0.3, 0.75, len(groups))] if group else ["#7f7f7f"]
        for gi, g in enumerate(groups):
            sub = df if g is None else df[df[group] == g]
            vals = [
                float(sub.loc[sub[category] == c, value].iloc[0]) if (sub[category] == c).any() else np.nan
                for c in cats
            ]
            errs = (
                [
                    float(sub.loc[sub[category] == c, error].iloc[0]) if (sub[category] == c).any() else np.nan
                    for c in cats
                ]
                if error
                else None
            )
            lab = None if g is None else (f"day {g:g}" if group == "day" and isinstance(g, (int, float)) else str(g))
            ax.bar(
                x + (gi - (len(groups) - 1) / 2) * width,
                np.nan_to_num(vals),
                width * 0.92,
                yerr=None if errs is None else np.nan_to_num(errs),
                capsize=2,
                color=group_colors[gi],
                label=lab,
                error_kw={"elinewidth": 0.8, "capthick": 0.8},
            )
        ax.set_xticks(x)
        ax.set_xticklabels([str(c).replace("_", " ") for c in cats], rotation=35, ha="right")
        ax.set_ylabel(unit or value)
        if log:
            ax.set_yscale("log")
        if group:
            ax.legend(ncol=min(len(groups), 4), loc="upper right")
        if title:
            ax.set_title(title)
        return FigureResult(
            fig, {"bars": ax}, {"categories": cats, "groups": groups, "value": value, "error": error}, {}, []
        )


def _wrap_label(text: str, length_in: float, fontsize: float = 8.0) -> str:
    """Break an axis label into lines that fit ``length_in`` inches (DejaVu Sans: ~0.6 em per character)."""
    import textwrap

    per_line = max(int(length_in * 72 / (0.6 * fontsize)), 12)
    return textwrap.fill(str(text), per_line, break_on_hyphens=False) if len(str(text)) > per_line else str(text)


def time_course(
    table,
    value: str,
    *,
    site: str = "site",
    day: str = "day",
    error: str | None = None,
    model: str | None = None,
    limit: str | None = None,
    flags: dict | None = None,
    unit: str | None = None,
    title: str | None = None,
    log: bool = True,
    width_in: float = 4.5,
    height_in: float = 3.4,
) -> FigureResult:
    """Time courses per site: measured points (markers), a model column (dashed), the detection limit (dotted).

    Parameters
    ----------
    table : long DataFrame with ``site``, ``day`` and ``value`` columns (one readout).
    value : column of the readout drawn (markers).
    model : column of model values at the same days (e.g. ``cells_model``), drawn dashed.
    limit : column of the detection limit, drawn dotted.
    flags : {site: True} sites to mark "macrophage-held?" (e.g. ``LongitudinalResult.sites``).
    site, day : column names of the site and the day (default "site", "day").
    error : column of error bars (same unit as ``value``).
    unit : the y axis unit (default: the value column's name).
    title : panel title.
    log : logarithmic y axis (default True).
    width_in, height_in : figure size, inches.

    Returns
    -------
    FigureResult; ``info`` has the value, model and limit columns and each site's colour and marker.

    Raises
    ------
    InputError
        An empty table or a missing column.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"site": ["liver", "liver", "tumour", "tumour"], "day": [1, 3, 1, 3],
    ...                       "cells": [1e5, 2e5, 1e4, 5e4]})
    >>> time_course(table, "cells", unit="cells").info["site_styles"]["tumour"]
    {'color': '#E69F00', 'marker': 'o'}
    """
    if table is None or not len(table):
        raise InputError("the table for the time course is empty.")
    for col in [c for c in (value, site, day, error, model, limit) if c]:
        if col not in table.columns:
            raise InputError(f"the table has no column {col!r}; columns are {list(table.columns)}.")
    with figure_style():
        from matplotlib.lines import Line2D

        # constrained layout sizes the margins to the labels, so a long unit or 10^6 ticks are never cut
        fig = _new_figure((width_in, height_in), layout="constrained")
        ax = fig.add_subplot()
        styles = {}
        for name, sub in table.groupby(site, sort=False):
            sub = sub.sort_values(day)
            y = sub[value].to_numpy(float)
            if not np.isfinite(y).any():
                continue
            style = site_style(name)
            styles[str(name)] = style
            color = style["color"]
            flagged = bool(flags and flags.get(name))
            lab = str(name).replace("_", " ") + (" (macrophage-held?)" if flagged else "")
            yerr = sub[error].to_numpy(float) if error else None
            ax.errorbar(
                sub[day],
                y,
                yerr=yerr,
                marker=style["marker"],
                color=color,
                linestyle="-",
                label=lab,
                capsize=2,
                markersize=4,
                markerfacecolor="white" if flagged else color,
            )
            if model:
                ax.plot(sub[day], sub[model], linestyle="--", color=color, linewidth=0.9)
            if limit and np.isfinite(sub[limit].to_numpy(float)).any():
                ax.plot(sub[day], sub[limit], linestyle=":", color=color, linewidth=0.8)
        ax.set_xlabel("days after injection")
        ax.set_ylabel(_wrap_label(unit or value, height_in * 0.55))
        if log:
            ax.set_yscale("log")
        handles, labels = ax.get_legend_handles_labels()
        if model:
            handles.append(Line2D([], [], color="0.3", linestyle="--", linewidth=0.9))
            labels.append("model")
        if limit:
            handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=0.8))
            labels.append("detection limit")
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=6.5)
        if title:
            ax.set_title(title)
        return FigureResult(
            fig, {"plot": ax}, {"value": value, "model": model, "limit": limit, "site_styles": styles}, {}, []
        )


# --------------------------------------------------------------------------- saving
_FORMATS = ("png", "svg", "pdf")


def render_png(result, dpi: int = 100) -> np.ndarray:
    """The figure as an RGBA uint8 array (what a PNG at ``dpi`` holds), for tests and thumbnails.

    Parameters
    ----------
    result : FigureResult or matplotlib Figure
        The figure.
    dpi : int, default 100
        Dots per inch.

    Returns
    -------
    (height, width, 4) ndarray of uint8

    Examples
    --------
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), zyx_grid_affine((1.0, 1.0, 1.0)), "MR")
    >>> pixels = render_png(fused_slice(anatomy, width_in=2.0), dpi=50)
    >>> pixels.shape[1], pixels.shape[2], pixels.dtype                    # 2 inches at 50 dpi, RGBA
    (100, 4, dtype('uint8'))
    """
    fig = result.figure if isinstance(result, FigureResult) else result
    fig.set_dpi(dpi)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def save_figure(
    result,
    path,
    *,
    dpi: int = 300,
    formats: Sequence[str] | None = None,
    overwrite: bool = False,
    provenance: dict | None = None,
):
    """Write a figure as PNG (at ``dpi``) and/or SVG/PDF, each with a ``.provenance.json`` sidecar.

    Parameters
    ----------
    result : FigureResult (or a matplotlib Figure).
    path : output file; its suffix picks the format, or give ``formats`` and a stem
        (``fig`` -> ``fig.png``, ``fig.svg``).
    dpi : dots per inch of the PNG (and of raster parts in vector files).
    overwrite : replace existing files (refused otherwise).
    provenance : extra fields for the sidecar (step, parameters); the figure's inputs are added.

    formats : sequence of "png", "svg", "pdf", optional
        Write these formats from the stem of ``path``.

    Returns
    -------
    list of written paths (figures only; each has ``<path>.provenance.json`` beside it).

    Raises
    ------
    InputError
        A dpi outside 10-2400, an unknown format or file ending; OutputExistsError when a file
        exists and not ``overwrite``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> anatomy = Volume(np.full((8, 8, 8), 100.0, np.float32), zyx_grid_affine((1.0, 1.0, 1.0)), "MR")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     written = save_figure(fused_slice(anatomy), Path(tmp) / "fig", formats=["png", "svg"], dpi=50)
    ...     [p.name for p in written], sorted(p.name for p in Path(tmp).iterdir())
    (['fig.png', 'fig.svg'], ['fig.png', 'fig.png.provenance.json', 'fig.svg', 'fig.svg.provenance.json'])
    """
    from .outputs import atomic_output, check_output, write_sidecar
    from .provenance import record

    if not (isinstance(dpi, (int, np.integer)) or float(dpi).is_integer()) or not 10 <= int(dpi) <= 2400:
        raise InputError(f"dpi={dpi} must be a whole number between 10 and 2400.")
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if formats is None:
        if suffix not in _FORMATS:
            raise InputError(f"{path.name}: the file name must end in .png, .svg or .pdf (or pass formats=...).")
        targets = [path]
    else:
        bad = [f for f in formats if f.lower() not in _FORMATS]
        if bad:
            raise InputError(f"unknown figure format(s) {bad}; use png, svg or pdf.")
        stem = path.with_suffix("") if suffix in _FORMATS else path
        targets = [stem.with_name(stem.name + "." + f.lower()) for f in formats]
    for t in targets:
        check_output(t, overwrite)
    fig = result.figure if isinstance(result, FigureResult) else result
    inputs = result.inputs if isinstance(result, FigureResult) else {}
    warn = result.warnings if isinstance(result, FigureResult) else []
    info = _json_info(result.info) if isinstance(result, FigureResult) else {}
    written = []
    extra = dict(provenance or {})
    step = extra.pop("step", "figure")
    parameters = {"dpi": int(dpi), **extra.pop("parameters", {}), "figure": info}
    # one record for all formats (collecting software versions is not free)
    base = record(step, parameters=parameters, warnings=list(warn) + list(extra.pop("warnings", [])), **extra)
    base["inputs"] = {**inputs, **base.get("inputs", {})}
    with figure_style():
        for target in targets:
            fmt = target.suffix.lower().lstrip(".")
            # no dates or software stamps in the files: the same figure is byte-identical
            metadata = {
                "png": {"Software": None},
                "svg": {"Date": None, "Creator": None},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
            }[fmt]
            with atomic_output(target, overwrite) as tmp:
                fig.savefig(tmp, format=fmt, dpi=int(dpi), metadata=metadata, facecolor="white")
            prov = dict(base, parameters={**base["parameters"], "format": fmt})
            write_sidecar(target, prov)
            written.append(target)
    return written


def _json_info(info):
    """The figure info without matplotlib objects (JSON-ready)."""
    if isinstance(info, dict):
        return {k: _json_info(v) for k, v in info.items() if not k.startswith("_")}
    if isinstance(info, (list, tuple)):
        return [_json_info(v) for v in info]
    if isinstance(info, (np.generic,)):
        return info.item()
    if isinstance(info, (str, int, float, bool)) or info is None:
        return info
    return str(info)
