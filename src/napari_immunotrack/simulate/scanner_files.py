"""Small writers of scanner files, written from the formats' definitions, for tests and benchmarks.

- :func:`write_paravision`: a ParaVision scan folder (``acqp``, ``method``,
  ``pdata/N/{2dseq,visu_pars,reco}``), JCAMP-DX parameters;
- :func:`write_inveon`: a Siemens Inveon / microPET ``.hdr`` + ``.img`` pair.

They write stored values and header fields exactly as given (no checks), so
tests can also write broken files. Layouts: docs/methods/scanner-formats.md.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.bruker import subject_from_magnet  # noqa: F401  (re-exported for tests)

_WORD = {
    "u1": "_8BIT_UNSGN_INT",
    "i1": "_8BIT_SGN_INT",
    "i2": "_16BIT_SGN_INT",
    "i4": "_32BIT_SGN_INT",
    "f4": "_32BIT_FLOAT",
}


def _jcamp_value(value) -> str:
    if isinstance(value, str):
        if value.startswith("<"):
            return f"( {max(len(value), 2) + 16} )\n{value}"
        return value
    if isinstance(value, tuple):  # one struct
        return "(" + ", ".join(_jcamp_scalar(v) for v in value) + ")"
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # struct array
        return f"( {len(value)} )\n" + " ".join("(" + ", ".join(_jcamp_scalar(v) for v in s) + ")" for s in value)
    if isinstance(value, list) and value and isinstance(value[0], str):
        return f"( {len(value)}, 65 )\n" + " ".join(v if v.startswith("<") else f"<{v}>" for v in value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        return _jcamp_scalar(arr.item())
    dims = ", ".join(str(d) for d in arr.shape)
    flat = [_jcamp_scalar(v) for v in arr.ravel().tolist()]
    # ParaVision wraps long values, each line ending in a space (readers join the lines as they are)
    lines = [" ".join(flat[i : i + 8]) + " " for i in range(0, len(flat), 8)]
    return f"( {dims} )\n" + "\n".join(lines)


def _jcamp_scalar(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


def jcamp_text(params: dict, title: str = "Parameter List") -> str:
    """JCAMP-DX text of ``params`` (strings starting with "<" are quoted strings, other strings enums).

    Parameters
    ----------
    params : dict
        Parameter name (without ``$``) -> int, float, str, array (written with its size), list of
        str (an enum array) or list of tuples (structs).
    title : str, default "Parameter List"
        The ``##TITLE`` record.

    Returns
    -------
    str
        The file's text, ending in ``##END=``; :func:`~napari_immunotrack.io.jcamp.parse_jcamp`
        reads it back.

    Examples
    --------
    >>> text = jcamp_text({"NR": 1, "Method": "<Bruker:RARE>", "RECO_size": np.array([4, 3])}, "reco")
    >>> [line.strip() for line in text.splitlines()[5:]]
    ['##$NR=1', '##$Method=( 29 )', '<Bruker:RARE>', '##$RECO_size=( 2 )', '4 3', '##END=']
    >>> from napari_immunotrack.io.jcamp import parse_jcamp
    >>> parse_jcamp(text)["RECO_size"]
    array([4, 3])
    """
    out = [
        f"##TITLE={title}",
        "##JCAMPDX=4.24",
        "##DATATYPE=Parameter Values",
        "##ORIGIN=Bruker BioSpin MRI GmbH",
        "$$ written by napari-immunotrack's test writer",
    ]
    for key, value in params.items():
        out.append(f"##${key}={_jcamp_value(value)}")
    out.append("##END=")
    return "\n".join(out) + "\n"


def write_paravision(
    scan_dir,
    stored,
    *,
    extent,
    orientation,
    positions,
    dim: int = 2,
    frame_groups: Sequence | None = None,
    slopes=None,
    offsets=None,
    word: str = "i2",
    byte_order: str = "littleEndian",
    subject_type: str = "Quadruped",
    subject_position: str = "Head_Prone",
    slice_packs: Sequence | None = None,
    protocol: str = "T2_TurboRARE",
    version: str = "ParaVision 360 V3.5",
    echo_times=None,
    reco: int = 1,
    extra: dict | None = None,
    write_visu_pars: bool = True,
) -> Path:
    """Write a ParaVision scan folder; returns the ``pdata/<reco>`` folder.

    Parameters
    ----------
    scan_dir : str or Path
        The scan folder to create (``acqp``, ``method`` and ``pdata/<reco>/`` go in it).
    stored : array (frames, [z,] y, x)
        Stored values, frames in ``frame_groups`` order (first group fastest).
    extent : sequence
        Field of view in mm along x, y[, z] (VisuCoreExtent).
    orientation : (3, 3) or (n, 3, 3)
        VisuCoreOrientation rows: x, y, slice directions in subject coordinates.
    positions : (n, 3)
        VisuCorePosition: centre of the first voxel of each slice / volume.
    frame_groups : list of (length, name)
        VisuFGOrderDesc, e.g. [(5, "FG_SLICE"), (3, "FG_ECHO")]; default one FG_SLICE group of every
        frame for 2D data.
    dim : int, default 2
        VisuCoreDim: 2 (a slice per frame) or 3 (a volume per frame).
    slopes, offsets : array, optional
        VisuCoreDataSlope / VisuCoreDataOffs per frame (default 1 and 0).
    word : str, default "i2"
        Stored type: "i1", "i2", "i4", "u1", "f4" ... (VisuCoreWordType).
    byte_order : {"littleEndian", "bigEndian"}, default "littleEndian"
        VisuCoreByteOrder.
    subject_type : str, default "Quadruped"
        VisuSubjectType.
    subject_position : str, default "Head_Prone"
        VisuSubjectPosition (see :func:`~napari_immunotrack.io.bruker.subject_from_magnet`).
    slice_packs : sequence of int, optional
        Slices per slice package (VisuCoreSlicePacksSlices).
    protocol : str, default "T2_TurboRARE"
        VisuAcquisitionProtocol and ACQ_protocol_name.
    version : str, default "ParaVision 360 V3.5"
        VisuCreatorVersion.
    echo_times : sequence of float, optional
        VisuAcqEchoTime, ms (default [33.0]).
    reco : int, default 1
        The processed-data number (``pdata/<reco>``).
    extra : dict, optional
        Further visu_pars entries (override the above).
    write_visu_pars : bool, default True
        False writes a scan without visu_pars, as some exports are.

    Returns
    -------
    Path
        The ``pdata/<reco>`` folder holding ``2dseq``, ``visu_pars`` and ``reco``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import load_volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pdata = write_paravision(Path(tmp) / "5", np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ...                              extent=(4.0, 3.0), orientation=np.eye(3), positions=[[0, 0, 0], [0, 0, 1.0]])
    ...     scan = load_volume(Path(tmp) / "5")
    ...     pdata.relative_to(tmp).as_posix(), scan.spatial_shape, scan.numpy()[1, 2].tolist()
    ('5/pdata/1', (2, 3, 4), [20, 21, 22, 23])
    """
    scan = Path(scan_dir)
    pdata = scan / "pdata" / str(reco)
    pdata.mkdir(parents=True, exist_ok=True)
    stored = np.asarray(stored)
    n_frames = stored.shape[0]
    size = list(reversed(stored.shape[1:]))
    dtype = np.dtype(("<" if byte_order == "littleEndian" else ">") + word)
    stored.astype(dtype).tofile(pdata / "2dseq")
    orientation = np.asarray(orientation, float).reshape(-1, 9)
    positions = np.asarray(positions, float).reshape(-1, 3)
    groups = list(frame_groups) if frame_groups else ([(n_frames, "FG_SLICE")] if dim == 2 else [])
    vp = {
        "VisuVersion": 5,
        "VisuCreator": "<ParaVision>",
        "VisuCreatorVersion": f"<{version}>",
        "VisuCoreFrameCount": n_frames,
        "VisuCoreDim": dim,
        "VisuCoreSize": np.array(size),
        "VisuCoreDimDesc": ["spatial"] * dim,
        "VisuCoreExtent": np.asarray(extent, float),
        "VisuCoreFrameThickness": np.array([float(np.asarray(extent)[-1] / size[-1]) if dim == 3 else 1.0]),
        "VisuCoreUnits": ["mm"] * dim,
        "VisuCoreOrientation": orientation,
        "VisuCorePosition": positions,
        "VisuCoreDataSlope": np.asarray(slopes if slopes is not None else [1.0] * n_frames, float),
        "VisuCoreDataOffs": np.asarray(offsets if offsets is not None else [0.0] * n_frames, float),
        "VisuCoreWordType": _WORD[word],
        "VisuCoreByteOrder": byte_order,
        "VisuSubjectType": subject_type,
        "VisuSubjectPosition": subject_position,
        "VisuAcquisitionProtocol": f"<{protocol}>",
        "VisuAcqRepetitionTime": np.array([2500.0]),
        "VisuAcqEchoTime": np.asarray(echo_times if echo_times is not None else [33.0], float),
    }
    vp["VisuCoreDimDesc"] = f"( {dim} )\n" + " ".join(["spatial"] * dim)
    if groups:
        vp["VisuFGOrderDescDim"] = len(groups)
        vp["VisuFGOrderDesc"] = [(int(n), f"<{name}>", "<>", 0, 0) for n, name in groups]
    if slice_packs is not None:
        vp["VisuCoreSlicePacksDef"] = (0, len(slice_packs))
        vp["VisuCoreSlicePacksSlices"] = [(0, int(c)) for c in slice_packs]
    if extra:
        vp.update(extra)
    if write_visu_pars:
        (pdata / "visu_pars").write_text(jcamp_text(vp, "visu_pars"))
    (pdata / "reco").write_text(
        jcamp_text({"RECO_wordtype": _WORD[word], "RECO_byte_order": byte_order, "RECO_size": np.array(size)}, "reco")
    )
    (scan / "acqp").write_text(jcamp_text({"ACQ_protocol_name": f"<{protocol}>", "NR": 1}, "acqp"))
    (scan / "method").write_text(jcamp_text({"Method": "<Bruker:RARE>"}, "method"))
    return pdata


# ---------------------------------------------------------------------------------------------- Inveon
INVEON_TYPES = {1: "i1", 2: "<i2", 3: "<i4", 4: "<f4", 5: ">f4", 6: ">i2", 7: ">i4"}


def _ctime(when: _dt.datetime) -> str:
    return when.strftime("%a %b %d %H:%M:%S %Y")


def write_inveon(
    stem,
    stored,
    *,
    pixel_mm=(0.8, 0.8, 0.8),
    data_type: int = 4,
    scale_factors=None,
    calibration_factor: float = 1.0,
    calibration_units: int = 2,
    branching_fraction: float = 1.0,
    frame_starts=None,
    frame_durations=None,
    decay_correction_applied: int = 1,
    decay_factors=None,
    dose: float = 10.0,
    dose_units: int = 2,
    isotope: str = "F-18",
    half_life_s: float = 6586.2,
    injection_time: _dt.datetime | None = None,
    scan_time: _dt.datetime | None = None,
    weight: float = 25.0,
    weight_units: int = 1,
    subject_orientation: int = 2,
    cm_only: bool = False,
    extra_lines: Sequence[str] = (),
) -> Path:
    """Write ``<stem>.img`` and ``<stem>.img.hdr`` (Inveon layout); returns the header path.

    ``stored`` is (frames, z, y, x) or (z, y, x), the values written to the
    image file; Bq/mL = stored * scale_factor * calibration_factor /
    branching_fraction (calibration_units 2 = Bq/cc, 1 = nCi/cc).

    Parameters
    ----------
    stem : str or Path
        Output path without (or with) ``.img``.
    stored : array
        (frames, z, y, x) or (z, y, x) values as written.
    pixel_mm : 3 floats, default (0.8, 0.8, 0.8)
        Voxel size along x, y, z, mm.
    data_type : int, default 4
        Inveon data_type: 1 int8, 2 int16, 3 int32, 4 float32 LE, 5 float32 BE, 6 int16 BE, 7 int32 BE.
    scale_factors : sequence of float, optional
        Per frame (default 1).
    calibration_factor : float, default 1.0
        Header calibration_factor.
    calibration_units : int, default 2
        2 = Bq/cc, 1 = nCi/cc.
    branching_fraction : float, default 1.0
        Written as isotope_branching_fraction and calibration_branching_fraction.
    frame_starts, frame_durations : sequence of float, optional
        Seconds (default: every frame starts at 0 s and lasts 600 s).
    decay_correction_applied : int, default 1
        Header flag.
    decay_factors : sequence of float, optional
        Per frame decay correction factors.
    dose : float, default 10.0
        Injected dose, in ``dose_units``.
    dose_units : int, default 2
        Inveon code: 1 mCi, 2 MBq.
    isotope : str, default "F-18"
        Header isotope.
    half_life_s : float, default 6586.2
        Isotope half-life, s.
    injection_time, scan_time : datetime, optional
        Written as ctime strings (defaults 2024-05-01 09:00 and 10:00: the scan one hour after injection).
    weight : float, default 25.0
        Subject weight, in ``weight_units``.
    weight_units : int, default 1
        Inveon code: 1 g, 2 lb, 3 kg.
    subject_orientation : int, default 2
        Header subject_orientation code.
    cm_only : bool, default False
        Write only the older centimetre pixel-size fields.
    extra_lines : sequence of str, optional
        Raw header lines added at the end of the study block.

    Returns
    -------
    Path
        The header ``<stem>.img.hdr``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import load_volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     header = write_inveon(Path(tmp) / "pet", np.full((2, 3, 4), 5, np.float32), scale_factors=[2.0])
    ...     pet = load_volume(header)
    ...     header.name, pet.spatial_shape, pet.unit, float(pet.numpy().mean())   # 5 x 2 Bq/cc
    ('pet.img.hdr', (2, 3, 4), 'Bq/mL', 10.0)
    """
    stem = Path(stem)
    stored = np.asarray(stored)
    if stored.ndim == 3:
        stored = stored[None]
    n, nz, ny, nx = stored.shape
    img = stem.with_suffix(".img") if stem.suffix != ".img" else stem
    hdr = Path(str(img) + ".hdr")
    dtype = np.dtype(INVEON_TYPES[data_type])
    stored.astype(dtype).tofile(img)
    injection_time = injection_time or _dt.datetime(2024, 5, 1, 9, 0, 0)
    scan_time = scan_time or _dt.datetime(2024, 5, 1, 10, 0, 0)
    scale_factors = list(scale_factors if scale_factors is not None else [1.0] * n)
    starts = list(frame_starts if frame_starts is not None else [0.0] * n)
    durs = list(frame_durations if frame_durations is not None else [600.0] * n)
    decays = list(decay_factors if decay_factors is not None else [1.0] * n)
    lines = [
        "#",
        "# Header file for data file " + img.name,
        "#",
        "version 001.910",
        "model 2000",
        "modality 0",
        "file_type 5",
        f"acquisition_mode {3 if n > 1 else 2}",
        f"total_frames {n}",
        f"isotope {isotope}",
        f"isotope_half_life {half_life_s:.6e}",
        f"isotope_branching_fraction {branching_fraction:.6e}",
        f"data_type {data_type}",
        "data_order 1",
        "number_of_dimensions 3",
        f"x_dimension {nx}",
        f"y_dimension {ny}",
        f"z_dimension {nz}",
        f"pixel_size {pixel_mm[0] / 10.0:.6e}",
        f"axial_plane_size {pixel_mm[2] / 10.0:.6e}",
    ]
    if not cm_only:
        lines += [
            f"pixel_size_x {pixel_mm[0]:.6e}",
            f"pixel_size_y {pixel_mm[1]:.6e}",
            f"pixel_size_z {pixel_mm[2]:.6e}",
        ]
    lines += [
        f"calibration_units {calibration_units}",
        f"calibration_factor {calibration_factor:.6e}",
        f"calibration_branching_fraction {branching_fraction:.6e}",
        f"decay_correction_applied {decay_correction_applied}",
        f"scan_time {_ctime(scan_time)}",
        f"dose_units {dose_units}",
        f"dose {dose:.6e}",
        f"injection_time {_ctime(injection_time)}",
        "subject_identifier mouse_1",
        "subject_genus Mus musculus",
        f"subject_orientation {subject_orientation}",
        f"subject_weight_units {weight_units}",
        f"subject_weight {weight:.6e}",
        *extra_lines,
    ]
    frame_bytes = nx * ny * nz * dtype.itemsize
    for f in range(n):
        lines += [
            f"frame {f}",
            "  event_type 1",
            "  gate 0",
            "  bed 0",
            f"  data_file_pointer 0 {f * frame_bytes}",
            f"  frame_start {starts[f]:.6e}",
            f"  frame_duration {durs[f]:.6e}",
            f"  scale_factor {scale_factors[f]:.6e}",
            f"  decay_correction {decays[f]:.6e}",
            "end_of_header",
        ]
    hdr.write_text("\n".join(lines) + "\n")
    return hdr
