"""Finding the files of a study (pure; no napari).

A study folder holds one folder per subject, per session (timepoint) and per
data type, BIDS-like::

    mouse_study/
      ground_truth.json                       (simulated studies only)
      sub-01/ses-day0/anat/sub-01_ses-day0_T2starw.nii.gz
      sub-01/ses-day1/pet/<DICOM series files or one folder per series>
      sub-01/ses-day1/f19/sub-01_ses-day1_19F.nii.gz
      ...

:func:`discover` lists every image with its subject, session, day, data type
and role (the BIDS suffix: T1w, T2w, T2starw, pet, spect, 19F, mpi, fluo, or
``dseg``/``mask`` for labels). Files it cannot place are reported, not dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from .errors import InputError

_SIDE_FILES = (".json", ".csv", ".tsv", ".txt", ".md", ".tfm", ".html", ".png", ".svg", ".pdf")
_LABEL_SUFFIXES = ("dseg", "mask", "roi", "labels", "label")


@dataclass
class StudyFile:
    """One image of a study."""

    path: Path
    subject: str
    session: str
    datatype: str
    suffix: str
    entities: dict = field(default_factory=dict)

    @property
    def day(self) -> Optional[float]:
        """Timepoint in days from the session name (``ses-day3`` -> 3.0), else None."""
        match = re.search(r"day-?(\d+(?:\.\d+)?)", self.session)
        return float(match.group(1)) if match else None

    @property
    def is_labels(self) -> bool:
        return self.suffix.lower() in _LABEL_SUFFIXES or self.datatype == "rois"


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


def _is_dicom_dir(path: Path) -> bool:
    for child in path.iterdir():
        if child.is_file() and child.suffix.lower() in (".dcm", ".ima", ""):
            with open(child, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
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


def discover(root) -> List[StudyFile]:
    """Every image of a study folder, sorted by subject, day, data type and name.

    Raises InputError when the folder holds no image at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the study's top folder (the one holding sub-* folders).")
    found: List[StudyFile] = []
    subjects = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    for subject_dir in subjects:
        sessions = sorted(p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        for session_dir in sessions or [subject_dir]:
            session = session_dir.name[4:] if session_dir.name.startswith("ses-") else ""
            for type_dir in sorted(p for p in session_dir.iterdir() if p.is_dir()):
                for image in _images_in(type_dir):
                    entities, suffix = _entities(image.name)
                    if image.is_dir() and not image.name.lower().endswith(".zarr"):
                        suffix = suffix or type_dir.name
                    found.append(StudyFile(image, subject_dir.name[4:], session, type_dir.name,
                                           suffix or type_dir.name, entities))
    if not found:
        raise InputError(f"{root} holds no images in sub-*/ses-*/<type>/ folders; check the path or the layout.")
    found.sort(key=lambda f: (f.subject, f.day if f.day is not None else -1, f.session, f.datatype, str(f.path)))
    return found


def sessions(files: List[StudyFile], subject: Optional[str] = None) -> List[str]:
    """Session names in time order (for one subject if given)."""
    seen = {}
    for f in files:
        if subject is None or f.subject == subject:
            seen.setdefault(f.session, f.day)
    return sorted(seen, key=lambda s: (seen[s] if seen[s] is not None else -1, s))
