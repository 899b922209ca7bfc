"""The CLI's own input and output edges: argv and stdin encodings, closed and broken stdout,
and the free-form evidence 'info' prints.

Every encoding problem is a one-line error (never a traceback), and a reader that goes away
(``| head``) ends the command quietly with the shell's broken-pipe status, as other Unix tools do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from polyglot_onnx import manifest as mf
from polyglot_onnx.errors import InputError

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool killed by a closed pipe


def _not_utf8(where: str, data: bytes, err: UnicodeDecodeError) -> InputError:
    return InputError(
        f"{where} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): convert it first, "
        "e.g. iconv -f latin1 -t utf-8"
    )


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(where, data, err) from err


def check_argv_text(texts: list[str]) -> None:
    """Python keeps argv bytes that are not UTF-8 as lone surrogates (surrogateescape): refuse them here."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            code = ord(text[err.start])
            byte = f" (byte 0x{code - 0xDC00:02x})" if 0xDC80 <= code <= 0xDCFF else ""
            raise InputError(f"text argument {i + 1} is not valid UTF-8{byte}: pass UTF-8 text") from err


def read_texts(args: argparse.Namespace) -> list[str]:
    """Texts from the command line, or one per line from --file (- for stdin), strictly UTF-8."""
    if not args.file:
        texts = list(args.texts)
        check_argv_text(texts)
        return texts
    if args.file == "-":
        if sys.stdin is None:
            raise InputError("--file - reads stdin, but stdin is closed: pipe the texts in or pass --file FILE")
        raw, where = sys.stdin.buffer.read(), "stdin"
    else:
        raw, where = Path(args.file).read_bytes(), f"--file {args.file}"
    return [line for line in decode_utf8(raw, where).splitlines() if line.strip()]


def stdout_problem() -> str | None:
    """Why results could not be written to stdout, checked before any work starts."""
    if sys.stdout is None:
        return "stdout is closed: redirect it to a file or a pipe"
    return None


def evidence_lines(v: Any) -> list[str]:
    """The validation and drift evidence of one variant, for 'info'."""
    val, lines = v.validation, []
    if val.get("max_abs_diff"):
        diffs = ", ".join(f"{k} {x:.1e}" for k, x in val["max_abs_diff"].items())
        lines.append(f"    validated against {val.get('reference')}: max abs diff {diffs}")
    if v.extra.get("size_ratio_to_fp32"):
        lines.append(f"    {v.extra.get('method', '')}; {v.extra['size_ratio_to_fp32']:.0%} of fp32 bytes")
    for provider in mf.DRIFT_PROVIDERS:
        drift = v.drift(provider)
        if not drift:
            continue
        o = drift["overall"]
        fill = f", top-1 {o['top1_agreement']:.3f}" if "top1_agreement" in o else ""
        lines.append(f"    drift on {provider} vs {drift['reference']} ({drift['corpus']['texts']} texts, "
                     f"{drift['corpus']['languages']} languages): {'PASS' if drift['passed'] else 'FAIL'}, "
                     f"cos p5 {o['sentence_cosine_p5']:.5f}{fill}")
    return lines


def silence_stdout() -> None:
    """Point fd 1 at /dev/null so Python's exit-time flush cannot fail again and print a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):
        pass


def broken_pipe() -> int:
    """The reader went away: stop writing, quietly, with the shell's broken-pipe status."""
    silence_stdout()
    return EXIT_BROKEN_PIPE
