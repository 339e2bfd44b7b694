"""The reference fixture: tiny ODISE models run by the official code, with their recorded tensors.

A fixture folder has the layout and file names of ``shared/reference_fixture`` (the project
ships a copy under ``tests/data/reference_fixture`` with its provenance README):

* ``odise_{kind}_tiny_ref.pth`` - the tiny model's full state dict (reference names);
* ``odise_{kind}_tiny_tensors.safetensors`` + ``..._index.json`` - inputs and recorded tensors;
* ``odise_caption_tiny_train.safetensors`` - the caption model's training record.

``kind`` is ``label`` or ``caption``. :func:`build_fixture_model` builds the odise-pl experiment
of the fixture (``experiments/reference/odise_{kind}_fixture.yaml``) and loads the ``.pth``
through the same key mapping that ``odise-pl convert-reference`` uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from odise_pl.errors import ConfigError
from odise_pl.models.odise_module import OdiseModule
from odise_pl.reference.frozen_weights import CLIP_PREFIXES, LDM_PREFIX, RECOMPUTED, frozen_state_dict
from odise_pl.reference.key_map import CHECKED_BUFFERS, reference_to_ours

KINDS = ("label", "caption")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURE = PROJECT_ROOT / "tests" / "data" / "reference_fixture"
EXPERIMENTS = PROJECT_ROOT / "experiments" / "reference"
#: the training vocabulary of both fixtures (the reference's get_openseg_labels("coco_panoptic", True))
FIXTURE_VOCABULARY = "coco_panoptic_with_prompt_eng"


@dataclass(frozen=True)
class Fixture:
    """The files of one fixture model."""

    folder: Path
    kind: str

    @property
    def weights(self) -> Path:
        return self.folder / f"odise_{self.kind}_tiny_ref.pth"

    @property
    def tensors(self) -> Path:
        return self.folder / f"odise_{self.kind}_tiny_tensors.safetensors"

    @property
    def index(self) -> Path:
        return self.folder / f"odise_{self.kind}_tiny_tensors_index.json"

    @property
    def train_record(self) -> Path:
        return self.folder / f"odise_{self.kind}_tiny_train.safetensors"

    @property
    def experiment(self) -> Path:
        return EXPERIMENTS / f"odise_{self.kind}_fixture.yaml"

    def check(self) -> Fixture:
        missing = [p.name for p in (self.weights, self.tensors, self.index) if not p.is_file()]
        if missing:
            raise ConfigError(
                f"reference fixture '{self.folder}' lacks {', '.join(missing)}: give a folder "
                f"laid out as shared/reference_fixture (or the project's "
                f"tests/data/reference_fixture)"
            )
        return self

    def load_tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.tensors))

    def load_index(self) -> dict:
        return json.loads(self.index.read_text())

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.weights, map_location="cpu", weights_only=True)


def fixture(folder: str | Path | None = None, kind: str = "label") -> Fixture:
    if kind not in KINDS:
        raise ConfigError(f"fixture kind '{kind}' is not one of {', '.join(KINDS)}")
    return Fixture(Path(folder) if folder is not None else DEFAULT_FIXTURE, kind).check()


def split_reference(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """A full reference dict -> (released-format part, frozen/recomputed rest)."""
    frozen = (*CLIP_PREFIXES, LDM_PREFIX)
    released = {k: v for k, v in state.items() if not k.startswith(frozen) and k not in RECOMPUTED}
    rest = {k: v for k, v in state.items() if k not in released}
    return released, rest


def load_reference_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, with_frozen: bool = True) -> list[str]:
    """Load a reference state dict into an odise-pl model (strict on every key both sides).

    The released-format part goes through :func:`~odise_pl.reference.key_map.reference_to_ours`;
    with ``with_frozen`` the SD / CLIP weights of a full dict too. Recomputed buffers (the empty
    caption's text embedding, the fixed noise, the no-object weight) are checked against the
    reference's. Returns the names of those checks.
    """
    ours = model.state_dict()
    released, _ = split_reference(state)
    loaded = reference_to_ours(released, ours, source=source)
    if with_frozen:
        loaded.update(frozen_state_dict(state, model))
    missing = [k for k in ours if k not in loaded and k not in OdiseModule.RECOMPUTED_BUFFERS and not k.endswith("_extra_state")]
    if with_frozen and missing:
        raise ConfigError(f"{source}: {len(missing)} weight(s) of the model are not in it, e.g. {missing[:5]}")
    model.load_state_dict(loaded, strict=False)
    if hasattr(model.backbone, "empty_text"):  # recompute TextEncoder("") from the loaded text encoder
        model.backbone.empty_text.copy_(model.backbone.embed_text([""]))
    return check_recomputed(model, state, source=source)


def check_recomputed(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> list[str]:
    """Compare odise-pl's recomputed buffers with the reference's where ``state`` has them."""
    ours = {**dict(model.named_buffers()), **model.state_dict()}
    checked = []
    pairs = dict(RECOMPUTED)
    pairs.update({k: "criterion.loss.empty_weight" for k in CHECKED_BUFFERS})
    for ref_key, our_key in pairs.items():
        if ref_key not in state or our_key not in ours:
            continue
        a, b = state[ref_key].float(), ours[our_key].float().to(state[ref_key].device)
        if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise ConfigError(
                f"{source}: {ref_key} {tuple(a.shape)} differs from odise-pl's recomputed "
                f"{our_key} {tuple(b.shape)} (max |diff| "
                f"{(a - b).abs().max().item() if a.shape == b.shape else 'n/a'})"
            )
        checked.append(ref_key)
    return checked


def build_fixture_model(fx: Fixture, overrides: list[str] | None = None, device: str = "cpu"):
    """The fixture's odise-pl model (eval mode, on ``device``) with the fixture's weights, and its config.

    Nothing numerical is shared with the rest of the process, so the verdict does not depend on
    what ran before: the model gets its own CLIP (the process-wide one would be overwritten in place
    by the fixture's weights, and another model's changes would leak in) and its text embeddings
    are computed here, never read from the on-disk text-bank cache (written by whatever process,
    thread count or SIMD path ran first).
    """
    from odise_pl.config import load_config
    from odise_pl.models.builder import build_model
    from odise_pl.models.clip_model import private_clips
    from odise_pl.vocab import load_builtin

    cfg = load_config(str(fx.experiment), list(overrides or []))
    categories = load_builtin(FIXTURE_VOCABULARY).to_categories()
    with private_clips():
        model = build_model(cfg, categories)
    load_reference_weights(model, fx.load_state_dict(), source=str(fx.weights))
    model.to(device)
    refresh_text_embeddings(model, categories)
    return model.eval(), cfg


def refresh_text_embeddings(model, categories: list[dict]) -> None:
    """Re-embed the training and evaluation vocabularies after the CLIP weights were replaced in place.

    ``build_model`` embeds them with the CLIP it was built with; loading other CLIP weights (the
    fixture's) makes those embeddings stale.
    """
    from odise_pl.models.builder import class_names

    names = [class_names(c) for c in categories]
    banks = [model.text_bank] + ([model.open_vocab.text_bank] if model.open_vocab is not None else [])
    for bank in banks:
        bank.cache = False  # computed in this process, never a file another run wrote
        bank.forget_weights()
    model.set_vocabulary(names, [bool(c.get("isthing", True)) for c in categories])
    sup = model.supervision
    if hasattr(sup, "train_embeds"):
        sup.train_embeds.copy_(model.text_bank(names).embeds.to(sup.train_embeds.device))


__all__ = [
    "DEFAULT_FIXTURE",
    "Fixture",
    "KINDS",
    "build_fixture_model",
    "fixture",
    "load_reference_weights",
    "split_reference",
]
