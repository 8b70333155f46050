"""Join → publish → subscribe → leave cycles against a running server, with the server process's
resources sampled as it goes (the CI test and benchmarks/churn.py share this)."""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tests.integration.peers import Participant, http_json, wait_until

VIDEO_SIZE = (160, 120)  # the smallest the encoders take: churn, not throughput, is measured


@dataclass
class Sample:
    cycle: int
    rss_kib: int
    tasks: int
    fds: int
    udp_sockets: int
    peer_connections: int
    threads: int
    gc_objects: int = 0  # Python objects the collector tracks
    sfu_objects: int = 0  # instances of sfu.* classes

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def udp_sockets(pid: int) -> int:
    """UDP sockets the process holds: its socket fds whose inode is in /proc/PID/net/udp{,6}."""
    udp = set()
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            udp.update(line.split()[9] for line in f)
    return len(_socket_inodes(pid) & udp)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def sample(url: str, pid: int, cycle: int) -> Sample:
    objects = http_json(f"{url}/debug/objects")
    return Sample(cycle, rss_kib(pid), objects["tasks"], objects["open_fds"], udp_sockets(pid),
                  objects["peer_connections"], objects["threads"], objects.get("gc_objects", 0),
                  objects.get("sfu_objects", 0))


async def one_cycle(url: str, room: str, clients: int) -> None:
    """`clients` participants join `room`, each publishes audio and video and receives the others'
    video (at least one decoded frame), then all leave."""
    group = [Participant(url, room, f"churn-{i}") for i in range(clients)]
    try:
        await asyncio.gather(*(p.join(video_size=VIDEO_SIZE) for p in group))

        def everyone_decodes() -> bool:
            return all(r.frames > 0 for p in group for o in group if o is not p
                       for r in p.from_participant(o.client.participant_id or "", "video") or [_NONE])

        assert await wait_until(everyone_decodes, 20, 0.1), f"{room}: media did not flow"
    finally:
        await asyncio.gather(*(p.close() for p in group), return_exceptions=True)


class _Nothing:
    frames = 0


_NONE = _Nothing()


async def settle(url: str, pid: int, cycle: int, quiet_s: float = 3.0) -> Sample:
    """Wait until the server is idle (no peer connection left), then a little more, then sample."""
    await wait_until(lambda: http_json(f"{url}/debug/objects")["peer_connections"] == 0, 15, 0.2)
    await asyncio.sleep(quiet_s)
    gc.collect()
    return sample(url, pid, cycle)


async def churn(url: str, pid: int, cycles: int, *, clients: int = 2, parallel: int = 2, every: int = 50,
                on_sample: Callable[[Sample], None] | None = None) -> list[Sample]:
    """`cycles` cycles, `parallel` rooms at a time; a sample at the start, every `every` cycles
    (after the rooms of that moment emptied) and at the end."""
    samples = [await settle(url, pid, 0)]
    done = 0
    while done < cycles:
        batch = min(parallel, cycles - done)
        await asyncio.gather(*(one_cycle(url, f"churn-{done + i}", clients) for i in range(batch)))
        done += batch
        if done % every < batch or done == cycles:
            samples.append(await settle(url, pid, done, quiet_s=1.0))
            if on_sample is not None:
                on_sample(samples[-1])
    samples.append(await settle(url, pid, done))
    samples[-1].cycle = done
    return samples
