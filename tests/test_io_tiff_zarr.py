"""TIFF / OME-TIFF and OME-Zarr readers and writers: geometry, channels, laziness, errors."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import tifffile
import zarr
import zarr.storage

from napari_immunotrack.errors import ImmunotrackWarning, InputError, OutputExistsError
from napari_immunotrack.io import detect_format, load_volume
from napari_immunotrack.io.tiff import read_tiff, write_ome_tiff
from napari_immunotrack.io.zarr import multiscale_attrs, read_ome_zarr, write_ome_zarr
from napari_immunotrack.volume import Volume


def one_line(excinfo):
    text = str(excinfo.value)
    return "\n" not in text and len(text) > 20


def zyx_affine(spacing_zyx, origin_xyz=(0, 0, 0)):
    """The nominal TIFF/Zarr affine: index (z, y, x) -> world (x, y, z) along R, A, S."""
    a = np.zeros((4, 4))
    a[2, 0], a[1, 1], a[0, 2], a[3, 3] = spacing_zyx[0], spacing_zyx[1], spacing_zyx[2], 1
    a[:3, 3] = origin_xyz
    return a


# ======================================================================= TIFF
@pytest.mark.parametrize("unit, factor", [("µm", 1e-3), ("nm", 1e-6), ("mm", 1.0), ("cm", 10.0)])
def test_ome_units_to_mm(tmp_path, unit, factor):
    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    tifffile.imwrite(
        tmp_path / "a.ome.tif",
        data,
        ome=True,
        metadata={
            "axes": "CZYX",
            "PhysicalSizeX": 0.5,
            "PhysicalSizeXUnit": unit,
            "PhysicalSizeY": 0.25,
            "PhysicalSizeYUnit": unit,
            "PhysicalSizeZ": 2.0,
            "PhysicalSizeZUnit": unit,
            "Channel": {"Name": ["GFP", "mCherry"]},
        },
    )
    v = read_tiff(tmp_path / "a.ome.tif")
    assert v.shape == (2, 3, 4, 5) and v.modality == "OPT" and v.unit == "a.u."
    np.testing.assert_allclose(v.spacing, np.array([2.0, 0.25, 0.5]) * factor)
    assert v.metadata["leading_axis"] == "channel" and v.metadata["channel_names"] == ["GFP", "mCherry"]
    assert v.metadata["voxel_size_source"] == "OME-XML"
    np.testing.assert_array_equal(v.data, data)
    # nominal frame: column along +R, row along +A, plane along +S, first voxel at the origin
    np.testing.assert_allclose(v.index_to_world([[1, 2, 3]])[0], [3 * 0.5 * factor, 2 * 0.25 * factor, 2.0 * factor])
    assert v.orientation() == "SAR"
    np.testing.assert_array_equal(v.canonical().affine, v.affine)  # already canonical: napari shows it as Fiji does
    gfp = read_tiff(tmp_path / "a.ome.tif", channel="mCherry")
    assert gfp.shape == (3, 4, 5) and gfp.metadata["channel"] == "mCherry"
    np.testing.assert_array_equal(gfp.data, data[1])


def test_ome_without_unit_is_micrometre(tmp_path):
    # OME's schema default unit for PhysicalSize is the micrometre
    xml_data = np.zeros((3, 4, 5), np.uint8)
    tifffile.imwrite(
        tmp_path / "b.ome.tif",
        xml_data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 2.0, "PhysicalSizeY": 2.0, "PhysicalSizeZ": 5.0},
    )
    with tifffile.TiffFile(tmp_path / "b.ome.tif") as tf:
        assert "PhysicalSizeXUnit" not in tf.ome_metadata and 'PhysicalSizeX="2.0"' in tf.ome_metadata
    np.testing.assert_allclose(read_tiff(tmp_path / "b.ome.tif").spacing, [0.005, 0.002, 0.002])


def test_imagej_spacing_and_unit(tmp_path):
    data = np.ones((6, 7, 8), np.float32)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 3.0, "unit": "um", "axes": "ZYX"},
    )
    v = read_tiff(tmp_path / "ij.tif")
    np.testing.assert_allclose(v.spacing, [0.003, 0.00025, 0.0005])
    assert v.metadata["voxel_size_source"] == "ImageJ metadata" and v.metadata["format"] == "imagej-tiff"


def test_resolution_tags_in_cm_and_screen_dpi_ignored(tmp_path):
    img = np.ones((30, 40), np.uint16)
    tifffile.imwrite(tmp_path / "cm.tif", img, resolution=(100.0, 50.0), resolutionunit="CENTIMETER")
    v = read_tiff(tmp_path / "cm.tif")
    assert v.shape == (1, 30, 40)
    # 100 px/cm in x -> 0.1 mm, 50 px/cm in y -> 0.2 mm, a single plane as thick as the finer pixel
    np.testing.assert_allclose(v.spacing, [0.1, 0.2, 0.1])
    tifffile.imwrite(tmp_path / "screen.tif", img, resolution=(72.0, 72.0), resolutionunit="INCH")
    with pytest.raises(InputError, match="voxel_size_mm"):
        read_tiff(tmp_path / "screen.tif")


def test_no_physical_size_needs_voxel_size(tmp_path):
    img = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    tifffile.imwrite(tmp_path / "plain.tif", img)
    with pytest.raises(InputError, match="no physical pixel size.*voxel_size_mm") as excinfo:
        read_tiff(tmp_path / "plain.tif")
    assert one_line(excinfo)
    with pytest.raises(InputError, match="voxel_size_mm"):
        load_volume(tmp_path / "plain.tif")
    v = read_tiff(tmp_path / "plain.tif", voxel_size_mm=0.05)
    assert v.shape == (1, 30, 40) and v.metadata["voxel_size_source"] == "voxel_size_mm parameter"
    np.testing.assert_allclose(v.spacing, [0.05, 0.05, 0.05])
    np.testing.assert_array_equal(v.data[0], img)
    v = read_tiff(tmp_path / "plain.tif", voxel_size_mm=(0.2, 0.05, 0.1))  # (z, y, x): given z thickness
    np.testing.assert_allclose(v.spacing, [0.2, 0.05, 0.1])
    v = load_volume(tmp_path / "plain.tif", voxel_size_mm=(0.05, 0.1))  # (y, x) of a single plane
    np.testing.assert_allclose(v.spacing, [0.05, 0.05, 0.1])
    for bad in (0, -1, (1, 2, 3, 4), float("nan")):
        with pytest.raises(InputError, match="voxel_size_mm"):
            read_tiff(tmp_path / "plain.tif", voxel_size_mm=bad)


def test_stack_without_z_spacing_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "stack.tif", np.zeros((5, 6, 7), np.uint8), resolution=(100.0, 100.0), resolutionunit="CENTIMETER"
    )
    with pytest.raises(InputError, match="z spacing"):
        read_tiff(tmp_path / "stack.tif")
    v = read_tiff(tmp_path / "stack.tif", voxel_size_mm=(0.5, 0.1, 0.1))
    assert v.shape == (5, 6, 7)


def test_voxel_size_override_warns_when_file_differs(tmp_path):
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        np.zeros((2, 5, 6), np.uint8),
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 10,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": 10,
            "PhysicalSizeYUnit": "µm",
            "PhysicalSizeZ": 10,
            "PhysicalSizeZUnit": "µm",
        },
    )
    with pytest.warns(ImmunotrackWarning, match="overrides"):
        v = read_tiff(tmp_path / "o.ome.tif", voxel_size_mm=0.02)
    np.testing.assert_allclose(v.spacing, [0.02] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_tiff(tmp_path / "o.ome.tif", voxel_size_mm=0.01)  # the same size: no warning


def test_affine_override(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((4, 5), np.uint8))
    affine = np.array([[0, 0, -0.1, 5], [0, 0.1, 0, 6], [1, 0, 0, 7], [0, 0, 0, 1.0]])
    v = read_tiff(tmp_path / "p.tif", affine=affine)
    np.testing.assert_array_equal(v.affine, affine)
    assert "orientation_nominal" not in v.metadata and v.orientation() == "SAL"


def test_time_and_channels_need_a_channel(tmp_path):
    data = np.random.default_rng(0).integers(0, 100, (3, 2, 4, 5, 6)).astype(np.uint16)
    meta = {
        "axes": "TCZYX",
        "PhysicalSizeX": 1,
        "PhysicalSizeY": 1,
        "PhysicalSizeZ": 1,
        "Channel": {"Name": ["a", "b"]},
    }
    tifffile.imwrite(tmp_path / "tc.ome.tif", data, ome=True, metadata=meta)
    with pytest.raises(InputError, match="channel=") as excinfo:
        read_tiff(tmp_path / "tc.ome.tif")
    assert one_line(excinfo)
    v = read_tiff(tmp_path / "tc.ome.tif", channel="b")
    assert v.shape == (3, 4, 5, 6) and v.metadata["leading_axis"] == "time"
    np.testing.assert_array_equal(v.data, data[:, 1])
    with pytest.raises(InputError, match="no channel named"):
        read_tiff(tmp_path / "tc.ome.tif", channel="c")
    with pytest.raises(InputError, match="does not exist"):
        read_tiff(tmp_path / "tc.ome.tif", channel=5)


def test_rgb_samples_are_channels(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    v = read_tiff(tmp_path / "rgb.tif", voxel_size_mm=0.1)
    assert v.shape == (3, 1, 10, 12) and v.metadata["leading_axis"] == "channel"
    assert v.data[1].min() == 200 and v.data[0].max() == 0


def test_write_ome_tiff_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    affine = zyx_affine((0.5, 0.02, 0.01), (1.25, -3.5, 7.0))
    vol = Volume(
        rng.random((2, 3, 20, 30)).astype(np.float32),
        affine,
        modality="OPT",
        metadata={"leading_axis": "channel", "channel_names": ["GFP", "Cy5"]},
        name="mouse",
    )
    write_ome_tiff(vol, tmp_path / "m.ome.tif")
    back = load_volume(tmp_path / "m.ome.tif")
    np.testing.assert_allclose(back.affine, affine, atol=1e-12)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.metadata["channel_names"] == ["GFP", "Cy5"] and back.name == "m"
    with pytest.raises(OutputExistsError):
        write_ome_tiff(vol, tmp_path / "m.ome.tif")
    assert [p.name for p in tmp_path.iterdir()] == ["m.ome.tif"]


def test_write_ome_tiff_of_flipped_volume_keeps_world(tmp_path):
    # an LPS-like volume: written in canonical order, every voxel keeps its world position
    affine = np.array([[-0.1, 0, 0, 10], [0, -0.2, 0, 20], [0, 0, 0.3, -5], [0, 0, 0, 1.0]])[:, [2, 1, 0, 3]]
    data = np.random.default_rng(3).integers(0, 1000, (4, 5, 6)).astype(np.uint16)
    vol = Volume(data, affine)
    write_ome_tiff(vol, tmp_path / "f.ome.tif")
    back = read_tiff(tmp_path / "f.ome.tif")
    idx = np.array([[i, j, k] for i in range(4) for j in range(5) for k in range(6)])
    world = vol.index_to_world(idx)
    back_idx = np.rint(back.world_to_index(world)).astype(int)
    np.testing.assert_allclose(back.index_to_world(back_idx), world, atol=1e-9)
    np.testing.assert_array_equal(back.data[tuple(back_idx.T)], data[tuple(idx.T)])


def test_write_ome_tiff_refuses_oblique(tmp_path):
    theta = np.deg2rad(10)
    affine = np.eye(4)
    affine[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    with pytest.raises(InputError, match="oblique"):
        write_ome_tiff(Volume(np.zeros((2, 3, 4)), affine), tmp_path / "o.ome.tif")


def test_single_plane_thickness_from_given_z(tmp_path):
    vol = Volume(np.ones((1, 8, 9), np.uint16), zyx_affine((0.3, 0.05, 0.05)))
    write_ome_tiff(vol, tmp_path / "s.ome.tif")
    back = read_tiff(tmp_path / "s.ome.tif")
    assert back.shape == (1, 8, 9)
    np.testing.assert_allclose(back.spacing, [0.3, 0.05, 0.05])


def test_broken_tiffs(tmp_path):
    (tmp_path / "garbage.tif").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(InputError, match="not a readable TIFF") as excinfo:
        load_volume(tmp_path / "garbage.tif")
    assert one_line(excinfo)
    tifffile.imwrite(
        tmp_path / "full.tif",
        np.random.default_rng(1).random((8, 64, 64)).astype(np.float32),
        resolution=(100.0, 100.0),
        resolutionunit="CENTIMETER",
    )
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError) as excinfo:
        read_tiff(tmp_path / "cut.tif", voxel_size_mm=0.1)
    assert one_line(excinfo)
    with pytest.raises(InputError, match="does not exist"):
        read_tiff(tmp_path / "none.tif")


def test_lazy_tiff(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    tifffile.imwrite(
        tmp_path / "l.ome.tif",
        data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 1, "PhysicalSizeY": 1, "PhysicalSizeZ": 1},
    )
    v = read_tiff(tmp_path / "l.ome.tif", lazy=True)
    assert type(v.data).__module__.startswith("dask")
    np.testing.assert_array_equal(v.numpy(), data)


# =================================================================== OME-Zarr
@pytest.fixture
def channel_volume():
    rng = np.random.default_rng(5)
    affine = zyx_affine((0.04, 0.02, 0.01), (0.5, 1.5, -2.0))
    return Volume(
        rng.random((2, 17, 24, 33)).astype(np.float32),
        affine,
        modality="OPT",
        unit="a.u.",
        metadata={"leading_axis": "channel", "channel_names": ["GFP", "Cy5"]},
        name="lightsheet",
    )


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_zarr_round_trip_and_pyramid(tmp_path, channel_volume, version):
    path = tmp_path / "img.ome.zarr"
    write_ome_zarr(channel_volume, path, levels=3, chunks=(8, 8, 8), version=version)
    assert detect_format(path) == "zarr"
    v = load_volume(path)
    assert type(v.data).__module__.startswith("dask")
    np.testing.assert_array_equal(v.affine, channel_volume.affine)
    np.testing.assert_array_equal(v.numpy(), channel_volume.data)
    assert v.metadata["channel_names"] == ["GFP", "Cy5"] and v.metadata["ngff_version"] == version
    assert v.name == "lightsheet" and v.modality == "OPT"
    ms = v.metadata["multiscale"]
    assert [a.shape for a in ms["arrays"]] == [(2, 17, 24, 33), (2, 8, 12, 16), (2, 4, 6, 8)]
    # a level-1 voxel is the mean of a 2x2x2 block; it sits at the block's centre in world space
    lvl1 = np.asarray(ms["arrays"][1][0, 3, 4, 5])
    block = channel_volume.data[0, 6:8, 8:10, 10:12]
    assert lvl1 == pytest.approx(block.mean(), rel=1e-6)
    centre = channel_volume.index_to_world([[6.5, 8.5, 10.5]])[0]
    level1 = Volume(ms["arrays"][1], ms["affines"][1])
    np.testing.assert_allclose(level1.index_to_world([[3, 4, 5]])[0], centre, atol=1e-12)
    # opening another level gives that level's data and affine
    v2 = read_ome_zarr(path, level=2, channel=1)
    assert v2.shape == (4, 6, 8) and v2.metadata["channel"] == "Cy5"
    np.testing.assert_array_equal(v2.affine, ms["affines"][2])


def test_zarr_labels_pyramid_keeps_label_values(tmp_path):
    labels = np.zeros((16, 16, 16), np.uint16)
    labels[2:9, 3:12, 4:10] = 7
    labels[10:15, 10:15, 10:15] = 300
    seg = Volume(labels, np.diag([0.1, 0.1, 0.1, 1.0]), modality="SEG", unit="label")
    write_ome_zarr(seg, tmp_path / "seg.zarr", levels=3, chunks=(8, 8, 8))
    v = read_ome_zarr(tmp_path / "seg.zarr")
    assert v.unit == "label" and v.modality == "SEG"
    for arr in v.metadata["multiscale"]["arrays"]:
        assert set(np.unique(np.asarray(arr))) <= {0, 7, 300}
    # the stride keeps voxel 0 of each block: same origin, and the value there
    lvl2 = read_ome_zarr(tmp_path / "seg.zarr", level=2)
    np.testing.assert_array_equal(lvl2.numpy(), labels[::4, ::4, ::4])
    np.testing.assert_allclose(lvl2.index_to_world([[0, 0, 0]]), seg.index_to_world([[0, 0, 0]]))


def _hand_written_store(path, axes, scale, translation, shape=(3, 4, 5), global_ct=None, version_key=True):
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = group.create_array(
        "s0",
        shape=shape,
        chunks=shape,
        dtype="float32",
        fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    arr[...] = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    ms = {
        "axes": axes,
        "datasets": [
            {
                "path": "s0",
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        ],
    }
    if global_ct:
        ms["coordinateTransformations"] = global_ct
    if version_key:
        ms["version"] = "0.4"
    group.attrs["multiscales"] = [ms]
    return path


def test_zarr_micrometre_units_and_global_transform(tmp_path):
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    path = _hand_written_store(
        tmp_path / "um.zarr",
        axes,
        [4.0, 2.0, 1.0],
        [10.0, 20.0, 30.0],
        global_ct=[{"type": "scale", "scale": [2.0, 2.0, 2.0]}],
    )
    v = read_ome_zarr(path)
    # world = 2 * (s * i + t): spacing (8, 4, 2) um, origin (z, y, x) = (20, 40, 60) um
    np.testing.assert_allclose(v.spacing, [0.008, 0.004, 0.002])
    np.testing.assert_allclose(v.index_to_world([[0, 0, 0]])[0], [0.06, 0.04, 0.02])
    np.testing.assert_allclose(v.index_to_world([[1, 2, 3]])[0], [0.06 + 3 * 0.002, 0.04 + 2 * 0.004, 0.02 + 0.008])
    assert v.modality == "OPT" and v.name == "um"


def test_zarr_nanometre_2d_image(tmp_path):
    axes = [{"name": "y", "type": "space", "unit": "nanometer"}, {"name": "x", "type": "space", "unit": "nanometer"}]
    path = _hand_written_store(tmp_path / "nm.zarr", axes, [500.0, 250.0], [0.0, 0.0], shape=(4, 5))
    v = read_ome_zarr(path)
    assert v.shape == (1, 4, 5)
    np.testing.assert_allclose(v.spacing, [0.00025, 0.0005, 0.00025])
    np.testing.assert_array_equal(v.numpy()[0], np.arange(20).reshape(4, 5))


def test_zarr_without_units_needs_voxel_size(tmp_path):
    axes = [{"name": n, "type": "space"} for n in "zyx"]
    path = _hand_written_store(tmp_path / "nounit.zarr", axes, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    with pytest.raises(InputError, match="no known length unit.*voxel_size_mm") as excinfo:
        load_volume(path)
    assert one_line(excinfo)
    v = read_ome_zarr(path, voxel_size_mm=(0.3, 0.2, 0.1))
    np.testing.assert_allclose(v.spacing, [0.3, 0.2, 0.1])


def test_zarr_bad_inputs(tmp_path, channel_volume):
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    plain.create_array("a", shape=(2, 2, 2), dtype="uint8")
    with pytest.raises(InputError, match="multiscales") as excinfo:
        load_volume(tmp_path / "plain.zarr")
    assert one_line(excinfo)
    write_ome_zarr(channel_volume, tmp_path / "ok.zarr", levels=2)
    with pytest.raises(InputError, match="level=5"):
        read_ome_zarr(tmp_path / "ok.zarr", level=5)
    with pytest.raises(OutputExistsError):
        write_ome_zarr(channel_volume, tmp_path / "ok.zarr")
    write_ome_zarr(channel_volume.replace(data=channel_volume.data * 0), tmp_path / "ok.zarr", overwrite=True)
    assert float(read_ome_zarr(tmp_path / "ok.zarr").data.max().compute()) == 0.0
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
    theta = np.deg2rad(30)
    oblique = np.eye(4)
    oblique[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    with pytest.raises(InputError, match="oblique"):
        write_ome_zarr(Volume(np.zeros((2, 2, 2)), oblique), tmp_path / "obl.zarr")
    with pytest.raises(InputError, match="does not exist"):
        read_ome_zarr(tmp_path / "missing.zarr")


def test_zarr_open_with_every_chunk_corrupt(tmp_path):
    """Opening reads metadata only: it works even when every chunk is garbage; computing does not."""
    vol = Volume(np.random.default_rng(0).random((32, 32, 32)).astype(np.float32), np.eye(4))
    meta_names = (".zattrs", ".zarray", ".zgroup", "zarr.json", ".zmetadata")
    for version in ("0.4", "0.5"):
        path = tmp_path / f"lazy{version}.zarr"
        write_ome_zarr(vol, path, levels=3, chunks=(8, 8, 8), version=version)
        chunks = [p for p in path.rglob("*") if p.is_file() and p.name not in meta_names]
        assert len(chunks) == 64 + 8 + 1
        for p in chunks:
            p.write_bytes(b"\x00garbage")
        v = read_ome_zarr(path)
        assert v.shape == (32, 32, 32) and len(v.metadata["multiscale"]["arrays"]) == 3
        with pytest.raises(Exception):
            v.numpy()


class RecordingStore(zarr.storage.LocalStore):
    """A local store that records every key read (zarr reads through get or get_sync).

    Defined at module level: dask tokenizes arrays by pickling them, and a
    class local to a test function would be pickled by value.
    """

    read_keys: list = []

    async def get(self, key, prototype=None, byte_range=None):
        RecordingStore.read_keys.append(key)
        return await super().get(key, prototype, byte_range)

    def get_sync(self, key, *args, **kwargs):
        RecordingStore.read_keys.append(key)
        return super().get_sync(key, *args, **kwargs)


def test_zarr_open_counts_only_metadata_reads(tmp_path):
    vol = Volume(np.ones((16, 16, 16), np.uint8), np.eye(4))
    write_ome_zarr(vol, tmp_path / "c.zarr", levels=2, chunks=(4, 4, 4))
    keys = RecordingStore.read_keys
    keys.clear()
    v = read_ome_zarr(RecordingStore(str(tmp_path / "c.zarr"), read_only=True))
    assert v.shape == (16, 16, 16)
    metadata_names = (".zattrs", ".zarray", ".zgroup", "zarr.json", ".zmetadata")
    assert keys and all(k.rsplit("/", 1)[-1] in metadata_names for k in keys), keys
    n_meta = len(keys)
    assert int(v.data.sum().compute()) == 16**3
    assert len(keys) >= n_meta + 64  # computing reads every chunk of level 0 (the recorder works)


def test_zarr_huge_sparse_opens_fast(tmp_path):
    """A 1024 x 2048 x 2048 uint16 pyramid (8 GiB logical, a few chunks on disk) opens in well under 2 s."""
    path = tmp_path / "huge.ome.zarr"
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    scales, trans = [], []
    for k in range(3):
        f = 2**k
        arr = group.create_array(
            str(k),
            shape=(1024 // f, 2048 // f, 2048 // f),
            chunks=(64, 64, 64),
            dtype="uint16",
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        arr[:64, :64, :64] = 7
        scales.append([0.004 * f, 0.002 * f, 0.002 * f])
        trans.append([0.0, 0.0, 0.0])
    group.attrs["multiscales"] = [multiscale_attrs([("z", "space"), ("y", "space"), ("x", "space")], scales, trans)]
    t0 = time.perf_counter()
    v = load_volume(path)
    elapsed = time.perf_counter() - t0
    assert v.shape == (1024, 2048, 2048) and v.data.nbytes == 8 * 2**30
    assert elapsed < 1.5, elapsed
    assert int(np.asarray(v.data[0, :64, :64]).sum()) == 7 * 64 * 64
