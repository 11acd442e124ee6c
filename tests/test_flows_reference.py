"""Parity of course_utils' Cellpose flows and masks with the reference package (cellpose 4).

Both sides get the same inputs: flows at the network's scale (5 x unit flows, what cellpose's
``compute_masks`` takes) and a cell-probability logit.
"""

from __future__ import annotations

import numpy as np
import pytest

from course_utils.postprocess import flows as pf
from course_utils.postprocess import flows_to_masks
from course_utils.targets import FLOW_SCALE, masks_to_flows

pytestmark = pytest.mark.reference

dynamics = pytest.importorskip("cellpose.dynamics")
matching = pytest.importorskip("stardist.matching")
torch = pytest.importorskip("torch")
CPU = torch.device("cpu")


def touching_cells(shape, n, seed):
    """Random ellipses painted on empty pixels (overlap < 25 %), connected cells of >= 30 px."""
    from skimage.draw import ellipse
    from skimage.measure import label

    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        r, c = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        rr, cc = ellipse(r, c, *rng.uniform(5, 12, size=2), shape=shape, rotation=rng.uniform(0, 3))
        free = lab[rr, cc] == 0
        if free.mean() > 0.75:  # touching, but not cut into crescents
            lab[rr[free], cc[free]] = i
    lab = label(lab, background=0, connectivity=1)
    lab[np.bincount(lab.ravel())[lab] < 30] = 0
    return label(lab, background=0, connectivity=1).astype(np.int32)


def cellprob_logit(lab):
    return np.where(lab > 0, 4.0, -4.0).astype(np.float32)


@pytest.fixture(scope="module", params=["synthetic", "bbbc039"])
def label_images(request):
    """Synthetic touching cells (always) and four BBBC039 label images (when available)."""
    if request.param == "synthetic":
        return [touching_cells((256, 256), n=60, seed=s) for s in (1, 2)]
    try:
        labels = request.getfixturevalue("bbbc039_labels")
    except ImportError as err:  # course_utils.data not there yet
        pytest.skip(f"course_utils.data is unavailable: {err}")
    return [np.asarray(lab, np.int32) for lab in labels]


@pytest.fixture(scope="module")
def reference_flows(label_images):
    return [dynamics.masks_to_flows_gpu(lab, device=CPU)[0] for lab in label_images]


def test_flows_agree_with_cellpose(label_images, reference_flows):
    for lab, ref in zip(label_images, reference_flows, strict=True):
        ours = masks_to_flows(lab, device="cpu")
        cos = (ours * ref).sum(0)[lab > 0]
        assert cos.mean() >= 0.95
        # Same definitions, so nearly every pixel agrees exactly; the rest are the round-off
        # directions at the exact centres of symmetric cells.
        assert np.mean(cos > 0.9999) > 0.999
        assert not ours[:, lab == 0].any()


def test_masks_from_cellpose_flows_agree_with_cellpose(label_images, reference_flows):
    ours, theirs = [], []
    # Two images: cellpose's compute_masks is the slow part of this file.
    for lab, ref in zip(label_images[:2], reference_flows[:2], strict=True):
        dP = (FLOW_SCALE * ref).astype(np.float32)
        prob = cellprob_logit(lab)
        theirs.append(dynamics.compute_masks(dP, prob, min_size=15, device=CPU).astype(np.int32))
        ours.append(flows_to_masks(dP, prob, device="cpu"))
    stats = matching.matching_dataset(theirs, ours, thresh=0.5, show_progress=False)
    assert stats.f1 >= 0.98


def test_round_trip_reproduces_labels(label_images):
    masks = [
        flows_to_masks(FLOW_SCALE * masks_to_flows(lab, device="cpu"), cellprob_logit(lab))
        for lab in label_images
    ]
    stats = matching.matching_dataset(label_images, masks, thresh=0.5, show_progress=False)
    assert stats.f1 >= 0.99


def test_grouping_of_end_points_equals_cellpose(label_images, reference_flows):
    # Same end points in, same partition out (up to the order of ids).
    lab, ref = label_images[0], reference_flows[0]
    inds = np.nonzero(lab > 0)
    ends = dynamics.follow_flows(ref * (lab > 0), inds, niter=200, device=CPU)
    ends = ends.int() if torch.is_tensor(ends) else torch.from_numpy(ends).int()
    theirs = np.zeros(lab.shape, np.int64)
    theirs[inds] = dynamics.get_masks_torch(ends.clone(), inds, lab.shape)[inds]
    ours = np.zeros(lab.shape, np.int64)
    ours[inds] = pf._cluster_end_points(ends.T.numpy().astype(np.float32), lab.shape)
    pairs = np.unique(np.stack([ours[inds], theirs[inds]]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
