"""The input cut into shard-sized chunks: chunk k holds rows [k * shard_size, (k + 1) * shard_size).

Fixed boundaries make resuming exact: a committed shard says where it ended (file, row in file), the
next run starts there, and the chunks it builds are the very chunks an uninterrupted run would build,
so even batch-dependent variants give the same vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyglot_onnx.jobs.cells import kept_problem
from polyglot_onnx.jobs.inputs import Columns, clean_row, read_blocks


@dataclass(frozen=True)
class Position:
    """Where the input stands after a committed shard: the next row to read."""

    file_index: int = 0
    row_in_file: int = 0
    global_row: int = 0


@dataclass
class Chunk:
    """One future shard: row ids, usable texts (None for bad rows), the bad rows' reasons, where each row is
    in the input (file, 1-based line for JSONL and text, 1-based data row for CSV and Parquet), and the
    values of the kept input columns, by column."""

    index: int
    first_row: int
    ids: list[Any] = field(default_factory=list)
    texts: list[str | None] = field(default_factory=list)
    reasons: list[str | None] = field(default_factory=list)
    end: Position = Position()
    places: list[tuple[str, int]] = field(default_factory=list)
    kept: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, value: Any, ident: Any, row: int, user_ids: bool, place: tuple[str, int],
            kept: dict[str, Any] | None = None) -> None:
        """Row numbers are the ids unless the input has an id column; a null id, or a kept value that cannot
        be stored, makes the row bad."""
        text, ident, reason = clean_row(value, ident, user_ids)
        reason = reason or kept_problem(kept or {})
        for name, cell in (kept or {}).items():
            self.kept.setdefault(name, []).append(cell)
        self.ids.append(ident if user_ids else row)
        self.texts.append(text if reason is None else None)
        self.reasons.append(reason)
        self.places.append(place)

    def rows(self) -> range:
        return range(self.first_row, self.first_row + len(self))

    def bad_rows(self) -> list[dict[str, Any]]:
        """The errors-file records of this chunk: enough to find each bad row in the input and fix it."""
        return [{"row": self.first_row + i, "file": file, "line": line, "id": self.ids[i], "reason": reason}
                for i, (reason, (file, line)) in enumerate(zip(self.reasons, self.places, strict=True))
                if reason is not None]


def iter_chunks(paths: list[Path], fmt: str, columns: Columns, shard_size: int, start: Position = Position()
                ) -> Iterator[Chunk]:
    """Chunks from ``start`` to the end of the input; memory is one chunk plus one read block."""
    row = start.global_row
    chunk = Chunk(index=row // shard_size, first_row=row)
    for file_index in range(start.file_index, len(paths)):
        skip = start.row_in_file if file_index == start.file_index else 0
        in_file = skip
        name = str(paths[file_index])
        for block in read_blocks(paths[file_index], fmt, columns, shard_size, skip):
            ids = block.ids if block.ids is not None else [None] * len(block.values)
            for k, (value, ident) in enumerate(zip(block.values, ids)):
                kept = {col: cells[k] for col, cells in block.kept.items()}
                chunk.add(value, ident, row, columns.id is not None, (name, in_file + 1), kept)
                row += 1
                in_file += 1
                if len(chunk) == shard_size:
                    chunk.end = Position(file_index, in_file, row)
                    yield chunk
                    chunk = Chunk(index=row // shard_size, first_row=row)
        chunk.end = Position(file_index + 1, 0, row)
    if len(chunk):
        yield chunk
