"""A user's own data and models through the public functions: loud, never silent.

Each test is named after a case a user met (silent wrong results, valid input refused,
crashes that did not say what to do); each failed on the code before its fix. The folder
cases of ``load_folder`` are in ``test_user_folders.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import course_utils as cu
from course_utils import blockwise, checkpoint, methods, segmentation, sparse, zoo
from course_utils.checkpoint import CheckpointError
from course_utils.data import synthetic_nuclei
from course_utils.methods import freeze_parameters
from course_utils.train import fit

FAST = {"epochs": 1, "patches_per_epoch": 2, "batch_size": 2, "patch_size": 32}


def _tiny(method: str, diameter: float | None = 14.0, **config) -> nn.Module:
    small = {
        "cellpose": {"base_channels": 4, "depth": 2},
        "stardist": {"base_channels": 4, "depth": 1},
        "unet_3class": {"base_channels": 4, "depth": 2},
    }
    model = methods.get(method).build(**{**small.get(method, {}), **config}).eval()
    model.meta = {"method": method}
    if diameter is not None:
        model.meta["train_diameter_px"] = diameter
    return model


@pytest.fixture(scope="module")
def pair():
    image, labels = synthetic_nuclei((64, 64), seed=3)
    return image, labels


# --- silent wrong results ----------------------------------------------------------------------


@pytest.mark.parametrize("high", [1, 255])
def test_fine_tune_refuses_binary_masks(high):
    image, labels = synthetic_nuclei((128, 128), seed=3)  # 9 nuclei, 6 separate blobs
    binary = np.where(labels > 0, high, 0).astype(np.uint8)
    with pytest.raises(ValueError, match=r"binary mask.*skimage\.measure\.label"):
        cu.fine_tune("cellpose", [image], [binary], model=_tiny("cellpose"), **FAST)


def test_fine_tune_refuses_labels_of_another_shape(pair):
    image, labels = pair
    with pytest.raises(ValueError, match=r"labels\[0\] has shape \(64, 48\)"):
        cu.fine_tune("cellpose", [image], [labels[:, :48]], model=_tiny("cellpose"), **FAST)


def test_network_of_another_method_is_refused(pair):
    image, labels = pair
    unet, net = _tiny("unet_3class"), _tiny("cellpose")
    with pytest.raises(ValueError, match="needs a CellposeNet"):
        cu.fine_tune("cellpose", [image], [labels], model=unet, **FAST)
    with pytest.raises(ValueError, match="needs a CellposeNet"):
        cu.segment(image, "cellpose", model=unet)
    with pytest.raises(ValueError, match="needs a UNet"):
        cu.segment(image, "unet_3class", model=net)
    with pytest.raises(ValueError, match="needs a UNet"):
        cu.estimate_diameter(image, "unet_3class", model=net)
    with pytest.raises(ValueError, match="needs a UNetOriginal"):
        cu.segment(image, "unet_weighted", diameter=14, model=unet)
    # the same class, other outputs: the affinity U-Net is no 3-class U-Net
    affinities = methods.get("affinities").build()
    with pytest.raises(ValueError, match="out_channels"):
        cu.segment(image, "unet_3class", model=affinities)
    # the checkpoint's own method decides when the class is shared
    unet.meta = {"method": "affinities", "train_diameter_px": 14.0}
    with pytest.raises(ValueError, match="affinities"):
        cu.segment(image, "unet_3class", model=unet)


def test_train_sparse_refuses_nothing_annotated(pair):
    image, labels = pair
    unknown = np.full_like(labels, -1)
    with pytest.raises(ValueError, match="no annotated pixel"):
        sparse.train_sparse("cellpose", [image], [unknown], epochs=1, progress=False)


def _fit_tiny(directory: Path, epochs: int):
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(8, 1, 8, 8)
    data = DataLoader(TensorDataset(x, 2 * x), batch_size=4)
    history = fit(
        model,
        data,
        loss_fn=nn.functional.mse_loss,
        epochs=epochs,
        lr=0.05,
        checkpoint_dir=directory,
        progress=False,
    )
    return model, history


def test_fit_repairs_best_after_kill_while_writing_it(tmp_path):
    _fit_tiny(tmp_path, 1)
    behind = (tmp_path / "best.pt").read_bytes()  # epoch 1's best.pt
    _, history = _fit_tiny(tmp_path, 2)
    assert history.best_epoch == 2  # the loss fell: epoch 2 is the best
    (tmp_path / "best.pt").write_bytes(behind)  # killed while writing epoch 2's best.pt
    _, again = _fit_tiny(tmp_path, 2)  # nothing to train, but best.pt is repaired
    assert len(again) == 2
    best = checkpoint.read_checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == 2
    assert methods.read_meta(tmp_path / "best.pt") == methods.read_meta(tmp_path / "last.pt")


# --- valid input refused -----------------------------------------------------------------------


def test_segment_accepts_singleton_axes_and_grey_saved_as_colour(pair):
    image, _ = pair
    net = _tiny("cellpose")
    want = cu.segment(image, "cellpose", diameter=14, model=net)
    grey = (image * 200).astype(np.uint8)
    want_u8 = cu.segment(grey, "cellpose", diameter=14, model=net)
    for variant in (image[..., None], image[None]):
        np.testing.assert_array_equal(cu.segment(variant, "cellpose", diameter=14, model=net), want)
    for colour in (np.stack([grey] * 3, -1), np.dstack([grey] * 3 + [np.full_like(grey, 255)])):
        np.testing.assert_array_equal(
            cu.segment(colour, "cellpose", diameter=14, model=net), want_u8
        )
    rgb = np.stack([np.zeros_like(grey), grey // 2, grey], -1)
    with pytest.raises(ValueError, match="channel="):
        cu.segment(rgb, "cellpose", diameter=14, model=net)
    np.testing.assert_array_equal(
        cu.segment(rgb, "cellpose", diameter=14, model=net, channel=2), want_u8
    )
    with pytest.raises(ValueError, match="3 channels"):
        cu.segment(rgb, "cellpose", diameter=14, model=net, channel=3)


# --- crashes that did not say what to do ------------------------------------------------------


def test_load_model_weights_that_are_not_tensors(tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"model": {"w": [1.0, 2.0]}, "meta": {}}, path)
    with pytest.raises(CheckpointError, match="not a tensor"):
        methods.load_model(path)


def test_load_model_arguments_that_do_not_fit_the_weights(tmp_path):
    model, _ = _fit_tiny(tmp_path / "run", 1)  # a plain Conv2d: describe a CellposeNet instead
    state = checkpoint.read_checkpoint(tmp_path / "run" / "last.pt")
    state["meta"].update(network="CellposeNet", network_args={"base_channels": 4, "depth": 2})
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="inconsistent") as err:
        methods.load_model(tmp_path / "edited.pt")
    assert "methods.load_model)" not in str(err.value)  # not the call that just failed


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """The committed zoo's manifest and cards (and the cellpose weights) in a folder of its own."""
    source = zoo.zoo_dir()
    if not (source / "MANIFEST.tsv").is_file():
        pytest.skip("no zoo committed")
    for name in ("MANIFEST.tsv", "cellpose.pt", *(p.name for p in source.glob("*.json"))):
        shutil.copy(source / name, tmp_path / name)
    monkeypatch.setenv("COURSE_ZOO", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda line: line.replace("\t", "    "), "spaces instead of tabs"),
        (lambda line: "\t".join([line.split("\t")[0], "3.4MB", line.split("\t")[2]]), "3.4MB"),
    ],
)
def test_zoo_manifest_written_by_hand(zoo_copy, edit, match):
    manifest = zoo_copy / "MANIFEST.tsv"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join([edit(lines[0]), *lines[1:]]) + "\n")
    for call in (zoo.available, lambda: zoo.card("cellpose")):
        with pytest.raises(zoo.ZooError, match=rf"MANIFEST.tsv, line 1: .*{match}"):
            call()


