"""The Optimum contender: Hugging Face Optimum's own ONNX recipe, built in an isolated virtualenv.

optimum-onnx 0.1.0 pins ``transformers<4.58`` while polyglot-onnx needs transformers 5, so the two
cannot share an environment. This module keeps a private virtualenv with Optimum's stack
(:data:`REQUIREMENTS`), runs the standalone ``optimum_build.py`` in it, and hands back plain
``.onnx`` files that the suite then times with the project's own onnxruntime. Only the stdlib is
imported here: the suite imports this module without torch, and the Optimum stack never enters
the project's process.

Typical use::

    python = ensure_env()
    build = build_optimum(Path("ckpt/mbert-cased"), Path("runs/optimum/mbert-fill"), "fill-mask", python)
    build.files["int8"]  # -> .../int8/model_optimized_quantized.onnx
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from polyglot_onnx.errors import BenchError

# Every pin is exact so that the contender is the same build on every machine and run; found by
# installing and building both architectures with them (see optimum_build.py's summary.json).
# torch is the CPU build (2.13.0+cpu satisfies ==2.13.0): an unpinned torch resolves to the CUDA
# wheel and pulls gigabytes of nvidia-* packages. onnxruntime matches the project's, so the
# exporter's validation and ORT's optimizer see the same kernels the suite later times.
REQUIREMENTS: tuple[str, ...] = (
    "optimum-onnx==0.1.0",
    "optimum==2.1.0",
    "transformers==4.57.6",
    "tokenizers==0.22.2",
    "huggingface-hub==0.36.2",
    "torch==2.13.0",
    "onnxruntime==1.31.1",
    "onnx==1.23.2",
    "accelerate==1.15.0",  # optimum's exporter needs it to find tied weights (LM head = embeddings) and store them once
)

TASKS = ("fill-mask", "feature-extraction")
LEVELS = ("O2", "int8", "O4")
ENV_VAR = "POLYGLOT_OPTIMUM_ENV"
MARKER = "polyglot-optimum-requirements.txt"  # written into the venv only after a verified install
DONE = "done.json"
SCRIPT = Path(__file__).with_name("optimum_build.py")
PROGRESS_PREFIX = "[optimum-build] "  # lines the script means for the user; everything else is noise
FIX = "check network access to PyPI, or run without the optimum contender"


@dataclass(frozen=True)
class OptimumBuild:
    """The ONNX files of one Optimum build, by variant.

    ``files`` maps variant -> .onnx file; a variant Optimum could not make is absent and ``notes``
    says why (summary.json in ``directory`` has the details):

    - ``fp32``: the plain exporter output, as ``optimum-cli export onnx --task TASK``.
    - ``O2``: ``ORTOptimizer`` with ``AutoOptimizationConfig.O2()`` (onnxruntime's transformer
      fusions: Attention, SkipLayerNormalization, BiasGelu, ...).
    - ``int8``: ``ORTQuantizer`` with ``AutoQuantizationConfig.avx2(is_static=False,
      per_channel=False)`` applied to the O2 model: the usual Optimum CPU recipe (dynamic int8
      weights, activations quantized at run time). Quantizes the fp32 export when O2 is missing.
    - ``O4``: ``AutoOptimizationConfig.O4()``, the GPU recipe (fusions + fp16), only when asked.
    """

    task: str
    directory: Path
    files: dict[str, Path]
    seconds: float
    notes: tuple[str, ...] = ()


def default_env_dir() -> Path:
    """``$POLYGLOT_OPTIMUM_ENV`` or ``~/.cache/polyglot-onnx/optimum-venv``: outside the repo, reused across runs."""
    value = os.environ.get(ENV_VAR)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "polyglot-onnx" / "optimum-venv"


def _venv_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _marker_text() -> str:
    return "\n".join(REQUIREMENTS) + "\n"


def _last_line(text: str) -> str:
    """The most telling line of a foreign tool's output: the last error-looking one, else the last one."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or "exception" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else "no output"


@contextmanager

