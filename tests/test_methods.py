"""course_utils.methods: one record per method, self-describing checkpoints, and nobody else
restating a recipe (notebook 07b trains and predicts through the records)."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_utils import losses, methods
from course_utils.checkpoint import CheckpointError
from course_utils.data import synthetic_nuclei
from course_utils.methods import training
from course_utils.train import fit, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"depth": 2, "base_channels": 4}
PATCH = {"unet_weighted": 52}  # a valid input of the depth-2 original U-Net (-> 12)


@pytest.fixture(scope="module")
def data():
    image, labels = synthetic_nuclei((96, 112), seed=3)
    return [image, image[::-1].copy()], [labels, labels[::-1].copy()]


def test_every_method_has_one_complete_record():
    assert set(methods.NUCLEUS_METHODS) <= set(methods.METHODS)
    for name, record in methods.METHODS.items():
        assert record.name == name and record.notebook in ("03", "05", "06", "10")
        assert set(record.configs) == {"fast", "full"} == set(record.patch_size)
        assert callable(record.targets) and callable(record.loss) and callable(record.to_labels)
        with pytest.raises(dataclasses.FrozenInstanceError):
            record.loss = None  # a record is frozen
        with pytest.raises(TypeError):
            record.configs["fast"]["depth"] = 9  # and so are its tables
    assert methods.METHODS["stardist"].loss is losses.stardist_loss
    with pytest.raises(ValueError, match="method must be one of"):
        methods.get("mask_rcnn")


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_configs_build_in_both_modes(mode):
    for record in methods.METHODS.values():
        model = record.build(mode=mode)
        assert model.config == {**model.config, **record.configs[mode]}
        assert type(model).__name__ == record.network


def test_target_functions_pickle_for_dataloader_workers(data):
    labels = data[1][0][:64, :64]
    for record in methods.METHODS.values():
        fn = record.target_fn(record.build(**TINY).config)
        clone = pickle.loads(pickle.dumps(fn))
        for a, b in zip(_as_tuple(fn(labels)), _as_tuple(clone(labels))):
            np.testing.assert_array_equal(a, b)


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_one_step_through_the_record_checkpoints_and_rebuilds(method, data, tmp_path):
    images, labels = data
    model, history = methods.train_method(
        method,
        images,
        labels,
        epochs=1,
        patch_size=PATCH.get(method, 32),
        batch_size=2,
        patches_per_epoch=2,
        config=TINY,
        checkpoint_dir=tmp_path,
        data="synthetic x2",
        progress=False,
        device="cpu",
    )
    assert np.isfinite(history[0]["train_loss"])
    meta = methods.read_meta(tmp_path)
    assert meta["method"] == method and meta["data"] == "synthetic x2"
    assert meta["network"] == methods.get(method).network and meta["network_args"] == model.config
    assert meta["mode"] in ("fast", "full") and meta["course_version"]
    rebuilt = methods.load_model(tmp_path / "last.pt", method=method)
    assert not rebuilt.training and rebuilt.config == model.config
    for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)


def test_notebook_07b_trains_with_the_records_loss_and_targets(data, monkeypatch):
    """train_method (notebook 07b) hands fit exactly the record's loss and targets."""
    images, labels = data
    seen = {}

    def spy(model, train_loader, val_loader=None, **kwargs):
        seen["loss"], seen["targets"] = kwargs["loss_fn"], train_loader.dataset.target_fn
        return fit(model, train_loader, val_loader, **kwargs)

    monkeypatch.setattr(training, "fit", spy)
    patch = labels[0][:64, :64]
    for name, record in methods.METHODS.items():
        methods.train_method(
            name,
            images,
            labels,
            epochs=1,
            patch_size=PATCH.get(name, 32),
            patches_per_epoch=2,
            batch_size=2,
            progress=False,
            device="cpu",
            config=TINY,
        )
        assert seen["loss"] is record.loss
        assert seen["targets"].func is record.targets
        config = {**record.config(), **TINY}
        for a, b in zip(
            _as_tuple(seen["targets"](patch)), _as_tuple(record.target_fn(config)(patch))
        ):
            np.testing.assert_array_equal(a, b)


