"""Readers and writers. Every reader returns :class:`~napari_immunotrack.volume.Volume` objects.

:func:`load_volume` opens one volume from any supported path;
:func:`load_volumes` returns every volume a path holds (a DICOM folder may hold
several series). Formats:

- NIfTI-1/2 (``.nii``, ``.nii.gz``): :mod:`.nifti`
- DICOM files and folders (MR, PT, NM, CT; classic and enhanced multi-frame): :mod:`.dicom`
- DICOM SEG and RTSTRUCT files as labels (``reference=`` the series they were drawn on):
  :mod:`.dicom_seg`, :mod:`.rtstruct`; results out as DICOM SEG and SR: :mod:`.dicom_export`
- TIFF / OME-TIFF: :mod:`.tiff`
- OME-Zarr (lazy, dask): :mod:`.zarr`
- Bruker ParaVision scan folders, ``pdata/N`` folders and ``2dseq`` files: :mod:`.bruker`
- Siemens Inveon / microPET ``.img`` + ``.img.hdr`` (either of the pair): :mod:`.inveon`
- MPI Data Format (MDF, HDF5: ``.mdf``, ``.h5``) reconstructions: :mod:`.mdf`
- NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``): :mod:`.itkimage`
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..volume import Volume

#: Image formats of other tools, named in the refusal so the user knows what to convert.
_FOREIGN = (
    ((".hdr", ".img", ".hdr.gz", ".img.gz"), "an Analyze or NIfTI-pair (.hdr/.img) file"),
    ((".mnc", ".mnc.gz"), "a MINC file"),
    ((".mgz", ".mgh"), "a FreeSurfer MGH file"),
    ((".par", ".rec"), "a Philips PAR/REC file"),
    ((".head", ".brik", ".brik.gz"), "an AFNI file"),
    ((".v",), "an ECAT file"),
)

#: Files that are not volume images at all (or hold them packed): what they are and what to give instead.
_NOT_VOLUMES = (
    (
        (".zip", ".tar", ".tar.gz", ".tgz", ".7z", ".rar"),
        "is an archive; extract it first and give the extracted DICOM folder or image file.",
    ),
    (
        (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp"),
        "is a 2D picture without a voxel size or position, not a volume image; give the original NIfTI, DICOM, "
        "OME-TIFF or OME-Zarr data (a microscope stack can be saved as a TIFF and opened with its pixel size).",
    ),
    (
        (".npy", ".npz", ".mat", ".h5", ".hdf5"),
        "is an array file without voxel size or orientation; save the array as NIfTI with its affine first "
        "(e.g. nib.save(nib.Nifti1Image(array, affine), 'image.nii.gz')).",
    ),
    (
        (".gii", ".gii.gz"),
        "is a GIFTI surface (a mesh or values on one), not a volume image; give a NIfTI or DICOM volume.",
    ),
    ((".trk", ".tck", ".trx"), "is a tractography streamline file, not a volume image; give a NIfTI or DICOM volume."),
)


@contextlib.contextmanager
def captured_log(name: str) -> Iterator[list]:
    """Collect what a library logs on ``logging.getLogger(name)`` (nibabel's header repairs, tifffile's
    complaints) instead of letting it print on standard error; yields the list of messages."""
    import logging

    messages: list = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(" ".join(record.getMessage().split()))

    logger = logging.getLogger(name)
    saved, propagate = logger.handlers[:], logger.propagate
    logger.handlers[:] = [Collect()]
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.handlers[:] = saved
        logger.propagate = propagate


def detect_format(path) -> str:
    """The format family of ``path``: "nifti", "dicom", "tiff", "zarr", "paravision", "inveon", "mdf" or
    "itk" (NRRD/MetaImage); InputError otherwise.

    The decision uses the name, the folder layout and, for a file without a known ending, the DICOM
    preamble (``DICM`` at byte 128); the image itself is not read.

    Parameters
    ----------
    path : str or Path
        A file or folder that exists.

    Returns
    -------
    str
        One of "nifti", "dicom", "tiff", "zarr", "paravision", "inveon", "mdf", "itk".

    Raises
    ------
    InputError
        If ``path`` does not exist, or is a format this package does not read (the message names
        the format and how to convert it).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "t1.nii.gz").touch()
    ...     (Path(tmp) / "scan.mgz").touch()
    ...     print(detect_format(Path(tmp) / "t1.nii.gz"), detect_format(tmp))
    ...     try:
    ...         detect_format(Path(tmp) / "scan.mgz")
    ...     except InputError as error:
    ...         print(str(error).split(", which")[0].replace(tmp, "TMP"))
    nifti dicom
    TMP/scan.mgz is a FreeSurfer MGH file
    """
    p = Path(path)
    name = p.name.lower()
    if not p.exists():
        raise InputError(f"{path} does not exist; check the path.")
    scanner = _scanner_format(p)
    if scanner is not None:
        return scanner
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".zarr", ".ome.zarr")) or (
        p.is_dir() and ((p / ".zattrs").exists() or (p / "zarr.json").exists() or (p / ".zgroup").exists())
    ):
        return "zarr"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith((".dcm", ".ima")) or p.is_dir():
        return "dicom"
    if p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return "dicom"
    for endings, what in _NOT_VOLUMES:
        if name.endswith(endings):
            raise InputError(f"{path} {what}")
    for endings, kind in _FOREIGN:
        if name.endswith(endings):
            raise InputError(
                f"{path} is {kind}, which this plugin does not read; convert it to NIfTI first "
                "(e.g. nibabel: nib.save(nib.load(path), 'image.nii.gz'), or dcm2niix / mri_convert)."
            )
    if name.endswith(".gz") and p.is_file():  # a gzipped DICOM file or other image (not .nii.gz: see above)
        with open(p, "rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                raise InputError(
                    f"{path} is gzip-compressed; decompress it first (e.g. gunzip) and give the file "
                    "inside (a DICOM file, or a NIfTI named .nii.gz)."
                )
    raise InputError(
        f"{path}: unknown image format; give a NIfTI (.nii, .nii.gz), a DICOM file or folder, "
        "an OME-TIFF (.ome.tif), an OME-Zarr (.zarr), a ParaVision scan folder or 2dseq, an Inveon .img/.hdr, "
        "an MDF (.mdf/.h5), a NRRD (.nrrd/.nhdr) or a MetaImage (.mha/.mhd)."
    )


#: Names of the format families of :func:`detect_format`, for messages.
FORMAT_NAMES = {
    "nifti": "NIfTI",
    "dicom": "DICOM",
    "tiff": "TIFF/OME-TIFF",
    "zarr": "OME-Zarr",
    "paravision": "ParaVision",
    "inveon": "Inveon",
    "mdf": "MDF",
    "itk": "NRRD/MetaImage",
}


def images_in_folder(folder, limit: int = 200) -> list[tuple[Path, str]]:
    """The images of other formats than DICOM directly inside ``folder``: ``[(path, format), ...]``.

    What a folder that is not a DICOM series holds (an OME-TIFF, NIfTI files, an OME-Zarr, a
    ParaVision scan), so a message can name the files to give instead. At most ``limit`` entries
    are looked at; hidden files and sidecars are skipped.

    Examples
    --------
    >>> images_in_folder("/no/such/folder")
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in sorted(folder.iterdir())[:limit]:
        if entry.name.startswith(".") or entry.name.lower().endswith((".json", ".tsv", ".csv", ".txt")):
            continue
        try:
            fmt = detect_format(entry)
        except Exception:  # not an image, or unreadable: not listed
            continue
        if fmt != "dicom":  # every folder and .dcm name is "dicom" to detect_format: not evidence of an image
            found.append((entry, fmt))
    return found


