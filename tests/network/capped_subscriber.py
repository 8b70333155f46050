"""A subscriber run inside a network namespace by test_bandwidth.py
(`ip netns exec NS python -m tests.network.capped_subscriber URL ROOM SECONDS`): receives the
room's simulcast video and audio and prints one JSON line per 0.5 s with what it decodes, so the
test can follow its layer, stalls and audio while tc shapes its link."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from sfu.media.keyframe import is_vp8_keyframe
from tests.integration.peers import Participant, on_video_packets


def count_packets(me: Participant, counts: dict[str, int]) -> None:
    """Count the video packets and VP8 key-frame starts that reach the receiver (diagnostics)."""

    def seen(packet: Any) -> None:
        counts["packets"] += 1
        counts["keyframes"] += is_vp8_keyframe(packet.payload)

    on_video_packets(me, seen)


async def main(url: str, room: str, seconds: float) -> None:
    me = Participant(url, room, "capped")
    counts = {"packets": 0, "keyframes": 0}
    count_packets(me, counts)
    await me.join(video_size=None, audio=False)
    start = time.monotonic()
    wall_offset_s = time.time() - time.monotonic()  # frame times are monotonic; the test uses wall time
    reported = 0
    try:
        while time.monotonic() - start < seconds:
            await asyncio.sleep(0.5)
            video = [r for r in me.received.values() if r.kind == "video"]
            audio = [r for r in me.received.values() if r.kind == "audio"]
            quality = [(m["layer"], m["reason"], m["estimate_bps"]) for m in me.client.messages
                       if m["type"] == "quality_changed"]
            line = {
                "t": time.time(),
                "video_frames": video[0].frames if video else 0,
                "size": video[0].last_size if video else None,
                "audio_frames": audio[0].frames if audio else 0,
                "frame_times": [round(t + wall_offset_s, 3)
                                for t in (video[0].frame_times[reported:] if video else [])],
                "quality": quality,
                "video_packets": counts["packets"],
                "keyframes": counts["keyframes"],
            }
            reported = len(video[0].frame_times) if video else 0
            print(json.dumps(line), flush=True)
    finally:
        await me.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
