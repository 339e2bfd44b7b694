"""Profile of one training step and the before/after benchmark of the ``model.speed`` switches, one run.

What one run does (the label model of ``bench_model.py`` at real shapes, random weights, no downloads):

1. **Profile** of one training step at ``--size`` crops, batch ``--train-batch`` (default 1024², 2: the
   reference's per-GPU batch, its fixed 512 windows) with today's settings (``bf16-weights``: autocast
   around the step, frozen weights in bf16). ``torch.profiler`` (CPU + CUDA activities) with a
   ``record_function`` and an NVTX range per part; the per-part times come from CUDA events (host clock on
   the CPU) around each part, summed over its calls: ``frozen_forward`` (VAE encode/decode, UNet, CLIP
   image tower), ``pixel_decoder_forward``, ``transformer_decoder_forward``, ``hungarian_matching``,
   ``point_sampled_losses`` (mask + class terms), ``backward`` and inside it ``generator_backward``
   (loss -> backbone features) and ``captioner_backward_through_unet`` (first UNet tap gradient -> the
   captioner's conditioning; these two are timed from gradient hooks, by events only, without a profiler
   range), ``optimizer`` (clipping + AdamW), ``step_total``; the host syncs of one step
   (``HostSyncCounter``, and on CUDA ``torch.cuda.set_sync_debug_mode('warn')`` warnings), and the ten
   most expensive CUDA kernels.
2. **Before/after**: training images/s (batch ``--train-batch``) and peak memory; inference images/s at
   batch ``--infer-batch`` (default 8) with the reference's windows, the % of the bf16 dense peak (989
   TFLOP/s, H100/H200 SXM spec; FLOPs of a batch-1 forward from ``FlopCounterMode``, as
   ``bench_model.py``), and peak memory at batch 1. "before": today's settings; "after": the same plus the
   switches named by ``--after`` (default all new ones: fused_optimizer, batched_matching,
   no_host_syncs, compile_decoder).
3. Writes everything to ``--out`` (default ``$OUT/gpu_speed.json`` where ``$OUT`` is set, else
   ``./gpu_speed.json``).

On the device (not yet run; the H200's image lacks diffusers, open_clip and omegaconf: carry them as
wheels, fetched here once, in the repository root, see /work/.library/device/README.md)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl diffusers==0.42.1 open_clip_torch==3.3.0 omegaconf==2.4.0 antlr4-python3-runtime==4.9.3 \
        ftfy==6.3.1 wcwidth==0.2.13 pycocotools==2.0.11

then one ``run`` call (carry ``[".whl"]``, timeout_s 540; about 1 min model build, 1 min profile,
2 x (train + infer) with warm-up and the decoder's compilation, ~5 min in all)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 || exit; \
      python3 benchmarks/gpu_speed.py --device cuda --out $OUT/gpu_speed.json --trace $OUT/trace.json.gz \
      2>&1 | tee $OUT/log.txt

CPU smoke test (tiny random model, small shapes; ``tests/benchmarks/test_gpu_speed.py``)::

    python benchmarks/gpu_speed.py --device cpu --small --out /tmp/gpu_speed.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import odise_pl  # noqa: F401  (torchvision workaround before open_clip / torchmetrics)
from odise_pl.models.host_syncs import HostSyncCounter
from odise_pl.models.speed import SpeedOptions, apply_speed_options

NEW_SWITCHES = ("fused_optimizer", "batched_matching", "no_host_syncs", "compile_decoder")
BF16_DENSE_PEAK = 989e12  # H100 / H200 SXM spec, dense bf16 tensor-core FLOP/s (bench_model.py's)
PARTS = (
    "frozen_forward",
    "pixel_decoder_forward",
    "transformer_decoder_forward",
    "hungarian_matching",
    "point_sampled_losses",
    "backward",
    "generator_backward",
    "captioner_backward_through_unet",
    "optimizer",
    "step_total",
)


def _bench_model():
    path = Path(__file__).resolve().parent / "bench_model.py"
    spec = importlib.util.spec_from_file_location("bench_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny random model at small shapes (CPU smoke test)")
    p.add_argument("--size", type=int, default=None, help="square crop side (default 1024; --small 64)")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--infer-batch", type=int, default=None, help="default 8 (--small 2)")
    p.add_argument("--after", nargs="*", default=list(NEW_SWITCHES), choices=NEW_SWITCHES, help="the switches of the 'after' runs")
    p.add_argument("--warmup", type=int, default=None, help="default 2 (--small 0)")
    p.add_argument("--iters", type=int, default=None, help="default 5 (--small 1)")
    p.add_argument("--num-classes", type=int, default=133)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--trace", default=None, help="also write the profiler's Chrome trace here")
    p.add_argument("--out", default=None, help="the JSON report (default $OUT/gpu_speed.json or ./gpu_speed.json)")
    args = p.parse_args(argv)
    args.size = args.size or (64 if args.small else 1024)
    args.infer_batch = args.infer_batch or (2 if args.small else 8)
    args.warmup = (0 if args.small else 2) if args.warmup is None else args.warmup
    args.iters = (1 if args.small else 5) if args.iters is None else args.iters
    if args.out is None:
        args.out = str(Path(os.environ.get("OUT", ".")) / "gpu_speed.json")
    return args


# ------------------------------------------------------------------------------------- part timing
class PartTimer:
    """Device time per named part, summed over its calls (CUDA events; the host clock on the CPU).

    Each part is also a ``torch.profiler.record_function`` range and (CUDA) an NVTX range.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.spans: dict[str, list] = collections.defaultdict(list)
        self.open: dict[str, object] = {}
        self.active = False

    def start(self, name: str, ranges: bool = True) -> None:
        """Open ``name``; ``ranges=False`` (parts opened or closed in gradient hooks, which may run on the
        autograd engine's thread): events only, no profiler / NVTX range (those are per thread)."""
        if not self.active or name in self.open:
            return
        scope = torch.profiler.record_function(name) if ranges else None
        if self.device.type == "cuda":
            if ranges:
                torch.cuda.nvtx.range_push(name)
            mark = torch.cuda.Event(enable_timing=True)
            mark.record()
        else:
            mark = time.perf_counter()
        if scope is not None:
            scope.__enter__()
        self.open[name] = (mark, scope)

    def stop(self, name: str) -> None:
        if name not in self.open:
            return
        mark, scope = self.open.pop(name)
        if scope is not None:
            scope.__exit__(None, None, None)
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            if scope is not None:
                torch.cuda.nvtx.range_pop()
            self.spans[name].append((mark, end))
        else:
            self.spans[name].append((mark, time.perf_counter()))

    @contextlib.contextmanager
    def part(self, name: str):
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def milliseconds(self) -> dict[str, dict]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out = {}
        for name, spans in self.spans.items():
            ms = [a.elapsed_time(b) if self.device.type == "cuda" else (b - a) * 1e3 for a, b in spans]
            out[name] = {"ms": round(sum(ms), 3), "calls": len(ms)}
        return out

    def reset(self) -> None:
        self.spans.clear()
        self.open.clear()


