"""What FillMask and Embedder share: loading a package (optionally self-checked) and saying what runs.

Kept apart from runtime/engine.py so that the engine, which the self-check and the canary code use, imports
neither of them: loading with ``self_check`` is the only place the three meet.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from polyglot_onnx import manifest as mf
from polyglot_onnx.runtime.engine import Engine, load_engine, package_dir

if TYPE_CHECKING:  # annotations only: typing.Self is 3.11+, and the runtime supports 3.10
    from typing_extensions import Self


class EngineClient:
    """What FillMask and Embedder share: loading a package and saying what actually runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        provider: str = "auto",
        variant: str = "auto",
        threads: int | None = None,
        verify: bool = True,
        self_check: bool = False,
        memory_arena: bool = True,
        **options: Any,
    ) -> Self:
        """Open ``directory``; ``verify`` checks each file's sha256 (set False to skip on trusted disks).

        ``self_check`` re-runs the variant on the package's canary texts and raises SelfCheckError if it
        misses its drift gate on this machine; with variant="auto" the next variant that passes is used.
        ``memory_arena=False`` gives memory back after every call (long-running servers; see create_session).
        ``options`` go to the class (FillMask: ``limits=FillMaskLimits(...)``).
        """
        directory = package_dir(directory, f"{cls.__name__}.load")
        if self_check:
            from polyglot_onnx.runtime.selfcheck import load_checked

            return cls(load_checked(directory, provider, variant, threads, verify, memory_arena), **options)
        return cls(load_engine(directory, provider, variant, threads, verify, memory_arena=memory_arena), **options)

    @property
    def model(self) -> mf.ModelInfo:
        """What the package says about its model (hidden size, pooling, maximum length, prompts...)."""
        return self.engine.manifest.model

    @property
    def provider(self) -> str:
        return self.engine.provider

    @property
    def variant(self) -> str:
        return self.engine.variant

    def describe(self) -> dict[str, Any]:
        return self.engine.describe()
