"""Transforms cannot be used backwards: every verb taking --transform accepts `immunotrack register`'s output
whichever image was fixed, the sample study's xfm files and the README's usage lines give the demo's numbers,
and a transform whose direction nothing can tell is refused (docs/methods/transforms.md#direction)."""

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from napari_immunotrack.cli import main
from napari_immunotrack.data import sample_study_root
from napari_immunotrack.errors import InputError
from napari_immunotrack.io import load_volume, save_labels, save_volume
from napari_immunotrack.io.transforms import (
    DIRECTION_TAG,
    describe_image,
    read_transform,
    read_transform_file,
    resolve_direction,
    write_transform,
)
from napari_immunotrack.volume import Volume

SES = sample_study_root() / "sub-01" / "ses-day1"
PET = SES / "pet"
T2W = SES / "anat" / "sub-01_ses-day1_T2w.nii.gz"
DSEG = SES / "rois" / "sub-01_ses-day1_dseg.nii.gz"


@pytest.fixture(scope="module")
def demo_pet():
    """The demo pipeline's PET table (registration with the MRI fixed, PET moved into MRI world)."""
    from napari_immunotrack.pipeline import analyse_session

    result = analyse_session(sample_study_root(), "day1", steps=["register", "pet"], register_modalities=("pet",))
    assert "pet" in result.tables, result.errors
    return result.tables["pet"].set_index("label"), result


def _compare(csv, demo, rel=0.01):
    df = pd.read_csv(csv).set_index("label")
    assert set(demo.index) <= set(df.index)  # the demo reads the readout organs; the dseg has a few more
    df = df.loc[demo.index]
    for col in ("mean_bq_ml", "suv_bw_mean", "percent_id"):
        big = demo[col] > 1e-3 * demo[col].max()  # the near-empty ROIs are compared in absolute terms
        np.testing.assert_allclose(df.loc[big.index[big], col], demo.loc[big, col], rtol=rel, err_msg=col)
        np.testing.assert_allclose(
            df.loc[big.index[~big], col], demo.loc[~big, col], atol=2e-3 * demo[col].max(), err_msg=col
        )
    return df


