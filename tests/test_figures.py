"""Publication figures, checked on the rendered pixels: colour-bar range, scale-bar length, outline positions,
grids that line up, orientation letters, determinism, and bad input."""

import hashlib

import numpy as np
import pandas as pd
import pytest
from matplotlib import colormaps

from napari_immunotrack import figures as F
from napari_immunotrack.errors import ImmunotrackWarning, InputError, OutputExistsError
from napari_immunotrack.volume import Volume

DPI = 120


def _grid(shape=(40, 64, 64), spacing=0.25, origin=(-8.0, -8.0, -5.0)):
    """An axis-aligned RAS grid (array axes z, y, x as readers give them)."""
    aff = np.zeros((4, 4))
    aff[2, 0], aff[1, 1], aff[0, 2] = spacing, spacing, spacing
    aff[:3, 3] = origin
    aff[3, 3] = 1
    return shape, aff


def _black_mri():
    shape, aff = _grid()
    return Volume(np.zeros(shape, np.float32), aff, "MR", "a.u.", name="T2w")


def _pixels_to_data(ax, rows, cols, height):
    """PNG pixel centres (row, col) -> data coordinates (mm) through the axes' transform."""
    display = np.c_[cols + 0.5, height - rows - 0.5]
    return ax.transData.inverted().transform(display)


def test_colour_bar_range_equals_the_range_asked_for():
    mri = _black_mri()
    pet = mri.replace(
        data=np.random.default_rng(0).random(mri.shape).astype(np.float32) * 10,
        modality="PT",
        unit="kBq/mL",
        name="PET",
    )
    res = F.fused_slice(mri, pet, overlay_range=(2.0, 7.0), plane="axial", position_mm=0.0)
    cax = res.axes["colorbar"]
    assert res.info["colorbar_range"] == (2.0, 7.0)
    assert tuple(cax.get_ylim()) == pytest.approx((2.0, 7.0))
    assert "kBq/mL" in cax.get_ylabel()
    img = F.render_png(res, dpi=DPI)
    h = img.shape[0]
    box = cax.get_window_extent()
    col = int((box.x0 + box.x1) / 2)
    bottom_row, top_row = int(h - box.y0) - 3, int(h - box.y1) + 3
    cmap = colormaps["inferno"]
    assert np.abs(img[bottom_row, col, :3] - np.array(cmap(0.0)[:3]) * 255).max() < 12
    assert np.abs(img[top_row, col, :3] - np.array(cmap(1.0)[:3]) * 255).max() < 12
    # the tick labels span the range asked for
    ticks = [t for t in cax.get_yticks() if 2.0 <= t <= 7.0]
    assert min(ticks) >= 2.0 and max(ticks) <= 7.0


@pytest.mark.parametrize("length_mm, radiological", [(5.0, False), (2.0, True)])
def test_scale_bar_length_in_pixels_matches_the_millimetres(length_mm, radiological):
    res = F.fused_slice(
        _black_mri(), None, plane="axial", scale_bar_mm=length_mm, letters=False, radiological=radiological
    )
    ax = res.axes["image"]
    img = F.render_png(res, dpi=DPI)
    white = np.all(img[:, :, :3] == 255, axis=2)
    box = ax.get_window_extent()
    h = img.shape[0]
    inside = white[int(h - box.y1) + 1 : int(h - box.y0) - 1, int(box.x0) + 1 : int(box.x1) - 1]
    runs = [np.diff(np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))) for row in inside]
    longest = max(int(r[::2].max()) if r.size else 0 for r in runs)
    xlim = ax.get_xlim()
    px_per_mm = box.width / abs(xlim[1] - xlim[0])
    assert abs(longest - length_mm * px_per_mm) <= 2.0
    assert res.info["scale_bar_mm"] == length_mm


def test_outlines_are_drawn_at_the_labels_positions():
    mri = _black_mri()
    shape, aff = _grid()
    idx = np.indices(shape).reshape(3, -1).T
    world = (idx @ aff[:3, :3].T + aff[:3, 3]).reshape(shape + (3,))
    centre, radius = np.array([3.0, -2.0]), 4.0
    disk = (np.hypot(world[..., 0] - centre[0], world[..., 1] - centre[1]) < radius).astype(np.uint8)
    lab = Volume(disk, aff, "SEG", "label", name="roi")
    res = F.fused_slice(mri, None, [(lab, "#E69F00")], plane="axial", position_mm=0.0, letters=False, scale_bar_mm=0)
    img = F.render_png(res, dpi=150).astype(int)
    orange = np.array([0xE6, 0x9F, 0x00])
    rows, cols = np.nonzero(np.abs(img[:, :, :3] - orange).sum(axis=2) < 60)
    assert rows.size > 50
    pts = _pixels_to_data(res.axes["image"], rows, cols, img.shape[0])
    dist = np.hypot(pts[:, 0] - centre[0], pts[:, 1] - centre[1])
    # the contour runs between the pixel centres of the 0.25 mm display grid: within half a pixel and a line
    assert abs(np.median(dist) - radius) < 0.2
    assert np.all(np.abs(dist - radius) < 0.45)
    # all around the disk, not in one place
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    assert np.histogram(angles, bins=8, range=(-np.pi, np.pi))[0].min() > 0


