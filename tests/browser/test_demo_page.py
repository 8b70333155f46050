"""The demo page in headless Chromium: three participants see each other, one leaves."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.browser.pages import PageLog, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOM = "t1"
# Generous: three Chromiums and the server share two cores.
MEDIA_TIMEOUT_S = 90.0
LEAVE_TIMEOUT_S = 30.0
SAMPLE_GAP_S = 2.5


async def remote_videos(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.sfuApp ? window.sfuApp.remoteVideos() : []"))


async def frames_decoded(page: Any) -> dict[str, int]:
    """framesDecoded per remote video track id, from the page's inbound-rtp stats."""
    stats = await page.evaluate("window.sfuStats ? window.sfuStats() : []")
    return {s["trackId"]: int(s["framesDecoded"]) for s in stats if s["trackId"]}


def playing(videos: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    """The remote videos if exactly `count` of them, of distinct participants, have a picture."""
    shown = [v for v in videos if v["videoWidth"] > 0 and v["readyState"] >= 2]
    if len(videos) == count and len(shown) == count and len({v["participantId"] for v in shown}) == count:
        return shown
    return None


async def assert_decoding(pages: list[Any], videos: list[list[dict[str, Any]]]) -> None:
    """framesDecoded of every listed remote video rises between two samples SAMPLE_GAP_S apart."""
    before = await asyncio.gather(*(frames_decoded(p) for p in pages))
    await asyncio.sleep(SAMPLE_GAP_S)
    after = await asyncio.gather(*(frames_decoded(p) for p in pages))
    for i, page_videos in enumerate(videos):
        for v in page_videos:
            tid = v["trackId"]
            assert tid in before[i] and tid in after[i], f"page {i}: no inbound stats for {tid}: {after[i]}"
            assert after[i][tid] > before[i][tid], (
                f"page {i}: video {tid} of {v['name']} is not decoding "
                f"(framesDecoded {before[i][tid]} -> {after[i][tid]})")


async def open_participant(browser: Any, url: str, name: str, logs: list[PageLog]) -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 720})
    page = await context.new_page()
    log = PageLog(name)
    log.attach(page)
    logs.append(log)
    await page.goto(f"{url}/?room={ROOM}&name={name}", wait_until="load", timeout=60_000)
    return page


async def test_three_participants_see_each_other_and_one_leaves(
    browser: Any, demo_server: Any, tmp_path: Path,
) -> None:
    logs: list[PageLog] = []
    pages: list[Any] = []
    try:
        for name in ("p1", "p2", "p3"):
            pages.append(await open_participant(browser, demo_server.url, name, logs))

        # Every page shows the other two participants' videos, and they are decoding.
        videos = [await wait_for(partial(_playing_async, p, 2), MEDIA_TIMEOUT_S,
                                 f"two playing remote videos on {logs[i].label}")
                  for i, p in enumerate(pages)]
        for i, page_videos in enumerate(videos):
            others = {v["name"] for v in page_videos}
            assert others == {"p1", "p2", "p3"} - {logs[i].label}, f"{logs[i].label} shows {others}"
        await assert_decoding(pages, videos)

        shot = tmp_path / "demo-page-p1.png"
        await pages[0].screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        # p3 leaves: the others drop its tile and keep decoding the remaining one.
        leaver_id = await pages[2].evaluate("window.sfuApp.client.participant.id")
        await pages[2].click("#leave")
        remaining = []
        for i, page in enumerate(pages[:2]):
            remaining.append(await wait_for(partial(_playing_async, page, 1), LEAVE_TIMEOUT_S,
                                            f"{logs[i].label} to drop p3's tile"))
            assert leaver_id not in {v["participantId"] for v in remaining[i]}
            tiles = await page.evaluate("document.querySelectorAll('.tile.remote').length")
            assert tiles == 1, f"{logs[i].label} still has {tiles} remote tiles"
        assert "left" in (await pages[2].text_content("#status") or "")
        await assert_decoding(pages[:2], remaining)
    except BaseException:
        for page, log in zip(pages, logs, strict=False):
            print(f"--- {log.label}: page state\n  {await _page_state(page)}")
        print("--- server log (tail)\n" + demo_server.log()[-6000:])
        raise
    finally:
        for log in logs:  # shown on failure, or with `pytest -rP`
            print(log.report())
        for page in pages:
            await page.context.close()


async def _playing_async(page: Any, count: int) -> list[dict[str, Any]] | None:
    return playing(await remote_videos(page), count)


async def _page_state(page: Any) -> str:
    """Status line, remote videos and inbound video stats of a page, or why they are unavailable."""
    try:
        status = await page.text_content("#status", timeout=2000)
        return f"status: {status!r}\n  videos: {await remote_videos(page)}\n  stats: " + repr(
            await page.evaluate("window.sfuStats ? window.sfuStats() : []"))
    except Exception as err:  # noqa: BLE001 - diagnostics only
        return f"unavailable: {err}"
