"""The zoo's files: a model's self-describing float16 checkpoint, its card, the manifest and
the index table. Used by ``scripts/train_zoo.py``; read by ``course_utils.zoo``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import course_utils as cu

CARD_COLUMNS = (
    "method",
    "architecture",
    "steps",
    "wall time",
    "device",
    "val AP@0.5",
    "test AP@0.5",
    "test AP@0.75",
    "test F1@0.5",
)


def make_card(method, budget, info, result, diameter, augment, provenance, n_train) -> dict:
    record = cu.methods.get(method)
    return {
        "method": method,
        "title": record.title,
        "budget": budget,
        "architecture": info["architecture"],
        "data": f"BBBC039 (Caicedo 2019), training split: {n_train} images; thresholds and "
        "checkpoint chosen on the validation split, scores on the test split",
        "normalisation": "percentile 1 / 99.8 per image (course_utils.data.normalize_percentile)",
        "augmentation": repr(augment),
        "train_diameter_px": diameter,
        "patch": info["patch"],
        "global_batch": info["global_batch"],
        "epochs": info["epochs"],
        "patches_per_epoch": info["patches_per_epoch"],
        "steps": info["steps"],
        "optimiser": f"Adam, peak lr {info['lr']}, {info['schedule']} schedule",
        "mixed_precision": info["amp"],
        "processes": info["world_size"],
        "wall_time_s": round(info["wall_time_s"], 1),
        "checkpoint": result["checkpoint"],
        "postprocess": result["postprocess"],
        "validation": result["validation"],
        "test": result["test"],
        **provenance,
    }


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_model(out: Path, method: str, model, card: dict) -> None:
    """``<method>.pt``: float16 weights and, in its ``meta``, the whole card (the checkpoint is
    the model's one home); then the card as ``<method>.json`` and ``<method>.md``, generated
    from that checkpoint."""
    meta = {k: v for k, v in card.items() if k != "architecture"}  # the checkpoint knows it
    path = cu.methods.save_model(
        model, out / f"{method}.pt", meta, mode=f"zoo-{card['budget']}", half=True
    )
    write_card(path)


def write_card(checkpoint: Path) -> dict:
    """``<stem>.json`` and ``<stem>.md`` beside a zoo checkpoint, from the checkpoint alone."""
    card = cu.zoo.card_from_checkpoint(checkpoint)
    _atomic_write(checkpoint.with_suffix(".json"), (json.dumps(card, indent=2) + "\n").encode())
    _atomic_write(checkpoint.with_suffix(".md"), _card_markdown(card).encode())
    return card


def _card_markdown(card: dict) -> str:
    lines = [
        f"# Model card: {card['title']} (`{card['method']}`)",
        "",
        "| field | value |",
        "| --- | --- |",
    ]
    for key, value in card.items():
        if key in ("title",):
            continue
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        lines.append(f"| {key} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _row(card: dict) -> list[str]:
    arch = card["architecture"]
    sizes = ", ".join(f"{k} {v}" for k, v in arch.items() if k in ("depth", "base_channels"))
    return [
        card["title"],
        f"{arch['network']} ({sizes})",
        str(card["steps"]),
        f"{card['wall_time_s'] / 60:.0f} min",
        card["device"],
        f"{card['validation']['ap50']:.3f}",
        f"{card['test']['ap50']:.3f}",
        f"{card['test']['ap75']:.3f}",
        f"{card['test']['f1_50']:.3f}",
    ]


def write_index(out: Path, baseline: dict) -> None:
    """``README.md`` (the index table of the cards) and ``MANIFEST.tsv``."""
    cards = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    order = list(cu.methods.NUCLEUS_METHODS)
    cards.sort(key=lambda c: order.index(c["method"]) if c["method"] in order else 99)
    lines = [
        "# The course's model zoo",
        "",
        "Trained by `make zoo` (`scripts/train_zoo.py`) on the BBBC039 training split; "
        "scores pooled over the BBBC039 test images (AP = TP / (TP + FP + FN)). Each "
        "model's card (`<method>.md`, `<method>.json`) has the whole record.",
        "",
    ]
    lines += ["| " + " | ".join(CARD_COLUMNS) + " |", "|" + " --- |" * len(CARD_COLUMNS)]
    lines += ["| " + " | ".join(_row(c)) + " |" for c in cards]
    t = baseline["test"]
    lines += [
        f"| classical watershed (min_distance {baseline['min_distance']}) | Otsu + "
        f"watershed | - | - | - | - | {t['ap50']:.3f} | {t['ap75']:.3f} | "
        f"{t['f1_50']:.3f} |",
        "",
    ]
    _atomic_write(out / "README.md", "\n".join(lines).encode())
    write_manifest(out)


def write_manifest(out: Path) -> None:
    """``MANIFEST.tsv``: the size and sha256 of every model and card in ``out``."""
    entries = []
    for path in sorted(out.iterdir()):
        if path.suffix in (".pt", ".json") and not path.name.startswith("."):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append(f"{path.name}\t{path.stat().st_size}\t{digest}")
    _atomic_write(out / "MANIFEST.tsv", ("\n".join(entries) + "\n").encode())
