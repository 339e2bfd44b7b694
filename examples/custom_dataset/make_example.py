"""Rebuild this example from the two COCO val2017 photos of ``../shared/data/coco_panoptic_sample``.

Writes, beside this script, half-size copies of the photos and two ground truths of the same five
classes (person, horse, tree, sky, grass; every other COCO segment becomes unlabeled):

* ``labels/``: one semantic label PNG per image, pixel = class index 0..4, 255 = unlabeled;
* ``panoptic.json`` + ``panoptic/``: a COCO-panoptic JSON with its own five categories and the
  segment-id PNGs.

Run from the repository root: ``python examples/custom_dataset/make_example.py [SAMPLE_DIR]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SAMPLE = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data" / "coco_panoptic_sample"
#: COCO panoptic category id -> (class index, name, isthing) of the example
CLASSES = {1: (0, "person", 1), 19: (1, "horse", 1), 184: (2, "tree", 0), 187: (3, "sky", 0), 193: (4, "grass", 0)}
IGNORE = 255


def half(image: Image.Image, resample) -> Image.Image:
    return image.resize((image.width // 2, image.height // 2), resample)


def main() -> None:
    coco = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    for sub in ("images", "labels", "panoptic"):
        (HERE / sub).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_info, ann in zip(coco["images"], coco["annotations"]):
        stem = Path(image_info["file_name"]).stem
        photo = half(Image.open(SAMPLE / "images" / image_info["file_name"]).convert("RGB"), Image.BICUBIC)
        photo.save(HERE / "images" / f"{stem}.jpg", quality=85)
        rgb = np.asarray(half(Image.open(SAMPLE / "panoptic" / ann["file_name"]).convert("RGB"), Image.NEAREST)).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        semantic = np.full(ids.shape, IGNORE, np.uint8)
        panoptic = np.zeros(ids.shape, np.int64)
        segments = []
        for seg in ann["segments_info"]:
            if seg["category_id"] not in CLASSES:
                continue
            index, _, _ = CLASSES[seg["category_id"]]
            mask = ids == seg["id"]
            if not mask.any():
                continue
            semantic[mask] = index
            new_id = len(segments) + 1
            panoptic[mask] = new_id
            ys, xs = np.nonzero(mask)
            segments.append(
                {
                    "id": new_id,
                    "category_id": index + 1,
                    "iscrowd": int(seg.get("iscrowd", 0)),
                    "area": int(mask.sum()),
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                }
            )
        Image.fromarray(semantic).save(HERE / "labels" / f"{stem}.png")
        encoded = np.stack([panoptic % 256, panoptic // 256 % 256, panoptic // 65536], -1).astype(np.uint8)
        Image.fromarray(encoded).save(HERE / "panoptic" / f"{stem}.png")
        images.append({"id": image_info["id"], "file_name": f"{stem}.jpg", "height": photo.height, "width": photo.width})
        annotations.append({"image_id": image_info["id"], "file_name": f"{stem}.png", "segments_info": segments})
    categories = [{"id": index + 1, "name": name, "isthing": thing} for index, name, thing in sorted(CLASSES.values())]
    (HERE / "panoptic.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}, indent=None, separators=(",", ":")) + "\n"
    )


if __name__ == "__main__":
    main()
