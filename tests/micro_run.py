"""One micro-run configuration: the overrides that turn an experiment into a seconds-long CPU fit.

Every test that trains or evaluates end to end starts from :func:`micro_run` and appends what it
is about (later overrides win, so an appended ``trainer.max_steps=5`` replaces the default):

    >>> from pathlib import Path
    >>> micro_run(Path("/tmp/t"), steps=3)[:3]
    ['data.root=/tmp/t/data', 'run.root=/tmp/t/runs', 'data.num_train=8']
    >>> "trainer.val_check_interval=3" in micro_run(None, steps=3)
    True
"""

from __future__ import annotations

from pathlib import Path

#: 64x64 generated scenes, batches of 2 on the CPU in this process, one decoder layer, no extra output
SMALL = [
    "data.num_workers=0",
    "data.image_size=64",
    "data.crop_size=64",
    "data.eval_short_side=64",
    "data.eval_max_long_side=64",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "logging.tensorboard=false",
    "model.mask_generator.dec_layers=1",
    "model.mask_generator.train_num_points=256",
]


def micro_run(root: Path | None, *, steps: int = 2, val_every: int | None = None, num_train: int = 8, num_val: int = 2) -> list[str]:
    """Overrides of a tiny fit: data and runs under ``root`` (None: leave ``data.root`` / ``run.root``),
    ``steps`` optimizer steps, validation every ``val_every`` steps (default: at the end)."""
    paths = [] if root is None else [f"data.root={root / 'data'}", f"run.root={root / 'runs'}"]
    return [
        *paths,
        f"data.num_train={num_train}",
        f"data.num_val={num_val}",
        *SMALL,
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={val_every or steps}",
    ]


def shorter_sweep(root: Path, *, steps: int = 3) -> list[str]:
    """Overrides that shorten a tiny sweep file's runs (``experiments/sweeps/*_tiny.yaml`` keeps its own
    sizes) for a shared CPU: runs and data under ``root``, ``steps`` steps, 8 + 2 images, no periodic
    checkpoint."""
    return [
        f"run.root={root / 'runs'}",
        f"data.root={root / 'data'}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "data.num_val=2",
        "data.num_train=8",
        "checkpoint.every_n_steps=0",
    ]