def _step(command: list[str], failure: Callable[[str], str]) -> None:
    """Run one set-up command; on a non-zero exit raise BenchError(failure(its most telling line))."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(failure(_last_line(done.stderr + done.stdout)))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock file, so two suite processes never install into one venv at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no concurrent runs expected there
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_env(env_dir: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Create (once) the isolated virtualenv with :data:`REQUIREMENTS`; return its python.

    A venv cannot be renamed after creation (its scripts hard-code their path), so readiness is
    the marker file instead: it is written last, after pip succeeded and the stack imported, and
    holds the requirement list. A second call with the same requirements only reads it. A venv
    without a matching marker (half-installed, or older pins) is wiped and rebuilt; a directory
    that is not a venv is never touched.
    """
    env_dir = Path(env_dir if env_dir is not None else default_env_dir()).expanduser().absolute()
    python = _venv_python(env_dir)
    marker = env_dir / MARKER
    wanted = _marker_text()
    if python.exists() and marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
        return python
    with _locked(env_dir.parent / f".{env_dir.name}.lock"):
        if python.exists() and marker.is_file() and marker.read_text(encoding="utf-8") == wanted:
            return python  # another process finished it while we waited
        if env_dir.exists() and any(env_dir.iterdir()):
            if not (env_dir / "pyvenv.cfg").is_file():
                raise BenchError(
                    f"{env_dir} exists and is not a virtualenv: point {ENV_VAR} at an empty or new directory"
                )
            log(f"optimum env {env_dir}: requirements changed or install incomplete, rebuilding")
            shutil.rmtree(env_dir)
        log(f"optimum env: creating {env_dir} and installing {len(REQUIREMENTS)} pinned packages (once, a few minutes)")
        _step([sys.executable, "-m", "venv", str(env_dir)], lambda why: (
            f"could not create a virtualenv at {env_dir} ({why}): install the python venv module (python3-venv) "
            f"or set {ENV_VAR} to another directory"))
        if not python.exists():
            raise BenchError(f"the virtualenv at {env_dir} has no {python.name}: set {ENV_VAR} to another directory")
        start = time.perf_counter()
        _step([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
              lambda why: f"pip could not install {', '.join(REQUIREMENTS)} into {env_dir} ({why}): {FIX}")
        # pip can succeed with a stack that does not import (a wheel built for another CPU, a
        # broken transitive pin): check before the marker says "ready".
        _step([str(python), "-I", "-c", "import optimum.onnxruntime, optimum.exporters.onnx, transformers, torch"],
              lambda why: (f"the optimum env {env_dir} installed but does not import ({why}): "
                           f"delete {env_dir} and retry, or run without the optimum contender"))
        tmp = marker.with_name(f".{MARKER}.tmp")
        tmp.write_text(wanted, encoding="utf-8")
        os.replace(tmp, marker)
        log(f"optimum env ready in {time.perf_counter() - start:.0f} s: {python}")
    return python


def _canonical_levels(levels: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise BenchError(f"unknown Optimum level(s) {', '.join(unknown)}: choose from {', '.join(LEVELS)}")
    return tuple(level for level in LEVELS if level in levels)


def _done_record(checkpoint: Path, task: str, levels: tuple[str, ...]) -> dict[str, object]:
    """What a cached build must match: same input, same recipe (levels and build script), same pinned stack."""
    script = hashlib.sha256(SCRIPT.read_bytes()).hexdigest()[:16]
    return {
        "checkpoint": str(checkpoint),
        "task": task,
        "levels": list(levels),
        "requirements": list(REQUIREMENTS),
        "script": script,
    }


def _from_done(out: Path, done: dict[str, object]) -> OptimumBuild:
    files = {name: out / rel for name, rel in dict(done["files"]).items()}  # type: ignore[call-overload]
    return OptimumBuild(
        task=str(done["task"]),
        directory=out,
        files=files,
        seconds=float(done["seconds"]),  # type: ignore[arg-type]
        notes=tuple(done.get("notes", ())),  # type: ignore[call-overload]
    )


def _cached(out: Path, want: dict[str, object]) -> OptimumBuild | None:
    try:
        done = json.loads((out / DONE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or any(done.get(key) != value for key, value in want.items()):
        return None
    build = _from_done(out, done)
    return build if all(path.is_file() for path in build.files.values()) else None


def _run_script(command: list[str], log: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run the build script, forward its progress lines to ``log``, keep the tail for errors."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    tail: deque[str] = deque(maxlen=200)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line.startswith(PROGRESS_PREFIX):
                log(line[len(PROGRESS_PREFIX) :])
            if line.strip():
                tail.append(line)
        code = proc.wait()
    return code, list(tail)


def _failure_line(tail: list[str]) -> str:
    """The script's own ``error:`` line when it wrote one, else the last error-looking line."""
    for line in reversed(tail):
        if line.startswith(PROGRESS_PREFIX + "error:"):
            return line[len(PROGRESS_PREFIX + "error:") :].strip()[:300]
    return _last_line("\n".join(tail))


def _check_replaceable(out: Path) -> None:
    """Only an earlier build (or nothing) may be replaced: never delete a directory we did not write."""
    if out.is_file() or (
        out.is_dir() and any(out.iterdir()) and not ((out / DONE).exists() or (out / "summary.json").exists())
    ):
        raise BenchError(f"{out} exists and is not an Optimum build: choose another output directory")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap the finished temp dir in; an old build is moved aside first and removed after."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it 0700; the build is an ordinary directory
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def build_optimum(
    checkpoint: Path,
    out: Path,
    task: str,
    python: Path,
    levels: Sequence[str] = ("O2", "int8"),
    log: Callable[[str], None] = print,
) -> OptimumBuild:
    """Build Optimum's variants of a BERT / ModernBERT checkpoint into ``out``, or reuse a previous build.

    Runs ``optimum_build.py`` under the isolated ``python`` (from :func:`ensure_env`) in a temp
    directory next to ``out`` and renames it into place only on success, so ``out`` is either a
    complete build or absent. ``out/done.json`` records checkpoint, task, levels, pins and the
    script's hash; a call that matches it returns at once. ``fp32`` is always built; ``levels`` adds ``O2``, ``int8``
    and ``O4``. Variants Optimum refuses are left out with a note; a failed export raises
    :class:`BenchError`.
    """
    if task not in TASKS:
        raise BenchError(f"unknown task {task!r} for the Optimum contender: choose from {', '.join(TASKS)}")
    wanted_levels = _canonical_levels(levels)
    checkpoint = Path(checkpoint).expanduser().resolve()
    out = Path(out).expanduser().absolute()
    if not (checkpoint / "config.json").is_file():
        raise BenchError(f"{checkpoint} is not a checkpoint directory (no config.json): pass a saved model directory")
    if not Path(python).exists():
        raise BenchError(f"{python} does not exist: create the env with ensure_env() first")
    want = _done_record(checkpoint, task, wanted_levels)
    cached = _cached(out, want)
    if cached is not None:
        log(f"optimum {task}: reusing {out}")
        return cached

    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp.", dir=out.parent))
    start = time.perf_counter()
    command = [
        str(python), "-I", "-u", str(SCRIPT),
        "--checkpoint", str(checkpoint), "--out", str(tmp), "--task", task, "--levels", ",".join(wanted_levels),
    ]  # fmt: skip
    try:
        code, tail = _run_script(command, log)
        if code != 0:
            raise BenchError(
                f"Optimum could not build {task} from {checkpoint} ({_failure_line(tail)}): "
                "fix the checkpoint, or run without the optimum contender"
            )
        summary = json.loads((tmp / "summary.json").read_text(encoding="utf-8"))
        files = {name: rel for name, rel in summary["files"].items() if rel}
        if "fp32" not in files:
            raise BenchError(f"Optimum build of {checkpoint.name} wrote no fp32 model: the export failed silently")
        done = {**want, "files": files, "seconds": round(time.perf_counter() - start, 2), "notes": summary["notes"]}
        (tmp / DONE).write_text(json.dumps(done, indent=2) + "\n", encoding="utf-8")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _from_done(out, done)
