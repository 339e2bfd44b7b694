"""LightningDataModules; importing this package registers them in ``DATA_MODULES``."""

from odise_pl.data_modules import coco_panoptic, synthetic_shapes  # noqa: F401  (registration)
