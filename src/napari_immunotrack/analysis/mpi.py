"""MPI iron quantification with fiducials (docs/methods/mpi.md).

MPI signal is linear in iron mass. Fiducials of known iron in the field of
view calibrate it; an ROI's integrated signal then gives its iron, and the
iron per cell gives cells.

Steps
-----
1. Background per voxel: "auto" = the median of voxels away from the
   fiducials and ROIs (or a number); subtracted before integrating.
2. Fiducial signal: the background-subtracted image integrated over a
   sphere (``radius_mm``, 3 mm by default, large enough for a 1-2 mm PSF)
   around each fiducial's world position, with partial-voxel weights; or,
   when the fiducial table has a ``signal`` column, those values.
3. Calibration: least squares S = k m + b across fiducials, with R^2.
   Refused with fewer than two fiducials, with all fiducials of the same
   iron, or when the signal does not grow with iron. The background is
   subtracted per voxel, so b is a residual background per voxel times the
   fiducial sphere's size: an ROI of V voxels gets b V / V_sphere
   ("volume" intercept model); with a ``signal`` column (signals integrated
   elsewhere) b is subtracted as it is ("constant").
4. Per ROI: S_ROI = sum(w (I - background)), iron m = (S_ROI - b_ROI) / k,
   cells = m / q_cell. The MPI point spread (mm wide) spills signal out of a
   tight ROI: ``iron_ng_dilated`` repeats the readout with the ROI dilated
   by ``dilate_mm`` and ``dilation_change_percent`` says how sensitive the
   number is to the ROI. ``iron_ng_noise_sd`` is the noise of the ROI sum
   in ng; an ROI under 3.5 times it (``detection_limit_ng_roi``, per ROI) is
   "below detection limit" and gets an upper bound
   (``cell_count_upper_bound`` = (max(m, 0) + 2 SD) / q_cell) instead of a count;
   no count is ever negative.

Fiducial table columns: ``x_mm, y_mm, z_mm`` (world RAS mm, the MPI's
world), ``iron_ng``, optional ``radius_mm`` (per fiducial) and ``signal``.

Examples
--------
>>> import numpy as np, pandas as pd
>>> from napari_immunotrack.volume import Volume
>>> img = np.zeros((40, 40, 40), np.float32)
>>> img[5, 5, 5], img[5, 5, 30], img[20, 20, 20] = 1000.0, 5000.0, 250.0   # 10 a.u. per ng
>>> mpi = Volume(img, np.diag([0.5, 0.5, 0.5, 1.0]), "MPI")
>>> fid = pd.DataFrame({"x_mm": [2.5, 2.5], "y_mm": [2.5, 2.5], "z_mm": [2.5, 15.0], "iron_ng": [100.0, 500.0]})
>>> roi = np.zeros((40, 40, 40), np.uint8); roi[18:23, 18:23, 18:23] = 1
>>> df = mpi_iron(mpi, Volume(roi, mpi.affine), fid, iron_per_cell_pg=5.0, background=0.0)
>>> round(float(df.loc[0, "iron_ng"]), 3), round(float(df.loc[0, "cell_count"]))
(25.0, 5000)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import progress as _progress
from ..errors import ImmunotrackWarning, InputError
from ..params import FROM_MODEL, Param, ParamModel
from ..volume import Volume
from .roi import RoiMap, carry_rois

#: An ROI is detected when its iron exceeds this many noise SDs of its sum.
DETECTION_K = 3.5
#: Upper bound of an undetected ROI: max(measured, 0) + this many noise SDs (about 97.7 % one-sided).
UPPER_BOUND_K = 2.0


@dataclass
class MpiCalibration:
    """Linear calibration S = k m + b of integrated MPI signal against iron mass.

    Attributes
    ----------
    k_per_ng : float
        Slope (signal units x voxels per ng Fe).
    intercept : float
        b (signal units x voxels).
    r2 : float
    n : int
        Number of fiducials.
    background : float
        Per-voxel background subtracted before integrating.
    table : pandas.DataFrame
        Per fiducial: position, iron_ng, radius_mm, signal, iron_ng_fitted, residual_ng.
    warnings : list of str
    """

    k_per_ng: float
    intercept: float
    r2: float
    n: int
    background: float
    table: object
    method: str = "integrated sphere"
    warnings: list = field(default_factory=list)
    noise_sd: float = float("nan")
    background_method: str = "given"
    #: how the intercept applies to an ROI: "volume" (a residual per-voxel background, scaled by the
    #: integration volume; spheres integrated here) or "constant" (the fiducial table's own signals)
    intercept_model: str = "volume"
    #: intercept per voxel of integration (volume model): b / mean fiducial sphere size in voxels
    intercept_per_voxel: float = 0.0

    def intercept_for(self, voxels=None) -> float:
        """The intercept of an integration over ``voxels`` (weighted voxel count; docs/methods/mpi.md#intercept).

        Parameters
        ----------
        voxels : float, optional
            The integration volume in (weighted) voxels.

        Returns
        -------
        float
            ``intercept_per_voxel x voxels`` for the "volume" model with ``voxels`` given, else the
            fiducials' ``intercept`` (signal units x voxels).

        Examples
        --------
        >>> import pandas as pd
        >>> cal = MpiCalibration(10.0, 50.0, 1.0, 3, 0.0, pd.DataFrame(), intercept_per_voxel=0.5)
        >>> cal.intercept_for(), cal.intercept_for(40)
        (50.0, 20.0)
        """
        if self.intercept_model == "volume" and voxels is not None:
            return float(self.intercept_per_voxel * voxels)
        return float(self.intercept)

    def iron_ng(self, signal, voxels=None):
        """Iron (ng) of an integrated, background-subtracted signal over ``voxels`` (weighted count).

        ``m = (S - b(voxels)) / k`` (docs/methods/mpi.md#calibration).

        Parameters
        ----------
        signal : float or array_like
            Integrated signal (signal units x voxels).
        voxels : float, optional
            The integration volume in (weighted) voxels, for the intercept (:meth:`intercept_for`).

        Returns
        -------
        numpy.ndarray or float
            Iron in ng, the shape of ``signal``.

        Examples
        --------
        >>> import pandas as pd
        >>> cal = MpiCalibration(10.0, 50.0, 1.0, 3, 0.0, pd.DataFrame(), intercept_per_voxel=0.5)
        >>> float(cal.iron_ng(1020.0, voxels=40)), cal.iron_ng([1050.0]).tolist()
        (100.0, [100.0])
        """
        return (np.asarray(signal, float) - self.intercept_for(voxels)) / self.k_per_ng

    def as_dict(self) -> dict:
        """The calibration as a JSON-ready dictionary (for provenance).

        Parameters
        ----------
        None

        Returns
        -------
        dict
            ``k_per_ng``, ``intercept``, ``intercept_model``, ``intercept_per_voxel``, ``r2``, ``n``,
            ``background``, ``background_method``, ``noise_sd_per_voxel``, ``method`` and ``fiducials``
            (the table's rows).

        Examples
        --------
        >>> import pandas as pd
        >>> cal = MpiCalibration(10.0, 50.0, 1.0, 3, 0.0, pd.DataFrame({"iron_ng": [100.0]}))
        >>> d = cal.as_dict()
        >>> d["k_per_ng"], d["intercept_model"], d["fiducials"]
        (10.0, 'volume', [{'iron_ng': 100.0}])
        """
        return {
            "k_per_ng": self.k_per_ng,
            "intercept": self.intercept,
            "intercept_model": self.intercept_model,
            "intercept_per_voxel": self.intercept_per_voxel,
            "r2": self.r2,
            "n": self.n,
            "background": self.background,
            "background_method": self.background_method,
            "noise_sd_per_voxel": self.noise_sd,
            "method": self.method,
            "fiducials": self.table.to_dict(orient="records"),
        }


def _fiducial_table(fiducials):
    import pandas as pd

    if isinstance(fiducials, pd.DataFrame):
        df = fiducials.copy()
    elif isinstance(fiducials, (list, tuple)):
        rows = []
        for f in fiducials:
            f = dict(f)
            if "position_ras_mm" in f:
                x, y, z = f.pop("position_ras_mm")
                f.update(x_mm=x, y_mm=y, z_mm=z)
            rows.append(f)
        df = pd.DataFrame(rows)
    else:
        raise InputError("fiducials must be a table (x_mm, y_mm, z_mm, iron_ng[, radius_mm][, signal]).")
    df.columns = [str(c).strip().lower() for c in df.columns]
    need = ["iron_ng"] + ([] if "signal" in df.columns else ["x_mm", "y_mm", "z_mm"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(
            f"the fiducial table lacks column(s) {missing}; it needs x_mm, y_mm, z_mm, iron_ng "
            "(and optionally radius_mm, signal)."
        )
    for c in [c for c in ("x_mm", "y_mm", "z_mm", "iron_ng", "radius_mm", "signal") if c in df.columns]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
        if df[c].isna().any():
            bad = int(df[c].isna().idxmax()) + 1
            raise InputError(f"the fiducial table has a missing or non-numeric {c} in row {bad}.")
    if len(df) < 2:
        raise InputError(
            f"the fiducial table has {len(df)} fiducial(s); a calibration needs at least 2 of different iron mass."
        )
    if (df["iron_ng"] < 0).any():
        raise InputError("a fiducial has a negative iron mass; iron must be >= 0 ng.")
    if "radius_mm" in df.columns and (df["radius_mm"] <= 0).any():
        raise InputError("a fiducial has a radius <= 0 mm.")
    return df.reset_index(drop=True)


def sphere_weights(volume: Volume, centre_ras_mm, radius_mm: float, subsample: int = 8):
    """(flat indices, weights) of the voxels of ``volume`` inside a sphere, with partial-voxel weights.

    Each voxel near the sphere is split into ``subsample^3`` points; its weight is the fraction of them
    inside the sphere (works for anisotropic and oblique grids). Voxels outside the image are left out.

    Parameters
    ----------
    volume : Volume
        The image whose grid is used (its affine maps index to world RAS, mm).
    centre_ras_mm : sequence of 3 float
        Sphere centre in world RAS (mm).
    radius_mm : float
        Sphere radius (mm).
    subsample : int, default 8
        Points per axis in each voxel.

    Returns
    -------
    tuple of (numpy.ndarray, numpy.ndarray)
        int64 flat (C-order) indices into the spatial grid, and float64 weights in (0, 1]; the weights
        sum to the sphere's volume in voxels (the part inside the image).

    Examples
    --------
    >>> v = Volume(np.zeros((20, 20, 20)), np.eye(4))
    >>> idx, w = sphere_weights(v, [10, 10, 10], 3.0)
    >>> round(float(w.sum()))   # 4/3 pi 27 = 113.1 mm3
    113
    >>> idx, w = sphere_weights(v, [-0.5, -0.5, -0.5], 3.0)   # centred on the image's corner: an eighth
    >>> round(float(w.sum()), 1)
    14.1
    """
    centre = np.asarray(centre_ras_mm, float).reshape(3)
    inv = np.linalg.inv(volume.affine)
    c_idx = inv[:3, :3] @ centre + inv[:3, 3]
    half = radius_mm * np.linalg.norm(inv[:3, :3], axis=1) + 1.0
    shape = np.array(volume.spatial_shape)
    lo = np.maximum(np.floor(c_idx - half).astype(int), 0)
    hi = np.minimum(np.ceil(c_idx + half).astype(int), shape - 1)
    if np.any(hi < lo):
        return np.zeros(0, np.int64), np.zeros(0)
    axes = [np.arange(a, b + 1) for a, b in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    s = subsample
    offs = (np.arange(s) + 0.5) / s - 0.5
    sub = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), -1).reshape(-1, 3)
    rot = volume.affine[:3, :3]
    w = np.zeros(grid.shape[0])
    for start in range(0, grid.shape[0], 8192):
        pts = (grid[start : start + 8192, None, :] + sub[None] - c_idx) @ rot.T
        w[start : start + 8192] = (np.einsum("ijk,ijk->ij", pts, pts) <= radius_mm**2).mean(axis=1)
    keep = w > 0
    idx = np.ravel_multi_index(tuple(grid[keep].astype(int).T), tuple(shape))
    return idx.astype(np.int64), w[keep]


def _background(data: np.ndarray, background, exclude: np.ndarray):
    """(per-voxel background, noise SD, how)."""
    rest = data.reshape(-1)[~exclude.reshape(-1)]
    rest = rest[np.isfinite(rest)]
    if rest.size >= 100:
        med = float(np.median(rest))
        sd = float(1.4826 * np.median(np.abs(rest - med)))
    else:
        med, sd = float("nan"), float("nan")
    if isinstance(background, str):
        if background != "auto":
            raise InputError(f"background must be 'auto' or a number, not {background!r}.")
        if not np.isfinite(med):
            raise InputError(
                "too few voxels away from the fiducials and ROIs to estimate the background; "
                "give it as a number (--background)."
            )
        return med, sd, "median of voxels away from fiducials and ROIs"
    value = float(background)
    if not np.isfinite(value):
        raise InputError("the background must be a finite number.")
    return value, sd, "given"


def mpi_calibration(
    mpi: Volume, fiducials, *, radius_mm: float = 3.0, background="auto", exclude: np.ndarray | None = None
) -> MpiCalibration:
    """Fit S = k m + b across fiducials (see the module docstring and docs/methods/mpi.md#calibration).

    Each fiducial's signal S is the background-subtracted signal integrated over a sphere around it
    (partial-voxel weights, :func:`sphere_weights`), unless the table gives a ``signal`` column; k and b
    come from a least-squares line against the iron mass m. Two fiducials are warned about (R^2 = 1
    by construction), an R^2 under 0.95 too.

    Parameters
    ----------
    mpi : Volume
        3D MPI image.
    fiducials : DataFrame or list of dict
        x_mm, y_mm, z_mm (world RAS), iron_ng, optional radius_mm and signal.
    radius_mm : float, default 3.0
        Integration sphere radius (mm) when the table has no radius_mm.
    background : "auto" or float, default "auto"
        Per-voxel background to subtract: "auto" takes the median of the voxels outside the
        fiducials and ``exclude``; a number is used as is.
    exclude : bool array, optional
        Voxels (besides the fiducials) to leave out of the background estimate, on the image's grid.

    Returns
    -------
    MpiCalibration
        ``k_per_ng`` (signal units per ng), ``intercept`` (signal units), ``r2``, ``n``, the
        ``background`` and its ``noise_sd``, the fiducial ``table`` (with ``signal``,
        ``iron_ng_fitted`` and ``residual_ng``), the intercept model (docs/methods/mpi.md#intercept)
        and the warnings.

    Raises
    ------
    InputError
        A fiducial outside the field of view, fiducials with one iron mass only, a slope that is not
        positive, a non-3D image or a non-positive radius.

    Examples
    --------
    >>> import pandas as pd
    >>> img = np.zeros((30, 30, 30), np.float32)
    >>> img[5, 5, 5], img[5, 5, 15], img[5, 5, 25] = 1000.0, 2000.0, 4000.0    # 10 a.u. per ng
    >>> mpi = Volume(img, np.diag([0.5, 0.5, 0.5, 1.0]), "MPI")
    >>> fid = pd.DataFrame({"x_mm": [2.5] * 3, "y_mm": [2.5] * 3, "z_mm": [2.5, 7.5, 12.5],
    ...                     "iron_ng": [100.0, 200.0, 400.0]})
    >>> cal = mpi_calibration(mpi, fid, radius_mm=1.5, background=0.0)
    >>> round(cal.k_per_ng, 6), round(cal.intercept, 6) + 0.0, cal.r2, cal.n
    (10.0, 0.0, 1.0, 3)
    >>> cal.table["signal"].tolist()
    [1000.0, 2000.0, 4000.0]
    """
    if mpi.data.ndim != 3:
        raise InputError("the MPI image must be 3D.")
    if not radius_mm > 0:
        raise InputError(f"the fiducial radius must be positive (got {radius_mm} mm).")
    df = _fiducial_table(fiducials)
    warns = []
    data = mpi.numpy().astype(np.float64)
    flat = data.reshape(-1)
    excl = np.zeros(flat.size, bool) if exclude is None else exclude.reshape(-1).copy()
    spheres = []
    use_signal = "signal" in df.columns
    if not use_signal:
        for i, row in df.iterrows():
            r = float(row["radius_mm"]) if "radius_mm" in df.columns else radius_mm
            idx, w = sphere_weights(mpi, [row["x_mm"], row["y_mm"], row["z_mm"]], r)
            full = 4.0 / 3.0 * np.pi * r**3 / mpi.voxel_volume_mm3
            if idx.size == 0 or w.sum() < 1e-6:
                raise InputError(
                    f"fiducial {i + 1} at ({row['x_mm']:g}, {row['y_mm']:g}, {row['z_mm']:g}) mm lies "
                    "outside the MPI field of view; check its coordinates (world RAS mm)."
                )
            if w.sum() < 0.95 * full:
                msg = (
                    f"fiducial {i + 1}: {100 * (1 - w.sum() / full):.0f}% of its sphere lies outside the MPI "
                    "field of view; its signal is underestimated."
                )
                warns.append(msg)
                warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
            spheres.append((idx, w, r))
            excl[idx] = True
    bg, noise_sd, how = _background(data, background, excl)
    if use_signal:
        signal = df["signal"].to_numpy(float)
        method = "signal column of the fiducial table"
    else:
        signal = np.array([float(np.dot(w, flat[idx] - bg)) for idx, w, _ in spheres])
        method = "integrated sphere"
    m = df["iron_ng"].to_numpy(float)
    if np.ptp(m) <= 0:
        raise InputError("all fiducials have the same iron mass; a calibration needs at least two different masses.")
    k, b = np.polyfit(m, signal, 1)
    if not k > 0:
        raise InputError(
            f"the fiducial signal does not increase with iron (slope {k:.3g}); check the fiducial "
            "positions and iron masses."
        )
    fitted = k * m + b
    ss_res = float(np.sum((signal - fitted) ** 2))
    ss_tot = float(np.sum((signal - signal.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    if len(m) == 2:
        msg = "only two fiducials: the line passes through both, so R^2 = 1 says nothing about linearity."
        warns.append(msg)
        warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
    elif r2 < 0.95:
        msg = f"the fiducial calibration is poor (R^2 = {r2:.3f}); check the fiducials."
        warns.append(msg)
        warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
    table = df.copy()
    table["radius_mm"] = [s[2] for s in spheres] if spheres else np.nan
    table["signal"] = signal
    table["iron_ng_fitted"] = (signal - b) / k
    table["residual_ng"] = table["iron_ng_fitted"] - m
    # The background was subtracted voxel by voxel, so an intercept is what is left of it per voxel
    # (times the sphere's size): an ROI gets the intercept of its own size, not the spheres' one.
    if spheres:
        sphere_voxels = float(np.mean([float(w.sum()) for _, w, _ in spheres]))
        model, per_voxel = "volume", float(b) / sphere_voxels
    else:
        model, per_voxel = "constant", 0.0
    return MpiCalibration(
        k_per_ng=float(k),
        intercept=float(b),
        r2=float(r2),
        n=len(m),
        background=bg,
        table=table,
        method=method,
        warnings=warns,
        noise_sd=noise_sd,
        background_method=how,
        intercept_model=model,
        intercept_per_voxel=per_voxel,
    )


def _dilated(rmap: RoiMap, i: int, spacing: np.ndarray, dilate_mm: float):
    """(flat indices, weights) of ROI i dilated by ``dilate_mm`` (weights max(w, inside the dilation))."""
    from scipy import ndimage

    shape = rmap.shape
    idx, w = rmap.index[i], rmap.weight[i]
    coords = np.array(np.unravel_index(idx, shape))
    pad = np.ceil(dilate_mm / spacing).astype(int) + 1
    lo = np.maximum(coords.min(1) - pad, 0)
    hi = np.minimum(coords.max(1) + pad + 1, np.array(shape))
    box = tuple(int(b - a) for a, b in zip(lo, hi))
    dense = np.zeros(box, np.float32)
    local = tuple(c - a for c, a in zip(coords, lo))
    dense[local] = w
    core = dense >= 0.5
    if not core.any():
        core = dense >= dense.max()
    dist = ndimage.distance_transform_edt(~core, sampling=spacing)
    grown = np.maximum(dense, (dist <= dilate_mm).astype(np.float32))
    nz = np.nonzero(grown > 0)
    flat = np.ravel_multi_index(tuple(a + int(o) for a, o in zip(nz, lo)), shape)
    return flat.astype(np.int64), grown[nz].astype(np.float64)


#: The tunable parameters of :func:`mpi_iron`: the one place their defaults and limits are written
#: (``immunotrack mpi``, the batch step ``mpi`` and :mod:`napari_immunotrack.pipeline` take them from here).
MPI_PARAMETERS = ParamModel(
    "mpi",
    [
        Param(
            "iron_per_cell_pg",
            float,
            5.0,
            "iron per cell, measured in vitro",
            unit="pg Fe",
            minimum=0.0,
            exclusive_minimum=True,
            flag="--iron-per-cell",
            label="iron per cell (pg)",
        ),
        Param(
            "radius_mm",
            float,
            3.0,
            "fiducial integration radius (when the fiducial table has no radius_mm)",
            unit="mm",
            minimum=0.0,
            exclusive_minimum=True,
        ),
        Param(
            "dilate_mm",
            float,
            1.0,
            "dilation of the ROIs for the sensitivity column iron_ng_dilated (0 = off)",
            unit="mm",
            minimum=0.0,
        ),
        Param(
            "supersample",
            int,
            3,
            "subvoxels per axis for ROIs on rotated grids",
            minimum=1,
        ),
    ],
)


@MPI_PARAMETERS.bind
def mpi_iron(
    mpi: Volume,
    rois,
    fiducials,
    iron_per_cell_pg: float = FROM_MODEL,
    *,
    transform: np.ndarray | None = None,
    supersample: int = FROM_MODEL,
    radius_mm: float = FROM_MODEL,
    background="auto",
    dilate_mm: float = FROM_MODEL,
    calibration: MpiCalibration | None = None,
    progress=None,
):
    """Iron (ng) and cells per ROI from an MPI image calibrated with fiducials.

    ``iron_per_cell_pg``, ``supersample``, ``radius_mm`` and ``dilate_mm`` take their
    defaults from :data:`MPI_PARAMETERS` (shown in this signature) and are checked against it.

    Parameters
    ----------
    mpi : Volume
        3D MPI image.
    rois : Volume or RoiMap
        Labels on any grid (carried with partial-voxel weights).
    fiducials : DataFrame or list of dict
        See the module docstring (ignored when ``calibration`` is given).
    iron_per_cell_pg : float
        Iron per cell (pg Fe), measured in vitro.
    transform : (4, 4) array, optional
        World-to-world map from MPI world to the ROI image's world.
    supersample : int
        Subvoxels per axis for the partial-voxel weights of ROIs on another grid.
    radius_mm : float
        Fiducial integration radius (when the table has no radius_mm).
    background : "auto" or float
    dilate_mm : float
        Dilation of the sensitivity readout (``iron_ng_dilated``); 0 disables it.
    calibration : MpiCalibration, optional
        Reuse a calibration.
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        One row per label: label, voxels, volume_ml, signal (a.u., background subtracted), iron_ng
        (NaN below the detection limit), iron_ng_measured (always filled), iron_ng_noise_sd, status ("ok"
        or "below detection limit"), cell_count, iron_ng_upper_bound and cell_count_upper_bound (filled
        below the limit only), detection_limit_ng_roi, detection_limit_cells_roi
        (docs/methods/mpi.md#detection-limit), and with ``dilate_mm`` > 0 iron_ng_dilated,
        dilation_change_percent, cell_count_dilated. ``attrs``: "warnings", "calibration" (dict),
        "parameters".

    Examples
    --------
    Two fiducials (100 and 500 ng, 10 a.u. per ng), 25 ng in ROI 1 and nothing in ROI 2, noise SD 0.5:

    >>> import warnings
    >>> import pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(0, 0.5, (40, 40, 40)).astype(np.float32)
    >>> img[5, 5, 5] += 1000.0; img[5, 5, 30] += 5000.0; img[20, 20, 20] += 250.0
    >>> mpi = Volume(img, np.diag([0.5, 0.5, 0.5, 1.0]), "MPI")
    >>> fid = pd.DataFrame({"x_mm": [2.5, 2.5], "y_mm": [2.5, 2.5], "z_mm": [2.5, 15.0], "iron_ng": [100.0, 500.0]})
    >>> roi = np.zeros((40, 40, 40), np.uint8); roi[18:23, 18:23, 18:23] = 1; roi[30:35, 18:23, 18:23] = 2
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")      # two fiducials only; ROI 2 below the detection limit
    ...     df = mpi_iron(mpi, Volume(roi, mpi.affine), fid, iron_per_cell_pg=5.0, background=0.0)
    >>> df[["label", "iron_ng", "cell_count", "status", "iron_ng_upper_bound"]].round(2).values.tolist()
    [[1, 24.34, 4867.89, 'ok', nan], [2, nan, nan, 'below detection limit', 1.32]]
    """
    import pandas as pd

    if iron_per_cell_pg is None or not np.isfinite(iron_per_cell_pg) or iron_per_cell_pg <= 0:
        raise InputError(f"the iron per cell must be a positive number of pg (got {iron_per_cell_pg}).")
    if dilate_mm is None or dilate_mm < 0:
        raise InputError(f"the dilation must be >= 0 mm (got {dilate_mm}).")
    if mpi.data.ndim != 3:
        raise InputError("the MPI image must be 3D.")
    _progress.report(progress, 0.0, "carrying ROIs")
    rmap = carry_rois(
        rois,
        mpi,
        transform=transform,
        supersample=supersample,
        name="the MPI image",
        progress=_progress.scaled(progress, 0.0, 0.4),
    )
    warns = list(rmap.warnings)
    data = mpi.numpy().astype(np.float64)
    flat = data.reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise InputError("the MPI image has NaN or infinite values; fix the reconstruction.")
    spacing = mpi.spacing
    dilated = [(_dilated(rmap, i, spacing, dilate_mm) if dilate_mm > 0 else None) for i in range(len(rmap.labels))]
    exclude = np.zeros(flat.size, bool)
    for i in range(len(rmap.labels)):
        exclude[dilated[i][0] if dilated[i] is not None else rmap.index[i]] = True
    _progress.report(progress, 0.5, "calibrating on the fiducials")
    cal = calibration or mpi_calibration(mpi, fiducials, radius_mm=radius_mm, background=background, exclude=exclude)
    warns.extend(cal.warnings)
    bg = cal.background
    noise_sd = cal.noise_sd
    q_ng = iron_per_cell_pg / 1000.0
    rows = []
    for i, label in enumerate(rmap.labels):
        idx, w = rmap.index[i], rmap.weight[i].astype(np.float64)
        signal = float(np.dot(w, flat[idx] - bg))
        iron = float(cal.iron_ng(signal, float(w.sum())))
        sd_ng = float(noise_sd * np.sqrt(np.dot(w, w)) / cal.k_per_ng) if np.isfinite(noise_sd) else float("nan")
        limit_ng = DETECTION_K * sd_ng
        status = "ok"
        if np.isfinite(sd_ng) and iron < limit_ng:
            status = "below detection limit"
        ok = status == "ok"
        bound = max(iron, 0.0) + UPPER_BOUND_K * sd_ng
        row = {
            "label": int(label),
            "voxels": int(np.count_nonzero(w >= 0.5)),
            "volume_ml": float(w.sum() * mpi.voxel_volume_mm3 / 1000.0),
            "signal": signal,
            "iron_ng": iron if ok else float("nan"),
            "iron_ng_measured": iron,
            "iron_ng_noise_sd": sd_ng,
            "status": status,
            "cell_count": iron / q_ng if ok else float("nan"),
            # below the limit: an upper bound, never a negative count (docs/methods/mpi.md#detection-limit)
            "iron_ng_upper_bound": float("nan") if ok else bound,
            "cell_count_upper_bound": float("nan") if ok else bound / q_ng,
            "detection_limit_ng_roi": limit_ng,
            "detection_limit_cells_roi": limit_ng / q_ng,
        }
        if dilated[i] is not None:
            d_idx, d_w = dilated[i]
            iron_d = float(cal.iron_ng(float(np.dot(d_w, flat[d_idx] - bg)), float(d_w.sum())))
            row["iron_ng_dilated"] = iron_d if ok else float("nan")
            row["dilation_change_percent"] = 100.0 * (iron_d - iron) / iron if ok and iron > 0 else float("nan")
            row["cell_count_dilated"] = max(iron_d, 0.0) / q_ng if ok else float("nan")
            if ok and abs(row["dilation_change_percent"]) > 10:
                msg = (
                    f"ROI {label}: dilating it by {dilate_mm:g} mm changes the iron by "
                    f"{row['dilation_change_percent']:+.0f}%; the ROI cuts the point spread (spill-over)."
                )
                warns.append(msg)
                warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
        rows.append(row)
    df = pd.DataFrame(rows)
    below = df.loc[df["status"] != "ok", "label"].tolist()
    if below:
        msg = (
            f"ROI(s) {below}: iron below the detection limit ({DETECTION_K:g} x noise of the ROI sum); an upper "
            "bound is reported instead of a count (cell_count_upper_bound)."
        )
        warns.append(msg)
        warnings.warn(msg, ImmunotrackWarning, stacklevel=2)
    df.attrs["warnings"] = warns
    df.attrs["calibration"] = cal.as_dict()
    df.attrs["parameters"] = {
        "iron_per_cell_pg": iron_per_cell_pg,
        "radius_mm": radius_mm,
        "background": bg,
        "background_method": cal.background_method,
        "noise_sd_per_voxel": noise_sd,
        "dilate_mm": dilate_mm,
        "roi_mapping": rmap.method,
        "k_per_ng": cal.k_per_ng,
        "intercept": cal.intercept,
        "r2": cal.r2,
    }
    _progress.report(progress, 1.0, "done")
    return df
