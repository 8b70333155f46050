"""Per-connection hooks into aiortc internals: RTP tap-in before aiortc's receiver, RTCP taps on
senders, sender-report bookkeeping. The send side (direct SRTP write-out) is `sfu.rtc.writer`;
process-wide hooks (and the start-up check that the private attributes these rely on still exist)
are in `sfu.rtc.process_hooks`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import State as DtlsState

from sfu.media import fastpath
from sfu.media.counters import COUNTERS
from sfu.rtc.writer import SRTP_FFI, SRTP_OK, SRTP_UNPROTECT

log = logging.getLogger(__name__)

RtpTap = Callable[[bytes, int], None]
RtcpTap = Callable[[Any], Awaitable[None]]

_CONNECTED = DtlsState.CONNECTED
_NTP_EPOCH_OFFSET_S = 2208988800  # 1900-01-01 → 1970-01-01 (RFC 5905)
_NTP_EPOCH_OFFSET_MS = _NTP_EPOCH_OFFSET_S * 1000
# Distinct SRTCP sender SSRCs accepted per connection. An aiortc peer sends RTCP from one SSRC per
# receiver and per sender (up to 256 subscriptions + 8 tracks by default), browsers from a handful.
MAX_RTCP_SSRCS = 1024


def tap_rtp(dtls: RTCDtlsTransport, on_rtp: RtpTap) -> bool:
    """Route every decrypted RTP packet of this transport to `on_rtp(data, arrival_time_ms)`
    instead of aiortc's parser, router, jitter buffer and decoder. Returns False if already tapped.

    Two taps, same handler:
    - synchronous (the hot one): each of the ICE connection's UDP protocols hands SRTP datagrams
      (first byte 128-191, RFC 7983) that are not RTCP straight to `SrtpTap`, which unprotects them
      with the DTLS transport's receive session and calls `on_rtp`. This skips aioice's STUN parse
      attempt, its queue, and aiortc's receive coroutines (one wake-up per datagram);
    - aiortc's `_handle_rtp_data` is replaced too, for the packets that still take aiortc's path
      (before the DTLS handshake completed, or datagrams already queued when the tap went in).
    STUN (ICE checks, consent), DTLS and SRTCP keep aiortc's path unchanged."""
    if getattr(dtls, "_sfu_tapped", False):
        tap = getattr(dtls, "_sfu_srtp_tap", None)
        if tap is not None:
            tap.attach()  # protocols gathered since the first tap
        return False

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data, arrival_time_ms)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    dtls._sfu_tapped = True  # type: ignore[attr-defined]
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    if connection is not None and hasattr(connection, "_protocols") and hasattr(connection, "data_received"):
        tap = SrtpTap(dtls, connection, on_rtp)
        dtls._sfu_srtp_tap = tap  # type: ignore[attr-defined]
        tap.attach()
    return True


