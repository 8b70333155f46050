"""Where the server's media sockets live: the local addresses its ICE agents bind (instead of
every host address) and the UDP port range they take ports from.

aioice binds each host candidate with `loop.create_datagram_endpoint(local_addr=(address, 0))` in
`Connection.get_component_candidates` (aioice 0.13). This adapter wraps that one method: it
narrows the address list, and while it runs (a context variable marks the gathering task) a
wrapper of the loop's `create_datagram_endpoint` turns port 0 into the next free port of the
range. Nothing else in the process is affected: other binds run outside that context, and binds
with a port or a remote address pass through."""

from __future__ import annotations

import asyncio
import errno
import logging
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aioice.ice

log = logging.getLogger(__name__)

_original_get_component_candidates = aioice.ice.Connection.get_component_candidates


@dataclass
class MediaBinding:
    addresses: list[str] = field(default_factory=list)  # empty: every host address aioice finds
    port_min: int = 0  # 0: ephemeral ports
    port_max: int = 0
    _next_port: int = 0

    def ports(self) -> list[int]:
        """Every port of the range, starting after the last one handed out (sockets in use fail
        to bind and are skipped)."""
        span = self.port_max - self.port_min + 1
        start = (self._next_port - self.port_min) % span
        return [self.port_min + (start + i) % span for i in range(span)]


_binding = MediaBinding()
_gathering: ContextVar[MediaBinding | None] = ContextVar("sfu_media_binding", default=None)


def configure(addresses: list[str], port_min: int = 0, port_max: int = 0) -> None:
    """Process-wide: every server peer connection gathers with these. No addresses and no range
    restores aioice's behaviour."""
    global _binding
    _binding = MediaBinding(list(addresses), port_min, port_max, port_min)
    if addresses or port_min:
        aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]
    else:
        aioice.ice.Connection.get_component_candidates = (  # type: ignore[method-assign]
            _original_get_component_candidates)


async def _get_component_candidates(self: aioice.ice.Connection, component: int, addresses: list[str],
                                    timeout: int = 5) -> list[aioice.ice.Candidate]:
    binding = _binding
    if binding.addresses and addresses:  # empty with the relay-only policy: keep it empty
        addresses = list(binding.addresses)
    if not binding.port_min:
        return await _original_get_component_candidates(self, component, addresses, timeout)
    _wrap_loop(asyncio.get_running_loop())
    token = _gathering.set(binding)
    try:
        return await _original_get_component_candidates(self, component, addresses, timeout)
    finally:
        _gathering.reset(token)


def _wrap_loop(loop: asyncio.AbstractEventLoop) -> None:
    if getattr(loop, "_sfu_media_ports", False):
        return
    original = loop.create_datagram_endpoint

    async def create_datagram_endpoint(protocol_factory: Any, local_addr: Any = None,
                                       remote_addr: Any = None, **kwargs: Any) -> Any:
        binding = _gathering.get()
        if binding is None or local_addr is None or local_addr[1] != 0 or remote_addr is not None:
            return await original(protocol_factory, local_addr=local_addr, remote_addr=remote_addr, **kwargs)
        for port in binding.ports():
            try:
                result = await original(protocol_factory, local_addr=(local_addr[0], port), **kwargs)
            except OSError as exc:
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            binding._next_port = port + 1
            return result
        log.warning("no free UDP port in %d-%d on %s", binding.port_min, binding.port_max, local_addr[0])
        raise OSError(errno.EADDRINUSE, f"no free UDP port in {binding.port_min}-{binding.port_max}")

    loop.create_datagram_endpoint = create_datagram_endpoint  # type: ignore[method-assign]
    loop._sfu_media_ports = True  # type: ignore[attr-defined]
