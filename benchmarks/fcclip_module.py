"""FC-CLIP's module for ``bench_model.py --method fcclip``: its recipe, random weights, built on the device.

``experiments/fcclip_coco.yaml`` (``--tiny``: ``fcclip_tiny.yaml``) with ``model.clip.pretrained=null`` (a
random ConvNeXt-L CLIP: the same speed as the laion weights), through the project's own builder, with the
first ``--num-classes`` classes of FC-CLIP's COCO vocabulary as training and test vocabulary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def build_fcclip_module(args: argparse.Namespace, device: torch.device):
    from odise_pl.config import load_config
    from odise_pl.models.builder import build_model
    from odise_pl.vocab import load_builtin

    name = "fcclip_tiny.yaml" if args.tiny else "fcclip_coco.yaml"
    cfg = load_config(EXPERIMENTS / name, ["model.clip.pretrained=null"])
    categories = load_builtin("coco_panoptic_with_prompt_eng_fcclip").to_categories()[: args.num_classes]
    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the device
        module = build_model(cfg, categories)
    return module.to(device)
