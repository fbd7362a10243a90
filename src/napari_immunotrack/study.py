"""Finding the files of a study, and saving what the user did with it (pure; no napari).

Layouts
-------
A BIDS-like study folder holds one folder per subject, per session
(timepoint) and per data type::

    mouse_study/
      ground_truth.json                       (simulated studies only)
      sub-01/ses-day0/anat/sub-01_ses-day0_T2starw.nii.gz
      sub-01/ses-day1/pet/<DICOM series files or one folder per series>
      sub-01/ses-day1/f19/sub-01_ses-day1_19F.nii.gz
      sub-01/ses-day1/xfm/sub-01_ses-day1_from-pet_to-anat.tfm   (registration results)
      ...

A plain scanner export (no ``sub-*`` folders) works too: DICOM series are
grouped by PatientID (subject) and StudyDate (session; days counted from the
subject's first date), other images by their folders
(``<subject>/<session>/<file>``), and each file's role is read from its
DICOM Modality and SeriesDescription or from words in its name.

:func:`discover` lists every image with its subject, session, day, data type
and BIDS suffix; :class:`StudyFile` adds its ``modality``, ``role`` (T1w, T2w,
T2starw, PET, SPECT, 19F, MPI, fluorescence, ROI, labels, or ``unknown``),
``phase`` (pre/post) and ``track`` (the same kind of image across
timepoints). :func:`open_study` wraps it all in a :class:`Study` with the
transforms found beside the images and the problems found on the way
(files of unknown role, non-image files, a modality missing at a timepoint):
files it cannot place are reported, never dropped silently.

Study state
-----------
:func:`save_state` / :func:`load_state` write and read a small readable JSON
file (``immunotrack_state.json`` next to the data by default): the subject and
session shown, every layer (source file relative to the study, its SHA-256,
display settings, affine changes), user-drawn ROIs (saved as NIfTI beside the
state), widget parameters and the view. :func:`check_state` says which files
moved or changed since.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImmunotrackWarning, InputError

_SIDE_FILES = (
    ".json",
    ".csv",
    ".tsv",
    ".txt",
    ".md",
    ".tfm",
    ".html",
    ".png",
    ".svg",
    ".pdf",
    ".mat",
    ".xml",
    ".log",
    ".py",
    ".yaml",
    ".yml",
)
_LABEL_SUFFIXES = ("dseg", "mask", "roi", "labels", "label")
#: Image file endings (a file without extension may be DICOM: its header says).
_IMAGE_ENDINGS = (".nii", ".nii.gz", ".dcm", ".ima", ".tif", ".tiff", ".zarr")

#: Roles: role -> (modality, label shown to the user). The order is the layer order, bottom to top.
ROLES = {
    "T1w": ("MR", "T1w"),
    "T2w": ("MR", "T2w"),
    "T2starw": ("MR", "T2*w"),
    "MR": ("MR", "MRI"),
    "CT": ("CT", "CT"),
    "ROI": ("SEG", "ROI"),
    "labels": ("SEG", "labels"),
    "fluorescence": ("OPT", "fluorescence"),
    "SPECT": ("NM", "SPECT"),
    "MPI": ("MPI", "MPI"),
    "19F": ("F19", "19F"),
    "PET": ("PT", "PET"),
    "unknown": ("OT", "unknown role"),
}
_ROLE_ORDER = {role: i for i, role in enumerate(ROLES)}

#: Words (in a BIDS suffix, a data-type folder, a file name or a DICOM SeriesDescription) -> role.
_SUFFIX_ROLES = {
    "t1w": "T1w",
    "t1": "T1w",
    "t1map": "T1w",
    "t2w": "T2w",
    "t2": "T2w",
    "t2map": "T2w",
    "t2starw": "T2starw",
    "t2star": "T2starw",
    "t2s": "T2starw",
    "t2starmap": "T2starw",
    "swi": "T2starw",
    "mge": "T2starw",
    "gre": "T2starw",
    "pet": "PET",
    "pt": "PET",
    "spect": "SPECT",
    "nm": "SPECT",
    "ct": "CT",
    "19f": "19F",
    "f19": "19F",
    "fluorine": "19F",
    "mpi": "MPI",
    "fluo": "fluorescence",
    "fluorescence": "fluorescence",
    "optical": "fluorescence",
    "nirf": "fluorescence",
    "bli": "fluorescence",
    "dseg": "ROI",
    "mask": "ROI",
    "roi": "ROI",
    "rois": "ROI",
    "labels": "labels",
    "label": "labels",
    "clusters": "labels",
    "anat": "MR",
    "mri": "MR",
    "mr": "MR",
}
_DICOM_MODALITY_ROLES = {"PT": "PET", "NM": "SPECT", "CT": "CT", "SEG": "labels"}


def role_from_words(*texts: str) -> str | None:
    """The role named by the first text that names one (a BIDS suffix, a folder, a description), else None.

    A whole text that is a known suffix wins; else its words are tried, longest first (so "T2*" is
    T2starw rather than T2w), generic words ("mr", "anat", "pt", "nm") last. ``*`` reads as "star".

    Parameters
    ----------
    *texts : str
        Candidates in order of trust, e.g. the BIDS suffix, the folder name, a SeriesDescription.
        Empty ones are skipped.

    Returns
    -------
    str or None
        A key of :data:`ROLES` ("T1w", "T2w", "T2starw", "PET", "SPECT", "19F", "MPI",
        "fluorescence", "ROI", "labels", ...), or None when no text names a role.

    Examples
    --------
    >>> role_from_words("sub-01_ses-day1_T2starw"), role_from_words("MGE T2* 3D"), role_from_words("notes")
    ('T2starw', 'T2starw', None)
    """
    for text in texts:
        if not text:
            continue
        low = str(text).lower().replace("*", "star")
        if low in _SUFFIX_ROLES:
            return _SUFFIX_ROLES[low]
        # longest words first, so "t2star" wins over "t2"
        tokens = [t for t in re.split(r"[^a-z0-9]+", low) if t]
        for token in sorted(tokens, key=len, reverse=True):
            if token in _SUFFIX_ROLES and token not in ("mr", "mri", "anat", "nm", "pt"):
                return _SUFFIX_ROLES[token]
        for token in tokens:
            if token in _SUFFIX_ROLES:
                return _SUFFIX_ROLES[token]
    return None


@dataclass
class StudyFile:
    """One image of a study.

    ``subject``, ``session`` (without the ``sub-``/``ses-`` prefixes),
    ``datatype`` (the folder: anat, pet, f19, ...), ``suffix`` (BIDS suffix:
    T2starw, dseg, ...) and ``entities`` (``desc``, ``acq``, ...) come from
    the path; ``session_dir`` is the session folder (where ``xfm/`` lives);
    ``timepoint_days`` overrides the day read from the session name (DICOM
    exports count days from the first StudyDate); ``dicom`` holds the header
    fields used to place a DICOM series (Modality, SeriesDescription,
    SeriesInstanceUID) when the path holds several series.
    """

    path: Path
    subject: str
    session: str
    datatype: str
    suffix: str
    entities: dict = field(default_factory=dict)
    session_dir: Path | None = None
    timepoint_days: float | None = None
    dicom: dict = field(default_factory=dict)

    @property
    def day(self) -> float | None:
        """Timepoint in days (``ses-day3`` -> 3.0; a DICOM export: days since the first scan), else None."""
        if self.timepoint_days is not None:
            return self.timepoint_days
        match = re.search(r"day-?(\d+(?:\.\d+)?)", self.session)
        return float(match.group(1)) if match else None

    @property
    def is_labels(self) -> bool:
        return self.suffix.lower() in _LABEL_SUFFIXES or self.datatype == "rois" or self.role in ("ROI", "labels")

    @property
    def role(self) -> str:
        """T1w, T2w, T2starw, MR, CT, PET, SPECT, 19F, MPI, fluorescence, ROI, labels or unknown."""
        if self.datatype == "rois" or self.suffix.lower() in ("dseg", "mask", "roi"):
            return "ROI"
        if self.suffix.lower() in ("labels", "label"):
            return "labels"
        role = role_from_words(self.suffix)
        modality = str(self.dicom.get("Modality", "")).upper()
        if modality in _DICOM_MODALITY_ROLES:
            return _DICOM_MODALITY_ROLES[modality]
        if role is None and modality == "MR":
            # the series description may name the weighting; 19F MRI is an MR series too
            role = role_from_words(self.dicom.get("SeriesDescription", ""), self.dicom.get("ProtocolName", "")) or "MR"
        if role is None or role == "MR":
            role = role_from_words(self.datatype) or role
        if role is None and not self.dicom:
            role = role_from_words(self.path.name)
        return role or "unknown"

    @property
    def modality(self) -> str:
        """The Volume modality the role implies (MR, PT, NM, CT, F19, MPI, OPT, SEG, OT)."""
        return ROLES[self.role][0]

    @property
    def phase(self) -> str:
        """ "pre" (baseline, before injection), "post", or "" when the names do not say."""
        words = set(
            re.split(
                r"[^a-z0-9]+",
                f"{self.session} {self.entities.get('acq', '')} {self.dicom.get('SeriesDescription', '')}".lower(),
            )
        )
        if words & {"pre", "baseline", "before"}:
            return "pre"
        if "post" in words:
            return "post"
        if "day" in self.session.lower() and self.day is not None:
            return "pre" if self.day == 0 else "post"  # day-numbered sessions count from the injection
        return ""

    @property
    def track(self) -> str:
        """The same kind of image across timepoints: the role, with its ``desc`` when it has one.

        A napari layer follows one track while the timepoint changes.
        """
        desc = self.entities.get("desc") or ""
        if self.role in ("MR", "unknown") and not desc:
            # an MRI of unnamed weighting (or an unknown image) keeps its own name, so two never share a layer
            desc = self.dicom.get("SeriesDescription", "") or (self.suffix if self.suffix != self.datatype else "")
        return f"{self.role}:{desc}" if desc else self.role

    @property
    def label(self) -> str:
        """How the track is named to the user: "T2*w", "PET", "ROI reftube", ..."""
        return track_label(self.track)

    @property
    def relative_path(self) -> str:
        return self.path.name


def read_label_names(dseg_path) -> dict[int, str]:
    r"""The region names of a BIDS label map, read from the ``.tsv`` beside it ({} when there is none).

    The table's first column is the label index, the second the name, after a
    header row; ``x_dseg.nii.gz``, ``x_dseg.ome.zarr`` or ``x_dseg.tif`` all read ``x_dseg.tsv``.

    Parameters
    ----------
    dseg_path : path
        The label image.

    Returns
    -------
    dict
        {label index: name}.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "sub-01_dseg.tsv").write_text("index\tname\n1\tliver\n2\tspleen\n")
    ...     read_label_names(Path(tmp) / "sub-01_dseg.nii.gz")
    {1: 'liver', 2: 'spleen'}
    """
    tsv = Path(re.sub(r"(\.nii\.gz|\.nii|\.ome\.zarr|\.zarr|\.ome\.tiff?|\.tiff?)$", "", str(dseg_path)) + ".tsv")
    names: dict[int, str] = {}
    if not tsv.is_file():
        return names
    try:
        lines = tsv.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):  # an unreadable table: the regions keep their numbers
        return names
    for line in lines[1:]:
        index, _, name = line.partition("\t")
        if index.strip().isdigit() and name.strip():
            names[int(index)] = name.strip()
    return names


def track_label(track: str) -> str:
    """The user-facing name of a track key ("ROI:reftube" -> "ROI reftube", "T2starw" -> "T2*w").

    Parameters
    ----------
    track : str
        ``<role>`` or ``<role>:<description>`` (a :class:`StudyFile`'s ``track``).

    Returns
    -------
    str
        The role's display name, then the description; for role "unknown" the description alone.

    Examples
    --------
    >>> track_label("ROI:reftube"), track_label("T2starw"), track_label("PET"), track_label("unknown:notes")
    ('ROI reftube', 'T2*w', 'PET', 'notes')
    """
    role, _, desc = track.partition(":")
    text = ROLES.get(role, ("", role))[1]
    if role == "unknown" and desc:
        return desc
    return f"{text} {desc}" if desc else text


def track_order(track: str) -> tuple:
    """Sort key of a track: anatomy first (drawn at the bottom), hot spots last (on top).

    Parameters
    ----------
    track : str
        ``<role>`` or ``<role>:<description>``.

    Returns
    -------
    tuple
        ``(rank of the role, track)``; unknown roles after every known one.

    Examples
    --------
    >>> sorted(["PET", "T2w", "ROI:reftube", "19F", "labels"], key=track_order)
    ['T2w', 'ROI:reftube', 'labels', '19F', 'PET']
    """
    role = track.partition(":")[0]
    return (_ROLE_ORDER.get(role, len(_ROLE_ORDER)), track)


def _entities(name: str) -> tuple[dict, str]:
    stem = re.sub(r"(\.nii\.gz|\.nii|\.ome\.tiff?|\.tiff?|\.ome\.zarr|\.zarr|\.dcm)$", "", name, flags=re.I)
    parts = stem.split("_")
    entities = {}
    for part in parts[:-1]:
        if "-" in part:
            key, _, value = part.partition("-")
            entities[key] = value
    suffix = parts[-1] if len(parts) > 1 or "-" not in parts[-1] else ""
    return entities, suffix


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _is_dicom_dir(path: Path) -> bool:
    for child in path.iterdir():
        if child.is_file() and child.suffix.lower() in (".dcm", ".ima", "") and _is_dicom_file(child):
            return True
    return False


def _images_in(folder: Path):
    """Image paths in a data-type folder: files, DICOM series folders, Zarr stores."""
    if _is_dicom_dir(folder):
        yield folder
        return
    for child in sorted(folder.iterdir()):
        name = child.name.lower()
        if name.startswith("."):
            continue
        if child.is_dir():
            if name.endswith(".zarr"):
                yield child
            elif _is_dicom_dir(child):
                yield child
        elif not name.endswith(_SIDE_FILES) and not name.endswith(".provenance.json"):
            yield child


def is_image_path(path) -> bool:
    """True for a path an image reader may open (by its ending, a DICOM header, or a DICOM/Zarr folder).

    Parameters
    ----------
    path : str or Path
        A file or folder (only its name, its first 132 bytes or its folder listing are read).

    Returns
    -------
    bool

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root
    >>> is_image_path("t2.nii.gz"), is_image_path("notes.txt")
    (True, False)
    >>> is_image_path(sample_study_root() / "sub-01" / "ses-day1" / "pet")   # a DICOM series folder
    True
    """
    p = Path(path)
    name = p.name.lower()
    if name.endswith(_IMAGE_ENDINGS):
        return True
    if p.is_dir():
        return (p / ".zattrs").exists() or (p / "zarr.json").exists() or _is_dicom_dir(p)
    return _is_dicom_file(p)


def discover(root) -> list[StudyFile]:
    """Every image of a study folder, sorted by subject, day, data type and name.

    A BIDS-like folder (``sub-*/ses-*/<type>/``) is read by its names; any
    other folder as a scanner export (see the module docstring).

    Parameters
    ----------
    root : str or Path
        The study folder (holding ``sub-*`` folders) or a scanner export folder.

    Returns
    -------
    list of StudyFile
        One per image file, DICOM series folder or Zarr store, with subject, session, day (after
        the first session, or from the folder name ``day<N>``), data type, BIDS suffix, modality,
        role, phase and track.

    Raises
    ------
    InputError
        If ``root`` is not a folder or holds no image at all.

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root
    >>> files = discover(sample_study_root())
    >>> sorted({f.role for f in files if f.session == "day1"})      # doctest: +NORMALIZE_WHITESPACE
    ['19F', 'MPI', 'PET', 'ROI', 'SPECT', 'T1w', 'T2starw', 'T2w', 'fluorescence']
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the study's top folder (the one holding sub-* folders).")
    found: list[StudyFile] = []
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    for subject_dir in subjects:
        sessions_ = sorted(p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        for session_dir in sessions_ or [subject_dir]:
            session = session_dir.name[4:] if session_dir.name.startswith("ses-") else ""
            for type_dir in sorted(p for p in session_dir.iterdir() if p.is_dir()):
                if type_dir.name.startswith("."):
                    continue
                for image in _images_in(type_dir):
                    entities, suffix = _entities(image.name)
                    if image.is_dir() and not image.name.lower().endswith(".zarr"):
                        suffix = suffix or type_dir.name
                    found.append(
                        StudyFile(
                            image,
                            subject_dir.name[4:],
                            session,
                            type_dir.name,
                            suffix or type_dir.name,
                            entities,
                            session_dir=session_dir,
                        )
                    )
    if not subjects:
        found = _discover_export(root)
    if not found:
        raise InputError(
            f"{root} holds no images (NIfTI, DICOM, TIFF or OME-Zarr) in sub-*/ses-*/<type>/ folders "
            "or below; check the path or the layout."
        )
    found.sort(key=lambda f: (f.subject, f.day if f.day is not None else -1, f.session, f.datatype, str(f.path)))
    return found


#: A scanner export may be large: how many files and how deep :func:`discover` looks.
_EXPORT_MAX_FILES = 50_000
_EXPORT_MAX_DEPTH = 8
_DICOM_TAGS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "SeriesDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesDescription",
    "ProtocolName",
    "Modality",
    "SeriesNumber",
)


def _discover_export(root: Path) -> list[StudyFile]:
    """A folder without ``sub-*`` folders: DICOM series by their headers, other images by their folders."""
    import pydicom

    dicom_series: dict[str, dict] = {}
    others: list[Path] = []
    n_files = 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            if d.lower().endswith(".zarr"):
                others.append(here / d)  # a Zarr store is one image
            elif depth < _EXPORT_MAX_DEPTH:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            n_files += 1
            if n_files > _EXPORT_MAX_FILES:
                raise InputError(f"{root} holds more than {_EXPORT_MAX_FILES} files; point at one study's folder.")
            if name.startswith(".") or name.lower().endswith(_SIDE_FILES) or name.endswith(".provenance.json"):
                continue
            path = here / name
            if name.lower().endswith((".nii", ".nii.gz", ".tif", ".tiff")):
                others.append(path)
                continue
            if not _is_dicom_file(path):
                others.append(path)  # reported as "not an image" by open_study
                continue
            try:
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=list(_DICOM_TAGS))
            except Exception:  # noqa: BLE001 - a corrupt header: reported when the series is opened
                others.append(path)
                continue
            uid = str(ds.get("SeriesInstanceUID", "") or f"(no UID) {here}")
            entry = dicom_series.setdefault(
                uid, {"folders": set(), "header": {k: str(ds.get(k, "") or "") for k in _DICOM_TAGS}}
            )
            entry["folders"].add(here)
    files: list[StudyFile] = []
    # a folder holding one series only is that series; a mixed folder keeps the series UID to pick it
    series_per_folder: dict[Path, int] = {}
    for entry in dicom_series.values():
        for folder in entry["folders"]:
            series_per_folder[folder] = series_per_folder.get(folder, 0) + 1
    first_date: dict[str, str] = {}
    for entry in dicom_series.values():
        h = entry["header"]
        subject = _clean(h["PatientID"] or h["PatientName"] or root.name)
        date = h["StudyDate"] or h["SeriesDate"]
        if date and (subject not in first_date or date < first_date[subject]):
            first_date[subject] = date
    for uid, entry in dicom_series.items():
        h = entry["header"]
        folders = sorted(entry["folders"])
        folder = folders[0] if len(folders) == 1 else Path(os.path.commonpath([str(f) for f in folders]))
        subject = _clean(h["PatientID"] or h["PatientName"] or root.name)
        date = h["StudyDate"] or h["SeriesDate"]
        days = _days_between(first_date.get(subject), date)
        session = date or "unknown-date"
        dicom = dict(h)
        if series_per_folder.get(folder, 0) > 1 or len(folders) > 1:
            dicom["select_series"] = uid
        role_hint = role_from_words(h["SeriesDescription"], h["ProtocolName"]) or ""
        modality = h["Modality"].upper()
        datatype = {"PT": "pet", "NM": "spect", "CT": "ct", "SEG": "rois"}.get(
            modality, "anat" if modality == "MR" else modality.lower() or "dicom"
        )
        if modality == "MR" and role_hint == "19F":
            datatype = "f19"
        suffix = role_hint if modality == "MR" and role_hint else datatype
        files.append(
            StudyFile(
                folder,
                subject,
                session,
                datatype,
                suffix,
                {},
                session_dir=folder.parent,
                timepoint_days=days,
                dicom=dicom,
            )
        )
    for path in others:
        rel = path.relative_to(root).parts
        subject = _clean(rel[0]) if len(rel) >= 3 else _clean(root.name)
        session = _clean(rel[1]) if len(rel) >= 3 else (_clean(rel[0]) if len(rel) == 2 else "")
        entities, suffix = _entities(path.name)
        datatype = path.parent.name if len(rel) >= 2 else ""
        suffix = suffix or re.sub(
            r"(\.nii\.gz|\.nii|\.ome\.tiff?|\.tiff?|\.ome\.zarr|\.zarr)$", "", path.name, flags=re.I
        )
        session_dir = root.joinpath(*rel[:2]) if len(rel) >= 3 else path.parent
        files.append(StudyFile(path, subject, session, datatype, suffix, entities, session_dir=session_dir))
    return files


