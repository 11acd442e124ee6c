"""Your own images: load_folder, rescaling, segment, estimate_diameter and fine_tune."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import course_utils as cu
from course_utils import methods, scale
from course_utils.data import load_folder, synthetic_nuclei


def _write(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".png"):
        Image.fromarray(array).save(path)
    else:
        tifffile.imwrite(path, array)
    return path


@pytest.fixture
def my_folders(tmp_path):
    for k in range(2):
        image, labels = synthetic_nuclei((64, 80), seed=k)
        _write(tmp_path / "img", f"cell_{k}.tif", (image * 1000).astype(np.uint16))
        _write(tmp_path / "msk", f"cell_{k}_masks.png", labels.astype(np.uint8))
    return tmp_path / "img", tmp_path / "msk"


def test_load_folder_matches_masks_by_name_and_never_writes(my_folders):
    images, masks = my_folders
    before = sorted((p.name, p.stat().st_mtime_ns) for d in my_folders for p in d.iterdir())
    xs, ys, names = load_folder(images, masks)
    assert names == ["cell_0", "cell_1"]
    assert all(x.dtype == np.float32 and x.shape == (64, 80) for x in xs)
    assert all(y.dtype == np.int32 and y.max() >= 1 for y in ys)
    np.testing.assert_array_equal(ys[1], synthetic_nuclei((64, 80), seed=1)[1])
    assert load_folder(images)[1] is None
    after = sorted((p.name, p.stat().st_mtime_ns) for d in my_folders for p in d.iterdir())
    assert before == after


def test_load_folder_clear_errors(my_folders, tmp_path):
    images, masks = my_folders
    _write(images, "extra.tif", np.zeros((64, 80), np.uint16))
    with pytest.raises(ValueError, match=r"no mask for \['extra'\]"):
        load_folder(images, masks)
    (images / "extra.tif").unlink()
    _write(masks, "cell_1_masks.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="has shape"):
        load_folder(images, masks)
    _write(masks, "cell_1_masks.png", np.zeros((64, 80, 3), np.uint8))
    with pytest.raises(ValueError, match="not a 2-D integer label image"):
        load_folder(images, masks)
    _write(masks, "cell_1_masks.tif", np.zeros((64, 80), np.float32))
    (masks / "cell_1_masks.png").unlink()
    with pytest.raises(ValueError, match="not a 2-D integer label image"):
        load_folder(images, masks)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        load_folder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "missing")
    _write(
        tmp_path / "rgb",
        "a.png",
        np.dstack(
            [np.arange(64 * 80, dtype=np.uint8).reshape(64, 80)]
            + [np.zeros((64, 80), np.uint8)] * 2
        ),
    )
    with pytest.raises(ValueError, match="colour image"):
        load_folder(tmp_path / "rgb")


def test_diameters_and_rescaling():
    labels = np.zeros((60, 60), np.int32)
    yy, xx = np.mgrid[:60, :60]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 100] = 3  # a disk of radius 10
    labels[(yy - 45) ** 2 + (xx - 45) ** 2 <= 25] = 9  # radius 5
    d = scale.object_diameters(labels)
    assert d == pytest.approx([20.0, 10.0], rel=0.06)
    assert scale.median_diameter([labels, labels]) == pytest.approx(15.0, rel=0.06)
    assert np.isnan(scale.median_diameter(np.zeros((4, 4), np.int32)))
    bigger = scale.rescale_labels(labels, 2.0)
    assert bigger.shape == (120, 120) and set(np.unique(bigger)) == {0, 3, 9}
    assert scale.median_diameter(bigger) == pytest.approx(
        2 * scale.median_diameter(labels), rel=0.05
    )
    image = (labels > 0).astype(np.float32)
    half = scale.rescale_image(image, 0.5)
    assert half.shape == (30, 30) and half.dtype == np.float32
    back = scale.rescale_labels(bigger, shape=labels.shape)
    assert (back == labels).mean() > 0.99
    with pytest.raises(ValueError, match="NaN"):
        scale.rescale_image(np.full((8, 8), np.nan), 2.0)


@pytest.fixture(scope="module")
def tiny_cellpose():
    model = methods.get("cellpose").build(base_channels=4, depth=2).eval()
    model.meta = {"method": "cellpose", "train_diameter_px": 28.0}  # as train_method records it
    return model


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((32, 32), bool), TypeError, "a mask"),
        (np.zeros((32, 32), complex), TypeError, "numbers"),
        (np.arange(2 * 32 * 32).reshape(2, 32, 32), ValueError, "channels that differ"),
        (np.zeros((6, 32, 32)), ValueError, "2-D"),
        (np.zeros((4, 32)), ValueError, "at least 8"),
        (np.full((32, 32), np.nan), ValueError, "NaN"),
    ],
)
def test_segment_refuses_bad_images(image, error, match, tiny_cellpose):
    with pytest.raises(error, match=match):
        cu.segment(image, "cellpose", diameter=28, model=tiny_cellpose)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64])
def test_segment_any_dtype_gives_labels_at_the_input_size(dtype, tiny_cellpose):
    image = (synthetic_nuclei((70, 90), seed=2)[0] * 200).astype(dtype)
    labels = cu.segment(image, "cellpose", diameter=14.0, model=tiny_cellpose)
    assert labels.shape == (70, 90) and labels.dtype == np.int32 and labels.min() >= 0
    with pytest.raises(ValueError, match="diameter"):
        cu.segment(image, "cellpose", diameter=-3, model=tiny_cellpose)
    with pytest.raises(ValueError, match="method must be one of"):
        cu.segment(image, "maskrcnn", diameter=14.0, model=tiny_cellpose)


def test_fine_tune_trains_and_can_freeze_the_encoder():
    image, labels = synthetic_nuclei((96, 96), seed=4)
    model = methods.get("cellpose").build(base_channels=4, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, history = cu.fine_tune(
        "cellpose",
        [image],
        [labels],
        model=model,
        epochs=1,
        patches_per_epoch=4,
        batch_size=2,
        patch_size=32,
        freeze="encoder",
        rescale=False,
        progress=False,
    )
    assert len(history) == 1 and not tuned.training
    after = tuned.state_dict()
    encoder = [k for k in after if k.startswith("down.") and "weight" in k]
    decoder = [k for k in after if k.startswith("up.") and "weight" in k]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    with pytest.raises(ValueError, match="freeze"):
        cu.fine_tune("cellpose", [image], [labels], model=model, freeze="half")


@pytest.fixture(scope="module")
def zoo_cellpose():
    if "cellpose_bbbc039" not in cu.zoo.available():
        pytest.skip("no zoo model committed")
    try:
        images, labels = cu.data.load_split("bbbc039", "test", n=3)
    except cu.data.DataUnavailableError as err:
        pytest.skip(f"BBBC039 is not in the mirror or cache: {err}")
    return images, labels


@pytest.mark.parametrize("factor", [0.5, 1.0, 2.0])
def test_estimated_diameter_within_15_percent(factor, zoo_cellpose):
    images, labels = zoo_cellpose
    for image, truth in zip(images[:2], labels[:2]):
        x = scale.rescale_image(image[:256, :256], factor)
        true = scale.median_diameter(scale.rescale_labels(truth[:256, :256], shape=x.shape))
        for name, how in (("cellpose_bbbc039", "scales"), ("cellpose", "size_model")):
            model = cu.zoo.load(name)
            estimate = cu.estimate_diameter(x, "cellpose", model=model, how=how)
            assert estimate == pytest.approx(true, rel=0.15), (name, factor, estimate, true)


def test_estimate_looks_at_the_central_window(zoo_cellpose):
    """``max_side`` estimates from the central window: the same answer as on that crop."""
    image = zoo_cellpose[0][0][:256, :320]
    centre = image[64:192, 96:224]  # its central 128 x 128 window
    estimate = partial(cu.estimate_diameter, method="cellpose", how="scales")
    estimate = partial(estimate, model=cu.zoo.load("cellpose_bbbc039"))
    window = estimate(image, max_side=128)
    assert np.isfinite(window)
    assert window == estimate(centre, max_side=None)
    # a window too small for three whole nuclei: the estimate looks at the whole image
    assert estimate(image, max_side=16) == estimate(image, max_side=None)
    with pytest.raises(ValueError, match="max_side"):
        estimate(image, max_side=4)