def test_zoo_card_cut_short(zoo_copy):
    card = zoo_copy / "stardist.json"
    card.write_text(card.read_text()[:100])
    with pytest.raises(zoo.ZooError, match="stardist.json is not valid JSON"):
        zoo.available()
    card.unlink()  # listed in the manifest, gone from the folder
    with pytest.raises(zoo.ZooError, match=r"stardist.json is in the zoo manifest but missing"):
        zoo.available()


def test_wrong_method_checkpoint_in_models_never_advises_deleting_the_folder(zoo_copy):
    models = zoo_copy.parent / "models"
    models.mkdir()
    shutil.copy(zoo_copy / "cellpose.pt", models / "stardist.pt")
    shutil.copy(zoo_copy / "cellpose.json", models / "keep-me.json")
    with pytest.raises(CheckpointError, match="not stardist") as err:
        methods.load_model(models / "stardist.pt", method="stardist")
    assert f"delete {models}" not in str(err.value) and "move" in str(err.value)


def test_sparse_loss_with_targets_of_another_size():
    out = torch.zeros(2, 3, 32, 32)
    flows, prob = torch.zeros(2, 2, 24, 24), torch.zeros(2, 24, 24)
    with pytest.raises(ValueError, match=r"cellpose_sparse_loss: flows has shape"):
        sparse.cellpose_sparse_loss(out, flows, prob, prob, prob)


