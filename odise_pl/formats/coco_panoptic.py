"""The COCO panoptic PNG encoding, in one place: a segment id is ``R + 256 G + 256^2 B`` (0 = VOID).

Both the data modules (reading ground truth) and the metrics (scoring folders) read these files, and
``predict``, the synthetic data and the ADE20K preparation write them, through these functions.

Example:
    >>> import numpy as np
    >>> rgb = id_to_rgb(np.array([[0, 1], [256, 65536 + 2]]))
    >>> rgb[1, 1].tolist(), rgb_to_id(rgb).tolist()
    ([2, 0, 1], [[0, 1], [256, 65538]])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from odise_pl.errors import DatasetError

__all__ = ["ID_BITS", "rgb_to_id", "id_to_rgb", "read_panoptic_png", "read_label_image"]

ID_BITS = 24  # ids are R + 256 G + 65536 B < 2**24


def rgb_to_id(rgb) -> np.ndarray:
    """(..., 3) RGB values (array, list or tuple) -> (...) int64 segment ids."""
    rgb = np.asarray(rgb).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids) -> np.ndarray:
    """(...) segment ids (< 2**24) -> (..., 3) uint8 RGB."""
    ids = np.asarray(ids).astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | Path) -> np.ndarray:
    """Decode a COCO panoptic PNG to (H, W) uint32 ids ``R + 256 G + 65536 B``.

    RGB and RGBA PNGs are inflated by PIL directly into the returned array (PIL's RGB pixel storage
    is 4 bytes, so the id is the pixel masked with ``0xFFFFFF``: no RGB->id arithmetic, no extra
    copy); other modes (and Pillow builds without ``map_buffer``) go through ``convert("RGBA")``.

    Raises:
        DatasetError: the file is missing or not an image (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"panoptic PNG {path} does not exist; check the panoptic folder and the file_name its JSON annotation lists.")
    try:
        with Image.open(path) as img:
            w, h = img.size
            out = np.empty((h, w), dtype=np.uint32)
            direct = img.mode in ("RGB", "RGBA") and h * w > 0 and hasattr(Image.core, "map_buffer")
            if direct:
                # An image core sharing out's memory, 4 bytes/pixel like PIL's RGB storage; load()
                # decodes into it when it is in place before the first load.
                raw = "RGBX" if img.mode == "RGB" else "RGBA"
                target = Image.core.map_buffer(out, (w, h), "raw", 0, (raw, 0, 1))
                img.im = target
                img.load()
                direct = img.im is target
            if not direct:
                out[...] = np.asarray(img.convert("RGBA")).view("<u4")[..., 0]
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot decode panoptic PNG {path}: {exc}. The file is corrupt or not an RGB PNG "
            "whose pixels encode segment ids as R + 256 G + 256^2 B; replace or re-export it."
        ) from exc
    np.bitwise_and(out, (1 << ID_BITS) - 1, out=out)
    return out


def read_label_image(path: str | Path) -> np.ndarray:
    """Decode a single-channel label image (8-bit PNG, 16-bit PNG or uint16 TIFF).

    Returns:
        (H, W) int64 label values as stored (no remapping).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Label image {path} does not exist.")
    with Image.open(path) as img:
        if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
            raise DatasetError(f"Label image {path} has mode {img.mode}; expected a single-channel label map.")
        labels = np.asarray(img)
    return labels.astype(np.int64)
