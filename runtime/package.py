"""Open a package directory: manifest, confinement, integrity, variant choice.

Every file loading reads is listed by ``Manifest.package_files`` and opened through
``polyglot_onnx.package_files`` (confined to the directory, each file once, its size checked before
it is read, hashed under verify); the graph's own external-data references are read from its bytes
(runtime/graph_refs.py) and must be files the variant lists, before onnxruntime is handed the graph.

onnxruntime is handed the graph's path, not bytes read here: loaded from bytes it still opens the
external data the graph names (relative to the working directory, or to a folder option), so the
scan would be needed all the same, and a GB-sized graph would be held twice in memory. The scan
instead refuses every encoding that protobuf could read differently from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from polyglot_onnx.errors import InputError, PackageError
from polyglot_onnx.manifest import FileEntry, Manifest, Variant, read_manifest
from polyglot_onnx.package_files import check_distinct, check_file, confined_path, path_problem, read_file
from polyglot_onnx.runtime.graph_refs import graph_refs

log = logging.getLogger("polyglot_onnx")


def auto_order(manifest: Manifest, provider: str) -> list[str]:
    """The variants variant="auto" tries on ``provider``, best first, from what each variant's manifest entry
    says it is (``Variant.described()``: made for this provider, ranked): fp32, which runs anywhere, last.

    A variant whose recorded drift gate failed, or that has no drift evidence at all (built with --no-drift,
    or its drift run was interrupted), is then skipped with a warning: auto never picks an unchecked variant.
    """
    ranked = [(facts.auto_rank, name) for name, v in manifest.variants.items()
              if (facts := v.described()).auto_rank is not None and facts.runs_on(provider)]
    return [name for _, name in sorted(ranked)]


def _provider_label(provider: str) -> str:
    return {"cpu": "CPU", "cuda": "CUDA"}.get(provider, provider)


@dataclass(frozen=True)
class OpenedPackage:
    root: Path
    manifest: Manifest
    variant: Variant
    graph_path: Path  # confined (symlinks resolved) and, when verified, hashed
    tokenizer_json: bytes  # read once: the bytes hashed are the bytes parsed
    verified: bool  # False only when the caller passed verify=False

    def read_bytes(self, entry: FileEntry, label: str) -> bytes:
        """Another package file (e.g. the canary references), confined and checked like the rest."""
        return read_file(self.root, entry.package_file(label), self.verified)


def has_own_evidence(variant: Variant, provider: str = "cpu") -> bool:
    """Drift evidence for ``provider`` (its own, else the CPU's) measured on this very graph (evidence records the
    graph's sha256)."""
    _, drift = variant.evidence_for(provider)
    if drift is None or "passed" not in drift:
        return False
    return bool(drift.get("graph_sha256", variant.files[0].sha256) == variant.files[0].sha256)


def choose_variant(manifest: Manifest, requested: str, provider: str, refuse_unfit: bool = True) -> Variant:
    """``refuse_unfit=False`` lets the drift checker run an fp16 graph on CPU (slow, but exact)."""
    available = manifest.variants
    if requested == "auto":
        order = auto_order(manifest, provider)
        for name in order:
            if name != "fp32" and not has_own_evidence(available[name], provider):
                log.warning(
                    "variant %s has no drift evidence (quantize ran with --no-drift or was interrupted); not using "
                    "it: check it with 'polyglot-onnx drift DIR --variants %s' or ask for it by name", name, name
                )
                continue
            measured_on, evidence = available[name].evidence_for(provider)
            if name != "fp32" and evidence is not None and evidence.get("passed") is False:
                log.warning("variant %s failed its drift gate on %s (see 'polyglot-onnx info'); not using it", name,
                            measured_on)
                continue
            if name != "fp32" and measured_on != provider:
                log.info("variant %s has drift evidence from %s only; 'polyglot-onnx drift DIR --provider %s' "
                         "measures it where it runs", name, measured_on, provider)
            if name != order[0]:
                log.info("package has no usable %s variant; using %s", order[0], name)
            return available[name]
        raise PackageError(f"package has no variant that runs on {provider} ({', '.join(available)}): re-export it")
    if requested not in available:
        raise InputError(f"variant {requested!r} is not in this package: it has {', '.join(available)}")
    facts = available[requested].described()
    if refuse_unfit and not facts.runs_on(provider):
        fit = " or ".join(f"'{n}'" for n in auto_order(manifest, provider)) or "'auto'"
        raise InputError(
            f"{requested} is a {_provider_label(facts.provider or provider)} variant and is slow or unsupported on "
            f"{_provider_label(provider)}: use variant={fit} there"
        )
    return available[requested]


def open_package(
    directory: str | Path, variant: str, provider: str, verify: bool = True, refuse_unfit: bool = True
) -> OpenedPackage:
    """Read the manifest, pick the variant, and confine (always) and verify (unless told not to) its files."""
    root = Path(directory).expanduser()
    manifest = read_manifest(root)
    chosen = choose_variant(manifest, variant, provider, refuse_unfit)
    tokenizer_json = b""
    files = manifest.package_files(chosen)
    check_distinct(root, files)  # before any hashing: one file behind two names is refused
    for entry in files:
        if entry.label == "tokenizer.file":
            tokenizer_json = read_file(root, entry, verify)
        else:
            check_file(root, entry, verify)
    graph = confined_path(root, chosen.graph_file, f"variants.{chosen.name}.files[0]")
    check_graph_refs(root, chosen, graph)
    return OpenedPackage(root, manifest, chosen, graph, tokenizer_json, verify)


def check_graph_refs(root: Path, variant: Variant, graph: Path) -> None:
    """The graph may make onnxruntime open only files its variant lists (already confined and checked)."""
    label = f"variants.{variant.name}.files[0] ({variant.graph_file})"
    if graph.suffix.lower() == ".ort":  # onnxruntime reads it as its own flatbuffer format, not as ONNX protobuf
        raise PackageError(
            f"graph {label} is named '{graph.name}', which onnxruntime reads as an ORT-format model that this check "
            "cannot read: a package holds .onnx graphs; re-export the package"
        )
    refs = graph_refs(graph, label)
    if refs.file_ops:
        raise PackageError(
            f"graph {label} has {', '.join(sorted(refs.file_ops))} nodes, which make onnxruntime open files "
            "the manifest does not list: re-export the package"
        )
    listed = {
        confined_path(root, f.path, f"variants.{variant.name}.files[{i}]") for i, f in enumerate(variant.files) if i
    }
    for location in refs.locations:
        inside = path_problem(location) is None and (graph.parent / location).resolve() in listed
        if not inside:
            raise PackageError(
                f"graph {label} reads external data from {location[:80]!r}, which is not one of the files "
                f"variants.{variant.name}.files lists: re-export the package"
            )
