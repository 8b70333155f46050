"""Per-connection hooks into aiortc internals: RTP tap-in before aiortc's receiver, direct SRTP
write-out, RTCP taps on senders, sender-report bookkeeping. Process-wide ones (and the start-up
check that the private attributes both rely on still exist) are in `sfu.rtc.process_hooks`.
"""

from __future__ import annotations

import asyncio
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

log = logging.getLogger(__name__)

RtpTap = Callable[[bytes, int], None]
RtcpTap = Callable[[Any], Awaitable[None]]

_CONNECTED = DtlsState.CONNECTED
_NTP_EPOCH_OFFSET_S = 2208988800  # 1900-01-01 → 1970-01-01 (RFC 5905)
_NTP_EPOCH_OFFSET_MS = _NTP_EPOCH_OFFSET_S * 1000
# A subscriber's media is dropped while this much waits in its transport's user-space send queue.
# asyncio and uvloop queue every datagram the kernel refuses (EAGAIN: the socket's send buffer, ~200 kB
# with overhead, already waits in a full qdisc) without limit, so a link narrower than the stream would
# grow the server's memory and that subscriber's delay for as long as it stays (measured behind a deep
# tc queue: tests/network/test_slow_subscriber.py). 64 kB (uvloop's pause threshold) is ~1 s of a
# 500 kb/s stream on top of the kernel's queue; a healthy link never gets near it.
SEND_QUEUE_LIMIT_BYTES = 64 * 1024
# Distinct SRTCP sender SSRCs accepted per connection. An aiortc peer sends RTCP from one SSRC per
# receiver and per sender (up to 256 subscriptions + 8 tracks by default), browsers from a handful.
MAX_RTCP_SSRCS = 1024

try:  # pylibsrtp's cffi binding: lets RtpWriter protect in the session's buffer without its wrapper
    from pylibsrtp._binding import ffi as _srtp_ffi
    from pylibsrtp._binding import lib as _srtp_lib

    _srtp_protect = _srtp_lib.srtp_protect
    _srtp_unprotect = _srtp_lib.srtp_unprotect
    _SRTP_OK = _srtp_lib.srtp_err_status_ok
except (ImportError, AttributeError):  # pragma: no cover - another pylibsrtp: the public API is used
    _srtp_ffi = _srtp_protect = _srtp_unprotect = None
    _SRTP_OK = 0

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
            if _srtp_unprotect is None or _srtp_ffi is None:
                raise AttributeError("no pylibsrtp binding")
            srtp, cdata, buffer = session._srtp[0], session._cdata, session._buffer
            limit = len(cdata)
            length = _srtp_ffi.new("int *")
            srtp_unprotect = _srtp_unprotect

            def unprotect(data: bytes) -> bytes | None:
                size = len(data)
                if size > limit:
                    return None
                buffer[0:size] = data
                length[0] = size
                if srtp_unprotect(srtp, cdata, length) != _SRTP_OK:
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


