"""Resume after a network cut, for real: a participant in its own network namespace loses its link
(`ip link set … down`) and gets it back; the others see no leave and the track they receive from it
keeps decoding as the same track. Cut past the grace period, it is removed and the others are told.

    root namespace: sfu serve, watcher   198.18.21.1 ── 198.18.21.2  NS: the travelling participant
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import start_server
from tests.integration.peers import Participant, wait_until
from tests.network.netns import NamespaceProcess, run, veth_namespace

pytestmark = [pytest.mark.slow]

HOST_ADDRESS, NS_ADDRESS = "198.18.21.1", "198.18.21.2"


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    with veth_namespace("sfurs", HOST_ADDRESS, NS_ADDRESS) as names:
        yield names


def start_traveller(namespace: str, port: int, room: str, seconds: float) -> NamespaceProcess:
    """tests/network/resuming_peer.py in the namespace."""
    return NamespaceProcess(namespace, "tests.network.resuming_peer", f"http://{HOST_ADDRESS}:{port}", room,
                            str(seconds), empty={"frames": 0, "id": None, "state": "-", "resumes": 0})


async def test_a_cut_shorter_than_the_grace_period_resumes_without_anyone_noticing(
        namespace: tuple[str, str], tmp_path: Path) -> None:
    ns, host_if = namespace
    server = start_server(tmp_path, "--resume-grace", "15", host="0.0.0.0")
    watcher = Participant(f"http://127.0.0.1:{server.port}", "cut", "watcher")
    traveller: NamespaceProcess | None = None
    try:
        await watcher.join(video_size=(160, 120))
        traveller = start_traveller(ns, server.port, "cut", 60)
        assert await wait_until(lambda: traveller.last["frames"] > 20, 30), traveller.last
        traveller_id = traveller.last["id"]
        assert await wait_until(lambda: bool(watcher.from_participant(traveller_id, "video")), 10)
        received = watcher.from_participant(traveller_id, "video")[0]
        assert await wait_until(lambda: received.frames > 20, 15)
        published_before = [m for m in watcher.client.messages
                            if m["type"] == "track_published" and m["track"]["participant_id"] == traveller_id]
        run("ip", "link", "set", host_if, "down")
        await wait_until(lambda: False, 5)
        frames_to_traveller, frames_from_traveller = traveller.last["frames"], received.frames
        run("ip", "link", "set", host_if, "up")
        restored, restored_wall = time.monotonic(), time.time()
        async def flowing(predicate: Any) -> float | None:
            return time.monotonic() - restored if await wait_until(predicate, 10, interval_s=0.05) else None

        to_traveller_s, from_traveller_s = await asyncio.gather(
            flowing(lambda: traveller.last["frames"] > frames_to_traveller + 2),
            flowing(lambda: received.frames > frames_from_traveller + 2))
        assert to_traveller_s is not None, traveller.last
        assert from_traveller_s is not None, "no media from it"
        print(f"media flowed again {to_traveller_s:.2f} s (to it) and {from_traveller_s:.2f} s (from it) "
              f"after the link came back; resumes: {traveller.last['resumes']}, resumed (socket + join + publish) "
              f"{traveller.last['resumed_at'] - restored_wall:.2f} s after it", file=sys.stderr)
        assert traveller.last["resumes"] >= 1, "the traveller never resumed (was the cut noticed?)"
        assert to_traveller_s <= 3 and from_traveller_s <= 3
        assert not [m for m in watcher.client.messages if m["type"] == "participant_left"]
        published_after = [m for m in watcher.client.messages
                           if m["type"] == "track_published" and m["track"]["participant_id"] == traveller_id]
        assert published_after == published_before, "a new track appeared instead of the old one continuing"
        assert watcher.from_participant(traveller_id, "video")[0] is received and not received.ended
        frames = received.frames
        assert await wait_until(lambda: received.frames > frames + 20, 10), "the resumed track stopped decoding"
    finally:
        if traveller is not None:
            traveller.stop()
        await watcher.close()
        assert server.stop() == 0, server.log()[-3000:]


async def test_a_cut_longer_than_the_grace_period_removes_the_participant(
        namespace: tuple[str, str], tmp_path: Path) -> None:
    ns, host_if = namespace
    server = start_server(tmp_path, "--resume-grace", "3", host="0.0.0.0")
    watcher = Participant(f"http://127.0.0.1:{server.port}", "gone", "watcher")
    traveller: NamespaceProcess | None = None
    try:
        await watcher.join(video_size=(160, 120))
        traveller = start_traveller(ns, server.port, "gone", 60)
        assert await wait_until(lambda: traveller.last["frames"] > 10, 30), traveller.last
        traveller_id = traveller.last["id"]
        assert await wait_until(lambda: bool(watcher.from_participant(traveller_id, "video")), 10)
        received = watcher.from_participant(traveller_id, "video")[0]
        cut = time.monotonic()
        run("ip", "link", "set", host_if, "down")
        left = await watcher.client.wait_for("participant_left", 25, lambda m: m["participant_id"] == traveller_id)
        print(f"removed {time.monotonic() - cut:.1f} s after the cut (heartbeat + 3 s grace)", file=sys.stderr)
        assert left
        assert await wait_until(lambda: received.ended, 10), "its track did not end on the watcher's side"
    finally:
        if traveller is not None:
            traveller.stop()
        await watcher.close()
        assert server.stop() == 0, server.log()[-3000:]