def test_images_on_different_grids_line_up_in_world_coordinates():
    # an MRI on a RAS grid and a PET on an LPS-ordered, rotated grid, both with a spot at the same world point
    spot = np.array([2.5, -3.0, 1.0])
    shape, aff = _grid()
    mri_idx = np.round((np.linalg.inv(aff) @ np.r_[spot, 1])[:3]).astype(int)
    mri_data = np.zeros(shape, np.float32)
    mri_data[tuple(mri_idx)] = 100.0
    mri = Volume(mri_data, aff, "MR", "a.u.")
    a = np.deg2rad(20)
    rot = np.array([[-np.cos(a), np.sin(a), 0], [-np.sin(a), -np.cos(a), 0], [0, 0, 1.0]])  # LPS-like, rotated
    pet_aff = np.eye(4)
    pet_aff[:3, :3] = rot[:, ::-1] * 0.5  # array axes (slice, row, column)
    pet_aff[:3, 3] = spot - pet_aff[:3, :3] @ np.array([10, 12, 14])
    pet_data = np.zeros((24, 28, 30), np.float32)
    pet_data[10, 12, 14] = 50.0
    pet = Volume(pet_data, pet_aff, "PT", "Bq/mL")
    for vol in (mri, pet):
        grid = F.display_grid("axial", spot[2], (-8.0, 8.0), (-8.0, 8.0), 0.25)
        plane = F.sample_plane(vol, grid, order=1)
        r, c = np.unravel_index(np.nanargmax(plane), plane.shape)
        h0, h1, v0, v1 = grid[2]
        x, y = h0 + (c + 0.5) * 0.25, v1 - (r + 0.5) * 0.25
        assert abs(x - spot[0]) <= 0.25 and abs(y - spot[1]) <= 0.25


def test_orientation_letters_follow_ras():
    # an empty image: the marker goes to the upper left; its arrows point right and down, tipped with the
    # letters of the sides they point to
    res = F.fused_slice(_black_mri(), None, plane="coronal")
    texts = {t.get_text(): t.get_position() for t in res.axes["image"].texts if len(t.get_text()) == 1}
    assert set(texts) == {"R", "I"} and res.info["letter_corner"] == "upper left"
    assert texts["R"][0] > 0.1 and texts["R"][1] > 0.9 and texts["I"][0] < 0.1 and texts["I"][1] < 0.9
    mirrored = F.fused_slice(_black_mri(), None, plane="axial", radiological=True)
    texts = {t.get_text(): t.get_position() for t in mirrored.axes["image"].texts if len(t.get_text()) == 1}
    assert set(texts) == {"L", "P"}  # mirrored: the screen's right is the subject's left
    # mirrored axes: data x grows to the left
    xlim = mirrored.axes["image"].get_xlim()
    assert xlim[0] > xlim[1]


@pytest.mark.parametrize("quiet", ["upper left", "upper right", "lower left"])
def test_orientation_letters_sit_in_the_emptiest_corner_never_on_the_data(quiet):
    """Signal everywhere but one corner (a tumour at the right edge, where "R" used to sit): the letters go
    to that corner, and the image under each letter is dark."""
    shape, aff = _grid()
    data = np.full(shape, 100.0, np.float32)
    mri = Volume(data, aff, "MR", "a.u.")
    grid_res = F.fused_slice(mri, None, plane="axial", scale_bar_mm=0)
    h0, h1, v0, v1 = grid_res.info["extent_mm"]
    w, h = h1 - h0, v1 - v0
    # empty the chosen corner (30 % of each side) in world coordinates
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = mri.index_to_world(ijk)
    left = xyz[:, 0] < h0 + 0.3 * w
    top = xyz[:, 1] > v1 - 0.3 * h
    want = {
        "upper left": left & top,
        "upper right": ~left & (xyz[:, 0] > h1 - 0.3 * w) & top,
        "lower left": left & (xyz[:, 1] < v0 + 0.3 * h),
    }[quiet]
    data.reshape(-1)[want] = 0.0
    res = F.fused_slice(mri.replace(data=data), None, plane="axial", scale_bar_mm=0)
    assert res.info["letter_corner"] == quiet
    rgba = F.render_png(res, dpi=150)
    fig, ax = res.figure, res.axes["image"]
    renderer = fig.canvas.get_renderer()
    for t in ax.texts:
        if len(t.get_text()) != 1:
            continue
        bb = t.get_window_extent(renderer)
        cx, cy = int((bb.x0 + bb.x1) / 2), int(rgba.shape[0] - (bb.y0 + bb.y1) / 2)
        # around the letter (a ring outside its glyph): black background, not the grey of the data
        ring = np.concatenate([rgba[cy - 14 : cy + 15, cx - 14, :3], rgba[cy - 14 : cy + 15, cx + 14, :3]])
        assert ring.mean() < 40, (t.get_text(), ring.mean())


