"""CPU time and memory of server processes from /proc, and the forwarded-packet counter from /metrics."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
FORWARDED_METRIC = "sfu_rtp_packets_forwarded_total"


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # the command name (field 2) may contain spaces; fields after it start at ') '
    return text[text.rindex(")") + 2 :].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (workers of a multi-process server)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # fields[11], fields[12] are utime and stime (stat fields 14 and 15)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class ProcSample:
    cpu_s: float
    rss_bytes: int


def sample_tree(root_pid: int) -> ProcSample:
    """CPU seconds and RSS summed over a process and its descendants.

    CPU of descendants that exited during a window is not counted (their time moves into the
    parent's cutime); servers under test keep their workers alive.
    """
    pids = process_tree(root_pid)
    return ProcSample(sum(cpu_seconds(p) for p in pids), sum(rss_bytes(p) for p in pids))


def sample_self() -> ProcSample:
    times = os.times()
    return ProcSample(times.user + times.system, rss_bytes(os.getpid()))


def host_cpu_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole host since boot, all cores (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLOCK_TICKS_PER_S, total / CLOCK_TICKS_PER_S


def parse_counter(text: str, name: str = FORWARDED_METRIC) -> float | None:
    """Sum of a Prometheus counter over all its label sets; None if the metric is absent."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest and rest[0] not in " {":
            continue  # a different metric sharing the prefix (e.g. _created)
        try:
            total += float(line.rsplit(None, 1)[1])
            found = True
        except (IndexError, ValueError):
            continue
    return total if found else None


DELAY_METRIC = "sfu_forwarding_delay_seconds"  # only with SFU_FASTPATH_PROFILE=1 (docs/fastpath.md)


def parse_histogram(text: str, name: str = DELAY_METRIC) -> list[tuple[float, float]] | None:
    """(upper bound in seconds, cumulative count) of a Prometheus histogram without labels, or None."""
    prefix = f'{name}_bucket{{le="'
    buckets = []
    for line in text.splitlines():
        if line.startswith(prefix):
            bound, _, value = line[len(prefix):].partition('"} ')
            try:
                buckets.append((float(bound), float(value)))
            except ValueError:
                continue
    return sorted(buckets) or None


def delay_quantiles(before: list[tuple[float, float]] | None,
                    after: list[tuple[float, float]] | None) -> dict[str, float | int | None] | None:
    """p50/p90/p99 in ms of the samples between two scrapes (linear inside a bucket) and the share
    of samples at or under 2 ms; None without the histogram."""
    if not after:
        return None
    start = dict(before or [])
    counts = [(bound, value - start.get(bound, 0.0)) for bound, value in after]
    total = counts[-1][1]
    if total <= 0:
        return {"p50": None, "p90": None, "p99": None, "share_le_2ms": None, "samples": 0}

    def quantile(q: float) -> float | None:
        rank, lower, below = q * total, 0.0, 0.0
        for bound, cumulative in counts:
            if cumulative >= rank:
                if bound == float("inf"):
                    return None  # beyond the last finite bucket
                inside = cumulative - below
                fraction = (rank - below) / inside if inside else 1.0
                return round((lower + (bound - lower) * fraction) * 1000, 3)
            lower, below = bound, cumulative
        return None

    at_2ms = next((c for b, c in counts if b >= 0.002 - 1e-12), total)
    return {"p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99),
            "share_le_2ms": round(at_2ms / total, 4), "samples": int(total)}


async def scrape_text(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            return await response.text() if response.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None