def _clean(text: str) -> str:
    text = str(text).strip()
    for prefix in ("sub-", "ses-"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    return re.sub(r"[^A-Za-z0-9.+-]+", "", text.replace("^", "-")) or "unnamed"


def _days_between(first: str | None, date: str | None) -> float | None:
    try:
        d0 = _dt.date(int(first[:4]), int(first[4:6]), int(first[6:8]))
        d1 = _dt.date(int(date[:4]), int(date[4:6]), int(date[6:8]))
    except (TypeError, ValueError):
        return None
    return float((d1 - d0).days)


def sessions(files: list[StudyFile], subject: str | None = None) -> list[str]:
    """Session names in time order (for one subject if given).

    Parameters
    ----------
    files : list of StudyFile
        From :func:`discover`.
    subject : str, optional
        Only this subject's sessions (e.g. "01").

    Returns
    -------
    list of str
        Sorted by day (sessions without a day first), then name.

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root
    >>> sessions(discover(sample_study_root()), subject="01")
    ['day0', 'day1', 'day3', 'day7']
    """
    seen = {}
    for f in files:
        if subject is None or f.subject == subject:
            seen.setdefault(f.session, f.day)
    return sorted(seen, key=lambda s: (seen[s] if seen[s] is not None else -1, s))


# --------------------------------------------------------------------------- transforms
@dataclass
class StudyTransform:
    """A registration result found in a session's ``xfm/`` folder (``*_from-<moving>_to-<fixed>.tfm``)."""

    path: Path
    subject: str
    session: str
    moving: str
    fixed: str


def discover_transforms(files: list[StudyFile]) -> list[StudyTransform]:
    """The transform files in the ``xfm/`` folders of the sessions of ``files``.

    Parameters
    ----------
    files : list of StudyFile
        From :func:`discover` (their session folders are searched).

    Returns
    -------
    list of StudyTransform
        One per file named ``*from-<moving>_to-<fixed>.tfm`` (or ``.txt``, ``.mat``).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     session = Path(tmp) / "sub-01" / "ses-day1"
    ...     for name in ("anat/sub-01_ses-day1_T2w.nii.gz", "xfm/sub-01_ses-day1_from-pet_to-anat.tfm"):
    ...         (session / name).parent.mkdir(parents=True, exist_ok=True)
    ...         (session / name).touch()
    ...     [(t.subject, t.session, t.moving, t.fixed) for t in discover_transforms(discover(tmp))]
    [('01', 'day1', 'pet', 'anat')]
    """
    out, seen = [], set()
    for f in files:
        if f.session_dir is None or (f.subject, f.session) in seen:
            continue
        seen.add((f.subject, f.session))
        xfm = Path(f.session_dir) / "xfm"
        if not xfm.is_dir():
            continue
        for path in sorted(xfm.iterdir()):
            match = re.search(r"from-([A-Za-z0-9]+)_to-([A-Za-z0-9]+)\.(tfm|txt|mat)$", path.name)
            if match:
                out.append(StudyTransform(path, f.subject, f.session, match.group(1), match.group(2)))
    return out


# --------------------------------------------------------------------------- the study
@dataclass
class Study:
    """A discovered study: its files, transforms, and what could not be placed.

    ``problems`` are one-line messages for the user (unknown roles, non-image
    files, missing modalities); the study opens without those files.

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root
    >>> study = open_study(sample_study_root())
    >>> study.sessions("01"), study.day("01", "day3"), study.tracks("01")[:3]
    (['day0', 'day1', 'day3', 'day7'], 3.0, ['T1w', 'T2w', 'T2starw'])
    >>> pet = study.file("01", "day1", "PET")
    >>> pet.modality, pet.phase, study.relative(pet.path), study.transform_for(pet).path.name
    ('PT', 'post', 'sub-01/ses-day1/pet', 'sub-01_ses-day1_from-pet_to-anat.tfm')
    """

    root: Path
    files: list[StudyFile]
    transforms: list[StudyTransform] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)

    def subjects(self) -> list[str]:
        return sorted({f.subject for f in self.files})

    def sessions(self, subject: str) -> list[str]:
        return sessions(self.files, subject)

    def day(self, subject: str, session: str) -> float | None:
        return next((f.day for f in self.files if f.subject == subject and f.session == session), None)

    def session_files(self, subject: str, session: str) -> list[StudyFile]:
        return [f for f in self.files if f.subject == subject and f.session == session]

    def tracks(self, subject: str) -> list[str]:
        """Every track of a subject, anatomy first."""
        return sorted({f.track for f in self.files if f.subject == subject}, key=track_order)

    def file(self, subject: str, session: str, track: str) -> StudyFile | None:
        """The image of ``track`` at a session (the first when a session has several), else None."""
        return next((f for f in self.files if f.subject == subject and f.session == session and f.track == track), None)

    def missing(self, subject: str) -> list[tuple]:
        """(session, track) pairs where a track seen at another post-injection timepoint has no image.

        The baseline (pre) session is expected to hold anatomy only and is not reported.
        """
        out = []
        for session in self.sessions(subject):
            files = self.session_files(subject, session)
            if files and all(f.phase == "pre" for f in files):
                continue
            have = {f.track for f in files}
            out.extend((session, t) for t in self.tracks(subject) if t not in have)
        return out

    def transform_for(self, f: StudyFile) -> StudyTransform | None:
        """The registration of ``f``'s data type to the session anatomy, if one was saved."""
        return next(
            (
                t
                for t in self.transforms
                if t.subject == f.subject and t.session == f.session and t.moving == f.datatype and t.fixed == "anat"
            ),
            None,
        )

    def relative(self, path) -> str:
        """``path`` relative to the study root (POSIX separators), or absolute when outside it."""
        try:
            return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(Path(path).resolve())


