"""fit under torchrun: two CPU processes (gloo) train exactly as one process with the same
global batch, write their checkpoints once (rank 0), and resume.

The processes use a network without batch normalisation: on the CPU each process normalises
its own half of the batch (PyTorch has no SyncBatchNorm there), which is the one expected
difference. Tolerance: 1e-5 (the order of the gradient all-reduce is the only other one).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from course_utils.checkpoint import read_checkpoint

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from course_utils.models import UNet
    from course_utils.train import fit

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=gen), torch.randn(16, 1, 16, 16, generator=gen)
    torch.manual_seed(0)
    net = UNet(out_channels=1, depth=1, base_channels=4, norm="none")
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)  # the global batch
    # float32 (amp=False): two processes equal one to 1e-5 only without bfloat16's rounding
    fit(net, loader, loss_fn=torch.nn.functional.mse_loss, epochs=int(sys.argv[2]), lr=1e-2,
        checkpoint_dir=sys.argv[1], progress=False, seed=0, device="cpu", amp=False)
""")

pytestmark = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _torchrun(script: Path, folder: Path, epochs: int) -> None:
    _run(
        [
            TORCHRUN,
            "--nproc_per_node=2",
            "--nnodes=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
            str(script),
            str(folder),
            str(epochs),
        ]
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    script = root / "train.py"
    script.write_text(SCRIPT)
    _run([sys.executable, str(script), str(root / "one"), "2"])
    _torchrun(script, root / "two", 2)
    return script, root


def test_two_processes_match_one_with_the_same_global_batch(runs):
    _, root = runs
    one, two = (read_checkpoint(root / name / "last.pt") for name in ("one", "two"))
    assert one["epoch"] == two["epoch"] == 2
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=0, atol=1e-5, msg=key)
    losses = [[r["train_loss"] for r in s["history"]["records"]] for s in (one, two)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)  # the mean over the global batch


def test_rank_zero_alone_writes_the_checkpoints(runs):
    _, root = runs
    assert sorted(p.name for p in (root / "two").iterdir()) == ["best.pt", "last.pt"]


def test_a_distributed_run_resumes(runs):
    script, root = runs
    _torchrun(script, root / "two", 3)
    state = read_checkpoint(root / "two" / "last.pt")
    assert [r["epoch"] for r in state["history"]["records"]] == [1, 2, 3]
