"""Tests for course_utils.predict: overlap-tile prediction against whole-image prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.predict import predict_tiled, tile_grid

torch.set_num_threads(1)


def conv_stack(padding: int, c_in: int = 2, c_out: int = 3, dropout: float = 0.0) -> nn.Module:
    """Three 3x3 convolutions: receptive-field half-width 3; valid ones remove 3 px per side."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(c_in, 4, 3, padding=padding),
        nn.Tanh(),
        nn.Dropout2d(dropout),
        nn.Conv2d(4, 4, 3, padding=padding),
        nn.Tanh(),
        nn.Conv2d(4, c_out, 3, padding=padding),
    ).eval()


def whole(model: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(image)[None].float())[0].numpy()


def rand_image(*shape: int) -> np.ndarray:
    return np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), ((24, 40), 6), (40, 31)])
def test_same_padding_equals_whole_image_prediction(tile, overlap):
    model = conv_stack(padding=1)
    image = rand_image(2, 70, 93)  # not a multiple of any tile size
    got = predict_tiled(model, image, tile_size=tile, overlap=overlap, batch_size=3)
    assert got.dtype == np.float32 and got.shape == (3, 70, 93)
    np.testing.assert_allclose(got, whole(model, image), atol=1e-5)


def test_same_padding_with_too_little_overlap_differs():
    # Receptive-field half-width 3 > overlap // 2 = 1: the seams show.
    model, image = conv_stack(padding=1), rand_image(2, 70, 93)
    got = predict_tiled(model, image, tile_size=32, overlap=2)
    assert np.abs(got - whole(model, image)).max() > 1e-3


@pytest.mark.parametrize("pad_mode", ["reflect", "symmetric", "constant"])
@pytest.mark.parametrize("shape", [(2, 45, 31), (2, 5, 7), (2, 2, 2)])
def test_valid_convolutions_equal_prediction_on_mirror_padded_image(shape, pad_mode):
    model = conv_stack(padding=0)
    image = rand_image(*shape)
    got = predict_tiled(model, image, tile_size=20, batch_size=4, pad_mode=pad_mode)
    expected = whole(model, np.pad(image, ((0, 0), (3, 3), (3, 3)), mode=pad_mode))
    assert expected.shape == got.shape == (3, *shape[1:])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_image_smaller_than_tile_same_padding():
    model, image = conv_stack(padding=1), rand_image(2, 10, 12)
    got = predict_tiled(model, image, tile_size=32, overlap=8)
    padded = np.pad(image, ((0, 0), (0, 22), (0, 20)), mode="reflect")
    np.testing.assert_allclose(got, whole(model, padded)[:, :10, :12], atol=1e-5)
    # Away from the padded bottom/right edges it is the whole-image prediction.
    np.testing.assert_allclose(got[:, :7, :9], whole(model, image)[:, :7, :9], atol=1e-5)


def test_tensor_2d_input_batch_size_and_training_flag():
    model = conv_stack(padding=1, c_in=1, dropout=0.5).train()
    image = rand_image(50, 61)
    a = predict_tiled(model, image, tile_size=24, overlap=8, batch_size=1)
    b = predict_tiled(model, torch.from_numpy(image), tile_size=24, overlap=8, batch_size=7)
    assert model.training  # restored after prediction
    np.testing.assert_allclose(a, b, atol=1e-6)  # batch size only changes float rounding
    np.testing.assert_allclose(a, whole(model.eval(), image[None]), atol=1e-5)  # dropout was off


def test_half_precision_tensor_image():
    model, image = conv_stack(padding=1), rand_image(2, 30, 41)
    half = torch.from_numpy(image).bfloat16()
    got = predict_tiled(model, half, tile_size=16, overlap=8)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, whole(model, half.float().numpy()), atol=1e-5)


def test_tuple_outputs_are_joined_along_channels():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = conv_stack(padding=1, c_out=4)

        def forward(self, x):
            features = self.body(x)
            return features[:, :1], features[:, 1:]

    model, image = TwoHeads().eval(), rand_image(2, 37, 29)
    got = predict_tiled(model, image, tile_size=16, overlap=8)
    np.testing.assert_allclose(got, whole(model.body, image), atol=1e-5)


def test_tile_grid_covers_the_image_once_and_keeps_context():
    cases = itertools.product([(1, 1), (7, 40), (64, 64), (100, 37)], [16, (16, 24)], [0, 4, 9])
    for shape, tile, overlap in cases:
        tiles = tile_grid(shape, tile, overlap=overlap)
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        count = np.zeros(shape, int)
        for t in tiles:
            iy0, ix0, iy1, ix1 = t["input"]
            oy0, ox0, oy1, ox1 = t["output"]
            assert (iy1 - iy0, ix1 - ix0) == (th, tw)
            count[oy0:oy1, ox0:ox1] += 1
            # Inner edges keep at least overlap // 2 pixels of context; image edges keep none.
            for lo, hi, kept_lo, kept_hi, n in (
                (iy0, iy1, oy0, oy1, shape[0]),
                (ix0, ix1, ox0, ox1, shape[1]),
            ):
                assert kept_lo == 0 or kept_lo - lo >= overlap // 2
                assert kept_hi == n or hi - kept_hi >= overlap // 2
        assert (count == 1).all(), (shape, tile, overlap)


def test_tile_grid_valid_convolutions():
    tiles = tile_grid((3, 50, 30), 24, 18)  # margin 3, outputs laid edge to edge
    starts = [t["output"][:2] for t in tiles]
    assert starts == [(0, 0), (0, 18), (18, 0), (18, 18), (36, 0), (36, 18)]
    assert all(t["input"][0] == t["output"][0] - 3 for t in tiles)
    assert tiles[-1]["output"] == (36, 18, 50, 30) and tiles[-1]["index"] == (2, 1)


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.zeros((1, 2, 40, 40), np.float32), {}, ValueError, r"\(C, H, W\)"),
        (np.zeros((2, 0, 40), np.float32), {}, ValueError, "empty"),
        (np.zeros((2, 40, 40), complex), {}, TypeError, "real"),
        ([[0.0, 1.0]], {}, TypeError, "numpy"),
        (np.zeros((3, 40, 40), np.float32), {}, ValueError, "3 channel"),
        (np.zeros((2, 40, 40), np.float32), {"tile_size": 6}, ValueError, "fails on a 6x6 tile"),
        (np.zeros((2, 40, 40), np.float32), {"tile_size": 0}, ValueError, "tile_size"),
        (np.zeros((2, 40, 40), np.float32), {"pad_mode": "mirror"}, ValueError, "pad_mode"),
        (np.zeros((2, 40, 40), np.float32), {"batch_size": 0}, ValueError, "batch_size"),
        (np.zeros((2, 40, 40), np.float32), {"amp": "fp8"}, ValueError, "amp"),
    ],
)
def test_bad_inputs_raise_clearly(image, kwargs, error, match):
    with pytest.raises(error, match=match):
        predict_tiled(conv_stack(padding=0), image, **{"tile_size": 20, **kwargs})


def test_unsupported_models_and_overlap_raise():
    odd = nn.Conv2d(1, 1, 2)  # removes one pixel: no equal margin on both sides
    with pytest.raises(ValueError, match="same margin"):
        predict_tiled(odd, np.zeros((20, 20), np.float32), tile_size=16)
    bigger = nn.Upsample(scale_factor=2)
    with pytest.raises(ValueError, match="no larger than the input"):
        predict_tiled(bigger, np.zeros((20, 20), np.float32), tile_size=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(conv_stack(1), rand_image(2, 40, 40), tile_size=16, overlap=16)
