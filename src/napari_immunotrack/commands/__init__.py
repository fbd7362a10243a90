"""One module per ``immunotrack`` verb (see :mod:`napari_immunotrack.cli`)."""
