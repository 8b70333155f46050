"""A participant run inside a network namespace by test_resume.py
(`ip netns exec NS python -m tests.network.resuming_peer URL ROOM SECONDS`): publishes camera and
mic, resumes by itself after a network cut, and prints a JSON line every 0.25 s with the video
frames it decoded, its state and how often it resumed."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from tests.integration.peers import Participant


async def main(url: str, room: str, seconds: float) -> None:
    me = Participant(url, room, "traveller", auto_resume=True)
    await me.join(video_size=(160, 120))
    start = time.monotonic()
    seen: dict[int, object] = {}  # a resume brings new receiving tracks: count every one ever seen
    try:
        while time.monotonic() - start < seconds:
            await asyncio.sleep(0.1)
            for received in me.received.values():
                if received.kind == "video":
                    seen[id(received)] = received
            frames = sum(r.frames for r in seen.values())  # type: ignore[attr-defined]
            print(json.dumps({"t": time.time(), "id": me.client.participant_id, "frames": frames,
                              "state": me.client.state, "resumes": me.client.resumes,
                              "resumed_at": me.client.resumed_at}), flush=True)
    finally:
        await me.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