class RtpWriter:
    """SRTP-protects and sends RTP/RTCP on a DTLS transport, synchronously.

    aiortc's `_send_rtp` is a chain of four coroutines per packet; on the forwarding path we protect
    and `sendto` directly on the nominated ICE pair's socket (one C call each). What `write` needs
    (the nominated pair's `sendto` and address, the SRTP session's C buffer) is looked up once and
    checked by identity per packet: the pair (aioice replaces it, never mutates it) and the session.

    Bounded per subscriber: while the transport's send queue holds SEND_QUEUE_LIMIT_BYTES, packets are
    dropped here (`drops`), for this subscriber alone; its NACKs ask for them again once it drains."""

    __slots__ = ("dtls", "packets", "bytes", "errors", "drops", "sink", "_nominated", "_pair", "_session", "_send",
                 "_queued", "_addr", "_srtp", "_cdata", "_buffer", "_limit", "_length")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.dtls = dtls
        self.packets = 0
        self.bytes = 0
        self.errors = 0
        self.drops = 0
        # the C protect + sendto for the bound pair (sfu.media.fastpath), None without it or for TURN;
        # the fan-out sends through it directly and counts there (`sink.stats`), not in packets/bytes
        self.sink: Any = None
        self._nominated: dict[int, Any] | None = None  # aioice Connection._nominated (never rebound)
        self._pair: Any = None
        self._session: Any = None  # the pylibsrtp.Session `_srtp`/`_cdata`/`_buffer` belong to
        self._send: Callable[[Any, Any], Any] | None = None
        self._queued: Callable[[], int] = _nothing_queued  # bytes waiting in the transport's send queue
        self._addr: Any = None
        self._srtp: Any = None
        self._cdata: Any = None
        self._buffer: Any = None
        self._limit = 0
        self._length: Any = None

    @property
    def connected(self) -> bool:
        dtls = self.dtls
        return dtls._state is DtlsState.CONNECTED and 1 in dtls.transport._connection._nominated

    def _bind(self) -> bool:
        """(Re)read the nominated pair and the SRTP session; False if there is nothing to send on."""
        dtls = self.dtls
        nominated = self._nominated
        if nominated is None:
            nominated = self._nominated = dtls.transport._connection._nominated
        pair = nominated.get(1)
        session = dtls._tx_srtp
        if pair is None or session is None:
            return False
        protocol = pair.protocol
        self.sink = None
        if type(protocol) is StunProtocol:
            self._send = protocol.transport.sendto
            self.sink = _make_sink(dtls, nominated, pair, session, protocol.transport)
            # asyncio's and uvloop's datagram transports have it (typeshed lists it on WriteTransport only)
            self._queued = getattr(protocol.transport, "get_write_buffer_size", _nothing_queued)
        else:  # a TURN-relayed pair: its send_data wraps the datagram, so go through it (not bounded)
            send_data = protocol.send_data
            self._send = lambda data, addr: asyncio.ensure_future(send_data(data, addr))
            self._queued = _nothing_queued
        self._addr = pair.remote_addr
        self._pair = pair
        self._session = session
        self._srtp = None
        if _srtp_protect is not None and _srtp_ffi is not None:
            try:  # pylibsrtp internals: protect in place in the session's own buffer (as it does)
                self._srtp = session._srtp[0]
                self._cdata = session._cdata
                self._buffer = session._buffer
                self._limit = len(session._cdata) - pylibsrtp.SRTP_MAX_TRAILER_LEN
                self._length = _srtp_ffi.new("int *")
            except (AttributeError, TypeError):  # pragma: no cover - another pylibsrtp
                self._srtp = None
        return True

    def write(self, data: bytes | bytearray) -> bool:
        dtls = self.dtls
        if dtls._state is not _CONNECTED:
            return False
        nominated = self._nominated
        if nominated is None or nominated.get(1) is not self._pair or dtls._tx_srtp is not self._session:
            if not self._bind():
                return False
        if self._queued() >= SEND_QUEUE_LIMIT_BYTES:  # before SRTP: a dropped packet costs nothing more
            self.drops += 1
            COUNTERS.send_queue_drops += 1
            return False
        sink = self.sink
        if sink is not None:
            if sink.send(data):
                self.packets += 1
                self.bytes += len(data)
                return True
            self.errors += 1
            return False
        srtp = self._srtp
        if srtp is not None:
            size = len(data)
            if size > self._limit:
                self.errors += 1
                return False
            buffer = self._buffer
            buffer[0:size] = data
            length = self._length
            length[0] = size
            if _srtp_protect(srtp, self._cdata, length) != _SRTP_OK:  # malformed: never raise into the relay
                self.errors += 1
                return False
            protected = buffer[0:length[0]]
        else:
            try:
                protected = self._session.protect(bytes(data))
            except Exception:  # pylibsrtp.Error: malformed packet; never raise into the relay
                self.errors += 1
                return False
        self._send(protected, self._addr)  # type: ignore[misc]
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


def _nothing_queued() -> int:
    return 0


def _make_sink(dtls: RTCDtlsTransport, nominated: dict[int, Any], pair: Any, session: Any, transport: Any) -> Any:
    """The C sink for this pair (sfu.media.fastpath.Sink), or None if the C step is off or the socket,
    address or SRTP session cannot be read (then RtpWriter protects and sends in Python)."""
    if fastpath.Sink is None:
        return None
    sock = transport.get_extra_info("socket")
    srtp = fastpath.srtp_address(session)
    queued = getattr(transport, "get_write_buffer_size", None)
    if sock is None or not srtp or queued is None:
        return None
    try:
        return fastpath.Sink(dtls=dtls, nominated=nominated, pair=pair, session=session, srtp=srtp,
                             fd=sock.fileno(), addr=pair.remote_addr, queued=queued, fallback=transport.sendto)
    except (ValueError, TypeError, OSError) as exc:
        log.debug("no C sink for %s: %s", pair.remote_addr, exc)
        return None


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
