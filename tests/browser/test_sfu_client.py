"""The JS client module (`/web/sfu-client.js`) in headless Chromium, without the demo page:
offer collisions (perfect negotiation, polite side) and m-lines recycled for another track."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.browser.pages import mint_token, wait_for
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_publish_while_the_servers_first_offer_is_due_waits_for_it(open_client: Any) -> None:
    alice = await open_client("alice", "due")
    await alice.publish()
    assert await wait_for(lambda: alice.published(), 30, "alice's publication") == "published"

    # Bob joins without publishing (his first offer carries only his data channels) and holds
    # back what he receives from the server's first offer on: that offer, of alice's tracks,
    # stays unread while he publishes. His client must not offer meanwhile: an offer crossing the
    # server's first one would be rolled back, and Chromium keeps the header-extension ids of a
    # rolled-back offer ("RTP extension ID reassignment not supported" on the server's offer).
    bob = await open_client("bob", "due", hold_offers=True)
    await wait_for(lambda: bob.page.evaluate("h.heldTypes().includes('offer')"), 30,
                   "the server's offer to bob")
    await bob.publish()
    await asyncio.sleep(1.5)
    assert await bob.published() is None
    assert not any("new tracks {\"" in line for line in bob.log.lines), "bob offered over the server's offer"
    await bob.page.evaluate("h.release()")

    assert await wait_for(lambda: bob.published(), 30, "bob's publication") == "published"
    await bob.wait_decoding({alice.id})
    await alice.wait_decoding({bob.id})
    assert not any("offer collision" in line for line in bob.log.lines)
    assert await bob.events("error") == [] and await alice.events("error") == []
    assert not bob.log.errors and not alice.log.errors


async def test_publish_that_crosses_a_server_offer_is_rolled_back_and_sent_again(open_client: Any) -> None:
    alice = await open_client("alice", "glare")
    await alice.publish()
    bob = await open_client("bob", "glare")
    await bob.publish()
    assert await wait_for(lambda: bob.published(), 30, "bob's publication") == "published"
    await bob.wait_decoding({alice.id})

    # Bob holds back what he receives from the server's next offer on; carol's arrival makes the
    # server offer him her tracks, and that offer stays unread ...
    await bob.page.evaluate("h.hold('offer')")
    carol = await open_client("carol", "glare")
    await carol.publish()
    await wait_for(lambda: bob.page.evaluate("h.heldTypes().includes('offer')"), 30,
                   "the server's offer to bob")
    # ... while bob publishes a second video: both offers cross. The server (impolite) ignores his.
    await bob.publish("screen", {"video": {"width": 320, "height": 180}})
    await asyncio.sleep(1.5)
    await bob.page.evaluate("h.release()")

    # Bob (polite) rolls back, answers, and offers again: he sees carol, and alice gets bob's
    # second video.
    assert await wait_for(lambda: bob.published(), 30, "bob's second publication") == "published"
    assert any("offer collision" in line for line in bob.log.lines), "no collision happened"
    await bob.wait_decoding({alice.id, carol.id})

    async def bobs_two_videos() -> bool:
        return {v["source"] for v in await alice.remote()
                if v["participantId"] == bob.id and v["framesDecoded"] > 0} == {"camera", "screen"}

    await wait_for(bobs_two_videos, 30, "alice to decode bob's camera and second video")
    await alice.wait_decoding({bob.id, carol.id})
    for p in (alice, bob, carol):
        assert await p.events("error") == [] and not p.log.errors, (p.log.label, p.log.errors)


async def test_viewer_joining_after_two_publishers_receives_both(open_client: Any) -> None:
    """A participant whose first offer carries only its data channels, offered two tracks of each
    kind at once by the server, receives them all (the server must bundle every m-line of that
    offer on the one transport the client uses)."""
    alice = await open_client("alice", "viewer")
    await alice.publish()
    bob = await open_client("bob", "viewer")
    await bob.publish()
    await alice.wait_decoding({bob.id})
    viewer = await open_client("viewer", "viewer")
    try:
        await viewer.wait_decoding({alice.id, bob.id})
    except AssertionError:
        offer = str(await viewer.page.evaluate("h.client.pc.remoteDescription.sdp"))
        print("viewer's last server offer (m- and mid lines):", [
            line for line in offer.splitlines() if line.startswith(("m=", "a=mid:", "a=group:"))])
        print("viewer's videos:", await viewer.remote())
        raise


async def test_m_line_recycled_for_a_newcomer_shows_the_newcomer(open_client: Any) -> None:
    p1 = await open_client("p1", "recycle")
    await p1.publish()
    p2 = await open_client("p2", "recycle")
    await p2.publish()
    p3 = await open_client("p3", "recycle")
    await p3.publish()
    shown = await p1.wait_decoding({p2.id, p3.id})
    p3_mid = next(v["mid"] for v in shown if v["participantId"] == p3.id)

    await p3.page.evaluate("h.client.leave(); h.streams.forEach((s) => s.getTracks().forEach((t) => t.stop()))")
    await p1.wait_decoding({p2.id})
    ended = [e["trackId"] for e in await p1.events("trackended")]
    assert any(v["trackId"] in ended for v in shown if v["participantId"] == p3.id)

    # p4 takes p3's place: the server reuses p3's m-line, and p1 shows p4 there (not p3).
    p4 = await open_client("p4", "recycle")
    await p4.publish()
    now = await p1.wait_decoding({p2.id, p4.id})
    p4_mid = next(v["mid"] for v in now if v["participantId"] == p4.id)
    assert p4_mid == p3_mid, f"the server did not recycle m-line {p3_mid} (p4 came on {p4_mid})"
    assert not p1.log.errors, p1.log.errors


async def test_unpublished_camera_disappears_for_subscribers(open_client: Any) -> None:
    p1 = await open_client("p1", "unpublish")
    await p1.publish()
    p2 = await open_client("p2", "unpublish")  # only watches
    shown = await p2.wait_decoding({p1.id})

    await p1.page.evaluate("h.client.unpublish(h.streams[0].getVideoTracks()[0])")

    async def video_gone() -> bool:
        ended = {e["trackId"] for e in await p2.events("trackended")}
        return shown[0]["trackId"] in ended and await p2.remote() == []

    await wait_for(video_gone, 30, "p2 to drop p1's video")
    unpublished = [e["trackId"] for e in await p2.events("trackunpublished")]
    assert unpublished == [shown[0]["trackId"]], "only the camera goes; the microphone stays"
    assert not p1.log.errors and not p2.log.errors


async def test_publish_refused_by_the_token_rejects_and_the_viewer_still_watches(
    open_client: Any, auth_server: ServerProcess, jwt_secret: str,
) -> None:
    host = await open_client("host", "auth", mint_token(jwt_secret, "auth", "host"))
    await host.publish()
    assert await wait_for(host.published, 30, "the host's publication") == "published"

    viewer = await open_client("viewer", "auth", mint_token(jwt_secret, "auth", "viewer", "--no-publish"))
    await viewer.publish()
    outcome = await wait_for(viewer.published, 30, "the viewer's refused publication")
    assert outcome.startswith("failed: offer refused"), outcome
    assert [e["code"] for e in await viewer.events("error")] == ["forbidden"]
    await viewer.wait_decoding({host.id})  # the refused offer was rolled back; receiving goes on
    assert not host.log.errors, host.log.errors
