"""Train the course's model zoo: every method through its record, with cards.

    python scripts/train_zoo.py                       # all four methods, the CPU budget
    python scripts/train_zoo.py --methods cellpose    # one method
    python scripts/train_zoo.py --budget gpu          # the full-mode networks, on a GPU
    python scripts/train_zoo.py --data usiigaci --methods cellpose   # the whole-cell model
    python scripts/train_zoo.py --rescore             # score the models again (no training)
    torchrun --nproc_per_node=4 scripts/train_zoo.py --budget gpu   # four GPUs (or CPUs)

For each method: train a network (its record's class, targets and loss; the sizes of the
budget) on the training splits of ``--data`` (the generalist: BBBC039, DSB2018 and Kromp) with
generalist augmentation (flips and quarter turns, zoom 0.5x-2x, gamma, contrast, brightness,
noise, blur); keep ``best.pt`` (lowest validation
loss) or ``last.pt``, whichever scores the higher AP@0.5 on the validation split; tune the
post-processing on the validation split; score the test split; write ``models/<method>.pt``
(float16 weights, self-describing), its card ``models/<method>.json`` and ``.md``, and refresh
``models/MANIFEST.tsv`` and ``models/README.md``.

Training checkpoints go to ``checkpoints/zoo/<budget>/<method>``: a run stopped by
``--minutes`` (or killed) resumes where it stopped with the same command. Under torchrun each
process trains on its share of every global batch (``--batch`` is the global batch, the
learning rate is the one of that batch); rank 0 evaluates and writes.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import zoo_cards  # beside this script, which Python puts first on the module search path
import zoo_generalist

import course_utils as cu
from course_utils import distributed
from course_utils.data import augment as aug

ROOT = Path(__file__).resolve().parents[1]

#: The zoo's budgets (network overrides, patch, global batch, epochs, patches per epoch, peak
#: learning rate and schedule) are ``course_utils.methods.BUDGETS["zoo-<budget>"]``.
BUDGETS = ("cpu", "gpu")
#: Generalist augmentation: every training patch sees a new scale, contrast and blur.
AUGMENT = aug.compose(
    aug.flip_rot90,
    aug.random_affine(scale=(0.5, 2.0), mode="reflect"),
    aug.intensity(brightness=0.1, contrast=0.3, gamma=1.5),
    aug.gaussian_noise(sigma=(0.0, 0.05)),
    aug.gaussian_blur(sigma=(0.0, 1.5)),
    p=[1.0, 0.8, 0.8, 0.3, 0.3],
)


def _positive(text: str, kind: type = float) -> float | int:
    """An argparse type: a finite number (of ``kind``) above zero."""
    value = kind(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(cu.methods.NUCLEUS_METHODS),
        choices=list(cu.methods.NUCLEUS_METHODS),
    )
    p.add_argument("--budget", choices=BUDGETS, default="cpu")
    p.add_argument(
        "--data",
        choices=("generalist", "bbbc039", "usiigaci"),
        default="generalist",
        help="generalist: BBBC039 + DSB2018 + Kromp training images (models/<method>.pt); "
        "bbbc039: BBBC039 alone (models/<method>_bbbc039.pt, notebook 08's domain shift); "
        "usiigaci: whole cells (models/<method>_usiigaci.pt, notebook 10b)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop training a method after this many minutes (resumable)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "models", help="the zoo folder")
    p.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints" / "zoo")
    p.add_argument("--device", help="cpu, cuda, ... (default: course_utils.env.get_device)")
    p.add_argument("--n-train", type=int, default=None, help="use the first n training images")
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="override the budget's epochs")
    p.add_argument("--patches", type=int, default=None, help="override patches per epoch")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="override the global batch (split over the torchrun processes)",
    )
    p.add_argument("--lr", type=float, default=None, help="override the peak learning rate")
    p.add_argument("--patch", type=lambda t: _positive(t, int), help="override the patch side (px)")
    p.add_argument(
        "--cell-diameter",
        type=_positive,
        help=f"the whole-cell run (--data usiigaci): median cell diameter (px) its training "
        f"images are shown at (default {CELL_DIAMETER:g})",
    )
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="no training: score the zoo's models again through segment (after a change to "
        "the library), updating their scores and diameter estimates in place",
    )
    p.add_argument(
        "--amp",
        choices=("auto", "on", "off"),
        default="auto",
        help="mixed precision; auto: fit's default, and bfloat16 on CPUs that "
        "compute it natively (AVX512-BF16 or AMX), 1.5-2x faster there",
    )
    args = p.parse_args(argv)
    if args.cell_diameter is not None and args.data != "usiigaci":
        p.error("--cell-diameter applies to the whole-cell run (--data usiigaci) only")
    args.cell_diameter = args.cell_diameter or CELL_DIAMETER
    return args


#: The generalist's training data: each dataset's share of the training patches, so that three
#: Kromp images are not drowned by 306 DSB2018 ones (an image's weight: share / images).
SHARES = {"bbbc039": 0.35, "dsb2018": 0.45, "kromp2020": 0.20}
#: Datasets with a validation split (Kromp has none: its three images all train).
VALIDATION = ("bbbc039", "dsb2018")
#: The generalist sees every training image at this median nucleus diameter (px), as Cellpose
#: prepares its images, and AUGMENT's zoom spreads it over DIAMETER / 2 .. 2 * DIAMETER.
DIAMETER = 24.0
#: The whole-cell model (``--data usiigaci``, notebook 10b): Usiigaci's training images at this
#: median cell diameter (its cells measure 37-74 px, its test cells 34-41 px), zoomed
#: 0.7x-1.4x; the phase-contrast images of one microscope need no wider augmentation.
CELL_DIAMETER = 30.0
CELL_AUGMENT = aug.compose(
    aug.flip_rot90,
    aug.random_affine(scale=(0.7, 1.4), mode="reflect"),
    aug.intensity(brightness=0.1, contrast=0.3, gamma=1.3),
    aug.gaussian_noise(sigma=(0.0, 0.03)),
    p=[1.0, 0.8, 0.8, 0.3],
)
#: Per ``--data``: dataset shares, datasets with a validation split, the diameter every
#: training and validation image is shown at (None: as they are), and the augmentation.
DATA = {
    "generalist": (SHARES, VALIDATION, DIAMETER, AUGMENT),
    "bbbc039": ({"bbbc039": 1.0}, ("bbbc039",), None, AUGMENT),
    "usiigaci": ({"usiigaci": 1.0}, ("usiigaci",), CELL_DIAMETER, CELL_AUGMENT),
}


def load_data(args) -> dict:
    """``{"train": (images, labels, weights), "val": (images, labels), "test": {dataset:
    (images, labels)}, "val_as_is": {dataset: (images, labels)}, "sources": [dataset]}``.
    Training and validation images at the diameter of :data:`DATA` (or as they are, for BBBC039
    alone); test images and ``val_as_is`` always as they are."""
    sets, validation, diameter, _ = DATA[args.data]
    if args.data == "usiigaci":
        diameter = args.cell_diameter
    counts = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    out: dict = {"test": {}, "val_as_is": {}, "sources": []}
    train: tuple[list, list, list] = ([], [], [])
    val: tuple[list, list] = ([], [])
    for name, share in sets.items():
        for split, n in counts.items():
            if split == "val" and name not in validation:
                continue
            available = len(cu.data.split_names(name, split))
            images, labels = cu.data.load_split(name, split, n=min(n or available, available))
            if split == "test":
                out["test"][name] = (images, labels)
                continue
            if split == "val":
                out["val_as_is"][name] = (images, labels)
            if diameter is not None:
                pairs = [cu.scale.to_diameter(x, y, diameter)[:2] for x, y in zip(images, labels)]
                images, labels = [x for x, _ in pairs], [y for _, y in pairs]
            target = train if split == "train" else val
            target[0].extend(images)
            target[1].extend(labels)
            if split == "train":
                train[2].extend([share / len(images)] * len(images))
                out["sources"].extend([name] * len(images))
    out["train"], out["val"] = train, val
    return out


def describe(data: dict, args) -> str:
    """The card's line on the training data: datasets, image and nucleus counts."""
    if args.data != "generalist":
        return f"{args.data} train ({len(data['train'][0])} images)"
    return "; ".join(f"{name}: share {share:.0%} of the patches" for name, share in SHARES.items())


