"""Open a package directory: manifest, integrity, variant choice."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from polyglot_onnx.errors import InputError, PackageError
from polyglot_onnx.manifest import (
    Manifest,
    Variant,
    read_manifest,
    sha256_file,
    verify_files,
)

log = logging.getLogger("polyglot_onnx")

# variant="auto": best first per provider; fp32 is the fallback every package has. A variant whose
# recorded drift gate failed is skipped: auto never picks a variant known to be inaccurate.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {"cpu": ("int8", "int8-static", "fp32"), "cuda": ("fp16", "fp32")}
# Variants that must not run on a provider, with the advice to give instead.
REFUSED: dict[tuple[str, str], str] = {
    ("fp16", "cpu"): "fp16 is a CUDA variant and is slow or unsupported on CPU: use variant='int8' or 'fp32' there",
}


@dataclass(frozen=True)
class OpenedPackage:
    root: Path
    manifest: Manifest
    variant: Variant

    @property
    def graph_path(self) -> Path:
        return self.root / self.variant.graph_file

    @property
    def tokenizer_path(self) -> Path:
        return self.root / self.manifest.tokenizer.file


def choose_variant(manifest: Manifest, requested: str, provider: str, refuse_unfit: bool = True) -> Variant:
    """``refuse_unfit=False`` lets the drift checker run an fp16 graph on CPU (slow, but exact)."""
    available = manifest.variants
    if requested == "auto":
        for name in AUTO_PREFERENCE[provider]:
            if name not in available:
                continue
            if available[name].validation.get("drift", {}).get("passed") is False and name != "fp32":
                log.warning("variant %s failed its drift gate (see 'polyglot-onnx info'); not using it", name)
                continue
            if name != AUTO_PREFERENCE[provider][0]:
                log.info("package has no usable %s variant; using %s", AUTO_PREFERENCE[provider][0], name)
            return available[name]
        raise PackageError(f"package has none of the variants {AUTO_PREFERENCE[provider]}: re-export it")
    if requested not in available:
        raise InputError(f"variant {requested!r} is not in this package: it has {', '.join(available)}")
    if refuse_unfit and (requested, provider) in REFUSED:
        raise InputError(REFUSED[(requested, provider)])
    return available[requested]


def open_package(
    directory: str | Path, variant: str, provider: str, verify: bool = True, refuse_unfit: bool = True
) -> OpenedPackage:
    """Read the manifest, pick the variant and check every file it needs against its sha256."""
    root = Path(directory).expanduser()
    manifest = read_manifest(root)
    chosen = choose_variant(manifest, variant, provider, refuse_unfit)
    tokenizer = root / manifest.tokenizer.file
    if not tokenizer.is_file():
        raise PackageError(f"{manifest.tokenizer.file} is missing from {root}: re-export the package")
    if verify:
        verify_files(root, chosen.files)
        if manifest.tokenizer_sha256 and sha256_file(tokenizer) != manifest.tokenizer_sha256:
            raise PackageError(
                f"{manifest.tokenizer.file} does not match its sha256 in manifest.json: the tokenizer was "
                "replaced; restore it or re-export the package"
            )
    return OpenedPackage(root=root, manifest=manifest, variant=chosen)
