"""The course's pretrained StarDist-3D model (synthetic stacks only), and scoring on stacks.

A 3-D network needs far more steps than a 2-CPU classroom machine gives in minutes, so
notebook 11 trains briefly to show the loop and then starts from this model, trained by
``scripts/train_volume_model.py`` on synthetic stacks alone. Its file describes it whole
(network, arguments, rays, anisotropy, threshold, data, steps, scores);
``models/volumes/MANIFEST.tsv`` holds its sha256, checked before loading. (A folder of its own:
the 2-D zoo's manifest and cards are generated from ``models/`` by ``make zoo``.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ANISOTROPY", "PRETRAINED", "load_pretrained", "score_stack"]

#: The anisotropy the model was trained at (the GoNuclear crops': 0.28 / 0.127 um).
ANISOTROPY = 2.2
PRETRAINED = "stardist3d_synthetic"


def _models_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "models" / "volumes"


def load_pretrained(path: str | Path | None = None) -> tuple[torch.nn.Module, np.ndarray, dict]:
    """The pretrained StarDist-3D network (eval mode, float32), its rays and its description.

    Raises
    ------
    FileNotFoundError
        The file is missing (the message says how to rebuild it).
    ValueError
        Its sha256 differs from ``models/volumes/MANIFEST.tsv`` (changed or truncated file).

    Introduced in notebook 11.
    """
    from ..models import build_network
    from ..targets import rays_golden_spiral

    path = Path(path) if path else _models_dir() / f"{PRETRAINED}.pt"
    rebuild = "python scripts/train_volume_model.py"
    if not path.is_file():
        raise FileNotFoundError(f"no pretrained 3-D model at {path}; rebuild it with {rebuild}")
    listed = dict(
        line.split("\t") for line in (path.parent / "MANIFEST.tsv").read_text().split("\n") if line
    )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if listed.get(path.name) != digest:
        raise ValueError(
            f"{path} does not match its sha256 in {path.parent / 'MANIFEST.tsv'}: the file was "
            f"changed or is incomplete; restore it (git checkout) or rebuild it with {rebuild}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta = state["meta"]
    net = build_network(meta["network"], meta["network_args"])
    net.load_state_dict({k: v.float() for k, v in state["model"].items()})
    rays = rays_golden_spiral(meta["n_rays"], meta["anisotropy"])
    net.meta = meta  # its anisotropy: the record (volumes.methods) reads and fine-tunes it
    return net.eval(), rays, meta


def score_stack(
    net: torch.nn.Module,
    rays: np.ndarray,
    anisotropy: Any,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    prob_thresh: float,
    nms_thresh: float = 0.4,
) -> tuple[float, float]:
    """AP@0.5 and AP@0.75 of a StarDist-3D network over stacks (TP, FP, FN pooled)."""
    from ..metrics import average_precision
    from .predict import predict_volume, stardist3d_to_labels

    preds = []
    for image in images:
        logits, dist = predict_volume(net, image)
        preds.append(
            stardist3d_to_labels(
                logits,
                dist,
                rays,
                prob_thresh=prob_thresh,
                nms_thresh=nms_thresh,
                anisotropy=anisotropy,
            )
        )
    ap = average_precision(list(labels), preds, (0.5, 0.75), volume=True)
    return float(ap[0]), float(ap[1])
