"""The FC-CLIP reference fixture: a tiny FC-CLIP run by the official code, with its recorded tensors.

A fixture folder has the layout and file names of ``shared/fcclip_fixture`` (the project ships a
copy under ``tests/data/fcclip_fixture`` with its provenance README):

* ``fcclip_tiny_ref.pth`` - the tiny model's full state dict (reference names, its CLIP included);
* ``fcclip_tiny_tensors.safetensors`` + ``..._index.json`` - the two inputs and 137 recorded tensors;
* ``fcclip_tiny_train.safetensors`` - one training forward on the first input, with its losses.

:func:`build_fcclip_fixture_model` builds ``experiments/reference/fcclip_fixture.yaml`` (training
vocabulary FC-CLIP's COCO list, test vocabulary ADE20K-150 as the fixture) and loads the ``.pth``:
the trained part through the released-checkpoint key map of ``convert-reference --fcclip-ckpt``
(:func:`odise_pl.reference.fcclip_convert.rename`), the frozen CLIP by its open_clip names.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from odise_pl.errors import ConfigError
from odise_pl.reference import key_map
from odise_pl.reference.fcclip_convert import CLIP_PREFIX, TRAINING_VOCABULARY, rename
from odise_pl.reference.fixture import EXPERIMENTS, PROJECT_ROOT

DEFAULT_FCCLIP_FIXTURE = PROJECT_ROOT / "tests" / "data" / "fcclip_fixture"
#: the fixture's test vocabulary (FC-CLIP's ade20k_150_with_prompt_eng.txt equals odise-pl's copy)
TEST_VOCABULARY = "ade20k_150_with_prompt_eng"
#: where the frozen CLIP's weights go in odise-pl (the ``clip`` backbone's shared CLIP)
OUR_CLIP_PREFIX = "backbone.clip.model."
#: recomputed buffers: reference key -> ours (compared, not loaded)
EMPTY_WEIGHT = ("criterion.empty_weight", "criterion.loss.empty_weight")


@dataclass(frozen=True)
class FcclipFixture:
    """The files of the FC-CLIP fixture."""

    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / "fcclip_tiny_ref.pth"

    @property
    def tensors(self) -> Path:
        return self.folder / "fcclip_tiny_tensors.safetensors"

    @property
    def index(self) -> Path:
        return self.folder / "fcclip_tiny_tensors_index.json"

    @property
    def train_record(self) -> Path:
        return self.folder / "fcclip_tiny_train.safetensors"

    @property
    def experiment(self) -> Path:
        return EXPERIMENTS / "fcclip_fixture.yaml"

    def check(self) -> FcclipFixture:
        missing = [p.name for p in (self.weights, self.tensors, self.index, self.train_record) if not p.is_file()]
        if missing:
            raise ConfigError(
                f"FC-CLIP fixture '{self.folder}' lacks {', '.join(missing)}: give a folder laid "
                f"out as shared/fcclip_fixture (or the project's tests/data/fcclip_fixture)"
            )
        return self

    def load_tensors(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.tensors))

    def load_train_record(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.train_record))

    def load_index(self) -> dict:
        return json.loads(self.index.read_text())

    def load_state_dict(self) -> dict[str, torch.Tensor]:
        return torch.load(self.weights, map_location="cpu", weights_only=True)


def fcclip_fixture(folder: str | Path | None = None) -> FcclipFixture:
    return FcclipFixture(Path(folder) if folder is not None else DEFAULT_FCCLIP_FIXTURE).check()


def load_fcclip_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load a *full* FC-CLIP state dict (its CLIP included) into an odise-pl FC-CLIP model, strictly.

    Raises:
        ConfigError: a key with no place in the model, a shape that differs, a weight of the model the
            dict lacks (each named), or a ``criterion.empty_weight`` unlike odise-pl's.
    """
    ours = model.state_dict()
    trained = {k: v for k, v in state.items() if not k.startswith(CLIP_PREFIX)}
    loaded = key_map.reference_to_ours(
        trained, ours, source=source, renamer=rename, hint="experiments/reference/fcclip_fixture.yaml's sizes"
    )
    clip = {OUR_CLIP_PREFIX + k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    unknown = [k for k in clip if k not in ours]
    wrong = [k for k in clip if k in ours and tuple(ours[k].shape) != tuple(clip[k].shape)]
    if unknown or wrong:
        names = [CLIP_PREFIX + k[len(OUR_CLIP_PREFIX) :] for k in unknown + wrong]
        raise ConfigError(
            f"{source}: {len(names)} CLIP key(s) have no place or another shape in the model's "
            f"CLIP ({', '.join(names[:5])}): is model.clip.model_name the fixture's?"
        )
    loaded.update(clip)
    missing = [k for k in ours if k not in loaded and k != EMPTY_WEIGHT[1] and not k.endswith("_extra_state")]
    if missing:
        raise ConfigError(f"{source}: {len(missing)} weight(s) of the model are not in it, e.g. {missing[:5]}")
    model.load_state_dict(loaded, strict=False)
    ref, mine = state.get(EMPTY_WEIGHT[0]), ours.get(EMPTY_WEIGHT[1])
    if ref is not None and (mine is None or ref.shape != mine.shape or not torch.equal(ref.float(), mine.float())):
        raise ConfigError(
            f"{source}: {EMPTY_WEIGHT[0]} {tuple(ref.shape)} differs from odise-pl's "
            f"{EMPTY_WEIGHT[1]} {None if mine is None else tuple(mine.shape)}"
        )


def fixture_categories() -> tuple[list[dict], list[dict]]:
    """(training, test) categories of the fixture: FC-CLIP's COCO list and ADE20K-150."""
    from odise_pl.vocab import load_builtin

    return load_builtin(TRAINING_VOCABULARY).to_categories(), load_builtin(TEST_VOCABULARY).to_categories()


@contextmanager
def fresh_text_cache() -> Iterator[None]:
    """Within the block, text banks built use an empty temporary cache folder (``ODISE_PL_CACHE``): the
    model's text embeddings are computed in this process, never read from a file another run wrote."""
    saved = os.environ.get("ODISE_PL_CACHE")
    with tempfile.TemporaryDirectory(prefix="odise_pl_fixture_text_") as folder:
        os.environ["ODISE_PL_CACHE"] = folder
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("ODISE_PL_CACHE", None)
            else:
                os.environ["ODISE_PL_CACHE"] = saved


def build_fcclip_fixture_model(fx: FcclipFixture, overrides: list[str] | None = None, device: str = "cpu"):
    """The fixture's odise-pl FC-CLIP (eval mode, on ``device``) with the fixture's weights, and its config.

    As :func:`odise_pl.reference.fixture.build_fixture_model`, nothing numerical is shared with the rest of
    the process: the model gets its own CLIP, which holds the fixture's weights *before* the model is
    built (so the vocabularies are embedded once, with them), and its text embeddings are computed
    here, never read from the on-disk text-bank cache.
    """
    from odise_pl.config import load_config
    from odise_pl.models.builder import build_model
    from odise_pl.models.clip_model import ClipSpec, load_clip, private_clips

    cfg = load_config(str(fx.experiment), list(overrides or []))
    train, test = fixture_categories()
    state = fx.load_state_dict()
    with private_clips(), fresh_text_cache():
        clip = load_clip(ClipSpec(cfg.model.clip.model_name, cfg.model.clip.pretrained))
        weights = {k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
        clip.model.load_state_dict(weights, strict=False)  # checked key by key below
        model = build_model(cfg, train, eval_categories=test)
    for bank in [model.text_bank] + ([model.open_vocab.text_bank] if model.open_vocab is not None else []):
        bank.cache = False  # its folder is gone; later vocabularies are computed in this process too
    load_fcclip_weights(model, state, source=str(fx.weights))
    return model.to(device).eval(), cfg


__all__ = [
    "DEFAULT_FCCLIP_FIXTURE",
    "FcclipFixture",
    "build_fcclip_fixture_model",
    "fcclip_fixture",
    "fixture_categories",
    "load_fcclip_weights",
]
