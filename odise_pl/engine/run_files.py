"""A run directory as a loadable unit: what a model needs to predict or be tested, without its training data.

Layout (``odise-pl fit`` writes it; ``odise-pl convert-reference`` writes the same from released weights)::

    RUN/config.yaml          the resolved experiment config (resumed runs add config.1.yaml, ...: the
                             highest-numbered one is the run's config)
    RUN/categories.json      the training categories, in contiguous class order (write_categories)
    RUN/weights.safetensors  the trained weights (odise_pl.engine.checkpoints.export_safetensors)

``categories.json`` is ``{"categories": [{"id", "name", "synonyms", "isthing", ...}, ...],
"ignore_index": 255}``: the categories exactly as the data module gave them to
:func:`odise_pl.models.builder.build_model` (extra keys are kept). A bare list of categories is read too.
Every Lightning checkpoint of ``fit`` carries the same payload under ``checkpoint["odise_pl"]``, and the
``weights.safetensors`` export under the metadata key ``odise_pl.categories``, so each of the three
(directory, ``.ckpt``, ``.safetensors``) predicts on its own.

Example (needs a trained run, so not a doctest)::

    cfg, categories, weights = load_run_directory("runs/quickstart/version_0")
    write_run_directory("runs/converted", config=cfg, categories=categories, model=model, ignore_index=255)
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from odise_pl.atomic_files import atomic_write, write_new
from odise_pl.engine.checkpoints import read_checkpoint
from odise_pl.errors import CheckpointError, ConfigError

CONFIG_FILE = "config.yaml"
CATEGORIES_FILE = "categories.json"
WEIGHTS_FILE = "weights.safetensors"
#: key of the categories payload in a Lightning checkpoint
CHECKPOINT_KEY = "odise_pl"
#: metadata key of the categories payload (JSON text) in a safetensors export
SAFETENSORS_KEY = "odise_pl.categories"
#: what writes each file of a run directory (quoted when one is missing)
PRODUCERS = {
    CONFIG_FILE: "odise-pl fit writes it when the run starts",
    CATEGORIES_FILE: "odise-pl fit writes it when the run starts (runs older than this file: give -c CONFIG "
    "and --ckpt RUN/checkpoints/last.ckpt, with the training data on disk)",
    WEIGHTS_FILE: "odise-pl fit exports it at the end of training (checkpoint.export_safetensors: true); "
    "a run that did not finish has RUN/checkpoints/last.ckpt instead, which --ckpt accepts",
}
_NUMBERED_CONFIG = re.compile(r"^config\.(\d+)\.yaml$")


@dataclass(frozen=True)
class TrainingCategories:
    """The categories a model was trained with.

    Attributes:
        categories: ``[{"id", "name", "synonyms", "isthing", ...}]`` in contiguous class order.
        ignore_index: the training data's void label (None: not recorded).
        source: where they were read from (for messages).
    """

    categories: list[dict]
    ignore_index: int | None
    source: str


# ----------------------------------------------------------------------------- categories
def check_categories(entries: Any, source: str) -> list[dict]:
    """Validated copies of ``entries``: ``name`` (text), ``isthing`` (bool or 0/1), optional ``id`` (int,
    default: the index) and ``synonyms`` (list of text, default ``[]``); other keys are kept.

    Raises:
        CheckpointError: naming ``source`` and the entry at fault.
    """
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f'{source}: \'categories\' must be a non-empty list of {{"id", "name", "synonyms", "isthing"}} entries.')
    checked = []
    for k, entry in enumerate(entries):
        where = f"{source}: category {k}"
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} is {type(entry).__name__} {entry!r:.60}, not a mapping with 'name' and 'isthing'.")
        name, isthing = entry.get("name"), entry.get("isthing")
        if not isinstance(name, str) or not name.strip():
            raise CheckpointError(f"{where} ({entry!r:.80}): 'name' must be a non-empty text.")
        if isinstance(isthing, int) and isthing in (0, 1):
            isthing = bool(isthing)
        if not isinstance(isthing, bool):
            raise CheckpointError(f"{where} ('{name}'): 'isthing' must be true/false (or 1/0), got {isthing!r}.")
        cid = entry.get("id", k)
        if isinstance(cid, bool) or not isinstance(cid, int):
            raise CheckpointError(f"{where} ('{name}'): 'id' must be an integer, got {cid!r}.")
        synonyms = entry.get("synonyms", [])
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise CheckpointError(f"{where} ('{name}'): 'synonyms' must be a list of texts, got {synonyms!r:.80}.")
        checked.append({**entry, "id": cid, "name": name, "isthing": isthing, "synonyms": list(synonyms)})
    ids = [c["id"] for c in checked]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise CheckpointError(f"{source}: category id {dup} appears more than once; ids must be distinct.")
    return checked


def categories_payload(categories: Sequence[dict], ignore_index: int | None = None) -> dict:
    """The JSON-able record of the training categories (``categories.json``, checkpoints, safetensors)."""
    payload: dict[str, Any] = {"categories": check_categories(list(categories), "categories")}
    if ignore_index is not None:
        payload["ignore_index"] = int(ignore_index)
    return payload


def parse_categories(payload: Any, source: str) -> TrainingCategories:
    """A payload of :func:`categories_payload` (or a bare list of categories) -> :class:`TrainingCategories`."""
    if isinstance(payload, list):
        payload = {"categories": payload}
    if not isinstance(payload, dict) or "categories" not in payload:
        raise CheckpointError(
            f'{source}: expected {{"categories": [...], "ignore_index": N}} or a list of categories, got {type(payload).__name__}.'
        )
    ignore = payload.get("ignore_index")
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise CheckpointError(f"{source}: 'ignore_index' must be an integer or null, got {ignore!r}.")
    return TrainingCategories(check_categories(payload["categories"], source), ignore, source)


def write_categories(run_dir: str | os.PathLike, categories: Sequence[dict], *, ignore_index: int | None = None) -> Path:
    """Write ``RUN/categories.json`` atomically (:func:`odise_pl.atomic_files.atomic_write`); returns its path.

    Args:
        run_dir: the run directory (created if needed).
        categories: the training categories in contiguous class order (``name``, ``isthing``,
            ``synonyms``, ``id``), as given to :func:`odise_pl.models.builder.build_model`.
        ignore_index: the training data's void label.
    """
    text = json.dumps(categories_payload(categories, ignore_index), indent=1, ensure_ascii=False) + "\n"
    path = Path(run_dir) / CATEGORIES_FILE
    atomic_write(path, text)
    return path


def read_categories(path: str | os.PathLike) -> TrainingCategories:
    """Read a ``categories.json`` (or the one in the run directory ``path``)."""
    path = Path(path)
    if path.is_dir():
        path = path / CATEGORIES_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} not found: {PRODUCERS[CATEGORIES_FILE]}.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); rewrite it with odise_pl.engine.run_files.write_categories.") from None
    return parse_categories(payload, str(path))


# ----------------------------------------------------------------------------- run directories
def save_config(cfg: DictConfig, run_dir: Path) -> Path:
    """Write the resolved config as ``RUN/config.yaml``; a resumed run adds ``config.1.yaml``, ... (never
    overwritten: :func:`~odise_pl.atomic_files.write_new`). Returns the path written."""
    return write_new(Path(run_dir) / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def write_run_directory(
    run_dir: str | os.PathLike,
    *,
    config: DictConfig,
    categories: Sequence[dict],
    model: Any = None,
    weights: dict | None = None,
    ignore_index: int | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write a complete run directory (``config.yaml``, ``categories.json``, ``weights.safetensors``).

    For a model that did not come from ``odise-pl fit`` (e.g. converted released weights). Each file is
    written atomically; a directory already holding any of the three is refused (never overwritten).

    Args:
        run_dir: the directory (created).
        config: the validated experiment config of ``model`` (written resolved).
        categories: its training categories in class order (see :func:`write_categories`).
        model: the module whose trained weights are exported (:func:`odise_pl.engine.checkpoints.export_safetensors`).
        weights: or the trained weights themselves, by odise-pl name (e.g. converted released weights).
        ignore_index: the training data's void label.
        metadata: extra safetensors metadata (values become text), e.g. ``{"source": URL}``.
    """
    from odise_pl.engine.checkpoints import export_safetensors, save_safetensors

    if (model is None) == (weights is None):
        raise TypeError("write_run_directory needs either model or weights")
    run_dir = Path(run_dir)
    taken = [name for name in (CONFIG_FILE, CATEGORIES_FILE, WEIGHTS_FILE) if (run_dir / name).exists()]
    if taken:
        raise CheckpointError(
            f"{run_dir} already holds {', '.join(taken)}; it is not overwritten. Give a new directory, or delete it first."
        )
    payload = categories_payload(categories, ignore_index)  # bad categories fail before anything is written
    text = OmegaConf.to_yaml(config, resolve=True)
    atomic_write(run_dir / CONFIG_FILE, text)
    write_categories(run_dir, payload["categories"], ignore_index=ignore_index)
    metadata = {**(metadata or {}), SAFETENSORS_KEY: json.dumps(payload, ensure_ascii=False)}
    if weights is not None:
        save_safetensors(weights, run_dir / WEIGHTS_FILE, metadata)
    else:
        export_safetensors(model, run_dir / WEIGHTS_FILE, metadata)
    return run_dir


