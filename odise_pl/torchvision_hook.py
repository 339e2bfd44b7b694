"""Opt-in: make ``import torchvision`` survive a torchvision build whose compiled ops cannot load.

:func:`install_torchvision_compat` puts a ``sys.meta_path`` finder in place that runs the workaround of
:mod:`odise_pl._torchvision_compat` just before the first ``import torchvision`` (lightning, open_clip,
timm and torchmetrics import it). The CLI entry point installs it; ``import odise_pl`` installs it only
where :func:`torchvision_ops_broken` finds a torchvision that cannot load its ops (a CUDA build beside a
CPU-only torch), so elsewhere the import system is left alone. Tests install it in ``tests/conftest.py``.

This module is light (no torch): it reads the two packages' ``version.py`` files as text.
"""

from __future__ import annotations

import importlib.machinery
import re
import sys
from pathlib import Path

_VERSION = re.compile(r"^__version__\s*(?::[^=]*)?=\s*['\"]([^'\"]*)['\"]", re.MULTILINE)


def _package_dir(name: str) -> Path | None:
    spec = importlib.machinery.PathFinder.find_spec(name)  # sys.path only: never runs the import hook
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def _build_tag(package_dir: Path) -> str:
    """The local tag of a package's ``__version__`` in its ``version.py`` (``2.13.0+cpu`` -> ``cpu``; '' if none)."""
    try:
        match = _VERSION.search((package_dir / "version.py").read_text())
    except OSError:
        return ""
    return match.group(1).partition("+")[2] if match else ""


def torchvision_ops_broken(torch_dir: Path | None = None, torchvision_dir: Path | None = None) -> bool:
    """True when torchvision's compiled ops cannot load beside this torch, judged without importing either:
    torchvision has no ``_C`` library, or it is a CUDA build (``0.28.0+cu130``) while torch is a CPU build
    (``2.13.0+cpu``), read from their ``version.py``.

    ``torch_dir`` / ``torchvision_dir``: the packages' folders (default: the installed ones).
    """
    torchvision_dir = torchvision_dir or _package_dir("torchvision")
    torch_dir = torch_dir or _package_dir("torch")
    if torchvision_dir is None or torch_dir is None:
        return False
    if not any(torchvision_dir.glob("_C*.so")) and not any(torchvision_dir.glob("_C*.pyd")):
        return True
    return _build_tag(torchvision_dir).startswith("cu") and _build_tag(torch_dir) == "cpu"


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


def install_torchvision_compat() -> None:
    """Make a later ``import torchvision`` work on a broken build (a no-op where its ops load).

    torchvision imported already: the workaround runs now; else the import hook waits for it (once).
    """
    if "torchvision" in sys.modules:
        import odise_pl._torchvision_compat  # noqa: F401
    elif not any(isinstance(f, TorchvisionCompatHook) for f in sys.meta_path):
        sys.meta_path.insert(0, TorchvisionCompatHook())
