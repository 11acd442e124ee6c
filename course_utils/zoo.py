"""The course's model zoo: pretrained networks that the course trains itself.

``scripts/train_zoo.py`` (``make zoo``) trains each method through its record, chooses the
checkpoint and the post-processing thresholds on the validation split, scores the test split,
and writes into ``models/``:

- ``<method>.pt``: a self-describing checkpoint, the model's one home: float16 weights, the
  network's class and arguments, the tuned thresholds, the nucleus diameter it was trained
  at, and everything its card says (data, augmentation, budget, steps, wall time, device,
  command, commit, versions, validation and test scores);
- ``<method>.json`` and ``<method>.md``: its model card, generated from the checkpoint
  (:func:`card_from_checkpoint`), never edited by hand;
- ``MANIFEST.tsv``: the sha256 and size of every file, checked by :func:`load`.

The zoo holds a *generalist* per method (``cellpose``, ``stardist``, ``unet_3class``,
``unet_weighted``), trained on the union of BBBC039, DSB2018 and Kromp's training images, with
a size model (:mod:`course_utils.sizing`) for ``segment(diameter=None)``; the same methods
trained on BBBC039 alone (``<method>_bbbc039``), kept for notebook 08's lesson on domain shift;
and a whole-cell model, ``cellpose_usiigaci`` (phase-contrast fibroblasts, notebook 10b).

``load(method)`` returns the network in eval mode, ready for ``Method.segment`` or
``course_utils.segment``; ``available()`` lists the models with their cards. The folder is
``models/`` beside the package (``COURSE_ZOO`` points elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from .methods import get, load_model, read_meta

__all__ = ["ZooError", "available", "card", "card_from_checkpoint", "load", "zoo_dir"]

REBUILD = "make zoo (python scripts/train_zoo.py --methods {method})"
#: The zoo's other models (``<method>_<data>``): trained on one dataset only, for the lessons
#: that need them (notebook 08's domain shift).
REBUILD_ONE = "python scripts/train_zoo.py --data {data} --methods {method}"


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
    if not path.is_file():
        raise ZooError(
            f"the model card {path} is in the zoo manifest but missing: restore it (git "
            f"checkout {path.name}) or rebuild it with `make zoo`"
        )
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


def _verified(name: str, rebuild: str) -> Path:
    """The path of zoo file ``name``, checked against the manifest (size and sha256)."""
    entries = _manifest()
    path = zoo_dir() / name
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


def _resolve(name: str) -> tuple[str, str, str]:
    """``(file stem, method, rebuild command)`` of a zoo name: a method's name (the generalist,
    e.g. ``"cellpose"``) or ``<method>_<data>`` (e.g. ``"cellpose_bbbc039"``)."""
    if not isinstance(name, str):
        raise TypeError(f"a zoo model's name must be a string, got {type(name).__name__}")
    for method in sorted(_methods(), key=len, reverse=True):
        if name.startswith(f"{method}_") and name[len(method) + 1 :].isidentifier():
            data = name[len(method) + 1 :]
            return name, method, REBUILD_ONE.format(data=data, method=method)
    record = get(name)  # an unknown name: the error lists the methods
    rebuild = REBUILD.format(method=record.name)
    return _stand_in(record.name, rebuild), record.name, rebuild


def _stand_in(method: str, rebuild: str) -> str:
    """The file stem for ``method``'s generalist: itself, or (with a warning) the model trained
    on BBBC039 alone when the zoo holds no generalist of that method."""
    path = zoo_dir() / "MANIFEST.tsv"
    entries = _manifest() if path.is_file() else {}
    single = f"{method}_bbbc039"
    if f"{method}.pt" in entries or f"{single}.pt" not in entries:
        return method  # missing from both: _verified's error names the rebuild command
    warnings.warn(
        f"the zoo holds no generalist {method} model (rebuild it with {rebuild}); using "
        f"{single}, trained on BBBC039 alone, which may not hold on images unlike BBBC039",
        stacklevel=4,
    )
    return single


def _methods() -> tuple[str, ...]:
    from .methods import NUCLEUS_METHODS

    return tuple(NUCLEUS_METHODS)


def card(method: str) -> dict[str, Any]:
    """The model card of zoo model ``method`` (a name as :func:`load` takes; verified against
    the manifest): ``method``,
    ``architecture``, ``data``, ``augmentation``, ``steps``, ``wall_time_s``, ``device``,
    ``command``, ``commit``, ``versions``, ``postprocess`` (the tuned thresholds),
    ``train_diameter_px`` (median nucleus diameter the model was trained at), and the
    ``validation`` and ``test`` scores (AP@0.5, AP@0.75, F1@0.5). Introduced in notebook 06b.
    """
    stem, _, rebuild = _resolve(method)
    return _read_card(_verified(f"{stem}.json", rebuild))


def load(method: str) -> nn.Module:
    """The zoo's network ``method``: a name of ``course_utils.methods.NUCLEUS_METHODS`` (the
    generalist of that method, trained on BBBC039, DSB2018 and Kromp), ``<method>_bbbc039``
    (trained on BBBC039 alone, for notebook 08's domain shift; also what a method's name gives,
    with a warning, when the zoo holds no generalist of that method) or ``cellpose_usiigaci``
    (whole cells in phase contrast, notebook 10b),
    in eval mode on the CPU, with float32 weights; ``model.meta`` holds its checkpoint's
    description (thresholds and training diameter included).

    The file's size and sha256 are checked against ``models/MANIFEST.tsv``, and its weights
    against their own checksum. Raises :class:`ZooError` (a ``FileNotFoundError``) naming the
    file and the command that rebuilds it when it is missing or does not match.
    Introduced in notebook 06b.
    """
    stem, record_name, rebuild = _resolve(method)
    path = _verified(f"{stem}.pt", rebuild)
    return load_model(path, method=record_name).float()