def run_directory_of(path: str | os.PathLike) -> Path | None:
    """The run directory ``path`` is or lies in (``RUN``, ``RUN/weights.safetensors``,
    ``RUN/checkpoints/X.ckpt``), if that folder holds a ``config.yaml``; else None."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder = path
    else:
        folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder if (folder / CONFIG_FILE).is_file() else None


def output_dir_of(path: str | os.PathLike) -> Path:
    """Where evaluations of ``path`` write their results: its run directory, else the file's folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def config_file(run_dir: str | os.PathLike) -> Path:
    """The run's config: the highest-numbered ``config.N.yaml`` (a resumed run's), else ``config.yaml``."""
    run_dir = Path(run_dir)
    numbered = [(int(m.group(1)), p) for p in run_dir.glob("config.*.yaml") if (m := _NUMBERED_CONFIG.match(p.name))]
    if numbered:
        return max(numbered)[1]
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"run directory {run_dir} has no {CONFIG_FILE}: {PRODUCERS[CONFIG_FILE]}.")
    return path


def _require(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        present = ", ".join(sorted(p.name for p in run_dir.iterdir())[:12]) or "nothing"
        raise CheckpointError(f"run directory {run_dir} has no {name} (it holds: {present}). {PRODUCERS[name]}.")
    return path


def load_run_directory(path: str | os.PathLike, overrides: Sequence[str] = ()) -> tuple[DictConfig, list[dict], Path]:
    """Load a run directory: ``(config, categories, weights path)``.

    Args:
        path: the run directory (``config.yaml``, ``categories.json``, ``weights.safetensors``).
        overrides: ``key=value`` overrides applied on top of the run's config.

    Raises:
        CheckpointError: naming a missing or malformed file and what produces it.
    """
    from odise_pl.config import load_config

    run_dir = Path(path).expanduser()
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist.")
    for name in (CONFIG_FILE, CATEGORIES_FILE, WEIGHTS_FILE):
        _require(run_dir, name)
    cfg = load_config(str(config_file(run_dir)), list(overrides))
    return cfg, read_categories(run_dir / CATEGORIES_FILE).categories, run_dir / WEIGHTS_FILE


def weights_file(path: str | os.PathLike) -> Path:
    """The weights of ``path``: a run directory's ``weights.safetensors``, or the file itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _require(path, WEIGHTS_FILE)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint '{path}' not found. Give a run directory ({CONFIG_FILE}, "
            f"{CATEGORIES_FILE}, {WEIGHTS_FILE}), a .ckpt or a .safetensors file."
        )
    return path


def config_for(ckpt: str | os.PathLike, config: str | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The config to load ``ckpt`` with: ``config`` (+ overrides) if given, else its run directory's."""
    from odise_pl.config import load_config

    if config is not None:
        return load_config(config, list(overrides))
    if Path(ckpt).expanduser().is_dir():  # a run directory: its config (named when missing)
        return load_config(str(config_file(Path(ckpt).expanduser())), list(overrides))
    run_dir = run_directory_of(ckpt)
    if run_dir is None:
        raise ConfigError(
            f"-c CONFIG is needed: {ckpt} is not (in) a run directory with a {CONFIG_FILE}. "
            "Give the experiment file the checkpoint was trained with."
        )
    return load_config(str(config_file(run_dir)), list(overrides))


def saved_config(path: str | os.PathLike, ckpt: dict | None = None) -> tuple[dict | None, str]:
    """The config ``path``'s weights were trained with, as a plain dict, and where it was read.

    ``.ckpt``: its ``hyper_parameters``; a run directory or a ``.safetensors`` in one: the run's config;
    otherwise ``(None, "")``.
    """
    path = Path(path).expanduser()
    if ckpt is not None and (ckpt.get("hyper_parameters") or {}).get("config"):
        return ckpt["hyper_parameters"]["config"], str(path)
    if path.is_dir() or path.suffix == ".safetensors":
        run_dir = run_directory_of(path)
        if run_dir is not None:
            file = config_file(run_dir)
            return OmegaConf.to_container(OmegaConf.load(file), resolve=True), str(file)
    return None, ""


def _safetensors_categories(path: Path) -> TrainingCategories | None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(SAFETENSORS_KEY)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"weights file {path} is not a valid safetensors file ({err}).") from None
    if text is None:
        return None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: metadata '{SAFETENSORS_KEY}' is not valid JSON ({err}).") from None
    return parse_categories(payload, f"{path} (metadata '{SAFETENSORS_KEY}')")


