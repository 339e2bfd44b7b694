"""Read COCO-format panoptic / semantic results from disk and score them.

COCO panoptic format: a JSON with ``categories`` and ``annotations`` (one per
image: ``image_id``, ``file_name``, ``segments_info`` = ``[{id, category_id,
iscrowd, ...}]``) beside a folder of RGB PNGs whose pixels encode segment ids as
``R + 256 * G + 256**2 * B`` (read by :mod:`odise_pl.formats.coco_panoptic`).
Categories map to contiguous indices in the order of the GT JSON's
``categories`` list.

:func:`evaluate_panoptic_folders` and :func:`format_pq_table` reproduce the
COCO panoptic API's ``pq_compute`` and its printed table (per image: the numpy
core of :mod:`odise_pl.metrics.pq_numpy`, same semantics as
:func:`~odise_pl.metrics.panoptic_quality.pq_stats`, on ``workers`` processes
with results that do not depend on their number); it needs numpy and PIL only
(torch is imported by the semantic scorer, when called).
:func:`evaluate_semantic_folders` scores label images (PNG or uint16
TIFF) matched by file stem.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import read_label_image, read_panoptic_png
from odise_pl.metrics.pq_numpy import SegmentTable, pq_stats_numpy, process_scratch
from odise_pl.metrics.pq_summary import per_class_pq, summarize_pq

__all__ = [
    "PanopticCategories",
    "load_panoptic_json",
    "segments_from_json",
    "evaluate_panoptic_folders",
    "default_workers",
    "evaluate_semantic_folders",
    "format_pq_table",
]

LABEL_SUFFIXES = (".png", ".tif", ".tiff")
#: images per worker process below which fewer processes are started (a process costs ~10-50 ms)
IMAGES_PER_WORKER = 16
#: chunks per worker: contiguous runs of images handed out in order, small enough to balance the load
CHUNKS_PER_WORKER = 4


@dataclass(frozen=True)
class PanopticCategories:
    """The categories of a COCO panoptic JSON, in contiguous order.

    Attributes:
        ids: original ``category_id`` of each contiguous index.
        names: category names.
        is_thing: whether each category is a thing.
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    is_thing: tuple[bool, ...]

    @classmethod
    def from_json(cls, categories: list[dict]) -> PanopticCategories:
        """Build from the ``categories`` list of a COCO panoptic JSON."""
        return cls(
            ids=tuple(int(c["id"]) for c in categories),
            names=tuple(str(c.get("name", c["id"])) for c in categories),
            is_thing=tuple(bool(c.get("isthing", 0)) for c in categories),
        )

    def index_of(self) -> dict[int, int]:
        """Original category id -> contiguous index."""
        return {cat_id: i for i, cat_id in enumerate(self.ids)}


