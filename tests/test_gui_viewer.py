"""One physical space in a real napari viewer (needs Xvfb + OpenGL).

An MRI written as NIfTI and a PET written as a DICOM series (LPS files, a
different grid, oblique-free) of the same phantom are opened through the
plugin's reader; markers at known world positions must sit under the same
napari world coordinate in both layers, and distances in napari's world must
be the true distances in mm.
"""

import numpy as np
import pytest

from napari_immunotrack.io.nifti import write_nifti
from napari_immunotrack.volume import Volume, napari_to_ras, ras_to_napari
from napari_immunotrack.widgets._common import center_on_world

pytestmark = pytest.mark.gui

MARKERS_RAS = np.array([[2.0, -3.0, 4.0], [-4.0, 5.0, -2.0], [6.0, 1.0, 1.0]])


def _phantom(spacing, shape, origin, flip_xy=False):
    """A volume with a bright voxel at each marker (markers lie on the grid)."""
    affine = np.zeros((4, 4))
    affine[3, 3] = 1.0
    # axes 0,1,2 = z, y, x (canonical), optionally stored as LPS-like flipped axes
    affine[2, 0], affine[1, 1], affine[0, 2] = spacing
    affine[:3, 3] = origin
    if flip_xy:
        affine[0, 2] *= -1
        affine[1, 1] *= -1
    data = np.zeros(shape, np.float32)
    vol = Volume(data, affine)
    idx = np.round(vol.world_to_index(MARKERS_RAS)).astype(int)
    assert np.allclose(vol.index_to_world(idx), MARKERS_RAS, atol=1e-9), "markers must lie on the grid"
    for n, (i, j, k) in enumerate(idx):
        data[i, j, k] = 100.0 * (n + 1)
    return vol


def _marker_world_positions(layer):
    """napari world positions (z, y, x) of the marker voxels of a layer, in marker order."""
    data = np.asarray(layer.data)
    out = []
    for n in range(len(MARKERS_RAS)):
        idx = np.argwhere(np.isclose(data, 100.0 * (n + 1), rtol=1e-3))
        assert len(idx) == 1, f"marker {n} found {len(idx)} times in {layer.name}"
        out.append(np.asarray(layer.data_to_world(idx[0].astype(float))))
    return np.array(out)


def test_mri_nifti_and_pet_dicom_share_world(make_napari_viewer, tmp_path):
    from napari_immunotrack.io.dicom import write_dicom_series

    mri = _phantom((0.5, 0.5, 0.5), (40, 44, 48), (-10.0, -12.0, -9.5))
    mri = mri.replace(name="mri", modality="MR")
    pet = _phantom((1.0, 1.0, 1.0), (24, 26, 30), (14.0, 13.0, -8.0), flip_xy=True)
    pet = pet.replace(name="pet", modality="PT", unit="Bq/mL")
    mri_path = tmp_path / "mri.nii.gz"
    write_nifti(mri, mri_path)
    pet_dir = tmp_path / "pet"
    write_dicom_series(
        pet,
        pet_dir,
        modality="PT",
        series_description="pet",
        shuffle_names=True,
        patient={"PatientWeight": 0.025},
        pet={
            "Units": "BQML",
            "DecayCorrection": "START",
            "RadionuclideTotalDose": 1e7,
            "RadionuclideHalfLife": 282240.0,
            "RadiopharmaceuticalStartDateTime": "20260101090000",
            "SeriesDate": "20260102",
            "SeriesTime": "090000",
        },
    )

    viewer = make_napari_viewer()
    mri_layers = viewer.open(str(mri_path), plugin="napari-immunotrack")
    pet_layers = viewer.open(str(pet_dir), plugin="napari-immunotrack")
    assert len(mri_layers) == 1 and len(pet_layers) == 1
    mri_layer, pet_layer = mri_layers[0], pet_layers[0]
    assert pet_layer.colormap.name == "inferno" and pet_layer.blending == "additive"
    assert mri_layer.colormap.name == "gray"

    expected = ras_to_napari(MARKERS_RAS)
    for layer in (mri_layer, pet_layer):
        world = _marker_world_positions(layer)
        np.testing.assert_allclose(world, expected, atol=1e-3)
        # the same world point reads the marker's value in each layer
        for n, point in enumerate(expected):
            center_on_world(viewer, MARKERS_RAS[n])  # the slider moves to the marker's slice
            value = layer.get_value(point, world=True)
            assert value == pytest.approx(100.0 * (n + 1), rel=1e-3)
        # distances between markers in napari's world are true distances in mm
        d_world = np.linalg.norm(world[0] - world[1])
        assert d_world == pytest.approx(np.linalg.norm(MARKERS_RAS[0] - MARKERS_RAS[1]), abs=1e-3)
    # back to RAS through the documented convention
    np.testing.assert_allclose(napari_to_ras(_marker_world_positions(pet_layer)), MARKERS_RAS, atol=1e-3)
    # the scale bar reads millimetres: every layer's units are mm
    for layer in (mri_layer, pet_layer):
        assert [str(u) for u in layer.units] == ["millimeter"] * 3


def test_reader_refuses_broken_file_with_notification(make_napari_viewer, tmp_path):
    from napari_immunotrack._reader import get_reader

    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage-not-a-nifti")
    reader = get_reader(str(bad))
    assert reader is not None
    assert reader(str(bad)) == [(None,)]