def _timed(timer: PartTimer, name: str, fn):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with timer.part(name):
            return fn(*args, **kwargs)

    return wrapped


def instrument(module, timer: PartTimer) -> list:
    """Wrap the parts of ``module`` in ``timer`` ranges; returns the undo list."""
    import odise_pl.models.mask_generator.matching as matching

    undo = []

    def patch(obj, name, label):
        had_own, original = name in vars(obj), getattr(obj, name)
        setattr(obj, name, _timed(timer, label, original))
        undo.append(lambda: setattr(obj, name, original) if had_own else delattr(obj, name))

    for part, method in module.backbone.frozen_entry_points():
        patch(part, method, "frozen_forward")
    patch(module.mask_generator.pixel_decoder, "forward", "pixel_decoder_forward")
    patch(module.mask_generator.transformer, "forward", "transformer_decoder_forward")
    patch(module.criterion.loss.matcher, "forward", "hungarian_matching")
    patch(matching, "batched_hungarian", "hungarian_matching")
    patch(module.criterion.loss, "loss_masks", "point_sampled_losses")
    patch(module.criterion.loss, "loss_labels", "point_sampled_losses")

    # backward: gradient hooks open / close the ranges (they run on the autograd thread, in order)
    def on_features(_mod, _inp, out):
        if torch.is_grad_enabled():
            for t in out.values():
                if t.requires_grad:
                    t.register_hook(lambda g: (timer.stop("generator_backward"), g)[1])

    def on_taps(_mod, args):
        for t in args[0]:
            if torch.is_tensor(t) and t.requires_grad:
                t.register_hook(lambda g: (timer.start("captioner_backward_through_unet", ranges=False), g)[1])

    def on_conditioning(_mod, _inp, out):
        cond = out[0]
        if torch.is_tensor(cond) and cond.requires_grad:
            cond.register_hook(lambda g: (timer.stop("captioner_backward_through_unet"), g)[1])

    handles = [module.backbone.register_forward_hook(on_features)]
    fusion, captioner = getattr(module.backbone, "fusion", None), getattr(module.backbone, "captioner", None)
    if fusion is not None:
        handles.append(fusion.register_forward_pre_hook(on_taps))
    if captioner is not None:
        handles.append(captioner.register_forward_hook(on_conditioning))
    undo.extend(h.remove for h in handles)
    return undo


