"""Semantic-segmentation evaluation sets: A-847, PC-459, PC-59, PAS-21 (``data: {name: semantic_seg}``).

Each set is a folder of images and a folder of label images matched by file stem, in the layout
detectron2's / ODISE's preparation scripts write, under the root where ODISE registers the set
(``datasets/ade/ADE20K_2021_17_01``, ``datasets/pascal_ctx_d2``, ``datasets/pascal_voc_d2``;
defaults below, all overridable), with its vocabulary from the package data
(:mod:`odise_pl.vocab`; by default the set's ``*_with_prompt_eng`` synonym list, as the reference
evaluates) and its ignore label:

============================  =====================================================  =========
``dataset``                    labels (under ``root``)                                ignore
============================  =====================================================  =========
``ade20k_847``  (A-847)        ``annotations_detectron2/validation/*.tif`` (uint16)   65535
``pascal_context_459`` (PC)    ``annotations_ctx459/validation/*.tif`` (uint16)       65535
``pascal_context_59``          ``annotations_ctx59/validation/*.png``                 255
``pascal_voc_21`` (PAS-21)     ``annotations_pascal21/validation/*.png``              255
``custom`` (your own set)      ``labels/*.png`` (any ``label_suffix``)                255
============================  =====================================================  =========

``dataset: custom`` is any set of your own: every key may be set (``root``, ``image_dir``,
``label_dir``, ``label_suffix``, ``ignore_index``) and ``vocabulary`` names a file with one class
per line in label order (``docs/custom_datasets.md``; default ``<root>/vocabulary.txt``).

In the uint16 sets 255 is a real class. Items carry ``gt_semantic`` only (no panoptic ground
truth), so the module scores mIoU / pACC / fwIoU on them and leaves PQ out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from odise_pl.config.schema import choice
from odise_pl.data_modules.coco_panoptic import CocoPanopticConfig, CocoPanopticDataModule
from odise_pl.data_modules.panoptic_files import read_rgb_image
from odise_pl.data_modules.transforms import ResizeShortestEdge, image_to_tensor
from odise_pl.errors import ConfigError, DatasetError
from odise_pl.evaluation_sets import SEMANTIC_SETS, SemanticSetSpec
from odise_pl.formats.coco_panoptic import read_label_image
from odise_pl.registry import DATA_MODULES

__all__ = ["SEMANTIC_SETS", "SemanticSetSpec", "SemanticSegConfig", "SemanticSegDataset", "SemanticSegDataModule"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class SemanticSegConfig(CocoPanopticConfig):
    """``data: {name: semantic_seg, dataset: ade20k_847}``; null paths take the set's defaults."""

    dataset: str = choice("ade20k_847", tuple(SEMANTIC_SETS))
    root: str | None = None  # type: ignore[assignment]
    image_dir: str | None = None
    label_dir: str | None = None
    label_suffix: str | None = None  # the label files' ending (default: the set's, .png for custom)
    vocabulary: str | None = None
    ignore_index: int | None = None  # type: ignore[assignment]
    eval_short_side: int = 1024  # every set as the reference (pano_open_d2_eval.py): 1024 / 2560, batch 1
    eval_max_long_side: int = 2560


def label_stem(label: Path, suffix: str) -> str:
    """The image stem a label file belongs to: its name without ``suffix`` (``a_gt.png`` -> ``a``)."""
    return label.name[: -len(suffix)] if suffix and label.name.endswith(suffix) else label.stem


class SemanticSegDataset(Dataset):
    """Evaluation items: the resized image and, at the original size, ``gt_semantic``."""

    def __init__(self, pairs: list[tuple[Path, Path]], *, num_classes: int, ignore_index: int, transform: ResizeShortestEdge) -> None:
        self.pairs, self.num_classes, self.ignore_index = pairs, num_classes, ignore_index
        self.transform = transform
        self.num_skipped = 0

    def reseed(self, seed) -> None:
        """Nothing random here (evaluation resize only)."""

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[int(index if not isinstance(index, tuple) else index[0])]
        labels = read_label_image(label_path)
        bad = (labels >= self.num_classes) & (labels != self.ignore_index)
        if bad.any():
            raise DatasetError(
                f"{label_path} holds the label {int(labels[bad][0])}, outside "
                f"0..{self.num_classes - 1} and not the ignore label {self.ignore_index}; "
                "is data.dataset right? (odise-pl data check lists every such file)"
            )
        image = read_rgb_image(image_path, labels.shape)
        if image.shape[:2] != labels.shape:
            raise DatasetError(
                f"image {image_path} is {image.shape[1]}x{image.shape[0]} but its labels "
                f"{label_path} are {labels.shape[1]}x{labels.shape[0]}."
            )
        image_t, _, valid = self.transform(image, labels)
        h, w = valid
        target = {
            "masks": torch.zeros(0, h, w, dtype=torch.bool),
            "labels": torch.zeros(0, dtype=torch.long),
            "is_thing": torch.zeros(0, dtype=torch.bool),
            "iscrowd": torch.zeros(0, dtype=torch.bool),
            "image_id": int(index if not isinstance(index, tuple) else index[0]),
            "orig_size": (int(labels.shape[0]), int(labels.shape[1])),
            "gt_semantic": torch.from_numpy(labels.astype(np.int64)),
            "file_name": str(image_path),
        }
        return {"image": image_to_tensor(image_t), "image_size": valid, "target": target, "captions": None}


