"""A config section -> an instance of its dataclass: the one conversion that validation, the builder and
the engine share (a dispatched section's ``name`` key is dropped unless the dataclass has such a field)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from odise_pl.errors import ConfigError

T = TypeVar("T")


def instantiate_section(section: Any, dataclass_type: type[T]) -> T:
    """Turn a config section (a ``DictConfig``, a mapping, or already an instance) into ``dataclass_type``.

    The ``name`` key of a dispatched section is dropped unless the dataclass has such a field.

    Example:
        >>> from odise_pl.registry import BACKBONES
        >>> section = OmegaConf.create({"name": "clip", "out_channels": 64})
        >>> instantiate_section(section, BACKBONES.get("clip").config).out_channels
        64
    """
    if dataclasses.is_dataclass(section) and not isinstance(section, type):
        return section
    values = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
    fields = getattr(dataclass_type, "__dataclass_fields__", {})
    if "name" not in fields:
        values.pop("name", None)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(dataclass_type), values)
        return OmegaConf.to_object(typed)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        first = str(err).splitlines()[0]
        raise ConfigError(f"section does not fit {dataclass_type.__name__}: {first}") from None


__all__ = ["instantiate_section"]
