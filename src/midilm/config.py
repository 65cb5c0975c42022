"""Frozen, typed configuration dataclasses that round-trip through JSON.

Every settings object in midilm (tokenizer settings, model presets, training recipes) derives
from :class:`FrozenConfig`, so each one rejects unknown keys and wrong types with a message
that says what it received, and saves next to the artefact it describes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

from midilm.errors import ConfigError

__all__ = ["FrozenConfig"]

C = TypeVar("C", bound="FrozenConfig")


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Validate (and lightly coerce: list → tuple, int → float) a JSON value against a hint."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(hint):
            try:
                return _check_type(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: expected {_hint_name(hint)}, received {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected None, received {value!r}")
    if origin is typing.Literal:
        if value in get_args(hint):
            return value
        choices = ", ".join(repr(a) for a in get_args(hint))
        raise ConfigError(f"{where}: expected one of {choices}, received {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, received {value!r}")
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, received {value!r}")
        return tuple(
            _check_type(item, item_hint, f"{where}[{i}]")
            for i, (item, item_hint) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, received {value!r}")
        key_t, val_t = get_args(hint)
        return {
            _check_type(k, key_t, where): _check_type(v, val_t, f"{where}[{k!r}]")
            for k, v in value.items()
        }
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, received {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, received {value!r}")
        return value
    if isinstance(hint, type):
        if not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, received {value!r}")
        return value
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


@dataclasses.dataclass(frozen=True)
class FrozenConfig:
    """Base for settings: immutable, validated on construction, JSON in and out.

    Subclasses validate value ranges in ``_validate`` (raise :class:`ConfigError` naming
    the field and the received value); types are checked here from the annotations.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            checked = _check_type(value, hints[field.name], f"{type(self).__name__}.{field.name}")
            if checked is not value:
                object.__setattr__(self, field.name, checked)
        self._validate()

    def _validate(self) -> None:
        """Range checks; overridden by subclasses."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from a mapping; unknown keys are an error, not silently dropped."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a mapping, received {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        with Path(path).open(encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_json(self, path: str | Path) -> None:
        from midilm.io_utils import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")
