"""A network namespace joined to the root namespace by a veth pair (addresses from 198.18.0.0/15),
for tests that shape or cut one participant's link. Cleaned up whatever happens."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

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
