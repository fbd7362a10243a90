"""The Study dock's view model: what is open and shown, without Qt or napari.

:class:`StudyViewModel` holds the open study, the subject, the timepoint
(session), which tracks (modalities) are ticked and the user's affine
adjustments per (session, track); it answers what the dock shows (the tree
rows, the timepoint label, the messages about a session) and decides the
navigation (which session a step or a click leads to, which tracks open
shown). The dock (:class:`~napari_immunotrack.widgets.study.StudyWidget`)
only draws it and moves napari layers. Everything here is testable without a
display. See ``docs/methods/study-viewer.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...errors import InputError
from .session import DEFAULT_SHOWN

#: Track kinds counted as anatomy (the reference grid, the fallback shown track).
ANATOMY_KINDS = ("T1w", "T2w", "T2starw", "MR", "CT")
#: Track kinds that are hot spots (shown with the anatomy when none of the defaults exist).
HOT_SPOT_KINDS = ("PET", "SPECT", "19F", "MPI")
#: Modalities whose images need a transform to sit in the MRI world.
_REGISTERED_MODALITIES = ("PT", "NM", "MPI", "CT")


@dataclass
class TreeRow:
    """One row of the study tree: a subject, a timepoint or a modality at a timepoint."""

    level: str  # "subject", "session" or "track"
    text: str  # first column
    detail: str  # second column
    subject: str
    session: str | None = None
    track: str | None = None
    tooltip: str = ""
    checkable: bool = False  # a track row of the current subject
    checked: bool = False
    missing: bool = False  # no image of this kind at this timepoint
    current: bool = False  # the subject / timepoint shown
    children: list[TreeRow] = field(default_factory=list)


def session_text(study, subject: str, session: str) -> str:
    """How the dock names a session: "day 3" when the study knows its day, else the session name.

    Parameters
    ----------
    study : Study
        The open study (:func:`napari_immunotrack.study.open_study`).
    subject, session : str
        Subject and session labels (without ``sub-``/``ses-``).

    Returns
    -------
    str
        ``"day <d>"`` (``:g`` format) or the session name.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from napari_immunotrack.io import save_volume
    >>> from napari_immunotrack.study import open_study
    >>> from napari_immunotrack.volume import Volume
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for session in ("day3", "baseline"):
    ...         folder = Path(tmp) / "sub-01" / f"ses-{session}" / "anat"
    ...         folder.mkdir(parents=True)
    ...         t2w = Volume(np.ones((2, 2, 2), np.float32), np.eye(4), "MR")
    ...         _ = save_volume(t2w, folder / f"sub-01_ses-{session}_T2w.nii.gz")
    ...     study = open_study(tmp)
    >>> session_text(study, "01", "day3"), session_text(study, "01", "baseline")
    ('day 3', 'baseline')
    """
    day = study.day(subject, session)
    return f"day {day:g}" if day is not None else session


def strip_ses(session: str | None) -> str | None:
    """A session name without its BIDS ``ses-`` prefix.

    Parameters
    ----------
    session : str or None
        ``"ses-day1"`` or ``"day1"``.

    Returns
    -------
    str or None
        The name without ``ses-``; None (or an empty string) unchanged.

    Examples
    --------
    >>> strip_ses("ses-day1"), strip_ses("day1"), strip_ses(None)
    ('day1', 'day1', None)
    """
    if session and session.startswith("ses-"):
        return session[4:]
    return session


class StudyViewModel:
    """The state of the Study dock that does not depend on Qt (see the module docstring).

    Examples
    --------
    >>> from napari_immunotrack.data import sample_study_root       # doctest: +SKIP
    >>> from napari_immunotrack.study import open_study             # doctest: +SKIP
    >>> model = StudyViewModel()                                     # doctest: +SKIP
    >>> model.open(open_study(sample_study_root()))                  # doctest: +SKIP
    >>> model.session, model.step_target(1)                          # doctest: +SKIP
    ('day1', 'day3')
    """

    def __init__(self):
        # the open Study, its subject and session (None before a study is opened; the methods below need one)
        self.study: Any = None
        self.subject: Any = None
        self.session: Any = None
        self.shown: dict[str, bool] = {}
        #: (session, track) -> the user's affine changes ({"layer_affine": ..., "affine_ras": ...})
        self.adjustments: dict[tuple[str, str], dict] = {}

    # ------------------------------------------------------------------ opening
    def choose(
        self, study, subject: str | None = None, session: str | None = None, shown: Iterable[str] | None = None
    ) -> tuple[str, str, dict[str, bool], list[str]]:
        """What opening ``study`` would show: (subject, session, {track: shown}, warnings); changes nothing.

        Default subject: the first; default session: the first post-injection one;
        default tracks: :data:`~napari_immunotrack.widgets.study.session.DEFAULT_SHOWN`,
        or the first anatomy and the hot spots when the study has none of those.
        """
        warnings = []
        subjects = study.subjects()
        chosen: str = subject if subject is not None and subject in subjects else subjects[0]
        if subject and subject not in subjects:
            warnings.append(f"subject {subject} is not in {study.root}; showing {chosen}.")
        names = study.sessions(chosen)
        session = strip_ses(session)
        if session is None or session not in names:
            if session:
                warnings.append(f"session {session} is not in subject {chosen}; sessions are {', '.join(names)}.")
            post = [s for s in names if any(f.phase == "post" for f in study.session_files(chosen, s))]
            session = (post or names)[0]
        tracks = study.tracks(chosen)
        wanted = set(DEFAULT_SHOWN if shown is None else shown)
        if shown is None and not wanted & set(tracks):
            anatomy = [t for t in tracks if t.partition(":")[0] in ANATOMY_KINDS]
            known = [t for t in tracks if not t.startswith("unknown")]
            hot = [t for t in known if t.partition(":")[0] in HOT_SPOT_KINDS]
            wanted = set((anatomy or known)[:1]) | set(hot)
        assert session is not None
        return chosen, session, {t: (t in wanted and not t.startswith("unknown")) for t in tracks}, warnings

    def open(
        self, study, subject: str | None = None, session: str | None = None, shown: Iterable[str] | None = None
    ) -> list[str]:
        """Open ``study`` (see :meth:`choose`); returns the warnings to tell the user."""
        chosen, session, shown_map, warnings = self.choose(study, subject, session, shown)
        self.close()
        self.study, self.subject, self.session, self.shown = study, chosen, session, shown_map
        return warnings

    def close(self) -> None:
        """Forget the study (and the adjustments made to it)."""
        self.study = None
        self.session = None
        self.adjustments.clear()

    def require_study(self) -> None:
        if self.study is None:
            raise InputError("open a study first (Open study... or Sample study).")

    # ------------------------------------------------------------------ timepoints
    @property
    def sessions(self) -> list[str]:
        """The subject's sessions in time order ([] when nothing is open)."""
        return self.study.sessions(self.subject) if self.study is not None else []

    @property
    def tracks(self) -> list[str]:
        return self.study.tracks(self.subject) if self.study is not None else []

    @property
    def session_index(self) -> int:
        return self.sessions.index(self.session)

    def resolve_session(self, session: str) -> str:
        """A session name given by the user (with or without ``ses-``), checked; InputError when unknown."""
        self.require_study()
        name = strip_ses(session) or ""
        if name not in self.sessions:
            raise InputError(
                f"no session {name!r} for subject {self.subject}; sessions are {', '.join(self.sessions)}."
            )
        return name

    def step_target(self, delta: int) -> str:
        """The session ``delta`` timepoints away (clamped to the first and last)."""
        self.require_study()
        names = self.sessions
        return names[min(max(names.index(self.session) + int(delta), 0), len(names) - 1)]

    def timepoint_text(self) -> str:
        """e.g. "day 1  (2/4)"."""
        names = self.sessions
        return f"{session_text(self.study, self.subject, self.session)}  ({names.index(self.session) + 1}/{len(names)})"

    def is_baseline(self, session: str) -> bool:
        files = self.study.session_files(self.subject, session)
        return bool(files) and all(f.phase == "pre" for f in files)

    def baseline_session(self) -> str | None:
        """The subject's pre-injection session (anatomy only), or None."""
        return next((s for s in self.sessions if self.is_baseline(s)), None)

    def anatomy_tracks(self, session: str) -> list[str]:
        """The anatomy tracks with an image at ``session`` (the display reference comes from the first)."""
        return [
            t
            for t in self.tracks
            if t.partition(":")[0] in ("T2starw", "T2w", "T1w", "MR")
            and self.study.file(self.subject, session, t) is not None
        ]

    def shown_tracks(self) -> list[str]:
        return [t for t, on in self.shown.items() if on]

    # ------------------------------------------------------------------ what the dock shows
    def tree(self) -> list[TreeRow]:
        """Subjects -> timepoints -> modalities, with what is missing and what is registered."""
        from ...study import track_label

        study, rows = self.study, []  # type: Tuple[Any, List[TreeRow]]
        if study is None:
            return rows
        for subject in study.subjects():
            s_row = TreeRow(
                "subject",
                f"sub-{subject}",
                f"{len(study.sessions(subject))} timepoint(s)",
                subject,
                current=subject == self.subject,
            )
            rows.append(s_row)
            tracks = study.tracks(subject)
            for session in study.sessions(subject):
                files = study.session_files(subject, session)
                baseline = bool(files) and all(f.phase == "pre" for f in files)
                t_row = TreeRow(
                    "session",
                    session_text(study, subject, session),
                    f"{session}{'  (baseline)' if baseline else ''}",
                    subject,
                    session,
                    tooltip="click to show this timepoint",
                    current=subject == self.subject and session == self.session,
                )
                s_row.children.append(t_row)
                have = {f.track: f for f in files}
                for track in tracks:
                    f = have.get(track)
                    if f is None and baseline:
                        continue  # the baseline holds anatomy only: not a gap
                    detail = study.relative(f.path) if f is not None else "missing"
                    if f is not None and f.role == "unknown":
                        detail = "unknown role: " + detail
                    if f is not None and f.modality in _REGISTERED_MODALITIES:
                        detail += "  (registered)" if study.transform_for(f) else "  (not registered)"
                    t_row.children.append(
                        TreeRow(
                            "track",
                            track_label(track),
                            detail,
                            subject,
                            session,
                            track,
                            tooltip=str(f.path) if f is not None else "no image of this kind at this timepoint",
                            checkable=subject == self.subject,
                            checked=self.shown.get(track, False),
                            missing=f is None,
                        )
                    )
        return rows

    def session_messages(self, present_tracks: Iterable[str], errors: Iterable[str] = ()) -> list[tuple[str, str]]:
        """What to tell the user about the current timepoint: [(level, message)].

        ``present_tracks`` are the tracks read at this timepoint, ``errors`` the files that failed.
        """
        from ...study import track_label
        from ...study_loading import NEEDS_REGISTRATION

        when = session_text(self.study, self.subject, self.session)
        out = [("error", e) for e in errors]
        unregistered = sorted(
            {
                f.label
                for f in self.study.session_files(self.subject, self.session)
                if f.modality in NEEDS_REGISTRATION and self.study.transform_for(f) is None
            }
        )
        if unregistered:
            out.append(
                (
                    "warning",
                    f"{when}: {', '.join(unregistered)} not registered to the MRI (no "
                    "xfm/*_from-<type>_to-anat.tfm in this session): shown where the scanner put them; "
                    "register them (Registration dock) for an exact overlay.",
                )
            )
        present = set(present_tracks)
        missing = [track_label(t) for t in self.tracks if t not in present and self.shown.get(t)]
        if missing:
            out.append(("info", f"{when}: no {', '.join(missing)} image at this timepoint; hidden."))
        return out

    # ------------------------------------------------------------------ adjustments and state
    def remember_adjustment(self, session: str, track: str, adjustment: dict | None) -> None:
        """Keep (or forget, when empty) the user's affine changes to a track at a session."""
        if adjustment:
            self.adjustments[(session, track)] = dict(adjustment)
        else:
            self.adjustments.pop((session, track), None)

    def adjustment(self, session: str, track: str) -> dict:
        return self.adjustments.get((session, track)) or {}

    def adjustments_state(self) -> list[dict]:
        """The adjustments as saved in a study state (see :mod:`napari_immunotrack.study`)."""
        return [{"session": s, "track": t, **adj} for (s, t), adj in sorted(self.adjustments.items())]

    def load_adjustments(self, entries: Iterable[dict]) -> None:
        """The adjustments of a saved study state (entries without session or track are ignored)."""
        self.adjustments = {
            (a["session"], a["track"]): {k: a[k] for k in ("layer_affine", "affine_ras", "displayed_through") if k in a}
            for a in entries
            if "session" in a and "track" in a
        }
