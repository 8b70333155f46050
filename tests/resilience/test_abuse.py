"""Live abuse (issue 9): a hostile participant inside a room with two healthy ones sends malformed
signaling, a signaling flood, garbage RTP/RTCP that passes SRTP and feedback storms; the server
answers each bad message with its code, counts and drops the bad packets, throttles the keyframe
requests it passes on, disconnects the flooder, and the healthy pair's video never stops.

The figures (largest frame gap per direction, PLIs the healthy publishers got, counters, event
loop lag) are printed: `python -m pytest -q -s tests/resilience/test_abuse.py`."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RTCP_PSFB_PLI

from sfu.media.relay import KEYFRAME_REQUEST_INTERVAL_S
from tests.conftest import ROOT, ServerProcess, start_server
from tests.integration.peers import Participant
from tests.integration.test_bad_input import frames_keep_rising
from tests.resilience.churn import rss_kib

pytestmark = [pytest.mark.slow]

VIDEO_SIZE = (320, 240)
MAX_FRAME_GAP_S = 1.0
SETTLE_AFTER_S = 3.0  # the healthy pair is watched this long after the hostile client is done
HOSTILE_TIMEOUT_S = 150.0
SIGNALING_CODES = ("bad_json", "bad_message", "unknown_type", "wrong_state", "bad_sdp", "bad_candidate",
                   "too_large", "unknown_track", "rate_limited")
PACKET_COUNTERS = ("sfu_rtp_packets_malformed_total", "sfu_rtp_packets_unroutable_total",
                   "sfu_rtp_packets_unknown_payload_type_total", "sfu_rtcp_packets_malformed_total",
                   "sfu_pli_received_total", "sfu_fir_received_total", "sfu_pli_sent_total",
                   "sfu_nack_received_total", "sfu_nack_packets_resent_total", "sfu_remb_received_total")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def _scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m[1]: float(m[2]) for line in text.splitlines() if (m := _SAMPLE.match(line))}


async def scrape(url: str) -> dict[str, float]:
    return await asyncio.to_thread(_scrape, url)


def _healthz(url: str) -> int:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return int(response.status)


def count_keyframe_requests(participant: Participant, into: list[float]) -> None:
    """Note the arrival time of every PLI/FIR aiortc routes to this participant's video sender."""
    assert participant.client.pc is not None
    sender = next(t.sender for t in participant.client.pc.getTransceivers()
                  if t.sender is not None and t.sender.track is not None and t.sender.track.kind == "video")
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if type(packet).__name__ == "RtcpPsfbPacket" and packet.fmt in (RTCP_PSFB_PLI, 4):
            into.append(time.monotonic())
        await original(packet)

    sender._handle_rtcp_packet = handle


def largest_gap_s(frame_times: list[float], start: float, end: float) -> float:
    """The longest time without a decoded frame within [start, end] (the frame before `start`
    and `end` itself bound the first and last gaps)."""
    before = [t for t in frame_times if t < start]
    points = before[-1:] + [t for t in frame_times if start <= t <= end] + [end]
    if len(points) < 2:
        return end - start
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def lag_bucket_reached(before: dict[str, float], after: dict[str, float]) -> str:
    """The smallest histogram bound that holds every lag the watchdog measured in between."""
    name = "sfu_event_loop_lag_distribution_seconds"
    total = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    bounds = sorted((float(k.split('le="')[1].rstrip('"}')), k) for k in after
                    if k.startswith(f"{name}_bucket") and "+Inf" not in k)
    for bound, key in bounds:
        if after[key] - before.get(key, 0) >= total:
            return f"<= {bound * 1000:g} ms ({total:g} samples)"
    return f"> {bounds[-1][0] * 1000:g} ms ({total:g} samples)" if bounds else "no samples"


