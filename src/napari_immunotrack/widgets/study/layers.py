"""The napari side of the Study dock's sessions: prepared sessions cached in the background, one layer per
track, swapped in place when the timepoint changes, and the user's affine adjustments carried along.

:class:`StudyLayersMixin` is half of :class:`~napari_immunotrack.widgets.study.StudyWidget` (it uses the
dock's ``viewer``, ``model``, ``track_layers``... attributes); the reading and preparation themselves are
:mod:`.session`'s (no Qt). See ``docs/methods/study-viewer.md``.
"""

from __future__ import annotations

import contextlib

import numpy as np
from qtpy.QtCore import QTimer

from .session import BASELINE_TRACKS, Prepared, SessionData, prepare_session

#: Where a PET/SPECT colour bar sits (two at one corner would overlap).
_COLORBAR_POSITION = {"PT": "top_right", "NM": "top_left"}


class StudyLayersMixin:
    """Sessions and their layers (see the module docstring)."""

    def _session_data(self, session: str, baseline: bool = False) -> SessionData:
        """A session's prepared layers (waits for the background preparation when it is running)."""
        key = (self.subject, session, baseline)
        with self._lock:
            future = self._cache.get(key)
            if future is None or future.cancelled():
                future = self._submit(session, baseline)
        return future.result()

    def _submit(self, session: str, baseline: bool = False):
        study, subject, reference = self.study, self.subject, self.reference
        tracks = BASELINE_TRACKS if baseline else None
        alignment = self._alignment_for(session)  # None: drawn in its scanner's frame
        future = self._executor.submit(
            prepare_session, study, subject, session, reference, tracks, baseline, None, alignment
        )
        self._cache[(subject, session, baseline)] = future
        return future

    def _prefetch(self) -> None:
        """Prepare the other timepoints in the background, nearest first."""
        names = self.study.sessions(self.subject)
        here = names.index(self.session)
        order = sorted(range(len(names)), key=lambda i: (abs(i - here), i))
        with self._lock:
            for i in order:
                if (self.subject, names[i], False) not in self._cache:
                    self._submit(names[i])

    def _baseline_session(self) -> str | None:
        return self.model.baseline_session()

    def _create_layers(self, data: SessionData, progressive: bool) -> None:
        """One layer per track (shown or hidden), and the baseline anatomy hidden.

        The visible layers come first; with ``progressive`` the hidden ones (and the
        baseline, read only then) are added from the event loop after the first frame,
        and the other timepoints are prepared in the background after that.
        """
        first, rest = [], []
        for track in self.study.tracks(self.subject):
            prepared = data.layers.get(track)
            visible = self.shown.get(track, False) and prepared is not None
            (first if visible else rest).append(("track", track, prepared))
        baseline = self._baseline_session()
        if baseline is not None and baseline != self.session:
            rest.extend(
                ("baseline", track, None)
                for track in BASELINE_TRACKS
                if self.study.file(self.subject, baseline, track) is not None
            )
        for item in first:
            self._add_layer(*item)
        self._pending_layers = rest
        if progressive and rest:
            QTimer.singleShot(0, self._add_pending)
        else:
            self.finish_loading()

    def _add_pending(self) -> None:
        """Add the next hidden layer (one per event-loop turn keeps the window responsive)."""
        if not self._pending_layers:
            return
        self._add_layer(*self._resolve(self._pending_layers.pop(0)))
        if self._pending_layers:
            QTimer.singleShot(0, self._add_pending)
        else:
            self._order_layers()
            self._select_useful_layer()
            QTimer.singleShot(100, self._prefetch)

    def _resolve(self, item: tuple) -> tuple:
        """A pending layer's prepared data (read in the background meanwhile)."""
        role, track, prepared = item
        if role == "baseline" and prepared is None:
            prepared = self._session_data(self._baseline_session(), baseline=True).layers.get(track)
        elif prepared is None:
            data = self._session_data(self.session)
            for error in data.errors:
                if error not in self._told:
                    self._tell(error, "error")
            prepared = data.layers.get(track)
        return role, track, prepared

    def finish_loading(self) -> None:
        """Add every layer still pending (what a screenshot or a test waits for)."""
        while self._pending_layers:
            self._add_layer(*self._resolve(self._pending_layers.pop(0)))
        self._order_layers()
        self._select_useful_layer()
        if self.study is not None:
            self._prefetch()

    def _add_layer(self, role: str, track: str, prepared: Prepared | None):
        from ...study import track_label

        if prepared is None:
            # this track has no image at this timepoint: an empty placeholder appears when it gets one
            return None
        kwargs = dict(prepared.kwargs)
        # the layer's own copies: the cached session data must not change with the layer
        kwargs["metadata"] = dict(kwargs["metadata"])
        kwargs["metadata"]["immunotrack"] = dict(kwargs["metadata"]["immunotrack"])
        kwargs["visible"] = role == "track" and self.shown.get(track, False)
        adder = self.viewer.add_labels if prepared.kind == "labels" else self.viewer.add_image
        layer = adder(prepared.data, **kwargs)
        if prepared.kind == "labels" and track == "ROI":
            layer.contour = 1  # organ outlines over the anatomy, not filled regions
        if prepared.volume.modality in _COLORBAR_POSITION and prepared.kind == "image":
            with contextlib.suppress(Exception):
                layer.colorbar.visible = True
                layer.colorbar.position = _COLORBAR_POSITION[prepared.volume.modality]
        layer.metadata["immunotrack"]["track_label"] = track_label(track)
        (self.track_layers if role == "track" else self.baseline_layers)[track] = layer
        if role == "track":
            self._apply_adjustment(layer, self.session, track)
        return layer

    def _order_layers(self) -> None:
        """Baseline layers at the bottom, then the tracks in their order (anatomy below hot spots)."""
        from ...study import track_order

        tracks = [self.track_layers[t] for t in sorted(self.track_layers, key=track_order)]
        projection = getattr(self, "_projection_layer", None)
        if projection is not None:
            # the anatomy's projection right under the planar picture, above the 3D anatomy's slice
            planar = [i for i, ly in enumerate(tracks) if ly.metadata.get("immunotrack", {}).get("placement")]
            tracks.insert(planar[0] if planar else 0, projection)
        ours = list(self.baseline_layers.values()) + tracks
        ours = [ly for ly in ours if ly in self.viewer.layers]
        if not ours:
            return
        others = [ly for ly in self.viewer.layers if ly not in ours]
        wanted = ours + others
        if list(self.viewer.layers) == wanted:
            return
        for target, layer in enumerate(wanted):
            current = self.viewer.layers.index(layer)
            if current != target:
                self.viewer.layers.move(current, target)

    @contextlib.contextmanager
    def _deferred_extent(self, layers):
        """Swap several layers with one recomputation of the viewer's extent (not one per setter).

        napari recomputes the world extent and re-slices every layer after each data,
        scale, translate or affine change; here those calls are held back and made once.
        """
        update = getattr(self.viewer, "_on_layers_change", None)
        emitters = []
        if update is not None:
            for layer in layers:
                for name in ("data", "scale", "translate", "affine"):
                    emitter = getattr(layer.events, name, None)
                    if emitter is not None:
                        emitter.block(callback=update)
                        emitters.append(emitter)
        try:
            yield
        finally:
            for emitter in emitters:
                emitter.unblock(callback=update)
            if update is not None:
                update()

    def _swap(self, layer, prepared: Prepared) -> None:
        """Put a prepared volume into an existing layer, keeping the user's display settings.

        Only what changes is set (each napari setter re-slices or re-computes the
        world extent), and a hidden layer is not re-drawn.
        """
        kwargs = prepared.kwargs
        want_visible = bool(self.shown.get(prepared.track, layer.visible))
        if layer.visible and not want_visible:
            layer.visible = False
        block = getattr(layer, "_block_refresh", None)
        ctx = block() if block is not None else contextlib.nullcontext()
        with ctx:
            layer.data = prepared.data
            if not np.allclose(layer.scale, kwargs["scale"]):
                layer.scale = kwargs["scale"]
            if not np.allclose(layer.translate, kwargs["translate"]):
                layer.translate = kwargs["translate"]
            if not np.allclose(np.asarray(layer.affine.affine_matrix), np.eye(layer.ndim + 1)):
                layer.affine = np.eye(layer.ndim + 1)
            metadata = dict(layer.metadata)
            metadata.update(kwargs["metadata"])
            metadata["immunotrack"] = dict(
                kwargs["metadata"]["immunotrack"], track_label=layer.metadata["immunotrack"].get("track_label")
            )
            layer.metadata = metadata
            if prepared.kind == "image":
                new_limits = kwargs["contrast_limits"]
                lo_range, hi_range = layer.contrast_limits_range
                if self.link_windows.isChecked():
                    # linked: the same window at every timepoint (the range only grows to hold the data)
                    layer.contrast_limits_range = (min(lo_range, new_limits[0]), max(hi_range, new_limits[1]))
                else:
                    layer.contrast_limits_range = (min(lo_range, new_limits[0]), max(hi_range, new_limits[1]))
                    layer.contrast_limits = new_limits
        layer.name = kwargs["name"]
        if want_visible and not layer.visible:
            layer.visible = True  # refreshes
        elif layer.visible:
            layer.refresh()

    # ------------------------------------------------------------------ user adjustments (registration)
    def _layer_adjustment(self, layer) -> dict | None:
        """The affine changes the user made to a track layer ({} when none)."""
        prepared = self._prepared_for(layer)
        if prepared is None:
            return None
        out = {}
        napari_affine = np.asarray(layer.affine.affine_matrix, float)
        if not np.allclose(napari_affine, np.eye(napari_affine.shape[0])):
            out["layer_affine"] = napari_affine.tolist()
        volume = layer.metadata.get("volume")
        if volume is not None and not np.allclose(volume.affine, prepared.volume.affine, atol=1e-9):
            out["affine_ras"] = np.asarray(volume.affine).tolist()
        if out:  # the frame the change was made in: it means nothing in another one
            shown = self._alignment_for(layer.metadata.get("immunotrack", {}).get("study_session"))
            out["displayed_through"] = None if shown is None else np.asarray(shown, float).tolist()
        return out

    def _prepared_for(self, layer) -> Prepared | None:
        info = layer.metadata.get("immunotrack", {})
        session, track = info.get("study_session"), info.get("study_track")
        if session is None or track is None:
            return None
        baseline = info.get("study_role") == "baseline"
        future = self._cache.get((self.subject, session, baseline))
        if future is None or not future.done():
            return None
        return future.result().layers.get(track)

    def _remember_adjustments(self) -> None:
        for track, layer in self.track_layers.items():
            session = layer.metadata["immunotrack"].get("study_session")
            if session is None:
                continue
            self.model.remember_adjustment(session, track, self._layer_adjustment(layer))

    def _apply_adjustment(self, layer, session: str, track: str) -> None:
        adj = self.model.adjustment(session, track)
        if not adj:
            return
        made_in, shown = adj.get("displayed_through"), self._alignment_for(session)
        if (made_in is None) != (shown is None) or (
            made_in is not None and not np.allclose(np.asarray(made_in, float), np.asarray(shown, float), atol=1e-6)
        ):
            # e.g. a hand alignment saved into the study since: applying both would move the day twice
            self.model.remember_adjustment(session, track, None)
            self._tell(
                f"{session}: the hand adjustment of {track} was made in another frame (before the session's "
                "alignment was saved, or in native frames); it is dropped and the saved alignment is used.",
                level="warning",
            )
            return
        if adj.get("layer_affine") is not None:
            layer.affine = np.asarray(adj["layer_affine"], float)
        if adj.get("affine_ras") is not None and layer.metadata.get("volume") is not None:
            layer.metadata["volume"] = layer.metadata["volume"].replace(affine=np.asarray(adj["affine_ras"], float))
