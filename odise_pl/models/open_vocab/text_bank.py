"""The text-embedding bank: CLIP text embeddings of every name of a vocabulary, cached on disk.

Every name of every class (display name and synonyms) is embedded with each
prompt template; the template embeddings of a name are averaged (after
normalising each, when ``normalize=True``) and the mean is normalised again.
The result is a :class:`~odise_pl.models.supervision.base.TextEmbeddings`, one
row per name, whose ``class_index`` lets a classifier take the maximum over a
class's synonyms.

Texts are encoded ``chunk_size`` at a time, so large vocabularies (A-847 has
1,342 names with prompt engineering) never hold more than one chunk's
activations. Results are cached in ``cache_dir`` (default
``$ODISE_PL_CACHE/text_bank``, else ``~/.cache/odise_pl/text_bank``) under a hash
of the CLIP model, its weights, the names and the templates; a second request
loads the file instead of running the text encoder.

Example:
    >>> from odise_pl.models.clip_model import ClipSpec, load_clip
    >>> from odise_pl.vocab import load_builtin
    >>> bank = TextEmbeddingBank(load_clip(ClipSpec("odise-tiny-vit", None)), templates=["a photo of a {}."])
    >>> text = bank(load_builtin("ade20k_150"))   # TextEmbeddings: embeds (N_names, E)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from odise_pl.atomic_files import atomic_write
from odise_pl.errors import ConfigError
from odise_pl.models.supervision.base import TextEmbeddings
from odise_pl.vocab import Vocabulary

DEFAULT_TEMPLATES = ("a photo of a {}.",)
RAW_NAME_TEMPLATES = ("{}",)  # the reference's category-label head embeds the bare names
#: ViLD's 14 prompt templates, as FC-CLIP uses them (``VILD_PROMPT``, fc-clip ``fcclip/fcclip.py:26-41``;
#: templates 2-5 have no final period): every name gets all 14, normalised, averaged, normalised again
VILD_TEMPLATES = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$ODISE_PL_CACHE/text_bank`` when the variable is set, else ``~/.cache/odise_pl/text_bank``."""
    root = os.environ.get("ODISE_PL_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "odise_pl") / "text_bank"


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        templates = [templates]
    templates = tuple(templates)
    if not templates:
        raise ConfigError(
            "inference.clip_prompt_templates is empty: give at least one template, "
            "e.g. ['a photo of a {}.'] (or ['{}'] for the bare names)."
        )
    for t in templates:
        rest = t.replace("{}", "", 1) if isinstance(t, str) else "{"
        if t.count("{}") != 1 or "{" in rest or "}" in rest:
            raise ConfigError(
                f"prompt template {t!r} must contain '{{}}' exactly once (where the class "
                f"name goes) and no other braces, e.g. 'a photo of a {{}}.'."
            )
    return templates


class TextEmbeddingBank:
    """Embeds vocabularies with a (shared, frozen) CLIP text tower, with an on-disk cache.

    Args:
        clip: the shared CLIP (:func:`odise_pl.models.clip_model.load_clip`).
        templates: prompt templates with one ``{}`` each; several are averaged.
        chunk_size: texts (names x templates) per text-encoder call.
        normalize: L2-normalise the embeddings (per template before averaging, and after).
        cache: read and write the disk cache.
        cache_dir: cache folder (default :func:`default_cache_dir`).
    """

    def __init__(
        self,
        clip,
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        chunk_size: int = 256,
        normalize: bool = True,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ConfigError(f"text bank chunk_size must be >= 1, got {chunk_size}.")
        self.clip = clip
        self.templates = _check_templates(templates)
        self.chunk_size = int(chunk_size)
        self.normalize = bool(normalize)
        self.cache = bool(cache)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._weights_id: str | None = None

    # ------------------------------------------------------------------ public
    def __call__(self, classes: Vocabulary | Sequence[Sequence[str]]) -> TextEmbeddings:
        """Embed every name of ``classes``.

        Args:
            classes: a :class:`Vocabulary`, or one list of names per class.

        Returns:
            TextEmbeddings with ``embeds`` (N_names, E) float32 on the CLIP's device,
            ``class_index`` (N_names,) long and ``num_classes`` K.
        """
        names_per_class = self._names(classes)
        names = [n for group in names_per_class for n in group]
        class_index = torch.tensor([k for k, group in enumerate(names_per_class) for _ in group], dtype=torch.long)
        device = self._device()
        path = self.cache_path(names_per_class) if self.cache else None
        embeds = self._load(path, len(names)) if path is not None else None
        if embeds is None:
            embeds = self._encode(names)
            if path is not None:
                self._save(path, embeds)
        return TextEmbeddings(embeds.to(device), class_index.to(device), len(names_per_class))

    def cache_key(self, names_per_class: Sequence[Sequence[str]]) -> str:
        """Hex digest identifying model, weights, names (with their class grouping) and templates."""
        spec = self.clip.spec
        payload = json.dumps(
            {
                "v": _FORMAT_VERSION,
                "model": spec.model_name,
                "pretrained": spec.pretrained,
                "weights": self._weights_identity(),
                "templates": list(self.templates),
                "normalize": self.normalize,
                "classes": [list(g) for g in names_per_class],
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def cache_path(self, names_per_class: Sequence[Sequence[str]]) -> Path:
        model = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.clip.spec.model_name)
        return self.cache_dir / f"{model}-{self.cache_key(names_per_class)[:32]}.pt"

    def forget_weights(self) -> None:
        """The CLIP's weights changed in place (e.g. a checkpoint was loaded): key the cache anew."""
        self._weights_id = None

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _names(classes) -> list[list[str]]:
        groups = classes.synonyms if isinstance(classes, Vocabulary) else [list(g) for g in classes]
        if not groups:
            raise ValueError("cannot embed an empty vocabulary")
        for k, g in enumerate(groups):
            if isinstance(g, str) or not g:
                raise ValueError(f"class {k} must be a non-empty list of names, got {g!r}")
        return groups

    def _device(self) -> torch.device:
        return next(self.clip.model.parameters()).device

    def _weights_identity(self) -> str:
        """What distinguishes two models with the same name and ``pretrained`` value."""
        if self._weights_id is None:
            pretrained = self.clip.spec.pretrained
            path = Path(os.path.expanduser(pretrained)) if pretrained else None
            if pretrained and path.is_file():  # a local checkpoint: its identity is the file
                st = path.stat()
                self._weights_id = f"file:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
            elif pretrained and pretrained not in ("none", "random"):
                self._weights_id = f"tag:{pretrained}"
            else:  # random weights: fingerprint the text tower itself
                digest = hashlib.sha256()
                for name, tensor in sorted(self.clip.model.state_dict().items()):
                    if not name.startswith("visual."):
                        digest.update(name.encode())
                        flat = tensor.detach().cpu().reshape(-1).contiguous()
                        digest.update(flat.view(torch.uint8).numpy().tobytes())
                self._weights_id = f"random:{digest.hexdigest()}"
        return self._weights_id

    @torch.no_grad()
    def _encode(self, names: list[str]) -> torch.Tensor:
        """(N,) names -> (N, E) float32 CPU embeddings, ``chunk_size`` texts per encoder call."""
        texts = [t.format(n) for n in names for t in self.templates]  # name-major: (N*T,)
        chunks = []
        for start in range(0, len(texts), self.chunk_size):
            emb = self.clip.encode_text(texts[start : start + self.chunk_size]).float()
            chunks.append(F.normalize(emb, dim=-1) if self.normalize else emb)
        embeds = torch.cat(chunks).view(len(names), len(self.templates), -1).mean(dim=1)  # (N, E)
        return (F.normalize(embeds, dim=-1) if self.normalize else embeds).cpu()

    def _load(self, path: Path, num_names: int) -> torch.Tensor | None:
        if not path.is_file():
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            embeds = data["embeds"]
            if data.get("key") != path.stem.split("-")[-1] or embeds.shape[0] != num_names:
                raise ValueError("the file does not match its key")
            return embeds
        except Exception as err:  # a damaged cache must never stop a run: recompute and overwrite
            warnings.warn(f"ignoring unreadable text-bank cache file {path} ({err}); recomputing it.", stacklevel=2)
            return None

    def _save(self, path: Path, embeds: torch.Tensor) -> None:
        """Write atomically (:func:`~odise_pl.atomic_files.atomic_write`): a reader never sees half a file."""
        try:
            atomic_write(path, lambda f: torch.save({"key": path.stem.split("-")[-1], "embeds": embeds}, f))
        except OSError as err:
            warnings.warn(
                f"could not write the text-bank cache in {path.parent} ({err}); continuing "
                f"without it. Set ODISE_PL_CACHE to a writable folder to enable caching.",
                stacklevel=2,
            )