def test_network_on_a_float64_tensor():
    net = _tiny("cellpose")
    with pytest.raises(TypeError, match=r"float64 tensor: convert it with x\.float\(\)"):
        net(torch.zeros(1, 1, 32, 32, dtype=torch.float64))


def test_fit_into_an_unwritable_checkpoint_dir(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.NamedTemporaryFile", read_only)
    with pytest.raises(OSError, match=f"checkpoint folder {tmp_path}.*read-only"):
        _fit_tiny(tmp_path, 1)
    assert not (tmp_path / "last.pt").exists()


def test_fit_onto_a_full_disk(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")

    monkeypatch.setattr("torch.save", full)
    with pytest.raises(OSError, match=r"cannot write last\.pt into the checkpoint folder"):
        _fit_tiny(tmp_path, 1)
    assert not list(tmp_path.iterdir())  # no temporary file left behind


@pytest.mark.parametrize("diameter", [1e6, 0.01])
def test_segment_diameter_impossible_for_the_image(pair, diameter):
    image, _ = pair
    with pytest.raises(ValueError, match=r"diameters from [\d.]+ to [\d.]+ px are possible"):
        cu.segment(image, "cellpose", diameter=diameter, model=_tiny("cellpose"))


def test_fine_tune_inputs_a_user_may_give(pair):
    image, labels = pair
    net = _tiny("cellpose")
    with pytest.raises(ValueError, match="no object in any image"):
        cu.fine_tune("cellpose", [image], [np.zeros_like(labels)], model=net, **FAST)
    with pytest.raises(ValueError, match="takes 1 channel"):
        cu.fine_tune("cellpose", [np.stack([image, image])], [labels], model=net, **FAST)
    tuned, history = cu.fine_tune(
        "cellpose", (x for x in [image]), (y for y in [labels]), model=net, progress=False, **FAST
    )
    assert len(history) == 1
    with pytest.raises(ValueError, match="needs a CellposeNet"):
        cu.fine_tune("cellpose", [image], [labels], model=nn.Sequential(), freeze="encoder")


def test_freeze_encoder_raises_on_a_network_that_does_not_declare_it():
    with pytest.raises(ValueError, match="does not say which parameters form its encoder"):
        freeze_parameters(nn.Sequential(nn.Conv2d(1, 1, 3)), "encoder")


@pytest.mark.parametrize("model", ["cellpose", {"w": torch.zeros(1)}])
def test_segment_with_a_name_or_a_state_dict_as_model(pair, model):
    with pytest.raises(TypeError, match=r"zoo\.load|load_model"):
        cu.segment(pair[0], "cellpose", model=model)


@pytest.mark.parametrize("value", [-5, float("nan")])
def test_estimate_diameter_with_an_impossible_training_diameter(pair, value):
    with pytest.raises(ValueError, match="train_diameter"):
        cu.estimate_diameter(pair[0], "cellpose", model=_tiny("cellpose"), train_diameter=value)


# --- what a trained model carries ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:flows_to_masks")  # an untrained network's flows
def test_fine_tuned_model_keeps_its_diameter_and_thresholds(tmp_path, pair):
    image, labels = pair
    net = _tiny("cellpose", diameter=20.0)
    net.meta["postprocess"] = {"cellprob_threshold": -0.5, "flow_threshold": 0.6}
    tuned, _ = cu.fine_tune(
        "cellpose", [image], [labels], model=net, checkpoint_dir=tmp_path, progress=False, **FAST
    )
    again = methods.load_model(tmp_path, method="cellpose")
    for model in (tuned, again):
        assert model.meta["train_diameter_px"] == 20.0
        assert model.meta["postprocess"] == {"cellprob_threshold": -0.5, "flow_threshold": 0.6}
    options, diameter = segmentation.model_facts("cellpose", again)
    assert diameter == 20.0 and options["flow_threshold"] == 0.6
    np.testing.assert_array_equal(
        cu.segment(image, "cellpose", diameter=15, model=again),
        cu.segment(image, "cellpose", diameter=15, model=tuned),
    )


def test_a_model_without_a_training_diameter_says_so(pair):
    net = _tiny("cellpose", diameter=None)
    with pytest.raises(ValueError, match="does not record the nucleus diameter"):
        cu.segment(pair[0], "cellpose", diameter=14, model=net)
    labels = cu.segment(pair[0], "cellpose", model=net)  # as it is
    assert labels.shape == (64, 64)
    # train_method records it
    model, _ = methods.train_method(
        "cellpose",
        [pair[0]],
        [pair[1]],
        epochs=1,
        batch_size=2,
        patch_size=32,
        patches_per_epoch=2,
        progress=False,
        config={"base_channels": 4, "depth": 2},
    )
    assert model.meta["train_diameter_px"] == pytest.approx(
        cu.scale.median_diameter(pair[1]), abs=0.01
    )


def test_no_diameter_estimate_warns(pair):
    blank = np.zeros((64, 64), np.float32)
    with pytest.warns(UserWarning, match="no diameter could be estimated"):  # finds nothing
        labels = cu.segment(blank, "stardist", model=_tiny("stardist"), prob_thresh=1.0)
    assert labels.shape == (64, 64)


# --- large images ------------------------------------------------------------------------------


def test_block_spans_tile_the_axis():
    spans = blockwise.block_spans(1000, block=256, margin=32)
    kept = [(k0, k1) for *_, k0, k1 in spans]
    assert kept[0][0] == 0 and kept[-1][1] == 1000
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))  # no gap, no overlap
    for start, stop, k0, k1 in spans:
        assert start % 64 == 0 and start <= max(0, k0 - 32) and stop >= min(1000, k1 + 32)
    assert blockwise.block_spans(200, block=256) == [(0, 200, 0, 200)]


