"""3-D methods as records: built for a voxel, trained through train_method, saved, segmenting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import methods
from course_utils.data import normalize_percentile, synthetic_nuclei_3d
from course_utils.metrics import average_precision
from course_utils.models.unet3d import pooling_plan
from course_utils.volumes import VOLUME_METHODS, get_volume_method, pretrained
from course_utils.volumes.methods import anisotropy_of, rays_of, voxel_factors
from course_utils.volumes.patches import VolumePatches
from course_utils.volumes.predict import predict_volume, stardist3d_to_labels
from course_utils.volumes.targets import cellpose3d_targets


@pytest.fixture(scope="module")
def stacks():
    pairs = [synthetic_nuclei_3d((24, 64, 64), seed=s) for s in (1, 2)]
    return [normalize_percentile(x, 1, 99.8) for x, _ in pairs], [y for _, y in pairs]


def test_a_record_builds_its_network_for_the_voxel():
    record = get_volume_method("stardist3d")
    model = record.build(2.2, mode="fast")
    assert type(model).__name__ == "StarDist3DNet" and anisotropy_of(model) == (2.2, 1.0, 1.0)
    assert model.config["pooling"] == [list(p) for p in pooling_plan(2.2, 2)]
    assert model.config["n_rays"] == 64 and rays_of(model).shape == (64, 3)
    cubes = record.build((1.0, 1.0, 1.0), mode="fast")  # z is pooled too when voxels are cubes
    assert cubes.config["pooling"][0][0] == 2 and model.config["pooling"][0][0] == 1
    assert get_volume_method(record) is record and set(VOLUME_METHODS) == {
        "unet3d",
        "stardist3d",
        "cellpose3d",
    }


@pytest.mark.parametrize("bad", [0, -2.0, float("nan"), (2.2, 1.0), "z", True, (2.2, 1.0, 2.0)])
def test_a_bad_anisotropy_is_refused(bad):
    with pytest.raises(ValueError, match="anisotropy"):
        get_volume_method("unet3d").build(bad, mode="fast")
    assert voxel_factors(2.2) == voxel_factors([2.2, 1, 1]) == (2.2, 1.0, 1.0)


def test_unknown_names_point_at_the_records():
    with pytest.raises(ValueError, match="unet3d"):
        get_volume_method("mesmer3d")
    with pytest.raises(ValueError, match="VOLUME_METHODS"):
        methods.get("stardist3d")


@pytest.mark.parametrize("name", ["unet3d", "stardist3d", "cellpose3d"])
def test_train_method_trains_a_3d_record_and_its_checkpoint_rebuilds_it(name, stacks, tmp_path):
    images, labels = stacks
    model, history = methods.train_method(
        name,
        images,
        labels,
        anisotropy=2.2,
        epochs=1,
        patches_per_epoch=4,
        checkpoint_dir=tmp_path,
        data="synthetic",
        progress=False,
    )
    assert np.isfinite(history.records[-1]["train_loss"]) and not model.training
    assert model.meta["method"] == name and model.meta["anisotropy"] == [2.2, 1.0, 1.0]
    assert model.meta["patch"] == [16, 64, 64] and model.meta["data"] == "synthetic"
    assert model.meta["budget"]["patches_per_epoch"] == 4
    saved = sorted(tmp_path.rglob("*.pt"))
    loaded = methods.load_model(saved[-1])
    assert anisotropy_of(loaded) == (2.2, 1.0, 1.0)
    x = torch.from_numpy(images[0][None, None, :16, :64, :64].copy())
    with torch.no_grad():
        first, again = model(x), loaded.eval()(x)
    for a, b in zip(
        first if isinstance(first, tuple) else (first,),
        again if isinstance(again, tuple) else (again,),
    ):
        torch.testing.assert_close(a, b)


def test_the_record_trains_exactly_the_loop_written_by_hand(stacks):
    # train_method("unet3d") = VolumePatches of the record's crop and targets, fit with Adam.
    from course_utils._shared.schedules import lr_schedule
    from course_utils.train import fit

    images, labels = stacks
    record = get_volume_method("unet3d")
    ours, _ = methods.train_method(
        "unet3d", images, labels, anisotropy=2.2, epochs=1, patches_per_epoch=4, progress=False
    )
    hand = record.build(2.2, seed=0)
    crops = VolumePatches(images, labels, (16, 64, 64), lambda y: record.targets(y, hand), 4)
    plan = methods.budget("volumes", "unet3d", epochs=1, patches_per_epoch=4)
    fit(
        hand,
        torch.utils.data.DataLoader(crops, batch_size=plan.batch_size),
        loss_fn=methods.get("unet_3class").loss,
        epochs=1,
        lr=plan.lr,
        optimizer=torch.optim.Adam(hand.parameters(), lr=plan.lr),
        scheduler=lr_schedule(plan.schedule, 1, plan.steps(2), plan.lr),
        seed=0,
        channels_last=False,
        progress=False,
    )
    for (key, a), b in zip(ours.state_dict().items(), hand.state_dict().values()):
        torch.testing.assert_close(a, b, msg=key)


def test_cellpose3d_targets_followed_give_the_nuclei_back():
    _, truth = synthetic_nuclei_3d((24, 64, 64), seed=3)
    flows, prob = cellpose3d_targets(truth)
    assert flows.shape == (3, *truth.shape) and flows.dtype == prob.dtype == np.float32
    np.testing.assert_array_equal(prob, truth > 0)
    assert np.abs(flows).max() == pytest.approx(5.0, rel=1e-3)  # FLOW_SCALE x unit vectors
    record = get_volume_method("cellpose3d")
    outputs = np.concatenate([flows, np.where(truth > 0, 5.0, -5.0)[None]]).astype(np.float32)
    found = record.to_labels(outputs, record.build(2.2, mode="fast"), **record.postprocess)
    assert average_precision([truth], [found], (0.5,), volume=True)[0] > 0.9
    empty_flows, empty_prob = cellpose3d_targets(np.zeros((8, 16, 16), np.int32))
    assert not empty_flows.any() and not empty_prob.any()


def test_a_network_of_another_record_is_refused():
    unet = get_volume_method("unet3d").build(2.2, mode="fast")
    with pytest.raises(ValueError, match="'cellpose3d' needs 4"):
        get_volume_method("cellpose3d").check_network(unet, "start")
    with pytest.raises(ValueError, match="'unet3d' needs 3"):
        get_volume_method("unet3d").segment(
            get_volume_method("cellpose3d").build(2.2), np.zeros((16, 64, 64), np.float32)
        )


def test_fine_tuning_the_pretrained_model_keeps_its_voxel(stacks):
    images, labels = stacks
    star, _, _ = pretrained.load_pretrained()
    tuned, _ = methods.train_method(
        "stardist3d", images, labels, start=star, epochs=1, patches_per_epoch=2, progress=False
    )
    assert tuned is star and tuned.meta["anisotropy"] == [2.2, 1.0, 1.0]
    assert tuned.meta["n_rays"] == 64  # the pretrained model's description is kept
    with pytest.raises(ValueError, match="differs"):
        methods.train_method("stardist3d", images, labels, start=star, anisotropy=1.0)
    with pytest.raises(ValueError, match="cannot apply to start"):
        methods.train_method("stardist3d", images, labels, start=star, config={"n_rays": 32})
    with pytest.raises(ValueError, match="not the StarDist3DNet"):
        methods.train_method(
            "stardist3d", images, labels, start=get_volume_method("unet3d").build(2.2)
        )


def test_segment_is_the_pipeline_written_by_hand():
    # The pretrained StarDist-3D through its record gives the labels of notebook 11's steps.
    star, rays, meta = pretrained.load_pretrained()
    raw, truth = synthetic_nuclei_3d(seed=7)
    image = normalize_percentile(raw, 1, 99.8)
    labels = get_volume_method("stardist3d").segment(star, image, **meta["postprocess"])
    logits, dist = predict_volume(star, image)
    by_hand = stardist3d_to_labels(
        logits, dist, rays, anisotropy=meta["anisotropy"], **meta["postprocess"]
    )
    np.testing.assert_array_equal(labels, by_hand)
    assert (
        labels.dtype == np.int32
        and average_precision([truth], [labels], (0.5,), volume=True)[0] > 0.3
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"anisotropy": None}, "anisotropy"),
        ({"channels": 1}, "channels does not apply"),
        ({"patch_size": 64}, "patch_size does not apply"),
        ({"labels": "float"}, "integer"),
        ({"labels": "negative"}, "negative"),
        ({"val_images": "one"}, "both"),
        ({"augment": "flip"}, "augment does not apply"),
        ({"recipe": "sparse"}, "recipe does not apply"),
        ({"patch": 16}, "three positive ints"),
        ({"patch": (16, 64)}, "three positive ints"),
        ({"patch": (16, 64, 48)}, "y and x must be equal"),
        ({"patch": (15, 64, 64)}, "divisible"),
        ({"budget": "kromp"}, "2-D patch side"),
    ],
)
def test_train_method_refuses_what_cannot_apply_to_volumes(change, match, stacks):
    images, labels = stacks
    kwargs = {"anisotropy": 2.2, "epochs": 1, "patches_per_epoch": 2, "progress": False}
    passed = ("anisotropy", "channels", "patch_size", "augment", "recipe", "patch", "budget")
    kwargs.update({k: v for k, v in change.items() if k in passed})
    if change.get("labels") == "float":
        labels = [y.astype(np.float32) for y in labels]
    if change.get("labels") == "negative":
        labels = [np.where(y == 0, -1, y) for y in labels]
    if change.get("val_images"):
        kwargs["val_images"] = images
    with pytest.raises(ValueError, match=match):
        methods.train_method("unet3d", images, labels, **kwargs)


def test_segment_refuses_a_plane_nan_and_unknown_options():
    record = get_volume_method("unet3d")
    model = record.build(2.2, mode="fast")
    with pytest.raises(ValueError, match="Z, Y, X"):
        record.segment(model, np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        record.segment(model, np.full((16, 64, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="prob_thresh"):
        record.segment(model, np.zeros((16, 64, 64), np.float32), prob_thresh=0.5)
    model.meta = {}
    with pytest.raises(ValueError, match="anisotropy"):
        record.segment(model, np.zeros((16, 64, 64), np.float32))


def test_validation_stacks_are_scored_and_the_budget_follows_the_mode(stacks):
    images, labels = stacks
    model, history = methods.train_method(
        "stardist3d",
        images[:1],
        labels[:1],
        anisotropy=2.2,
        val_images=images[1:],
        val_labels=labels[1:],
        epochs=1,
        patches_per_epoch=4,
        freeze="encoder",
        progress=False,
    )
    assert np.isfinite(history.records[-1]["val_loss"])
    assert methods.budget("volumes", "stardist3d", mode="full").epochs == 10
    assert methods.budget("volumes", "unet3d", mode="fast").patches(1) == 80
    with pytest.raises(ValueError, match="mode must be one of"):
        get_volume_method("unet3d").config("Full")
