"""MPI reconstructions in MDF (written here with h5py) and NRRD/MetaImage (written with SimpleITK or by hand)."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import SimpleITK as sitk

from napari_immunotrack.errors import InputError
from napari_immunotrack.io import detect_format, load_volume, load_volumes


def write_mdf(path, data, size, fov_m, centre_m=(0, 0, 0), order=None, overscan=None, root_only=False):
    with h5py.File(path, "w") as f:
        f["version"] = "2.1.0"
        f["uuid"] = "5a1b4d52-6a87-4c4c-a4ab-0d6c4b1e2f00"
        f.create_group("measurement")
        if root_only:
            return path
        g = f.create_group("reconstruction")
        g["data"] = data
        g["size"] = np.asarray(size, np.int64)
        g["fieldOfView"] = np.asarray(fov_m, float)
        g["fieldOfViewCenter"] = np.asarray(centre_m, float)
        if order:
            g["order"] = order
        if overscan is not None:
            g["isOverscanRegion"] = overscan.astype(np.int8)
    return path


@pytest.mark.parametrize("order", [None, "xyz", "zyx", "yzx"])
def test_mdf_voxels_land_at_their_grid_positions(tmp_path, order):
    size = np.array([5, 4, 3])  # x, y, z counts
    fov = np.array([0.025, 0.016, 0.009])  # m
    centre = np.array([0.001, -0.002, 0.0005])
    letters = order or "xyz"
    # voxel p (the first letter of `order` fastest) holds a code of its (x, y, z) index
    counts = [int(size["xyz".index(a)]) for a in letters]
    values = np.zeros(int(np.prod(size)), np.float32)
    for p in range(values.size):
        idx = np.unravel_index(p, counts[::-1])[::-1]  # fastest first
        xyz = {a: int(i) for a, i in zip(letters, idx)}
        values[p] = 100 * xyz["x"] + 10 * xyz["y"] + xyz["z"]
    path = write_mdf(tmp_path / "reco.mdf", values[None, :, None], size, fov, centre, order=order)
    vol = load_volume(path)
    assert vol.modality == "MPI" and sorted(vol.spatial_shape) == sorted(size.tolist())
    step = fov * 1000 / size
    data = vol.numpy()
    for index in np.ndindex(*vol.spatial_shape):
        world = vol.index_to_world([index])[0]
        ixyz = np.round((world - (centre * 1000 - fov * 1000 / 2 + step / 2)) / step).astype(int)
        assert np.allclose(world, centre * 1000 - fov * 1000 / 2 + step / 2 + ixyz * step)
        assert data[index] == 100 * ixyz[0] + 10 * ixyz[1] + ixyz[2]


def test_mdf_frames_channels_and_overscan(tmp_path):
    size = [3, 2, 2]
    data = np.arange(4 * 12 * 2, dtype=np.float64).reshape(4, 12, 2)  # 4 frames, 2 channels
    overscan = np.zeros(12, bool)
    overscan[:3] = True
    vols = load_volumes(write_mdf(tmp_path / "r.h5", data, size, [0.03, 0.02, 0.02], overscan=overscan))
    assert len(vols) == 2 and all(v.shape == (4, 2, 2, 3) for v in vols)
    assert vols[0].metadata["leading_axis"] == "time"
    assert np.array_equal(vols[1].numpy()[2].ravel(), data[2, :, 1])
    assert vols[0].metadata["overscan_voxels"] == 3 and vols[0].metadata["overscan_mask"].shape == (2, 2, 3)
    with h5py.File(tmp_path / "r.h5") as f:  # h5py reads back what the volume holds
        assert np.array_equal(f["reconstruction/data"][3, :, 0], vols[0].numpy()[3].ravel())


def test_mdf_without_reconstruction_and_broken_grid(tmp_path):
    path = write_mdf(tmp_path / "meas.mdf", None, None, None, root_only=True)
    with pytest.raises(InputError, match="without /reconstruction/data"):
        load_volume(path)
    bad = write_mdf(tmp_path / "bad.mdf", np.zeros((1, 10, 1)), [3, 2, 2], [0.03, 0.02, 0.02])
    with pytest.raises(InputError, match="holds 12 voxels"):
        load_volume(bad)
    plain = tmp_path / "array.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="array file"):
        load_volume(plain)


def _image(direction=(0, 1, 0, -1, 0, 0, 0, 0, 1)):
    arr = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing((0.5, 0.7, 1.1))
    im.SetOrigin((10.0, -20.0, 30.0))
    im.SetDirection(direction)
    return arr, im


@pytest.mark.parametrize("ext", ["nrrd", "nhdr", "mha", "mhd"])
@pytest.mark.parametrize(
    "direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 1, 0, -1, 0, 0, 0, 0, 1), (0.8, -0.6, 0, 0.6, 0.8, 0, 0, 0, 1)]
)
def test_nrrd_and_metaimage_match_simpleitk_world(tmp_path, ext, direction):
    arr, im = _image(direction)
    path = tmp_path / f"x.{ext}"
    sitk.WriteImage(im, str(path))
    vol = load_volume(path)
    assert np.array_equal(vol.numpy(), arr)
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        lps = np.array(im.TransformIndexToPhysicalPoint(ijk))
        assert np.allclose(vol.index_to_world([ijk[::-1]])[0], lps * [-1, -1, 1])


def test_nrrd_in_ras_space_written_by_hand(tmp_path):
    """A NRRD whose space is right-anterior-superior (as Slicer can write) is turned to RAS correctly."""
    data = np.arange(24, dtype="<i2").reshape(2, 3, 4)  # (z, y, x)
    header = (
        "NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 4 3 2\n"
        "space directions: (0.5,0,0) (0,0.7,0) (0,0,1.1)\nkinds: domain domain domain\nendian: little\n"
        "encoding: raw\nspace origin: (10,20,30)\n\n"
    )
    path = tmp_path / "ras.nrrd"
    path.write_bytes(header.encode() + data.tobytes())
    vol = load_volume(path)
    assert np.array_equal(vol.numpy(), data)
    # index (i, j, k) = (3, 2, 1) is at RAS (10 + 1.5, 20 + 1.4, 30 + 1.1)
    assert np.allclose(vol.index_to_world([[1, 2, 3]])[0], [11.5, 21.4, 31.1])


def test_vector_and_4d_images(tmp_path):
    vec = sitk.Compose([sitk.GetImageFromArray(np.full((2, 3, 4), float(c), np.float32)) for c in range(3)])
    sitk.WriteImage(vec, str(tmp_path / "v.mha"))
    v = load_volume(tmp_path / "v.mha")
    assert v.shape == (3, 2, 3, 4) and v.metadata["leading_axis"] == "channel" and v.numpy()[2].max() == 2.0
    four = sitk.GetImageFromArray(np.arange(5 * 2 * 3 * 4, dtype=np.float32).reshape(5, 2, 3, 4), isVector=False)
    sitk.WriteImage(four, str(tmp_path / "t.nrrd"))
    t = load_volume(tmp_path / "t.nrrd")
    assert t.shape == (5, 2, 3, 4) and t.metadata["leading_axis"] == "time"


def test_broken_nrrd_and_missing_detached_data(tmp_path):
    _, im = _image()
    sitk.WriteImage(im, str(tmp_path / "x.nrrd"))
    raw = (tmp_path / "x.nrrd").read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="cannot be read"):
        load_volume(tmp_path / "cut.nrrd")
    sitk.WriteImage(im, str(tmp_path / "d.mhd"))
    for f in tmp_path.glob("d.*raw"):
        f.unlink()
    with pytest.raises(InputError, match="cannot be read"):
        load_volume(tmp_path / "d.mhd")


@pytest.mark.parametrize("name", ["x.nrrd", "x.mha", "r.mdf"])
def test_cli_info_and_napari_reader(tmp_path, name):
    from napari_immunotrack._reader import get_reader

    if name.endswith(".mdf"):
        write_mdf(tmp_path / name, np.ones((1, 12, 1)), [3, 2, 2], [0.03, 0.02, 0.02])
    else:
        sitk.WriteImage(_image()[1], str(tmp_path / name))
    assert detect_format(tmp_path / name) in ("itk", "mdf")
    run = subprocess.run(
        [sys.executable, "-m", "napari_immunotrack.cli", "info", str(tmp_path / name), "--json"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["volumes"][0]["shape"] in ([4, 5, 6], [2, 2, 3])
    assert get_reader(str(tmp_path / name)) is not None
