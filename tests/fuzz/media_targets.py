"""Fuzz targets for what a peer sends through its authenticated transport: RTP (header view,
extensions, rewrite, keyframe detection, VP8 descriptor munging, a relay feeding a downtrack) and
RTCP (aiortc's compound parser as the transport calls it, aiortc's routing and sender/receiver
handlers, and our subscriber RTCP handler). Each target takes bytes and raises only on a bug."""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import RtcpPacket, RtpPacket

from sfu.media import fastpath
from sfu.media.downtrack import DownTrack, OutStream
from sfu.media.keyframe import is_h264_keyframe, is_keyframe, is_vp8_keyframe, vp8_payload_offset
from sfu.media.relay import TrackRelay
from sfu.media.rtp_header import HeaderRewriter, find_extension, header_size, parse_fixed
from sfu.media.vp8 import Vp8Munger, vp8_keyframe_size
from sfu.rtc.feedback import on_subscriber_rtcp
from sfu.rtc.peer import PeerSession, Slot

PACKET_SEPARATOR = b"\xde\xad\xbe\xef"  # splits one input into several packets of one stream
OUT_SSRC, OUT_RTX_SSRC, OUT_PT, OUT_RTX_PT = 0x1234, 0x5678, 100, 101
REWRITERS = (HeaderRewriter({}), HeaderRewriter({1: 3, 2: 14, 3: 15, 5: 200}),
             HeaderRewriter({i: i for i in range(1, 256)}))

logging.getLogger("aiortc").setLevel(logging.CRITICAL)


class CheckingWriter:
    """A subscriber transport that checks every packet the downtrack writes."""

    connected = True

    def __init__(self) -> None:
        self.packets = 0

    def write(self, data: bytes) -> bool:
        assert header_size(data) >= 0, f"forwarded a malformed packet: {data[:32].hex()}"
        ssrc = int.from_bytes(data[8:12], "big")
        assert ssrc in (OUT_SSRC, OUT_RTX_SSRC), "forwarded with a foreign SSRC"
        assert data[1] & 0x7F == (OUT_PT if ssrc == OUT_SSRC else OUT_RTX_PT)
        self.packets += 1
        return True


def _check_header(data: bytes) -> int:
    size = header_size(data)
    assert size == -1 or 12 <= size <= len(data), size
    try:
        parsed: RtpPacket | None = RtpPacket.parse(data)
    except ValueError:
        parsed = None
    if parsed is not None and not data[0] & 0x10:
        # aiortc reads the same fixed header, CSRCs and padding: we must not drop what it accepts
        assert size >= 0, f"aiortc accepts a packet our header_size refuses: {data[:32].hex()}"
    if size < 0:
        return size
    assert parse_fixed(data)[4] == int.from_bytes(data[8:12], "big")
    for ext_id in (1, 2, 3, 14, 15, 16, 255):
        value = find_extension(data, ext_id)
        assert value is None or (isinstance(value, bytes) and len(value) <= size)
    return size


def _check_payload(payload: bytes) -> None:
    offset = vp8_payload_offset(payload)
    assert offset == -1 or 1 <= offset <= len(payload)
    is_vp8_keyframe(payload)
    is_h264_keyframe(payload)
    is_keyframe("video/VP8", payload)
    if offset >= 0:
        size = vp8_keyframe_size(payload, offset)
        assert size is None or all(0 <= v < 1 << 14 for v in size)
        munged = []
        for cls in (Vp8Munger, fastpath.Vp8Munger) if fastpath.Vp8Munger is not None else (Vp8Munger,):
            munger = cls()
            munger.switch_source(payload, 0)
            buf = bytearray(payload)
            munger.switch_source(payload, 0)
            munger.munge(buf, 0)
            assert len(buf) == len(payload), "munging changed the payload length"
            munged.append(bytes(buf))
        assert all(m == munged[0] for m in munged), "the C munger differs from the Python one"


