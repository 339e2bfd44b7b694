"""The three files a prediction is written as (``odise-pl predict`` and the web demo's downloads).

For an image ``<stem>.<ext>``:

* ``<stem>_panoptic.png``: the segment ids, COCO panoptic encoding (id = R + 256 G + 256^2 B,
  0 = no segment), at the image's original size;
* ``<stem>.json``: ``file_name``, ``height``, ``width``, ``classifier``, ``vocabulary_size`` and
  ``segments`` (those of :class:`~odise_pl.engine.predictor.Prediction`), one per id of the PNG;
* ``<stem>_overlay.png``: the image with the coloured segments and their class names.

Nothing is overwritten: when any of the three exists, all three take the first free numbered
stem ``<stem>.1``, ``<stem>.2``... (:func:`output_paths`).

Example:
    >>> import tempfile, pathlib
    >>> [p.name for p in output_paths(pathlib.Path(tempfile.mkdtemp()), "photo")]
    ['photo_panoptic.png', 'photo.json', 'photo_overlay.png']
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from odise_pl.atomic_files import create, first_free

if TYPE_CHECKING:  # numpy is imported by the functions that need it
    import numpy as np

OUTPUT_SUFFIXES = ("_panoptic.png", ".json", "_overlay.png")


def output_paths(out_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    """The three output paths for ``stem``: the first numbered variant (``stem.N``) none of whose files exists."""

    def group(n: int) -> tuple[Path, Path, Path]:
        name = stem if n == 0 else f"{stem}.{n}"
        return tuple(out_dir / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES)  # type: ignore[return-value]

    return group(first_free(group))


def encode_panoptic_png(ids: np.ndarray) -> bytes:
    """(H,W) int ids -> PNG bytes with COCO's RGB encoding (id = R + 256 G + 256^2 B)."""
    from PIL import Image

    from odise_pl.formats.coco_panoptic import id_to_rgb

    buf = io.BytesIO()
    Image.fromarray(id_to_rgb(ids)).save(buf, format="PNG")
    return buf.getvalue()


def render_overlay(pred, names: list[str]) -> bytes:
    """PNG bytes of the image with coloured segments and class names."""
    from odise_pl.callbacks.drawing import colorize_panoptic, draw_labels, overlay

    segs = [{"id": s["id"], "category": s["category_id"], "isthing": s["is_thing"]} for s in pred.segments]
    blended = overlay(pred.image, colorize_panoptic(pred.panoptic, segs))
    buf = io.BytesIO()
    draw_labels(blended, pred.panoptic, segs, names).save(buf, format="PNG")
    return buf.getvalue()


def write_outputs(pred, image_path: Path, out_dir: Path, predictor) -> tuple[Path, Path, Path]:
    """Write ``pred`` (a :class:`~odise_pl.engine.predictor.Prediction` of ``predictor``) as the three files.

    ``image_path`` names the image (its stem names the files, the JSON's ``file_name`` records it).
    Returns the paths of the panoptic PNG, the JSON and the overlay.
    """
    png_path, json_path, overlay_path = output_paths(out_dir, image_path.stem)
    h, w = pred.panoptic.shape
    record = {
        "file_name": str(image_path),
        "height": int(h),
        "width": int(w),
        "classifier": predictor.classifier,
        "vocabulary_size": len(predictor.vocabulary),
        "segments": pred.segments,
    }
    create(png_path, encode_panoptic_png(pred.panoptic))
    create(json_path, (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    create(overlay_path, render_overlay(pred, predictor.vocabulary.names))
    return png_path, json_path, overlay_path


__all__ = ["OUTPUT_SUFFIXES", "encode_panoptic_png", "output_paths", "render_overlay", "write_outputs"]
