"""Reading a study's files as Volumes placed in the session anatomy's (MRI) world (no napari).

A session's saved registrations (``<session>/xfm/*_from-<datatype>_to-anat.tfm``)
move each modality's affine into the MRI world (the data stay on their native
grid); label maps get their names from the BIDS ``.tsv`` beside them. Used by
the Study dock's session loader, the napari sample data and the tests; see
``docs/methods/study-viewer.md#placing-each-image``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Layer order, bottom to top: anatomy, labels, then hot spots.
_ORDER = {"MR": 0, "CT": 0, "OT": 1, "SEG": 2, "OPT": 3, "NM": 4, "MPI": 5, "F19": 6, "PT": 7}


def _sidecar(path: Path) -> dict:
    name = path.name
    for ext in (".nii.gz", ".ome.tif", ".ome.tiff", ".nii", ".tif", ".tiff"):
        if name.lower().endswith(ext):
            side = path.with_name(name[: -len(ext)] + ".json")
            if side.is_file():
                try:
                    return json.loads(side.read_text())
                except ValueError:
                    return {}
    return {}


def session_transforms(session_dir: Path, errors: list | None = None) -> dict:
    """Registration results saved in ``<session>/xfm/``: {datatype: fixed(anat)->moving 4x4 RAS}.

    Files are named ``*_from-<datatype>_to-anat.tfm`` (ITK, fixed physical point -> moving).
    An unreadable file raises InputError, or, when ``errors`` (a list) is given, its
    message is appended there and the other files are still read.
    """
    from .errors import InputError, one_line
    from .io.transforms import read_transform

    found = {}
    xfm = Path(session_dir) / "xfm"
    if xfm.is_dir():
        for tfm in sorted(xfm.glob("*_from-*_to-anat.tfm")):
            datatype = tfm.name.split("_from-")[1].split("_to-")[0]
            try:
                found[datatype] = read_transform(tfm)
            except InputError as exc:
                if errors is None:
                    raise
                errors.append(one_line(exc))
    return found


def label_names_beside(path: Path) -> dict:
    """Label names from the BIDS ``.tsv`` beside a label map (``index<TAB>name``), else {}
    (:func:`napari_immunotrack.study.read_label_names`)."""
    from .study import read_label_names

    return read_label_names(path)


#: Modalities from another scanner than the MRI: without a saved registration they are not in the MRI's world.
NEEDS_REGISTRATION = ("PT", "NM", "MPI", "CT")


def load_study_file(f, transforms: dict | None = None) -> list:
    """The Volumes of one study file, placed in the session anatomy's (MRI) world.

    Parameters
    ----------
    f : StudyFile
    transforms : dict, optional
        {datatype: fixed(anat)->moving 4x4 RAS} (see :func:`session_transforms`);
        a matching one moves the affine into the MRI world (data untouched).

    Each Volume's ``metadata["study"]`` says where it comes from (subject,
    session, day, datatype, suffix, role, track) and, for PET/SPECT/MPI/CT,
    whether a registration placed it (``registered``).
    """
    from .io import load_volumes

    transforms = transforms or {}
    volumes = load_volumes(f.path)
    uid = f.dicom.get("select_series")
    if uid:  # a scanner export folder holding several series: keep this file's one
        volumes = [v for v in volumes if str(v.metadata.get("SeriesInstanceUID", "")) == uid] or volumes[:1]
    out = []
    role_modality = f.modality
    for volume in volumes:
        side = _sidecar(f.path)
        if volume.modality == "OPT" and "ImageToWorldAffine" in side:
            volume = volume.replace(affine=np.array(side["ImageToWorldAffine"], float))
        if (
            role_modality not in ("OT", "SEG")
            and volume.modality in ("MR", "OT")
            and role_modality != volume.modality
            and "Modality" not in side
            and not f.dicom
        ):
            volume = volume.replace(modality=role_modality)  # a plain NIfTI named *_pet, *_19F, ...
        registered = None
        if f.datatype in transforms:
            # a moving voxel at world p sits at fixed world T^-1 p
            volume = volume.replace(affine=np.linalg.inv(transforms[f.datatype]) @ volume.affine)
            volume.metadata["registered_to"] = "anat"
            registered = True
        elif volume.modality in NEEDS_REGISTRATION:
            registered = False
        if f.is_labels:
            volume = volume.replace(modality="SEG", unit="label")
            names = label_names_beside(Path(f.path))
            if names and not volume.metadata.get("label_names"):
                volume.metadata["label_names"] = names
        volume.metadata["study"] = {
            "subject": f.subject,
            "session": f.session,
            "day": f.day,
            "datatype": f.datatype,
            "suffix": f.suffix,
            "role": f.role,
            "track": f.track,
            "registered": registered,
        }
        suffix = f.suffix if f.suffix not in (f.datatype,) else ""
        # labels are named as the Study dock names them ("ROI", "ROI reftube"), not by a bare "dseg"/"mask"
        base = f.label if f.is_labels else (suffix or volume.name or f.datatype)
        volume.name = f"{base} (day {f.day:g})" if f.day is not None else (volume.name or f.path.name)
        out.append(volume)
    return out


def load_session(root=None, session: str | None = None, subject: str | None = None) -> list:
    """The Volumes of one session, placed in the anatomy's (MRI) world.

    Registration transforms saved in the session's ``xfm/`` folder move a
    modality's affine into the MRI world (data untouched, so numbers stay on
    the native grid); an optical image is placed by the ``ImageToWorldAffine``
    of its JSON sidecar when there is one.

    Returns a list of (Volume, StudyFile) in display order (anatomy first).
    """
    from .data import sample_study_root
    from .study import discover, sessions

    root = Path(root) if root else sample_study_root()
    files = discover(root)
    subject = subject or files[0].subject
    names = sessions(files, subject)
    if session is None:
        post = [s for s in names if any(f.day and f.day > 0 for f in files if f.session == s and f.subject == subject)]
        session = (post or names)[0]
    session = session[4:] if session.startswith("ses-") else session
    chosen = [f for f in files if f.subject == subject and f.session == session]
    baseline = [
        f for f in files if f.subject == subject and f.day == 0 and f.session != session and f.datatype == "anat"
    ]
    if not chosen:
        from .errors import InputError

        raise InputError(f"no images for subject {subject} session {session}; sessions are: {', '.join(names)}.")
    session_dir = chosen[0].session_dir or root / f"sub-{subject}" / f"ses-{session}"
    transforms = session_transforms(Path(session_dir))
    out = []
    for f in chosen + baseline:  # the pre-injection anatomy comes along as the baseline
        for volume in load_study_file(f, transforms):
            out.append((volume, f))
    out.sort(key=lambda vf: _ORDER.get(vf[0].modality, 1))
    return out
