"""Group-call features on the server: mute/unmute and the active speaker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiortc import RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

from sfu.client import SfuClient
from tests.conftest import ServerProcess
from tests.integration.peers import Participant, PatternVideo, ToneAudio, wait_until

pytestmark = [pytest.mark.slow]


def count_plis(publisher: Participant, into: list[float]) -> None:
    transceiver = next(t for t in publisher.client.pc.getTransceivers() if t.kind == "video")
    original = transceiver.sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            into.append(time.monotonic())
        await original(packet)

    transceiver.sender._handle_rtcp_packet = handle


async def test_muted_video_stops_without_keyframe_requests_and_resumes_on_unmute(sfu_server: ServerProcess) -> None:
    publisher = Participant(sfu_server.url, "mute", "pub")
    viewer = Participant(sfu_server.url, "mute", "viewer")
    plis: list[float] = []
    try:
        await publisher.join(video_size=(320, 180))
        count_plis(publisher, plis)
        await viewer.join(video_size=None, audio=False)
        pid = publisher.client.participant_id or ""
        assert await wait_until(lambda: bool(viewer.from_participant(pid, "video")), 20)
        video = viewer.from_participant(pid, "video")[0]
        assert await wait_until(lambda: video.frames > 15, 20)
        track_id = video.track_id
        muted_event = viewer.client.expect("track_muted")
        await publisher.client.send("mute", track_id=track_id, muted=True)
        assert (await asyncio.wait_for(muted_event, 10))["track_id"] == track_id
        await asyncio.sleep(0.5)
        frames, pli_count = video.frames, len(plis)
        await asyncio.sleep(3)
        assert video.frames <= frames + 1, "frames kept arriving while muted"
        assert len(plis) == pli_count, "the publisher was asked for key frames while muted"
        late = Participant(sfu_server.url, "mute", "late")  # joins while muted: told by the track's state
        await late.join(video_size=None, audio=False)
        joined = next(m for m in late.client.messages if m["type"] == "joined")
        assert next(t for t in joined["tracks"] if t["id"] == track_id)["muted"] is True
        await late.close()
        unmuted_event = viewer.client.expect("track_unmuted")
        started = time.monotonic()
        await publisher.client.send("mute", track_id=track_id, muted=False)
        await asyncio.wait_for(unmuted_event, 10)
        assert await wait_until(lambda: video.frames > frames + 1, 10), "video did not resume after unmute"
        first_frame_s = video.frame_times[frames + 1] - started if len(video.frame_times) > frames + 1 else None
        print(f"time to first frame after unmute: {first_frame_s:.3f} s" if first_frame_s else "")
        assert await wait_until(lambda: video.frames > frames + 20, 10), "video stalled after unmute"
        other = Participant(sfu_server.url, "mute", "other")  # someone else cannot mute it
        await other.join(video_size=None, audio=False)
        error = other.client.expect("error", lambda m: m["code"] == "unknown_track")
        await other.client.send("mute", track_id=track_id, muted=True)
        await asyncio.wait_for(error, 10)
        await other.close()
    finally:
        await viewer.close()
        await publisher.close()


async def test_the_loud_speaker_is_announced_and_a_short_burst_does_not_take_the_floor(
        sfu_server: ServerProcess) -> None:
    tones = {"alice": ToneAudio(440, 8000), "bob": ToneAudio(660, 0)}
    people = {name: SfuClient(sfu_server.url, "talk", name) for name in tones}
    listener = SfuClient(sfu_server.url, "talk", "listener")
    try:
        for name, client in people.items():
            await client.connect([(tones[name], "microphone")])
        await listener.connect()
        ids = {name: client.participant_id for name, client in people.items()}

        def dominant() -> str | None:
            events = [m for m in listener.messages if m["type"] == "active_speakers"]
            if not events or not events[-1]["speakers"]:
                return None
            return next(n for n, i in ids.items() if i == events[-1]["speakers"][0]["participant_id"])

        assert await wait_until(lambda: dominant() == "alice", 10), dominant()
        # a 250 ms burst from bob does not move the floor
        tones["bob"].amplitude = 12000
        await asyncio.sleep(0.25)
        tones["bob"].amplitude = 0
        await asyncio.sleep(1.5)
        assert dominant() == "alice", "a short burst took the floor"
        # they swap: the event follows within about a second
        tones["alice"].amplitude, tones["bob"].amplitude = 0, 8000
        swapped = time.monotonic()
        assert await wait_until(lambda: dominant() == "bob", 3), dominant()
        print(f"active speaker followed the swap in {time.monotonic() - swapped:.2f} s")
        assert time.monotonic() - swapped <= 1.6
    finally:
        for client in [*people.values(), listener]:
            await client.close()


async def test_screen_share_beside_the_camera_is_labelled_decoded_and_ends_when_stopped(
        sfu_server: ServerProcess) -> None:
    presenter = SfuClient(sfu_server.url, "share", "presenter")
    viewer = Participant(sfu_server.url, "share", "viewer")
    try:
        await presenter.connect([(PatternVideo(320, 180), "camera"), (PatternVideo(480, 270), "screen")])
        published = {m["track"]["source"]: m["track"] for m in presenter.messages if m["type"] == "track_published"}
        assert set(published) == {"camera", "screen"}
        await viewer.join(video_size=None, audio=False)
        assert await wait_until(lambda: all(
            viewer.received.get(published[s]["id"]) is not None and viewer.received[published[s]["id"]].frames > 10
            for s in ("camera", "screen")), 20), {t: r.frames for t, r in viewer.received.items()}
        assert viewer.client.tracks[published["screen"]["id"]]["source"] == "screen"
        assert viewer.received[published["screen"]["id"]].last_size == (480, 270)
        assert viewer.received[published["camera"]["id"]].last_size == (320, 180)
        # stop sharing: the m-line goes inactive in the presenter's next offer
        screen_mid = published["screen"]["mid"]
        transceiver = next(t for t in presenter.pc.getTransceivers() if t.mid == screen_mid)
        transceiver.direction = "inactive"
        answer = presenter.expect("answer")
        await presenter.pc.setLocalDescription(await presenter.pc.createOffer())
        await presenter.send("offer", sdp=presenter.pc.localDescription.sdp)
        await presenter.pc.setRemoteDescription(
            RTCSessionDescription(sdp=(await asyncio.wait_for(answer, 10))["sdp"], type="answer"))
        gone = await viewer.client.wait_for("track_unpublished", 10,
                                            lambda m: m["track_id"] == published["screen"]["id"])
        assert gone["participant_id"] == presenter.participant_id
        assert await wait_until(lambda: viewer.received[published["screen"]["id"]].ended, 10)
        camera = viewer.received[published["camera"]["id"]]
        frames = camera.frames
        assert await wait_until(lambda: camera.frames > frames + 10, 10), "the camera stopped with the screen"
    finally:
        await viewer.close()
        await presenter.close()
