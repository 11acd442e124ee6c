"""The size model (one pass for the diameter), the trusted range where segment does not
rescale, the check of an estimate against the nuclei found, and the zoo's names."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import course_utils as cu
from course_utils import methods, scale, segmentation, sizing
from course_utils.data import synthetic_nuclei

SMALL = {
    "cellpose": {"base_channels": 4, "depth": 2},
    "stardist": {"base_channels": 4, "depth": 1},
    "unet_3class": {"base_channels": 4, "depth": 2},
    "unet_weighted": {"base_channels": 4, "depth": 1},
}


def _tiny(method: str, **meta) -> nn.Module:
    torch.manual_seed(0)
    model = methods.get(method).build(**SMALL[method]).eval()
    model.meta = {"method": method, "train_diameter_px": 20.0, **meta}
    return model


def _constant(diameter: float, features: int) -> dict:
    """A size model that always answers ``diameter``: no weight on any feature."""
    zeros = [0.0] * features
    return {
        "window": 64,
        "mean": zeros,
        "scale": [1.0] * features,
        "coef": zeros,
        "intercept": math.log(diameter),
    }


@pytest.mark.parametrize("method", list(SMALL))
def test_style_of_every_course_network(method):
    net = _tiny(method)
    image = synthetic_nuclei((70, 90), seed=1)[0]
    style = sizing.style_features(net, image, window=64)
    width = sizing.style_layer(net).__class__  # a module of the network
    assert isinstance(sizing.style_layer(net), nn.Module) and width is not None
    assert style.ndim == 1 and style.dtype == np.float64 and np.isfinite(style).all()
    np.testing.assert_allclose(np.linalg.norm(style[:-1]), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(style, sizing.style_features(net, image, window=64))
    small = sizing.style_features(net, image[:20, :30], window=64)  # smaller than the window
    assert small.shape == style.shape
    with pytest.raises(ValueError, match="bottleneck or encoder"):
        sizing.style_layer(nn.Conv2d(1, 1, 3))


def test_a_fitted_size_model_reads_the_scale():
    """Even a random network's features say how large the objects are: fitted on synthetic
    nuclei at many zooms, its estimates on unseen images are within 25% (median)."""
    net = _tiny("cellpose")
    pairs = [synthetic_nuclei((128, 128), seed=s) for s in range(16)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    fitted = sizing.fit_size_model(
        net, images[:12], labels[:12], val_images=images[12:], val_labels=labels[12:], window=64
    )
    assert fitted["samples"] == 64 and fitted["alpha"] in sizing.ALPHAS
    errors = []
    for seed, zoom in zip(range(40, 52), np.geomspace(0.5, 2.0, 12)):
        image, lab = synthetic_nuclei((160, 160), seed=seed)
        x = scale.rescale_image(image, zoom)
        true = scale.median_diameter(lab) * zoom
        errors.append(abs(math.log(sizing.predict_diameter(net, x, fitted) / true)))
    assert np.median(errors) < math.log(1.25), np.round(errors, 3)
    with pytest.raises(ValueError, match="too few"):
        sizing.fit_size_model(
            net,
            images[:1],
            labels[:1],
            val_images=images[:1],
            val_labels=labels[:1],
            per_image=1,
            window=64,
        )


def test_predict_refuses_a_size_model_of_another_network():
    net = _tiny("cellpose")
    image = synthetic_nuclei((64, 64), seed=1)[0]
    with pytest.raises(ValueError, match="not a size model"):
        sizing.predict_diameter(net, image, {"window": 64})
    with pytest.raises(ValueError, match="another network"):
        sizing.predict_diameter(net, image, _constant(20.0, 3))
    width = sizing.style_features(net, image, 64).size
    assert sizing.predict_diameter(net, image, _constant(17.0, width)) == pytest.approx(17.0)


def _spy_scales(monkeypatch) -> list[float]:
    """The factors segment rescales by."""
    seen = []
    real = segmentation.rescale_image

    def spy(image, factor=1.0, **kw):
        seen.append(factor)
        return real(image, factor, **kw)

    monkeypatch.setattr(segmentation, "rescale_image", spy)
    return seen


def test_segment_inside_the_trusted_range_does_not_rescale(monkeypatch):
    net = _tiny("cellpose", diameter_range_px=[10.0, 40.0])
    image = synthetic_nuclei((96, 96), seed=5)[0]
    seen = _spy_scales(monkeypatch)
    labels = cu.segment(image, "cellpose", diameter=14.0, model=net)
    assert seen == []  # 14 px lies in 10-40 px: the image as it is
    direct = methods.get("cellpose").segment(net, cu.data.normalize_percentile(image))
    np.testing.assert_array_equal(labels, direct)
    cu.segment(image, "cellpose", diameter=60.0, model=net)
    assert seen == [pytest.approx(20.0 / 60.0)]  # outside: to the training diameter
    net.meta["diameter_range_px"] = [30, 10]
    with pytest.raises(ValueError, match="diameter_range_px"):
        cu.segment(image, "cellpose", diameter=14.0, model=net)


def test_segment_estimates_in_one_pass_and_checks_the_estimate(monkeypatch):
    image, truth = synthetic_nuclei((128, 128), seed=6)
    net = _tiny("cellpose", diameter_range_px=[15.0, 30.0])
    width = sizing.style_features(net, image, 64).size
    net.meta["size_model"] = _constant(20.0, width)
    found = np.array([10.0] * 5)  # what the objects of a pass measure, in the pass's pixels
    monkeypatch.setattr(segmentation, "object_diameters", lambda labels: found)
    seen = _spy_scales(monkeypatch)
    labels, used = cu.segment(image, "cellpose", model=net, return_diameter=True)
    # The style says 20 px (trusted: no rescaling); the nuclei found say 10 px, outside the
    # trusted range: segmented once more at 2x, where they measure 10 / 2 = 5 px.
    assert seen == [pytest.approx(2.0)] and used == pytest.approx(5.0)
    assert labels.shape == image.shape and labels.dtype == np.int32
    found = np.array([21.0] * 5)  # the nuclei agree with the style: one pass, no rescaling
    seen.clear()
    _, used = cu.segment(image, "cellpose", model=net, return_diameter=True)
    assert seen == [] and used == pytest.approx(21.0)
    assert cu.estimate_diameter(image, "cellpose", model=net) == pytest.approx(21.0)


def test_segment_warns_when_it_cannot_check_its_estimate(monkeypatch):
    image = synthetic_nuclei((96, 96), seed=7)[0]
    net = _tiny("cellpose", diameter_range_px=[15.0, 30.0])
    net.meta["size_model"] = _constant(20.0, sizing.style_features(net, image, 64).size)
    monkeypatch.setattr(segmentation, "object_diameters", lambda labels: np.zeros(1))
    with pytest.warns(UserWarning, match="could not be checked"):
        _, used = cu.segment(image, "cellpose", model=net, return_diameter=True)
    assert used == pytest.approx(20.0)


def test_segment_keeps_its_estimate_within_what_it_can_trust(monkeypatch):
    # Two guards against a runaway (a weighted U-Net on DSB2018 once upscaled an image 8x for
    # a "diameter" of 0.1 px and returned 6,000 fragments): the size model's estimate stays
    # within the diameters it was fitted on, and the objects of a pass may correct it by at
    # most MAX_CORRECTION; both say so in a warning.
    image = synthetic_nuclei((128, 128), seed=9)[0]
    net = _tiny("cellpose", diameter_range_px=[15.0, 30.0])
    width = sizing.style_features(net, image, 64).size
    net.meta["size_model"] = {**_constant(0.1, width), "zooms": [0.25, 4.0]}  # fitted 5-80 px
    monkeypatch.setattr(segmentation, "object_diameters", lambda labels: np.array([5.0] * 5))
    seen = _spy_scales(monkeypatch)
    with pytest.warns(UserWarning, match=r"outside the diameters it was fitted on \(5-80 px\)"):
        _, used = cu.segment(image, "cellpose", model=net, return_diameter=True)
    assert seen == [pytest.approx(4.0)] and used == pytest.approx(5.0)  # 5 px, not 0.1
    net.meta["size_model"] = {**_constant(20.0, width), "zooms": [0.25, 4.0]}
    monkeypatch.setattr(segmentation, "object_diameters", lambda labels: np.array([2.0] * 5))
    seen.clear()
    with pytest.warns(UserWarning, match="disagree with the size model's estimate"):
        _, used = cu.segment(image, "cellpose", model=net, return_diameter=True)
    assert seen == [] and used == pytest.approx(20.0)  # 2 px objects: fragments, one pass


def test_estimate_diameter_ways(monkeypatch):
    image = synthetic_nuclei((96, 96), seed=8)[0]
    net = _tiny("cellpose")
    with pytest.raises(ValueError, match="no size model"):
        cu.estimate_diameter(image, "cellpose", model=net, how="size_model")
    with pytest.raises(ValueError, match="how must be"):
        cu.estimate_diameter(image, "cellpose", model=net, how="guess")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_scales = cu.estimate_diameter(image, "cellpose", model=net, how="scales")
    assert isinstance(by_scales, float)


def test_to_diameter_and_median_of_mixed_shapes():
    image, lab = synthetic_nuclei((100, 120), seed=9)
    x, y, factor = scale.to_diameter(image, lab, 30.0)
    assert x.shape == y.shape and scale.median_diameter(y) == pytest.approx(30.0, rel=0.05)
    assert factor == pytest.approx(30.0 / scale.median_diameter(lab))
    empty = np.zeros((20, 30), np.int32)
    assert scale.to_diameter(np.ones((20, 30)), empty, 30.0)[2] == 1.0
    mixed = scale.median_diameter([lab, y])  # two shapes in one list
    assert np.isfinite(mixed)


def test_zoo_names_of_the_bbbc039_models():
    if "cellpose_bbbc039" not in cu.zoo.available():
        pytest.skip("no zoo committed")
    net = cu.zoo.load("cellpose_bbbc039")
    assert net.meta["method"] == "cellpose" and "BBBC039 only" in net.meta["title"]
    assert cu.zoo.card("cellpose_bbbc039")["test"]["ap50"] > 0.9
    with pytest.raises(cu.zoo.ZooError, match="--data kromp"):
        cu.zoo.load("cellpose_kromp")
    with pytest.raises(ValueError, match="method must be one of"):
        cu.zoo.load("nothing")
