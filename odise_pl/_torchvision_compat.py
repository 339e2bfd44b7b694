"""Make ``import torchvision`` survive a torchvision whose compiled ops cannot load.

A CUDA build of torchvision installed beside a CPU-only torch cannot load its
``_C`` extension; torchvision then still registers fake kernels for
``torchvision::nms``/``qnms`` and ``import torchvision`` dies with
``operator torchvision::nms does not exist`` -- which also breaks lightning,
open_clip and timm, which import it.  odise-pl uses no torchvision op (images are
decoded with PIL), so declaring the two operator schemas is enough for the import
to succeed.  Where the ops load fine this module does nothing.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_LIBRARY = None  # keeps the torch.library.Library alive (it unregisters on deletion)


def torchvision_ops_load() -> bool:
    """Return True when torchvision is absent or its compiled ops load."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True
    libs = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")))
    libs += sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.pyd")))
    if not libs:
        return False
    try:
        torch.ops.load_library(libs[0])
    except (OSError, RuntimeError, ImportError):
        return False
    return True


def install() -> bool:
    """Declare the missing operator schemas if needed. Returns True if it did anything."""
    global _LIBRARY
    if _LIBRARY is not None or torchvision_ops_load():
        return False
    missing = [schema for name, schema in _SCHEMAS.items() if not _op_exists(name)]
    if not missing:
        return False
    _LIBRARY = torch.library.Library("torchvision", "DEF")
    for schema in missing:
        _LIBRARY.define(schema)
    return True


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


install()
