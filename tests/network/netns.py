"""A network namespace joined to the root namespace by a veth pair (addresses from 198.18.0.0/15),
for tests that shape or cut one participant's link. Cleaned up whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def veth_namespace(prefix: str, host_address: str, ns_address: str) -> Iterator[tuple[str, str]]:
    """Yield (namespace, host-side interface); /30 addresses on both ends. Skips without root."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    namespace = f"{prefix}{os.getpid() % 100000}"
    host_if, ns_if = f"{namespace}h", f"{namespace}n"
    try:
        run("ip", "netns", "add", namespace)
        run("ip", "-n", namespace, "link", "set", "lo", "up")
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", namespace)
        run("ip", "addr", "add", f"{host_address}/30", "dev", host_if)
        run("ip", "-n", namespace, "addr", "add", f"{ns_address}/30", "dev", ns_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", namespace, "link", "set", ns_if, "up")
        yield namespace, host_if
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


class NamespaceProcess:
    """`python -m MODULE ARGS...` run inside a namespace, and the JSON lines it prints (one per
    status report); `last` is the newest, or `empty` before the first."""

    def __init__(self, namespace: str, module: str, *args: str, empty: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", module, *args],
            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: list[dict[str, Any]] = []
        self._empty = empty
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                continue

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else self._empty

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
