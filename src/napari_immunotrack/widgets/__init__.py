"""napari widgets (thin): each converts layers to Volumes, runs a pure function
from :mod:`napari_immunotrack.analysis` or :mod:`napari_immunotrack.registration`
in a worker thread, and puts the results back as layers and tables."""
