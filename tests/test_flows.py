"""Tests for Cellpose flows: targets.masks_to_flows and postprocess.follow_flows/flows_to_masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.draw import disk, ellipse
from skimage.measure import label

from course_utils._shared import jit
from course_utils._shared.relabel import relabel_consecutive
from course_utils.postprocess import flows as pf
from course_utils.postprocess import flows_to_masks, follow_flows
from course_utils.targets import FLOW_SCALE, masks_to_flows
from course_utils.targets import flows as tf


def touching_cells(shape=(160, 200), n=30, seed=0, min_area=30):
    """Random ellipses painted on empty pixels (overlap < 25 %): touching, convex-ish cells."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        r, c = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10)
        a, b = rng.uniform(5, 12, size=2)
        rr, cc = ellipse(r, c, a, b, shape=shape, rotation=rng.uniform(0, np.pi))
        free = lab[rr, cc] == 0
        if free.mean() > 0.75:  # touching, but not cut into crescents
            lab[rr[free], cc[free]] = i
    lab = label(lab, background=0, connectivity=1)  # split ids cut in two by later cells
    sizes = np.bincount(lab.ravel())
    lab[sizes[lab] < min_area] = 0
    return label(lab, background=0, connectivity=1).astype(np.int32)


def odd_cells():
    """Shapes that exercise the centre rule: a ring, a C, a 2 x 2 square, a single pixel."""
    lab = np.zeros((70, 90), np.int32)
    yy, xx = np.mgrid[:70, :90]
    ring = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 14**2) & ((yy - 20) ** 2 + (xx - 20) ** 2 >= 7**2)
    lab[ring] = 3
    c_shape = ((yy - 45) ** 2 + (xx - 60) ** 2 <= 15**2) & ~((xx > 55) & (abs(yy - 45) < 6))
    lab[c_shape & (lab == 0)] = 9
    lab[60:62, 10:12] = 4  # mean at a half pixel: rounded half to even
    lab[5, 80] = 7
    lab[20:23, 33:37] = 5  # touches the ring
    return lab


