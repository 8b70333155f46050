"""The one place that touches aiortc/aioice internals: RTP tap-in before aiortc's receiver,
direct SRTP write-out, RTCP taps on senders, sender-report bookkeeping, loopback ICE candidates.

Everything here depends on aiortc 1.16 / aioice 0.13 private attributes; `check_aiortc()` verifies
at start-up that they exist, so an upgrade fails loudly instead of silently not forwarding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aioice.ice
from aioice.ice import StunProtocol
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender, clock
from aiortc.rtcdtlstransport import State as DtlsState

log = logging.getLogger(__name__)

RtpTap = Callable[[bytes, int], None]
RtcpTap = Callable[[Any], Awaitable[None]]

_original_get_host_addresses = aioice.ice.get_host_addresses


def check_aiortc() -> None:
    """Fail at start-up if the private attributes this module relies on are gone."""
    missing = [
        f"{cls.__name__}.{name}"
        for cls, name in (
            (RTCDtlsTransport, "_handle_rtp_data"),
            (RTCDtlsTransport, "_send_rtp"),
            (RTCRtpSender, "_handle_rtcp_packet"),
            (RTCRtpReceiver, "_send_rtcp_pli"),
            (RTCRtpReceiver, "_send_rtcp"),
        )
        if not hasattr(cls, name)
    ]
    if not hasattr(aioice.ice, "get_host_addresses"):
        missing.append("aioice.ice.get_host_addresses")
    if missing:
        raise RuntimeError(f"unsupported aiortc/aioice version, missing: {', '.join(missing)}")


def include_loopback_candidates(enabled: bool) -> None:
    """aioice skips 127.0.0.1 when gathering host candidates; a loopback deployment (tests, the
    embedded demo) needs it. Process-wide by nature: aioice reads a module-level function."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = _original_get_host_addresses(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.insert(0, "127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = get_host_addresses if enabled else _original_get_host_addresses


def tap_rtp(dtls: RTCDtlsTransport, on_rtp: RtpTap) -> bool:
    """Route every decrypted RTP packet of this transport to `on_rtp(data, arrival_time_ms)`
    instead of aiortc's parser, router, jitter buffer and decoder. Returns False if already tapped."""
    if getattr(dtls, "_sfu_tapped", False):
        return False

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data, arrival_time_ms)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    dtls._sfu_tapped = True  # type: ignore[attr-defined]
    return True


class RtpWriter:
    """SRTP-protects and sends RTP/RTCP on a DTLS transport, synchronously.

    aiortc's `_send_rtp` is a chain of four coroutines per packet; on the forwarding path we protect
    and `sendto` directly on the nominated ICE pair's socket (one C call each)."""

    __slots__ = ("dtls", "packets", "bytes", "errors")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self.packets = 0
        self.bytes = 0
        self.errors = 0

    @property
    def connected(self) -> bool:
        dtls = self.dtls
        return dtls._state is DtlsState.CONNECTED and 1 in dtls.transport._connection._nominated

    def write(self, data: bytes) -> bool:
        dtls = self.dtls
        if dtls._state is not DtlsState.CONNECTED:
            return False
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return False
        try:
            protected = dtls._tx_srtp.protect(data)
        except Exception:  # pylibsrtp.Error: malformed packet; never raise into the relay
            self.errors += 1
            return False
        protocol = pair.protocol
        if type(protocol) is StunProtocol:
            protocol.transport.sendto(protected, pair.remote_addr)
        else:  # a TURN-relayed pair: its send_data wraps the datagram, so go through it
            asyncio.ensure_future(protocol.send_data(protected, pair.remote_addr))
        self.packets += 1
        self.bytes += len(protected)
        return True

    def write_rtcp(self, data: bytes) -> bool:
        dtls = self.dtls
        if dtls._state is not DtlsState.CONNECTED:
            return False
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return False
        try:
            protected = dtls._tx_srtp.protect_rtcp(data)
        except Exception:
            self.errors += 1
            return False
        asyncio.ensure_future(pair.protocol.send_data(protected, pair.remote_addr))
        return True


def tap_sender_rtcp(sender: RTCRtpSender, on_rtcp: RtcpTap) -> None:
    """Give every RTCP packet that aiortc routes to this sender (RR, NACK, PLI, FIR, REMB for its
    SSRC) to `on_rtcp` first. aiortc's own handler still sees receiver reports (RTT statistics);
    its NACK/PLI handling is skipped: its history is empty, the SFU answers from its own cache."""
    if getattr(sender, "_sfu_tapped", False):
        sender._sfu_on_rtcp = on_rtcp  # type: ignore[attr-defined]
        return
    original = sender._handle_rtcp_packet
    sender._sfu_on_rtcp = on_rtcp  # type: ignore[attr-defined]

    async def handle_rtcp_packet(packet: Any) -> None:
        try:
            await sender._sfu_on_rtcp(packet)  # type: ignore[attr-defined]
        except Exception:
            log.exception("RTCP handler failed (packet dropped)")
        if type(packet).__name__ in ("RtcpRrPacket", "RtcpSrPacket"):
            await original(packet)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
    sender._sfu_tapped = True  # type: ignore[attr-defined]


def feed_sender_report(sender: RTCRtpSender, rtp_timestamp: int, payload_bytes: int) -> None:
    """aiortc's sender builds its RTCP SR from counters that only its encoder loop updates; the SFU
    writes around that loop, so it keeps them current (NTP time of the last packet sent, its RTP
    timestamp, packet and octet counts) or subscribers get an SR mapping RTP 0 to NTP 0."""
    sender._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()  # type: ignore[attr-defined]
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count += payload_bytes  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count += 1  # type: ignore[attr-defined]


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """RFC 4585 §6.3.1 Picture Loss Indication from our receiver to the publisher."""
    try:
        await receiver._send_rtcp_pli(media_ssrc)
    except ConnectionError:
        pass
