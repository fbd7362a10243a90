"""OME-Zarr (OME-NGFF 0.4 on zarr v2, 0.5 on zarr v3), read lazily with dask.

Reading opens only the metadata (``.zattrs``/``.zarray`` or ``zarr.json``):
the Volume's ``data`` is a dask array of the chosen level and no chunk is
read until values are needed, so a volume larger than memory opens at once.

Geometry
--------
OME-NGFF has no patient frame; as for TIFF (see :mod:`.tiff`) the world frame
is nominal: array axes ``(z, y, x)`` run along world +S, +A, +R with the
``scale`` of each dataset as voxel size and its ``translation`` as the
position of voxel (0, 0, 0) (dataset transforms first, then the multiscale's
own ``coordinateTransformations``). Axis units (``micrometer``,
``nanometer``, ``millimeter``, ...) are converted to mm; spatial axes
without a unit are refused unless ``voxel_size_mm=`` is given. A 2D image
(y, x) becomes a volume of one slice as in :func:`.tiff.read_tiff`.

Multiscale
----------
``metadata["multiscale"]`` is a dict with ``"arrays"`` (the dask array of
every level, finest first, in the Volume's axis order) and ``"affines"``
(each level's 4x4 index-to-world affine), so napari can show the pyramid as
one multiscale layer: ``viewer.add_image(meta["multiscale"]["arrays"], ...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..affines import ras_to_napari, zyx_grid_affine
from ..errors import InputError, library_reason
from ..outputs import atomic_output_dir, write_sidecar
from ..volume import Volume

#: OME-NGFF (UDUNITS-2) length units to millimetres, plus common short forms
_TO_MM = {
    "angstrom": 1e-7,
    "picometer": 1e-9,
    "nanometer": 1e-6,
    "micrometer": 1e-3,
    "millimeter": 1.0,
    "centimeter": 10.0,
    "decimeter": 100.0,
    "meter": 1000.0,
    "inch": 25.4,
    "foot": 304.8,
    "nm": 1e-6,
    "µm": 1e-3,
    "μm": 1e-3,
    "um": 1e-3,
    "micron": 1e-3,
    "mm": 1.0,
    "cm": 10.0,
    "m": 1000.0,
}
_ATTRS_KEY = "napari_immunotrack"


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _open_group(path):
    """(zarr group, display name) for a path or a zarr store/group."""
    import zarr

    if isinstance(path, zarr.Group):
        return path, str(path.store)
    if isinstance(path, (str, Path)):
        p = Path(path)
        if not p.exists():
            raise InputError(f"{path} does not exist; check the path.")
        if not p.is_dir():
            raise InputError(f"{path} is not a folder; an OME-Zarr is a folder (.zarr).")
        store, label = str(p), str(p)
    else:  # a zarr Store (e.g. a remote or a logging store)
        store, label = path, str(path)
    try:
        return zarr.open_group(store, mode="r"), label
    except Exception as exc:
        raise InputError(
            f"{label} is not a readable zarr group ({library_reason(exc, label)}); give an OME-Zarr image folder."
        ) from None


def _find_multiscales(group, label: str):
    """(group holding the image, multiscales list, NGFF version, its attrs)."""
    import zarr

    attrs = group.attrs.asdict()
    ome = attrs.get("ome") if isinstance(attrs.get("ome"), dict) else None
    if ome and "multiscales" in ome:  # NGFF 0.5: everything under "ome"
        return group, ome["multiscales"], str(ome.get("version", "0.5")), ome
    if "multiscales" in attrs:  # NGFF <= 0.4
        ms = attrs["multiscales"]
        version = str(ms[0].get("version", "")) if isinstance(ms, list) and ms and isinstance(ms[0], dict) else ""
        return group, ms, version, attrs
    # bioformats2raw layout: the image is the sub-group "0"
    try:
        child = group["0"]
    except Exception:
        child = None
    if isinstance(child, zarr.Group):
        return _find_multiscales(child, label + "/0")
    raise InputError(
        f"{label} has no OME-NGFF 'multiscales' metadata; give an OME-Zarr image "
        "(a plain zarr array has no pixel size or position)."
    )


def _axes(ms: dict, ndim: int):
    """[(name, type, unit)] of the multiscale's axes (NGFF 0.4/0.5, 0.3 names, or 0.1/0.2 'tczyx')."""
    axes = ms.get("axes")
    if axes is None:
        names = "tczyx"[-ndim:]
        return [(n, {"t": "time", "c": "channel"}.get(n, "space"), None) for n in names]
    out = []
    for a in axes:
        if isinstance(a, str):
            out.append((a, {"t": "time", "c": "channel"}.get(a, "space" if a in "zyx" else None), None))
        else:
            name = str(a.get("name", ""))
            kind = a.get("type") or {"t": "time", "c": "channel"}.get(
                name, "space" if name in ("z", "y", "x") else None
            )
            out.append((name, kind, a.get("unit")))
    return out


