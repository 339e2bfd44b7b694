"""Parameter accounting: trainable and frozen parameters per part, and the real-size SD v1.5 configs.

Counting needs only shapes, so it works on the ``meta`` device: the full-size
Stable Diffusion v1.5 parts (configs below, architecture facts copied from the
published ``config.json`` files) and ``open_clip``'s ViT-L-14-336 can be built
without memory or weights.

Example:
    >>> model = nn.ModuleDict({"encoder": nn.Linear(4, 3), "head": nn.Linear(3, 2)})
    >>> _ = model.encoder.requires_grad_(False)
    >>> print(format_summary(count_parameters(model)))
    part         trainable           frozen   total (M)
    encoder              0               15        0.00
    head                 8                0        0.00
    ---------------------------------------------------
    total                8               15        0.00
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamRow:
    part: str
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


def _split(params, seen: set[int]) -> tuple[int, int]:
    trainable = frozen = 0
    for p in params:
        if id(p) in seen:  # a shared parameter counts once, where it is met first
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def count_parameters(module: nn.Module, *, max_depth: int = 2, prefix: str = "", _seen: set[int] | None = None) -> list[ParamRow]:
    """One row per named child of ``module``; a child mixing trainable and frozen parameters is
    expanded into its own children (down to ``max_depth`` levels).

    Parameters directly on ``module`` form a row named ``prefix + "(own)"``. Shared
    parameters (e.g. one CLIP registered by two parts) count once.

    Returns:
        rows whose sums equal the module's unique trainable/frozen totals.
    """
    seen = set() if _seen is None else _seen
    rows = []
    own = _split(module.parameters(recurse=False), seen)
    if sum(own):
        rows.append(ParamRow(prefix + "(own)", *own))
    for name, child in module.named_children():
        ps = list(child.parameters())
        mixed = any(p.requires_grad for p in ps) and not all(p.requires_grad for p in ps)
        if mixed and max_depth > 1 and any(True for _ in child.children()):
            rows += count_parameters(child, max_depth=max_depth - 1, prefix=f"{prefix}{name}.", _seen=seen)
            continue
        trainable, frozen = _split(ps, seen)
        if trainable or frozen:
            rows.append(ParamRow(prefix + name, trainable, frozen))
    return rows


def format_summary(rows: list[ParamRow]) -> str:
    """A plain-text table of ``rows`` with a total line (counts with thousands separators and in millions)."""
    width = max([len(r.part) for r in rows] + [5])
    lines = [f"{'part':<{width}}  {'trainable':>13}  {'frozen':>15}  {'total (M)':>10}"]
    for r in rows + [ParamRow("total", sum(r.trainable for r in rows), sum(r.frozen for r in rows))]:
        if r.part == "total":
            lines.append("-" * len(lines[0]))
        lines.append(f"{r.part:<{width}}  {r.trainable:>13,}  {r.frozen:>15,}  {r.total / 1e6:>10.2f}")
    return "\n".join(lines)


# ------------------------------------------------------ Stable Diffusion v1.5 at real size
def sd15_unet_config() -> dict:
    """``UNet2DConditionModel`` of SD v1.5 (859.5M parameters)."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        attention_head_dim=8,
        norm_num_groups=32,
        cross_attention_dim=768,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )


def sd15_vae_config() -> dict:
    """``AutoencoderKL`` of SD v1.x (83.7M parameters)."""
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512),
        sample_size=512,
        scaling_factor=0.18215,
        act_fn="silu",
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def sd15_text_encoder_config() -> dict:
    """``CLIPTextModel`` of SD v1.x: OpenAI CLIP ViT-L/14's text tower (123.1M parameters)."""
    return dict(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=768,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def sd15_parts_on_meta() -> dict[str, nn.Module]:
    """SD v1.5's ``vae``, ``unet`` and ``text_encoder`` with real shapes on the meta device (no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return dict(
            vae=AutoencoderKL(**sd15_vae_config()),
            unet=UNet2DConditionModel(**sd15_unet_config()),
            text_encoder=CLIPTextModel(CLIPTextConfig(**sd15_text_encoder_config())),
        )