def train(method: str, data: dict, args, device) -> tuple[Path, dict]:
    """Train (or resume) one method; returns its checkpoint folder and what the card needs."""
    folder = args.checkpoints / args.budget / model_name(method, args)
    record = cu.methods.get(method)
    cells = f"{method}_cells"  # a whole-cell run's own budget, where it has one
    own = args.data == "usiigaci" and cells in cu.methods.BUDGETS[f"zoo-{args.budget}"]
    plan = cu.methods.budget(
        f"zoo-{args.budget}",
        cells if own else method,
        batch_size=args.batch,
        lr=args.lr,
        epochs=args.epochs,
        patches_per_epoch=args.patches,
    )
    plan = plan.replace(patch_size=args.patch or plan.patch_size or record.patch("full"))
    workers = args.workers if args.workers is not None else cu.env.dataloader_workers(full=8)
    started = time.perf_counter()
    model, history = cu.methods.train_method(
        method,
        *data["train"][:2],
        weights=data["train"][2],
        budget=plan,
        augment=DATA[args.data][3],
        val_images=data["val"][0],
        val_labels=data["val"][1],
        checkpoint_dir=folder,
        num_workers=workers,
        data=describe(data, args),
        device=device,
        time_limit=None if args.minutes is None else 60 * args.minutes,
        seed=0,
        amp=_amp(args.amp, device),
    )
    epochs, patches = plan.epochs, plan.patches(len(data["train"][0]))
    done = len(history) == epochs
    info = {
        "architecture": {"network": record.network, **model.config},
        "patch": plan.patch_size,
        "global_batch": plan.batch_size,
        "epochs": epochs,
        "patches_per_epoch": patches,
        "steps": len(history) * -(-patches // plan.batch_size),
        "lr": plan.lr,
        "schedule": plan.schedule,
        "wall_time_s": sum(r["seconds"] for r in history.records),
        "this_session_s": time.perf_counter() - started,
        "finished": done,
        "world_size": distributed.world_size(),
        "amp": zoo_cards.precision_name(_amp(args.amp, device), device),
    }
    return folder, info


def model_name(method: str, args) -> str:
    """The zoo name: ``<method>`` for the generalist, ``<method>_<data>`` for one dataset
    (``cellpose_bbbc039``: BBBC039 alone; ``cellpose_usiigaci``: the whole-cell model)."""
    return method if args.data == "generalist" else f"{method}_{args.data}"


def _amp(choice: str, device) -> str | bool:
    """``fit``'s ``amp``: its own default for "auto" (bfloat16 on CPUs that compute it
    natively, as ``fit`` decides), else on or off."""
    return "auto" if choice == "auto" else choice == "on"


def choose_and_score(method: str, folder: Path, data: dict, device, args) -> dict:
    """best.pt or last.pt by validation AP@0.5, its tuned post-processing, and the scores; for
    the generalist also its size model, the diameters it segments as they are, and its scores
    per dataset through ``segment(image, diameter=None)``."""
    candidates = {}
    for name in ("best.pt", "last.pt"):
        model = cu.methods.load_model(folder / name, method=method).to(device)
        params, table = cu.methods.tune_postprocess(method, model, *data["val"], device=device)
        val = next(row for row in table if all(row[k] == v for k, v in params.items()))
        candidates[name] = (val["ap50"], model, params, val)
    chosen = max(candidates, key=lambda k: candidates[k][0])
    _, model, params, val = candidates[chosen]
    model = model.cpu()
    model.meta = {**dict(model.meta), "postprocess": params}
    result = {"checkpoint": chosen, "model": model, "postprocess": params}
    result["validation"] = _rounded(val)
    if args.data == "bbbc039":
        test = cu.methods.score(method, model, *data["test"]["bbbc039"], **params)
        return {**result, "test": _rounded(test)}
    model.meta["size_model"] = zoo_generalist.fit_sizes(model, data)
    trusted, table = zoo_generalist.trusted_range(method, model, data, params)
    model.meta["diameter_range_px"] = list(trusted)
    by_dataset = zoo_generalist.score_datasets(method, model, data["test"])
    estimates = zoo_generalist.diameter_accuracy(method, model, data, next(iter(data["test"])))
    return {
        **result,
        "test": _rounded(by_dataset[next(iter(data["test"]))]),
        "test_by_dataset": by_dataset,
        "size_model": model.meta["size_model"],
        "diameter_range_px": list(trusted),
        "rescaling_measured": table,
        "diameter_estimates": estimates,
    }


def _rounded(scores: dict) -> dict:
    return {k: round(float(scores[k]), 4) for k in ("ap50", "ap75", "f1_50")}


def data_description(data: dict, args) -> str | dict:
    """What the card says of the training data."""
    if args.data == "bbbc039":
        return (
            f"BBBC039 (Caicedo 2019), training split: {len(data['train'][0])} images; "
            "thresholds and checkpoint chosen on the validation split, scores on the test split"
        )
    if args.data == "usiigaci":
        return {
            "training": zoo_generalist.training_counts(data, {"usiigaci": 1.0}, data["sources"]),
            "objects": "whole cells (phase contrast, NIH/3T3 fibroblasts)",
            "shown_at_diameter_px": args.cell_diameter,
            "validation": "Usiigaci validation split (checkpoint, thresholds, size model)",
            "test": "Usiigaci test split through course_utils.segment(image, 'cellpose', "
            "model=..., diameter=None) with the library's defaults",
            "cite": "Usiigaci: Tsai 2019 (SoftwareX)",
        }
    return {
        "training": zoo_generalist.training_counts(data, SHARES, data["sources"]),
        "shown_at_diameter_px": DIAMETER,
        "validation": "BBBC039 and DSB2018 validation splits (checkpoint, thresholds, size model)",
        "test": "each dataset's test split through course_utils.segment(image, method, "
        "diameter=None) with the library's defaults",
        "cite": "BBBC039: Caicedo 2019 (Cytometry A); DSB2018: Caicedo 2019 (Nature Methods); "
        "Kromp 2020",
    }


def rescore(method: str, data: dict, args) -> None:
    """Score a zoo model again through ``segment`` with the library as it is now: its scores
    per dataset and diameter estimates, written back into its checkpoint and card."""
    path = args.out / f"{model_name(method, args)}.pt"
    model = cu.methods.load_model(path, method=method).float()
    card = cu.zoo.card_from_checkpoint(path)
    card["test_by_dataset"] = zoo_generalist.score_datasets(method, model, data["test"])
    card["test"] = _rounded(card["test_by_dataset"][next(iter(data["test"]))])
    card["diameter_estimates"] = zoo_generalist.diameter_accuracy(
        method, model, data, next(iter(data["test"]))
    )
    card["rescored"] = f"{datetime.date.today().isoformat()}: " + " ".join(sys.argv[1:])
    zoo_cards.write_model(args.out, model_name(method, args), model, card)
    print(f"{method}: rescored, test AP@0.5 {card['test']['ap50']:.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    device = distributed.setup(cu.env.get_device(args.device))
    data = load_data(args)
    if args.rescore:
        for method in args.methods:
            rescore(method, data, args)
        zoo_cards.write_index(args.out, zoo_generalist.baseline(data["test"], SHARES, args.n_test))
        if args.out.resolve() == (ROOT / "models").resolve():
            zoo_cards.sync_readme(ROOT / "README.md", args.out / "README.md")
        return 0
    diameter = round(cu.scale.median_diameter(data["train"][1]), 1)
    unfinished = []
    for method in args.methods:
        folder, info = train(method, data, args, device)
        if not distributed.is_main_process():
            continue
        if not info["finished"]:
            unfinished.append(method)
            print(f"{method}: stopped by --minutes; run the same command again to resume")
            continue
        result = choose_and_score(method, folder, data, device, args)
        card = zoo_cards.make_card(
            method,
            args.budget,
            info,
            result,
            diameter,
            DATA[args.data][3],
            zoo_cards.provenance(device, ROOT),
            data_description(data, args),
        )
        zoo_cards.write_model(args.out, model_name(method, args), result["model"], card)
        print(f"{method}: test AP@0.5 {card['test']['ap50']:.3f} ({card['checkpoint']})")
    if distributed.is_main_process():
        zoo_cards.write_index(args.out, zoo_generalist.baseline(data["test"], SHARES, args.n_test))
        if args.out.resolve() == (ROOT / "models").resolve():
            zoo_cards.sync_readme(ROOT / "README.md", args.out / "README.md")
    return 1 if unfinished else 0


if __name__ == "__main__":
    raise SystemExit(main())
