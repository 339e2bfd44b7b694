"""ADE20K-150 panoptic (A-150): conversion of the ADE challenge data to COCO panoptic, and its DataModule.

Source layout (``data.root``, default ``datasets/ADEChallengeData2016``), as unpacked from
``ADEChallengeData2016.zip`` (MIT Scene Parsing benchmark) plus the instance annotations of the
ADE20K instance-segmentation challenge (``annotations_instance/``)::

    images/{training,validation}/ADE_*.jpg
    annotations/{training,validation}/ADE_*.png           semantic: 0 unlabeled, 1..150 classes
    annotations_instance/{training,validation}/ADE_*.png  R: instance-challenge class 1..100 (0 none),
                                                          G: instance id (0 none)

``odise-pl data prepare-ade20k --root DIR --catid-mapping FILE`` writes, beside them, the layout
Mask2Former's ``prepare_ade20k_pan_seg.py`` writes and this module reads::

    ade20k_panoptic_{train,val}.json   COCO panoptic JSON (categories 0..149, ADE-150 order)
    ade20k_panoptic_{train,val}/       RGB PNGs, id = R + 256 G + 256^2 B

following that script: stuff segments come from the semantic map (one per stuff class), then
thing segments from the instance map (one per instance id, class through the mapping file
``ade20k_instance_catid_mapping.txt``: instance class -> ADE-150 class), pasted over the stuff.
Segment ids are sequential per image (any unique ids give the same PQ) and image ids are the
number in the file name (``ADE_val_00000001`` -> 1).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from odise_pl.data_modules.coco_panoptic import CocoPanopticConfig, CocoPanopticDataModule
from odise_pl.errors import DatasetError
from odise_pl.registry import DATA_MODULES

__all__ = ["ADE20KPanopticConfig", "ADE20KPanopticDataModule", "prepare_ade20k", "ade20k_150_categories",
           "read_catid_mapping", "DOWNLOAD_HINT"]

SPLITS = {"train": "training", "val": "validation"}

DOWNLOAD_HINT = (
    "ADE20K-150 panoptic needs: ADEChallengeData2016.zip from the MIT Scene Parsing benchmark "
    "(sceneparsing.csail.mit.edu; images/ and annotations/), the instance annotations "
    "annotations_instance/ of the ADE20K instance challenge (same site), and the file "
    "ade20k_instance_catid_mapping.txt (instance class -> ADE-150 class; in Mask2Former's datasets/ "
    "folder). Unpack them into one folder (data.root) and run "
    "`odise-pl data prepare-ade20k --root DIR --catid-mapping FILE`."
)


def ade20k_150_categories() -> list[dict]:
    """The 150 ADE-150 categories (ids 0..149, names and thing flags from the package vocabulary)."""
    from odise_pl.vocab import load_builtin

    vocab = load_builtin("ade20k_150")
    return [{"id": i, "name": name, "isthing": int(bool(thing))}
            for i, (name, thing) in enumerate(zip(vocab.names, vocab.is_thing))]


def read_catid_mapping(path: str | Path) -> dict[int, int]:
    """``ade20k_instance_catid_mapping.txt`` -> {instance class 1..100: ADE-150 category 0..149}.

    The file has a header line, then ``<instance id> <semantic id> <full ADE20K id>`` per line
    (1-based ids, as Mask2Former ships it).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"The category mapping {path} does not exist. {DOWNLOAD_HINT}")
    mapping: dict[int, int] = {}
    for n, line in enumerate(path.read_text().splitlines()[1:], start=2):
        fields = line.split()
        if not fields:
            continue
        try:
            mapping[int(fields[0])] = int(fields[1]) - 1
        except (ValueError, IndexError):
            raise DatasetError(f"{path} line {n}: expected '<instance id> <semantic id> ...', "
                               f"got {line!r}.") from None
    if not mapping:
        raise DatasetError(f"{path} maps no class; expected a header line, then "
                           "'<instance id> <semantic id> ...'.")
    return mapping


