"""odise-pl: open-vocabulary panoptic segmentation (ODISE) in PyTorch Lightning.

Importing the package is light (no torch) and leaves the import system alone, unless the installed
torchvision cannot load its compiled ops beside this torch: then the opt-in workaround of
:mod:`odise_pl.torchvision_hook` is installed (the CLI installs it always; tests in their conftest).
"""

from odise_pl.torchvision_hook import install_torchvision_compat, torchvision_ops_broken

__version__ = "0.1.0"

if torchvision_ops_broken():
    install_torchvision_compat()

__all__ = ["install_torchvision_compat", "torchvision_ops_broken"]