def _transforms(transforms, ndim: int):
    """(scale, translation) of a list of NGFF coordinateTransformations."""
    scale, trans = np.ones(ndim), np.zeros(ndim)
    if not isinstance(transforms, (list, tuple, type(None))) or not all(isinstance(t, dict) for t in transforms or []):
        raise InputError(
            "the coordinateTransformations in the metadata are not a list of objects; "
            "the metadata are damaged: write the image again."
        )
    for t in transforms or []:
        kind = t.get("type")
        try:
            value = np.asarray(t.get(kind), float) if kind in ("scale", "translation") and kind in t else None
        except (TypeError, ValueError):  # e.g. "scale": "abc"
            raise InputError(
                f"a {kind} transform holds non-numeric values ({str(t.get(kind))[:40]}); the metadata "
                "are damaged: write the image again."
            ) from None
        if value is not None and (value.ndim != 1 or not np.all(np.isfinite(value))):
            raise InputError(
                f"a {kind} transform holds {value.tolist()}: not a list of finite numbers; the metadata "
                "are damaged: write the image again."
            )
        if kind == "scale" and value is not None:
            s = value
            scale, trans = scale * s, trans * s
        elif kind == "translation" and value is not None:
            trans = trans + value
        elif kind == "identity":
            continue
        elif kind in ("scale", "translation"):
            raise InputError(
                f"a {kind} transform stored in a file ('path') is not supported; inline the values in the metadata."
            )
        else:
            raise InputError(f"the coordinate transformation {kind!r} is not supported (only scale and translation).")
    if scale.size != ndim or trans.size != ndim:
        raise InputError(f"a coordinate transformation has {scale.size} values for {ndim} axes.")
    return scale, trans


