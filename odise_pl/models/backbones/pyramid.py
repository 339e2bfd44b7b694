"""From a list of feature taps to the ``s2..s5`` pyramid: bottleneck projections, stride fusion, sliding windows.

Reusable by any backbone that exposes several intermediate feature maps ("taps")
of known channels and strides:

* :class:`BottleneckProjection` - one residual bottleneck block per tap
  (detectron2's ``BottleneckBlock`` with GroupNorm), ``C_tap -> out_channels``;
* :class:`StrideFusion` - clamps each tap's stride to ``[min_stride, max_stride]``,
  resizes the taps of one clamped stride to ``(H/stride, W/stride)`` (nearest),
  projects and **sums** them into one level ``s{log2(stride)}``;
* :func:`window_boxes` / :func:`sliding_window_forward` - run a feature function
  on square windows of a large image and average the overlaps;
* :class:`TapRecorder` / :func:`add_to_output` - read block inputs and add a term to
  a block's output with hooks, without re-implementing a library's ``forward``;
* :class:`SimpleFeaturePyramid` - ViTDet's pyramid from one stride-16 map (single-scale ViTs)
  and :func:`resize_to_patch_grid`, which sizes an image so that its patches land at stride 16.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from odise_pl.models.backbones.base import ShapeSpec


def group_norm(channels: int, num_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with ``num_groups`` groups (fewer when ``channels`` is not a multiple, for tiny widths)."""
    return nn.GroupNorm(math.gcd(num_groups, channels), channels)


