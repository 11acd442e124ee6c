"""The zoo's files: a model's self-describing float16 checkpoint, its card, the manifest and
the index table. Used by ``scripts/train_zoo.py``; read by ``course_utils.zoo``."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

import course_utils as cu
from course_utils import distributed, env
from course_utils._shared.device import amp_dtype

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


def make_card(method, budget, info, result, diameter, augment, provenance, data) -> dict:
    record = cu.methods.get(method)
    extra = {
        k: result[k]
        for k in (
            "test_by_dataset",
            "size_model",
            "diameter_range_px",
            "rescaling_measured",
            "diameter_estimates",
        )
        if k in result
    }
    return {
        "method": method,
        "title": record.title,
        "budget": budget,
        "architecture": info["architecture"],
        "data": data,
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
        **extra,
        **provenance,
    }


def provenance(device, root: Path) -> dict:
    """Where and how a model was trained: command, commit, date, device, versions."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "course_utils", "scripts"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else env.cpu_model()
    packages = ("torch", "numpy", "scipy", "scikit-image", "course_utils")
    return {
        "command": " ".join(["python", "scripts/train_zoo.py", *sys.argv[1:]]),
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "device": f"{device.type}: {name}, {torch.get_num_threads()} threads"
        + (f", {distributed.world_size()} processes" if distributed.world_size() > 1 else ""),
        "versions": {
            "python": platform.python_version(),
            **{p: metadata.version(p) for p in packages},
        },
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
        if key == "size_model":  # its coefficients are for the network, not for reading
            value = (
                f"ridge regression of log(diameter) on {len(value['coef'])} style features of "
                f"a {value['window']} px window, fitted on {value['samples']} windows; median "
                f"validation error {value['val_error']:.3f} in log(diameter) (numbers in the .json)"
            )
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
    out.mkdir(parents=True, exist_ok=True)  # a run stopped by --minutes has written no model
    every = [{**json.loads(p.read_text()), "name": p.stem} for p in sorted(out.glob("*.json"))]
    cards = [c for c in every if not _whole_cells(c)]
    order = list(cu.methods.NUCLEUS_METHODS)
    cards.sort(key=lambda c: order.index(c["method"]) if c["method"] in order else 99)
    lines = [
        "# The course's model zoo",
        "",
        "Trained by `make zoo` (`scripts/train_zoo.py`). `<method>`: the generalist, "
        "trained on the BBBC039, DSB2018 and Kromp 2020 training images; `<method>_bbbc039`: "
        "trained on BBBC039 alone (notebook 08's domain shift). Scores pooled over the "
        "BBBC039 test images (AP = TP / (TP + FP + FN)). Each model's card "
        "(`<name>.md`, `<name>.json`) has the whole record.",
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
    lines += _by_dataset(cards, baseline)
    lines += _estimates(cards)
    lines += _cells([c for c in every if _whole_cells(c)])
    _atomic_write(out / "README.md", "\n".join(lines).encode())
    write_manifest(out)


def _whole_cells(card: dict) -> bool:
    """Whether a card is a whole-cell model's (its data names the objects)."""
    return isinstance(card["data"], dict) and "whole cells" in card["data"].get("objects", "")


def _cells(cards: list[dict]) -> list[str]:
    """The whole-cell models: their test scores, as they are and through ``segment``."""
    if not cards:
        return []
    lines = [
        "## Whole cells",
        "",
        "Trained on one dataset's training split (`<method>_<dataset>`, notebook 10b). Test AP "
        "pooled over that dataset's test images, through `course_utils.segment(image, method, "
        "model=..., diameter=None)`; in brackets, the share of images whose cell diameter it "
        "found within 10%.",
        "",
        "| model | objects | test set | images | test AP@0.5 | test AP@0.75 | test F1@0.5 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in cards:
        for name, t in c["test_by_dataset"].items():
            lines.append(
                f"| `{c['name']}` ({c['title']}) | {c['data']['objects']} | {name} | "
                f"{t['images']} | {t['ap50']:.3f} ({t['diameter_within_10pct']:.0%}) | "
                f"{t['ap75']:.3f} | {t['f1_50']:.3f} |"
            )
    return [*lines, ""]


def _by_dataset(cards: list[dict], baseline: dict) -> list[str]:
    """The generalists' AP@0.5 per test set through ``segment(image, diameter=None)``."""
    general = [c for c in cards if "test_by_dataset" in c]
    if not general:
        return []
    sets = list(general[0]["test_by_dataset"])
    lines = [
        "## The generalists on each dataset",
        "",
        "AP@0.5 of `course_utils.segment(image, method, diameter=None)` (library defaults) on "
        "each test split; in brackets, the share of images whose diameter it found within 10%.",
        "",
        "| model | " + " | ".join(sets) + " |",
        "|" + " --- |" * (len(sets) + 1),
    ]
    for c in general:
        found = c["test_by_dataset"]
        cells = [f"{found[s]['ap50']:.3f} ({found[s]['diameter_within_10pct']:.0%})" for s in sets]
        lines.append(f"| {c['title']} (`{c['method']}`) | " + " | ".join(cells) + " |")
    if "by_dataset" in baseline:
        cells = [f"{baseline['by_dataset'][s]['ap50']:.3f}" for s in sets]
        lines.append("| classical watershed (no training) | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _estimates(cards: list[dict]) -> list[str]:
    """How close the generalists' diameter estimates come to the true median diameters."""
    general = [c for c in cards if "diameter_estimates" in c]
    if not general:
        return []
    lines = [
        "## Their diameter estimates",
        "",
        "`segment(image, method, diameter=None)`'s diameter against the true median nucleus "
        "diameter: BBBC039 test images zoomed 0.5x-2x and DSB2018 validation images as they "
        "are; quantiles (5 / 25 / 50 / 75 / 95 %) of estimate / true - 1, and the share "
        "within 10%.",
        "",
        "| model | set | images | quantiles | within 10% |",
        "| --- | --- | --- | --- | --- |",
    ]
    for c in general:
        for name, found in c["diameter_estimates"].items():
            qs = " / ".join(f"{q:+.2f}" for q in found["quantiles_5_25_50_75_95"])
            lines.append(
                f"| `{c['method']}` | {name} | {found['images']} | {qs} | "
                f"{found['within_10pct']:.0%} |"
            )
    return [*lines, ""]


#: The project README's copy of the index's per-dataset table lies between these lines.
README_MARKERS = ("<!-- zoo-by-dataset: generated by scripts/zoo_cards.py -->", "<!-- /zoo -->")


def by_dataset_table(index: str) -> str:
    """The per-dataset table of an index (``models/README.md``), its lines only."""
    lines = index.splitlines()
    heading = "## The generalists on each dataset"
    if heading not in lines:
        return ""
    table = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(line)
    return "\n".join(table)


def sync_readme(readme: Path, index: Path) -> bool:
    """Put the index's per-dataset table into ``readme`` between :data:`README_MARKERS`;
    ``False`` when ``readme`` has no markers (nothing written)."""
    text = readme.read_text()
    begin, end = README_MARKERS
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    table = by_dataset_table(index.read_text())
    _atomic_write(readme, f"{head}{begin}\n{table}\n{end}{tail}".encode())
    return True


def write_manifest(out: Path) -> None:
    """``MANIFEST.tsv``: the size and sha256 of every model and card in ``out``."""
    entries = []
    for path in sorted(out.iterdir()):
        if path.suffix in (".pt", ".json") and not path.name.startswith("."):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entries.append(f"{path.name}\t{path.stat().st_size}\t{digest}")
    _atomic_write(out / "MANIFEST.tsv", ("\n".join(entries) + "\n").encode())


def precision_name(amp: str | bool, device) -> str:
    """What ``fit`` trains in with ``amp`` on ``device``, for the card: "bf16", "fp16" or "off"."""
    dtype = amp_dtype(amp, device, cpu_bf16=True)
    if dtype is None:
        return "off"
    return {"bfloat16": "bf16", "float16": "fp16"}[str(dtype).removeprefix("torch.")]


if __name__ == "__main__":  # python scripts/zoo_cards.py: the README's table from the index
    root = Path(__file__).resolve().parents[1]
    if not sync_readme(root / "README.md", root / "models" / "README.md"):
        raise SystemExit(f"{root / 'README.md'} has no {README_MARKERS[0]} ... {README_MARKERS[1]}")
    print("README.md: the zoo's per-dataset table copied from models/README.md")
