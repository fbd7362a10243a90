"""TIFF and OME-TIFF (fluorescence, optical) via tifffile.

Geometry
--------
A TIFF has no patient frame, so its world frame is *nominal*: the array is
``(z, y, x)`` (planes, rows, columns) and

- columns (x) run along world +x (Right),
- rows (y) run along world +y (Anterior),
- planes (z) run along world +z (Superior),

all with positive spacing and the first voxel at the stage position written
in OME ``Plane`` ``PositionX/Y/Z`` (else at the origin). This is already the
canonical orientation (:meth:`Volume.canonical` changes nothing), so napari
shows the image exactly as Fiji or any TIFF viewer does: row 0 at the top,
column 0 on the left, in the default (axial) view. "Right" and "Anterior"
are only names here: a dorsal photograph of a mouse is not placed in the
animal's anatomy until it is registered, or an ``affine=`` is given.
``metadata["orientation_nominal"]`` is True unless ``affine=`` was given.

Physical pixel size, in this order
----------------------------------
1. ``voxel_size_mm=`` given by the caller (overrides the file, with a
   warning when the file says otherwise);
2. OME-XML ``PhysicalSizeX/Y/Z`` and their units (µm when no unit is
   written, as the OME schema says);
3. ImageJ metadata: ``unit`` with the X/YResolution tags and ``spacing``;
4. TIFF resolution tags in centimetres or inches (72 and 96 dpi are the
   defaults of screen software, not a measurement, and are ignored).

No size found is an :class:`InputError` that says to give ``voxel_size_mm``.
A single plane is a valid optical image: it becomes a volume of one slice
whose thickness is the given or written z size, else the in-plane size.
"""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..affines import zyx_grid_affine
from ..errors import ImmunotrackWarning, InputError, library_reason
from ..outputs import atomic_output, write_sidecar
from ..volume import Volume
from . import captured_log

#: length units to millimetres (OME's UnitsLength symbols, ImageJ's spellings)
_TO_MM = {
    "pm": 1e-9,
    "Å": 1e-7,
    "angstrom": 1e-7,
    "nm": 1e-6,
    "nanometer": 1e-6,
    "µm": 1e-3,
    "μm": 1e-3,
    "um": 1e-3,
    "micron": 1e-3,
    "microns": 1e-3,
    "micrometer": 1e-3,
    "\\u00b5m": 1e-3,
    "mm": 1.0,
    "millimeter": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "dm": 100.0,
    "m": 1000.0,
    "meter": 1000.0,
    "in": 25.4,
    "inch": 25.4,
}
_SCREEN_DPI = (72.0, 96.0)


def _unit_to_mm(unit, default: str | None = None) -> float | None:
    if unit is None or str(unit).strip() == "":
        unit = default
    if unit is None:
        return None
    return _TO_MM.get(str(unit).strip(), _TO_MM.get(str(unit).strip().lower()))


# ----------------------------------------------------------------- metadata
def _ome_geometry(xml_text: str, series: int, channel_count: int):
    """(sizes_mm {'x','y','z'}, origin_mm {'x','y','z'}, channel names) from OME-XML."""
    sizes, origin, names = {}, {}, []
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return sizes, origin, names
    images = root.findall("{*}Image")
    if not images or series >= len(images):
        return sizes, origin, names
    pixels = images[series].find("{*}Pixels")
    if pixels is None:
        return sizes, origin, names
    for axis in ("x", "y", "z"):
        value = pixels.get(f"PhysicalSize{axis.upper()}")
        if value is None:
            continue
        factor = _unit_to_mm(pixels.get(f"PhysicalSize{axis.upper()}Unit"), default="µm")
        try:
            size = float(value) * factor if factor is not None else None
        except ValueError:
            size = None
        if size is not None and math.isfinite(size) and size > 0:
            sizes[axis] = size
    planes = pixels.findall("{*}Plane")
    if planes:
        # the first plane of the first channel and time point: the origin of the stack
        first = min(planes, key=lambda p: (int(p.get("TheT", 0)), int(p.get("TheC", 0)), int(p.get("TheZ", 0))))
        for axis in ("x", "y", "z"):
            value = first.get(f"Position{axis.upper()}")
            factor = _unit_to_mm(first.get(f"Position{axis.upper()}Unit"), default="µm")
            if value is not None and factor is not None:
                try:
                    origin[axis] = float(value) * factor
                except ValueError:
                    pass
    names = [c.get("Name") or f"channel {i}" for i, c in enumerate(pixels.findall("{*}Channel"))]
    if len(names) != channel_count:
        names = []
    return sizes, origin, names


