"""COCO-style detection AP: a hand computation, invariances, greedy matching, bad input, and
(marked ``reference``) parity with pycocotools' COCOeval."""

from __future__ import annotations

import numpy as np
import pytest

from course_utils import metrics
from course_utils.detection import (
    RECALL_POINTS,
    detection_ap,
    detection_curve,
    greedy_matching,
)


def _squares(shape, boxes):
    """Labels (int32) with id k + 1 painted on box k = (top, left, bottom, right)."""
    out = np.zeros(shape, np.int32)
    for k, (top, left, bottom, right) in enumerate(boxes):
        out[top:bottom, left:right] = k + 1
    return out


@pytest.fixture
def toy():
    """3 true squares; predictions: a hit (0.9), a miss (0.8), a hit (0.7), a miss (0.6)."""
    truth = _squares((40, 60), [(0, 0, 10, 10), (0, 20, 10, 30), (20, 0, 30, 10)])
    pred = _squares((40, 60), [(0, 0, 10, 10), (30, 40, 40, 50), (0, 21, 10, 30), (20, 40, 30, 50)])
    return truth, pred, np.array([0.9, 0.8, 0.7, 0.6])


def test_hand_computation(toy):
    # precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3; envelope 1, 2/3, 2/3, 1/2:
    # recall levels 0..0.33 (34 of them) read 1, 0.34..0.66 (33) read 2/3, the rest 0.
    curve = detection_curve(*toy)
    assert curve.is_tp.tolist() == [True, False, True, False]
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 2 / 3, 1 / 2])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert curve.ap == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert detection_ap(*toy) == curve.ap
    assert len(curve.interpolated) == len(RECALL_POINTS) == 101
    assert "AP 0.554" in str(curve)


def test_only_the_ranking_matters(toy):
    truth, pred, scores = toy
    assert detection_ap(truth, pred, 10 * scores**3 - 4) == pytest.approx(detection_ap(*toy))
    # the false positives ranked first: a lower AP
    assert detection_ap(truth, pred, np.array([0.1, 0.9, 0.2, 0.8])) < detection_ap(*toy)


def test_perfect_and_empty_predictions(toy):
    truth = toy[0]
    assert detection_ap(truth, truth, np.ones(3)) == pytest.approx(1.0)
    assert detection_ap(truth, np.zeros_like(truth), np.zeros(0)) == 0.0


def test_dict_scores_and_unused_ids(toy):
    truth, pred, scores = toy
    as_dict = {k + 1: float(v) for k, v in enumerate(scores)}
    assert detection_ap(truth, pred, as_dict) == detection_ap(*toy)
    # scores of ids without pixels (polygons covered by others) are ignored
    longer = np.concatenate([scores, [0.95, 0.99]])
    assert detection_ap(truth, pred, longer) == detection_ap(*toy)


def test_a_data_set_pools_the_detections(toy):
    truth, pred, scores = toy
    one = detection_curve([truth, truth], [pred, pred], [scores, scores])
    assert one.n_true == 6 and len(one.scores) == 8
    assert one.ap == pytest.approx(detection_ap(*toy), abs=0.02)  # the same curve, twice
    other = detection_curve([truth, truth], [pred, np.zeros_like(pred)], [scores, np.zeros(0)])
    assert other.recall[-1] == pytest.approx(1 / 3)


def test_threshold_decides_the_match(toy):
    truth, pred, scores = toy
    # prediction 3 covers 90 of the 100 pixels of true square 2: IoU 0.9
    assert detection_curve(truth, pred, scores, thresh=0.9).is_tp.sum() == 2
    assert detection_curve(truth, pred, scores, thresh=0.91).is_tp.sum() == 1


def test_greedy_matching_equals_the_library_greedy_matching(bbbc039_labels):
    rng = np.random.default_rng(0)
    for truth in bbbc039_labels[:2]:
        pred = np.roll(truth, (3, -2), axis=(0, 1))
        pred = np.where(rng.random(truth.shape) < 0.02, 0, pred)
        iou = metrics.iou_matrix(truth, pred)
        for tau in (0.1, 0.3, 0.5, 0.7):
            rows, cols = greedy_matching(iou, tau)
            reference = metrics.matching(truth, pred, tau, greedy=True)
            assert len(rows) == reference.tp
            matched = reference.mean_matched_score * reference.tp
            assert iou[rows, cols].sum() == pytest.approx(matched)
            assert len(set(rows)) == len(rows) and len(set(cols)) == len(cols)