class SrtpTap:
    """The synchronous receive path of one DTLS transport (see `tap_rtp`)."""

    __slots__ = ("dtls", "connection", "on_rtp", "packets", "errors", "_protocols", "_session", "_unprotect",
                 "_rtcp_ssrcs")

    def __init__(self, dtls: RTCDtlsTransport, connection: Any, on_rtp: RtpTap) -> None:
        self.dtls = dtls
        self.connection = connection
        self.on_rtp = on_rtp
        self.packets = 0
        self.errors = 0
        self._protocols: list[Any] = []  # the protocols whose datagram_received we wrapped
        self._session: Any = None  # the receive session `_unprotect` was built for
        self._unprotect: Callable[[bytes], bytes | None] | None = None
        self._rtcp_ssrcs: set[bytes] = set()  # sender SSRCs of the SRTCP this peer sent (in clear, RFC 3711)

    def attach(self) -> None:
        """Wrap `datagram_received` of every UDP protocol of the connection not wrapped yet
        (per instance: asyncio and uvloop look the handler up on the protocol per datagram)."""
        for protocol in list(self.connection._protocols):
            if type(protocol) is not StunProtocol or any(p is protocol for p in self._protocols):
                continue  # TURN-relayed protocols keep aioice's path
            protocol.datagram_received = self._wrap(  # type: ignore[method-assign,assignment]
                protocol.datagram_received, protocol)
            self._protocols.append(protocol)

    def _wrap(self, original: Callable[[Any, Any], None], protocol: Any) -> Callable[[Any, Any], None]:
        dtls = self.dtls
        receive = self.receive
        if fastpath.PROFILING:  # the kernel's receive timestamp of each RTP datagram, for the delay histogram
            sock = protocol.transport.get_extra_info("socket") if protocol.transport is not None else None
            if sock is not None:
                fd, note_arrival, receive_now = sock.fileno(), fastpath.note_arrival, receive

                def receive(data: Any) -> None:
                    note_arrival(fd)
                    receive_now(data)

        def datagram_received(data: Any, addr: Any) -> None:
            # RFC 7983: 128-191 is RTP/RTCP; RTCP packet types are 192-208 (aiortc's is_rtcp). The
            # SRTP receive session exists once the transport is CONNECTED (aiortc keys it first).
            if len(data) > 11 and 127 < data[0] < 192 and dtls._state is _CONNECTED:
                if not 191 < data[1] < 209:
                    receive(data)
                elif self._rtcp_allowed(data):
                    original(data, addr)  # SRTCP: aiortc's path
            else:
                original(data, addr)

        return datagram_received

    def _rtcp_allowed(self, data: bytes) -> bool:
        """libsrtp keeps a stream for every SSRC it authenticates and searches them linearly for
        each packet: SRTCP from ever new sender SSRCs would slow down every later packet of this
        peer. Beyond MAX_RTCP_SSRCS senders, a new one is dropped before decryption."""
        ssrc = data[4:8]
        seen = self._rtcp_ssrcs
        if ssrc in seen:
            return True
        if len(seen) >= MAX_RTCP_SSRCS:
            COUNTERS.rtcp_ssrc_refused += 1
            return False
        seen.add(ssrc)
        return True

    def receive(self, data: bytes) -> None:
        dtls = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += len(data)  # type: ignore[attr-defined]  # getStats
        dtls._RTCDtlsTransport__rx_packets += 1  # type: ignore[attr-defined]
        unprotect = self._unprotect
        if unprotect is None or dtls._rx_srtp is not self._session:
            unprotect = self._bind_unprotect()
        plain = unprotect(data)
        if plain is None:  # replayed or not authentic: aiortc drops it too
            self.errors += 1
            return
        self.packets += 1
        try:
            self.on_rtp(plain, int(time.time() * 1000) + _NTP_EPOCH_OFFSET_MS)  # aiortc's clock.current_ms
        except Exception:  # never into the event loop's datagram callback
            self.errors += 1
            log.exception("RTP handler failed (packet dropped)")

    def _bind_unprotect(self) -> Callable[[bytes], bytes | None]:
        """SRTP unprotect on the receive session, in its own C buffer (pylibsrtp's `unprotect` minus
        its per-call allocation and checks); the public API if pylibsrtp's internals differ."""
        session = self._session = self.dtls._rx_srtp
        try:
            if SRTP_UNPROTECT is None or SRTP_FFI is None:
                raise AttributeError("no pylibsrtp binding")
            srtp, cdata, buffer = session._srtp[0], session._cdata, session._buffer
            limit = len(cdata)
            length = SRTP_FFI.new("int *")
            srtp_unprotect = SRTP_UNPROTECT

            def unprotect(data: bytes) -> bytes | None:
                size = len(data)
                if size > limit:
                    return None
                buffer[0:size] = data
                length[0] = size
                if srtp_unprotect(srtp, cdata, length) != SRTP_OK:
                    return None
                return bytes(buffer[0:length[0]])

        except (AttributeError, TypeError):  # pragma: no cover - another pylibsrtp

            def unprotect(data: bytes) -> bytes | None:
                try:
                    return session.unprotect(data)  # type: ignore[no-any-return]
                except pylibsrtp.Error:
                    return None

        self._unprotect = unprotect
        return unprotect


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


def _feed_sender_report(sender: RTCRtpSender, rtp_timestamp: int, payload_bytes: int, packets: int = 1) -> None:
    """aiortc's sender builds its RTCP SR from counters that only its encoder loop updates; the SFU
    writes around that loop, so it keeps them current (NTP time of the last packet sent, its RTP
    timestamp, packet and octet counts) or subscribers get an SR mapping RTP 0 to NTP 0.

    Called once per frame (the downtrack batches the packets of a frame: `packets`, `payload_bytes`
    since the last call); the NTP time is aiortc's `clock.current_ntp_time()` computed from
    `time.time()` (same value, a twentieth of the cost)."""
    now = time.time()
    seconds = int(now)
    sender._RTCRtpSender__ntp_timestamp = (  # type: ignore[attr-defined]
        (seconds + _NTP_EPOCH_OFFSET_S) << 32 | int((now - seconds) * 1_000_000) * (1 << 32) // 1_000_000)
    sender._RTCRtpSender__rtp_timestamp = rtp_timestamp  # type: ignore[attr-defined]
    sender._RTCRtpSender__octet_count += payload_bytes  # type: ignore[attr-defined]
    sender._RTCRtpSender__packet_count += packets  # type: ignore[attr-defined]


# the C version (same effect) when the C step is on: it runs once per frame per subscriber
feed_sender_report = fastpath.feed_sender_report or _feed_sender_report


async def send_pli(receiver: RTCRtpReceiver, media_ssrc: int) -> None:
    """RFC 4585 §6.3.1 Picture Loss Indication from our receiver to the publisher."""
    try:
        await receiver._send_rtcp_pli(media_ssrc)
    except ConnectionError:
        pass