def test_no_notebook_or_benchmark_restates_a_loss():
    """Only the records define the methods' losses: notebook 07b and the benchmarks define none,
    and notebooks 03, 05, 06 compare their hand-built loss with the record's."""
    nb07b = (ROOT / "notebooks/src/07b_capstone.py").read_text()
    bench = (ROOT / "benchmarks/train_throughput.py").read_text()
    for text in (nb07b, bench):
        assert not re.search(r"def \w*(loss|targets)\w*\(", text)
        assert "cross_entropy" not in text and "mse_loss" not in text
    for nb, method in (
        ("03_unet", "unet_weighted"),
        ("05_cellpose_flows", "cellpose"),
        ("06_stardist", "stardist"),
    ):
        text = (ROOT / f"notebooks/src/{nb}.py").read_text()
        assert f'cu.methods.get("{method}")' in text and ".loss(" in text, nb


def test_old_checkpoints_without_a_description_say_how_to_retrain(tmp_path):
    model = methods.get("cellpose").build(**TINY)
    old = {"model": model.state_dict(), "optimizer": {}, "epoch": 1, "history": {}}
    torch.save(old, tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match=r"written before checkpoints .* notebook 05"):
        methods.load_model(tmp_path, method="cellpose")


def test_a_network_outside_the_course_is_described_as_such(tmp_path):
    net = nn.Conv2d(1, 1, 3, padding=1)
    loader = [(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))]
    fit(
        net,
        loader,
        loss_fn=nn.functional.mse_loss,
        epochs=1,
        checkpoint_dir=tmp_path,
        progress=False,
        device="cpu",
    )
    assert methods.read_meta(tmp_path)["network"] is None
    with pytest.raises(CheckpointError, match="outside course_utils.models"):
        methods.load_model(tmp_path)


def test_loading_into_another_architecture_names_what_differs(data, tmp_path):
    images, labels = data
    methods.train_method(
        "unet_3class",
        images,
        labels,
        epochs=1,
        patch_size=32,
        patches_per_epoch=2,
        batch_size=2,
        config=TINY,
        checkpoint_dir=tmp_path,
        progress=False,
        device="cpu",
    )
    other = methods.get("unet_3class").build(depth=2, base_channels=8)
    with pytest.raises(CheckpointError, match=r"base_channels=4 there, 8 here") as info:
        load_checkpoint(other, tmp_path)
    assert str(tmp_path) in str(info.value)


def test_fit_refuses_meta_that_would_overwrite_its_own_fields(tmp_path):
    net = nn.Conv2d(1, 1, 1)
    loader = [(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))]
    with pytest.raises(ValueError, match="may not set 'network'"):
        fit(
            net,
            loader,
            loss_fn=nn.functional.mse_loss,
            epochs=1,
            checkpoint_dir=tmp_path,
            meta={"network": "x"},
            progress=False,
        )


def test_outputs_to_labels_uses_the_record_defaults_and_refuses_unknown_options(data):
    record = methods.get("stardist")
    with pytest.raises(TypeError, match="no post-processing option"):
        record.outputs_to_labels(np.zeros((33, 8, 8)), (16, 16), grid=2, flow_threshold=0.4)
    labels = data[1][0]
    record_default = record.outputs_to_labels
    assert record.postprocess == {"prob_thresh": 0.5, "nms_thresh": 0.4}
    out = np.zeros((33, *labels.shape), np.float32) - 10  # probability ~0 everywhere
    assert record_default(out, labels.shape).max() == 0


def test_stardist_distance_head_starts_at_the_mean_distance(data):
    model = methods.get("stardist").build(**TINY)
    typical = methods.init_stardist_distances(model, data[1][:1])
    with torch.no_grad():
        _, dist = model(torch.zeros(1, 1, 32, 32))
    assert dist.mean().item() == pytest.approx(typical, rel=0.1)
    with pytest.raises(ValueError, match="no object"):
        methods.init_stardist_distances(model, [np.zeros((8, 8), np.int32)])


