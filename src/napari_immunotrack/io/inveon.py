"""Siemens Inveon / Concorde microPET images: a text header (``name.img.hdr``) and raw data (``name.img``).

Either file of the pair may be given. The header is ``keyword value`` lines
(``#`` comments); keywords before the first ``frame N`` line describe the
study, the lines after each ``frame N`` describe that frame. What is read
(docs/methods/scanner-formats.md#inveon):

- ``data_type``: 1 int8, 2 int16 LE, 3 int32 LE, 4 float32 LE, 5 float32 BE,
  6 int16 BE, 7 int32 BE; ``x_dimension``, ``y_dimension``, ``z_dimension``,
  ``total_frames``; each frame at its ``data_file_pointer`` (high, low word)
  in the data file, x fastest, then y, then z.
- Voxel size: ``pixel_size_x/y/z`` (mm) when present, else ``pixel_size`` and
  ``axial_plane_size`` (cm; times 10), else half the ``axial_crystal_pitch``
  (cm) for z.
- Values: ``stored * scale_factor(frame) * calibration_factor /
  isotope_branching_fraction``, in Bq/mL when ``calibration_units`` is 2
  (Bq/cc) and times 37 when it is 1 (nCi/cc); other units are left as
  "counts" and quantification asks for a calibration.
- Timing: ``scan_time`` and ``injection_time`` (ctime text, e.g.
  ``Wed May 01 10:00:00 2024``), frame ``frame_start``/``frame_duration`` (s);
  ``decay_correction_applied`` 1 means each frame is decay-corrected to the
  scan start (DICOM DecayCorrection START), 0 NONE.
- Dose: ``dose`` in ``dose_units`` (1 mCi, 2 MBq) -> Bq; weight:
  ``subject_weight`` in ``subject_weight_units`` (1 g, 2 lb, 3 kg) -> kg;
  ``isotope``, ``isotope_half_life`` (s).
- Orientation: ``subject_orientation`` 1 feet-first prone, 2 head-first
  prone, 3 feet-first supine, 4 head-first supine, 5/6 feet/head-first
  right side down, 7/8 feet/head-first left side down. The gantry frame is
  taken as the patient frame of a head-first supine subject (image x to its
  left, y to its back, z into the gantry); the pose turns it into the
  subject's own axes, so that R, A and S are the animal's right, ventral and
  cranial sides whatever the pose. The centre of the field of view is the
  world origin.

The Volume's metadata uses the DICOM keywords the PET analysis reads
(:func:`napari_immunotrack.analysis.pet.read_pet_header`): ``Units``,
``DecayCorrection``, ``RadionuclideTotalDose`` (Bq), ``RadionuclideHalfLife``,
``Radionuclide``, ``RadiopharmaceuticalStartDateTime``/``StartTime``,
``SeriesDate``/``SeriesTime`` (scan start), ``AcquisitionDate``/``Time``,
``ActualFrameDuration`` and ``FrameReferenceTime`` (ms), ``PatientWeight``
(kg), ``PatientSpeciesDescription``; dynamic studies are 4D (leading axis
"time", lazy dask array) with one ``frames`` entry per frame.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

_TYPES = {1: "i1", 2: "<i2", 3: "<i4", 4: "<f4", 5: ">f4", 6: ">i2", 7: ">i4"}
INVEON_POSES = {
    1: "Foot_Prone",
    2: "Head_Prone",
    3: "Foot_Supine",
    4: "Head_Supine",
    5: "Foot_Right",
    6: "Head_Right",
    7: "Foot_Left",
    8: "Head_Left",
}
_MODALITY = {0: "PT", 1: "CT", 2: "NM"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _looks_like_header(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    if b"\x00" in head[:348]:
        return False  # Analyze/NIfTI headers are binary
    text = head.decode("latin-1", "ignore")
    return "x_dimension" in text and "data_type" in text


def pair_of(path) -> tuple[Path, Path]:
    """(header, data file) of an Inveon pair given either file.

    Parameters
    ----------
    path : str or Path
        The ``.img`` data file or its header (``<name>.img.hdr``, or ``<name>.hdr`` when that exists).

    Returns
    -------
    (Path, Path)
        Header and data file (they need not exist).

    Examples
    --------
    >>> [p.name for p in pair_of("scan/pet.img")], [p.name for p in pair_of("scan/pet.img.hdr")]
    (['pet.img.hdr', 'pet.img'], ['pet.img.hdr', 'pet.img'])
    """
    p = Path(path)
    name = p.name
    if name.lower().endswith(".hdr"):
        hdr = p
        stem = name[:-4]
        img = p.with_name(stem) if stem.lower().endswith(".img") else p.with_name(stem + ".img")
        return hdr, img
    for hdr in (p.with_name(name + ".hdr"), p.with_suffix(".hdr")):
        if hdr.exists():
            return hdr, p
    return p.with_name(name + ".hdr"), p


def is_inveon(path) -> bool:
    """True when ``path`` is an Inveon header, or a data file beside one.

    A header is text (Analyze/NIfTI ``.hdr`` files are binary and are not taken) naming
    ``x_dimension`` and ``data_type`` in its first 8 KiB.

    Parameters
    ----------
    path : str or Path
        A file.

    Returns
    -------
    bool

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.simulate.scanner_files import write_inveon
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     header = write_inveon(Path(tmp) / "pet", np.ones((2, 3, 4), np.float32))
    ...     is_inveon(header), is_inveon(Path(tmp) / "pet.img"), is_inveon(Path(tmp) / "missing.img")
    (True, True, False)
    """
    p = Path(path)
    if not p.is_file():
        return False
    name = p.name.lower()
    if name.endswith(".hdr"):
        return _looks_like_header(p)
    if name.endswith(".img"):
        hdr, _ = pair_of(p)
        return hdr.exists() and _looks_like_header(hdr)
    return False


def parse_header(text: str) -> tuple[dict, list]:
    """(study fields, [frame fields]) of an Inveon header; values are the raw text after the keyword.

    Parameters
    ----------
    text : str
        The header's content. Lines starting with ``#`` are comments; ``frame N`` starts the
        fields of frame N; the first occurrence of a keyword in a block wins.

    Returns
    -------
    study : dict
        Keyword -> raw value text of the fields before the first ``frame`` line.
    frames : list of dict
        One dict per frame, with ``frame`` (its number as text) and its fields.

    Examples
    --------
    >>> study, frames = parse_header("# comment\\nx_dimension 4\\nisotope F-18\\n"
    ...                              "frame 0\\nscale_factor 2.0e+00\\nframe 1\\nscale_factor 1.5e+00\\n")
    >>> study, [(f["frame"], f["scale_factor"]) for f in frames]
    ({'x_dimension': '4', 'isotope': 'F-18'}, [('0', '2.0e+00'), ('1', '1.5e+00')])
    """
    study: dict = {}
    frames: list = []
    current = study
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "frame":
            current = {"frame": value}
            frames.append(current)
        elif key == "end_of_header":
            current = study if not frames else current
        else:
            current.setdefault(key, value)
    return study, frames


def _num(fields: dict, key: str, where: Path, default=None, kind=float):
    raw = fields.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw.split()[0]) if kind is int else float(raw.split()[0])
    except (ValueError, IndexError):
        raise InputError(f"{where}: header field {key} is {raw!r}, not a number; fix the header.") from None
    if not np.isfinite(value):
        raise InputError(f"{where}: header field {key} is {raw!r}; fix the header.")
    return value


def _time(fields: dict, key: str, where: Path) -> _dt.datetime | None:
    raw = fields.get(key)
    if not raw:
        return None
    text = " ".join(raw.split())
    for fmt in ("%a %b %d %H:%M:%S %Y", "%b %d %H:%M:%S %Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return _dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise InputError(
        f"{where}: {key} {raw!r} is not a date-time like 'Wed May 01 10:00:00 2024'; fix the header "
        f"or give the time on the command line (--{key.replace('_', '-')})."
    )


def _dicom_dt(when: _dt.datetime) -> tuple[str, str]:
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")


def read_inveon(path) -> Volume:
    """The image of an Inveon/microPET ``.img`` + ``.hdr`` pair as a Volume (Bq/mL when calibrated).

    Parameters
    ----------
    path : str or Path
        The header (``.img.hdr`` or ``.hdr``) or the data file (``.img``).

    Returns
    -------
    Volume
        3D for one frame; 4D (time, z, y, x), lazy, for a dynamic study.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.simulate.scanner_files import write_inveon
    >>> tmp = tempfile.TemporaryDirectory()
    >>> hdr = write_inveon(tmp.name + "/pet", np.full((2, 3, 4), 10.0), calibration_factor=2.0,
    ...                    branching_fraction=0.5)
    >>> v = read_inveon(hdr)
    >>> float(v.data.max()), v.unit, v.metadata["DecayCorrection"]
    (40.0, 'Bq/mL', 'START')
    >>> tmp.cleanup()
    """
    hdr, img = pair_of(path)
    if not hdr.exists():
        raise InputError(f"{path}: the Inveon header {hdr.name} is missing; copy it beside the data file.")
    if not img.exists():
        raise InputError(f"{hdr}: the data file {img.name} named by this header is missing; copy it beside the header.")
    try:
        study, frames = parse_header(hdr.read_bytes().decode("latin-1"))
    except OSError as exc:
        raise InputError(f"cannot read {hdr} ({exc.strerror or exc}).") from None
    dt_code = _num(study, "data_type", hdr, kind=int)
    if dt_code not in _TYPES:
        raise InputError(
            f"{hdr}: data_type {dt_code} is not one of 1-7 (int8, int16, int32, float32 in either byte "
            "order); the header is damaged or the file is not an Inveon image."
        )
    dtype = np.dtype(_TYPES[dt_code])
    nx, ny, nz = (_num(study, k, hdr, kind=int) for k in ("x_dimension", "y_dimension", "z_dimension"))
    if None in (nx, ny, nz) or min(nx, ny, nz) < 1 or nx * ny * nz > 2**31:
        raise InputError(f"{hdr}: x/y/z_dimension ({nx}, {ny}, {nz}) do not describe an image; fix the header.")
    n_frames = _num(study, "total_frames", hdr, default=max(len(frames), 1), kind=int)
    if n_frames < 1 or n_frames > 100000:
        raise InputError(f"{hdr}: total_frames {n_frames} is not a frame count; fix the header.")
    frames = (frames + [{} for _ in range(n_frames)])[:n_frames]
    frame_bytes = nx * ny * nz * dtype.itemsize
    offsets = []
    for i, fr in enumerate(frames):
        ptr = (fr.get("data_file_pointer") or "").split()
        try:
            offsets.append(int(ptr[-1]) + (int(ptr[0]) << 32 if len(ptr) > 1 else 0) if ptr else i * frame_bytes)
        except ValueError:
            raise InputError(
                f"{hdr}: data_file_pointer of frame {i} is {fr.get('data_file_pointer')!r}; fix the header."
            ) from None
    size = img.stat().st_size
    end = max(o + frame_bytes for o in offsets)
    if min(offsets) < 0 or size < end:
        raise InputError(
            f"{img} holds {size} bytes but the header describes {n_frames} frame(s) of "
            f"{nx}x{ny}x{nz} {dtype.name} ending at byte {end}; the data file is short (an interrupted "
            "copy?): copy it again."
        )
    # ---- voxel size (mm)
    px = _num(study, "pixel_size_x", hdr)
    py = _num(study, "pixel_size_y", hdr)
    pz = _num(study, "pixel_size_z", hdr)
    cm = _num(study, "pixel_size", hdr)
    voxel_source = "pixel_size_x/y/z (mm)"
    if px is not None and cm and cm > 0 and abs(px / cm - 1.0) < 0.05:
        # pixel_size_x equal to pixel_size (cm): this writer put the per-axis sizes in cm too
        px, py, pz = px * 10.0, (py or px / 10.0) * 10.0, pz * 10.0 if pz else None
        voxel_source = "pixel_size_x/y/z read as cm (equal to pixel_size, which is in cm)"
    if px is None and cm is not None:
        px = py = cm * 10.0
        voxel_source = "pixel_size and axial_plane_size (cm)"
    if py is None:
        py = px
    if pz is None:
        plane = _num(study, "axial_plane_size", hdr)
        pitch = _num(study, "axial_crystal_pitch", hdr)
        pz = plane * 10.0 if plane else (pitch * 10.0 / 2.0 if pitch else None)
    if px is None or pz is None or not (px > 0 and py > 0 and pz > 0):
        raise InputError(
            f"{hdr}: the voxel size is missing or not positive (pixel_size_x/y/z in mm or pixel_size/"
            "axial_plane_size in cm); fix the header."
        )
    pose_code = _num(study, "subject_orientation", hdr, default=0, kind=int)
    pose = INVEON_POSES.get(pose_code)
    from .bruker import subject_from_magnet

    rot = subject_from_magnet(pose or "Head_Supine")
    steps = np.array([px, py, pz])
    centre = (np.array([nx, ny, nz]) - 1) / 2.0
    lps = np.eye(4)
    lps[:3, 2] = rot[:, 0] * px
    lps[:3, 1] = rot[:, 1] * py
    lps[:3, 0] = rot[:, 2] * pz
    lps[:3, 3] = -rot @ (centre * steps)
    affine = _LPS_TO_RAS @ lps
    # ---- values
    cal = _num(study, "calibration_factor", hdr, default=1.0)
    branching = _num(study, "isotope_branching_fraction", hdr, default=None) or _num(
        study, "calibration_branching_fraction", hdr, default=1.0
    )
    cal_units = _num(study, "calibration_units", hdr, default=0, kind=int)
    if not branching or branching <= 0 or branching > 1:
        raise InputError(f"{hdr}: isotope_branching_fraction {branching} is not in (0, 1]; fix the header.")
    unit_factor = {2: 1.0, 1: 37.0}.get(cal_units)
    scales = []
    for fr in frames:
        s = _num(fr, "scale_factor", hdr, default=1.0)
        scales.append(s * cal / branching * (unit_factor or 1.0))
    scales = np.asarray(scales, dtype=np.float64)
    modality = _MODALITY.get(_num(study, "modality", hdr, default=0, kind=int), "PT")
    contiguous = all(o == offsets[0] + i * frame_bytes for i, o in enumerate(offsets))
    if n_frames == 1:
        raw = np.memmap(img, dtype=dtype, mode="r", offset=offsets[0], shape=(nz, ny, nx))
        data = (
            (raw.astype(np.float32) * np.float32(scales[0]))
            if (scales[0] != 1.0 or dtype.kind != "f")
            else np.asarray(raw, dtype=np.float32)
        )
    else:
        import dask.array as da

        # a name from the file's identity: dask would otherwise hash every byte of the memmap to make one
        stat = img.stat()
        token = f"inveon-{abs(hash((str(img.resolve()), stat.st_mtime_ns, stat.st_size)))}"
        if contiguous:
            raw = np.memmap(img, dtype=dtype, mode="r", offset=offsets[0], shape=(n_frames, nz, ny, nx))
            stack = da.from_array(raw, chunks=(1, nz, ny, nx), asarray=True, name=token)
        else:
            parts = [
                da.from_array(
                    np.memmap(img, dtype=dtype, mode="r", offset=o, shape=(nz, ny, nx)),
                    chunks=(nz, ny, nx),
                    asarray=True,
                    name=f"{token}-{i}",
                )
                for i, o in enumerate(offsets)
            ]
            stack = da.stack(parts)
        data = stack.astype(np.float32) * scales.astype(np.float32)[:, None, None, None]
    # ---- header fields as DICOM keywords
    meta: dict = {
        "format": "inveon",
        "source_path": str(hdr),
        "voxel_size_source": voxel_source,
        "files": [str(hdr), str(img)],
        "Modality": modality,
        "inveon_header": dict(study),
        "inveon_frames": [dict(f) for f in frames],
        "activity_scale_per_frame": scales.tolist(),
    }
    unit = "a.u."
    if unit_factor is not None and modality in ("PT", "NM"):
        meta["Units"] = "BQML"
        unit = "Bq/mL"
    elif modality in ("PT", "NM"):
        meta["Units"] = "CNTS"
        unit = "counts"
        meta["calibration_note"] = (
            f"calibration_units {cal_units} is not Bq/cc (2) or nCi/cc (1): values are uncalibrated"
        )
    if pose:
        meta["SubjectPosition"] = pose
    else:
        meta["orientation_nominal"] = (
            f"subject_orientation {pose_code} is unknown: the image is placed as head-first "
            "supine; check left/right and head/feet"
        )
    scan = _time(study, "scan_time", hdr)
    inj = _time(study, "injection_time", hdr)
    applied = _num(study, "decay_correction_applied", hdr, default=None, kind=int)
    if applied is None:
        factors = [_num(fr, "decay_correction", hdr, default=1.0) for fr in frames]
        applied = (
            int(any(abs(f - 1.0) > 1e-9 for f in factors)) if any("decay_correction" in fr for fr in frames) else None
        )
    if applied is not None:
        meta["DecayCorrection"] = "START" if applied else "NONE"
    if scan is not None:
        meta["SeriesDate"], meta["SeriesTime"] = _dicom_dt(scan)
        meta["StudyDate"] = meta["SeriesDate"]
    if inj is not None:
        d, t = _dicom_dt(inj)
        meta["RadiopharmaceuticalStartDateTime"] = d + t
        meta["RadiopharmaceuticalStartTime"] = t
    dose = _num(study, "dose", hdr)
    dose_units = _num(study, "dose_units", hdr, default=0, kind=int)
    if dose is not None and dose > 0:
        factor = {1: 3.7e7, 2: 1e6}.get(dose_units)
        if factor is not None:
            meta["RadionuclideTotalDose"] = dose * factor
        else:
            meta["dose_note"] = f"dose {dose} with unknown dose_units {dose_units}: give --dose-mbq"
    half = _num(study, "isotope_half_life", hdr)
    if half and half > 0:
        meta["RadionuclideHalfLife"] = half
    if study.get("isotope"):
        meta["Radionuclide"] = study["isotope"].strip()
    genus = study.get("subject_genus")
    if genus:
        meta["PatientSpeciesDescription"] = genus.strip()
    weight = _num(study, "subject_weight", hdr)
    w_units = _num(study, "subject_weight_units", hdr, default=0, kind=int)
    if weight is not None and weight > 0:
        factor = {1: 1e-3, 2: 0.45359237, 3: 1.0}.get(w_units)
        meta["PatientWeight"] = weight * factor if factor is not None else weight
        if factor is None:
            meta["weight_note"] = f"subject_weight_units {w_units} unknown: the weight is read by the PET rules"
    if study.get("subject_identifier"):
        meta["PatientID"] = study["subject_identifier"].strip()
    flags = [
        (k, c)
        for k, c in (
            ("decay_correction_applied", "DECY"),
            ("attenuation_applied", "ATTN"),
            ("normalization_applied", "NORM"),
            ("deadtime_correction_applied", "DTIM"),
            ("scatter_correction", "SCAT"),
        )
    ]
    if "attenuation_applied" in study:
        meta["CorrectedImage"] = [c for k, c in flags if _num(study, k, hdr, default=0, kind=int)]
    frame_info = []
    for i, fr in enumerate(frames):
        start = _num(fr, "frame_start", hdr, default=0.0)
        dur = _num(fr, "frame_duration", hdr, default=0.0)
        if not (-1e7 < start < 1e7 and 0 <= dur < 1e7):  # 1e7 s: four months
            raise InputError(
                f"{hdr}: frame {i} starts at {start} s and lasts {dur} s; that is not a frame of a "
                "scan: fix the header."
            )
        entry = {
            "FrameReferenceTime": 1000.0 * (start + dur / 2.0),
            "ActualFrameDuration": 1000.0 * dur,
            "frame_start_s": start,
            "frame_duration_s": dur,
            "DecayFactor": _num(fr, "decay_correction", hdr, default=1.0),
        }
        if scan is not None:
            entry["AcquisitionDate"], entry["AcquisitionTime"] = _dicom_dt(scan + _dt.timedelta(seconds=start))
        frame_info.append(entry)
    if n_frames == 1:
        for key in ("FrameReferenceTime", "ActualFrameDuration", "AcquisitionDate", "AcquisitionTime", "DecayFactor"):
            if key in frame_info[0]:
                meta[key] = frame_info[0][key]
    else:
        meta["leading_axis"] = "time"
        meta["frames"] = frame_info
        if scan is not None:
            meta["AcquisitionDate"], meta["AcquisitionTime"] = (
                frame_info[0]["AcquisitionDate"],
                frame_info[0]["AcquisitionTime"],
            )
    name = study.get("study_identifier") or img.name
    return Volume(data=data, affine=affine, modality=modality, unit=unit, metadata=meta, name=str(name).strip())


def select_frames(volume: Volume, first: int, last: int | None = None) -> Volume:
    """One frame, or the duration-weighted mean of frames ``first..last`` (inclusive), of a dynamic volume.

    The timing fields become those of the window (acquisition start of the
    first frame, total duration), so a PET header read from the result
    describes the window. Frame numbers are 0-based.

    Parameters
    ----------
    volume : Volume
        A 4D volume, frames first (``metadata["frames"]`` gives each frame's
        ``ActualFrameDuration`` in ms and timing; equal weights without durations).
    first : int
        First frame of the window.
    last : int, optional
        Last frame (inclusive); ``first`` when None.

    Returns
    -------
    Volume
        3D float32: the frame, or the mean weighted by frame duration; ``ActualFrameDuration``
        (ms, the window's total), ``FrameReferenceTime`` (its middle), acquisition date/time and
        ``frame_window`` set in the metadata.

    Raises
    ------
    InputError
        A 3D volume, or frames outside ``0..n-1``.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.arange(3.0)[:, None, None, None] * np.ones((3, 2, 2, 2)), np.eye(4), "PT",
    ...            metadata={"leading_axis": "time", "frames": [{"ActualFrameDuration": 1000.0}] * 3})
    >>> float(select_frames(v, 1, 2).data.mean())
    1.5
    """
    if volume.data.ndim != 4:
        raise InputError("frames can only be chosen in a dynamic (4D) volume; this one is 3D.")
    n = volume.data.shape[0]
    last = first if last is None else last
    if not (0 <= first <= last < n):
        raise InputError(f"frames {first}..{last} do not exist: the study has frames 0 to {n - 1}.")
    frames = volume.metadata.get("frames") or [{} for _ in range(n)]
    durs = np.array([float(frames[i].get("ActualFrameDuration") or 0.0) for i in range(first, last + 1)])
    weights = durs / durs.sum() if durs.sum() > 0 else np.full(len(durs), 1.0 / len(durs))
    block = volume.data[first : last + 1]
    data = np.asarray(
        sum(np.asarray(block[k], dtype=np.float32) * np.float32(w) for k, w in enumerate(weights)), dtype=np.float32
    )
    meta = dict(volume.metadata)
    meta.pop("leading_axis", None)
    meta.pop("frames", None)
    f0 = frames[first]
    for key in ("AcquisitionDate", "AcquisitionTime", "DecayFactor"):
        if f0.get(key) is not None:
            meta[key] = f0[key]
    meta["ActualFrameDuration"] = float(durs.sum())
    start = float(f0.get("FrameReferenceTime", 0.0)) - float(f0.get("ActualFrameDuration", 0.0)) / 2.0
    meta["FrameReferenceTime"] = start + float(durs.sum()) / 2.0
    meta["frame_window"] = [first, last]
    name = f"{volume.name} frame {first}" if first == last else f"{volume.name} frames {first}-{last}"
    return volume.replace(data=data, metadata=meta, name=name)


def choose_frames(volume: Volume, text: str | None, label: str = "PET") -> Volume:
    """The frame ``"N"`` or window ``"A-B"`` (0-based, inclusive) of a dynamic volume, as ``--frames`` gives it.

    Parameters
    ----------
    volume : Volume
        A 4D volume, frames first.
    text : str or None
        ``"N"`` or ``"A-B"``; None or empty is refused with the number of frames.
    label : str, default "PET"
        How messages name the volume.

    Returns
    -------
    Volume
        :func:`select_frames` of the frame or window.

    Raises
    ------
    InputError
        No choice given, text that is not ``N`` or ``A-B``, or frames that do not exist.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.arange(4.0)[:, None, None, None] * np.ones((4, 2, 2, 2)), np.eye(4), "PT",
    ...            metadata={"leading_axis": "time"})
    >>> float(choose_frames(v, "3").data.mean()), float(choose_frames(v, "0-1").data.mean())
    (3.0, 0.5)
    """
    n = volume.data.shape[0] if volume.data.ndim == 4 else 1
    if text is None or not str(text).strip():
        raise InputError(
            f"{label} is dynamic ({n} {volume.metadata.get('leading_axis', 'time')} frames); choose a "
            f"frame or a window with --frames N or --frames A-B (0 to {n - 1})."
        )
    parts = str(text).replace(" ", "").split("-")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (None, None)
    except ValueError:
        first = last = None
    if first is None:
        raise InputError(f"--frames must be a frame number N or a window A-B (got {text!r}).")
    return select_frames(volume, first, last)
