"""``odise-pl convert-reference --fcclip-ckpt``: FC-CLIP's released ``fcclip_cocopan.pth`` -> a run directory.

The released file (bytedance/fc-clip, README; FCCLIP_REFERENCE.md 1.10) is a detectron2 checkpoint whose
model dict holds the trained weights only: 303 keys at the real size (the list is in
``../shared/fcclip_fixture/fcclip_released_checkpoint_keys_real.txt``), **no** ``backbone.clip_model.*``
key: the frozen CLIP ConvNeXt-L comes from open_clip (``model.clip``) when the run directory is used. The
official loader lists every CLIP key as "not found in the checkpoint" (FC-CLIP issues #14, #34, #37); here
that is said once. A file that does hold them (saved by FC-CLIP's own trainer) is accepted, and they are
left out for the same reason.

Names: the Mask2Former parts are the original Mask2Former's (:mod:`odise_pl.reference.key_map`, shared
with ODISE's converter); FC-CLIP's own head adds :data:`FCCLIP_RENAMES`. Every key is placed and
shape-checked on the meta device (no frozen weight is read); an unknown, mis-shaped or missing key is
named as the file spells it (:class:`~odise_pl.errors.ConfigError`, exit 2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig

from odise_pl.errors import CheckpointError, ConfigError
from odise_pl.reference import key_map
from odise_pl.reference.convert import check_empty_weight, read_released_checkpoint

#: FC-CLIP's training vocabulary: its copy of ODISE's COCO list with two typo fixes
TRAINING_VOCABULARY = "coco_panoptic_with_prompt_eng_fcclip"
#: the frozen CLIP's prefix in FC-CLIP's state dict (absent from the released file)
CLIP_PREFIX = "backbone.clip_model."

#: FC-CLIP's own head (``fcclip_transformer_decoder.py:381-385``, ``fcclip.py:134``) -> odise-pl
FCCLIP_RENAMES: list[tuple[str, str]] = [
    (r"sem_seg_head\.predictor\._mask_pooling_proj\.([01])\.(weight|bias)", r"mask_generator.mask_embed.pool_proj.\1.\2"),
    (r"sem_seg_head\.predictor\.class_embed\.layers\.(\d+)\.(weight|bias)", r"mask_generator.mask_embed.mask_embed.layers.\1.\2"),
    (r"sem_seg_head\.predictor\.logit_scale", r"supervision.logit_scale"),
    (r"void_embedding\.weight", r"supervision.void_embedding.weight"),
]
_FCCLIP = [(re.compile(p + r"\Z"), r) for p, r in FCCLIP_RENAMES]


def rename(key: str, ours: Mapping[str, torch.Tensor]) -> list:
    """The odise-pl key(s) one FC-CLIP key feeds (with the value's transform); ``[]`` if unknown."""
    for pattern, replacement in _FCCLIP:
        if pattern.match(key):
            return [(pattern.sub(replacement, key), lambda v: v)]
    if key == key_map.LOGIT_SCALE or key.startswith(("category_head.", "word_head.", "backbone.")):
        return []  # ODISE-only names: not in an FC-CLIP file
    return key_map.rename(key, ours)


def _template(pattern: str) -> str:
    """A rename pattern as a ``str.format`` template: each group -> ``{}``, ``\\.`` -> ``.``."""
    out, depth = [], 0
    for i, ch in enumerate(pattern):
        escaped = i > 0 and pattern[i - 1] == "\\"
        if ch == "(" and not escaped:
            if depth == 0:
                out.append("{}")
            depth += 1
        elif ch == ")" and not escaped:
            depth -= 1
        elif depth == 0 and ch != "\\":
            out.append(ch)
    return "".join(out)


def reference_name(ours: str) -> str | None:
    """How an FC-CLIP file spells the key that feeds our parameter ``ours`` (None if none does)."""
    qkv = re.match(r"mask_generator\.transformer\.decoder\.layers\.(\d+)\.self_attn\.[qkv]_proj\.(weight|bias)\Z", ours)
    if qkv:
        return f"sem_seg_head.predictor.transformer_self_attention_layers.{qkv[1]}.self_attn.in_proj_{qkv[2]}"
    for pattern, replacement in [*FCCLIP_RENAMES, *key_map._RENAMES]:
        inverse = re.escape(replacement)
        inverse = re.sub(r"\\\\(\d)", r"(?P<g\1>.+?)", inverse)
        found = re.fullmatch(inverse, ours)
        if found:
            groups = [found.group(f"g{i}") for i in range(1, len(found.groups()) + 1)]
            name = _template(pattern).format(*groups)
            if re.fullmatch(pattern, name):
                return name
    return None


def convert_fcclip_state_dict(state: dict[str, torch.Tensor], cfg: DictConfig, *, source: str) -> tuple[dict[str, torch.Tensor], str]:
    """FC-CLIP's released weights -> odise-pl trained weights of the model of ``cfg`` (meta device).

    Returns:
        ``(weights, note)``: the weights under odise-pl's names, and the one line that says where the
        frozen CLIP comes from.

    Raises:
        ConfigError: an unknown, mis-shaped or missing key, named as the file spells it.
    """
    from odise_pl.models.on_meta import build_on_meta

    clip_keys = [k for k in state if k.startswith(CLIP_PREFIX)]
    trained = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    model = build_on_meta(cfg)
    ours = model.state_dict()
    converted = key_map.reference_to_ours(
        trained, ours, source=source, renamer=rename, hint="FC-CLIP's ConvNeXt-L recipe: 250 queries, 9 decoder layers, CLIP embed dim 768"
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in converted]
    if missing:
        spelt = [reference_name(n) or f"(the weight of {n})" for n in missing]
        raise ConfigError(
            f"{source}: {len(missing)} weight(s) of the model are not in the checkpoint: "
            f"{', '.join(spelt[:8])}{' ...' if len(spelt) > 8 else ''}. Is the file complete, "
            "and the experiment FC-CLIP's (experiments/fcclip_coco.yaml)?"
        )
    check_empty_weight(state, cfg, source)
    clip = f"{cfg.model.clip.model_name} ({cfg.model.clip.pretrained})"
    note = (
        f"{Path(source).name} holds {len(clip_keys)} {CLIP_PREFIX}* keys (left out)"
        if clip_keys
        else f"{Path(source).name} has no {CLIP_PREFIX}* weights, as released"
    )
    note += f": the frozen CLIP {clip} is loaded through open_clip (model.clip) when the run directory is used."
    return {k: v.contiguous() for k, v in converted.items()}, note


class _Weights(torch.nn.Module):
    """Converted tensors as a module, for :func:`~odise_pl.engine.run_files.write_run_directory`."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.tensors = tensors

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # noqa: ARG002 - nn.Module's signature
        return dict(self.tensors)


def convert_fcclip(ckpt: str | Path, cfg: DictConfig, out: str | Path, *, trust_pickle: bool = False) -> tuple[Path, str]:
    """Write the run directory ``out`` (``config.yaml``, ``categories.json``, ``weights.safetensors``).

    Returns:
        ``(out, note)`` with the note of :func:`convert_fcclip_state_dict`.
    """
    from odise_pl.engine.run_files import CONFIG_FILE, WEIGHTS_FILE, write_run_directory
    from odise_pl.models.odise_module import OdiseModule
    from odise_pl.vocab import load_builtin

    out = Path(out).expanduser()
    if out.exists() and any((out / name).exists() for name in (CONFIG_FILE, WEIGHTS_FILE)):
        raise CheckpointError(f"{out} already holds a run directory; choose another --out (nothing is overwritten).")
    state = read_released_checkpoint(
        ckpt, trust_pickle=trust_pickle, what="FC-CLIP checkpoint", example="fcclip_cocopan.pth from the bytedance/fc-clip README"
    )
    weights, note = convert_fcclip_state_dict(state, cfg, source=str(ckpt))
    categories = load_builtin(TRAINING_VOCABULARY).to_categories()
    metadata = {
        "source": Path(ckpt).name,
        "format": "odise-pl converted FC-CLIP checkpoint",
        "recomputed_buffers": json.dumps(list(OdiseModule.RECOMPUTED_BUFFERS)),
    }
    out.mkdir(parents=True, exist_ok=True)
    write_run_directory(out, config=cfg, categories=categories, model=_Weights(weights), ignore_index=255, metadata=metadata)
    return out, note


__all__ = [
    "CLIP_PREFIX",
    "FCCLIP_RENAMES",
    "TRAINING_VOCABULARY",
    "convert_fcclip",
    "convert_fcclip_state_dict",
    "reference_name",
    "rename",
]
