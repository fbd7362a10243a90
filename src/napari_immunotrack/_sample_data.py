"""napari sample-data contribution: one session of a study, every modality in one physical space, with
modality defaults. The loading itself is :mod:`napari_immunotrack.study_loading` (no napari)."""

from __future__ import annotations

from .study_loading import NEEDS_REGISTRATION, label_names_beside, load_session, load_study_file, session_transforms  # noqa: F401

#: Which images are shown when a session opens (the rest are loaded but hidden).
_SHOWN_SUFFIXES = ("T2starw", "dseg")
_SHOWN_MODALITIES = ("PT", "F19")


def study_layer_data(root=None, session: str | None = None, subject: str | None = None) -> list:
    """LayerData tuples for one session (default: the sample study's first post-injection day)."""
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
    """The sample study's first post-injection session (napari sample-data command)."""
    return study_layer_data()
