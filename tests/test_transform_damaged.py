"""Damaged ITK transform files are refused in one line, never read as the identity and never crash.

SimpleITK 2.x reads a file without a ``Parameters`` line as the identity and ends the process with a
segmentation fault on a short or non-numeric one; ``io.transforms.check_itk_text`` checks the text
before SimpleITK sees it. Each case runs in a subprocess, so a crash fails the test instead of pytest.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from napari_immunotrack.errors import InputError
from napari_immunotrack.io.transforms import read_transform


def _written(tmp_path, tx, name="ok.tfm"):
    path = tmp_path / name
    sitk.WriteTransform(tx, str(path))
    return path


def _euler():
    tx = sitk.Euler3DTransform()
    tx.SetRotation(0.1, 0.2, 0.3)
    tx.SetTranslation((1.0, 2.0, 3.0))
    return tx


def _damage(text: str, case: str) -> str:
    params = text.split("Parameters: ", 1)[1].split("\n", 1)[0]
    return {
        "short parameters": text.replace(params, "0.1 0.2"),
        "text in the parameters": text.replace(params, "abc def"),
        "no parameters line": "\n".join(line for line in text.splitlines() if not line.startswith("Parameters")),
        "nan parameter": text.replace(params, "0.1 nan 0.3 1 2 3"),
        "extra parameters": text.replace(params, params + " 7 8"),
        "short fixed parameters": text.replace("FixedParameters: 0 0 0 0", "FixedParameters: 0"),
        "cut in half": text[: len(text) // 2],
        "empty": "",
    }[case]


CASES = [
    "short parameters",
    "text in the parameters",
    "no parameters line",
    "nan parameter",
    "extra parameters",
    "short fixed parameters",
    "cut in half",
    "empty",
]


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_transform_is_refused_in_one_line(tmp_path, case):
    good = _written(tmp_path, _euler())
    bad = tmp_path / "bad.tfm"
    bad.write_text(_damage(good.read_text(), case))
    with pytest.raises(InputError) as info:
        read_transform(bad)
    message = str(info.value)
    assert "\n" not in message and str(bad) in message
    assert "write it" in message  # says what to do


@pytest.mark.parametrize("case", ["short parameters", "text in the parameters", "nan parameter"])
def test_the_command_line_refuses_instead_of_crashing(tmp_path, case):
    """These three crashed the whole process inside SimpleITK before the check (exit -11)."""
    good = _written(tmp_path, _euler())
    bad = tmp_path / "bad.tfm"
    bad.write_text(_damage(good.read_text(), case))
    code = (
        "import sys\n"
        "from napari_immunotrack.errors import InputError\n"
        "from napari_immunotrack.io.transforms import read_transform\n"
        "try:\n"
        f"    read_transform({str(bad)!r})\n"
        "except InputError:\n"
        "    sys.exit(2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-500:]


@pytest.mark.parametrize(
    "make",
    [
        _euler,
        lambda: sitk.AffineTransform(np.diag([1.1, 0.9, 1.0]).ravel().tolist(), (1.0, -2.0, 0.5)),
        lambda: sitk.VersorRigid3DTransform((0.0, 0.0, np.sin(0.1), np.cos(0.1)), (1.0, 2.0, 3.0)),
        lambda: sitk.Similarity3DTransform(1.2, (0.0, 0.0, 1.0), 0.2, (1.0, 0.0, 0.0)),
        lambda: sitk.TranslationTransform(3, (4.0, 5.0, 6.0)),
        lambda: sitk.CompositeTransform([_euler(), sitk.TranslationTransform(3, (1.0, 1.0, 1.0))]),
    ],
)
def test_every_linear_type_simpleitk_writes_still_reads_to_its_matrix(tmp_path, make):
    """The check must not refuse a sound file: SimpleITK's own point mapping is the reference."""
    tx = make()
    path = _written(tmp_path, tx)
    matrix = read_transform(path)  # RAS fixed -> moving
    lps_point = np.array([12.0, -7.0, 30.0])
    ras_point = lps_point * [-1, -1, 1]
    mapped_ras = matrix[:3, :3] @ ras_point + matrix[:3, 3]
    expected_lps = np.array(tx.TransformPoint(tuple(lps_point)))
    np.testing.assert_allclose(mapped_ras * [-1, -1, 1], expected_lps, atol=1e-6)
