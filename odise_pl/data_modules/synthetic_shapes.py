"""Procedural "shapes over backgrounds" data written exactly in the COCO panoptic format.

Things are flat-coloured shapes (circle, square, triangle, star, cross) with per-instance
colour jitter and occlusion order; stuff are textured regions (sky, grass, water, sand,
wall) from 2-4 wavy bands.  Some images hold a crowd segment (a cluster of tiny shapes,
``iscrowd=1``) and VOID pixels (an unlabeled noise patch, too-occluded shapes).

Layout written under ``DIR`` (the COCO layout, so :mod:`coco_panoptic` reads it)::

    DIR/{train,val}2017/*.jpg                      RGB images
    DIR/panoptic_{train,val}2017/*.png             id = R + 256 G + 256^2 B, 0 = VOID
    DIR/panoptic_semseg_{train,val}2017/*.png      contiguous class index, 255 = VOID
    DIR/annotations/panoptic_{train,val}2017.json  images, annotations, categories
    DIR/annotations/captions_{train,val}2017.json  3-5 captions per image
    DIR/synthetic_shapes.json                      the generation parameters

Example (writes files and takes seconds per image on a CPU, so not a doctest)::

    generate_synthetic_coco("data/shapes", num_train=1000, num_val=100, seed=0)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from odise_pl.atomic_files import write_json, write_text
from odise_pl.data_modules.coco_panoptic import CocoPanopticConfig, CocoPanopticDataModule
from odise_pl.errors import DatasetError
from odise_pl.formats.coco_panoptic import id_to_rgb
from odise_pl.registry import DATA_MODULES

GENERATOR_VERSION = 1
THINGS = ("circle", "square", "triangle", "star", "cross")
STUFF = ("sky", "grass", "water", "sand", "wall")
# original ids are non-contiguous on purpose (as in COCO), JSON order = contiguous order
CATEGORY_IDS = {"circle": 1, "square": 2, "triangle": 3, "star": 5, "cross": 7, "sky": 21, "grass": 22, "water": 24, "sand": 25, "wall": 27}
PALETTE = {
    "red": (215, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "purple": (140, 50, 190),
    "pink": (245, 120, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "cyan": (20, 215, 215),
}
DEFAULT_COLOUR = {"circle": "red", "square": "yellow", "triangle": "purple", "star": "orange", "cross": "black"}
STUFF_COLOUR = {"sky": (135, 190, 235), "grass": (60, 150, 50), "water": (30, 70, 150), "sand": (220, 195, 140), "wall": (150, 140, 135)}
PLURAL = {"cross": "crosses"}
NUMBER = ("no", "a", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
SPLITS = ("train", "val")


def categories_json() -> list[dict]:
    """The category list (things first, then stuff) as written to the panoptic JSON."""
    cats = [
        {"id": CATEGORY_IDS[n], "name": n, "isthing": 1, "supercategory": "shape", "color": list(PALETTE[DEFAULT_COLOUR[n]])}
        for n in THINGS
    ]
    cats += [{"id": CATEGORY_IDS[n], "name": n, "isthing": 0, "supercategory": "background", "color": list(STUFF_COLOUR[n])} for n in STUFF]
    return cats


@dataclass
class _Instance:
    category: str
    colour: str
    segment_id: int
    iscrowd: bool = False


# ----------------------------------------------------------------------------- drawing
def _stuff_texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) float texture of stuff class ``name`` (base colour + pattern + noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.asarray(STUFF_COLOUR[name], np.float32) + rng.uniform(-10, 10, 3).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    if name == "sky":  # lighter towards the top, soft noise
        pattern = 25 * (0.5 - yy)
    elif name == "grass":  # thin vertical blades
        pattern = np.where((xx * size + 3 * np.sin(yy * 40 + phase)) % 4 < 2, -28.0, 8.0)
    elif name == "water":  # horizontal waves
        pattern = 22 * np.sin(yy * size * 0.9 + 3 * np.sin(xx * 12 + phase))
    elif name == "sand":  # speckles
        pattern = np.where(rng.random((size, size)) < 0.15, -35.0, 0.0)
    else:  # wall: bricks with dark mortar lines
        row = np.floor(yy * size / 8)
        shifted = xx * size + 8 * (row % 2)
        pattern = np.where((yy * size % 8 < 1) | (shifted % 16 < 1), -60.0, 0.0)
    noise = rng.normal(0, 5 if name == "sky" else 8, (size, size)).astype(np.float32)
    return base[None, None, :] + (pattern + noise)[..., None]


def _stuff_layout(num: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) int region index 0..num-1 from num-1 wavy split boundaries."""
    along, across = np.mgrid[0:size, 0:size].astype(np.float32)
    if rng.random() < 0.3:  # vertical bands instead of horizontal ones
        along, across = across, along
    region = np.zeros((size, size), np.int64)
    for i in range(1, num):
        cut = (i + rng.uniform(-0.3, 0.3)) / num * size
        wave = rng.uniform(0, 0.06 * size) * np.sin(2 * np.pi * rng.uniform(0.5, 2) * across / size + rng.uniform(0, 2 * np.pi))
        region += along >= cut + wave
    return region


