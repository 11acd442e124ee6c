"""Each method's steps through its record: network outputs -> instances, targets, training,
checkpoints (what notebook 07b calls by name)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import methods
from course_utils.data import synthetic_nuclei
from course_utils.metrics import matching
from course_utils.postprocess import classes_to_labels, foreground_to_labels, stardist_to_labels
from course_utils.predict import network_outputs, predict_tiled
from course_utils.targets import (
    FLOW_SCALE,
    boundary_classes,
    edt_prob,
    masks_to_flows,
    star_dist,
    with_gaps,
)
from course_utils.train import checkpoint_dir

TINY = {"depth": 2, "base_channels": 4}
INSTANCES = {m: methods.get(m).segment for m in methods.NUCLEUS_METHODS}


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((96, 112), seed=3)
    assert labels.max() >= 5
    return image, labels


def one_hot(classes, n):
    return np.eye(n, dtype=np.float32)[classes].transpose(2, 0, 1)


def f1(truth, pred):
    return matching(truth, pred, 0.5).f1


# --- instances from a network -----------------------------------------------------------------


@pytest.mark.parametrize("method", methods.NUCLEUS_METHODS)
def test_untrained_model_gives_int32_labels_of_the_image_shape(method, nuclei):
    image = nuclei[0][:70, :90]  # not a multiple of any pooling factor
    model = methods.get(method).build(**TINY)
    labels = INSTANCES[method](model, image)
    assert labels.dtype == np.int32 and labels.shape == image.shape
    assert labels.min() >= 0
    assert model.training  # network_outputs restores the mode


def test_network_outputs_whole_image_equals_the_model_on_the_padded_image(nuclei):
    model = methods.get("unet_3class").build(**TINY).eval()
    image = nuclei[0][:70, :90]
    out = network_outputs(model, image)
    padded = np.pad(image, ((0, 2), (0, 2)), mode="reflect")  # to multiples of 4
    with torch.no_grad():
        direct = model(torch.from_numpy(padded)[None, None])[0, :, :70, :90].numpy()
    assert out.shape == (3, 70, 90) and out.dtype == np.float32
    np.testing.assert_allclose(out, direct, atol=1e-5)


def test_network_outputs_stardist_grid_and_tiles(nuclei):
    image = nuclei[0][:70, :90]
    star = methods.get("stardist").build(**TINY)
    assert star.grid == 2
    out = network_outputs(star, image)
    assert out.shape == (1 + star.n_rays, 35, 45)
    assert np.all(out[1:] >= 0)  # distances come out of a softplus
    model = methods.get("cellpose").build(**TINY)
    tiled = network_outputs(model, image, tile_size=32, overlap=8)
    np.testing.assert_array_equal(tiled, predict_tiled(model, image, tile_size=32, overlap=8))


def test_network_outputs_rejects_bad_images():
    model = methods.get("unet_3class").build(**TINY)
    with pytest.raises(ValueError, match="image"):
        network_outputs(model, np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(TypeError, match="boolean"):
        network_outputs(model, np.zeros((8, 8), bool))


# --- perfect outputs give the labels back -----------------------------------------------------


def test_perfect_two_class_output_with_gaps(nuclei):
    labels = nuclei[1]
    pred = foreground_to_labels(one_hot((with_gaps(labels) > 0).astype(int), 2))
    assert pred.dtype == np.int32
    assert f1(labels, pred) > 0.9


def test_perfect_three_class_output(nuclei):
    labels = nuclei[1]
    pred = classes_to_labels(one_hot(boundary_classes(labels), 3))
    assert pred.dtype == np.int32 and f1(labels, pred) > 0.95


def test_perfect_flows(nuclei):
    labels = nuclei[1]
    logit = np.where(labels > 0, 10.0, -10.0)[None]
    outputs = np.concatenate([FLOW_SCALE * masks_to_flows(labels, device="cpu"), logit])
    pred = methods.get("cellpose").outputs_to_labels(outputs, outputs.shape[-2:])
    assert pred.dtype == np.int32 and f1(labels, pred) > 0.95


@pytest.mark.parametrize("grid", [1, 2])
def test_perfect_stardist_maps(nuclei, grid):
    labels = nuclei[1]
    prob = edt_prob(labels)[::grid, ::grid]
    dist = star_dist(labels, 32, grid=(grid, grid))
    pred = stardist_to_labels(
        prob, dist, grid=grid, shape=labels.shape, **methods.get("stardist").postprocess
    )
    assert pred.dtype == np.int32 and pred.shape == labels.shape
    assert f1(labels, pred) > 0.9


def test_perfect_outputs_on_bbbc039(bbbc039_labels):
    labels = bbbc039_labels[0]
    pred = classes_to_labels(one_hot(boundary_classes(labels), 3))
    assert f1(labels, pred) > 0.98


def test_instances_reject_wrong_channel_counts():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        classes_to_labels(np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        foreground_to_labels(np.zeros((8, 8)))


# --- targets and losses -----------------------------------------------------------------------


def naive_with_gaps(labels):
    out = labels.copy()
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            if labels[y, x] == 0:
                continue
            window = labels[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            if np.any((window != 0) & (window != labels[y, x])):
                out[y, x] = 0
    return out


def test_with_gaps_matches_a_pixel_loop(nuclei):
    labels = nuclei[1][:48, :48]
    gapped = with_gaps(labels)
    np.testing.assert_array_equal(gapped, naive_with_gaps(labels))
    assert gapped.dtype == labels.dtype
    with pytest.raises(TypeError, match="integer"):
        with_gaps(labels.astype(float))
    with pytest.raises(ValueError, match="2D"):
        with_gaps(labels[None])


# --- configuration, training, checkpoints -----------------------------------------------------


def test_record_config_and_build():
    with pytest.raises(ValueError, match="method"):
        methods.get("mask_rcnn")
    for method in methods.NUCLEUS_METHODS:
        config, model = methods.get(method).config(), methods.get(method).build()
        assert model.depth == config["depth"]
    star = methods.get("stardist").build()
    assert (star.grid, star.n_rays) == (2, 32)  # notebook 06, fast mode
    assert methods.get("cellpose").build(base_channels=4).output[-1].out_channels == 3
    a, b = methods.get("unet_3class").build(seed=1), methods.get("unet_3class").build(seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def patches_data(nuclei):
    image, labels = nuclei
    return [image, image[::-1].copy()], [labels, labels[::-1].copy()]


@pytest.mark.parametrize("method", methods.NUCLEUS_METHODS)
def test_one_tiny_epoch_of_every_method(method, patches_data):
    images, labels = patches_data
    patch = 52 if method == "unet_weighted" else 32  # 52 is a valid input of depth 2 (-> 12)
    model, history = methods.train_method(
        method,
        images,
        labels,
        epochs=1,
        patch_size=patch,
        patches_per_epoch=4,
        batch_size=2,
        progress=False,
        device="cpu",
        val_images=images[:1],
        val_labels=labels[:1],
        config=TINY,
    )
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert np.isfinite(history[0]["val_loss"]) and not model.training


def test_train_method_checkpoints_and_load_notebook_model(patches_data, tmp_path):
    images, labels = patches_data
    assert methods.load_notebook_model("unet_3class", root=tmp_path) is None
    folder = checkpoint_dir(methods.get("unet_3class").checkpoint, tmp_path)
    model, _ = methods.train_method(
        "unet_3class",
        images,
        labels,
        epochs=1,
        patch_size=32,
        patches_per_epoch=2,
        batch_size=2,
        progress=False,
        device="cpu",
        checkpoint_dir=folder,
        config=TINY,
    )
    assert (folder / "best.pt").exists() and not (folder / "recipe.json").exists()
    # The checkpoint rebuilds its depth-2 network although this mode's default is depth 3.
    loaded = methods.load_notebook_model("unet_3class", root=tmp_path)
    assert not loaded.training and loaded.depth == 2 and loaded.config == model.config
    for x, y in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(x, y)
    # Another method's folder holding this file: a clear error naming both.
    other = checkpoint_dir(methods.get("cellpose").checkpoint, tmp_path)
    other.mkdir(parents=True)
    (other / "best.pt").write_bytes((folder / "best.pt").read_bytes())
    with pytest.raises(ValueError, match=r"holds a unet_3class model \(UNet\), not cellpose"):
        methods.load_notebook_model("cellpose", root=tmp_path)


def test_train_method_needs_both_validation_lists(patches_data):
    images, labels = patches_data
    with pytest.raises(ValueError, match="val_labels"):
        methods.train_method(
            "unet_3class", images, labels, epochs=1, patch_size=32, val_images=images
        )


def test_stardist_to_labels_on_perfect_maps_and_a_prob_of_the_wrong_shape():
    _, labels = synthetic_nuclei((96, 112), seed=3)
    prob, dist = edt_prob(labels), star_dist(labels, 32)
    out = stardist_to_labels(prob, dist, prob_thresh=0.5, nms_thresh=0.4)
    assert out.shape == labels.shape and out.dtype == np.int32
    assert matching(labels, out, 0.5).f1 >= 0.95
    # Full-resolution maps read as the outputs of a grid-2 network: the shapes disagree.
    with pytest.raises(ValueError, match=r"prob has shape \(96, 112\).*grid"):
        stardist_to_labels(prob, dist, prob_thresh=0.5, nms_thresh=0.4, grid=2, shape=(96, 112))
