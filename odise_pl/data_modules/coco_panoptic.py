"""Any dataset in the COCO panoptic format, and its LightningDataModule.

Format: a JSON with ``images`` (id, file_name, height, width), ``annotations`` (image_id,
file_name of the PNG, ``segments_info``: id, category_id, area, bbox, iscrowd) and
``categories`` (id, name, isthing); RGB PNGs whose pixels encode the segment id as
``R + 256 G + 256^2 B`` (0 = VOID).  Captions come from an optional COCO captions JSON,
joined by image id.  Class indices are contiguous in the JSON's category order.

Example (needs the COCO panoptic files, so not a doctest)::

    dm = CocoPanopticDataModule(root="datasets/coco", batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))   # see docs/architecture.md
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from odise_pl.data_modules.coco_captions import load_captions
from odise_pl.data_modules.collate import PanopticCollate
from odise_pl.data_modules.panoptic_files import (
    PanopticRecord,
    load_panoptic_json,
    read_json,
    read_rgb_image,
)
from odise_pl.data_modules.sampling import (
    InferenceShardSampler,
    ResumableDataLoader,
    ResumableShuffleSampler,
    current_world,
    seed_worker,
)
from odise_pl.data_modules.transforms import LargeScaleJitter, ResizeShortestEdge, build_targets, image_to_tensor
from odise_pl.errors import ConfigError, DatasetError
from odise_pl.formats.coco_panoptic import id_to_rgb, read_label_image, read_panoptic_png
from odise_pl.registry import DATA_MODULES


class CocoPanopticDataset(Dataset):
    """Items for :class:`~odise_pl.data_modules.collate.PanopticCollate`.

    Args:
        records: from :func:`load_panoptic_json`.
        transform: :class:`LargeScaleJitter` (training) or :class:`ResizeShortestEdge`.
        train: training items (targets only) or evaluation items (plus original-size ground truth).
        ignore_index: label of VOID pixels in ``gt_semantic``.
        skip_bad_samples: skip (and count) unreadable samples instead of raising.
        json_path: named in error messages.
        semantic_dir: evaluation items read ``gt_semantic`` from ``<semantic_dir>/<image stem>.png``
            (class indices, ``ignore_index`` unlabeled) instead of deriving it from the panoptic PNG.
        num_classes: the valid semantic labels are 0..num_classes-1 (checked with ``semantic_dir``).
    """

    def __init__(
        self,
        records: list[PanopticRecord],
        *,
        transform,
        train: bool,
        ignore_index: int = 255,
        skip_bad_samples: bool = False,
        json_path: Path | str = "",
        semantic_dir: Path | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.records = records
        self.semantic_dir = None if semantic_dir is None else Path(semantic_dir)
        self.num_classes = num_classes
        self.transform = transform
        self.train = train
        self.ignore_index = ignore_index
        self.skip_bad_samples = skip_bad_samples
        self.json_path = json_path
        # shared with DataLoader workers, so the main process sees what they skipped
        self._bad = torch.zeros(len(records), dtype=torch.bool).share_memory_()
        self.rng = np.random.default_rng(torch.initial_seed() % 2**63)

    def reseed(self, seed: int | np.random.SeedSequence) -> None:
        """Replace the generator of the random transforms."""
        self.rng = np.random.default_rng(seed)

    @property
    def num_skipped(self) -> int:
        """How many distinct samples were skipped as unreadable so far."""
        return int(self._bad.sum())

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        """``index``, or ``(index, sample_seed)`` from :class:`ResumableShuffleSampler` (seeds the augmentation)."""
        index, rng = (key, None) if isinstance(key, (int, np.integer)) else (int(key[0]), np.random.default_rng(key[1]))
        if not self.skip_bad_samples:
            return self.load(index, rng)
        # training replaces a bad sample by the next good one; evaluation drops it (None)
        for attempt in range(len(self) if self.train else 1):
            j = (index + attempt) % len(self)
            if bool(self._bad[j]):
                continue
            try:
                return self.load(j, rng)
            except DatasetError as err:
                self._bad[j] = True
                warnings.warn(f"skipping bad sample {j}: {err}", stacklevel=2)
        if self.train:
            raise DatasetError(f"every sample of {self.json_path} failed to load; see the warnings.")
        return None

    def load(self, index: int, rng: np.random.Generator | None = None) -> dict:
        """Read, check and transform sample ``index`` (raises :class:`DatasetError` if bad).

        ``rng`` draws the random augmentation (default: the dataset's own generator).
        """
        rec = self.records[index]
        ids = read_panoptic_png(rec.panoptic_path).astype(np.int64)  # (H, W)
        image = read_rgb_image(rec.image_path, ids.shape)  # (H, W, 3)
        if image.shape[:2] != ids.shape:
            raise DatasetError(
                f"image {rec.image_path} is {image.shape[1]}x{image.shape[0]} but its "
                f"panoptic PNG {rec.panoptic_path} is {ids.shape[1]}x{ids.shape[0]}."
            )
        present = distinct_ids(ids)
        known = {s["id"]: s for s in rec.segments}
        unknown = [int(u) for u in present if u != 0 and int(u) not in known]
        if unknown:
            u = unknown[0]
            raise DatasetError(
                f"panoptic PNG {rec.panoptic_path} contains segment id {u} (RGB "
                f"{', '.join(map(str, id_to_rgb(u).tolist()))}) that is not in segments_info of image id "
                f"{rec.image_id} in {self.json_path}; the PNG and the JSON do not match."
            )
        image_t, ids_t, valid = self.transform(image, ids, self.rng if rng is None else rng)
        target = build_targets(ids_t, rec.segments, rec.image_id)
        if not self.train:
            lut = np.array([known[int(u)]["category"] if int(u) in known else self.ignore_index for u in present], dtype=np.int64)
            # every listed segment with its JSON area, pixel-less ones too: PQ takes them as the
            # COCO panoptic API does (a listed segment without pixels is a false negative)
            target.update(
                orig_size=(int(ids.shape[0]), int(ids.shape[1])),
                gt_panoptic=torch.from_numpy(ids),
                gt_segments=[
                    {"id": s["id"], "category": s["category"], "iscrowd": s["iscrowd"], "isthing": s["isthing"], "area": s.get("area")}
                    for s in rec.segments
                ],
                gt_semantic=(
                    self.read_semantic(rec, ids.shape)
                    if self.semantic_dir is not None
                    else torch.from_numpy(lut[np.searchsorted(present, ids)])
                ),
                file_name=str(rec.image_path),
            )
        return {"image": image_to_tensor(image_t), "image_size": valid, "target": target, "captions": rec.captions}

    def read_semantic(self, rec: PanopticRecord, shape: tuple[int, int]) -> torch.Tensor:
        """(H, W) int64 ``gt_semantic`` of ``rec`` from ``semantic_dir``, checked against the panoptic map."""
        path = self.semantic_dir / f"{rec.image_path.stem}.png"
        if not path.is_file():
            raise DatasetError(
                f"semantic label map {path} (of image {rec.image_path}) does not exist; "
                "it is the mIoU ground truth (data.val_semantic_dir)."
            )
        labels = torch.from_numpy(read_label_image(path))
        if tuple(labels.shape) != tuple(shape):
            raise DatasetError(
                f"semantic label map {path} is {labels.shape[1]}x{labels.shape[0]} but the "
                f"panoptic PNG {rec.panoptic_path} is {shape[1]}x{shape[0]}."
            )
        bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= (self.num_classes or 1 << 30)))
        if bool(bad.any()):
            raise DatasetError(
                f"semantic label map {path} holds the label {int(labels[bad][0])}, outside "
                f"0..{self.num_classes - 1} and not the ignore label {self.ignore_index}."
            )
        return labels


def distinct_ids(ids: np.ndarray) -> np.ndarray:
    """The sorted distinct values of an id map, as ``np.unique(ids)``.

    Panoptic maps are runs of equal ids, so only the first pixel of every run (in raster order)
    is sorted: ~10x faster than ``np.unique`` over all pixels on COCO-sized maps, where that sort
    was half of the training loader's CPU time.  ``np.searchsorted(result, ids)`` is the inverse.
    """
    flat = ids.reshape(-1)
    if flat.size == 0:
        return flat.copy()
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    return np.unique(np.concatenate([flat[:1], flat[starts]]))


# ----------------------------------------------------------------------------- data module
@dataclass
class CocoPanopticConfig:
    """``data: {name: coco_panoptic, ...}``; paths are relative to ``root``. Defaults: the reference."""

    root: str = "datasets/coco"
    train_json: str = "annotations/panoptic_train2017.json"
    train_image_dir: str = "train2017"
    train_panoptic_dir: str = "panoptic_train2017"
    val_json: str = "annotations/panoptic_val2017.json"
    val_image_dir: str = "val2017"
    val_panoptic_dir: str = "panoptic_val2017"
    # semantic ground truth of mIoU, label PNGs named like the images (null: from the panoptic PNG)
    train_semantic_dir: str | None = None
    val_semantic_dir: str | None = None
    train_captions_json: str | None = None  # e.g. annotations/captions_train2017.json
    val_captions_json: str | None = None
    batch_size: int = 2  # per process; the reference uses 64 in total (2 x 32 GPUs)
    # images per optimizer step over all processes; batch_size is then the largest per-device batch
    # and the gradient accumulation adapts to the number of devices (odise_pl.engine.scale_out)
    global_batch_size: int | None = None
    eval_batch_size: int = 1
    num_workers: int = 4
    crop_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    flip: bool = True
    eval_short_side: int = 1024
    eval_max_long_side: int = 2560
    size_divisibility: int = 32  # the model may raise it to its backbone's
    vocabulary: str | None = None  # null: JSON names; else an odise_pl.vocab builtin or a file (the
    # reference recipe: coco_panoptic_with_prompt_eng)
    vocabulary_variant: str | None = None  # a method's copy of a builtin list where it ships one (fcclip)
    ignore_index: int = 255
    skip_bad_samples: bool = False
    pin_memory: bool = True


def clean_category_name(name: str) -> str:
    """COCO stuff names to plain words: ``wall-other-merged`` -> ``wall``."""
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return name.replace("-", " ").replace("_", " ").strip()


def vocabulary_synonyms(vocabulary: str, num_classes: int, variant: str | None = None) -> list[list[str]]:
    """All names per class (display name first) from a vocabulary, aligned by class order.

    Args:
        vocabulary: a builtin name of :mod:`odise_pl.vocab` (``coco_panoptic_with_prompt_eng``)
            or the path of a vocabulary file.
        num_classes: the number of categories of the dataset JSON (must match).
        variant: ``data.vocabulary_variant`` (:func:`odise_pl.vocab.builtin_variant`; builtins only).
    """
    from odise_pl.vocab import load_vocabulary

    vocab = load_vocabulary(vocabulary, variant)
    if len(vocab) != num_classes:
        raise ConfigError(
            f"data.vocabulary={vocabulary!r} has {len(vocab)} classes but the dataset JSON "
            f"has {num_classes} categories; pick a vocabulary of this dataset or null."
        )
    return vocab.synonyms


@DATA_MODULES.register("coco_panoptic", config=CocoPanopticConfig)
class CocoPanopticDataModule(L.LightningDataModule):
    """COCO-panoptic-format data: LSJ training batches, resized evaluation batches.

    Keyword arguments are the fields of :class:`CocoPanopticConfig`.  ``categories``,
    ``num_classes`` and ``is_thing`` are read from the JSON on first access (before
    ``setup``).  ``size_divisibility`` may be changed before the dataloaders are built.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__()
        cfg = CocoPanopticConfig(**kwargs)
        for key, value in asdict(cfg).items():
            setattr(self, key, value)
        self.datasets: dict[str, CocoPanopticDataset] = {}
        self._categories: list[dict] | None = None

    @classmethod
    def from_config(cls, cfg: CocoPanopticConfig, **context) -> CocoPanopticDataModule:
        return cls(**asdict(cfg))

    # ------------------------------------------------------------------ paths and layout
    def _path(self, relative: str) -> Path:
        return Path(self.root) / relative

    def expected_layout(self) -> str:
        """The directory layout this configuration expects (quoted in error messages)."""
        lines = [f"Expected COCO panoptic layout under data.root={self.root}:"]
        for split in ("train", "val"):
            get = partial(getattr, self)
            lines += [
                f"  {get(split + '_image_dir')}/   images named as in 'images[].file_name'",
                f"  {get(split + '_panoptic_dir')}/   PNGs named as in 'annotations[].file_name' (id = R + 256 G + 256^2 B)",
                f"  {get(split + '_json')}   COCO panoptic JSON",
            ]
            if get(split + "_semantic_dir"):
                lines.append(
                    f"  {get(split + '_semantic_dir')}/   semantic label PNGs named like the images "
                    f"(the mIoU ground truth; {self.ignore_index} unlabeled)"
                )
            if get(split + "_captions_json"):
                lines.append(f"  {get(split + '_captions_json')}   COCO captions JSON")
        lines.append("Paths are relative to data.root; override data.train_json etc. to change them.")
        return "\n".join(lines)

    def _check_dir(self, path: Path, what: str) -> None:
        if not path.is_dir():
            raise DatasetError(f"{what} {path} does not exist.\n{self.expected_layout()}")

    # ------------------------------------------------------------------ categories
    @property
    def categories(self) -> list[dict]:
        """``[{id, name, isthing, synonyms}]`` in contiguous-index order."""
        if self._categories is None:
            self._check_dir(Path(self.root), "dataset root")
            json_path = self._path(self.val_json)
            if not json_path.is_file() and self._path(self.train_json).is_file():
                json_path = self._path(self.train_json)
            data = read_json(json_path, "panoptic JSON", self.expected_layout())
            cats = data.get("categories") if isinstance(data, dict) else None
            if not isinstance(cats, list) or not cats:
                raise DatasetError(f"panoptic JSON {json_path} has no 'categories' list.")
            try:
                self._set_categories(cats)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
                if isinstance(err, (DatasetError, ConfigError)):
                    raise
                raise DatasetError(
                    f"panoptic JSON {json_path}: bad 'categories' entry ({type(err).__name__}: "
                    f"{err}); each needs 'id' (int), 'name' and 'isthing' (0/1)."
                ) from None
        return self._categories

    def _set_categories(self, cats: list[dict]) -> None:
        """Categories in the JSON's (contiguous) order; with ``vocabulary`` its names replace the JSON's.

        With a vocabulary, class k's names are exactly the vocabulary's k-th synonym list in file order
        (``name`` its first entry, the reference's display name), as the reference's
        ``get_openseg_labels``; without, the JSON name and its cleaned form.
        """
        if self.vocabulary:
            synonyms = vocabulary_synonyms(self.vocabulary, len(cats), self.vocabulary_variant)
            names = [syn[0] for syn in synonyms]
        else:
            synonyms = [[clean_category_name(str(c["name"]))] for c in cats]
            names = [str(c["name"]) for c in cats]
        self._categories = [
            {"id": int(c["id"]), "name": name, "isthing": bool(c["isthing"]), "synonyms": syn}
            for c, name, syn in zip(cats, names, synonyms)
        ]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def is_thing(self) -> list[bool]:
        return [c["isthing"] for c in self.categories]

    @property
    def num_skipped(self) -> int:
        """Bad samples skipped so far (``skip_bad_samples=true``), over all splits."""
        return sum(ds.num_skipped for ds in self.datasets.values())

    # ------------------------------------------------------------------ datasets
    def _build(self, split: str, train: bool) -> CocoPanopticDataset:
        layout = self.expected_layout()
        json_path = self._path(getattr(self, f"{split}_json"))
        image_dir = self._path(getattr(self, f"{split}_image_dir"))
        panoptic_dir = self._path(getattr(self, f"{split}_panoptic_dir"))
        if not json_path.is_file():
            raise DatasetError(f"panoptic JSON {json_path} does not exist.\n{layout}")
        self._check_dir(image_dir, "image directory")
        self._check_dir(panoptic_dir, "panoptic PNG directory")
        cats, records = load_panoptic_json(json_path, image_dir, panoptic_dir, layout=layout)
        captions_json = getattr(self, f"{split}_captions_json")
        if captions_json:
            captions = load_captions(self._path(captions_json), [r.image_id for r in records])
            for rec in records:
                rec.captions = captions[rec.image_id]
        if [int(c["id"]) for c in cats] != [c["id"] for c in self.categories]:
            raise DatasetError(
                f"the categories of {json_path} differ from those of the other split "
                "(ids or order); both splits must list the same categories."
            )
        transform = (
            LargeScaleJitter(self.crop_size, self.min_scale, self.max_scale, self.flip)
            if train
            else ResizeShortestEdge(self.eval_short_side, self.eval_max_long_side)
        )
        semantic = getattr(self, f"{split}_semantic_dir")
        semantic_dir = None if train or not semantic else self._path(semantic)
        if semantic_dir is not None:
            self._check_dir(semantic_dir, "semantic label directory")
        return CocoPanopticDataset(
            records,
            transform=transform,
            train=train,
            ignore_index=self.ignore_index,
            skip_bad_samples=self.skip_bad_samples,
            json_path=json_path,
            semantic_dir=semantic_dir,
            num_classes=len(cats),
        )

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets a stage needs (``fit``: train + val; others: val)."""
        self._check_dir(Path(self.root), "dataset root")
        if stage in (None, "fit") and "train" not in self.datasets:
            self.datasets["train"] = self._build("train", train=True)
        if "val" not in self.datasets:
            self.datasets["val"] = self._build("val", train=False)

    # ------------------------------------------------------------------ loaders
    def _loader(self, dataset: CocoPanopticDataset, train: bool) -> DataLoader:
        world, rank = current_world(self.trainer)
        workers = int(self.num_workers)
        if workers == 0:
            dataset.reseed(np.random.SeedSequence([torch.initial_seed() % 2**63, rank]))
        common = dict(
            num_workers=workers,
            collate_fn=PanopticCollate(self.size_divisibility),
            pin_memory=bool(self.pin_memory and torch.cuda.is_available()),
            persistent_workers=workers > 0,
            worker_init_fn=partial(seed_worker, rank=rank) if workers > 0 else None,
            # a private generator: loading never draws from the global RNG that training uses
            generator=torch.Generator().manual_seed((torch.initial_seed() + rank) % 2**63),
        )
        if train:  # seeded by seed_everything(seed); the position is saved in checkpoints
            sampler = ResumableShuffleSampler(dataset, seed=torch.initial_seed(), num_replicas=world, rank=rank)
            return ResumableDataLoader(
                dataset, batch_size=self.batch_size, sampler=sampler, drop_last=len(sampler) >= self.batch_size, **common
            )
        sampler = InferenceShardSampler(dataset, num_replicas=world, rank=rank)
        return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, **common)

    def train_dataloader(self) -> DataLoader:
        if "train" not in self.datasets:
            self.setup("fit")
        return self._loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        if "val" not in self.datasets:
            self.setup("validate")
        return self._loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        """COCO has no public panoptic test annotations: the test stage uses the val split."""
        return self.val_dataloader()