def _shape_mask(category: str, cx: float, cy: float, r: float, angle: float, size: int) -> np.ndarray:
    """(size, size) bool mask of one shape centred at (cx, cy) with radius r."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    if category == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        if category == "square":
            radii, angles = [r] * 4, np.arange(4) * np.pi / 2 + np.pi / 4
        elif category == "triangle":
            radii, angles = [r] * 3, np.arange(3) * 2 * np.pi / 3
        elif category == "star":
            radii, angles = [r, 0.45 * r] * 5, np.arange(10) * np.pi / 5
        else:  # cross: a plus sign of arm half-width w
            w = 0.33 * r
            pts = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
            radii = [np.hypot(x, y) for x, y in pts]
            angles = np.array([np.arctan2(y, x) for x, y in pts])
        angles = np.asarray(angles) + angle
        poly = [(cx + rad * np.cos(a), cy + rad * np.sin(a)) for rad, a in zip(radii, angles)]
        draw.polygon(poly, fill=1)
    return np.asarray(canvas, dtype=bool)


def _thing_colour(category: str, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    names = list(PALETTE)
    colour = DEFAULT_COLOUR[category] if rng.random() < 0.7 else names[rng.integers(len(names))]
    rgb = np.clip(np.asarray(PALETTE[colour], np.float32) + rng.uniform(-18, 18, 3), 0, 255)
    return colour, rgb.astype(np.float32)


def _draw_image(size: int, rng: np.random.Generator):
    """Draw one image. Returns (image (H,W,3) uint8, ids (H,W) int64, instances, stuff names)."""
    image = np.zeros((size, size, 3), np.float32)
    ids = np.zeros((size, size), np.int64)
    used = set()

    def new_id() -> int:
        while True:
            sid = int(rng.integers(1, 256**3))
            if sid not in used:
                used.add(sid)
                return sid

    num_stuff = int(rng.choice([2, 3, 4], p=[0.4, 0.4, 0.2]))
    stuff = [STUFF[i] for i in rng.choice(len(STUFF), num_stuff, replace=False)]
    region = _stuff_layout(num_stuff, size, rng)
    instances = []
    for i, name in enumerate(stuff):
        inside = region == i
        image[inside] = _stuff_texture(name, size, rng)[inside]
        instances.append(_Instance(name, "", new_id()))
        ids[inside] = instances[-1].segment_id
    if rng.random() < 0.3:  # an unlabeled (VOID) noise patch
        h, w = (rng.uniform(0.1, 0.22, 2) * size).astype(int) + 2
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        image[y : y + h, x : x + w] = rng.uniform(0, 255, (h, w, 3))
        ids[y : y + h, x : x + w] = 0
    if rng.random() < 0.2:  # a crowd: a cluster of tiny shapes as one iscrowd segment
        category = THINGS[rng.integers(len(THINGS))]
        colour, rgb = _thing_colour(category, rng)
        crowd = _Instance(category, colour, new_id(), iscrowd=True)
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        for _ in range(int(rng.integers(8, 15))):
            dx, dy = rng.uniform(-0.13, 0.13, 2) * size
            m = _shape_mask(category, cx + dx, cy + dy, rng.uniform(0.015, 0.03) * size, rng.uniform(0, 2 * np.pi), size)
            image[m], ids[m] = rgb, crowd.segment_id
        instances.append(crowd)
    for _ in range(int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.25, 0.25, 0.2, 0.15]))):
        category = THINGS[rng.integers(len(THINGS))]
        colour, rgb = _thing_colour(category, rng)
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        m = _shape_mask(category, cx, cy, r, rng.uniform(0, 2 * np.pi), size)
        image[m] = rgb + rng.normal(0, 3, (int(m.sum()), 3))
        instances.append(_Instance(category, colour, new_id()))
        ids[m] = instances[-1].segment_id
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, ids, instances, stuff


def _segments(ids: np.ndarray, instances: list[_Instance], min_area: int):
    """segments_info of the visible instances; too-occluded ones become VOID (in place)."""
    segments, kept = [], []
    for inst in instances:
        mask = ids == inst.segment_id
        area = int(mask.sum())
        if area == 0 or (inst.category in THINGS and area < min_area):
            ids[mask] = 0
            continue
        ys, xs = np.nonzero(mask)
        x0, y0 = int(xs.min()), int(ys.min())
        segments.append(
            {
                "id": inst.segment_id,
                "category_id": CATEGORY_IDS[inst.category],
                "area": area,
                "bbox": [x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1],
                "iscrowd": int(inst.iscrowd),
            }
        )
        kept.append(inst)
    return segments, kept


# ----------------------------------------------------------------------------- captions
def _count(n: int, noun: str) -> str:
    word = NUMBER[n] if n < len(NUMBER) else str(n)
    word = "an" if word == "a" and noun[0] in "aeiou" else word
    return f"{word} {noun if n == 1 else PLURAL.get(noun, noun + 's')}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _captions(instances: list[_Instance], rng: np.random.Generator) -> list[str]:
    """3-5 captions naming the visible things (with counts, colours, plurals) and the stuff."""
    things = [i for i in instances if i.category in THINGS and not i.iscrowd]
    crowd = [i for i in instances if i.iscrowd]
    stuff = [i.category for i in instances if i.category in STUFF]
    by_shape: dict[str, int] = {}
    by_colour: dict[tuple[str, str], int] = {}
    for inst in things:
        by_shape[inst.category] = by_shape.get(inst.category, 0) + 1
        by_colour[(inst.colour, inst.category)] = by_colour.get((inst.colour, inst.category), 0) + 1
    extra = [f"a cluster of tiny {PLURAL.get(c.category, c.category + 's')}" for c in crowd]
    shapes = _join([_count(n, c) for c, n in by_shape.items()] + extra) if things or crowd else ""
    coloured = _join([_count(n, f"{col} {c}") for (col, c), n in by_colour.items()] + extra) if things or crowd else ""
    ground = _join([("a " + s) if s == "wall" else s for s in stuff])
    total = len(things)
    templates = [
        f"{coloured} over {ground}.",
        f"{shapes} in front of {ground}.",
        f"a picture of {coloured}.",
        f"{ground} with {shapes} on top.",
        f"a scene of {ground} with {coloured}.",
        f"there {'is' if total == 1 else 'are'} {_count(total, 'shape')} on {ground}.",
    ]
    if not (things or crowd):
        templates = [f"a picture of {ground}.", f"an empty scene of {ground}.", f"{ground} and nothing else.", f"a texture of {ground}."]
    order = rng.permutation(len(templates))[: int(rng.integers(3, 6))]
    return [templates[i][0].upper() + templates[i][1:] for i in sorted(order)]


# ----------------------------------------------------------------------------- writing
def _semantic(ids: np.ndarray, segments: list[dict]) -> np.ndarray:
    contiguous = {c["id"]: i for i, c in enumerate(categories_json())}
    sem = np.full(ids.shape, 255, np.uint8)
    for seg in segments:
        sem[ids == seg["id"]] = contiguous[seg["category_id"]]
    return sem


def _write_split(out: Path, split: str, count: int, seed: int, size: int, quality: int) -> None:
    image_dir, pan_dir, sem_dir = (out / f"{split}2017", out / f"panoptic_{split}2017", out / f"panoptic_semseg_{split}2017")
    for d in (image_dir, pan_dir, sem_dir, out / "annotations"):
        d.mkdir(parents=True, exist_ok=True)
    images, annotations, captions = [], [], []
    first_id = 1 if split == "train" else 1_000_001
    min_area = max(12, int(0.004 * size * size))
    for i in range(count):
        image_id = first_id + i
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        image, ids, instances, _ = _draw_image(size, rng)
        segments, kept = _segments(ids, instances, min_area)
        stem = f"{image_id:012d}"
        Image.fromarray(image).save(image_dir / f"{stem}.jpg", quality=quality, subsampling=0)
        Image.fromarray(id_to_rgb(ids)).save(pan_dir / f"{stem}.png")
        Image.fromarray(_semantic(ids, segments)).save(sem_dir / f"{stem}.png")
        images.append({"id": image_id, "file_name": f"{stem}.jpg", "height": size, "width": size})
        annotations.append({"image_id": image_id, "file_name": f"{stem}.png", "segments_info": segments})
        for text in _captions(kept, rng):
            captions.append({"id": len(captions) + 1 + first_id * 10, "image_id": image_id, "caption": text})
    info = {"description": f"odise-pl synthetic shapes ({split})", "version": str(GENERATOR_VERSION)}
    panoptic = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories_json()}
    write_text(out / "annotations" / f"panoptic_{split}2017.json", json.dumps(panoptic))
    caption_json = {"info": info, "licenses": [], "images": images, "annotations": captions}
    write_text(out / "annotations" / f"captions_{split}2017.json", json.dumps(caption_json))


def generate_synthetic_coco(
    out_dir: str | os.PathLike,
    num_train: int,
    num_val: int,
    seed: int,
    image_size: int = 128,
    *,
    jpeg_quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """Generate a synthetic dataset in the COCO panoptic layout (see the module docstring).

    The same arguments give byte-identical files; image ``i`` of a split depends only on
    ``(seed, split, i)``.  Files are written to a temporary sibling folder that is renamed
    into place at the end, so an interrupted run leaves no half-written dataset.

    Args:
        out_dir: destination folder; must not exist (or be empty) unless ``overwrite``.
        num_train: number of training images.
        num_val: number of validation images.
        seed: random seed.
        image_size: side of the square images, in pixels.
        jpeg_quality: JPEG quality of the images (4:4:4 chroma).
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        The dataset folder.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(
            f"{out} exists and is not empty; pass overwrite=True (--overwrite) or choose another folder. Nothing was written."
        )
    if image_size < 32 or num_train < 0 or num_val < 0:
        raise DatasetError(f"bad synthetic dataset size: image_size={image_size} (>= 32), num_train={num_train}, num_val={num_val} (>= 0)")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, count in (("train", num_train), ("val", num_val)):
        _write_split(tmp, split, count, seed, image_size, jpeg_quality)
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "seed": seed,
        "image_size": image_size,
        "jpeg_quality": jpeg_quality,
    }
    write_json(tmp / "synthetic_shapes.json", manifest)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)  # atomic; fails if another process filled `out` meanwhile
    except OSError as err:
        theirs = out / "synthetic_shapes.json"
        same = theirs.is_file() and json.loads(theirs.read_text()) == manifest
        shutil.rmtree(tmp, ignore_errors=True)
        if not same:
            raise DatasetError(f"{out} was filled by someone else while generating; nothing was written.") from err
    return out


