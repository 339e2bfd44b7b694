"""Every checkpoint carries the training categories, so the model predicts without its training data.

The payload (:func:`odise_pl.engine.run_files.categories_payload`: ``categories`` in contiguous class
order, ``ignore_index``) goes under ``checkpoint["odise_pl"]``; it holds plain values only, so
``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import lightning as L

from odise_pl.engine.run_files import CHECKPOINT_KEY, categories_payload


class CategoriesInCheckpoints(L.Callback):
    """Writes the training categories into every checkpoint.

    Args:
        categories: the data module's categories (``id``, ``name``, ``synonyms``, ``isthing``).
        ignore_index: the training data's void label.
    """

    def __init__(self, *, categories: Sequence[dict], ignore_index: int | None = None) -> None:
        self.payload = categories_payload(categories, ignore_index)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = copy.deepcopy(self.payload)
