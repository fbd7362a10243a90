"""What ``immunotrack align`` loads (issue 18: the whole CLI call within 1.5 s, about 0.6 s of it was imports).

Behaviour guarantees, not timings: the command line never imports napari, Qt or matplotlib, and the align
verb does not pay for modules only other verbs need (scipy.ndimage alone cost it about 0.3 s). Each check runs
in a fresh interpreter, so what an earlier test imported cannot hide or fake a result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_immunotrack.simulate import sessions as S
from napari_immunotrack.simulate.phantom import make_mouse

SRC = str(Path(__file__).resolve().parents[1] / "src")
GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "matplotlib", "vispy")
#: modules the align verb has no use for; each used to be (or could easily be) imported by another verb's
#: argument defaults or by the package's analysis modules
NOT_FOR_ALIGN = ("scipy.ndimage", "pandas", "dask", "skimage", "napari_immunotrack.analysis.clusters")

PROBE = """
import json, sys
sys.argv = ["immunotrack"] + json.loads(sys.argv[1])
{body}
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(body: str, args: list[str]) -> set[str]:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=300,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_loads_no_gui():
    loaded = _modules_after("import napari_immunotrack.cli", [])
    assert "napari_immunotrack.cli" in loaded  # the probe did import it
    assert not [m for m in GUI if m in loaded]


def test_parsing_one_verb_adds_only_its_arguments():
    from napari_immunotrack import cli

    parser = cli.build_parser(only="align")
    sub = next(a for a in parser._actions if a.dest == "verb").choices
    assert {"align", "segment", "confirm", "quantify"} <= set(sub)  # every verb still listed
    assert "--reference" in sub["align"]._option_string_actions
    assert "--baseline" not in sub["segment"]._option_string_actions  # segment's arguments were not built
    full = cli.build_parser()
    assert "--baseline" in next(a for a in full._actions if a.dest == "verb").choices["segment"]._option_string_actions
    assert cli._verb_in(["--debug", "align", "study", "--overwrite"]) == "align"
    assert cli._verb_in(["--version"]) is None


@pytest.fixture(scope="module")
def two_session_study(tmp_path_factory):
    from napari_immunotrack.io import save_volume

    mouse = make_mouse(0)
    root = tmp_path_factory.mktemp("startup") / "study"
    pose = S.pose_matrix((6, -4, 9), (1.0, -0.5, 0.8), (1.0, -1.0, 4.0))
    for n, (ses, p) in enumerate((("day0", np.eye(4)), ("day3", pose))):
        img = S.session_mri(mouse, p, voxel_mm=0.4, fov_mm=(19.2, 25.6, 25.6), seed=40 + n, gain=1 + 0.3 * n)
        folder = root / "sub-01" / f"ses-{ses}" / "anat"
        folder.mkdir(parents=True)
        save_volume(img.volume, folder / f"sub-01_ses-{ses}_T2w.nii.gz")
    return root, pose


def test_align_verb_loads_no_gui_and_nothing_other_verbs_need(two_session_study):
    from napari_immunotrack.alignment import session_transform_name
    from napari_immunotrack.io.transforms import read_transform

    root, pose = two_session_study
    body = "from napari_immunotrack.cli import main\nassert main() == 0"
    loaded = _modules_after(body, ["align", str(root), "--overwrite"])
    assert not [m for m in GUI + NOT_FOR_ALIGN if m in loaded]
    # and it did the work: the saved day-3 transform maps the reference onto the true pose
    saved = root / "sub-01" / "ses-day3" / "xfm" / session_transform_name("01", "day3", "day0")
    centre = np.array([[1.0, -1.0, 4.0], [3.0, 1.0, 6.0]])
    tre = S.target_registration_error(read_transform(saved), np.eye(4), pose, centre)
    assert tre.max() < 0.2  # half a 0.4 mm voxel


def test_align_study_reads_the_reference_once(tmp_path, monkeypatch):
    """Three sessions onto day 0: day 0's MRI is read once, not once per session, and both alignments are
    still right against the true poses."""
    import collections

    import napari_immunotrack.io as nio
    from napari_immunotrack.alignment import align_study

    mouse = make_mouse(0)
    root = tmp_path / "study"
    poses = {
        "day0": np.eye(4),
        "day1": S.pose_matrix((8, -4, 10), (2, 1, -1), (1.0, -1.0, 4.0)),
        "day3": S.pose_matrix((-12, 6, -5), (-1.5, 2, 0.5), (1.0, -1.0, 4.0)),
    }
    for n, (ses, pose) in enumerate(poses.items()):
        img = S.session_mri(mouse, pose, voxel_mm=0.4, fov_mm=(19.2, 25.6, 25.6), seed=60 + n, gain=1 + 0.2 * n)
        folder = root / "sub-01" / f"ses-{ses}" / "anat"
        folder.mkdir(parents=True)
        nio.save_volume(img.volume, folder / f"sub-01_ses-{ses}_T2w.nii.gz")
    reads = collections.Counter()
    real = nio.load_volume

    def counted(path, *args, **kwargs):
        reads[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nio, "load_volume", counted)
    results = {r.session: r for r in align_study(root)}
    assert reads == {"sub-01_ses-day0_T2w.nii.gz": 1, "sub-01_ses-day1_T2w.nii.gz": 1, "sub-01_ses-day3_T2w.nii.gz": 1}
    centre = np.array([[1.0, -1.0, 4.0], [3.0, 1.0, 6.0], [-1.0, -3.0, 2.0]])
    for ses in ("day1", "day3"):
        assert results[ses].status == "aligned"
        tre = S.target_registration_error(results[ses].result.fixed_to_moving, np.eye(4), poses[ses], centre)
        assert tre.max() < 0.2, (ses, tre)