def _scanner_format(p: Path):
    """ "paravision", "inveon", "mdf" or "itk" when ``p`` is one of those files, else None."""
    name = p.name.lower()
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")) and p.is_file():
        return "itk"
    from . import bruker, inveon

    if bruker.is_paravision(p):
        return "paravision"
    if inveon.is_inveon(p):
        return "inveon"
    if name.endswith((".mdf", ".h5", ".hdf5")) and p.is_file():
        from . import mdf

        if name.endswith(".mdf") or mdf.is_mdf(p):
            return "mdf"
    return None


def load_volumes(path, reference=None, **kwargs) -> list[Volume]:
    """Every volume in ``path`` (one per DICOM series; one for other formats).

    A DICOM SEG or RTSTRUCT file opens as labels (:mod:`.dicom_seg`, :mod:`.rtstruct`);
    ``reference`` is the series their geometry is in (required for RTSTRUCT).

    Parameters
    ----------
    path : str or Path
        Any path :func:`detect_format` recognises: a NIfTI, DICOM file or folder, OME-TIFF, OME-Zarr,
        ParaVision scan, Inveon ``.img``/``.hdr``, MDF, NRRD or MetaImage.
    reference : Volume, optional
        Only for a DICOM SEG or RTSTRUCT file: the image series the objects were drawn on
        (their labels are put on its grid). Refused for any other input.
    **kwargs
        Passed to the format's reader (e.g. ``package=`` for ParaVision, ``frames=`` for Inveon);
        see each reader's documentation.

    Returns
    -------
    list of Volume
        One volume per DICOM series or ParaVision slice package / frame group, else a single volume.
        Values keep the file's unit (``Volume.unit``); affines map to RAS mm.

    Raises
    ------
    InputError
        If the path is missing or unreadable, or ``reference`` is given for an ordinary image.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_volume(Volume(np.ones((2, 3, 4), np.float32), np.diag([2.0, 1.0, 0.5, 1.0])),
    ...                        Path(tmp) / "ones.nii.gz")
    ...     [(v.spatial_shape, v.spacing.tolist()) for v in load_volumes(path)]
    [((2, 3, 4), [2.0, 1.0, 0.5])]
    """
    fmt = detect_format(path)
    if fmt == "dicom" and Path(path).is_file():
        from .dicom_seg import dicom_object_kind

        kind = dicom_object_kind(path)
        if kind == "seg":
            from .dicom_seg import read_seg

            return [read_seg(path, reference=reference)]
        if kind == "rtstruct":
            from .rtstruct import read_rtstruct

            return [read_rtstruct(path, reference=reference)]
    if reference is not None:
        raise InputError(f"--reference (reference=) is for a DICOM SEG or RTSTRUCT file; {path} is neither: drop it.")
    if fmt == "nifti":
        from . import nifti

        return [nifti.read_nifti(path, **kwargs)]
    if fmt == "dicom":
        from . import dicom

        return dicom.read_dicom(path, **kwargs)
    if fmt == "tiff":
        from . import tiff

        return [tiff.read_tiff(path, **kwargs)]
    if fmt == "paravision":
        from . import bruker

        return bruker.read_paravision(path, **kwargs)
    if fmt == "inveon":
        from . import inveon

        return [inveon.read_inveon(path, **kwargs)]
    if fmt == "mdf":
        from . import mdf

        return mdf.read_mdf(path, **kwargs)
    if fmt == "itk":
        from . import itkimage

        return [itkimage.read_itk_image(path, **kwargs)]
    from . import zarr as zarr_io

    return [zarr_io.read_ome_zarr(path, **kwargs)]


