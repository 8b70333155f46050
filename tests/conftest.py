"""Shared fixtures: a real `sfu serve` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A `sfu serve` child process; `log` collects its stderr lines."""

    proc: subprocess.Popen[str]
    port: int
    host: str = "127.0.0.1"
    log_path: Path = field(default_factory=Path)
    scheme: str = "http"  # "https" when started with a TLS certificate

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{self.scheme.replace('http', 'ws')}://{self.host}:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


def start_server(tmp_path: Path, *extra_args: str, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> ServerProcess:
    """`tls`: the server was given a certificate; health is polled over HTTPS with this context."""
    port = free_port()
    log_path = tmp_path / f"sfu-{port}.log"
    logf = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "sfu", "serve", "--host", host, "--port", str(port), "--debug-endpoints",
         # SIGTERM drains: keep within stop()'s 10 s; a dropped socket is held 2 s for a resume (tests that
         # resume pass their own --resume-grace: the last flag wins)
         "--drain-timeout", "3", "--resume-grace", "2", *extra_args],
        cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )
    server = ServerProcess(proc=proc, port=port, host=host, log_path=log_path, scheme="https" if tls else "http")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sfu serve exited with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=1, context=tls) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"sfu serve did not become healthy:\n{server.log()}")


@pytest.fixture
def sfu_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server per test, stopped (SIGTERM) and reaped afterwards."""
    server = start_server(tmp_path)
    try:
        yield server
    finally:
        code = server.stop()
        assert code == 0, f"server exited with {code}:\n{server.log()[-4000:]}"
