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

    Parameters
    ----------
    session_dir : Path
        The session folder.
    errors : list, optional
        Collects the one-line messages of unreadable files instead of raising.

    Returns
    -------
    dict
        ``{datatype: (4, 4) array}``, anatomy (MRI) world -> that modality's world, RAS mm; {} without
        an ``xfm`` folder.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io.transforms import write_transform
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 10.0
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "xfm").mkdir()
    ...     _ = write_transform(Path(tmp) / "xfm" / "sub-01_ses-day1_from-pet_to-anat.tfm", shift)
    ...     _ = (Path(tmp) / "xfm" / "sub-01_ses-day1_from-mpi_to-anat.tfm").write_text("not a transform")
    ...     problems = []
    ...     found = session_transforms(Path(tmp), problems)
    >>> {k: v[:3, 3].tolist() for k, v in found.items()}, len(problems)
    ({'pet': [10.0, 0.0, 0.0]}, 1)
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
    r"""Label names from the BIDS ``.tsv`` beside a label map (``index<TAB>name``), else {}.

    The one .tsv reader is :func:`napari_immunotrack.study.read_label_names`.

    Parameters
    ----------
    path : Path
        The label map (``x_dseg.nii.gz`` reads ``x_dseg.tsv``).

    Returns
    -------
    dict
        ``{label index: name}``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = (Path(tmp) / "sub-01_dseg.tsv").write_text("index\tname\n1\ttumour\n2\tspleen\n")
    ...     names = label_names_beside(Path(tmp) / "sub-01_dseg.nii.gz")
    >>> names, label_names_beside(Path("no-such_dseg.nii.gz"))
    ({1: 'tumour', 2: 'spleen'}, {})
    """
    from .study import read_label_names

    return read_label_names(path)


#: Modalities from another scanner than the MRI: without a saved registration they are not in the MRI's world.
NEEDS_REGISTRATION = ("PT", "NM", "MPI", "CT")


def load_study_file(f, transforms: dict | None = None) -> list:
    """The Volumes of one study file, placed in the session anatomy's (MRI) world.

    A matching transform moves the affine into the MRI world (data untouched: a voxel of the moving
    image at world p sits at anatomy world T^-1 p; docs/methods/study-viewer.md#placing-each-image);
    label maps become SEG Volumes with the names of the ``.tsv`` beside them; an optical image is
    placed by the ``ImageToWorldAffine`` of its sidecar.

    Parameters
    ----------
    f : StudyFile
        A file of :func:`napari_immunotrack.study.discover`.
    transforms : dict, optional
        {datatype: fixed(anat)->moving 4x4 RAS} (see :func:`session_transforms`);
        a matching one moves the affine into the MRI world (data untouched).

    Returns
    -------
    list of Volume
        Usually one (a DICOM folder may hold several series). Each Volume's ``metadata["study"]``
        says where it comes from (subject, session, day, datatype, suffix, role, track) and, for
        PET/SPECT/MPI/CT, whether a registration placed it (``registered``); its name is
        "<suffix> (day N)".

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import discover
    >>> from napari_immunotrack.volume import Volume
    >>> shift = np.eye(4)
    >>> shift[0, 3] = 10.0                                    # anatomy world -> PET world: +10 mm in x
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     pet_dir = Path(tmp) / "sub-01" / "ses-day1" / "pet"
    ...     pet_dir.mkdir(parents=True)
    ...     _ = save_volume(Volume(np.ones((2, 2, 2), np.float32), np.eye(4), "PT"), pet_dir / "sub-01_ses-day1_pet.nii.gz")
    ...     pet_file = discover(tmp)[0]
    ...     placed = load_study_file(pet_file, {"pet": shift})[0]
    ...     unplaced = load_study_file(pet_file)[0]
    >>> placed.affine[:3, 3].tolist(), placed.metadata["study"]["registered"], unplaced.metadata["study"]["registered"]
    ([-10.0, 0.0, 0.0], True, False)
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
    of its JSON sidecar when there is one. The baseline (day 0) anatomy comes along.

    Parameters
    ----------
    root : str or Path, optional
        The study folder (default: the bundled sample study).
    session : str, optional
        The session (``"day1"`` or ``"ses-day1"``; default: the first post-injection one).
    subject : str, optional
        The subject (default: the first).

    Returns
    -------
    list of tuple
        (Volume, StudyFile) in display order (anatomy first, then labels, then the other modalities).

    Raises
    ------
    InputError
        A session without images.

    Examples
    --------
    >>> import tempfile
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for day, datatype, name, modality in ((0, "anat", "T2w", "MR"), (1, "pet", "pet", "PT"), (1, "anat", "T2w", "MR")):
    ...         folder = Path(tmp) / "sub-01" / f"ses-day{day}" / datatype
    ...         folder.mkdir(parents=True, exist_ok=True)
    ...         _ = save_volume(Volume(np.ones((2, 2, 2), np.float32), np.eye(4), modality),
    ...                         folder / f"sub-01_ses-day{day}_{name}.nii.gz")
    ...     loaded = load_session(tmp)
    >>> [(volume.name, f.session) for volume, f in loaded]
    [('T2w (day 1)', 'day1'), ('T2w (day 0)', 'day0'), ('sub-01_ses-day1_pet (day 1)', 'day1')]
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
