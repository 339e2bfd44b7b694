"""Print trainable and frozen parameters per part when training starts."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from odise_pl.models.param_summary import count_parameters, format_summary


class ParameterSummary(L.Callback):
    def on_fit_start(self, trainer, pl_module) -> None:
        parts = torch.nn.Module()
        for name in ("backbone", "mask_generator", "supervision", "open_vocab"):
            if getattr(pl_module, name, None) is not None:
                parts.add_module(name, getattr(pl_module, name))
        rank_zero_info("\n" + format_summary(count_parameters(parts)))
