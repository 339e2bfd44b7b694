"""``odise-pl sweep plot``: PNGs of a sweep's results, read from its run directories.

Two figures (matplotlib, Agg backend, so no display is needed):

* ``final_metrics.png``: the final PQ, SQ, RQ and mIoU of every point, one bar each.  With seeds
  the bar is the mean over the point's finished seeds, its error bar the 95% confidence interval
  of the mean (Student's t, n-1 degrees of freedom; none with one seed), and the dots the seeds.
* ``validation_curves.png``: ``val/PQ`` and ``val/mIoU`` over training steps for every run (one
  colour per point, so replicates share a colour; dashed: not finished), from the run's TensorBoard events.

A file that exists already is never overwritten: the next free name is taken
(``final_metrics.1.png``, ...).

Example:
    $ odise-pl sweep plot -c experiments/sweeps/backbones_quick.yaml --out plots/
    plots/final_metrics.png
    plots/validation_curves.png
"""

from __future__ import annotations

from pathlib import Path

from odise_pl.atomic_files import write_new
from odise_pl.metrics.replicates import CONFIDENCE
from odise_pl.sweeps.collect import collect
from odise_pl.sweeps.run_state import RunRecord
from odise_pl.sweeps.summary import summarize_points

#: the metrics of the final-metrics figure
FINAL_METRICS = ("PQ", "SQ", "RQ", "mIoU")
#: the validation scalars of the curves figure (tags the module logs)
CURVE_TAGS = ("val/PQ", "val/mIoU")


def _save(fig, path: Path) -> Path:
    """Save a figure under the next free name (:func:`~odise_pl.atomic_files.write_new`: never
    replaces a file, even one another process just wrote)."""
    return write_new(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def validation_curves(run_dir: str | Path, tags=CURVE_TAGS) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of a run's validation scalars, from ``RUN_DIR/tensorboard``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = Path(run_dir) / "tensorboard"
    if not folder.is_dir():
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    present = set(events.Tags().get("scalars", []))
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags if tag in present}


def plot_final_metrics(records: list[RunRecord], path: Path, metrics=FINAL_METRICS) -> Path:
    """Bars of the final metrics per point (mean over seeds, 95% CI error bars, seeds as dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    points = summarize_points(records)
    seeded = any(r.entry.seed is not None for r in records)
    x = np.arange(len(points))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 1, 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [p.stats[metric].mean for p in points]
        errors = [p.stats[metric].half_width for p in points]
        ax.bar(
            x,
            np.nan_to_num(means),
            color="C0",
            alpha=0.7,
            yerr=np.nan_to_num(errors) if seeded else None,
            capsize=4,
            ecolor="black",
        )
        for i, p in enumerate(points):
            seeds = [r.final[metric] for r in records if r.entry.point == p.point and metric in r.final]
            ax.scatter([i] * len(seeds), seeds, color="black", s=10, zorder=3)
        ax.set_xticks(x, [p.point for p in points], rotation=35, ha="right", fontsize=7)
        ax.set_title(metric)
    level = f"{round(CONFIDENCE * 100)}%"
    title = (
        f"final metrics per point: bars the mean over its finished seeds (dots), error bars the {level} "
        "confidence interval of the mean (Student's t)"
        if seeded
        else "final metrics per run (no seeds: no error bars)"
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_validation_curves(records: list[RunRecord], path: Path, tags=CURVE_TAGS) -> Path:
    """Validation metrics over training steps, one line per run, one colour per point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {p: f"C{i % 10}" for i, p in enumerate(dict.fromkeys(r.entry.point for r in records))}
    fig, axes = plt.subplots(1, len(tags), figsize=(5.5 * len(tags), 3.8), squeeze=False)
    labelled: set[tuple[str, str]] = set()
    for r in records:
        if not r.run_dir:
            continue
        for ax, tag in zip(axes[0], tags):
            points = validation_curves(r.run_dir, (tag,)).get(tag, [])
            if not points:
                continue
            label = r.entry.point if (tag, r.entry.point) not in labelled else None
            labelled.add((tag, r.entry.point))
            ax.plot(
                [s for s, _ in points],
                [v for _, v in points],
                marker=".",
                color=colours[r.entry.point],
                label=label,
                alpha=0.8,
                linestyle="-" if r.state == "done" else "--",
            )
    for ax, tag in zip(axes[0], tags):
        ax.set_xlabel("step")
        ax.set_title(tag)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("validation metrics over training (one line per run, one colour per point)", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_sweep(
    path: str | Path,
    overrides: list[str] | None = None,
    seeds: list[int] | None = None,
    *,
    out: str | Path | None = None,
) -> list[Path]:
    """Collect a sweep (file or directory) and write its figures; returns the PNGs written.

    Args:
        path: the sweep file or directory.
        overrides: ``key=value`` as given to ``odise-pl sweep`` (they locate the sweep directory).
        seeds: the ``--seeds`` the sweep ran with, if not in its file.
        out: the folder for the PNGs (default ``SWEEP_DIR/plots``).

    Raises:
        ConfigError: ``path`` is not a sweep.
    """
    sweep_dir, records = collect(path, overrides, seeds, hparams_view=False)
    folder = Path(out) if out is not None else sweep_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    return [
        plot_final_metrics(records, folder / "final_metrics.png"),
        plot_validation_curves(records, folder / "validation_curves.png"),
    ]
