"""CPU detection, the machine block in drift evidence, canary references, verify and self_check."""

from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from polyglot_onnx import Embedder, FillMask
from polyglot_onnx.cli import main
from polyglot_onnx.errors import NoCanaryError, PackageError, SelfCheckError
from polyglot_onnx.manifest import read_manifest, sha256_file
from polyglot_onnx.runtime.canary import CANARY_FILE, builtin_texts, read_safetensors
from polyglot_onnx.runtime.cpu import (
    X86_FEATURES,
    cpu_info,
    detect_cpu,
    evidence_mismatch,
    int8_kernel_class,
    parse_proc_cpuinfo,
    parse_sysctl,
)
from polyglot_onnx.runtime.selfcheck import top1_agrees, verify_package

# --- CPU detection ------------------------------------------------------------------------------

EPYC_ZEN2 = (
    "processor\t: 0\nmodel name\t: AMD EPYC 7B12\n"
    "flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni\n"
)
SKYLAKE_X = (
    "model name : Intel Xeon Gold 6154\n"
    "flags : sse4_2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl\n"
)
CASCADE_LAKE = "flags : avx2 avx512f avx512bw avx512vl avx512_vnni\n"
ALDER_LAKE = "flags : avx avx2 fma avx_vnni\n"
SAPPHIRE_RAPIDS = "flags : avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
OLD_X86 = "flags : sse sse2 ssse3 sse4_1 sse4_2 avx\n"
GRAVITON2 = (
    "processor : 0\n"
    "Features : fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\n"
)
GRAVITON3 = "Features : fp asimd asimddp sha512 sve asimdfhm i8mm bf16 svei8mm\n"
RPI3 = "Features : fp asimd evtstrm crc32 cpuid\n"


@pytest.mark.parametrize(
    "text, machine, expected, saturating",
    [
        (EPYC_ZEN2, "x86_64", "x86-avx2-u8s8-saturating", True),
        (SKYLAKE_X, "x86_64", "x86-avx512bw-u8s8-saturating", True),
        (CASCADE_LAKE, "x86_64", "x86-vnni", False),
        (ALDER_LAKE, "x86_64", "x86-vnni", False),
        (SAPPHIRE_RAPIDS, "x86_64", "x86-amx", False),
        (OLD_X86, "x86_64", "x86-sse", False),
        (GRAVITON2, "aarch64", "arm-dotprod", False),
        (GRAVITON3, "aarch64", "arm-i8mm", False),
        (RPI3, "aarch64", "arm-neon", False),
        ("", "riscv64", "generic", False),
    ],
)
def test_proc_cpuinfo_parser_gives_each_kernel_class(text, machine, expected, saturating):
    info = parse_proc_cpuinfo(text, machine)
    assert info.int8_kernel_class == expected and info.saturating is saturating
    assert info.source == "/proc/cpuinfo"
    assert json.loads(json.dumps(info.to_dict()))["int8_kernel_class"] == expected


def test_proc_cpuinfo_parser_keeps_only_int8_features_and_the_model():
    info = parse_proc_cpuinfo(EPYC_ZEN2, "x86_64")
    assert info.arch == "x86_64" and info.features == ("avx2",) and info.model == "AMD EPYC 7B12"
    assert parse_proc_cpuinfo(SAPPHIRE_RAPIDS, "AMD64").features == (
        "avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8")
    assert parse_proc_cpuinfo(GRAVITON3, "arm64").features == ("asimddp", "i8mm")


def test_macos_sysctl_and_py_cpuinfo_spellings():
    intel = {
        "machdep.cpu.brand_string": "Intel(R) Xeon(R) W-3245",
        "machdep.cpu.features": "FPU SSE SSE2 AVX1.0",
        "machdep.cpu.leaf7_features": "AVX2 BMI2 AVX512F AVX512BW AVX512VNNI",
    }
    assert parse_sysctl(intel, "x86_64").int8_kernel_class == "x86-vnni"
    apple = {"hw.optional.arm.FEAT_DotProd": "1", "hw.optional.arm.FEAT_I8MM": "0"}
    assert parse_sysctl(apple, "arm64").int8_kernel_class == "arm-dotprod"
    assert parse_sysctl(apple | {"hw.optional.arm.FEAT_I8MM": "1"}, "arm64").int8_kernel_class == "arm-i8mm"
    assert cpu_info("AMD64", ["avx2", "avx512vnni"], source="py-cpuinfo").int8_kernel_class == "x86-vnni"


