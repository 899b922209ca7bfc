"""Evaluation text for the drift checker: the built-in multilingual corpus or a user file.

The built-in corpus (polyglot_onnx/data/eval_corpus.jsonl) is separate from the text the test
tokenizers are trained on, so the drift figures are not measured on training text.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from polyglot_onnx.errors import InputError

BUILTIN = "builtin"
UNKNOWN = "und"


@dataclass(frozen=True)
class Sample:
    text: str
    language: str = UNKNOWN
    script: str = UNKNOWN


@dataclass(frozen=True)
class Corpus:
    name: str
    samples: list[Sample]

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "texts": len(self.samples),
            "languages": len({s.language for s in self.samples}),
            "scripts": len({s.script for s in self.samples}),
        }

    def subset(self, per_language: int, minimum: int = 0) -> Corpus:
        """The first ``per_language`` texts of each language: quick evaluations keep every language.

        ``minimum`` tops it up in corpus order (untagged corpora are one language, 'und').
        """
        seen: Counter[str] = Counter()
        chosen = []
        for sample in self.samples:
            if seen[sample.language] < per_language:
                seen[sample.language] += 1
                chosen.append(sample)
        if len(chosen) < minimum:
            extra = [s for s in self.samples if s not in chosen]
            chosen += extra[: minimum - len(chosen)]
        return Corpus(f"{self.name} (first {per_language} per language)", chosen)


def _parse_line(line: str, where: str) -> Sample:
    if not line.lstrip().startswith("{"):
        return Sample(line.strip())
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where} is not valid JSON ({err.msg}): write one text per line or JSONL lines") from err
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise InputError(f'{where} has no "text" string: write lines like {{"text": "...", "language": "fra"}}')
    return Sample(text.strip(), str(data.get("language", UNKNOWN)), str(data.get("script", UNKNOWN)))


def parse_corpus(raw: bytes, name: str) -> Corpus:
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"corpus {name} is not UTF-8 (byte {err.start}): convert it, e.g. iconv -t UTF-8, and retry"
        ) from err
    samples = [_parse_line(line, f"{name} line {i}") for i, line in enumerate(content.splitlines(), 1) if line.strip()]
    if not samples:
        raise InputError(f"corpus {name} has no text: write one text (or JSON object) per line")
    return Corpus(name, samples)


def load_corpus(path: str | Path | None = None) -> Corpus:
    """``None`` or 'builtin': the project's corpus; else a text or JSONL file."""
    if path is None or str(path) == BUILTIN:
        raw = resources.files("polyglot_onnx").joinpath("data/eval_corpus.jsonl").read_bytes()
        return parse_corpus(raw, "builtin")
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"corpus file {file} does not exist: pass a text or JSONL file, or omit --corpus")
    return parse_corpus(file.read_bytes(), str(file))
