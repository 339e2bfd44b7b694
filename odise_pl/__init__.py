"""odise-pl: open-vocabulary panoptic segmentation (ODISE) in PyTorch Lightning."""

from odise_pl import _torchvision_compat as _torchvision_compat  # noqa: F401  (must run before torchvision)

__version__ = "0.1.0"