def test_detects_this_machine_as_its_os_reports_it():
    here = detect_cpu()
    assert here.int8_kernel_class == int8_kernel_class(here.arch, set(here.features))
    proc = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not proc.is_file():
        pytest.skip("the cross-check reads /proc/cpuinfo (Linux)")
    flags = next(line for line in proc.read_text().splitlines() if line.startswith(("flags", "Features"))).split(":")[1]
    if here.arch == "x86_64":
        assert set(here.features) == {f for f in X86_FEATURES if f in flags.split()}
        saturating = "avx2" in flags.split() and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags.split())
        assert here.saturating is saturating
    print(f"\nthis machine: {here.to_dict()}")


def test_evidence_mismatch_names_both_classes():
    here = cpu_info("x86_64", ["avx2"])
    drift = {"machine": {"int8_kernel_class": "x86-vnni"}}
    message = evidence_mismatch("int8", drift, here)
    assert message and "x86-vnni" in message and "x86-avx2-u8s8-saturating" in message
    assert evidence_mismatch("int8", {"machine": {"int8_kernel_class": "x86-avx2-u8s8-saturating"}}, here) is None
    assert evidence_mismatch("fp32", drift, here) is None  # fp32 has no int8 kernels
    assert evidence_mismatch("int8", {"passed": True}, here) is None  # older evidence: nothing to compare


# --- evidence and canary references in the fixtures --------------------------------------------


def test_drift_evidence_names_its_machine(quantized):
    here = detect_cpu()
    machine = read_manifest(quantized["tiny-bert"]).variants["int8"].validation["drift"]["machine"]
    assert machine["int8_kernel_class"] == here.int8_kernel_class and machine["features"] == list(here.features)
    assert machine["provider"] == "CPUExecutionProvider" and machine["onnxruntime"]


def test_canary_file_is_listed_hashed_and_plain_data(quantized, tiny_models):
    for name, pkg in quantized.items():
        manifest = read_manifest(pkg)
        assert manifest.canary is not None and manifest.canary.path == CANARY_FILE
        assert manifest.canary.sha256 == sha256_file(pkg / CANARY_FILE)
        tensors, meta = read_safetensors((pkg / CANARY_FILE).read_bytes())
        n = len(builtin_texts())
        assert tensors["sentence"].shape == (n, manifest.model.hidden_size)
        assert ("mask_top_ids" in tensors) is manifest.model.has_mlm_head
        assert len({t["language"] for t in json.loads(meta["texts"])}) == 24
        assert manifest.canary.size < 100_000


def test_top1_rule_from_top_k():
    ids = np.arange(10)
    peaked = np.array([0.5, 0.2, 0.1] + [0.02] * 7)
    assert top1_agrees(ids, peaked, ids, peaked)
    assert not top1_agrees(ids, peaked, ids[::-1].copy(), peaked)  # variant's best is the ref's 10th
    assert not top1_agrees(ids, peaked, np.arange(10, 20), peaked)  # outside the ref's top-k, clearly worse
    flat = np.full(10, 0.001)
    assert top1_agrees(ids, flat, np.r_[99, ids[:9]], flat)  # near-uniform: mirror rule decides


# --- verify on good packages ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-modernbert", "tiny-encoder"])
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_verify_passes_on_good_packages(quantized, name, variant):
    report = verify_package(quantized[name], variant, "cpu")
    assert report.passed, report.failure_lines()
    assert report.overall["texts"] == 48 and len(report.by_language) == 24 and report.overall["nonfinite"] == 0
    assert ("top1_agreement" in report.overall) is (name != "tiny-encoder")
    print(f"\n{name} {variant}: self-check {report.seconds:.3f} s")
    assert report.seconds < 3.0  # ~0.1-0.3 s idle; generous: the test machine is shared


