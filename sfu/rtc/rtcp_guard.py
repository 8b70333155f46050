"""Containment of RTCP that aiortc's transport does not survive: aiortc catches only ValueError
around parsing and routing a compound packet, so anything else a peer can provoke (a REMB whose
SSRC count lies makes `unpack_remb_fci` raise struct.error) would end that peer's DTLS transport.
The guard counts and drops such a packet instead, and counts the compounds aiortc itself drops
as unparseable (lengths or counts that lie), which it does without a trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCDtlsTransport
from aiortc.rtp import RtcpPacket

from sfu.media.counters import COUNTERS

log = logging.getLogger(__name__)

_original: Callable[[Any, bytes], Awaitable[None]] | None = None
_original_parse: Callable[[bytes], list[Any]] | None = None


async def _guarded_handle_rtcp_data(self: RTCDtlsTransport, data: bytes) -> None:
    assert _original is not None
    try:
        await _original(self, data)
    except ConnectionError:
        raise  # the transport closing: aiortc's own ending
    except Exception as exc:
        COUNTERS.rtcp_malformed += 1
        log.debug("RTCP packet dropped: %r", exc)


def _counting_parse(data: bytes) -> list[Any]:
    assert _original_parse is not None
    try:
        return _original_parse(data)
    except ValueError:  # the transport catches it and drops the compound
        COUNTERS.rtcp_malformed += 1
        raise


def install() -> None:
    """Process-wide and idempotent (aiortc dispatches through the class attributes)."""
    global _original, _original_parse
    if _original is None:
        _original = RTCDtlsTransport._handle_rtcp_data
        RTCDtlsTransport._handle_rtcp_data = _guarded_handle_rtcp_data  # type: ignore[method-assign]
    if _original_parse is None:
        _original_parse = RtcpPacket.parse
        RtcpPacket.parse = staticmethod(_counting_parse)  # type: ignore[method-assign,assignment]