def read_ome_zarr(
    path,
    level: int = 0,
    modality: str | None = None,
    unit: str | None = None,
    voxel_size_mm: None | float | Sequence[float] = None,
    channel: None | int | str = None,
) -> Volume:
    """Open an OME-Zarr image lazily (dask) as a Volume.

    Parameters
    ----------
    path : str, Path, zarr store or zarr group
        The image folder (``.zarr``); a bioformats2raw layout opens its
        first image.
    level : int
        Pyramid level of ``data`` (0 = full resolution). All levels are in
        ``metadata["multiscale"]``.
    modality, unit : str, optional
        Default: what this package wrote into the attributes, else "OPT" and
        "a.u.".
    voxel_size_mm : float or sequence, optional
        Level-0 voxel size in mm ((z, y, x), (y, x) or one number) when the
        axes have no unit, or to override them.
    channel : int or str, optional
        Keep one channel (index or omero label); needed when the image has
        both channels and time points.

    Returns
    -------
    Volume
        ``data`` is a dask array ``([c or t,] z, y, x)``; ``metadata`` holds
        ``source_path``, ``format``, ``ngff_version``, ``level``,
        ``multiscale`` (see the module docstring), ``leading_axis`` and
        ``channel_names``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     stack = Volume(np.ones((4, 16, 16), np.float32), zyx_grid_affine((0.02, 0.01, 0.01)))
    ...     store = write_ome_zarr(stack, Path(tmp) / "lightsheet.ome.zarr", levels=2)
    ...     v = read_ome_zarr(store, level=1)
    ...     type(v.data).__name__, v.spatial_shape, v.spacing.tolist()
    ('Array', (2, 8, 8), [0.04, 0.02, 0.02])
    """
    import dask.array as da

    group, label = _open_group(path)
    group, multiscales, version, ome_attrs = _find_multiscales(group, label)
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise InputError(f"{label}: the 'multiscales' metadata is empty or malformed.")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise InputError(f"{label}: the multiscale lists no datasets.")
    if not 0 <= level < len(datasets):
        raise InputError(f"{label} has {len(datasets)} resolution levels; level={level} does not exist.")
    ours = group.attrs.asdict().get(_ATTRS_KEY, {}) or {}

    stored = []
    for ds in datasets:
        try:
            stored.append(group[ds["path"]])
        except Exception as exc:
            raise InputError(f"{label}: the level {ds.get('path')!r} cannot be opened ({_short(exc)}).") from None
    ndim = len(stored[0].shape)
    axes = _axes(ms, ndim)
    if len(axes) != ndim or any(len(a.shape) != ndim for a in stored):
        raise InputError(f"{label}: the metadata names {len(axes)} axes but the arrays have {ndim}.")
    # dask chunks: the stored chunks, widened in the last two axes (the image plane) to about
    # dask's chunk size, so that reading a plane for napari is a few large reads, not thousands
    arrays = []
    for a in stored:
        chunks = tuple(a.chunks[:-2]) + ("auto", "auto") if ndim >= 2 else "auto"
        arrays.append(da.from_zarr(a, chunks=chunks))
    scales, translations = [], []
    g_scale, g_trans = _transforms(ms.get("coordinateTransformations"), ndim)
    for ds in datasets:
        s, t = _transforms(ds.get("coordinateTransformations"), ndim)
        scales.append(s * g_scale)
        translations.append(t * g_scale + g_trans)

    # --- which axis is which
    names = [a[0].lower() for a in axes]
    kinds = [a[1] for a in axes]
    space = [i for i, k in enumerate(kinds) if k == "space"]
    space_names = [names[i] for i in space]
    if len(space) not in (2, 3):
        raise InputError(f"{label} has {len(space)} spatial axes {space_names}; 2 or 3 are needed.")
    # order spatial axes as z, y, x when they are so named; else keep the stored order
    if set(space_names) <= {"z", "y", "x"}:
        space = sorted(space, key=lambda i: "zyx".index(names[i]))
    other = [i for i in range(ndim) if i not in space]
    shape0 = arrays[0].shape
    kept = [i for i in other if shape0[i] > 1]
    channel_names = []
    omero = ome_attrs.get("omero") or group.attrs.asdict().get("omero") or {}
    if isinstance(omero, dict) and isinstance(omero.get("channels"), list):
        channel_names = [str(c.get("label", f"channel {i}")) for i, c in enumerate(omero["channels"])]
    meta = {
        "source_path": str(path) if isinstance(path, (str, Path)) else label,
        "format": "ome-zarr",
        "ngff_version": version,
        "level": level,
        "axes_in_file": names,
    }
    select = {i: 0 for i in other if shape0[i] == 1}
    channel_axis = next((i for i in kept if kinds[i] == "channel"), None)
    if channel is not None and channel_axis is not None:
        n = shape0[channel_axis]
        if isinstance(channel, str):
            if channel not in channel_names:
                raise InputError(
                    f"{label}: no channel named {channel!r}; the channels are {channel_names or 'unnamed'}."
                )
            index = channel_names.index(channel)
        else:
            index = int(channel)
        if not 0 <= index < n:
            raise InputError(f"{label}: channel {index} does not exist; the image has {n} channels.")
        select[channel_axis] = index
        kept.remove(channel_axis)
        meta["channel"] = channel_names[index] if index < len(channel_names) else index
    if len(kept) > 1:
        raise InputError(
            f"{label} has several non-spatial axes {[names[i] for i in kept]} of length > 1; "
            "choose one channel with channel=."
        )
    lead_axis = kept[0] if kept else None
    if lead_axis is not None:
        kind = kinds[lead_axis]
        meta["leading_axis"] = "channel" if kind == "channel" else "time" if kind == "time" else names[lead_axis]
        if kind == "channel" and len(channel_names) == shape0[lead_axis]:
            meta["channel_names"] = channel_names

    # --- voxel sizes in mm
    factors = []
    for i in space:
        unit_name = axes[i][2]
        factors.append(_TO_MM.get(str(unit_name).strip().lower()) if unit_name else None)
    given = None
    if voxel_size_mm is not None:
        given = np.atleast_1d(np.asarray(voxel_size_mm, float))
        if given.size == 1:
            given = np.repeat(given, len(space))
        elif given.size == 3 and len(space) == 2:
            given = given[1:]
        if given.size != len(space) or not np.all(np.isfinite(given)) or np.any(given <= 0):
            raise InputError(f"voxel_size_mm={voxel_size_mm!r} must be one positive number or one per spatial axis.")
        meta["voxel_size_source"] = "voxel_size_mm parameter"
    elif any(f is None for f in factors):
        bad = [f"{names[i]} ({axes[i][2]!r})" for i, f in zip(space, factors) if f is None]
        raise InputError(
            f"{label}: the spatial axes {', '.join(bad)} have no known length unit, so the pixel size "
            "is unknown; give voxel_size_mm= (level-0 size in mm)."
        )
    else:
        meta["voxel_size_source"] = "OME-NGFF scale and axis units"

    def level_geometry(k: int):
        s = np.array([scales[k][i] for i in space])
        t = np.array([translations[k][i] for i in space])
        if given is not None:
            # the given level-0 size replaces the scales; keep the pyramid's ratios and offsets (in voxels)
            ratio = s / np.array([scales[0][i] for i in space])
            t = t / np.array([scales[0][i] for i in space]) * given
            s = given * ratio
        else:
            f = np.array(factors)
            s, t = s * f, t * f
        if np.any(~np.isfinite(s)) or np.any(s <= 0):
            raise InputError(f"{label}: level {k} has a zero, negative or invalid scale {s.tolist()}.")
        if len(space) == 2:  # one slice, as thick as the finest in-plane pixel
            s = np.concatenate([[min(s)], s])
            t = np.concatenate([[0.0], t])
        return zyx_grid_affine(s, t[::-1])  # OME-NGFF translations are in (z, y, x) order

    def arrange(arr):
        index = tuple(select.get(i, slice(None)) for i in range(ndim))
        arr = arr[index]
        remaining = [i for i in range(ndim) if i not in select]
        order = ([remaining.index(lead_axis)] if lead_axis is not None else []) + [remaining.index(i) for i in space]
        arr = arr.transpose(order)
        if len(space) == 2:
            arr = arr[..., None, :, :]
        return arr

    levels = [arrange(a) for a in arrays]
    affines = [level_geometry(k) for k in range(len(arrays))]
    meta["multiscale"] = {"arrays": levels, "affines": affines}
    meta["orientation_nominal"] = True
    if len(space) == 2:
        meta["slice_thickness_note"] = "2D image: thickness set to the in-plane pixel size"
    if isinstance(path, (str, Path)):
        name = Path(path).name
        for ext in (".ome.zarr", ".zarr"):
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
    else:
        name = ms.get("name") or "ome-zarr"
    return Volume(
        data=levels[level],
        affine=affines[level],
        modality=modality or ours.get("modality") or "OPT",
        unit=unit or ours.get("unit") or "a.u.",
        metadata=meta,
        name=ours.get("name") or name,
    )


