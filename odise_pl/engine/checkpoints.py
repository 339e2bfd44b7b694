"""Checkpoint files: atomic writes, safe reads, config checks, and safetensors export.

* :class:`AtomicCheckpointIO` is the Lightning ``CheckpointIO`` of every run: a checkpoint is
  written through :func:`~odise_pl.atomic_files.atomic_write` (a temporary file beside
  its target, flushed to disk, then renamed over it), so a
  crash or a full disk leaves the previous file intact.  (Lightning's own writer stages the file
  in the system temporary folder, so its final move is a plain copy when the run directory is
  on another file system.)  Reads go through :func:`read_checkpoint`.
* :func:`read_checkpoint` loads with ``torch.load(weights_only=True)``: tensors and plain values
  only, never arbitrary pickled code; a missing, truncated or unsafe file is a
  :class:`~odise_pl.errors.CheckpointError` naming it.
* :func:`config_differences` / :func:`check_config` refuse a checkpoint trained with another
  configuration, listing the differing keys.
* :func:`export_safetensors` / :func:`load_weights`: the trained weights as a ``.safetensors``
  file, and loading either format into a model.

Example (needs a trained run, so not a doctest)::

    ckpt = read_checkpoint("runs/quickstart/version_0/checkpoints/last.ckpt")
    check_config(ckpt, cfg, "last.ckpt", ignore=RESUME_MAY_DIFFER)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from odise_pl.atomic_files import atomic_write
from odise_pl.errors import CheckpointError

#: keys that may change when a run is resumed (where it runs and how it reports, not what it learns)
RESUME_MAY_DIFFER = (
    "run",
    "logging",
    "checkpoint",
    "trainer.max_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.ddp_static_graph",
    "trainer.fsdp_sharding",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "trainer.on_nonfinite",
    "trainer.max_nonfinite_skips",
    "data.root",
    "data.num_workers",
    "data.pin_memory",
    "data.eval_batch_size",
    "data.skip_bad_samples",
    "model.inference",
    "model.speed",
    "imports",
)  # imports: absolute paths, may move with the project
#: keys that may differ when a checkpoint is only evaluated: anything but the trained architecture
EVALUATE_MUST_MATCH = ("model.clip", "model.backbone", "model.mask_generator", "model.supervision")
#: training-only keys of the trained parts: they may differ when a checkpoint is evaluated or fine-tuned
TRAINING_ONLY_KEYS = tuple(
    f"model.mask_generator.{k}"
    for k in (
        "class_weight",
        "mask_weight",
        "dice_weight",
        "no_object_weight",
        "train_num_points",
        "oversample_ratio",
        "importance_sample_ratio",
        "gradient_checkpointing",
        "init",
    )
)  # init: the weights are loaded over it


# ----------------------------------------------------------------------------- writing
class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic local writes (:func:`atomic_write`), safe reads (:func:`read_checkpoint`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        try:
            atomic_write(path, lambda handle: torch.save(checkpoint, handle))
        except OSError as err:
            reason = os.strerror(err.errno) if err.errno else str(err)
            kept = f" The previous {Path(path).name} is intact." if Path(path).is_file() else ""
            raise CheckpointError(
                f"cannot write checkpoint {path}: {reason}.{kept} Free space in {Path(path).parent} (or "
                "set run.root to a disk with room), then run the same command again to resume."
            ) from err

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = True) -> dict[str, Any]:
        return read_checkpoint(path)


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on the CPU, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' not found. Give the path of a .ckpt file, e.g. RUN_DIR/checkpoints/last.ckpt.")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and plain values ({first}); it is not loaded "
            "because unpickling it could run arbitrary code. Use a checkpoint written by odise-pl, "
            "or export the weights of the trusted one as safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({first}). Use an earlier checkpoint, or delete it to start the run again."
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a Lightning checkpoint (no 'state_dict'); give a .ckpt written by odise-pl fit, or a .safetensors export."
        )
    return ckpt


# ----------------------------------------------------------------------------- configurations
def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_differences(saved: dict, current: dict, *, ignore: Iterable[str] = (), only: Iterable[str] | None = None) -> list[str]:
    """``key: checkpoint VALUE, now VALUE`` for every dotted key that differs.

    Args:
        saved, current: nested dicts (resolved configurations).
        ignore: dotted keys (and everything below them) that may differ.
        only: if given, compare only below these dotted keys.
    """
    a, b = _flatten(saved), _flatten(current)
    ignore = tuple(ignore)
    lines = []
    for key in sorted(set(a) | set(b)):
        if _covered(key, ignore) or (only is not None and not _covered(key, only)):
            continue
        old, new = a.get(key, "<absent>"), b.get(key, "<absent>")
        if old != new and not (key not in a and new is None):  # a key added since, left at null
            lines.append(f"{key}: checkpoint {old!r}, now {new!r}")
    return lines


def check_config(
    ckpt: dict,
    cfg: DictConfig | dict,
    path: str | os.PathLike,
    *,
    ignore: Iterable[str] = (),
    only: Iterable[str] | None = None,
    action: str = "resume from it",
) -> None:
    """Raise :class:`CheckpointError` listing the differences between ``cfg`` and the checkpoint's config."""
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        return  # not written by odise-pl fit (e.g. a hand-made state dict): nothing to compare
    current = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    diffs = config_differences(saved, current, ignore=ignore, only=only)
    if diffs:
        shown = "\n".join(f"  - {d}" for d in diffs[:20])
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise CheckpointError(
            f"checkpoint {path} was trained with another configuration ({len(diffs)} difference"
            f"{'s' if len(diffs) > 1 else ''}), so it is refused:\n{shown}{more}\n"
            f"Use the experiment file and overrides it was trained with to {action} "
            "(its config.yaml is in the run directory), or start a new run."
        )


