"""``--engine ray``: Ray Data reads the input and an actor pool embeds it; this process numbers and commits.

Reading and embedding scale out over the cluster (``map_batches`` with ``EmbedActor``, ``concurrency``
actors of ``num_cpus`` each). Output order is preserved, so the driver can give every row its stable
number and cut the same shards as the local engine, committed by the same code: one committer is what
makes the output exactly-once. A resume skips the files already covered; rows of a partly covered
file are embedded again and dropped (they are never written twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from polyglot_onnx.errors import DependencyError
from polyglot_onnx.jobs.chunks import Chunk, Position
from polyglot_onnx.jobs.encode import Encoded
from polyglot_onnx.jobs.inputs import Columns, csv_convert_options
from polyglot_onnx.jobs.progress import JobProgress

RAY_BATCH_ROWS = 1024  # rows per actor call: small enough to spread a shard over actors


def _ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise DependencyError("--engine ray needs the ray extra: pip install 'polyglot-onnx[ray]'") from err
    return ray


def read_dataset(paths: list[str], fmt: str, columns: Columns, block_rows: int) -> Any:
    """Ray Data's readers, with a ``path`` column so the driver knows where each row came from."""
    ray = _ray()
    # Readers reserve no CPU: the actors hold every CPU they asked for, and a reader waiting for one
    # would stall the pipeline (reading is light next to the model).
    if fmt == "parquet":
        return ray.data.read_parquet(paths, columns=columns.read(), include_paths=True, num_cpus=0)
    if fmt == "csv":
        return ray.data.read_csv(paths, convert_options=csv_convert_options(columns), include_paths=True, num_cpus=0)
    from polyglot_onnx.jobs.ray_actor import LinesDatasource

    return ray.data.read_datasource(LinesDatasource(paths, block_rows, include_paths=True), num_cpus=0)


def ray_chunks(plan: Any, progress: JobProgress) -> Iterator[tuple[Chunk, Encoded]]:
    """(chunk, encoded) pairs in input order, from the actor pool's ordered output."""
    ray = _ray()
    from polyglot_onnx.jobs.ray_actor import EmbedActor

    o = plan.options
    if not ray.is_initialized():
        # An address joins an existing cluster (ray://head:10001, or "auto" on a node of it); none starts a local one.
        extra = {} if o.ray_address else {"include_dashboard": False}
        ray.init(address=o.ray_address, log_to_driver=False, logging_level="warning", **extra)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    files = [str(p) for p in plan.paths[plan.start.file_index:]]
    if not files:
        return
    ds = read_dataset(files, plan.fmt, plan.input_columns, RAY_BATCH_ROWS)
    actor_options = replace(o, variant=plan.embedder.variant, engine="local", show_progress=False).to_dict()
    ds = ds.map_batches(EmbedActor, fn_constructor_kwargs={"package": str(plan.package.resolve()),
                                                           "options": actor_options, "fmt": plan.fmt,
                                                           "kept": plan.kept},
                        batch_size=min(RAY_BATCH_ROWS, o.shard_size), batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(size=o.actors), num_cpus=o.cpus_per_actor)
    assembler = Assembler(plan)
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from assembler.add(batch, progress)
    yield from assembler.flush()


class Assembler:
    """Ordered actor output -> numbered rows -> shard-sized (chunk, encoded) pairs."""

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        self.file_index = {str(p): i for i, p in enumerate(plan.paths)}
        self.skip = plan.start.row_in_file  # rows of the first file already committed
        self.position = plan.start
        self.pending: list[Any] = []  # pyarrow tables holding the next chunk's rows
        self.pending_rows = 0

    def _file(self, path: str) -> int:
        index = self.file_index.get(path)
        return index if index is not None else self.file_index[str(Path(path).resolve())]

    def add(self, batch: Any, progress: JobProgress) -> Iterator[tuple[Chunk, Encoded]]:
        if self.skip:  # the stream starts at the first row of the partly committed file
            dropped = min(self.skip, batch.num_rows)
            self.skip -= dropped
            batch = batch.slice(dropped)
        progress.update(batch.num_rows, int(np.asarray(batch.column("n_tokens")).sum()))
        size = self.plan.options.shard_size
        while batch.num_rows:
            take = min(size - self.pending_rows, batch.num_rows)
            self.pending.append(batch.slice(0, take))
            self.pending_rows += take
            batch = batch.slice(take)
            if self.pending_rows == size:
                yield self._chunk()

    def flush(self) -> Iterator[tuple[Chunk, Encoded]]:
        if self.pending_rows:
            yield self._chunk()

    def _chunk(self) -> tuple[Chunk, Encoded]:
        import pyarrow as pa

        table = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        first = self.position.global_row
        paths = table.column("path").to_pylist()
        in_file = self.position.row_in_file
        file_index = self.position.file_index
        places = []  # (file, 1-based line or row in file) of each row, as the local engine records them
        for path in paths:
            index = self._file(path)
            if index != file_index:
                file_index, in_file = index, 0
            in_file += 1
            places.append((str(self.plan.paths[file_index]), in_file))
        self.position = Position(file_index, in_file, first + table.num_rows)
        reasons = table.column("reason").to_pylist()
        user_ids = self.plan.options.id_column is not None
        ids = table.column("id").to_pylist() if user_ids else list(range(first, first + table.num_rows))
        chunk = Chunk(index=first // self.plan.options.shard_size, first_row=first, ids=ids,
                      texts=["" if r is None else None for r in reasons], reasons=reasons, end=self.position,
                      places=places, kept=self._kept(table))
        good = np.array([r is None for r in reasons], dtype=bool)
        return chunk, self._encoded(table, good)

    def _kept(self, table: Any) -> dict[str, list[Any]]:
        """The kept columns' values, by column, from the actors' one struct column."""
        keep = self.plan.options.keep_columns
        if not keep:
            return {}
        kept = table.column("kept").combine_chunks()
        return {name: kept.field(name).to_pylist() for name in keep}

    def _encoded(self, table: Any, good: np.ndarray) -> Encoded:
        n_tokens = np.asarray(table.column("n_tokens"))[good]
        truncated = np.asarray(table.column("truncated"))[good]
        provider = ",".join(sorted(set(table.column("provider").to_pylist()))) or None  # actors on mixed nodes
        output = self.plan.options.output
        hidden = self.plan.width
        if output == "sentence":
            flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return Encoded(flat.reshape(-1, hidden)[good], n_tokens, truncated, provider)
        label = "tokens" if output == "token" else "words"
        labels = table.column(label).to_pylist()
        offsets = table.column("offsets").to_pylist()
        vectors = table.column("embedding").to_pylist()
        records = [SimpleNamespace(**{label: labels[i], "offsets": [tuple(x) for x in offsets[i]],
                                      "embeddings": np.asarray(vectors[i], np.float32).reshape(-1, hidden)})
                   for i in np.flatnonzero(good)]
        return Encoded(records, n_tokens, truncated, provider)