def fuzz_rtp(data: bytes) -> None:
    """Each packet: header view and aiortc agree, extension lookup and rewrite never raise nor
    change the length, payload parsers never raise; then all packets go through a VP8 relay to a
    simulcast-capable downtrack and the writer checks every forwarded packet."""
    packets = data.split(PACKET_SEPARATOR)[:16]
    for packet in packets:
        size = _check_header(packet)
        for rewriter in REWRITERS:
            out = rewriter.rewrite(packet, OUT_PT, 1, 2, OUT_SSRC)
            assert out is None or len(out) == len(packet)
            assert size >= 0 or out is None
        _check_payload(packet[size:] if size >= 0 else packet)
    writer = CheckingWriter()
    low, high = TrackRelay("video", lambda ssrc: None), TrackRelay("video", lambda ssrc: None)
    for relay in (low, high):
        relay.update_codecs({96: "video/vp8", 97: "video/h264", 111: "audio/opus"})
    downtrack = DownTrack([low, high], OutStream(OUT_SSRC, OUT_RTX_SSRC, writer), "PA_fuzz")
    downtrack.configure({"video/vp8": OUT_PT, "video/h264": OUT_PT}, OUT_RTX_PT, {1: 3, 2: 4, 3: 200}, 90000)
    for i, packet in enumerate(packets):
        (high if i % 3 == 2 else low).forward(packet)
        if i == len(packets) // 2:
            downtrack.select_layer(1)
    sequence_numbers = [int.from_bytes(data[i:i + 2], "big") for i in range(0, min(len(data), 64), 2)]
    downtrack.on_nack(sequence_numbers)
    downtrack.close()


class RtcpHarness:
    """A real PeerSession with one subscription slot, its aiortc sender and receiver."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.peer = PeerSession("PA_fuzz", [])
        self.sender = self.peer.pc.addTransceiver("video", direction="sendonly").sender
        self.receiver = self.peer.pc.addTransceiver("video", direction="recvonly").receiver
        relay = TrackRelay("video", lambda ssrc: None)
        relay.update_codecs({96: "video/vp8"})
        relay.media_ssrc = 0x42
        self.writer = CheckingWriter()
        out = OutStream(OUT_SSRC, OUT_RTX_SSRC, self.writer)
        downtrack = DownTrack([relay], out, "PA_fuzz")
        downtrack.configure({"video/vp8": OUT_PT}, OUT_RTX_PT, {}, 90000)
        self.slot = Slot(self.peer.pc.getTransceivers()[0], out, downtrack, "TR_fuzz")
        self.router = RtpRouter()
        self.router.register_sender(self.sender, OUT_SSRC)

    async def handle(self, packets: list[Any]) -> None:
        try:
            for packet in packets:
                self.router.route_rtcp(packet)
        except struct.error:
            return  # a REMB whose SSRC count lies: aiortc raises this; sfu.rtc.rtcp_guard drops it
        for packet in packets:
            await on_subscriber_rtcp(self.peer.estimate, self.slot, packet)
            await self.sender._handle_rtcp_packet(packet)
            await self.receiver._handle_rtcp_packet(packet)


_rtcp: RtcpHarness | None = None


def fuzz_rtcp(data: bytes) -> None:
    """RtcpPacket.parse raises only ValueError (all the DTLS transport catches: anything else
    ends that participant's transport); every parsed packet goes through aiortc's router and
    handlers and our subscriber handler (NACK → cache, PLI/FIR → keyframe request, REMB and
    receiver reports → the estimate) without raising, and the estimate stays sane."""
    global _rtcp
    try:
        packets = RtcpPacket.parse(data)
    except ValueError:
        return
    if _rtcp is None:
        _rtcp = RtcpHarness()
    _rtcp.loop.run_until_complete(_rtcp.handle(packets))
    estimate = _rtcp.peer.estimate.estimate_bps
    assert estimate == estimate and estimate >= 0, estimate  # not NaN, not negative


def close_harnesses() -> None:
    if _rtcp is not None:
        _rtcp.loop.run_until_complete(_rtcp.peer.close())

