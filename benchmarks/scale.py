"""Step the number of subscribers of one publisher until a server saturates, for ours and Janus.

Each step is a fresh `sfu loadtest` run (fresh server process, fresh Janus) of 1 publisher
(640x360 VP8 ~500 kbit/s + Opus) and N lite subscribers. A target stops stepping when its server
uses >= 90 % of a core, loss passes 1 %, subscribers fail to join, or the load generator itself
saturates (then the figures say more about the client than the server). Writes JSON, PNG plots and
a markdown report to ``benchmarks/results/``.

    python benchmarks/scale.py                       # ours and Janus, 5..320 subscribers
    python benchmarks/scale.py --targets janus --steps 5,10,20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sfu.loadtest.media import ClipSpec, load_clip  # noqa: E402
from sfu.loadtest.runner import LoadRun, LoadSpec  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVER_CPU_LIMIT_PCT = 90.0
LOSS_LIMIT_PCT = 1.0
CLIENT_CPU_LIMIT_PCT = 90.0
HOST_CPU_LIMIT_PCT = 95.0  # server + load generator + kernel networking (+ others) share the machine
LOOP_LAG_LIMIT_MS = 50.0  # ...and the load generator can no longer keep time
MAX_STEPS = 12


def _target(name: str, args: argparse.Namespace, participants: int) -> Any:
    if name == "janus":
        from sfu.loadtest.janus_client import JanusTarget

        return JanusTarget()
    from sfu.loadtest.sfu_target import SfuTarget

    return SfuTarget(args.url, workers=args.workers, participants_per_room=participants)


def stop_reason(figures: dict[str, Any], subscribers: int) -> str | None:
    """Why stepping further makes no sense for this target, or None to go on."""
    if figures["subscribers_joined"] < subscribers:
        return f"only {figures['subscribers_joined']}/{subscribers} subscribers joined"
    if (figures["server_cpu_pct_of_core"] or 0) >= SERVER_CPU_LIMIT_PCT:
        return f"server CPU {figures['server_cpu_pct_of_core']} % of a core"
    if (figures["loss_pct"] or 0) > LOSS_LIMIT_PCT:
        return f"loss {figures['loss_pct']} %"
    host_busy = figures["host_cpu_busy_pct_of_all_cores"] or 0
    if host_busy >= HOST_CPU_LIMIT_PCT and (figures["client_loop_lag_ms"]["p99"] or 0) > LOOP_LAG_LIMIT_MS:
        return f"host saturated ({host_busy} % busy, client loop lag p99 > {LOOP_LAG_LIMIT_MS} ms)"
    if (figures["client_cpu_pct_of_core"] or 0) >= CLIENT_CPU_LIMIT_PCT:
        return f"load generator saturated ({figures['client_cpu_pct_of_core']} % of a core)"
    return None


def _progress(description: str, completed: float, total: float) -> None:
    if completed >= total:
        print(f"  {description} done", flush=True)


async def run_steps(args: argparse.Namespace) -> dict[str, Any]:
    clip = load_clip(ClipSpec())
    steps = [int(s) for s in args.steps.split(",")][:MAX_STEPS]
    active = list(args.targets.split(","))
    series: dict[str, list[dict[str, Any]]] = {name: [] for name in active}
    stopped: dict[str, str] = {}
    for subscribers in steps:
        for name in list(active):
            spec = LoadSpec(subscribers=subscribers, duration_s=args.duration, warmup_s=args.warmup)
            print(f"{name}: 1 publisher x {subscribers} subscribers", flush=True)
            try:
                target = _target(name, args, spec.publishers + spec.subscribers)
                figures = await LoadRun(target, spec, clip, _progress).run()
            except Exception as exc:  # a failed step ends that target's series, not the benchmark
                stopped[name] = f"{subscribers} subscribers: {exc!r}"
                active.remove(name)
                continue
            series[name].append(figures)
            print(
                f"  {figures['forwarded_pps']} pps, {figures['cpu_us_per_packet']} µs/pkt, "
                f"CPU {figures['server_cpu_pct_of_core']} %, p99 {figures['latency_ms']['p99']} ms, "
                f"loss {figures['loss_pct']} %, client {figures['client_cpu_pct_of_core']} %",
                flush=True,
            )
            reason = stop_reason(figures, subscribers)
            if reason:
                stopped[name] = f"{subscribers} subscribers: {reason}"
                active.remove(name)
        if not active:
            break
    for name in active:
        stopped[name] = "last step reached"
    return {
        "started_at": time.time(),
        "command": sys.argv,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "duration_s": args.duration,
        "series": series,
        "stopped": stopped,
    }


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, points in result["series"].items():
        pps = [p["forwarded_pps"] for p in points]
        ax1.plot(pps, [p["server_cpu_pct_of_core"] for p in points], "o-", label=name)
        ax2.plot(pps, [p["cpu_us_per_packet"] for p in points], "o-", label=name)
    ax1.set(xlabel="forwarded packets/s", ylabel="server CPU, % of one core", title="CPU vs forwarded pps")
    ax2.set(xlabel="forwarded packets/s", ylabel="µs CPU per forwarded packet", title="Cost per packet")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "cpu_vs_pps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, points in result["series"].items():
        subs = [p["spec"]["subscribers"] for p in points]
        ax.plot(subs, [p["latency_ms"]["p50"] for p in points], "o-", label=f"{name} p50")
        ax.plot(subs, [p["latency_ms"]["p99"] for p in points], "s--", label=f"{name} p99")
    ax.set(xlabel="subscribers (1 publisher)", ylabel="added latency, ms", title="Latency vs load")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "latency_vs_load.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def markdown(result: dict[str, Any], images: list[Path]) -> str:
    lines = [
        "# Scaling: 1 publisher, N lite subscribers",
        "",
        f"Command: `{' '.join(result['command'])}`; window {result['duration_s']} s per step; "
        f"Python {result['host']['python']}.",
        "",
    ]
    head = (
        "| subs | pps | Mbit/s | µs/pkt | pps per core | CPU % core | p50 ms | p99 ms | server delay p50 / p99 ms "
        "| loss % | RSS MiB | client CPU % | host busy % |"
    )
    for name, points in result["series"].items():
        lines += [
            f"## {name}",
            "",
            f"Stopped: {result['stopped'].get(name, '')}",
            "",
            head,
            "|" + "---|" * 13,
        ]
        for p in points:
            delay = p.get("server_delay_ms") or {}
            delays = f"{delay['p50']} / {delay['p99']}" if delay.get("samples") else "—"
            lines.append(
                f"| {p['spec']['subscribers']} | {p['forwarded_pps']:.0f} | {p['forwarded_bps'] / 1e6:.2f} "
                f"| {p['cpu_us_per_packet']} | {p['pps_per_core']} | {p['server_cpu_pct_of_core']} "
                f"| {p['latency_ms']['p50']} | {p['latency_ms']['p99']} | {delays} | {p['loss_pct']} "
                f"| {p['server_rss_bytes'] / 2**20:.1f} | {p['client_cpu_pct_of_core']} "
                f"| {p['host_cpu_busy_pct_of_all_cores']} |"
            )
        lines.append("")
    series = result["series"]
    if "sfu" in series and "janus" in series:
        janus = {p["spec"]["subscribers"]: p for p in series["janus"]}
        lines += ["## Ours / Janus, same subscriber count, same invocation", "",
                  "| subs | µs/pkt ours | µs/pkt Janus | ratio | pps per core ours | pps per core Janus |",
                  "|---|---|---|---|---|---|"]
        for p in series["sfu"]:
            other = janus.get(p["spec"]["subscribers"])
            if other and p["cpu_us_per_packet"] and other["cpu_us_per_packet"]:
                lines.append(f"| {p['spec']['subscribers']} | {p['cpu_us_per_packet']} | {other['cpu_us_per_packet']} "
                             f"| {p['cpu_us_per_packet'] / other['cpu_us_per_packet']:.2f} | {p['pps_per_core']} "
                             f"| {other['pps_per_core']} |")
        lines.append("")
    lines += [f"![{path.stem}]({path.name})" for path in images]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="sfu,janus", help="comma list of sfu, janus")
    parser.add_argument("--steps", default="5,10,20,40,80,160,320", help="subscriber counts to try")
    parser.add_argument("--duration", type=float, default=10.0, help="measurement window per step, s")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--url", help="existing server for the sfu target (default: start one per step)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if not 0 < args.duration <= 120:
        parser.error("--duration must be in (0, 120]")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run_steps(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=2))
    images = plot(result, args.out)
    (args.out / "scale.md").write_text(markdown(result, images))
    print(f"wrote {args.out / 'scale.json'}, {args.out / 'scale.md'} and {len(images)} PNGs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
