"""The backbone zoo (issue #4): clip (ConvNeXt / ViT), mae, dino (v2 / v1) under one contract.

Tiny random-weight configs only; real architectures are built on the meta device.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import STRIDES
from odise_pl.models.builder import section_to_dataclass
from odise_pl.models.frozen import strip_pretrained_frozen
from odise_pl.models.optim import param_groups
from odise_pl.registry import BACKBONES

REPO = Path(__file__).resolve().parents[3]

#: tiny sections: (yaml section, patch size of the frozen model)
TINY = {
    "clip_convnext": ({"name": "clip", "out_channels": 16}, None),
    "clip_vit": ({"name": "clip", "model_name": "odise-tiny-vit", "out_channels": 16}, 8),
    "mae": ({"name": "mae", "pretrained": None, "out_channels": 16}, 16),
    "dinov2": ({"name": "dino", "pretrained": None, "out_channels": 16}, 14),
    "dino_v1": ({"name": "dino", "pretrained": None, "tiny_version": "v1", "out_channels": 16}, 16),
}


def build(section: dict, clip):
    entry = BACKBONES.get(section["name"])
    return entry.cls.from_config(section_to_dataclass(section, entry.config), clip=clip)


@pytest.mark.parametrize("kind", list(TINY))
@pytest.mark.parametrize("size", [(96, 160), (72, 120)])  # not multiples of 14; the second not of 16/32
def test_pyramid_strides_and_channels_on_non_square_inputs(kind, size, tiny_clip):
    section, patch = TINY[kind]
    backbone = build(section, tiny_clip)
    if patch is not None:  # the frozen ViT's patch (the input is resized to a multiple of it)
        assert getattr(backbone, "patch_size", getattr(backbone, "patch", None)) == patch
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {k: (16, v) for k, v in STRIDES.items()}
    h, w = size
    feats = backbone(torch.rand(2, 3, h, w) * 255)
    for level, spec in shapes.items():
        assert feats[level].shape == (2, spec.channels, h // spec.stride, w // spec.stride), level
        assert torch.isfinite(feats[level]).all()
    feats["s2"].mean().backward()  # gradients reach the adapter only
    assert any(p.grad is not None for p in backbone.adapter.parameters())


@pytest.mark.parametrize("kind", ["mae", "dinov2", "dino_v1"])
def test_frozen_vit_stays_in_eval_out_of_optimizer_and_checkpoint(kind):
    from odise_pl.models.backbones.dino import DinoBackbone, load_dino
    from odise_pl.models.backbones.mae import MaeBackbone, load_vit_mae

    if kind == "mae":
        backbone = MaeBackbone(model=load_vit_mae(None)[0], pretrained=True, out_channels=16)
    else:
        model, _ = load_dino(None, "v2" if kind == "dinov2" else "v1")
        backbone = DinoBackbone(model=model, pretrained=True, out_channels=16)
    backbone.train()
    assert backbone.adapter.training and not backbone.vit.training
    assert not any(m.training for m in backbone.vit.modules())
    assert not any(p.requires_grad for p in backbone.vit.parameters())
    in_optimizer = {id(p) for g in param_groups(backbone, 0.05) for p in g["params"]}
    assert in_optimizer == {id(p) for p in backbone.adapter.parameters()}
    kept = strip_pretrained_frozen(backbone.state_dict(), backbone)
    assert kept and all(k.startswith("adapter.") for k in kept)


@pytest.mark.parametrize("kind", ["mae", "dinov2", "dino_v1"])
def test_tokens_come_back_in_raster_order(kind):
    """With no transformer layer a token sees only its own patch: changing patch (i, j) changes token (i, j)."""
    from transformers import ViTMAEModel

    from odise_pl.models.backbones import dino, mae

    if kind == "mae":
        config = mae.vit_mae_config(32, 0, 2, 64, 16, image_size=64)
        backbone = mae.MaeBackbone(model=ViTMAEModel(config), pretrained=False)
    else:
        version = "v2" if kind == "dinov2" else "v1"
        config = dino.dino_config(version, 32, 0, 2, 14 if version == "v2" else 16, 56, False)
        backbone = dino.DinoBackbone(model=dino.model_from_config(config), pretrained=False)
    p = backbone.patch_size
    gh, gw = 3, 5
    pixels = torch.randn(1, 3, gh * p, gw * p)
    base = backbone.patch_tokens(pixels)
    assert base.shape == (1, 32, gh, gw)
    changed = pixels.clone()
    changed[:, :, 1 * p : 2 * p, 3 * p : 4 * p] += 1.0  # patch (1, 3)
    diff = (backbone.patch_tokens(changed) - base).abs().sum(1)[0]
    assert diff[1, 3] > 1e-3
    diff[1, 3] = 0
    assert diff.max() < 1e-5, diff


@pytest.mark.parametrize("kind", ["mae", "dinov2", "dino_v1"])
def test_loads_by_local_path_through_transformers(kind, tmp_path):
    from odise_pl.models.backbones.dino import load_dino
    from odise_pl.models.backbones.mae import load_vit_mae

    name = "mae" if kind == "mae" else "dino"
    model = load_vit_mae(None)[0] if name == "mae" else load_dino(None, "v2" if kind == "dinov2" else "v1")[0]
    model.save_pretrained(tmp_path / "weights")
    backbone = build({"name": name, "pretrained": str(tmp_path / "weights"), "out_channels": 16}, None)
    for key, value in model.state_dict().items():
        assert torch.equal(backbone.vit.state_dict()[key], value), key
    kept = strip_pretrained_frozen(backbone.state_dict(), backbone)
    assert not any(k.startswith("vit.") for k in kept)  # pretrained: re-loaded from its source


def test_clip_backbone_loads_its_own_open_clip_checkpoint(tmp_path, tiny_clip, tiny_vit_clip):
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(tiny_vit_clip.model.state_dict(), path)
    backbone = build({"name": "clip", "model_name": "odise-tiny-vit", "pretrained": str(path)}, tiny_clip)
    assert backbone.clip is not tiny_clip and backbone.clip.is_vit
    visual = tiny_vit_clip.model.visual.state_dict()
    assert all(torch.equal(v, visual[k]) for k, v in backbone.clip.model.visual.state_dict().items())


@pytest.mark.parametrize(
    "section, match",
    [
        ({"name": "mae", "pretrained": "/no/such/dir"}, "cannot load a ViTMAE model"),
        ({"name": "dino", "pretrained": "/no/such/dir"}, "cannot load a DINO model"),
        ({"name": "dino", "pretrained": None, "tiny_version": "v3"}, "tiny_version"),
        ({"name": "clip", "model_name": "odise-tiny-vit", "pretrained": "/no/such/file.bin"}, "model.backbone"),
    ],
)
def test_bad_weights_are_config_errors_that_say_what_to_give(section, match, tiny_clip):
    with pytest.raises(ConfigError, match=match):
        build(section, tiny_clip)


@pytest.mark.parametrize(
    "section, part, published",
    [
        ({"name": "mae", "pretrained": "facebook/vit-mae-large"}, "backbone.vit", 303.3e6),  # ViT-L/16 encoder
        ({"name": "dino", "pretrained": "facebook/dinov2-large"}, "backbone.vit", 304.4e6),  # DINOv2 ViT-L/14
        ({"name": "dino", "pretrained": "facebook/dino-vitb16"}, "backbone.vit", 85.8e6),  # DINO ViT-B/16
    ],
)
def test_summary_reports_real_sizes_on_the_meta_device(section, part, published):
    from odise_pl.commands.summary import summarize
    from odise_pl.config import load_config

    flow = "{" + ", ".join(f"{k}: {v}" for k, v in section.items()) + "}"
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", [f"model.backbone={flow}"])
    rows, text = summarize(cfg)
    row = {r.part: r for r in rows}[part]
    assert row.trainable == 0 and abs(row.frozen - published) / published < 0.005, text
    assert {r.part for r in rows} >= {"backbone.adapter", "mask_generator"}


def test_clip_vit_l14_visual_size_on_the_meta_device(tiny_clip):
    from odise_pl.models.backbones.clip import ClipBackbone, ClipBackboneConfig

    with torch.device("meta"):
        backbone = ClipBackbone.build_on_meta(ClipBackboneConfig(model_name="ViT-L-14", pretrained="openai"), clip=tiny_clip)
    visual = sum(p.numel() for p in backbone.clip.model.visual.parameters())
    assert abs(visual - 304.0e6) / 304.0e6 < 0.005, visual
    assert backbone.patch == 14 and backbone.clip.model.visual.conv1.out_channels == 1024


def test_summary_command_prints_the_backbone(capsys):
    from odise_pl.cli import main

    assert (
        main(
            [
                "summary",
                "-c",
                str(REPO / "experiments" / "quickstart.yaml"),
                "model.backbone={name: dino, pretrained: facebook/dinov2-large}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "backbone.vit" in out and "304,3" in out


def test_a_new_backbone_is_one_class_one_registry_line_one_yaml(tmp_path):
    """docs/backbones.md's recipe: a ViTBackbone subclass + registration, named by an experiment's YAML."""
    from dataclasses import dataclass

    from transformers import ViTConfig, ViTModel

    from odise_pl.config import load_config
    from odise_pl.models.backbones.vit import ViTBackbone
    from odise_pl.models.frozen import freeze

    @dataclass
    class PlainVitConfig:
        layers: int = 1
        out_channels: int = 8

    @BACKBONES.register("test_plain_vit", config=PlainVitConfig)
    class PlainVit(ViTBackbone):
        def __init__(self, *, model, pretrained: bool, out_channels: int = 8):
            super().__init__(
                width=model.config.hidden_size,
                patch_size=model.config.patch_size,
                pixel_mean=(0.5, 0.5, 0.5),
                pixel_std=(0.5, 0.5, 0.5),
                out_channels=out_channels,
            )
            self.vit = freeze(model, pretrained=pretrained)

        @classmethod
        def from_config(cls, cfg, **_):
            config = ViTConfig(
                hidden_size=16, num_hidden_layers=cfg.layers, num_attention_heads=2, intermediate_size=32, patch_size=10, image_size=40
            )
            return cls(model=ViTModel(config, add_pooling_layer=False), pretrained=False, out_channels=cfg.out_channels)

        def patch_tokens(self, pixels):
            b, _, h, w = pixels.shape
            tokens = self.vit(pixels, interpolate_pos_encoding=True).last_hidden_state[:, 1:]
            return tokens.transpose(1, 2).reshape(b, -1, h // 10, w // 10)

    experiment = tmp_path / "plain_vit.yaml"
    experiment.write_text(f"_base_: {REPO / 'experiments' / 'quickstart.yaml'}\nmodel:\n  backbone: {{name: test_plain_vit, layers: 2}}\n")
    cfg = load_config(experiment)
    backbone = build(dict(cfg.model.backbone), None)
    assert backbone.vit.config.num_hidden_layers == 2
    feats = backbone(torch.rand(1, 3, 64, 96) * 255)
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "s2": (1, 8, 16, 24),
        "s3": (1, 8, 8, 12),
        "s4": (1, 8, 4, 6),
        "s5": (1, 8, 2, 3),
    }
    with pytest.raises(ConfigError, match="layerz"):
        load_config(experiment, ["model.backbone.layerz=3"])