# --- channels as an argument of their own, and the affinity record (notebook 10) ---------------


@pytest.fixture(scope="module")
def two_channel_data():
    from course_utils.data import synthetic_cells

    pairs = [synthetic_cells((64, 64), seed=s) for s in (1, 2)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_channels_come_from_the_images_or_are_checked_against_them(two_channel_data, tmp_path):
    images, labels = two_channel_data
    short = {
        "epochs": 1,
        "patch_size": 32,
        "patches_per_epoch": 2,
        "batch_size": 2,
        "progress": False,
        "device": "cpu",
    }
    model, _ = methods.train_method("cellpose", images, labels, config=TINY, **short)
    assert model.config["in_channels"] == 2
    model, _ = methods.train_method(
        "cellpose",
        [x[0] for x in images],
        labels,
        channels=1,
        config=TINY,
        checkpoint_dir=tmp_path,
        **short,
    )
    assert (
        model.config["in_channels"] == 1
        and methods.read_meta(tmp_path)["network_args"]["in_channels"] == 1
    )
    with pytest.raises(ValueError, match=r"channels=1 but the images have 2 channel\(s\)"):
        methods.train_method("cellpose", images, labels, channels=1, config=TINY, **short)
    with pytest.raises(ValueError, match=r"config\['in_channels'\]=1 but the images have 2"):
        methods.train_method("stardist", images, labels, config={**TINY, "in_channels": 1}, **short)
    with pytest.raises(ValueError, match="different numbers of channels"):
        methods.train_method("cellpose", [images[0], images[1][0]], labels, **short)
    with pytest.raises(ValueError, match=r"val_images have 2 channel\(s\)"):
        methods.train_method(
            "cellpose",
            [x[0] for x in images],
            labels,
            val_images=images,
            val_labels=labels,
            config=TINY,
            **short,
        )
    with pytest.raises(TypeError, match="channels must be an int"):
        training.resolve_channels(images, 2.0)
    assert training.resolve_channels([np.zeros((3, 8, 8))]) == 3


@pytest.mark.parametrize("method", list(methods.METHODS))
def test_a_one_channel_model_given_two_channels_is_a_clear_error(method):
    record = methods.get(method)
    model = record.build(**TINY)
    image = np.zeros((2, 64, 64), np.float32)
    with pytest.raises(ValueError, match=r"takes 1 input channel\(s\), got 2"):
        record.segment(model, image)
    two = record.build(**TINY, in_channels=2)
    with pytest.raises(ValueError, match=r"takes 2 input channel\(s\), got 1"):
        record.segment(two, image[0])
    assert record.segment(two, image).shape == (64, 64)


def test_the_affinity_record_recovers_labels_from_perfect_outputs(data):
    from course_utils.targets import AFFINITY_OFFSETS, affinity_targets

    record = methods.get("affinities")
    assert record.targets is affinity_targets and record.network == "UNet"
    assert all(abs(dy) + abs(dx) == 1 for dy, dx in AFFINITY_OFFSETS[:2])  # the grouped edges
    labels = data[1][0]
    fg, aff, counted = record.target_fn()(labels)
    outputs = np.where(np.concatenate([fg, aff]) > 0, 10.0, -10.0)  # certain logits
    for method in ("components", "watershed"):
        got = record.outputs_to_labels(outputs, labels.shape, method=method)
        assert got.max() == labels.max()
        assert len(set(zip(got.ravel().tolist(), labels.ravel().tolist()))) == labels.max() + 1
    with pytest.raises(ValueError, match="affinity outputs must be"):
        record.outputs_to_labels(outputs[:3], labels.shape)


def test_the_affinity_loss_counts_only_the_marked_pairs():
    record = methods.get("affinities")
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(2, 7, 8, 8, generator=gen)
    fg = (torch.rand(2, 1, 8, 8, generator=gen) > 0.5).float()
    aff = (torch.rand(2, 6, 8, 8, generator=gen) > 0.5).float()
    counted = (torch.rand(2, 6, 8, 8, generator=gen) > 0.3).float()
    p_fg, p_aff = torch.sigmoid(out[:, :1].double()), torch.sigmoid(out[:, 1:].double())
    bce_fg = -(fg * p_fg.log() + (1 - fg) * (1 - p_fg).log()).mean()
    bce_aff = -(aff * p_aff.log() + (1 - aff) * (1 - p_aff).log())
    expected = bce_fg + (bce_aff * counted).sum() / counted.sum()
    assert float(record.loss(out, fg, aff, counted)) == pytest.approx(float(expected), rel=1e-5)
    changed = out.clone()
    changed[:, 1:][counted == 0] += 5.0  # uncounted pairs do not matter
    assert float(record.loss(changed, fg, aff, counted)) == pytest.approx(
        float(record.loss(out, fg, aff, counted)), rel=1e-6
    )
    assert torch.isfinite(record.loss(out, fg, aff, torch.zeros_like(counted)))


def test_save_model_is_the_whole_description_of_a_trained_network(tmp_path):
    model = methods.get("cellpose").build(base_channels=4, depth=2)
    model.meta = {
        "method": "cellpose",
        "data": "two images",
        "train_diameter_px": 21.5,
        "postprocess": {"cellprob_threshold": -0.5},
        "network": "stale",
    }
    path = methods.save_model(model, tmp_path / "deep" / "mine.pt", half=True, mode="zoo-test")
    state = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    loaded = methods.load_model(path, method="cellpose")
    assert loaded.meta["network"] == "CellposeNet" and loaded.meta["mode"] == "zoo-test"
    for key in ("method", "data", "train_diameter_px", "postprocess"):
        assert loaded.meta[key] == model.meta[key]
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a.half().float() if a.is_floating_point() else a, b)
    # the zoo's files are in this format: every key save_model writes is there (and the card)
    zoo_meta = methods.read_meta(Path(__file__).resolve().parents[1] / "models" / "cellpose.pt")
    assert set(state["meta"]) <= set(zoo_meta)
    with pytest.raises(ValueError, match="torch.save"):
        methods.save_model(torch.nn.Conv2d(1, 1, 3), tmp_path / "plain.pt")