def _ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def _image_id(stem: str, where: Path) -> int:
    match = re.search(r"(\d+)$", stem)
    if match is None:
        raise DatasetError(f"{where}: the file name {stem!r} does not end in a number "
                           "(ADE_val_00000001.jpg).")
    return int(match.group(1))


def _convert_one(semantic: np.ndarray, instance: np.ndarray, mapping: dict[int, int], is_thing: list[bool],
                 where: Path) -> tuple[np.ndarray, list[dict]]:
    """One image -> (H, W) int64 segment ids and COCO ``segments_info``."""
    ids = np.zeros(semantic.shape, dtype=np.int64)
    segments: list[dict] = []
    sem = semantic.astype(np.int64) - 1  # -1: unlabeled
    for cat in np.unique(sem).tolist():  # stuff from the semantic map
        if cat < 0 or is_thing[cat]:
            continue
        mask = sem == cat
        segments.append({"id": len(segments) + 1, "category_id": cat, "iscrowd": 0})
        ids[mask] = len(segments)
    inst_class, inst_id = instance[..., 0].astype(np.int64), instance[..., 1].astype(np.int64)
    for instance_id in np.unique(inst_id).tolist():  # things from the instance map, over the stuff
        if instance_id == 0:
            continue
        mask = inst_id == instance_id
        classes = np.unique(inst_class[mask]).tolist()
        if len(classes) != 1 or classes[0] not in mapping:
            raise DatasetError(f"{where}: instance {instance_id} has instance class(es) {classes}; "
                               "expected one class listed in the category mapping file.")
        segments.append({"id": len(segments) + 1, "category_id": mapping[classes[0]], "iscrowd": 0})
        ids[mask] = len(segments)
    present = np.bincount(ids.reshape(-1), minlength=len(segments) + 1)
    kept, out_segments, new_ids = {}, [], np.zeros(len(segments) + 1, dtype=np.int64)
    for seg in segments:  # a stuff segment may be covered by things entirely: drop it, renumber
        if present[seg["id"]]:
            new_ids[seg["id"]] = kept.setdefault(seg["id"], len(kept) + 1)
            out_segments.append(dict(seg, id=kept[seg["id"]], area=int(present[seg["id"]])))
    return new_ids[ids], out_segments


def prepare_ade20k(root: str | Path, catid_mapping: str | Path, splits: tuple[str, ...] = ("val", "train"),
                   overwrite: bool = False) -> dict[str, Path]:
    """Convert the ADE challenge data under ``root`` to COCO panoptic (see the module docstring).

    Returns:
        ``{split: json path}`` of the written splits (a split whose images folder is absent is skipped).

    Raises:
        DatasetError: missing inputs (with what to download), mismatched annotations, or an existing
            output without ``overwrite``.
    """
    root = Path(root)
    mapping = read_catid_mapping(catid_mapping)
    categories = ade20k_150_categories()
    is_thing = [bool(c["isthing"]) for c in categories]
    bad = sorted(v for v in mapping.values() if not 0 <= v < 150 or not is_thing[v])
    if bad:
        raise DatasetError(f"{catid_mapping} maps instance classes to ADE-150 categories {bad[:5]}, "
                           "which are not thing classes of ade20k_150 (wrong mapping file?).")
    written: dict[str, Path] = {}
    for split in splits:
        folder = SPLITS[split]
        image_dir = root / "images" / folder
        if not image_dir.is_dir():
            continue
        out_json, out_dir = root / f"ade20k_panoptic_{split}.json", root / f"ade20k_panoptic_{split}"
        if out_json.exists() and not overwrite:
            raise DatasetError(f"{out_json} exists already; delete it or pass --overwrite.")
        for sub in ("annotations", "annotations_instance"):
            if not (root / sub / folder).is_dir():
                raise DatasetError(f"{root / sub / folder} does not exist. {DOWNLOAD_HINT}")
        out_dir.mkdir(exist_ok=True)
        images, annotations = [], []
        for image_path in sorted(image_dir.glob("*.jpg")):
            stem = image_path.stem
            sem_path = root / "annotations" / folder / f"{stem}.png"
            inst_path = root / "annotations_instance" / folder / f"{stem}.png"
            for path in (sem_path, inst_path):
                if not path.is_file():
                    raise DatasetError(f"{path} (the annotation of {image_path}) does not exist. "
                                       f"{DOWNLOAD_HINT}")
            with Image.open(image_path) as img:
                width, height = img.size
            semantic = np.asarray(Image.open(sem_path))
            instance = np.asarray(Image.open(inst_path).convert("RGB"))
            if semantic.shape != (height, width) or instance.shape[:2] != (height, width):
                raise DatasetError(f"{stem}: image {width}x{height}, semantic {semantic.shape[::-1]}, "
                                   f"instance {instance.shape[1::-1]}: the annotations must have the "
                                   "image's size.")
            ids, segments = _convert_one(semantic, instance, mapping, is_thing, sem_path)
            Image.fromarray(_ids_to_rgb(ids)).save(out_dir / f"{stem}.png")
            image_id = _image_id(stem, image_path)
            images.append({"id": image_id, "file_name": image_path.name, "width": width, "height": height})
            annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
        if not images:
            raise DatasetError(f"{image_dir} holds no .jpg image. {DOWNLOAD_HINT}")
        out_json.write_text(json.dumps({"images": images, "annotations": annotations,
                                        "categories": categories}))
        written[split] = out_json
    if not written:
        raise DatasetError(f"Neither {root / 'images' / 'validation'} nor {root / 'images' / 'training'} "
                           f"exists. {DOWNLOAD_HINT}")
    return written


