"""3-D Cellpose: flows from label volumes, masks from 3-D flows, stitching of 2-D masks.

The reference tests compare with cellpose 4 (``masks_to_flows_gpu_3d``, ``compute_masks`` in
3-D, ``utils.stitch3D``) on the nuclei volume that ships with stardist.
"""

from __future__ import annotations

import numpy as np
import pytest

from course_utils._shared import jit
from course_utils.postprocess.flows3d import flows_to_masks_3d, stitch_planes
from course_utils.targets.flows import FLOW_SCALE
from course_utils.targets.flows3d import flows_3d


def ball(shape=(15, 17, 19), centre=(7, 8, 9), radius=5.5) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    d2 = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return (d2 <= radius**2).astype(np.int32)


def two_balls() -> np.ndarray:
    lab = ball((16, 20, 34), (8, 10, 9), 6.5)
    lab[ball((16, 20, 34), (8, 10, 24), 6.5) > 0] = 2
    return lab


def test_flows_3d_rejects_bad_labels():
    with pytest.raises(ValueError, match="3D"):
        flows_3d(np.zeros((4, 4), np.int32), device="cpu")
    with pytest.raises(TypeError, match="integer"):
        flows_3d(np.zeros((3, 4, 4), np.float32), device="cpu")
    with pytest.raises(ValueError, match="negative"):
        flows_3d(-np.ones((3, 4, 4), np.int32), device="cpu")
    with pytest.raises(ValueError, match="empty"):
        flows_3d(np.zeros((0, 4, 4), np.int32), device="cpu")
    with pytest.raises(ValueError, match="niter"):
        flows_3d(ball(), device="cpu", niter=-1)


def test_flows_3d_of_a_ball_point_to_its_centre():
    lab = ball()
    flows = flows_3d(lab, device="cpu")
    assert flows.shape == (3, *lab.shape) and flows.dtype == np.float32
    assert np.all(flows[:, lab == 0] == 0)
    pos = np.stack(np.nonzero(lab), axis=1)
    to_centre = np.array([7, 8, 9]) - pos
    dist = np.linalg.norm(to_centre, axis=1)
    far = dist >= 2
    f = flows[:, lab > 0].T[far]
    assert np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)
    cos = (f * to_centre[far]).sum(1) / dist[far]
    assert cos.min() > 0.9


def test_flows_3d_huge_ids_tensor_input_and_torch_path(monkeypatch):
    torch = pytest.importorskip("torch")
    lab = two_balls()
    ref = flows_3d(lab, device="cpu")
    huge = np.where(lab == 2, np.int64(2**40), lab.astype(np.int64))
    assert np.array_equal(flows_3d(huge, device="cpu"), ref)
    out = flows_3d(torch.from_numpy(lab))
    assert torch.is_tensor(out) and np.array_equal(out.cpu().numpy(), ref)
    monkeypatch.setattr(jit, "use_numba", lambda device: False)  # the GPU code on the CPU
    assert np.abs(flows_3d(lab, device="cpu") - ref).max() < 1e-6


def test_flows_to_masks_3d_recovers_two_balls_on_both_paths(monkeypatch):
    lab = two_balls()
    dP = FLOW_SCALE * flows_3d(lab, device="cpu")
    prob = np.where(lab > 0, 4.0, -4.0).astype(np.float32)
    masks = flows_to_masks_3d(dP, prob, device="cpu")
    assert masks.dtype == np.int32 and masks.max() == 2
    assert np.array_equal(masks > 0, lab > 0)
    assert len(np.unique(lab * 3 + masks)) == 3  # one mask per ball
    monkeypatch.setattr(jit, "use_numba", lambda device: False)
    assert np.array_equal(flows_to_masks_3d(dP, prob, device="cpu"), masks)
    assert flows_to_masks_3d(dP, prob - 10, device="cpu").max() == 0  # no foreground


