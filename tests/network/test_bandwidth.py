"""Bandwidth caps for real: a subscriber in its own network namespace behind a veth pair whose
server-to-subscriber direction is shaped with `tc tbf`, beside an uncapped subscriber of the same
simulcast publisher. The capped one follows its link down, pauses video below the lowest layer
(audio goes on), and comes back up when the cap is lifted; the uncapped one stays on top.

    root namespace: sfu serve, publisher, uncapped subscriber   198.18.20.1 ──tbf──> 198.18.20.2 NS
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sfu.client import SfuClient
from sfu.testing.simulcast import SimulcastPublisher
from tests.conftest import ROOT, start_server
from tests.integration.peers import Participant, ToneAudio, wait_until
from tests.network.netns import run, veth_namespace

pytestmark = [pytest.mark.slow]

HOST_ADDRESS, NS_ADDRESS = "198.18.20.1", "198.18.20.2"


@dataclass
class Link:
    namespace: str
    host_if: str

    def cap(self, rate_kbit: int) -> None:
        """Shape what the server sends to the namespace (the host side's egress)."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.host_if, "root"], capture_output=True, timeout=10)
        run("tc", "qdisc", "add", "dev", self.host_if, "root", "tbf", "rate", f"{rate_kbit}kbit",
            "burst", "16kbit", "latency", "200ms")

    def lift(self) -> None:
        run("tc", "qdisc", "del", "dev", self.host_if, "root")


@pytest.fixture
def link() -> Iterator[Link]:
    with veth_namespace("sfubw", HOST_ADDRESS, NS_ADDRESS) as (namespace, host_if):
        yield Link(namespace, host_if)


@dataclass
class CappedSubscriber:
    """The subscriber process in the namespace, and what it reported."""

    proc: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)

    def start_reading(self) -> None:
        def read() -> None:
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                self.frame_times.extend(line["frame_times"])
                self.lines.append(line)

        threading.Thread(target=read, daemon=True).start()

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {"size": None, "quality": [], "audio_frames": 0, "video_frames": 0}

    def layer(self) -> str | None:
        quality = self.last["quality"]
        return quality[-1][0] if quality else "-"

    def stalls(self, start: float, end: float, limit_s: float = 0.5) -> list[tuple[float, float]]:
        times = [t for t in self.frame_times if start <= t <= end]
        return [(round(a, 2), round(b - a, 3)) for a, b in zip(times, times[1:], strict=False) if b - a > limit_s]


async def _setup(link: Link, tmp_path: Path) -> tuple[Any, SfuClient, Participant, CappedSubscriber, str]:
    # debug: the allocation loop logs each subscriber's estimate, loss and congestion every tick
    server = start_server(tmp_path, "--log-level", "debug", host="0.0.0.0")
    url = f"http://127.0.0.1:{server.port}"
    publisher_client = SfuClient(url, "bw", "pub", auto_subscribe=False)
    uncapped = Participant(url, "bw", "uncapped")
    await publisher_client.connect()
    publisher = SimulcastPublisher(publisher_client)
    track_id = await publisher.start(audio=ToneAudio())
    await uncapped.join(video_size=None, audio=False)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", link.namespace, sys.executable, "-m", "tests.network.capped_subscriber",
         f"http://{HOST_ADDRESS}:{server.port}", "bw", "110"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    capped = CappedSubscriber(proc)
    capped.start_reading()
    return server, publisher_client, uncapped, capped, track_id


def allocation_log(server: Any) -> str:
    """The allocation loop's lines (decisions and per-tick state), for a failure's report."""
    return "\n".join(line[11:] for line in server.log().splitlines() if "sfu.room.allocation" in line)[-12000:]


async def _teardown(server: Any, publisher_client: SfuClient, uncapped: Participant, capped: CappedSubscriber) -> None:
    if capped.proc.poll() is None:
        capped.proc.terminate()
        capped.proc.wait(10)
    await uncapped.close()
    await publisher_client.close()
    assert server.stop() == 0, server.log()[-3000:]