def slow_heat(lab, niter=None):
    """Naive per-cell diffusion (one cell at a time, numpy shifts), padded like the library."""
    ids = [i for i in np.unique(lab) if i]
    heat = np.zeros((lab.shape[0] + 2, lab.shape[1] + 2))
    boxes = ndimage.find_objects(lab)
    exts = [sl[0].stop - sl[0].start + sl[1].stop - sl[1].start + 2 for sl in boxes if sl]
    steps = 2 * max(exts) if niter is None else niter
    for i in ids:
        sl = boxes[i - 1]
        cell = np.pad(lab[sl] == i, 1)
        ys, xs = np.nonzero(cell[1:-1, 1:-1])
        my, mx = np.round(ys.mean()), np.round(xs.mean())
        if not cell[int(my) + 1, int(mx) + 1]:
            k = np.argmin((ys - my) ** 2 + (xs - mx) ** 2)
            my, mx = ys[k], xs[k]
        cy, cx = int(my) + 1, int(mx) + 1
        T = np.zeros(cell.shape)
        h, w = cell.shape
        for _ in range(steps):
            T[cy, cx] += 1
            P = np.pad(T * cell, 1)
            total = sum(
                P[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
                for dy in (-1, 0, 1)
                for dx in (-1, 0, 1)
            )
            T = total / 9.0 * cell
        y0, x0 = sl[0].start, sl[1].start
        heat[y0 : y0 + h, x0 : x0 + w] += T
    return heat


def naive_f1(true, pred, thresh=0.5):
    """F1 of a one-to-one matching by IoU > thresh (IoU > 0.5 makes the match unique)."""
    n_true, n_pred = int(true.max()), int(pred.max())
    if n_true == 0 and n_pred == 0:
        return 1.0
    pairs = np.bincount(
        true.ravel() * (n_pred + 1) + pred.ravel(), minlength=(n_true + 1) * (n_pred + 1)
    )
    inter = pairs.reshape(n_true + 1, n_pred + 1)[1:, 1:]
    area_t, area_p = np.bincount(true.ravel())[1:], np.bincount(pred.ravel())[1:]
    iou = inter / (area_t[:, None] + area_p[None, :] - inter)
    tp = int((iou > thresh).sum())
    return 2 * tp / (n_true + n_pred)


def cellprob_logit(lab):
    return np.where(lab > 0, 4.0, -4.0).astype(np.float32)


@pytest.fixture(scope="module")
def cells():
    return touching_cells()


def test_flows_are_unit_inside_and_zero_outside(cells):
    flows = masks_to_flows(cells, device="cpu")
    assert flows.shape == (2, *cells.shape) and flows.dtype == np.float32
    norm = np.sqrt((flows.astype(np.float64) ** 2).sum(0))
    assert np.all(norm[cells == 0] == 0)
    inside = norm[cells > 0]
    assert np.all((np.abs(inside - 1) < 1e-5) | (inside == 0))
    assert np.mean(np.abs(inside - 1) < 1e-5) > 0.999


@pytest.mark.parametrize("make, niter", [(touching_cells, None), (odd_cells, None), (odd_cells, 7)])
def test_heat_and_flows_match_per_cell_loop(make, niter):
    lab = make()
    relabelled, n = relabel_consecutive(lab)
    heat = tf._heat_map(relabelled, n, niter, torch.device("cpu"))
    expected = slow_heat(relabelled, niter)
    np.testing.assert_allclose(heat, expected, rtol=1e-10, atol=1e-300)
    grad = np.stack(
        [expected[2:, 1:-1] - expected[:-2, 1:-1], expected[1:-1, 2:] - expected[1:-1, :-2]]
    )
    norm = np.sqrt((grad**2).sum(0))
    clear = (lab > 0) & (norm > 1e-9 * expected.max())  # skip round-off at symmetric centres
    flows = masks_to_flows(lab, niter=niter, device="cpu")
    np.testing.assert_allclose(
        flows[:, clear], (grad / np.maximum(norm, 1e-300))[:, clear], atol=1e-6
    )


def test_flows_point_to_the_centre_of_a_disk():
    lab = np.zeros((41, 41), np.int32)
    lab[disk((20, 20), 15)] = 1
    flows = masks_to_flows(lab, device="cpu")
    yy, xx = np.mgrid[:41, :41]
    to_centre = np.stack([20 - yy, 20 - xx]).astype(float)
    far = (lab > 0) & ((yy - 20) ** 2 + (xx - 20) ** 2 >= 9)
    cos = (flows * to_centre).sum(0)[far] / np.sqrt((to_centre**2).sum(0))[far]
    assert cos.min() > 0.9


def test_ids_need_not_be_consecutive(cells):
    expected = masks_to_flows(cells, device="cpu")
    for scale, offset in ((7, 1000), (10**9, 12345)):  # a lookup table, then a sort
        sparse = np.where(cells > 0, cells.astype(np.int64) * scale + offset, 0)
        np.testing.assert_array_equal(masks_to_flows(sparse, device="cpu"), expected)


def test_torch_cpu_tensor_equals_numpy(cells):
    out = masks_to_flows(torch.from_numpy(cells), device=None)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    np.testing.assert_array_equal(out.numpy(), masks_to_flows(cells, device="cpu"))


def test_torch_diffusion_kernel_equals_numba(cells):
    # The GPU code path (tensor slicing), run here on the CPU.
    lab, n = relabel_consecutive(cells)
    cy, cx, ext = tf._centres_numba(lab, n)
    padded = np.pad(lab, 1)
    a = tf._diffuse_numba(padded, cy + 1, cx + 1, 60)
    b = tf._diffuse_torch(padded, cy + 1, cx + 1, 60, "cpu").numpy()
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


def test_empty_labels_give_zero_flows_and_empty_masks():
    flows = masks_to_flows(np.zeros((20, 30), np.uint8), device="cpu")
    assert flows.shape == (2, 20, 30) and not flows.any()
    masks = flows_to_masks(flows, np.full((20, 30), -3.0), device="cpu")
    assert masks.dtype == np.int32 and not masks.any()
    masks = flows_to_masks(flows, np.full((20, 30), 3.0), device="cpu")  # no flow: no seeds
    assert not masks.any()


def test_round_trip_reproduces_labels(cells):
    flows = masks_to_flows(cells, device="cpu")
    masks = flows_to_masks(FLOW_SCALE * flows, cellprob_logit(cells), device="cpu")
    assert masks.dtype == np.int32 and masks.shape == cells.shape
    assert np.array_equal(np.unique(masks), np.arange(masks.max() + 1))  # consecutive ids
    assert naive_f1(cells, masks) >= 0.99


def test_round_trip_with_torch_tensors(cells):
    flows = masks_to_flows(torch.from_numpy(cells))
    masks = flows_to_masks(FLOW_SCALE * flows, torch.from_numpy(cellprob_logit(cells)))
    assert isinstance(masks, torch.Tensor) and masks.dtype == torch.int32
    expected = flows_to_masks(FLOW_SCALE * flows.numpy(), cellprob_logit(cells), device="cpu")
    np.testing.assert_array_equal(masks.numpy(), expected)


def test_min_size_drops_small_masks():
    lab = np.zeros((80, 80), np.int32)
    lab[disk((25, 25), 12)] = 1  # ~450 px
    lab[disk((60, 55), 3.5)] = 2  # ~37 px
    flows = FLOW_SCALE * masks_to_flows(lab, device="cpu")
    small = (lab == 2).sum()
    kept = flows_to_masks(flows, cellprob_logit(lab), min_size=small - 5, device="cpu")
    dropped = flows_to_masks(flows, cellprob_logit(lab), min_size=small + 5, device="cpu")
    assert kept.max() == 2 and dropped.max() == 1
    assert np.all(dropped[lab == 2] == 0)
    assert naive_f1(lab, kept) == 1.0


def rotate_cell_flows(flows, lab, cell, degrees):
    out = flows.copy()
    a = np.deg2rad(degrees)
    dy, dx = flows[0, lab == cell], flows[1, lab == cell]
    out[0, lab == cell] = np.cos(a) * dy + np.sin(a) * dx
    out[1, lab == cell] = -np.sin(a) * dy + np.cos(a) * dx
    return out


@pytest.mark.parametrize(
    "degrees, threshold, survives", [(60, 0.4, False), (60, None, True), (20, 0.4, True)]
)
def test_flow_threshold_drops_masks_with_inconsistent_flows(degrees, threshold, survives):
    # Rotated flows still spiral into the centre, but disagree with the mask's own flows:
    # mean squared error 2 - 2 cos(angle) = 1.0 at 60 degrees, 0.12 at 20 degrees.
    lab = np.zeros((90, 90), np.int32)
    lab[disk((25, 25), 14)] = 1
    lab[disk((60, 60), 14)] = 2
    flows = rotate_cell_flows(masks_to_flows(lab, device="cpu"), lab, 2, degrees)
    masks = flows_to_masks(
        FLOW_SCALE * flows, cellprob_logit(lab), flow_threshold=threshold, device="cpu"
    )
    assert masks[25, 25] > 0
    assert naive_f1((lab == 1).astype(int), (masks == masks[25, 25]).astype(int)) == 1.0
    assert (masks[60, 60] > 0) == survives


def test_flow_errors_equal_naive_mean_squared_error(cells):
    flows = masks_to_flows(cells, device="cpu")
    noisy = flows + np.random.default_rng(1).normal(0, 0.3, flows.shape).astype(np.float32)
    errors = pf._flow_errors(cells, cells.max(), noisy, torch.device("cpu"))
    sq = ((flows - noisy) ** 2).sum(0)
    np.testing.assert_allclose(
        errors, [sq[cells == i].mean() for i in range(1, cells.max() + 1)], rtol=1e-5
    )


def test_fill_holes_matches_scipy_per_mask():
    lab = np.zeros((40, 70), np.int32)
    yy, xx = np.mgrid[:40, :70]
    lab[((yy - 20) ** 2 + (xx - 15) ** 2 <= 144) & ((yy - 20) ** 2 + (xx - 15) ** 2 >= 36)] = 1
    lab[10:30, 32:40] = 2  # 2 and 3 enclose a pocket together: a gap, not a hole
    lab[10:30, 40:48] = 3
    lab[14:26, 36:44] = 0
    lab[0:10, 55:70] = 4  # a box whose inside opens onto the image border
    lab[0:6, 59:66] = 0
    lab[30:36, 55:61] = 5  # a one-pixel hole
    lab[33, 58] = 0
    filled = pf._fill_holes(lab)
    expected = lab.copy()
    for i in range(1, 6):
        expected[ndimage.binary_fill_holes(lab == i) & (lab == 0)] = i
    assert (filled != lab).sum() > 100  # the ring's hole and the one pixel were filled
    np.testing.assert_array_equal(filled, expected)


def test_follow_flows_matches_naive_euler():
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.normal(size=(2, 30, 40)), (0, 4, 4))
    field = (field / np.abs(field).max()).astype(np.float32)
    mask = rng.random((30, 40)) < 0.3
    pos = np.stack(np.nonzero(mask), axis=1).astype(np.float64)
    for _ in range(15):
        v = np.stack(
            [
                ndimage.map_coordinates(f.astype(np.float64), pos.T, order=1, mode="nearest")
                for f in field
            ],
            1,
        )
        pos = np.clip(pos + 0.7 * v, 0, [29, 39])
    out = follow_flows(field, mask, niter=15, step=0.7, device="cpu")
    assert out.shape == (mask.sum(), 2) and out.dtype == np.float32
    np.testing.assert_allclose(out, pos, atol=1e-4)


