"""DataLoader workers: the targets' numba kernels take one thread in each worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.data import PatchDataset


def _numba_threads(labels):
    """A target that records how many threads numba's parallel kernels would take."""
    import numba

    return np.full(1, numba.get_num_threads(), np.int64)


@pytest.mark.parametrize("kind", ["2-D", "3-D"])
def test_dataloader_workers_give_numba_one_thread(kind):
    # The workers are the parallelism: their targets' numba kernels take one thread each, while
    # the main process keeps all of its own.
    import numba

    from course_utils.volumes import VolumePatches

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one core: nothing to limit")
    before = numba.get_num_threads()
    if kind == "2-D":
        images = [np.zeros((40, 50), np.float32)] * 3
        labels = [np.ones((40, 50), np.int32)] * 3
        dataset = PatchDataset(images, labels, 16, length=4, target_fn=_numba_threads)
    else:
        stack = np.zeros((8, 16, 16), np.float32)
        dataset = VolumePatches([stack], [stack.astype(np.int32)], (4, 8, 8), _numba_threads, n=4)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2)
    assert [t.tolist() for _, t in loader] == [[[1], [1]], [[1], [1]]]
    assert dataset[0][1].tolist() == [before] and numba.get_num_threads() == before > 1