def test_flows_to_masks_3d_rejects_bad_inputs():
    dP, prob = np.zeros((3, 4, 5, 6), np.float32), np.zeros((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match=r"\(3, Z, Y, X\)"):
        flows_to_masks_3d(dP[:2], prob)
    with pytest.raises(ValueError, match="cellprob has shape"):
        flows_to_masks_3d(dP, prob[:2])
    with pytest.raises(TypeError, match="numeric"):
        flows_to_masks_3d(dP.astype(bool), prob)
    bad = dP.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        flows_to_masks_3d(bad, prob)
    with pytest.raises(ValueError, match="niter"):
        flows_to_masks_3d(dP, prob, niter=-1)
    with pytest.raises(ValueError, match="min_size"):
        flows_to_masks_3d(dP, prob, min_size=-1)
    with pytest.raises(ValueError, match="empty"):
        flows_to_masks_3d(dP[:, :0], prob[:0])


def test_stitch_planes_by_hand():
    planes = np.zeros((4, 4, 6), np.int32)
    planes[0, :2, :3] = 1
    planes[0, 2:, 3:] = 2
    planes[1, :2, :2] = 1  # IoU 4/6 with mask 1 below: stitched
    planes[1, :, 5] = 2  # IoU 2 / (4 + 6 - 2) = 0.25 with mask 2: kept
    planes[2, 3, 0] = 1  # overlaps nothing: a new id
    out = stitch_planes(planes)
    assert out.dtype == np.int32
    assert np.array_equal(out[1][planes[1] > 0], [1, 1, 2, 1, 1, 2, 2, 2])
    assert out[2, 3, 0] == 3 and out[3].max() == 0
    assert np.array_equal(stitch_planes(planes, 0.3)[1, :, 5], [3, 3, 3, 3])
    with pytest.raises(ValueError, match="stitch_threshold"):
        stitch_planes(planes, 1.5)
    with pytest.raises(ValueError, match="3D"):
        stitch_planes(planes[0])
    with pytest.raises(TypeError):
        stitch_planes(planes.astype(float))


# ---------------------------------------------------------------------------- reference parity


def _nuclei():
    data = pytest.importorskip("stardist.data")
    from skimage.segmentation import relabel_sequential

    lab = data.test_image_nuclei_3d(return_mask=True)[1].astype(np.int32)
    return relabel_sequential(lab)[0]


@pytest.mark.reference
def test_flows_3d_match_cellpose():
    dynamics = pytest.importorskip("cellpose.dynamics")
    from skimage.segmentation import relabel_sequential

    lab = _nuclei()
    ref = dynamics.masks_to_flows_gpu_3d(lab)
    assert np.abs(flows_3d(lab, device="cpu") - ref).max() < 1e-4
    crop = relabel_sequential(lab[:, :30, :30])[0]  # the reference needs ids 1..n
    niter = dynamics.masks_to_flows_gpu_3d(crop, niter=40)
    assert np.abs(flows_3d(crop, device="cpu", niter=40) - niter).max() < 1e-4


@pytest.mark.reference
def test_flows_to_masks_3d_match_cellpose_and_the_truth():
    dynamics = pytest.importorskip("cellpose.dynamics")
    matching = pytest.importorskip("stardist.matching").matching
    lab = _nuclei()
    dP = FLOW_SCALE * flows_3d(lab, device="cpu")
    prob = np.where(lab > 0, 4.0, -4.0).astype(np.float32)
    ours = flows_to_masks_3d(dP, prob, device="cpu")
    ref = dynamics.compute_masks(dP, prob, do_3D=True, flow_threshold=None, min_size=15)
    ref = ref.astype(np.int32)
    assert matching(ref, ours, 0.5).f1 >= 0.99
    assert matching(lab, ours, 0.5).f1 >= 0.99 and matching(lab, ref, 0.5).f1 >= 0.99


@pytest.mark.reference
@pytest.mark.parametrize("threshold", [0.0, 0.25, 0.6])
def test_stitch_planes_matches_cellpose(threshold):
    utils = pytest.importorskip("cellpose.utils")
    from skimage.measure import label

    planes = np.stack([label(p) for p in _nuclei()]).astype(np.int32)
    assert np.array_equal(
        stitch_planes(planes, threshold), utils.stitch3D(planes.copy(), threshold)
    )


@pytest.mark.reference
@pytest.mark.parametrize("seed", range(6))
def test_stitch_planes_matches_cellpose_on_empty_planes_and_ties(seed):
    utils = pytest.importorskip("cellpose.utils")
    from skimage.measure import label

    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 4, size=(7, 4, 4)) * (rng.random((7, 4, 4)) < 0.6)
    planes = np.kron(blocks, np.ones((1, 3, 3), np.int64))  # equal squares: many equal IoUs
    planes[rng.random(7) < 0.3] = 0  # empty planes, also first ones
    planes = np.stack([label(p, connectivity=1) for p in planes]).astype(np.int32)
    ours, reference = stitch_planes(planes), utils.stitch3D(planes.copy())
    # the same objects, except where cellpose gives one id to two objects across an empty
    # plane (its ids restart after leading empty planes): ours keeps them apart
    pairs = np.unique(np.stack([ours.ravel(), reference.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # each of ours lies in one of cellpose's
    apart = [i for i in np.unique(reference) if len(np.unique(ours[reference == i])) > 1]
    for i in apart:  # and cellpose's id covers objects that no plane joins
        zs = np.flatnonzero((reference == i).any(axis=(1, 2)))
        assert np.any(np.diff(zs) > 1) or planes[: zs[0]].max() == 0, (i, zs)
    if not apart:
        assert np.array_equal(ours, reference)


def test_stitch_planes_never_gives_two_objects_one_id():
    planes = np.zeros((4, 4, 4), np.int32)
    planes[0, :2, :2] = 1  # plane 1 empty, then a mask elsewhere in plane 2
    planes[2, 2:, 2:] = 1
    out = stitch_planes(planes)
    assert out[0, 0, 0] != out[2, 3, 3] and out.max() == 2
