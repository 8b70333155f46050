"""/metrics values move with media; /healthz and /readyz answer; SIGTERM drains: joins refused,
participants told, exit when the rooms empty or the drain timeout passes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sfu.client import SfuClient
from tests.conftest import start_server
from tests.integration.peers import Participant, http_json, wait_until
from tests.ops.helpers import http, join_error, open_socket, scrape

pytestmark = [pytest.mark.slow]

KIND_COUNTERS = ("sfu_rtp_packets_in_total", "sfu_rtp_bytes_in_total", "sfu_rtp_packets_out_total",
                 "sfu_rtp_bytes_out_total")


def by_kind(samples: dict[str, float], name: str, kind: str) -> float:
    return samples.get(f'{name}{{kind="{kind}"}}', 0.0)


async def test_metrics_move_when_a_publisher_and_a_subscriber_exchange_media(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    pair = [Participant(server.url, "metered", "pub"), Participant(server.url, "metered", "sub")]
    try:
        before = scrape(server.url)
        for participant in pair:
            await participant.join(video_size=(240, 160))
        assert await wait_until(lambda: all(r.frames > 20 for p in pair for r in p.received.values()
                                            if r.kind == "video") and all(p.received for p in pair), 30)
        await asyncio.sleep(1.2)  # a few watchdog ticks
        after = scrape(server.url)
        assert after["sfu_rooms"] == 1 and after["sfu_participants"] == 2
        assert after['sfu_published_tracks{kind="video"}'] == 2 and after['sfu_published_tracks{kind="audio"}'] == 2
        assert after['sfu_subscribed_tracks{kind="video"}'] == 2
        for name in KIND_COUNTERS:
            for kind in ("audio", "video"):
                assert by_kind(after, name, kind) > by_kind(before, name, kind), f"{name}{{{kind}}} moved"
        assert by_kind(after, "sfu_rtp_bytes_in_total", "video") > by_kind(after, "sfu_rtp_bytes_in_total", "audio")
        assert after["sfu_rtp_packets_forwarded_total"] > before.get("sfu_rtp_packets_forwarded_total", 0)
        assert after["sfu_pli_sent_total"] >= 1, "new video subscribers ask for a keyframe"
        for name in ("sfu_nack_received_total", "sfu_nack_packets_resent_total", "sfu_layer_switches_total",
                     "sfu_bandwidth_estimate_bps_count", "sfu_event_loop_lag_seconds",
                     "sfu_event_loop_busy_max_seconds", "sfu_event_loop_blocked_total"):
            assert name in after, name
        assert after["sfu_event_loop_lag_distribution_seconds_count"] >= 2, "the watchdog measures every 0.5 s"
        assert 0 < after["sfu_event_loop_busy_max_seconds"] < 10, "the heartbeat measured the loop's CPU"
        # signaling errors by code
        await pair[0].client.send("teleport")
        assert await wait_until(lambda: scrape(server.url).get('sfu_signaling_errors_total{code="unknown_type"}',
                                                               0) >= 1, 5)
        assert http_json(f"{server.url}/healthz")["participants"] == 2
        assert http("GET", f"{server.url}/readyz") == (200, {"ready": True, "draining": False})
    finally:
        for participant in pair:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]


async def test_sigterm_drains_until_the_room_empties(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--drain-timeout", "30")
    stayer = Participant(server.url, "draining", "stayer")
    late = SfuClient(server.url, "draining", "late")
    try:
        await stayer.join(video_size=(160, 120))
        await open_socket(late)
        told = stayer.client.expect("draining")
        server.proc.send_signal(15)
        msg = await asyncio.wait_for(told, 10)
        assert 0 < msg["deadline_s"] <= 30
        status, body = http("GET", f"{server.url}/readyz")
        assert status == 503 and body["draining"] is True
        assert http_json(f"{server.url}/healthz")["status"] == "ok", "alive while draining"
        assert scrape(server.url)["sfu_draining"] == 1
        assert (await join_error(late, "draining"))["code"] == "draining"
        assert (await join_error(late, "another-room"))["code"] == "draining"
        await asyncio.sleep(1)
        assert server.proc.poll() is None, "a room with a participant keeps the node up"
        left_s = time.monotonic()
        await stayer.close()
        server.proc.wait(10)
        assert server.proc.returncode == 0
        assert time.monotonic() - left_s < 5, "the node exits soon after the room empties"
    finally:
        await late.close()
        await stayer.close()
        server.stop()


async def test_drain_timeout_closes_what_is_left_and_exits_zero(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--drain-timeout", "2")
    stubborn = Participant(server.url, "stubborn", "stays")
    try:
        await stubborn.join(video_size=(160, 120))
        started_s = time.monotonic()
        server.proc.send_signal(15)
        await asyncio.wait_for(stubborn.client.wait_for("draining"), 10)
        assert await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 15) == 0
        assert 1.5 < time.monotonic() - started_s < 10, "waited for the drain timeout, then exited"
        assert stubborn.client._reader is not None
        await asyncio.wait_for(asyncio.shield(stubborn.client._reader), 5)
        assert stubborn.client._ws is not None and stubborn.client._ws.closed, "its socket was closed"
    finally:
        await stubborn.close()
        server.stop()


async def test_readyz_answers_and_admin_drain_needs_the_key(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"SFU_ADMIN__API_KEY": "k"})
    try:
        assert http("GET", f"{server.url}/readyz")[0] == 200
        assert http("POST", f"{server.url}/admin/drain")[0] == 401
        status, body = http("POST", f"{server.url}/admin/drain", headers={"Authorization": "Bearer k"})
        assert status == 202 and body["draining"] is True
        assert await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 10) == 0, \
            "an admin drain with no rooms ends the process at once"
    finally:
        server.stop()