def _size(participant: Participant, track_id: str) -> tuple[int, int] | None:
    received = participant.received.get(track_id)
    return received.last_size if received else None


async def test_capped_subscriber_drops_to_the_lowest_layer_within_5_s_without_a_freeze(
        link: Link, tmp_path: Path) -> None:
    server, publisher_client, uncapped, capped, track_id = await _setup(link, tmp_path)
    try:
        assert await wait_until(lambda: capped.last["size"] == [640, 360] and _size(uncapped, track_id) == (640, 360),
                                40), (capped.last, _size(uncapped, track_id))
        cap_at = time.time()
        link.cap(300)
        assert await wait_until(lambda: capped.layer() == "q", 5), capped.last["quality"]
        down_at = time.time()
        assert await wait_until(lambda: capped.last["size"] == [160, 90], 5), capped.last
        frames = capped.last["video_frames"]
        assert await wait_until(lambda: capped.last["video_frames"] > frames + 20, 10), "no frames on the low layer"
        print(f"capped subscriber: on the lowest layer {down_at - cap_at:.2f} s after the cap; "
              f"stalls > 0.5 s from 1 s after the switch: {capped.stalls(down_at + 1, time.time())}", file=sys.stderr)
        assert not capped.stalls(down_at + 1, time.time()), "decoded video froze after the switch"
    finally:
        await _teardown(server, publisher_client, uncapped, capped)


async def test_uncapped_stays_on_top_and_capped_pauses_below_the_lowest_layer_and_recovers(
        link: Link, tmp_path: Path) -> None:
    server, publisher_client, uncapped, capped, track_id = await _setup(link, tmp_path)
    try:
        assert await wait_until(lambda: capped.last["size"] == [640, 360], 40), capped.last
        link.cap(300)
        assert await wait_until(lambda: capped.layer() == "q", 5), capped.last["quality"]
        await wait_until(lambda: False, 5)
        uncapped_history = [(m["layer"], m["reason"], m["estimate_bps"]) for m in uncapped.client.messages
                            if m["type"] == "quality_changed"]
        assert _size(uncapped, track_id) == (640, 360) and {layer for layer, _, _ in uncapped_history} == {"f"}, \
            f"the uncapped subscriber left the top layer: {uncapped_history}"
        lifted_at = time.time()
        link.lift()
        assert await wait_until(lambda: capped.layer() in ("h", "f"), 20), capped.last["quality"]
        up_at, up_layer = time.time(), capped.layer()
        assert await wait_until(lambda: capped.last["size"] in ([320, 180], [640, 360]), 5), capped.last
        await wait_until(lambda: False, 2)
        up_stalls = capped.stalls(up_at, time.time())
        # audio (aiortc's Opus: 96 kb/s, ~115 kb/s on the wire) fits in 150 kb/s; the lowest video layer
        # (100 kb/s) on top of it does not: the video must pause while the audio goes on
        capped_at = time.time()
        link.cap(150)
        assert await wait_until(lambda: capped.layer() is None, 15), \
            f"{capped.last['quality']}\n{allocation_log(server)}"
        paused_at = time.time()
        audio = capped.last["audio_frames"]
        assert await wait_until(lambda: capped.last["audio_frames"] > audio + 100, 8), "audio stopped while paused"
        relifted_at = time.time()
        link.lift()
        assert await wait_until(lambda: capped.layer() not in (None, "-"), 25), capped.last["quality"]
        resumed_at = time.time()
        frames = capped.last["video_frames"]
        assert await wait_until(lambda: capped.last["video_frames"] > frames + 20, 10), "video did not resume"
        print(f"cap lifted -> up to {up_layer} in {up_at - lifted_at:.1f} s (stalls > 0.5 s over the up-switch: "
              f"{up_stalls}); 150 kb/s cap -> paused in {paused_at - capped_at:.1f} s; lifted -> resumed in "
              f"{resumed_at - relifted_at:.1f} s; capped subscriber's layers: {capped.last['quality']}",
              file=sys.stderr)
        assert not up_stalls, "decoded video froze over the up-switch"
    finally:
        await _teardown(server, publisher_client, uncapped, capped)