@pytest.mark.parametrize("name", list(methods.METHODS))
def test_every_record_end_to_end_on_a_tiny_image(name, tmp_path):
    """targets -> loss -> one optimiser step -> instances -> checkpoint -> reload -> same."""
    record = methods.get(name)
    image, labels = synthetic_nuclei((96, 112), seed=3)
    model = record.build(seed=0, **TINY)
    if record.prepare is not None:
        record.prepare(model, [labels])
    side = PATCH.get(name, 64)
    targets = _as_tuple(record.target_fn(model.config)(labels[:side, :side]))
    batch = [torch.from_numpy(np.ascontiguousarray(t))[None] for t in targets]
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = record.loss(model(torch.from_numpy(image[:side, :side])[None, None]), *batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    model.eval()
    found = record.segment(model, image)
    assert found.dtype == np.int32 and found.shape == image.shape
    path = methods.save_model(model, tmp_path / f"{name}.pt", {"method": name})
    again = methods.load_model(path, method=name)
    np.testing.assert_array_equal(record.segment(again, image), found)


def test_patch_and_tiles_of_the_current_mode(monkeypatch):
    record = methods.get("cellpose")
    for mode in ("fast", "full"):
        monkeypatch.setenv("COURSE_MODE", mode)
        assert record.patch() == record.patch_size[mode] == record.patch(mode)
        assert record.tiles() == dict(record.predict[mode])
    tiles = record.tiles()
    tiles["tile_size"] = 1  # a copy: the record's table stays as it is
    assert record.tiles()["tile_size"] != 1