# -------------------------------------------------------------------- write
def multiscale_attrs(axes: list, scales: list, translations: list, version: str = "0.4", name: str = "") -> dict:
    """The OME-NGFF ``multiscales`` entry for datasets "0", "1", ... (mm units on spatial axes).

    ``axes`` is a list of ``(name, type)``; ``scales``/``translations`` one
    list per level, one value per axis.

    Parameters
    ----------
    axes : list of (str, str)
        Axis name and type ("space", "time", "channel"); "space" axes get the unit "millimeter".
    scales : list of list of float
        Voxel size of each level along each axis (mm for space).
    translations : list of list of float
        Position of each level's first voxel centre along each axis (mm for space).
    version : {"0.4", "0.5"}, default "0.4"
        OME-NGFF version recorded.
    name : str, optional
        Image name.

    Returns
    -------
    dict
        ``axes``, ``datasets`` (path "0", "1", ... with scale and translation transformations),
        ``name`` and ``version``.

    Examples
    --------
    >>> entry = multiscale_attrs([("z", "space"), ("y", "space"), ("x", "space")],
    ...                          [[0.5, 0.25, 0.25], [1.0, 0.5, 0.5]], [[0, 0, 0], [0.25, 0.125, 0.125]])
    >>> entry["axes"][0], entry["datasets"][1]["coordinateTransformations"][0]
    ({'name': 'z', 'type': 'space', 'unit': 'millimeter'}, {'type': 'scale', 'scale': [1.0, 0.5, 0.5]})
    """
    entry = {
        "axes": [dict(name=n, type=t, **({"unit": "millimeter"} if t == "space" else {})) for n, t in axes],
        "datasets": [
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [float(v) for v in s]},
                    {"type": "translation", "translation": [float(v) for v in t]},
                ],
            }
            for k, (s, t) in enumerate(zip(scales, translations))
        ],
        "name": name,
    }
    if version == "0.4":
        entry["version"] = "0.4"
    return entry


