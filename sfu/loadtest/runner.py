"""One load run against one target: join everyone, measure a window, compute the figures.

Figures are for the server process tree alone (CPU from /proc utime+stime, RSS from VmRSS); the
packets it forwarded are counted where they arrive, at the lite subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from .media import EncodedClip, PreEncodedAudioTrack, PreEncodedVideoTrack
from .probes import LiteSubscriber, SendTimes, Window
from .procstat import (
    ProcSample,
    delay_quantiles,
    host_cpu_busy_s,
    parse_counter,
    parse_histogram,
    sample_self,
    sample_tree,
    scrape_text,
)
from .target import PublisherHandle, SubscriberHandle, Target, host_addresses

logger = logging.getLogger(__name__)

MAX_DURATION_S = 900.0
SETUP_TIMEOUT_S = 60.0  # plus SETUP_TIMEOUT_PER_PARTICIPANT_S each
SETUP_TIMEOUT_PER_PARTICIPANT_S = 2.0
JOIN_TIMEOUT_S = 30.0  # one participant: signaling + ICE + DTLS
LAG_PROBE_INTERVAL_S = 0.02

Progress = Callable[[str, float, float], None]


@dataclass(frozen=True)
class LoadSpec:
    rooms: int = 1
    publishers: int = 1  # per room
    subscribers: int = 10  # per room
    duration_s: float = 10.0
    warmup_s: float = 3.0
    receiver_reports: bool = False
    join_concurrency: int = 4
    simulcast: bool = False

    @property
    def participants(self) -> int:
        return self.rooms * (self.publishers + self.subscribers)


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class _Snapshot:
    at: float
    server: ProcSample
    client: ProcSample
    packets: int
    bytes: int
    expected: int
    media_packets: int
    metrics_forwarded: float | None
    host_cpu: tuple[float, float]
    delay_buckets: list[tuple[float, float]] | None = None


class LoadRun:
    def __init__(self, target: Target, spec: LoadSpec, clip: EncodedClip, progress: Progress | None = None):
        if not 0 < spec.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] s")
        self.target, self.spec, self.clip = target, spec, clip
        self.progress = progress or (lambda description, completed, total: None)
        self.window = Window()
        self.publishers: list[PublisherHandle] = []
        self.subscribers: list[SubscriberHandle] = []
        self.errors: list[str] = []
        self._http: aiohttp.ClientSession | None = None
        self.baseline_rss = 0
        self.loop_lag_ms: list[float] = []

    async def run(self) -> dict[str, Any]:
        """Start the target, load it, measure, tear everything down; returns the figures."""
        try:
            await self.target.start()
            self._http = aiohttp.ClientSession()
            with host_addresses([self.target.client_address]):
                setup_s = SETUP_TIMEOUT_S + SETUP_TIMEOUT_PER_PARTICIPANT_S * self.spec.participants
                await asyncio.wait_for(self._join_all(), setup_s)
                return await self._measure()
        finally:
            await self._teardown()

    def _server(self) -> ProcSample:
        pid = self.target.server_pid
        return sample_tree(pid) if pid else ProcSample(0.0, 0)

    async def _join_all(self) -> None:
        spec = self.spec
        self.baseline_rss = self._server().rss_bytes
        total = spec.rooms * (spec.publishers + spec.subscribers)
        joined = 0
        self.progress(f"{self.target.name}: joining", 0, total)
        rooms = [await self.target.create_room(i) for i in range(spec.rooms)]
        by_room: dict[str, list[PublisherHandle]] = {}
        for r, room in enumerate(rooms):
            for p in range(spec.publishers):
                offset = (r * spec.publishers + p) * 37  # publishers do not send in lockstep
                tracks = [PreEncodedVideoTrack(self.clip, offset), PreEncodedAudioTrack(self.clip, offset)]
                handle = await asyncio.wait_for(
                    self.target.add_publisher(room, f"pub-{r}-{p}", list(tracks), SendTimes()), JOIN_TIMEOUT_S
                )
                self.publishers.append(handle)
                by_room.setdefault(room, []).append(handle)
                joined += 1
                self.progress(f"{self.target.name}: joining", joined, total)
        limit = asyncio.Semaphore(spec.join_concurrency)

        async def join(room: str, name: str) -> None:
            nonlocal joined
            async with limit:
                probe = LiteSubscriber(name, self.window)
                try:
                    handle = await asyncio.wait_for(
                        self.target.add_subscriber(room, name, by_room[room], probe, spec.receiver_reports),
                        JOIN_TIMEOUT_S,
                    )
                    self.subscribers.append(handle)
                except Exception as exc:  # one failed join is a figure, not the end of the run
                    logger.warning("%s: subscriber %s failed to join: %r", self.target.name, name, exc)
                    self.errors.append(f"{name}: {exc!r}")
                joined += 1
                self.progress(f"{self.target.name}: joining", joined, total)

        await asyncio.gather(
            *(join(room, f"sub-{r}-{s}") for r, room in enumerate(rooms) for s in range(spec.subscribers))
        )

    async def _snapshot(self) -> _Snapshot:
        packets = size = expected = media = 0
        for sub in self.subscribers:
            p, b, e = sub.probe.snapshot()
            packets, size, expected, media = (
                packets + p,
                size + b,
                expected + e,
                media + sub.probe.media_packets(),
            )
        counter = buckets = None
        if self.target.metrics_url and self._http is not None:
            text = await scrape_text(self._http, self.target.metrics_url)
            if text is not None:
                counter, buckets = parse_counter(text), parse_histogram(text)
        return _Snapshot(
            time.monotonic(),
            self._server(),
            sample_self(),
            packets,
            size,
            expected,
            media,
            counter,
            host_cpu_busy_s(),
            buckets,
        )

    async def _sleep_with_progress(self, description: str, seconds: float) -> None:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            self.progress(description, elapsed, seconds)
            await asyncio.sleep(min(0.25, seconds - elapsed))
        self.progress(description, seconds, seconds)

    async def _measure(self) -> dict[str, Any]:
        name = self.target.name
        await self._sleep_with_progress(f"{name}: warm-up", self.spec.warmup_s)
        before = await self._snapshot()
        self.window.open = True
        lag_probe = asyncio.create_task(self._probe_loop_lag())
        try:
            await self._sleep_with_progress(f"{name}: measuring", self.spec.duration_s)
        finally:
            self.window.open = False
            lag_probe.cancel()
        after = await self._snapshot()
        return self._figures(before, after)

    async def _probe_loop_lag(self) -> None:
        """How late the load generator's event loop wakes up: a saturated client inflates latency."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            self.loop_lag_ms.append((time.monotonic() - start - LAG_PROBE_INTERVAL_S) * 1000)

    def _figures(self, before: _Snapshot, after: _Snapshot) -> dict[str, Any]:
        spec = self.spec
        window_s = after.at - before.at
        packets = after.packets - before.packets
        cpu_s = after.server.cpu_s - before.server.cpu_s
        received_media = after.media_packets - before.media_packets
        expected = after.expected - before.expected
        lost = max(0, expected - received_media)
        latencies = sorted(x for sub in self.subscribers for x in sub.probe.latency_ms)
        join_ms = sorted(
            (sub.probe.first_media_at - sub.probe.joined_at) * 1000
            for sub in self.subscribers
            if sub.probe.first_media_at is not None
        )
        metrics_packets = None
        if before.metrics_forwarded is not None and after.metrics_forwarded is not None:
            metrics_packets = after.metrics_forwarded - before.metrics_forwarded
        client_cpu_s = after.client.cpu_s - before.client.cpu_s
        participants = len(self.publishers) + len(self.subscribers)
        rss = after.server.rss_bytes
        return {
            "target": self.target.name,
            "spec": asdict(spec),
            "participants": participants,
            "subscribers_joined": len(self.subscribers),
            "peer_connections": len(self.publishers) + sum(s.peer_connections for s in self.subscribers),
            "window_s": round(window_s, 3),
            "server_cpu_s": round(cpu_s, 3),
            "server_cpu_pct_of_core": round(100 * cpu_s / window_s, 1) if window_s else None,
            "forwarded_packets": packets,
            "forwarded_pps": round(packets / window_s, 1) if window_s else None,
            "forwarded_bps": round((after.bytes - before.bytes) * 8 / window_s) if window_s else None,
            "metrics_forwarded_packets": metrics_packets,
            "metrics_forwarded_pps": round(metrics_packets / window_s, 1) if metrics_packets else None,
            "cpu_us_per_packet": round(1e6 * cpu_s / packets, 2) if packets else None,
            "pps_per_core": round(packets / cpu_s) if cpu_s > 0 else None,
            "latency_ms": {
                "p50": _round(percentile(latencies, 50)),
                "p90": _round(percentile(latencies, 90)),
                "p99": _round(percentile(latencies, 99)),
                "max": _round(latencies[-1] if latencies else None),
                "samples": len(latencies),
                "unmatched": sum(s.probe.unmatched for s in self.subscribers),
            },
            # in the server alone: kernel arrival of the publisher's datagram -> sendto of each copy
            "server_delay_ms": delay_quantiles(before.delay_buckets, after.delay_buckets),
            "expected_packets": expected,
            "lost_packets": lost,
            "loss_pct": round(100 * lost / expected, 3) if expected else None,
            "server_rss_bytes": rss,
            "server_rss_baseline_bytes": self.baseline_rss,
            "server_rss_per_participant_bytes": (
                round((rss - self.baseline_rss) / participants) if participants else None
            ),
            "join_to_first_media_ms": {
                "p50": _round(percentile(join_ms, 50)),
                "max": _round(join_ms[-1] if join_ms else None),
            },
            "client_cpu_pct_of_core": round(100 * client_cpu_s / window_s, 1) if window_s else None,
            "client_cpu_us_per_packet": round(1e6 * client_cpu_s / packets, 2) if packets else None,
            "client_loop_lag_ms": {
                "p50": _round(percentile(sorted(self.loop_lag_ms), 50)),
                "p99": _round(percentile(sorted(self.loop_lag_ms), 99)),
            },
            "host_cpu_busy_pct_of_all_cores": round(
                100 * (after.host_cpu[0] - before.host_cpu[0]) / (after.host_cpu[1] - before.host_cpu[1]), 1
            )
            if after.host_cpu[1] > before.host_cpu[1]
            else None,
            "publisher_video_packets_sent": sum(p.send_times.packets_sent for p in self.publishers),
            "publisher_late_restarts": sum(getattr(t, "late_restarts", 0) for p in self.publishers for t in p.tracks),
            "errors": self.errors,
        }

    async def _teardown(self) -> None:
        self.progress(f"{self.target.name}: closing", 0, 1)
        handles: list[SubscriberHandle | PublisherHandle] = [*self.subscribers, *self.publishers]
        try:
            for handle in handles:
                try:
                    await asyncio.wait_for(handle.close(), 10)
                except Exception as exc:
                    logger.debug("close %s: %r", handle.name, exc)
            if self._http is not None:
                await self._http.close()
        finally:
            await self.target.stop()  # the server process / Janus and its namespace, whatever happened
        self.progress(f"{self.target.name}: closing", 1, 1)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
