"""The JS client module (`/web/sfu-client.js`) in headless Chromium, without the demo page:
offer collisions (perfect negotiation, polite side) and m-lines recycled for another track."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.pages import PageLog, wait_for
from tests.conftest import ROOT, ServerProcess, start_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MEDIA_TIMEOUT_S = 60.0
SAMPLE_GAP_S = 2.0

# Loaded into a page of the server's origin: a bare client that records its events, shows each
# video it receives, and can hold back the messages it receives (to provoke an offer collision).
HARNESS = """async ({wsUrl, room, name, token}) => {
  const { SfuClient } = await import('/web/sfu-client.js');
  const client = new SfuClient(wsUrl, { room, name, token });
  const h = { client, events: [], videos: new Map(), held: [], gated: false, streams: [] };
  window.h = h;
  for (const type of ['joined', 'participantjoined', 'participantleft', 'trackpublished',
      'trackunpublished', 'track', 'trackended', 'error', 'state']) {
    client.addEventListener(type, (e) => {
      const d = e.detail || {};
      h.events.push({ type, trackId: d.trackId, participantId: d.participantId, mid: d.mid,
        kind: d.kind, code: d.code, message: d.message, state: d.state });
    });
  }
  client.addEventListener('track', ({ detail }) => {
    if (detail.kind !== 'video') return;
    const v = document.createElement('video');
    Object.assign(v, { autoplay: true, muted: true, playsInline: true });
    v.srcObject = new MediaStream([detail.track]);
    document.body.append(v);
    h.videos.set(detail.trackId, { video: v, mid: detail.mid, participantId: detail.participantId });
  });
  client.addEventListener('trackended', ({ detail }) => {
    const entry = h.videos.get(detail.trackId);
    if (entry) { entry.video.remove(); h.videos.delete(detail.trackId); }
  });
  h.publish = async (constraints, source) => {
    const stream = await navigator.mediaDevices.getUserMedia(constraints);
    h.streams.push(stream);
    h.publishing = 'pending';
    client.publish(stream, { source }).then(() => { h.publishing = 'published'; },
      (e) => { h.publishing = 'failed: ' + e.message; });
  };
  h.hold = () => {  // keep received messages back until release()
    const deliver = client._ws.onmessage;
    h.gated = true;
    client._ws.onmessage = (e) => (h.gated ? h.held.push(e) : deliver(e));
    h.release = () => { h.gated = false; for (const e of h.held.splice(0)) deliver(e); };
  };
  h.heldTypes = () => h.held.map((e) => JSON.parse(e.data).type);
  h.remote = async () => {
    const stats = new Map();
    (await client.pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') stats.set(s.trackIdentifier, s.framesDecoded || 0);
    });
    return [...h.videos].map(([trackId, { video, mid, participantId }]) => ({
      trackId, mid, participantId, videoWidth: video.videoWidth,
      framesDecoded: stats.get(client.pc.getTransceivers().find((t) => t.mid === mid).receiver.track.id) ?? 0,
    }));
  };
  await client.join();
  return client.participant.id;
}"""

AV = {"video": {"width": 320, "height": 180}, "audio": True}


class Participant:
    """One page running the bare client harness."""

    def __init__(self, page: Any, log: PageLog) -> None:
        self.page, self.log, self.id = page, log, ""

    async def remote(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("h.remote()"))

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in await self.page.evaluate("h.events") if e["type"] == type_]

    async def publish(self, source: str = "camera", constraints: dict[str, Any] = AV) -> None:
        await self.page.evaluate("([c, s]) => h.publish(c, s)", [constraints, source])

    async def published(self) -> str | None:
        """'published' or 'failed: …' once the server answered (or refused), else None."""
        state = str(await self.page.evaluate("h.publishing"))
        return None if state == "pending" else state

    async def wait_decoding(self, participant_ids: set[str]) -> list[dict[str, Any]]:
        """Waits until this page shows a video of each of `participant_ids` (and no other), then
        checks that every one of them decodes new frames."""

        async def shown() -> list[dict[str, Any]] | None:
            videos = [v for v in await self.remote() if v["videoWidth"] > 0]
            return videos if {v["participantId"] for v in videos} == participant_ids else None

        before = await wait_for(shown, MEDIA_TIMEOUT_S, f"{self.log.label} to show {participant_ids}")
        await asyncio.sleep(SAMPLE_GAP_S)
        after = {v["trackId"]: v["framesDecoded"] for v in await self.remote()}
        for v in before:
            assert after.get(v["trackId"], 0) > v["framesDecoded"], (
                f"{self.log.label}: {v['trackId']} not decoding ({v['framesDecoded']} -> {after})")
        return before


@pytest.fixture
def jwt_secret() -> str:
    return "browser-test-secret-0123456789abcdef"


@pytest.fixture
def auth_server(tmp_path: Path, jwt_secret: str) -> Iterator[ServerProcess]:
    """A server that admits only joins with an access token."""
    server = start_server(tmp_path, "--no-dev-mode", env={"SFU_AUTH__JWT_SECRET": jwt_secret})
    try:
        yield server
    finally:
        assert server.stop() == 0, server.log()[-4000:]


def mint_token(jwt_secret: str, room: str, identity: str, *flags: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "sfu", "token", "--room", room, "--identity", identity, *flags],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={**os.environ, "SFU_AUTH__JWT_SECRET": jwt_secret},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Any:
    """The server of the test: `auth_server` when the test asks for it, else `demo_server`."""
    if "auth_server" in request.fixturenames:
        return request.getfixturevalue("auth_server")
    return request.getfixturevalue("demo_server")


@pytest.fixture
async def open_client(browser: Any, server: Any) -> Any:
    """Opens participants (bare client pages) in a room; prints their consoles on failure."""
    opened: list[Participant] = []
    demo_server = server
    ws_url = demo_server.url.replace("http", "ws", 1) + "/ws"

    async def open_one(name: str, room: str, token: str | None = None) -> Participant:
        context = await browser.new_context()
        page = await context.new_page()
        log = PageLog(name)
        log.attach(page)
        participant = Participant(page, log)
        opened.append(participant)
        await page.route("**/favicon.ico", lambda route: route.fulfill(status=204))
        await page.goto(demo_server.url + "/healthz", timeout=60_000)  # any page of the origin
        participant.id = await page.evaluate(
            HARNESS, {"wsUrl": ws_url, "room": room, "name": name, "token": token})
        return participant

    try:
        yield open_one
    finally:
        for p in opened:
            print(p.log.report())  # shown on failure, or with `pytest -rP`
            await p.page.context.close()
        print("--- server log (tail)\n" + demo_server.log()[-4000:])


async def test_publish_that_crosses_a_server_offer_is_rolled_back_and_sent_again(open_client: Any) -> None:
    alice = await open_client("alice", "glare")
    await alice.publish()
    assert await wait_for(lambda: alice.published(), 30, "alice's publication") == "published"

    # Bob joins without publishing and holds back what he receives: the server offers him
    # alice's tracks (after waiting briefly for his first offer), and that offer stays unread ...
    bob = await open_client("bob", "glare")
    await bob.page.evaluate("h.hold()")
    await wait_for(lambda: bob.page.evaluate("h.heldTypes().includes('offer')"), 30,
                   "the server's offer to bob")
    # ... while bob offers his own tracks: both offers cross. The server (impolite) ignores his.
    await bob.publish()
    await asyncio.sleep(1.5)
    await bob.page.evaluate("h.release()")

    # Bob (polite) rolls back, answers, and offers again: both sides then see each other.
    assert await wait_for(lambda: bob.published(), 30, "bob's publication") == "published"
    assert any("offer collision" in line for line in bob.log.lines), "no collision happened"
    await bob.wait_decoding({alice.id})
    await alice.wait_decoding({bob.id})
    assert await bob.events("error") == [] and await alice.events("error") == []
    assert not bob.log.errors and not alice.log.errors


async def test_m_line_recycled_for_a_newcomer_shows_the_newcomer(open_client: Any) -> None:
    p1 = await open_client("p1", "recycle")
    await p1.publish()
    p2 = await open_client("p2", "recycle")
    await p2.publish()
    p3 = await open_client("p3", "recycle")
    await p3.publish()
    shown = await p1.wait_decoding({p2.id, p3.id})
    p3_mid = next(v["mid"] for v in shown if v["participantId"] == p3.id)

    await p3.page.evaluate("h.client.leave()")
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
