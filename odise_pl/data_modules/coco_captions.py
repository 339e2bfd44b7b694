"""COCO captions (``captions_{train,val}2017.json``) joined by image id to a panoptic split.

The caption model needs, for each panoptic training image, the image's captions
(COCO has five per image; one is drawn at random at every step).  The file is
read with pycocotools' :class:`~pycocotools.coco.COCO` API.

Example:
    >>> import json, tempfile
    >>> path = Path(tempfile.mkdtemp()) / "captions_train2017.json"
    >>> _ = path.write_text(json.dumps({"images": [{"id": 139}], "annotations": [
    ...     {"id": 1, "image_id": 139, "caption": " A woman stands in the dining area. "},
    ...     {"id": 2, "image_id": 139, "caption": "A kitchen."}]}))
    >>> load_captions(path, [139])
    {139: ['A woman stands in the dining area.', 'A kitchen.']}
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from odise_pl.errors import DatasetError

_SHOWN_IDS = 10


def load_captions(
    json_path: str | Path, image_ids: Iterable[int], *, unknown_images: Literal["warn", "ignore", "error"] = "warn"
) -> dict[int, list[str]]:
    """The captions of each given image, in the order of the file.

    Captions are stripped of surrounding white space; blank ones are dropped.

    Args:
        json_path: a COCO captions file (``annotations/captions_train2017.json``).
        image_ids: the images that need captions (the panoptic split's ids).
        unknown_images: what to do about captions of images not in ``image_ids``
            (e.g. a panoptic subset): ``"warn"`` (say how many), ``"ignore"``, ``"error"``.

    Returns:
        ``{image_id: [caption, ...]}`` for every id of ``image_ids``, in that order.

    Raises:
        DatasetError: the file is missing or malformed, some image has no caption
            (says how many and which), or ``unknown_images="error"`` and the file
            has captions for other images.
    """
    if unknown_images not in ("warn", "ignore", "error"):
        raise ValueError(f"unknown_images must be 'warn', 'ignore' or 'error', not {unknown_images!r}")
    path = Path(json_path)
    wanted = list(dict.fromkeys(int(i) for i in image_ids))
    coco = _read(path)

    captions: dict[int, list[str]] = {}
    for image_id in wanted:
        texts = []
        for ann in coco.imgToAnns.get(image_id, []):
            if not isinstance(ann.get("caption"), str):
                raise DatasetError(
                    f"{path}: annotation {ann.get('id')!r} of image {image_id} has no "
                    f"'caption' string; is this a COCO captions file "
                    f"(annotations/captions_*2017.json)?"
                )
            if ann["caption"].strip():
                texts.append(ann["caption"].strip())
        captions[image_id] = texts

    missing = [i for i, texts in captions.items() if not texts]
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} of {len(wanted)} images have no caption, e.g. image ids "
            f"{_first(missing)}. Use the captions file of the same split as the panoptic "
            f"annotations (captions_train2017.json for train2017, captions_val2017.json for val2017)."
        )

    known = set(wanted)
    unknown = sorted(i for i in coco.imgToAnns if i not in known)
    if unknown and unknown_images != "ignore":
        count = sum(len(coco.imgToAnns[i]) for i in unknown)
        message = (
            f"{path}: {count} captions belong to {len(unknown)} images outside the "
            f"{len(wanted)} requested ones, e.g. image ids {_first(unknown)}"
        )
        if unknown_images == "error":
            raise DatasetError(message + "; pass unknown_images='warn' or 'ignore' to use a subset.")
        warnings.warn(message + "; they are not used.", stacklevel=2)
    return captions


def _read(path: Path):
    from pycocotools.coco import COCO

    if not path.is_file():
        raise DatasetError(
            f"captions file {path} does not exist; expected COCO's "
            f"annotations/captions_{{train,val}}2017.json "
            f"(from annotations_trainval2017.zip)."
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its progress
            coco = COCO(str(path))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}).") from err
    except (AssertionError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{path}: not a COCO annotation file (a dict with an 'annotations' list of "
            f"{{'id', 'image_id', 'caption'}}): {type(err).__name__}: {err}."
        ) from err
    if not isinstance(coco.dataset.get("annotations"), list):
        raise DatasetError(f"{path}: no 'annotations' list; expected a COCO captions file (annotations/captions_{{train,val}}2017.json).")
    return coco


def _first(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:_SHOWN_IDS])
    return shown + (", ..." if len(ids) > _SHOWN_IDS else "")
