"""Check an evaluation set before evaluating it: every item the loader would read, every problem at once.

:func:`check_set` builds the set's data module from its keyword arguments (a set file's ``data:``
section, :mod:`odise_pl.data_modules.set_file`) and reads what its evaluation split would read:

* a semantic set (``semantic_seg``): every label file and its image, and the vocabulary;
* a COCO-panoptic-format set (``coco_panoptic`` and the modules built on it): the JSON, every
  annotation's image and segment-id PNG, the categories and the optional vocabulary (and the
  semantic label maps of ``val_semantic_dir`` when set).

Each :class:`Problem` names the file at fault and what is wrong with it, in these kinds:
``missing image``, ``missing label``, ``unreadable``, ``size mismatch``, ``label values`` (outside
the vocabulary and not the ignore label), ``unknown segment id`` (in a PNG, missing from the JSON's
``segments_info``), ``duplicate id`` (image, annotation, segment or category ids), ``bad json``,
``vocabulary`` and ``layout`` (a missing folder, no labels at all).

Example (the set shipped in the repository's ``examples/custom_dataset``):
    >>> from pathlib import Path
    >>> import odise_pl
    >>> example = Path(odise_pl.__file__).parents[1] / "examples" / "custom_dataset"
    >>> report = check_set({"name": "semantic_seg", "dataset": "custom", "root": str(example)})
    >>> report.items, report.problems
    (2, [])
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from odise_pl.data_modules.panoptic_files import image_key, read_json, read_rgb_image
from odise_pl.errors import OdiseError
from odise_pl.formats.coco_panoptic import read_label_image, read_panoptic_png

__all__ = ["Problem", "CheckReport", "check_set", "KINDS"]

KINDS = (
    "missing image",
    "missing label",
    "unreadable",
    "size mismatch",
    "label values",
    "unknown segment id",
    "duplicate id",
    "bad json",
    "vocabulary",
    "layout",
)
_LISTED = 8  # values / ids quoted per problem


@dataclass(frozen=True)
class Problem:
    """One problem: the file at fault, its kind (one of :data:`KINDS`) and what is wrong."""

    path: Path
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_set` read (``items``: image/label pairs) and every problem found."""

    items: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, path: Path | str, kind: str, message: str) -> None:
        self.problems.append(Problem(Path(path), kind, message))


def _listed(values) -> str:
    values = [int(v) for v in values]
    more = f" and {len(values) - _LISTED} more" if len(values) > _LISTED else ""
    return ", ".join(map(str, values[:_LISTED])) + more


def _read(report: CheckReport, path: Path, reader, *args):
    """``reader(path, *args)``, or None with an ``unreadable`` / ``missing`` problem recorded."""
    try:
        return reader(path, *args)
    except (OdiseError, OSError, ValueError, SyntaxError) as err:
        if not path.exists():
            return None  # the caller reports it as missing
        report.add(path, "unreadable", str(err).splitlines()[0])
        return None


def _check_values(report: CheckReport, path: Path, labels: np.ndarray, num_classes: int | None, ignore_index: int) -> None:
    if num_classes is None:
        return
    values, counts = np.unique(labels, return_counts=True)
    bad = ((values < 0) | (values >= num_classes)) & (values != ignore_index)
    if bad.any():
        report.add(
            path,
            "label values",
            f"{_listed(values[bad])} ({int(counts[bad].sum())} pixels) outside the "
            f"vocabulary's classes 0..{num_classes - 1} and not the ignore label {ignore_index}",
        )


def _num_classes(report: CheckReport, dm, vocabulary_file: Path | None) -> int | None:
    """The set's class count, or None (with a ``vocabulary`` problem) where its categories do not load."""
    try:
        return len(dm.categories)
    except OdiseError as err:
        report.add(vocabulary_file or Path(dm.root), "vocabulary", str(err).splitlines()[0])
        return None


