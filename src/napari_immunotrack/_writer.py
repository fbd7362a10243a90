"""napari writer contribution: labels to NIfTI on the source image's grid."""

from __future__ import annotations

from .errors import InputError


def write_labels(path: str, data, meta: dict):
    """Write a Labels layer to NIfTI with its source grid and affine (napari writer contribution).

    napari gives the layer's data and attributes (scale, translate, affine,
    metadata). Labels made by this plugin carry their native grid in
    ``metadata["volume"]`` and are written on it (nearest neighbour when the layer's grid differs);
    others are placed by their scale/translate/affine (napari's (S, A, R) world -> RAS). An existing
    file is replaced (napari's Save dialog asked already); a provenance sidecar is written beside it,
    and the content counts as saved for the close guard (:func:`~napari_immunotrack.layer_content.remember_saved`).

    Parameters
    ----------
    path : str
        The ``.nii`` or ``.nii.gz`` file.
    data : array_like
        The layer's 3D integer labels.
    meta : dict
        The layer's attributes: ``scale``, ``translate``, ``affine``, ``name``, ``metadata``.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    InputError
        Labels that are not 3D.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from napari_immunotrack.io import load_volume
    >>> labels = np.zeros((2, 3, 4), np.uint8)
    >>> labels[1, 2, 3] = 5
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = write_labels(str(Path(tmp) / "clusters.nii.gz"), labels, {"scale": [2.0, 1.0, 0.5], "name": "clusters"})
    ...     back = load_volume(out[0])
    ...     files = sorted(p.name for p in Path(tmp).iterdir())
    >>> files, int(back.data.max()), sorted(np.round(np.linalg.norm(back.affine[:3, :3], axis=0), 3).tolist())
    (['clusters.nii.gz', 'clusters.nii.gz.provenance.json'], 5, [0.5, 1.0, 2.0])
    """
    import numpy as np

    from .affines import napari_affine_to_ras
    from .io import save_labels
    from .provenance import record
    from .volume import Volume

    metadata = meta.get("metadata") or {}
    stored = metadata.get("volume")
    # napari world (S, A, R) -> RAS; scale/translate and affine composed as napari does
    n = np.asarray(data).ndim
    if n != 3:
        raise InputError(f"only 3D labels can be written to NIfTI (this layer is {n}D).")
    scale = np.asarray(meta.get("scale", [1, 1, 1]), float)[-3:]
    translate = np.asarray(meta.get("translate", [0, 0, 0]), float)[-3:]
    physical = np.eye(4)
    physical[:3, :3] = np.diag(scale)
    physical[:3, 3] = translate
    extra = np.asarray(meta.get("affine", np.eye(4)), float)
    if extra.shape != (4, 4):
        extra = np.eye(4)
    affine = napari_affine_to_ras(extra @ physical)
    labels = Volume(np.asarray(data), affine, modality="SEG", unit="label", name=meta.get("name", "labels"))
    if (
        stored is not None
        and stored.spatial_shape != labels.spatial_shape
        or stored is not None
        and not np.allclose(stored.affine, labels.affine, atol=1e-6)
    ):
        labels = labels.resample_to(stored, order=0)
        labels.metadata.update({k: stored.metadata[k] for k in ("sform_code", "qform_code") if k in stored.metadata})
    prov = record(
        "napari-labels-export",
        inputs={"source": stored} if stored is not None else {},
        parameters={"layer": meta.get("name")},
    )
    # napari's Save dialog already asked about replacing an existing file
    save_labels(labels, path, overwrite=True, provenance=prov)
    from .layer_content import remember_saved  # a neutral module: the writer does not import the close guard

    remember_saved(np.asarray(data))  # the close guard no longer counts this content as unsaved
    return [path]