def open_study(root) -> Study:
    """Discover a study and say what could not be placed.

    Parameters
    ----------
    root : str or Path
        The study folder or a scanner export (see :func:`discover`).

    Returns
    -------
    Study
        Its image files, the transforms of its ``xfm/`` folders, the non-image files left out
        (``ignored``) and one-line ``problems``: files left out, images of unknown role, modalities
        missing at a post-injection session.

    Raises
    ------
    InputError
        If the folder holds no image.

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root
    >>> study = open_study(sample_study_root())
    >>> study.subjects(), study.sessions("01")
    (['01'], ['day0', 'day1', 'day3', 'day7'])
    """
    root = Path(root)
    files = discover(root)
    images, ignored, problems = [], [], []
    for f in files:
        if is_image_path(f.path):
            images.append(f)
        else:
            ignored.append(f.path)
    if ignored:
        names = ", ".join(_short_path(p, root) for p in ignored[:4]) + (", ..." if len(ignored) > 4 else "")
        problems.append(f"{len(ignored)} file(s) are not images and were left out: {names}.")
    if not images:
        raise InputError(
            f"{root} holds no images (NIfTI, DICOM, TIFF or OME-Zarr); only other files "
            f"({len(ignored)}) were found; check the path."
        )
    unknown = [f for f in images if f.role == "unknown"]
    if unknown:
        names = ", ".join(_short_path(f.path, root) for f in unknown[:4]) + (", ..." if len(unknown) > 4 else "")
        problems.append(
            f"{len(unknown)} image(s) of unknown role (name them with a BIDS suffix such as _T2w, "
            f"_pet, _19F): {names}; they are listed but not shown until ticked."
        )
    study = Study(root, images, discover_transforms(images), problems, ignored)
    for subject in study.subjects():
        gaps: dict[str, list[str]] = {}
        for session, track in study.missing(subject):
            gaps.setdefault(session, []).append(track_label(track))
        for session, labels in gaps.items():
            day = study.day(subject, session)
            when = f"day {day:g}" if day is not None else session
            problems.append(f"subject {subject}, {when}: no {', '.join(labels)} image.")
    return study


