"""Tests of course_utils.figures.sparse (notebook 09): each figure has the panels, titles and
labels it claims, draws the data it is given, and refuses bad input with a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.data import synthetic_nuclei
from course_utils.figures import sparse as fs
from course_utils.plot import flow_to_rgb
from course_utils.sparse import sparsify
from course_utils.targets import masks_to_flows


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((64, 72), seed=3)
    return np.clip(image, 0, 1).astype(np.float32), labels


def _pixels(ax):
    return ax.get_xlabel(), ax.get_ylabel()


def test_show_nuclei_counts_draws_one_bar_per_image():
    fig = fs.show_nuclei_counts(np.array([3, 7, 5]))
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == [3, 7, 5]
    assert ax.get_title() == "Nuclei to outline in each training image"
    assert _pixels(ax) == ("training image", "number of nuclei")
    with pytest.raises(ValueError, match="non-empty"):
        fs.show_nuclei_counts(np.zeros((2, 2)))


def test_show_sparse_row_colours_the_three_kinds_of_pixel(nuclei):
    image, labels = nuclei
    sparse = sparsify(labels, k=2, background="band", band=3, seed=0)
    fig = fs.show_sparse_row({"one": (image, sparse), "two": (image, labels)}, legend_on=1)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["one", "two"]
    assert _pixels(fig.axes[0]) == ("x (pixels)", "y (pixels)")
    rgb = np.asarray(fig.axes[0].images[0].get_array())
    grey = np.repeat(image[..., None], 3, axis=2) * 0.8
    unknown, nucleus = sparse < 0, sparse > 0
    np.testing.assert_allclose(rgb[unknown], grey[unknown], atol=1e-6)  # unknown left grey
    assert np.all(rgb[nucleus][:, 0] > rgb[nucleus][:, 2])  # nuclei orange
    assert np.all(rgb[sparse == 0][:, 2] > rgb[sparse == 0][:, 0])  # background blue
    assert fig.axes[0].get_legend() is None and fig.axes[1].get_legend() is not None
    with pytest.raises(ValueError, match="empty"):
        fs.show_sparse_row({})
    with pytest.raises(ValueError, match="legend_on"):
        fs.show_sparse_row({"a": (image, sparse)}, legend_on=1)
    with pytest.raises(ValueError, match="integer labels of its shape"):
        fs.show_sparse_row({"a": (image, sparse[:-1])})
    with pytest.raises(ValueError, match="integer labels"):
        fs.show_sparse_row({"a": (image, sparse.astype(float))})


def test_show_backgrounds_and_selections_title_what_was_kept(nuclei):
    image, labels = nuclei
    examples = {
        bg: sparsify(labels, k=2, background=bg, band=3, seed=0) for bg in ("band", "none", "all")
    }
    fig = fs.show_backgrounds(image, labels, examples, 0.05)
    assert len(fig.axes) == 3
    share = np.mean(examples["all"] >= 0)
    assert fig.axes[2].get_title() == (
        f'5 % of the nuclei (2 of {labels.max()}), background="all"\n'
        f"{share:.1%} of the pixels annotated"
    )
    selected = {"dim": sparsify(labels, k=1, select="dim", image=image, seed=0)}
    fig = fs.show_selections(image, labels, selected)
    (kept,) = np.unique(selected["dim"][selected["dim"] > 0])
    mean = image[labels == kept].mean()
    assert fig.axes[0].get_title() == f'select="dim": mean intensity {mean:.2f}'
    with pytest.raises(ValueError, match="show_selections"):
        fs.show_selections(image[:, :-1], labels, selected)


def test_show_trusted_flows_shows_the_window_around_a_contact(nuclei):
    image, labels = synthetic_nuclei((96, 96), seed=3)  # five nuclei, some touching
    sparse = sparsify(labels, k=4, background="band", band=3, seed=0)
    dense_flows = masks_to_flows(labels, niter=200)
    sparse_flows = masks_to_flows(np.maximum(sparse, 0), niter=200)
    unknown = np.pad(sparse < 0, 1)
    near = unknown[:-2, 1:-1] | unknown[2:, 1:-1] | unknown[1:-1, :-2] | unknown[1:-1, 2:]
    trusted = (sparse == 0) | ((sparse > 0) & ~near)
    fig = fs.show_trusted_flows(image, sparse, dense_flows, sparse_flows, trusted, half=10)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "flows of the dense labels" and titles[0] == "sparse labels (window)"
    assert all(_pixels(ax) == ("x (pixels, window)", "y (pixels, window)") for ax in fig.axes)
    cy, cx = np.argwhere(
        (sparse > 0) & ~trusted & (np.abs(sparse_flows - dense_flows).max(0) > 0.1)
    )[0]
    rows, cols = slice(max(cy - 10, 0), cy + 10), slice(max(cx - 10, 0), cx + 10)
    drawn = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(drawn, flow_to_rgb(dense_flows[:, rows, cols]))
    gap = np.abs(sparse_flows - dense_flows).max(axis=0)[rows, cols]
    np.testing.assert_allclose(np.asarray(fig.axes[3].images[0].get_array()), gap)
    with pytest.raises(ValueError, match="flows"):
        fs.show_trusted_flows(image, sparse, dense_flows[:1], sparse_flows, trusted)
    with pytest.raises(ValueError, match="nothing to show"):
        fs.show_trusted_flows(image, labels, dense_flows, dense_flows, labels >= 0)


def test_show_background_curves_draws_both_backgrounds_per_method():
    fractions = [0.01, 0.05, 1.0]
    curves = {
        "Cellpose-style": {
            "band": (fractions, [0.5, 0.7, 0.9], [0.1, 0.1, 0.05]),
            "none": (fractions, [0.0, 0.1, 0.2], [0.9, 0.9, 0.8]),
        },
        "StarDist-style": {"band": ([0.05], [0.6], [0.1]), "none": ([0.05], [0.2], [0.5])},
    }
    fig = fs.show_background_curves(curves, {"Cellpose-style": 0.9}, n_test=2)
    assert len(fig.axes) == 4
    top, bottom = fig.axes[0], fig.axes[2]
    assert top.get_title() == "Cellpose-style: 2 BBBC039 test images"
    assert top.get_ylabel() == "test AP@0.5"
    assert bottom.get_xlabel().startswith("annotated nuclei")
    np.testing.assert_allclose(top.lines[0].get_xdata(), [1, 5, 100])
    np.testing.assert_allclose(top.lines[0].get_ydata(), [0.5, 0.7, 0.9])
    np.testing.assert_allclose(bottom.lines[1].get_ydata(), [0.9, 0.9, 0.8])
    dashed = [line for line in top.lines if line.get_linestyle() == ":"]
    assert len(dashed) == 1 and dashed[0].get_ydata()[0] == 0.9  # the dense run
    assert not [line for line in fig.axes[1].lines if line.get_linestyle() == ":"]
    with pytest.raises(ValueError, match="empty"):
        fs.show_background_curves({}, {}, 1)
    with pytest.raises(ValueError, match="'all'"):
        fs.show_background_curves({"x": {"all": ([1], [1], [1])}}, {}, 1)
    with pytest.raises(ValueError, match="shapes"):
        fs.show_background_curves({"x": {"band": ([1, 2], [1], [1])}}, {}, 1)


def test_show_predictions_titles_each_with_its_count_and_score(nuclei):
    image, labels = nuclei
    half = np.where(labels % 2 == 1, labels, 0)
    fig = fs.show_predictions(image, labels, {"all": labels, "half": half}, "test image")
    assert len(fig.axes) == 2 and fig.get_suptitle() == "test image"
    n = labels.max()
    assert fig.axes[0].get_title() == f"all: {n} masks ({n} nuclei), AP@0.5 1.00"
    kept = len(np.unique(half)) - 1
    assert fig.axes[1].get_title().endswith(f"AP@0.5 {kept / n:.2f}")
    assert _pixels(fig.axes[1]) == ("x (pixels)", "y (pixels)")
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), image)
    with pytest.raises(ValueError, match="one shape"):
        fs.show_predictions(image, labels, {"cut": labels[:-1]}, "x")
    with pytest.raises(ValueError, match="one shape"):
        fs.show_predictions(image, labels, {}, "x")


def test_show_selection_bars_groups_bars_by_rule():
    ap = {0.05: {"random": 0.8, "dim": 0.1}, 0.25: {"random": 0.9, "dim": 0.3}}
    fig = fs.show_selection_bars(ap, 0.95, "Cellpose-style")
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == [0.8, 0.1, 0.9, 0.3]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["random", "dim"]
    assert ax.get_title().startswith("Cellpose-style: the same number")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("which nuclei were annotated", "test AP@0.5")
    assert ax.lines[0].get_ydata()[0] == 0.95
    with pytest.raises(ValueError, match="empty"):
        fs.show_selection_bars({}, 0.9, "x")
    with pytest.raises(ValueError, match="same rules"):
        fs.show_selection_bars({0.05: {"random": 0.8}, 0.25: {"dim": 0.3}}, 0.9, "x")
