"""The ``diffusion_unet`` backbone: frozen Stable Diffusion features, as in the ODISE reference.

One forward pass per window (B, 3, h, w) in [0, 255]:

1. ``x = (pixels / 255 - 0.5) / 0.5`` -> VAE encoder -> posterior **mean** x
   ``vae.config.scaling_factor`` = latent ``z`` (B, 4, h/8, w/8). Taps: the input of
   the encoder resnets 5 and 7 of the flat list ``[r for block in encoder.down_blocks
   for r in block.resnets]`` (the reference's ``encoder.down[l].block[i]``, two per
   level): (512 ch, stride 4) and (512, 8) for SD.
2. ``z_t = sqrt(acp[t]) z + sqrt(1 - acp[t]) noise`` (``q_sample``; scaled-linear betas
   0.00085 -> 0.012 over 1000 steps, float64 as the reference) with a fixed noise
   tensor (1, 4, S, S) drawn once from ``noise_seed`` (S = ``unet.config.sample_size``,
   64 for SD v1.x), bicubic-resized to the latent size when it differs.
3. One UNet pass at ``t`` with the text conditioning. Taps: the input of the last
   resnet of every up block = the concatenation ``[h, skip]`` entering the reference's
   ``output_blocks`` 2, 5, 8, 11: (2560, 64), (1920, 32), (960, 16), (640, 8).
4. VAE decoder taps (the reference's ``decoder.up[l].block[i]`` indices 2 and 5, three
   per level, i.e. the input of ``decoder.up_blocks[0].resnets[2]`` and
   ``up_blocks[1].resnets[2]``): (512, 8), (512, 4). The reference decodes the
   **clean latent z** (``decode_to_image(latent_image)``), not the UNet output, so
   these taps do not depend on t or on the caption; they are computed here the same way.

Taps are recorded with forward pre-hooks; diffusers' forward is not re-implemented.
The flat indices above are SD's layout; in general each tap is the input of the *last*
resnet of its level (encoder levels 2 and 3, every UNet up block, decoder up blocks 0
and 1), so tiny models with other depths (``tiny_unet`` / ``tiny_vae``) tap the same places.
The UNet and VAE-decoder passes stop once their last tap is recorded (the rest of
those networks is not used). The eight taps go through :class:`StrideFusion`:
``s2 = enc5 + dec5``, ``s3 = enc7 + unet11 + dec2``, ``s4 = unet8``, ``s5 = unet5 + unet2``.

Windows, in training and at inference alike (the reference's ``slide_training=True``): the
image is cut into squares of side ``min(window_size, H, W)`` (stride ``min(window_stride, side)``,
the last window shifted in, overlaps averaged); every window is resized to
``window_size`` x ``window_size`` (bicubic, ``antialias=False``, unclamped: torchvision 0.14's
tensor ``Resize``, as the released models were trained) before the frozen models, and each tap
is resized back (nearest) to window/stride before its projection. So an image whose short side
is under 512 runs as windows of its short side, upsampled to 512. ``resize_windows: false``
runs smaller windows at their own size instead (not the reference). ``window_size: null`` runs
the whole image in one pass.

Conditioning (``caption_mode``): ``implicit`` (:class:`ImplicitCaptioner`; its time
term is added to the output of ``unet.time_embedding`` by a forward hook - the
reference adds it to ``time_embed(t)``, before any block uses it), ``empty`` (the
"" embedding) or ``caption`` (the captions given to ``forward``, one per image).
Gradients reach the captioner through the frozen UNet: its weights have
``requires_grad=False`` but it does not run under ``no_grad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.config.schema import choice
from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import Backbone, ShapeSpec
from odise_pl.models.backbones.clip_tokenizer import clip_bpe_tokenizer
from odise_pl.models.backbones.implicit_captioner import ImplicitCaptioner
from odise_pl.models.backbones.pyramid import StrideFusion, TapRecorder, add_to_output, sliding_window_forward
from odise_pl.models.backbones.sd_single_file import is_single_file, load_single_file
from odise_pl.models.backbones.stable_diffusion import (  # noqa: F401  (tests and benchmarks import them from here)
    StableDiffusionParts,
    build_tiny_stable_diffusion,
    checked_overrides,
    load_stable_diffusion,
    tiny_text_config,
    tiny_unet_config,
    tiny_vae_config,
)
from odise_pl.models.clip_model import SharedClip
from odise_pl.models.frozen import freeze
from odise_pl.registry import BACKBONES

ENCODER_TAPS = (5, 7)  # the reference's flat resnet indices (SD: 2 per encoder level, 3 per up block)
UNET_TAPS = (2, 5, 8, 11)
DECODER_TAPS = (2, 5)
ENCODER_LEVELS = (2, 3)  # the same places by level: the last resnet of these levels / blocks
DECODER_LEVELS = (0, 1)
CAPTION_MODES = ("implicit", "empty", "caption")
NUM_TIMESTEPS = 1000  # SD's training schedule


@dataclass
class DiffusionBackboneConfig:
    """YAML keys of ``model.backbone`` with ``name: diffusion_unet``."""

    # hub id, diffusers-format dir, or the original single file (sd-v1-3.ckpt, LDM layout); the reference
    # loads SD v1.3 (v1.5 works too)
    pretrained: str | None = "CompVis/stable-diffusion-v1-3"
    tiny: bool = False  # random tiny weights (also when pretrained is null)
    # keys replacing those of tiny_unet_config() / tiny_vae_config() (random weights only), e.g.
    # {block_out_channels: [16, 32, 32, 32], norm_num_groups: 16}; diffusers' own argument names
    tiny_unet: dict[str, Any] | None = None
    tiny_vae: dict[str, Any] | None = None
    timestep: int = 0
    noise_seed: int = 42
    caption_mode: str = choice("implicit", CAPTION_MODES)
    window_size: int | None = 512  # null: the whole image in one pass
    window_stride: int | None = 512
    resize_windows: bool = True  # every window resized to window_size (the reference)
    tiny_text: dict[str, Any] | None = None  # keys replacing tiny_text_config()'s (transformers' names)
    projection_dim: int = 512
    bottleneck_width: int = 128
    activation_checkpointing: bool = False

    def problems(self) -> list[tuple[str, str]]:
        """Combinations that cannot work, checked when the config is loaded (before SD is built)."""
        found = window_problems(self.window_size, self.window_stride)
        if not 0 <= self.timestep < NUM_TIMESTEPS:
            found.append(("timestep", f"{self.timestep} is outside [0, {NUM_TIMESTEPS - 1}]."))
        random_weights = self.tiny or self.pretrained is None
        if not random_weights and not is_single_file(self.pretrained):
            found += [
                (
                    key,
                    f"shapes the random tiny model only; with pretrained weights ('{self.pretrained}') "
                    "remove it or set model.backbone.pretrained: null.",
                )
                for key in ("tiny_unet", "tiny_vae", "tiny_text")
                if getattr(self, key)
            ]
        return found


def window_problems(window_size: int | None, window_stride: int | None) -> list[tuple[str, str]]:
    """``(key, message)`` for a sliding-window size / stride that cannot work."""
    if window_size is None:
        return []
    if window_size <= 0 or window_size % 64:
        return [("window_size", f"{window_size} must be a positive multiple of 64 (or null for whole-image features).")]
    if window_stride is None or window_stride <= 0 or window_stride % 64 or window_stride > window_size:
        return [("window_stride", f"{window_stride} must be a positive multiple of 64, at most window_size ({window_size}).")]
    return []


# ---------------------------------------------------------------------- loading
def single_file_parts(cfg: DiffusionBackboneConfig) -> StableDiffusionParts:
    """SD parts from one LDM-layout file: SD v1.x shapes, or those of ``tiny_unet`` / ``tiny_vae`` / ``tiny_text``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    configs = {}
    if cfg.tiny_unet or cfg.tiny_vae or cfg.tiny_text:  # a small file (e.g. the reference fixture's)
        text = dict(tiny_text_config())
        text.update(cfg.tiny_text or {})
        configs = dict(
            unet_config=checked_overrides(tiny_unet_config(text["hidden_size"]), cfg.tiny_unet, UNet2DConditionModel, "tiny_unet"),
            vae_config=checked_overrides(tiny_vae_config(), cfg.tiny_vae, AutoencoderKL, "tiny_vae"),
            text_config=text,
        )
    return StableDiffusionParts(**load_single_file(cfg.pretrained, **configs), pretrained=True)


