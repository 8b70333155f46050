"""The send side of a subscriber's connection: `RtpWriter` SRTP-protects and sends forwarded RTP
(and RTCP) on the nominated ICE pair synchronously, through the C step's `Sink` when it is built
(docs/fastpath.md), bounded by the transport's send queue."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCDtlsTransport
from aiortc.rtcdtlstransport import State as DtlsState

from sfu.media import fastpath
from sfu.media.counters import COUNTERS

log = logging.getLogger(__name__)

_CONNECTED = DtlsState.CONNECTED
# A subscriber's media is dropped while this much waits in its transport's user-space send queue.
# asyncio and uvloop queue every datagram the kernel refuses (EAGAIN: the socket's send buffer, ~200 kB
# with overhead, already waits in a full qdisc) without limit, so a link narrower than the stream would
# grow the server's memory and that subscriber's delay for as long as it stays (measured behind a deep
# tc queue: tests/network/test_slow_subscriber.py). 64 kB (uvloop's pause threshold) is ~1 s of a
# 500 kb/s stream on top of the kernel's queue; a healthy link never gets near it.
SEND_QUEUE_LIMIT_BYTES = 64 * 1024

# pylibsrtp's cffi binding: protect/unprotect in a session's own buffer without its wrapper (here and
# in the receive tap, sfu.rtc.hooks); None with another pylibsrtp, which is then used through its API
try:
    from pylibsrtp._binding import ffi as SRTP_FFI
    from pylibsrtp._binding import lib as _srtp_lib

    SRTP_PROTECT = _srtp_lib.srtp_protect
    SRTP_UNPROTECT = _srtp_lib.srtp_unprotect
    SRTP_OK = _srtp_lib.srtp_err_status_ok
except (ImportError, AttributeError):  # pragma: no cover - another pylibsrtp: the public API is used
    SRTP_FFI = SRTP_PROTECT = SRTP_UNPROTECT = None  # type: ignore[assignment]
    SRTP_OK = 0


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
        if SRTP_PROTECT is not None and SRTP_FFI is not None:
            try:  # pylibsrtp internals: protect in place in the session's own buffer (as it does)
                self._srtp = session._srtp[0]
                self._cdata = session._cdata
                self._buffer = session._buffer
                self._limit = len(session._cdata) - pylibsrtp.SRTP_MAX_TRAILER_LEN
                self._length = SRTP_FFI.new("int *")
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
        queued = self._queued()
        if queued >= SEND_QUEUE_LIMIT_BYTES:  # before SRTP: a dropped packet costs nothing more
            self.drops += 1
            COUNTERS.send_queue_drops += 1
            return False
        sink = self.sink
        if sink is not None:
            if sink.send(data, queued == 0):  # behind a queue it queues too (order is kept)
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
            if SRTP_PROTECT(srtp, self._cdata, length) != SRTP_OK:  # malformed: never raise into the relay
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
    queued = getattr(transport, "get_write_buffer_size", None)
    try:  # the C address of the session's srtp_t (pylibsrtp internals, as in RtpWriter._bind)
        srtp = int(SRTP_FFI.cast("uintptr_t", session._srtp[0]))
    except (AttributeError, TypeError):
        return None
    if sock is None or not srtp or queued is None:
        return None
    try:
        return fastpath.Sink(dtls=dtls, nominated=nominated, pair=pair, session=session, srtp=srtp,
                             fd=sock.fileno(), addr=pair.remote_addr, queued=queued, fallback=transport.sendto)
    except (ValueError, TypeError, OSError) as exc:
        log.debug("no C sink for %s: %s", pair.remote_addr, exc)
        return None
