"""The slow subscriber of test_slow_subscriber.py, run inside its network namespace
(`ip netns exec NS python -m tests.network.slow_subscriber URL ROOM SECONDS`): receives the room's
video and prints one JSON line per 0.5 s with what reached it (media and RTX packets, bytes) and
what it decoded, so the test can show it was slowed, not cut. `newest` is the CRC-32 of the payload of
the newest media packet and when it arrived (CLOCK_MONOTONIC, which namespaces share): the test knows
when the publisher sent it, so how far behind the live stream this subscriber is."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zlib
from typing import Any

from tests.integration.peers import Participant, on_video_packets


def count_packets(me: Participant, counts: dict[str, Any]) -> None:
    """Count the video packets reaching the receiver, before its jitter buffer: media and RTX
    (a retransmission answering one of its NACKs) apart."""
    media_pts: set[int] = set()

    def seen(packet: Any) -> None:
        if not media_pts:  # the first packet of a new stream is media (RTX answers NACKs)
            media_pts.add(packet.payload_type)
        if packet.payload_type in media_pts:
            counts["packets"] += 1
            counts["newest"] = [zlib.crc32(packet.payload), time.monotonic()]
        else:
            counts["rtx_packets"] += 1
        counts["bytes"] += len(packet.payload) + 12

    on_video_packets(me, seen)


async def main(url: str, room: str, seconds: float) -> None:
    me = Participant(url, room, "slow")
    counts: dict[str, Any] = {"packets": 0, "rtx_packets": 0, "bytes": 0, "newest": None}
    count_packets(me, counts)
    await me.join(video_size=None, audio=False)
    start = time.monotonic()
    try:
        while time.monotonic() - start < seconds:
            await asyncio.sleep(0.5)
            video = [r for r in me.received.values() if r.kind == "video"]
            print(json.dumps({"t": time.monotonic(), "video_frames": video[0].frames if video else 0, **counts}),
                  flush=True)
    finally:
        await me.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