def test_mip_projects_along_world_axes():
    aff = np.array([[-0.5, 0, 0, 10.0], [0, -0.5, 0, 8.0], [0, 0, 0.5, -4.0], [0, 0, 0, 1]])[:, [2, 1, 0, 3]]
    data = np.zeros((20, 30, 40), np.float32)
    data[12, 7, 21] = 9.0
    vol = Volume(data, aff, "PT", "Bq/mL", name="PET")
    spot = vol.index_to_world([[12, 7, 21]])[0]
    res = F.mip(vol, plane="coronal", value_range=(0, 9))
    img = res.axes["image"].images[0].get_array()
    r, c = np.unravel_index(np.argmax(img), img.shape)
    h0, h1, v0, v1 = res.info["extent_mm"]
    x = h0 + (c + 0.5) * (h1 - h0) / img.shape[1]
    z = v1 - (r + 0.5) * (v1 - v0) / img.shape[0]
    assert abs(x - spot[0]) <= 0.5 and abs(z - spot[2]) <= 0.5
    assert res.info["colorbar_range"] == (0.0, 9.0)


def test_montage_shares_one_colour_range_and_bars_and_time_courses_draw():
    mri = _black_mri()
    panels = []
    for day, scale in ((1, 1.0), (3, 2.0), (7, 4.0)):
        pet = mri.replace(data=np.full(mri.shape, scale, np.float32), modality="PT", unit="SUVbw", name="PET")
        panels.append({"anatomy": mri, "overlay": pet, "position_mm": 0.0, "title": f"day {day}"})
    res = F.montage(panels)
    assert res.info["colorbar_range"][0] <= 1.0 and res.info["colorbar_range"][1] >= 4.0
    assert {p["colorbar_range"] for p in res.info["panels"]} == {res.info["colorbar_range"]}
    table = pd.DataFrame(
        {"organ": ["liver", "tumour"] * 2, "day": [1, 1, 3, 3], "suv": [3.0, 1.0, 2.5, 1.5], "sd": [0.3, 0.2, 0.2, 0.1]}
    )
    bars = F.organ_bars(table, "suv", error="sd", group="day", unit="SUVbw")
    ax = bars.axes["bars"]
    assert len(ax.containers) == 4  # two groups: bars + error bars each
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["day 1", "day 3"]
    tc = table.rename(columns={"organ": "site"})
    course = F.time_course(tc, "suv", error="sd", flags={"liver": True})
    labels = [t.get_text() for t in course.figure.legends[0].get_texts()]  # below the plot, outside the axes
    assert labels == ["liver (macrophage-held?)", "tumour"]
    with pytest.raises(InputError, match="no column"):
        F.organ_bars(table, "missing")


def test_same_inputs_give_identical_files(tmp_path):
    mri = _black_mri()
    mri = mri.replace(data=np.random.default_rng(1).random(mri.shape).astype(np.float32))
    pet = mri.replace(
        data=np.random.default_rng(2).random(mri.shape).astype(np.float32), modality="PT", unit="SUVbw", name="PET"
    )
    lab = mri.replace(data=(mri.numpy() > 0.97).astype(np.uint8), modality="SEG", unit="label", name="roi")
    digests = []
    for i in range(2):
        res = F.fused_slice(mri, pet, [lab], overlay_range=(0.5, 1.0), title="twice")
        paths = F.save_figure(res, tmp_path / f"fig{i}", formats=("png", "svg"), dpi=100)
        digests.append([hashlib.sha256(p.read_bytes()).hexdigest() for p in paths])
        prov = (tmp_path / f"fig{i}.png.provenance.json").read_text()
        assert '"sha256_data"' in prov and '"dpi": 100' in prov and '"colorbar_range"' in prov
    assert digests[0] == digests[1]


def test_bad_input(tmp_path):
    mri = _black_mri()
    no_unit = mri.replace(modality="PT", unit="", name="PET")
    with pytest.raises(InputError, match="has no unit"):
        F.fused_slice(mri, no_unit)
    with pytest.warns(ImmunotrackWarning, match="arbitrary units"):
        res = F.fused_slice(mri, mri.replace(modality="F19", name="19F"))
    assert res.warnings
    with pytest.raises(InputError, match="plane"):
        F.fused_slice(mri, None, plane="oblique")
    with pytest.raises(InputError, match="outside the volume"):
        F.fused_slice(mri, None, position_mm=500.0)
    with pytest.raises(InputError, match="does not fit"):
        F.fused_slice(mri, None, scale_bar_mm=100.0)
    with pytest.raises(InputError, match="value range"):
        F.fused_slice(mri, mri.replace(unit="Bq/mL"), overlay_range=(5, 1))
    with pytest.raises(InputError, match="nothing to draw"):
        F.fused_slice(None, None)
    res = F.fused_slice(mri, None)
    out = tmp_path / "f.png"
    F.save_figure(res, out)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        F.save_figure(F.fused_slice(mri, None, title="other"), out)
    assert out.read_bytes() == before
    with pytest.raises(InputError, match="dpi"):
        F.save_figure(res, tmp_path / "g.png", dpi=5)
    with pytest.raises(InputError, match=".png, .svg or .pdf"):
        F.save_figure(res, tmp_path / "g.jpg")
