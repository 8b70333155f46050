"""Containment of RTCP that aiortc's transport does not survive: aiortc catches only ValueError
around parsing and routing a compound packet, so anything else a peer can provoke (a REMB whose
SSRC count lies makes `unpack_remb_fci` raise struct.error) would end that peer's DTLS transport.
The guard counts and drops such a packet instead."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCDtlsTransport

from sfu.media.counters import COUNTERS

log = logging.getLogger(__name__)

_original: Callable[[Any, bytes], Awaitable[None]] | None = None


async def _guarded_handle_rtcp_data(self: RTCDtlsTransport, data: bytes) -> None:
    assert _original is not None
    try:
        await _original(self, data)
    except ConnectionError:
        raise  # the transport closing: aiortc's own ending
    except Exception as exc:
        COUNTERS.rtcp_malformed += 1
        log.debug("RTCP packet dropped: %r", exc)


def install() -> None:
    """Process-wide and idempotent (aiortc dispatches through the class attribute)."""
    global _original
    if _original is None:
        _original = RTCDtlsTransport._handle_rtcp_data
        RTCDtlsTransport._handle_rtcp_data = _guarded_handle_rtcp_data  # type: ignore[method-assign]
