"""Figure style fixes of issue 17 item 8, checked on pixels and numbers.

- one colour and marker per site in every figure, whatever other sites a figure shows;
- colour bars on robust percentiles of the values shown (a hot reference tube does not flatten the spots);
- the time course's y-axis label and legend lie inside the canvas (nothing cut).
"""

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from napari_immunotrack import figures as F
from napari_immunotrack.volume import Volume


def _course(sites, readout):
    rows = []
    for i, s in enumerate(sites):
        for d in (1, 3, 7):
            rows.append({"site": s, "day": d, "cells": 1e5 * (i + 1) / d, "readout": readout})
    return pd.DataFrame(rows)


def _line_styles(result):
    """{legend label: (colour, marker)} of the drawn data lines (one error-bar container per site)."""
    out = {}
    for container in result.axes["plot"].containers:
        line = container.lines[0]
        out[container.get_label()] = (to_hex(line.get_color()), line.get_marker())
    return out


def test_a_site_keeps_its_colour_and_marker_across_figures():
    # 19F sees the lymph nodes and the tumour; PET sees the liver first (as the report's two time courses)
    f19 = F.time_course(_course(["ln_inguinal_right", "tumour", "ln_iliac"], "19F"), "cells")
    pet = F.time_course(_course(["liver", "spleen", "tumour", "ln_iliac", "ln_inguinal_right"], "PET"), "cells")
    a, b = _line_styles(f19), _line_styles(pet)
    for site in ("tumour", "ln iliac", "ln inguinal right"):
        assert a[site] == b[site], (site, a[site], b[site])
    # and within one figure, every site differs in colour or marker
    assert len(set(b.values())) == len(b)
    # a second call with the sites in another order changes nothing
    again = _line_styles(F.time_course(_course(["tumour", "ln_iliac", "ln_inguinal_right"], "19F"), "cells"))
    assert again == a
    # a name the figures have never seen keeps the style it first got
    first = F.site_style("cluster 17")
    assert F.site_style("cluster 17") == first


def test_site_styles_are_distinct_for_many_sites():
    styles = [(F.site_style(s)["color"], F.site_style(s)["marker"]) for s in F.KNOWN_SITES]
    assert len(set(styles)) == len(styles)


def test_robust_colour_bar_on_a_19f_montage_with_a_hot_reference_tube():
    """19F spots of 5-50 mM and an 800 mM reference tube: the auto range is set by the spots, not the tube."""
    shape = (20, 60, 60)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    rng = np.random.default_rng(3)
    panels = []
    for day, spot in ((1, 50.0), (3, 20.0), (7, 5.0)):
        data = np.zeros(shape, np.float32)
        data[10, 10:40, 10:40] = rng.uniform(0.5, 1.0, (30, 30)) * spot  # labelled cells
        data[10, 50:52, 50:52] = 800.0  # 4 voxels of reference tube
        f19 = Volume(data, aff, "F19", "mM", name="19F")
        panels.append({"anatomy": None, "overlay": f19, "position_mm": 5.0, "title": f"day {day}"})
    res = F.montage(panels)
    lo, hi = res.info["colorbar_range"]
    assert hi < 60.0 and lo < 5.0, (lo, hi)  # the 800 mM tube (0.15 % of the shown voxels) is beyond the 99.5th
    values = np.concatenate([p["overlay"].numpy()[10].ravel() for p in panels])
    nz = values[values != 0]
    # (the display grid samples between voxel centres: linear interpolation moves the percentiles a little)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(nz, [1.0, 99.5])), rel=0.03)
    # the old behaviour (extremes of each panel) would have spread 0-800 over the bar
    assert hi < 0.1 * 800


