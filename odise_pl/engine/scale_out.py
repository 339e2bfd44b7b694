"""Scaling a run from one CPU to many GPU nodes: the distributed strategy and the global batch.

* ``trainer.strategy: ddp`` is Lightning's ``DDPStrategy`` with a static graph and without the
  unused-parameter search (every trainable parameter gets a gradient in every step: frozen parts
  are not in DDP's buckets at all); ``fsdp`` is ``FSDPStrategy`` (``use_orig_params``, so frozen
  and trainable weights may share a wrapped module; sharding from ``trainer.fsdp_sharding``).
  Any other value (``auto``, ``ddp_spawn``, ...) goes to Lightning as it is.
* ``data.global_batch_size: N`` keeps the images per optimizer step at ``N`` whatever the number
  of processes: ``N = num_nodes x devices x per-device batch x accumulation``.  ``data.batch_size``
  is then the *largest* per-device batch (what fits in memory); the plan takes the smallest
  gradient accumulation that keeps the per-device batch within it and divides ``N`` evenly.

Example:
    >>> plan_global_batch(64, world_size=32, max_per_device=2)
    BatchPlan(global_batch_size=64, world_size=32, per_device=2, accumulation=1)
    >>> plan_global_batch(64, world_size=8, max_per_device=2).accumulation
    4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from odise_pl.atomic_files import write_json
from odise_pl.errors import ConfigError

FSDP_SHARDING = ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split: ``global_batch_size = world_size * per_device * accumulation``."""

    global_batch_size: int
    world_size: int
    per_device: int
    accumulation: int

    def describe(self, num_nodes: int = 1) -> str:
        devices = self.world_size // max(num_nodes, 1)
        return (
            f"global batch {self.global_batch_size} = {num_nodes} node(s) x {devices} device(s) x "
            f"per-device batch {self.per_device} x gradient accumulation {self.accumulation}"
        )


def plan_global_batch(global_batch_size: int, *, world_size: int, max_per_device: int) -> BatchPlan:
    """Split ``global_batch_size`` over ``world_size`` processes, per-device batch <= ``max_per_device``.

    The smallest accumulation wins (fewest forward passes per step, largest per-device batch).

    Raises:
        ConfigError: the sizes are not positive, or no split divides the global batch evenly.
    """
    if global_batch_size < 1 or world_size < 1 or max_per_device < 1:
        raise ConfigError(
            f"data.global_batch_size={global_batch_size}, {world_size} process(es), "
            f"data.batch_size={max_per_device}: all must be positive integers."
        )
    if global_batch_size % world_size:
        fits = [n for n in range(1, global_batch_size + 1) if global_batch_size % n == 0]
        raise ConfigError(
            f"data.global_batch_size={global_batch_size} cannot be divided evenly over "
            f"{world_size} processes (trainer.num_nodes x trainer.devices). Use a number of "
            f"processes that divides it ({', '.join(map(str, fits[:12]))}"
            f"{', ...' if len(fits) > 12 else ''}), or change data.global_batch_size."
        )
    per_process = global_batch_size // world_size
    for accumulation in range(1, per_process + 1):
        if per_process % accumulation == 0 and per_process // accumulation <= max_per_device:
            return BatchPlan(global_batch_size, world_size, per_process // accumulation, accumulation)
    raise AssertionError("unreachable: accumulation = per_process always fits")  # pragma: no cover


def apply_global_batch(cfg, trainer, datamodule, run_dir: Path | None = None) -> BatchPlan | None:
    """Set the data module's per-device batch and the trainer's accumulation from ``data.global_batch_size``.

    Prints the chosen split (rank 0) and writes it to ``RUN_DIR/batch_plan.json``.  Without
    ``data.global_batch_size`` nothing changes and None is returned.

    Raises:
        ConfigError: ``trainer.accumulate_grad_batches`` is set as well, or the split is impossible.
    """
    global_batch = cfg.data.get("global_batch_size")
    if global_batch is None:
        return None
    if int(cfg.trainer.accumulate_grad_batches) != 1:
        raise ConfigError(
            f"data.global_batch_size={global_batch} derives the gradient accumulation; "
            f"trainer.accumulate_grad_batches={cfg.trainer.accumulate_grad_batches} would "
            "contradict it. Leave trainer.accumulate_grad_batches at 1, or set "
            "data.global_batch_size: null."
        )
    num_nodes = int(trainer.num_nodes)
    plan = plan_global_batch(int(global_batch), world_size=int(trainer.num_devices) * num_nodes, max_per_device=int(cfg.data.batch_size))
    datamodule.batch_size = plan.per_device
    trainer.accumulate_grad_batches = plan.accumulation
    if trainer.is_global_zero:
        print(plan.describe(num_nodes), flush=True)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            write_json(Path(run_dir) / "batch_plan.json", {**asdict(plan), "num_nodes": num_nodes})
    return plan


def build_strategy(t):
    """The Lightning strategy of the ``trainer`` section (an object for ddp / fsdp, else the string)."""
    name = str(t.strategy)
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(static_graph=bool(t.ddp_static_graph), find_unused_parameters=False)
    if name == "fsdp":
        sharding = str(t.fsdp_sharding)
        if sharding not in FSDP_SHARDING:
            raise ConfigError(f"trainer.fsdp_sharding={sharding!r}: choose one of {', '.join(FSDP_SHARDING)}.")
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(sharding_strategy=sharding, use_orig_params=True)
    return name
