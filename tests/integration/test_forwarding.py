"""The core SFU, end to end: real `sfu serve`, real aiortc participants on loopback."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import ServerProcess
from tests.integration.peers import (
    Participant,
    http_json,
    tap_received_payloads,
    tap_sent_payloads,
    wait_until,
)

pytestmark = [pytest.mark.slow]

SIZES = [(320, 180), (352, 288), (240, 160), (176, 144)]


async def join_all(url: str, room: str, count: int, sizes: list[tuple[int, int]] = SIZES) -> list[Participant]:
    participants = []
    for i in range(count):
        participant = Participant(url, room, f"p{i}")
        await participant.join(video_size=sizes[i])
        participants.append(participant)
    return participants


def decoding_everyone(participants: list[Participant], min_frames: int = 10) -> bool:
    for me in participants:
        for other in participants:
            if other is me:
                continue
            video = me.from_participant(other.client.participant_id or "", "video")
            audio = me.from_participant(other.client.participant_id or "", "audio")
            if not video or video[0].frames < min_frames or not audio or audio[0].frames < min_frames:
                return False
    return True


async def test_three_participants_each_decode_the_others_audio_and_video(sfu_server: ServerProcess) -> None:
    participants = await join_all(sfu_server.url, "three", 3)
    try:
        assert await wait_until(lambda: decoding_everyone(participants), 30), [
            {tid: (r.kind, r.frames) for tid, r in p.received.items()} for p in participants]
        for i, me in enumerate(participants):
            for j, other in enumerate(participants):
                if i == j:
                    continue
                video = me.from_participant(other.client.participant_id or "", "video")[0]
                assert video.sizes == {SIZES[j]}, f"p{i} got p{j}'s video at {video.sizes}, sent {SIZES[j]}"
    finally:
        for participant in participants:
            await participant.close()


async def test_forwarded_payloads_are_the_published_bytes_and_no_codec_runs_on_the_server(
        sfu_server: ServerProcess) -> None:
    publisher = Participant(sfu_server.url, "bytes", "pub")
    subscriber = Participant(sfu_server.url, "bytes", "sub")
    sent: dict[int, str] = {}
    received: list[str] = []
    try:
        await publisher.join(video_size=(320, 180))
        video_tx = next(t for t in publisher.client.pc.getTransceivers() if t.kind == "video")
        tap_sent_payloads(video_tx, sent)
        subscriber.client.on_track = _chain(subscriber.client.on_track, received)
        await subscriber.join(video_size=None, audio=False)
        assert await wait_until(lambda: len(received) > 150, 30), f"received {len(received)} packets"
        sent_hashes = set(sent.values())
        unmatched = [h for h in received if h not in sent_hashes]
        assert not unmatched, f"{len(unmatched)} of {len(received)} payloads differ from what was sent"
        video = subscriber.from_participant(publisher.client.participant_id or "", "video")[0]
        assert video.frames > 0 and video.sizes == {(320, 180)}
        counts = http_json(f"{sfu_server.url}/debug/objects")
        assert counts["codecs"] == {}, f"codec objects in the server: {counts['codecs']}"
        assert counts["gc_frozen"] > 10_000, "start-up objects are out of the collector's way (server.gc_freeze)"
        if counts["fastpath"]["enabled"]:  # the C step forwarded these payloads (tests/integration/test_fastpath.py)
            assert counts["fastpath"]["served_in_c"] > 150, counts["fastpath"]
    finally:
        await subscriber.close()
        await publisher.close()


def _chain(on_track, received: list[str]):  # type: ignore[no-untyped-def]
    def handler(track_id, info, track, transceiver):  # type: ignore[no-untyped-def]
        if track.kind == "video":
            tap_received_payloads(transceiver, received)
        on_track(track_id, info, track, transceiver)
    return handler


async def test_leaving_participant_ends_its_tracks_and_late_joiner_gets_everyone(
        sfu_server: ServerProcess) -> None:
    participants = await join_all(sfu_server.url, "churn", 3)
    late: Participant | None = None
    try:
        assert await wait_until(lambda: decoding_everyone(participants), 30)
        leaver, stayers = participants[2], participants[:2]
        leaver_id = leaver.client.participant_id or ""
        offers_before = [sum(m["type"] == "offer" for m in p.client.messages) for p in stayers]
        await leaver.close()
        for p, before in zip(stayers, offers_before, strict=True):
            await p.client.wait_for("participant_left", 10, lambda m: m["participant_id"] == leaver_id)
            gone = p.from_participant(leaver_id, "video") + p.from_participant(leaver_id, "audio")
            assert await wait_until(lambda g=gone: all(r.ended for r in g), 10), "leaver's tracks did not end"
            # renegotiated: a server offer after the leave, with the leaver's m-lines inactive
            assert await wait_until(
                lambda p=p, b=before: sum(m["type"] == "offer" for m in p.client.messages) > b, 10)
            last_offer = [m for m in p.client.messages if m["type"] == "offer"][-1]
            assert not set(last_offer["mids"].values()) & {
                r.track_id for r in gone}, "the leaver's tracks are still offered"
            assert "a=inactive" in last_offer["sdp"]
        late = Participant(sfu_server.url, "churn", "late")
        await late.join(video_size=SIZES[3])
        everyone = [*stayers, late]
        assert await wait_until(lambda: decoding_everyone(everyone), 30), [
            {tid: (r.kind, r.frames) for tid, r in p.received.items()} for p in everyone]
        assert len(late.received) == 4  # two participants x (audio + video), nothing of the leaver
    finally:
        for participant in [*participants[:2], *([late] if late else [])]:
            await participant.close()
        await asyncio.sleep(0)
