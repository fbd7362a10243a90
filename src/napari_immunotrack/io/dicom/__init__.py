"""DICOM series: reading folders/files into Volumes and writing Volumes as series (pydicom).

Reading (:func:`read_dicom`)
----------------------------
A path is a DICOM file or a folder, searched recursively; files need no
``.dcm`` extension and non-DICOM files (DICOMDIR, README, reports, plans) are
ignored. Images are grouped into one Volume per series (SeriesInstanceUID;
a multi-frame file is its own volume), sorted by SeriesNumber.

Geometry, the part that must never be guessed:

- Slices are sorted by their position along the slice normal
  ``n = row_cosine x column_cosine`` (``ImageOrientationPatient``), i.e. by
  ``n . ImagePositionPatient``; never by file name or InstanceNumber.
- All slices must share orientation, rows/columns and PixelSpacing; the
  spacing between consecutive positions must be uniform (within
  ``max(0.01 mm, 1 %)``). A missing slice, irregular spacing, a missing
  PixelSpacing / ImageOrientationPatient / ImagePositionPatient, or a single
  slice is an :class:`~napari_immunotrack.errors.InputError` saying what is
  wrong and what to do. Nothing defaults to 1 mm.
- Several slices at one position (dynamic PET frames, MR echoes, temporal
  positions) make a 4D volume when every position has the same number of
  them: the leading axis is ``"echo"`` when EchoTime/EchoNumbers differ,
  else ``"time"`` (ordered by TemporalPositionIdentifier/Index,
  FrameReferenceTime, acquisition date-time, TriggerTime); it is named in
  ``metadata["leading_axis"]``.
- Array order is ``([frame,] slice, row, column)``. The affine maps
  ``(slice, row, column)`` to RAS mm: DICOM's LPS with x and y negated,
  columns ``[step, PixelSpacing[0] * column_cosine, PixelSpacing[1] * row_cosine]``
  and origin the first sorted slice's ImagePositionPatient, where
  ``step = (position_last - position_first) / (n - 1)`` (so a gantry tilt
  gives an exact sheared affine, with a warning).
- Multi-frame files: NM reconstructed SPECT (DetectorInformationSequence +
  SliceVector + SpacingBetweenSlices), enhanced CT/MR/PET (per-frame
  functional groups) and RT dose grids (GridFrameOffsetVector).

Values: RescaleSlope/RescaleIntercept are applied per slice (PET scanners
give every slice its own slope); the result is float32 when any slice has a
slope/intercept other than (1, 0), else the stored integer type.

Units: PT ``Units`` BQML -> "Bq/mL", GML -> "SUVbw" (or the SUVType:
"SUVbsa", "SUVlbm", "SUVibw"), CM2ML -> "SUVbsa", CNTS -> "counts"; NM ->
"counts" unless Units says otherwise; MR "a.u."; CT "HU".

Metadata keys: ``source_path``, ``format`` ("dicom"), ``SeriesInstanceUID``,
``Modality``, the plain fields listed in :data:`PLAIN_KEYS` (timing and
patient fields as DICOM strings/floats/lists; ``AcquisitionDate/Time`` are
those of the earliest slice), the radiopharmaceutical fields of
``RadiopharmaceuticalInformationSequence[0]`` (``Radiopharmaceutical``,
``Radionuclide`` (the code meaning), ``RadionuclideTotalDose`` [Bq],
``RadionuclideHalfLife`` [s], ``RadiopharmaceuticalStartTime``,
``RadiopharmaceuticalStartDateTime``), ``dicom_header`` (the first sorted
slice's pydicom Dataset without pixel data, private tags included),
``slice_headers`` (see :data:`SLICE_HEADER_KEYS`), ``files`` (the files
read), ``slice_normal_lps``, ``gantry_tilt_deg`` (only when sheared), and
for 4D ``leading_axis`` and ``frames`` (one dict of timing/echo fields per
frame; ``EchoTime`` becomes the list of echo times for echoes).

Writing (:func:`write_dicom_series`)
------------------------------------
One file per slice (or one NM multi-frame file), geometry from the Volume's
affine for any orthogonal orientation, int16/uint16 pixels with per-slice or
global rescale, proper UIDs, SOP classes and file meta, into a temporary
folder renamed into place at the end.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from napari_immunotrack.volume import Volume
>>> affine = np.array([[0, 0, 0.5, -10], [0, 0.5, 0, -20], [2, 0, 0, -30], [0, 0, 0, 1.0]])  # axes S, A, R
>>> vol = Volume(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), affine,
...              modality="PT", unit="Bq/mL")
>>> tmp = tempfile.TemporaryDirectory()
>>> folder = write_dicom_series(vol, os.path.join(tmp.name, "pet"))
>>> back = read_dicom(folder)[0]
>>> back.spatial_shape, back.unit, bool(np.allclose(back.affine, vol.affine, atol=1e-6))
((4, 8, 8), 'Bq/mL', True)
>>> tmp.cleanup()

Modules: :mod:`.headers` (values, dates and times, one file's header),
:mod:`.frames` (the 2D images of a file with their geometry, enhanced
multi-frame included), :mod:`.geometry` (slice checks, ordering, affines),
:mod:`.pixels` (pixel decoding), :mod:`.reading` (:func:`read_dicom`) and
:mod:`.writer` (:func:`write_dicom_series`, the simulator's writer).
"""

from .headers import (
    PLAIN_KEYS,
    RADIOPHARM_KEYS,
    SLICE_HEADER_KEYS,
    dicom_seconds,
    parse_dicom_date,
    parse_dicom_datetime,
    parse_dicom_time,
)
from .reading import read_dicom
from .writer import make_study, write_dicom_series

__all__ = [
    "read_dicom",
    "write_dicom_series",
    "make_study",
    "dicom_seconds",
    "parse_dicom_date",
    "parse_dicom_time",
    "parse_dicom_datetime",
    "PLAIN_KEYS",
    "RADIOPHARM_KEYS",
    "SLICE_HEADER_KEYS",
]
