"""Which int8 kernel onnxruntime will use on this CPU, from the OS's own report (stdlib only).

onnxruntime's CPU library (MLAS) picks its u8 x s8 matrix kernel by instruction set. Without VNNI
(AVX2, or AVX-512 BW without VNNI) it multiplies with ``vpmaddubsw``, whose 16-bit pairwise add
saturates: the same int8 graph can be accurate on one machine and not on another. Drift evidence
measured on a VNNI machine therefore says little about an AVX2 one, so the evidence names its
kernel class and the runtime compares it with the class it finds here.

Parsers are pure functions of the text the OS prints, so every class is testable on any machine.
"""

from __future__ import annotations

import functools
import logging
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("polyglot_onnx")

# The features that decide onnxruntime's int8 kernels, in canonical (Linux /proc/cpuinfo) spelling.
X86_FEATURES = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
ARM_FEATURES = ("asimddp", "i8mm")
# Other spellings (macOS sysctl, py-cpuinfo, Windows) -> the canonical name; compared lowercase,
# without "_", "-" and ".".
ALIASES: dict[str, str] = {
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni",
    "amxtile": "amx_tile",
    "amxint8": "amx_int8",
    "asimddp": "asimddp",
    "dotprod": "asimddp",
    "featdotprod": "asimddp",
    "i8mm": "i8mm",
    "feati8mm": "i8mm",
}
SATURATING_SUFFIX = "-u8s8-saturating"
UNKNOWN = "unknown"


def _canonical(flag: str) -> str | None:
    key = flag.lower().replace("_", "").replace("-", "").replace(".", "")
    return ALIASES.get(key)


def normalize_arch(machine: str) -> str:
    """platform.machine() spellings -> 'x86_64' / 'arm64' / as given."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64", "i386", "i686", "x86"):
        return "x86_64"
    if m in ("arm64", "aarch64", "armv8", "armv8l", "arm64e"):
        return "arm64"
    return m or UNKNOWN


def int8_kernel_class(arch: str, features: frozenset[str] | set[str]) -> str:
    """The family of u8 x s8 kernels onnxruntime picks; '-u8s8-saturating' marks the ones that can overflow."""
    if arch == "x86_64":
        if {"amx_tile", "amx_int8"} <= features:
            return "x86-amx"
        if "avx512_vnni" in features or "avx_vnni" in features:
            return "x86-vnni"
        if "avx512bw" in features:
            return "x86-avx512bw" + SATURATING_SUFFIX
        if "avx2" in features:
            return "x86-avx2" + SATURATING_SUFFIX
        return "x86-sse"  # 16-bit widening multiply-add: slow but exact
    if arch == "arm64":
        if "i8mm" in features:
            return "arm-i8mm"
        if "asimddp" in features:
            return "arm-dotprod"
        return "arm-neon"
    return "generic"


@dataclass(frozen=True)
class CpuInfo:
    """What this machine offers onnxruntime's int8 kernels; ``source`` says where it was read."""

    arch: str
    features: tuple[str, ...]
    int8_kernel_class: str
    model: str = ""
    source: str = UNKNOWN

    @property
    def saturating(self) -> bool:
        return self.int8_kernel_class.endswith(SATURATING_SUFFIX)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"features": list(self.features), "saturating": self.saturating}


def cpu_info(arch: str, flags: list[str] | set[str], model: str = "", source: str = UNKNOWN) -> CpuInfo:
    """Keep only the int8-relevant features, in canonical spelling, and derive the kernel class."""
    arch = normalize_arch(arch)
    found = {c for f in flags if (c := _canonical(f))}
    order = X86_FEATURES if arch == "x86_64" else ARM_FEATURES
    features = tuple(f for f in order if f in found)
    return CpuInfo(arch, features, int8_kernel_class(arch, set(features)), model.strip(), source)


