"""Backbones: one file each; importing this package registers them."""

from odise_pl.models.backbones import clip, diffusion_unet, dino, mae  # noqa: F401
