"""What a corpus job is asked to do: one frozen dataclass shared by the CLI, the Python API and both engines."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from polyglot_onnx.errors import InputError
from polyglot_onnx.runtime.providers import check_threads

OUTPUTS = ("sentence", "token", "word")
POOLINGS = ("mean", "cls")
DTYPES = ("float32", "float16", "int8", "binary")
LONG_TEXT = ("truncate", "window")
ENGINES = ("local", "ray")
FORMATS = ("jsonl", "parquet", "csv", "text")

# Options that change what the output means: a resume with any of them changed is refused.
# Speed knobs (threads, batch budget, engine, actors) may change between runs of the same job.
COMPARED = ("format", "text_column", "id_column", "output", "pooling", "normalize", "long_text", "dtype", "shard_size")
# Compared too, but only when set: a run started before these options existed keeps its options hash.
COMPARED_IF_SET = ("prompt_name", "prompt", "dimensions")
# Compared only when not their default, for the same reason: the shards' column names and extra columns.
VECTOR_COLUMN = "embedding"

# --max-batch-tokens auto: padded tokens per onnxruntime call = AUTO_TOKEN_WIDTH / hidden size, as a power
# of two in [256, 8192]. A call's activations are tokens x hidden x a few; once a batch's activations
# leave the CPU cache, every element-wise step streams them from memory and larger batches get slower.
# Measured with benchmarks/batch_budget.py on 2 AVX2 cores (benchmarks/README.md, "Corpus embedding job").
AUTO_TOKEN_WIDTH = 384 * 1024
AUTO_BOUNDS = (256, 8192)


def auto_batch_tokens(hidden_size: int) -> int:
    """The batch budget for a model this wide: 1,024 tokens at hidden 384, 512 at 768, 4,096 at 64."""
    target = max(1, AUTO_TOKEN_WIDTH // max(1, hidden_size))
    power = 1 << (target.bit_length() - 1)
    return min(max(power, AUTO_BOUNDS[0]), AUTO_BOUNDS[1])


@dataclass(frozen=True)
class JobOptions:
    """Everything but the package and the paths; defaults are the CLI's."""

    format: str | None = None  # None: from the file extension
    text_column: str = "text"
    id_column: str | None = None  # None: the stable row number over all inputs, in sorted path order
    output: str = "sentence"
    pooling: str | None = None  # None: the package's default
    normalize: bool = True
    long_text: str = "truncate"
    dtype: str = "float32"
    max_batch_tokens: int | None = None  # None: auto_batch_tokens(the model's hidden size)
    shard_size: int = 10_000
    threads: int | None = None
    variant: str = "auto"
    provider: str = "auto"
    fail_on_error: bool = False
    show_progress: bool = True
    engine: str = "local"
    ray_address: str | None = None
    actors: int = 1
    cpus_per_actor: int = 1
    prompt_name: str | None = None  # None: the package's default prompt, if it has one
    prompt: str | None = None  # wins over prompt_name; "" embeds without any prompt
    dimensions: int | None = None  # Matryoshka: keep the first N dimensions, then normalize
    vector_column: str = VECTOR_COLUMN  # LanceDB looks for "vector"
    keep_columns: tuple[str, ...] = ()  # input columns copied into the shards as they are

    def __post_init__(self) -> None:
        if isinstance(self.keep_columns, str):  # "text,lang" from the Python API, as the CLI takes it
            object.__setattr__(self, "keep_columns", split_columns([self.keep_columns]))
        elif not isinstance(self.keep_columns, tuple):
            object.__setattr__(self, "keep_columns", tuple(self.keep_columns))
        self._check_choices()
        self._check_numbers()
        self._check_columns()

    def _check_choices(self) -> None:
        choices = {"output": OUTPUTS, "dtype": DTYPES, "long_text": LONG_TEXT, "engine": ENGINES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"unknown {name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.format is not None and self.format not in FORMATS:
            raise InputError(f"unknown input format {self.format!r}: choose one of {', '.join(FORMATS)}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise InputError(f"unknown pooling {self.pooling!r}: choose mean or cls")
        if self.output != "sentence" and self.dtype == "binary":
            raise InputError("--dtype binary is for sentence vectors only: use float32, float16 or int8 with --output "
                             f"{self.output}")

    def _check_numbers(self) -> None:
        for name in ("max_batch_tokens", "shard_size", "actors", "cpus_per_actor"):
            value = getattr(self, name)
            if name == "max_batch_tokens" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        check_threads(self.threads)
        if self.dimensions is not None and (isinstance(self.dimensions, bool) or not isinstance(self.dimensions, int)
                                            or self.dimensions < 1):
            raise InputError(f"dimensions must be a positive integer, got {self.dimensions!r}")
        if self.dimensions is not None and self.output != "sentence":
            raise InputError("--dimensions is for sentence vectors only: drop it, or use --output sentence")

    def _check_columns(self) -> None:
        """Output column names are checked here, before any input is read: a clash would fail the first shard."""
        names = [self.vector_column, *self.keep_columns]
        if not all(isinstance(n, str) and n.strip() for n in names):
            raise InputError(f"column names must be non-empty strings, got --vector-column {self.vector_column!r} and "
                             f"--keep-columns {list(self.keep_columns)!r}")
        job_columns = self.job_columns()
        if self.vector_column in job_columns:
            raise InputError(f"--vector-column {self.vector_column!r} is a column the job writes itself "
                             f"({', '.join(job_columns)}): choose another name, e.g. vector")
        twice = sorted({n for n in self.keep_columns if self.keep_columns.count(n) > 1})
        if twice:
            raise InputError(f"--keep-columns names {', '.join(twice)} twice: name each column once")
        clash = [n for n in self.keep_columns if n in (*job_columns, self.vector_column)]
        if clash:
            raise InputError(f"--keep-columns {clash[0]!r} would collide with the shards' own {clash[0]!r} column: "
                             "drop it from --keep-columns (or choose another --vector-column)")

    def job_columns(self) -> tuple[str, ...]:
        """The columns every shard has besides the vectors and the kept ones."""
        labels = {"sentence": (), "token": ("tokens", "offsets"), "word": ("words", "offsets")}[self.output]
        return ("id", *labels, "n_tokens", "truncated")

    def batch_tokens(self, hidden_size: int) -> int:
        """The batch budget this job runs with: the one asked for, or auto's for a model this wide."""
        return self.max_batch_tokens or auto_batch_tokens(hidden_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def compared(self, fmt: str, pooling: str) -> dict[str, Any]:
        """The options that define the job's output, with the resolved input format and pooling."""
        data = {name: getattr(self, name) for name in COMPARED}
        data["format"] = fmt
        data["pooling"] = pooling if self.output == "sentence" else None
        data.update({name: getattr(self, name) for name in COMPARED_IF_SET if getattr(self, name) is not None})
        if self.vector_column != VECTOR_COLUMN:
            data["vector_column"] = self.vector_column
        if self.keep_columns:
            data["keep_columns"] = list(self.keep_columns)  # a list, as _run.json gives it back
        return data


def split_columns(values: list[str] | None) -> tuple[str, ...]:
    """--keep-columns a,b --keep-columns c -> ("a", "b", "c")."""
    return tuple(name.strip() for value in values or [] for name in value.split(","))