def add_prepare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--root", default="datasets/ADEChallengeData2016",
                        help="the unpacked ADEChallengeData2016 folder (with annotations_instance/)")
    parser.add_argument("--catid-mapping", required=True,
                        help="ade20k_instance_catid_mapping.txt (instance class -> ADE-150 class)")
    parser.add_argument("--splits", nargs="+", choices=sorted(SPLITS), default=["val", "train"])
    parser.add_argument("--overwrite", action="store_true", help="replace existing ade20k_panoptic_* outputs")
    return parser


def run_prepare(args: argparse.Namespace) -> int:
    """``odise-pl data prepare-ade20k``."""
    written = prepare_ade20k(args.root, args.catid_mapping, tuple(args.splits), args.overwrite)
    for split, path in written.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['annotations'])} images -> {path} and {path.with_suffix('')}/")
    return 0


# ----------------------------------------------------------------------------- data module
@dataclass
class ADE20KPanopticConfig(CocoPanopticConfig):
    """``data: {name: ade20k_panoptic}``: ADE20K-150 panoptic after ``odise-pl data prepare-ade20k``.

    Evaluation as ODISE's ``ade150_open_eval`` (``configs/common/data/pano_open_d2_eval.py``): short side
    1024, long side at most 2560, batch 1, the ``ade20k_150_with_prompt_eng`` names (Mask2Former's own
    ADE20K evaluation uses 640).
    """

    root: str = "datasets/ADEChallengeData2016"
    train_json: str = "ade20k_panoptic_train.json"
    train_image_dir: str = "images/training"
    train_panoptic_dir: str = "ade20k_panoptic_train"
    val_json: str = "ade20k_panoptic_val.json"
    val_image_dir: str = "images/validation"
    val_panoptic_dir: str = "ade20k_panoptic_val"
    crop_size: int = 640
    eval_short_side: int = 1024
    eval_max_long_side: int = 2560
    vocabulary: str = "ade20k_150_with_prompt_eng"


@DATA_MODULES.register("ade20k_panoptic", config=ADE20KPanopticConfig)
class ADE20KPanopticDataModule(CocoPanopticDataModule):
    """:class:`CocoPanopticDataModule` on converted ADE20K-150 panoptic; says what to download when absent."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**asdict(ADE20KPanopticConfig(**kwargs)))  # the ADE defaults, not COCO's

    def expected_layout(self) -> str:
        return f"{super().expected_layout()}\n{DOWNLOAD_HINT}"
