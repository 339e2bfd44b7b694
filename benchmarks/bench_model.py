"""Speed and memory of the full ODISE label model (or FC-CLIP's, ``--method fcclip``) at real shapes,
random weights, no downloads.

Builds, through the project's own classes, SD v1.5's VAE / UNet / text encoder from the
configs in :mod:`odise_pl.models.param_summary` (random weights: same speed as
pretrained), open_clip ViT-L-14-336 (random), ``DiffusionUNetBackbone`` (implicit
captioner), ``Mask2FormerMaskGenerator`` at the reference settings (100 queries,
9 decoder layers, 512-channel pyramid), the category-label head with K=133 classes
(random text embeddings) and ``SetCriterion``, all inside an ``OdiseModule``.

* ``infer``: ``torch.inference_mode``; backbone -> mask generator -> ``predict_probs``
  -> ``segment`` (panoptic + semantic, on the device) per image, as the module's
  test step does (minus the metric update).
* ``train``: one optimiser step: ``training_step`` (forward, matching, Mask2Former
  losses on random targets) -> backward -> grad clipping (0.01) -> AdamW step.

Timing: CUDA events around each iteration after ``--warmup`` iterations (median and
mean reported); peak memory = ``torch.cuda.max_memory_allocated`` since the model was
on the device (weights included). FLOPs per image from ``FlopCounterMode`` on one
batch-1 inference forward (matmuls, convolutions, attention).

Precision (``--precision``, several allowed, run in order):
  ``fp32`` strict float32; ``tf32`` float32 with TF32 matmuls/convs; ``bf16`` autocast
  (bf16) around the whole forward (and the loss); ``bf16-frozen`` autocast only around
  the frozen SD/CLIP parts (trainable parts in float32); ``bf16-weights`` = ``bf16`` with
  the frozen weights stored in bf16.

Usage (GPU):
    python benchmarks/bench_model.py --device cuda --size 1024 --batch 1 8 --precision bf16 \
        --mode infer --out results.json
    python benchmarks/bench_model.py --device cuda --mode train --batch 2 --precision bf16
CPU smoke test (tiny random model, seconds):
    python benchmarks/bench_model.py --tiny --iters 1 --warmup 0 --out /tmp/bench.json

FC-CLIP (``--method fcclip``): ``experiments/fcclip_coco.yaml`` built by the project's builder with a random
ConvNeXt-L CLIP (``model.clip.pretrained=null``; ``--tiny``: ``fcclip_tiny.yaml``), K classes of FC-CLIP's COCO
list; inference on the reference path (the recipe's ensemble with in-model mask pooling, panoptic + semantic)
at FC-CLIP's test size: ``--hw 800 1333`` gives an 800x1333 image, zero-padded to 800x1344 (size divisibility
32), with its valid size passed on. The reference's anchor: 0.371 s/img = 2.70 img/s on one V100 (ADE20K,
``logs/testing/ade20k.log:195`` of bytedance/fc-clip, post-processing included).
    python benchmarks/bench_model.py --method fcclip --device cuda --hw 800 1333 --batch 1 --precision fp32 bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import odise_pl  # noqa: F401  (torchvision workaround before open_clip / torchmetrics)
from odise_pl.config.schema import InferenceConfig, MaskGeneratorConfig, OptimConfig
from odise_pl.models.speed import SpeedOptions, apply_speed_options, attention_processor_names

H100_BF16_DENSE_PEAK = 989e12  # H100 SXM spec, dense bf16 tensor-core FLOP/s
H100_BF16_MEASURED = 800e12  # large bf16 matmul measured on this workplace's H100 (approx.)
PRECISIONS = ("fp32", "tf32", "bf16", "bf16-frozen", "bf16-weights")
WINDOWS = ("reference", "none")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny random model and size (CPU smoke test)")
    p.add_argument(
        "--method",
        default="odise",
        choices=("odise", "fcclip"),
        help="odise: the label model (SD v1.5 + ViT-L CLIP); fcclip: experiments/fcclip_coco.yaml",
    )
    p.add_argument(
        "--hw",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="inference image height and width (padded to /32), e.g. 800 1333; default --size square",
    )
    p.add_argument("--size", type=int, default=None, help="square image side (default 1024, tiny 128)")
    p.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (infer: 1 8, train: 2)")
    p.add_argument("--precision", nargs="+", default=["bf16"], choices=PRECISIONS)
    p.add_argument("--mode", nargs="+", default=["infer"], choices=("infer", "train"))
    p.add_argument(
        "--windows",
        nargs="+",
        default=["reference"],
        choices=WINDOWS,
        help="reference: windows of min(512, short side), each resized to 512 (the reference, in "
        "training and at inference); none: whole image",
    )
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the frozen UNet blocks")
    p.add_argument("--attention", default="sdpa", choices=("sdpa", "classic"))
    p.add_argument("--num-classes", type=int, default=133)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--no-postprocess", action="store_true", help="time the network only")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------- model
def build_module(args: argparse.Namespace, device: torch.device):
    """The label model as an ``OdiseModule`` (random weights), on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from odise_pl.models.backbones.clip_tokenizer import clip_bpe_tokenizer
    from odise_pl.models.backbones.diffusion_unet import DiffusionUNetBackbone, build_tiny_stable_diffusion
    from odise_pl.models.clip_model import ClipSpec, load_clip
    from odise_pl.models.mask_generator.criterion import SetCriterion
    from odise_pl.models.mask_generator.mask2former import Mask2FormerMaskGenerator
    from odise_pl.models.odise_module import OdiseModule
    from odise_pl.models.param_summary import sd15_text_encoder_config, sd15_unet_config, sd15_vae_config
    from odise_pl.models.supervision.base import TextEmbeddings
    from odise_pl.models.supervision.category_label import CategoryLabelSupervision

    torch.manual_seed(0)
    with torch.device(device):  # random init directly on the device (fast at 1.5B parameters)
        if args.tiny:
            parts = build_tiny_stable_diffusion()
            vae, unet, text_encoder = parts.vae, parts.unet, parts.text_encoder
            clip = load_clip(ClipSpec("odise-tiny-vit", None), device=device)
            mg_cfg = MaskGeneratorConfig(
                num_queries=10,
                hidden_dim=32,
                mask_dim=32,
                dec_layers=2,
                nheads=2,
                dim_feedforward=64,
                enc_layers=1,
                enc_feedforward_dim=64,
                embed_dim=32,
                train_num_points=256,
            )
            projection_dim, bottleneck = 32, 16
            window = 128  # the tiny size: windows run at their own size (not upsampled to 512)
        else:
            vae = AutoencoderKL(**sd15_vae_config())
            unet = UNet2DConditionModel(**sd15_unet_config())
            text_encoder = CLIPTextModel(CLIPTextConfig(**sd15_text_encoder_config()))
            clip = load_clip(ClipSpec("ViT-L-14-336", None), device=device)
            mg_cfg = MaskGeneratorConfig()  # reference: 100 queries, 9 layers, ...
            projection_dim, bottleneck = 512, 128
            window = 512
        backbone = DiffusionUNetBackbone(
            vae=vae,
            unet=unet,
            text_encoder=text_encoder,
            tokenizer=clip_bpe_tokenizer(),
            clip=clip,
            pretrained=False,
            caption_mode="implicit",
            window_size=window,
            window_stride=window,
            projection_dim=projection_dim,
            bottleneck_width=bottleneck,
        )
        mask_generator = Mask2FormerMaskGenerator.from_config(mg_cfg, backbone.output_shape())
        k, width = args.num_classes, clip.embed_dim
        gen = torch.Generator(device="cpu").manual_seed(1)
        embeds = torch.randn(k, width, generator=gen, device="cpu").to(device)
        void = torch.randn(width, generator=gen, device="cpu").to(device)
        text = TextEmbeddings(embeds, torch.arange(k, device=device), k)
        supervision = CategoryLabelSupervision(train_text=text, void_text_embed=void, embed_dim=mg_cfg.embed_dim)
        criterion = SetCriterion(mask_generator.config, supervision.num_match_classes)
        is_thing = torch.arange(k) % 3 != 0
        module = OdiseModule(
            backbone=backbone,
            mask_generator=mask_generator,
            supervision=supervision,
            criterion=criterion,
            eval_text=text,
            eval_is_thing=is_thing,
            inference=InferenceConfig(),
            optim=OptimConfig(),
            max_steps=1000,
        )
    return module.to(device)