# ------------------------------------------------------------------------------------- the step
def make_train_step(module, images, targets, autocast, timer: PartTimer | None = None):
    from odise_pl.models.optim import build_optimizer

    optimizer = build_optimizer(module, module.optim_cfg, fused=module.fused_optimizer)
    batch = {"images": images, "targets": targets, "image_sizes": torch.tensor([list(images.shape[-2:])] * images.shape[0])}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    timer = timer or PartTimer(images.device)

    def step():
        with timer.part("step_total"):
            with autocast():
                loss = module.training_step(batch, 0)
            with timer.part("backward"):
                timer.start("generator_backward", ranges=False)
                loss.backward()
                timer.stop("generator_backward")  # (closed by the features' hook normally)
                timer.stop("captioner_backward_through_unet")
            with timer.part("optimizer"):
                torch.nn.utils.clip_grad_norm_(params, module.optim_cfg.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step, optimizer


def count_step_syncs(module, step, device: torch.device) -> dict:
    """Host syncs of one step: by kind (``HostSyncCounter``) and, on CUDA, the sync-debug warnings.

    ``forward_and_loss``: those of ``training_step`` alone. The whole step's count also holds the
    optimizer's reads of its step counters, host tensors on CUDA (no sync there), device ones only on the CPU.
    """
    inner = HostSyncCounter()
    original = module.training_step

    def counted(*args, **kwargs):
        with inner:
            return original(*args, **kwargs)

    module.training_step = counted
    try:
        with HostSyncCounter() as syncs:
            step()
    finally:
        del module.training_step
    row = {
        "forward_and_loss": dict(inner.counts),
        "forward_and_loss_total": inner.total,
        "step": dict(syncs.counts),
        "step_total": syncs.total,
    }
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
                torch.cuda.synchronize(device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        messages = collections.Counter(str(w.message).splitlines()[0][:120] for w in caught if "synchroniz" in str(w.message))
        row["cuda_sync_warnings"] = sum(messages.values())
        row["cuda_sync_kinds"] = dict(messages.most_common(10))
    return row


def profile_step(bench, module, args, device, autocast) -> dict:
    """One profiled training step (after one warm-up) with today's settings."""
    from torch.profiler import ProfilerActivity, profile

    module.train()
    images = bench.random_images(args.train_batch, args.size, device)
    targets = bench.random_targets(args.train_batch, args.size, args.num_classes, device)
    timer = PartTimer(device)
    undo = instrument(module, timer)
    try:
        step, optimizer = make_train_step(module, images, targets, autocast, timer)
        if not args.small:
            step()  # warm-up (allocator, cuDNN autotune)
        timer.reset()
        timer.active = True
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            step()
        timer.active = False
        parts = timer.milliseconds()
        syncs = count_step_syncs(module, step, device)
        if args.trace:
            prof.export_chrome_trace(args.trace)
        attr = "device_time_total" if device.type == "cuda" else "cpu_time_total"
        events = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0), reverse=True)
        top = [
            {"name": e.key[:100], "ms": round(getattr(e, attr, 0) / 1e3, 3), "calls": e.count}
            for e in events
            if not e.key.startswith(("ProfilerStep", *PARTS))
        ][:10]
        del optimizer
    finally:
        for fn in reversed(undo):
            fn()
        module.zero_grad(set_to_none=True)
        module.eval()
    total = parts.get("step_total", {}).get("ms") or float("nan")
    for row in parts.values():
        row["pct_of_step"] = round(100 * row["ms"] / total, 1)
    return {
        "settings": "before",
        "parts": parts,
        "host_syncs": syncs,
        "top_ops": top,
        "time_kind": "cuda_events" if device.type == "cuda" else "host_clock",
    }