def test_greedy_differs_from_optimal_on_the_toy_of_notebook_07():
    truth = np.zeros((10, 24), np.int32)
    truth[:, 0:10], truth[:, 10:20] = 1, 2
    pred = np.zeros_like(truth)
    pred[:, 3:15], pred[:, 0:3] = 1, 2
    rows, cols = greedy_matching(metrics.iou_matrix(truth, pred), 0.25)
    assert list(zip(rows, cols)) == [(0, 0)]


def test_priority_lets_columns_choose_in_order():
    iou = np.array([[0.9, 0.6], [0.0, 0.55]])
    assert list(zip(*greedy_matching(iou, 0.5))) == [(0, 0), (1, 1)]
    # column 1 first: it takes row 0 (its best), column 0 is left without a free row
    assert list(zip(*greedy_matching(iou, 0.5, priority=np.array([0.1, 0.9])))) == [(0, 1)]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": np.array([0.9, 0.8])}, "largest predicted id"),
        ({"scores": {1: 0.9}}, "no score for the predicted ids"),
        ({"scores": np.array([0.9, np.nan, 0.7, 0.6])}, "finite"),
        ({"scores": np.ones((4, 1))}, "1-D array"),
        ({"thresh": 0.0}, "thresh"),
        ({"thresh": 1.5}, "thresh"),
    ],
)
def test_bad_input_is_refused(toy, kwargs, message):
    truth, pred, scores = toy
    args = {"y_true": truth, "y_pred": pred, "scores": scores, **kwargs}
    with pytest.raises(ValueError, match=message):
        detection_curve(**args)


def test_no_true_object_and_mismatched_lists_are_refused(toy):
    truth, pred, scores = toy
    with pytest.raises(ValueError, match="no true object"):
        detection_ap(np.zeros_like(truth), pred, scores)
    with pytest.raises(ValueError, match="both be lists"):
        detection_ap([truth], pred, scores)
    with pytest.raises(ValueError, match="as many"):
        detection_ap([truth, truth], [pred], [scores])
    with pytest.raises(ValueError, match="2-D"):
        greedy_matching(np.ones(3), 0.5)
    with pytest.raises(ValueError, match="one value per column"):
        greedy_matching(np.ones((2, 3)), 0.5, priority=np.ones(2))


def _coco_ap(truths, preds, scores, thresh):
    """AP of pycocotools' COCOeval (segm) at one IoU threshold, no limit on detections."""
    import pycocotools.mask as mask_util
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gts, dts = [], []
    for k, (t, p, s) in enumerate(zip(truths, preds, scores)):
        for i in np.unique(t)[1:]:
            rle = mask_util.encode(np.asfortranarray((t == i).astype(np.uint8)))
            gts.append(
                {
                    "id": len(gts) + 1,
                    "image_id": k,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": rle,
                    "area": float((t == i).sum()),
                }
            )
        for i in np.unique(p)[1:]:
            rle = mask_util.encode(np.asfortranarray((p == i).astype(np.uint8)))
            dts.append(
                {"image_id": k, "category_id": 1, "segmentation": rle, "score": float(s[i - 1])}
            )
    coco = COCO()
    h, w = truths[0].shape
    coco.dataset = {
        "images": [{"id": k, "height": h, "width": w} for k in range(len(truths))],
        "annotations": gts,
        "categories": [{"id": 1, "name": "nucleus"}],
    }
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(dts), "segm")
    evaluator.params.iouThrs = np.array([thresh])
    evaluator.params.maxDets = [10_000]
    evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e10]], ["all"]
    evaluator.evaluate()
    evaluator.accumulate()
    return float(evaluator.eval["precision"][0, :, 0, 0, 0].mean())


@pytest.mark.reference
def test_matches_pycocotools(bbbc039_labels):
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(1)
    truths, preds, scores = [], [], []
    for truth in bbbc039_labels[:2]:
        pred = np.roll(truth, (2, 1), axis=(0, 1))
        pred[rng.random(pred.shape) < 0.01] = 0
        pred = np.where(np.isin(pred, rng.choice(np.unique(pred)[1:], 10)), 0, pred)
        truths.append(truth)
        preds.append(pred)
        scores.append(rng.random(int(pred.max())))
    for thresh in (0.5, 0.75, 0.9):
        assert detection_ap(truths, preds, scores, thresh) == pytest.approx(
            _coco_ap(truths, preds, scores, thresh), abs=1e-12
        )
