"""The typed schema of an experiment file.

Sections dispatched through a registry (``data``, ``model.backbone``,
``model.supervision``) hold ``name`` plus the fields of the dataclass registered
with that name; the loader validates them against it.  Everything else is
validated against the dataclasses below: an unknown or mistyped key is an error.

Two declarations next to a field (or a section) are checked too, before anything loads:

* ``choice(default, choices)``: the field takes one of ``choices`` (a typo gets
  "Did you mean ...?"); code that needs the list reads it back with :func:`choices_of`.
* a section's ``problems(self) -> list[tuple[str, str]]`` method: ``(key, message)`` for every
  combination of its values that cannot work (e.g. ``frozen_weights`` without ``frozen_autocast``);
  ``key`` is relative to the section, ``message`` says what is wrong and what to do.
  Registered parts' config dataclasses may define both as well.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def choice(default: str, choices: Sequence[str], aliases: dict[str, str] | None = None) -> Any:
    """A string field that takes one of ``choices`` (``field`` with ``metadata={"choices": ...}``).

    ``aliases`` maps old names to choices: validation accepts them and stores the choice
    (``classifier: diffusion`` reads as ``in_vocab``), so a resolved config shows the new name.

    Example:
        >>> @dataclass
        ... class MyConfig:
        ...     mode: str = choice("fast", ("fast", "exact"), aliases={"quick": "fast"})
    """
    choices = tuple(choices)
    if default not in choices:
        raise ValueError(f"default {default!r} is not one of the choices {choices}")
    aliases = dict(aliases or {})
    if not set(aliases.values()) <= set(choices):
        raise ValueError(f"aliases {aliases} must point at choices {choices}")
    return field(default=default, metadata={"choices": choices, "aliases": aliases})


def choices_of(cls: type, name: str) -> tuple:
    """The choices declared for field ``name`` of dataclass ``cls`` (``()`` when it has none).

    Example:
        >>> choices_of(InferenceConfig, "classifier")
        ('in_vocab', 'clip', 'ensemble')
    """
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return tuple(found.metadata.get("choices", ())) if found is not None else ()


def aliases_of(cls: type, name: str) -> dict[str, str]:
    """Old name -> choice for field ``name`` of dataclass ``cls`` (``{}`` when it has none).

    Example:
        >>> aliases_of(InferenceConfig, "classifier")
        {'diffusion': 'in_vocab'}
    """
    found = {f.name: f for f in dataclasses.fields(cls)}.get(name)
    return dict(found.metadata.get("aliases", {})) if found is not None else {}


# Sections whose keys depend on a registered part: dotted path -> registry attribute name
DISPATCHED_SECTIONS = {
    "data": "DATA_MODULES",
    "model.backbone": "BACKBONES",
    "model.supervision": "SUPERVISIONS",
}


@dataclass
class RunConfig:
    root: str = "runs"  # every run writes into ROOT/NAME/VERSION
    name: str = "default"
    version: str | None = None  # None: the next free version_N; an existing one resumes (last.ckpt)


def is_prompt_template(template: Any) -> bool:
    """True for a string with ``{}`` exactly once and no other braces (``"a photo of a {}."``)."""
    if not isinstance(template, str) or template.count("{}") != 1:
        return False
    rest = template.replace("{}", "", 1)
    return "{" not in rest and "}" not in rest


@dataclass
class ClipConfig:
    """The one CLIP shared by the captioner, the text classifier and the mask classifier."""

    model_name: str = "ViT-L-14-336"
    pretrained: str | None = "openai"  # open_clip tag, hf-hub:ORG/NAME, a local file, or null (random)


@dataclass
class MaskGeneratorConfig:
    """Mask2Former (transformers' pixel decoder + masked-attention decoder); reference values."""

    num_queries: int = 100
    hidden_dim: int = 256
    mask_dim: int = 256
    dec_layers: int = 9
    nheads: int = 8
    dim_feedforward: int = 2048
    enc_layers: int = 6
    enc_feedforward_dim: int = 1024
    enc_num_points: int = 4
    embed_dim: int = 256  # mask embedding width (PooledMaskEmbed output)
    pre_mlp_norm: bool = True  # LayerNorm before the mask-embedding MLP (ODISE); false: FC-CLIP's
    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    train_num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    gradient_checkpointing: bool = False
    # mask2former: the original Mask2Former's initialisation (xavier / c2_xavier_fill / deformable grid;
    # odise_pl.models.mask_generator.init); transformers: transformers' own (mostly N(0, 0.02))
    init: str = choice("mask2former", ("mask2former", "transformers"))

    def problems(self) -> list[tuple[str, str]]:
        if self.mask_dim != self.hidden_dim:
            return [
                (
                    "mask_dim",
                    f"{self.mask_dim} must equal model.mask_generator.hidden_dim "
                    f"({self.hidden_dim}): the pooled mask features are added to the queries. Set both "
                    "to the same width.",
                )
            ]
        return []


@dataclass
class InferenceConfig:
    panoptic_on: bool = True
    semantic_on: bool = True
    instance_on: bool = False
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    instance_topk: int = 100
    # semantic-only evaluation (test --sets A-847, PC, PAS): masks_first (ODISE: mask logits resized to the
    # output size, then the map) | scores_when_semantic_only (FC-CLIP: the class-score map at the padded
    # input size, then cropped and resized; odise_pl.models.inference.segment.SEMANTIC_ORDERS)
    semantic_postprocess: str = choice("masks_first", ("masks_first", "scores_when_semantic_only"))
    # classes in mIoU: either_present (detectron2 v0.6, the reference's) | gt_present (after f3c1bc19)
    miou_average: str = choice("either_present", ("gt_present", "either_present"))
    # the paper's ablation: in_vocab (the trained classifier alone: ODISE's diffusion-feature head, FC-CLIP's
    # in-vocabulary head) | clip (the frozen CLIP mask classifier) | ensemble (geometric, alpha/beta)
    classifier: str = choice("in_vocab", ("in_vocab", "clip", "ensemble"), aliases={"diffusion": "in_vocab"})
    alpha: float = 0.3  # ensemble weight of CLIP for classes seen in training
    beta: float = 0.7  # ... and for unseen classes
    clip_prompt_templates: list = field(default_factory=lambda: ["a photo of a {}."])
    # CLIP branch: "reference" (image cropped to its valid area, masks of the padded grid: the
    # reference's slight misalignment) | "cropped" (both cropped: the corrected variant)
    clip_mask_alignment: str = choice("reference", ("reference", "cropped"))
    # CLIP branch's features: "image" (CLIP runs again on the image at its input size: ODISE) |
    # "backbone" (the clip backbone's stride-32 map of the same pass, pooled per mask: FC-CLIP)
    clip_features: str = choice("image", ("image", "backbone"))
    ensemble_on_valid_mask: bool = False  # CLIP's weight 0 for masks empty at stride 32 (FC-CLIP's ResNets)

    def problems(self) -> list[tuple[str, str]]:
        found = [
            (key, f"{getattr(self, key)} is outside [0, 1] (it is CLIP's weight in the ensemble).")
            for key in ("alpha", "beta")
            if not 0 <= getattr(self, key) <= 1
        ]
        templates = self.clip_prompt_templates
        if not templates:
            found.append(
                ("clip_prompt_templates", "is empty: give at least one template, e.g. ['a photo of a {}.'] (or ['{}'] for the bare names).")
            )
        found += [
            (
                "clip_prompt_templates",
                f"{t!r} must contain '{{}}' exactly once (where the class name goes) and no other braces, e.g. 'a photo of a {{}}.'.",
            )
            for t in templates
            if not is_prompt_template(t)
        ]
        return found


@dataclass
class SpeedConfig:
    """``model.speed``: speed switches of the frozen parts (``odise_pl.models.speed``; each keeps a stated
    tolerance of the float32 outputs). They may differ between training and evaluating a checkpoint."""

    frozen_autocast: bool = False  # run the frozen SD / CLIP parts under bf16 autocast
    frozen_weights: bool = False  # store the frozen SD / CLIP weights in bf16 (needs frozen_autocast)
    channels_last: bool = False  # NHWC convolutions in the VAE and UNet
    attention: str = choice("sdpa", ("sdpa", "classic"))  # diffusers' attention processor
    compile_unet: bool = False  # regional torch.compile of the UNet blocks
    tf32: bool = False  # TF32 matmuls / convolutions (CUDA)
    fused_optimizer: bool = False  # AdamW(fused=True) on CUDA, foreach elsewhere (default: torch's choice)
    batched_matching: bool = False  # Hungarian matching of all layers and images with one device-to-host copy
    no_host_syncs: bool = False  # crowd filtering with one copy per step; no finite check per encoder layer
    compile_decoder: bool = False  # regional torch.compile of the masked-attention decoder layers

    def problems(self) -> list[tuple[str, str]]:
        if self.frozen_weights and not self.frozen_autocast:
            return [
                (
                    "frozen_weights",
                    "true stores the frozen weights in bf16, so they must also run "
                    "under bf16: set model.speed.frozen_autocast: true as well (or frozen_weights: false).",
                )
            ]
        return []


@dataclass
class ModelConfig:
    clip: ClipConfig = field(default_factory=ClipConfig)
    backbone: Any = field(default_factory=lambda: {"name": "clip"})
    mask_generator: MaskGeneratorConfig = field(default_factory=MaskGeneratorConfig)
    supervision: Any = field(default_factory=lambda: {"name": "category_label"})
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    # parameters without weight decay (odise_pl.models.optim.NO_DECAY_RULES): norm_and_bias (ODISE's
    # detectron2 rule) | norm_and_embedding (FC-CLIP's: norms and nn.Embeddings; biases decayed)
    no_decay: str = choice("norm_and_bias", ("norm_and_bias", "norm_and_embedding"))
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float = 0.01  # 0 disables clipping
    warmup_steps: int = 250  # 0: no warm-up (FC-CLIP's recipe)
    warmup_factor: float = 0.067  # lr multiplier at step 0 of the linear warm-up (the reference's)
    # fractions of max_steps: the reference's 163889/184375 and 177546/184375 (x0.1 from step 81,945
    # and 88,774 of 92,188; odise_pl.models.optim.lr_factor)
    milestones: list = field(default_factory=lambda: [0.8888894915254237, 0.9629613559322034])
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    accelerator: str = choice("auto", ("auto", "cpu", "gpu", "cuda", "mps", "tpu"))
    devices: Any = 1
    num_nodes: int = 1
    # ddp and fsdp: configured by odise_pl.engine.scale_out; the others go to Lightning as they are
    strategy: str = choice("auto", ("auto", "ddp", "fsdp", "ddp_spawn", "ddp_fork", "ddp_notebook", "single_device"))
    ddp_static_graph: bool = True  # ddp: static graph, no unused-parameter search
    fsdp_sharding: str = choice("FULL_SHARD", ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"))
    precision: str = choice("32-true", ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"))
    max_steps: int = 92000
    val_check_interval: Any = 5000  # steps (int) or fraction of an epoch (float)
    check_val_every_n_epoch: int | None = None
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 20
    accumulate_grad_batches: int = 1  # derived instead when data.global_batch_size is set
    enable_progress_bar: bool = True
    deterministic: bool = False
    num_sanity_val_steps: int = 0
    # a NaN/inf loss: stop (naming the step and the loss terms; the last checkpoint stays good)
    # or skip that batch's update and count it, stopping after max_nonfinite_skips
    on_nonfinite: str = choice("stop", ("stop", "skip"))
    max_nonfinite_skips: int = 100


@dataclass
class CheckpointConfig:
    """``RUN_DIR/checkpoints/last.ckpt``, written atomically, holds everything a resume needs."""

    every_n_steps: int = 1000  # also written at the end of every validation; 0: only then
    export_safetensors: bool = True  # RUN_DIR/weights.safetensors (trained weights only) at the end


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    vis_every_n_steps: int = 500  # training pictures in TensorBoard every N steps (0: none)
    num_vis_images: int = 4
    log_per_class: bool = False  # per-class PQ/SQ/RQ/IoU to TensorBoard after each evaluation


@dataclass
class ExperimentConfig:
    # modules to import before validation (their parts register themselves): module names or .py files
    # relative to the declaring YAML file; bases' lists add up (odise_pl.config.imports)
    imports: list = field(default_factory=list)
    seed: int = 42
    run: RunConfig = field(default_factory=RunConfig)
    data: Any = field(default_factory=lambda: {"name": "coco_panoptic"})
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
