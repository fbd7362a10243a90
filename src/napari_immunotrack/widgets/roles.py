"""Which layer plays which role at the study's current timepoint (no Qt, no napari import).

The analysis docks ask for their inputs by *role* — the post-injection T2*w image, its pre-injection
baseline, the T1w/T2w pair before and after, PET, SPECT, 19F, MPI, the organ ROI — not by layer name:
when the user steps the Study dock to another timepoint, the roles point at that timepoint's layers.

A layer's place in the study is read from what the loaders put in its metadata:

- layers of the Study dock carry ``metadata["immunotrack"]`` with ``study_role`` ("track": the layer
  that follows the timepoint; "baseline": the pre-injection anatomy kept beside it), ``study_track``
  (``"T2starw"``, ``"ROI"``, ``"ROI:reftube"``...) and ``study_session`` (None when the track has no
  image at the current timepoint);
- layers of File > Open Sample (or any study file read by :mod:`napari_immunotrack.study_loading`)
  carry ``metadata["volume"].metadata["study"]`` with ``track``, ``session`` and ``day``.

The *current* session is the Study dock's (the session its track layers hold); without a Study dock,
the session of the visible study layers. The *baseline* session is the earliest one loaded before
it (the Study dock's baseline layers first); at the baseline timepoint itself there is no baseline.
Layers without study metadata are matched by name (:func:`guess_by_name`), as a user's own files are.

Everything here is a pure function of :class:`LayerFacts` (tested without Qt);
:class:`~napari_immunotrack.widgets._common.LayerPickers` is the thin Qt side.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class LayerFacts:
    """What the role logic needs to know of one layer.

    Parameters
    ----------
    name : str
        The layer's name (what the pickers show).
    kind : str
        napari layer type name: "Image", "Labels", "Shapes"...
    track : str or None
        Study track ("T2starw", "ROI", "ROI:reftube", "PET"...), None for a layer not from a study.
    session : str or None
        The session the layer holds now (None: not a study layer, or no image at this timepoint).
    day : float or None
        Days after injection of that session, when known.
    study_role : str or None
        "track" or "baseline" for a Study dock layer, None otherwise.
    visible : bool
        Whether the layer is shown.
    """

    name: str
    kind: str = "Image"
    track: str | None = None
    session: str | None = None
    day: float | None = None
    study_role: str | None = None
    visible: bool = True

    @property
    def in_study(self) -> bool:
        return self.track is not None and self.session is not None


@dataclass(frozen=True)
class Role:
    """An input role: which study tracks may play it, at which time, and what kind of layer."""

    label: str
    tracks: tuple[str, ...]
    when: str  # "current" or "baseline"
    kind: str = "Image"
    #: a baseline role takes the track of this role's layer (a T2*w post gets a T2*w baseline)
    pairs_with: str | None = None


#: Every role a dock may ask for.
ROLES: dict[str, Role] = {
    "t2star_post": Role("T2*w post", ("T2starw", "T2w"), "current"),
    "t2star_baseline": Role("T2*w baseline", ("T2starw", "T2w"), "baseline", pairs_with="t2star_post"),
    "t1_post": Role("T1w post", ("T1w",), "current"),
    "t1_pre": Role("T1w pre", ("T1w",), "baseline"),
    "t2_post": Role("T2w post", ("T2w",), "current"),
    "t2_pre": Role("T2w pre", ("T2w",), "baseline"),
    "pet": Role("PET", ("PET",), "current"),
    "spect": Role("SPECT", ("SPECT",), "current"),
    "f19": Role("19F", ("19F",), "current"),
    "mpi": Role("MPI", ("MPI",), "current"),
    "roi": Role("organ ROI", ("ROI",), "current", kind="Labels"),
    "reference_tube": Role("19F reference tube", ("ROI:reftube",), "current", kind="Labels"),
}

#: Roles of the quantitative images a readout offers.
QUANTITATIVE_ROLES = ("pet", "spect", "f19", "mpi")


# ============================================================================ facts from napari layers (duck-typed)
def layer_facts(layer) -> LayerFacts:
    """The :class:`LayerFacts` of a napari layer (read from its metadata; no napari import needed).

    Parameters
    ----------
    layer : napari layer or any object with ``name`` and ``metadata``
        Its ``metadata["immunotrack"]`` (a Study dock layer) is read first, else
        ``metadata["volume"].metadata["study"]`` (a study file opened otherwise); its class name is the kind.

    Returns
    -------
    LayerFacts
        A Study dock layer's day is only kept when the volume's own session is the one it shows now;
        a day that is not a number becomes None.

    Examples
    --------
    >>> class Fake:
    ...     name, visible = "T2starw (day 3)", True
    ...     metadata = {"immunotrack": {"study_role": "track", "study_track": "T2starw", "study_session": "day3"}}
    >>> Image = type("Image", (Fake,), {})
    >>> layer_facts(Image()).track, layer_facts(Image()).session
    ('T2starw', 'day3')
    """
    meta = getattr(layer, "metadata", None) or {}
    info = meta.get("immunotrack") or {}
    volume = meta.get("volume")
    study = dict(getattr(volume, "metadata", {}).get("study") or {}) if volume is not None else {}
    role = info.get("study_role")
    if role is not None:  # a Study dock layer: its session changes when the user steps
        track, session = info.get("study_track"), info.get("study_session")
        day = study.get("day") if study.get("session") == session else None
    else:
        track, session, day = study.get("track"), study.get("session"), study.get("day")
    try:
        day = None if day is None else float(day)
    except (TypeError, ValueError):
        day = None
    return LayerFacts(
        name=str(layer.name),
        kind=type(layer).__name__,
        track=track,
        session=session,
        day=day,
        study_role=role,
        visible=bool(getattr(layer, "visible", True)),
    )


def holds_image_now(layer) -> bool:
    """False for a Study track layer with no image at the current timepoint (an empty placeholder that still
    carries another day's volume in its metadata: no dock may offer it).

    Parameters
    ----------
    layer : napari layer or any object with ``metadata``
        Read from ``metadata["immunotrack"]`` (``study_role``, ``study_session``).

    Returns
    -------
    bool
        True for every other layer, study or not.

    Examples
    --------
    >>> class L:
    ...     metadata = {"immunotrack": {"study_role": "track", "study_track": "PET", "study_session": None}}
    >>> holds_image_now(L())
    False
    """
    info = (getattr(layer, "metadata", None) or {}).get("immunotrack") or {}
    return not (info.get("study_role") == "track" and info.get("study_session") is None)


# ============================================================================ the study's timepoint
@dataclass(frozen=True)
class StudyContext:
    """The current and the baseline session of the loaded layers (None when unknown / none)."""

    current: str | None
    baseline: str | None
    days: Mapping[str, float | None]

    def describe(self) -> str:
        """One line for the docks: "inputs follow the Study: day 3 (baseline day 0)"."""
        if self.current is None:
            return "no study timepoint: inputs are chosen by layer name"
        text = f"inputs follow the Study: {self.when(self.current)}"
        if self.baseline is not None:
            return text + f" (baseline {self.when(self.baseline)})"
        return text + " (no earlier timepoint: no baseline)"

    def when(self, session: str | None = None) -> str | None:
        """A session as the user reads it ("day 3"; the session name when its day is unknown); default: the current."""
        session = self.current if session is None else session
        if session is None:
            return None
        day = self.days.get(session)
        return f"day {day:g}" if day is not None else session


def study_context(facts: Iterable[LayerFacts]) -> StudyContext:
    """The current and baseline sessions of a set of layers.

    The current session is the one most Study dock track layers hold; without those, the one most visible
    study layers hold; without those, the latest day loaded. The baseline is the earliest other session
    (the Study dock's baseline layers first) if it comes before the current one, or, when days are
    unknown, if its name looks pre-injection (:func:`looks_pre_injection`).

    Parameters
    ----------
    facts : iterable of LayerFacts
        The viewer's layers; those without a track and session are ignored.

    Returns
    -------
    StudyContext
        ``current``, ``baseline`` (session names, or None) and ``days`` ({session: day or None}).

    Examples
    --------
    >>> facts = [
    ...     LayerFacts("T2starw (day 3)", track="T2starw", session="day3", day=3.0, study_role="track"),
    ...     LayerFacts("T2starw baseline (day 0)", track="T2starw", session="day0", day=0.0, study_role="baseline"),
    ... ]
    >>> ctx = study_context(facts)
    >>> ctx.current, ctx.baseline
    ('day3', 'day0')
    >>> ctx.describe()
    'inputs follow the Study: day 3 (baseline day 0)'
    >>> study_context([LayerFacts("pet.nii")]).current is None    # no study layers
    True
    """
    facts = [f for f in facts if f.in_study]
    days: dict[str, float | None] = {}
    for f in facts:
        if days.get(f.session) is None:
            days[f.session] = f.day
    tracks = [f.session for f in facts if f.study_role == "track"]
    if tracks:
        current = Counter(tracks).most_common(1)[0][0]
    else:
        shown = [f.session for f in facts if f.visible and f.study_role is None]
        if shown:
            current = Counter(shown).most_common(1)[0][0]
        elif facts:  # nothing shown: the latest session loaded
            current = max(days, key=lambda s: (days[s] if days[s] is not None else float("-inf"), s))
        else:
            return StudyContext(None, None, days)
    baseline = None
    marked = [f.session for f in facts if f.study_role == "baseline" and f.session != current]
    candidates = marked or [s for s in days if s != current]
    if candidates:
        here = days.get(current)

        def key(s):
            return days[s] if days[s] is not None else float("inf")

        earliest = min(candidates, key=key)
        before = here is None or days.get(earliest) is None or days[earliest] < here
        if before and (marked or days.get(earliest) is not None or _looks_pre(earliest)):
            baseline = earliest
    return StudyContext(current, baseline, days)


# ============================================================================ roles -> layers
def _candidates(role: Role, facts: list[LayerFacts], session: str | None, tracks) -> list[LayerFacts]:
    if session is None:
        return []
    out = []
    for track in tracks:
        here = [f for f in facts if f.kind == role.kind and f.track == track and f.session == session]
        if role.when == "baseline":  # the Study dock's baseline copy before a track layer showing that day
            here.sort(key=lambda f: f.study_role != "baseline")
        else:
            here.sort(key=lambda f: f.study_role != "track")
        out.extend(here)
    return out


def assign_roles(
    wanted: Mapping[str, str], facts: Iterable[LayerFacts], pinned: Mapping[str, str] | None = None
) -> dict[str, str | None]:
    """The layer name playing each wanted role at the current timepoint (None: no such layer).

    Parameters
    ----------
    wanted : mapping
        {input key: role name of :data:`ROLES`}.
    facts : iterable of LayerFacts
        The viewer's layers.
    pinned : mapping, optional
        {role name: layer name} the user chose for other inputs: those layers are not given again, and a
        baseline role pairs with a pinned post's track (a T2w pinned as the iron image gets the T2w baseline).

    Returns
    -------
    dict
        {input key: layer name or None}. Without study layers every value is None (the caller
        then guesses by name). No layer is given to two keys.

    Examples
    --------
    >>> facts = [
    ...     LayerFacts("T1w (day 3)", track="T1w", session="day3", day=3.0, study_role="track"),
    ...     LayerFacts("T2w (day 3)", track="T2w", session="day3", day=3.0, study_role="track"),
    ...     LayerFacts("T1w baseline (day 0)", track="T1w", session="day0", day=0.0, study_role="baseline"),
    ...     LayerFacts("T2w baseline (day 0)", track="T2w", session="day0", day=0.0, study_role="baseline"),
    ... ]
    >>> assign_roles({"t1_post": "t1_post", "t2_post": "t2_post", "t1_pre": "t1_pre", "t2_pre": "t2_pre"}, facts)
    {'t1_post': 'T1w (day 3)', 't2_post': 'T2w (day 3)', 't1_pre': 'T1w baseline (day 0)', 't2_pre': 'T2w baseline (day 0)'}
    >>> facts.append(LayerFacts("T2starw baseline (day 0)", track="T2starw", session="day0", study_role="baseline"))
    >>> assign_roles({"baseline": "t2star_baseline"}, facts, pinned={"t2star_post": "T2w (day 3)"})
    {'baseline': 'T2w baseline (day 0)'}
    """
    facts = list(facts)
    ctx = study_context(facts)
    chosen: dict[str, str | None] = {}
    used: set[str] = set((pinned or {}).values())
    tracks_of: dict[str, str] = {}  # role -> track of its chosen layer
    by_name = {f.name: f for f in facts}
    for role_name, layer_name in (pinned or {}).items():
        if layer_name in by_name and by_name[layer_name].track is not None:
            tracks_of[role_name] = by_name[layer_name].track
    # roles another one pairs with go first
    order = sorted(wanted, key=lambda k: ROLES[wanted[k]].pairs_with is not None)
    for key in order:
        role = ROLES[wanted[key]]
        session = ctx.current if role.when == "current" else ctx.baseline
        tracks = role.tracks
        if role.pairs_with is not None and role.pairs_with in tracks_of:
            tracks = (tracks_of[role.pairs_with],)
        pick = next((f for f in _candidates(role, facts, session, tracks) if f.name not in used), None)
        chosen[key] = pick.name if pick is not None else None
        if pick is not None:
            used.add(pick.name)
            tracks_of[wanted[key]] = pick.track
    return {k: chosen[k] for k in wanted}


# ============================================================================ by name (layers without study metadata)
def name_tokens(name: str) -> set:
    """The lower-case words of a layer name ("T2starw baseline (day 0)" -> {"t2starw", "baseline", "day", "0"}).

    Parameters
    ----------
    name : str
        A layer name; anything but ASCII letters and digits separates words.

    Returns
    -------
    set of str

    Examples
    --------
    >>> sorted(name_tokens("T2starw baseline (day 0)"))
    ['0', 'baseline', 'day', 't2starw']
    """
    return {t for t in re.split(r"[^a-z0-9]+", name.lower()) if t}


def _looks_pre(name: str) -> bool:
    return bool(name_tokens(name) & {"pre", "baseline", "day0", "d0"}) or (
        re.search(r"\bday[\s_-]*0(?![\d.])", name.lower()) is not None
    )


def looks_pre_injection(name: str) -> bool:
    """True for a layer name of a baseline: "pre", "baseline", "day0"/"d0" or "(day 0)" (not "day 0.5").

    Parameters
    ----------
    name : str
        A layer (or session) name.

    Returns
    -------
    bool
        True when one of its words (:func:`name_tokens`) is pre, baseline, day0 or d0, or it contains
        "day 0" ("day_0", "day-0") not followed by more digits.

    Examples
    --------
    >>> [looks_pre_injection(n) for n in ("T2starw_pre", "T2w (day 0)", "ses-day0", "T2w day 0.5", "T2w_post")]
    [True, True, True, False, False]
    """
    return _looks_pre(name)


def t2star_first(names) -> list:
    """``names`` ordered for iron detection: T2*-weighted/SWI first, then other T2, then the rest.

    Parameters
    ----------
    names : iterable of str
        Layer names. T2*-weighted: a word t2starw, t2star, t2s, swi or gre, or "t2*" anywhere; other T2:
        a word starting with t2.

    Returns
    -------
    list of str
        The names sorted by that rank, keeping the given order among equals.

    Examples
    --------
    >>> t2star_first(["T1w", "T2w_post", "SWI_post", "mGRE"])
    ['SWI_post', 'T2w_post', 'T1w', 'mGRE']
    """

    def rank(name):
        tokens = name_tokens(name)
        if tokens & {"t2starw", "t2star", "t2s", "swi", "gre"} or "t2*" in name.lower():
            return 0
        return 1 if any(t.startswith("t2") for t in tokens) else 2

    return sorted(names, key=rank)  # stable: the viewer's order among equals


def _has(name: str, *words) -> bool:
    tokens = name_tokens(name)
    return any(w in tokens or any(t.startswith(w) for t in tokens) for w in words)


def guess_by_name(role: str, names: Iterable[str]) -> str | None:
    """A layer name that looks like it plays ``role`` (for layers a user opened as files).

    Parameters
    ----------
    role : str
        A role name of :data:`ROLES`.
    names : iterable of str
        The viewer's layer names, in the viewer's order. Names that look pre-injection
        (:func:`looks_pre_injection`) play baseline roles only; the T2*w roles prefer T2*-weighted names
        (:func:`t2star_first`), a T2w role never takes a T2*w; the organ ROI never takes a tube or mask.

    Returns
    -------
    str or None
        The first name that fits, or None.

    Examples
    --------
    >>> guess_by_name("t2star_baseline", ["T2starw_post", "T2starw_pre", "T1w_pre"])
    'T2starw_pre'
    >>> guess_by_name("t2_post", ["T2starw_post", "T2w_post"])
    'T2w_post'
    """
    names = list(names)
    post = [n for n in names if not _looks_pre(n)]
    pre = [n for n in names if _looks_pre(n)]
    if role == "t2star_post":
        named = [n for n in post if "post" in name_tokens(n)] or post
        return (t2star_first(named) or [None])[0]
    if role == "t2star_baseline":
        return (t2star_first(pre) or [None])[0]
    contrast = {"t1_post": "t1", "t1_pre": "t1", "t2_post": "t2", "t2_pre": "t2"}.get(role)
    if contrast is not None:
        pool = post if role.endswith("post") else pre

        def fits(n):
            tokens = name_tokens(n)
            if contrast == "t2":  # a T2w, never the T2*w
                return any(t.startswith("t2") and not t.startswith(("t2s", "t2star")) for t in tokens)
            return any(t.startswith("t1") for t in tokens)

        return next((n for n in pool if fits(n)), None)
    words = {
        "pet": ("pet", "pt", "fdg", "zr", "89zr"),
        "spect": ("spect", "nm", "111in", "in111", "99mtc"),
        "f19": ("19f", "f19", "fluorine"),
        "mpi": ("mpi",),
        "roi": ("roi", "dseg", "organ", "atlas", "labels"),
        "reference_tube": ("reftube", "tube"),
    }.get(role, ())
    pool = [n for n in names if not (role == "roi" and _has(n, "reftube", "tube", "mask"))]
    return next((n for n in pool if _has(n, *words)), None)


# ============================================================================ one layer, one role
def duplicated_choices(chosen: Mapping[str, str | None]) -> dict[str, list[str]]:
    """{layer name: [input keys]} for every layer chosen for more than one input.

    Parameters
    ----------
    chosen : mapping
        {input key: layer name or None}; None (nothing chosen) is never a duplicate.

    Returns
    -------
    dict
        {layer name: input keys in ``chosen``'s order}; empty when every layer is chosen once.

    Examples
    --------
    >>> duplicated_choices({"t1_post": "T2starw (day 1)", "t2_post": "T2starw (day 1)", "t1_pre": None})
    {'T2starw (day 1)': ['t1_post', 't2_post']}
    """
    by_name: dict[str, list[str]] = {}
    for key, name in chosen.items():
        if name:
            by_name.setdefault(name, []).append(key)
    return {name: keys for name, keys in by_name.items() if len(keys) > 1}


def check_distinct(chosen: Mapping[str, str | None], labels: Mapping[str, str] | None = None) -> None:
    """Refuse one layer chosen for two inputs (InputError naming both inputs).

    Parameters
    ----------
    chosen : mapping
        {input key: layer name or None}.
    labels : mapping, optional
        {input key: what the dock calls it}, for the message (default the keys).

    Returns
    -------
    None

    Raises
    ------
    InputError
        For the first layer chosen more than once.

    Examples
    --------
    >>> check_distinct({"t1_post": "T1w (day 1)", "t2_post": "T2w (day 1)"})
    >>> check_distinct({"t1_post": "T2starw", "t2_post": "T2starw"}, {"t1_post": "T1w post", "t2_post": "T2w post"})
    Traceback (most recent call last):
    ...
    napari_immunotrack.errors.InputError: the layer 'T2starw' is chosen for both T1w post and T2w post; one layer cannot play two roles: choose another for T2w post.
    """
    labels = labels or {}
    for name, keys in duplicated_choices(chosen).items():
        named = [labels.get(k, k) for k in keys]
        raise InputError(
            f"the layer {name!r} is chosen for both {' and '.join(named)}; one layer cannot play two roles: "
            f"choose another for {named[-1]}."
        )


# ============================================================================ step announcements
#: {id of the viewer: [weak references to callbacks]}: who wants to hear of a timepoint step.
_STEP_LISTENERS: dict[int, list] = {}


def _viewer_key(viewer) -> int:
    return id(getattr(viewer, "__wrapped__", viewer))  # a plugin dock sees the viewer through a proxy


def listen_for_steps(viewer, callback) -> None:
    """Call ``callback()`` at the end of every timepoint step of ``viewer``'s Study dock.

    A bound method (a dock's) is held weakly, so a closed dock is forgotten; any other callable is held
    for the life of the process. Callbacks are called synchronously by :func:`announce_step`, before
    napari redraws: the docks show the new timepoint's inputs in the same frame as the images.

    Parameters
    ----------
    viewer : napari.Viewer or ViewerModel
        The viewer (a plugin's proxy of it counts as the same viewer).
    callback : callable
        Called without arguments; a RuntimeError it raises (its Qt side deleted) drops it.

    Returns
    -------
    None

    Examples
    --------
    >>> from napari.components import ViewerModel
    >>> class Dock:
    ...     steps = 0
    ...     def on_step(self):
    ...         self.steps += 1
    >>> viewer, dock = ViewerModel(), Dock()
    >>> listen_for_steps(viewer, dock.on_step)
    >>> announce_step(viewer); announce_step(viewer)
    >>> dock.steps
    2
    >>> del dock                       # a closed dock is forgotten
    >>> announce_step(viewer)
    >>> len(_STEP_LISTENERS[_viewer_key(viewer)])
    0
    """
    import weakref

    ref = weakref.WeakMethod(callback) if hasattr(callback, "__self__") else (lambda: callback)
    _STEP_LISTENERS.setdefault(_viewer_key(viewer), []).append(ref)


def announce_step(viewer) -> None:
    """Tell the docks of ``viewer`` that the Study dock now shows another timepoint (the Study calls this).

    Parameters
    ----------
    viewer : napari.Viewer or ViewerModel
        The viewer whose listeners (:func:`listen_for_steps`) are called, in the order they were added.
        Listeners whose dock is gone (collected, or raising RuntimeError) are dropped.

    Returns
    -------
    None

    Examples
    --------
    >>> from napari.components import ViewerModel
    >>> heard = []
    >>> viewer = ViewerModel()
    >>> listen_for_steps(viewer, lambda: heard.append("readout"))
    >>> announce_step(viewer); announce_step(ViewerModel())     # another viewer's step is not heard
    >>> heard
    ['readout']
    """
    refs = _STEP_LISTENERS.get(_viewer_key(viewer), [])
    alive = []
    for ref in refs:
        callback = ref()
        if callback is None:
            continue
        try:
            callback()
        except RuntimeError:  # the dock's Qt side was deleted
            continue
        alive.append(ref)
    if refs:
        _STEP_LISTENERS[_viewer_key(viewer)] = alive


__all__ = [
    "holds_image_now",
    "listen_for_steps",
    "announce_step",
    "LayerFacts",
    "Role",
    "ROLES",
    "QUANTITATIVE_ROLES",
    "StudyContext",
    "layer_facts",
    "study_context",
    "assign_roles",
    "guess_by_name",
    "duplicated_choices",
    "check_distinct",
    "name_tokens",
    "looks_pre_injection",
    "t2star_first",
]
