"""A supervision strategy written, registered and trained from one test file (docs/supervision.md)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from odise_pl.models.supervision.base import SupervisionStrategy, TextEmbeddings
from odise_pl.registry import SUPERVISIONS

REPO = Path(__file__).resolve().parents[3]


@dataclass
class LinearProbeConfig:
    """The YAML keys of the strategy (besides ``name``)."""

    bias_init: float = 0.0


class LinearProbeSupervision(SupervisionStrategy):
    """A closed-set Linear(D -> K+1) classifier over mask embeddings (no text at all)."""

    def __init__(self, *, embed_dim: int, num_classes: int, bias_init: float = 0.0) -> None:
        super().__init__()
        self.head = nn.Linear(embed_dim, num_classes + 1)
        nn.init.constant_(self.head.bias, bias_init)
        self.num_match_classes = num_classes
        self.calls = {"training_logits": 0, "extra_losses": 0}

    @classmethod
    def from_config(cls, cfg: LinearProbeConfig, *, train_text: TextEmbeddings, embed_dim: int, **_: object):
        return cls(embed_dim=embed_dim, num_classes=train_text.num_classes, bias_init=cfg.bias_init)

    def classify(self, mask_embeds: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        if text.num_classes != self.num_match_classes:
            raise ValueError("a linear probe only knows its training classes")
        return self.head(mask_embeds)

    def training_logits(self, mask_embeds: torch.Tensor, batch: dict) -> torch.Tensor:
        self.calls["training_logits"] += 1
        return self.head(mask_embeds)

    def extra_losses(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        self.calls["extra_losses"] += 1
        return {"loss_probe_l2": 1e-4 * self.head.weight.pow(2).sum()}


@pytest.fixture
def probe_name():
    name = f"linear_probe_{uuid.uuid4().hex[:8]}"
    SUPERVISIONS.register(name, config=LinearProbeConfig)(LinearProbeSupervision)
    yield name
    SUPERVISIONS._entries.pop(name, None)


def test_a_strategy_defined_in_a_test_file_trains_through_the_runner(tmp_path, probe_name):
    from odise_pl.config import load_config
    from odise_pl.engine.fit import fit

    config = tmp_path / "probe.yaml"
    config.write_text(f"""\
_base_: {REPO / "experiments" / "quickstart.yaml"}
run: {{root: {tmp_path / "runs"}, name: probe}}
model:
  supervision: {{name: {probe_name}, bias_init: 0.5}}
  mask_generator: {{num_queries: 6, train_num_points: 256}}
data: {{root: {tmp_path / "data"}, num_train: 16, num_val: 4, image_size: 64, crop_size: 64,
        eval_short_side: 64, eval_max_long_side: 64, batch_size: 2, eval_batch_size: 2, num_workers: 0}}
trainer: {{max_steps: 2, val_check_interval: 2, log_every_n_steps: 1, num_sanity_val_steps: 0,
           enable_progress_bar: false}}
logging: {{tensorboard: false}}
""")
    cfg = load_config(config)
    assert cfg.model.supervision.name == probe_name and cfg.model.supervision.bias_init == 0.5

    results = fit(cfg)

    run_dir = Path(results["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "PQ" in metrics["final"] and "mIoU" in metrics["final"]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2
    assert "supervision.head.weight" in ckpt["state_dict"]
    bias = ckpt["state_dict"]["supervision.head.bias"]
    assert not torch.equal(bias, torch.full_like(bias, 0.5))  # the optimiser moved it


def test_an_unregistered_name_is_rejected_with_the_available_ones(tmp_path):
    from odise_pl.config import load_config
    from odise_pl.errors import ConfigError

    config = tmp_path / "bad.yaml"
    config.write_text(f"_base_: {REPO / 'experiments' / 'quickstart.yaml'}\nmodel: {{supervision: {{name: linear_probe_missing}}}}\n")
    with pytest.raises((ConfigError, KeyError), match="caption_grounding"):
        load_config(config)
