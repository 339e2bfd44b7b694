"""Open-vocabulary panoptic prediction on single images (what ``odise-pl predict`` runs).

:class:`Predictor` builds the model of an experiment config, loads a checkpoint, takes any
vocabulary (:mod:`odise_pl.vocab`), and predicts one image at a time:

1. the image is read as RGB (greyscale / RGBA / palette converted, EXIF orientation
   applied: :func:`~odise_pl.data_modules.panoptic_files.read_rgb_image`);
2. it is resized to the test size of the data config (short side ``data.eval_short_side``,
   long side at most ``data.eval_max_long_side``; small images are enlarged) and padded
   to the backbone's ``size_divisibility``;
3. the mask logits are cut to the valid area and brought back to the ORIGINAL size, where
   the panoptic, semantic and (optionally) instance post-processing run.  For very large
   images whose ``Q x H x W`` mask stack would exceed ``max_mask_elements``, the
   post-processing runs at the largest size within that budget and its maps are scaled
   to the original size by nearest neighbour.  On a CPU the semantic map likewise runs
   at the largest size with ``K x H x W <= max_semantic_elements`` (its cost grows with
   the vocabulary size K: the default vocabulary has ~1,300 classes); on a GPU it always
   runs at the original size.

The model and the post-processing are :meth:`OdiseModule.segment
<odise_pl.models.odise_module.OdiseModule.segment>`, the path evaluation and the TensorBoard
pictures use too.

Example (needs a trained run and a photo, so not a doctest)::

    pred = Predictor.from_config_file(None, "runs/quickstart/version_0")  # the run's config
    pred = Predictor.from_config_file("experiments/quickstart.yaml", "last.ckpt")
    pred.set_vocabulary(parse_vocabulary("cat,kitten;dog;grass:stuff"))
    out = pred.predict_file("photo.jpg")
    out.panoptic.shape, out.segments[0]["category_name"]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from odise_pl.data_modules.panoptic_files import read_rgb_image
from odise_pl.data_modules.transforms import ResizeShortestEdge, image_to_tensor, resize_image, resize_nearest
from odise_pl.errors import VocabularyError
from odise_pl.vocab import (
    VocabClass,
    Vocabulary,
    parse_vocabulary,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Prediction:
    """The result for one image, at its original size (after EXIF rotation).

    Attributes:
        image: (H,W,3) uint8 RGB image as read.
        panoptic: (H,W) int64 segment ids, 0 = no segment.
        segments: one dict per id of ``panoptic``: ``id``, ``category_id`` (index in the
            vocabulary), ``category_name``, ``score``, ``is_thing``, ``area`` (pixels of
            ``panoptic``), ``bbox`` ``[x, y, w, h]``.
        semantic: (H,W) int64 class index (argmax of sum_q p_q * sigmoid(m_q)).
        instances: ``masks`` (N,H,W) bool, ``scores`` (N,), ``labels`` (N,) - or None when not asked for.
        probs: (Q,K+1) class probabilities of the queries (void last).
    """

    image: np.ndarray
    panoptic: np.ndarray
    segments: list[dict]
    semantic: np.ndarray
    instances: dict | None = None
    probs: torch.Tensor | None = field(default=None, repr=False)


def vocabulary_from_categories(categories: Sequence[dict], name: str = "training") -> Vocabulary:
    """Data-module categories (``name``, ``synonyms``, ``isthing``) -> a :class:`Vocabulary`."""
    classes = []
    for k, c in enumerate(categories):
        names = tuple(dict.fromkeys(n for n in [c["name"], *c.get("synonyms", [])] if n))
        classes.append(VocabClass(names, c.get("isthing"), c.get("id", k), name))
    return Vocabulary(tuple(classes), name)


def list_images(spec: str) -> list[Path]:
    """An image file, a folder (its image files, sorted, not recursive) or a glob pattern -> paths."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if path.is_file():
        return [path]
    if any(ch in spec for ch in "*?["):
        import glob

        return sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    return []


