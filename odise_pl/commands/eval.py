"""``odise-pl eval panoptic|semantic``: score prediction folders against ground-truth folders.

``odise-pl eval panoptic --gt-json J --gt-folder D --pred-json J --pred-folder D``
reproduces the COCO panoptic API's ``pq_compute`` (same numbers to 1e-6, same
printed table) in numpy, on every usable core like the API (``--workers N``:
N processes; the numbers are the same for every N). Folders default, as in the
API, to the JSON path without ``.json``.

``odise-pl eval semantic --gt-folder D --pred-folder D --num-classes K
--ignore-label L`` scores label images (PNG, 16-bit PNG, uint16 TIFF) matched by
file stem, from one dataset-level confusion matrix; the mIoU convention is
``--miou-average either_present`` (default: classes in the ground truth or the
prediction, detectron2 v0.6's, the reference's) or ``gt_present`` (classes with
ground-truth pixels, detectron2 after commit f3c1bc19, in no release), and is
printed, named by detectron2 version, with the result.

``--out X.json`` writes every number (per class included) to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from odise_pl.commands.lazy_parser import LazyArgumentParser
from odise_pl.errors import DatasetError

__all__ = ["add_parser", "semantic_arguments", "run_panoptic", "run_semantic", "format_semantic_table"]


def add_parser(sub) -> None:
    """Register ``eval`` with its ``panoptic`` and ``semantic`` sub-commands."""
    p = sub.add_parser(
        "eval",
        help="score prediction folders against ground truth (PQ, mIoU)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = p.add_subparsers(dest="eval_command", required=True, parser_class=LazyArgumentParser)

    pan = kinds.add_parser("panoptic", help="PQ/SQ/RQ of COCO panoptic folders, as the COCO panoptic API")
    pan.add_argument("--gt-json", required=True, help="ground-truth COCO panoptic JSON (its categories are used)")
    pan.add_argument("--gt-folder", default=None, help="ground-truth PNG folder (default: GT JSON path minus .json)")
    pan.add_argument("--pred-json", required=True, help="prediction JSON (annotations with segments_info)")
    pan.add_argument("--pred-folder", default=None, help="prediction PNG folder (default: prediction JSON minus .json)")
    pan.add_argument("--per-class", action="store_true", help="also print PQ/SQ/RQ/TP/FP/FN of every category")
    pan.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that decode and score the images (default: one per usable CPU core, "
        "at most one per 16 images; the results do not depend on it)",
    )
    pan.add_argument("--out", default=None, help="write the results (per class included) to this JSON file")
    pan.set_defaults(func=run_panoptic)

    # its choices come from odise_pl.metrics.semantic_iou (torch): added when the command is used
    kinds.add_parser("semantic", help="mIoU/fwIoU/pACC/mACC of label-image folders", populate=semantic_arguments)


def semantic_arguments(sem: argparse.ArgumentParser) -> None:
    """The arguments and handler of ``odise-pl eval semantic``."""
    from odise_pl.metrics.semantic_iou import AVERAGES, DEFAULT_AVERAGE

    sem.add_argument("--gt-folder", required=True, help="ground-truth label images (.png, .tif, .tiff)")
    sem.add_argument("--pred-folder", required=True, help="predicted class indices, one file per GT file stem")
    sem.add_argument("--num-classes", type=int, required=True, help="K: labels are 0..K-1")
    sem.add_argument("--ignore-label", required=True, help="GT value to drop: 255 (8-bit datasets), 65535 (A-847, PC-459 uint16), or none")
    sem.add_argument(
        "--miou-average",
        choices=AVERAGES,
        default=DEFAULT_AVERAGE,
        help="classes the mIoU averages over: either_present (default; detectron2 v0.6, "
        "the reference's: classes in GT or prediction) or gt_present (detectron2 after "
        "f3c1bc19, no release: classes in GT)",
    )
    sem.add_argument("--per-class", action="store_true", help="also print the IoU and accuracy of every class")
    sem.add_argument("--out", default=None, help="write the results (per class included) to this JSON file")
    sem.set_defaults(func=run_semantic)


def _folder(given: str | None, json_path: str, flag: str) -> Path:
    if given is not None:
        return Path(given)
    if not json_path.endswith(".json"):
        raise DatasetError(f"{flag} is needed: {json_path} does not end in .json, so there is no default folder.")
    return Path(json_path[: -len(".json")])


def _write_json(path: str | None, results: dict) -> None:
    if path is None:
        return
    out = Path(path)
    if out.is_dir():
        raise DatasetError(f"--out {out} is a directory; give a file name such as {out / 'results.json'}.")
    from odise_pl.atomic_files import write_new

    written = write_new(out, json.dumps(results, indent=1) + "\n")  # an earlier result is never overwritten
    print(f"results written to {written}" + (f" ({out} exists already)" if written != out else ""))


def run_panoptic(args: argparse.Namespace) -> int:
    """``odise-pl eval panoptic``: print the COCO panoptic API's table (and per class)."""
    from odise_pl.metrics.panoptic_io import evaluate_panoptic_folders, format_pq_table

    gt_folder = _folder(args.gt_folder, args.gt_json, "--gt-folder")
    pred_folder = _folder(args.pred_folder, args.pred_json, "--pred-folder")
    if args.workers is not None and args.workers < 1:
        raise DatasetError(f"--workers must be >= 1, got {args.workers}.")
    start = time.perf_counter()
    results = evaluate_panoptic_folders(args.gt_json, gt_folder, args.pred_json, pred_folder, workers=args.workers)
    seconds = time.perf_counter() - start
    print(format_pq_table(results, per_class=args.per_class))
    print(f"Time elapsed: {seconds:0.2f} seconds")
    results["per_class"] = {str(k): v for k, v in results["per_class"].items()}  # JSON keys are strings
    results.update(
        gt_json=str(args.gt_json), gt_folder=str(gt_folder), pred_json=str(args.pred_json), pred_folder=str(pred_folder), seconds=seconds
    )
    _write_json(args.out, results)
    return 0


