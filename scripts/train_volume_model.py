"""Train the StarDist-3D model that notebook 11 starts from, on synthetic stacks only.

    python scripts/train_volume_model.py [--steps N] [--base C] [--rays R] [--out PATH]

Trains the ``stardist3d`` record through ``methods.train_method`` (``models.StarDist3DNet`` on
random crops of ``data.synthetic_nuclei_3d`` stacks, anisotropy 2.2, the GoNuclear crops'
voxel), chooses the probability threshold on synthetic validation stacks, scores the GoNuclear
test crop (never used to choose anything), and writes one self-describing checkpoint (network,
arguments, rays, anisotropy, threshold, data, steps, wall time, scores) to
``models/volumes/stardist3d_synthetic.pt`` and its sha256 to ``models/volumes/MANIFEST.tsv``. No
GoNuclear voxel is used for training: notebook 11 fine-tunes on one crop and tests on the other.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import course_utils as cu  # noqa: E402
from course_utils.volumes.methods import anisotropy_of, rays_of  # noqa: E402
from course_utils.volumes.pretrained import ANISOTROPY, PRETRAINED, score_stack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--rays", type=int, default=64)
    parser.add_argument("--stacks", type=int, default=32)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "models" / "volumes" / f"{PRETRAINED}.pt"
    )
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the training, not after it
    started = time.time()
    stacks = [cu.data.synthetic_nuclei_3d(seed=100 + i) for i in range(args.stacks)]
    data = f"{args.stacks} synthetic_nuclei_3d stacks 40x96x96 (seeds 100..), anisotropy 2.2"
    # The record's recipe (crops, targets from the network's rays, distance head started at the
    # training nuclei's mean distance), as notebook 11 fine-tunes it; ten epochs, one cycle.
    net, history = cu.methods.train_method(
        "stardist3d",
        [cu.data.normalize_percentile(x, 1, 99.8) for x, _ in stacks],
        [y for _, y in stacks],
        anisotropy=ANISOTROPY,
        config={"n_rays": args.rays, "base_channels": args.base},
        patch=(16, 64, 64),
        epochs=10,
        batch_size=2,
        patches_per_epoch=2 * args.steps // 10,
        lr=3e-3,
        schedule="onecycle",
        data=data,
        progress=False,
    )
    aniso = anisotropy_of(net)
    rays = rays_of(net)
    val_x, val_y, _ = cu.data.load_volumes("synthetic3d", "val")
    tried = {t: score_stack(net, rays, aniso, val_x, val_y, t)[0] for t in (0.4, 0.5, 0.6, 0.7)}
    thresh = max(tried, key=tried.get)
    test_x, test_y, _ = cu.data.load_volumes("go_nuclear", "test")
    ap50, ap75 = score_stack(net, rays, aniso, test_x, test_y, thresh)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "network": "StarDist3DNet",
        "network_args": dict(net.config),
        "method": "stardist3d",
        "anisotropy": list(aniso),
        "n_rays": args.rays,
        "postprocess": {"prob_thresh": thresh, "nms_thresh": 0.4},
        "data": data,
        "training": f"{args.steps} steps, batch 2, crops 16x64x64, one-cycle lr 3e-3, Adam",
        "budget": net.meta["budget"],
        "final_train_loss": round(history.records[-1]["train_loss"], 4),
        "val_ap50_by_thresh": {str(k): round(v, 3) for k, v in tried.items()},
        "test_go_nuclear": {"ap50": round(ap50, 3), "ap75": round(ap75, 3)},
        "wall_s": round(time.time() - started),
        "device": cu.env.cpu_model(),
        "command": " ".join(sys.argv),
        "commit": commit,
    }
    torch.save(
        {"model": {k: v.half() for k, v in net.state_dict().items()}, "meta": meta}, args.out
    )
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    (args.out.parent / "MANIFEST.tsv").write_text(f"{args.out.name}\t{digest}\n")
    print(meta)


if __name__ == "__main__":
    main()
