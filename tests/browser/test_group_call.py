"""Issue 8, acceptance 2, on the demo page in headless Chromium: two participants chat over the
reliable data channel, and one's camera mute button stops its video on the other page (the
`track_muted` event arrives and frames stop) until unmute restarts it. Also: the remote tile asks
for its displayed size (`set_quality`), the connection indicator, the active-speaker highlight."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.browser.pages import PageLog, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "group"
MEDIA_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
FRAMES_STALL_S = 2.0  # with the camera muted, framesDecoded must not move for this long


async def open_demo(browser: Any, url: str, name: str, logs: list[PageLog]) -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 720})
    page = await context.new_page()
    log = PageLog(name)
    log.attach(page)
    logs.append(log)
    await page.goto(f"{url}/?room={ROOM}&name={name}", wait_until="load", timeout=60_000)
    return page


async def remote_video(page: Any) -> dict[str, Any] | None:
    """The one remote video, with its inbound stats, once it shows a picture."""
    videos = [v for v in await page.evaluate("window.sfuApp.remoteVideos()")
              if v["videoWidth"] > 0 and v["readyState"] >= 2]
    if len(videos) != 1:
        return None
    stats = {s["trackId"]: s for s in await page.evaluate("window.sfuStats()")}
    return {**videos[0], **stats.get(videos[0]["trackId"], {})}


async def frames(page: Any, track_id: str) -> int:
    stats = {s["trackId"]: s for s in await page.evaluate("window.sfuStats()")}
    return int(stats[track_id]["framesDecoded"]) if track_id in stats else -1


async def test_chat_and_camera_mute_between_two_demo_pages(browser: Any, demo_server: Any) -> None:
    logs: list[PageLog] = []
    pages: list[Any] = []
    try:
        alice = await open_demo(browser, demo_server.url, "alice", logs)
        pages.append(alice)
        bob = await open_demo(browser, demo_server.url, "bob", logs)
        pages.append(bob)
        seen_by_bob = await wait_for(lambda: remote_video(bob), MEDIA_TIMEOUT_S, "bob to show alice's video")
        await wait_for(lambda: remote_video(alice), MEDIA_TIMEOUT_S, "alice to show bob's video")
        assert seen_by_bob["name"] == "alice"
        video_id = seen_by_bob["trackId"]
        for page in pages:
            assert (await page.evaluate("window.sfuApp.connectionState()"))["key"] == "connected"

        # Chat, both ways, typed into the chat box: each sees the other's line with its name.
        await alice.fill("#chat-input", "hello from alice")
        await alice.press("#chat-input", "Enter")
        await bob.fill("#chat-input", "hi alice, bob here")
        await bob.click("#chat-send")

        async def chat_of(page: Any, count: int) -> list[dict[str, Any]] | None:
            lines = list(await page.evaluate("window.sfuApp.chatMessages()"))
            return lines if len(lines) >= count else None

        alice_chat = await wait_for(lambda: chat_of(alice, 2), 20, "bob's chat line on alice's page")
        bob_chat = await wait_for(lambda: chat_of(bob, 2), 20, "alice's chat line on bob's page")
        assert {"name": "bob", "text": "hi alice, bob here", "local": False}.items() <= next(
            m for m in alice_chat if not m["local"]).items(), alice_chat
        assert {"name": "alice", "text": "hello from alice", "local": False}.items() <= next(
            m for m in bob_chat if not m["local"]).items(), bob_chat
        assert "alice" in (await bob.text_content("#chat-log") or "")

        # The remote tile asked for its displayed size (set_quality): the layer bob receives of
        # alice's 640x360 simulcast camera is no wider than his tile.
        tile_width = await bob.evaluate("""(() => {
            const r = document.querySelector('.tile.remote video').getBoundingClientRect();
            return r.width * (window.devicePixelRatio || 1); })()""")

        async def layer_fits_tile() -> dict[str, Any] | None:
            q = (await bob.evaluate("window.sfuApp.quality()")).get(video_id)
            return q if q and not q["paused"] and 0 < q["width"] <= tile_width else None

        quality = await wait_for(layer_fits_tile, 20, f"a layer no wider than bob's {tile_width:.0f} px tile")
        print(f"bob's tile is {tile_width:.0f} px wide; he receives layer {quality['layer']} "
              f"({quality['width']}x{quality['height']})")

        # The fake microphones beep: someone becomes the active speaker, and that tile is highlighted.
        async def speaker_highlighted() -> list[str] | None:
            speaking = list(await alice.evaluate("window.sfuApp.speakingTiles()"))
            return speaking if speaking and await alice.evaluate("window.sfuApp.activeSpeaker()") else None

        print("highlighted speaker tiles on alice's page:",
              await wait_for(speaker_highlighted, 20, "an active speaker highlighted on alice's page"))

        # Alice stops her camera with the button: bob is told, and his decoder stops.
        await alice.click("#mute-camera")
        assert await alice.get_attribute("#mute-camera", "aria-pressed") == "true"

        async def muted_event() -> bool:
            return any(e["trackId"] == video_id for e in await bob.evaluate("window.sfuApp.events('trackmuted')"))

        await wait_for(muted_event, STOP_TIMEOUT_S, "bob's track_muted for alice's camera")
        muted_at = time.monotonic()

        async def stalled() -> int | None:
            before = await frames(bob, video_id)
            await asyncio.sleep(FRAMES_STALL_S)
            after = await frames(bob, video_id)
            return after if after == before else None

        stopped = await wait_for(stalled, STOP_TIMEOUT_S, "alice's video to stop on bob's page")
        print(f"video stopped on bob's page {time.monotonic() - muted_at:.1f} s after track_muted "
              f"(framesDecoded {stopped})")
        assert (await remote_video(bob) or {}).get("muted") is True, "the muted video is not dimmed"

        # Unmute: frames flow again (from the keyframe the server asks for).
        await alice.click("#mute-camera")
        unmuted_at = time.monotonic()

        async def unmuted_and_decoding() -> int | None:
            events = await bob.evaluate("window.sfuApp.events('trackunmuted')")
            now = await frames(bob, video_id)
            return now if events and now > stopped + 5 else None

        resumed = await wait_for(unmuted_and_decoding, 20, "alice's video to resume on bob's page")
        print(f"video resumed on bob's page {time.monotonic() - unmuted_at:.1f} s after unmute "
              f"(framesDecoded {stopped} -> {resumed})")
        assert (await remote_video(bob) or {}).get("muted") is False
        assert not any(log.errors for log in logs), [log.errors for log in logs]
    except BaseException:
        for page, log in zip(pages, logs, strict=False):
            try:
                print(f"--- {log.label}: status {await page.text_content('#status', timeout=2000)!r}, "
                      f"video {await remote_video(page)}, events {await page.evaluate('window.sfuApp.events()')}")
            except Exception as err:  # noqa: BLE001 - diagnostics only
                print(f"--- {log.label}: unavailable: {err}")
        print("--- server log (tail)\n" + demo_server.log()[-6000:])
        raise
    finally:
        for log in logs:
            print(log.report())
        for page in pages:
            await page.context.close()
