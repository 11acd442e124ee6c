"""methods.evaluate: labels and scores of a network on labelled images (notebook 09's table)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from course_utils import methods
from course_utils.data import synthetic_nuclei
from course_utils.metrics import matching_dataset


@pytest.fixture(scope="module")
def data():
    pairs = [synthetic_nuclei((64, 64), n_nuclei=6, seed=s) for s in (1, 2)]
    return [x for x, _ in pairs], [y for _, y in pairs]


@pytest.mark.parametrize("method", ["cellpose", "stardist"])
def test_evaluate_gives_the_record_labels_their_scores_and_the_background_probability(data, method):
    images, labels = data
    config = {"base_channels": 4, "depth": 2} if method == "cellpose" else {"base_channels": 4}
    model = methods.get(method).build(seed=0, **config).eval()
    preds, scores = methods.evaluate(method, model, images, labels)
    assert len(preds) == 2 and all(p.shape == y.shape for p, y in zip(preds, labels))
    stats = matching_dataset(labels, preds, 0.5)
    assert scores["ap50"] == stats.accuracy and scores["f1_50"] == stats.f1
    assert (scores["fp"], scores["fn"]) == (stats.fp, stats.fn)
    # the probability on the background, by hand from the raw outputs
    grid = int(getattr(model, "grid", 1))
    channel = methods.evaluation.PROB_CHANNEL[method]
    outs = methods.outputs_of(method, model, images)
    by_hand = np.concatenate(
        [expit(o[channel])[y[::grid, ::grid] == 0] for o, y in zip(outs, labels)]
    ).mean()
    assert scores["background_prob"] == pytest.approx(float(by_hand), rel=1e-6)


def test_evaluate_refuses_unpaired_images_and_has_no_probability_for_the_u_net(data):
    images, labels = data
    model = methods.get("cellpose").build(seed=0, base_channels=4, depth=2).eval()
    with pytest.raises(ValueError, match="as many label images"):
        methods.evaluate("cellpose", model, images, labels[:1])
    _, scores = methods.evaluate(
        "unet_3class",
        methods.get("unet_3class").build(seed=0, base_channels=4, depth=2).eval(),
        images,
        labels,
    )
    assert "background_prob" not in scores and 0 <= scores["ap50"] <= 1
