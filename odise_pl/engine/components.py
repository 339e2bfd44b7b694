"""The data module and the model of a config (nothing is trained or read beyond what they need)."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from odise_pl.models.builder import build_model, section_to_dataclass
from odise_pl.registry import DATA_MODULES


def data_config(cfg: DictConfig):
    """The ``data`` section as its data module's config dataclass (defaults filled in); reads no data."""
    return section_to_dataclass(cfg.data, DATA_MODULES.get(cfg.data.name).config)


def build_datamodule(cfg: DictConfig):
    """The data module of ``cfg`` (its ``data.name`` from the registry), built from its config."""
    return DATA_MODULES.get(cfg.data.name).cls.from_config(data_config(cfg))


def build_all(cfg: DictConfig):
    """The data module and the model for ``cfg``."""
    L.seed_everything(int(cfg.seed), workers=True)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm.categories, ignore_index=dm.ignore_index)
    dm.size_divisibility = max(int(getattr(dm, "size_divisibility", 1)), model.backbone.size_divisibility)
    return dm, model
