"""Evaluation sets of your own: a YAML file whose ``data:`` section describes one set.

``odise-pl test --sets NAME=SET.yaml`` and ``odise-pl data check SET.yaml`` read such a file
(``docs/custom_datasets.md``)::

    data:
      name: semantic_seg          # or coco_panoptic, or any registered data module
      dataset: custom
      root: .                     # relative to this file's folder
      vocabulary: vocabulary.txt  # a file relative to this file's folder, or a builtin name

The section is validated as an experiment's ``data`` section (unknown keys, wrong types and
values outside their choices are errors naming the file and line). ``root`` and a ``vocabulary``
that names a file (it exists there, or has a suffix or a folder; else it is a builtin list's name)
are taken relative to the YAML file's folder, so a set file travels with its data.
"""

from __future__ import annotations

from pathlib import Path

from odise_pl.errors import ConfigError

__all__ = ["SET_FILE_SUFFIXES", "is_set_file", "load_set_file"]

SET_FILE_SUFFIXES = (".yaml", ".yml")
_PATH_KEYS = ("root", "vocabulary")


def is_set_file(text: str) -> bool:
    """Whether ``text`` names a set file (ends in ``.yaml`` / ``.yml``) rather than a folder."""
    return str(text).lower().endswith(SET_FILE_SUFFIXES)


def load_set_file(path: str | Path) -> dict:
    """The data-module keyword arguments of a set file: ``name`` and the keys the file sets.

    Keys the file leaves out keep the data module's defaults, and the loader settings and test size
    (``eval_short_side``...) then follow the experiment's, as for the builtin sets.

    Raises:
        ConfigError: the file is missing, is not YAML, has keys besides ``data`` or a bad ``data`` key
            (naming the file, key and line).
    """
    from odise_pl.config import load_config
    from odise_pl.config.yaml_source import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"set file {path} does not exist. Give a YAML file with a 'data:' section (see docs/custom_datasets.md), or a builtin set name."
        )
    raw, lines = read_yaml(path)
    others = sorted(k for k in raw or {} if k != "data") if isinstance(raw, dict) else []
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise ConfigError(
            f"{path}: a set file holds one 'data:' section with at least its 'name' "
            "(e.g. 'data: {name: semantic_seg, dataset: custom, root: .}'); see "
            "docs/custom_datasets.md."
        )
    if others:
        line = lines.get(others[0])
        raise ConfigError(
            f"{path}: unknown key '{others[0]}'" + (f" (line {line})" if line else "") + "; a set file holds only a 'data:' section."
        )
    if "name" not in raw["data"]:
        line = lines.get("data")
        raise ConfigError(
            f"{path}: 'data' has no 'name'"
            + (f" (line {line})" if line else "")
            + ": write e.g. 'name: semantic_seg' (with 'dataset: custom') or "
            "'name: coco_panoptic'."
        )
    section = load_config(path).data  # validated: errors name the file and line
    kwargs = {key: section[key] for key in raw["data"]}
    for key in _PATH_KEYS:
        value = kwargs.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_absolute():
            beside = path.parent / value
            names_a_file = beside.exists() or Path(value).suffix or len(Path(value).parts) > 1
            if key == "root" or names_a_file:  # else a builtin vocabulary name (no suffix, no folder)
                kwargs[key] = str(beside)
    return kwargs
