"""The long churn run behind benchmarks/results/churn.md: N join → publish → subscribe → leave
cycles (2 participants per room, 2 rooms at a time) against a fresh `sfu serve`, sampling the
server's RSS, asyncio tasks, open fds, UDP sockets and peer connections every 50 cycles.

    python benchmarks/churn.py [--cycles 1000] [--every 50] [--out benchmarks/results/churn]

Writes OUT.json (the samples) and OUT.png (the plot), and prints a Markdown table."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server  # noqa: E402
from tests.resilience.churn import Sample, churn, one_cycle  # noqa: E402

WARM_UP_CYCLES = 10


def plot(samples: list[Sample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cycles = [s.cycle for s in samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(cycles, [s.rss_kib / 1024 for s in samples], marker="o")
    top.set_ylabel("server RSS (MiB)")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    for name in ("tasks", "fds", "udp_sockets", "peer_connections"):
        bottom.plot(cycles, [getattr(s, name) for s in samples], marker=".", label=name)
    bottom.set_xlabel("join/publish/subscribe/leave cycles")
    bottom.set_ylabel("count (idle server)")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.suptitle("sfu serve under churn: resources held when idle")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


async def run(cycles: int, every: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            pid = server.proc.pid
            for i in range(WARM_UP_CYCLES):
                await one_cycle(server.url, f"warm-{i}", 2)
            started = time.monotonic()
            samples = await churn(server.url, pid, cycles, every=every,
                                  on_sample=lambda s: print(s.row(), flush=True))
            elapsed_s = time.monotonic() - started
        finally:
            code = server.stop()
    out.with_suffix(".json").write_text(json.dumps({"cycles": cycles, "seconds": round(elapsed_s),
                                                    "server_exit": code,
                                                    "samples": [s.row() for s in samples]}, indent=1))
    plot(samples[1:], out.with_suffix(".png"))
    print(f"\n{cycles} cycles in {elapsed_s:.0f} s, server exit {code}\n")
    print("| cycle | RSS (MiB) | tasks | fds | UDP sockets | peer connections | Python objects | sfu objects |")
    print("|---|---|---|---|---|---|---|---|")
    for s in samples:
        print(f"| {s.cycle} | {s.rss_kib / 1024:.1f} | {s.tasks} | {s.fds} | {s.udp_sockets} | {s.peer_connections} "
              f"| {s.gc_objects:,} | {s.sfu_objects:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "churn")
    args = parser.parse_args()
    asyncio.run(run(args.cycles, args.every, args.out))


if __name__ == "__main__":
    main()
