"""Distributed evaluation (issue #2): 2-process CPU DDP (gloo) == 1-process evaluation, exactly.

The same weights (one saved ``state_dict``) are evaluated twice by a script run in a
subprocess (Lightning's ``ddp`` strategy re-launches the script for rank 1): once with
``devices=1`` and once with ``devices=2, strategy=ddp``.  The validation split has an odd
number of images (7), so a padded ``DistributedSampler`` would count one image twice; the
data module's ``InferenceShardSampler`` must give every image to exactly one rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"

# eval_batch_size=2: the single-process batches (0,1)(2,3)(4,5)(6) and the DDP shards
# [0..3] -> (0,1)(2,3), [4..6] -> (4,5)(6) are the same batches, so the forward passes are
# numerically identical and the metrics must agree bit for bit.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    from odise_pl import install_torchvision_compat
    install_torchvision_compat()  # torchvision's ops may not load here (odise_pl.torchvision_hook)
    import torch
    torch.set_num_threads(1)
    import lightning as L

    from odise_pl.config import load_config
    from odise_pl.engine.components import build_all
    from odise_pl.engine.trainer import build_trainer

    config, overrides, weights, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])


    class Record(L.Callback):
        # Local (un-synced) metric states and the image ids this rank evaluated.  The callback
        # hook runs before the module's on_validation_epoch_end, which computes and resets them.
        def __init__(self):
            self.image_ids = []

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
            self.image_ids += [int(t["image_id"]) for t in batch["targets"]]

        def on_validation_epoch_end(self, trainer, pl_module):
            pq, sem = pl_module.val_pq, pl_module.val_sem
            state = {name: getattr(pq, name).tolist() for name in ("tp", "fp", "fn", "iou_sum")}
            state["confmat"] = sem.confmat.tolist()
            rank = trainer.global_rank
            (out / f"rank{rank}.json").write_text(json.dumps(
                {"image_ids": self.image_ids, "state": state, "world_size": trainer.world_size}))


    cfg = load_config(config, overrides)
    dm, model = build_all(cfg)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    trainer = build_trainer(cfg, out / "run", extra_callbacks=[Record()])
    metrics = trainer.validate(model, datamodule=dm, verbose=False)
    if trainer.is_global_zero:
        (out / "metrics.json").write_text(json.dumps({k: float(v) for k, v in metrics[0].items()}))
    """
)

METRIC_KEYS = ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU"]


def _overrides(tmp_path: Path) -> list[str]:
    return [
        f"data.root={tmp_path / 'data'}",
        f"run.root={tmp_path / 'runs'}",
        "data.num_train=8",
        "data.num_val=7",
        "data.num_workers=0",
        "data.eval_batch_size=2",
        "data.image_size=64",
        "data.eval_short_side=64",
        "data.eval_max_long_side=64",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logging.tensorboard=false",
    ]


def _evaluate(tmp_path: Path, name: str, overrides: list[str], weights: Path) -> dict:
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "ddp_eval_script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_", "PL_", "RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(QUICKSTART), json.dumps(overrides), str(weights), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} evaluation failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return {"metrics": json.loads((out / "metrics.json").read_text()), "ranks": ranks}


def _non_crowd_gt_segments(val_json: Path) -> tuple[set[int], int]:
    data = json.loads(val_json.read_text())
    ids = {int(a["image_id"]) for a in data["annotations"]}
    count = sum(1 for a in data["annotations"] for s in a["segments_info"] if not s.get("iscrowd", 0))
    return ids, count


@pytest.mark.slow  # a 2-process gloo evaluation in new processes (~45 s on 2 cores)
def test_two_process_ddp_evaluation_equals_single_process(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_all

    overrides = _overrides(tmp_path)
    cfg = load_config(QUICKSTART, overrides)
    dm, model = build_all(cfg)  # also generates the data (before any rank could race on it)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    image_ids, num_segments = _non_crowd_gt_segments(Path(dm.root) / dm.val_json)
    assert len(image_ids) == 7 and num_segments > 0

    single = _evaluate(tmp_path, "single", overrides, weights)
    ddp = _evaluate(tmp_path, "ddp", overrides + ["trainer.devices=2", "trainer.strategy=ddp"], weights)

    # Every image exactly once: one shard per rank, disjoint, together the whole split.
    assert [r["world_size"] for r in single["ranks"]] == [1]
    assert [r["world_size"] for r in ddp["ranks"]] == [2, 2]
    shards = [r["image_ids"] for r in ddp["ranks"]]
    assert sorted(len(s) for s in shards) == [3, 4]
    assert sorted(shards[0] + shards[1]) == sorted(single["ranks"][0]["image_ids"]) == sorted(image_ids)

    # The summed rank-local states equal the single-process states (integers exactly).
    one = single["ranks"][0]["state"]
    summed = {
        k: (
            torch.tensor(ddp["ranks"][0]["state"][k], dtype=torch.float64 if k == "iou_sum" else None)
            + torch.tensor(ddp["ranks"][1]["state"][k], dtype=torch.float64 if k == "iou_sum" else None)
        ).tolist()
        for k in one
    }
    for key in ("tp", "fp", "fn", "confmat"):
        assert summed[key] == one[key], key
    assert torch.allclose(
        torch.tensor(summed["iou_sum"], dtype=torch.float64), torch.tensor(one["iou_sum"], dtype=torch.float64), rtol=0, atol=1e-12
    )
    # tp + fn counts each non-crowd GT segment once: no image dropped, none counted twice.
    assert sum(one["tp"]) + sum(one["fn"]) == num_segments
    assert sum(summed["tp"]) + sum(summed["fn"]) == num_segments
    # The confusion matrix counts every pixel that is not ignored exactly once as well.
    assert sum(map(sum, summed["confmat"])) == sum(map(sum, one["confmat"])) > 0

    # The synced metrics rank 0 reports are those of the single process, exactly.
    for key in METRIC_KEYS:
        assert f"val/{key}" in single["metrics"], key
        assert ddp["metrics"][f"val/{key}"] == single["metrics"][f"val/{key}"], key
    assert ddp["metrics"] == single["metrics"]