def test_robust_range_of_a_fused_slice_leaves_out_zeros():
    shape = (10, 40, 40)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    data = np.zeros(shape, np.float32)
    data[5, 5:15, 5:15] = np.linspace(10, 20, 100).reshape(10, 10)
    pet = Volume(data, aff, "PT", "kBq/mL", name="PET")
    res = F.fused_slice(None, pet, position_mm=2.5)
    lo, _hi = res.info["colorbar_range"]
    nz = data[5][data[5] != 0]
    assert lo == pytest.approx(np.percentile(nz, 1.0), rel=0.02) and lo > 9.0  # zeros would put lo at 0


@pytest.mark.parametrize(
    "unit, scale", [("apparent cells (label / label per cell at injection)", 1e7), ("void volume (mm³)", 1.0)]
)
def test_time_course_labels_are_inside_the_canvas(unit, scale):
    table = _course(["tumour", "ln_inguinal_right", "ln_inguinal_left", "liver", "spleen", "ln_iliac"], "PET")
    table["cells"] *= scale
    table["model"] = table["cells"] * 0.8
    res = F.time_course(table, "cells", model="model", unit=unit, title="PET: label per site over time")
    rgba = F.render_png(res, dpi=150)
    height, width = rgba.shape[:2]
    renderer = res.figure.canvas.get_renderer()
    ax = res.axes["plot"]
    lo, hi = sorted(ax.get_ylim())
    ticks = [t for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]  # the drawn ones
    for artist in [ax.yaxis.label, ax.xaxis.label, ax.title, res.figure.legends[0]] + ticks:
        if hasattr(artist, "get_text") and not artist.get_text():
            continue
        bb = artist.get_window_extent(renderer)
        assert bb.x0 >= 0 and bb.y0 >= 0 and bb.x1 <= width and bb.y1 <= height, (artist, bb, width, height)
    # the y label is drawn: dark pixels in the left margin left of the axes
    ax_bb = ax.get_window_extent(renderer)
    margin = rgba[:, : int(ax_bb.x0), :3]
    assert (margin.min(axis=2) < 100).sum() > 50
    # the legend names "model" for the dashed lines
    assert "model" in [t.get_text() for t in res.figure.legends[0].get_texts()]


def test_bar_chart_organ_names_are_inside_the_canvas():
    table = pd.DataFrame({"organ": ["ln_inguinal_right", "kidney_left", "tumour"], "suv": [1.0, 2.0, 3.0]})
    res = F.organ_bars(table, "suv", unit="SUVbw (mean ± SD)")
    rgba = F.render_png(res, dpi=120)
    renderer = res.figure.canvas.get_renderer()
    for t in res.axes["bars"].get_xticklabels() + [res.axes["bars"].yaxis.label]:
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= 0 and bb.y0 >= 0 and bb.x1 <= rgba.shape[1] and bb.y1 <= rgba.shape[0]


def test_montage_panels_share_one_marker_corner():
    """Signal in a different corner of each panel: every panel still shows the marker in the same corner,
    one that is empty in most of them, and each panel has exactly one marker (two letters)."""
    shape = (10, 40, 40)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    panels = []
    for rows, cols in ((slice(0, 10), slice(0, 10)), (slice(0, 10), slice(0, 10)), (slice(0, 10), slice(30, 40))):
        data = np.zeros(shape, np.float32)
        data[5] = 10.0
        data[5, rows, cols] = 0.0  # an empty corner, not the same in every panel
        mri = Volume(data, aff, "MR", "a.u.")
        panels.append({"anatomy": mri, "overlay": None, "position_mm": 2.5})
    res = F.montage(panels)
    corners = [p["letter_corner"] for p in res.info["panels"]]
    assert len(set(corners)) == 1
    for i in range(3):
        letters = [t.get_text() for t in res.axes[f"panel_{i}"].texts if len(t.get_text()) == 1]
        assert len(letters) == 2


