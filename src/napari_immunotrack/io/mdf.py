"""MPI reconstructions in the Magnetic Particle Imaging Data Format (MDF, HDF5), read with h5py.

MDF (https://github.com/MagneticParticleImaging/MDF, specification section
"Reconstruction Results") keeps a reconstruction in the group
``/reconstruction``:

- ``data``: Q x P x S (frames x voxels x multispectral channels); P voxels
  of the grid ``size`` (3 counts), ordered by ``order`` (default "xyz": x
  fastest, then y, then z);
- ``fieldOfView`` (3, metres) and ``fieldOfViewCenter`` (3, metres, relative
  to the scanner centre): voxel ``i`` along an axis is centred at
  ``centre - fov/2 + (i + 1/2) fov/size``;
- ``isOverscanRegion`` (P, optional): voxels the field-free point never
  covered; kept in ``metadata["overscan_mask"]`` (array order) so analyses
  can leave them out.

MDF defines no patient frame, so the scanner's x, y, z are taken as world R,
A, S (recorded in ``metadata["orientation_nominal"]``); register the MPI to the
anatomical image. Units are those of the reconstruction ("a.u." unless the
file's ``/tracer`` or ``/_unit`` says otherwise). Frames become the leading
"time" axis; several channels become one volume per channel.
See docs/methods/scanner-formats.md#mdf.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume


def is_mdf(path) -> bool:
    """True when ``path`` is an HDF5 file with an MDF ``/reconstruction/data`` (or any MDF root group).

    Parameters
    ----------
    path : str or Path
        Any file (the 8-byte HDF5 signature is checked before h5py opens it).

    Returns
    -------
    bool
        True for a ``/reconstruction`` group, or a ``version`` with ``measurement`` or
        ``acquisition``; False for other HDF5 files, non-HDF5 files and unreadable paths.

    Examples
    --------
    >>> import tempfile, h5py
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     with h5py.File(Path(tmp) / "mpi.mdf", "w") as f:
    ...         _ = f.create_dataset("reconstruction/data", data=np.zeros((1, 8, 1)))
    ...     with h5py.File(Path(tmp) / "other.h5", "w") as f:
    ...         _ = f.create_dataset("images", data=np.zeros(3))
    ...     is_mdf(Path(tmp) / "mpi.mdf"), is_mdf(Path(tmp) / "other.h5"), is_mdf(Path(tmp) / "missing.h5")
    (True, False, False)
    """
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                return False
        import h5py

        with h5py.File(path, "r") as f:
            return "reconstruction" in f or ("version" in f and ("measurement" in f or "acquisition" in f))
    except (OSError, ImportError):
        return False


def _read(group, name, where):
    if name not in group:
        return None
    try:
        return group[name][()]
    except Exception as exc:  # h5py raises OSError/KeyError/TypeError on damaged datasets
        raise InputError(
            f"{where}: /reconstruction/{name} cannot be read ({' '.join(str(exc).split())[:80]}); "
            "the file is damaged: export it again."
        ) from None


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "ignore")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _text(value.ravel()[0])
    return str(value)


def read_mdf(path) -> list[Volume]:
    """The reconstructed image(s) of an MDF file as Volumes (modality "MPI").

    Parameters
    ----------
    path : str or Path
        ``.mdf`` / ``.h5`` file with a ``/reconstruction`` group.

    Returns
    -------
    list of Volume
        One (3D, or 4D over frames) per multispectral channel.

    Examples
    --------
    >>> import tempfile, os, numpy as np, h5py
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = os.path.join(tmp.name, "reco.mdf")
    >>> with h5py.File(path, "w") as f:
    ...     f["reconstruction/data"] = np.ones((1, 24, 1)); f["reconstruction/size"] = [4, 3, 2]
    ...     f["reconstruction/fieldOfView"] = [0.04, 0.03, 0.02]
    >>> v = read_mdf(path)[0]
    >>> v.spatial_shape, v.spacing.tolist(), v.modality
    ((2, 3, 4), [10.0, 10.0, 10.0], 'MPI')
    >>> tmp.cleanup()
    """
    p = Path(path)
    try:
        import h5py
    except ImportError:
        raise InputError(
            f"{p} is an MDF (HDF5) file and reading it needs h5py; install it (pip install h5py)."
        ) from None
    try:
        f = h5py.File(p, "r")
    except OSError:
        raise InputError(f"{p} is not a readable HDF5/MDF file (damaged or truncated); export it again.") from None
    with f:
        if "reconstruction" not in f or "data" not in f["reconstruction"]:
            raise InputError(
                f"{p} is an MDF file without /reconstruction/data (measurement or calibration data "
                "only); reconstruct it first (e.g. MPIReco.jl) and give the reconstruction file."
            )
        g = f["reconstruction"]
        data = _read(g, "data", p)
        size = _read(g, "size", p)
        fov = _read(g, "fieldOfView", p)
        centre = _read(g, "fieldOfViewCenter", p)
        order = _text(_read(g, "order", p)) if "order" in g else "xyz"
        overscan = _read(g, "isOverscanRegion", p)
        unit = None
        for key in ("_unit", "unit"):
            if key in g:
                unit = _text(_read(g, key, p))
        tracer = f["tracer"] if "tracer" in f else None
        tracer_name = _text(tracer["name"][()]) if tracer is not None and "name" in tracer else None
        uuid = _text(f["uuid"][()]) if "uuid" in f else None
    if size is None or fov is None:
        raise InputError(
            f"{p}: /reconstruction has no size or fieldOfView, so the image cannot be placed; "
            "export it again with its grid."
        )
    size = np.asarray(size).ravel()
    fov = np.asarray(fov, float).ravel()
    centre = np.zeros(3) if centre is None else np.asarray(centre, float).ravel()
    if size.size != 3 or fov.size != 3 or centre.size != 3:
        raise InputError(
            f"{p}: size, fieldOfView and fieldOfViewCenter must hold 3 values each "
            f"(got {size.size}, {fov.size}, {centre.size}); the file is damaged."
        )
    if not (np.all(np.isfinite(fov)) and np.all(np.isfinite(centre)) and np.all(fov > 0) and np.all(size >= 1)):
        raise InputError(f"{p}: fieldOfView {fov.tolist()} m / size {size.tolist()} are not a grid; fix the file.")
    if sorted(order.lower()) != ["x", "y", "z"]:
        raise InputError(f"{p}: /reconstruction/order is {order!r}; expected a permutation of 'xyz'.")
    size = size.astype(int)
    n_vox = int(np.prod(size))
    data = np.asarray(data)
    if data.ndim == 1:
        data = data[None, :, None]
    elif data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3 or data.shape[1] != n_vox:
        raise InputError(
            f"{p}: /reconstruction/data has shape {data.shape} but the grid {size.tolist()} holds "
            f"{n_vox} voxels (expected frames x voxels x channels); the file is damaged."
        )
    notes = {}
    if np.iscomplexobj(data):
        if np.abs(data.imag).max(initial=0) > 1e-6 * max(np.abs(data.real).max(initial=0), 1e-30):
            notes["complex_note"] = "complex reconstruction: magnitudes are shown"
            data = np.abs(data)
        else:
            data = data.real
    if data.dtype.kind not in "fiub":
        raise InputError(f"{p}: /reconstruction/data holds {data.dtype} values, not numbers.")
    data = data.astype(np.float32)
    # voxel order: the first letter of `order` varies fastest
    order = order.lower()
    axes_slow_to_fast = list(reversed(order))  # e.g. ['z', 'y', 'x']
    counts = {a: int(size["xyz".index(a)]) for a in "xyz"}
    steps_mm = fov * 1000.0 / size
    first_mm = centre * 1000.0 - fov * 1000.0 / 2.0 + steps_mm / 2.0
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for col, axis in enumerate(axes_slow_to_fast):
        k = "xyz".index(axis)
        affine[k, col] = steps_mm[k]
    affine[:3, 3] = first_mm
    shape3 = tuple(counts[a] for a in axes_slow_to_fast)
    q, _, s = data.shape
    meta = {
        "format": "mdf",
        "source_path": str(p),
        "Modality": "MPI",
        "mdf_order": order,
        "fieldOfView_m": fov.tolist(),
        "fieldOfViewCenter_m": centre.tolist(),
        "orientation_nominal": "MDF defines no patient frame: scanner x, y, z are drawn as R, A, S; "
        "register the MPI to the anatomy",
        **notes,
    }
    if tracer_name:
        meta["tracer"] = tracer_name
    if uuid:
        meta["uuid"] = uuid
    if overscan is not None:
        mask = np.asarray(overscan).ravel()
        if mask.size == n_vox:
            meta["overscan_mask"] = mask.astype(bool).reshape(shape3)
            meta["overscan_voxels"] = int(mask.astype(bool).sum())
    volumes = []
    for c in range(s):
        block = data[:, :, c].reshape((q,) + shape3)
        m = dict(meta)
        if q > 1:
            m["leading_axis"] = "time"
            m["frames"] = [{"index": i} for i in range(q)]
        else:
            block = block[0]
        if s > 1:
            m["channel"] = c
        name = p.stem + (f" channel {c + 1}" if s > 1 else "")
        volumes.append(Volume(data=block, affine=affine, modality="MPI", unit=unit or "a.u.", metadata=m, name=name))
    return volumes