async def run_hostile(server: ServerProcess, room: str, log_path: Path) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.resilience.hostile_client", server.url, room, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), HOSTILE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    log_path.write_bytes(stderr)
    lines = [line for line in stdout.decode().splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, f"hostile client failed ({proc.returncode}):\n{stderr.decode()[-3000:]}"
    return dict(json.loads(lines[-1][len("REPORT "):]))


async def sample_lag(url: str, stop: asyncio.Event, into: list[tuple[float, float]]) -> None:
    """(when, the watchdog's latest lag) every 0.5 s, as often as the watchdog measures."""
    while not stop.is_set():
        try:
            into.append((time.monotonic(), (await scrape(url)).get("sfu_event_loop_lag_seconds", 0.0)))
        except OSError:
            into.append((time.monotonic(), float("nan")))
        await asyncio.sleep(0.5)


async def test_hostile_client_is_counted_and_cut_off_while_the_room_keeps_going(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    pair = [Participant(server.url, "abuse", "healthy-a"), Participant(server.url, "abuse", "healthy-b")]
    try:
        for participant in pair:
            await participant.join(video_size=VIDEO_SIZE, audio=False)
        assert await frames_keep_rising(pair), "healthy pair never started"
        keyframe_requests: list[list[float]] = [[], []]
        for participant, into in zip(pair, keyframe_requests, strict=True):
            count_keyframe_requests(participant, into)
        before = await scrape(server.url)
        rss_before_kib = rss_kib(server.proc.pid)
        lags: list[tuple[float, float]] = []
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(sample_lag(server.url, stop, lags))
        report = await run_hostile(server, "abuse", tmp_path / "hostile.log")
        start, end = report["phases"]["signaling"][0], report["phases"]["rejoined"][1]
        await asyncio.sleep(max(0.0, end + SETTLE_AFTER_S - time.monotonic()))
        stop.set()
        await sampler
        after = await scrape(server.url)
        figures = _figures(pair, report, keyframe_requests, before, after, lags, start, end)
        figures["server_rss_kib"] = [rss_before_kib, rss_kib(server.proc.pid)]
        print("\nLIVE ABUSE " + json.dumps(figures, indent=1))

        assert server.proc.poll() is None, server.log()[-3000:]
        assert await asyncio.to_thread(_healthz, server.url) == 200
        assert "Traceback" not in server.log(), f"a handler raised:\n{server.log()[-3000:]}"
        for direction, gap_s in figures["largest_frame_gap_s"].items():
            assert gap_s <= MAX_FRAME_GAP_S, f"{direction}: no frame for {gap_s:.2f} s during the abuse"
        assert await frames_keep_rising(pair), "the healthy pair stalled after the abuse"
        _check_hostile_report(report)
        _check_counters(before, after)
        # keyframe requests reach a publisher at most once per interval per track, however many
        # the hostile client sends (slack: requests in flight at the window's edges)
        allowed = (end - start + SETTLE_AFTER_S) / KEYFRAME_REQUEST_INTERVAL_S + 3
        for name, count in figures["keyframe_requests_received"].items():
            assert count <= allowed, f"{name} got {count} keyframe requests, at most {allowed:.0f} allowed"
    finally:
        for participant in pair:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]


def _figures(pair: list[Participant], report: dict[str, Any], keyframe_requests: list[list[float]],
             before: dict[str, float], after: dict[str, float], lags: list[tuple[float, float]], start: float,
             end: float) -> dict[str, Any]:
    gaps = {}
    for me, other in ((pair[0], pair[1]), (pair[1], pair[0])):
        videos = me.from_participant(other.client.participant_id or "", "video")
        times = videos[0].frame_times if videos else []
        gaps[f"{other.client.name} -> {me.client.name}"] = round(
            largest_gap_s(times, start - 1.0, end + SETTLE_AFTER_S), 3)
    window = (start - 1.0, end + SETTLE_AFTER_S)
    return {
        "abuse_s": round(end - start, 2),
        "phases_s": {k: round(v[1] - v[0], 2) for k, v in report["phases"].items()},
        "largest_frame_gap_s": gaps,
        "keyframe_requests_received": {
            p.client.name: sum(window[0] <= t <= window[1] for t in times)
            for p, times in zip(pair, keyframe_requests, strict=True)},
        "hostile_sent": {"rtp": report["rtp_sent"], "rtp_refused_by_own_srtp": report["rtp_refused"],
                         "rtcp": report["rtcp_sent"], "rtcp_refused_by_own_srtp": report["rtcp_refused"],
                         "flood_messages": report["flood_sent"], "fresh_ssrc_packets": report["fresh_ssrcs_sent"]},
        "hostile_received_rtp": report["media_packets_received"],
        "hostile_errors": report["errors"],
        "counters": {name: after.get(name, 0) - before.get(name, 0) for name in PACKET_COUNTERS},
        "signaling_errors": {code: after.get(f'sfu_signaling_errors_total{{code="{code}"}}', 0)
                             - before.get(f'sfu_signaling_errors_total{{code="{code}"}}', 0)
                             for code in SIGNALING_CODES},
        "loop_lag_max_sampled_ms": round(max((lag for _, lag in lags), default=0.0) * 1000, 1),
        # when (s after the abuse started, in which phase) the sampled lag exceeded 20 ms
        "loop_lag_over_20ms": [(round(t - start, 1), _phase_at(report, t), round(lag * 1000))
                               for t, lag in lags if lag > 0.02],
        "loop_lag_bucket": lag_bucket_reached(before, after),
    }


def _phase_at(report: dict[str, Any], when: float) -> str:
    # the watchdog's value is up to 0.5 s old when sampled
    return next((name for name, (a, b) in report["phases"].items() if a <= when <= b + 0.5), "between")


def _check_hostile_report(report: dict[str, Any]) -> None:
    mismatches = [p for p in report["probes"] if p["got"] not in p["expected"]]
    assert not mismatches, f"bad messages not answered with their code: {mismatches}"
    assert report["flood_close_code"] == 1008, f"the flooder was not cut off: {report['flood_close_code']}"
    assert report["oversized_close_code"] is not None, "a frame over the hard cap left the socket open"
    assert report["fresh_ssrc_close_code"] == 1008 and report["fresh_ssrcs_sent"] < 2000, \
        f"RTP on ever new SSRCs was not cut off ({report['fresh_ssrcs_sent']} packets sent)"
    assert report["rejoins"] == 2, "the hostile client could not come back after being cut off"
    for kind in ("random_v2", "extension_element_lies", "padding_too_long", "unknown_ssrc",
                 "unknown_payload_type"):
        assert report["rtp_sent"].get(kind, 0) > 0, f"no {kind} RTP got through the client's own SRTP"
    assert report["rtcp_sent"].get("pli", 0) > 100, "no PLI storm was sent"


def _check_counters(before: dict[str, float], after: dict[str, float]) -> None:
    def rose(name: str, by: float = 1) -> bool:
        return after.get(name, 0) - before.get(name, 0) >= by

    for name in ("sfu_rtp_packets_malformed_total", "sfu_rtp_packets_unroutable_total",
                 "sfu_rtp_packets_unknown_payload_type_total", "sfu_rtcp_packets_malformed_total"):
        assert rose(name, 100), f"{name} did not count the garbage"
    assert rose("sfu_rtcp_packets_ssrc_refused_total", 100), "SRTCP from ever new sender SSRCs was decrypted"
    for code in SIGNALING_CODES:
        assert rose(f'sfu_signaling_errors_total{{code="{code}"}}'), f"no {code} error counted"