def _short_path(path, root) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- study state
STATE_NAME = "immunotrack_state.json"
STATE_FORMAT = "napari-immunotrack study state"
STATE_VERSION = 1


def default_state_path(root) -> Path:
    """Where a study's state is saved unless the user picks another file: ``<study>/immunotrack_state.json``.

    Parameters
    ----------
    root : str or Path
        The study folder.

    Returns
    -------
    Path

    Examples
    --------
    >>> default_state_path("/data/study").as_posix()
    '/data/study/immunotrack_state.json'
    """
    return Path(root) / STATE_NAME


def saved_layers_dir(state_path) -> Path:
    """The folder beside a state file where user-drawn ROI/labels layers are saved as NIfTI.

    Parameters
    ----------
    state_path : str or Path
        The state file.

    Returns
    -------
    Path
        ``<state name without .json>_layers`` in the same folder.

    Examples
    --------
    >>> saved_layers_dir("/data/study/immunotrack_state.json").as_posix()
    '/data/study/immunotrack_state_layers'
    """
    state_path = Path(state_path)
    return state_path.with_name(
        state_path.name[: -len(".json")] + "_layers"
        if state_path.name.endswith(".json")
        else state_path.name + "_layers"
    )


def new_state(study_root, state_path, subject: str, session: str) -> dict:
    """An empty state dictionary (what :func:`save_state` writes; fill ``layers``, ``parameters``, ``view``).

    Parameters
    ----------
    study_root : str or Path
        The study folder; stored relative to the state file's folder.
    state_path : str or Path
        Where the state will be saved.
    subject, session : str
        The subject and session shown.

    Returns
    -------
    dict
        ``format``, ``version``, ``study``, ``subject``, ``session`` and empty ``layers``,
        ``adjustments``, ``parameters``, ``view``.

    Examples
    --------
    >>> state = new_state("/data/study", "/data/states/mouse1.json", "01", "day1")
    >>> state["study"], state["session"], state["layers"]
    ('../study', 'day1', [])
    """
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "study": _relative_to(Path(study_root), Path(state_path).parent),
        "subject": subject,
        "session": session,
        "layers": [],
        "adjustments": [],
        "parameters": {},
        "view": {},
    }