def test_readme_register_then_quantify_gives_the_demo_numbers(tmp_path, demo_pet):
    """The README's lines, as written: register T2W PET -o pet.tfm, then quantify PET --transform pet.tfm."""
    demo, _ = demo_pet
    assert (
        main(
            [
                "register",
                str(T2W),
                str(PET),
                "-o",
                str(tmp_path / "pet.tfm"),
                "--resampled",
                str(tmp_path / "pet_on_mri.nii.gz"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "quantify",
                str(PET),
                "--roi",
                str(DSEG),
                "-o",
                str(tmp_path / "pet.csv"),
                "--transform",
                str(tmp_path / "pet.tfm"),
            ]
        )
        == 0
    )
    df = _compare(tmp_path / "pet.csv", demo)
    assert df.loc[4, "suv_bw_mean"] > 100  # the spleen: the 0.21 was the transform used backwards
    prov = json.loads((tmp_path / "pet.csv.provenance.json").read_text())
    assert "moving image" in prov["parameters"]["transform_direction"]
    # the file says which image was fixed, in a comment line ITK skips, and in its provenance
    text = (tmp_path / "pet.tfm").read_text().splitlines()
    assert text[0].startswith("#Insight") and text[1].startswith(DIRECTION_TAG)
    direction = json.loads(text[1][len(DIRECTION_TAG) :])
    assert direction["fixed"]["modality"] == "MR" and direction["moving"]["modality"] == "PT"
    side = json.loads((tmp_path / "pet.tfm.provenance.json").read_text())
    assert side["transform_direction"]["moving"]["shape"] == list(load_volume(PET).shape)
    sitk_m = sitk.ReadTransform(str(tmp_path / "pet.tfm"))  # SimpleITK reads it as before
    assert np.allclose(
        np.array(sitk_m.GetParameters())[9:] * [-1, -1, 1], read_transform(tmp_path / "pet.tfm")[:3, 3], atol=1e-9
    )


def test_the_other_role_and_the_sample_xfm_give_the_same_numbers(tmp_path, demo_pet):
    demo, result = demo_pet
    t = result.transforms["pet"]
    pet, mri = load_volume(PET), load_volume(T2W)
    # the same registration written with the PET fixed (MRI moving): the inverse matrix, roles swapped
    write_transform(tmp_path / "mri.tfm", np.linalg.inv(t), fixed=describe_image(pet), moving=describe_image(mri))
    assert (
        main(
            [
                "quantify",
                str(PET),
                "--roi",
                str(DSEG),
                "-o",
                str(tmp_path / "a.csv"),
                "--transform",
                str(tmp_path / "mri.tfm"),
            ]
        )
        == 0
    )
    _compare(tmp_path / "a.csv", demo)
    # the sample study's own file (written before direction records: its provenance and name decide)
    assert (
        main(
            [
                "quantify",
                str(PET),
                "--roi",
                str(DSEG),
                "-o",
                str(tmp_path / "b.csv"),
                "--transform",
                str(SES / "xfm" / "sub-01_ses-day1_from-pet_to-anat.tfm"),
            ]
        )
        == 0
    )
    _compare(tmp_path / "b.csv", demo)
    # a bare ITK file with no record at all, either way round: the overlap decides
    for name, m in (("bare_fwd.tfm", t), ("bare_inv.tfm", np.linalg.inv(t))):
        write_transform(tmp_path / name, m)
        assert read_transform_file(tmp_path / name).source == "none"
        out = tmp_path / f"{name}.csv"
        assert (
            main(["quantify", str(PET), "--roi", str(DSEG), "-o", str(out), "--transform", str(tmp_path / name)]) == 0
        )
        _compare(out, demo)
        prov = json.loads(out.with_name(out.name + ".provenance.json").read_text())
        assert "overlap" in prov["parameters"]["transform_direction"]


def test_mpi_and_spect_sample_transforms_resolve_to_their_own_scanner():
    """The sample MPI transform was registered to the PET placed in MRI world: its MPI is the moving image."""
    for datatype, image in (("mpi", SES / "mpi" / "sub-01_ses-day1_mpi.nii.gz"), ("spect", SES / "spect")):
        tf = read_transform_file(SES / "xfm" / f"sub-01_ses-day1_from-{datatype}_to-anat.tfm")
        m, how = resolve_direction(tf, load_volume(image), load_volume(DSEG))
        assert np.allclose(m, np.linalg.inv(tf.fixed_to_moving)) and "moving" in how


def _blobs():
    """An image with three bright blobs and the ROI labels drawn on them, on a 1 mm grid."""
    shape = (40, 40, 40)
    z, y, x = np.indices(shape)
    img = np.full(shape, 1.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    for k, (c, r) in enumerate((((12, 12, 20), 5), ((28, 14, 22), 4), ((20, 28, 16), 6)), start=1):
        inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r * r
        img[inside] = 10.0 * k
        lab[inside] = k
    aff = np.eye(4)
    return Volume(img, aff, "PT", "Bq/mL"), Volume(lab, aff, "SEG", "label")


def test_overlap_decides_and_refuses(tmp_path):
    img, lab = _blobs()
    shift = np.eye(4)
    shift[:3, 3] = [4.0, -3.0, 2.0]  # ROI world = image world + shift
    moved = lab.replace(affine=shift @ lab.affine)
    for m in (shift, np.linalg.inv(shift)):
        write_transform(tmp_path / "t.tfm", m, overwrite=True)
        got, how = resolve_direction(read_transform_file(tmp_path / "t.tfm"), img, moved)
        assert np.allclose(got, shift) and "overlap" in how
    # an image without structure: nothing can tell the direction -> one-line refusal naming the option
    flat = img.replace(data=np.random.default_rng(0).normal(5, 1, img.shape).astype(np.float32))
    with pytest.raises(InputError, match="--transform-fixed"):
        resolve_direction(read_transform_file(tmp_path / "t.tfm"), flat, moved)
    # ... unless told
    got, _ = resolve_direction(read_transform_file(tmp_path / "t.tfm"), flat, moved, fixed="other")
    assert np.allclose(got, shift)


def test_segment_baseline_transform_either_way(tmp_path):
    """segment --baseline-transform: register POST PRE or register PRE POST, both resampled the right way."""
    from napari_immunotrack.commands._common import transform_arg

    img, _ = _blobs()
    shift = np.eye(4)
    shift[:3, 3] = [3.0, 2.0, -4.0]
    pre = img.replace(affine=shift @ img.affine)  # PRE world = POST world + shift
    save_volume(img, tmp_path / "post.nii.gz")
    save_volume(pre, tmp_path / "pre.nii.gz")
    post_v, pre_v = load_volume(tmp_path / "post.nii.gz"), load_volume(tmp_path / "pre.nii.gz")
    write_transform(
        tmp_path / "a.tfm",
        shift,
        fixed=describe_image(post_v, path=tmp_path / "post.nii.gz"),
        moving=describe_image(pre_v, path=tmp_path / "pre.nii.gz"),
    )
    write_transform(
        tmp_path / "b.tfm", np.linalg.inv(shift), fixed=describe_image(pre_v), moving=describe_image(post_v)
    )
    for name in ("a.tfm", "b.tfm"):
        m, _ = transform_arg(
            str(tmp_path / name), post_v, pre_v, image_path=tmp_path / "post.nii.gz", other_path=tmp_path / "pre.nii.gz"
        )
        assert np.allclose(m, shift)


def test_cli_refuses_undecidable_transform_in_one_line(tmp_path, capsys):
    img, lab = _blobs()
    flat = img.replace(data=np.random.default_rng(1).normal(5, 1, img.shape).astype(np.float32))
    save_volume(flat, tmp_path / "mpi.nii.gz")
    save_labels(lab, tmp_path / "roi.nii.gz")
    m = np.eye(4)
    m[:3, 3] = [5.0, 0, 0]
    write_transform(tmp_path / "t.tfm", m)
    pd.DataFrame({"x_mm": [10.0], "y_mm": [10.0], "z_mm": [10.0], "iron_ng": [100.0]}).to_csv(
        tmp_path / "f.csv", index=False
    )
    rc = main(
        [
            "mpi",
            str(tmp_path / "mpi.nii.gz"),
            "--fiducials",
            str(tmp_path / "f.csv"),
            "--roi",
            str(tmp_path / "roi.nii.gz"),
            "--iron-per-cell",
            "5",
            "-o",
            str(tmp_path / "o.csv"),
            "--transform",
            str(tmp_path / "t.tfm"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot tell which image was fixed" in err[0]
    assert not (tmp_path / "o.csv").exists()
