"""The benchmark suite (``polyglot-onnx bench``): PyTorch, Optimum and polyglot-onnx timed side by side.

Lives in benchmarks/suite/ and installs as ``polyglot_onnx.bench``. It sits above the three
stages (it builds packages with export and quantize, times them with the runtime) and is never
imported by them.
"""

from polyglot_onnx.bench.suite import BenchOptions, run_bench
from polyglot_onnx.bench.timing import TimingPolicy

__all__ = ["BenchOptions", "TimingPolicy", "run_bench"]