def _resolution_mm(page, unit_to_mm: float | None):
    """(y, x) pixel size in mm from X/YResolution (pixels per unit), or None."""
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        xres = xres[0] / xres[1] if isinstance(xres, tuple) else float(xres)
        yres = yres[0] / yres[1] if isinstance(yres, tuple) else float(yres)
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if not (xres > 0 and yres > 0) or unit_to_mm is None:
        return None
    return unit_to_mm / yres, unit_to_mm / xres


def _file_geometry(tf, series: int, channel_count: int):
    """(sizes_mm, origin_mm, channel_names, source) from whatever metadata the file has."""
    if tf.is_ome and tf.ome_metadata:
        sizes, origin, names = _ome_geometry(tf.ome_metadata, series, channel_count)
        if sizes:
            return sizes, origin, names, "OME-XML"
    else:
        names, origin = [], {}
    page = tf.series[series].pages[0] if tf.series[series].pages else tf.pages[0]
    if tf.is_imagej and tf.imagej_metadata:
        ij = tf.imagej_metadata
        factor = _unit_to_mm(ij.get("unit"))
        sizes = {}
        yx = _resolution_mm(page, factor)
        if yx is not None:
            sizes["y"], sizes["x"] = yx
            spacing = ij.get("spacing")
            if spacing is not None and float(spacing) > 0:
                sizes["z"] = float(spacing) * factor
            labels = ij.get("Labels") or ij.get("labels")
            if isinstance(labels, (list, tuple)) and len(labels) == channel_count:
                names = [str(n) for n in labels]
            return sizes, origin, names, "ImageJ metadata"
    # plain TIFF resolution tags; unit 2 = inch, 3 = centimetre, 1 = none
    try:
        res_unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 2
    except (TypeError, ValueError):
        res_unit = 1
    factor = {2: 25.4, 3: 10.0}.get(res_unit)
    yx = _resolution_mm(page, factor)
    if yx is not None:
        dpi = (25.4 / yx[0], 25.4 / yx[1])
        if not all(any(abs(d - s) < 1e-6 for s in _SCREEN_DPI) for d in dpi):
            return {"y": yx[0], "x": yx[1]}, origin, names, "TIFF resolution tags"
    return {}, origin, names, None


# --------------------------------------------------------------------- read
def _normalise_axes(data, axes: str):
    """Squeeze length-1 axes and map tifffile axis codes onto C, T, Z, Y, X."""
    axes = axes.upper()
    if 0 in data.shape or len(axes) != data.ndim:  # e.g. a damaged tag read as a zero size
        raise InputError(
            f"its image has an axis of length 0 or axes that do not match the data ({axes} for shape "
            f"{tuple(data.shape)}); the file is probably truncated or corrupt: copy or export it again."
        )
    keep = [i for i, a in enumerate(axes) if data.shape[i] > 1 or a in "YX"]
    data = data.reshape(tuple(data.shape[i] for i in keep)) if len(keep) != data.ndim else data
    axes = "".join(axes[i] for i in keep)
    mapped = []
    for a in axes:
        if a == "S":  # RGB samples are channels
            a = "C"
        elif a in "IQ" and "Z" not in axes and "Z" not in mapped:  # an unnamed page sequence: a z stack
            a = "Z"
        mapped.append(a)
    axes = "".join(mapped)
    if "Y" not in axes or "X" not in axes or len(set(axes)) != len(axes) or set(axes) - set("CTZYX"):
        raise InputError(
            f"the image's axes {axes!r} cannot be read as (channel, time, z, y, x); "
            "save it as an OME-TIFF with named axes."
        )
    return data, axes