# ----------------------------------------------------------------------------- semantic sets
def _check_semantic(dm, report: CheckReport) -> None:
    from odise_pl.data_modules.semantic import IMAGE_SUFFIXES, label_stem

    root = Path(dm.root)
    image_dir, label_dir = root / dm.image_dir, root / dm.label_dir
    vocabulary = Path(dm.vocabulary) if Path(dm.vocabulary).suffix else None
    num_classes = _num_classes(report, dm, vocabulary)
    missing = [(d, what) for d, what in ((image_dir, "image"), (label_dir, "label")) if not d.is_dir()]
    for folder, what in missing:
        report.add(folder, "layout", f"the {what} directory does not exist (data.{what}_dir under data.root)")
    if missing:
        return
    pairs = dm.label_image_pairs()
    if not pairs:
        report.add(label_dir, "layout", f"holds no labels ending in {dm.label_suffix} (data.label_suffix)")
    labelled = {label_stem(label, dm.label_suffix) for label, _ in pairs}
    for image in sorted(image_dir.iterdir()):
        if image.suffix.lower() in IMAGE_SUFFIXES and image.stem not in labelled:
            report.add(image, "missing label", f"no label {label_dir / image.stem}{dm.label_suffix}")
    for label, image in pairs:
        if image is None:
            stem = label_stem(label, dm.label_suffix)
            report.add(label, "missing image", f"no image {image_dir / stem}.jpg (or .jpeg / .png)")
            continue
        report.items += 1
        labels = _read(report, label, read_label_image)
        if labels is None:
            continue
        photo = _read(report, image, read_rgb_image, labels.shape)
        if photo is not None and photo.shape[:2] != labels.shape:
            report.add(
                label, "size mismatch", f"{labels.shape[1]}x{labels.shape[0]} but its image {image} is {photo.shape[1]}x{photo.shape[0]}"
            )
        _check_values(report, label, labels, num_classes, int(dm.ignore_index))


# ----------------------------------------------------------------------------- panoptic sets
def _duplicates(values) -> list:
    return [v for v, n in Counter(values).items() if n > 1]


def _check_panoptic_json(data, json_path: Path, report: CheckReport) -> tuple[dict, dict, list] | None:
    """Ids of categories and images and the annotations, with duplicates reported; None if malformed."""
    try:
        cats = [int(c["id"]) for c in data["categories"]]
        images = {image_key(im["id"]): im for im in data["images"]}
        image_ids = [image_key(im["id"]) for im in data["images"]]
        annotations = list(data["annotations"])
        annotated = [image_key(a["image_id"]) for a in annotations]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        what = f"missing key {err}" if isinstance(err, KeyError) else f"a bad value ({err})"
        report.add(
            json_path, "bad json", f"{what}; expected 'images', 'annotations' (with 'segments_info') and 'categories' as in COCO panoptic"
        )
        return None
    for ids, what in ((cats, "category"), (image_ids, "image"), (annotated, "annotation image")):
        if _duplicates(ids):
            report.add(json_path, "duplicate id", f"{what} id {_listed(_duplicates(ids))} listed more than once")
    return dict.fromkeys(cats), images, annotations


