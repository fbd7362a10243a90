"""Multimodal rigid and affine registration (``docs/methods/registration.md``).

Directions, stated once
-----------------------
Every transform in this module is a 4x4 matrix ``fixed_to_moving`` in world
RAS millimetres: it maps a point of the *fixed* world to the point of the
*moving* world that shows the same anatomy (ITK's convention, the one of
``.tfm`` files, Slicer and ANTs, except that files are in LPS; see
:mod:`napari_immunotrack.io.transforms`). Two consequences:

- resampling the moving image onto the fixed grid uses it directly:
  ``moving.resample_to(fixed, transform=result.fixed_to_moving)``;
- displaying the moving image in the fixed world without resampling changes
  its affine to ``inv(fixed_to_moving) @ moving.affine``
  (:meth:`RegistrationResult.apply_to_affine`), because a moving voxel at
  moving world point ``p`` belongs at fixed world point ``inv(T) @ p``.

SimpleITK images use LPS physical points and index order ``(x, y, z)`` =
array axes ``(2, 1, 0)``; :func:`volume_to_sitk` and :func:`sitk_to_volume`
are the only places that know it.

Modules: :mod:`.itk_bridge` (SimpleITK conversions), :mod:`.result`
(:class:`RegistrationResult`), :mod:`.intensity` (:func:`register`,
:func:`evaluate_metric`), :mod:`.landmarks` (:func:`register_landmarks`,
FRE/TRE), :mod:`.qc` (resampling and QC views). Every public name of the former
``registration.py`` module is importable from here.
"""

from ..affines import lps_to_ras_transform, ras_to_lps_transform
from .intensity import HOT_SPOT_MODALITIES, evaluate_metric, register
from .itk_bridge import matrix_to_sitk_transform, sitk_affine, sitk_to_volume, sitk_transform_to_matrix, volume_to_sitk
from .landmarks import expected_fre, expected_tre, register_landmarks
from .qc import checkerboard, difference, edges, normalised, resample_moving
from .result import METRIC_NOTE, RegistrationResult

__all__ = [
    "HOT_SPOT_MODALITIES",
    "METRIC_NOTE",
    "RegistrationResult",
    "checkerboard",
    "difference",
    "edges",
    "evaluate_metric",
    "expected_fre",
    "expected_tre",
    "lps_to_ras_transform",
    "matrix_to_sitk_transform",
    "normalised",
    "ras_to_lps_transform",
    "register",
    "register_landmarks",
    "resample_moving",
    "sitk_affine",
    "sitk_to_volume",
    "sitk_transform_to_matrix",
    "volume_to_sitk",
]