class Predictor:
    """A trained model + a vocabulary, predicting one image at a time.

    Args:
        cfg: the validated experiment config (``odise_pl.config.load_config``; for a run directory
            :func:`odise_pl.engine.run_files.config_for` gives the run's own).
        ckpt: a run directory, ``.ckpt`` or ``.safetensors`` of that config. Its training categories
            travel with it, so no dataset is read (only a checkpoint older than that reads the data
            module's). None: the freshly built weights, with the data module's categories.
        device: torch device (default: CUDA when available, else CPU).
        vocabulary: the test vocabulary (default: the training categories).
        max_mask_elements: budget for ``Q x H x W`` at post-processing (see the module docstring).
        max_semantic_elements: CPU budget for ``K x H x W`` of the semantic map (see the module docstring).
        instances: also run the instance post-processing (default: ``model.inference.instance_on``).
    """

    def __init__(
        self,
        cfg: DictConfig,
        ckpt: str | Path | None = None,
        *,
        device: str | torch.device | None = None,
        vocabulary: Vocabulary | None = None,
        max_mask_elements: int = 2**26,
        max_semantic_elements: int = 2**25,
        instances: bool | None = None,
    ) -> None:
        from odise_pl.engine.components import build_all, data_config
        from odise_pl.engine.weights import build_trained

        self.cfg = cfg
        if ckpt is None:
            dm, model = build_all(cfg)
            categories = dm.categories
        else:  # named errors for a missing, unsafe, corrupt or mismatched file
            model, categories = build_trained(cfg, Path(ckpt).expanduser())
        data = data_config(cfg)  # the test-time sizes; no dataset is read
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)
        self.resize = ResizeShortestEdge(int(data.eval_short_side), int(data.eval_max_long_side))
        self.size_divisibility = max(int(getattr(data, "size_divisibility", 1)), int(model.backbone.size_divisibility))
        self.max_mask_elements = int(max_mask_elements)
        self.max_semantic_elements = int(max_semantic_elements)
        self.instances = bool(model.inference_cfg.instance_on if instances is None else instances)
        self.training_vocabulary = vocabulary_from_categories(categories)
        self.vocabulary = self.training_vocabulary
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)

    @classmethod
    def from_config_file(cls, config: str | Path | None, ckpt: str | Path | None, overrides: Sequence[str] = (), **kwargs) -> Predictor:
        """``config`` None: the config of the run directory ``ckpt`` is (in), with ``overrides`` on top."""
        from odise_pl.config import load_config
        from odise_pl.engine.run_files import config_for

        if config is None:
            if ckpt is None:
                raise ValueError("give a config file, a checkpoint in a run directory, or both")
            return cls(config_for(ckpt, None, list(overrides)), ckpt, **kwargs)
        return cls(load_config(str(config), list(overrides)), ckpt, **kwargs)

    @property
    def classifier(self) -> str:
        return self.model.inference_cfg.classifier

    # ------------------------------------------------------------------ vocabulary
    def set_vocabulary(self, vocabulary: Vocabulary | str) -> None:
        """Use ``vocabulary`` (a :class:`Vocabulary`, or a string like ``"cat,kitten;dog"``).
        Classes without a thing/stuff flag count as things."""
        if isinstance(vocabulary, str):
            vocabulary = parse_vocabulary(vocabulary)
        if len(vocabulary) == 0:
            raise VocabularyError("the vocabulary is empty")
        self.model.set_vocabulary(vocabulary.synonyms, vocabulary.thing_mask(default=True))
        self.vocabulary = vocabulary

    def set_classifier(self, classifier: str, alpha: float | None = None, beta: float | None = None) -> None:
        """Use another classifier / ensemble weights (:meth:`OdiseModule.set_classifier
        <odise_pl.models.odise_module.OdiseModule.set_classifier>`; ValueError when it cannot)."""
        self.model.set_classifier(classifier, alpha, beta)

    # ------------------------------------------------------------------ prediction
    def read_image(self, path: str | Path) -> np.ndarray:
        """(H,W,3) uint8 RGB; raises :class:`~odise_pl.errors.DatasetError` naming an unreadable file."""
        return read_rgb_image(Path(path))

    def predict_file(self, path: str | Path) -> Prediction:
        return self.predict(self.read_image(path))

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> Prediction:
        """Predict one (H,W,3) uint8 RGB image (greyscale (H,W) and RGBA are converted)."""
        image = _as_rgb(image)
        h0, w0 = image.shape[:2]
        h, w = (max(1, s) for s in self.resize.output_size(h0, w0))
        d = self.size_divisibility
        H, W = math.ceil(h / d) * d, math.ceil(w / d) * d
        batch = torch.zeros((1, 3, H, W), dtype=torch.uint8)
        batch[0, :, :h, :w] = image_to_tensor(resize_image(image, h, w))
        batch = batch.to(self.device)
        model = self.model
        # the post-processing runs at the original size, shrunk to the budgets (see the module docstring)
        oh, ow = _output_size(h0, w0, model.num_queries, self.max_mask_elements)
        sh, sw = (oh, ow) if self.device.type == "cuda" else _output_size(oh, ow, model.eval_text.num_classes, self.max_semantic_elements)
        tasks = ("panoptic", "semantic", "instances") if self.instances else ("panoptic", "semantic")
        res = model.segment(batch, [(h, w)], [(oh, ow)], tasks=tasks, semantic_sizes=[(sh, sw)])[0]
        probs, (ids, raw_segments), semantic = res["probs"], res["panoptic"], res["semantic"]
        instances = {k: v.cpu() for k, v in res["instances"].items()} if self.instances else None
        ids, semantic = ids.cpu().numpy(), semantic.cpu().numpy()
        if semantic.shape != (h0, w0):
            semantic = resize_nearest(semantic, h0, w0)
        if (oh, ow) != (h0, w0):
            ids = resize_nearest(ids, h0, w0)
            if instances is not None:
                masks_np = instances["masks"].numpy()
                instances["masks"] = torch.from_numpy(
                    np.stack([resize_nearest(x, h0, w0) for x in masks_np]) if len(masks_np) else np.zeros((0, h0, w0), bool)
                )
        segments = self._segments(ids, raw_segments)
        return Prediction(image=image, panoptic=ids, segments=segments, semantic=semantic, instances=instances, probs=probs.cpu())

    def _segments(self, ids: np.ndarray, raw: list[dict]) -> list[dict]:
        """Segment records from the final id map (areas and boxes at the original size)."""
        area = np.bincount(ids.ravel(), minlength=max((s["id"] for s in raw), default=0) + 1)
        out = []
        names = self.vocabulary.names
        for s in raw:
            sid = int(s["id"])
            if area[sid] == 0:
                continue
            mask = ids == sid
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            k = int(s["category"])
            out.append(
                {
                    "id": sid,
                    "category_id": k,
                    "category_name": names[k],
                    "score": float(s["score"]),
                    "is_thing": bool(s["isthing"]),
                    "area": int(area[sid]),
                    "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                }
            )
        return out


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an (H,W,3) RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., :3])


def _output_size(h: int, w: int, num_queries: int, budget: int) -> tuple[int, int]:
    """The original size, shrunk (aspect kept) until ``num_queries * h * w <= budget``."""
    if num_queries * h * w <= budget:
        return h, w
    scale = math.sqrt(budget / (num_queries * h * w))
    return max(1, int(h * scale)), max(1, int(w * scale))


__all__ = ["Prediction", "Predictor", "list_images", "vocabulary_from_categories", "IMAGE_EXTENSIONS"]
