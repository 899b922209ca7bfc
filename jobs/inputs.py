"""Input files: which ones, in which order, their fingerprint, and their rows streamed in bounded blocks.

Row numbers are the job's default ids, so the order is fixed: files sorted by path, rows in file order.
Parquet and CSV are streamed with pyarrow. JSONL and plain text are read line by line in binary and each
line is decoded (and parsed) on its own, so one bad line is one bad row: pyarrow's JSON reader fails a
whole block on a single type change or undecodable byte.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import InputError

EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
    ".txt": "text", ".text": "text",
}
FINGERPRINT_BYTES = 64 * 1024  # hashed from the head and from the tail of each file

# What parsing or cleaning ONE row can raise; each is a property of that row's bytes, so it becomes that
# row's error instead of stopping the job (on every rerun, since the row never changes):
#   ValueError     -- json.loads of an integer over sys.get_int_max_str_digits() (4,300) digits, and the
#                     UnicodeError / JSONDecodeError subclasses; str() of such an integer;
#   RecursionError -- json.loads / json.dumps of nesting deeper than the interpreter's recursion limit;
#   TypeError      -- json.dumps of an id whose Parquet list / struct holds bytes, dates or decimals.
# Anything else (OSError, MemoryError, a block pyarrow cannot read) is not one row's fault: it still stops the job.
ROW_ERRORS = (ValueError, RecursionError, TypeError)


class BadJson:
    """A JSONL line that is not a JSON object; carried as a row value so it becomes an error row."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def resolve_inputs(spec: str | os.PathLike[str] | list[str]) -> list[Path]:
    """A file, a directory (its files), a glob, or a list of these -> sorted, de-duplicated files."""
    specs = spec if isinstance(spec, list) else [spec]
    found: set[Path] = set()
    for item in map(str, specs):
        path = Path(item).expanduser()
        if any(ch in item for ch in "*?["):
            found.update(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True) if Path(p).is_file())
        elif path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        elif path.is_file():
            found.add(path)
        else:
            raise InputError(f"input {item!r} does not exist: pass a file, a directory or a glob such as 'data/*.jsonl'")
    if not found:
        raise InputError(f"input {specs[0]!r} matches no file: check the path or the glob pattern")
    return sorted((p.resolve() for p in found), key=str)


def detect_format(paths: list[Path], requested: str | None) -> str:
    """The one format of all inputs: --format, or the extension, which must then agree across files."""
    if requested:
        return requested
    kinds = {EXTENSIONS.get(p.suffix.lower()) for p in paths}
    if None in kinds:
        odd = next(p for p in paths if p.suffix.lower() not in EXTENSIONS)
        raise InputError(f"cannot tell the format of {odd.name}: pass --format jsonl, parquet, csv or text")
    if len(kinds) > 1:
        raise InputError(f"inputs mix formats ({', '.join(sorted(k for k in kinds if k))}): embed each format separately")
    return kinds.pop()  # type: ignore[return-value]


