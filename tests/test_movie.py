"""Time-lapse movies: frame count and size, frames that change as the data do, the time stamps, the shared
colour range, files that read back (imageio for GIF, ffprobe/ffmpeg for MP4), atomic output and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_immunotrack import movie as M
from napari_immunotrack.cli import main
from napari_immunotrack.errors import InputError

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "mouse_study"
SIZE = (320, 180)
#: MPI iron per day in the blob: day 2 and day 3 are equal, so their frames must be equal too.
BLOB = {1: 10.0, 2: 5.0, 3: 5.0}


def _study(root: Path, blob=BLOB, shift_mm=(3.0, 0.0, 0.0)):
    """A study of 3 sessions on one 0.5 mm grid: a T2w (body ellipse) and an MPI image whose blob
    (4 mm off centre along x) holds ``blob[day]`` ng/mm3."""
    shape = (40, 48, 32)  # x, y, z (NIfTI order)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    aff[:3, 3] = [-10.0, -12.0, -8.0]
    ijk = np.indices(shape).astype(float)
    xyz = np.stack([aff[a, a] * ijk[a] + aff[a, 3] for a in range(3)])
    body = ((xyz[0] / 9.0) ** 2 + (xyz[1] / 11.0) ** 2) <= 1.0
    blob_mask = ((xyz[0] - shift_mm[0]) ** 2 + (xyz[1] - shift_mm[1]) ** 2 + (xyz[2] - shift_mm[2]) ** 2) <= 2.0**2
    for day, value in blob.items():
        ses = root / "sub-01" / f"ses-day{day}"
        (ses / "anat").mkdir(parents=True)
        (ses / "mpi").mkdir(parents=True)
        t2 = np.where(body, 100.0, 0.0).astype(np.float32)
        nib.save(nib.Nifti1Image(t2, aff), ses / "anat" / f"sub-01_ses-day{day}_T2w.nii.gz")
        mpi = np.where(blob_mask, value, 0.0).astype(np.float32)
        name = ses / "mpi" / f"sub-01_ses-day{day}_mpi"
        nib.save(nib.Nifti1Image(mpi, aff), str(name) + ".nii.gz")
        Path(str(name) + ".json").write_text(json.dumps({"Modality": "MPI", "Units": "ng/mm3"}))
    return root


@pytest.fixture
def study(tmp_path):
    return _study(tmp_path / "study")


def _render(study, **kw):
    kw.setdefault("size", SIZE)
    kw.setdefault("fps", 4)
    kw.setdefault("hold_s", 0.5)
    kw.setdefault("fade_s", 0.5)
    return M.make_movie(study, None, track="MPI", **kw)


def _outside(key, other):
    """Pixels of two key frames with both time stamps blanked."""
    a, b = key.image.copy(), other.image.copy()
    for box in (key.stamp_box, other.stamp_box):
        r0, r1, c0, c1 = box
        a[r0:r1, c0:c1] = 0
        b[r0:r1, c0:c1] = 0
    return a.astype(int), b.astype(int)


def test_frames_count_size_stamps_and_change_with_the_data(study):
    res = _render(study)
    # 3 timepoints held 2 frames each at 4 fps, 2 cross-fades of 2 frames
    assert res.n_frames == 3 * 2 + 2 * 2 == len(M.timeline(3, 4, 0.5, 0.5))
    assert res.key_days == [1.0, 2.0, 3.0] and res.stamps == ["day 1", "day 2", "day 3"]
    for key in res.key_frames:
        assert key.image.shape == (SIZE[1], SIZE[0], 3) and key.image.dtype == np.uint8
    k1, k2, k3 = res.key_frames
    # day 2 and day 3 hold the same data: identical frames apart from the stamp
    a, b = _outside(k2, k3)
    assert np.array_equal(a, b)
    # day 1 -> day 2 the blob halves: the frames differ, and only where the blob is drawn
    a, b = _outside(k1, k2)
    diff = np.abs(a - b).sum(axis=2)
    assert diff.max() > 60
    _rows, cols = np.nonzero(diff > 30)
    # the blob is 3 mm right of the centre: in the neurological axial view right of the body's centre column
    body_cols = np.nonzero((k3.image[:, :, :].astype(int).sum(axis=2) > 150).any(axis=0))[0]
    assert cols.mean() > (body_cols.min() + body_cols.max()) / 2
    # the stamps differ between days and are drawn (white glyph pixels)
    r0, r1, c0, c1 = k1.stamp_box
    assert (k1.image[r0:r1, c0:c1] > 200).all(axis=2).sum() > 20
    assert not np.array_equal(k1.image[r0:r1, c0:c1], k2.image[r0:r1, c0:c1])
    # the colour range is shared and robust: 1st-99.5th percentile of the non-zero values shown
    lo, hi = res.colorbar_range
    assert 5.0 <= lo <= 5.2 and 9.8 <= hi <= 10.0
    assert res.unit == "ng/mm3"


def test_cross_fade_blends_and_keeps_one_crisp_stamp(study):
    res = _render(study, fade_s=0.25 * 3)  # 3 fade frames
    spec = M.timeline(3, 4, 0.5, 0.75)
    frames = list(M.iter_frames(res.key_frames, spec))
    assert len(frames) == res.n_frames == 3 * 2 + 2 * 3
    k1, k2 = res.key_frames[:2]
    mid = frames[2 + 1]  # second of three fade frames: halfway from day 1 to day 2
    a, b = k1.image.astype(float), k2.image.astype(float)
    outside = np.ones(a.shape[:2], bool)
    r0, r1, c0, c1 = k1.stamp_box
    outside[r0:r1, c0:c1] = False
    assert np.abs(mid[outside] - (a[outside] + b[outside]) / 2).max() <= 1.0
    # the stamp region is one of the two stamps, never a ghost of both
    region = mid[r0:r1, c0:c1]
    assert np.array_equal(region, k1.image[r0:r1, c0:c1]) or np.array_equal(region, k2.image[r0:r1, c0:c1])


def test_gif_reads_back_with_imageio(study, tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "mpi.gif"
    res = M.make_movie(study, out, track="MPI", size=SIZE, fps=4, hold_s=0.5, fade_s=0.5)
    frames = iio.imread(out, index=None)
    # a GIF holds each timepoint once (with a long delay) plus the fade frames: 3 + 2 x 2; the fade from
    # day 2 to day 3 shows the same data, so its two frames equal the key frames and are merged into them
    assert frames.shape[0] == res.n_frames == 3 + 2 * 2 - 2
    assert frames.shape[1:3] == (SIZE[1], SIZE[0])
    durations = [iio.immeta(out, index=i)["duration"] for i in range(frames.shape[0])]
    assert sum(durations) == 3 * 500 + 2 * 500  # the movie's length is kept
    # the first frame is the day-1 key frame (palette quantisation changes colours a little)
    assert np.abs(frames[0][..., :3].astype(int) - res.key_frames[0].image.astype(int)).mean() < 4
    meta = iio.immeta(out, index=0)
    assert meta["duration"] == 500  # held 0.5 s
    prov = json.loads((tmp_path / "mpi.gif.provenance.json").read_text())
    assert prov["parameters"]["frames"] == 5 and prov["parameters"]["track"] == "MPI"
    assert [t["day"] for t in prov["parameters"]["timepoints"]] == [1.0, 2.0, 3.0]
    with pytest.raises(InputError, match="already exists"):
        M.make_movie(study, out, track="MPI", size=SIZE)
    assert not list(tmp_path.glob("*.part*"))


def test_mp4_reads_back_with_ffmpeg(study, tmp_path):
    assert M.find_ffmpeg() is not None, "MP4 needs an ffmpeg program: scripts/setup.sh installs it (apt install ffmpeg)"
    out = tmp_path / "mpi.mp4"
    res = M.make_movie(study, out, track="MPI", size=SIZE, fps=4, hold_s=0.5, fade_s=0.5)
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,width,height,codec_name",
            "-of",
            "json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", SIZE[0], SIZE[1])
    assert int(stream["nb_read_frames"]) == res.n_frames == 10
    raw = subprocess.run(
        [M.find_ffmpeg(), "-v", "error", "-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, SIZE[1], SIZE[0], 3)
    assert frames.shape[0] == 10
    # H.264 is lossy (and 4:2:0): the decoded frames match the rendered ones closely
    assert np.abs(frames[0].astype(int) - res.key_frames[0].image.astype(int)).mean() < 6
    assert np.abs(frames[-1].astype(int) - res.key_frames[-1].image.astype(int)).mean() < 6


def test_mp4_without_ffmpeg_says_what_to_do(study, tmp_path, monkeypatch):
    monkeypatch.setattr(M, "find_ffmpeg", lambda: None)
    out = tmp_path / "mpi.mp4"
    with pytest.raises(InputError, match="ffmpeg.*GIF"):
        M.make_movie(study, out, track="MPI", size=SIZE)
    assert not out.exists() and not list(tmp_path.glob("*.part*"))


def test_rotating_projection_turns_the_blob(study):
    res = _render(study, plane="mip", rotate_views=4)
    assert res.n_frames == 3 * 4 and len(res.key_frames) == 12
    views = res.key_frames[:4]  # day 1 at 0, 90, 180, 270 degrees

    def blob_col(key):
        hot = key.image[..., 0].astype(int) - key.image[..., 2].astype(int)  # warm colours of the map
        hot[:, int(0.75 * SIZE[0]) :] = 0  # not the colour bar
        _rows, cols = np.nonzero(hot > 60)
        return cols.mean()

    c0, c90, c180 = blob_col(views[0]), blob_col(views[1]), blob_col(views[2])
    centre = (c0 + c180) / 2
    # at 180 degrees the blob (3 mm right of the axis) is mirrored; at 90 it is near the axis
    assert abs(c0 - c180) > 10 and abs(c90 - centre) < 0.3 * abs(c0 - c180)


def test_bad_requests_are_one_line(study, tmp_path):
    with pytest.raises(InputError, match="track"):
        M.make_movie(study, None, track="CEST")
    with pytest.raises(InputError, match="no SPECT image"):
        M.make_movie(study, None, track="SPECT", size=SIZE)
    with pytest.raises(InputError, match="even"):
        M.make_movie(study, None, track="MPI", size="321x180")
    with pytest.raises(InputError, match="mip"):
        M.make_movie(study, None, track="MPI", size=SIZE, rotate_views=8)
    with pytest.raises(InputError, match=r"\.mp4 or \.gif"):
        M.make_movie(study, tmp_path / "a.avi", track="MPI", size=SIZE)


def test_cli_movie_writes_gif_with_provenance(study, tmp_path, capsys):
    out = tmp_path / "cli.gif"
    rc = main(
        [
            "movie",
            str(study),
            "-o",
            str(out),
            "--track",
            "MPI",
            "--size",
            "320x180",
            "--fps",
            "4",
            "--hold",
            "0.5",
            "--fade",
            "0.5",
            "--plane",
            "coronal",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "frames 320x180 (day 1, day 2, day 3" in printed
    assert (tmp_path / "cli.gif.provenance.json").exists()
    rc = main(["movie", str(study), "-o", str(out), "--track", "MPI"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0]
    rc = main(["movie", str(study), "-o", str(tmp_path / "b.gif"), "--track", "MPI", "--range", "5"])
    assert rc == 2 and "LOW,HIGH" in capsys.readouterr().err


def test_sample_study_pet_movie_frames():
    """The sample study: PET over T2w on days 0 (baseline, no PET), 1, 3 and 7, frames changing as PET decays."""
    res = M.make_movie(SAMPLE, None, track="PET", size=(640, 360), fps=2, hold_s=1, fade_s=0.5)
    assert res.stamps == ["day 0", "day 1", "day 3", "day 7"]
    assert res.n_frames == 4 * 2 + 3 * 1
    assert res.unit == "kBq/mL"
    warm = [(k.image[..., 0].astype(int) - k.image[..., 2].astype(int)) > 80 for k in res.key_frames]
    colour_bar = np.logical_and.reduce(warm)  # warm on every frame: the colour bar, not the data
    header = int(0.15 * 360)  # the orange "no PET at this timepoint" note of day 0
    warm = [int((w & ~colour_bar)[header:].sum()) for w in warm]
    assert warm[0] < 50 < warm[1]  # no PET before injection, a hot spot on day 1
    assert warm[3] < warm[1]  # 89Zr decays and clears: less above the threshold on day 7


def test_a_timepoint_without_the_track_keeps_the_colour_bar(tmp_path):
    """A baseline session (anatomy only) shows the same colour bar as the others, and says the track is missing."""
    study = _study(tmp_path / "s")
    shutil.rmtree(study / "sub-01" / "ses-day1" / "mpi")
    res = _render(study)
    k1, k2 = res.key_frames[:2]
    # the colour-bar pixels (to the right of the image) are the same on both frames
    right = slice(int(0.7 * SIZE[0]), SIZE[0])
    assert np.array_equal(k1.image[int(0.3 * SIZE[1]) :, right], k2.image[int(0.3 * SIZE[1]) :, right])


def test_arbitrary_units_warn_once_and_reach_the_provenance(tmp_path):
    from napari_immunotrack.errors import ImmunotrackWarning

    study = _study(tmp_path / "s")
    for side in study.glob("sub-01/ses-*/mpi/*.json"):
        side.write_text(json.dumps({"Modality": "MPI", "Units": "a.u."}))
    with pytest.warns(ImmunotrackWarning) as record:
        res = M.make_movie(study, tmp_path / "au.gif", track="MPI", size=SIZE, fps=4, hold_s=0.5, fade_s=0.5)
    said = [str(r.message) for r in record if "arbitrary units" in str(r.message)]
    assert len(said) == 1 and said == [w for w in res.warnings if "arbitrary" in w]
    prov = json.loads((tmp_path / "au.gif.provenance.json").read_text())
    assert said[0] in prov["warnings"]


def test_one_marker_corner_and_a_slice_inside_the_body(tmp_path):
    """A bright fiducial outside the body does not pull the slice out of the body; the orientation marker
    stays in one corner on every frame."""
    study = _study(tmp_path / "s")
    for path in study.glob("sub-01/ses-*/mpi/*.nii.gz"):
        img = nib.load(path)
        data = np.asarray(img.dataobj).copy()
        data[38, 2, 16] = 500.0  # a fiducial in the air at the corner of the field of view (x = 9 mm)
        nib.save(nib.Nifti1Image(data, img.affine), path)
    res = _render(study, plane="sagittal")
    assert abs(res.position_mm - 3.0) <= 1.0  # through the blob (x = 3 mm), not the fiducial
    corners = {k.info["letter_corner"] for k in res.key_frames}
    assert len(corners) == 1
