"""A user's own folders fail loudly, never silently: ``load_folder`` and Otsu on wide integers."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from course_utils.classical import intensity_histogram, otsu_threshold
from course_utils.data import load_folder

SHAPE = (32, 40)


def _write(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".png"):
        Image.fromarray(array).save(path)
    else:
        tifffile.imwrite(path, array)
    return path


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(100, 4000, SHAPE).astype(np.uint16)


def _labels(offset=0):
    """Four separate squares with ids 1..4 (offset shifts them, so two masks differ)."""
    labels = np.zeros(SHAPE, np.uint8)
    for k, (y, x) in enumerate([(2, 2), (2, 20), (18, 2), (18, 20)]):
        labels[y + offset : y + offset + 8, x : x + 8] = k + 1
    return labels


def _binary(value):
    return np.where(_labels() > 0, value, 0).astype(np.uint8)


@pytest.mark.parametrize(
    ("value", "name"),
    [(1, "a_masks.png"), (255, "a_masks.png"), (1, "a_masks.tif"), (255, "a.tif")],
)
def test_load_folder_refuses_binary_masks(tmp_path, value, name):
    _write(tmp_path / "img", "a.tif", _image())
    mask = _write(tmp_path / "msk", name, _binary(value))
    with pytest.raises(ValueError, match="skimage.measure.label") as err:
        load_folder(tmp_path / "img", tmp_path / "msk")
    assert str(mask) in str(err.value) and "binary mask" in str(err.value)


def test_load_folder_refuses_binary_masks_with_two_ids(tmp_path):
    _write(tmp_path / "img", "a.tif", _image())
    two = np.where(_labels() > 2, 2, _labels())  # ids 1 and 2: id 2 on three squares
    assert set(np.unique(two)) == {0, 1, 2}
    mask = _write(tmp_path / "msk", "a_masks.png", two)
    with pytest.raises(ValueError, match="skimage.measure.label") as err:
        load_folder(tmp_path / "img", tmp_path / "msk")
    assert str(mask) in str(err.value)


def test_load_folder_accepts_few_genuine_instances(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[4:12, 4:12] = 1
    labels[20:28, 20:28] = 2
    _write(tmp_path / "img", "a.tif", _image())
    _write(tmp_path / "msk", "a_masks.png", labels)
    _, ys, _ = load_folder(tmp_path / "img", tmp_path / "msk")
    np.testing.assert_array_equal(ys[0], labels)


def test_load_folder_splits_one_folder_by_mask_suffix(tmp_path):
    for k in range(2):
        _write(tmp_path, f"cell_{k}.tif", _image(k))
        _write(tmp_path, f"cell_{k}_masks.png", _labels(k))
    xs, ys, names = load_folder(tmp_path, tmp_path)
    assert names == ["cell_0", "cell_1"]
    assert len(xs) == len(ys) == 2 and all(y.dtype == np.int32 for y in ys)
    np.testing.assert_array_equal(ys[1], _labels(1))
    # the same folder through another spelling of its path
    _, ys2, _ = load_folder(tmp_path, tmp_path / "." / ".." / tmp_path.name)
    np.testing.assert_array_equal(ys2[0], _labels(0))


def test_load_folder_one_folder_without_masks_refused(tmp_path):
    _write(tmp_path, "a.tif", _image())
    _write(tmp_path, "b.tif", _image(1))
    with pytest.raises(ValueError, match="one folder") as err:
        load_folder(tmp_path, tmp_path)
    assert "_masks" in str(err.value) and "second folder" in str(err.value)


def test_load_folder_one_folder_same_name_pair_refused(tmp_path):
    _write(tmp_path, "a.tif", _image())
    _write(tmp_path, "a.png", _labels())
    with pytest.raises(ValueError, match="one folder") as err:
        load_folder(tmp_path, tmp_path)
    message = str(err.value)
    assert "a.tif" in message and "a.png" in message
    assert "mask suffix" in message and "second folder" in message


def test_load_folder_refuses_two_masks_for_one_image(tmp_path):
    _write(tmp_path / "img", "a.tif", _image())
    first = _write(tmp_path / "msk", "a_labels.png", _labels())
    second = _write(tmp_path / "msk", "a_masks.png", _labels(1))
    with pytest.raises(ValueError, match="'a' has 2 masks") as err:
        load_folder(tmp_path / "img", tmp_path / "msk")
    assert str(first) in str(err.value) and str(second) in str(err.value)


def test_load_folder_refuses_two_masks_of_one_name(tmp_path):
    _write(tmp_path / "img", "a.tif", _image())
    _write(tmp_path / "msk", "a_masks.png", _labels())
    _write(tmp_path / "msk", "a_masks.tif", _labels(1))
    with pytest.raises(ValueError, match=r"a_masks\.png and .*a_masks\.tif"):
        load_folder(tmp_path / "img", tmp_path / "msk")


def test_load_folder_pairs_cellpose_cp_masks(tmp_path):
    _write(tmp_path / "img", "cell_01.tif", _image())
    _write(tmp_path / "msk", "cell_01_cp_masks.png", _labels())
    _, ys, names = load_folder(tmp_path / "img", tmp_path / "msk")
    assert names == ["cell_01"]
    np.testing.assert_array_equal(ys[0], _labels())


def test_load_folder_same_name_pair_wins_over_suffix(tmp_path):
    _write(tmp_path / "img", "nuclei_seg.tif", _image())
    _write(tmp_path / "msk", "nuclei_seg.png", _labels())
    _, ys, names = load_folder(tmp_path / "img", tmp_path / "msk")
    assert names == ["nuclei_seg"]
    np.testing.assert_array_equal(ys[0], _labels())
    # with an image "nuclei" beside it, the suffix still does not steal the mask
    _write(tmp_path / "img", "nuclei.tif", _image(1))
    _write(tmp_path / "msk", "nuclei_masks.png", _labels(1))
    _, ys, names = load_folder(tmp_path / "img", tmp_path / "msk")
    assert names == ["nuclei", "nuclei_seg"]
    np.testing.assert_array_equal(ys[0], _labels(1))
    np.testing.assert_array_equal(ys[1], _labels())


def _damage(path, how):
    data = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "corrupt": b"not an image at all" * 8}[
            how
        ]
    )


@pytest.mark.parametrize("how", ["empty", "truncated", "corrupt"])
@pytest.mark.parametrize("which", ["image.tif", "image.png", "mask.tif", "mask.png"])
def test_load_folder_unreadable_file_named(tmp_path, how, which):
    kind, ext = which.split(".")
    _write(tmp_path / "img", "b.tif", _image(1))
    _write(tmp_path / "msk", "b_masks.png", _labels(1))
    image = _write(
        tmp_path / "img",
        f"a.{ext if kind == 'image' else 'tif'}",
        _image().astype(np.uint8) if ext == "png" else _image(),
    )
    mask = _write(tmp_path / "msk", f"a_masks.{ext if kind == 'mask' else 'png'}", _labels())
    bad = image if kind == "image" else mask
    _damage(bad, how)
    with pytest.raises(ValueError, match="cannot be read") as err:
        load_folder(tmp_path / "img", tmp_path / "msk")
    message = str(err.value)
    assert str(bad) in message
    assert "corrupt, empty or truncated" in message and "re-export" in message.lower()


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
@pytest.mark.parametrize("normalize", [True, False])
def test_load_folder_nan_image_named(tmp_path, bad_value, normalize):
    for k in range(3):
        _write(tmp_path, f"f{k}.tif", _image(k).astype(np.float32))
    broken = _image(1).astype(np.float32)
    broken[3, 4] = bad_value
    path = _write(tmp_path, "f1.tif", broken)
    with pytest.raises(ValueError, match="NaN or infinite") as err:
        load_folder(tmp_path, normalize=normalize)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("dtype", "high"), [(np.int64, 10**10), (np.uint32, 4 * 10**9)])
def test_otsu_on_wide_integer_range_bins_like_floats(dtype, high):
    image = np.zeros((64, 64), dtype)
    image[16:48, 16:48] = high
    threshold = otsu_threshold(image)
    assert 0 < threshold < high
    assert ((image > threshold) == (image == high)).all()
    counts, centers = intensity_histogram(image, nbins=100)
    assert counts.size == centers.size == 100 and counts.sum() == image.size
    assert counts[0] == 64 * 64 - 32 * 32 and counts[-1] == 32 * 32


def test_histogram_one_bin_per_value_up_to_two_to_sixteen():
    image = np.array([[0, 2**16], [5, 5]], np.int64)
    counts, centers = intensity_histogram(image)
    assert counts.size == 2**16 + 1 and counts[5] == 2 and centers[-1] == 2**16
    image[0, 1] = 2**16 + 1  # one value more: nbins equal bins
    assert intensity_histogram(image, nbins=8)[0].size == 8
    small = np.array([[-128, 127], [0, 0]], np.int8)  # int8 range 255 does not wrap
    counts, centers = intensity_histogram(small)
    assert counts.size == 256 and centers[0] == -128 and counts[128] == 2