def read_tiff(
    path,
    voxel_size_mm: None | float | Sequence[float] = None,
    affine=None,
    channel: None | int | str = None,
    series: int = 0,
    modality: str = "OPT",
    unit: str = "a.u.",
    lazy: bool = False,
) -> Volume:
    """Read a TIFF / OME-TIFF / ImageJ TIFF into a Volume (fluorescence, optical).

    Parameters
    ----------
    path : str or Path
        ``.tif``/``.tiff``/``.ome.tif``.
    voxel_size_mm : float or sequence, optional
        Pixel size in mm when the file has none (or to override it): one
        number (isotropic), ``(y, x)`` for a single plane, or ``(z, y, x)``.
    affine : (4, 4) array, optional
        Index ``(z, y, x)`` to world RAS mm, replacing the nominal placement
        (the voxel size is then the affine's).
    channel : int or str, optional
        Keep one channel (index or OME channel name). Needed when the file
        has both channels and time points.
    series : int
        Which image of a multi-image file.
    modality, unit : str
        "OPT" and "a.u." by default.
    lazy : bool
        Read the pixels lazily (dask) instead of into memory.

    Returns
    -------
    Volume
        ``data`` is ``([c or t,] z, y, x)``; ``metadata`` holds
        ``source_path``, ``format``, ``voxel_size_source``,
        ``leading_axis`` ("channel" or "time") and ``channel_names``,
        ``orientation_nominal`` (see the module docstring).

    Examples
    --------
    A plain TIFF (no pixel size in it) needs ``voxel_size_mm``:

    >>> import tempfile, numpy as np, tifffile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     tifffile.imwrite(Path(tmp) / "surface.tif", np.zeros((48, 64), np.uint16))
    ...     v = read_tiff(Path(tmp) / "surface.tif", voxel_size_mm=0.1)
    ...     v.spatial_shape, v.spacing.tolist(), v.modality
    ((1, 48, 64), [0.1, 0.1, 0.1], 'OPT')

    An OME-TIFF carries it (see :func:`write_ome_tiff` for a file written and read back).
    """
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path.")
    with captured_log("tifffile"):  # tifffile logs what it skips in a damaged file straight to stderr
        try:
            tf = tifffile.TiffFile(str(path))
        except Exception as exc:
            raise InputError(
                f"{path} is not a readable TIFF file ({library_reason(exc, path)}); check that the file is complete and not corrupt."
            ) from None
        try:
            return _read_opened_tiff(tf, path, voxel_size_mm, affine, channel, series, modality, unit, lazy)
        except InputError:
            raise
        except Exception as exc:
            # tifffile parses the pages lazily: a damaged directory shows up here, as whatever tifffile
            # raises (TiffFileError, RuntimeError, TypeError...); an error of our own code stays a bug
            import traceback

            frames = traceback.extract_tb(exc.__traceback__)
            if not frames or "tifffile" not in Path(frames[-1].filename).parts[-2:][0]:
                raise
            tf.close()
            raise InputError(
                f"{path} is not a readable TIFF file ({library_reason(exc, path)}); the file is probably "
                "truncated or corrupt: copy it again."
            ) from None


