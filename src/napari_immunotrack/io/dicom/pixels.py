"""Pixel data of one DICOM file: fast path for plain little-endian data, pydicom's decoders otherwise."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ...errors import InputError


def _decoder_hint(ds) -> str:
    """What to install to decode a compressed transfer syntax (one phrase)."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(ts, "name", str(ts))
    hint = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or python-gdcm)"
    try:
        from pydicom.pixels import get_decoder

        missing = get_decoder(ts).missing_dependencies
        if missing:
            hint = "install a decoder: " + ", or ".join(_pip_command(m) for m in missing)
    except Exception:
        pass
    return f"its pixel data are compressed as {name} ({ts}) and no installed decoder can read them; {hint}"


def _pip_command(requirement: str) -> str:
    """pydicom's "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1" as the command a user
    types: "pip install pylibjpeg pylibjpeg-libjpeg" (gdcm's package on PyPI is python-gdcm)."""
    import re

    if "requires" not in requirement:
        return " ".join(requirement.split())
    needs = requirement.split("requires", 1)[-1]
    names = [
        n for n in re.findall(r"([A-Za-z][\w.-]*)\s*(?:[<>=!~]=?\s*[\d.]+)?", needs) if n not in ("and", "numpy")
    ]  # numpy is there already
    names = ["python-gdcm" if n == "gdcm" else n for n in names]
    return "pip install " + " ".join(dict.fromkeys(names)) if names else " ".join(requirement.split())


def file_pixels(path: Path, ds) -> np.ndarray:
    """The stored (unscaled) pixel array of one file: (rows, cols) or (frames, rows, cols).

    ``ds`` is the file's dataset read with deferred pixel data; the pixel
    element is removed from it afterwards (it becomes ``dicom_header``).

    Parameters
    ----------
    path : Path
        The file (read again if another volume already took the pixels of ``ds``).
    ds : pydicom.Dataset
        Its header, read with deferred pixel data.

    Returns
    -------
    ndarray
        The stored values, before RescaleSlope/RescaleIntercept, in the stored integer (or float)
        type.

    Raises
    ------
    InputError
        No pixel data (a truncated file), or a compressed transfer syntax without its decoder
        installed (the message gives the ``pip install`` command).

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> from napari_immunotrack.io.dicom.headers import read_header
    >>> path = Path(get_testdata_file("CT_small.dcm"))
    >>> ds = read_header(path, explicit=True)
    >>> pixels = file_pixels(path, ds)
    >>> pixels.shape, pixels.dtype, pixels[0, :3].tolist(), "PixelData" in ds
    ((128, 128), dtype('int16'), [175, 180, 166], False)
    """
    if getattr(ds, "_immunotrack_pixels_taken", False):
        # a file holding several volumes (stacks of an enhanced file): the pixels were taken from this header
        # by the first volume; read them from the file again for the next
        import pydicom

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = pydicom.dcmread(str(path), defer_size=16384)
        return file_pixels(path, fresh)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: no pixel data (the file is probably truncated); copy it again or remove it.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _decode(path, ds)
    finally:
        ds._immunotrack_pixels_taken = True
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]  # also drops pydicom's cached decoded array


def _decode(path: Path, ds) -> np.ndarray:
    try:
        ds.PixelData  # noqa: B018 - reads the deferred value now, so a vanished/truncated file fails here
    except Exception as exc:
        raise InputError(
            f"{path}: the pixel data cannot be read ({' '.join(str(exc).split())[:100]}); the file "
            "is probably truncated or corrupt: copy it again."
        ) from None
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        compressed = ts is not None and ts.is_compressed
        plain = ts is not None and not compressed and ts.is_little_endian
    except (AttributeError, ValueError, TypeError):  # a damaged UID (pydicom raises on unknown ones)
        raise InputError(
            f"{path}: the transfer syntax {' '.join(str(ts).split())[:70]!r} in the file meta is not "
            "a DICOM transfer syntax; the file is corrupt: copy it again."
        ) from None
    if plain and "PixelData" in ds:
        fast = _fast_pixels(ds)
        if fast is not None:
            return fast
    try:
        return ds.pixel_array
    except Exception as exc:
        if compressed:
            try:
                from pydicom.pixels import get_decoder

                available = get_decoder(ts).is_available
            except Exception:
                available = False
            if not available:
                raise InputError(f"{path}: {_decoder_hint(ds)}.") from None
            raise InputError(
                f"{path}: the compressed pixel data ({ts.name}) cannot be decoded "
                f"({' '.join(str(exc).split())[:120]}); install pylibjpeg with its plugins or "
                "python-gdcm, or decompress the series (e.g. gdcmconv --raw)."
            ) from None
        raise InputError(
            f"{path}: the pixel data cannot be read ({' '.join(str(exc).split())[:120]}); the file "
            "is probably truncated or corrupt: copy it again."
        ) from None


def _fast_pixels(ds) -> np.ndarray | None:
    """Uncompressed little-endian pixels without pydicom's generic machinery (about 5x faster); None if unusual."""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", bits) or bits)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    if bits not in (8, 16, 32) or stored != bits or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):  # as frames_of: an unreadable NumberOfFrames is one frame
        n = 1
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    raw = ds.PixelData or b""  # an empty element reads as None
    need = rows * cols * n * dtype.itemsize
    if len(raw) < need:
        raise InputError(
            f"{ds.filename}: the pixel data are {len(raw)} bytes where {need} are expected; the file is "
            "truncated or corrupt: copy it again."
        )
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * n)
    return arr.reshape((n, rows, cols) if n > 1 else (rows, cols))
