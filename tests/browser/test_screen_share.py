"""Issue 8, acceptance 3, from Chromium: headless getDisplayMedia works with the fake-device flags
(a 1280x720 fake "screen" and a fake audio track). A participant shares its screen beside its
camera; a subscriber receives both, labelled with their sources, decodes both, and sees the screen
go when the browser's own "stop sharing" ends the capture (the track's `ended` event)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.pages import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "screen"


async def test_screen_share_beside_the_camera_ends_when_the_browser_stops_it(open_client: Any) -> None:
    sharer = await open_client("sharer", ROOM)
    await sharer.publish("camera", {"video": {"width": 320, "height": 180}, "audio": True})
    assert await wait_for(sharer.published, 30, "the camera's publication") == "published"
    viewer = await open_client("viewer", ROOM)
    await viewer.wait_decoding({sharer.id})

    await sharer.page.evaluate("h.client.publishScreen().then((s) => { h.screen = s; })")
    await wait_for(lambda: sharer.page.evaluate("Boolean(h.screen)"), 30, "the screen's publication")
    local = await sharer.page.evaluate(
        "h.client.localTracks().map(({ trackId, kind, source }) => ({ trackId, kind, source }))")
    sources = sorted(t["source"] for t in local)
    assert sources == ["camera", "microphone", "screen", "screen_audio"], local
    screen_id = next(t["trackId"] for t in local if t["source"] == "screen")

    async def both_decoding() -> list[dict[str, Any]] | None:
        videos = await viewer.remote()
        ok = {v["source"] for v in videos if v["framesDecoded"] > 0 and v["participantId"] == sharer.id}
        return videos if ok == {"camera", "screen"} else None

    videos = await wait_for(both_decoding, 60, "the viewer to decode the camera and the screen")
    screen = next(v for v in videos if v["source"] == "screen")
    assert screen["trackId"] == screen_id

    # The browser's own "stop sharing" ends the capture: its tracks fire `ended`.
    await sharer.page.evaluate("h.screen.getTracks().forEach((t) => t.dispatchEvent(new Event('ended')))")
    assert await wait_for(lambda: sharer.events("screenshareended"), 20, "screenshareended")

    async def screen_gone() -> bool:
        ended = {e["trackId"] for e in await viewer.events("trackunpublished")}
        sources = {v["source"] for v in await viewer.remote()}
        return screen_id in ended and sources == {"camera"}

    await wait_for(screen_gone, 30, "the viewer to drop the screen")
    await viewer.wait_decoding({sharer.id})  # the camera goes on
    left = sorted(t["source"] for t in await sharer.page.evaluate(
        "h.client.localTracks().map(({ source }) => ({ source }))"))
    assert left == ["camera", "microphone"], left
    assert not sharer.log.errors and not viewer.log.errors, (sharer.log.errors, viewer.log.errors)
