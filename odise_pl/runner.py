"""Run directories, trainer construction, and the fit / validate / test entry points."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from odise_pl.callbacks.checkpointing import ResumeCheckpoint, RngState
from odise_pl.callbacks.nonfinite_loss import NonFiniteLoss
from odise_pl.callbacks.hparams_table import HParamsTable
from odise_pl.callbacks.param_summary import ParameterSummary
from odise_pl.callbacks.visualization import PanopticVisualizer
from odise_pl.callbacks.categories import CategoriesInCheckpoints
from odise_pl.checkpoints import (EVALUATE_MUST_MATCH, RESUME_MAY_DIFFER, TRAINING_ONLY_KEYS, AtomicCheckpointIO,
                                  atomic_write, check_config, export_safetensors, load_weights, read_checkpoint,
                                  read_safetensors)
from odise_pl.errors import CheckpointError, ConfigError
from odise_pl.models.builder import build_model, section_to_dataclass
from odise_pl.registry import DATA_MODULES
from odise_pl.run_directory import (SAFETENSORS_KEY, WEIGHTS_FILE, categories_payload, output_dir_of,
                                    run_directory_of, saved_config, training_categories, weights_file,
                                    write_categories)
from odise_pl.scale_out import apply_global_batch, build_strategy

_VERSION = re.compile(r"^version_(\d+)$")


#: set by the process that chose a ``version_N``; the ranks Lightning launches from it read it
RUN_DIR_ENV = "ODISE_PL_RUN_DIR"
#: how long a rank > 0 of an independent launch (torchrun, SLURM) waits for rank 0's choice
CLAIM_TIMEOUT_S = 600.0


def run_dir_for(cfg: DictConfig, *, fresh: bool = True) -> Path:
    """``ROOT/NAME/VERSION``: with ``version: null`` the next free ``version_N`` (never an existing one).

    Every process of one multi-process launch gets the same ``version_N``:

    * ranks that Lightning starts from this process (``trainer.devices > 1`` on one node) inherit
      the choice through the environment variable ``ODISE_PL_RUN_DIR`` (set by :func:`fit`);
    * ranks started independently (``torchrun``, SLURM's ``srun``: ``WORLD_SIZE`` / ``SLURM_NTASKS``
      > 1) agree through a claim file ``ROOT/NAME/.launches/<job id>`` that global rank 0 writes and
      the others wait for. The job id is ``SLURM_JOB_ID`` (+ step) or torchrun's ``--rdzv-id``; a
      re-queued SLURM job keeps its id and so its directory (and resumes from ``last.ckpt``).
      Without a job id a null ``run.version`` is refused: name the run.
    """
    base = Path(cfg.run.root) / cfg.run.name
    if cfg.run.version:
        return base / str(cfg.run.version)
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and _launch_rank() > 0 and Path(inherited).parent == base:
        return Path(inherited)
    if _launch_world_size() > 1:
        return _claimed_run_dir(base)
    return _next_version(base)


def _next_version(base: Path) -> Path:
    taken = [int(m.group(1)) for p in base.glob("version_*") if (m := _VERSION.match(p.name))]
    return base / f"version_{max(taken, default=-1) + 1}"


def _env_int(*keys: str) -> int:
    for key in keys:
        value = os.environ.get(key, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def _launch_rank() -> int:
    """This process's rank as its launcher set it (before any process group exists); 0 if none."""
    return max(_env_int("RANK", "SLURM_PROCID"), _env_int("LOCAL_RANK"), _env_int("NODE_RANK"))


def _launch_world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS")


def _launch_id() -> str | None:
    if os.environ.get("SLURM_JOB_ID"):
        return "slurm-" + os.environ["SLURM_JOB_ID"] + "." + os.environ.get("SLURM_STEP_ID", "0")
    rdzv = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if rdzv and rdzv != "none":
        return "torchrun-" + rdzv
    return None


