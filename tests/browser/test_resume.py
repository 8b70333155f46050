"""Issue 8, resume after a network cut, with the browser client: the demo page runs in a Chromium
that sits in its own network namespace, whose link is cut (`ip link set … down`) and restored.
Within the grace period the page resumes by itself ("reconnecting…", then "connected"), media flows
both ways again on the same track ids, the chat works, and the watcher (an aiortc participant in
the root namespace) sees no leave. Cut past the grace period, the page says so and the watcher
gets `participant_left`.

    root namespace: sfu serve, watcher   198.18.22.1 ── 198.18.22.2  NS: Chromium (demo page)

Playwright drives Chromium over a pipe, so it launches it through a wrapper that runs it in the
namespace (`ip netns exec`). The page's origin is not localhost, so Chromium is told to treat it as
secure (getUserMedia needs that)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.browser.pages import PageLog, wait_for
from tests.conftest import ServerProcess, start_server
from tests.integration.peers import Participant
from tests.network.netns import run, veth_namespace

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOST_ADDRESS, NS_ADDRESS = "198.18.22.1", "198.18.22.2"
# `link`: the veth goes down (Chromium sees its network go: `offline` at once); `silent`: every
# packet is dropped both ways and nothing tells the browser (its ICE says `disconnected` after a
# few seconds), so that cut is longer.
CUTS = {"link": 5.0, "silent": 10.0}
MEDIA_TIMEOUT_S = 60.0
RESUME_TIMEOUT_S = 30.0
WATCHER_SIZE = (160, 120)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    with veth_namespace("sfujr", HOST_ADDRESS, NS_ADDRESS) as names:
        yield names


class Cut:
    """Cuts the namespace's link one way or the other, and restores it."""

    def __init__(self, how: str, namespace: str, host_if: str) -> None:
        self.how, self.namespace, self.host_if = how, namespace, host_if
        self.ns_if = f"{namespace}n"  # tests/network/netns.py names the pair so

    def down(self) -> None:
        if self.how == "link":
            run("ip", "link", "set", self.host_if, "down")
        else:  # at the device, both ways: no socket sees an error
            rules = (f'add table netdev sfucut {{ chain i {{ type filter hook ingress device "{self.ns_if}" '
                     f'priority 0; policy drop; }}; chain e {{ type filter hook egress device "{self.ns_if}" '
                     'priority 0; policy drop; }; }')
            run("ip", "netns", "exec", self.namespace, "nft", rules)

    def up(self) -> None:
        if self.how == "link":
            run("ip", "link", "set", self.host_if, "up")
        else:
            run("ip", "netns", "exec", self.namespace, "nft", "delete", "table", "netdev", "sfucut")


class Setup:
    """The server, the watcher and the demo page of the travelling participant."""

    def __init__(self, server: ServerProcess, watcher: Participant, page: Any, log: PageLog) -> None:
        self.server, self.watcher, self.page, self.log = server, watcher, page, log
        self.watcher_data: list[tuple[str, Any]] = []
        watcher.client.on_data = lambda sender, data, reliable: self.watcher_data.append((sender, data))

    async def app(self, expression: str) -> Any:
        return await self.page.evaluate(expression)

    async def traveller_id(self) -> str:
        return str(await self.app("window.sfuApp.client.participant.id"))

    async def remote_frames(self) -> dict[str, int]:
        """framesDecoded of each video the page receives, by track id (of its current connection)."""
        return {s["trackId"]: s["framesDecoded"] for s in await self.app("window.sfuStats()") if s["trackId"]}

    def watcher_got_chat(self, text: str) -> bool:
        return any(isinstance(d, dict) and d.get("text") == text for _, d in self.watcher_data)

    async def page_got_chat(self, text: str) -> bool:
        return any(m["text"] == text and not m["local"] for m in await self.app("window.sfuApp.chatMessages()"))