def test_large_images_run_block_by_block(monkeypatch, capsys):
    """Blocks find the objects one pass finds, each once, with a progress bar over them."""
    if "stardist" not in zoo.available():
        pytest.skip("no zoo model committed")
    image, truth = synthetic_nuclei((400, 520), n_nuclei=60, radius=(11.0, 18.0), seed=5)
    whole = cu.segment(image, "stardist", diameter=28.2)
    monkeypatch.setattr(segmentation, "BLOCK", 192)  # blocks of 192 px: 3 x 4 of them
    monkeypatch.setattr(segmentation, "WHOLE_PASS_BLOCK", 192)
    monkeypatch.setattr(segmentation, "PROGRESS_PIXELS", 100_000)
    capsys.readouterr()
    blocks = cu.segment(image, "stardist", diameter=28.2)
    assert "segment (stardist)" in capsys.readouterr().err
    assert np.array_equal(np.unique(blocks), np.arange(blocks.max() + 1))  # ids 0..N
    assert cu.metrics.matching(whole, blocks).f1 > 0.95
    assert cu.metrics.matching(truth, blocks).f1 > 0.9 * cu.metrics.matching(truth, whole).f1
    cu.segment(image, "stardist", diameter=28.2, progress=False)
    assert "segment" not in capsys.readouterr().err


def test_checkpoint_folder_check_leaves_nothing(tmp_path):
    checkpoint.prepare_checkpoint_dir(tmp_path / "run")
    assert os.listdir(tmp_path / "run") == []
