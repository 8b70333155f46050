"""Data channels relayed by the server: reliable and lossy, broadcast and addressed, limited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import ServerProcess
from tests.integration.peers import Participant, wait_until

pytestmark = [pytest.mark.slow]


class Inbox:
    def __init__(self, participant: Participant) -> None:
        self.messages: list[tuple[str, Any, bool]] = []
        participant.client.on_data = lambda sender, data, reliable: self.messages.append((sender, data, reliable))

    def numbered(self, sender: str, reliable: bool = True) -> list[int]:
        return [d["n"] for s, d, r in self.messages
                if s == sender and r == reliable and isinstance(d, dict) and "n" in d]


async def room_of_three(url: str) -> list[Participant]:
    people = [Participant(url, "data", f"p{i}", data=True) for i in range(3)]
    for person in people:
        await person.join(video_size=(160, 90))
    for person in people:
        await person.client.wait_data_open()
    return people


def video_frames(me: Participant, others: list[Participant]) -> list[int]:
    out = []
    for other in others:
        videos = me.from_participant(other.client.participant_id or "", "video")
        out.append(videos[0].frames if videos else 0)
    return out


async def test_reliable_messages_arrive_complete_and_in_order_with_the_sender(sfu_server: ServerProcess) -> None:
    a, b, c = people = await room_of_three(sfu_server.url)
    inboxes = {p.client.name: Inbox(p) for p in people}
    try:
        sender = a.client.participant_id or ""
        for n in range(1000):  # 90 messages/s: under the per-participant rate limit
            a.client.send_data({"n": n})
            if n % 9 == 8:
                await asyncio.sleep(0.1)
        for name in ("p1", "p2"):
            assert await wait_until(lambda name=name: len(inboxes[name].numbered(sender)) == 1000, 20), \
                len(inboxes[name].numbered(sender))
            assert inboxes[name].numbered(sender) == list(range(1000)), "reliable messages out of order or lost"
        assert not inboxes["p0"].messages, "the sender does not get its own messages back"
        # lossy: unordered, no retransmission; on loopback they arrive
        for n in range(50):
            b.client.send_data({"n": n}, reliable=False)
        lossy_sender = b.client.participant_id or ""
        assert await wait_until(lambda: len(inboxes["p0"].numbered(lossy_sender, reliable=False)) >= 45, 10)
        # addressed to one identity: only that one gets it
        c.client.send_data({"secret": 1}, to=[a.client.participant_id or ""])
        assert await wait_until(lambda: any(d == {"secret": 1} for _, d, _ in inboxes["p0"].messages), 10)
        await asyncio.sleep(0.5)
        assert not any(d == {"secret": 1} for _, d, _ in inboxes["p1"].messages)
        # binary payloads, with the sender's id
        a.client.send_data(b"\x00\x01binary")
        assert await wait_until(lambda: (sender, b"\x00\x01binary", True) in inboxes["p2"].messages, 10)
    finally:
        for person in people:
            await person.close()


async def test_oversized_and_flooding_senders_get_errors_while_the_others_carry_on(sfu_server: ServerProcess) -> None:
    a, b, c = people = await room_of_three(sfu_server.url)
    inboxes = {p.client.name: Inbox(p) for p in people}
    try:
        assert await wait_until(lambda: min(video_frames(b, [a, c]) + video_frames(c, [a, b])) > 5, 20)
        too_large = a.client.expect("error", lambda m: m["code"] == "data_too_large")
        a.client.send_data({"blob": "x" * 70_000})
        assert (await asyncio.wait_for(too_large, 10))["message"]
        limited = a.client.expect("error", lambda m: m["code"] == "data_rate_limited")
        frames_before = video_frames(b, [c]) + video_frames(c, [b])
        for n in range(1000):  # 10x the rate limit for one second
            a.client.send_data({"flood": n})
            if n % 100 == 99:
                await asyncio.sleep(0.1)
        await asyncio.wait_for(limited, 10)
        # meanwhile b and c keep exchanging media and data
        b_id = b.client.participant_id or ""
        for n in range(20):
            b.client.send_data({"n": n})
        assert await wait_until(lambda: inboxes["p2"].numbered(b_id) == list(range(20)), 10)
        assert await wait_until(lambda: all(x > y + 10 for x, y in zip(
            video_frames(b, [c]) + video_frames(c, [b]), frames_before, strict=True)), 15)
        flood = [d for s, d, _ in inboxes["p1"].messages if isinstance(d, dict) and "flood" in d]
        assert len(flood) < 1000, "the flood was not limited"
    finally:
        for person in people:
            await person.close()
