"""Rebuild a method's network from its checkpoint alone, and read what a checkpoint says.

Introduced in notebook 06.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..checkpoint import (
    CheckpointError,
    atomic_save,
    check_state_fits,
    checkpoint_dir,
    checkpoint_file,
    describe,
    read_checkpoint,
    weights_checksum,
)
from ..models import NETWORKS, build_network
from .records import get

__all__ = ["load_model", "load_notebook_model", "read_meta", "save_model"]


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` record of a checkpoint file or folder (network, arguments, method, data,
    mode, course version, weights checksum); ``{}`` for a file written without one.
    Introduced in notebook 06."""
    return dict(read_checkpoint(checkpoint_file(path), verify=False)["meta"])


def load_model(path: str | os.PathLike, *, method: str | None = None) -> nn.Module:
    """Rebuild the network of a checkpoint from the file alone, in eval mode, on the CPU.

    ``path``: a ``.pt`` file written by ``train.fit`` (or the zoo), or a checkpoint folder (its
    ``best.pt``, else ``last.pt``). The weights are verified against their checksum. With
    ``method``, the checkpoint must hold that method's network.

    Raises
    ------
    FileNotFoundError
        No checkpoint there.
    CheckpointError
        (a ``ValueError``) The file is corrupted or changed, was written before checkpoints
        described their network, or holds another method or network; the message names the
        file, what differs, and how to get a fitting one.

    Returns
    -------
    torch.nn.Module
        The network, with the checkpoint's description in ``model.meta`` (network and its
        arguments, method, data, mode, and, for a tuned or fine-tuned model, ``postprocess``
        and ``train_diameter_px``), which :func:`course_utils.segment` reads.

    Introduced in notebook 06.
    """
    file = checkpoint_file(path)
    state = read_checkpoint(file)
    meta = state["meta"]
    retrain = _retrain_advice(file, method)
    if meta.get("network") not in NETWORKS or not isinstance(meta.get("network_args"), Mapping):
        raise CheckpointError(
            f"{file} does not say which network it holds (it was written before checkpoints "
            f"described themselves, or for a network outside course_utils.models): {retrain}."
        )
    if method is not None:
        record = get(method)
        if meta.get("method") not in (None, record.name) or meta["network"] != record.network:
            raise CheckpointError(
                f"{file} holds a {meta.get('method') or meta['network']} model "
                f"({meta['network']}), not {record.name} ({record.network}): {retrain}."
            )
    try:
        model = build_network(meta["network"], meta["network_args"])
    except ValueError as err:
        raise CheckpointError(
            f"{file}: the network it describes cannot be built ({err}): {retrain}."
        ) from None
    try:
        check_state_fits(model, state["model"], file, meta)
    except CheckpointError as err:
        raise CheckpointError(
            f"{file} is inconsistent: its weights do not fit the network its own record "
            f"describes ({meta['network']} {dict(meta['network_args'])}); the file was edited "
            f"or written by another tool ({str(err).split(' (', 1)[-1].split(').')[0]}). "
            f"{retrain[0].upper() + retrain[1:]}."
        ) from None
    model.load_state_dict(state["model"])  # fp16 weights (the zoo) are cast to the parameters'
    model.meta = {k: v for k, v in meta.items() if k != "weights_sha256"}
    return model.eval()


def _retrain_advice(file: Path, method: str | None) -> str:
    """What to do about an unusable checkpoint ``file``: never to delete a folder that holds
    more than this one run (the zoo's ``models/``, a folder of your own)."""
    if method is None:
        return f"move {file.name} aside and train again with course_utils.train.fit"
    run = {p.name for p in file.parent.iterdir()} <= {"best.pt", "last.pt", "history.json"}
    if run and file.parent.name != "models":
        return f"delete {file.parent} and run notebook {get(method).notebook} again"
    return (
        f"move {file} aside (the folder holds other files: keep them) and load or "
        f"train a {get(method).name} model"
    )


def load_notebook_model(method: str, *, root: str | os.PathLike | None = None) -> nn.Module | None:
    """The network that the method's notebook (03, 05, 06, ...) saved in this mode, or ``None``.

    Reads ``checkpoint_dir(get(method).checkpoint, root)``: ``best.pt`` (else ``last.pt``), and
    rebuilds the network it describes (:func:`load_model`, with its checks). Introduced in
    notebook 06b.
    """
    folder = checkpoint_dir(get(method).checkpoint, root)
    if not ((folder / "best.pt").exists() or (folder / "last.pt").exists()):
        return None
    return load_model(folder, method=method)


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    meta: Mapping[str, Any] | None = None,
    *,
    mode: str | None = None,
    half: bool = False,
) -> Path:
    """Write a trained network alone (no optimizer state) as a self-describing checkpoint.

    The file holds the weights (float16 with ``half``, as the zoo ships them) and the ``meta``
    that ``train.fit`` writes (network class and arguments, mode, course version, weights
    checksum) with ``meta`` over it: default ``model.meta`` (its method, data, thresholds and
    training diameter), whose keys ``fit`` owns are written anew. ``mode`` replaces the
    current mode's name (the zoo writes ``"zoo-cpu"``). Written to a temporary file and
    renamed, so a reader never sees half a file. :func:`load_model` reads it back.
    Returns the path.
    """
    owned = ("format", "course_version", "mode", "network", "network_args", "weights_sha256")
    given = dict(getattr(model, "meta", None) or {}) if meta is None else dict(meta)
    record = describe(model, {k: v for k, v in given.items() if k not in owned})
    if record["network"] is None:
        raise ValueError(
            f"save_model writes networks of course_utils.models, not a {type(model).__name__}: "
            "use torch.save(model.state_dict(), path)"
        )
    if mode is not None:
        record["mode"] = mode
    weights = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu()
        for k, v in model.state_dict().items()
    }
    record["weights_sha256"] = weights_checksum(weights)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": weights, "meta": record}, path)
    return path
