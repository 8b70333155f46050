"""Every limit a client can cross is configurable, answered with its documented error code, and
costs the healthy participants of the room nothing: their video keeps decoding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sfu.client import SfuClient
from sfu.signaling.rate_limit import TokenBucket
from tests.conftest import start_server
from tests.integration.peers import Participant, metric
from tests.integration.test_bad_input import _open, expect_error, frames_keep_rising

LIMITS = {"SFU_ROOMS__MAX_PARTICIPANTS": "3", "SFU_ROOMS__MAX_ROOMS": "2", "SFU_ROOMS__MAX_TRACKS_PER_PARTICIPANT": "2",
          "SFU_ROOMS__MAX_SUBSCRIPTIONS_PER_PARTICIPANT": "1", "SFU_SIGNALING__MESSAGES_PER_S": "5",
          "SFU_SIGNALING__MESSAGE_BURST": "10", "SFU_SIGNALING__MAX_RATE_LIMITED": "20"}


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=5, burst=10)
    now = bucket._last_s
    assert all(bucket.take(now) for _ in range(10))
    assert not bucket.take(now)
    assert bucket.take(now + 0.21) and not bucket.take(now + 0.21), "one token per 1/rate seconds"
    assert sum(bucket.take(now + 100) for _ in range(20)) == 10, "never more than the burst"


async def joined(url: str, room: str, name: str, auto_subscribe: bool = True) -> SfuClient:
    client = SfuClient(url, room, name, auto_subscribe=auto_subscribe)
    await client.connect()
    return client


@pytest.mark.slow
async def test_each_limit_answers_its_code_and_the_room_keeps_forwarding(tmp_path: Path) -> None:
    server = start_server(tmp_path, env=LIMITS)
    pair = [Participant(server.url, "limits", "healthy-a"), Participant(server.url, "limits", "healthy-b")]
    clients: list[SfuClient] = []
    try:
        for participant in pair:
            await participant.join(video_size=(240, 160), audio=False)  # one track each: one subscription
        assert await frames_keep_rising(pair), "healthy pair never started"

        # subscriptions per participant: 1
        watcher = await joined(server.url, "limits", "watcher", auto_subscribe=False)
        clients.append(watcher)
        tracks = [t for t in watcher.tracks]
        assert len(tracks) == 2
        await expect_error(watcher, "too_many_subscriptions", lambda: watcher.send("subscribe", track_ids=tracks))
        # participants per room: 3
        late = SfuClient(server.url, "limits", "late")
        clients.append(late)
        await _open(late)
        await expect_error(late, "room_full", lambda: late.send("join", room="limits"))
        # rooms per node: 2 ("limits" and this one)
        other = await joined(server.url, "other", "other")
        clients.append(other)
        await expect_error(late, "too_many_rooms", lambda: late.send("join", room="third"))
        # tracks per participant: 2
        assert other.pc is not None
        for _ in range(3):
            other.pc.addTransceiver("audio", direction="sendonly")
        await other.pc.setLocalDescription(await other.pc.createOffer())
        await expect_error(other, "too_many_tracks", lambda: other.send("offer", sdp=other.pc.localDescription.sdp))
        # message size (signaling.max_message_bytes)
        await expect_error(late, "too_large", lambda: late.send("ping", pad="x" * 300_000))
        assert await frames_keep_rising(pair), "the healthy pair stalled while limits were crossed"

        # messages per second: a burst of 10, then `rate_limited`; 20 of those close the socket (1008)
        flooder = SfuClient(server.url, "limits", "flooder")
        clients.append(flooder)
        await _open(flooder)
        limited = flooder.expect("error", lambda m: m["code"] == "rate_limited")
        for _ in range(40):
            await flooder.send("ping")
        await asyncio.wait_for(limited, 10)
        assert flooder._ws is not None
        await asyncio.wait_for(flooder._reader, 10)  # type: ignore[arg-type]  # the server closed it
        assert flooder._ws.closed and flooder._ws.close_code == 1008, flooder._ws.close_code
        assert await frames_keep_rising(pair), "the healthy pair stalled after the flood"
        for code in ("rate_limited", "too_many_rooms", "too_many_tracks", "too_many_subscriptions", "room_full"):
            assert metric(server.url, f'sfu_signaling_errors_total{{code="{code}"}}') >= 1, code
    finally:
        for client in clients:
            await client.close()
        for participant in pair:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]