def _check_annotation(ann, images, cats, dm, json_path: Path, report: CheckReport) -> None:
    root = Path(dm.root)
    try:
        segments = list(ann["segments_info"])
        seg_ids = [int(s["id"]) for s in segments]
        categories = [int(s["category_id"]) for s in segments]
        png = root / dm.val_panoptic_dir / ann["file_name"]
        info = images.get(image_key(ann["image_id"]))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        report.add(json_path, "bad json", f"annotation {ann!r:.80}: {type(err).__name__} {err}")
        return
    where = f"image id {ann['image_id']} in {json_path}"
    if info is None:
        report.add(json_path, "missing image", f"annotation {png.name} refers to image id {ann['image_id']}, which is not in 'images'")
        return
    if _duplicates(seg_ids):
        report.add(
            json_path, "duplicate id", f"segment id {_listed(_duplicates(seg_ids))} listed more than once in segments_info of {where}"
        )
    unknown = sorted({c for c in categories if c not in cats})
    if unknown:
        report.add(json_path, "bad json", f"segments of {where} have category_id {_listed(unknown)}, not in 'categories'")
    image = root / dm.val_image_dir / str(info.get("file_name"))
    report.items += 1
    if not png.is_file():
        report.add(png, "missing label", f"the panoptic PNG of {where} does not exist")
    if not image.is_file():
        report.add(image, "missing image", f"listed for {where} but does not exist")
    ids = _read(report, png, read_panoptic_png) if png.is_file() else None
    photo = _read(report, image, read_rgb_image, None if ids is None else ids.shape) if image.is_file() else None
    sizes = {"JSON": (info.get("width"), info.get("height"))}
    if ids is not None:
        sizes["panoptic PNG"] = (ids.shape[1], ids.shape[0])
        present = np.unique(ids)
        missing = sorted(set(present[present != 0].tolist()) - set(seg_ids))
        if missing:
            report.add(png, "unknown segment id", f"ids {_listed(missing)} are not in segments_info of {where}")
    if photo is not None:
        sizes["image"] = (photo.shape[1], photo.shape[0])
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{k} {w}x{h}" for k, (w, h) in sizes.items())
        report.add(png if ids is not None else image, "size mismatch", f"{shown} (image {image.name})")
    if dm.val_semantic_dir and ids is not None:
        label = root / dm.val_semantic_dir / f"{image.stem}.png"
        labels = _read(report, label, read_label_image) if label.is_file() else None
        if labels is None and not label.is_file():
            report.add(label, "missing label", f"no semantic label map for {where} (data.val_semantic_dir)")
        elif labels is not None and labels.shape != ids.shape:
            report.add(
                label, "size mismatch", f"{labels.shape[1]}x{labels.shape[0]} but the panoptic PNG {png} is {ids.shape[1]}x{ids.shape[0]}"
            )
        if labels is not None:
            _check_values(report, label, labels, len(cats), int(dm.ignore_index))


def _check_panoptic(dm, report: CheckReport) -> None:
    json_path = Path(dm.root) / dm.val_json
    vocabulary = Path(dm.vocabulary) if dm.vocabulary and Path(dm.vocabulary).suffix else json_path
    try:
        data = read_json(json_path, "panoptic JSON")
    except OdiseError as err:
        report.add(json_path, "bad json" if json_path.is_file() else "layout", str(err).splitlines()[0])
        return
    parsed = _check_panoptic_json(data, json_path, report)
    if parsed is None:
        return
    if dm.vocabulary:
        _num_classes(report, dm, vocabulary)
    cats, images, annotations = parsed
    for folder, key in ((dm.val_image_dir, "val_image_dir"), (dm.val_panoptic_dir, "val_panoptic_dir")):
        if not (Path(dm.root) / folder).is_dir():
            report.add(Path(dm.root) / folder, "layout", f"the directory does not exist (data.{key})")
    for ann in annotations:
        _check_annotation(ann, images, cats, dm, json_path, report)


def check_set(kwargs: dict) -> CheckReport:
    """Read every item of the evaluation set ``kwargs`` describes (data-module keyword arguments with
    ``name``) and report every problem found; never raises on bad data.

    Raises:
        ConfigError: ``kwargs`` do not describe a set (unknown data module, bad keys).
    """
    from odise_pl.data_modules.coco_panoptic import CocoPanopticDataModule
    from odise_pl.data_modules.semantic import SemanticSegDataModule
    from odise_pl.errors import ConfigError
    from odise_pl.registry import DATA_MODULES

    kwargs = dict(kwargs)
    entry = DATA_MODULES.get(kwargs.pop("name"))
    dm = entry.cls.from_config(entry.config(**kwargs))
    report = CheckReport()
    if isinstance(dm, SemanticSegDataModule):
        _check_semantic(dm, report)
    elif isinstance(dm, CocoPanopticDataModule):
        _check_panoptic(dm, report)
    else:
        raise ConfigError(f"odise-pl data check reads semantic_seg and COCO-panoptic-format sets; {type(dm).__name__} is neither.")
    return report
