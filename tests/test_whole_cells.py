"""The top-down family (course_utils.topdown, models.MaskRCNNNet) of notebook 10."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_utils import methods, mode, topdown
from course_utils.data import synthetic_nuclei
from course_utils.models import NETWORKS, MaskRCNNNet

TINY = {"anchor_sizes": (8, 16, 32, 64), "rois_per_image": 32, "max_detections": 20}


@pytest.fixture(scope="module")
def nuclei():
    image, labels = synthetic_nuclei((64, 64), seed=2)
    return image, labels


def _reference_boxes(labels):
    ids = [i for i in np.unique(labels) if i > 0]
    rows = []
    for i in ids:
        ys, xs = np.nonzero(labels == i)
        rows.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return np.array(rows, np.float32).reshape(-1, 4)


def test_detection_targets_match_a_slow_reference(nuclei):
    _, labels = nuclei
    sparse = np.where(labels > 0, 10 * labels + 7, 0)  # gaps in the ids
    for lab in (labels, sparse):
        target = topdown.detection_targets(lab)
        np.testing.assert_array_equal(target["boxes"].numpy(), _reference_boxes(lab))
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert torch.all(target["labels"] == 1)
        ids = [i for i in np.unique(lab) if i > 0]
        for k, i in enumerate(ids):
            np.testing.assert_array_equal(target["masks"][k].numpy(), lab == i)
    one = np.zeros((5, 5), np.int32)
    one[2, 3] = 4
    np.testing.assert_array_equal(topdown.detection_targets(one)["boxes"], [[3, 2, 4, 3]])
    empty = topdown.detection_targets(np.zeros((6, 7), np.int32))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 6, 7)
    with pytest.raises(TypeError, match="integer labels"):
        topdown.detection_targets(labels.astype(float))


def test_detections_to_labels_paints_the_most_confident_on_top():
    masks = np.zeros((3, 6, 8), np.float32)
    masks[0, :, :5] = 0.9  # weak, big
    masks[1, :, 3:] = 0.8  # strong, overlaps the first
    masks[2, 0, 0] = 0.9  # below the score threshold
    dets = {"masks": masks, "scores": np.array([0.6, 0.9, 0.2], np.float32)}
    labels = topdown.detections_to_labels(dets, score_threshold=0.5)
    assert labels.dtype == np.int32
    expected = np.where(np.arange(8) >= 3, 1, 2)[None].repeat(6, 0)  # ids by order of score
    np.testing.assert_array_equal(labels, expected)
    assert topdown.detections_to_labels(dets, min_size=20).max() == 1  # the weak one has 18 px
    assert topdown.detections_to_labels(dets, mask_threshold=0.85).max() == 1
    assert topdown.detections_to_labels(
        {"masks": masks[:0], "scores": np.zeros(0)},
    ).shape == (6, 8)
    with pytest.raises(ValueError, match="masks must be"):
        topdown.detections_to_labels({"masks": masks, "scores": np.zeros(2)})
    with pytest.raises(ValueError, match="min_size"):
        topdown.detections_to_labels(dets, min_size=-1)


def test_maskrcnn_config_rebuilds_and_refuses_bad_arguments():
    assert NETWORKS["MaskRCNNNet"] is MaskRCNNNet
    model = MaskRCNNNet(2, **TINY)
    clone = MaskRCNNNet(**model.config)
    assert clone.config == model.config and clone.in_channels == 2
    with pytest.raises(ValueError, match="backbone must be one of"):
        MaskRCNNNet(backbone="vgg")
    with pytest.raises(ValueError, match="anchor_sizes must give 4"):
        MaskRCNNNet(anchor_sizes=(8, 16))
    with pytest.raises(ValueError, match="box_nms_thresh must be <= 1"):
        MaskRCNNNet(box_nms_thresh=1.5)
    model.eval()
    with pytest.raises(ValueError, match=r"takes 2 input channel\(s\), got 1"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(TypeError, match="list of"):
        model("image")


def test_training_proposals_detections_and_checkpoint(nuclei, tmp_path):
    image, labels = nuclei
    torch.manual_seed(0)
    model = MaskRCNNNet(1, **TINY)
    empty = np.zeros_like(labels)
    losses = topdown.train_maskrcnn(
        model,
        [image, image],
        [labels, empty],
        steps=2,
        patch_size=48,
        batch_size=2,
        checkpoint_dir=tmp_path,
        data="synthetic",
        progress=False,
        device="cpu",
    )
    assert len(losses) == 2 and all(np.isfinite(losses)) and not model.training
    proposals = topdown.region_proposals(model, image, n=7)
    assert proposals.shape == (7, 4) and proposals.dtype == np.float32
    assert np.all(proposals[:, 2] >= proposals[:, 0]) and np.all(proposals[:, 3] >= proposals[:, 1])
    dets = topdown.predict_detections(model, image, box_nms_thresh=0.3)
    n = len(dets["scores"])
    assert dets["boxes"].shape == (n, 4) and dets["masks"].shape == (n, 64, 64)
    assert np.all(np.diff(dets["scores"]) <= 0) and model.net.roi_heads.nms_thresh == 0.5
    segmented = topdown.segment_maskrcnn(model, image, score_threshold=0.0)
    assert segmented.shape == (64, 64) and segmented.dtype == np.int32
    # The checkpoint describes the network; a finished run is loaded, not trained again.
    rebuilt = methods.load_model(tmp_path)
    assert isinstance(rebuilt, MaskRCNNNet) and rebuilt.config == model.config
    assert methods.read_meta(tmp_path)["steps"] == 2
    again = MaskRCNNNet(1, **TINY)
    assert (
        topdown.train_maskrcnn(
            again, [image], [labels], steps=2, checkpoint_dir=tmp_path, progress=False
        )
        == losses
    )
    for a, b in zip(again.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"takes 1 channel\(s\), the image has 2"):
        topdown.predict_detections(model, np.stack([image, image]))
    with pytest.raises(TypeError, match="MaskRCNNNet"):
        topdown.train_maskrcnn(torch.nn.Conv2d(1, 1, 1), [image], [labels], steps=1)


def test_a_logged_maskrcnn_run_records_the_full_run_and_trains_as_an_unlogged_one(
    nuclei, monkeypatch, tmp_path
):
    # What scripts/dryrun.py sums for notebook 10b: the full run's steps and one profiled
    # step; profiling (its RPN draws random anchors) must not change the run itself.
    image, labels = nuclei
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setenv("COURSE_DRYRUN", "1")
    monkeypatch.delenv("COURSE_TRAINING_LOG", raising=False)
    log, runs = tmp_path / "runs.jsonl", []
    for logged in (False, True):
        if logged:
            monkeypatch.setenv("COURSE_TRAINING_LOG", str(log))
        torch.manual_seed(0)
        model = MaskRCNNNet(1, **TINY)
        runs.append(
            topdown.train_maskrcnn(
                model, [image], [labels], steps=50, patch_size=48, progress=False, device="cpu"
            )
        )
    assert runs[0] == runs[1] and len(runs[0]) == mode.DRYRUN_STEPS
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["method"] == "maskrcnn" and record["network"] == "MaskRCNNNet"
    assert record["epochs"] == 1 and record["batches_per_epoch"] == 50
    assert record["steps_run"] == mode.DRYRUN_STEPS and record["batch_shape"] == [2, 1, 48, 48]
    assert record["flops"] > record["forward_flops"] > 0 and record["activation_bytes"] > 0
    assert record["seconds_per_step"] > 0 and record["data_seconds_per_step"] > 0


def _ellipse_labels():
    from skimage.draw import ellipse

    lab = np.zeros((200, 200), np.int32)
    lab[ellipse(100, 100, 70, 6, rotation=0.7, shape=lab.shape)] = 3  # a thin diagonal cell
    lab[ellipse(40, 160, 15, 15, shape=lab.shape)] = 9  # a round one
    return lab


def test_mask_head_labels_keeps_round_objects_and_loses_thin_ones_at_low_resolution():
    lab = _ellipse_labels()
    from course_utils import metrics

    fine = topdown.mask_head_labels(lab, 28)
    assert fine.dtype == np.int32 and fine.max() == 2  # both objects, consecutive ids
    assert metrics.matching(lab, fine, 0.5).tp == 2
    # a thin diagonal cell in a large box is what a coarse mask loses first; a round one stays
    coarse = topdown.mask_head_labels(lab, 4)
    assert metrics.matching(lab, coarse, 0.5).tp == 1
    assert metrics.matching((lab == 9).astype(np.int32), coarse, 0.5).tp == 1
    exact = topdown.mask_head_labels(lab, 400)
    assert metrics.matching(lab, exact, 0.9).tp == 2


def test_mask_head_labels_gives_an_overlap_to_one_object_and_refuses_bad_input():
    lab = np.zeros((40, 40), np.int32)
    lab[5:20, 5:35] = 1
    lab[20:35, 5:35] = 2  # touching along a straight edge
    out = topdown.mask_head_labels(lab, 7)
    assert set(np.unique(out)) == {0, 1, 2}
    with pytest.raises(ValueError):
        topdown.mask_head_labels(lab, 0)
    with pytest.raises((ValueError, TypeError)):
        topdown.mask_head_labels(lab.astype(np.float32) + 0.5)
    assert topdown.mask_head_labels(np.zeros((8, 8), np.int32)).max() == 0
