"""The global batch under DDP (issue #7): 2 CPU processes x batch 1 == 1 process x batch 2.

Both runs set ``data.global_batch_size=2``; ``data.batch_size`` (the largest per-device batch) is
1 for the 2-process gloo DDP run and 2 for the single process.  Each rank records the batches it
trained on; both runs must see 2 images per optimizer step and make the same number of steps.
The 2-process run is launched as in tests/test_ddp_eval.py (Lightning re-launches the script).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.micro_run import micro_run

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
MAX_STEPS = 3

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

    config, overrides, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])


    class Record(L.Callback):
        def __init__(self):
            self.sizes = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.sizes.append(len(batch["targets"]))

        def on_train_end(self, trainer, pl_module):
            (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
                "sizes": self.sizes, "global_step": trainer.global_step, "world_size": trainer.world_size,
                "accumulation": trainer.accumulate_grad_batches}))


    cfg = load_config(config, overrides)
    dm, model = build_all(cfg)
    trainer = build_trainer(cfg, out / "run", extra_callbacks=[Record()], datamodule=dm)
    trainer.fit(model, datamodule=dm)
    """
)


def _overrides(tmp_path: Path) -> list[str]:
    return [
        *micro_run(tmp_path, steps=MAX_STEPS, val_every=1000, num_val=1),
        "data.global_batch_size=2",
        "trainer.limit_val_batches=0",
        "checkpoint.every_n_steps=0",
        "model.mask_generator.enc_layers=1",
    ]


def _train(tmp_path: Path, name: str, overrides: list[str]) -> tuple[list[dict], str]:
    out = tmp_path / name
    out.mkdir()
    script = tmp_path / "ddp_batch_script.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_", "PL_", "RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(QUICKSTART), json.dumps(overrides), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))], proc.stdout


@pytest.mark.ddp
@pytest.mark.slow  # two short trainings in new processes, one of them 2-process DDP (~40 s on 2 cores)
def test_two_processes_of_batch_1_see_the_global_batch_of_one_process_of_batch_2(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.engine.components import build_datamodule

    overrides = _overrides(tmp_path)
    build_datamodule(load_config(QUICKSTART, overrides)).prepare_data()  # the data, before any rank races on it

    single, single_out = _train(tmp_path, "single", [*overrides, "data.batch_size=2"])
    ddp, ddp_out = _train(tmp_path, "ddp", [*overrides, "data.batch_size=1", "trainer.devices=2", "trainer.strategy=ddp"])

    assert "global batch 2 = 1 node(s) x 1 device(s) x per-device batch 2 x gradient accumulation 1" in single_out
    assert "global batch 2 = 1 node(s) x 2 device(s) x per-device batch 1 x gradient accumulation 1" in ddp_out
    assert [r["world_size"] for r in single] == [1] and [r["world_size"] for r in ddp] == [2, 2]
    assert {size for r in single for size in r["sizes"]} == {2}
    assert {size for r in ddp for size in r["sizes"]} == {1}
    # the same number of optimizer steps, and 2 images per step over all ranks, in both runs
    steps = {r["global_step"] for r in single + ddp}
    assert steps == {MAX_STEPS}
    for ranks in (single, ddp):
        images = sum(sum(r["sizes"]) for r in ranks)
        accumulation = ranks[0]["accumulation"]
        assert images / (MAX_STEPS * accumulation) == 2
