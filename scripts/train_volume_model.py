"""Train the StarDist-3D model that notebook 11 starts from, on synthetic stacks only.

    python scripts/train_volume_model.py [--steps N] [--base C] [--rays R] [--out PATH]

Trains ``models.StarDist3DNet`` on random crops of ``data.synthetic_nuclei_3d`` stacks
(anisotropy 2.2, the GoNuclear crops' voxel), chooses the probability threshold on synthetic
validation stacks, scores the GoNuclear test crop (never used to choose anything), and writes
one self-describing checkpoint (network, arguments, rays, anisotropy, threshold, data, steps,
wall time, scores) to ``models/volumes/stardist3d_synthetic.pt`` and its sha256 to
``models/volumes/MANIFEST.tsv``. No GoNuclear voxel is used for training: notebook 11
fine-tunes on one crop and tests on the other.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import course_utils as cu  # noqa: E402
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
    torch.manual_seed(0)
    started = time.time()
    aniso = (ANISOTROPY, 1.0, 1.0)
    rays = cu.targets.rays_golden_spiral(args.rays, aniso)
    stacks = [cu.data.synthetic_nuclei_3d(seed=100 + i) for i in range(args.stacks)]
    images = [cu.data.normalize_percentile(x, 1, 99.8) for x, _ in stacks]
    labels = [y for _, y in stacks]
    patches = cu.volumes.VolumePatches(
        images,
        labels,
        (16, 64, 64),
        lambda y: cu.volumes.stardist3d_targets(y, rays, aniso),
        n=2 * args.steps // 10,
        seed=0,
    )
    loader = torch.utils.data.DataLoader(patches, batch_size=2)
    net = cu.models.StarDist3DNet(1, args.rays, args.base, cu.models.pooling_plan(ANISOTROPY, 2))
    mean = float(np.mean([cu.targets.star_distances_3d(y, rays)[y > 0].mean() for y in labels[:4]]))
    net.start_distances(mean)

    def schedule(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.steps)

    history = cu.train.fit(
        net,
        loader,
        loss_fn=lambda out, prob, dist: cu.losses.stardist_loss(out, prob, dist),
        epochs=10,
        lr=3e-3,
        scheduler=schedule,
        channels_last=False,
        progress=False,
    )
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
        "data": f"{args.stacks} synthetic_nuclei_3d stacks 40x96x96 (seeds 100..), anisotropy 2.2",
        "training": f"{args.steps} steps, batch 2, crops 16x64x64, one-cycle lr 3e-3, Adam",
        "mean_distance_start": round(mean, 3),
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