def format_semantic_table(results: dict, per_class: bool = False, names: list[str] | None = None) -> str:
    """The semantic scores as text: one summary row naming the mIoU convention, optionally per class.

    Args:
        results: :func:`odise_pl.metrics.panoptic_io.evaluate_semantic_folders` output.
        per_class: also list each class with a defined IoU.
        names: class names (default: the class index).
    """
    from odise_pl.metrics.semantic_iou import AVERAGE_LABELS

    header = ("mIoU", "fwIoU", "pACC", "mACC", "N", "mIoU over")
    lines = ["{:>6s}  {:>6s}  {:>6s}  {:>6s}  {:>5s}  {}".format(*header), "-" * 60]
    lines.append(
        "{:6.2f}  {:6.2f}  {:6.2f}  {:6.2f}  {:5d}  {}".format(
            results["mIoU"], results["fwIoU"], results["pACC"], results["mACC"], int(results["n"]), AVERAGE_LABELS[results["average"]]
        )
    )
    if per_class:
        lines += ["", "{:>5s}  {:24s}  {:>6s}  {:>6s}".format("class", "name", "IoU", "ACC"), "-" * 47]
        for i, (iou, acc) in enumerate(zip(results["IoU"], results["ACC"])):
            if iou == iou:  # NaN: the class is in neither the GT nor the prediction
                name = names[i] if names else str(i)
                acc_text = f"{acc:6.2f}" if acc == acc else "     -"
                lines.append(f"{i:5d}  {name[:24]:24s}  {iou:6.2f}  {acc_text}")
    return "\n".join(lines)


def run_semantic(args: argparse.Namespace) -> int:
    """``odise-pl eval semantic``: print mIoU/fwIoU/pACC/mACC and the mIoU convention used."""
    from odise_pl.metrics.panoptic_io import evaluate_semantic_folders

    text = str(args.ignore_label).strip().lower()
    if text in ("none", "null", ""):
        ignore = None
    else:
        try:
            ignore = int(text)
        except ValueError:
            raise DatasetError(f"--ignore-label must be an integer (255, 65535) or 'none', got {args.ignore_label!r}.") from None
    if args.num_classes < 1:
        raise DatasetError(f"--num-classes must be >= 1, got {args.num_classes}.")
    results = evaluate_semantic_folders(args.gt_folder, args.pred_folder, args.num_classes, ignore, average=args.miou_average)
    print(format_semantic_table(results, per_class=args.per_class))
    results.update(ignore_label=ignore, num_classes=args.num_classes, gt_folder=str(args.gt_folder), pred_folder=str(args.pred_folder))
    _write_json(
        args.out, {k: ([None if v != v else v for v in vals] if isinstance(vals, list) else vals) for k, vals in results.items()}
    )  # NaN -> null: valid JSON
    return 0