def _relative_to(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())


def save_state(state: dict, path, overwrite: bool = False) -> Path:
    """Write a study state as readable JSON, atomically; an existing file is kept unless ``overwrite``.

    Parameters
    ----------
    state : dict
        From :func:`new_state`, filled in (checked: format, version, study, subject, session, layers).
    path : str or Path
        The state file.
    overwrite : bool, default False
        Replace an existing file (refused otherwise).

    Returns
    -------
    Path
        The written file; it also records ``saved_utc`` and the ``software`` version.

    Raises
    ------
    InputError
        A damaged state; OutputExistsError when ``path`` exists and not ``overwrite``.

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     state = new_state(folder, os.path.join(folder, STATE_NAME), "01", "day1")
    ...     p = save_state(state, os.path.join(folder, STATE_NAME))
    ...     load_state(p)["session"], load_state(p)["software"].startswith("napari-immunotrack")
    ('day1', True)
    """
    from . import __version__
    from .outputs import write_json

    _validate(state, Path(path))
    state = dict(state)
    state["saved_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    state["software"] = f"napari-immunotrack {__version__}"
    return write_json(path, state, overwrite=overwrite)


_HASHED_LABELS = re.compile(r"-[0-9a-f]{12}\.nii\.gz$")


def save_state_with_labels(state: dict, path, labels: dict[str, object], overwrite: bool = False) -> Path:
    """Save a state and the labels Volumes it refers to; a crash leaves the old state or the new one, complete.

    ``labels`` maps the relative path given in a layer entry's ``saved``
    (``<state>_layers/<name>.nii.gz``) to its labels Volume. Each volume is
    written under a new, content-addressed name (``<name>-<sha256[:12]>.nii.gz``)
    so it never replaces a file the previous state uses; the entry gets that
    name and its SHA-256. The JSON is written last, by an atomic rename: that
    rename is the switch from the old state to the new. Only then are the
    label files no state refers to any more removed (the previous state's,
    and leftovers of a save that was killed).

    Parameters
    ----------
    state : dict
        The state; not changed (a copy is saved with the new names and hashes).
    path : str or Path
        The state file.
    labels : dict of str to Volume
        Relative ``saved`` path of a layer entry -> its label Volume.
    overwrite : bool, default False
        Replace an existing state file.

    Returns
    -------
    Path
        The state file.

    Raises
    ------
    ValueError
        A key of ``labels`` is not the ``saved`` entry of any layer.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from napari_immunotrack.volume import Volume
    >>> roi = Volume(np.ones((2, 2, 2), np.uint8), np.eye(4), unit="label")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / STATE_NAME
    ...     state = new_state(folder, path, "01", "day1")
    ...     state["layers"].append({"name": "tumour ROI", "saved": "immunotrack_state_layers/tumour.nii.gz"})
    ...     saved = load_state(save_state_with_labels(state, path, {"immunotrack_state_layers/tumour.nii.gz": roi}))
    ...     entry = saved["layers"][0]
    ...     entry["saved"] == f"immunotrack_state_layers/tumour-{entry['sha256'][:12]}.nii.gz"
    True
    """
    from .io import save_labels
    from .outputs import check_output
    from .provenance import sha256_path

    path = Path(path)
    _validate(state, path)
    check_output(path, overwrite)
    previous = _saved_files(path) if path.exists() else set()
    state = json.loads(json.dumps(state))  # the caller's dictionary is not changed
    for rel, volume in labels.items():
        entries = [e for e in state["layers"] if e.get("saved") == rel]
        if not entries:
            raise ValueError(f"no layer entry of the state is saved as {rel}")
        draft = path.parent / rel
        draft.parent.mkdir(parents=True, exist_ok=True)
        draft = draft.with_name("." + draft.name[: -len(".nii.gz")] + ".draft.nii.gz")
        save_labels(volume, draft, overwrite=True)
        digest = sha256_path(draft)
        final = draft.with_name(Path(rel).name[: -len(".nii.gz")] + f"-{digest[:12]}.nii.gz")
        os.replace(draft, final)  # an existing file of that name has the same content
        new_rel = final.relative_to(path.parent).as_posix()
        for entry in entries:
            entry.update(saved=new_rel, sha256=digest)
    save_state(state, path, overwrite=overwrite)
    _remove_unused_label_files(path, previous, used=_saved_in(state, path))
    return path


def _saved_files(state_path: Path) -> set:
    """The resolved label files the state saved at ``state_path`` refers to (empty when it cannot be read)."""
    try:
        return _saved_in(load_state(state_path), state_path)
    except InputError:
        return set()


def _saved_in(state: dict, state_path: Path) -> set:
    """The resolved label files ``state`` (saved at ``state_path``) refers to."""
    return {(state_path.parent / e["saved"]).resolve() for e in state["layers"] if isinstance(e.get("saved"), str)}


def _remove_unused_label_files(state_path: Path, candidates: set, used: set) -> None:
    """Remove label files the state at ``state_path`` does not use (``used``): ``candidates`` (the previous
    state's) and, in its layers folder, hashed or draft files left by an interrupted save. Other files are kept."""
    folder = saved_layers_dir(state_path)
    leftovers = set()
    if folder.is_dir():
        for f in folder.iterdir():
            if _HASHED_LABELS.search(f.name) or (f.name.startswith(".") and (".draft." in f.name or ".part" in f.name)):
                leftovers.add(f.resolve())
    # the temporary JSON of a killed save (atomic_output names it .<name>.<random>.part.json)
    leftovers.update(f.resolve() for f in state_path.parent.glob(f".{state_path.name}.*.part*"))
    for f in (set(candidates) | leftovers) - used:
        try:
            f.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # e.g. read-only: the state is saved; the stale file only takes space
            warnings.warn(f"could not remove the unused label file {f} ({exc})", ImmunotrackWarning, stacklevel=3)


def load_state(path) -> dict:
    """Read a study state file; a missing, corrupt or foreign file is an InputError saying so.

    The file itself is never modified.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`save_state`.

    Returns
    -------
    dict
        The state.

    Raises
    ------
    InputError
        Missing, not JSON, not a study state, a newer version, or a damaged entry.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     (Path(folder) / "other.json").write_text('{"format": "something else"}')
    ...     try:
    ...         load_state(Path(folder) / "other.json")
    ...     except InputError as error:
    ...         print(str(error).split("other.json ")[1])
    28
    is not a napari-immunotrack study state (no "format": "napari-immunotrack study state"); it was left untouched.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist; choose a saved study state file ({STATE_NAME}).")
    try:
        text = path.read_text(encoding="utf-8")
        state = json.loads(text)
    except UnicodeDecodeError:
        raise InputError(f"{path} is not a study state file (not text); it was left untouched.") from None
    except ValueError as exc:
        raise InputError(
            f"{path} is corrupt (JSON error at line {getattr(exc, 'lineno', '?')}: "
            f"{getattr(exc, 'msg', exc)}); it was left untouched: fix it or open the study "
            "folder instead."
        ) from None
    _validate(state, path)
    return state


def _validate(state, path: Path) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(
            f'{path} is not a napari-immunotrack study state (no "format": "{STATE_FORMAT}"); it was left untouched.'
        )
    version = state.get("version")
    if not isinstance(version, int) or version > STATE_VERSION:
        raise InputError(
            f"{path} has state version {version!r}; this napari-immunotrack reads version "
            f"{STATE_VERSION} or older: update the package."
        )
    for key, kind in (("study", str), ("layers", list), ("subject", str), ("session", str)):
        if not isinstance(state.get(key), kind):
            raise InputError(
                f"{path}: the study state has no valid {key!r} ({kind.__name__} expected); "
                "it is damaged: fix it or open the study folder instead."
            )
    for i, entry in enumerate(state["layers"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InputError(f"{path}: layer entry {i} is damaged (no name); fix it or open the study folder instead.")


def state_study_root(state: dict, state_path) -> Path:
    """The study folder a state points to (its ``study`` entry is relative to the state file's folder).

    Parameters
    ----------
    state : dict
        A study state.
    state_path : str or Path
        The state file.

    Returns
    -------
    Path
        Absolute (resolved) when ``study`` is relative, else ``study`` itself.

    Examples
    --------
    >>> state = new_state("/data/study", "/data/states/mouse1.json", "01", "day1")
    >>> state_study_root(state, "/data/states/mouse1.json").as_posix()
    '/data/study'
    """
    root = Path(state["study"])
    return root if root.is_absolute() else (Path(state_path).parent / root).resolve()


@dataclass
class StateCheck:
    """What :func:`check_state` found: the study root and the layers whose files moved or changed."""

    root: Path
    root_exists: bool
    missing: list[str] = field(default_factory=list)  # layer names whose file is not there
    changed: list[str] = field(default_factory=list)  # layer names whose file's SHA-256 differs
    paths: dict[str, Path] = field(default_factory=dict)  # layer name -> resolved path

    @property
    def ok(self) -> bool:
        return self.root_exists and not self.missing and not self.changed

    def message(self) -> str:
        """One clear message for the user ('' when all is well)."""
        parts = []
        if not self.root_exists:
            parts.append(f"the study folder {self.root} is not there (moved?): locate it")
        if self.missing:
            parts.append("missing: " + ", ".join(f"{n} ({self.paths[n]})" for n in self.missing))
        if self.changed:
            parts.append("changed since the state was saved (SHA-256 differs): " + ", ".join(self.changed))
        return "; ".join(parts)


def check_state(state: dict, state_path, root=None, hashes: bool = True) -> StateCheck:
    """Check that the files a state points to are there and unchanged.

    Parameters
    ----------
    state : dict
        From :func:`load_state`.
    state_path : path
        The state file (relative paths start from its folder).
    root : path, optional
        The study folder, when the user located a moved study.
    hashes : bool
        Compare SHA-256 content hashes (else only existence).

    Returns
    -------
    StateCheck
        ``root``, ``root_exists``, the layer names whose file is ``missing`` or ``changed``, the
        resolved ``paths``; ``ok`` and ``message()`` summarise.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     (Path(folder) / "t2.nii.gz").write_bytes(b"image")
    ...     state = new_state(folder, Path(folder) / STATE_NAME, "01", "day1")
    ...     state["layers"] += [{"name": "T2w", "source": "t2.nii.gz", "sha256": "0" * 64},
    ...                         {"name": "PET", "source": "pet.nii.gz"}]
    ...     check = check_state(state, Path(folder) / STATE_NAME)
    ...     check.ok, check.missing, check.changed
    5
    (False, ['PET'], ['T2w'])
    """
    from .provenance import sha256_path

    root = Path(root) if root is not None else state_study_root(state, state_path)
    check = StateCheck(root, root.is_dir())
    for entry in state["layers"]:
        name = entry["name"]
        if entry.get("saved"):
            path = Path(state_path).parent / entry["saved"]
        elif entry.get("source"):
            source = Path(entry["source"])
            path = source if source.is_absolute() else root / source
        else:
            continue
        check.paths[name] = path
        if not path.exists():
            check.missing.append(name)
        elif hashes and entry.get("sha256") and sha256_path(path) != entry["sha256"]:
            check.changed.append(name)
    return check


__all__ = [
    "StudyFile",
    "Study",
    "StudyTransform",
    "discover",
    "sessions",
    "open_study",
    "discover_transforms",
    "role_from_words",
    "track_label",
    "track_order",
    "is_image_path",
    "ROLES",
    "STATE_NAME",
    "default_state_path",
    "saved_layers_dir",
    "new_state",
    "save_state",
    "save_state_with_labels",
    "load_state",
    "check_state",
    "state_study_root",
    "StateCheck",
]
