"""``odise-pl data prepare-ade20k``: the ADE challenge data -> the ground truth the reference scores A-150 on.

Source layout (``--root``, default ``datasets/ade/ADEChallengeData2016``, where ODISE registers
ADE20K-150), as unpacked from ``ADEChallengeData2016.zip`` (MIT Scene Parsing benchmark) plus the
instance annotations of the ADE20K instance-segmentation challenge (``annotations_instance/``)::

    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png           semantic: 0 unlabeled, 1..150 classes
    annotations_instance/{training,validation}/ADE_*.png  R: instance-challenge class 1..100 (0 none),
                                                          G: instance id (0 none)

Written beside them, what ODISE's copies of Mask2Former's three scripts write::

    annotations_detectron2/{training,validation}/*.png    prepare_ade20k_sem_seg.py: the semantic label
                                                          minus 1, unlabeled 255 (uint8): the mIoU truth
    ade20k_panoptic_{train,val}.json, ade20k_panoptic_{train,val}/
                                                          prepare_ade20k_pan_seg.py: the PQ truth
    ade20k_instance_{train,val}.json                      prepare_ade20k_ins_seg.py: the mask-AP truth

The scripts' rules, which decide the scores:

* image ids are the file stems (``"ADE_val_00000001"``), in the panoptic and the instance JSON;
* panoptic: per image, first one stuff segment per stuff class of the semantic map (ascending),
  then one thing segment per instance id of ``annotations_instance`` (ascending), its class the
  mapping file's ADE-150 class of its instance class, pasted over the stuff. A stuff segment's
  ``area`` and ``bbox`` are those of its whole semantic mask, counted *before* the things are
  pasted: a partly covered stuff segment lists more area than it has pixels, and one covered
  entirely stays listed without pixels (the COCO panoptic API takes GT areas from the JSON, so
  both change PQ). Semantic thing pixels without an instance stay VOID;
* segment ids follow panopticapi's ``IdGenerator``: a stuff segment's id is its category colour
  (``R + 256 G + 256^2 B``); a thing takes its category colour when no segment of the image has it
  yet, else a random colour within +-30 per channel that none has (random in the script, seeded by
  the file stem here so that reruns write the same files; any distinct ids give the same scores);
* categories: the ADE20K-150 panoptic list (ids 0..149, names, colours), ``isthing`` where the
  mapping file maps an instance class to it (the 100 instance-challenge classes);
* instance JSON: the 100 instance-challenge categories (their own names, ids mapped to ADE-150),
  one annotation per instance id (ids count from 1 over the split, ``iscrowd`` 0), with ``bbox``,
  an RLE ``segmentation`` and its pixel ``area``.

One deliberate difference, upstream's: ODISE's copy of the category list gives *skyscraper* (48)
the colour of *road* (6), ``[140, 140, 140]``, so in an image with both its panoptic PNG paints
them as one segment whose id its JSON lists twice; upstream Mask2Former's script uses
``[140, 140, 200]`` for skyscraper, and so does this command.

The category list and ``ade20k_instance_catid_mapping.txt`` ship with the package
(``odise_pl/data_modules/data/``); ``--catid-mapping`` replaces the latter.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from odise_pl.atomic_files import write_text
from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import rgb_to_id

__all__ = [
    "prepare_ade20k",
    "PreparedSplit",
    "ade20k_150_categories",
    "ade20k_instance_categories",
    "read_catid_mapping",
    "DOWNLOAD_HINT",
    "DEFAULT_ROOT",
    "DEFAULT_MAPPING",
    "add_prepare_arguments",
    "run_prepare",
]

SPLITS = {"train": "training", "val": "validation"}
DATA = Path(__file__).with_name("data")
DEFAULT_ROOT = "datasets/ade/ADEChallengeData2016"
DEFAULT_MAPPING = DATA / "ade20k_instance_catid_mapping.txt"
COLOR_JITTER = 30  # IdGenerator's max_dist

DOWNLOAD_HINT = (
    "ADE20K-150 needs: ADEChallengeData2016.zip from the MIT Scene Parsing benchmark "
    "(sceneparsing.csail.mit.edu; images/ and annotations/) and the instance annotations "
    "annotations_instance/ of the ADE20K instance challenge (same site, annotations_instance.tar), "
    f"unpacked into one folder (ODISE's place: {DEFAULT_ROOT}); then run "
    "`odise-pl data prepare-ade20k --root DIR`."
)


def _category_data() -> dict:
    return json.loads((DATA / "ade20k_150_panoptic.json").read_text())


def ade20k_150_categories(mapping: dict[int, int] | None = None) -> list[dict]:
    """The ADE20K-150 panoptic categories as the preparation writes them.

    Args:
        mapping: instance class -> ADE-150 category (:func:`read_catid_mapping`); default: the
            packaged ``ade20k_instance_catid_mapping.txt``.

    Returns:
        150 dicts ``{"name", "id" (0..149), "isthing" (0/1: a target of the mapping), "color"}``.
    """
    mapping = read_catid_mapping(DEFAULT_MAPPING) if mapping is None else mapping
    things = set(mapping.values())
    return [
        {"name": c["name"], "id": c["id"], "isthing": int(c["id"] in things), "color": list(c["color"])}
        for c in _category_data()["categories"]
    ]


def ade20k_instance_categories(mapping: dict[int, int], where: str | Path = DEFAULT_MAPPING) -> list[dict]:
    """The instance JSON's categories: the 100 instance-challenge classes, ids mapped to ADE-150.

    Raises:
        DatasetError: ``mapping`` (read from ``where``) lacks one of the 100 instance classes.
    """
    listed = _category_data()["instance_categories"]
    missing = [c["instance_id"] for c in listed if c["instance_id"] not in mapping]
    if missing:
        raise DatasetError(
            f"{where} maps no ADE-150 class for the instance classes {missing[:5]} "
            f"({len(missing)} of {len(listed)}); the instance JSON lists all of them."
        )
    return [{"id": mapping[c["instance_id"]], "name": c["name"]} for c in listed]


def read_catid_mapping(path: str | Path) -> dict[int, int]:
    """``ade20k_instance_catid_mapping.txt`` -> {instance class 1..100: ADE-150 category 0..149}.

    The file has a header line, then ``<instance id> <semantic id> <full ADE20K id>`` per line
    (1-based ids, as Mask2Former ships it).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"The category mapping {path} does not exist; leave --catid-mapping out to use the packaged ade20k_instance_catid_mapping.txt."
        )
    mapping: dict[int, int] = {}
    for n, line in enumerate(path.read_text().splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            mapping[int(fields[0])] = int(fields[1]) - 1
        except (ValueError, IndexError):
            raise DatasetError(f"{path} line {n}: expected '<instance id> <semantic id> ...', got {line!r}.") from None
        if not 0 <= mapping[int(fields[0])] < 150:
            raise DatasetError(f"{path} line {n}: the semantic id {fields[1]} is outside 1..150.")
    if not mapping:
        raise DatasetError(f"{path} maps no class; expected a header line, then '<instance id> <semantic id> ...'.")
    return mapping


def _bbox(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] of the pixels of a non-empty (H, W) mask."""
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


class _SegmentIds:
    """panopticapi's ``IdGenerator`` rule for one image, with a seeded generator."""

    def __init__(self, categories: list[dict], seed: int) -> None:
        self.categories = categories
        self.taken = {(0, 0, 0)} | {tuple(c["color"]) for c in categories if not c["isthing"]}
        self.rng = np.random.default_rng(seed)

    def color(self, category: int) -> tuple[int, int, int]:
        cat = self.categories[category]
        base = tuple(int(v) for v in cat["color"])
        if not cat["isthing"]:
            return base
        color = base
        while color in self.taken:
            jitter = self.rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
            color = tuple(int(v) for v in np.clip(np.asarray(base) + jitter, 0, 255))
        self.taken.add(color)
        return color


def _read_annotations(sem_path: Path, inst_path: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The semantic (H, W) and instance (H, W, 3) uint8 maps, checked against the image size (W, H)."""
    with Image.open(sem_path) as img:
        if img.mode not in ("L", "P"):
            raise DatasetError(f"{sem_path} has mode {img.mode}; expected an 8-bit ADE semantic label map.")
        semantic = np.asarray(img)
    with Image.open(inst_path) as img:
        if img.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"{inst_path} has mode {img.mode}; expected an RGB ADE instance map (R: instance class, G: instance id).")
        instance = np.asarray(img)[..., :3]
    width, height = size
    if semantic.shape != (height, width) or instance.shape[:2] != (height, width):
        raise DatasetError(
            f"{sem_path.stem}: image {width}x{height}, semantic {semantic.shape[::-1]}, "
            f"instance {instance.shape[1::-1]}: the annotations must have the image's size."
        )
    return semantic, instance


def _instances(instance: np.ndarray, mapping: dict[int, int], where: Path):
    """Yield (mask, ADE-150 category) per instance id of an instance map, ascending ids."""
    classes, ids = instance[..., 0], instance[..., 1]
    for instance_id in np.unique(ids).tolist():
        if instance_id == 0:
            continue
        mask = ids == instance_id
        found = np.unique(classes[mask]).tolist()
        if len(found) != 1 or found[0] not in mapping:
            raise DatasetError(
                f"{where}: instance {instance_id} has the instance class(es) {found}; "
                "expected one class listed in the category mapping file."
            )
        yield mask, mapping[found[0]]


def convert_panoptic(
    semantic: np.ndarray, instance: np.ndarray, mapping: dict[int, int], categories: list[dict], seed: int, where: Path
) -> tuple[np.ndarray, list[dict]]:
    """One image as ``prepare_ade20k_pan_seg.py`` converts it (see the module docstring).

    Args:
        semantic: (H, W) uint8, 0 unlabeled, 1..150.
        instance: (H, W, 3) uint8, R instance class, G instance id.
        mapping: instance class -> ADE-150 category.
        categories: :func:`ade20k_150_categories` of ``mapping``.
        seed: seeds the colours of repeated thing categories.
        where: names the image in errors.

    Returns:
        (H, W, 3) uint8 panoptic PNG pixels and the ``segments_info`` list.
    """
    pixels = np.zeros((*semantic.shape, 3), dtype=np.uint8)
    ids = _SegmentIds(categories, seed)
    segments = []
    labels = semantic.astype(np.int64) - 1  # -1: unlabeled
    present = np.unique(labels).tolist()
    if present[-1] >= len(categories):
        raise DatasetError(f"{where} holds the label {present[-1] + 1}; ADE-150 labels are 0..{len(categories)}.")
    masks = [(labels == cat, cat) for cat in present if cat >= 0 and not categories[cat]["isthing"]]
    masks += list(_instances(instance, mapping, where))
    for mask, cat in masks:  # stuff first, then things over them; area and bbox before any paste
        color = ids.color(cat)
        pixels[mask] = color
        segments.append({"id": int(rgb_to_id(color)), "category_id": int(cat), "area": int(mask.sum()), "bbox": _bbox(mask), "iscrowd": 0})
    return pixels, segments


def instance_annotations(instance: np.ndarray, mapping: dict[int, int], image_id: str, first_id: int, where: Path) -> list[dict]:
    """One image's instance-JSON annotations as ``prepare_ade20k_ins_seg.py`` writes them."""
    from pycocotools import mask as mask_util

    out = []
    for n, (mask, cat) in enumerate(_instances(instance, mapping, where)):
        rle = mask_util.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
        rle["counts"] = rle["counts"].decode("utf-8")
        out.append(
            {
                "id": first_id + n,
                "image_id": image_id,
                "iscrowd": 0,
                "category_id": int(cat),
                "bbox": _bbox(mask),
                "segmentation": rle,
                "area": int(mask_util.area(rle)),
            }
        )
    return out


def write_semantic(sem_dir: Path, out_dir: Path) -> int:
    """``prepare_ade20k_sem_seg.py``: every label PNG minus 1 (0 -> 255, uint8); returns the count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(sem_dir.glob("*.png")):
        with Image.open(path) as img:
            labels = np.asarray(img)
        if labels.dtype != np.uint8 or labels.ndim != 2:
            raise DatasetError(f"{path} is not an 8-bit single-channel label map ({labels.dtype}, shape {labels.shape}).")
        Image.fromarray(labels - np.uint8(1)).save(out_dir / path.name)  # uint8 wraps 0 to 255
        n += 1
    return n


@dataclass(frozen=True)
class PreparedSplit:
    """What :func:`prepare_ade20k` wrote for one split."""

    images: int
    panoptic_json: Path
    panoptic_dir: Path
    instance_json: Path
    semantic_dir: Path


def _outputs(root: Path, split: str) -> PreparedSplit:
    return PreparedSplit(
        0,
        root / f"ade20k_panoptic_{split}.json",
        root / f"ade20k_panoptic_{split}",
        root / f"ade20k_instance_{split}.json",
        root / "annotations_detectron2" / SPLITS[split],
    )


def _prepare_split(
    root: Path, split: str, mapping: dict[int, int], categories: list[dict], instance_categories: list[dict]
) -> PreparedSplit:
    folder = SPLITS[split]
    image_dir = root / "images" / folder
    out = _outputs(root, split)
    for sub in ("annotations", "annotations_instance"):
        if not (root / sub / folder).is_dir():
            raise DatasetError(f"{root / sub / folder} does not exist. {DOWNLOAD_HINT}")
    out.panoptic_dir.mkdir(exist_ok=True)
    images, panoptic, instances = [], [], []
    for image_path in sorted(image_dir.glob("*.jpg")):
        stem = image_path.stem
        sem_path = root / "annotations" / folder / f"{stem}.png"
        inst_path = root / "annotations_instance" / folder / f"{stem}.png"
        for path in (sem_path, inst_path):
            if not path.is_file():
                raise DatasetError(f"{path} (the annotation of {image_path}) does not exist. {DOWNLOAD_HINT}")
        with Image.open(image_path) as img:
            size = img.size
        semantic, instance = _read_annotations(sem_path, inst_path, size)
        seed = zlib.crc32(stem.encode())
        pixels, segments = convert_panoptic(semantic, instance, mapping, categories, seed, sem_path)
        Image.fromarray(pixels).save(out.panoptic_dir / f"{stem}.png")
        images.append({"id": stem, "file_name": image_path.name, "width": size[0], "height": size[1]})
        panoptic.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segments})
        instances += instance_annotations(instance, mapping, stem, len(instances) + 1, inst_path)
    if not images:
        raise DatasetError(f"{image_dir} holds no .jpg image. {DOWNLOAD_HINT}")
    write_text(out.panoptic_json, json.dumps({"images": images, "annotations": panoptic, "categories": categories}))
    write_text(out.instance_json, json.dumps({"images": images, "categories": instance_categories, "annotations": instances}))
    write_semantic(root / "annotations" / folder, out.semantic_dir)
    return PreparedSplit(len(images), out.panoptic_json, out.panoptic_dir, out.instance_json, out.semantic_dir)


def prepare_ade20k(
    root: str | Path = DEFAULT_ROOT,
    catid_mapping: str | Path | None = None,
    splits: tuple[str, ...] = ("val", "train"),
    overwrite: bool = False,
) -> dict[str, PreparedSplit]:
    """Write the semantic, panoptic and instance ground truth under ``root`` (see the module docstring).

    Args:
        root: the unpacked ADEChallengeData2016 folder (with ``annotations_instance/``).
        catid_mapping: ``ade20k_instance_catid_mapping.txt``; None: the packaged copy.
        splits: ``val`` and/or ``train``; a split whose images folder is absent is skipped.
        overwrite: replace existing outputs.

    Returns:
        ``{split: PreparedSplit}`` of the written splits.

    Raises:
        DatasetError: missing inputs (with what to download), mismatched annotations, or an existing
            output without ``overwrite``.
    """
    root = Path(root)
    mapping_path = Path(catid_mapping) if catid_mapping is not None else DEFAULT_MAPPING
    mapping = read_catid_mapping(mapping_path)
    categories = ade20k_150_categories(mapping)
    instance_categories = ade20k_instance_categories(mapping, mapping_path)
    todo = [split for split in splits if (root / "images" / SPLITS[split]).is_dir()]
    if not todo:
        raise DatasetError(f"Neither {root / 'images' / 'validation'} nor {root / 'images' / 'training'} exists. {DOWNLOAD_HINT}")
    if not overwrite:
        out = [_outputs(root, split) for split in todo]
        existing = [p for o in out for p in (o.panoptic_json, o.instance_json) if p.exists()]
        existing += [o.semantic_dir for o in out if o.semantic_dir.is_dir() and any(o.semantic_dir.iterdir())]
        if existing:
            raise DatasetError(f"{', '.join(map(str, existing))} exist(s) already; delete them or pass --overwrite.")
    return {split: _prepare_split(root, split, mapping, categories, instance_categories) for split in todo}


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--root",
        default=DEFAULT_ROOT,
        help=f"the unpacked ADEChallengeData2016 folder with annotations_instance/ (default: {DEFAULT_ROOT}, where ODISE registers it)",
    )
    parser.add_argument(
        "--catid-mapping",
        default=None,
        help="ade20k_instance_catid_mapping.txt (instance class -> ADE-150 class); default: the packaged copy of Mask2Former's",
    )
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=["val", "train"])
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    """``odise-pl data prepare-ade20k``."""
    written = prepare_ade20k(args.root, args.catid_mapping, tuple(args.splits), args.overwrite)
    for split, out in written.items():
        print(
            f"{split}: {out.images} images -> {out.panoptic_json} + {out.panoptic_dir}/ (PQ), "
            f"{out.semantic_dir}/ (mIoU), {out.instance_json} (mask AP)"
        )
    return 0