@pytest.fixture
async def journey(namespace: tuple[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    """`await journey(grace_s)`: a server holding dropped participants `grace_s`, the watcher, and
    the demo page in Chromium in the namespace. All stopped afterwards."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} not found: the browser tests need a system Chromium")
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    ns, _ = namespace
    async with contextlib.AsyncExitStack() as stack:

        async def start(grace_s: float) -> Setup:
            server = start_server(tmp_path, "--resume-grace", str(grace_s), host="0.0.0.0")
            stack.callback(lambda: print("--- server log (tail)\n" + server.log()[-6000:]))
            stack.callback(lambda: _stopped(server))
            watcher = Participant(f"http://127.0.0.1:{server.port}", "journey", "watcher", data=True)
            stack.push_async_callback(watcher.close)
            await watcher.join(video_size=WATCHER_SIZE)
            origin = f"http://{HOST_ADDRESS}:{server.port}"
            wrapper = tmp_path / "chromium-in-namespace"
            wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {ns} {CHROMIUM} "$@"\n')
            wrapper.chmod(0o755)
            pw = await stack.enter_async_context(playwright_api.async_playwright())
            browser = await pw.chromium.launch(
                executable_path=str(wrapper), headless=True, timeout=60_000,
                args=[*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"])
            stack.push_async_callback(browser.close)
            log = PageLog("traveller")
            stack.callback(lambda: print(log.report(last_lines=120)))
            page = await (await browser.new_context(viewport={"width": 1000, "height": 700})).new_page()
            log.attach(page)
            await page.goto(f"{origin}/?room=journey&name=traveller", wait_until="load", timeout=60_000)
            return Setup(server, watcher, page, log)

        yield start


def _stopped(server: ServerProcess) -> None:
    assert server.stop() == 0, "the server did not exit cleanly"


async def _connected_both_ways(s: Setup) -> tuple[str, str, str]:
    """Waits until the page decodes the watcher's video and the watcher decodes the page's camera
    (asking for its smallest layer: cheap to decode); returns (traveller id, the page's video
    track id, the watcher's video track id)."""

    async def page_decoding() -> str | None:
        videos = [v for v in await s.app("window.sfuApp.remoteVideos()") if v["videoWidth"] > 0]
        frames = await s.remote_frames()
        return videos[0]["trackId"] if len(videos) == 1 and frames.get(videos[0]["trackId"], 0) > 10 else None

    watcher_video = await wait_for(page_decoding, MEDIA_TIMEOUT_S, "the page to decode the watcher's video")
    traveller = await s.traveller_id()
    assert await wait_for(lambda: _async(bool(s.watcher.from_participant(traveller, "video"))), MEDIA_TIMEOUT_S,
                          "the watcher to receive the page's camera")
    camera = next(t["trackId"] for t in await s.app("window.sfuApp.localTracks()") if t["source"] == "camera")
    await s.watcher.client.send("set_quality", track_id=camera, max_width=160, max_height=90)
    received = s.watcher.from_participant(traveller, "video")[0]
    assert await wait_for(lambda: _async(received.frames > 20), MEDIA_TIMEOUT_S,
                          "the watcher to decode the page's camera")
    assert (await s.app("window.sfuApp.connectionState()"))["key"] == "connected"
    return traveller, camera, watcher_video


async def _async(value: Any) -> Any:
    return value


@pytest.mark.parametrize("how", list(CUTS))
async def test_demo_page_resumes_by_itself_after_a_short_network_cut(
        journey: Any, namespace: tuple[str, str], how: str) -> None:
    s, cut = await journey(15), Cut(how, *namespace)
    traveller, camera, watcher_video = await _connected_both_ways(s)
    received = s.watcher.from_participant(traveller, "video")[0]
    local_before = await s.app("window.sfuApp.localTracks()")
    published_before = [m for m in s.watcher.client.messages
                        if m["type"] == "track_published" and m["track"]["participant_id"] == traveller]
    shown_before = (await s.app("window.sfuApp.remoteVideos()"))[0]

    cut_wall = time.time()  # before: the page may notice (offline) before down() returns
    cut.down()
    try:
        await asyncio.sleep(CUTS[how])
        frames_from_page = received.frames
    finally:
        cut.up()
    restored, restored_wall = time.monotonic(), time.time()

    async def frames_to_page() -> float | None:
        # a resume brings a new peer connection, whose counters start at 0
        resumed = await s.app("window.sfuApp.client.resumes")
        return time.monotonic() - restored if resumed and (await s.remote_frames()).get(watcher_video, 0) > 0 else None

    async def frames_from_page_again() -> float | None:
        return time.monotonic() - restored if received.frames > frames_from_page + 2 else None

    to_page_s, from_page_s = await asyncio.gather(
        wait_for(frames_to_page, RESUME_TIMEOUT_S, "the watcher's video decoding on the page again"),
        wait_for(frames_from_page_again, RESUME_TIMEOUT_S, "the page's camera decoding at the watcher again"))
    badge = await wait_for(lambda: _badge_is(s, "connected"), RESUME_TIMEOUT_S, "the badge to say connected")
    resume = await s.app("window.sfuApp.client.lastResume")
    states = [e["key"] for e in await s.app("window.sfuApp.connectionLog()") if e["at"] / 1000 >= cut_wall]
    print(f"{how} cut of {CUTS[how]:.0f} s: the page noticed {resume['lostAt'] / 1000 - cut_wall:.2f} s after the cut "
          f"({resume['reason']}); resumed {resume['resumedAt'] / 1000 - restored_wall:.2f} s after the "
          f"link came back ({resume['attempts']} attempt(s)); first frames {to_page_s:.2f} s (to the page), "
          f"{from_page_s:.2f} s (from it) after; badge: {' -> '.join(states)}", file=sys.stderr)

    assert badge["text"] == "connected"
    assert "reconnecting" in states and states[-1] == "connected", states
    assert await s.app("window.sfuApp.client.state") == "joined"
    assert await s.app("window.sfuApp.client.resumes") >= 1
    # The others saw nothing: no leave, no new track; the same received track continues.
    assert not [m for m in s.watcher.client.messages if m["type"] == "participant_left"]
    published_after = [m for m in s.watcher.client.messages
                       if m["type"] == "track_published" and m["track"]["participant_id"] == traveller]
    assert published_after == published_before, "a new track appeared instead of the old one continuing"
    assert s.watcher.from_participant(traveller, "video") == [received] and not received.ended
    frames = received.frames
    assert await wait_for(lambda: _async(received.frames > frames + 20), 20, "the resumed camera to keep decoding")
    # The page republished under the same track ids and shows the watcher in the same <video>.
    local_after = await s.app("window.sfuApp.localTracks()")
    assert [(t["trackId"], t["source"]) for t in local_after] == [(t["trackId"], t["source"]) for t in local_before]
    assert camera in {t["trackId"] for t in local_after}
    shown = await s.app("window.sfuApp.remoteVideos()")
    assert [v["trackId"] for v in shown] == [shown_before["trackId"]] == [watcher_video], shown
    shown_frames = shown[0]["framesShown"]
    await asyncio.sleep(2)
    later = (await s.app("window.sfuApp.remoteVideos()"))[0]["framesShown"]
    assert later > shown_frames > shown_before["framesShown"], (shown_before, shown_frames, later)
    # The chat (reliable data channel) works again, both ways.
    await s.page.fill("#chat-input", "back after the cut")
    await s.page.press("#chat-input", "Enter")
    assert await wait_for(lambda: _async(s.watcher_got_chat("back after the cut")), 20, "the page's chat line")
    s.watcher.client.send_data({"type": "chat", "text": "welcome back"})
    assert await wait_for(lambda: s.page_got_chat("welcome back"), 20, "the watcher's chat line on the page")
    # Chromium itself logs an attempt that met the cut ("WebSocket connection to … failed"): expected
    assert not [e for e in s.log.errors if "WebSocket connection to" not in e], s.log.errors


async def _badge_is(s: Setup, key: str) -> dict[str, Any] | None:
    badge = await s.app("window.sfuApp.connectionState()")
    return dict(badge) if badge["key"] == key else None


async def test_demo_page_says_it_was_removed_after_a_cut_longer_than_the_grace_period(
        journey: Any, namespace: tuple[str, str]) -> None:
    s, cut = await journey(3), Cut("link", *namespace)
    traveller, _, _ = await _connected_both_ways(s)
    cut.down()
    cut_at = time.monotonic()
    try:
        badge = await wait_for(lambda: _badge_is(s, "reconnecting"), 15, "the badge to say reconnecting")
        assert badge["text"] == "reconnecting…"
        # the server notices the dead socket (heartbeat), holds the participant 3 s, then removes it
        left = await s.watcher.client.wait_for("participant_left", 30, lambda m: m["participant_id"] == traveller)
        removed_s = time.monotonic() - cut_at
    finally:
        cut.up()
    assert left
    closed = await wait_for(lambda: _badge_is(s, "closed"), RESUME_TIMEOUT_S, "the page to give up")
    state = await s.app("window.sfuApp.client.state")
    status = await s.app("window.sfuApp.status()")
    print(f"removed {removed_s:.1f} s after the cut; the page then says: {closed['text']!r}, {status!r}",
          file=sys.stderr)
    assert state == "closed"
    assert "could not be resumed" in status and "resume_failed" in status, status
    assert await s.page.is_visible("#rejoin")
