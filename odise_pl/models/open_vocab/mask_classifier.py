"""Classify masks with CLIP itself: one CLIP image embedding per predicted mask.

ViT CLIPs ("MaskCLIP"-style attention pooling, as the reference): the whole
image is resized to the CLIP input size (336 for ViT-L/14-336); the mask logits
are resized to the same size, thresholded (sigmoid > 0.5) and max-pooled to the
patch grid (a patch belongs to a mask if any of its pixels does). One query
token per mask, initialised from the CLS token, runs through the last
``mask_blocks`` residual blocks beside the image tokens: in each, its query
attends (with the block's own attention weights) to the CLS token and to the
patch tokens inside its mask only; the image tokens never see the mask tokens,
so they evolve exactly as in a plain forward pass. Then the block's MLP and
residuals, ``ln_post`` and ``proj`` -> one embedding per mask. With a mask
covering the whole image this is exactly the CLS path, i.e. ``encode_image``.
``mask_blocks=None`` (all blocks) is the reference (ODISE ``MaskCLIP``);
``mask_blocks=1`` pools in the last block only.

ConvNeXt CLIPs (open_clip's timm towers): average pooling of the dense feature
map (the trunk's ``forward_features``, before the head's pooling) weighted by
the fraction of each feature cell the mask covers, then the trunk's head (norm)
and the CLIP projection.

Empty masks never produce NaNs: the ViT query then attends to CLS only, the
ConvNeXt path falls back to the global (whole-image) embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odise_pl.models.supervision.base import TextEmbeddings, max_over_synonyms

_MAX_LOGIT_SCALE = 100.0
#: how masks and image are aligned when the batch is padded (``model.inference.clip_mask_alignment``):
#: "reference" - the image cropped to its valid area but the masks of the whole padded grid, each
#: resized to the CLIP input on its own (the reference's slight misalignment); "cropped" - both cropped.
ALIGNMENTS = ("reference", "cropped")


def binarize_masks(masks: torch.Tensor, size: tuple[int, int], threshold: float = 0.0) -> torch.Tensor:
    """(B,Q,h,w) mask logits (or bool masks) -> (B,Q,*size) bool, resized bilinearly then ``> threshold``.

    ``threshold`` is on the logits: 0.0 is sigmoid > 0.5.
    """
    if masks.dtype == torch.bool:
        masks, threshold = masks.float() * 2 - 1, 0.0
    masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
    return masks > threshold


def clip_logits(mask_embeds: torch.Tensor, text: TextEmbeddings, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """(B,Q,E) mask embeddings x text bank -> (B,Q,K): scale * cosine, maximum over each class's names."""
    if mask_embeds.shape[-1] != text.embeds.shape[-1]:
        raise ValueError(
            f"mask embeddings have width {mask_embeds.shape[-1]} but the text embeddings "
            f"{text.embeds.shape[-1]}: build the text bank with the same CLIP as the "
            f"mask classifier."
        )
    cos = F.normalize(mask_embeds.float(), dim=-1) @ F.normalize(text.embeds.float(), dim=-1).t()  # (B,Q,N)
    return max_over_synonyms(cos * logit_scale, text.class_index, text.num_classes)


