"""``odise-pl predict``: open-vocabulary panoptic segmentation of image files.

    odise-pl predict --ckpt RUN_DIR|X.ckpt|X.safetensors [-c experiments/X.yaml] \\
        --input IMG|DIR|'GLOB' --out OUT [--vocab "cat,kitten;dog;grass:stuff" | --vocab-file F]
        [--no-default-vocab] [--device cuda:0] [key=value ...]

``--ckpt`` is a run directory (``config.yaml``, ``categories.json``, ``weights.safetensors``:
its config is used unless ``-c`` is given; overrides apply on top), a ``.ckpt`` or a
``.safetensors`` file. The training categories travel with it, so no dataset is needed.

The vocabulary is the user's classes first, then (unless ``--no-default-vocab``) the
default COCO + ADE20K-150 + LVIS vocabulary (:func:`odise_pl.vocab.build_vocabulary`);
``--vocab-file`` also takes a builtin list name (``coco_panoptic``, ``ade20k_150``...).

For each input image ``<stem>.<ext>`` it writes into OUT:

* ``<stem>_panoptic.png``: the segment ids, COCO panoptic encoding (id = R + 256 G + 256^2 B,
  0 = no segment), at the image's original size (after EXIF rotation);
* ``<stem>.json``: ``file_name``, ``height``, ``width``, ``classifier``, ``vocabulary_size``
  and ``segments`` (``id``, ``category_id`` = index in the vocabulary, ``category_name``,
  ``score``, ``is_thing``, ``area``, ``bbox`` ``[x, y, w, h]``), one per id of the PNG;
* ``<stem>_overlay.png``: the image with the coloured segments and their class names.

Nothing is ever overwritten: when any of the three files already exists, all three get
the first free numbered stem ``<stem>.1``, ``<stem>.2``... (the note goes to stderr), so
re-running into the same folder keeps earlier results. An unreadable image is reported
by name on stderr and skipped; the exit code is then 1 (0 when all images worked,
2 for a usage / config / checkpoint error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from odise_pl.commands.arguments import add_checkpoint_args

# the writers of the three files, shared with the web demo (odise_pl/app)
from odise_pl.engine.prediction_files import OUTPUT_SUFFIXES, write_outputs


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="segment images with any vocabulary",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_args(p)
    p.add_argument("--input", required=True, help="an image, a folder of images, or a glob pattern (quote it)")
    p.add_argument("--out", required=True, help="output folder (created; existing files are never overwritten)")
    p.add_argument(
        "--vocab",
        default=None,
        help="classes: ';' between classes, ',' between synonyms, optional ':thing'/':stuff', e.g. 'cat,kitten;dog;grass:stuff'",
    )
    p.add_argument("--vocab-file", default=None, help="vocabulary file (one class per line) or a builtin list name")
    p.add_argument("--no-default-vocab", action="store_true", help="do not append the default COCO + ADE20K-150 + LVIS vocabulary")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.inference.classifier=clip")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from odise_pl.engine.predictor import Predictor, list_images
    from odise_pl.errors import DatasetError
    from odise_pl.vocab import build_vocabulary

    vocabulary = build_vocabulary(args.vocab, args.vocab_file, include_default=not args.no_default_vocab)
    images = list_images(args.input)
    if not images:
        raise DatasetError(
            f"no images found at '{args.input}': give an image file, a folder with images, or a quoted glob pattern such as 'photos/*.jpg'."
        )
    out_dir = Path(args.out).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_config_file(args.config, args.ckpt, args.overrides, device=args.device, vocabulary=vocabulary)
    failed: list[str] = []
    for path in tqdm(images, desc="predict", unit="img", file=sys.stderr, dynamic_ncols=True):
        try:
            pred = predictor.predict(predictor.read_image(path))
        except DatasetError as err:
            failed.append(str(path))
            tqdm.write(f"odise-pl predict: skipped {path}: {err}", file=sys.stderr)
            continue
        paths = write_outputs(pred, path, out_dir, predictor)
        if paths[0].name != f"{path.stem}{OUTPUT_SUFFIXES[0]}":
            tqdm.write(
                f"odise-pl predict: outputs for {path.name} exist in {out_dir}; wrote "
                f"{paths[1].name} etc. instead (nothing is overwritten)",
                file=sys.stderr,
            )
    done = len(images) - len(failed)
    print(f"{done} of {len(images)} images segmented into {out_dir} ({len(vocabulary)} classes, classifier: {predictor.classifier})")
    if failed:
        print(f"odise-pl predict: {len(failed)} image(s) could not be read: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
