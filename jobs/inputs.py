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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.jobs.cells import ROW_ERRORS, BadValue, cell_converter, csv_cell, json_cell, row_error

EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
    ".txt": "text", ".text": "text",
}
FINGERPRINT_BYTES = 64 * 1024  # hashed from the head and from the tail of each file

class BadJson(BadValue):
    """A JSONL line that is not a JSON object."""


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
    """Up to ``block_rows`` consecutive rows of one file: raw values (str, bytes, None, other), ids, and the
    values of the --keep-columns (ready to store, or BadValue), by column."""

    values: list[Any]
    ids: list[Any] | None
    kept: dict[str, list[Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Columns:
    """The input columns a job reads: the text, the ids, and the ones copied into the shards."""

    text: str
    id: str | None = None
    keep: tuple[str, ...] = ()

    def read(self) -> list[str]:
        """Each column once, in order (a kept column may be the text or the id column)."""
        return list(dict.fromkeys(c for c in (self.text, self.id, *self.keep) if c))


def read_blocks(path: Path, fmt: str, columns: Columns, block_rows: int, skip: int = 0) -> Iterator[Block]:
    """Rows of one file after the first ``skip``, in order, never more than ``block_rows`` in memory."""
    reader = {"jsonl": _jsonl_blocks, "text": _text_blocks, "csv": _csv_blocks, "parquet": _parquet_blocks}[fmt]
    yield from reader(path, columns, block_rows, skip)


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


def _text_blocks(path: Path, columns: Columns, block_rows: int, skip: int) -> Iterator[Block]:
    for lines in _lines(path, block_rows, skip):
        yield Block([line.rstrip(b"\r\n") for line in lines], None)


def _jsonl_blocks(path: Path, columns: Columns, block_rows: int, skip: int) -> Iterator[Block]:
    for lines in _lines(path, block_rows, skip):
        yield json_block([parse_json_record(line) for line in lines], columns)


def json_block(records: list[dict[str, Any] | BadJson], columns: Columns) -> Block:
    """Parsed JSONL lines -> a Block; a bad line's text is its BadJson, its id and kept values None."""
    values = [r if isinstance(r, BadJson) else r.get(columns.text) for r in records]
    ids = [None if isinstance(r, BadJson) else r.get(columns.id) for r in records] if columns.id else None
    kept = {name: [None if isinstance(r, BadJson) else json_cell(r.get(name)) for r in records]
            for name in columns.keep}
    return Block(values, ids, kept)


def parse_json_line(line: bytes | str, text_column: str, id_column: str | None) -> tuple[Any, Any]:
    """One JSONL line -> (text value, id value); a broken line becomes a BadJson value, never an exception."""
    record = parse_json_record(line)
    if isinstance(record, BadJson):
        return record, None
    return record.get(text_column), record.get(id_column) if id_column else None


def parse_json_record(line: bytes | str) -> dict[str, Any] | BadJson:
    """One JSONL line -> its object, or a BadJson saying why it is none, never an exception."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return BadJson("undecodable bytes (not UTF-8)")
    if not line.strip():
        return BadJson("empty line")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return BadJson(f"invalid JSON ({err.msg} at column {err.colno})")
    except RecursionError:  # e.g. 100,000 nested brackets: the C scanner recurses once per level
        return BadJson("invalid JSON (nested deeper than Python's recursion limit)")
    except ValueError as err:  # e.g. a 5,000-digit integer: over sys.get_int_max_str_digits()
        return BadJson(f"invalid JSON ({row_error(err)})")
    if not isinstance(record, dict):
        return BadJson(f"line is a JSON {type(record).__name__}, not an object")
    return record


def check_columns(paths: list[Path], fmt: str, columns: Columns) -> None:
    """Parquet footers and CSV headers name their columns: a wrong --text-column or --keep-columns fails before
    any output."""
    if fmt == "text" and columns.keep:
        raise InputError("plain text inputs have no columns to keep: drop --keep-columns, or use JSONL, CSV or Parquet")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for path in paths:
            _check_columns(path, pq.read_schema(path).names, columns)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        for path in paths:
            header = pcsv.open_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 16)).schema.names
            _check_columns(path, header, columns)
    elif fmt == "jsonl":  # keys may vary per line: only a first line without them is taken as a wrong option
        with open(paths[0], "rb") as f:
            try:
                first = json.loads(f.readline() or b"{}")
            except ROW_ERRORS:  # a poison first line is that row's error, not a wrong option
                return
        if isinstance(first, dict) and first:
            _check_columns(paths[0], list(map(str, first)), replace(columns, id=None), "the first line of ")


def _check_columns(path: Path, names: list[str], columns: Columns, where: str = "") -> None:
    flags = [(columns.text, "--text-column"), (columns.id, "--id-column")]
    flags += [(k, "--keep-columns") for k in columns.keep]
    for col, flag in flags:
        if col is not None and col not in names:
            what = "key" if where else "column"
            raise InputError(f"{where}{path.name} has no {what} {col!r} (it has {', '.join(names)}): "
                             f"{'fix' if flag == '--keep-columns' else 'set'} {flag}")


def kept_types(paths: list[Path], fmt: str, keep: tuple[str, ...]) -> dict[str, Any]:
    """The Arrow type of each kept column, the same in every shard: Parquet's own (every file must agree; a
    column that is all null in one file takes the others' type), a string for CSV and JSONL (no types there)."""
    import pyarrow as pa

    if fmt != "parquet":
        return {name: pa.string() for name in keep}
    import pyarrow.parquet as pq

    schemas = [(path, pq.read_schema(path)) for path in paths]
    types: dict[str, Any] = {}
    for name in keep:
        seen = [(path, schema.field(name).type) for path, schema in schemas]
        typed = [(path, t) for path, t in seen if t != pa.null()] or seen[:1]
        (first, want), *rest = typed
        odd = next(((path, t) for path, t in rest if t != want), None)
        if odd is not None:
            raise InputError(f"kept column {name!r} is {want} in {first.name} but {odd[1]} in {odd[0].name}: cast it "
                             "to one type in every file, or drop it from --keep-columns")
        types[name] = want
    return types


def csv_convert_options(columns: Columns) -> Any:
    """Binary columns: pyarrow checks UTF-8 per block; decoding each value ourselves makes a bad byte one bad row."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    wanted = columns.read()
    return pcsv.ConvertOptions(column_types={c: pa.binary() for c in wanted}, include_columns=wanted)


def _csv_blocks(path: Path, columns: Columns, block_rows: int, skip: int) -> Iterator[Block]:
    import pyarrow.csv as pcsv

    reader = pcsv.open_csv(path, convert_options=csv_convert_options(columns))
    yield from _rebatch(_arrow_batches(reader), columns, csv_cell, block_rows, skip)


def _parquet_blocks(path: Path, columns: Columns, block_rows: int, skip: int) -> Iterator[Block]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    batches = pf.iter_batches(batch_size=block_rows, columns=columns.read())
    yield from _rebatch(batches, columns, cell_converter("parquet"), block_rows, skip)


def _arrow_batches(reader: Any) -> Iterator[Any]:
    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return


def _rebatch(batches: Iterator[Any], columns: Columns, cell: Callable[[Any], Any], block_rows: int, skip: int
             ) -> Iterator[Block]:
    """Arrow record batches of any size -> Blocks of ``block_rows`` after skipping ``skip`` rows."""
    values: list[Any] = []
    ids: list[Any] = []
    kept: dict[str, list[Any]] = {name: [] for name in columns.keep}
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch, skip = batch.slice(skip), 0
        values.extend(batch.column(columns.text).to_pylist())
        if columns.id:
            ids.extend(batch.column(columns.id).to_pylist())
        for name in columns.keep:
            kept[name].extend(map(cell, batch.column(name).to_pylist()))
        while len(values) >= block_rows:
            yield Block(values[:block_rows], ids[:block_rows] if columns.id else None,
                        {name: v[:block_rows] for name, v in kept.items()})
            values, ids = values[block_rows:], ids[block_rows:]
            kept = {name: v[block_rows:] for name, v in kept.items()}
    if values:
        yield Block(values, ids if columns.id else None, kept)


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
    if isinstance(value, BadValue):
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
