"""napari-immunotrack: follow labelled therapeutic cells in vivo across MRI, PET/SPECT, 19F, MPI and optical images.

The Python API never imports napari or Qt:

>>> from napari_immunotrack.io import load_volume          # doctest: +SKIP
>>> mri = load_volume("sub-01/ses-d1/anat/sub-01_T2starw.nii.gz")  # doctest: +SKIP
"""

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-immunotrack")
except Exception:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

from .errors import Cancelled, ImmunotrackWarning, InputError  # noqa: E402
from .volume import Volume  # noqa: E402

__all__ = ["Volume", "InputError", "Cancelled", "ImmunotrackWarning", "__version__"]
