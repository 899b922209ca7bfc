"""One row's values: what cleaning one row may raise, and --keep-columns values as a shard stores them.

Everything here is about one value of one row, so whatever goes wrong becomes that row's error (a
BadValue carried in its place, or a reason), never the job's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# What parsing or cleaning ONE row can raise; each is a property of that row's bytes, so it becomes that
# row's error instead of stopping the job (on every rerun, since the row never changes):
#   ValueError     -- json.loads of an integer over sys.get_int_max_str_digits() (4,300) digits, and the
#                     UnicodeError / JSONDecodeError subclasses; str() of such an integer;
#   RecursionError -- json.loads / json.dumps of nesting deeper than the interpreter's recursion limit;
#   TypeError      -- json.dumps of an id whose Parquet list / struct holds bytes, dates or decimals.
# Anything else (OSError, MemoryError, a block pyarrow cannot read) is not one row's fault: it still stops the job.
ROW_ERRORS = (ValueError, RecursionError, TypeError)


class BadValue:
    """A value that cannot be stored; carried as a row value so it becomes an error row, not the job's error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def row_error(err: BaseException) -> str:
    """A row's exception as a short reason: its first clause (Python's int-limit message goes on to
    suggest sys.set_int_max_str_digits(), which is no fix for a corpus job)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(";")[0][:200]


def json_cell(value: Any) -> Any:
    """A kept JSONL value, stored as a string: JSONL has no schema, and pyarrow's per-chunk inference would give
    shards different types (an int column in one, a double or a string in the next). A JSON string is kept as
    it is, any other value (number, boolean, list, object) as its JSON text, null or missing as null."""
    if value is None:
        return None
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text.encode("utf-8")  # Arrow strings are UTF-8: a lone surrogate would fail the whole shard
    except UnicodeEncodeError:
        return BadValue("lone surrogate, not UTF-8 text")
    except ROW_ERRORS as err:
        return BadValue(row_error(err))
    return text


def csv_cell(value: Any) -> Any:
    """A kept CSV field, stored as its text (CSV has no types; pyarrow's inference could differ per file)."""
    if value is None:
        return None
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return BadValue("undecodable bytes (not UTF-8)")


def cell_converter(fmt: str) -> Callable[[Any], Any]:
    """How a kept value read by pyarrow becomes storable: Parquet values are kept with their type as they are."""
    return {"csv": csv_cell, "jsonl": json_cell}.get(fmt, lambda value: value)


def kept_problem(kept: dict[str, Any]) -> str | None:
    """Why a row's kept values cannot be stored (the row is then bad), or None."""
    for name, value in kept.items():
        if isinstance(value, BadValue):
            return f"unusable value in kept column {name!r} ({value.reason})"
    return None
