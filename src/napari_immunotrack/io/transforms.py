"""Linear transforms: the one reader and writer of transform files, and which way round to use them.

What is in the file
-------------------
ITK, 3D Slicer and ANTs store a registration result as the map from a
*fixed* physical point to the *moving* physical point (the direction used to
resample the moving image onto the fixed grid), in LPS millimetres. This
package's API speaks RAS, so reading and writing convert with
``F @ T @ F``, ``F = diag(-1, -1, 1, 1)``; the direction is the same on both
sides (``fixed_to_moving``).

Which image was fixed
---------------------
A matrix alone does not say which image was fixed, and using a registration
backwards moves every ROI by twice the registration (see
``docs/methods/transforms.md``). Every text transform this package writes
therefore carries one comment line that ITK, Slicer and ANTs skip::

    #immunotrack-direction {"fixed": {...}, "moving": {...}}

with the name, modality, shape and affine of each image (the same record
goes into the ``.provenance.json`` sidecar, the only place for binary
``.mat`` files). :func:`resolve_direction` uses it to turn a file into the
map a verb needs (e.g. PET world -> ROI world), whichever of the two images
was fixed; without it (a plain matrix, another tool's file) the provenance
sidecar, a BIDS-like name (``*_from-pet_to-anat.tfm``: PET moving) and
finally the overlap of the ROIs with the image's signal decide, and a
transform whose direction none of these can tell is refused.

Files are written through SimpleITK (an ``AffineTransform_double_3_3``),
atomically: a temporary file in the same folder renamed into place.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..outputs import atomic_output, sidecar_path, write_sidecar

#: File name endings ITK reads and writes as transform files.
TRANSFORM_SUFFIXES = (".tfm", ".txt", ".mat")
#: Plain 4x4 (or 3x4) RAS matrices.
MATRIX_SUFFIXES = (".npy", ".csv", ".txt")
#: The comment line holding the direction record in a text transform file.
DIRECTION_TAG = "#immunotrack-direction"

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: BIDS-like data types of ``from-<type>_to-<type>`` file names -> the modalities they stand for.
_DATATYPE_MODALITIES = {
    "pet": {"PT"},
    "spect": {"NM"},
    "mpi": {"MPI"},
    "f19": {"MR19F", "19F", "F19"},
    "anat": {"MR"},
    "mri": {"MR"},
    "ct": {"CT"},
}


def ras_to_lps(matrix) -> np.ndarray:
    """A 4x4 RAS world transform as ITK's LPS (the conversion is its own inverse).

    Parameters
    ----------
    matrix : (4, 4) array
        A world-to-world map between RAS points (mm); or LPS, for :func:`lps_to_ras`.

    Returns
    -------
    (4, 4) ndarray
        ``F @ matrix @ F`` with ``F = diag(-1, -1, 1, 1)``: the same motion between LPS points.

    Examples
    --------
    >>> shift_right = np.eye(4); shift_right[0, 3] = 2.0      # 2 mm towards the subject's Right
    >>> ras_to_lps(shift_right)[:3, 3]                          # LPS x points Left
    array([-2.,  0.,  0.])
    """
    return _LPS @ np.asarray(matrix, float) @ _LPS


lps_to_ras = ras_to_lps


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(TRANSFORM_SUFFIXES):
        raise InputError(
            f"{path}: a transform file must end in .tfm (ITK text, read by Slicer and ANTs), "
            ".txt or .mat (ITK binary, ANTs)."
        )


#: Parameter counts of ITK's 3D linear transforms as the text format writes them (type name before "_double").
#: A text file is checked against these before SimpleITK reads it: SimpleITK accepts a missing Parameters
#: line as the identity and crashes the process (segmentation fault) on a short or non-numeric one.
_LINEAR_PARAMETER_COUNTS = {
    "AffineTransform": 12,
    "MatrixOffsetTransformBase": 12,
    "Rigid3DTransform": 12,
    "FixedCenterOfRotationAffineTransform": 12,
    "CenteredAffineTransform": 15,
    "Euler3DTransform": 6,
    "CenteredEuler3DTransform": 9,
    "VersorRigid3DTransform": 6,
    "VersorTransform": 3,
    "QuaternionRigidTransform": 7,
    "Similarity3DTransform": 7,
    "ScaleVersor3DTransform": 9,
    "ScaleSkewVersor3DTransform": 15,
    "ScaleTransform": 3,
    "ScaleLogarithmicTransform": 3,
    "TranslationTransform": 3,
    "IdentityTransform": 0,
}


def check_itk_text(path: Path) -> None:
    r"""Refuse a damaged ITK text transform file before SimpleITK reads it (one line, InputError).

    Every transform of the file (a composite's parts included) must have a ``Parameters`` and a
    ``FixedParameters`` line of finite numbers, as many as its type takes (at least 3 fixed parameters,
    the centre, except for translations). Non-linear types (B-spline, displacement field) are left to the
    caller's own refusal; unknown types only need finite numbers.

    Parameters
    ----------
    path : Path
        A ``.tfm`` or ``.txt`` ITK text transform file (other files are not checked).

    Returns
    -------
    None

    Raises
    ------
    InputError
        A file that is not ITK text, a transform without its parameters, a count that does not fit
        its type, or a value that is not a finite number.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     good = Path(d) / "ok.tfm"
    ...     _ = good.write_text("#Insight Transform File V1.0\n#Transform 0\n"
    ...                         "Transform: Euler3DTransform_double_3_3\n"
    ...                         "Parameters: 0 0 0 1 2 3\nFixedParameters: 0 0 0 0\n")
    ...     check_itk_text(good)
    ...     bad = Path(d) / "bad.tfm"
    ...     _ = bad.write_text(good.read_text().replace("0 0 0 1 2 3", "0 0"))
    ...     try:
    ...         check_itk_text(bad)
    ...     except InputError as exc:
    ...         print(str(exc).split(": ", 1)[1])
    transform 1 (Euler3DTransform) has 2 parameters; its type takes 6; the file is damaged: write it again (immunotrack register or align).
    """
    if not path.name.lower().endswith((".tfm", ".txt")):
        return
    try:
        text = path.read_text(errors="strict")
    except (UnicodeDecodeError, OSError):
        raise InputError(
            f"{path} is not a readable ITK transform file (not text); write it with ITK, Slicer or ANTs, or "
            "with immunotrack register."
        ) from None
    blocks: list[dict] = []
    for raw in text.splitlines():
        key, sep, value = raw.partition(":")
        key = key.strip()
        if not sep or key.startswith("#"):
            continue
        if key == "Transform":
            blocks.append({"type": value.strip()})
        elif key in ("Parameters", "FixedParameters") and blocks:
            blocks[-1][key] = value.split()
    if not blocks:
        raise InputError(
            f"{path} is not a readable ITK transform file: it holds no 'Transform:' line (or it is cut "
            "short); write it again with ITK, Slicer or ANTs, or with immunotrack register."
        )
    again = "; the file is damaged: write it again (immunotrack register or align)."
    for number, block in enumerate(blocks, 1):
        kind = block["type"].split("_")[0]
        if kind.startswith("Composite"):
            continue
        for key in ("Parameters", "FixedParameters"):
            if key not in block:
                raise InputError(f"{path}: transform {number} ({kind}) has no {key} line{again}")
            try:
                values = [float(v) for v in block[key]]
            except ValueError:
                raise InputError(
                    f"{path}: transform {number} ({kind}) has a {key} value that is not a number{again}"
                ) from None
            if not all(np.isfinite(values)):
                raise InputError(f"{path}: transform {number} ({kind}) has a {key} value that is not finite{again}")
        expected = _LINEAR_PARAMETER_COUNTS.get(kind)
        if expected is not None and len(block["Parameters"]) != expected:
            raise InputError(
                f"{path}: transform {number} ({kind}) has {len(block['Parameters'])} parameters; its type takes "
                f"{expected}{again}"
            )
        centred = kind not in ("TranslationTransform", "IdentityTransform")  # the others keep a centre
        if expected is not None and centred and len(block["FixedParameters"]) < 3:
            raise InputError(
                f"{path}: transform {number} ({kind}) has {len(block['FixedParameters'])} fixed parameters; "
                f"3D transforms take at least 3 (the centre){again}"
            )


def _check_matrix(matrix, what: str = "a transform") -> np.ndarray:
    m = np.asarray(matrix, float)
    if m.shape == (3, 4):
        m = np.vstack([m, [0, 0, 0, 1]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError(f"{what} must be a finite 4x4 matrix with last row [0, 0, 0, 1].")
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise InputError(f"{what} is singular (it flattens space); it cannot map one image onto another.")
    return m


# --------------------------------------------------------------------------- image descriptors
def describe_image(volume=None, *, role: str = "", path=None, datatype: str | None = None) -> dict:
    """What a transform file records of one of its two images (JSON-ready).

    Parameters
    ----------
    volume : Volume, optional
        The image (name, modality, shape and affine are recorded).
    role : str
        Free text ("fixed image", "MRI world").
    path : str or Path, optional
    datatype : str, optional
        BIDS-like data type ("pet", "anat", "mpi").

    Returns
    -------
    dict
        ``role``, ``path`` and ``datatype`` when given; with a volume also ``name``, ``modality``,
        ``shape`` (the last three axes) and ``affine`` (rounded to 1e-6 mm).

    Examples
    --------
    >>> describe_image(role="MRI", datatype="anat")["datatype"]
    'anat'
    >>> from napari_immunotrack.volume import Volume
    >>> pet = Volume(np.zeros((2, 3, 4)), np.eye(4), modality="PT", name="pet")
    >>> record = describe_image(pet, role="moving image")
    >>> record["name"], record["modality"], record["shape"]
    ('pet', 'PT', [2, 3, 4])
    """
    d = {"role": role} if role else {}
    if volume is not None:
        shape = tuple(int(s) for s in volume.shape[-3:])
        d.update(
            name=volume.name or "",
            modality=str(volume.modality or ""),
            shape=list(shape),
            affine=[[round(float(v), 6) for v in row] for row in np.asarray(volume.affine, float)],
        )
    if path is not None:
        d["path"] = str(path)
    if datatype:
        d["datatype"] = datatype
    return d


@dataclass
class TransformFile:
    """A transform read from a file, with what is known of its direction.

    Attributes
    ----------
    fixed_to_moving : (4, 4) array
        RAS world map, fixed -> moving (ITK's convention).
    fixed, moving : dict or None
        What is known of each image (see :func:`describe_image`).
    source : str
        Where the direction record came from ("file header", "provenance sidecar",
        "file name", "none").
    path : str
    """

    fixed_to_moving: np.ndarray
    fixed: dict | None = None
    moving: dict | None = None
    source: str = "none"
    path: str = ""
    #: every direction record found, most trusted first: (source, fixed, moving)
    records: list = field(default_factory=list)

    @property
    def knows_direction(self) -> bool:
        return bool(self.fixed) or bool(self.moving)


# --------------------------------------------------------------------------- writing
def write_transform(
    path,
    fixed_to_moving,
    overwrite: bool = False,
    provenance: dict | None = None,
    *,
    fixed: dict | None = None,
    moving: dict | None = None,
) -> Path:
    """Write a 4x4 RAS ``fixed_to_moving`` transform as an ITK transform file (LPS inside).

    Parameters
    ----------
    path : str or Path
        ``.tfm`` (text; Slicer, ANTs, ITK), ``.txt`` or ``.mat``.
    fixed_to_moving : (4, 4) array
        Fixed world RAS mm -> moving world RAS mm (a :class:`~napari_immunotrack.registration.RegistrationResult`'s
        ``fixed_to_moving``).
    overwrite : bool
        Replace an existing file.
    provenance : dict, optional
        Written to ``<path>.provenance.json`` (with the direction record added).
    fixed, moving : dict, optional
        :func:`describe_image` records of the two images; written as a comment line ITK
        skips (text files) and into the provenance, so that the file cannot be used backwards.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        A wrong file ending, or a matrix that is not a finite, invertible 4x4 (3x4) affine;
        OutputExistsError when ``path`` exists and not ``overwrite``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> T = np.eye(4); T[:3, 3] = [1.0, 2.0, 3.0]
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_transform(os.path.join(folder, "t.tfm"), T, fixed={"name": "mri"}, moving={"name": "pet"})
    ...     np.allclose(read_transform(path), T), read_transform_file(path).moving["name"]
    (True, 'pet')
    """
    import SimpleITK as sitk

    path = Path(path)
    _check_suffix(path)
    matrix = _check_matrix(fixed_to_moving)
    lps = ras_to_lps(matrix)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in lps[:3, :3].ravel()])
    tx.SetTranslation([float(v) for v in lps[:3, 3]])
    direction = (
        {
            "convention": "fixed world -> moving world (ITK); resample moving onto fixed with it",
            "fixed": fixed or {},
            "moving": moving or {},
        }
        if (fixed or moving)
        else None
    )
    if provenance is not None and direction is not None:
        provenance = {**provenance, "transform_direction": direction}
    with atomic_output(path, overwrite) as tmp:
        sitk.WriteTransform(tx, str(tmp))
        if direction is not None and not path.name.lower().endswith(".mat"):
            lines = Path(tmp).read_text().splitlines()
            lines.insert(1, f"{DIRECTION_TAG} {json.dumps(direction, separators=(',', ':'))}")
            Path(tmp).write_text("\n".join(lines) + "\n")
        if provenance is not None:
            write_sidecar(path, provenance, written=tmp)
    return path


# --------------------------------------------------------------------------- reading
def read_transform(path) -> np.ndarray:
    """Read an ITK linear transform file (LPS, fixed -> moving) as a 4x4 RAS ``fixed_to_moving`` matrix.

    Any linear ITK transform is accepted (Affine, Euler, Versor, Similarity,
    MatrixOffset as Slicer writes them, or a composite of those); a
    deformable one is refused.

    Parameters
    ----------
    path : str or Path
        A ``.tfm``, ``.txt`` or ``.mat`` ITK transform file.

    Returns
    -------
    (4, 4) ndarray
        Fixed world RAS mm -> moving world RAS mm.

    Raises
    ------
    InputError
        A missing file, a wrong ending, an unreadable or non-linear transform.

    Examples
    --------
    >>> import tempfile, SimpleITK as sitk
    >>> euler = sitk.Euler3DTransform(); euler.SetTranslation((1.0, 2.0, 3.0))   # ITK: LPS mm
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     sitk.WriteTransform(euler, str(Path(folder) / "euler.tfm"))
    ...     read_transform(Path(folder) / "euler.tfm")[:3, 3]                    # RAS mm
    array([-1., -2.,  3.])
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path of the transform file.")
    _check_suffix(path)
    check_itk_text(path)
    try:
        tx = sitk.ReadTransform(str(path))
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[-160:]
        raise InputError(
            f"{path} is not a readable ITK transform file ({first}); write it with ITK, Slicer or "
            "ANTs, or with immunotrack register."
        ) from None
    if tx.GetDimension() != 3:
        raise InputError(f"{path} holds a {tx.GetDimension()}D transform; a 3D transform is needed.")
    if hasattr(tx, "IsLinear") and not tx.IsLinear():
        raise InputError(
            f"{path}: the transform is not linear (e.g. a B-spline or displacement field); only rigid "
            "and affine transforms can be used here."
        )
    # the matrix from the origin and three unit points: works for every linear transform type
    probe = np.array([[0, 0, 0], [100, 0, 0], [0, 100, 0], [0, 0, 100]], float)
    mapped = np.array([tx.TransformPoint(tuple(float(c) for c in p)) for p in probe])
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = ((mapped[1:] - mapped[0]) / 100.0).T
    check = np.array([37.0, -52.0, 81.0])
    if not np.allclose(tx.TransformPoint(tuple(check)), lps[:3, :3] @ check + lps[:3, 3], atol=1e-4):
        raise InputError(f"{path}: the transform is not linear; only rigid and affine transforms can be used here.")
    return _check_matrix(lps_to_ras(lps), f"{path}")


def _is_itk_text(path: Path) -> bool:
    try:
        return "#insight" in path.read_text(errors="ignore")[:200].lower()
    except OSError:
        return False


def _direction_from_header(path: Path):
    if path.name.lower().endswith(".mat"):
        return None
    try:
        with open(path, errors="ignore") as fh:
            for _, line in zip(range(20), fh):
                if line.startswith(DIRECTION_TAG):
                    return json.loads(line[len(DIRECTION_TAG) :])
    except (OSError, ValueError):
        return None
    return None


def _direction_from_sidecar(path: Path):
    side = sidecar_path(path)
    if not side.exists():
        return None
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if isinstance(record.get("transform_direction"), dict):
        return record["transform_direction"]
    inputs = record.get("inputs") if isinstance(record.get("inputs"), dict) else {}
    if record.get("step") == "register" and ("fixed" in inputs or "moving" in inputs):

        def as_desc(v):
            if isinstance(v, dict):
                return {k: v[k] for k in ("name", "modality", "shape", "path") if k in v}
            return {"path": str(v)} if v else {}

        return {"fixed": as_desc(inputs.get("fixed")), "moving": as_desc(inputs.get("moving"))}
    return None


def _direction_from_name(path: Path):
    match = re.search(r"from-([A-Za-z0-9]+)_to-([A-Za-z0-9]+)", path.name)
    if not match:
        return None
    return {"moving": {"datatype": match.group(1).lower()}, "fixed": {"datatype": match.group(2).lower()}}


def read_transform_file(spec, what: str = "--transform") -> TransformFile:
    """The one reader of transform arguments: 'identity', an ITK file, or a plain 4x4 RAS matrix.

    Parameters
    ----------
    spec : str or Path
        ``identity``; an ITK transform (``.tfm``, ``.mat``, ITK text ``.txt``); or a
        plain 4x4 (3x4) RAS matrix in ``.npy``, ``.csv`` or whitespace ``.txt``.
    what : str
        The option's name for messages.

    Returns
    -------
    TransformFile
        The matrix as written (fixed -> moving for ITK files) with the direction record
        from the file's comment line, its provenance sidecar or its name when there is one.

    Raises
    ------
    InputError
        A missing or unreadable file, a matrix that is not a finite invertible affine.

    Examples
    --------
    >>> import tempfile
    >>> read_transform_file("identity").source
    'identity'
    >>> shift = np.eye(4); shift[2, 3] = 3.0
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     np.savetxt(Path(folder) / "m.csv", shift, delimiter=",")
    ...     plain = read_transform_file(Path(folder) / "m.csv")
    >>> plain.source, float(plain.fixed_to_moving[2, 3]), plain.knows_direction
    ('plain matrix', 3.0, False)
    """
    text = str(spec)
    if text.strip().lower() == "identity":
        return TransformFile(np.eye(4), {"identity": True}, {"identity": True}, "identity", "identity")
    path = Path(text)
    if not path.exists():
        raise InputError(f"{what} {text} does not exist; give a transform file (or 'identity').")
    name = path.name.lower()
    if name.endswith((".tfm", ".mat")) or (name.endswith(".txt") and _is_itk_text(path)):
        matrix = read_transform(path)
    elif name.endswith(MATRIX_SUFFIXES):
        try:
            if name.endswith(".npy"):
                m = np.load(path, allow_pickle=False)
            else:
                m = np.loadtxt(path, delimiter="," if name.endswith(".csv") else None)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{what} {text} cannot be read as a transform: not a 4x4 matrix ({' '.join(str(exc).split())[:100]})."
            ) from None
        matrix = _check_matrix(m, f"{what} {text}")
        return TransformFile(matrix, None, None, "plain matrix", str(path))
    else:
        raise InputError(f"{what} {text}: give an ITK transform (.tfm, .mat, .txt) or a 4x4 matrix (.npy, .csv, .txt).")
    records = []
    for source, finder in (
        ("file header", _direction_from_header),
        ("provenance sidecar", _direction_from_sidecar),
        ("file name", _direction_from_name),
    ):
        found = finder(path)
        if found and (found.get("fixed") or found.get("moving")):
            records.append((source, found.get("fixed") or None, found.get("moving") or None))
    if not records:
        return TransformFile(matrix, None, None, "none", str(path))
    source, fixed, moving = records[0]
    return TransformFile(matrix, fixed, moving, source, str(path), records=records)


# --------------------------------------------------------------------------- direction
def _match(desc: dict | None, volume, path=None) -> int:
    """How strongly a recorded image matches ``volume``: 4 same file, 3 same grid, 2 same shape, 1 same modality."""
    if not desc or volume is None:
        return 0
    score = 0
    if path is not None and desc.get("path"):
        try:
            if Path(desc["path"]).resolve() == Path(path).resolve():
                return 4
        except OSError:
            pass
    shape = tuple(int(s) for s in volume.shape[-3:])
    if desc.get("shape") is not None and tuple(desc["shape"]) == shape:
        score = 2
        if desc.get("affine") is not None and np.allclose(np.asarray(desc["affine"], float), volume.affine, atol=1e-3):
            score = 3
    modality = str(getattr(volume, "modality", "") or "").upper()
    if score == 0 and modality:
        if str(desc.get("modality", "")).upper() == modality:
            score = 1
        elif modality in _DATATYPE_MODALITIES.get(str(desc.get("datatype", "")).lower(), set()):
            score = 1
    return score


def _is_labels(volume) -> bool:
    kind = np.asarray(volume.data[:1]).dtype.kind if hasattr(volume.data, "dtype") else "f"
    return kind in "iub" or str(volume.modality).upper() == "SEG"


def _sample_other(image, other, image_to_other: np.ndarray, step: np.ndarray):
    """Values of ``other`` (nearest voxel) at a strided subset of ``image``'s voxel centres."""
    shape = np.array(image.shape[-3:])
    axes = [np.arange(0, n, s) for n, s in zip(shape, step)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(float)
    m = np.linalg.inv(other.affine) @ image_to_other @ image.affine
    idx = np.rint(grid @ m[:3, :3].T + m[:3, 3]).astype(np.int64)
    oshape = np.array(other.shape[-3:])
    inside = np.all((idx >= 0) & (idx < oshape), axis=1)
    odata = np.asarray(other.data)
    if odata.ndim == 4:
        odata = odata[0]
    vals = np.zeros(len(idx), float)
    vals[inside] = odata[tuple(idx[inside].T)]
    idata = np.asarray(image.data)
    if idata.ndim == 4:
        idata = idata[0]
    ivals = idata[np.ix_(*axes)].reshape(-1).astype(float)
    return ivals, vals, inside


def _correlation_ratio(values: np.ndarray, labels: np.ndarray) -> float:
    """Share of the variance of ``values`` explained by ``labels`` (eta squared, 0..1)."""
    ok = np.isfinite(values)
    values, labels = values[ok], labels[ok].astype(np.int64)
    if values.size < 10 or values.var() <= 0:
        return 0.0
    _, inv = np.unique(labels, return_inverse=True)
    counts = np.bincount(inv)
    means = np.bincount(inv, values) / counts
    between = float(np.sum(counts * (means - values.mean()) ** 2))
    return between / float(np.sum((values - values.mean()) ** 2))


def overlap_scores(image, other, image_to_other: np.ndarray, max_points: int = 200_000) -> tuple:
    """How well ``other`` lands on ``image`` with a transform and with its inverse.

    For a label image (ROIs) the score is the correlation ratio (the share of the
    image's variance the labels explain: ROIs on the organs they were drawn on
    explain much of it, shifted ROIs less); for two intensity images it is the
    absolute Pearson correlation of their values.

    Parameters
    ----------
    image : Volume
        The image whose voxels are sampled (first frame of a 4D image).
    other : Volume
        Labels (integer or modality "SEG") or a second intensity image, sampled at nearest voxel.
    image_to_other : (4, 4) array
        RAS world map from ``image``'s world to ``other``'s.
    max_points : int, default 200000
        At most about this many voxels of ``image`` are sampled (a regular stride).

    Returns
    -------
    (as given, inverted) : tuple of float
        The score with ``image_to_other`` and with its inverse, each in [0, 1] (higher fits better;
        0 when fewer than 10 points or no variance).

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> signal = np.zeros((1, 1, 30)); signal[0, 0, 10:15] = 10.0      # a hot organ at z = 10-14 mm
    >>> rois = np.zeros((1, 1, 30), np.uint8); rois[0, 0, 13:18] = 1   # its ROI, drawn 3 mm higher
    >>> shift = np.eye(4); shift[2, 3] = 3.0
    >>> given, inverted = overlap_scores(Volume(signal, np.eye(4)), Volume(rois, np.eye(4)), shift)
    >>> round(given, 3), round(inverted, 3)
    (1.0, 0.04)
    """
    n = int(np.prod(image.shape[-3:]))
    stride = max(1, int(np.ceil((n / max_points) ** (1 / 3))))
    step = np.array([stride] * 3)
    labels = _is_labels(other)
    scores = []
    for m in (image_to_other, np.linalg.inv(image_to_other)):
        ivals, ovals, inside = _sample_other(image, other, m, step)
        if labels:
            scores.append(_correlation_ratio(ivals, ovals))
        else:
            a, b = ivals[inside], ovals[inside]
            scores.append(0.0 if a.size < 10 or a.std() == 0 or b.std() == 0 else abs(float(np.corrcoef(a, b)[0, 1])))
    return tuple(scores)


def _displacement_mm(matrix: np.ndarray, volume) -> float:
    """Largest distance between where ``matrix`` and its inverse send the corners of ``volume``'s box."""
    shape = np.array(volume.shape[-3:]) - 1
    corners = np.array([[i, j, k] for i in (0, shape[0]) for j in (0, shape[1]) for k in (0, shape[2])], float)
    world = corners @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    inv = np.linalg.inv(matrix)
    a = world @ matrix[:3, :3].T + matrix[:3, 3]
    b = world @ inv[:3, :3].T + inv[:3, 3]
    return float(np.max(np.linalg.norm(a - b, axis=1)))


#: Relative margin by which one direction's overlap must beat the other's to decide.
OVERLAP_MARGIN = 0.10
#: Below this overlap score the other image explains too little of the image for the check to mean anything.
OVERLAP_MIN_SCORE = 0.05


def resolve_direction(
    tf: TransformFile,
    image,
    other,
    *,
    fixed: str = "auto",
    image_path=None,
    other_path=None,
    image_name: str = "the image",
    other_name: str = "the ROI image",
) -> tuple:
    """The map from ``image``'s world to ``other``'s world that a transform file stands for.

    A registration written by ``immunotrack register``, ITK, Slicer or ANTs maps the
    fixed world to the moving world. Verbs need ``image`` world -> ``other`` world
    (e.g. PET -> ROI image): that is the file's matrix when ``image`` was the fixed
    image and its inverse when ``image`` was the moving one. See
    ``docs/methods/transforms.md#direction``.

    Parameters
    ----------
    tf : TransformFile
    image : Volume
        The grid the verb works on (the quantitative image, or POST for ``segment``).
    other : Volume
        The ROI image (or the baseline image).
    fixed : {"auto", "image", "other"}
        Which of the two was the registration's fixed image; ``auto`` decides from the
        file's direction record, then from the overlap of ``other`` with ``image``.
    image_path, other_path : path, optional
        The files (matched against the recorded paths).
    image_name, other_name : str
        For messages.

    Returns
    -------
    (matrix, how) : ((4, 4) array, str)
        ``image`` world -> ``other`` world, and one sentence saying how the direction was decided.

    Raises
    ------
    InputError
        When the direction cannot be decided (no record, and the overlap with the
        transform and with its inverse is too close to call).

    Examples
    --------
    >>> from napari_immunotrack.volume import Volume
    >>> pet = Volume(np.zeros((1, 1, 30)), np.eye(4), modality="PT", name="pet")
    >>> rois = Volume(np.zeros((1, 1, 40), np.uint8), np.eye(4), modality="SEG", name="rois")
    >>> shift = np.eye(4); shift[2, 3] = 3.0
    >>> pet_fixed = TransformFile(shift, describe_image(pet), describe_image(rois), "file header")
    >>> matrix, how = resolve_direction(pet_fixed, pet, rois)
    >>> float(matrix[2, 3]), how
    (3.0, 'the image was the fixed image (file header)')
    >>> matrix, how = resolve_direction(pet_fixed, rois, pet, image_name="the ROIs")
    >>> float(matrix[2, 3]), how
    (-3.0, 'the ROIs was the moving image (file header); the transform is inverted')
    """
    m = np.asarray(tf.fixed_to_moving, float)
    if fixed not in ("auto", "image", "other"):
        raise InputError(f"the fixed image must be auto, image or other (got {fixed!r}).")
    if fixed == "image":
        return m, f"{image_name} taken as the registration's fixed image (as told)"
    if fixed == "other":
        return np.linalg.inv(m), f"{other_name} taken as the registration's fixed image (as told); inverted"
    if tf.source == "identity":
        return m, "identity"
    for source, rec_fixed, rec_moving in tf.records or (
        [(tf.source, tf.fixed, tf.moving)] if tf.knows_direction else []
    ):
        image_fixed = max(_match(rec_fixed, image, image_path), _match(rec_moving, other, other_path))
        image_moving = max(_match(rec_moving, image, image_path), _match(rec_fixed, other, other_path))
        if image_fixed != image_moving:
            if image_fixed > image_moving:
                return m, f"{image_name} was the fixed image ({source})"
            return np.linalg.inv(m), f"{image_name} was the moving image ({source}); the transform is inverted"
    # no usable record: the overlap decides
    if _displacement_mm(m, image) < 0.5 * float(np.min(np.abs(image.spacing if hasattr(image, "spacing") else [1.0]))):
        return m, "the transform and its inverse differ by under half a voxel (direction immaterial)"
    given, inverted = overlap_scores(image, other, m)
    best = max(given, inverted)
    decisive = best >= OVERLAP_MIN_SCORE and abs(given - inverted) > OVERLAP_MARGIN * best
    if tf.source == "plain matrix" and not decisive:
        # a bare matrix has a documented convention (image world -> other world): used when overlap cannot tell
        return m, (
            f"plain matrix taken as {image_name} world -> {other_name} world (overlap undecided: "
            f"{given:.3f} as given vs {inverted:.3f} inverted)"
        )
    if decisive:
        if given > inverted:
            return m, (
                f"direction by overlap: {other_name} fits {image_name} better as given "
                f"({given:.3f} vs {inverted:.3f} inverted)"
            )
        return np.linalg.inv(m), (
            f"direction by overlap: {other_name} fits {image_name} better inverted "
            f"({inverted:.3f} vs {given:.3f} as given)"
        )
    raise InputError(
        f"cannot tell which image was fixed in transform {tf.path} (no direction record, and "
        f"{other_name} overlaps {image_name} as well with it as with its inverse: {given:.3f} vs "
        f"{inverted:.3f}); pass --transform-fixed image or --transform-fixed other."
    )


__all__ = [
    "write_transform",
    "read_transform",
    "read_transform_file",
    "resolve_direction",
    "describe_image",
    "overlap_scores",
    "TransformFile",
    "TRANSFORM_SUFFIXES",
    "DIRECTION_TAG",
    "ras_to_lps",
    "lps_to_ras",
]
