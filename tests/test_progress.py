"""Progress: step lines always (logs), tqdm bars with an ETA only on a terminal; the CLI's --version and -v."""

from __future__ import annotations

import io
import logging

from polyglot_onnx.cli import main
from polyglot_onnx.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_bars_with_eta_and_a_log_gets_plain_lines():
    for stream, bars in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress(total=2, stream=stream, label="export")
        with progress.step("loading"):
            with progress.bar(4, "drift", unit="batch") as bar:
                for _ in range(4):
                    bar.update(1)
        with progress.step("writing"):
            progress.info("package written")
        text = stream.getvalue()
        assert "[1/2] loading ..." in text and "[2/2] writing ..." in text and "package written" in text
        assert ("drift" in text and "batch" in text and "<" in text) is bars  # tqdm's "elapsed<remaining"
        assert ("\r" in text) is bars


def test_nested_progress_indents_and_draws_no_overall_bar():
    stream = Terminal()
    progress = Progress(total=1, stream=stream, nested=True)
    with progress.step("drift check"):
        pass
    assert stream.getvalue().startswith("      [1/1] drift check ...") and "\r" not in stream.getvalue()


def test_version_and_log_level(capsys, tiny_models):
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("polyglot-onnx ") and "onnxruntime" in out and "python" in out
    logger = logging.getLogger("polyglot_onnx")
    before = list(logger.handlers)
    try:
        assert main(["-v", "info", str(tiny_models["tiny-bert"].package)]) == 0
        assert logger.level == logging.INFO and len(logger.handlers) == len(before) + 1
    finally:
        for handler in logger.handlers[len(before):]:
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