# ------------------------------------------------------------------------------------- before/after
def bench_variant(bench, module, args, device, autocast, precision: str) -> dict:
    row: dict = {}
    module.train()
    images = bench.random_images(args.train_batch, args.size, device)
    targets = bench.random_targets(args.train_batch, args.size, args.num_classes, device)
    step, optimizer = make_train_step(module, images, targets, autocast)
    bench.reset_peak(device)
    times = bench.time_it(step, args.warmup, args.iters, device)
    median = statistics.median(times)
    row["train"] = {
        "batch": args.train_batch,
        "ms_per_step_median": round(median, 2),
        "images_per_s": round(args.train_batch * 1e3 / median, 3),
        "peak_gib": _peak(bench, device),
    }
    del optimizer
    module.zero_grad(set_to_none=True)
    module.eval()
    images = bench.random_images(args.infer_batch, args.size, device)
    flops = bench.count_flops(module, images[:1], precision)
    bench.reset_peak(device)
    times = bench.time_it(lambda: bench.infer_step(module, images, precision, True), args.warmup, args.iters, device)
    median = statistics.median(times)
    ips = args.infer_batch * 1e3 / median
    row["infer"] = {
        "batch": args.infer_batch,
        "ms_per_iter_median": round(median, 2),
        "images_per_s": round(ips, 3),
        "gflops_per_image": round(flops / 1e9, 1),
        "pct_of_989_peak": float(f"{100 * flops * ips / BF16_DENSE_PEAK:.4g}"),
    }
    one = images[:1]
    bench.reset_peak(device)
    bench.time_it(lambda: bench.infer_step(module, one, precision, True), 0, 1, device)
    row["infer"]["peak_gib_batch1"] = _peak(bench, device)
    return row


def _peak(bench, device):
    value = bench.peak_gib(device)
    return None if value is None else round(value, 3)


def run(args: argparse.Namespace) -> dict:
    bench = _bench_model()
    device = torch.device(args.device)
    bench_args = bench.parse_args(["--tiny"] if args.small else [])
    bench_args.num_classes = args.num_classes
    t0 = time.perf_counter()
    module = bench.build_module(bench_args, device).eval()
    bench.set_windows(module, "reference", args.size if args.small else 512)  # small: no upsampling
    precision = "bf16-weights"  # today's settings: autocast around the step + frozen weights in bf16
    autocast = functools.partial(bench.autocast_ctx, precision, device)
    report = {
        "env": bench.environment(device),
        "argv": sys.argv[1:],
        "small": args.small,
        "size": args.size,
        "precision": precision,
        "build_s": round(time.perf_counter() - t0, 2),
        "params": bench.param_counts(module),
        "after_switches": list(args.after),
        "bf16_peak": BF16_DENSE_PEAK,
    }
    print(json.dumps(report), flush=True)
    before = SpeedOptions(frozen_weights=True)
    after = SpeedOptions(frozen_weights=True, **{name: True for name in args.after})
    handle = apply_speed_options(module, before)
    try:
        if not args.no_profile:
            report["profile"] = profile_step(bench, module, args, device, autocast)
            print(json.dumps({"profile": report["profile"]["parts"]}), flush=True)
        report["before"] = bench_variant(bench, module, args, device, autocast, precision)
        print(json.dumps({"before": report["before"]}), flush=True)
    finally:
        handle.remove()
    handle = apply_speed_options(module, after)
    try:
        report["after"] = bench_variant(bench, module, args, device, autocast, precision)
        report["after"]["speed_report"] = {k: v for k, v in handle.report.items() if k != "attention_processors"}
        print(json.dumps({"after": report["after"]}), flush=True)
    finally:
        handle.remove()
    report["speedup"] = {
        "train": round(report["after"]["train"]["images_per_s"] / report["before"]["train"]["images_per_s"], 3),
        "infer": round(report["after"]["infer"]["images_per_s"] / report["before"]["infer"]["images_per_s"], 3),
    }
    return report


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available: use --device cpu --small")
    if args.size % 64:
        raise SystemExit("--size must be a multiple of 64")
    report = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}", flush=True)
    return report


if __name__ == "__main__":
    main()