@DATA_MODULES.register("semantic_seg", config=SemanticSegConfig)
class SemanticSegDataModule(CocoPanopticDataModule):
    """One semantic evaluation set (validation split; the test stage uses it too). Evaluation only."""

    def __init__(self, **kwargs) -> None:
        cfg = SemanticSegConfig(**kwargs)
        if cfg.dataset not in SEMANTIC_SETS:
            raise ConfigError(f"data.dataset={cfg.dataset!r} is not one of {', '.join(SEMANTIC_SETS)}.")
        self.spec = SEMANTIC_SETS[cfg.dataset]
        values = asdict(cfg)
        dataset, image_dir = values.pop("dataset"), values.pop("image_dir")
        label_dir, label_suffix = values.pop("label_dir"), values.pop("label_suffix")
        for key in ("root", "vocabulary", "ignore_index"):
            if values[key] is None:
                values[key] = getattr(self.spec, key)
        if dataset == "custom" and cfg.vocabulary is None:  # the default file lives under the set's root
            values["vocabulary"] = str(Path(values["root"]) / self.spec.vocabulary)
        super().__init__(**values)
        self.dataset = dataset
        self.image_dir = image_dir or self.spec.image_dir
        self.label_dir = label_dir or self.spec.label_dir
        self.label_suffix = label_suffix or self.spec.label_suffix

    def expected_layout(self) -> str:
        return (
            f"Expected for data.dataset={self.dataset} under data.root={self.root}:\n"
            f"  {self.image_dir}/   images (.jpg)\n"
            f"  {self.label_dir}/   labels named like the images ({self.label_suffix}, "
            f"ignore {self.ignore_index})\n"
            f"Download: {self.spec.download}. Set data.root (or data.image_dir / data.label_dir) "
            "to its folder."
        )

    @property
    def categories(self) -> list[dict]:
        """The set's vocabulary (package data), ``isthing`` False where the list does not say."""
        if self._categories is None:
            from odise_pl.vocab import load_vocabulary, load_vocabulary_file

            vocab = (
                load_vocabulary_file(self.vocabulary)
                if self.dataset == "custom"
                else load_vocabulary(self.vocabulary, self.vocabulary_variant)
            )
            synonyms = vocab.synonyms
            rows = zip(vocab.names, vocab.is_thing, synonyms)
            self._categories = [
                {"id": i, "name": name, "isthing": bool(thing), "synonyms": syn} for i, (name, thing, syn) in enumerate(rows)
            ]
        return self._categories

    def setup(self, stage: str | None = None) -> None:
        if stage == "fit":
            raise ConfigError(
                f"data.name=semantic_seg ({self.dataset}) is an evaluation set; train on "
                "coco_panoptic and use it with odise-pl validate / test."
            )
        if "val" in self.datasets:
            return
        image_dir, label_dir = Path(self.root) / self.image_dir, Path(self.root) / self.label_dir
        for folder, what in ((Path(self.root), "dataset root"), (image_dir, "image directory"), (label_dir, "label directory")):
            self._check_dir(folder, what)
        pairs = []
        for label, image in self.label_image_pairs():
            if image is None:
                raise DatasetError(
                    f"{label} has no image {image_dir / label_stem(label, self.label_suffix)}.jpg.\n{self.expected_layout()}"
                )
            pairs.append((image, label))
        if not pairs:
            raise DatasetError(f"{label_dir} holds no {self.label_suffix} labels.\n{self.expected_layout()}")
        self.datasets["val"] = SemanticSegDataset(
            pairs,
            num_classes=self.num_classes,
            ignore_index=int(self.ignore_index),
            transform=ResizeShortestEdge(self.eval_short_side, self.eval_max_long_side),
        )

    def label_image_pairs(self) -> list[tuple[Path, Path | None]]:
        """Every label file of the set with its image (None where it has none), in name order."""
        image_dir, label_dir = Path(self.root) / self.image_dir, Path(self.root) / self.label_dir
        images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        return [(label, images.get(label_stem(label, self.label_suffix))) for label in sorted(label_dir.glob(f"*{self.label_suffix}"))]

    def train_dataloader(self):
        self.setup("fit")