def test_follow_flows_constant_flow_stops_at_the_border():
    field = np.zeros((2, 10, 12), np.float32)
    field[1] = 1.0
    mask = np.zeros((10, 12), bool)
    mask[4, [0, 3, 9]] = True
    out = follow_flows(field, mask, niter=5, device="cpu")
    np.testing.assert_array_equal(out, [[4, 5], [4, 8], [4, 11]])


def test_cycle_shortcut_equals_every_step(cells):
    flows = masks_to_flows(cells, device="cpu")
    mask = cells > 0
    path = follow_flows(flows, mask, niter=200, device="cpu", return_path=True)
    assert path.shape == (201, mask.sum(), 2)
    np.testing.assert_array_equal(path[0], np.stack(np.nonzero(mask), 1))
    np.testing.assert_array_equal(follow_flows(flows, mask, niter=200, device="cpu"), path[-1])
    np.testing.assert_array_equal(follow_flows(flows, mask, niter=137, device="cpu"), path[137])


def test_follow_flows_torch_path_matches_numba(cells):
    flows = masks_to_flows(cells, device="cpu")
    mask = cells > 0
    start = torch.from_numpy(np.stack(np.nonzero(mask), 1).astype(np.float32))
    ends = pf._follow_torch(torch.from_numpy(flows), start, 12, 1.0, False).numpy()
    np.testing.assert_allclose(ends, follow_flows(flows, mask, niter=12, device="cpu"), atol=1e-3)
    out = follow_flows(torch.from_numpy(flows), torch.from_numpy(mask), niter=12)
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), follow_flows(flows, mask, niter=12, device="cpu"))


