"""napari sample-data contribution: one session of a study, every modality in one physical space, with
modality defaults. The loading itself is :mod:`napari_immunotrack.study_loading` (no napari)."""

from __future__ import annotations

from .study_loading import NEEDS_REGISTRATION, label_names_beside, load_session, load_study_file, session_transforms  # noqa: F401

#: Which images are shown when a session opens (the rest are loaded but hidden).
_SHOWN_SUFFIXES = ("T2starw", "dseg")
_SHOWN_MODALITIES = ("PT", "F19")


def study_layer_data(root=None, session: str | None = None, subject: str | None = None) -> list:
    """LayerData tuples for one session (default: the sample study's first post-injection day).

    The session is loaded with :func:`~napari_immunotrack.study_loading.load_session` (every modality
    placed in the anatomy's world, the baseline anatomy with it) and each Volume becomes a napari
    layer with its modality's defaults, aligned to the first axis-aligned MRI. The T2*-weighted image,
    the organ map, PET and 19F of the session asked for are shown; the others are loaded hidden.

    Parameters
    ----------
    root : str or Path, optional
        The study folder (default: the bundled sample study, :func:`napari_immunotrack.data.sample_study_root`).
    session : str, optional
        The session (default: the first post-injection one).
    subject : str, optional
        The subject (default: the first).

    Returns
    -------
    list of tuple
        ``(data, layer keyword arguments, "image" or "labels")``, anatomy first; labels at opacity 0.5.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from pathlib import Path
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ses = Path(tmp) / "sub-01" / "ses-day1"
    ...     (ses / "anat").mkdir(parents=True)
    ...     (ses / "rois").mkdir()
    ...     _ = save_volume(Volume(np.ones((4, 4, 4), np.float32), np.eye(4), "MR"), ses / "anat" / "sub-01_ses-day1_T2w.nii.gz")
    ...     _ = save_volume(Volume(np.eye(4, dtype=np.uint8)[None].repeat(4, 0), np.eye(4), "SEG", "label"),
    ...                     ses / "rois" / "sub-01_ses-day1_dseg.nii.gz")
    ...     layers = study_layer_data(tmp)
    >>> [(kwargs["name"], kind, kwargs["visible"]) for _, kwargs, kind in layers]
    [('T2w (day 1)', 'image', False), ('ROI (day 1)', 'labels', True)]
    """
    from .widgets._common import volume_layer_data

    loaded = _in_reference_frame(load_session(root, session, subject), root)
    reference = next((v for v, _ in loaded if v.modality == "MR" and v.is_axis_aligned()), None)
    layers = []
    # the baseline anatomy is loaded hidden; the session asked for is shown
    shown_session = next((f.session for _, f in loaded if f.day != 0), loaded[0][1].session if loaded else None)
    for volume, f in loaded:
        shown = (f.suffix in _SHOWN_SUFFIXES or volume.modality in _SHOWN_MODALITIES) and f.session == shown_session
        extra = {"visible": shown}
        if f.is_labels:
            extra.update(opacity=0.5)
        layers.append(volume_layer_data(volume, reference=reference, as_labels=f.is_labels, **extra))
    return layers


def _in_reference_frame(loaded: list, root) -> list:
    """Each session's volumes moved into the reference session's world when the study holds session
    alignments (``align_study``); the pre-injection baseline then lies on the same anatomy as the day shown.
    A study without them (one bed) is returned as it is. See docs/methods/study-viewer.md."""
    from .data import sample_study_root
    from .study import open_study
    from .widgets.study.session import study_frame, to_reference

    if not loaded:
        return loaded
    study = open_study(root or sample_study_root())
    frame = study_frame(study, loaded[0][1].subject)
    if frame.reference is None:
        return loaded
    return [(to_reference(volume, frame.alignment(f.session)), f) for volume, f in loaded]


def sample_study():
    """The sample study's first post-injection session (napari sample-data command).

    :func:`study_layer_data` on the bundled study (:func:`napari_immunotrack.data.sample_study_root`):
    13 layers for day 1 of the committed sample (MRI of days 0 and 1, organ and reference-tube maps,
    PET, SPECT, 19F, MPI and optical images).

    Parameters
    ----------
    None

    Returns
    -------
    list of tuple
        ``(data, layer keyword arguments, "image" or "labels")`` per image.

    Examples
    --------
    Loading the whole sample takes a few seconds, so the call is not run as a doctest:

    >>> layers = sample_study()                                     # doctest: +SKIP
    >>> [kwargs["name"] for _, kwargs, _ in layers][:3]             # doctest: +SKIP
    ['T1w (day 1)', 'T2starw (day 1)', 'T2w (day 1)']
    """
    return study_layer_data()