def training_categories(path: str | os.PathLike, ckpt: dict | None = None) -> TrainingCategories | None:
    """The training categories that travel with ``path``, or None (then only the data module has them).

    * a run directory: its ``categories.json`` (required);
    * a ``.ckpt``: ``checkpoint["odise_pl"]`` (``ckpt``: the checkpoint already read), else the
      ``categories.json`` of its run directory;
    * a ``.safetensors``: its metadata, else the ``categories.json`` beside it.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return read_categories(_require(path, CATEGORIES_FILE))
    if path.suffix == ".safetensors":
        found = _safetensors_categories(path)
    else:
        if ckpt is None:
            ckpt = read_checkpoint(path)
        payload = ckpt.get(CHECKPOINT_KEY)
        found = parse_categories(payload, f"{path} (checkpoint['{CHECKPOINT_KEY}'])") if payload else None
    if found is not None:
        return found
    beside = output_dir_of(path) / CATEGORIES_FILE
    return read_categories(beside) if beside.is_file() else None


__all__ = [
    "CATEGORIES_FILE",
    "CHECKPOINT_KEY",
    "CONFIG_FILE",
    "PRODUCERS",
    "SAFETENSORS_KEY",
    "WEIGHTS_FILE",
    "TrainingCategories",
    "categories_payload",
    "check_categories",
    "config_file",
    "config_for",
    "load_run_directory",
    "output_dir_of",
    "parse_categories",
    "read_categories",
    "run_directory_of",
    "save_config",
    "saved_config",
    "training_categories",
    "weights_file",
    "write_categories",
    "write_run_directory",
]
