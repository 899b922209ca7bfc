"""Start a real ``polyglot-onnx serve`` process on a free localhost port, and stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from polyglot_onnx.serve.launch import start_process, stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        return stop_process(self.proc, timeout)


def start_server(*args: str, env: dict[str, str] | None = None, wait: float = 120.0) -> Server:
    """The server as users start it; returns once /health says ready (fails with its log if it dies)."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "polyglot_onnx", "serve", *args, "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    proc = start_process(cmd, f"{url}/health", log, wait=wait, env={**os.environ, **(env or {})})
    return Server(proc, url, log)
