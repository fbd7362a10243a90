"""The one data model: a :class:`Volume` is an array plus where it sits.

Conventions, stated once for the whole package
----------------------------------------------
World coordinates
    Millimetres in the scanner's RAS+ frame (x to the subject's Right,
    y Anterior, z Superior), as NIfTI. DICOM's LPS is converted on reading
    (x and y negated).
Array axes
    ``data`` has three spatial axes, optionally preceded by one non-spatial
    axis (time frames or echoes, named in ``metadata["leading_axis"]``).
    ``affine`` maps the index of the *last three* axes ``(a0, a1, a2, 1)`` to
    world ``(x, y, z, 1)`` in mm. Readers put the slice (slowest) axis first:
    DICOM gives ``(slice, row, column)`` and NIfTI gives nibabel's ``(i, j, k)``
    reversed, i.e. ``(k, j, i)``. Nothing else depends on this order: every
    computation goes through the affine.
Canonical orientation
    :meth:`Volume.canonical` transposes and flips (no interpolation) an
    axis-aligned volume so that axes 0, 1, 2 run to Superior, Anterior,
    Right with positive spacing. That is what napari displays.
napari world
    napari's world axes are ``(z, y, x) = (S, A, R)`` in mm, so the default
    2D view is axial with the slider on S. :func:`napari_to_ras` and
    :func:`ras_to_napari` convert points.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .affines import lps_to_ras_matrix, napari_to_ras, ras_to_napari  # noqa: F401  (public here too)
from .errors import InputError

#: How far (in voxels) drawing a volume axis-aligned may move a voxel before it must be resampled.
_DISPLAY_TOLERANCE_VOXELS = 0.1

#: An oblique volume's display grid may hold at most this many times its own voxels (or 2^22).
_DISPLAY_GROWTH_LIMIT = 256

#: Modalities, as DICOM Modality codes where one exists.
MODALITIES = ("MR", "PT", "NM", "CT", "F19", "MPI", "OPT", "SEG", "OT")


def _is_dask(array) -> bool:
    return type(array).__module__.startswith("dask")


@dataclass
class Volume:
    """An image or label volume in world millimetres (RAS+).

    Parameters
    ----------
    data : array (NumPy or dask), 3D or 4D
        Values. The last three axes are spatial (see module docstring).
    affine : (4, 4) array
        Array index of the last three axes to world RAS millimetres.
    modality : str
        "MR", "PT", "NM" (SPECT), "CT", "F19", "MPI", "OPT", "SEG" or "OT".
    unit : str
        Unit of the values: "a.u.", "Bq/mL", "SUVbw", "mM", "label", ...
    metadata : dict
        Acquisition, timing, dose, patient weight/height/sex, echo time, the
        source path, ... Free-form but keys documented by the readers.
    name : str
        Human-readable name, used for napari layer names and table columns.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((4, 5, 6), np.float32), np.diag([2.0, 1.0, 0.5, 1.0]))
    >>> v.spacing
    array([2. , 1. , 0.5])
    >>> v.index_to_world([[1, 2, 3]])
    array([[2. , 2. , 1.5]])
    """

    data: Any
    affine: np.ndarray
    modality: str = "OT"
    unit: str = "a.u."
    metadata: dict = field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        if not hasattr(self.data, "shape") or not hasattr(self.data, "dtype"):
            self.data = np.asarray(self.data)
        if self.data.ndim not in (3, 4):
            raise InputError(
                f"{self.message_prefix()}has {self.data.ndim} dimension(s) where a 3D volume "
                "(or 3D plus time/echo) is needed; give a volume, not a single slice or a stack of volumes."
            )
        if min(self.data.shape) < 1:
            raise InputError(f"{self.message_prefix()}is empty (shape {tuple(self.data.shape)}).")
        affine = np.asarray(self.affine, dtype=float)
        if affine.shape != (4, 4):
            raise InputError(f"{self.message_prefix()}affine must be 4x4, got shape {affine.shape}.")
        if not np.all(np.isfinite(affine)):
            raise InputError(f"{self.message_prefix()}affine has non-finite values; the file's geometry is broken.")
        if not np.allclose(affine[3], [0, 0, 0, 1]):
            raise InputError(f"{self.message_prefix()}affine's last row must be [0, 0, 0, 1].")
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        if np.any(spacing <= 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12 * max(spacing.prod(), 1e-300):
            raise InputError(
                f"{self.message_prefix()}has a zero or degenerate voxel size {np.round(spacing, 6).tolist()} mm; "
                "fix the voxel spacing in the file header."
            )
        self.affine = affine
        self.metadata = dict(self.metadata or {})

    def message_prefix(self) -> str:
        """How error messages name this volume: ``"Volume 'T2w' "`` (or ``"The volume "`` without a name).

        Examples
        --------
        >>> Volume(np.zeros((2, 2, 2)), np.eye(4), name="T2w").message_prefix() + "is empty."
        "Volume 'T2w' is empty."
        """
        return f"Volume {self.name!r} " if self.name else "The volume "

    #: Old private name of :meth:`message_prefix`.
    _label = message_prefix

    # ----------------------------------------------------------- geometry
    @property
    def shape(self) -> tuple:
        """Shape of ``data`` (all axes)."""
        return tuple(self.data.shape)

    @property
    def spatial_shape(self) -> tuple:
        """Shape of the last three (spatial) axes."""
        return tuple(self.data.shape[-3:])

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along array axes 0, 1, 2."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm^3 (|det| of the affine's 3x3 part)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def index_to_world(self, index) -> np.ndarray:
        """Array indices (N, 3), continuous, to world RAS mm (N, 3).

        Parameters
        ----------
        index : array_like, shape (3,) or (N, 3)
            Indices of the last three axes (fractions allowed: 0 is the first voxel's centre).

        Returns
        -------
        ndarray, shape (N, 3)
            RAS world points, mm.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.index_to_world([[1, 2, 3]])
        array([[2. , 2. , 1.5]])
        """
        idx = np.atleast_2d(np.asarray(index, dtype=float))
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points) -> np.ndarray:
        """World RAS mm (N, 3) to continuous array indices (N, 3).

        Parameters
        ----------
        points : array_like, shape (3,) or (N, 3)
            RAS world points, mm.

        Returns
        -------
        ndarray, shape (N, 3)
            Continuous indices of the last three axes (round them to pick a voxel).

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.world_to_index([2.0, 2.0, 1.5])
        array([[1., 2., 3.]])
        """
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        inv = np.linalg.inv(self.affine)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def corners_world(self) -> np.ndarray:
        """World positions (8, 3) of the centres of the corner voxels.

        Returns
        -------
        ndarray, shape (8, 3)
            RAS mm.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.corners_world()[[0, -1]]
        array([[0. , 0. , 0. ],
               [2. , 2. , 1.5]])
        """
        n = np.array(self.spatial_shape) - 1
        corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
        return self.index_to_world(corners)

    def bounds_world(self) -> np.ndarray:
        """(2, 3) world box [min, max] of the voxel centres, RAS mm.

        Returns
        -------
        ndarray, shape (2, 3)
            Row 0 the smallest x, y, z of the voxel centres, row 1 the largest (not the voxel edges).

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.bounds_world().tolist()
        [[0.0, 0.0, 0.0], [2.0, 2.0, 1.5]]
        """
        c = self.corners_world()
        return np.stack([c.min(0), c.max(0)])

    def center_world(self) -> np.ndarray:
        """World position of the centre of the field of view.

        Returns
        -------
        ndarray, shape (3,)
            RAS mm of the middle of the voxel-centre box.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.center_world()
        array([1.  , 1.  , 0.75])
        """
        return self.index_to_world((np.array(self.spatial_shape) - 1) / 2.0)[0]

    def orientation(self) -> str:
        """Orientation code of the array axes, e.g. "SAR" or "LPS" (nibabel's aff2axcodes).

        Returns
        -------
        str
            For each array axis (0, 1, 2), the world direction it increases towards (nearest axis).

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.orientation(), v.canonical().orientation()
        ('RAS', 'SAR')
        """
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    def is_axis_aligned(self, tol_degrees: float = 0.01) -> bool:
        """True when each array axis runs along one world axis.

        Parameters
        ----------
        tol_degrees : float, default 0.01
            Largest angle between an array axis and its nearest world axis, degrees.

        Returns
        -------
        bool

        Examples
        --------
        >>> from napari_immunotrack.simulate.scenes import rigid_matrix
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> tilted = v.replace(affine=rigid_matrix((0, 0, 10)) @ v.affine)    # turned 10 degrees about z
        >>> v.is_axis_aligned(), tilted.is_axis_aligned(), tilted.is_axis_aligned(tol_degrees=15)
        (True, False, True)
        """
        cosines = np.abs(self.affine[:3, :3] / self.spacing)
        return bool(np.all(cosines.max(axis=0) >= np.cos(np.deg2rad(tol_degrees))))

    def axis_aligned_error_mm(self) -> float:
        """Largest shift (mm) of a voxel centre if the affine's off-axis terms were dropped.

        How wrong an axis-aligned drawing (napari ``scale``/``translate``) of
        this volume would be: 0 for an exactly axis-aligned volume.

        Returns
        -------
        float
            mm.

        Examples
        --------
        >>> from napari_immunotrack.simulate.scenes import rigid_matrix
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> tilted = v.replace(affine=rigid_matrix((0, 0, 10)) @ v.affine)
        >>> v.axis_aligned_error_mm(), round(tilted.axis_aligned_error_mm(), 3)
        (0.0, 0.347)
        """
        rot = self.affine[:3, :3]
        rows = np.argmax(np.abs(rot), axis=0)
        dominant = np.zeros_like(rot)
        dominant[rows, [0, 1, 2]] = rot[rows, [0, 1, 2]]
        n = np.array(self.spatial_shape) - 1
        # |linear map| is convex: its maximum over the box is at a corner
        corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
        return float(np.abs(corners @ (rot - dominant).T).max())

    def same_grid(self, other: Volume, atol: float = 1e-4) -> bool:
        """True when ``other`` has the same spatial shape and affine.

        Parameters
        ----------
        other : Volume
            The volume to compare with (its values and frames do not matter).
        atol : float, default 1e-4
            Tolerance on every affine element (mm, or mm per voxel).

        Returns
        -------
        bool

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.same_grid(v.replace(data=v.data * 0)), v.same_grid(v.canonical())
        (True, False)
        """
        return self.spatial_shape == other.spatial_shape and np.allclose(self.affine, other.affine, atol=atol)

    # ------------------------------------------------------- derivations
    def replace(self, **changes) -> Volume:
        """A copy with some fields changed (metadata copied, data shared).

        Parameters
        ----------
        **changes
            New values of fields: ``data``, ``affine``, ``modality``, ``unit``, ``metadata``, ``name``.

        Returns
        -------
        Volume
            The new volume (checked as on construction); unchanged fields are shared, except the
            metadata dict, which is copied.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> copy = v.replace(name="copy", unit="Bq/mL")
        >>> copy.name, copy.unit, copy.data is v.data, copy.metadata is v.metadata
        ('copy', 'Bq/mL', True, False)
        """
        changes.setdefault("metadata", dict(self.metadata))
        return dataclasses.replace(self, **changes)

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (computes a dask array).

        Returns
        -------
        ndarray
            The data itself for a NumPy volume (no copy), the computed array for a dask one.

        Examples
        --------
        >>> import dask.array as da
        >>> lazy = Volume(da.zeros((2, 3, 4), chunks=1), np.eye(4))
        >>> type(lazy.data).__name__, type(lazy.numpy()).__name__
        ('Array', 'ndarray')
        """
        return np.asarray(self.data.compute() if _is_dask(self.data) else self.data)

    def canonical(self) -> Volume:
        """The same voxels, transposed/flipped so axes run S, A, R with positive spacing.

        Only for axis-aligned volumes (no interpolation); see :meth:`for_display`
        for oblique ones.

        Returns
        -------
        Volume
            Array axes (after any leading frame axis) along S, A, R with positive spacing; the same
            voxels at the same world positions (a dask array stays lazy).

        Raises
        ------
        InputError
            An oblique volume (more than 0.5 degree off the world axes).

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> c = v.canonical()
        >>> c.spatial_shape, c.orientation(), c.spacing.tolist(), c.numpy()[0, 0].tolist()
        ((4, 3, 2), 'SAR', [0.5, 1.0, 2.0], [0.0, 12.0])
        """
        if not self.is_axis_aligned(tol_degrees=0.5):
            raise InputError(f"{self.message_prefix()}is oblique; resample it with for_display() instead.")
        rot = self.affine[:3, :3]
        # world_axis[a] = which world axis (0=x,1=y,2=z) array axis a runs along
        world_axis = np.argmax(np.abs(rot), axis=0)
        sign = np.sign(rot[world_axis, [0, 1, 2]])
        # target array axis order: z (S), y (A), x (R)
        order = [int(np.where(world_axis == w)[0][0]) for w in (2, 1, 0)]
        data = self.data
        lead = data.ndim - 3
        shape = np.array(self.spatial_shape)
        new_affine = self.affine.copy()
        slices = [slice(None)] * data.ndim
        for a in range(3):
            if sign[a] < 0:
                slices[lead + a] = slice(None, None, -1)
                # index i in the flipped array is n-1-i in the original
                new_affine[:3, 3] = new_affine[:3, 3] + new_affine[:3, a] * (shape[a] - 1)
                new_affine[:3, a] = -new_affine[:3, a]
        data = data[tuple(slices)]
        perm = list(range(lead)) + [lead + o for o in order]
        data = data.transpose(perm)
        new_affine[:3, :3] = new_affine[:3, :3][:, order]
        # clean sub-tolerance rotation noise so napari gets a diagonal
        return self.replace(data=data, affine=new_affine)

    def axis_aligned_grid(self, spacing: Sequence[float] | None = None):
        """(shape, affine) of an axis-aligned S, A, R grid covering this volume's field of view.

        The grid covers the box of the voxels' edges (not only their centres).

        Parameters
        ----------
        spacing : float or 3 floats, optional
            Voxel size of the grid along world x, y, z (R, A, S), mm; one number for isotropic voxels.
            Default: the volume's smallest spacing, isotropic.

        Returns
        -------
        shape : (int, int, int)
            Along S, A, R.
        affine : (4, 4) ndarray
            Index -> RAS mm.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> shape, affine = v.axis_aligned_grid((1.0, 1.0, 2.0))      # x, y, z spacing
        >>> shape, affine[:3, 3].tolist()
        ((1, 3, 4), [-0.5, 0.0, 0.75])
        """
        corners = []
        n = np.array(self.spatial_shape)
        for i in (-0.5, n[0] - 0.5):
            for j in (-0.5, n[1] - 0.5):
                for k in (-0.5, n[2] - 0.5):
                    corners.append([i, j, k])
        world = self.index_to_world(np.array(corners))
        lo, hi = world.min(0), world.max(0)
        step = np.full(3, float(np.min(self.spacing))) if spacing is None else np.asarray(spacing, float)
        if step.size == 1:
            step = np.full(3, float(step))
        # grid axes 0,1,2 = z, y, x; step given as (x, y, z) spacing
        size_xyz = np.maximum(np.ceil((hi - lo) / step - 1e-6).astype(int), 1)
        affine = np.zeros((4, 4))  # not eye(4): its diagonal would add stray terms to the permuted axes
        affine[3, 3] = 1.0
        for axis, w in enumerate((2, 1, 0)):
            affine[w, axis] = step[w]
            affine[w, 3] = lo[w] + step[w] / 2
        return (int(size_xyz[2]), int(size_xyz[1]), int(size_xyz[0])), affine

    def resample_to(
        self,
        target,
        order: int = 1,
        transform: np.ndarray | None = None,
        fill: float = 0.0,
    ) -> Volume:
        """Resample onto another grid.

        Parameters
        ----------
        target : Volume or (shape, affine)
            The grid to sample on (spatial shape and 4x4 affine).
        order : int
            0 nearest neighbour (labels), 1 linear (images), 3 cubic.
        transform : (4, 4) array, optional
            World-to-world map from target world points to this volume's
            world points (a registration result: fixed world -> moving world).
            Identity when omitted.
        fill : float
            Value outside this volume's field of view, i.e. for target points
            more than half a voxel beyond its edge voxels' centres (index
            outside [-0.5, n - 0.5)). Inside, interpolation near the edge
            repeats the edge voxels.

        Returns
        -------
        Volume on the target grid, same modality, unit and metadata (plus ``resampled_from``: the
        source shape and affine). Integer and boolean data keep their type; floats at least float32.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> fine = v.resample_to(((2, 3, 8), np.diag([2.0, 1.0, 0.25, 1.0])))   # half the z spacing
        >>> fine.numpy()[0, 0].tolist()                                     # 0 beyond the last voxel's edge
        [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.0]
        >>> up = np.eye(4); up[2, 3] = 0.5                                   # target z -> source z + 0.5 mm
        >>> v.resample_to(v, transform=up).numpy()[0, 0].tolist()
        [1.0, 2.0, 3.0, 0.0]
        """
        from scipy import ndimage

        if isinstance(target, Volume):
            shape, t_affine = target.spatial_shape, target.affine
        else:
            shape, t_affine = tuple(int(s) for s in target[0]), np.asarray(target[1], float)
        world_map = np.eye(4) if transform is None else np.asarray(transform, float)
        # target index -> target world -> source world -> source index
        m = np.linalg.inv(self.affine) @ world_map @ t_affine
        src = self.numpy()
        is_bool = src.dtype == bool
        if is_bool:  # ndimage does not write bool outputs
            src = src.view(np.uint8)
        is_int = np.issubdtype(src.dtype, np.integer)
        if order == 0 or is_int:
            out_dtype = src.dtype
        else:
            out_dtype = np.result_type(src.dtype, np.float32)
        matrix, offset = m[:3, :3], m[:3, 3]
        # The field of view is the voxels' footprint, index [-0.5, n - 0.5) on each axis. Plain
        # mode="constant" would instead drop every point outside [0, n - 1], including edge
        # voxels whose index comes out as -1e-16 from float round-off (so resampling onto the
        # same grid lost its border). Nearest neighbour: "grid-constant" is exactly the footprint.
        # Higher orders: interpolate with the edge repeated, then fill outside the footprint.
        inside = None
        n_src = np.array(self.spatial_shape, float)
        t_corners = np.array(
            [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
        )
        s_corners = (m @ t_corners.T).T[:, :3]
        # both boxes are convex and the map affine: if the target's corners fall in the source's
        # footprint, every target point does, and the footprint mask is not needed
        all_inside = bool(np.all(s_corners >= -0.5) and np.all(s_corners < n_src - 0.5))
        if order != 0 and not all_inside:
            inside = ndimage.affine_transform(
                np.ones(self.spatial_shape, np.uint8),
                matrix,
                offset,
                output_shape=shape,
                order=0,
                mode="grid-constant",
                cval=0,
                output=np.uint8,
            ).astype(bool)

        def sample(frame):
            if order == 0:
                return ndimage.affine_transform(
                    frame,
                    matrix,
                    offset,
                    output_shape=shape,
                    order=0,
                    mode="grid-constant",
                    cval=fill,
                    output=out_dtype,
                )
            values = ndimage.affine_transform(
                frame, matrix, offset, output_shape=shape, order=order, mode="nearest", output=out_dtype
            )
            if inside is not None:
                with np.errstate(invalid="ignore"):  # a NaN fill in an integer output, as ndimage casts it
                    values[~inside] = np.array(fill).astype(values.dtype)
            return values

        out = np.stack([sample(f) for f in src]) if src.ndim == 4 else sample(src)
        if is_bool:
            out = out.astype(bool)
        meta = dict(self.metadata)
        meta["resampled_from"] = {"shape": list(self.spatial_shape), "affine": self.affine.tolist()}
        return self.replace(data=out, affine=np.array(t_affine, float), metadata=meta)

    def for_display(self, reference: Volume | None = None, order: int = 1) -> Volume:
        """An axis-aligned S, A, R volume for napari.

        Axis-aligned volumes are only transposed/flipped. Oblique ones are
        resampled onto ``reference``'s grid when it is axis-aligned, else onto
        an axis-aligned grid covering their own field of view at their finest
        spacing. Quantification must use the native volume, never this copy.

        "Axis-aligned" here means that drawing the volume with napari's
        ``scale``/``translate`` moves no voxel by more than 0.1 voxel
        (:meth:`axis_aligned_error_mm`); a slightly tilted volume that fails
        this is resampled, so :meth:`napari_geometry` always accepts the result.

        Parameters
        ----------
        reference : Volume, optional
            The grid an oblique volume is resampled onto (when it is axis-aligned).
        order : int, default 1
            Interpolation order for oblique volumes (0 for labels).

        Returns
        -------
        Volume
            Canonical; ``metadata["display_resampled"]`` is True when it was resampled.

        Raises
        ------
        InputError
            An oblique volume whose voxel sizes would need an absurdly large display grid.

        Examples
        --------
        >>> from napari_immunotrack.simulate.scenes import rigid_matrix
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> v.for_display().orientation(), v.for_display().metadata.get("display_resampled")
        ('SAR', None)
        >>> shown = v.replace(affine=rigid_matrix((0, 0, 10)) @ v.affine).for_display()
        >>> shown.spatial_shape, shown.metadata["display_resampled"]
        ((4, 8, 9), True)
        """
        if self.is_axis_aligned(tol_degrees=0.5) and self.axis_aligned_error_mm() <= _DISPLAY_TOLERANCE_VOXELS * float(
            np.min(self.spacing)
        ):
            return self.canonical()
        if reference is not None and reference.is_axis_aligned(tol_degrees=0.5):
            ref = reference.canonical()
            out = self.resample_to(ref, order=order)
        else:
            grid = self.axis_aligned_grid()
            n_display, n_native = float(np.prod(grid[0])), float(np.prod(self.spatial_shape))
            # a header with an absurd voxel size (a 1 km voxel beside 1 mm ones) would ask for a
            # display grid of billions of voxels: refuse it rather than freeze or run out of memory
            if n_display > max(_DISPLAY_GROWTH_LIMIT * n_native, 2.0**22):
                raise InputError(
                    f"{self.message_prefix()}cannot be shown: its voxel sizes {np.round(self.spacing, 4).tolist()} mm "
                    f"would need a display grid of {n_display:.3g} voxels; check the voxel sizes in the header."
                )
            out = self.resample_to(grid, order=order)
        out.metadata["display_resampled"] = True
        return out

    def napari_geometry(self) -> dict:
        """``scale`` and ``translate`` (napari world order S, A, R) of a canonical volume.

        Raises if the volume is not in canonical orientation: call
        :meth:`for_display` first. Off-axis terms so small that dropping them
        moves no voxel by more than 0.1 voxel (float noise, a tilt of
        hundredths of a degree) are accepted.

        Returns
        -------
        dict
            ``scale`` and ``translate`` lists (a leading 1.0 / 0.0 per frame axis), mm.

        Raises
        ------
        ValueError
            The volume is not canonical.

        Examples
        --------
        >>> v = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
        >>> geometry = v.canonical().napari_geometry()
        >>> [float(s) for s in geometry["scale"]], [float(t) for t in geometry["translate"]]
        ([0.5, 1.0, 2.0], [0.0, 0.0, 0.0])
        """
        rot = self.affine[:3, :3]
        expected = np.zeros((3, 3))
        expected[2, 0], expected[1, 1], expected[0, 2] = rot[2, 0], rot[1, 1], rot[0, 2]
        canonical_axes = np.all(np.argmax(np.abs(rot), axis=0) == [2, 1, 0]) and np.all(np.diag(expected[::-1]) > 0)
        small = self.axis_aligned_error_mm() <= _DISPLAY_TOLERANCE_VOXELS * float(np.min(self.spacing)) or np.allclose(
            rot, expected, atol=1e-6 * max(1.0, np.abs(rot).max())
        )
        if not (canonical_axes and small):
            raise ValueError("napari_geometry needs a canonical volume; call for_display() first")
        scale = [rot[2, 0], rot[1, 1], rot[0, 2]]
        translate = [self.affine[2, 3], self.affine[1, 3], self.affine[0, 3]]
        lead = self.data.ndim - 3
        return {"scale": [1.0] * lead + scale, "translate": [0.0] * lead + translate}


def as_labels(volume: Volume, name: str = "labels") -> Volume:
    """Check that a volume holds integer labels and return it as such.

    Float volumes whose values are all whole numbers are converted; other
    floats are refused (a probability map is not a label image).

    Parameters
    ----------
    volume : Volume
        The candidate label image (any dtype; boolean masks become 0/1).
    name : str, default "labels"
        How the volume is called in the error message.

    Returns
    -------
    Volume
        The same grid and metadata with integer data (``uint8`` for a boolean mask, ``int32`` for
        whole-number floats, integers unchanged) and ``unit="label"``.

    Raises
    ------
    InputError
        If a float value is not a whole number (or not finite), or a label is negative.

    Examples
    --------
    >>> mask = Volume(np.array([[[0.0, 2.0], [1.0, 0.0]]]), np.eye(4))
    >>> labels = as_labels(mask)
    >>> labels.data.dtype, labels.unit, labels.data.tolist()
    (dtype('int32'), 'label', [[[0, 2], [1, 0]]])
    >>> as_labels(mask.replace(data=mask.data * 0.5), name="seeds")
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: seeds has non-integer values (float64); give a label image with whole numbers (0 = background).
    """
    data = volume.numpy()
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.all(np.mod(data, 1) == 0):
            raise InputError(
                f"{name} has non-integer values ({data.dtype}); give a label image with whole numbers (0 = background)."
            )
        data = data.astype(np.int32)
    if data.size and data.min() < 0:
        raise InputError(f"{name} has negative labels; labels must be 0 (background) or positive integers.")
    return volume.replace(data=data, unit="label")