def load_panoptic_json(path: str | Path) -> dict:
    """Load a COCO panoptic JSON, checking that it has ``annotations``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Panoptic JSON {path} does not exist.")
    with open(path) as f:
        data = json.load(f)
    if "annotations" not in data:
        raise DatasetError(f"Panoptic JSON {path} has no 'annotations' list (COCO panoptic format expected).")
    return data


def segments_from_json(segments_info: list[dict], index_of: dict[int, int], where: str) -> list[dict]:
    """COCO ``segments_info`` -> ``[{"id", "category", "iscrowd"[, "area"]}]`` with contiguous categories.

    Args:
        segments_info: the annotation's segment list.
        index_of: original category id -> contiguous index.
        where: names the annotation in error messages.
    """
    out = []
    for seg in segments_info:
        cat = seg.get("category_id")
        if cat not in index_of:
            raise DatasetError(f"{where}: segment {seg.get('id')} has unknown category_id {cat}.")
        entry = {"id": int(seg["id"]), "category": index_of[cat], "iscrowd": int(seg.get("iscrowd", 0))}
        if seg.get("area") is not None:
            entry["area"] = int(seg["area"])  # the GT area PQ uses, as the COCO API
        out.append(entry)
    return out


def _segment_table(segments_info: list[dict], index_of: dict[int, int], where: str, json_areas: bool = False) -> SegmentTable:
    """COCO ``segments_info`` -> :class:`SegmentTable` (contiguous categories), errors naming ``where``.

    ``json_areas``: take the segments' ``area`` from the JSON (the GT, as the COCO API does; a
    segment without one is counted from its PNG), else count every area from the PNG (predictions).
    """
    try:
        ids = [int(seg["id"]) for seg in segments_info]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{where}: every entry of segments_info needs an integer 'id'.") from None
    cats = [index_of.get(seg.get("category_id"), -1) for seg in segments_info]
    if -1 in cats:
        seg = segments_info[cats.index(-1)]
        raise DatasetError(
            f"{where}: segment {seg.get('id')} has unknown category_id {seg.get('category_id')} (not in the GT JSON's categories)."
        )
    try:
        areas = [seg.get("area") for seg in segments_info] if json_areas else None
        if areas is not None and any(a is not None and not isinstance(a, (int, float)) for a in areas):
            raise ValueError("an 'area' is not a number")
        return SegmentTable.build(
            ids,
            cats,
            [int(seg.get("iscrowd", 0)) for seg in segments_info],
            None if areas is None else [None if a is None else int(a) for a in areas],
        )
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}.") from None


def _chunk_stats(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    """PQ sums of a contiguous run of images (in one process).

    Args:
        job: ``(pairs, gt_folder, pred_folder, index_of, num_classes)``; ``pairs`` lists
            ``(gt_ann, pred_ann)``.

    Returns:
        ``(iou_rows, counts)``: (len(pairs), K) float64, each image's IoU sums (added up by the
        caller in image order, so the float total does not depend on how images were split), and
        (3, K) int64, the TP / FP / FN summed over the run (integers: exact in any order).
    """
    pairs, gt_folder, pred_folder, index_of, num_classes = job
    scratch = process_scratch()
    iou_rows = np.zeros((len(pairs), num_classes), dtype=np.float64)
    counts = np.zeros((3, num_classes), dtype=np.int64)
    for row, (gt_ann, pred_ann) in enumerate(pairs):
        gt_path, pred_path = Path(gt_folder) / gt_ann["file_name"], Path(pred_folder) / pred_ann["file_name"]
        where = f"image id {gt_ann['image_id']}"
        gt = _segment_table(gt_ann["segments_info"], index_of, f"GT {where} ({gt_path})", json_areas=True)
        pred = _segment_table(pred_ann["segments_info"], index_of, f"prediction {where} ({pred_path})")
        try:
            iou_sum, tp, fp, fn = pq_stats_numpy(read_panoptic_png(gt_path), gt, read_panoptic_png(pred_path), pred, num_classes, scratch)
        except DatasetError:
            raise
        except ValueError as exc:
            raise DatasetError(
                f"{where}: {exc} (GT {gt_path}, prediction {pred_path}). Each PNG and its "
                "segments_info entry must list the same segment ids."
            ) from exc
        iou_rows[row] = iou_sum
        counts[0] += tp
        counts[1] += fp
        counts[2] += fn
    return iou_rows, counts


def default_workers(num_images: int) -> int:
    """Processes ``workers=None`` uses: one per usable CPU core, at most one per 16 images.

    (The COCO API's ``pq_compute`` uses every core; small sets stay in one process, where
    starting workers would cost more than it saves.)
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, num_images // IMAGES_PER_WORKER))


