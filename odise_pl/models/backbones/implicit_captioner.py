"""The implicit captioner: a CLIP image embedding turned into the text conditioning of the diffusion UNet.

As in the ODISE reference implementation:

* the image embedding ``e`` (B, E) is the **shared** frozen CLIP's ``encode_image``
  output, *not* normalised (for a ViT: the CLS token after ``ln_post`` times the
  visual projection; 768-d for ViT-L/14-336). The image is resized so that its
  short side is ``clip.image_size`` (bicubic, no antialiasing, as the reference's
  torchvision 0.14 tensor ``Resize``), center-cropped square and normalised with
  CLIP's mean/std;
* text conditioning ``c = TextEncoder("") + tanh(a) * PositionalLinear(e)`` with
  ``PositionalLinear``: Linear(E -> D) broadcast to L=77 tokens plus a learned
  (L, D) positional embedding, and ``a`` a (1, L, D) gate initialised to **zeros**;
* a time term ``tanh(a_t) * PositionalLinear_1(e)`` with Linear(E -> T) and a
  (1, 1, T) positional embedding, ``a_t`` a zero-initialised (T,) gate; the
  backbone adds it to the UNet timestep embedding.

At initialisation both gates are zero, so the conditioning equals the empty
caption exactly. Parameters at SD v1.x / ViT-L/14 shapes: 1,695,744.

The captioner keeps a plain (unregistered) reference to the :class:`SharedClip`;
its owner (the diffusion backbone) registers the CLIP once, so that moving the
model moves the CLIP and the captioner's own parameters are only its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.clip_model import SharedClip


class PositionalLinear(nn.Module):
    """Linear(in -> out) broadcast over ``seq_len`` tokens plus a learned positional embedding.

    Shape:
        (B, in_features) -> (B, seq_len, out_features)
    """

    def __init__(self, in_features: int, out_features: int, seq_len: int = 77) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.positional_embedding = nn.Parameter(torch.zeros(1, seq_len, out_features))
        nn.init.trunc_normal_(self.positional_embedding, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).unsqueeze(1) + self.positional_embedding


class ImplicitCaptioner(nn.Module):
    """CLIP image embedding -> gated text conditioning (+ gated timestep-embedding term).

    Args:
        clip: the shared frozen CLIP (never loaded here).
        text_shape: (L, D) of the diffusion text conditioning, e.g. (77, 768) for SD v1.x,
            (77, 1024) for v2.x.
        time_embed_dim: width T of the UNet timestep embedding (1280 for SD); ``None``
            disables the time term.

    Example (needs a loaded CLIP, so not a doctest)::

        captioner = ImplicitCaptioner(clip=clip, text_shape=(77, 768), time_embed_dim=1280)
        cond, time_term = captioner(images, empty_text)  # (B, 77, 768), (B, 1280)
    """

    def __init__(self, *, clip: SharedClip, text_shape: tuple[int, int], time_embed_dim: int | None) -> None:
        super().__init__()
        self._clip = (clip,)  # a tuple hides it from nn.Module registration (see the module docstring)
        seq_len, width = text_shape
        self.clip_project = PositionalLinear(clip.embed_dim, width, seq_len)
        self.alpha_cond = nn.Parameter(torch.zeros(1, seq_len, width))
        self.time_embed_project = None
        self.alpha_cond_time_embed = None
        if time_embed_dim is not None:
            self.time_embed_project = PositionalLinear(clip.embed_dim, time_embed_dim, 1)
            self.alpha_cond_time_embed = nn.Parameter(torch.zeros(time_embed_dim))

    @property
    def clip(self) -> SharedClip:
        return self._clip[0]

    @torch.no_grad()
    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 255] -> (B, E) unnormalised CLIP image embedding (no grad)."""
        size = self.clip.image_size
        height, width = images.shape[-2:]
        # torchvision's Resize(size): the short side becomes ``size``, the long one int(size * long / short)
        if height <= width:
            resized = (size, int(size * width / height))
        else:
            resized = (int(size * height / width), size)
        x = images.float()
        if resized != (height, width):
            x = F.interpolate(x, size=resized, mode="bicubic", align_corners=False, antialias=False)
        # torchvision's CenterCrop: offsets int(round((side - size) / 2))
        top, left = int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0))
        x = self.clip.normalize(x[:, :, top : top + size, left : left + size])
        return self.clip.model.encode_image(x).float()

    def forward(self, images: torch.Tensor, empty_text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Implicit caption of ``images``.

        Args:
            images: (B, 3, H, W) pixels in [0, 255].
            empty_text: (1, L, D) text-encoder output for the empty caption.

        Returns:
            ``(cond, time_term)``: (B, L, D) conditioning and (B, T) timestep-embedding
            term (``None`` without the time projection).
        """
        embedding = self.image_embedding(images)  # (B, E)
        cond = empty_text + torch.tanh(self.alpha_cond) * self.clip_project(embedding)  # (B, L, D)
        if self.time_embed_project is None:
            return cond, None
        time_term = torch.tanh(self.alpha_cond_time_embed) * self.time_embed_project(embedding)[:, 0]  # (B, T)
        return cond, time_term
