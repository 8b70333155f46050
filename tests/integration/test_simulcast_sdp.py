"""What the server sends a simulcast publisher keeps receiving simulcast (a browser sends only its
first layer otherwise, and refuses a re-offer that forgets it)."""

from __future__ import annotations

from sfu.client import SfuClient
from sfu.testing.simulcast import SimulcastPublisher
from tests.conftest import ServerProcess
from tests.integration.peers import Participant, wait_until


async def test_answer_and_later_offers_to_a_simulcast_publisher_carry_rid_and_simulcast_recv(
        sfu_server: ServerProcess) -> None:
    client = SfuClient(sfu_server.url, "sdp", "pub", data=True)  # data channels put m=application in too
    await client.connect()
    publisher = SimulcastPublisher(client)
    viewer = Participant(sfu_server.url, "sdp", "viewer")
    try:
        await publisher.start()
        answer = [m for m in client.messages if m["type"] == "answer"][-1]["sdp"]
        for line in ("a=rid:q recv", "a=rid:h recv", "a=rid:f recv", "a=simulcast:recv q;h;f",
                     "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"):
            assert line in answer, f"the answer lacks {line}"
        await viewer.join(video_size=(160, 90), audio=False)  # the server now offers the publisher a track
        assert await wait_until(lambda: any(m["type"] == "offer" for m in client.messages), 10)
        offer = [m for m in client.messages if m["type"] == "offer"][-1]["sdp"]
        assert "a=simulcast:recv q;h;f" in offer and "a=rid:f recv" in offer, "a re-offer forgot simulcast"
    finally:
        await viewer.close()
        await publisher.stop()
        await client.close()
