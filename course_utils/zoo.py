"""The course's model zoo: pretrained networks that the course trains itself.

``scripts/train_zoo.py`` (``make zoo``) trains each method through its record on the BBBC039
training split, chooses the checkpoint and the post-processing thresholds on the validation
split, scores the test split, and writes into ``models/``:

- ``<method>.pt``: a self-describing checkpoint, the model's one home: float16 weights, the
  network's class and arguments, the tuned thresholds, the nucleus diameter it was trained
  at, and everything its card says (data, augmentation, budget, steps, wall time, device,
  command, commit, versions, validation and test scores);
- ``<method>.json`` and ``<method>.md``: its model card, generated from the checkpoint
  (:func:`card_from_checkpoint`), never edited by hand;
- ``MANIFEST.tsv``: the sha256 and size of every file, checked by :func:`load`.

``load(method)`` returns the network in eval mode, ready for ``Method.segment`` or
``course_utils.segment``; ``available()`` lists the models with their cards. The folder is
``models/`` beside the package (``COURSE_ZOO`` points elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from .methods import get, load_model, read_meta

__all__ = ["ZooError", "available", "card", "card_from_checkpoint", "load", "zoo_dir"]

REBUILD = "make zoo (python scripts/train_zoo.py --methods {method})"


class ZooError(FileNotFoundError):
    """A zoo model that is missing or whose file does not match the manifest."""


def zoo_dir() -> Path:
    """The zoo folder: ``$COURSE_ZOO`` or ``models/`` beside the package."""
    env = os.environ.get("COURSE_ZOO")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "models"


def _manifest() -> dict[str, tuple[int, str]]:
    path = zoo_dir() / "MANIFEST.tsv"
    if not path.is_file():
        raise ZooError(f"the model zoo has no manifest ({path}); build it with `make zoo`")
    entries = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            entries.update([_manifest_entry(line, path, number)])
    return entries


def _manifest_entry(line: str, path: Path, number: int) -> tuple[str, tuple[int, str]]:
    """One ``name<TAB>size in bytes<TAB>sha256`` line of the manifest, or a clear error."""
    fields = line.split("\t")
    problem = None
    if len(fields) != 3:
        problem = f"{len(fields)} tab-separated field(s), not 3 (spaces instead of tabs?)"
    elif not fields[1].isdigit():
        problem = f"size {fields[1]!r} is not a whole number of bytes"
    elif len(fields[2]) != 64 or any(c not in "0123456789abcdef" for c in fields[2]):
        problem = "the sha256 is not 64 lower-case hex digits"
    if problem:
        raise ZooError(
            f"{path}, line {number}: {problem}. Each line is name<TAB>size in bytes<TAB>sha256; "
            f"restore the file (git checkout {path.name}) or rebuild the zoo with `make zoo`"
        )
    return fields[0], (int(fields[1]), fields[2])


def _read_card(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(
            f"the model card {path} is not valid JSON ({err}): restore it (git checkout "
            f"{path.name}) or rebuild it with `make zoo`"
        ) from None
    if not isinstance(found, dict):
        raise ZooError(f"the model card {path} holds a {type(found).__name__}, not a card")
    return found


def _verified(name: str, method: str) -> Path:
    """The path of zoo file ``name``, checked against the manifest (size and sha256)."""
    entries = _manifest()
    path = zoo_dir() / name
    rebuild = REBUILD.format(method=method)
    if name not in entries:
        raise ZooError(
            f"{name} is not in the zoo manifest {zoo_dir() / 'MANIFEST.tsv'}; "
            f"rebuild it with {rebuild}"
        )
    if not path.is_file():
        raise ZooError(f"the zoo file {path} is missing; rebuild it with {rebuild}")
    size, sha = entries[name]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.stat().st_size != size or digest != sha:
        raise ZooError(
            f"the zoo file {path} does not match its manifest (size {path.stat().st_size}, "
            f"expected {size}; sha256 {digest[:12]}..., expected {sha[:12]}...): it is corrupted "
            f"or was changed. Restore it (git checkout {path.name}) or rebuild it with {rebuild}"
        )
    return path


def available() -> dict[str, dict[str, Any]]:
    """The zoo's models: method name -> its model card (a dict, see ``card``).

    Only methods whose weights and card are in the manifest; the files are not hashed here.
    Introduced in notebook 08.
    """
    if not (zoo_dir() / "MANIFEST.tsv").is_file():
        return {}
    entries = _manifest()  # a manifest that cannot be read raises: never an empty zoo by mistake
    found = {}
    for name in entries:
        stem = name.removesuffix(".pt")
        if name.endswith(".pt") and f"{stem}.json" in entries:
            found[stem] = _read_card(zoo_dir() / f"{stem}.json")
    return found


#: Checkpoint keys that describe the file rather than the model: not on the card.
_FILE_KEYS = ("format", "course_version", "mode", "network", "network_args", "weights_sha256")


def card_from_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The model card of a zoo checkpoint, made from the checkpoint alone: its ``meta`` (the
    card's facts, written there by the zoo's writer) without the file's bookkeeping, and the
    ``architecture`` (network class and arguments) after the ``budget``."""
    meta = read_meta(path)
    if meta.get("network") is None:
        raise ZooError(f"{path} does not say which network it holds: not a zoo checkpoint")
    architecture = {"network": meta["network"], **dict(meta.get("network_args") or {})}
    card: dict[str, Any] = {}
    for key, value in meta.items():
        if key not in _FILE_KEYS:
            card[key] = value
        if key == "budget":
            card["architecture"] = architecture
    card.setdefault("architecture", architecture)
    return card


def card(method: str) -> dict[str, Any]:
    """The model card of ``method`` (verified against the manifest): ``method``,
    ``architecture``, ``data``, ``augmentation``, ``steps``, ``wall_time_s``, ``device``,
    ``command``, ``commit``, ``versions``, ``postprocess`` (the tuned thresholds),
    ``train_diameter_px`` (median nucleus diameter the model was trained at), and the
    ``validation`` and ``test`` scores (AP@0.5, AP@0.75, F1@0.5). Introduced in notebook 06b.
    """
    record = get(method)
    return _read_card(_verified(f"{record.name}.json", record.name))


def load(method: str) -> nn.Module:
    """The zoo's network for ``method`` (a name of ``course_utils.methods.NUCLEUS_METHODS``),
    in eval mode on the CPU, with float32 weights; ``model.meta`` holds its checkpoint's
    description (thresholds and training diameter included).

    The file's size and sha256 are checked against ``models/MANIFEST.tsv``, and its weights
    against their own checksum. Raises :class:`ZooError` (a ``FileNotFoundError``) naming the
    file and the command that rebuilds it when it is missing or does not match.
    Introduced in notebook 06b.
    """
    record = get(method)
    path = _verified(f"{record.name}.pt", record.name)
    return load_model(path, method=record.name).float()
