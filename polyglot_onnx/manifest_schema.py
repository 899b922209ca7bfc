"""Strict reading of manifest.json: limits before parsing, typed checks after.

A package may come from a stranger, so its manifest is untrusted input. Size and nesting depth are
checked on the raw bytes before ``json.loads`` (deep nesting would otherwise end in a RecursionError),
and every field is checked against the type hints of the manifest dataclasses, so a new field added
to a dataclass is validated without touching this module. Keys the dataclasses do not know are
additions by a newer writer of the same format version: they are ignored with a debug log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import types
import typing
from typing import Any, TypeVar

from polyglot_onnx.errors import PackageError

log = logging.getLogger("polyglot_onnx")

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_MANIFEST_DEPTH = 64
# JSON strings (with escapes) hold no structure: dropped before brackets are counted.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

T = TypeVar("T")


def parse_limited(raw: bytes, where: str) -> Any:
    """``json.loads`` for untrusted bytes: refuse oversize or over-deep documents before parsing."""
    check_size(len(raw), where)
    depth = json_depth(raw)
    if depth > MAX_MANIFEST_DEPTH:
        raise PackageError(
            f"{where} nests deeper than {MAX_MANIFEST_DEPTH} levels: it is not a polyglot-onnx manifest; "
            "re-export or re-download the package"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise PackageError(f"{where} is not UTF-8 (byte {err.start}): re-export the package") from err
    except (ValueError, RecursionError) as err:  # JSONDecodeError, or an integer too long to convert
        raise PackageError(f"{where} is not valid JSON ({str(err)[:200]}): re-export the package") from err


def check_size(size: int, where: str) -> None:
    if size > MAX_MANIFEST_BYTES:
        raise PackageError(
            f"{where} is larger than {MAX_MANIFEST_BYTES // (1024 * 1024)} MB: it is not a polyglot-onnx manifest; "
            "re-export or re-download the package"
        )


def json_depth(raw: bytes) -> int:
    """Deepest bracket nesting outside strings; linear time, C speed (regex, translate, numpy)."""
    import numpy as np

    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), 1, -1).astype(np.int32)
    return int(np.cumsum(steps, dtype=np.int32).max())


def json_type(value: Any) -> str:
    """The JSON name of a parsed value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def malformed(where: str, problem: str) -> PackageError:
    return PackageError(f"manifest.json is malformed: {where} {problem}; re-export the package")


def build(cls: type[T], data: Any, where: str) -> T:
    """A dataclass from JSON, every field checked against its type hint; unknown keys logged and ignored."""
    if not isinstance(data, dict):
        raise malformed(where, f"must be an object, not {json_type(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = convert(hints[name], data[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise malformed(where, f"has no {name!r}")
    for key in data.keys() - known.keys():
        log.debug("manifest.json: ignoring unknown key %s.%s (added by a newer polyglot-onnx?)", where, key)
    return cls(**values)


def convert(hint: Any, value: Any, where: str) -> Any:
    """One JSON value checked against one type hint: str, int, float, bool, Any, X | None, list, dict, dataclass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(inner, value, where)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            raise malformed(where, f"must be a list, not {json_type(value)}")
        return [convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise malformed(where, f"must be an object, not {json_type(value)}")
        return {key: convert(args[1], item, f"{where}.{key}") for key, item in value.items()}
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # a hint this reader does not know: a programming error, not a bad package
        raise TypeError(f"manifest_schema cannot check {hint!r} at {where}")
    if not ok:
        raise malformed(where, f"must be {_NAMES[hint]}, not {json_type(value)}")
    return float(value) if hint is float else value


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
