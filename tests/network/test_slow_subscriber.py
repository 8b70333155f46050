"""Slow-subscriber isolation: one subscriber of a 640x360 publisher sits behind a `tc tbf` cap
below the stream's bitrate, two uncapped ones beside it. The uncapped ones lose no frame and their
forwarding latency does not rise; the server's memory stays bounded; the slow one is slowed, not cut.

    root namespace: sfu serve, publisher, 2 uncapped subscribers   198.18.23.1 ──tbf──> 198.18.23.2 NS

Two shapes of the cap: `shallow` (tbf latency 200 ms: the qdisc drops what does not fit and the
server's socket never notices) and `deep` (a 4 MB tbf queue: the socket's send buffer fills and
`sendto` gets EAGAIN, which is where an unbounded user-space send queue would grow).

Figures: frames lost and per-packet forwarding latency of the uncapped subscribers, phase 1 (no
slow subscriber) against phase 2 (slow subscriber joined and capped). Latency is the time from the
publisher's `_send_rtp` to the subscriber's `_handle_rtp_packet` (both in this process, one
monotonic clock), packets matched by payload (forwarded byte for byte)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from struct import unpack_from
from typing import Any

import numpy as np
import pytest
from av import VideoFrame

from sfu.media.keyframe import is_vp8_keyframe
from sfu.media.rtp_header import header_size
from sfu.rtc.writer import SEND_QUEUE_LIMIT_BYTES
from tests.conftest import ServerProcess, start_server
from tests.integration.peers import Participant, PatternVideo, wait_until
from tests.network.netns import NamespaceProcess, run, veth_namespace

pytestmark = [pytest.mark.slow]

HOST_ADDRESS, NS_ADDRESS = "198.18.23.1", "198.18.23.2"
PHASE_1_S = 10.0
PHASE_2_S = 20.0
DRAIN_S = 2.0  # after phase 2, before counting: the last frames are still being decoded
CAP_RATIO = 0.45  # the slow subscriber's link: this share of what the publisher sends
SETTLE_S = 3.0  # RSS samples this long after the cap are the reference the rest is compared with
# The server's RSS may grow by this much from the first SETTLE_S of the capped phase to its last third.
# What may legitimately still grow then: the slow subscriber's bounded send queue (64 kB,
# sfu.rtc.writer.SEND_QUEUE_LIMIT_BYTES), the rest of its NACK cache (1024 packets of ~1.2 kB,
# sfu.media.downtrack.PACKET_CACHE_SIZE; mostly full before the cap: it fills in ~7 s at ~150 packets/s)
# and allocator noise: 0.6-1.1 MB measured over ten runs. An unbounded send queue behind the deep cap
# grows by the stream's excess over the cap plus per-datagram overhead: 3.4 MB in these 20 s (measured
# without the bound), and on for as long as the subscriber stays.
RSS_GROWTH_LIMIT_KB = 2560
LATENCY_MARGIN_S = 0.100  # p95 may rise this much on a loaded 2-core host without meaning anything


class GrainyVideo(PatternVideo):
    """PatternVideo with sensor-like noise. libvpx compresses the bare pattern so well that after each
    key frame (the slow subscriber asks for some) its output sits seconds below its target, so the
    stream's bitrate would fall to the cap's level; with grain it holds its target (aiortc's 1.5 Mb/s
    maximum: the server's REMB allows more)."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height)
        self._rng = np.random.default_rng(9)

    async def recv(self) -> VideoFrame:
        frame = await super().recv()
        image = frame.to_ndarray(format="bgr24")
        image ^= self._rng.integers(0, 16, image.shape, dtype=np.uint8)
        grainy = VideoFrame.from_ndarray(image, format="bgr24")
        grainy.pts, grainy.time_base = frame.pts, frame.time_base
        return grainy


@dataclass
class Link:
    namespace: str
    host_if: str

    def cap(self, rate_kbit: int, queue: str) -> None:
        """Shape what the server sends to the namespace (the host side's egress)."""
        depth = ["latency", "200ms"] if queue == "shallow" else ["limit", "4000000"]
        run("tc", "qdisc", "add", "dev", self.host_if, "root", "tbf", "rate", f"{rate_kbit}kbit",
            "burst", "16kbit", *depth)

    def drops(self) -> str:
        out = subprocess.run(["tc", "-s", "qdisc", "show", "dev", self.host_if], capture_output=True,
                             text=True, timeout=10).stdout
        return " ".join(out.split()[out.split().index("Sent"):]) if "Sent" in out else out


@pytest.fixture
def link() -> Iterator[Link]:
    with veth_namespace("sfuss", HOST_ADDRESS, NS_ADDRESS) as (namespace, host_if):
        yield Link(namespace, host_if)


@dataclass
class SentLog:
    """The publisher's video packets as they leave its transport (before SRTP)."""

    packets: dict[int, tuple[float, int]] = field(default_factory=dict)  # payload hash → (time, RTP ts)
    frames: dict[int, float] = field(default_factory=dict)  # RTP timestamp → time its first packet left
    keyframes: list[float] = field(default_factory=list)
    by_crc: dict[int, float] = field(default_factory=dict)  # CRC-32 of the payload → time (another process)
    bytes: list[tuple[float, int]] = field(default_factory=list)

    def tap(self, publisher: Participant) -> None:
        assert publisher.client.pc is not None
        sender = next(t.sender for t in publisher.client.pc.getTransceivers()
                      if t.sender.track is not None and t.sender.track.kind == "video")
        transport = sender.transport
        original = transport._send_rtp

        async def send_rtp(data: bytes) -> None:
            now = time.monotonic()
            size = header_size(data)
            if size > 0 and unpack_from("!I", data, 8)[0] == sender._ssrc:
                payload = data[size:len(data) - (data[-1] if data[0] & 0x20 else 0)]
                timestamp = unpack_from("!I", data, 4)[0]
                self.packets.setdefault(hash(payload), (now, timestamp))
                self.by_crc.setdefault(zlib.crc32(payload), now)
                if timestamp not in self.frames:
                    self.frames[timestamp] = now
                    if is_vp8_keyframe(payload):
                        self.keyframes.append(now)
                self.bytes.append((now, len(data)))
            await original(data)

        transport._send_rtp = send_rtp

    def bitrate_bps(self, start: float, end: float) -> float:
        return sum(size for t, size in self.bytes if start <= t < end) * 8 / (end - start)


class Watcher(Participant):
    """An uncapped subscriber that records, per video packet, when it first arrived as media (not
    as an RTX answer to a NACK), and the RTP timestamp of every frame it decoded."""

    def __init__(self, url: str, room: str, name: str, sent: SentLog) -> None:
        super().__init__(url, room, name)
        self.sent = sent
        self.arrivals: dict[int, float] = {}  # payload hash → first arrival as media
        self.rtx_packets = 0
        self.offsets: set[int] = set()  # our RTP timestamp - the publisher's (one value: no switch)
        self.decoded: set[int] = set()  # pts of decoded frames: our RTP timestamp - the first frame's
        self.receiver: Any = None

    def _on_track(self, track_id: str, info: dict[str, Any], track: Any, transceiver: Any) -> None:
        super()._on_track(track_id, info, track, transceiver)
        if track.kind != "video":
            return
        received = self.received[track_id]
        if received.task is not None:
            received.task.cancel()  # replaced by one that keeps the frames' timestamps too
        received.task = asyncio.ensure_future(self._decode(track))
        receiver = self.receiver = transceiver.receiver
        original = receiver._handle_rtp_packet

        async def handle(packet: Any, arrival_time_ms: int) -> None:
            now = time.monotonic()
            key = hash(packet.payload)
            if key in self.sent.packets:
                self.arrivals.setdefault(key, now)
                self.offsets.add((packet.timestamp - self.sent.packets[key][1]) & 0xFFFFFFFF)
            elif hash(packet.payload[2:]) in self.sent.packets:  # RFC 4588: OSN, then the payload
                self.rtx_packets += 1
            await original(packet, arrival_time_ms)

        receiver._handle_rtp_packet = handle

    async def _decode(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:  # MediaStreamError: the track ended
                return
            self.decoded.add(frame.pts)

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """Loss and latency of the publisher's frames whose first packet left in [start, end)."""
        assert len(self.offsets) == 1, f"RTP timestamp offsets {self.offsets}: the stream was not forwarded 1:1"
        # aiortc's receiver hands the decoder timestamps counted from the first frame's (TimestampMapper)
        offset = (next(iter(self.offsets)) - self.receiver._RTCRtpReceiver__timestamp_mapper._origin) & 0xFFFFFFFF
        frames = [ts for ts, t in self.sent.frames.items() if start <= t < end]
        lost = [ts for ts in frames if (ts + offset) & 0xFFFFFFFF not in self.decoded]
        sent = [(key, t) for key, (t, _) in self.sent.packets.items() if start <= t < end]
        latencies = sorted(self.arrivals[key] - t for key, t in sent if key in self.arrivals)
        return {"frames": len(frames), "lost_frames": len(lost),
                "packets": len(sent), "not_first_time": len(sent) - len(latencies),
                "latency_p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
                "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None}


def start_slow_subscriber(namespace: str, url: str, room: str, seconds: float) -> NamespaceProcess:
    """tests/network/slow_subscriber.py in the namespace, and the JSON lines it printed."""
    return NamespaceProcess(namespace, "tests.network.slow_subscriber", url, room, str(seconds),
                            empty={"t": 0, "video_frames": 0, "packets": 0, "rtx_packets": 0, "bytes": 0})


@dataclass
class ServerProbe:
    """RSS (every second, from /proc) and CPU time of the server process."""

    pid: int
    rss_kb: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        def sample() -> None:
            while not self._stop.wait(1.0):
                self.rss_kb.append((time.monotonic(), self.rss()))

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ 100)

    def growth_kb(self, start: float, end: float) -> int:
        """Peak RSS in the last third of [start, end) minus the peak of its first SETTLE_S."""
        first = [kb for t, kb in self.rss_kb if start <= t < start + SETTLE_S]
        last = [kb for t, kb in self.rss_kb if end - (end - start) / 3 <= t < end]
        assert first and last, f"too few RSS samples: {self.rss_kb}"
        return max(last) - max(first)


def counters(server: ServerProcess) -> dict[str, float]:
    names = ("sfu_nack_packets_requested", "sfu_nack_packets_resent", "sfu_nack_packets_throttled",
             "sfu_send_failures", "sfu_send_queue_drops", "sfu_pli_sent")
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        name = line.split(" ", 1)[0].split("{", 1)[0].removesuffix("_total")
        if name in names:
            values[name] = float(line.rsplit(" ", 1)[1])
    return values


def udp_drops(pids: tuple[int, ...]) -> list[int]:
    """Datagrams the kernel dropped at these processes' UDP sockets (receive buffer full), per pid:
    where a loss happened when the uncapped subscribers lose the same packets."""
    out = subprocess.run(["ss", "-uamnp"], capture_output=True, text=True, timeout=10).stdout
    drops = dict.fromkeys(pids, 0)
    pid = 0
    for line in out.splitlines():
        if "pid=" in line:
            pid = int(line.split("pid=", 1)[1].split(",", 1)[0])
        elif "skmem:" in line and pid in drops:
            drops[pid] += int(line.rsplit(",d", 1)[1].rstrip(") \t"))
    return [drops[pid] for pid in pids]


@dataclass
class Phase:
    start: float
    end: float = 0.0
    cpu_s: float = 0.0
    counters: dict[str, float] = field(default_factory=dict)
    udp_drops: list[int] = field(default_factory=list)  # the server's, this process's


async def run_phase(seconds: float, probe: ServerProbe, server: ServerProcess) -> Phase:
    pids = (server.proc.pid, os.getpid())
    phase, cpu_s, before, drops = Phase(time.monotonic()), probe.cpu_s(), counters(server), udp_drops(pids)
    await asyncio.sleep(seconds)
    phase.end, phase.cpu_s = time.monotonic(), probe.cpu_s() - cpu_s
    phase.counters = {name: value - before.get(name, 0) for name, value in counters(server).items()}
    phase.udp_drops = [after - was for after, was in zip(udp_drops(pids), drops, strict=True)]
    return phase


def slow_figures(slow: NamespaceProcess, sent: SentLog, phase: Phase) -> dict[str, Any]:
    """What reached the slow subscriber while capped, and how far behind the live stream it was:
    at each of its reports, the age of the newest media packet it had."""
    lines = [line for line in slow.lines if phase.start <= line["t"] <= phase.end + 0.5]
    assert len(lines) >= 2, f"the slow subscriber stopped reporting: {slow.lines[-3:]}"
    first, last = lines[0], lines[-1]
    lags = [(line["t"], line["t"] - sent.by_crc[line["newest"][0]]) for line in lines
            if line["newest"] and line["newest"][0] in sent.by_crc]
    return {"received_bps": int((last["bytes"] - first["bytes"]) * 8 / (last["t"] - first["t"])),
            "frames": last["video_frames"] - first["video_frames"], "packets": last["packets"] - first["packets"],
            "rtx_packets": last["rtx_packets"] - first["rtx_packets"],
            "lag_s_last_third": max((lag for t, lag in lags if t > phase.end - (phase.end - phase.start) / 3),
                                    default=None)}


def lag_bound_s(cap_kbit: int) -> float:
    """How far behind the slow subscriber may fall with a bounded send path: the kernel's queue for its
    socket (at most the send buffer, wmem_default, in datagrams plus their overhead) and the server's
    own send queue, drained at the cap, plus 2 s for the rest (its report period, a busy host). An
    unbounded queue behind the deep cap falls behind by (1 - cap / bitrate) seconds every second:
    11.6 s at the end of the capped phase, measured without the bound."""
    wmem_bytes = int(Path("/proc/sys/net/core/wmem_default").read_text())
    return (wmem_bytes + SEND_QUEUE_LIMIT_BYTES) * 8 / (cap_kbit * 1000) + 2.0


async def join_all(publisher: Participant, sent: SentLog, watchers: list[Watcher]) -> None:
    await publisher.client.connect([(GrainyVideo(640, 360), "camera")])
    sent.tap(publisher)
    for watcher in watchers:
        await watcher.join(video_size=None, audio=False)
    assert await wait_until(lambda: all(len(w.decoded) > 30 for w in watchers), 40), \
        [len(w.decoded) for w in watchers]


@pytest.mark.parametrize("queue", ["shallow", "deep"])
async def test_capped_subscriber_does_not_slow_the_others(link: Link, tmp_path: Path, queue: str) -> None:
    server = start_server(tmp_path, host="0.0.0.0")
    url = f"http://127.0.0.1:{server.port}"
    probe = ServerProbe(server.proc.pid)
    sent = SentLog()
    publisher = Participant(url, "ss", "pub")
    watchers = [Watcher(url, "ss", f"uncapped{i}", sent) for i in range(2)]
    slow: NamespaceProcess | None = None
    try:
        await join_all(publisher, sent, watchers)
        probe.start()
        alone = await run_phase(PHASE_1_S, probe, server)
        cap_kbit = max(64, int(sent.bitrate_bps(alone.start, alone.end) * CAP_RATIO / 1000))
        slow = start_slow_subscriber(link.namespace, f"http://{HOST_ADDRESS}:{server.port}", "ss", 120)
        assert await wait_until(lambda: slow.last["video_frames"] > 10, 40), f"slow subscriber: {slow.last}"
        link.cap(cap_kbit, queue)
        capped = await run_phase(PHASE_2_S, probe, server)
        await asyncio.sleep(DRAIN_S)
        probe.stop()
        report = build_report(queue, cap_kbit, sent, watchers, slow, probe, link, [alone, capped])
        lines = [f"  {key}: {json.dumps(value)}" for key, value in report.items()]
        print("\nslow subscriber isolation:", *lines, sep="\n", file=sys.stderr)
        check(report, cap_kbit, queue)
    finally:
        probe.stop()
        if slow is not None:
            slow.stop()
        for participant in [*watchers, publisher]:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]


def build_report(queue: str, cap_kbit: int, sent: SentLog, watchers: list[Watcher], slow: NamespaceProcess,
                 probe: ServerProbe, link: Link, phases: list[Phase]) -> dict[str, Any]:
    capped = phases[1]
    return {
        "queue": queue, "cap_kbit": cap_kbit,
        "publisher_bps": [int(sent.bitrate_bps(p.start, p.end)) for p in phases],
        "publisher_keyframes": [sum(1 for t in sent.keyframes if p.start <= t < p.end) for p in phases],
        "publisher_kbps_each_s": [[int(sent.bitrate_bps(t, t + 1) / 1000) for t in range_s(p.start, p.end)]
                                  for p in phases],
        "server_cpu_pct": [round(100 * p.cpu_s / (p.end - p.start), 1) for p in phases],
        "udp_receive_drops_server_test": [p.udp_drops for p in phases],
        "uncapped": [[w.figures(p.start, p.end) for w in watchers] for p in phases],
        "slow": slow_figures(slow, sent, capped), "slow_lag_bound_s": round(lag_bound_s(cap_kbit), 2),
        "server_capped": capped.counters, "qdisc": link.drops(),
        "rss_kb": {"start": probe.rss_kb[0][1], "max": max(kb for _, kb in probe.rss_kb),
                   "capped_growth": probe.growth_kb(capped.start, capped.end)},
    }


def range_s(start: float, end: float) -> list[float]:
    return [start + i for i in range(int(end - start))]


def check(report: dict[str, Any], cap_kbit: int, queue: str) -> None:
    alone, capped = report["uncapped"]
    for figure in alone + capped:
        assert figure["frames"] > 5 * PHASE_1_S, f"the publisher hardly sent: {figure}"
        assert figure["lost_frames"] == 0, f"an uncapped subscriber lost frames: {report}"
    for one, two in zip(alone, capped, strict=True):
        assert two["latency_p95_ms"] < one["latency_p95_ms"] + 1000 * LATENCY_MARGIN_S, report
    assert cap_kbit * 1000 < 0.6 * report["publisher_bps"][1], f"the stream fell to the cap: {report}"
    slow = report["slow"]
    assert slow["packets"] > 0, f"the slow subscriber was cut off: {slow}"
    assert slow["received_bps"] < cap_kbit * 1000 * 1.2, f"the cap did not hold: {slow}"
    assert slow["lag_s_last_third"] is not None and slow["lag_s_last_third"] < report["slow_lag_bound_s"], \
        f"the slow subscriber kept falling behind (unbounded queue?): {slow}"
    if queue == "deep":  # the socket refused datagrams: the per-subscriber bound must have dropped some
        assert report["server_capped"]["sfu_send_queue_drops"] > 0, report["server_capped"]
    assert report["rss_kb"]["capped_growth"] < RSS_GROWTH_LIMIT_KB, f"server RSS kept growing: {report['rss_kb']}"
