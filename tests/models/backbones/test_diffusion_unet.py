"""The diffusion_unet backbone on tiny random Stable Diffusion parts (and real shapes on the meta device)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from odise_pl.errors import ConfigError
from odise_pl.models.backbones.base import ShapeSpec
from odise_pl.models.backbones.diffusion_unet import (
    DECODER_TAPS,
    ENCODER_TAPS,
    UNET_TAPS,
    DiffusionBackboneConfig,
    DiffusionUNetBackbone,
    build_tiny_stable_diffusion,
    load_stable_diffusion,
    tiny_text_config,
    tiny_unet_config,
)
from odise_pl.models.backbones.pyramid import StrideFusion, sliding_window_forward, window_boxes
from odise_pl.models.clip_model import ClipSpec, load_clip
from odise_pl.models.frozen import pretrained_frozen_prefixes
from odise_pl.models.param_summary import count_parameters, format_summary


@pytest.fixture(scope="module")
def clip():
    return load_clip(ClipSpec("odise-tiny-vit", None))


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    return build_tiny_stable_diffusion()


def make(parts, clip, **options) -> DiffusionUNetBackbone:
    torch.manual_seed(1)
    opts = dict(window_size=None, projection_dim=32, bottleneck_width=8) | options
    return DiffusionUNetBackbone(
        vae=parts.vae,
        unet=parts.unet,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        clip=clip,
        pretrained=parts.pretrained,
        **opts,
    )


def images(height: int = 128, width: int = 192, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 255


def test_pyramid_shapes_whole_image_and_sliding_windows(parts, clip):
    backbone = make(parts, clip)
    shapes = backbone.output_shape()
    assert {k: s.stride for k, s in shapes.items()} == {"s2": 4, "s3": 8, "s4": 16, "s5": 32}
    seen = []
    backbone.fusion.register_forward_pre_hook(lambda _m, args: seen.append([t.shape for t in args[0]]))
    x = images(192, 256)
    whole = backbone(x)
    for spec, shape in zip(backbone.tap_specs(), seen[0]):  # taps are where tap_specs says
        assert shape[1:] == (spec.channels, 192 // spec.stride, 256 // spec.stride)
    backbone.window_size = backbone.window_stride = 128  # 4 windows of 128x128, overlapping rows
    windowed = backbone(x)
    assert len(seen) == 1 + 4
    backbone.eval()
    # a window larger than the short side: 2 windows of 192x192, each upsampled to 256x256 (the reference's
    # slide inference = its training), in eval as in training
    backbone.window_size = backbone.window_stride = 256
    with torch.no_grad():
        short_side = backbone(x)
    assert len(seen) == 1 + 4 + 2
    first_tap, first_spec = seen[-1][0], backbone.tap_specs()[0]
    assert first_tap[-2:] == (256 // first_spec.stride, 256 // first_spec.stride)  # taps of the resized window
    for name, spec in shapes.items():
        expected = (1, 32, 192 // spec.stride, 256 // spec.stride)
        assert whole[name].shape == windowed[name].shape == short_side[name].shape == expected
        assert torch.isfinite(windowed[name]).all()


def test_window_boxes_and_overlap_average():
    assert window_boxes(192, 256, 128, 128) == [(0, 128, 0, 128), (0, 128, 128, 256), (64, 192, 0, 128), (64, 192, 128, 256)]
    assert len(window_boxes(1024, 1024, 512, 512)) == 4
    x = torch.randn(2, 3, 192, 256)
    out = sliding_window_forward(lambda crop: {"s2": F.avg_pool2d(crop, 4)}, x, window=128, stride=128, shapes={"s2": ShapeSpec(3, 4)})
    torch.testing.assert_close(out["s2"], F.avg_pool2d(x, 4))


def test_activation_checkpointing_matches_plain_fusion():
    torch.manual_seed(0)
    fusion = StrideFusion(tap_channels=[8, 16, 24], tap_strides=[4, 64, 8], out_channels=16, bottleneck_channels=8)
    taps = [torch.randn(2, 8, 16, 16, requires_grad=True), torch.randn(2, 16, 1, 1), torch.randn(2, 24, 8, 8)]
    plain = fusion(taps, (64, 64))
    grads = torch.autograd.grad(sum(v.sum() for v in plain.values()), [taps[0], *fusion.parameters()])
    fusion.activation_checkpointing = True
    checked = fusion(taps, (64, 64))
    assert {k: v.shape[1:] for k, v in checked.items()} == {"s2": (16, 16, 16), "s3": (16, 8, 8), "s5": (16, 2, 2)}
    again = torch.autograd.grad(sum(v.sum() for v in checked.values()), [taps[0], *fusion.parameters()])
    for a, b in zip(grads, again):
        torch.testing.assert_close(a, b)


def test_timestep_changes_unet_levels_only(parts, clip):
    backbone = make(parts, clip)
    x = images()
    with torch.no_grad():
        at_0 = backbone(x)
        backbone.timestep = 500
        at_500 = backbone(x)
    assert torch.equal(at_0["s2"], at_500["s2"])  # enc5 + dec5: VAE only, no noise
    assert not torch.allclose(at_0["s5"], at_500["s5"])  # UNet taps


def test_caption_modes(parts, clip):
    backbone = make(parts, clip)
    x = images(batch=2)
    with torch.no_grad():
        implicit = backbone(x)
        backbone.caption_mode = "empty"
        empty = backbone(x)
        backbone.caption_mode = "caption"
        caption = backbone(x, ["a photo of a cat", "two dogs on a sofa"])
        with pytest.raises(ValueError, match="one caption per image"):
            backbone(x)
        backbone.caption_mode = "implicit"
        backbone.captioner.alpha_cond.fill_(0.5)
        backbone.captioner.alpha_cond_time_embed.fill_(0.5)
        gated = backbone(x)
    for name in implicit:  # zero gates: exactly the empty caption
        assert torch.equal(implicit[name], empty[name])
    assert not torch.allclose(caption["s5"], empty["s5"])
    assert not torch.allclose(gated["s5"], empty["s5"])
    assert torch.equal(caption["s2"], empty["s2"])  # VAE levels ignore the text


def test_training_step_updates_adapters_only(parts, clip):
    backbone = make(parts, clip).train()
    assert not backbone.unet.training and not backbone.vae.training and backbone.captioner.training
    frozen = {n: p.detach().clone() for n, p in backbone.named_parameters() if not p.requires_grad}
    trainable = {n: p for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("captioner.", "fusion.")) for n in trainable)
    assert {n for n in frozen if n.startswith("clip.")}, "the shared CLIP is registered once, frozen"
    before = {n: p.detach().clone() for n, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.0)
    for step in range(2):
        loss = sum(f.square().mean() for f in backbone(images()).values())
        loss.backward()
        if step == 0:  # the gate's gradient comes back through the frozen UNet
            assert backbone.captioner.alpha_cond.grad.abs().sum() > 0
            assert backbone.captioner.alpha_cond_time_embed.grad.abs().sum() > 0
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in trainable.items())
    for name, p in backbone.named_parameters():
        if not p.requires_grad:
            assert p.grad is None and torch.equal(frozen[name], p), name


def test_save_pretrained_round_trip_v2_like(tmp_path, clip):
    """A local diffusers directory with SD-2-like text width (48 != 32) and linear projections loads back."""
    torch.manual_seed(0)
    unet_config = tiny_unet_config(48) | dict(use_linear_projection=True, attention_head_dim=(2, 4, 4, 4))
    saved = build_tiny_stable_diffusion(unet_config=unet_config, text_config=tiny_text_config(48))
    for sub in ("vae", "unet", "text_encoder", "tokenizer"):
        getattr(saved, sub).save_pretrained(tmp_path / sub)
    cfg = DiffusionBackboneConfig(pretrained=str(tmp_path), window_size=None, projection_dim=32, bottleneck_width=8)
    backbone = DiffusionUNetBackbone.from_config(cfg, clip=clip)
    for sub in ("vae", "unet", "text_encoder"):
        mine, theirs = getattr(backbone, sub).state_dict(), getattr(saved, sub).state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert backbone.captioner.alpha_cond.shape == (1, 77, 48)
    assert set(pretrained_frozen_prefixes(backbone)) >= {"vae.", "unet.", "text_encoder."}
    with torch.no_grad():
        out = backbone(images(64, 128))
    assert out["s5"].shape == (1, 32, 2, 4)


def test_wrong_path_names_path_and_layout(tmp_path, clip):
    missing = tmp_path / "no_such_model"
    with pytest.raises(FileNotFoundError) as err:
        DiffusionUNetBackbone.from_config(DiffusionBackboneConfig(pretrained=str(missing)), clip=clip)
    assert str(missing) in str(err.value) and "unet/" in str(err.value) and "text_encoder/" in str(err.value)
    (tmp_path / "partial" / "vae").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="lacks unet/, text_encoder/, tokenizer/"):
        load_stable_diffusion(str(tmp_path / "partial"))


def test_config_errors_name_the_key(clip):
    with pytest.raises(ConfigError, match="caption_mode"):
        DiffusionUNetBackbone.from_config(DiffusionBackboneConfig(tiny=True, caption_mode="blip"), clip=clip)
    with pytest.raises(ConfigError, match="window_size"):
        DiffusionUNetBackbone.from_config(DiffusionBackboneConfig(tiny=True, window_size=100), clip=clip)


def test_tiny_shapes_from_yaml_keys(clip):
    """model.backbone.tiny_unet / tiny_vae reshape the random model (any depth per level); bad keys are named."""
    cfg = DiffusionBackboneConfig(
        pretrained=None,
        window_size=None,
        projection_dim=16,
        bottleneck_width=8,
        tiny_unet={"block_out_channels": [16, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 1},
        tiny_vae={"block_out_channels": [8, 16, 16, 16], "layers_per_block": 1},
    )
    backbone = DiffusionUNetBackbone.from_config(cfg, clip=clip)
    assert backbone.unet.config.block_out_channels == (16, 32, 32, 32)
    assert len(backbone.unet.up_blocks[0].resnets) == 2 and len(backbone.vae.encoder.down_blocks[0].resnets) == 1
    specs = [(s.channels, s.stride) for s in backbone.tap_specs()]
    assert specs == [(16, 4), (16, 8), (64, 64), (64, 32), (48, 16), (32, 8), (16, 8), (16, 4)]
    seen = []
    backbone.fusion.register_forward_pre_hook(lambda _m, args: seen.append([t.shape for t in args[0]]))
    out = backbone(images(128, 128))
    assert [tuple(t[1:]) for t in seen[0]] == [(c, 128 // s, 128 // s) for c, s in specs]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "s2": (1, 16, 32, 32),
        "s3": (1, 16, 16, 16),
        "s4": (1, 16, 8, 8),
        "s5": (1, 16, 4, 4),
    }
    with pytest.raises(ConfigError, match=r"model.backbone.tiny_unet: unknown key\(s\) block_channels"):
        DiffusionUNetBackbone.from_config(DiffusionBackboneConfig(pretrained=None, tiny_unet={"block_channels": 8}), clip=clip)
    with pytest.raises(ConfigError, match="model.backbone.tiny_vae: diffusers' AutoencoderKL rejects"):
        DiffusionUNetBackbone.from_config(
            DiffusionBackboneConfig(pretrained=None, tiny_vae={"block_out_channels": [8, 16], "down_block_types": ["DownEncoderBlock2D"]}),
            clip=clip,
        )
    with pytest.raises(ConfigError, match="tiny_unet: shapes the random tiny model only"):
        DiffusionUNetBackbone.from_config(DiffusionBackboneConfig(pretrained="some/model", tiny_unet={"layers_per_block": 1}), clip=clip)


def test_parameter_counts_at_real_shapes_on_meta():
    """SD v1.5 + CLIP ViT-L/14-336 at real shapes: the reference's 5.87M + 1.70M trainable, ~1.49B frozen."""
    import open_clip

    from odise_pl.models.backbones.clip_tokenizer import clip_bpe_tokenizer
    from odise_pl.models.clip_model import SharedClip
    from odise_pl.models.param_summary import sd15_parts_on_meta

    clip_model = open_clip.create_model("ViT-L-14-336", pretrained=None, device="meta")
    shared = SharedClip(clip_model, None, ClipSpec("ViT-L-14-336", None), pretrained=True)
    with torch.device("meta"):
        backbone = DiffusionUNetBackbone(**sd15_parts_on_meta(), tokenizer=clip_bpe_tokenizer(), clip=shared, pretrained=True)
    assert [(s.channels, s.stride) for s in backbone.tap_specs()] == [
        (512, 4),
        (512, 8),
        (2560, 64),
        (1920, 32),
        (960, 16),
        (640, 8),
        (512, 8),
        (512, 4),
    ]
    flat = [
        [r for block in blocks for r in block.resnets]  # the reference's flat resnet indices
        for blocks in (backbone.vae.encoder.down_blocks, backbone.unet.up_blocks, backbone.vae.decoder.up_blocks)
    ]
    taps = backbone._tap_modules()
    for modules, indices, tapped in zip(flat, (ENCODER_TAPS, UNET_TAPS, DECODER_TAPS), taps):
        assert [modules[i] for i in indices] == tapped
    rows = {r.part: r for r in count_parameters(backbone)}
    print(format_summary(list(rows.values())))
    assert rows["fusion"].trainable == 5_873_664 and rows["fusion"].frozen == 0  # reference: 5.87M
    assert rows["captioner"].trainable == 1_695_744 and rows["captioner"].frozen == 0  # reference: 1.70M
    assert {k: rows[k].frozen for k in ("unet", "vae", "text_encoder", "clip")} == {
        "unet": 859_520_964,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "clip": 427_944_193,
    }
    frozen = sum(r.frozen for r in rows.values())
    assert abs(frozen - 1_493.8e6) / 1_493.8e6 < 0.005  # paper: 1,493.8M