# ----------------------------------------------------------------------------- weights
def trained_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint keeps (pretrained frozen parts dropped by ``on_save_checkpoint``)."""
    holder = {"state_dict": model.state_dict()}
    if hasattr(model, "on_save_checkpoint"):
        model.on_save_checkpoint(holder)
    # tensors only: a module's extra state (e.g. the caption strategy's sampling step) is not a weight
    return {k: v.detach().cpu().contiguous() for k, v in holder["state_dict"].items() if isinstance(v, torch.Tensor)}


def export_safetensors(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write the trained weights of ``model`` to ``path`` (safetensors), atomically."""
    return save_safetensors(trained_state_dict(model), path, metadata)


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``tensors`` to ``path`` (safetensors; metadata values become text), atomically."""
    from safetensors.torch import save

    tensors = dict(tensors)
    # tensors sharing memory (tied weights) must be stored once each
    seen: dict[tuple, str] = {}
    for key, value in list(tensors.items()):
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape))
        if value.numel() and ident in seen:
            tensors[key] = value.clone()
        seen.setdefault(ident, key)
    data = save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write(path, data)
    return Path(path)


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A ``.safetensors`` export as a checkpoint dict ``{"state_dict": ...}``, with errors that name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file '{path}' not found.")
    try:
        return {"state_dict": load_file(str(path), device="cpu")}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"weights file {path} is not a valid safetensors file ({err}).") from None


def load_weights(model: torch.nn.Module, path: str | os.PathLike, ckpt: dict | None = None) -> dict:
    """Load a ``.ckpt`` (weights_only) or ``.safetensors`` file into ``model``; returns the checkpoint dict.

    ``ckpt``: the checkpoint already read from ``path`` (:func:`read_checkpoint`), so it is not read twice.
    """
    path = Path(path)
    if ckpt is None:
        ckpt = read_safetensors(path) if path.suffix == ".safetensors" else read_checkpoint(path)
    if hasattr(model, "on_load_checkpoint"):
        model.on_load_checkpoint(ckpt)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        detail = "\n".join(str(err).splitlines()[:6])
        raise CheckpointError(
            f"the weights in {path} do not fit this model:\n{detail}\nUse the configuration the checkpoint was trained with."
        ) from None
    return ckpt