def _claimed_run_dir(base: Path) -> Path:
    launch = _launch_id()
    if launch is None:
        raise ConfigError(f"run.version is null in a {_launch_world_size()}-process launch without a job id, so the "
                          "processes cannot agree on a new version_N: set run.version=NAME (the same on every "
                          "process), or launch with torchrun --rdzv-id ID / under SLURM.")
    claim = base / ".launches" / re.sub(r"[^\w.-]", "_", launch)
    if _env_int("RANK", "SLURM_PROCID") == 0:  # global rank 0 chooses
        if claim.is_file():  # the same job again (re-queued): its directory
            return base / claim.read_text().strip()
        chosen = _next_version(base)
        chosen.mkdir(parents=True, exist_ok=True)
        atomic_write(claim, lambda handle: handle.write(chosen.name.encode()))  # others never read half a name
        return chosen
    deadline = time.monotonic() + CLAIM_TIMEOUT_S
    while not claim.is_file():
        if time.monotonic() > deadline:
            raise ConfigError(f"rank {_launch_rank()} waited {CLAIM_TIMEOUT_S:.0f} s for rank 0 to choose the run "
                              f"directory ({claim} was not written): is {base} on a file system all nodes "
                              "share? Otherwise set run.version=NAME.")
        time.sleep(0.2)
    return base / claim.read_text().strip()


def save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Write the resolved config; an existing one is kept (numbered copies), never overwritten."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    n = 1
    while path.exists():
        path = run_dir / f"config.{n}.yaml"
        n += 1
    tmp = path.with_suffix(".tmp")
    tmp.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    os.replace(tmp, path)


def data_config(cfg: DictConfig):
    """The ``data`` section as its data module's config dataclass (defaults filled in); reads no data."""
    return section_to_dataclass(cfg.data, DATA_MODULES.get(cfg.data.name).config)


def build_datamodule(cfg: DictConfig):
    return DATA_MODULES.get(cfg.data.name).cls.from_config(data_config(cfg))


def build_trainer(cfg: DictConfig, run_dir: Path, *, extra_callbacks: list | None = None,
                  datamodule=None, extra_plugins: list | None = None) -> L.Trainer:
    """The Lightning Trainer of ``cfg``; with ``datamodule``, ``data.global_batch_size`` sets its
    per-device batch and the trainer's gradient accumulation (:func:`odise_pl.scale_out.apply_global_batch`)."""
    t = cfg.trainer
    logger = TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="",
                               default_hp_metric=False) if cfg.logging.tensorboard else False
    callbacks: list = [
        ResumeCheckpoint(str(run_dir / "checkpoints"), every_n_steps=int(cfg.checkpoint.every_n_steps)),
        RngState(),
        NonFiniteLoss(t.on_nonfinite, t.max_nonfinite_skips),
        PanopticVisualizer(cfg.logging.num_vis_images),
        ParameterSummary(),
        HParamsTable(),
    ]
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    callbacks += extra_callbacks or []
    clip = float(cfg.optim.clip_grad_norm)
    trainer = L.Trainer(
        default_root_dir=str(run_dir), logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO(), *(extra_plugins or [])],
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=build_strategy(t),
        precision=t.precision, max_steps=t.max_steps, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=t.check_val_every_n_epoch, limit_val_batches=t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps, accumulate_grad_batches=t.accumulate_grad_batches,
        enable_progress_bar=t.enable_progress_bar, deterministic=t.deterministic,
        num_sanity_val_steps=t.num_sanity_val_steps,
        # no_grad rather than inference_mode: metric states reset under inference mode could not be
        # updated in place by the next validation inside fit (e.g. after an untrained evaluation)
        inference_mode=False,
        gradient_clip_val=clip if clip > 0 else None, gradient_clip_algorithm="norm",
    )
    if datamodule is not None:
        apply_global_batch(cfg, trainer, datamodule, run_dir)
    return trainer


def build_all(cfg: DictConfig):
    """The data module and the model for ``cfg``."""
    L.seed_everything(int(cfg.seed), workers=True)
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm.categories, ignore_index=dm.ignore_index)
    dm.size_divisibility = max(int(getattr(dm, "size_divisibility", 1)), model.backbone.size_divisibility)
    return dm, model


