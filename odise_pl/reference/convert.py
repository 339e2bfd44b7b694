"""``odise-pl convert-reference``: a released ODISE ``.pth`` -> an odise-pl run directory.

The run directory holds what ``predict``, ``validate``, ``test`` (``--sets`` too) and ``fit``
(``--init-from``, fine-tuning) read: ``config.yaml`` (the experiment, resolved), ``categories.json``
(the training vocabulary the checkpoint was trained on: COCO panoptic with the reference's
synonyms) and ``weights.safetensors`` (the trainable weights under odise-pl's names).

Converting needs no frozen weight: the model of the experiment is built on the meta device
(as ``odise-pl summary``), every key of the checkpoint is placed and shape-checked against it,
and every trainable parameter must be provided. The frozen parts (SD v1.3, CLIP ViT-L-14-336)
stay named in the config (``model.backbone.pretrained``, ``model.clip``) and are loaded when the
directory is used.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from omegaconf import DictConfig

from odise_pl.errors import CheckpointError, ConfigError
from odise_pl.models.odise_module import OdiseModule
from odise_pl.reference.key_map import CHECKED_BUFFERS, reference_to_ours

#: the reference's training vocabulary (``get_openseg_labels("coco_panoptic", prompt_engineered=True)``)
TRAINING_VOCABULARY = "coco_panoptic_with_prompt_eng"


def read_released_checkpoint(
    path: str | Path,
    *,
    trust_pickle: bool = False,
    what: str = "ODISE checkpoint",
    example: str = "odise_label_coco_50e-b67d2efc.pth from the NVlabs/ODISE v1.0.0 release",
) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a released ODISE (or FC-CLIP: ``what``, ``example``) ``.pth`` (detectron2 format).

    Read with ``torch.load(weights_only=True)``; a file that also pickles Python objects (a
    detectron2 trainer or scheduler state) needs ``trust_pickle=True`` (``--trust-pickle``), which
    runs the file's pickle code: only for files from a source you trust.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' not found (e.g. {example}).")
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        if trust_pickle:
            raise CheckpointError(f"{path} is not a PyTorch checkpoint ({err}).") from None
        raise CheckpointError(
            f"{path} holds Python objects besides tensors (or is not a checkpoint at all), so it is not "
            f"loaded with torch.load(weights_only=True). If the file is the authors' release (a source you "
            f"trust: unpickling runs its code), run again with --trust-pickle."
        ) from None
    except Exception as err:  # truncated files, zip errors
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}). Is the download complete?") from None
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: expected a detectron2 checkpoint {{'model': state_dict}}, got "
            f"{type(data).__name__} with keys {list(data)[:5] if isinstance(data, dict) else []}."
        )
    return state


def check_empty_weight(state: dict[str, torch.Tensor], cfg: DictConfig, source: str) -> None:
    """``criterion.empty_weight`` (ones, the no-object weight last) must agree with the config."""
    for key in CHECKED_BUFFERS:
        if key not in state:
            continue
        value = state[key].float()
        expected = torch.ones_like(value)
        expected[-1] = float(cfg.model.mask_generator.no_object_weight)
        if not torch.allclose(value, expected):
            raise ConfigError(
                f"{source}: {key} is {value[-1].item():g} for no-object, the config's "
                f"model.mask_generator.no_object_weight is {expected[-1].item():g}"
            )


def convert_state_dict(state: dict[str, torch.Tensor], cfg: DictConfig, *, source: str) -> dict[str, torch.Tensor]:
    """Released weights -> odise-pl trainable weights for the model of ``cfg`` (checked on the meta device).

    Raises:
        ConfigError: an unknown, mis-shaped or missing key (named).
    """
    from odise_pl.models.on_meta import build_on_meta

    model = build_on_meta(cfg)
    ours = model.state_dict()
    converted = reference_to_ours(state, ours, source=source)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in converted]
    if missing:
        named = ", ".join(f"{reference_spelling(n, ours)} (odise-pl: {n})" for n in missing[:5])
        raise ConfigError(
            f"{source}: {len(missing)} trainable weight(s) of the model are not in the checkpoint, "
            f"e.g. {named}. Is the experiment the checkpoint's (label vs caption)?"
        )
    check_empty_weight(state, cfg, source)
    return {k: v.contiguous() for k, v in converted.items()}


def reference_spelling(ours_key: str, ours: dict) -> str:
    """The released checkpoint's name of odise-pl's ``ours_key`` (inverting the key map over the released
    checkpoints' key lists; layer numbers carried over), or ``?`` if no released key maps to it."""
    import re

    from odise_pl.reference.fixture import DEFAULT_FIXTURE
    from odise_pl.reference.key_map import rename

    def template(key: str) -> str:
        return re.sub(r"\.\d+(?=\.)", ".#", key)

    exact, generic = {}, {}
    for kind in ("label", "caption"):
        listing = DEFAULT_FIXTURE / f"odise_{kind}_released_checkpoint_keys_real.txt"
        if not listing.is_file():
            continue
        for line in listing.read_text().splitlines():
            ref_key = line.split("\t")[0]
            if not ref_key or ref_key.startswith("#"):
                continue
            for target, _ in rename(ref_key, ours):
                exact.setdefault(target, ref_key)
                generic.setdefault(template(target), ref_key)
    if ours_key in exact:
        return exact[ours_key]
    ref_key = generic.get(template(ours_key))
    if ref_key is None:
        return "?"
    numbers = iter(re.findall(r"\.(\d+)(?=\.)", ours_key))
    return re.sub(r"\.\d+(?=\.)", lambda _m: "." + next(numbers, "0"), ref_key)


def convert_reference(odise_ckpt: str | Path, cfg: DictConfig, out: str | Path, *, trust_pickle: bool = False) -> Path:
    """Write the run directory ``out`` (refused if it already holds one) and return its path."""
    from odise_pl.engine.run_files import CONFIG_FILE, WEIGHTS_FILE, write_run_directory
    from odise_pl.vocab import load_builtin

    out = Path(out).expanduser()
    if out.exists() and any((out / name).exists() for name in (CONFIG_FILE, WEIGHTS_FILE)):
        raise CheckpointError(f"{out} already holds a run directory; choose another --out (nothing is overwritten).")
    state = read_released_checkpoint(odise_ckpt, trust_pickle=trust_pickle)
    weights = convert_state_dict(state, cfg, source=str(odise_ckpt))
    categories = load_builtin(TRAINING_VOCABULARY).to_categories()
    metadata = {
        "source": str(Path(odise_ckpt).name),
        "format": "odise-pl converted reference checkpoint",
        "recomputed_buffers": json.dumps(list(OdiseModule.RECOMPUTED_BUFFERS)),
    }
    return write_run_directory(out, config=cfg, categories=categories, weights=weights, ignore_index=255, metadata=metadata)


__all__ = [
    "TRAINING_VOCABULARY",
    "convert_reference",
    "convert_state_dict",
    "read_released_checkpoint",
]
