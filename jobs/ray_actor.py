"""The Ray Data side: a line reader that splits exactly as the local engine does, and the embedding actor.

The actor is a callable class for ``map_batches``: Ray builds it once per actor, so the package is
loaded once, with onnxruntime threads equal to the CPUs the actor reserved (Ray's reservation is only
bookkeeping; onnxruntime would otherwise use every core of the node). It returns one output row per
input row, bad rows included (with their reason), so the driver can number rows and commit shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from polyglot_onnx.jobs.cells import cell_converter, kept_problem
from polyglot_onnx.jobs.encode import ChunkEncoder, vector_width
from polyglot_onnx.jobs.inputs import Block, Columns, clean_row, json_block, parse_json_record

try:  # Ray is an optional extra; this module is only imported by the Ray engine and its workers.
    from ray.data.datasource import FileBasedDatasource
except ImportError:  # pragma: no cover - the engine raises DependencyError before importing this module
    FileBasedDatasource = object  # type: ignore[misc,assignment]


class LinesDatasource(FileBasedDatasource):
    """Raw lines split on b'\\n' only, streamed in blocks: ray.data.read_text decodes whole files and splits
    on every Unicode line break, which would renumber rows and turn one bad byte into a failed file."""

    def __init__(self, paths: list[str], block_rows: int, **kwargs: Any) -> None:
        super().__init__(paths, **kwargs)
        self.block_rows = block_rows

    def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
        import pyarrow as pa

        lines: list[bytes] = []
        rest = b""
        while data := f.read(1 << 20):
            parts = (rest + data).split(b"\n")
            rest = parts.pop()
            lines.extend(parts)
            while len(lines) >= self.block_rows:
                yield pa.table({"line": pa.array(lines[: self.block_rows], pa.binary())})
                lines = lines[self.block_rows:]
        if rest:
            lines.append(rest)
        if lines:
            yield pa.table({"line": pa.array(lines, pa.binary())})


def raw_values(batch: Any, fmt: str, columns: Columns) -> Block:
    """Text values, id values and kept values of one Ray batch, decoded as the local readers decode them."""
    if fmt in ("text", "jsonl"):
        lines = batch.column("line").to_pylist()
        if fmt == "text":
            return Block([line.rstrip(b"\r") for line in lines], None)
        return json_block([parse_json_record(line) for line in lines], columns)
    cell = cell_converter(fmt)
    kept = {name: [cell(v) for v in batch.column(name).to_pylist()] for name in columns.keep}
    return Block(batch.column(columns.text).to_pylist(),
                 batch.column(columns.id).to_pylist() if columns.id else None, kept)


class EmbedActor:
    """Loads the package once; each call embeds one batch of raw rows."""

    def __init__(self, package: str, options: dict[str, Any], fmt: str, kept: dict[str, Any] | None = None) -> None:
        from polyglot_onnx import Embedder
        from polyglot_onnx.jobs.options import JobOptions

        self.options = JobOptions(**options)
        self.fmt = fmt
        self.kept = kept or {}  # Arrow type of each kept column: every batch's table has the same schema
        o = self.options
        self.embedder = Embedder.load(package, provider=o.provider, variant=o.variant, threads=o.cpus_per_actor)
        self.encoder = ChunkEncoder(self.embedder, self.options)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        o = self.options
        block = raw_values(batch, self.fmt, Columns(o.text_column, o.id_column, o.keep_columns))
        values, ids = block.values, block.ids
        texts, reasons, out_ids = [], [], []
        for k, value in enumerate(values):
            text, ident, reason = clean_row(value, ids[k] if ids is not None else None, ids is not None)
            reason = reason or kept_problem({name: cells[k] for name, cells in block.kept.items()})
            texts.append(text if reason is None else None)
            reasons.append(reason)
            out_ids.append(ident)
        good = [i for i, r in enumerate(reasons) if r is None]
        encoded = self.encoder.encode([text for text in texts if text is not None])  # the good rows, in order
        n = len(values)
        n_tokens = np.zeros(n, np.int32)
        truncated = np.zeros(n, bool)
        n_tokens[good], truncated[good] = encoded.n_tokens, encoded.truncated
        columns = {"path": batch.column("path"), "reason": pa.array(reasons, pa.string()),
                   "id": pa.array(out_ids, pa.string()), "n_tokens": n_tokens, "truncated": truncated,
                   "provider": pa.array([self.embedder.provider] * n, pa.string())}
        if self.kept:  # one struct column: kept names may be anything, "path" and "reason" too
            arrays = [pa.array([None if r else v for v, r in zip(block.kept[name], reasons)], kind)
                      for name, kind in self.kept.items()]
            columns["kept"] = pa.StructArray.from_arrays(arrays, names=list(self.kept))
        hidden = vector_width(self.embedder, o.output, o.dimensions)
        if o.output == "sentence":
            full = np.zeros((n, hidden), np.float32)
            full[good] = encoded.vectors
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(full.reshape(-1)), hidden)
        else:
            label = "tokens" if o.output == "token" else "words"
            records: list[Any] = [None] * n
            for i, record in zip(good, encoded.vectors):
                records[i] = record
            columns[label] = pa.array([getattr(r, label) if r else [] for r in records], pa.list_(pa.string()))
            columns["offsets"] = pa.array([[list(x) for x in r.offsets] if r else [] for r in records],
                                          pa.list_(pa.list_(pa.int32(), 2)))
            columns["embedding"] = pa.array(
                [r.embeddings.tolist() if r else [] for r in records], pa.list_(pa.list_(pa.float32(), hidden)))
        return pa.table(columns)
