"""fp16 AMP (the reference recipe's ``trainer.precision: 16-mixed``): Lightning's grad scaler unscales the
gradients before the total-norm clipping at ``optim.clip_grad_norm``, so the clip acts on true gradients."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn


class _Quadratic(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def training_step(self, batch, batch_idx):
        return (self.lin(batch) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)  # the update is the clipped gradient itself


class _GradNorm(L.Callback):
    """The total gradient norm the clipping sees (after Lightning's unscale, before the clip)."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.norm = _total_norm(p.grad for p in pl_module.parameters())
        self.scale = float(trainer.precision_plugin.scaler.get_scale())


def _total_norm(tensors) -> float:
    return float(torch.linalg.vector_norm(torch.stack([t.float().norm() for t in tensors])))


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")])],
)
def test_grad_scaler_unscales_before_the_total_norm_clip(device):
    from lightning.pytorch.plugins.precision import MixedPrecision

    torch.manual_seed(0)
    model, record = _Quadratic(), _GradNorm()
    data = torch.randn(8, 4)
    # the true fp32 gradient norm, for comparison
    reference = _Quadratic()
    reference.load_state_dict(model.state_dict())
    reference.training_step(data, 0).backward()
    true_norm = _total_norm(p.grad for p in reference.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    # Lightning turns precision="16-mixed" into bf16 on CPU, so the fp16 plugin is given explicitly there
    amp = (
        dict(precision="16-mixed")
        if device == "cuda"
        else dict(plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))])
    )
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        max_steps=1,
        gradient_clip_val=0.01,
        gradient_clip_algorithm="norm",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        **amp,
    )
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=8))
    assert isinstance(trainer.precision_plugin, MixedPrecision)
    assert trainer.precision_plugin.scaler is not None
    assert record.scale > 1.0  # the loss really was scaled
    assert record.norm == pytest.approx(true_norm, rel=2e-2)  # ... and unscaled before the clip
    assert true_norm > 0.5
    step = _total_norm(p.detach().cpu() - b.cpu() for p, b in zip(model.parameters(), before))
    assert step == pytest.approx(0.01, rel=1e-3)  # clipped to total L2 norm 0.01
