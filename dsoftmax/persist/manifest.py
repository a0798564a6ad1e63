"""The JSON manifests of model files and checkpoints: bounded in size and depth, every value typed.

A manifest is read only up to :data:`MAX_MANIFEST_BYTES` (larger files are refused by their size,
before they are read), must be UTF-8 JSON nesting at most :data:`MAX_DEPTH` levels, and each value
taken from it is checked against the JSON type it must have (a boolean is never an integer here).
Every deviation is a :class:`~dsoftmax.persist.files.ModelFileError` naming the key.
"""

from __future__ import annotations

import json
from typing import Any

from .files import ModelFileError

__all__ = [
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "NUMBER",
    "count",
    "decode",
    "encode",
    "field",
    "typed",
]

#: Largest manifest read or written: many times what a model with a million classes needs.
MAX_MANIFEST_BYTES = 16 * 2**20
#: Deepest nesting of objects and lists in a manifest (dsoftmax writes at most 8).
MAX_DEPTH = 32
#: A JSON number: an integer or a float (never a boolean).
NUMBER = (int, float)
_REQUIRED = object()
_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def encode(document: dict[str, Any]) -> bytes:
    """The manifest's bytes; refused when a load would refuse them for their size."""
    data = json.dumps(document, indent=2, sort_keys=True).encode()
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"the manifest would take {len(data)} bytes, more than the {MAX_MANIFEST_BYTES} a "
            "model file may hold (very many classes, or a very long loss curve)."
        )
    return data


def decode(data: bytes, where: str) -> dict[str, Any]:
    """The JSON object in ``data``, the manifest of ``where``."""
    try:
        document = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ModelFileError(_too_deep(where)) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"the manifest of {where!r} is not valid JSON: {error}") from None
    if _depth(document) > MAX_DEPTH:
        raise ModelFileError(_too_deep(where))
    if not isinstance(document, dict):
        raise ModelFileError(f"the manifest of {where!r} is {_describe(document)}, not an object.")
    return document


def _too_deep(where: str) -> str:
    return (
        f"the manifest of {where!r} nests objects and lists deeper than {MAX_DEPTH} levels; it "
        "was not written by dsoftmax."
    )


def _depth(value: Any) -> int:
    """Nesting depth of ``value`` (an object or list is 1 deeper than its items), counted without
    recursion and given up past :data:`MAX_DEPTH`."""
    deepest = 0
    pending = [(value, 1)]
    while pending and deepest <= MAX_DEPTH:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def typed(value: Any, kinds: tuple[type, ...], what: str) -> Any:
    """``value`` when it has one of the JSON types ``kinds``; else a refusal naming ``what``."""
    if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
        return value
    raise ModelFileError(f"{what} must be {_expected(kinds)}, not {_describe(value)}.")


def count(value: Any, what: str) -> int:
    """``value`` when it is a non-negative integer; else a refusal naming ``what``."""
    if typed(value, (int,), what) < 0:
        raise ModelFileError(f"{what} must be a non-negative integer, not {value}.")
    return value


def field(
    document: dict[str, Any],
    key: str,
    kinds: tuple[type, ...],
    context: str,
    default: Any = _REQUIRED,
) -> Any:
    """``document[key]``, of one of the JSON types ``kinds``; ``default`` when it is absent (a
    refusal when there is no default). ``context`` names the document ("the manifest of …")."""
    if key not in document:
        if default is _REQUIRED:
            raise ModelFileError(f"{context} has no {key!r}.")
        return default
    return typed(document[key], kinds, f"{key!r} in {context}")


def _expected(kinds: tuple[type, ...]) -> str:
    shown = [kind for kind in kinds if not (kind is int and float in kinds)]
    return " or ".join(_NAMES.get(kind, kind.__name__) for kind in shown)


def _describe(value: Any) -> str:
    text = repr(value)
    short = text if len(text) <= 40 else text[:37] + "..."
    return f"{_NAMES.get(type(value), type(value).__name__)} {short}"
