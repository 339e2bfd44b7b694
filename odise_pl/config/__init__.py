"""Experiment configuration: typed schema, YAML loading with ``_base_`` and overrides, sweeps.

Example:
    >>> from odise_pl.config import load_config
    >>> cfg = load_config("experiments/odise_label_coco.yaml", ["trainer.max_steps=100"])
"""

from odise_pl.config.loader import (
    instantiate_section,
    load_config,
    part_config,
    print_config,
    save_resolved,
    to_yaml,
)
from odise_pl.config.schema import DISPATCHED_SECTIONS, ExperimentConfig
from odise_pl.config.sweep import SweepRun, expand_sweep, format_value

__all__ = [
    "DISPATCHED_SECTIONS",
    "ExperimentConfig",
    "SweepRun",
    "expand_sweep",
    "format_value",
    "instantiate_section",
    "load_config",
    "part_config",
    "print_config",
    "save_resolved",
    "to_yaml",
]
