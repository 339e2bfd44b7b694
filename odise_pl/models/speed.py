"""Optional speed switches for the frozen parts of the diffusion backbone (benchmarks, inference).

Every switch is off by default and :func:`apply_speed_options` returns a handle whose
``remove()`` undoes the hooks and patches it installed; after ``remove()`` the model
computes bit-identical float32 outputs again (bf16 weights are restored from an exact
float32 copy kept in host memory, not by casting back).

Switches (:class:`SpeedOptions`), with the agreement with the plain float32 path that
``tests/models/test_speed_options.py`` asserts on tiny random models on the CPU (features
``s2..s5`` and mask logits as relative L2 error ``|a - b| / |a|``, class probabilities
as the largest absolute difference):

* ``frozen_autocast``: run the frozen Stable Diffusion VAE/UNet and the CLIP image
  tower under ``torch.autocast(bf16)`` (on the device of their input) while the
  trainable parts stay in float32. The eight feature taps are cast back to float32
  before the projections. Tolerance: features <= 0.10, mask logits <= 0.15,
  probabilities <= 0.15 (measured 0.03-0.06 / 0.11-0.12 / 0.10-0.104 on 128x128 inputs with
  the mask generator initialised as the original Mask2Former, ``model.mask_generator.init``,
  and the reference's mask embedding, whose LayerNorm after the pooled-feature sum passes
  more of the error on to the class logits (0.05-0.08 before);
  0.03-0.06 / 0.01-0.02 for the last two under transformers' N(0, 0.02), whose near-silent
  generator passed little of the feature error on; the figures vary with what ran before in
  the process: CPU kernel choice; bf16 keeps 8 mantissa bits and random tiny weights amplify
  the rounding through ~30 GroupNorm'd layers more than SD's pretrained weights).
* ``frozen_weights``: store the frozen SD and CLIP weights in bf16 (halves their
  memory, ~1.4B parameters). Only valid where the frozen parts run under autocast
  (``frozen_autocast`` or an autocast around the whole forward). Same tolerance as
  ``frozen_autocast``. Until ``remove()`` the float32 originals wait in host memory
  (4 bytes per frozen parameter: ~5.6 GB of RAM at SD v1.5 + ViT-L/14-336 shapes).
* ``channels_last``: NHWC memory format for the VAE and UNet convolutions. Same
  arithmetic, other summation order: features and mask logits <= 1e-4, probabilities
  <= 3e-5 (measured 2e-5 and 1.3e-5; 1e-6 for the probabilities before the reference's mask embedding).
* ``attention``: ``"sdpa"`` (diffusers' ``AttnProcessor2_0``, ``F.scaled_dot_product_attention``,
  diffusers' default) or ``"classic"`` (``AttnProcessor``: explicit softmax(QK^T)V).
  The two agree to <= 1e-4 (features, mask logits), <= 3e-5 (probabilities).
* ``compile_unet``: regional ``torch.compile`` of the UNet's resnet and transformer blocks
  (their ``forward`` methods, so the backbone's forward pre-hooks that record the taps
  and stop the pass early stay outside the compiled code). Inductor fuses and reorders
  float32 arithmetic: <= 1e-4 (features, mask logits), <= 3e-5 (probabilities). The first
  call compiles (about a minute on a 2-core CPU for the tiny model).
* ``tf32``: allow TF32 matmuls/convolutions (global torch flags; CUDA only, no effect on
  the CPU, where outputs stay bit-identical). On an Ampere+ GPU TF32 keeps 10 mantissa
  bits (not tested here: no GPU in the test suite).

The frozen parts are the backbone's own list: ``Backbone.frozen_parts()`` (role -> module; cast by
``frozen_weights``) and ``Backbone.frozen_entry_points()`` ((module, method) pairs run under
``frozen_autocast``); the diffusion backbone's roles ``unet`` / ``vae`` also receive ``channels_last``,
``attention`` and ``compile_unet``.

Switches of the training step (the trainable parts; each checked on the CPU against the default path).
``fused_optimizer``, ``batched_matching`` and the loss's half of ``no_host_syncs`` are constructor arguments
(``OdiseModule(fused_optimizer=)``, ``SetCriterion(batched_matching=, no_host_syncs=)``) that the builder
passes; :func:`apply_speed_options` sets them only on a part built without them (restorably: a benchmark's
before / after on one module). What this module patches is third-party code: the frozen parts, and the
``transformers`` pixel-decoder encoder layers and decoder layers of the mask generator.

* ``fused_optimizer``: AdamW with ``fused=True`` when every trainable parameter is on CUDA, ``foreach``
  elsewhere (:func:`odise_pl.models.optim.build_optimizer`; off: PyTorch's default, ``foreach`` on CUDA and
  a loop on the CPU). Same update, other float32 grouping: after 20 steps foreach equals the loop exactly
  and the fused kernel differs by 1.2e-7 (one ulp); bound ``steps * 8 ulp * max|p|``
  (``tests/models/test_optim_fused.py``).
* ``batched_matching``: the Hungarian matching of every supervised layer and image with one
  device-to-host copy of the cost matrices and one host-to-device copy of the indices per step
  (:mod:`odise_pl.models.mask_generator.matching`; default: B x L copies, 20 at the reference's
  settings), and the number of masks (an all-reduce under DDP) once per step instead of once per layer.
  Identical indices to the per-layer matcher for the same random state; identical losses for the same
  assignment (``tests/models/mask_generator/test_batched_matching.py``). The points are drawn in another order than
  the default path's (all matching draws first), so a step's random draws differ, not their law.
* ``no_host_syncs``: the crowd segments found with one copy of all ``iscrowd`` flags per step (default: a
  boolean indexing, i.e. a sync, per image), and the pixel decoder's encoder layers without
  ``transformers``' per-layer ``if not isfinite(h).all()`` check (training only), replaced by
  :func:`clamp_without_check`: bit-identical outputs (``tests/models/test_speed_training.py``).
* ``compile_decoder``: regional ``torch.compile`` of the masked-attention decoder layers' ``forward``:
  <= 1e-4 relative L2 on mask logits / embeddings (measured 1.7e-7 on the CPU with inductor).

bf16 through the UNet's backward (the captioner's gradient path) needs no switch of its own: under
``frozen_autocast`` the UNet's forward runs in bf16 and autograd runs each backward op in its forward
op's dtype. The decoder's self-attention (``transformers``' ``Mask2FormerAttention``) is a hand-written
softmax(QK^T)V; an SDPA version is not implemented (its masked cross-attention is
``nn.MultiheadAttention``).

Example (needs a built OdiseModule, so not a doctest)::

    handle = apply_speed_options(module, SpeedOptions(frozen_autocast=True, frozen_weights=True))
    ...
    handle.remove()
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from odise_pl.config.schema import SpeedConfig

#: the switches (the YAML section ``model.speed``; one definition, in the config schema)
SpeedOptions = SpeedConfig


class SpeedHandle:
    """Undo list of :func:`apply_speed_options`; ``report`` says what is active."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []
        self.report: dict = {}

    def add(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def remove(self) -> None:
        while self._undo:
            self._undo.pop()()


def frozen_parts(backbone: nn.Module) -> dict[str, nn.Module]:
    """The backbone's frozen sub-modules by role (its ``frozen_parts()``; none for a backbone without one)."""
    method = getattr(backbone, "frozen_parts", None)
    return dict(method()) if callable(method) else {}


def frozen_entry_points(backbone: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, method name)`` pairs the backbone calls its frozen parts through (its ``frozen_entry_points()``)."""
    method = getattr(backbone, "frozen_entry_points", None)
    return list(method()) if callable(method) else []


def _patch(handle: SpeedHandle, obj: object, name: str, wrapper: Callable) -> None:
    had_own = name in vars(obj)
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))

    def undo() -> None:
        if had_own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)

    handle.add(undo)


def _input_device_type(args: tuple, kwargs: dict) -> str:
    """Device type of the first tensor argument (the frozen part runs where its input is)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device.type
    return "cuda" if torch.cuda.is_available() else "cpu"


def _autocast_bf16(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with torch.autocast(_input_device_type(args, kwargs), dtype=torch.bfloat16):
            return fn(*args, **kwargs)

    return wrapped


def _autocast_bf16_to_float(fn: Callable) -> Callable:
    """bf16 autocast inside, a float32 result outside (for outputs mixed with float32 tensors)."""
    inner = _autocast_bf16(fn)

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        return inner(*args, **kwargs).float()

    return wrapped


def _float_taps(_module: nn.Module, args: tuple):
    taps, *rest = args
    return ([t.float() for t in taps], *rest)


def _cast_restorably(handle: SpeedHandle, part: nn.Module, dtype: torch.dtype) -> None:
    """Cast ``part``'s floating-point tensors to ``dtype``; undo restores the exact originals.

    A cast back (bf16 -> float32) would lose the low mantissa bits, so the float32 values
    are kept in host memory (4 bytes per parameter) until ``remove()``.
    """
    saved = {
        name: t.detach().to("cpu", copy=True) for name, t in [*part.named_parameters(), *part.named_buffers()] if t.is_floating_point()
    }
    part.to(dtype)

    def undo() -> None:
        for name, t in [*part.named_parameters(), *part.named_buffers()]:
            if name in saved:
                t.data = saved[name].to(t.device)

    handle.add(undo)


def attention_processor_names(unet: nn.Module) -> list[str]:
    """Distinct attention-processor classes active in a diffusers UNet."""
    return sorted({type(p).__name__ for p in unet.attn_processors.values()})


def apply_speed_options(model: nn.Module, opts: SpeedOptions, *, restorable: bool = True) -> SpeedHandle:
    """Apply ``opts`` to ``model`` (an OdiseModule or anything with ``.backbone``, or the backbone).

    ``restorable=False`` (the ``model.speed`` YAML path, for a whole run) does not keep float32
    copies of the frozen weights that ``frozen_weights`` casts to bf16.

    Returns:
        a :class:`SpeedHandle`; ``handle.report`` lists the attention processors, etc.
    """
    backbone = getattr(model, "backbone", model)
    handle = SpeedHandle()
    parts = frozen_parts(backbone)
    unet, vae = parts.get("unet"), parts.get("vae")  # the diffusion backbone's roles (channels_last, attention)

    if opts.tf32:
        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

        def undo_tf32() -> None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

        handle.add(undo_tf32)

    if unet is not None and opts.attention != "sdpa":
        from diffusers.models.attention_processor import AttnProcessor

        if opts.attention != "classic":
            raise ValueError(f"attention: '{opts.attention}' is not one of sdpa, classic")
        original = unet.attn_processors  # {name: processor}: restored as they were
        unet.set_attn_processor(AttnProcessor())
        handle.add(lambda: unet.set_attn_processor(original))

    if opts.frozen_weights:
        for part in parts.values():
            if restorable:
                _cast_restorably(handle, part, torch.bfloat16)
            else:  # for the whole run: no float32 copies, remove() leaves the part in bf16
                part.to(torch.bfloat16)

    if opts.frozen_autocast:
        for part, method in frozen_entry_points(backbone):
            _patch(handle, part, method, _autocast_bf16)
        # the open-vocabulary CLIP mask classifier runs the (shared) CLIP image tower itself
        classifier = getattr(getattr(model, "open_vocab", None), "mask_classifier", None)
        if classifier is not None and hasattr(classifier, "_embed"):
            _patch(handle, classifier, "_embed", _autocast_bf16_to_float)
        fusion = getattr(backbone, "fusion", None)
        if fusion is not None:
            h = fusion.register_forward_pre_hook(_float_taps)
            handle.add(h.remove)

    if opts.channels_last:
        for part in (vae, unet):
            if part is not None:
                part.to(memory_format=torch.channels_last)
                handle.add(functools.partial(part.to, memory_format=torch.contiguous_format))

    if opts.compile_unet and unet is not None:
        from diffusers.models.resnet import ResnetBlock2D

        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = 0
        for module in unet.modules():
            if isinstance(module, ResnetBlock2D) or type(module).__name__ == "Transformer2DModel":
                _patch(handle, module, "forward", torch.compile)
                compiled += 1
        handle.report["compiled_blocks"] = compiled

    if unet is not None:
        handle.report["attention_processors"] = attention_processor_names(unet)
    _apply_training_options(handle, model, opts)
    return handle


def _set_attribute(handle: SpeedHandle, obj: object, name: str, value: object) -> None:
    """Set a switch of an already built part, restorably (a part built with it is left as it is)."""
    if getattr(obj, name) == value:
        return
    had_own, old = name in vars(obj), getattr(obj, name)
    setattr(obj, name, value)
    handle.add(lambda: setattr(obj, name, old) if had_own else delattr(obj, name))


def clamp_without_check(forward: Callable, layer: nn.Module) -> Callable:
    """A pixel-decoder encoder layer without its per-layer host sync, with the same outputs.

    In training ``transformers`` runs ``if not torch.isfinite(h).all(): h = clamp(h, +-(max - 1000))``
    (a wait for the device per layer). Clamping unconditionally gives the same values: ``max - 1000``
    rounds to ``max`` in float32/bf16, so finite values pass unchanged and +-inf become +-max. The layer
    runs in eval mode for that check only, which changes nothing else when its dropouts are 0.
    """

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        if not layer.training:
            return forward(*args, **kwargs)
        layer.training = False
        try:
            outputs = forward(*args, **kwargs)
        finally:
            layer.training = True
        big = torch.finfo(outputs[0].dtype).max - 1000
        return (torch.clamp(outputs[0], min=-big, max=big), *outputs[1:])

    return wrapped


def _apply_training_options(handle: SpeedHandle, model: nn.Module, opts: SpeedOptions) -> None:
    """The switches of the trainable parts: optimizer, matching, host syncs, the decoder's compilation."""
    criterion = getattr(model, "criterion", None)
    generator = getattr(model, "mask_generator", None)
    if opts.fused_optimizer:
        _set_attribute(handle, model, "fused_optimizer", True)
    if opts.batched_matching and criterion is not None:
        _set_attribute(handle, criterion, "batched_matching", True)
    if opts.no_host_syncs and criterion is not None:
        _set_attribute(handle, criterion, "no_host_syncs", True)
    if opts.no_host_syncs and generator is not None:
        from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoderEncoderLayer

        patched = 0
        for layer in generator.modules():
            if isinstance(layer, Mask2FormerPixelDecoderEncoderLayer) and layer.dropout == 0 and layer.activation_dropout == 0:
                _patch(handle, layer, "forward", functools.partial(clamp_without_check, layer=layer))
                patched += 1
        handle.report["encoder_layers_without_sync"] = patched
    if opts.compile_decoder and generator is not None:
        layers = generator.transformer.decoder.layers
        for layer in layers:
            _patch(handle, layer, "forward", torch.compile)
        handle.report["compiled_decoder_layers"] = len(layers)


__all__ = [
    "SpeedOptions",
    "SpeedHandle",
    "apply_speed_options",
    "attention_processor_names",
    "frozen_parts",
    "frozen_entry_points",
    "clamp_without_check",
]
