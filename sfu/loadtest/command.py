"""``sfu loadtest``: load our server (and optionally Janus, same load, same run) and report figures."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .media import ClipSpec, load_clip
from .report import ratios, render
from .runner import MAX_DURATION_S, LoadRun, LoadSpec

logger = logging.getLogger(__name__)

SIMULCAST_NOTE = (
    "--simulcast is NOT IMPLEMENTED yet: publishers send one VP8 layer (640x360), "
    "figures are for single-layer forwarding"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="base URL of a running server (default: start `sfu serve` here)")
    parser.add_argument("--rooms", type=int, default=1, help="number of rooms (default 1)")
    parser.add_argument("--publishers", type=int, default=1, help="publishers per room (default 1)")
    parser.add_argument("--subscribers", type=int, default=10, help="lite subscribers per room (default 10)")
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help=f"measurement window in seconds (default 10, at most {MAX_DURATION_S:.0f})",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds between joins and the window")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write all figures to this JSON file")
    parser.add_argument("--compare", choices=["janus"], help="also run the same load through Janus")
    parser.add_argument(
        "--only", choices=["sfu", "janus"], help="run one target only (`--only janus` needs no sfu server)"
    )
    parser.add_argument("--workers", type=int, default=1, help="--workers of the started `sfu serve`")
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="publish 3 simulcast layers: NOT IMPLEMENTED yet, runs one layer and says so",
    )
    parser.add_argument(
        "--receiver-reports",
        action="store_true",
        help="lite subscribers still send RTCP receiver reports (costs client CPU)",
    )
    parser.add_argument("--join-concurrency", type=int, default=4, help="subscribers joining at once")
    parser.add_argument("--bitrate", type=int, default=500_000, help="publisher video bitrate, bit/s")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install janus if missing")
    parser.add_argument("--asyncio", action="store_true", help="use the plain asyncio loop, not uvloop")
    parser.add_argument("-v", "--verbose", action="store_true")


def _validate(args: argparse.Namespace) -> str | None:
    if not 0 < args.duration <= MAX_DURATION_S:
        return f"--duration must be in (0, {MAX_DURATION_S:.0f}]"
    for name in ("rooms", "publishers", "subscribers", "workers", "join_concurrency"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1"
    if args.only == "sfu" and args.compare:
        return "--only sfu contradicts --compare janus"
    return None


def _targets(args: argparse.Namespace) -> list[str]:
    if args.only:
        return [args.only]
    return ["sfu", "janus"] if args.compare == "janus" else ["sfu"]


async def _run_all(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    spec = LoadSpec(
        rooms=args.rooms,
        publishers=args.publishers,
        subscribers=args.subscribers,
        duration_s=args.duration,
        warmup_s=args.warmup,
        receiver_reports=args.receiver_reports,
        join_concurrency=args.join_concurrency,
        simulcast=False,  # see SIMULCAST_NOTE
    )
    with console.status("encoding the publisher clip (cached after the first run)"):
        clip = await asyncio.get_running_loop().run_in_executor(
            None, load_clip, ClipSpec(video_bitrate_bps=args.bitrate)
        )
    results: dict[str, dict[str, Any]] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(description: str, completed: float, total: float) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=completed, total=total)

        for name in _targets(args):
            target: Any
            if name == "janus":
                from .janus_client import JanusTarget

                target = JanusTarget(install=not args.no_install)
            else:
                from .sfu_target import SfuTarget

                target = SfuTarget(args.url, workers=args.workers,
                                   participants_per_room=spec.publishers + spec.subscribers)
            results[name] = await LoadRun(target, spec, clip, on_progress).run()
    return results


def run(args: argparse.Namespace) -> int:
    console = Console(stderr=False)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    error = _validate(args)
    if error:
        console.print(f"[red]sfu loadtest: {error}[/red]")
        return 2
    notes = []
    if args.simulcast:
        notes.append(SIMULCAST_NOTE)
        console.print(f"[yellow]{SIMULCAST_NOTE}[/yellow]")

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through every finally: processes stopped, namespace deleted

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    started = time.time()
    try:
        if not args.asyncio:
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
        results = asyncio.run(_run_all(args, console))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        return 130
    except Exception as exc:
        console.print(f"[red]sfu loadtest failed: {exc!r}[/red]")
        if args.verbose:
            console.print_exception()
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    ratio = ratios(results["sfu"], results["janus"]) if {"sfu", "janus"} <= results.keys() else None
    render(results, ratio, console)
    if args.json:
        document = {
            "started_at": started,
            "command": sys.argv,
            "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": _cpus()},
            "results": results,
            "ratios_ours_over_janus": ratio,
            "notes": notes,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2))
        console.print(f"figures written to {args.json}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sfu loadtest", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