def write_ome_zarr(
    volume: Volume,
    path,
    levels: int = 3,
    chunks: Sequence[int] = (64, 64, 64),
    overwrite: bool = False,
    version: str = "0.4",
    provenance: dict | None = None,
) -> Path:
    """Write ``volume`` as an OME-Zarr image pyramid that :func:`read_ome_zarr` reads back on the same grid.

    Parameters
    ----------
    volume : Volume
        Axis-aligned (3D or 4D, NumPy or dask: a dask volume is written chunk
        by chunk). It is written in canonical order (z, y, x along S, A, R);
        a leading axis becomes "c" (``metadata["leading_axis"] == "channel"``,
        with ``channel_names`` as omero labels) or "t".
    path : str or Path
        The folder to create (``.ome.zarr``); written to a temporary folder
        and renamed, so it is complete or absent.
    levels : int
        Pyramid levels; each halves every spatial axis longer than 1 (block
        mean for images; every other voxel for labels, i.e. integer volumes
        with unit "label" or modality "SEG", so label values survive).
    chunks : (3,) ints
        Chunk shape of the spatial axes (clipped to the volume).
    overwrite : bool
        Replace an existing folder.
    version : "0.4" or "0.5"
        OME-NGFF 0.4 on zarr v2 (read by most tools) or 0.5 on zarr v3.
    provenance : dict, optional
        Written to ``<path>.provenance.json``.

    Returns
    -------
    Path
        The written folder.

    Raises
    ------
    InputError
        An oblique volume, an unknown version, ``levels < 1`` or chunks that are not three positive
        integers; OutputExistsError when ``path`` exists and not ``overwrite``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from napari_immunotrack.affines import zyx_grid_affine
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.arange(256, dtype=np.float32).reshape(4, 8, 8), zyx_grid_affine((0.5, 0.25, 0.25)))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = write_ome_zarr(v, Path(tmp) / "stack.ome.zarr", levels=2)
    ...     back = read_ome_zarr(store)
    ...     sorted(p.name for p in store.iterdir()), back.spatial_shape, float(back.data[1, 2, 3].compute())
    (['.zattrs', '.zgroup', '0', '1'], (4, 8, 8), 83.0)
    """
    import dask.array as da
    import zarr

    path = Path(path)
    if version not in ("0.4", "0.5"):
        raise InputError(f"OME-NGFF version {version!r} is not supported; use '0.4' or '0.5'.")
    if int(levels) < 1:
        raise InputError(f"levels={levels} must be at least 1.")
    if len(tuple(chunks)) != 3 or any(int(c) < 1 for c in chunks):
        raise InputError(f"chunks={tuple(chunks)} must be three positive integers (z, y, x).")
    if not volume.is_axis_aligned(tol_degrees=1e-4):
        raise InputError(
            f"{volume.message_prefix()}is oblique; OME-Zarr stores axis-aligned grids only: "
            "resample it with for_display() first."
        )
    canon = volume.canonical()
    data = canon.data
    if data.dtype == bool:
        data = data.astype(np.uint8)
    lead = data.ndim - 3
    spatial_chunks = tuple(min(int(c), n) for c, n in zip(chunks, data.shape[-3:]))
    chunk_shape = (1,) * lead + spatial_chunks
    darr = data.rechunk(chunk_shape) if isinstance(data, da.Array) else da.from_array(data, chunks=chunk_shape)
    is_labels = np.issubdtype(darr.dtype, np.integer) and (canon.unit == "label" or canon.modality == "SEG")
    spacing = canon.spacing  # (z, y, x) mm
    origin = ras_to_napari(canon.affine[:3, 3])  # (z, y, x) mm of voxel (0, 0, 0)

    axes = [("z", "space"), ("y", "space"), ("x", "space")]
    if lead:
        axes.insert(0, ("c", "channel") if canon.metadata.get("leading_axis") == "channel" else ("t", "time"))
    pyramid, scales, translations = [darr], [spacing], [origin]
    for _ in range(1, int(levels)):
        prev = pyramid[-1]
        factors = {lead + a: 2 for a in range(3) if prev.shape[lead + a] > 1}
        if not factors:
            break
        f = np.array([factors.get(lead + a, 1) for a in range(3)])
        if is_labels:
            nxt = prev[(slice(None),) * lead + tuple(slice(None, None, int(k)) for k in f)]
            trans = translations[-1]  # samples voxel 0 of each block: same origin
        else:
            nxt = da.coarsen(np.mean, prev, factors, trim_excess=True)
            if np.issubdtype(prev.dtype, np.integer):
                nxt = da.round(nxt).astype(prev.dtype)
            else:
                nxt = nxt.astype(prev.dtype)
            trans = translations[-1] + (f - 1) / 2.0 * scales[-1]  # centre of each block
        pyramid.append(nxt.rechunk((1,) * lead + tuple(min(c, n) for c, n in zip(spatial_chunks, nxt.shape[lead:]))))
        scales.append(scales[-1] * f)
        translations.append(trans)
    full_scales = [[1.0] * lead + list(map(float, s)) for s in scales]
    full_trans = [[0.0] * lead + list(map(float, t)) for t in translations]
    entry = multiscale_attrs(axes, full_scales, full_trans, version=version, name=canon.name)
    ours = {"modality": canon.modality, "unit": canon.unit, "name": canon.name}
    channel_names = canon.metadata.get("channel_names")
    omero = None
    if (
        lead
        and canon.metadata.get("leading_axis") == "channel"
        and isinstance(channel_names, (list, tuple))
        and len(channel_names) == data.shape[0]
    ):
        omero = {"channels": [{"label": str(n), "active": True} for n in channel_names]}

    with atomic_output_dir(path, overwrite) as tmp:
        zarr_format = 2 if version == "0.4" else 3
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        for k, level_data in enumerate(pyramid):
            kwargs = (
                {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
                if zarr_format == 2
                else {"dimension_names": [n for n, _ in axes]}
            )
            arr = group.create_array(
                str(k),
                shape=level_data.shape,
                chunks=level_data.chunksize,
                dtype=level_data.dtype,
                fill_value=0,
                **kwargs,
            )
            da.store(level_data, arr, lock=False)
        if version == "0.4":
            attrs = {"multiscales": [entry], _ATTRS_KEY: ours}
            if omero:
                attrs["omero"] = omero
        else:
            ome = {"version": "0.5", "multiscales": [entry]}
            if omero:
                ome["omero"] = omero
            attrs = {"ome": ome, _ATTRS_KEY: ours}
        group.attrs.update(attrs)
        if provenance is not None:
            write_sidecar(path, provenance)
    return path


__all__ = ["read_ome_zarr", "write_ome_zarr", "multiscale_attrs"]