def test_montage_colour_range_is_set_by_the_spots_shown_not_the_hidden_noise():
    """A mostly empty 19F image (Rician noise everywhere, a few spots over a display threshold): the colour bar
    spans the spots' values, so a 40 mM and a 300 mM spot get different colours (the report's 19F montage
    used to run 4-20 mM with a 24 mM threshold: every spot drawn saturated)."""
    from matplotlib.colors import to_rgba

    shape = (80, 80, 12)  # axial slices across the last axis (world z)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    rng = np.random.default_rng(5)
    panels = []
    for day in (1, 3):
        noise = np.abs(rng.normal(0, 6, shape) + 1j * rng.normal(0, 6, shape)).astype(np.float32)
        data = noise.copy()
        data[20:26, 20:26, 4:9] = 40.0  # a faint spot
        data[50:56, 50:56, 4:9] = 300.0  # a bright spot
        panels.append(
            {
                "anatomy": None,
                "overlay": Volume(data, aff, "F19", "mM", name="19F"),
                "position_mm": 3.0,
                "overlay_threshold": 30.0,
                "title": f"day {day}",
            }
        )
    res = F.montage(panels)
    lo, hi = res.info["colorbar_range"]
    assert 30.0 <= lo <= 45.0 and 250.0 <= hi <= 300.0, (lo, hi)
    # pixels: the two spots are drawn in clearly different colours of the overlay's colour map
    ax = res.axes["panel_0"]
    overlay_image = ax.get_images()[-1]
    cmap, norm = overlay_image.get_cmap(), overlay_image.norm
    faint, bright = np.array(to_rgba(cmap(norm(40.0)))), np.array(to_rgba(cmap(norm(300.0))))
    assert np.abs(faint - bright)[:3].max() > 0.4
    rgba = F.render_png(res, dpi=80).astype(float) / 255
    present = [np.min(np.abs(rgba[..., :3] - c[:3]).sum(axis=-1)) for c in (faint, bright)]
    assert max(present) < 0.15, present  # both colours are on the canvas (alpha-blended on black: close)


def test_organ_outlines_take_each_sites_own_colour():
    """Named organ labels are outlined in their site's colour (the one of the time courses), whatever other
    labels the slice holds; unnamed labels keep the per-value palette."""
    from matplotlib.colors import to_hex as hexed

    shape = (40, 40, 10)
    aff = np.diag([0.5, 0.5, 0.5, 1.0])
    mri = Volume(np.full(shape, 100.0, np.float32), aff, "MR", "a.u.")
    labels = np.zeros(shape, np.int32)
    labels[5:12, 5:12, :] = 8  # spleen
    labels[20:30, 20:30, :] = 7  # liver
    lab = Volume(labels, aff, "SEG", "label", name="organs", metadata={"label_names": {7: "liver", 8: "spleen"}})
    res = F.fused_slice(mri, None, [lab], position_mm=2.5)
    ax = res.axes["image"] if "image" in res.axes else next(iter(res.axes.values()))
    drawn = res.info["outlines"][0]["labels"]
    assert drawn == [7, 8]
    contour_colours = [hexed(c.get_edgecolor()[0]) for c in ax.collections if len(c.get_edgecolor())]
    expected = [F.site_style(n)["color"].lower() for n in ("liver", "spleen")]
    assert expected != [c.lower() for c in F.OKABE_ITO[:2]]  # not what the per-value palette gives
    assert contour_colours[-2:] == expected


def test_day_bars_do_not_borrow_a_sites_colour():
    table = pd.DataFrame(
        [{"organ": o, "day": d, "suv": 1.0 + d} for o in ("tumour", "liver", "spleen") for d in (1, 3, 7)]
    )
    res = F.organ_bars(table, "suv", group="day", unit="SUVbw")
    faces = {to_hex(p.get_facecolor()) for p in res.axes["bars"].patches}
    assert len(faces) == 3  # one shade per day
    assert not faces & {c.lower() for c in F.OKABE_ITO}
    # light to dark with time
    shades = [
        np.mean(np.array(to_rgba_list(to_hex(res.axes["bars"].patches[i * 3].get_facecolor())))) for i in range(3)
    ]
    assert shades[0] > shades[1] > shades[2]


def to_rgba_list(hex_colour):
    from matplotlib.colors import to_rgb

    return list(to_rgb(hex_colour))