def load_volume(path, **kwargs) -> Volume:
    """Open one volume from a NIfTI, DICOM, OME-TIFF, OME-Zarr, ParaVision, Inveon, MDF, NRRD or MetaImage path.

    A DICOM folder with several series is refused with the list of series;
    use :func:`load_volumes` or point at one series' folder.

    Parameters
    ----------
    path : str or Path
        A file or folder holding exactly one volume (see :func:`load_volumes` for the formats).
    **kwargs
        Passed to :func:`load_volumes` and on to the format's reader (e.g. ``reference=`` for a DICOM
        SEG/RTSTRUCT, ``package=`` for a ParaVision slice package).

    Returns
    -------
    Volume
        Data with the slice axis first (``([t,] z, y, x)`` for an axial scan), the index -> RAS mm
        affine, modality, unit and the reader's metadata (source files, timing, dose, ...).

    Raises
    ------
    InputError
        If the path holds no volume, several (the message lists them), or cannot be read.

    Examples
    --------
    >>> import nibabel.testing, os
    >>> v = load_volume(os.path.join(nibabel.testing.data_path, "example4d.nii.gz"))
    >>> v.spatial_shape, v.data.shape, v.orientation()  # nibabel: (128, 96, 24, 2), LAS; slices first here
    ((24, 96, 128), (2, 24, 96, 128), 'SAL')
    """
    volumes = load_volumes(path, **kwargs)
    if len(volumes) > 1 and volumes[0].metadata.get("format") == "paravision":
        names = "; ".join(f"{i}: {v.name} {v.spatial_shape}" for i, v in enumerate(volumes[:6]))
        raise InputError(
            f"{path} holds {len(volumes)} ParaVision volumes (slice packages or frame groups: {names}); "
            "pick one with load_volume(path, package=N) for a slice package, or use load_volumes()."
        )
    if len(volumes) > 1:
        names = "; ".join(f"{v.name} ({v.modality}, {v.spatial_shape})" for v in volumes[:6])
        raise InputError(
            f"{path} holds {len(volumes)} series ({names}); point at one series' folder or file, or use load_volumes()."
        )
    return volumes[0]


