"""One shared, frozen CLIP per process, loaded through ``open_clip``.

ODISE uses CLIP three times: the implicit captioner (image embedding), the
category text classifier (text embeddings) and the open-vocabulary mask
classifier.  The reference loads three copies of ViT-L/14-336; here every part
asks :func:`load_clip` and gets the same frozen model object.

Weights come from, in this order of ``pretrained``:
  * ``None``: random init (the tiny configs ``odise-tiny-vit``/``odise-tiny-convnext``
    shipped in ``clip_configs/`` are for tests and the quick start);
  * an ``open_clip`` pretrained tag (``openai``, ``laion2b_s32b_b82k``...);
  * ``hf-hub:ORG/NAME`` for a Hugging Face hub repository in open_clip format;
  * a local checkpoint file (``open_clip_pytorch_model.bin`` / ``.safetensors``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

import odise_pl.models.tiny_timm  # noqa: F401  (registers the tiny timm trunks the tiny configs name)
from odise_pl.errors import WeightsError
from odise_pl.models.frozen import freeze

_CONFIG_DIR = Path(__file__).with_name("clip_configs")
open_clip.add_model_config(_CONFIG_DIR)

_CACHE: dict[tuple, SharedClip] = {}


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load: an open_clip model name and where its weights come from."""

    model_name: str = "ViT-L-14-336"
    pretrained: str | None = "openai"


class SharedClip(nn.Module):
    """A frozen open_clip model with its tokenizer and preprocessing constants.

    Attributes:
        model: the ``open_clip`` CLIP model (frozen, eval mode).
        image_size: the input side the visual tower expects (e.g. 336).
        embed_dim: width of the joint image-text embedding space (768 for ViT-L/14).
        mean, std: pixel normalisation in the [0, 1] range, as open_clip declares it.
    """

    def __init__(self, model: nn.Module, tokenizer, spec: ClipSpec, *, pretrained: bool) -> None:
        super().__init__()
        self.model = freeze(model, pretrained=pretrained)
        self.tokenizer = tokenizer
        self.spec = spec
        visual = model.visual
        size = getattr(visual, "image_size", None) or getattr(getattr(visual, "preprocess_cfg", {}), "size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.embed_dim = (
            int(model.text_projection.shape[-1])
            if isinstance(getattr(model, "text_projection", None), torch.Tensor)
            else int(model.transformer.width)
        )
        pre = getattr(visual, "preprocess_cfg", None) or {}
        mean = pre.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = pre.get("std", open_clip.OPENAI_DATASET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SharedClip:
        super().train(mode)
        self.model.eval()  # frozen: never leaves eval mode
        return self

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) pixels in [0,255] -> CLIP-normalised floats."""
        return (images.float() / 255.0 - self.mean) / self.std

    @torch.no_grad()
    def encode_text(self, texts: list[str], *, normalize: bool = False) -> torch.Tensor:
        """Embed a list of strings -> (N, embed_dim). Chunk large lists yourself (see the text bank)."""
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts).to(device)
        emb = self.model.encode_text(tokens)
        return nn.functional.normalize(emb, dim=-1) if normalize else emb

    @property
    def is_vit(self) -> bool:
        return hasattr(self.model.visual, "transformer")


def _resolve_pretrained(pretrained: str | None) -> str | None:
    if pretrained is None or pretrained in ("", "none", "random"):
        return None
    if pretrained.startswith("hf-hub:"):
        return pretrained
    path = Path(os.path.expanduser(pretrained))
    if path.suffix in (".bin", ".pt", ".pth", ".safetensors") or os.sep in pretrained:
        if not path.is_file():
            raise WeightsError(
                f"CLIP weights '{pretrained}' not found. Give an open_clip pretrained tag (e.g. 'openai'), "
                f"'hf-hub:ORG/NAME', or the path of an open_clip checkpoint file "
                f"(open_clip_pytorch_model.bin or .safetensors)."
            )
        return str(path)
    return pretrained


def load_clip(spec: ClipSpec, *, device: torch.device | str | None = None) -> SharedClip:
    """Return the process-wide shared CLIP for ``spec`` (loaded once)."""
    key = (spec.model_name, spec.pretrained)
    if key in _CACHE:
        return _CACHE[key]
    if spec.model_name not in open_clip.list_models():
        raise ValueError(
            f"unknown CLIP model '{spec.model_name}'. open_clip knows e.g. ViT-L-14-336, "
            f"ViT-B-16, convnext_large_d_320, and the tiny odise-tiny-vit / odise-tiny-convnext."
        )
    pretrained = _resolve_pretrained(spec.pretrained)
    if pretrained is None and spec.model_name.startswith("hf-hub:"):
        raise ValueError("an hf-hub model name needs no separate pretrained value")
    try:
        model = open_clip.create_model(spec.model_name, pretrained=pretrained, device=device)
    except RuntimeError as err:  # open_clip's "not a known tag", "failed to download", ...
        if pretrained is None:
            raise
        raise WeightsError(
            f"cannot load the CLIP weights '{spec.pretrained}' of {spec.model_name} ({err}). Give "
            "an open_clip pretrained tag, 'hf-hub:ORG/NAME', or the path of an open_clip "
            "checkpoint file."
        ) from err
    tokenizer = open_clip.get_tokenizer(spec.model_name)
    shared = SharedClip(model, tokenizer, spec, pretrained=pretrained is not None)
    _CACHE[key] = shared
    return shared


def release_clip(shared: SharedClip) -> None:
    """Stop handing ``shared`` out to later :func:`load_clip` calls (it was changed in place, e.g. cast
    to bf16 by ``model.speed.frozen_weights``); the models holding it keep it."""
    for key in [k for k, v in _CACHE.items() if v is shared]:
        del _CACHE[key]


@contextmanager
def private_clips() -> Iterator[None]:
    """Within the block, :func:`load_clip` loads CLIPs that no model built before or after shares
    (for weights loaded in place, e.g. a reference fixture's)."""
    saved = dict(_CACHE)
    _CACHE.clear()
    try:
        yield
    finally:
        _CACHE.clear()
        _CACHE.update(saved)


def clear_clip_cache() -> None:
    """Forget the loaded CLIPs (tests)."""
    _CACHE.clear()
