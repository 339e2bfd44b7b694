"""``odise-pl retrieval -c X.yaml [--ckpt C]``: image-caption retrieval accuracy of a caption model.

Scores every validation image against every validation caption with the grounding
score of the caption strategy (see
:func:`odise_pl.engine.retrieval.retrieval_accuracy`) and prints
recall@1 and @5 both ways (every caption of every image, the COCO protocol)
beside chance.  Without ``--ckpt`` the untrained model is
measured (the baseline).
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "retrieval",
        help="image-caption retrieval accuracy of a caption model",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-c", "--config", required=True, help="experiment YAML file (caption_grounding supervision)")
    p.add_argument("--ckpt", default=None, help="checkpoint file (default: the untrained model)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--max-batches", type=int, default=None, help="stop after this many validation batches")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    p.set_defaults(func=run)
    return p


def evaluate_retrieval(cfg, ckpt: str | None = None, *, device: str = "cpu", max_batches: int | None = None) -> dict[str, float]:
    """Build the model of ``cfg`` (optionally from a checkpoint) and run
    :func:`~odise_pl.engine.retrieval.retrieval_accuracy` on its validation split."""
    from odise_pl.engine.components import build_all
    from odise_pl.engine.retrieval import retrieval_accuracy
    from odise_pl.engine.weights import load_checkpoint

    dm, model = build_all(cfg)
    if ckpt:
        load_checkpoint(model, ckpt)
    model.to(device)
    dm.setup("validate")
    return retrieval_accuracy(model, dm.val_dataloader(), max_batches=max_batches)


def run(args: argparse.Namespace) -> int:
    from odise_pl.config import load_config

    cfg = load_config(args.config, args.overrides)
    result = evaluate_retrieval(cfg, args.ckpt, device=args.device, max_batches=args.max_batches)
    print(f"{int(result['num_images'])} images, {int(result['num_captions'])} captions (recall %, chance in brackets)")
    for k in (1, 5):
        print(
            f"  R@{k}: image->caption {result[f'i2t_r{k}']:5.1f} ({result[f'i2t_chance_r{k}']:.1f})   "
            f"caption->image {result[f't2i_r{k}']:5.1f} ({result[f't2i_chance_r{k}']:.1f})"
        )
    print(json.dumps(result))
    return 0
