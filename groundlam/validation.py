"""Checking configuration data against the typed dataclasses that hold it (pydantic, strict).

Used for run configs (``groundlam.config``) and for a checkpoint's ``config.json``
(``groundlam.model``): a wrong key or value is a ``ConfigError`` that names the key, the value,
what is allowed and where the data came from.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

__all__ = ["ConfigError", "STRICT_KEYS", "validate"]

T = TypeVar("T")

# every config dataclass: an unknown key is an error, never silently dropped
STRICT_KEYS = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and where it came from."""


@functools.cache
def _adapter(kind: type) -> TypeAdapter:
    return TypeAdapter(kind)


def validate(kind: type[T], data: dict[str, Any], source: str | None = None,
             prefix: tuple[str, ...] = ()) -> T:
    """``data`` as a ``kind`` dataclass, checked in strict mode (no bool or string taken for a
    number, ``Literal`` choices, ``Field`` ranges, ``__post_init__`` checks); the first error
    becomes a ``ConfigError`` naming the key (under ``prefix``) and ``source``.

    Strict validation of Python objects would ask for dataclass instances; the mapping goes
    through JSON instead, where strict mode takes objects for dataclasses.
    """
    try:
        return _adapter(kind).validate_json(json.dumps(data), strict=True)
    except ValidationError as error:
        message = _describe(error.errors()[0], kind, prefix)
        raise ConfigError(f"{message} in {source}" if source else message) from None


def _describe(error: dict[str, Any], kind: type, prefix: tuple[str, ...]) -> str:
    """One pydantic error as the key it is about, the value given and what is wrong."""
    key = ".".join(str(part) for part in (*prefix, *error["loc"]))
    if error["type"] == "unexpected_keyword_argument":
        parent: Any = kind
        for part in error["loc"][:-1]:
            parent = typing.get_type_hints(parent)[part]
        known = ", ".join(field.name for field in dataclasses.fields(parent))
        return f"unknown key '{key}' (known: {known})"
    message = error["msg"]
    if error["type"] == "value_error":  # a __post_init__ check: its message names the fields
        return message.removeprefix("Value error, ")
    return f"{key}={error['input']!r}: {message}" if key else message
