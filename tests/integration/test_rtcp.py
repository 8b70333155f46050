"""RTCP through the server: NACKs answered from the server's cache, PLIs relayed and throttled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, RtpPacket

from tests.conftest import ServerProcess
from tests.integration.peers import Participant, metric, wait_until

pytestmark = [pytest.mark.slow]

DROP_EVERY = 10  # the subscriber drops every 10th video packet the first time it sees it


def count_plis_at_publisher(publisher: Participant, into: list[float]) -> None:
    """Record when the publisher's video sender receives a PLI."""
    transceiver = next(t for t in publisher.client.pc.getTransceivers() if t.kind == "video")
    sender = transceiver.sender
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            into.append(asyncio.get_running_loop().time())
        await original(packet)

    sender._handle_rtcp_packet = handle


def induce_loss(subscriber: Participant, dropped: set[int], recovered: set[int]) -> None:
    """Drop every Nth video packet on arrival (before aiortc's receiver sees it); record which
    dropped sequence numbers come back later, as RTX (RFC 4588 OSN) or as the packet itself."""
    original_on_track = subscriber.client.on_track

    def on_track(track_id, info, track, transceiver):  # type: ignore[no-untyped-def]
        if track.kind == "video":
            receiver = transceiver.receiver
            original = receiver._handle_rtp_packet
            seen = {"n": 0}
            rtx_payload_types = _rtx_payload_types(transceiver)

            async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
                if packet.payload_type in rtx_payload_types:
                    recovered.add(int.from_bytes(packet.payload[:2], "big"))
                elif packet.sequence_number in dropped:
                    recovered.add(packet.sequence_number)
                else:
                    seen["n"] += 1
                    if seen["n"] % DROP_EVERY == 0 and len(dropped) < 30:
                        dropped.add(packet.sequence_number)
                        return
                await original(packet, arrival_time_ms)

            receiver._handle_rtp_packet = handle
        original_on_track(track_id, info, track, transceiver)

    subscriber.client.on_track = on_track


def _rtx_payload_types(transceiver: Any) -> set[int]:
    return {c.payloadType for c in transceiver._codecs if c.mimeType.lower() == "video/rtx"}


async def test_subscriber_losses_are_repaired_by_nack_from_the_server_cache(sfu_server: ServerProcess) -> None:
    publisher = Participant(sfu_server.url, "nack", "pub")
    subscriber = Participant(sfu_server.url, "nack", "sub")
    dropped: set[int] = set()
    recovered: set[int] = set()
    try:
        await publisher.join(video_size=(320, 180), audio=False)
        induce_loss(subscriber, dropped, recovered)
        await subscriber.join(video_size=None, audio=False)
        assert await wait_until(lambda: len(dropped) >= 20, 30), f"only {len(dropped)} packets dropped"
        assert await wait_until(lambda: len(dropped - recovered) <= 2, 15), (
            f"dropped {sorted(dropped)}, never recovered {sorted(dropped - recovered)}")
        assert metric(sfu_server.url, "sfu_nack_packets_resent_total") >= len(dropped) - 2
        video = subscriber.from_participant(publisher.client.participant_id or "", "video")[0]
        frames = video.frames
        assert await wait_until(lambda: video.frames > frames + 15, 10), "video stopped decoding"
    finally:
        await subscriber.close()
        await publisher.close()


async def test_subscriber_pli_reaches_the_publisher_throttled(sfu_server: ServerProcess) -> None:
    publisher = Participant(sfu_server.url, "pli", "pub")
    subscriber = Participant(sfu_server.url, "pli", "sub")
    plis: list[float] = []
    try:
        await publisher.join(video_size=(320, 180), audio=False)
        count_plis_at_publisher(publisher, plis)
        await subscriber.join(video_size=None, audio=False)
        video = await _first_video(subscriber, publisher)
        assert await wait_until(lambda: video.frames > 10, 20)
        await asyncio.sleep(1.0)  # past the throttle window of the subscription's own keyframe request
        transceiver = subscriber.transceivers[video.track_id]
        receiver = transceiver.receiver
        media_ssrc = next(iter(transceiver.receiver._RTCRtpReceiver__remote_streams))
        plis.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(20):  # 20 PLIs in 2 s
            await receiver._send_rtcp_pli(media_ssrc)
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert plis, "no PLI reached the publisher"
        assert len(plis) <= 2 / 0.5 + 1, f"{len(plis)} PLIs in {loop.time() - start:.1f} s: not throttled"
        gaps = [b - a for a, b in zip(plis, plis[1:], strict=False)]
        assert all(g >= 0.45 for g in gaps), f"PLIs closer than the 500 ms throttle: {gaps}"
    finally:
        await subscriber.close()
        await publisher.close()


async def _first_video(subscriber: Participant, publisher: Participant):  # type: ignore[no-untyped-def]
    pid = publisher.client.participant_id or ""
    assert await wait_until(lambda: bool(subscriber.from_participant(pid, "video")), 20)
    return subscriber.from_participant(pid, "video")[0]