def _conv_gn(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # detectron2's c2_msra_fill
    return nn.Sequential(conv, group_norm(out_channels))


class BottleneckProjection(nn.Module):
    """Residual bottleneck: 1x1 -> 3x3 -> 1x1 convs, each followed by GroupNorm, ReLU after the sum.

    The shortcut is a 1x1 conv + GroupNorm when the widths differ and the identity
    otherwise (as in detectron2, whose count gives ODISE's 5.87M projection parameters).

    Args:
        in_channels: channels C of the tap.
        out_channels: channels of the output (512 in ODISE).
        bottleneck_channels: inner width (128 in ODISE).

    Shape:
        (B, C, h, w) -> (B, out_channels, h, w)
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_gn(in_channels, bottleneck_channels, 1)
        self.conv2 = _conv_gn(bottleneck_channels, bottleneck_channels, 3)
        self.conv3 = _conv_gn(bottleneck_channels, out_channels, 1)
        self.shortcut = _conv_gn(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out) + self.shortcut(x)
        return F.relu(out)


class StrideFusion(nn.Module):
    """Project every tap and sum the taps that share a clamped stride.

    Args:
        tap_channels: channels of each tap, in tap order.
        tap_strides: stride of each tap in input pixels, in tap order.
        out_channels: channels of every output level.
        bottleneck_channels: inner width of the projections.
        min_stride, max_stride: the clamp applied to the tap strides.
        activation_checkpointing: recompute the projections in the backward pass
            (saves the activations of eight bottleneck blocks per window).

    Forward:
        ``taps`` list of (B, C_i, h_i, w_i) and ``image_size`` (H, W) ->
        ``{"s{log2 s}": (B, out_channels, H/s, W/s)}`` for each clamped stride ``s``.
        Levels are summed in tap order.
    """

    def __init__(
        self,
        *,
        tap_channels: Sequence[int],
        tap_strides: Sequence[int],
        out_channels: int = 512,
        bottleneck_channels: int = 128,
        min_stride: int = 4,
        max_stride: int = 32,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if len(tap_channels) != len(tap_strides):
            raise ValueError(f"{len(tap_channels)} tap channels but {len(tap_strides)} tap strides")
        self.projections = nn.ModuleList(BottleneckProjection(c, out_channels, bottleneck_channels) for c in tap_channels)
        self.activation_checkpointing = activation_checkpointing
        self.out_channels = out_channels
        levels: dict[int, list[int]] = {}
        for index, stride in enumerate(tap_strides):
            levels.setdefault(min(max(stride, min_stride), max_stride), []).append(index)
        #: level name -> (stride, tap indices), from fine to coarse
        self.levels = {f"s{int(math.log2(s))}": (s, levels[s]) for s in sorted(levels)}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(self.out_channels, stride) for name, (stride, _) in self.levels.items()}

    def forward(self, taps: Sequence[torch.Tensor], image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        if self.activation_checkpointing and torch.is_grad_enabled():
            names = list(self.levels)
            outs = checkpoint(self._fuse, image_size, *taps, use_reentrant=False)
            return dict(zip(names, outs))
        return dict(zip(self.levels, self._fuse(image_size, *taps)))

    def _fuse(self, image_size: tuple[int, int], *taps: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height, width = image_size
        outs = []
        for stride, indices in self.levels.values():
            total = None
            for i in indices:
                tap = F.interpolate(taps[i], size=(height // stride, width // stride))  # nearest, as the reference
                projected = self.projections[i](tap)
                total = projected if total is None else total + projected
            outs.append(total)
        return tuple(outs)


def window_boxes(height: int, width: int, window: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Square windows ``(y1, y2, x1, x2)`` covering an image; the last window of a row/column is shifted in.

    A side shorter than ``window`` gets one window of that side's length (callers pass
    ``window <= min(height, width)`` to keep the windows square).

    Example:
        >>> window_boxes(1024, 1280, 512, 512)[-1]
        (512, 1024, 768, 1280)
    """

    def starts(size: int) -> list[int]:
        count = max(size - window + stride - 1, 0) // stride + 1
        return [max(min(i * stride + window, size) - window, 0) for i in range(count)]

    return [(y, min(y + window, height), x, min(x + window, width)) for y in starts(height) for x in starts(width)]


def sliding_window_forward(
    fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: torch.Tensor, *, window: int, stride: int, shapes: dict[str, ShapeSpec]
) -> dict[str, torch.Tensor]:
    """Apply ``fn`` to each window of ``images`` and average the overlapping outputs.

    Args:
        fn: (B, 3, window, window) -> ``{level: (B, C, window/s, window/s)}``.
        images: (B, 3, H, W); window boxes must be multiples of every level's stride.
        window, stride: window side and step in pixels.
        shapes: ``{level: ShapeSpec(C, s)}`` of ``fn``'s outputs.

    Returns:
        ``{level: (B, C, H/s, W/s)}``. Windows run one after another (memory before speed).
    """
    batch, _, height, width = images.shape
    outputs: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for y1, y2, x1, x2 in window_boxes(height, width, window, stride):
        features = fn(images[:, :, y1:y2, x1:x2])
        for name, feature in features.items():
            s = shapes[name].stride
            if name not in outputs:
                outputs[name] = feature.new_zeros(batch, feature.shape[1], height // s, width // s)
                counts[name] = feature.new_zeros(1, 1, height // s, width // s)
            box = (slice(None), slice(None), slice(y1 // s, y2 // s), slice(x1 // s, x2 // s))
            outputs[name][box] += feature  # in-place slice add: autograd records it (CopySlices)
            counts[name][box] += 1
    return {name: out / counts[name] for name, out in outputs.items()}


class _EnoughTaps(Exception):
    """Raised by the last tap's hook to cut a forward short."""


class TapRecorder:
    """Records the input of ``modules`` (forward pre-hooks) during one forward.

    The recorded value is a module's first positional argument (else its first keyword
    argument). With ``stop=True`` the forward ends right after the last tap (an
    exception raised by the hook and swallowed on exit), skipping the unused rest.

    Example (for SD: ``TapRecorder([unet.up_blocks[0].resnets[-1]], stop=True)`` records the
    (B, 2560, h/8, w/8) ``[h, skip]`` entering that block):
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with TapRecorder([net[1]], stop=True) as taps:   # net[2] never runs
        ...     _ = net(torch.zeros(5, 4))
        >>> tuple(taps.values[0].shape)
        (5, 3)
    """

    def __init__(self, modules: list[nn.Module], *, stop: bool) -> None:
        self.modules, self.stop = modules, stop
        self.values: list[torch.Tensor | None] = []

    def __enter__(self) -> TapRecorder:
        self.values = [None] * len(self.modules)
        self._handles = [m.register_forward_pre_hook(partial(self._hook, i), with_kwargs=True) for i, m in enumerate(self.modules)]
        return self

    def _hook(self, index: int, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.values[index] = args[0] if args else next(iter(kwargs.values()))
        if self.stop and all(v is not None for v in self.values):
            raise _EnoughTaps

    def __exit__(self, exc_type, exc, tb) -> bool:
        for handle in self._handles:
            handle.remove()
        if exc_type in (None, _EnoughTaps) and any(v is None for v in self.values):
            missing = [type(m).__name__ for m, v in zip(self.modules, self.values) if v is None]
            raise RuntimeError(
                f"feature taps never reached during the forward: {missing}; the model's "
                f"block structure differs from the one the backbone expects"
            )
        return exc_type is _EnoughTaps


@contextmanager
def add_to_output(module: nn.Module, term: torch.Tensor | None):
    """Within the block, ``module(x)`` returns ``module(x) + term`` (no-op for ``term=None``)."""
    if term is None:
        yield
        return
    handle = module.register_forward_hook(lambda _m, _inp, out: out + term.to(out.dtype))
    try:
        yield
    finally:
        handle.remove()


# ------------------------------------------------------------------ single-scale ViTs (ViTDet)
#: the stride of a ViT's token map once :func:`resize_to_patch_grid` has sized the input
VIT_TOKEN_STRIDE = 16


def resize_to_patch_grid(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Resize (B, 3, H, W) so that a ViT with ``patch_size`` gives a (ceil(H/16), ceil(W/16)) token grid.

    The input becomes (ceil(H/16) * p, ceil(W/16) * p): a multiple of the patch size whatever H and W,
    with every token covering one 16x16 cell of the original image (bilinear, antialiased when
    shrinking, e.g. p = 14). A no-op for p = 16 and sides that are multiples of 16.
    """
    h, w = pixels.shape[-2:]
    size = (math.ceil(h / VIT_TOKEN_STRIDE) * patch_size, math.ceil(w / VIT_TOKEN_STRIDE) * patch_size)
    if size == (h, w):
        return pixels
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=size[0] < h)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple pyramid: one stride-16 map -> strides 4/8/16/32 with ``out_channels`` each.

    Shape:
        (B, C, h, w) -> {"s2": (B, out, 4h, 4w), "s3": (B, out, 2h, 2w), "s4": (B, out, h, w),
        "s5": (B, out, h/2, w/2)}
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half, quarter = max(in_channels // 2, 8), max(in_channels // 4, 8)
        self.scales = nn.ModuleDict(
            {
                "s2": nn.Sequential(
                    nn.ConvTranspose2d(in_channels, half, 2, 2), group_norm(half), nn.GELU(), nn.ConvTranspose2d(half, quarter, 2, 2)
                ),
                "s3": nn.ConvTranspose2d(in_channels, half, 2, 2),
                "s4": nn.Identity(),
                "s5": nn.MaxPool2d(2, 2),
            }
        )
        widths = {"s2": quarter, "s3": half, "s4": in_channels, "s5": in_channels}
        self.outputs = nn.ModuleDict(
            {
                k: nn.Sequential(
                    nn.Conv2d(widths[k], out_channels, 1, bias=False),
                    group_norm(out_channels),
                    nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                    group_norm(out_channels),
                )
                for k in ("s2", "s3", "s4", "s5")
            }
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: self.outputs[k](self.scales[k](x)) for k in self.outputs}


def fit_to_size(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, C, h', w') -> (B, C, h, w), bilinear; a no-op when the size already matches."""
    return x if x.shape[-2:] == (h, w) else F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