# ----------------------------------------------------------------------------- command line
def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments of ``odise-pl data synth`` to ``parser``."""
    parser.add_argument("--out", required=True, help="destination folder (COCO panoptic layout)")
    parser.add_argument("--num-train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--num-val", type=int, default=100, help="validation images (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=128, help="square image side (default 128)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    return parser


def run_synth(args: argparse.Namespace) -> int:
    """Run ``odise-pl data synth`` with parsed ``args``; returns the exit code."""
    start = time.perf_counter()
    out = generate_synthetic_coco(args.out, args.num_train, args.num_val, args.seed, args.image_size, overwrite=args.overwrite)
    print(f"wrote {args.num_train} train + {args.num_val} val images ({args.image_size}px) to {out} in {time.perf_counter() - start:.1f} s")
    return 0


# ----------------------------------------------------------------------------- data module
@dataclass
class SyntheticShapesConfig(CocoPanopticConfig):
    """``data: {name: synthetic_shapes}``: the COCO panoptic module on a generated folder."""

    root: str = "data/synthetic_shapes"
    num_train: int = 1000
    num_val: int = 100
    seed: int = 0
    image_size: int = 128
    train_captions_json: str | None = "annotations/captions_train2017.json"
    val_captions_json: str | None = "annotations/captions_val2017.json"
    batch_size: int = 8
    eval_batch_size: int = 8
    num_workers: int = 2
    crop_size: int = 128
    min_scale: float = 0.5
    max_scale: float = 1.5
    eval_short_side: int = 128
    eval_max_long_side: int = 256


@DATA_MODULES.register("synthetic_shapes", config=SyntheticShapesConfig)
class SyntheticShapesDataModule(CocoPanopticDataModule):
    """:class:`CocoPanopticDataModule` on generated shapes; generates them on first use."""

    def __init__(self, *, num_train: int = 1000, num_val: int = 100, seed: int = 0, image_size: int = 128, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generation = {
            "generator_version": GENERATOR_VERSION,
            "num_train": num_train,
            "num_val": num_val,
            "seed": seed,
            "image_size": image_size,
        }

    def prepare_data(self) -> None:
        """Generate the folder if absent; refuse a folder generated with other parameters."""
        root = Path(self.root)
        manifest = root / "synthetic_shapes.json"
        if not root.exists() or not any(root.iterdir()):
            g = self.generation
            generate_synthetic_coco(root, g["num_train"], g["num_val"], g["seed"], g["image_size"])
            return
        if manifest.exists():
            found = json.loads(manifest.read_text())
            diff = {k: (found.get(k), v) for k, v in self.generation.items() if found.get(k) != v}
            if diff:
                detail = ", ".join(f"{k}: folder has {a}, config asks {b}" for k, (a, b) in diff.items())
                raise DatasetError(
                    f"{root} holds synthetic shapes generated with other parameters "
                    f"({detail}). Delete the folder or set data.root to another one."
                )

    @property
    def categories(self) -> list[dict]:
        """As :attr:`CocoPanopticDataModule.categories`; generates the folder first if needed."""
        if self._categories is None:
            self.prepare_data()
        return super().categories

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # no-op once generated; lets the module work without a Trainer
        super().setup(stage)
