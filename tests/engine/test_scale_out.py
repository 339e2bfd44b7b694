"""Scale-out (issue #7): the global batch split over devices, and the DDP / FSDP strategy objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from odise_pl.config import load_config
from odise_pl.engine.scale_out import BatchPlan, plan_global_batch
from odise_pl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "world, max_per_device, per_device, accumulation",
    [
        (32, 2, 2, 1),  # the reference: 4 nodes x 8 GPUs x 2
        (8, 2, 2, 4),  # one node of 8 GPUs
        (1, 2, 2, 32),  # one GPU
        (16, 8, 4, 1),  # a larger memory limit: per-device batch 4, no accumulation
        (64, 2, 1, 1),
        (2, 3, 2, 16),  # 32 per process; 3 does not divide it, so 2 per device
    ],
)
def test_the_global_batch_stays_the_same_whatever_the_number_of_devices(world, max_per_device, per_device, accumulation):
    plan = plan_global_batch(64, world_size=world, max_per_device=max_per_device)
    assert plan == BatchPlan(64, world, per_device, accumulation)
    assert plan.world_size * plan.per_device * plan.accumulation == 64


def test_a_global_batch_that_does_not_divide_is_an_error_saying_what_fits():
    with pytest.raises(ConfigError, match=r"cannot be divided evenly over 3 processes.*1, 2, 4, 8, 16, 32, 64"):
        plan_global_batch(64, world_size=3, max_per_device=2)
    with pytest.raises(ConfigError, match="positive"):
        plan_global_batch(0, world_size=1, max_per_device=2)


def _trainer(tmp_path, *overrides):
    from odise_pl.engine.trainer import build_trainer

    cfg = load_config(REPO / "experiments" / "odise_label_tiny.yaml", [f"run.root={tmp_path}", *overrides])
    return cfg, build_trainer(cfg, tmp_path / "run")


def test_the_trainer_adapts_batch_and_accumulation_and_says_so(tmp_path, capsys):
    from odise_pl.engine.scale_out import apply_global_batch

    cfg, trainer = _trainer(tmp_path, "data.global_batch_size=6", "data.batch_size=4")

    class DataModule:
        batch_size = 4

    dm = DataModule()
    plan = apply_global_batch(cfg, trainer, dm, tmp_path / "run")
    assert (dm.batch_size, trainer.accumulate_grad_batches) == (3, 2) == (plan.per_device, plan.accumulation)
    assert "global batch 6 = 1 node(s) x 1 device(s) x per-device batch 3 x gradient accumulation 2" in capsys.readouterr().out
    assert '"accumulation": 2' in (tmp_path / "run" / "batch_plan.json").read_text()

    # contradicts data.global_batch_size: refused when the config is loaded, before any trainer exists
    with pytest.raises(ConfigError, match="'trainer.accumulate_grad_batches'.*: 2 contradicts data.global_batch_size"):
        _trainer(tmp_path, "trainer.accumulate_grad_batches=2")


def test_ddp_is_static_graph_without_unused_parameter_search_and_fsdp_keeps_orig_params(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from odise_pl.engine.scale_out import build_strategy

    cfg = load_config(REPO / "experiments" / "odise_label_coco.yaml")
    assert (cfg.trainer.strategy, cfg.trainer.precision) == ("ddp", "16-mixed")
    assert cfg.trainer.num_nodes * cfg.trainer.devices * cfg.data.batch_size == cfg.data.global_batch_size == 64
    ddp = build_strategy(cfg.trainer)
    assert isinstance(ddp, DDPStrategy)
    assert ddp._ddp_kwargs == {"static_graph": True, "find_unused_parameters": False}
    fsdp = build_strategy(
        load_config(
            REPO / "experiments" / "odise_label_coco.yaml", ["trainer.strategy=fsdp", "trainer.fsdp_sharding=SHARD_GRAD_OP"]
        ).trainer
    )
    assert isinstance(fsdp, FSDPStrategy) and fsdp.kwargs["use_orig_params"] is True
    assert fsdp.sharding_strategy.name == "SHARD_GRAD_OP"
    with pytest.raises(ConfigError, match="fsdp_sharding"):
        load_config(REPO / "experiments" / "odise_label_coco.yaml", ["trainer.fsdp_sharding=FULL"])
