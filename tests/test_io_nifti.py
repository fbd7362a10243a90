"""NIfTI reading and writing against nibabel's own shipped test files."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path

from napari_immunotrack.errors import ImmunotrackWarning, InputError, OutputExistsError
from napari_immunotrack.io import load_volume, save_labels, save_volume
from napari_immunotrack.io.nifti import read_nifti, write_nifti
from napari_immunotrack.volume import Volume

SHIPPED = [
    "anatomical.nii",
    "example4d.nii.gz",
    "example_nifti2.nii.gz",
    "functional.nii",
    "standard.nii.gz",
    "reoriented_anat_moved.nii",
]


def shipped(name):
    return os.path.join(data_path, name)


def assert_one_line_input_error(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text and text.strip() == text and len(text) > 20


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("name", SHIPPED)
def test_world_of_voxels_equals_nibabel_affine(name):
    img = nib.load(shipped(name))
    vol = read_nifti(shipped(name))
    rng = np.random.default_rng(0)
    ijk = np.stack([rng.integers(0, n, 20) for n in img.shape[:3]], axis=1)
    expected = (img.affine @ np.c_[ijk, np.ones(len(ijk))].T).T[:, :3]
    # our array is (k, j, i): the reversal must give the same world points
    ours = vol.index_to_world(ijk[:, ::-1])
    np.testing.assert_allclose(ours, expected, atol=1e-6)
    # and the value stored at (k, j, i) is nibabel's value at (i, j, k)
    ref = np.asanyarray(img.dataobj)
    for i, j, k in ijk:
        if ref.ndim == 4:
            np.testing.assert_array_equal(vol.data[:, k, j, i], ref[i, j, k, :])
        else:
            assert vol.data[k, j, i] == ref[i, j, k]
    # world -> index inverts it
    np.testing.assert_allclose(vol.world_to_index(expected), ijk[:, ::-1], atol=1e-6)


def test_known_headers():
    anat = read_nifti(shipped("anatomical.nii"))
    # nibabel's tests: anatomical.nii has a diagonal (-2, 2, 2) affine, shape (33, 41, 25)
    assert anat.spatial_shape == (25, 41, 33)
    np.testing.assert_allclose(anat.spacing, [2, 2, 2])
    assert anat.orientation() == "SAL"
    np.testing.assert_allclose(anat.index_to_world([[0, 0, 0]])[0], [32, -40, -16])
    assert anat.data.dtype == np.int16 and anat.data.dtype.isnative  # big-endian file made native
    assert anat.modality == "MR" and anat.unit == "a.u." and anat.name == "anatomical"

    # nib-ls: example4d.nii.gz is int16 [128, 96, 24, 2] 2.00x2.00x2.20x2000.00, sform
    ex = read_nifti(shipped("example4d.nii.gz"))
    assert ex.shape == (2, 24, 96, 128)
    np.testing.assert_allclose(ex.spacing, [2.2, 2.0, 2.0], atol=1e-5)
    assert ex.metadata["leading_axis"] == "time"
    assert ex.metadata["frame_interval_s"] == pytest.approx(2000.0)  # what the header says (unit "sec")
    assert ex.metadata["affine_source"] == "sform" and ex.metadata["format"] == "nifti1"


def test_nifti2_uses_sform_when_qform_differs():
    img = nib.load(shipped("example_nifti2.nii.gz"))
    sform, qform = img.header.get_sform(), img.header.get_qform()
    assert not np.allclose(sform, qform, atol=1e-4)  # the shipped file really has two different affines
    vol = read_nifti(shipped("example_nifti2.nii.gz"))
    assert vol.metadata["format"] == "nifti2" and vol.shape == (2, 12, 20, 32)
    np.testing.assert_allclose(vol.index_to_world([[3, 2, 1]])[0], (sform @ [1, 2, 3, 1])[:3], atol=1e-6)


def _with_codes(tmp_path, sform_code, qform_code, sform=None, qform=None):
    img = nib.load(shipped("anatomical.nii"))
    out = nib.Nifti1Image(np.asanyarray(img.dataobj), None, img.header.copy())
    out.set_sform(img.affine if sform is None else sform, code=sform_code)
    out.set_qform(img.affine if qform is None else qform, code=qform_code)
    path = tmp_path / f"codes_{sform_code}_{qform_code}.nii"
    nib.save(out, str(path))
    return path


def test_sform_and_qform_codes(tmp_path):
    base = nib.load(shipped("anatomical.nii")).affine
    moved = base.copy()
    moved[:3, 3] += [10, -5, 7]
    # sform code > 0 wins over the qform
    v = read_nifti(_with_codes(tmp_path, 2, 1, sform=moved, qform=base))
    np.testing.assert_allclose(v.index_to_world([[0, 0, 0]])[0], moved[:3, 3], atol=1e-5)
    assert v.metadata["affine_source"] == "sform"
    # sform code 0: the qform is used
    v = read_nifti(_with_codes(tmp_path, 0, 1, sform=moved, qform=base))
    np.testing.assert_allclose(v.index_to_world([[0, 0, 0]])[0], base[:3, 3], atol=1e-5)
    assert v.metadata["affine_source"] == "qform"


def test_no_orientation_refused_unless_allowed(tmp_path):
    path = _with_codes(tmp_path, 0, 0)
    hdr = nib.load(str(path)).header
    assert int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0
    with pytest.raises(InputError, match="allow_unknown_orientation") as excinfo:
        read_nifti(path)
    assert_one_line_input_error(excinfo)
    with pytest.raises(InputError):
        load_volume(path)
    with pytest.warns(ImmunotrackWarning, match="no orientation"):
        v = read_nifti(path, allow_unknown_orientation=True)
    assert v.metadata["orientation_unknown"] is True
    np.testing.assert_allclose(v.spacing, [2, 2, 2])


def test_degenerate_sform_refused(tmp_path):
    img = nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4))
    img.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=1)
    nib.save(img, str(tmp_path / "flat.nii"))
    with pytest.raises(InputError, match="flat.nii.*sform.*degenerate voxel size") as excinfo:
        read_nifti(tmp_path / "flat.nii")
    assert_one_line_input_error(excinfo)


def test_spatial_units_converted_to_mm(tmp_path):
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    affine = np.diag([50.0, 100.0, 200.0, 1.0])  # micrometres
    affine[:3, 3] = [1000, 2000, 3000]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("micron")
    nib.save(img, str(tmp_path / "um.nii"))
    v = read_nifti(tmp_path / "um.nii")
    np.testing.assert_allclose(v.spacing, [0.2, 0.1, 0.05])
    np.testing.assert_allclose(v.index_to_world([[0, 0, 0]])[0], [1, 2, 3])
    assert v.metadata["spatial_unit_in_file"] == "micron"


# ------------------------------------------------------------------ 4D, sidecar
def test_bids_sidecar_and_echoes(tmp_path):
    data = np.random.default_rng(1).random((4, 5, 6, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([0.1, 0.1, 0.5, 1])), str(tmp_path / "me.nii.gz"))
    side = {"Modality": "MR", "EchoTime": [0.002, 0.004, 0.006], "MagneticFieldStrength": 9.4}
    (tmp_path / "me.json").write_text(json.dumps(side))
    v = read_nifti(tmp_path / "me.nii.gz")
    assert v.shape == (3, 6, 5, 4)
    assert v.metadata["leading_axis"] == "echo"
    assert v.metadata["EchoTime"] == [0.002, 0.004, 0.006] and v.metadata["MagneticFieldStrength"] == 9.4
    np.testing.assert_array_equal(v.data[2], data[..., 2].transpose(2, 1, 0))

    nib.save(nib.Nifti1Image(data[..., 0], np.eye(4)), str(tmp_path / "pet.nii"))
    (tmp_path / "pet.json").write_text(json.dumps({"Modality": "PT", "Units": "Bq/mL"}))
    v = read_nifti(tmp_path / "pet.nii")
    assert v.modality == "PT" and v.unit == "Bq/mL"
    assert read_nifti(tmp_path / "pet.nii", modality="NM", unit="SUVbw").modality == "NM"

    (tmp_path / "pet.json").write_text("{broken")
    with pytest.raises(InputError, match="sidecar") as excinfo:
        read_nifti(tmp_path / "pet.nii")
    assert_one_line_input_error(excinfo)
    (tmp_path / "pet.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        read_nifti(tmp_path / "pet.nii")


def test_trailing_singleton_axis_dropped(tmp_path):
    data = np.ones((4, 5, 6, 1), np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "one.nii"))
    v = read_nifti(tmp_path / "one.nii")
    assert v.shape == (6, 5, 4) and "leading_axis" not in v.metadata


def test_lazy_equals_eager():
    eager = read_nifti(shipped("example4d.nii.gz"))
    lazy = read_nifti(shipped("example4d.nii.gz"), lazy=True)
    assert type(lazy.data).__module__.startswith("dask")
    np.testing.assert_array_equal(lazy.numpy(), eager.data)
    np.testing.assert_array_equal(lazy.affine, eager.affine)


# ------------------------------------------------------------------ broken files
def test_truncated_gz_is_one_line_input_error(tmp_path):
    raw = open(shipped("example4d.nii.gz"), "rb").read()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    for reader in (read_nifti, load_volume):
        with pytest.raises(InputError, match="truncated") as excinfo:
            reader(path)
        assert_one_line_input_error(excinfo)


def test_truncated_nii_is_input_error(tmp_path):
    raw = open(shipped("anatomical.nii"), "rb").read()
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated") as excinfo:
        read_nifti(path)
    assert_one_line_input_error(excinfo)


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"not a nifti at all"])
def test_garbage_bytes_are_input_error(tmp_path, content):
    path = tmp_path / "garbage.nii"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable NIfTI") as excinfo:
        load_volume(path)
    assert_one_line_input_error(excinfo)


def test_2d_nifti_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 9), np.float32), np.eye(4)), str(tmp_path / "slice.nii"))
    with pytest.raises(InputError, match="2D") as excinfo:
        read_nifti(tmp_path / "slice.nii")
    assert_one_line_input_error(excinfo)


def test_missing_and_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_nifti(tmp_path / "nope.nii")
    (tmp_path / "dir.nii").mkdir()
    with pytest.raises(InputError, match="folder"):
        read_nifti(tmp_path / "dir.nii")


# ------------------------------------------------------------------ writing
@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_round_trip_keeps_affine_and_data(tmp_path, name, ext):
    original = nib.load(shipped(name))
    vol = read_nifti(shipped(name))
    out = tmp_path / f"copy{ext}"
    assert write_nifti(vol, out) == out
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, original.affine, atol=1e-6)
    assert back.shape == original.shape
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    assert int(back.header["sform_code"]) > 0 and int(back.header["qform_code"]) > 0
    # and through our reader again
    again = read_nifti(out)
    np.testing.assert_allclose(again.affine, vol.affine, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_labels_written_on_source_grid(tmp_path):
    src = read_nifti(shipped("example4d.nii.gz"))
    labels = np.zeros(src.spatial_shape, np.int64)
    labels[3:6, 10:20, 30:40] = 1
    labels[10, 50, 60] = 300
    seg = Volume(labels, src.affine, modality="SEG", unit="label", name="seg")
    out = save_labels(seg, tmp_path / "seg.nii.gz", provenance={"step": "test"})
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, nib.load(shipped("example4d.nii.gz")).affine, atol=1e-6)
    assert back.get_data_dtype() == np.uint16  # smallest type holding 300
    assert back.header.get_intent()[0] == "label"
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels.transpose(2, 1, 0))
    assert json.loads((tmp_path / "seg.nii.gz.provenance.json").read_text())["step"] == "test"
    small = Volume(labels.clip(0, 1).astype(np.float32), src.affine)
    save_labels(small, tmp_path / "small.nii")
    assert nib.load(str(tmp_path / "small.nii")).get_data_dtype() == np.uint8


def test_labels_refuse_non_integer_floats(tmp_path):
    vol = Volume(np.full((3, 4, 5), 0.5, np.float32), np.eye(4))
    with pytest.raises(InputError, match="non-integer"):
        save_labels(vol, tmp_path / "bad.nii.gz")
    assert not list(tmp_path.iterdir())


def test_write_refuses_overwrite_and_keeps_old(tmp_path):
    vol = Volume(np.ones((3, 4, 5), np.float32), np.eye(4))
    out = tmp_path / "x.nii"
    save_volume(vol, out)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError) as excinfo:
        save_volume(vol.replace(data=np.zeros((3, 4, 5), np.float32)), out)
    assert_one_line_input_error(excinfo)
    assert out.read_bytes() == before
    save_volume(vol.replace(data=np.zeros((3, 4, 5), np.float32)), out, overwrite=True)
    assert np.asanyarray(nib.load(str(out)).dataobj).sum() == 0


def test_write_rejects_bad_extension_and_missing_folder(tmp_path):
    vol = Volume(np.ones((3, 4, 5), np.float32), np.eye(4))
    with pytest.raises(InputError, match=".nii"):
        write_nifti(vol, tmp_path / "x.img")
    with pytest.raises(InputError, match="does not exist"):
        write_nifti(vol, tmp_path / "nofolder" / "x.nii")


def test_write_dtypes_and_frame_interval(tmp_path):
    rng = np.random.default_rng(3)
    # float64 that float32 cannot hold exactly stays float64; exact ones become float32
    exact = Volume(np.arange(60, dtype=np.float64).reshape(3, 4, 5), np.eye(4))
    write_nifti(exact, tmp_path / "exact.nii")
    assert nib.load(str(tmp_path / "exact.nii")).get_data_dtype() == np.float32
    fine = Volume(rng.random((3, 4, 5)), np.eye(4))
    write_nifti(fine, tmp_path / "fine.nii")
    np.testing.assert_array_equal(read_nifti(tmp_path / "fine.nii").data, fine.data)
    big = Volume(np.arange(60, dtype=np.int64).reshape(3, 4, 5), np.eye(4))
    write_nifti(big, tmp_path / "int.nii")
    assert nib.load(str(tmp_path / "int.nii")).get_data_dtype() == np.int32
    mask = Volume(np.ones((3, 4, 5), bool), np.eye(4))
    write_nifti(mask, tmp_path / "mask.nii")
    assert nib.load(str(tmp_path / "mask.nii")).get_data_dtype() == np.uint8
    series = Volume(
        np.zeros((4, 3, 4, 5), np.float32), np.eye(4), metadata={"leading_axis": "time", "frame_interval_s": 1.5}
    )
    write_nifti(series, tmp_path / "series.nii.gz")
    back = read_nifti(tmp_path / "series.nii.gz")
    assert back.shape == (4, 3, 4, 5) and back.metadata["frame_interval_s"] == pytest.approx(1.5)


def test_write_oblique_dask_volume(tmp_path):
    import dask.array as da

    theta = np.deg2rad(20)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    ) @ np.diag([0.5, 0.7, 1.1])
    affine[:3, 3] = [-3, 4, 12]
    data = da.arange(4 * 5 * 6, chunks=30).reshape(4, 5, 6).astype(np.float32)
    write_nifti(Volume(data, affine), tmp_path / "obl.nii.gz")
    back = read_nifti(tmp_path / "obl.nii.gz")
    np.testing.assert_allclose(back.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(back.data, data.compute())