def test_gpu_code_path_gives_the_same_results_on_cpu(cells, monkeypatch):
    # What runs on a GPU (tensor slicing, grid_sample), forced onto the CPU here.
    flows = masks_to_flows(cells, device="cpu")
    prob = cellprob_logit(cells)
    masks = flows_to_masks(FLOW_SCALE * flows, prob, device="cpu")
    monkeypatch.setattr(jit, "use_numba", lambda device: False)
    np.testing.assert_allclose(masks_to_flows(cells, device="cpu"), flows, atol=1e-6)
    masks_torch = flows_to_masks(FLOW_SCALE * flows, prob, device="cpu")
    assert naive_f1(masks, masks_torch, thresh=0.9) == 1.0
    path = follow_flows(flows, cells > 0, niter=5, device="cpu", return_path=True)
    np.testing.assert_allclose(path[-1], follow_flows(flows, cells > 0, niter=5), atol=1e-4)


def test_half_precision_network_outputs_are_accepted(cells):
    # What a network under bfloat16 autocast returns; numpy has no bfloat16.
    flows = torch.from_numpy(FLOW_SCALE * masks_to_flows(cells, device="cpu"))
    prob = torch.from_numpy(cellprob_logit(cells))
    masks = flows_to_masks(flows.bfloat16(), prob.bfloat16(), device="cpu")
    assert isinstance(masks, torch.Tensor) and masks.dtype == torch.int32
    assert naive_f1(cells, masks.numpy()) >= 0.99


def test_tensor_heat_map_leaves_the_device_before_float64(cells, monkeypatch):
    # MPS has no float64: the float32 heat map must reach the CPU before it is widened.
    class OnMPS:
        def __init__(self, tensor):
            self.tensor = tensor

        def cpu(self):
            return self.tensor

        def double(self):
            raise RuntimeError("Cannot convert a MPS Tensor to float64 dtype")

    diffuse = tf._diffuse_torch
    monkeypatch.setattr(jit, "use_numba", lambda device: False)
    monkeypatch.setattr(tf, "_diffuse_torch", lambda *args: OnMPS(diffuse(*args)))
    via_tensors = masks_to_flows(cells, device="cpu")
    monkeypatch.undo()
    np.testing.assert_allclose(via_tensors, masks_to_flows(cells, device="cpu"), atol=1e-6)


def test_numba_kernels_leave_torch_threads_and_forked_workers_alone():
    """After the parallel kernels ran, torch keeps its thread count and DataLoader workers live."""
    import multiprocessing

    import torch

    from course_utils.data import PatchDataset, synthetic_nuclei

    image, labels = synthetic_nuclei((96, 96), seed=3)
    threads = torch.get_num_threads()
    masks_to_flows(labels)
    assert torch.get_num_threads() == threads
    if multiprocessing.get_start_method() != "fork":
        pytest.skip("forked workers only")
    data = PatchDataset([image], [labels], 48, length=4, target_fn=masks_to_flows)
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2)
    shapes = [tuple(y.shape) for _, y in loader]
    assert shapes == [(2, 2, 48, 48), (2, 2, 48, 48)]