def fingerprint(paths: list[Path]) -> list[dict[str, Any]]:
    """Path, size and sha256 of the first and last 64 KiB: catches appended, truncated or replaced files
    without reading a large corpus twice. mtime is left out on purpose (a copy changes it, not the content)."""
    out = []
    for path in paths:
        size = path.stat().st_size
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            digest.update(f.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                digest.update(f.read())
        out.append({"path": str(path), "size": size, "head_tail_sha256": digest.hexdigest()})
    return out


def count_rows(paths: list[Path], fmt: str) -> int | None:
    """Total rows when cheap to know (Parquet footers, newline counts); None for CSV (quoted newlines)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return sum(int(pq.ParquetFile(p).metadata.num_rows) for p in paths)
    if fmt in ("jsonl", "text"):
        total = 0
        for path in paths:
            with open(path, "rb") as f:
                last = b"\n"
                while block := f.read(1 << 20):
                    total += block.count(b"\n")
                    last = block[-1:]
                total += last != b"\n"
        return total
    return None


@dataclass
class Block:
    """Up to ``block_rows`` consecutive rows of one file: raw values (str, bytes, None, other) and ids."""

    values: list[Any]
    ids: list[Any] | None


def read_blocks(path: Path, fmt: str, text_column: str, id_column: str | None, block_rows: int, skip: int = 0
                ) -> Iterator[Block]:
    """Rows of one file after the first ``skip``, in order, never more than ``block_rows`` in memory."""
    reader = {"jsonl": _jsonl_blocks, "text": _text_blocks, "csv": _csv_blocks, "parquet": _parquet_blocks}[fmt]
    yield from reader(path, text_column, id_column, block_rows, skip)


def _lines(path: Path, block_rows: int, skip: int) -> Iterator[list[bytes]]:
    with open(path, "rb") as f:
        block: list[bytes] = []
        for number, line in enumerate(f):
            if number < skip:
                continue
            block.append(line)
            if len(block) == block_rows:
                yield block
                block = []
        if block:
            yield block


def _text_blocks(path: Path, text_column: str, id_column: str | None, block_rows: int, skip: int) -> Iterator[Block]:
    for lines in _lines(path, block_rows, skip):
        yield Block([line.rstrip(b"\r\n") for line in lines], None)


def _jsonl_blocks(path: Path, text_column: str, id_column: str | None, block_rows: int, skip: int
                  ) -> Iterator[Block]:
    for lines in _lines(path, block_rows, skip):
        values, ids = [], []
        for line in lines:
            value, ident = parse_json_line(line, text_column, id_column)
            values.append(value)
            ids.append(ident)
        yield Block(values, ids if id_column else None)


def parse_json_line(line: bytes | str, text_column: str, id_column: str | None) -> tuple[Any, Any]:
    """One JSONL line -> (text value, id value); a broken line becomes a BadJson value, never an exception."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return BadJson("undecodable bytes (not UTF-8)"), None
    if not line.strip():
        return BadJson("empty line"), None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return BadJson(f"invalid JSON ({err.msg} at column {err.colno})"), None
    except RecursionError:  # e.g. 100,000 nested brackets: the C scanner recurses once per level
        return BadJson("invalid JSON (nested deeper than Python's recursion limit)"), None
    except ValueError as err:  # e.g. a 5,000-digit integer: over sys.get_int_max_str_digits()
        return BadJson(f"invalid JSON ({row_error(err)})"), None
    if not isinstance(record, dict):
        return BadJson(f"line is a JSON {type(record).__name__}, not an object"), None
    return record.get(text_column), record.get(id_column) if id_column else None


def check_columns(paths: list[Path], fmt: str, text_column: str, id_column: str | None) -> None:
    """Parquet footers and CSV headers name their columns: a wrong --text-column fails before any output."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for path in paths:
            _check_columns(path, pq.read_schema(path).names, text_column, id_column)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        for path in paths:
            header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16)).schema.names
            _check_columns(path, header, text_column, id_column)
    elif fmt == "jsonl":  # keys may vary per line: only a first line without them is taken as a wrong option
        with open(paths[0], "rb") as f:
            try:
                first = json.loads(f.readline() or b"{}")
            except ROW_ERRORS:  # a poison first line is that row's error, not a wrong option
                return
        if isinstance(first, dict) and first and text_column not in first:
            raise InputError(f"the first line of {paths[0].name} has no key {text_column!r} (it has "
                             f"{', '.join(map(str, first))}): set --text-column")


def _check_columns(path: Path, names: list[str], text_column: str, id_column: str | None) -> None:
    for col in filter(None, (text_column, id_column)):
        if col not in names:
            flag = "--text-column" if col == text_column else "--id-column"
            raise InputError(f"{path.name} has no column {col!r} (it has {', '.join(names)}): set {flag}")


def _csv_blocks(path: Path, text_column: str, id_column: str | None, block_rows: int, skip: int) -> Iterator[Block]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    # Binary columns: pyarrow checks UTF-8 per block; decoding each value here makes a bad byte one bad row.
    wanted = [c for c in (text_column, id_column) if c]
    convert = pcsv.ConvertOptions(column_types={c: pa.binary() for c in wanted}, include_columns=wanted)
    reader = pcsv.open_csv(path, convert_options=convert)
    yield from _rebatch(_arrow_batches(reader), text_column, id_column, block_rows, skip)


def _parquet_blocks(path: Path, text_column: str, id_column: str | None, block_rows: int, skip: int
                    ) -> Iterator[Block]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    columns = [c for c in (text_column, id_column) if c]
    yield from _rebatch(pf.iter_batches(batch_size=block_rows, columns=columns), text_column, id_column,
                        block_rows, skip)


def _arrow_batches(reader: Any) -> Iterator[Any]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def _rebatch(batches: Iterator[Any], text_column: str, id_column: str | None, block_rows: int, skip: int
             ) -> Iterator[Block]:
    """Arrow record batches of any size -> Blocks of ``block_rows`` after skipping ``skip`` rows."""
    values: list[Any] = []
    ids: list[Any] = []
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch, skip = batch.slice(skip), 0
        values.extend(batch.column(text_column).to_pylist())
        if id_column:
            ids.extend(batch.column(id_column).to_pylist())
        while len(values) >= block_rows:
            yield Block(values[:block_rows], ids[:block_rows] if id_column else None)
            values, ids = values[block_rows:], ids[block_rows:]
    if values:
        yield Block(values, ids if id_column else None)


def row_error(err: BaseException) -> str:
    """A row's exception as a short reason: its first clause (Python's int-limit message goes on to
    suggest sys.set_int_max_str_digits(), which is no fix for a corpus job)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(";")[0][:200]


def clean_row(value: Any, ident: Any, user_ids: bool) -> tuple[str | None, Any, str | None]:
    """(text, id, reason) of one row, reason None for a usable one. Whatever one row's values raise
    (ROW_ERRORS) becomes its reason: no value can stop the job."""
    try:
        text, reason = clean_text(value)
    except ROW_ERRORS as err:
        text, reason = None, f"unusable text ({row_error(err)})"
    if not user_ids:
        return text, None, reason
    try:
        ident = clean_id(ident)
    except ROW_ERRORS as err:
        return None, None, reason or f"unusable id ({row_error(err)})"
    if ident is None and reason is None:
        reason = "missing id"
    return text, ident, reason


def clean_text(value: Any) -> tuple[str | None, str | None]:
    """(text, None) for a usable row, (None, reason) for a bad one."""
    if isinstance(value, BadJson):
        return None, value.reason
    if value is None:
        return None, "missing text"
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "undecodable bytes (not UTF-8)"
    if not isinstance(value, str):
        return None, f"not text ({type(value).__name__})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, "undecodable text (lone surrogate)"
    if not value.strip():
        return None, "empty text"
    return value, None


def clean_id(value: Any) -> str | None:
    """User ids are stored as strings, so every shard has one schema whatever each file's type was.
    Raises one of ROW_ERRORS for an id that cannot be one (clean_row makes it the row's reason)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    elif not isinstance(value, str):
        value = str(value)
    try:
        value.encode("utf-8")  # Arrow strings are UTF-8: a lone surrogate would fail the whole shard
    except UnicodeEncodeError as err:
        raise ValueError("lone surrogate, not UTF-8 text") from err
    return str(value)
