"""LightningDataModules; importing this package registers them in ``DATA_MODULES``."""

from odise_pl.data_modules import ade20k, coco_panoptic, semantic, synthetic_shapes  # noqa: F401  (registration)
