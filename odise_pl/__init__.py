"""odise-pl: open-vocabulary panoptic segmentation (ODISE) in PyTorch Lightning.

Importing the package is light (no torch): the torchvision workaround of
:mod:`odise_pl._torchvision_compat` runs only when something imports
``torchvision`` (lightning, open_clip, timm, torchmetrics do), through the
import hook installed here.
"""

import sys

__version__ = "0.1.0"


class TorchvisionCompatHook:
    """Runs :mod:`odise_pl._torchvision_compat` just before the first ``import torchvision``.

    A ``sys.meta_path`` finder (duck-typed: subclassing ``importlib.abc.MetaPathFinder`` would
    import ``importlib.resources``, a fifth of the start-up). It finds nothing itself (the normal
    finders import torchvision); it only makes sure the workaround ran first, then removes itself
    from ``sys.meta_path``.
    """

    def find_spec(self, fullname, path=None, target=None):
        """Run the workaround if ``fullname`` is torchvision; find nothing (returns None)."""
        if fullname == "torchvision":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            import odise_pl._torchvision_compat  # noqa: F401  (declares the missing operator schemas)


if "torchvision" in sys.modules:  # imported before odise_pl: run the workaround now (as before)
    import odise_pl._torchvision_compat  # noqa: F401
elif not any(isinstance(f, TorchvisionCompatHook) for f in sys.meta_path):
    sys.meta_path.insert(0, TorchvisionCompatHook())
