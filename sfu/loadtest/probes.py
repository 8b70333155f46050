"""Measurement hooks on aiortc objects: publisher send times and lite subscribers.

Both ends live in one process, so one monotonic clock times a packet from the publisher's
``_send_rtp`` to the subscriber's receive hook. Packets are matched by a hash of the VP8 payload
after the payload descriptor, which an SFU may rewrite (picture id) but never the frame data.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from struct import unpack_from
from typing import Any

from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

RTP_HEADER_BYTES = 12
# A loop of the clip repeats payloads after ~10 s; matches older than this are stale.
MAX_MATCH_AGE_S = 5.0


def vp8_payload_offset(payload: bytes | memoryview) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 §4.2) at the start of an RTP payload."""
    if not payload:
        return 0
    offset = 1
    if payload[0] & 0x80:  # X: extension octet present
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits (M)
            offset += 2 if payload[offset] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            offset += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX octet
            offset += 1
    return offset


def rtp_payload_offset(data: bytes) -> int:
    """Start of the payload in a plain RTP packet (RFC 3550 §5.1, §5.3.1)."""
    offset = RTP_HEADER_BYTES + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        offset += 4 + 4 * unpack_from("!H", data, offset + 2)[0]
    return offset


class SendTimes:
    """Publisher side: send time of every VP8 payload, keyed by the payload hash."""

    def __init__(self) -> None:
        self.by_hash: dict[int, float] = {}
        self.video_ssrcs: set[int] = set()
        self.packets_sent = 0

    def attach(self, sender: RTCRtpSender) -> None:
        """Wrap the sender's DTLS transport ``_send_rtp`` (and any later bundled transport)."""
        self.video_ssrcs.add(sender._ssrc)
        self._wrap_transport(sender.transport)
        original_set = sender.setTransport

        def set_transport(transport: Any) -> None:
            original_set(transport)
            self._wrap_transport(transport)

        sender.setTransport = set_transport  # type: ignore[method-assign]

    def _wrap_transport(self, transport: Any) -> None:
        if getattr(transport, "_sfu_loadtest_send_times", None) is self:
            return
        original: Callable[[bytes], Awaitable[None]] = transport._send_rtp
        by_hash, ssrcs = self.by_hash, self.video_ssrcs

        async def _send_rtp(data: bytes) -> None:
            # RTCP shares the transport: RTCP packet types 200-207 sit where RTP has marker+PT.
            if len(data) > RTP_HEADER_BYTES and not 192 <= data[1] <= 223:
                if unpack_from("!I", data, 8)[0] in ssrcs:
                    start = rtp_payload_offset(data)
                    body = data[start:]
                    by_hash[hash(body[vp8_payload_offset(body) :])] = time.monotonic()
                    self.packets_sent += 1
            await original(data)

        transport._send_rtp = _send_rtp
        transport._sfu_loadtest_send_times = self


@dataclass
class StreamCount:
    """Per-SSRC receive counters of a lite subscriber."""

    payload_type: int
    is_rtx: bool
    packets: int = 0
    bytes: int = 0
    first_seq: int = -1
    max_ext_seq: int = -1  # highest sequence number, extended past 16-bit wrap

    @property
    def expected(self) -> int:
        return 0 if self.first_seq < 0 else self.max_ext_seq - self.first_seq + 1


@dataclass
class Window:
    """Shared switch: latency samples are kept only while the measurement window is open."""

    open: bool = False


@dataclass
class LiteSubscriber:
    """Counts what one subscriber receives; nothing reaches aiortc's jitter buffer or decoder."""

    name: str
    window: Window
    joined_at: float = field(default_factory=time.monotonic)
    first_media_at: float | None = None
    streams: dict[int, StreamCount] = field(default_factory=dict)
    latency_ms: array = field(default_factory=lambda: array("d"))
    unmatched: int = 0

    def install(
        self,
        receiver: RTCRtpReceiver,
        kind: str,
        send_times: SendTimes | None,
        receiver_reports: bool = False,
    ) -> None:
        """Replace ``receiver._handle_rtp_packet`` on this instance with a counter.

        With ``receiver_reports`` the aiortc per-SSRC statistics are still fed, so its RTCP task
        keeps sending receiver reports (loss, jitter) to the server; otherwise it sends none.
        """
        codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
        remote_streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        streams, window, latency = self.streams, self.window, self.latency_ms
        by_hash = send_times.by_hash if send_times is not None and kind == "video" else None

        async def _handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            now = time.monotonic()
            ssrc = packet.ssrc
            count = streams.get(ssrc)
            if count is None:
                codec = codecs.get(packet.payload_type)
                is_rtx = codec is not None and codec.name.lower() == "rtx"
                count = streams[ssrc] = StreamCount(packet.payload_type, is_rtx)
                if self.first_media_at is None and not is_rtx:
                    self.first_media_at = now
            count.packets += 1
            count.bytes += len(packet.payload) + RTP_HEADER_BYTES
            if count.is_rtx:
                return
            seq = packet.sequence_number
            if count.first_seq < 0:
                count.first_seq = count.max_ext_seq = seq
            else:
                delta = (seq - count.max_ext_seq) & 0xFFFF
                if 0 < delta < 0x8000:
                    count.max_ext_seq += delta
            if receiver_reports:
                stats = remote_streams.get(ssrc)
                if stats is None:
                    stats = remote_streams[ssrc] = StreamStatistics(codecs[packet.payload_type].clockRate)
                stats.add(packet)
            if by_hash is not None and window.open:
                payload = packet.payload
                sent = by_hash.get(hash(payload[vp8_payload_offset(payload) :]))
                if sent is not None and now - sent < MAX_MATCH_AGE_S:
                    latency.append((now - sent) * 1000)
                else:
                    self.unmatched += 1

        receiver._handle_rtp_packet = _handle_rtp_packet  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, int, int]:
        """(packets incl. RTX, bytes, expected media packets) so far."""
        packets = sum(s.packets for s in self.streams.values())
        size = sum(s.bytes for s in self.streams.values())
        expected = sum(s.expected for s in self.streams.values() if not s.is_rtx)
        return packets, size, expected

    def media_packets(self) -> int:
        return sum(s.packets for s in self.streams.values() if not s.is_rtx)