def resume_point(cfg: DictConfig, resume: str | None = None) -> tuple[Path, Path | None]:
    """The run directory ``fit`` writes into and the checkpoint it resumes from (None: from scratch).

    * ``resume`` a run directory, or a checkpoint inside ``RUN/checkpoints/``: that run, resumed.
    * ``resume`` another checkpoint file: a new run directory, starting from that checkpoint.
    * no ``resume``: ``run_dir_for(cfg)``; an explicit ``run.version`` whose directory holds
      ``checkpoints/last.ckpt`` resumes from it (so re-running a killed command continues it).

    A finished run (``metrics.json`` written and ``trainer.max_steps`` reached) is refused.
    """
    if resume is not None:
        given = Path(resume)
        if given.is_dir():
            run_dir, ckpt = given, given / "checkpoints" / "last.ckpt"
            if not ckpt.is_file():
                raise CheckpointError(f"--resume {given}: no checkpoints/last.ckpt in this directory; give a "
                                      "run directory of odise-pl fit or a .ckpt file.")
        elif given.is_file():
            ckpt = given
            run_dir = given.parent.parent if given.parent.name == "checkpoints" else run_dir_for(cfg)
            if run_dir != given.parent.parent and (run_dir / "checkpoints" / "last.ckpt").exists():
                raise ConfigError(f"--resume {given} would start in {run_dir}, which holds another run's "
                                  "checkpoint; set run.version to a new name, or leave it null.")
        else:
            raise CheckpointError(f"--resume {resume}: no such checkpoint file or run directory.")
    else:
        run_dir = run_dir_for(cfg)
        ckpt = run_dir / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            if (run_dir / "metrics.json").exists():
                raise ConfigError(f"run directory {run_dir} holds a finished run without a checkpoint to "
                                  "resume: set run.version to a new name, or leave it null for the next "
                                  "free version.")
            return run_dir, None  # new, empty, or killed before its first checkpoint
    done = (run_dir / "metrics.json").exists()
    if done and int(read_checkpoint(ckpt).get("global_step", 0)) >= int(cfg.trainer.max_steps):
        raise ConfigError(f"run {run_dir} already finished (trainer.max_steps={cfg.trainer.max_steps} "
                          "reached, metrics.json written). Raise trainer.max_steps to train it further, "
                          "or set run.version to a new name (null: the next free version) for a new run.")
    return run_dir, ckpt