def q_sample_scales(
    timestep: int, *, beta_start: float = 0.00085, beta_end: float = 0.012, num_steps: int = NUM_TIMESTEPS
) -> tuple[float, float]:
    """``(sqrt(acp[t]), sqrt(1 - acp[t]))`` of the scaled-linear schedule (float64)."""
    if not 0 <= timestep < num_steps:
        raise ConfigError(f"model.backbone.timestep: {timestep} is outside [0, {num_steps - 1}]")
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64, device="cpu") ** 2
    alpha_cumprod = float(torch.cumprod(1.0 - betas, 0)[timestep])
    return math.sqrt(alpha_cumprod), math.sqrt(1.0 - alpha_cumprod)


@BACKBONES.register("diffusion_unet", config=DiffusionBackboneConfig)
class DiffusionUNetBackbone(Backbone):
    """Frozen SD VAE + UNet (+ text encoder) features -> ``s2..s5`` with ``projection_dim`` channels.

    Args:
        vae, unet, text_encoder, tokenizer: the Stable Diffusion parts (frozen here).
        clip: the shared CLIP; required for ``caption_mode="implicit"``.
        pretrained: whether the SD parts came from pretrained weights (checkpoint policy).
        caption_mode, timestep, noise_seed, window_size, window_stride, resize_windows,
        projection_dim, bottleneck_width, activation_checkpointing: see
        :class:`DiffusionBackboneConfig` and the module docstring.

    Forward:
        ``images`` (B, 3, H, W) in [0, 255], H and W multiples of 64; ``captions``
        (list of B str, ``caption`` mode only) -> ``{"s2": (B, P, H/4, W/4), ...,
        "s5": (B, P, H/32, W/32)}``. Memory: the UNet activations are kept for the
        backward pass in ``implicit`` mode (gradients flow through the UNet).
    """

    size_divisibility = 64

    def __init__(
        self,
        *,
        vae: nn.Module,
        unet: nn.Module,
        text_encoder: nn.Module,
        tokenizer,
        clip: SharedClip | None = None,
        pretrained: bool,
        caption_mode: str = "implicit",
        timestep: int = 0,
        noise_seed: int = 42,
        window_size: int | None = 512,
        window_stride: int | None = 512,
        resize_windows: bool = True,
        projection_dim: int = 512,
        bottleneck_width: int = 128,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_options(caption_mode, window_size, window_stride)
        self.vae = freeze(vae, pretrained=pretrained)
        self.unet = freeze(unet, pretrained=pretrained)
        self.text_encoder = freeze(text_encoder, pretrained=pretrained)
        self.tokenizer = tokenizer
        self.caption_mode, self.timestep = caption_mode, timestep
        self.window_size, self.window_stride, self.resize_windows = window_size, window_stride, resize_windows
        q_sample_scales(timestep)  # validates t

        text_width = text_encoder.config.hidden_size
        if text_width != unet.config.cross_attention_dim:
            raise ValueError(
                f"the text encoder's width {text_width} differs from the UNet's cross_attention_dim {unet.config.cross_attention_dim}"
            )
        self.register_buffer("empty_text", self.embed_text([""]))  # (1, L, D), persistent: see tiny weights
        size = unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        generator = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(1, unet.config.in_channels, size, size, generator=generator, device="cpu")
        self.register_buffer("noise", noise, persistent=False)

        self.clip = clip if caption_mode == "implicit" else None  # registered here once (device moves)
        self.captioner = None
        if caption_mode == "implicit":
            if clip is None:
                raise ConfigError("model.backbone.caption_mode: 'implicit' needs the shared CLIP (clip=...)")
            self.captioner = ImplicitCaptioner(
                clip=clip, text_shape=tuple(self.empty_text.shape[1:]), time_embed_dim=unet.time_embedding.linear_2.out_features
            )
        specs = self.tap_specs()
        self.fusion = StrideFusion(
            tap_channels=[s.channels for s in specs],
            tap_strides=[s.stride for s in specs],
            out_channels=projection_dim,
            bottleneck_channels=bottleneck_width,
            activation_checkpointing=activation_checkpointing,
        )

    @classmethod
    def build_on_meta(cls, cfg: DiffusionBackboneConfig, *, clip: SharedClip | None = None) -> DiffusionUNetBackbone:
        """The real architecture without reading weights (call under ``torch.device("meta")``): SD v1.x's
        shapes for a pretrained backbone, the tiny config's otherwise (``odise-pl summary``)."""
        if not cfg.pretrained or cfg.tiny:
            return cls.from_config(cfg, clip=clip)
        from odise_pl.models.param_summary import sd15_parts_on_meta

        return cls(**sd15_parts_on_meta(), tokenizer=clip_bpe_tokenizer(), clip=clip, pretrained=True)

    @classmethod
    def from_config(cls, cfg: DiffusionBackboneConfig, *, clip: SharedClip | None = None, **context) -> DiffusionUNetBackbone:
        """Build from the YAML section; ``clip`` is the model's shared CLIP (other context is ignored)."""
        _check_options(cfg.caption_mode, cfg.window_size, cfg.window_stride)
        for key, message in cfg.problems():  # checked at load time already when cfg came from a file
            raise ConfigError(f"model.backbone.{key}: {message}")
        if cfg.tiny or cfg.pretrained is None:
            parts = build_tiny_stable_diffusion(unet_overrides=cfg.tiny_unet, vae_overrides=cfg.tiny_vae, text_overrides=cfg.tiny_text)
        elif is_single_file(cfg.pretrained):  # the original LDM-layout checkpoint, e.g. sd-v1-3.ckpt
            parts = single_file_parts(cfg)
        else:
            parts = load_stable_diffusion(cfg.pretrained)
        return cls(
            vae=parts.vae,
            unet=parts.unet,
            text_encoder=parts.text_encoder,
            tokenizer=parts.tokenizer,
            clip=clip,
            pretrained=parts.pretrained,
            caption_mode=cfg.caption_mode,
            timestep=cfg.timestep,
            noise_seed=cfg.noise_seed,
            window_size=cfg.window_size,
            window_stride=cfg.window_stride,
            resize_windows=cfg.resize_windows,
            projection_dim=cfg.projection_dim,
            bottleneck_width=cfg.bottleneck_width,
            activation_checkpointing=cfg.activation_checkpointing,
        )

    # ----------------------------------------------------------------- structure
    def _tap_modules(self) -> tuple[list[nn.Module], list[nn.Module], list[nn.Module]]:
        """The tapped resnets: the last resnet of VAE-encoder levels 2 and 3, of every UNet up block
        and of VAE-decoder up blocks 0 and 1 (for SD's layout, the flat indices ENCODER_TAPS,
        UNET_TAPS and DECODER_TAPS of the reference; other depths tap the same places)."""
        encoder, unet, decoder = self.vae.encoder.down_blocks, self.unet.up_blocks, self.vae.decoder.up_blocks
        if len(encoder) != 4 or len(unet) != 4 or len(decoder) != 4:
            raise ValueError(
                f"the VAE/UNet needs SD's layout: 4 VAE levels and 4 UNet up blocks, got {len(encoder)} / {len(unet)} / {len(decoder)}"
            )
        return (
            [encoder[i].resnets[-1] for i in ENCODER_LEVELS],
            [block.resnets[-1] for block in unet],
            [decoder[i].resnets[-1] for i in DECODER_LEVELS],
        )

    def tap_specs(self) -> list[ShapeSpec]:
        """Channels and stride (input pixels) of the eight taps: encoder, UNet, decoder order."""
        latent_stride = 2 ** (len(self.vae.config.block_out_channels) - 1)
        n_up = len(self.unet.up_blocks)
        enc, unet, dec = self._tap_modules()
        return (
            [ShapeSpec(m.in_channels, 2**level) for m, level in zip(enc, ENCODER_LEVELS)]
            + [ShapeSpec(m.in_channels, latent_stride * 2 ** (n_up - 1 - i)) for i, m in enumerate(unet)]
            + [ShapeSpec(m.in_channels, latent_stride // 2**level) for m, level in zip(dec, DECODER_LEVELS)]
        )

    def output_shape(self) -> dict[str, ShapeSpec]:
        return self.fusion.output_shape()

    def frozen_parts(self) -> dict[str, nn.Module]:
        """The frozen SD VAE, UNet, text encoder and (implicit captions) the shared CLIP model."""
        parts = {"vae": self.vae, "unet": self.unet, "text_encoder": self.text_encoder}
        if self.clip is not None:
            parts["clip"] = self.clip.model
        return parts

    def frozen_entry_points(self) -> list[tuple[nn.Module, str]]:
        """VAE encode/decode, the UNet's forward and CLIP's ``encode_image`` (the text encoder runs once, at
        build time, for the empty caption; ``caption`` mode embeds the captions in the weights' dtype)."""
        points = [(self.vae, "encode"), (self.vae, "decode"), (self.unet, "forward")]
        if self.clip is not None:
            points.append((self.clip.model, "encode_image"))
        return points

    # ------------------------------------------------------------------- forward
    @torch.no_grad()
    def embed_text(self, captions: list[str]) -> torch.Tensor:
        """SD text-encoder embedding (last hidden state) of ``captions`` -> (N, L, D)."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        ids = self.tokenizer(list(captions), padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(next(self.text_encoder.parameters()).device))[0]

    def forward(self, images: torch.Tensor, captions: list[str] | None = None) -> dict[str, torch.Tensor]:
        batch, _, height, width = images.shape
        if height % self.size_divisibility or width % self.size_divisibility:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of {self.size_divisibility}; "
                f"pad the batch to the backbone's size_divisibility"
            )
        text = None
        if self.caption_mode == "caption":
            if captions is None or len(captions) != batch:
                raise ValueError(
                    f"caption_mode 'caption' needs one caption per image ({batch}), got {None if captions is None else len(captions)}"
                )
            text = self.embed_text(captions)
        if self.window_size is None:
            return self._forward_window(images, text, None)
        side = min(self.window_size, height, width)
        stride = min(self.window_stride, side)
        input_size = self.window_size if self.resize_windows else None
        return sliding_window_forward(
            partial(self._forward_window, text=text, input_size=input_size), images, window=side, stride=stride, shapes=self.output_shape()
        )

    def _forward_window(self, crop: torch.Tensor, text: torch.Tensor | None, input_size: int | None) -> dict[str, torch.Tensor]:
        """(B, 3, h, w) in [0, 255] -> pyramid at (h, w); resized to ``input_size`` first when given."""
        height, width = crop.shape[-2:]
        pixels = crop.float()
        if input_size is not None and (height, width) != (input_size, input_size):
            pixels = F.interpolate(
                pixels, size=(input_size, input_size), mode="bicubic", align_corners=False, antialias=False
            )  # torchvision 0.14's tensor Resize, unclamped
        enc_modules, unet_modules, dec_modules = self._tap_modules()
        scaling = self.vae.config.scaling_factor
        with torch.no_grad(), TapRecorder(enc_modules, stop=False) as enc:
            latent = self.vae.encode((pixels / 255.0 - 0.5) / 0.5).latent_dist.mean * scaling  # (B, 4, h/8, w/8)

        noise = self.noise.to(latent.dtype)
        if noise.shape[-2:] != latent.shape[-2:]:
            noise = F.interpolate(noise, size=latent.shape[-2:], mode="bicubic", align_corners=False)
        signal_scale, noise_scale = q_sample_scales(self.timestep)
        noisy = signal_scale * latent + noise_scale * noise.expand_as(latent)

        cond, time_term = self._conditioning(pixels, text)
        timesteps = torch.full((latent.shape[0],), self.timestep, dtype=torch.long, device=latent.device)
        with TapRecorder(unet_modules, stop=True) as unet, add_to_output(self.unet.time_embedding, time_term):
            self.unet(noisy, timesteps, encoder_hidden_states=cond, return_dict=False)

        with torch.no_grad(), TapRecorder(dec_modules, stop=True) as dec:
            self.vae.decode(latent / scaling, return_dict=False)
        return self.fusion([*enc.values, *unet.values, *dec.values], (height, width))

    def _conditioning(self, pixels: torch.Tensor, text: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, L, D) text conditioning and the optional (B, T) timestep-embedding term."""
        batch = pixels.shape[0]
        if self.caption_mode == "implicit":
            return self.captioner(pixels, self.empty_text)
        if self.caption_mode == "caption":
            return text, None
        return self.empty_text.expand(batch, -1, -1), None


def _check_options(
    caption_mode: str,
    window_size: int | None,
    window_stride: int | None,
) -> None:
    """The constructor's guard (a config file is checked at load time by the config's ``problems``)."""
    if caption_mode not in CAPTION_MODES:
        raise ConfigError(f"model.backbone.caption_mode: '{caption_mode}' is not one of {', '.join(CAPTION_MODES)}")
    for key, message in window_problems(window_size, window_stride):
        raise ConfigError(f"model.backbone.{key}: {message}")
