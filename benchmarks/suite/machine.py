"""What the rows were measured on, and this machine's measured matrix-multiply peaks.

Achieved GFLOP/s means little without the ceiling, so every run times onnxruntime's own fp32
MatMul and int8 MatMulInteger (u8 x s8, the kernel dynamic int8 uses) on a large cube and on the
BERT feed-forward shape, in the same process, threads and session options as the contenders.
"""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

PEAK_SHAPES: dict[str, tuple[int, int, int]] = {"cube": (2048, 2048, 2048), "ffn": (128, 768, 3072)}
LIBRARIES = ("polyglot-onnx", "onnxruntime", "onnxruntime-gpu", "torch", "transformers", "tokenizers", "numpy")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions that decide which int8 kernels onnxruntime's MLAS picks."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx", "amx")) or "vnni" in f)
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def machine_facts(threads: int, provider: str) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": cpu_flags(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "threads": threads,
        "provider": provider,
    }
    if provider == "cuda":
        facts["gpu"] = gpu_name()
    return facts


def gpu_name() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def _fp16_matmul_graph(size: int) -> bytes:
    """[size, size] x [size, size] fp16, both operands inputs (bound on the device: no weight transfer)."""
    from onnx import TensorProto, helper

    a, b = (helper.make_tensor_value_info(n, TensorProto.FLOAT16, [size, size]) for n in ("a", "b"))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [size, size])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "peak16", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def measure_gpu_peak(size: int = 8192, seconds: float = 2.0, provider: str = "cuda") -> float:
    """TFLOP/s of one fp16 MatMul on the GPU through onnxruntime (cuBLAS tensor cores): what % of peak uses.

    Inputs and output stay on the device (I/O binding), so the figure is the kernel's, as in a model's
    GEMMs. ``provider="cpu"`` runs the same code on the CPU provider (tests; a tiny size there).
    """
    import onnxruntime as ort

    cuda = provider == "cuda"
    if cuda:
        from polyglot_onnx.runtime.providers import preload_cuda_libraries

        preload_cuda_libraries()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(_fp16_matmul_graph(size), options,
                                   providers=["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"])
    device = "cuda" if cuda else "cpu"
    rng = np.random.default_rng(0)
    binding = session.io_binding()
    for name in ("a", "b"):
        value = (rng.standard_normal((size, size), dtype=np.float32) / 8).astype(np.float16)
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
    binding.bind_output("y", device)
    for _ in range(3):
        session.run_with_iobinding(binding)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        session.run_with_iobinding(binding)  # returns once the device finished (ORT synchronises the stream)
        times.append(time.perf_counter() - start)
    return float(f"{2.0 * size**3 / float(np.median(times)) / 1e12:.4g}")  # 4 digits: a tiny test cube is not 0.0


def _matmul_graph(m: int, k: int, n: int, integer: bool) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if integer:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])
        weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["a", "w"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([node], "peak", [a], [y], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def _time_graph(blob: bytes, feed: np.ndarray, threads: int, seconds: float) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"a": feed})
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        session.run(None, {"a": feed})
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_peaks(threads: int, seconds: float = 2.0, provider: str = "cpu") -> dict[str, float]:
    """GFLOP/s (fp32 MatMul) and GOP/s (int8 MatMulInteger), cube and FFN shape, median of runs; on CUDA also
    the GPU's fp16 MatMul TFLOP/s (``fp16_peak_tflops``), which CUDA rows are measured against."""
    rng = np.random.default_rng(0)
    out: dict[str, float] = {}
    for label, (m, k, n) in PEAK_SHAPES.items():
        ops = 2.0 * m * k * n
        fp32 = _time_graph(_matmul_graph(m, k, n, False), rng.standard_normal((m, k), dtype=np.float32), threads, seconds)
        int8 = _time_graph(_matmul_graph(m, k, n, True), rng.integers(0, 256, (m, k), dtype=np.uint8), threads, seconds)
        out[f"fp32_{label}_gflops"] = round(ops / fp32 / 1e9, 1)
        out[f"int8_{label}_gops"] = round(ops / int8 / 1e9, 1)
    # The peak is the large cube, as the targets define it; the FFN shape shows what the model's own shape gets.
    out["fp32_peak_gflops"] = out["fp32_cube_gflops"]
    out["int8_peak_gops"] = out["int8_cube_gops"]
    if provider == "cuda":
        out["fp16_peak_tflops"] = measure_gpu_peak(seconds=seconds)
    return out