def fit(cfg: DictConfig, *, evaluate_untrained: bool = False, ckpt_path: str | None = None,
        init_from: str | None = None, callbacks: list | None = None, plugins: list | None = None) -> dict:
    """Train ``cfg`` (resuming where :func:`resume_point` says), then evaluate; returns the final metrics.

    ``init_from``: a run directory, ``.ckpt`` or ``.safetensors`` whose weights a new run starts from
    (fine-tuning, :func:`init_weights`); a run that resumes takes its weights from its checkpoint instead.
    ``callbacks`` / ``plugins``: added to the Trainer's (a launcher's preemption handling, e.g.).
    The run directory gets ``config.yaml`` and ``categories.json`` when training starts, and every
    checkpoint and ``weights.safetensors`` carry the categories too (:mod:`odise_pl.run_directory`).
    """
    run_dir, resume = resume_point(cfg, ckpt_path)
    if resume is not None:  # refuse a checkpoint of another experiment before building anything
        check_config(read_checkpoint(resume), cfg, resume, ignore=RESUME_MAY_DIFFER)
        print(f"resuming from {resume}" + (f" (--init-from {init_from} is not used: the checkpoint holds the "
                                           "weights trained since)" if init_from else ""))
    elif init_from is not None:
        source = run_directory_of(init_from)
        if source is not None and source.resolve() == run_dir.resolve():
            raise ConfigError(f"--init-from {init_from} would fine-tune into its own run directory {run_dir}: "
                              "set run.name (or run.version) to a new name.")
        weights_file(init_from)  # a missing start point is named before anything is built
    dm, model = build_all(cfg)   # bad data or config fails here, before the run directory exists
    results: dict = {"run_dir": str(run_dir)}
    if resume is None and init_from is not None:
        init_weights(model, init_from)
        results["init_from"] = str(init_from)
        print(f"starting from the weights of {init_from}")
    categories = {"categories": dm.categories, "ignore_index": dm.ignore_index}
    os.environ[RUN_DIR_ENV] = str(run_dir)  # ranks Lightning launches from here write here too
    if _launch_rank() == 0:
        save_config(cfg, run_dir)
        write_categories(run_dir, **categories)
    trainer = build_trainer(cfg, run_dir, datamodule=dm, extra_plugins=plugins,
                            extra_callbacks=[CategoriesInCheckpoints(**categories), *(callbacks or [])])
    if evaluate_untrained and resume is None:
        results["untrained"] = merge_metrics(trainer.validate(model, datamodule=dm, verbose=False))
    trainer.fit(model, datamodule=dm, ckpt_path=str(resume) if resume is not None else None)
    results["final"] = merge_metrics(trainer.validate(model, datamodule=dm, verbose=False))
    if trainer.global_rank != 0:
        return results
    write_results(run_dir, results)  # first: the metrics are never lost to a failing export
    if cfg.checkpoint.export_safetensors:
        metadata = {"global_step": trainer.global_step,
                    SAFETENSORS_KEY: json.dumps(categories_payload(**categories), ensure_ascii=False)}
        results["weights"] = str(export_safetensors(model, run_dir / WEIGHTS_FILE, metadata))
    return results


def merge_metrics(out: list[dict]) -> dict:
    """Lightning's list of logged dicts -> one ``{metric: float}`` (``val/PQ`` -> ``PQ``)."""
    merged: dict = {}
    for d in out:
        merged.update({k.split("/", 1)[-1]: float(v) for k, v in d.items()})
    return merged


def write_results(run_dir: Path, results: dict) -> None:
    """``metrics.json`` and ``metrics.md`` (``metrics.N.*`` when a resumed run has them already)."""
    stem, n = "metrics", 0
    while (run_dir / f"{stem}.json").exists():
        n += 1
        stem = f"metrics.{n}"
    tmp = run_dir / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, run_dir / f"{stem}.json")
    (run_dir / f"{stem}.md").write_text(format_table(results))


def format_table(results: dict) -> str:
    """Markdown table of PQ/SQ/RQ (All/Things/Stuff) and mIoU for each evaluated stage, then a note
    naming the mIoU convention by detectron2 version when a stage has an mIoU."""
    from odise_pl.metrics.semantic_iou import miou_footnote

    cols = ["PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "mIoU"]
    rows = [(k, v) for k, v in results.items() if isinstance(v, dict)]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in rows:
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.1f}" if c in m else "-" for c in cols) + " |")
    if any("mIoU" in m for _, m in rows):
        lines += ["", miou_footnote()]
    return "\n".join(lines) + "\n"


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, ckpt: dict | None = None, *,
                    action: str = "evaluate it") -> None:
    """Load a run directory, a ``.ckpt`` (``weights_only``) or a ``.safetensors`` file into ``model``.

    A checkpoint of another architecture is refused: the ``model.*`` keys of
    :data:`~odise_pl.checkpoints.EVALUATE_MUST_MATCH` (training-only keys aside) are compared with the
    config it was trained with (a ``.ckpt``'s own; the run's ``config.yaml`` for a run directory or a
    ``.safetensors`` in one). ``ckpt``: the checkpoint dict already read from ``path``.
    """
    weights = weights_file(path)
    if ckpt is None:
        ckpt = read_safetensors(weights) if weights.suffix == ".safetensors" else read_checkpoint(weights)
    saved, _ = saved_config(path, ckpt)
    current = (getattr(model, "hparams", None) or {}).get("config")
    if saved and current:
        check_config({"hyper_parameters": {"config": saved}}, current, path, only=EVALUATE_MUST_MATCH,
                     ignore=TRAINING_ONLY_KEYS, action=action)
    load_weights(model, weights, ckpt)