def test_verify_cli_pass_and_json(quantized, capsys):
    pkg = str(quantized["tiny-bert"])
    assert main(["verify", pkg, "--variant", "int8"]) == 0
    assert "int8: PASS on this machine" in capsys.readouterr().out
    assert main(["verify", pkg, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["variant"] == "int8" and data["passed"] and data["machine"]["int8_kernel_class"]


def test_self_check_load_passes_on_a_good_package(quantized):
    fm = FillMask.load(quantized["tiny-modernbert"], provider="cpu", self_check=True)
    assert fm.variant == "int8"
    assert Embedder.load(quantized["tiny-encoder"], provider="cpu", variant="fp32", self_check=True).variant == "fp32"


# --- a broken int8 graph ---------------------------------------------------------------------------

WEIGHT_OPS = ("MatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits", "QLinearMatMul")


def corrupt_int8(pkg: Path) -> int:
    """Every MatMul-family weight of the int8 graph to large noise; the manifest's hash follows."""
    import onnx
    from onnx import numpy_helper

    manifest = json.loads((pkg / "manifest.json").read_text())
    entry = manifest["variants"]["int8"]["files"][0]
    model = onnx.load(str(pkg / entry["path"]))
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    broken = 0
    for node in model.graph.node:
        if node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits:
            init = inits[node.input[1]]
            w = numpy_helper.to_array(init)
            if w.dtype.kind == "f":
                noisy = (rng.standard_normal(w.shape) * 50 * (w.std() + 1e-3)).astype(w.dtype)
            else:
                info = np.iinfo(w.dtype)
                noisy = rng.integers(info.min, info.max, size=w.shape, endpoint=True).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(noisy, init.name))
            broken += 1
    onnx.save(model, str(pkg / entry["path"]))
    entry["sha256"] = sha256_file(pkg / entry["path"])
    entry["size"] = (pkg / entry["path"]).stat().st_size
    # the evidence keeps saying "passed" for this graph, as a package checked on another CPU would
    manifest["variants"]["int8"]["validation"]["drift"]["graph_sha256"] = entry["sha256"]
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return broken


@pytest.fixture(scope="module")
def broken(quantized, tmp_path_factory) -> Path:
    """tiny-bert whose int8 weights are noise, while its manifest still says the drift gate passed."""
    pkg = tmp_path_factory.mktemp("broken") / "pkg"
    shutil.copytree(quantized["tiny-bert"], pkg)
    assert corrupt_int8(pkg) >= 4
    return pkg


def test_verify_fails_on_broken_int8_naming_the_languages(broken, capsys):
    assert main(["verify", str(broken), "--variant", "int8"]) == 1
    captured = capsys.readouterr()
    assert "int8: FAIL on this machine" in captured.out
    lines = [l for l in captured.err.splitlines() if "int8 fails on language" in l]
    assert len({l.split("language ")[1].split(":")[0] for l in lines}) >= 12, captured.err
    assert "sentence_cosine_min" in captured.err
    assert main(["verify", str(broken), "--variant", "fp32"]) == 0  # fp32 is untouched


def test_self_check_raises_on_broken_int8(broken):
    with pytest.raises(SelfCheckError, match="variant int8 fails its self-check on this machine .*language"):
        Embedder.load(broken, provider="cpu", variant="int8", self_check=True)
    with pytest.raises(SelfCheckError, match="int8 fails"):
        FillMask.load(broken, provider="cpu", variant="int8", self_check=True)
    assert FillMask.load(broken, provider="cpu").variant == "int8"  # without the check, the evidence is trusted


def test_auto_with_self_check_falls_back_to_fp32_and_says_why(broken, caplog):
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        fm = FillMask.load(broken, provider="cpu", self_check=True)
    assert fm.variant == "fp32"
    assert any("variant int8 fails on this machine" in r.getMessage() and "trying the next" in r.getMessage()
               for r in caplog.records)


# --- bad input -----------------------------------------------------------------------------------


@pytest.fixture()
def copy_of(quantized, tmp_path):
    def make(name: str = "tiny-bert") -> Path:
        dst = tmp_path / name
        shutil.copytree(quantized[name], dst)
        return dst

    return make


def _drop_canary(pkg: Path) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    data.pop("canary")
    (pkg / "manifest.json").write_text(json.dumps(data))
    (pkg / CANARY_FILE).unlink()


def test_package_without_canary_says_so_and_how_to_add_them(copy_of, capsys):
    pkg = copy_of()
    _drop_canary(pkg)  # as an older package, or one made with --no-canary
    assert main(["verify", str(pkg), "--variant", "int8"]) == 2
    err = capsys.readouterr().err
    assert "not verified" in err and "no canary references" in err and f"quantize {pkg} --canary-only" in err
    with pytest.raises(NoCanaryError, match="--canary-only"):
        Embedder.load(pkg, provider="cpu", self_check=True)
    with pytest.raises(NoCanaryError, match="--canary-only"):
        Embedder.load(pkg, provider="cpu", variant="int8", self_check=True)
    assert Embedder.load(pkg, provider="cpu").variant == "int8"  # plain loads are unaffected
    before = sha256_file(pkg / "model.int8.onnx")
    assert main(["quantize", str(pkg), "--canary-only", "--quiet"]) == 0
    assert sha256_file(pkg / "model.int8.onnx") == before and read_manifest(pkg).canary is not None
    assert main(["verify", str(pkg), "--variant", "int8"]) == 0


def test_no_canary_flag_on_quantize(copy_of):
    pkg = copy_of("tiny-encoder")
    _drop_canary(pkg)
    build = ["quantize", str(pkg), "--variants", "int8", "--overwrite", "--no-drift", "--quiet"]
    assert main([*build, "--no-canary"]) == 0
    assert read_manifest(pkg).canary is None
    assert main(build) == 0
    assert read_manifest(pkg).canary is not None  # quantize adds them to a package that lacks them


def test_tampered_canary_fails_its_sha256(copy_of, capsys):
    pkg = copy_of()
    path = pkg / CANARY_FILE
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # one reference value changed
    path.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=f"{CANARY_FILE} does not match its sha256"):
        verify_package(pkg, "int8", "cpu")
    with pytest.raises(PackageError, match="does not match its sha256"):
        Embedder.load(pkg, provider="cpu")
    assert main(["verify", str(pkg)]) == 1
    assert "does not match its sha256" in capsys.readouterr().err


