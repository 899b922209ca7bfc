"""Start a server process and wait until it answers its health route; stop it with SIGTERM.

One home for what the tests (tests/serve_helpers.py) and the benchmarks (serve_load.py, hostile_clients.py)
do to a real server process: theirs and ours (TEI, Infinity) alike. Standard library only, so a benchmark
environment without httpx can use it too.
"""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


class ServerStartError(RuntimeError):
    """The process exited, or did not answer its health route in time; the message ends with its log."""


def _log_tail(log: Path, limit: int = 2000) -> str:
    try:
        return log.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # a localhost URL this module was given
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_process(cmd: Sequence[str], health_url: str, log: Path, wait: float = 180.0,
                  env: Mapping[str, str] | None = None, poll: float = 0.1) -> subprocess.Popen[bytes]:
    """Runs ``cmd`` with its output in ``log``; returns once ``health_url`` answers 200."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=dict(env) if env else None)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"{cmd[0]} exited with {proc.returncode}; its log {log}:\n{_log_tail(log)}")
        if healthy(health_url):
            return proc
        time.sleep(poll)
    stop_process(proc)
    raise ServerStartError(f"{' '.join(cmd)} did not answer {health_url} in {wait:.0f} s; its log {log}:\n"
                           f"{_log_tail(log)}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (a graceful drain), then SIGKILL after ``timeout``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return int(proc.returncode)
