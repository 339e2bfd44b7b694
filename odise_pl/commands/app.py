"""``odise-pl app``: the web demo of a trained run (Gradio), with a ``/segment`` API.

    odise-pl app --ckpt RUN_DIR|X.ckpt|X.safetensors [-c experiments/X.yaml] [--host 127.0.0.1]
        [--port 7860] [--device cpu|cuda:0] [--max-classes N] [--max-pixels N] [key=value ...]

The model loads once; the page takes an image, a vocabulary in predict's syntax
(cat,kitten;dog;grass:stuff), builtin lists, the default COCO + ADE20K + LVIS vocabulary, the
classifier and CLIP's ensemble weights, and shows the segments with a legend, a table and the
three files predict writes. Scripts call the same function through gradio_client:

    from gradio_client import Client, handle_file
    annotated, segments, *_ = Client("http://127.0.0.1:7860/").predict(
        handle_file("photo.jpg"), "cat;dog;grass:stuff", api_name="/segment")

Gradio's telemetry is off; nothing is fetched from the network.
"""

from __future__ import annotations

import argparse

# a light module (no torch, no gradio): the model and the page are imported when the command runs
from odise_pl.app.session import DEFAULT_MAX_CLASSES, DEFAULT_MAX_PIXELS
from odise_pl.commands.arguments import add_checkpoint_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "app",
        help="web demo of a trained run (Gradio), with a /segment API",
        description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_checkpoint_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument(
        "--max-classes",
        type=int,
        default=DEFAULT_MAX_CLASSES,
        help=f"largest vocabulary one request may use (default {DEFAULT_MAX_CLASSES})",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"larger images are scaled down to this many pixels first (default {DEFAULT_MAX_PIXELS})",
    )
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model.inference.alpha=0.4")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from odise_pl.app.session import DemoSession
    from odise_pl.errors import ConfigError

    if args.max_classes < 1 or args.max_pixels < 1:
        raise ConfigError("--max-classes and --max-pixels must be positive.")
    session = DemoSession.open(
        args.ckpt, args.config, args.overrides, device=args.device, max_classes=args.max_classes, max_pixels=args.max_pixels
    )
    from odise_pl.app.page import launch  # imports gradio

    try:
        launch(session, host=args.host, port=args.port, block=True)
    finally:
        session.close()
    return 0
