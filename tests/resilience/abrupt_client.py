"""A participant in its own process that stops at a given stage of joining, prints
`REACHED <participant id or ->` and then either closes its WebSocket without `leave`
(`--end ws_close`) or waits to be SIGKILLed (`--end sigkill`).

    python -m tests.resilience.abrupt_client URL ROOM STAGE --end sigkill
Stages: join, offer, ice, dtls, media (see STAGES)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiortc import RTCDtlsTransport, RTCSessionDescription

from sfu.client import SfuClient
from tests.integration.peers import PatternVideo, ToneAudio

STAGES = {
    "join": "the join is sent; the client goes before `joined` arrives",
    "offer": "joined, the offer with two tracks is sent; the client goes before the answer",
    "ice": "the answer arrived but is never applied: the server's ICE agent checks a peer that never answers",
    "dtls": "ICE completed, the client never starts its DTLS handshake",
    "media": "connected and sending audio and video for two seconds",
}


def reached(participant_id: str | None) -> None:
    print(f"REACHED {participant_id or '-'}", flush=True)


async def stop_at(client: SfuClient, stage: str) -> None:
    await client_socket(client)
    joined = client.expect("joined")
    await client.send("join", room=client.room, name=client.name)
    if stage == "join":
        return reached(None)
    client.participant_id = (await asyncio.wait_for(joined, 10))["participant"]["id"]
    if stage == "dtls":
        async def never(self: RTCDtlsTransport, parameters: object) -> None:
            await asyncio.Future()
        RTCDtlsTransport.start = never  # type: ignore[method-assign]
    if stage in ("ice", "dtls", "offer"):
        from aiortc import RTCPeerConnection

        client.pc = RTCPeerConnection()
        client.pc.addTransceiver(ToneAudio(), direction="sendonly")
        client.pc.addTransceiver(PatternVideo(160, 120), direction="sendonly")
        await client.pc.setLocalDescription(await client.pc.createOffer())
        answer = client.expect("answer")
        await client.send("offer", sdp=client.pc.localDescription.sdp, tracks={})
        if stage == "offer":
            return reached(client.participant_id)
        msg = await asyncio.wait_for(answer, 10)
        if stage == "ice":
            return reached(client.participant_id)
        await client.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        deadline = time.monotonic() + 10
        while client.pc.iceConnectionState != "completed" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return reached(client.participant_id)
    # media: a whole join, then two seconds of audio and video
    from aiortc import RTCPeerConnection

    client.pc = RTCPeerConnection()
    await client.publish_many([(ToneAudio(), "microphone"), (PatternVideo(160, 120), "camera")])
    await asyncio.sleep(2)
    reached(client.participant_id)


async def client_socket(client: SfuClient) -> None:
    import aiohttp

    client._session = aiohttp.ClientSession()
    client._ws = await client._session.ws_connect(client.url.replace("http", "ws", 1) + "/ws")
    client._reader = asyncio.ensure_future(client._read())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--end", choices=("ws_close", "sigkill"), required=True)
    args = parser.parse_args()
    client = SfuClient(args.url, args.room, f"abrupt-{args.stage}")
    await stop_at(client, args.stage)
    if args.end == "ws_close":
        assert client._ws is not None
        await client._ws.close()  # no `leave`; the peer connection stays open in this process
        print(json.dumps({"closed": True}), flush=True)
    await asyncio.sleep(3600)  # until killed


if __name__ == "__main__":
    asyncio.run(main())
