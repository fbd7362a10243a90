"""napari sample-data contribution: the bundled mouse study, one session, in one physical space."""

from __future__ import annotations


def study_layer_data(root=None, session: str | None = None, subject: str | None = None) -> list:
    """LayerData tuples for one session of a study (default: the sample, first post-injection day).

    Images are placed in world millimetres with their modality defaults; the
    session's ROI label maps come as Labels layers. Transforms found beside
    a modality (``*_to_*.tfm``) are applied to its display.
    """
    from .data import sample_study_root
    from .io import load_volumes
    from .study import discover, sessions
    from .widgets._common import volume_layer_data

    root = root or sample_study_root()
    files = discover(root)
    subject = subject or files[0].subject
    names = sessions(files, subject)
    if session is None:
        post = [s for s in names if any(f.day and f.day > 0 for f in files if f.session == s)]
        session = (post or names)[0]
    chosen = [f for f in files if f.subject == subject and f.session == session]
    layers, reference = [], None
    for f in chosen:
        for volume in load_volumes(f.path):
            if reference is None and volume.modality == "MR" and volume.is_axis_aligned():
                reference = volume
            volume.metadata.setdefault("study", {"subject": f.subject, "session": f.session, "day": f.day,
                                                 "datatype": f.datatype, "suffix": f.suffix})
            volume.name = volume.name or f.path.name
            extra = {"opacity": 0.35} if f.is_labels else {}
            data, kwargs, kind = volume_layer_data(volume, reference=reference, as_labels=f.is_labels, **extra)
            layers.append((data, kwargs, kind))
    return layers


def sample_study():
    """The sample study's first post-injection session (napari sample-data command)."""
    return study_layer_data()