def parse_proc_cpuinfo(text: str, machine: str) -> CpuInfo:
    """Linux /proc/cpuinfo: 'flags' (x86) or 'Features' (ARM) of the first processor."""
    flags: list[str] = []
    model = ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = value.split()
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value
    return cpu_info(machine, flags, model, "/proc/cpuinfo")


def parse_sysctl(values: dict[str, str], machine: str) -> CpuInfo:
    """macOS: machdep.cpu.features / leaf7_features (Intel) or hw.optional.arm.FEAT_* = 1 (Apple silicon)."""
    flags: list[str] = []
    for key, value in values.items():
        if key.startswith("machdep.cpu.") and "features" in key:
            flags += value.split()
        elif key.startswith("hw.optional.arm.") and value.strip() == "1":
            flags.append(key.rsplit(".", 1)[-1])
    return cpu_info(machine, flags, values.get("machdep.cpu.brand_string", ""), "sysctl")


SYSCTL_KEYS = (
    "machdep.cpu.brand_string",
    "machdep.cpu.features",
    "machdep.cpu.leaf7_features",
    "hw.optional.arm.FEAT_DotProd",
    "hw.optional.arm.FEAT_I8MM",
)


def _read_sysctl(machine: str) -> CpuInfo:
    values = {}
    for key in SYSCTL_KEYS:  # one key per call: sysctl stops at the first unknown name
        try:
            out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            values[key] = out.stdout.strip()
    return parse_sysctl(values, machine)


def _read_py_cpuinfo(machine: str) -> CpuInfo:
    """Windows (or anything else): py-cpuinfo if the user installed it; no hard dependency."""
    try:
        import cpuinfo  # type: ignore[import-not-found,unused-ignore]  # absent in most environments

        data = cpuinfo.get_cpu_info()
    except Exception:  # noqa: BLE001 - not installed, or it failed to probe: report unknown
        return CpuInfo(normalize_arch(machine), (), UNKNOWN, "", UNKNOWN)
    return cpu_info(machine, list(data.get("flags", [])), str(data.get("brand_raw", "")), "py-cpuinfo")


@functools.lru_cache(maxsize=1)
def detect_cpu() -> CpuInfo:
    """This machine's int8-relevant CPU features, read once per process."""
    machine = platform.machine()
    system = platform.system()
    proc = Path("/proc/cpuinfo")
    if system == "Linux" and proc.is_file():
        try:
            return parse_proc_cpuinfo(proc.read_text(encoding="utf-8", errors="replace"), machine)
        except OSError:
            pass
    if system == "Darwin":
        return _read_sysctl(machine)
    return _read_py_cpuinfo(machine)


def machine_block(provider: str) -> dict[str, Any]:
    """What drift evidence and canary references record about the machine that measured them."""
    import onnxruntime as ort

    return detect_cpu().to_dict() | {"onnxruntime": ort.__version__, "provider": provider}


def evidence_mismatch(variant_name: str, drift: dict[str, Any] | None, here: CpuInfo | None = None) -> str | None:
    """A warning when an int8 variant's drift evidence came from another int8 kernel class, else None."""
    if not variant_name.startswith("int8") or not drift:
        return None
    recorded = (drift.get("machine") or {}).get("int8_kernel_class")
    here = here or detect_cpu()
    if not recorded or recorded == here.int8_kernel_class or UNKNOWN in (recorded, here.int8_kernel_class):
        return None
    return (
        f"variant {variant_name}'s drift evidence was measured on a {recorded} CPU, this machine is "
        f"{here.int8_kernel_class}: onnxruntime runs different int8 kernels here, so the evidence may not hold"
    )


def warn_if_foreign_evidence(root: Path, variant_name: str, drift: dict[str, Any] | None) -> None:
    message = evidence_mismatch(variant_name, drift)
    if message:
        log.warning(
            "%s; run 'polyglot-onnx verify %s --variant %s' or load with self_check=True", message, root, variant_name
        )
