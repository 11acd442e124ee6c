"""Tests of course_utils.plot (Agg backend, set in conftest)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import ListedColormap, rgb_to_hsv  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from course_utils.plot import flow_to_rgb, label_cmap, overlay, show_grid  # noqa: E402


def _labels():
    y = np.zeros((40, 50), np.int32)
    y[5:15, 5:20], y[5:15, 20:30], y[25:35, 10:40] = 3, 7, 12
    return y


def test_label_cmap_black_background_bright_colours():
    cmap = label_cmap(64, seed=1)
    assert isinstance(cmap, ListedColormap) and cmap.N == 64
    colours = np.asarray(cmap.colors)
    np.testing.assert_array_equal(colours[0], [0, 0, 0, 1])
    hsv = rgb_to_hsv(colours[1:, :3])
    assert hsv[:, 2].min() >= 0.6 - 1e-9 and hsv[:, 1].min() >= 0.6 - 1e-9
    assert len(np.unique(colours[1:, :3], axis=0)) == 63
    np.testing.assert_array_equal(label_cmap(64, seed=1).colors, colours)
    assert not np.array_equal(label_cmap(64, seed=2).colors, colours)
    with pytest.raises(ValueError, match="n_labels"):
        label_cmap(1)


def test_overlay_draws_colours_and_contours():
    image = np.linspace(0, 1, 40 * 50, dtype=np.float32).reshape(40, 50)
    labels = _labels()
    ax = overlay(image, labels, title="nuclei", alpha=0.5)
    assert ax.get_title() == "nuclei" and not ax.axison
    grey, colour = ax.get_images()
    np.testing.assert_array_equal(grey.get_array(), image)
    rgba = np.asarray(colour.get_array())
    edge = find_boundaries(labels, mode="inner") & (labels > 0)
    np.testing.assert_array_equal(rgba[..., 3][labels == 0], 0.0)
    np.testing.assert_array_equal(rgba[..., 3][edge], 1.0)
    np.testing.assert_array_equal(rgba[..., 3][(labels > 0) & ~edge], 0.5)
    # Touching objects 3 and 7 get different colours, and each object a single colour.
    c3, c7 = rgba[10, 10, :3], rgba[10, 25, :3]
    assert not np.allclose(c3, c7)
    assert np.all(rgba[labels == 3, :3] == c3)


def test_overlay_on_given_axes_without_contours():
    fig, axes = plt.subplots(1, 2)
    ax = overlay(np.zeros((40, 50)), _labels(), axes[1], contours=False, alpha=0.2)
    assert ax is axes[1]
    alpha = np.asarray(ax.get_images()[1].get_array())[..., 3]
    assert set(np.unique(alpha)) == {0.0, 0.2}


@pytest.mark.parametrize(
    ("image", "labels", "error"),
    [
        (np.zeros((40, 50)), np.zeros((40, 51), np.int32), ValueError),
        (np.zeros((40, 50)), np.zeros((40, 50), np.float32), TypeError),
        (np.zeros((40, 50)), -np.ones((40, 50), np.int32), ValueError),
        (np.zeros((3, 40, 50)), np.zeros((40, 50), np.int32), ValueError),
    ],
)
def test_overlay_bad_input(image, labels, error):
    with pytest.raises(error):
        overlay(image, labels)


def test_show_grid_layout_and_label_display():
    images = [np.random.default_rng(0).random((40, 50)), _labels(), np.zeros((20, 20, 3))]
    fig = show_grid(images, ["raw", "labels", "rgb"], ncols=2, suptitle="grid")
    axes = fig.axes
    assert len(axes) == 4 and fig.get_suptitle() == "grid"
    assert [ax.get_title() for ax in axes[:3]] == ["raw", "labels", "rgb"]
    assert not axes[3].get_images()  # the spare panel is empty
    raw, lab = axes[0].get_images()[0], axes[1].get_images()[0]
    assert raw.get_cmap().name == "gray"
    assert lab.get_interpolation() == "nearest"
    shown = np.asarray(lab.get_array())
    assert shown.shape == (40, 50, 3)
    np.testing.assert_array_equal(shown[0, 0], [0, 0, 0])
    assert shown[10, 10].max() >= 0.6


def test_show_grid_bad_input():
    with pytest.raises(ValueError, match="empty"):
        show_grid([])
    with pytest.raises(ValueError, match="titles"):
        show_grid([np.zeros((4, 4))], ["a", "b"])
    with pytest.raises(ValueError, match="images\\[0\\]"):
        show_grid([np.zeros((2, 4, 5))])
    assert not plt.get_fignums()  # nothing half-drawn left behind


def test_flow_to_rgb_hue_follows_direction():
    angles = np.array([0.0, 0.5, 1.0, 1.5]) * np.pi  # right, down, left, up (image axes)
    dy, dx = np.sin(angles)[None, :], np.cos(angles)[None, :]
    flows = np.stack([dy, dx]) * np.array([1.0, 0.5, 1.0, 0.25])
    rgb = flow_to_rgb(flows)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.float32
    hsv = rgb_to_hsv(rgb[0])
    np.testing.assert_allclose(hsv[:, 0], [0.0, 0.25, 0.5, 0.75], atol=1e-6)
    np.testing.assert_allclose(hsv[:, 2], [1.0, 0.5, 1.0, 0.25], atol=1e-6)
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0], atol=1e-6)  # right = red


def test_flow_to_rgb_zero_field_and_fixed_scale():
    np.testing.assert_array_equal(flow_to_rgb(np.zeros((2, 3, 4))), 0.0)
    flows = np.zeros((2, 1, 2))
    flows[1] = [0.5, 4.0]
    value = rgb_to_hsv(flow_to_rgb(flows, max_magnitude=1.0)[0])[:, 2]
    np.testing.assert_allclose(value, [0.5, 1.0], atol=1e-6)  # clipped at 1
    with pytest.raises(ValueError, match="shape"):
        flow_to_rgb(np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="max_magnitude"):
        flow_to_rgb(flows, max_magnitude=0)


def test_flow_to_rgb_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    flows = np.random.default_rng(0).normal(size=(2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(flow_to_rgb(torch.from_numpy(flows)), flow_to_rgb(flows))


def test_interactive_draws_once_with_defaults_without_a_frontend(monkeypatch):
    from ipywidgets import IntSlider

    from course_utils import plot

    monkeypatch.setenv("COURSE_STATIC_FIGURES", "1")
    assert not plot.widgets_available()
    calls = []
    result = plot.interactive(
        lambda t, method, k: calls.append((t, method, k)) or "drawn",
        t=IntSlider(7, min=0, max=10),
        method=["shape", "intensity"],
        k=3,
    )
    assert result == "drawn" and calls == [(7, "shape", 3)]


def test_widgets_unavailable_outside_a_kernel(monkeypatch):
    from course_utils import plot

    monkeypatch.delenv("COURSE_STATIC_FIGURES", raising=False)
    assert not plot.widgets_available()  # pytest is no Jupyter kernel


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_unet_diagram_shows_the_paper_sizes():
    from course_utils.diagrams import unet_diagram
    from course_utils.models import unet_output_size

    ax = unet_diagram()
    texts = _texts(ax)
    assert ax.get_title().endswith("572 x 572 in -> 388 x 388 out")
    boxes = [t for t in ax.texts if t.get_bbox_patch() is not None]
    assert len(boxes) == 2 * 4 + 1 + 1  # encoder, bottleneck, decoder levels and the 1x1 head
    assert "1 → 64 ch\n572² → 568²" in texts and "512 → 1024 ch\n32² → 28²" in texts
    assert "128 → 64 ch\n392² → 388²" in texts and "copy, crop 568² → 392²" in texts
    assert f"1x1 conv\n2 x {unet_output_size(572, 4)}²" in texts
    assert sum("max pool" in t for t in texts) == 4 and sum("up-conv" in t for t in texts) == 4


def test_unet_diagram_other_depth_and_bad_size():
    from course_utils.diagrams import unet_diagram

    fig, ax = plt.subplots()
    assert unet_diagram(3, 188, base_channels=8, n_classes=3, ax=ax) is ax
    texts = _texts(ax)
    assert "1 → 8 ch\n188² → 184²" in texts and "1x1 conv\n3 x 100²" in texts
    assert "32 → 64 ch\n20² → 16²" in texts  # the bottleneck of depth 3
    with pytest.raises(ValueError):
        unet_diagram(4, 571)


def test_overlap_tile_diagram_draws_every_output_tile_and_the_margin():
    from matplotlib.patches import Rectangle

    from course_utils.diagrams import overlap_tile_diagram
    from course_utils.predict import tile_grid

    image = np.random.default_rng(0).random((120, 150)).astype(np.float32)
    tiles = tile_grid(image.shape, 92, 60)  # margin 16
    fig = overlap_tile_diagram(image, tiles)
    left, right = fig.axes
    cyan = [
        p
        for p in left.patches
        if isinstance(p, Rectangle) and p.get_edgecolor()[2] > 0.7 and p.get_edgecolor()[0] < 0.2
    ]
    assert len(cyan) == len(tiles) == 6
    shown = left.get_images()[0].get_array()
    y0, x0, y1, x1 = tiles[0]["input"]
    assert (y0, x0) == (-16, -16) and "margin 16 px" in _texts(right)
    top = -min(t["input"][0] for t in tiles)
    bottom = max(t["input"][2] for t in tiles) - 120
    np.testing.assert_allclose(shown[top : top + 120, 16 : 16 + 150], image)
    assert shown.shape[0] == top + 120 + bottom
    with pytest.raises(ValueError):
        overlap_tile_diagram(image, [])
    with pytest.raises(ValueError):
        overlap_tile_diagram(np.zeros((2, 8, 8)), tiles)