def _read_opened_tiff(
    tf, path: Path, voxel_size_mm, affine, channel, series: int, modality: str, unit: str, lazy: bool
) -> Volume:
    """The body of :func:`read_tiff` once the file is open."""
    try:
        if not tf.series or series < 0 or series >= len(tf.series):
            raise InputError(f"{path} has {len(tf.series)} image series; series={series} does not exist.")
        s = tf.series[series]
        try:
            if lazy:
                import dask.array as da
                import zarr

                data = da.from_zarr(zarr.open(s.aszarr(), mode="r"))
            else:
                data = s.asarray()
        except Exception as exc:
            raise InputError(
                f"{path}: the image data cannot be read ({library_reason(exc, path)}); "
                "the file is probably truncated or corrupt: copy or export it again."
            ) from None
        try:
            data, axes = _normalise_axes(data, s.axes)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
        n_channels = data.shape[axes.index("C")] if "C" in axes else 1
        sizes, origin, names, size_source = _file_geometry(tf, series, n_channels)
        file_format = "ome-tiff" if tf.is_ome else "imagej-tiff" if tf.is_imagej else "tiff"
    finally:
        if not lazy:
            tf.close()

    meta = {"source_path": str(path), "format": file_format, "axes_in_file": s.axes}
    # --- non-spatial axes: at most one may remain (channel or time)
    if "C" in axes and channel is not None:
        if isinstance(channel, str):
            if channel not in names:
                raise InputError(f"{path}: no channel named {channel!r}; the channels are {names or 'unnamed'}.")
            index = names.index(channel)
        else:
            index = int(channel)
            if not 0 <= index < n_channels:
                raise InputError(f"{path}: channel {index} does not exist; the file has {n_channels} channels.")
        data = np.take(data, index, axis=axes.index("C")) if not lazy else data.take(index, axis=axes.index("C"))
        axes = axes.replace("C", "")
        meta["channel"] = names[index] if names else index
    elif channel is not None and n_channels == 1 and channel not in (0, None):
        raise InputError(f"{path} has one channel; channel={channel!r} does not exist.")
    if "C" in axes and "T" in axes:
        raise InputError(
            f"{path} has {n_channels} channels and {data.shape[axes.index('T')]} time points; "
            f"choose one channel with channel= (one of {names or list(range(n_channels))})."
        )
    if "Z" not in axes:
        data = data[..., None, :, :]
        axes = axes[:-2] + "Z" + axes[-2:]
    order = [axes.index(a) for a in "CTZYX" if a in axes]
    data = data.transpose(order)
    lead = [a for a in "CT" if a in axes]
    if lead:
        meta["leading_axis"] = "channel" if lead[0] == "C" else "time"
        if lead[0] == "C":
            meta["channel_names"] = names or [f"channel {i}" for i in range(data.shape[0])]
    single_plane = data.shape[-3] == 1

    # --- geometry
    if affine is not None:
        affine = np.asarray(affine, float)
        meta["voxel_size_source"] = "affine parameter"
    else:
        given = None
        if voxel_size_mm is not None:
            given = np.atleast_1d(np.asarray(voxel_size_mm, float))
            if given.size == 1:
                given = np.repeat(given, 3)
            elif given.size == 2:
                given = np.array([min(given), given[0], given[1]])
            if given.size != 3 or not np.all(np.isfinite(given)) or np.any(given <= 0):
                raise InputError(f"voxel_size_mm={voxel_size_mm!r} must be one positive number, (y, x) or (z, y, x).")
            file_zyx = [sizes.get(a) for a in "zyx"]
            differs = [a for a, f, g in zip("zyx", file_zyx, given) if f is not None and abs(f - g) > 0.01 * g]
            if differs:
                warnings.warn(
                    f"{path}: voxel_size_mm={given.tolist()} overrides the file's pixel size "
                    f"({size_source}: {[sizes.get(a) for a in 'zyx']} mm).",
                    ImmunotrackWarning,
                    stacklevel=2,
                )
                meta["voxel_size_in_file_mm"] = [sizes.get(a) for a in "zyx"]
            zyx = given
            meta["voxel_size_source"] = "voxel_size_mm parameter"
        else:
            if "x" not in sizes or "y" not in sizes:
                # every verb and the napari reader open files without a pixel-size option: the fix that
                # works everywhere is to store the size in the file
                raise InputError(
                    f"{path} has no physical pixel size (no OME PhysicalSizeX/Y, ImageJ or "
                    "resolution metadata); set it in the file and save again (Fiji: Image > "
                    "Properties, then File > Save), or give it in mm when opening (voxel_size_mm=0.1 "
                    "in Python, --voxel-size 0.1 with immunotrack info)."
                )
            if "z" not in sizes and not single_plane:
                raise InputError(
                    f"{path} is a stack of {data.shape[-3]} planes without a z spacing; set the "
                    "distance between planes in the file and save again (Fiji: Image > Properties, "
                    "voxel depth), or give voxel_size_mm=(z, y, x) in Python."
                )
            z = sizes.get("z", min(sizes["x"], sizes["y"]))
            zyx = np.array([z, sizes["y"], sizes["x"]])
            meta["voxel_size_source"] = size_source
            if single_plane and "z" not in sizes:
                meta["slice_thickness_note"] = "single plane: thickness set to the in-plane pixel size"
        # index (z, y, x) -> world: column 0 = z along S, column 1 = y along A, column 2 = x along R
        affine = zyx_grid_affine(zyx, [origin.get("x", 0.0), origin.get("y", 0.0), origin.get("z", 0.0)])
        if origin:
            meta["origin_source"] = "OME Plane Position"
        meta["orientation_nominal"] = True
    name = path.name
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return Volume(data=data, affine=affine, modality=modality, unit=unit, metadata=meta, name=name)


