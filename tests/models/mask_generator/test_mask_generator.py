import torch

from odise_pl.config.schema import MaskGeneratorConfig
from odise_pl.models.backbones.base import LEVELS, ShapeSpec
from odise_pl.models.mask_generator.criterion import SetCriterion
from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator

TINY = MaskGeneratorConfig(
    num_queries=8,
    hidden_dim=32,
    mask_dim=32,
    dec_layers=2,
    nheads=2,
    dim_feedforward=64,
    enc_layers=1,
    enc_feedforward_dim=64,
    embed_dim=16,
    train_num_points=256,
)


def _shape(c):
    return {k: ShapeSpec(c, s) for k, s in zip(LEVELS, (4, 8, 16, 32))}


def test_reference_shapes_match_the_reference_parameter_counts():
    with torch.device("meta"):
        m = Mask2FormerMaskGenerator.from_config(MaskGeneratorConfig(), _shape(512))
    count = {n: sum(p.numel() for p in c.parameters()) for n, c in m.named_children()}
    # ODISE_REFERENCE.md: pixel decoder 5.58M, transformer decoder 14.46M
    assert abs(count["pixel_decoder"] / 1e6 - 5.58) < 0.01
    assert abs(count["transformer"] / 1e6 - 14.46) < 0.01
    assert len(m.transformer.decoder.layers) == 9


def test_outputs_per_layer_and_shapes_for_non_square_input():
    m = Mask2FormerMaskGenerator.from_config(TINY, _shape(24))
    feats = {k: torch.randn(2, 24, 96 // s, 160 // s) for k, s in zip(LEVELS, (4, 8, 16, 32))}
    out = m(feats)
    assert len(out["pred_masks"]) == len(out["mask_embeds"]) == TINY.dec_layers + 1
    assert out["pred_masks"][-1].shape == (2, 8, 24, 40)
    assert out["mask_embeds"][-1].shape == (2, 8, 16)


def test_criterion_weights_losses_and_ignores_crowd():
    m = Mask2FormerMaskGenerator.from_config(TINY, _shape(24))
    crit = SetCriterion(m.config, num_classes=3)
    torch.manual_seed(0)
    feats = {k: torch.randn(1, 24, 64 // s, 64 // s) for k, s in zip(LEVELS, (4, 8, 16, 32))}
    out = m(feats)
    logits = [torch.randn(1, 8, 4) for _ in out["pred_masks"]]
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32] = True
    masks[1, 32:] = True
    t = {"masks": masks, "labels": torch.tensor([0, 2]), "iscrowd": torch.tensor([False, False])}
    losses = crit(out["pred_masks"], logits, [t])
    assert set(losses) >= {"loss_cross_entropy", "loss_mask", "loss_dice", "loss_dice_0"}
    assert len(losses) == 3 * (TINY.dec_layers + 1)
    # marking the second segment crowd removes it from matching: the class loss changes
    crowd = dict(t, iscrowd=torch.tensor([False, True]))
    torch.manual_seed(1)
    l_crowd = crit(out["pred_masks"], logits, [crowd])["loss_cross_entropy"]
    torch.manual_seed(1)
    l_plain = crit(out["pred_masks"], logits, [t])["loss_cross_entropy"]
    assert not torch.isclose(l_crowd, l_plain)


def test_image_without_segments_gives_finite_loss():
    m = Mask2FormerMaskGenerator.from_config(TINY, _shape(24))
    crit = SetCriterion(m.config, num_classes=3)
    feats = {k: torch.randn(1, 24, 64 // s, 64 // s) for k, s in zip(LEVELS, (4, 8, 16, 32))}
    out = m(feats)
    logits = [torch.randn(1, 8, 4) for _ in out["pred_masks"]]
    t = {
        "masks": torch.zeros(0, 64, 64, dtype=torch.bool),
        "labels": torch.zeros(0, dtype=torch.long),
        "iscrowd": torch.zeros(0, dtype=torch.bool),
    }
    losses = crit(out["pred_masks"], logits, [t])
    assert all(torch.isfinite(v) for v in losses.values())
