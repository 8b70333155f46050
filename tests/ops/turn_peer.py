"""A participant run inside a network namespace by test_turn.py (`python -m tests.ops.turn_peer`):
joins, publishes a camera, counts the frames it decodes of the other participant, and prints one
JSON line with them and the type of its nominated ICE candidate. `--allocate USER PASS` instead
only tries a TURN allocation and prints whether the server accepted it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from tests.integration.peers import Participant, wait_until

LINGER_S = 6.0


def nominated_candidate_type(participant: Participant) -> str | None:
    pc = participant.client.pc
    assert pc is not None
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        pair = connection._nominated.get(1)
        if pair is not None:
            return str(pair.local_candidate.type)
    return None


async def exchange(url: str, room: str, name: str, frames: int, timeout_s: float) -> dict[str, Any]:
    me = Participant(url, room, name)
    try:
        await me.join(video_size=(160, 120), audio=False)
        ok = await wait_until(lambda: any(r.kind == "video" and r.frames >= frames for r in me.received.values()),
                              timeout_s)
        ice_servers = next(m["ice_servers"] for m in me.client.messages if m["type"] == "joined")
        return {"ok": ok, "frames": max([r.frames for r in me.received.values()] or [0]),
                "candidate": nominated_candidate_type(me), "ice_servers": ice_servers}
    finally:
        await asyncio.sleep(LINGER_S)  # stay published while the other side counts its frames
        await me.close()


async def allocate(server: str, username: str, password: str) -> dict[str, Any]:
    from aioice import turn
    from aioice.stun import TransactionFailed

    host, port = server.split(":")
    try:
        transport, _ = await turn.create_turn_endpoint(asyncio.DatagramProtocol, server_addr=(host, int(port)),
                                                       username=username, password=password, lifetime=60)
    except TransactionFailed as exc:
        return {"allocated": False, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return {"allocated": False, "error": f"{type(exc).__name__}: {exc}"}
    transport.close()
    return {"allocated": True}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--room", default="turn")
    parser.add_argument("--name", default="peer")
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=40)
    parser.add_argument("--allocate", nargs=3, metavar=("SERVER", "USER", "PASS"))
    args = parser.parse_args()
    if args.allocate:
        result = asyncio.run(allocate(*args.allocate))
    else:
        result = asyncio.run(exchange(args.url, args.room, args.name, args.frames, args.timeout))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
