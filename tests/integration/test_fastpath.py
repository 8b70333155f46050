"""The C forwarding step (sfu._fastpath) against the Python reference, over a real aiortc connection.

One relay feeds two downtracks with the same parameters: one writes through a real RtpWriter on a
connected aiortc peer (so `fanout` serves it in C: SRTP, sendto on the ICE pair's socket), the other
into a list (no sink: `fanout` hands it to DownTrack.write, the Python reference). What the aiortc
client decrypts must be byte for byte what the reference produced, and the counters, the sender-report
calls and the NACK cache must agree. A counter in the writer proves the C step served the packets.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from sfu.media import fastpath
from sfu.media.downtrack import DownTrack, OutStream
from sfu.media.relay import TrackRelay
from sfu.media.rtp_header import header_size
from sfu.media.sequencer import Sequencer as PySequencer
from sfu.rtc import hooks
from sfu.rtc.peer import PlaceholderTrack
from sfu.rtc.writer import RtpWriter

needs_c = pytest.mark.skipif(not fastpath.ENABLED, reason=f"C step off: {fastpath.UNAVAILABLE_REASON}")


def test_the_c_step_is_built_unless_switched_off() -> None:
    """The test setup (scripts/setup.sh) compiles it; a silent fallback would leave it untested."""
    if os.environ.get("SFU_FASTPATH", "1") == "0":
        pytest.skip("SFU_FASTPATH=0")
    assert fastpath.ENABLED, fastpath.UNAVAILABLE_REASON



class Capture:
    connected = True

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def write(self, data: bytes | bytearray) -> bool:
        self.packets.append(bytes(data))
        return True


def rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool, extensions: bool) -> bytes:
    first = 0x90 if extensions else 0x80
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    if extensions:  # RFC 8285 one-byte: id 1 (3 bytes), id 5 (unmapped: blanked), id 2 (1 byte), padding
        header += struct.pack("!HH", 0xBEDE, 3) + bytes([0x12, 1, 2, 3, 0x50, 9, 0x20, 7, 0, 0, 0, 0])
    return header + payload


def vp8_payload(keyframe: bool, n: int, picture_id: int | None = None) -> bytes:
    descriptor = bytes([0x10])  # S bit: start of partition 0
    if picture_id is not None:  # X, I, L: a 15-bit picture id and TL0PICIDX (simulcast layers carry them)
        descriptor = bytes([0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, (picture_id // 3) & 0xFF])
    frame = bytes([0x00 if keyframe else 0x01, 0, 0]) + b"\x9d\x01\x2a" + b"\x40\x01\xb4\x00"
    return descriptor + frame + bytes([n & 0xFF]) * (50 + n % 900)


def steps(packets: list[bytes]) -> list[int]:
    stamps = [struct.unpack_from("!I", p, 4)[0] for p in packets]
    return [(b - a) & 0xFFFFFFFF for a, b in zip(stamps, stamps[1:], strict=False)][:70] + [
        (b - a) & 0xFFFFFFFF for a, b in zip(stamps[71:], stamps[72:], strict=False)]  # all but the switch


async def connected_pair() -> tuple[RTCPeerConnection, RTCPeerConnection]:
    server, client = RTCPeerConnection(), RTCPeerConnection()
    for kind in ("video", "audio"):
        server.addTransceiver(PlaceholderTrack(kind), direction="sendonly")
    await server.setLocalDescription(await server.createOffer())
    await client.setRemoteDescription(server.localDescription)
    await client.setLocalDescription(await client.createAnswer())
    await server.setRemoteDescription(client.localDescription)
    deadline = time.monotonic() + 10
    while server.connectionState != "connected" or client.connectionState != "connected":
        assert time.monotonic() < deadline, (server.connectionState, client.connectionState)
        await asyncio.sleep(0.05)
    return server, client


def pair_of_downtracks(relay: TrackRelay | list[TrackRelay], sender: Any, mime: str, out_pt: int, ssrc: int,
                       clock: int, reports: dict[str, list[tuple[int, int, int]]],
                       layer: int = 0) -> tuple[DownTrack, DownTrack, Capture]:
    fast_out = OutStream(ssrc, None, RtpWriter(sender.transport),
                         lambda *args: reports["fast"].append(args))
    reference = Capture()
    ref_out = OutStream(ssrc, None, reference, lambda *args: reports["reference"].append(args))
    fast_out.sequencer, ref_out.sequencer = fastpath.Sequencer(1000, 5000), PySequencer(1000, 5000)
    downtracks = []
    for out in (fast_out, ref_out):
        downtrack = DownTrack(relay if isinstance(relay, list) else [relay], out, "sub")
        downtrack.layer_index = layer
        downtrack.configure({mime: out_pt}, None, {1: 3, 2: 4}, clock)
        downtracks.append(downtrack)
    return downtracks[0], downtracks[1], reference


@needs_c
async def test_c_step_sends_what_the_python_reference_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    server, client = await connected_pair()
    received: dict[int, list[bytes]] = {}
    try:
        client_dtls = client.getTransceivers()[0].receiver.transport
        hooks.tap_rtp(client_dtls, lambda data, arrival_ms: received.setdefault(
            struct.unpack_from("!I", data, 8)[0], []).append(bytes(data)))
        video_sender, audio_sender = (t.sender for t in server.getTransceivers())
        video, audio = TrackRelay("video", lambda ssrc: None), TrackRelay("audio", lambda ssrc: None)
        video.update_codecs({96: "video/vp8"})
        audio.update_codecs({111: "audio/opus"})
        reports: dict[str, list[tuple[int, int, int]]] = {"fast": [], "reference": []}
        fast_v, ref_v, capture_v = pair_of_downtracks(video, video_sender, "video/vp8", 100, 0xAAAA, 90000, reports)
        fast_a, ref_a, capture_a = pair_of_downtracks(audio, audio_sender, "audio/opus", 109, 0xBBBB, 48000, reports)

        video.forward(rtp(96, 10, 1000, 0x5, vp8_payload(False, 0), True, True))  # before a key frame: held
        order = list(range(300))
        for i in range(7, 300, 50):  # reordered pairs: the later packet first, mapped below the highest after
            order[i], order[i + 1] = order[i + 1], order[i]
        for n in order:
            seq = 11 + n
            video.forward(rtp(96, seq, 3000 * (n // 3), 0x5, vp8_payload(n == 0, n), n % 3 == 2, n % 4 != 1))
            if n % 2 == 0:
                audio.forward(rtp(111, 500 + n // 2, 960 * (n // 2), 0x6, bytes([n & 0xFF]) * 80, n == 0, n % 5 == 0))
            if n % 40 == 0:
                await asyncio.sleep(0.01)  # let the client read
        video.forward(rtp(97, 400, 1, 0x5, b"x" * 20, False, False))  # a payload type nobody maps

        expected_v, expected_a = capture_v.packets, capture_a.packets
        assert len(expected_v) == 300 and len(expected_a) == 150
        deadline = time.monotonic() + 10
        while len(received.get(0xAAAA, [])) < 300 or len(received.get(0xBBBB, [])) < 150:
            assert time.monotonic() < deadline, {ssrc: len(p) for ssrc, p in received.items()}
            await asyncio.sleep(0.05)
        assert received[0xAAAA] == expected_v
        assert received[0xBBBB] == expected_a

        for fast, reference in ((fast_v, ref_v), (fast_a, ref_a)):
            assert (fast.packets_sent, fast.bytes_sent) == (reference.packets_sent, reference.bytes_sent)
            assert (fast.out.tally.unreported_packets, fast.out.tally.unreported_bytes) == (
                reference.out.tally.unreported_packets, reference.out.tally.unreported_bytes)
            assert fast.out.sequencer.last_sequence_number == reference.out.sequencer.last_sequence_number
            for seq in range(1000, 1300):
                assert fast.out.cache.get(seq) == reference.out.cache.get(seq)
            writer = fast.out.writer
            # only the first packet (the switch to the relay) took DownTrack.write; the C step sent the rest
            assert writer.packets == 1 and writer.sink is not None
            assert writer.sink.stats["packets"] == fast.packets_sent and writer.sink.stats["errors"] == 0
        assert reports["fast"] == reports["reference"] and len(reports["fast"]) > 150

        # a NACK is answered from the cache the C step filled (the client's SRTP drops the copies as replays:
        # a plain resend repeats the SRTP index; browsers negotiate RTX)
        sink = fast_v.out.writer.sink
        before = sink.stats["packets"]
        fast_v.on_nack([1100, 1101, 4000])
        assert sink.stats["packets"] == before + 2
    finally:
        await client.close()
        await server.close()


@needs_c
async def test_c_step_munges_simulcast_switches_like_the_python_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
    server, client = await connected_pair()
    received: list[bytes] = []
    try:
        hooks.tap_rtp(client.getTransceivers()[0].receiver.transport,
                      lambda data, arrival_ms: received.append(bytes(data)))
        layers = [TrackRelay("video", lambda ssrc: None) for _ in range(2)]
        for relay in layers:
            relay.update_codecs({96: "video/vp8"})
        reports: dict[str, list[tuple[int, int, int]]] = {"fast": [], "reference": []}
        fast, reference, capture = pair_of_downtracks(layers, server.getTransceivers()[0].sender, "video/vp8",
                                                      100, 0xCCCC, 90000, reports, layer=1)
        assert type(fast.munger) is fastpath.Vp8Munger
        for n in range(120):  # the high layer, then a switch down at the low layer's key frame
            if n == 60:
                fast.select_layer(0)
                reference.select_layer(0)
            layers[1].forward(rtp(96, 100 + n, 3000 * n, 0x7, vp8_payload(n == 0, n, 20000 + n), True, True))
            layers[0].forward(rtp(96, 900 + n, 3000 * n, 0x8, vp8_payload(n == 70, n, 300 + n), True, False))
        assert len(capture.packets) == 71 + 50  # the high layer up to the low one's key frame (n = 70), then low
        deadline = time.monotonic() + 10
        while len(received) < len(capture.packets):
            assert time.monotonic() < deadline, len(received)
            await asyncio.sleep(0.05)
        # the switch's timestamp gap comes from the wall clock between the two downtracks' writes: compare
        # timestamps as steps, everything else byte for byte
        assert [p[:4] + p[8:] for p in received] == [p[:4] + p[8:] for p in capture.packets]
        assert steps(received) == steps(capture.packets)
        picture_ids = [(p[header_size(p) + 2] & 0x7F) << 8 | p[header_size(p) + 3] for p in received]
        assert picture_ids == [(20000 + i) & 0x7FFF for i in range(121)], "picture ids continue across the switch"
        # DownTrack.write took the two switches and the 11 high-layer packets while the switch was pending
        assert fast.out.writer.packets == 2 + 11
        assert fast.packets_sent == reference.packets_sent == 121
    finally:
        await client.close()
        await server.close()


@needs_c
def test_sender_report_bookkeeping_matches_python() -> None:
    class Sender:
        pass

    c_sender, py_sender = Sender(), Sender()
    for sender in (c_sender, py_sender):
        for name in ("ntp_timestamp", "rtp_timestamp", "octet_count", "packet_count"):
            setattr(sender, f"_RTCRtpSender__{name}", 0)
    fastpath.feed_sender_report(c_sender, 123456, 1000, 3)
    hooks._feed_sender_report(py_sender, 123456, 1000, 3)  # type: ignore[arg-type]
    fastpath.feed_sender_report(c_sender, 0xFFFFFFFF, 20)
    hooks._feed_sender_report(py_sender, 0xFFFFFFFF, 20)  # type: ignore[arg-type]
    for name in ("rtp_timestamp", "octet_count", "packet_count"):
        assert getattr(c_sender, f"_RTCRtpSender__{name}") == getattr(py_sender, f"_RTCRtpSender__{name}")
    c_ntp, py_ntp = c_sender._RTCRtpSender__ntp_timestamp, py_sender._RTCRtpSender__ntp_timestamp  # type: ignore[attr-defined]
    assert abs(c_ntp - py_ntp) < (1 << 32) // 100  # the same clock, read 10 ms apart at most