def set_windows(module, mode: str, window: int = 512) -> None:
    """``reference``: windows of min(window, short side), each resized to ``window`` (512 for SD; the tiny
    model's 128); ``none``: the whole image."""
    bb = module.backbone
    if mode == "none":
        bb.window_size = bb.window_stride = None
    else:
        bb.window_size = bb.window_stride = window


def param_counts(module) -> dict:
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return {"trainable": trainable, "frozen": frozen}


# ------------------------------------------------------------------------------------ inputs
def random_images(batch: int, size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8).to(device)


def padded_random_images(batch: int, hw: tuple[int, int], device: torch.device, divisor: int = 32) -> tuple[torch.Tensor, list]:
    """``batch`` random (H, W) images zero-padded to a multiple of ``divisor``, and their valid sizes."""
    h, w = hw
    images = random_images(batch, max(h, w), torch.device("cpu"))[..., :h, :w]
    images = torch.nn.functional.pad(images, (0, -w % divisor, 0, -h % divisor))
    return images.to(device), [(h, w)] * batch


def random_targets(batch: int, size: int, num_classes: int, device: torch.device, segments: int = 12) -> list[dict]:
    """Random rectangles as ground-truth masks (N, H, W) with random labels."""
    gen = torch.Generator(device="cpu").manual_seed(2)
    targets = []
    for _ in range(batch):
        masks = torch.zeros(segments, size, size, dtype=torch.bool)
        for i in range(segments):
            y0, x0 = torch.randint(0, size // 2, (2,), generator=gen).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=gen).tolist()
            masks[i, y0 : y0 + h, x0 : x0 + w] = True
        targets.append(
            {
                "masks": masks.to(device),
                "labels": torch.randint(0, num_classes, (segments,), generator=gen).to(device),
                "is_thing": torch.ones(segments, dtype=torch.bool, device=device),
                "iscrowd": torch.zeros(segments, dtype=torch.bool, device=device),
                "image_id": 0,
            }
        )
    return targets


# ------------------------------------------------------------------------------------- steps
def autocast_ctx(precision: str, device: torch.device):
    if precision in ("bf16", "bf16-weights"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def speed_options(precision: str, args: argparse.Namespace) -> SpeedOptions:
    return SpeedOptions(
        frozen_autocast=precision == "bf16-frozen",
        frozen_weights=precision == "bf16-weights",
        tf32=precision == "tf32",
        channels_last=args.channels_last,
        attention=args.attention,
        compile_unet=args.compile,
    )


def infer_step(module, images: torch.Tensor, precision: str, postprocess: bool, sizes: list | None = None):
    """The module's test-time path: forward, classification, then (``postprocess``) panoptic + semantic
    post-processing per image through :meth:`OdiseModule.segment`, the path evaluation and predict use."""
    sizes = sizes or [tuple(images.shape[-2:])] * images.shape[0]
    with torch.inference_mode(), autocast_ctx(precision, images.device):
        if postprocess:
            return None, module.segment(images, sizes, tasks=("panoptic", "semantic"))
        probs, _ = module.predict_probs(images, module(images, None), torch.tensor(sizes, device=images.device))
    return probs, []


def make_train_step(module, images: torch.Tensor, targets: list[dict], precision: str):
    from odise_pl.models.optim import build_optimizer

    optimizer = build_optimizer(module, module.optim_cfg)
    batch = {"images": images, "targets": targets, "image_sizes": torch.tensor([list(images.shape[-2:])] * images.shape[0])}
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step():
        with autocast_ctx(precision, images.device):
            loss = module.training_step(batch, 0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, module.optim_cfg.clip_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step, optimizer


def time_it(fn, warmup: int, iters: int, device: torch.device) -> list[float]:
    """Milliseconds per call, measured with CUDA events (host clock on the CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def count_flops(module, images: torch.Tensor, precision: str) -> int:
    """FLOPs of one inference forward + classification (FlopCounterMode, no post-processing)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), autocast_ctx(precision, images.device):
        out = module(images, None)
        module.predict_probs(images, out)
    return int(counter.get_total_flops())


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


# -------------------------------------------------------------------------------------- main
def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(), "device": str(device)}
    try:
        import diffusers
        import open_clip
        import transformers

        env.update(diffusers=diffusers.__version__, transformers=transformers.__version__, open_clip=open_clip.__version__)
    except ImportError:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    size = args.size or (128 if args.tiny else 1024)
    modes = args.mode
    t0 = time.perf_counter()
    if args.method == "fcclip":
        import importlib.util  # benchmarks/fcclip_module.py, beside this script (also when loaded by path)

        spec = importlib.util.spec_from_file_location("fcclip_module", Path(__file__).with_name("fcclip_module.py"))
        helper = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(helper)
        module = helper.build_fcclip_module(args, device)
    else:
        module = build_module(args, device)
    build_s = time.perf_counter() - t0
    module.eval()
    weights_gib = (torch.cuda.memory_allocated(device) / 2**30) if device.type == "cuda" else None
    unet = getattr(module.backbone, "unet", None)
    report = {
        "env": environment(device),
        "argv": sys.argv[1:],
        "method": args.method,
        "size": size,
        "hw": args.hw,
        "num_classes": args.num_classes,
        "tiny": args.tiny,
        "build_s": round(build_s, 2),
        "params": param_counts(module),
        "weights_gib_fp32": weights_gib,
        "attention_processors": None if unet is None else attention_processor_names(unet),
        "results": [],
    }
    print(json.dumps({k: v for k, v in report.items() if k != "results"}), flush=True)

    for window in args.windows if unet is not None else ["none"]:  # FC-CLIP sees the whole image
        if unet is not None:
            set_windows(module, window, 128 if args.tiny else 512)
        for precision in args.precision:
            handle = apply_speed_options(module, speed_options(precision, args))
            try:
                for mode in modes:
                    batches = args.batch or ([1, 8] if mode == "infer" else [2])
                    for batch in batches:
                        row = {
                            "mode": mode,
                            "window": window,
                            "precision": precision,
                            "batch": batch,
                            "size": size,
                            "channels_last": args.channels_last,
                            "compile": args.compile,
                            "attention": handle.report.get("attention_processors"),
                        }
                        try:
                            row.update(bench_one(module, args, device, mode, batch, size, precision))
                        except torch.OutOfMemoryError as err:  # record it, go on
                            row["error"] = f"OOM: {str(err).splitlines()[0]}"
                        except Exception as err:  # noqa: BLE001  (one failing variant must not lose the rest)
                            row["error"] = f"{type(err).__name__}: {err}"[:500]
                        report["results"].append(row)
                        print(json.dumps(row), flush=True)
                        module.zero_grad(set_to_none=True)
            finally:
                handle.remove()
    return report


def bench_one(module, args, device, mode: str, batch: int, size: int, precision: str) -> dict:
    images, sizes = padded_random_images(batch, tuple(args.hw) if args.hw and mode == "infer" else (size, size), device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    row: dict = {}
    if mode == "infer":
        module.eval()
        if not args.no_flops:
            flops = count_flops(module, images[:1], precision)
            row["gflops_per_image"] = round(flops / 1e9, 1)
        reset_peak(device)
        times = time_it(lambda: infer_step(module, images, precision, not args.no_postprocess, sizes), args.warmup, args.iters, device)
    else:
        module.train()
        targets = random_targets(batch, size, args.num_classes, device)
        step, optimizer = make_train_step(module, images, targets, precision)
        reset_peak(device)
        times = time_it(step, args.warmup, args.iters, device)
        del optimizer
        module.eval()
    median = statistics.median(times)
    row.update(
        ms_per_iter_median=round(median, 2),
        ms_per_iter_mean=round(statistics.fmean(times), 2),
        ms_per_iter_min=round(min(times), 2),
        images_per_s=round(batch * 1e3 / median, 3),
        peak_gib=None if peak_gib(device) is None else round(peak_gib(device), 3),
        iters=len(times),
    )
    if "gflops_per_image" in row:
        achieved = row["gflops_per_image"] * 1e9 * row["images_per_s"]
        row["achieved_tflops"] = round(achieved / 1e12, 1)
        row["pct_of_989_peak"] = round(100 * achieved / H100_BF16_DENSE_PEAK, 2)
        row["pct_of_800_measured"] = round(100 * achieved / H100_BF16_MEASURED, 2)
    return row


def format_table(report: dict) -> str:
    cols = [
        "mode",
        "window",
        "precision",
        "batch",
        "images_per_s",
        "ms_per_iter_median",
        "peak_gib",
        "gflops_per_image",
        "pct_of_989_peak",
        "error",
    ]
    lines = [" | ".join(cols)]
    for r in report["results"]:
        lines.append(" | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: use --device cpu --tiny")
    if (args.size or 64) % 64:
        raise SystemExit("--size must be a multiple of 64")
    report = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(format_table(report), flush=True)
    return report


if __name__ == "__main__":
    main()