class ClipMaskClassifier(nn.Module):
    """Per-mask CLIP image embeddings and open-vocabulary logits.

    Args:
        clip: the shared frozen CLIP (:func:`odise_pl.models.clip_model.load_clip`).
        image_size: side of the square image CLIP sees (default: the CLIP's own,
            e.g. 336). For a ViT the positional embedding is interpolated if the
            patch grid differs from the pretrained one.
        mask_threshold: threshold on the mask logits (0.0 = sigmoid 0.5).
        mask_blocks: ViT only; the number of final residual blocks the mask tokens
            run through (None = all, as the reference).
    """

    def __init__(
        self,
        clip,
        *,
        image_size: int | None = None,
        mask_threshold: float = 0.0,
        mask_blocks: int | None = None,
        alignment: str = "reference",
    ) -> None:
        super().__init__()
        if alignment not in ALIGNMENTS:
            raise ValueError(f"model.inference.clip_mask_alignment: {alignment!r} is not one of {', '.join(ALIGNMENTS)}")
        self.alignment = alignment
        self.clip = clip
        self.image_size = int(image_size or clip.image_size)
        self.mask_threshold = float(mask_threshold)
        visual = clip.model.visual
        self.is_vit = hasattr(visual, "transformer") and hasattr(visual, "class_embedding")
        if self.is_vit:
            _check_vit(visual)
            num_blocks = len(visual.transformer.resblocks)
            self.mask_blocks = num_blocks if mask_blocks is None else int(mask_blocks)
            if not 1 <= self.mask_blocks <= num_blocks:
                raise ValueError(
                    f"mask_blocks must be in 1..{num_blocks} (the visual transformer's depth) or None for all, got {mask_blocks}"
                )
        elif hasattr(visual, "trunk") and hasattr(visual.trunk, "forward_features"):
            if "pool" in dict(visual.head.named_children()):
                raise NotImplementedError(
                    "mask pooling needs a CLIP whose timm tower pools with the "
                    "trunk's own head (e.g. convnext_*); this one uses attention "
                    "pooling."
                )
            self.mask_blocks = None
        else:
            raise NotImplementedError(
                f"the CLIP mask classifier supports open_clip VisionTransformer and timm ConvNeXt towers, not {type(visual).__name__}."
            )

    def train(self, mode: bool = True) -> ClipMaskClassifier:
        super().train(mode)
        self.clip.train(False)  # frozen
        return self

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's own temperature, exp(logit_scale) clamped to <= 100 (as the reference)."""
        return self.clip.model.logit_scale.exp().clamp(max=_MAX_LOGIT_SCALE)

    def logits(self, mask_embeds: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """(B,Q,E) -> (B,Q,K) class logits (see :func:`clip_logits`)."""
        return clip_logits(mask_embeds, text, self.logit_scale)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, masks: torch.Tensor, image_sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Embed each mask of each image.

        Args:
            images: (B,3,H,W) RGB pixels in [0,255] (uint8 or float), possibly padded.
            masks: (B,Q,h,w) mask logits (any resolution covering the same area as
                ``images``, e.g. H/4) or bool masks.
            image_sizes: optional (B,2) valid (h, w) of each image before padding; the padding
                is cropped off the images (and, with ``alignment="cropped"``, off the masks).

        Returns:
            (B,Q,E) mask embeddings in CLIP's joint space (not normalised).
        """
        if images.dim() != 4 or masks.dim() != 4 or images.shape[0] != masks.shape[0]:
            raise ValueError(f"expected images (B,3,H,W) and masks (B,Q,h,w), got {tuple(images.shape)} and {tuple(masks.shape)}")
        if image_sizes is None:
            return self._embed(images, masks)
        H, W = images.shape[-2:]
        out = []
        for b, (h, w) in enumerate(image_sizes.tolist()):
            mh, mw = -(-h * masks.shape[-2] // H), -(-w * masks.shape[-1] // W)  # ceil
            mask = masks[b : b + 1, :, :mh, :mw] if self.alignment == "cropped" else masks[b : b + 1]
            out.append(self._embed(images[b : b + 1, :, :h, :w], mask))
        return torch.cat(out)

    def _embed(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        x = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False)
        x = self.clip.normalize(x).to(self.clip.mean.dtype)  # (B,3,S,S)
        if self.is_vit:
            return self._vit_embed(x, masks.to(x.device))
        binary = binarize_masks(masks.to(x.device), size, self.mask_threshold)  # (B,Q,S,S)
        return self._convnext_embed(x, binary)

    # ------------------------------------------------------------------ ViT
    def _vit_embed(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        visual = self.clip.model.visual
        B, Q = masks.shape[:2]
        tokens = visual.conv1(x.to(visual.conv1.weight.dtype))  # (B,W,gh,gw)
        grid = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # (B,P,W)
        cls = visual.class_embedding.to(tokens.dtype).view(1, 1, -1).expand(B, 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + _positional_embedding(visual, grid).to(tokens.dtype)
        tokens = visual.ln_pre(tokens)  # (B,1+P,W)

        # keys a mask token may attend to: CLS always, patches inside its mask (as the reference: masks
        # resized bilinearly to the CLIP input, sigmoid, max-pooled per patch, kept where >= threshold)
        patch_mask = vit_patch_mask(masks, x.shape[-2:], grid, self.mask_threshold)  # (B,Q,P)
        allowed = torch.cat([patch_mask.new_ones(B, Q, 1), patch_mask], dim=-1)  # (B,Q,1+P)
        bias = torch.zeros(allowed.shape, dtype=tokens.dtype, device=tokens.device)
        bias.masked_fill_(~allowed, float("-inf"))

        blocks = visual.transformer.resblocks
        first = len(blocks) - self.mask_blocks
        for blk in blocks[:first]:
            tokens = _run_block(visual.transformer, blk, tokens)
        queries = tokens[:, :1].expand(B, Q, -1)  # (B,Q,W), CLS as it enters block `first`
        for blk in blocks[first:]:
            queries = _masked_query_block(blk, queries, tokens, bias)
            if blk is not blocks[-1]:
                tokens = _run_block(visual.transformer, blk, tokens)
        queries = visual.ln_post(queries)
        return queries @ visual.proj if visual.proj is not None else queries  # (B,Q,E)

    # ------------------------------------------------------------------ ConvNeXt
    def _convnext_embed(self, x: torch.Tensor, binary: torch.Tensor) -> torch.Tensor:
        visual = self.clip.model.visual
        feats = visual.trunk.forward_features(x)  # (B,C,h,w)
        if feats.dim() != 4:
            raise NotImplementedError("mask pooling needs a convolutional trunk with (B,C,h,w) features")
        B, Q = binary.shape[:2]
        # (B,Q,h,w): the fraction of each feature cell the mask covers
        weights = F.adaptive_avg_pool2d(binary.float(), feats.shape[-2:]).to(feats.dtype)
        area = weights.sum(dim=(-2, -1))  # (B,Q)
        pooled = torch.einsum("bqhw,bchw->bqc", weights, feats) / area.clamp(min=1e-6).unsqueeze(-1)
        global_feat = feats.mean(dim=(-2, -1)).unsqueeze(1).expand(B, Q, -1)  # (B,Q,C)
        pooled = torch.where((area > 0).unsqueeze(-1), pooled, global_feat)
        emb = visual.trunk.forward_head(pooled.reshape(B * Q, -1, 1, 1))  # head on a 1x1 "map": norm etc.
        return visual.head(emb).view(B, Q, -1)  # (B,Q,E)


def vit_patch_mask(masks: torch.Tensor, size: tuple[int, int], grid: tuple[int, int], threshold: float = 0.0) -> torch.Tensor:
    """(B,Q,h,w) mask logits (or bool masks) -> (B,Q,gh*gw) bool: the patches a mask token may see.

    The reference's rule: resize to ``size`` (bilinear), sigmoid, max over each patch, ``>= sigmoid(threshold)``.
    """
    if masks.dtype == torch.bool:
        masks = masks.float() * 2 - 1
    prob = F.interpolate(masks.float(), size=tuple(size), mode="bilinear", align_corners=False).sigmoid()
    patch = (size[0] // grid[0], size[1] // grid[1])
    pooled = (
        F.max_pool2d(prob, kernel_size=patch, stride=patch)
        if size[0] % grid[0] == 0 and size[1] % grid[1] == 0
        else F.adaptive_max_pool2d(prob, grid)
    )
    cut = torch.sigmoid(torch.tensor(float(threshold))).item()
    return (pooled >= cut).flatten(2)


def _check_vit(visual: nn.Module) -> None:
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
        raise NotImplementedError(
            "the ViT mask classifier needs CLS-token pooling (pool_type 'tok', no attention pooler), as in the OpenAI / LAION CLIPs."
        )
    for blk in visual.transformer.resblocks:
        if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
            raise NotImplementedError(
                f"unsupported transformer block {type(blk).__name__}: the ViT mask classifier needs open_clip's ResidualAttentionBlock."
            )


def _positional_embedding(visual: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """(1+gh*gw, W) positional embedding, bicubically interpolated if ``grid`` is not the trained one."""
    pos = visual.positional_embedding
    trained = tuple(visual.grid_size)
    if tuple(grid) == trained:
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    patch_pos = patch_pos.reshape(1, *trained, -1).permute(0, 3, 1, 2)  # (1,W,th,tw)
    patch_pos = F.interpolate(patch_pos.float(), size=tuple(grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.to(pos.dtype).flatten(2).squeeze(0).t()], dim=0)


def _run_block(transformer: nn.Module, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual block on batch-first tokens, whatever layout the transformer uses."""
    if getattr(transformer, "batch_first", True):
        return blk(x)
    return blk(x.transpose(0, 1)).transpose(0, 1)


def _masked_query_block(blk: nn.Module, queries: torch.Tensor, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One residual block for the mask tokens: attention from ``queries`` to ``tokens`` only.

    Args:
        blk: an open_clip ``ResidualAttentionBlock``.
        queries: (B,Q,W) mask tokens.
        tokens: (B,1+P,W) image tokens entering the block (keys and values).
        bias: (B,Q,1+P) additive attention mask (0 allowed, -inf not).
    """
    attn: nn.MultiheadAttention = blk.attn
    q, kv = blk.ln_1(queries), blk.ln_1(tokens)
    mask = bias.repeat_interleave(attn.num_heads, dim=0)  # (B*heads,Q,1+P)
    if not attn.batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    out = attn(q, kv, kv, need_weights=False, attn_mask=mask)[0]
    if not attn.batch_first:
        out = out.transpose(0, 1)
    x = queries + blk.ls_1(out)
    return x + blk.ls_2(blk.mlp(blk.ln_2(x)))