def init_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Fine-tuning start: the weights of ``path`` (run directory, ``.ckpt``, ``.safetensors``) into ``model``.

    Only weights are taken (no optimizer, step or loader position: that is ``--resume``). Buffers whose
    shape follows the number of training classes (the no-object class weight of the criterion) keep
    ``model``'s own, so the new training set may have other categories; every parameter must fit.
    """
    weights = weights_file(path)
    ckpt = read_safetensors(weights) if weights.suffix == ".safetensors" else read_checkpoint(weights)
    own = dict(model.named_buffers())
    state = ckpt["state_dict"]
    for key, value in list(state.items()):
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            state[key] = own[key]
    load_checkpoint(model, path, ckpt, action="start from it")


def build_trained(cfg: DictConfig, ckpt: str | os.PathLike, *, eval_datamodule=None) -> tuple[torch.nn.Module, list[dict]]:
    """The model of ``cfg`` with the weights of ``ckpt`` (run directory, ``.ckpt`` or ``.safetensors``).

    Its training categories are those that travel with ``ckpt``
    (:func:`odise_pl.run_directory.training_categories`): no data module is built for them. Only a
    checkpoint without them (written before they were saved) falls back to the data module of ``cfg``.
    With ``eval_datamodule``, the model evaluates on that module's categories and ignore label.

    Returns:
        The model (weights loaded) and its training categories.
    """
    weights = weights_file(ckpt)
    ckpt_dict = None if weights.suffix == ".safetensors" else read_checkpoint(weights)
    found = training_categories(ckpt, ckpt_dict)
    L.seed_everything(int(cfg.seed), workers=True)
    if found is not None:
        categories, ignore_index = found.categories, found.ignore_index
    else:
        dm = eval_datamodule if eval_datamodule is not None else build_datamodule(cfg)
        categories, ignore_index = dm.categories, dm.ignore_index
    eval_categories = None
    if eval_datamodule is not None:
        eval_categories, ignore_index = eval_datamodule.categories, eval_datamodule.ignore_index
    model = build_model(cfg, categories, ignore_index=255 if ignore_index is None else int(ignore_index),
                        eval_categories=eval_categories)
    load_checkpoint(model, ckpt, ckpt_dict)
    if eval_datamodule is not None:
        eval_datamodule.size_divisibility = max(int(getattr(eval_datamodule, "size_divisibility", 1)),
                                                model.backbone.size_divisibility)
    return model, categories


def evaluate(cfg: DictConfig, ckpt: str, *, stage: str = "validate") -> dict:
    """Evaluate a checkpoint (run directory, ``.ckpt`` or ``.safetensors``) on the data of ``cfg``.

    Only the evaluation split is read (the training categories travel with the checkpoint). Results
    go to the run directory (else beside the file) as ``eval_<stage>_<n>.json`` (never overwritten).
    """
    weights_file(ckpt)  # a missing checkpoint is named before anything is built
    dm = build_datamodule(cfg)
    dm.categories  # noqa: B018 - bad evaluation data fails here, before a large checkpoint is read
    model, _ = build_trained(cfg, ckpt, eval_datamodule=dm)
    out_dir = output_dir_of(ckpt)
    trainer = build_trainer(cfg, out_dir / f"eval_{stage}")
    run = trainer.validate if stage == "validate" else trainer.test
    results = {stage: merge_metrics(run(model, datamodule=dm, verbose=False)), "checkpoint": str(ckpt)}
    n = 0
    while (out_dir / f"eval_{stage}_{n}.json").exists():
        n += 1
    tmp = out_dir / f"eval_{stage}_{n}.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, out_dir / f"eval_{stage}_{n}.json")
    return results