def save_labels(labels: Volume, path, overwrite: bool = False, provenance=None, description=None):
    """Write a label Volume to NIfTI with exactly its grid and affine (atomic); ``description`` goes to the header.

    Parameters
    ----------
    labels : Volume
        Whole, non-negative values (0 = background); checked with
        :func:`~napari_immunotrack.volume.as_labels` and stored as the smallest unsigned integer type.
    path : str or Path
        Output ``.nii`` or ``.nii.gz``.
    overwrite : bool, default False
        Replace an existing file (refused otherwise).
    provenance : dict, optional
        Written beside the output as ``<path>.provenance.json`` with the output's SHA-256.
    description : str, optional
        Written to the header's ``descrip`` field (at most 79 characters).

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, nibabel as nib, numpy as np
    >>> from pathlib import Path
    >>> from napari_immunotrack.volume import Volume
    >>> seg = Volume(np.array([[[0, 1], [2, 0]]]), np.eye(4), unit="label")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     img = nib.load(save_labels(seg, Path(tmp) / "seg.nii.gz", description="unconfirmed"))
    ...     img.get_data_dtype(), img.header["descrip"].item(), img.header.get_intent()[0]
    (dtype('uint8'), b'unconfirmed', 'label')
    """
    from . import nifti

    return nifti.write_nifti(
        labels, path, overwrite=overwrite, provenance=provenance, labels=True, description=description
    )


def save_volume(volume: Volume, path, overwrite: bool = False, provenance=None):
    """Write an image Volume to NIfTI with its grid and affine (atomic).

    Parameters
    ----------
    volume : Volume
        3D or 4D image; values are stored unscaled in their own type (float64 as float32 when that
        loses nothing, bool as uint8).
    path : str or Path
        Output ``.nii`` or ``.nii.gz``.
    overwrite : bool, default False
        Replace an existing file (refused otherwise).
    provenance : dict, optional
        Written beside the output as ``<path>.provenance.json`` with the output's SHA-256.

    Returns
    -------
    Path
        The written file.

    Examples
    --------
    >>> import tempfile, nibabel as nib, numpy as np
    >>> from pathlib import Path
    >>> from napari_immunotrack.volume import Volume
    >>> v = Volume(np.arange(24, dtype=float).reshape(2, 3, 4), np.diag([2.0, 1.0, 0.5, 1.0]))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     img = nib.load(save_volume(v, Path(tmp) / "v.nii.gz"))
    ...     img.shape, [float(z) for z in img.header.get_zooms()], img.get_data_dtype()  # NIfTI: (x, y, z)
    ((4, 3, 2), [0.5, 1.0, 2.0], dtype('<f4'))
    """
    from . import nifti

    return nifti.write_nifti(volume, path, overwrite=overwrite, provenance=provenance, labels=False)


__all__ = ["load_volume", "load_volumes", "save_labels", "save_volume", "detect_format"]
