"""Write the seed corpora of tests/fuzz/corpus/<target>/ (run once; the files are committed):
valid examples of every message type, real aiortc SDP, RTP packets in every header form and
RTCP packets of every type the server meets.

    python -m tests.fuzz.make_corpus"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from pathlib import Path

from aiortc import RTCPeerConnection
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

from tests.fuzz.media_targets import PACKET_SEPARATOR
from tests.fuzz.signaling_targets import MESSAGE_SEPARATOR

CORPUS = Path(__file__).resolve().parent / "corpus"
SIMULCAST_LINES = ("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
                   "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;f\r\n")


async def aiortc_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await pc.close()
    return offer


def simulcast_offer(offer: str) -> str:
    head, video = offer.split("m=video", 1)
    return head + "m=video" + video.rstrip("\r\n") + "\r\n" + SIMULCAST_LINES


def signaling_seeds(offer: str) -> list[dict[str, object]]:
    cand = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}
    return [
        {"type": "join", "room": "demo", "name": "alice", "auto_subscribe": False, "token": "a.b.c", "id": 1},
        {"type": "offer", "sdp": offer, "tracks": {"0": {"source": "microphone", "name": "mic"},
                                                   "1": {"source": "camera"}}},
        {"type": "answer", "sdp": offer.replace("sendonly", "recvonly")},
        {"type": "candidate", "candidate": cand}, {"type": "candidate", "candidate": None},
        {"type": "subscribe", "track_ids": ["TR_a", "TR_b"]}, {"type": "unsubscribe", "track_ids": []},
        {"type": "set_quality", "track_id": "TR_a", "max_width": 320, "max_height": 180, "layer": 1},
        {"type": "leave"}, {"type": "ping", "id": "p"},
    ]


def rtp(pt: int, seq: int, payload: bytes, *, ext: bytes = b"", profile: int = 0xBEDE, csrcs: int = 0,
        padding: int = 0, marker: bool = True) -> bytes:
    first = 0x80 | (0x10 if ext else 0) | (0x20 if padding else 0) | csrcs
    out = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, 3000 * seq, 0x11223344)
    out += b"".join(struct.pack("!I", 0xC0 + i) for i in range(csrcs))
    if ext:
        ext += b"\x00" * (-len(ext) % 4)
        out += struct.pack("!HH", profile, len(ext) // 4) + ext
    return out + payload + (b"\x00" * (padding - 1) + bytes([padding]) if padding else b"")


VP8_KEYFRAME = bytes([0x90, 0xE0, 0x80, 0x01, 0x05]) + b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xb4\x00" + b"\x55" * 20


def rtp_seeds() -> list[bytes]:
    one_byte = b"\x10" + b"0" + b"\x22" + b"\x01\x02\x03"  # mid "0", abs-send-time
    two_byte = b"\x01\x01" + b"0" + b"\x03\x00" + b"\x05\x03abc"
    h264 = bytes([0x18, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x65, 0x88])
    packets = [rtp(96, 1, VP8_KEYFRAME, ext=one_byte), rtp(96, 2, b"\x10\x00\x01" + b"\x00" * 10, ext=two_byte,
               profile=0x1000), rtp(97, 3, h264, csrcs=2), rtp(96, 4, b"\x80\x00", padding=4),
               rtp(111, 5, b"\xfc" * 40, ext=b"\xf0"), rtp(96, 6, bytes([0x80, 0x80, 0x80, 0x01]) + b"\x00" * 8)]
    return [*packets, PACKET_SEPARATOR.join(packets), PACKET_SEPARATOR.join([packets[0], packets[1], packets[0]])]


def rtcp_seeds() -> list[bytes]:
    report = RtcpReceiverInfo(ssrc=0x1234, fraction_lost=30, packets_lost=5, highest_sequence=100, jitter=3,
                              lsr=1, dlsr=2)
    sender = RtcpSenderInfo(ntp_timestamp=1 << 40, rtp_timestamp=9000, packet_count=10, octet_count=1000)
    packets = [
        RtcpSrPacket(ssrc=1, sender_info=sender, reports=[report]), RtcpRrPacket(ssrc=1, reports=[report]),
        RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=1, items=[(1, b"cname")])]), RtcpByePacket(sources=[1, 2]),
        RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=0x1234, lost=[1, 2, 5, 40]),
        RtcpRtpfbPacket(fmt=15, ssrc=1, media_ssrc=0x1234, lost=[7]),  # transport-cc (FCI read as words)
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0x1234),
        RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0x1234, fci=struct.pack("!IBxxx", 0x1234, 1)),
        RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(300_000, [0x1234, 0x5678])),
    ]
    raw = [bytes(p) for p in packets]
    return [*raw, b"".join(raw), raw[1] + raw[4] + raw[8]]


def write(target: str, seeds: list[bytes]) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)


def main() -> None:
    offer = asyncio.run(aiortc_offer())
    messages = signaling_seeds(offer) + signaling_seeds(simulcast_offer(offer))[1:2]
    texts = [json.dumps({"v": 1, **m}).encode() for m in messages]
    write("signaling", texts)
    write("session", [b"J" + MESSAGE_SEPARATOR + MESSAGE_SEPARATOR.join(texts[i:i + 3]) for i in range(1, 10)]
          + [b"J" + MESSAGE_SEPARATOR + texts[-1], MESSAGE_SEPARATOR.join(texts[:3])])
    write("sdp", [offer.encode(), simulcast_offer(offer).encode(), offer.replace("sendonly", "recvonly").encode()])
    write("rtp", rtp_seeds())
    write("rtcp", rtcp_seeds())


if __name__ == "__main__":
    main()