# -------------------------------------------------------------------- write
def write_ome_tiff(volume: Volume, path, overwrite: bool = False, provenance: dict | None = None) -> Path:
    """Write ``volume`` as an OME-TIFF that :func:`read_tiff` reads back on the same grid.

    The volume must be axis-aligned; it is written in canonical order
    (planes along S, rows along A, columns along R; see the module
    docstring) with ``PhysicalSizeX/Y/Z`` in µm and the first voxel's
    position in every ``Plane``'s ``PositionX/Y/Z`` (µm). A 4D volume whose
    ``metadata["leading_axis"]`` is "channel" is written as channels (with
    ``metadata["channel_names"]``), any other leading axis as time points.

    Parameters
    ----------
    volume : Volume
        3D or 4D, axis-aligned (any axis order and sign: it is reordered to the canonical one).
    path : str or Path
        Output ``.ome.tif`` / ``.ome.tiff`` (written atomically).
    overwrite : bool, default False
        Replace an existing file (refused otherwise).
    provenance : dict, optional
        Written beside the output as ``<path>.provenance.json``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        An oblique volume or a wrong file ending; OutputExistsError when ``path`` exists and not
        ``overwrite``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), zyx_grid_affine((0.05, 0.05, 0.05)), "OPT")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     back = read_tiff(write_ome_tiff(v, Path(tmp) / "surface.ome.tif"))
    ...     back.spatial_shape, back.numpy()[1, 2].tolist(), bool(np.allclose(back.affine, v.affine))
    ((2, 3, 4), [20, 21, 22, 23], True)
    """
    import tifffile

    path = Path(path)
    if not path.name.lower().endswith((".tif", ".tiff")):
        raise InputError(f"{path}: OME-TIFF output must end in .ome.tif or .ome.tiff.")
    if not volume.is_axis_aligned(tol_degrees=1e-4):
        raise InputError(
            f"{volume.message_prefix()}is oblique; OME-TIFF stores axis-aligned grids only: "
            "resample it with for_display() first."
        )
    canon = volume.canonical()
    data = canon.numpy()
    if data.dtype == bool:
        data = data.astype(np.uint8)
    spacing = canon.spacing  # (z, y, x) in mm
    origin = canon.affine[:3, 3]  # world (x, y, z) of voxel (0, 0, 0)
    nz = data.shape[-3]
    um = 1000.0
    metadata = {
        "PhysicalSizeX": float(spacing[2] * um),
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": float(spacing[1] * um),
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeZ": float(spacing[0] * um),
        "PhysicalSizeZUnit": "µm",
    }
    if data.ndim == 4:
        is_channel = canon.metadata.get("leading_axis") == "channel"
        metadata["axes"] = "CZYX" if is_channel else "TZYX"
        names = canon.metadata.get("channel_names")
        if is_channel and isinstance(names, (list, tuple)) and len(names) == data.shape[0]:
            metadata["Channel"] = {"Name": [str(n) for n in names]}
        repeats = data.shape[0]
    else:
        metadata["axes"] = "ZYX"
        repeats = 1
    # planes are listed in storage order (leading axis outer, z inner)
    z_positions = [float((origin[2] + k * spacing[0]) * um) for k in range(nz)] * repeats
    metadata["Plane"] = {
        "PositionX": [float(origin[0] * um)] * len(z_positions),
        "PositionXUnit": ["µm"] * len(z_positions),
        "PositionY": [float(origin[1] * um)] * len(z_positions),
        "PositionYUnit": ["µm"] * len(z_positions),
        "PositionZ": z_positions,
        "PositionZUnit": ["µm"] * len(z_positions),
    }
    if volume.name:
        metadata["Name"] = volume.name
    with atomic_output(path, overwrite) as tmp:
        # minisblack: else tifffile takes a last axis of 3 or 4 voxels for RGB(A) samples and fails
        tifffile.imwrite(
            str(tmp),
            data,
            ome=True,
            metadata=metadata,
            photometric="minisblack",
            compression="zlib" if data.nbytes > (1 << 20) else None,
        )
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path