def _run_chunks(jobs: list[tuple], workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`_chunk_stats` of every job, in job order, on ``workers`` processes (1: this one)."""
    if workers == 1 or len(jobs) == 1:
        return [_chunk_stats(job) for job in jobs]
    # fork (as DataLoader workers do) starts fast; the workers run numpy / PIL only.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    with ProcessPoolExecutor(workers, mp_context=get_context(method)) as pool:
        return list(pool.map(_chunk_stats, jobs))  # in order; the first failing chunk's error is raised


def evaluate_panoptic_folders(
    gt_json: str | Path, gt_folder: str | Path, pred_json: str | Path, pred_folder: str | Path, workers: int | None = 1
) -> dict:
    """Score a folder of panoptic predictions like the COCO API's ``pq_compute``.

    Every GT image must have a prediction (matched by ``image_id``); extra
    predictions are ignored, as in the API. As in the API, the GT segments and
    their areas are those of the GT JSON's ``segments_info`` (``area``; a listed
    segment without pixels is a false negative unless crowd), the predicted
    areas are counted from the PNGs.

    Args:
        gt_json, gt_folder: the GT JSON and its PNG folder.
        pred_json, pred_folder: the predictions, same format (``categories`` optional).
        workers: processes to decode and score on (1 = in this process; None =
            :func:`default_workers`). The images go out in contiguous chunks, in order, and the
            per-image sums are added up in image order, so the results are bit-identical for
            every ``workers``.

    Returns:
        The keys of :meth:`PanopticQuality.compute` as Python numbers (percent)
        and ``per_class``: ``{category_id: {"name", "isthing", "PQ", "SQ", "RQ",
        "TP", "FP", "FN"}}`` for every category of the GT JSON.
    """
    gt_data, pred_data = load_panoptic_json(gt_json), load_panoptic_json(pred_json)
    if "categories" not in gt_data:
        raise DatasetError(f"GT JSON {gt_json} has no 'categories' list.")
    categories = PanopticCategories.from_json(gt_data["categories"])
    for folder, role in ((gt_folder, "GT"), (pred_folder, "prediction")):
        if not Path(folder).is_dir():
            raise DatasetError(f"The {role} PNG folder {folder} does not exist.")
    predictions = {ann["image_id"]: ann for ann in pred_data["annotations"]}
    pairs = []
    for gt_ann in gt_data["annotations"]:
        if gt_ann["image_id"] not in predictions:
            raise DatasetError(f"{pred_json} has no prediction for the GT image id {gt_ann['image_id']}.")
        pairs.append((gt_ann, predictions[gt_ann["image_id"]]))

    k = len(categories.ids)
    workers = default_workers(len(pairs)) if workers is None else max(1, min(int(workers), len(pairs)))
    step = max(1, -(-len(pairs) // (workers * CHUNKS_PER_WORKER))) if workers > 1 else max(1, len(pairs))
    jobs = [(pairs[i : i + step], str(gt_folder), str(pred_folder), categories.index_of(), k) for i in range(0, max(1, len(pairs)), step)]
    partial = _run_chunks(jobs, workers)
    iou_sum = np.zeros(k, dtype=np.float64)
    for iou_rows, _ in partial:
        for row in iou_rows:  # image order, one image at a time: the same float sum for any split
            iou_sum += row
    tp, fp, fn = sum(counts for _, counts in partial) if partial else np.zeros((3, k), dtype=np.int64)
    is_thing = np.asarray(categories.is_thing, dtype=bool)
    results: dict = summarize_pq(iou_sum, tp, fp, fn, is_thing)
    scores = per_class_pq(iou_sum, tp, fp, fn)
    results["per_class"] = {
        cat_id: {
            "name": categories.names[i],
            "isthing": categories.is_thing[i],
            **{key: 100 * scores[key][i].item() for key in ("PQ", "SQ", "RQ")},
            "TP": int(tp[i]),
            "FP": int(fp[i]),
            "FN": int(fn[i]),
        }
        for i, cat_id in enumerate(categories.ids)
    }
    return results


def format_pq_table(results: dict, per_class: bool = False) -> str:
    """The COCO panoptic API's summary table (values in percent).

    Args:
        results: :func:`evaluate_panoptic_folders` output or :meth:`PanopticQuality.compute`
            output (tensors are fine).
        per_class: also list every category (needs ``results["per_class"]``).

    Returns:
        The table as text, without a trailing newline.
    """
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        pq, sq, rq = (float(results[key + suffix]) for key in ("PQ", "SQ", "RQ"))
        n = int(results["n" + suffix])
        lines.append(f"{name:10s}| {pq:5.1f}  {sq:5.1f}  {rq:5.1f} {n:5d}")
    if per_class:
        if "per_class" not in results:
            raise ValueError("per_class=True needs results['per_class'] (from evaluate_panoptic_folders).")
        lines += [
            "",
            "{:24s}| {:>5s}  {:>5s}  {:>5s} {:>6s} {:>6s} {:>6s}".format("category", "PQ", "SQ", "RQ", "TP", "FP", "FN"),
            "-" * 67,
        ]
        for row in results["per_class"].values():
            kind = "[th]" if row["isthing"] else "[st]"
            lines.append(
                "{:24s}| {:5.1f}  {:5.1f}  {:5.1f} {:6d} {:6d} {:6d}".format(
                    f"{row['name'][:19]} {kind}", *(row[key] for key in ("PQ", "SQ", "RQ", "TP", "FP", "FN"))
                )
            )
    return "\n".join(lines)


def _labels_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetError(f"Label folder {folder} does not exist.")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in LABEL_SUFFIXES:
            if path.stem in found:
                raise DatasetError(f"{folder} holds two label files for the stem '{path.stem}': {found[path.stem].name} and {path.name}.")
            found[path.stem] = path
    return found


def evaluate_semantic_folders(
    gt_folder: str | Path, pred_folder: str | Path, num_classes: int, ignore_label: int | None, average: str | None = None
) -> dict:
    """Score prediction label maps against GT label maps matched by file stem.

    Args:
        gt_folder: GT labels (``.png``, ``.tif``, ``.tiff``; uint16 TIFFs keep 255 as a class).
        pred_folder: predicted class indices, one file per GT stem (extra files are ignored).
        num_classes: K.
        ignore_label: GT value to drop (255 or 65535), or None.
        average: ``"either_present"`` (detectron2 v0.6; None: this default of
            :data:`odise_pl.metrics.semantic_iou.DEFAULT_AVERAGE`) or ``"gt_present"`` (see
            :mod:`.semantic_iou`).

    Returns:
        ``mIoU, fwIoU, pACC, mACC`` (percent) and ``n`` (classes in the mIoU) as Python
        numbers, ``IoU`` and ``ACC`` (lists of K floats, NaN where undefined),
        ``average`` (the mIoU convention used) and ``num_images``.
    """
    import torch

    from odise_pl.metrics.semantic_iou import DEFAULT_AVERAGE, SemanticIoU

    average = DEFAULT_AVERAGE if average is None else average
    gt_files, pred_files = _labels_by_stem(Path(gt_folder)), _labels_by_stem(Path(pred_folder))
    if not gt_files:
        raise DatasetError(f"No label files ({', '.join(LABEL_SUFFIXES)}) in {gt_folder}.")
    metric = SemanticIoU(num_classes, ignore_index=ignore_label, average=average)
    for stem, gt_path in gt_files.items():
        if stem not in pred_files:
            raise DatasetError(f"No prediction for {gt_path.name}: expected {Path(pred_folder) / stem}{{{','.join(LABEL_SUFFIXES)}}}.")
        target = torch.from_numpy(read_label_image(gt_path))
        pred = torch.from_numpy(read_label_image(pred_files[stem]))
        if target.shape != pred.shape:
            raise DatasetError(f"{pred_files[stem]} is {tuple(pred.shape)} but {gt_path} is {tuple(target.shape)}.")
        try:
            metric.update(pred, target)
        except ValueError as exc:
            raise DatasetError(f"{gt_path.name} / {pred_files[stem].name}: {exc}") from exc
    scores = metric.compute()
    out = {key: scores[key].item() for key in ("mIoU", "fwIoU", "pACC", "mACC", "n")}
    out["IoU"] = scores["IoU"].tolist()
    out["ACC"] = scores["ACC"].tolist()
    out["average"] = average
    out["num_images"] = len(gt_files)
    return out
