"""course_utils.sparse: masked losses (dense parity, autograd) and train_sparse."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import course_utils.sparse as sp
from course_utils import losses
from course_utils.data import augment as aug
from course_utils.data import synthetic_nuclei
from course_utils.methods import get, train_method


def _batch(targets_fn, labels_list):
    """Targets of several label patches, batched as a DataLoader would."""
    items = [targets_fn(lab) for lab in labels_list]
    items = [item if isinstance(item, tuple) else (item,) for item in items]
    return [torch.from_numpy(np.stack(parts)) for parts in zip(*items)]


@pytest.fixture(scope="module")
def patches():
    """Two 64 x 64 label patches, dense, and a sparse version of each."""
    dense = [synthetic_nuclei((64, 64), n_nuclei=14, seed=s)[1] for s in (1, 2)]
    sparse = [
        sp.sparsify(lab, fraction=0.3, background="band", band=3, seed=s)
        for s, lab in enumerate(dense)
    ]
    assert all((s < 0).any() and (s > 0).any() for s in sparse)
    return dense, sparse


def _outputs(method, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    if method == "stardist":
        b, _, h, w = shape
        return (torch.randn(b, 1, h, w, generator=g), 5 + 3 * torch.randn(b, 32, h, w, generator=g))
    return torch.randn(*shape, generator=g)


CASES = {
    "cellpose": (lambda: sp.SPARSE["cellpose"].target_fn(), (2, 3, 64, 64), 2),
    "stardist": (
        lambda: sp.SPARSE["stardist"].target_fn(get("stardist").config()),
        (2, 33, 32, 32),
        2,
    ),
    "unet_3class": (lambda: sp.SPARSE["unet_3class"].target_fn(), (2, 3, 64, 64), 1),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_masked_loss_on_full_annotations_equals_the_dense_loss(patches, method):
    dense, _ = patches
    targets_fn, shape, n_targets = CASES[method]
    targets = _batch(targets_fn(), dense)
    record = get(method)
    out = _outputs(method, shape)
    dense_loss = record.loss(out, *targets[:n_targets])
    sparse_loss = sp.SPARSE[method].loss(out, *targets)
    torch.testing.assert_close(sparse_loss, dense_loss, rtol=1e-6, atol=1e-7)
    dense_targets = _batch(record.target_fn(), dense)
    for a, b in zip(targets, dense_targets):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("method", sorted(CASES))
def test_unknown_pixels_get_no_gradient(patches, method):
    _, sparse = patches
    targets_fn, shape, _ = CASES[method]
    targets = _batch(targets_fn(), sparse)
    masks = targets[2:] if method == "cellpose" else targets[-1:]
    out = _outputs(method, shape)
    leaves = [o.clone().requires_grad_(True) for o in (out if method == "stardist" else [out])]
    loss = sp.SPARSE[method].loss(tuple(leaves) if method == "stardist" else leaves[0], *targets)
    loss.backward()
    grads = [leaf.grad for leaf in leaves]
    if method == "cellpose":  # flows (channels 0, 1) by flow_mask, the logit by prob_mask
        flow_mask, prob_mask = masks
        assert torch.all(grads[0][:, :2][(flow_mask == 0)[:, None].expand(-1, 2, -1, -1)] == 0)
        assert torch.all(grads[0][:, 2][prob_mask == 0] == 0)
        assert (grads[0][:, :2].abs().sum(1)[flow_mask > 0] > 0).float().mean() > 0.9
    else:
        untrusted = masks[0] == 0
        if method == "unet_3class":
            untrusted = untrusted[:, None]
        for grad in grads:
            assert torch.all(grad[untrusted.expand_as(grad)] == 0)
        assert (grads[0].abs().sum(1) > 0).any()
    assert torch.isfinite(loss)


def test_the_masked_losses_are_the_dense_formulas_on_the_trusted_pixels(patches):
    _, sparse = patches
    flows, prob, flow_mask, prob_mask = _batch(sp.SPARSE["cellpose"].target_fn(), sparse)
    out = _outputs("cellpose", (2, 3, 64, 64))
    f, p = flow_mask > 0, prob_mask > 0
    pred_flows, true_flows = out[:, :2].permute(0, 2, 3, 1), flows.permute(0, 2, 3, 1)
    expected = F.mse_loss(pred_flows[f], true_flows[f]) / 2
    expected += F.binary_cross_entropy_with_logits(out[:, 2][p], prob[p])
    got = sp.cellpose_sparse_loss(out, flows, prob, flow_mask, prob_mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    prob, dist, mask = _batch(sp.SPARSE["stardist"].target_fn(get("stardist").config()), sparse)
    logits, pred = _outputs("stardist", (2, 33, 32, 32))
    m = mask[:, 0] > 0
    w = prob[:, 0][m]
    error = (pred - dist).abs().permute(0, 2, 3, 1)[m].mean(1)
    bce = F.binary_cross_entropy_with_logits(logits[:, 0][m], prob[:, 0][m])
    expected = bce + losses.STARDIST_DIST_WEIGHT * (w * error).mean() / (w.mean() + 1e-6)
    torch.testing.assert_close(
        sp.stardist_sparse_loss((logits, pred), prob, dist, mask), expected, rtol=1e-5, atol=1e-6
    )


def test_unknown_pixels_do_not_change_the_loss_and_nothing_known_gives_zero(patches):
    _, sparse = patches
    targets = _batch(sp.SPARSE["cellpose"].target_fn(), sparse)
    out = _outputs("cellpose", (2, 3, 64, 64))
    changed = out.clone()
    changed[(targets[3] == 0)[:, None].expand(-1, 3, -1, -1)] = 1e3
    changed[:, :2][(targets[2] == 0)[:, None].expand(-1, 2, -1, -1)] = -1e3
    torch.testing.assert_close(
        sp.cellpose_sparse_loss(changed, *targets), sp.cellpose_sparse_loss(out, *targets)
    )
    nothing = [t * 0 if k >= 2 else t for k, t in enumerate(targets)]
    assert sp.cellpose_sparse_loss(out, *nothing).item() == 0.0


# --- recipes and train_sparse -----------------------------------------------------------------


def test_recipes_attach_to_the_records_by_name():
    assert set(sp.SPARSE) == {"cellpose", "stardist", "unet_3class"}
    for name, recipe in sp.SPARSE.items():
        assert recipe.record is get(name) and sp.recipe(name) is recipe
        assert sp.recipe(get(name)) is recipe and sp.recipe(recipe) is recipe
        pickle.loads(pickle.dumps(recipe.target_fn()))  # DataLoader workers receive it
    fn = sp.SPARSE["stardist"].target_fn({"n_rays": 8, "grid": 2})
    assert fn.keywords == {"n_rays": 8, "grid": 2}
    with pytest.raises(ValueError, match="weight map"):
        sp.recipe("unet_weighted")
    with pytest.raises(ValueError, match="method must be one of"):
        sp.recipe("maskrcnn")


@pytest.fixture(scope="module")
def tiny_data():
    pairs = [synthetic_nuclei((64, 64), n_nuclei=12, seed=s) for s in (3, 4)]
    return [x for x, _ in pairs], [y for _, y in pairs]


@pytest.mark.parametrize("method", ["cellpose", "stardist"])
def test_a_fully_annotated_sparse_run_is_the_dense_run(tiny_data, method):
    images, labels = tiny_data
    options = {
        "epochs": 2,
        "patch_size": 32,
        "patches_per_epoch": 8,
        "batch_size": 4,
        "lr": 3e-3,
        "augment": aug.flip_rot90,
        "progress": False,
        "seed": 1,
        "config": {"base_channels": 4},
    }
    if method == "stardist":
        options["config"]["n_rays"] = 8
    dense_model, dense_history = train_method(method, images, labels, **options)
    sparse_model, sparse_history = sp.train_sparse(
        method, images, labels, crop="uniform", **options
    )
    np.testing.assert_allclose(
        [r["train_loss"] for r in sparse_history.records],
        [r["train_loss"] for r in dense_history.records],
        rtol=1e-5,
    )
    for (name, a), b in zip(dense_model.state_dict().items(), sparse_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_train_sparse_on_sparse_labels(tiny_data, tmp_path):
    images, labels = tiny_data
    sparse = [sp.sparsify(lab, k=2, background="band", seed=0) for lab in labels]
    model, history = sp.train_sparse(
        "stardist",
        images,
        sparse,
        epochs=1,
        patch_size=32,
        patches_per_epoch=8,
        batch_size=4,
        progress=False,
        checkpoint_dir=tmp_path,
        data="synthetic, 2 per image",
        config={"base_channels": 4, "n_rays": 8},
        augment=aug.random_rotation(30, mode="constant"),
        val_images=images,
        val_labels=sparse,
    )
    assert len(history.records) == 1 and np.isfinite(history.records[0]["val_loss"])
    meta = torch.load(tmp_path / "last.pt", weights_only=False)["meta"]
    assert meta["sparse"] is True and meta["method"] == "stardist"
    # prepare saw the annotated objects only: the distance head starts at their mean ray.
    fresh = get("stardist").build(seed=0, base_channels=4, n_rays=8)
    mean = get("stardist").prepare  # the record's, on the objects with unknown as background
    mean(fresh, [np.maximum(s, 0) for s in sparse])
    trained = sp.train_sparse(
        "stardist",
        images,
        sparse,
        epochs=1,
        patch_size=32,
        lr=0.0,
        patches_per_epoch=4,
        progress=False,
        batch_size=4,
        config={"base_channels": 4, "n_rays": 8},
    )[0]
    torch.testing.assert_close(trained.dist_head.bias, fresh.dist_head.bias)


def test_train_sparse_errors(tiny_data):
    images, labels = tiny_data
    with pytest.raises(ValueError, match="both val_images and val_labels"):
        sp.train_sparse("cellpose", images, labels, epochs=1, val_images=images)
    with pytest.raises(ValueError, match="2 images but 1"):
        sp.train_sparse("cellpose", images, labels[:1], epochs=1)
    with pytest.raises(ValueError, match="channel"):  # a 1-channel network, 2-channel images
        sp.train_sparse(
            "cellpose",
            [np.stack([x, x]) for x in images],
            labels,
            epochs=1,
            config={"in_channels": 1},
        )
    with pytest.raises(ValueError, match="channel"):  # images of different channel counts
        sp.train_sparse("cellpose", [images[0], np.stack([images[1]] * 2)], labels, epochs=1)
    with pytest.raises(ValueError, match="below -1"):
        sp.train_sparse("cellpose", images, [lab - 2 for lab in labels], epochs=1, patch_size=32)