def test_malformed_canary_with_a_matching_hash_is_a_clear_error(copy_of):
    pkg = copy_of()
    (pkg / CANARY_FILE).write_bytes(b"\xff" * 64)
    data = json.loads((pkg / "manifest.json").read_text())
    data["canary"] |= {"sha256": sha256_file(pkg / CANARY_FILE), "size": 64}
    (pkg / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="not a valid canary file .*--canary-only"):
        verify_package(pkg, "int8", "cpu")


def test_canary_files_are_standard_safetensors(copy_of):
    """The runtime's own reader and writer (no fourth runtime dependency) produce what the safetensors library
    reads, tensor for tensor."""
    from safetensors.numpy import load_file

    pkg = copy_of()
    ours, _ = read_safetensors((pkg / CANARY_FILE).read_bytes())
    theirs = load_file(str(pkg / CANARY_FILE))
    assert theirs.keys() == ours.keys() and all(np.array_equal(theirs[k], ours[k]) for k in ours)


def test_warns_when_evidence_came_from_another_kernel_class(copy_of, caplog):
    pkg = copy_of()
    data = json.loads((pkg / "manifest.json").read_text())
    other = "x86-vnni" if detect_cpu().int8_kernel_class != "x86-vnni" else "x86-avx2-u8s8-saturating"
    data["variants"]["int8"]["validation"]["drift"]["machine"]["int8_kernel_class"] = other
    (pkg / "manifest.json").write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        emb = Embedder.load(pkg, provider="cpu")
    assert emb.variant == "int8"
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(other in m and f"polyglot-onnx verify {pkg} --variant int8" in m and "self_check=True" in m
               for m in messages), messages
    assert emb.describe()["cpu"]["int8_kernel_class"] == detect_cpu().int8_kernel_class
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="polyglot_onnx"):
        Embedder.load(pkg, provider="cpu", variant="fp32")
    assert not [r for r in caplog.records if "drift evidence" in r.getMessage()]
