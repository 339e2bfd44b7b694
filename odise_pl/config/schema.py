"""The typed schema of an experiment file.

Sections dispatched through a registry (``data``, ``model.backbone``,
``model.supervision``) hold ``name`` plus the fields of the dataclass registered
with that name; the loader validates them against it.  Everything else is
validated against the dataclasses below: an unknown or mistyped key is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# Sections whose keys depend on a registered part: dotted path -> registry attribute name
DISPATCHED_SECTIONS = {
    "data": "DATA_MODULES",
    "model.backbone": "BACKBONES",
    "model.supervision": "SUPERVISIONS",
}


@dataclass
class RunConfig:
    root: str = "runs"             # every run writes into ROOT/NAME/VERSION
    name: str = "default"
    version: Optional[str] = None  # None: the next free version_N; an existing one resumes (last.ckpt)


@dataclass
class ClipConfig:
    """The one CLIP shared by the captioner, the text classifier and the mask classifier."""

    model_name: str = "ViT-L-14-336"
    pretrained: Optional[str] = "openai"  # open_clip tag, hf-hub:ORG/NAME, a local file, or null (random)


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
    embed_dim: int = 256           # mask embedding width (PooledMaskEmbed output)
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
    init: str = field(default="mask2former", metadata={"choices": ("mask2former", "transformers")})


@dataclass
class InferenceConfig:
    panoptic_on: bool = True
    semantic_on: bool = True
    instance_on: bool = False
    object_mask_threshold: float = 0.0
    overlap_threshold: float = 0.8
    instance_topk: int = 100
    # classes in mIoU: either_present (detectron2 v0.6, the reference's) | gt_present (after f3c1bc19)
    miou_average: str = "either_present"
    classifier: str = "diffusion"   # diffusion | clip | ensemble (the paper's classifier ablation)
    alpha: float = 0.3              # ensemble weight of CLIP for classes seen in training
    beta: float = 0.7               # ... and for unseen classes
    clip_prompt_templates: list = field(default_factory=lambda: ["a photo of a {}."])
    # CLIP branch: "reference" (image cropped to its valid area, masks of the padded grid: the
    # reference's slight misalignment) | "cropped" (both cropped: the corrected variant)
    clip_mask_alignment: str = field(default="reference", metadata={"choices": ("reference", "cropped")})


@dataclass
class SpeedConfig:
    """``model.speed``: speed switches of the frozen parts (``odise_pl.models.speed``; each keeps a stated
    tolerance of the float32 outputs). They may differ between training and evaluating a checkpoint."""

    frozen_autocast: bool = False   # run the frozen SD / CLIP parts under bf16 autocast
    frozen_weights: bool = False    # store the frozen SD / CLIP weights in bf16 (needs frozen_autocast)
    channels_last: bool = False     # NHWC convolutions in the VAE and UNet
    attention: str = "sdpa"         # sdpa | classic (diffusers' attention processor)
    compile_unet: bool = False      # regional torch.compile of the UNet blocks
    tf32: bool = False              # TF32 matmuls / convolutions (CUDA)


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
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    clip_grad_norm: float = 0.01      # 0 disables clipping
    warmup_steps: int = 250
    warmup_factor: float = 0.067      # lr multiplier at step 0 of the linear warm-up (the reference's)
    # fractions of max_steps: the reference's 163889/184375 and 177546/184375 (x0.1 from step 81,945
    # and 88,774 of 92,188; odise_pl.models.optim.lr_factor)
    milestones: list = field(default_factory=lambda: [0.8888894915254237, 0.9629613559322034])
    gamma: float = 0.1


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"           # auto | ddp | fsdp | ddp_spawn ... (odise_pl.scale_out)
    ddp_static_graph: bool = True    # ddp: static graph, no unused-parameter search
    fsdp_sharding: str = field(default="FULL_SHARD", metadata={
        "choices": ("FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD")})
    precision: str = "32-true"       # 32-true | bf16-mixed | 16-mixed
    max_steps: int = 92000
    val_check_interval: Any = 5000   # steps (int) or fraction of an epoch (float)
    check_val_every_n_epoch: Optional[int] = None
    limit_val_batches: Any = 1.0
    log_every_n_steps: int = 20
    accumulate_grad_batches: int = 1  # derived instead when data.global_batch_size is set
    enable_progress_bar: bool = True
    deterministic: bool = False
    num_sanity_val_steps: int = 0
    # a NaN/inf loss: stop (naming the step and the loss terms; the last checkpoint stays good)
    # or skip that batch's update and count it, stopping after max_nonfinite_skips
    on_nonfinite: str = field(default="stop", metadata={"choices": ("stop", "skip")})
    max_nonfinite_skips: int = 100


@dataclass
class CheckpointConfig:
    """``RUN_DIR/checkpoints/last.ckpt``, written atomically, holds everything a resume needs."""

    every_n_steps: int = 1000        # also written at the end of every validation; 0: only then
    export_safetensors: bool = True  # RUN_DIR/weights.safetensors (trained weights only) at the end


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    vis_every_n_steps: int = 500     # training pictures in TensorBoard every N steps (0: none)
    num_vis_images: int = 4
    log_per_class: bool = False      # per-class PQ/SQ/RQ/IoU to TensorBoard after each evaluation


@dataclass
class ExperimentConfig:
    seed: int = 42
    run: RunConfig = field(default_factory=RunConfig)
    data: Any = field(default_factory=lambda: {"name": "coco_panoptic"})
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
