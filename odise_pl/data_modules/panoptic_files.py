"""Reading the files of a COCO-panoptic-format dataset: JSON, images, and the records joining them
(segment-id PNGs: :mod:`odise_pl.formats.coco_panoptic`).  Every missing or malformed file is a
:class:`~odise_pl.errors.DatasetError` naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from odise_pl.errors import DatasetError


def read_json(path: Path, what: str, layout: str = "") -> dict:
    """Parse a JSON file; a missing or malformed file raises :class:`DatasetError` naming it."""
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist.\n{layout}".rstrip())
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(
            f"{what} {path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); re-download or regenerate it."
        ) from err
    except UnicodeDecodeError as err:
        raise DatasetError(f"{what} {path} is not UTF-8 text ({err}); is it really a JSON file?") from err
    except RecursionError:
        raise DatasetError(f"{what} {path} is nested too deeply to be a COCO annotation file.") from None


def read_rgb_image(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Decode an image with PIL as (H, W, 3) uint8 RGB (greyscale/RGBA/palette converted).

    EXIF orientation is applied, unless only the stored orientation matches ``expected_hw``
    (the size of its annotation).  A missing, corrupt or truncated file raises
    :class:`DatasetError` naming it.
    """
    try:
        with Image.open(path) as raw:
            raw.load()
            image = ImageOps.exif_transpose(raw)
            if (
                expected_hw is not None
                and (image.height, image.width) != tuple(expected_hw)
                and (raw.height, raw.width) == tuple(expected_hw)
            ):
                image = raw
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as err:
        raise DatasetError(
            f"image {path} does not exist (listed in the JSON); check the image directory or set data.skip_bad_samples=true."
        ) from err
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DatasetError(
            f"cannot decode image {path}: {err}. The file is corrupt or truncated; replace it or set data.skip_bad_samples=true."
        ) from err


@dataclass
class PanopticRecord:
    """One annotated image; ``segments`` hold ``{id, category (contiguous), isthing, iscrowd, area}``
    (``area`` the JSON's, None where it has none); ``image_id`` an int, or the file-stem string
    the ADE20K preparation writes."""

    image_id: int | str
    image_path: Path
    panoptic_path: Path
    segments: list
    captions: list | None = None


def image_key(value) -> int | str:
    """A JSON image id as a key: COCO's integers, or strings such as ADE20K's ``ADE_val_00000001``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not float(value).is_integer():
        raise ValueError(f"image id {value!r} is neither an integer nor a string")
    return int(value)


def load_panoptic_json(
    json_path: Path, image_dir: Path, panoptic_dir: Path, *, layout: str = ""
) -> tuple[list[dict], list[PanopticRecord]]:
    """Read a COCO panoptic JSON.

    Returns:
        The JSON ``categories`` (in file order) and one record per annotation.
    """
    data = read_json(json_path, "panoptic JSON", layout)
    try:
        categories = list(data["categories"])
        contiguous = {int(c["id"]): i for i, c in enumerate(categories)}
        isthing = [bool(c["isthing"]) for c in categories]
        images = {image_key(im["id"]): im for im in data["images"]}
        records = []
        for ann in data["annotations"]:
            image = images.get(image_key(ann["image_id"]))
            if image is None:
                raise DatasetError(
                    f"{json_path}: annotation {ann['file_name']} refers to image id {ann['image_id']}, which is not in 'images'."
                )
            segments = []
            for seg in ann["segments_info"]:
                if int(seg["category_id"]) not in contiguous:
                    raise DatasetError(
                        f"{json_path}: segment {seg['id']} of image id {ann['image_id']} "
                        f"has category_id {seg['category_id']}, not in 'categories'."
                    )
                k = contiguous[int(seg["category_id"])]
                segments.append(
                    {
                        "id": int(seg["id"]),
                        "category": k,
                        "isthing": isthing[k],
                        "iscrowd": bool(seg.get("iscrowd", 0)),
                        "area": None if seg.get("area") is None else int(seg["area"]),
                    }
                )
            records.append(
                PanopticRecord(image_key(ann["image_id"]), image_dir / image["file_name"], panoptic_dir / ann["file_name"], segments)
            )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
        if isinstance(err, DatasetError):
            raise
        what = f"missing key {err}" if isinstance(err, KeyError) else f"a bad value ({err})"
        raise DatasetError(
            f"panoptic JSON {json_path} is malformed: {what}. "
            "Expected 'images', 'annotations' (with 'segments_info') and "
            "'categories' as in COCO panoptic."
        ) from err
    return categories, records


# ----------------------------------------------------------------------------- dataset
