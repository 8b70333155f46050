"""Pps per core with 1 and 2 workers: the same load through `sfu serve --workers 1` and `--workers N`.

For each load (`--loads ROOMSxSUBSCRIBERS`, one publisher per room) and each worker count, this
starts `sfu serve` on a free loopback port, runs `python -m sfu.loadtest --url ...` against it (its
figures are over the measurement window, server CPU summed over the parent and its workers from
/proc), reads each server process's own CPU over the whole run (to show the parent's share and the
balance between workers), and stops the server with SIGTERM (exit 0 required). Runs alternate
between worker counts and repeat (`--repeats`); the report gives the median of each cell.
Writes `workers.json`, `workers.md` and `workers.png` to benchmarks/results/.

    python benchmarks/workers.py                                  # 4x10 and 4x20, 1 and 2 workers, 3 runs
    python benchmarks/workers.py --loads 4x10 --repeats 1 --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sfu.loadtest.procstat import cpu_seconds, process_tree  # noqa: E402
from sfu.loadtest.sfu_target import free_port  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HOST_BUSY_LIMIT_PCT = 95.0  # a run with the host busier than this (or with loss) measures the machine, not us
FIGURES = ("forwarded_pps", "cpu_us_per_packet", "pps_per_core", "server_cpu_pct_of_core", "loss_pct",
           "client_cpu_pct_of_core", "host_cpu_busy_pct_of_all_cores", "metrics_forwarded_pps")


def start_server(workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "sfu", "serve", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--drain-timeout", "3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sfu serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("sfu serve did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> int:
    workers = process_tree(proc.pid)[1:]
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait(5)
    for pid in workers:  # only if the parent failed to stop them (then the run is reported as failed)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            code = code or -1
    return code


def run_once(workers: int, rooms: int, subscribers: int, duration: float, warmup: float) -> dict[str, Any]:
    proc, url = start_server(workers)
    try:
        pids = process_tree(proc.pid)
        before = {pid: cpu_seconds(pid) for pid in pids}
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            cmd = [sys.executable, "-m", "sfu.loadtest", "--url", url, "--rooms", str(rooms), "--publishers", "1",
                   "--subscribers", str(subscribers), "--duration", str(duration), "--warmup", str(warmup),
                   "--json", str(out)]
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            figures = json.loads(out.read_text())["results"]["sfu"]
        spent = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    finally:
        code = stop_server(proc)
    return {
        "workers": workers, "rooms": rooms, "subscribers_per_room": subscribers, "exit_code": code,
        **{key: figures.get(key) for key in FIGURES},
        "latency_ms": figures.get("latency_ms"),
        "subscribers_joined": figures.get("subscribers_joined"),
        # whole run (joins, warm-up, window, leaves): parent vs each worker
        "run_cpu_s_parent": round(spent[proc.pid], 3) if workers > 1 else None,
        "run_cpu_s_workers": [round(spent[p], 3) for p in pids[1:]] if workers > 1 else [round(spent[proc.pid], 3)],
    }


def median_cells(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[int, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["rooms"], run["subscribers_per_room"], run["workers"]), []).append(run)
    out = []
    for (rooms, subs, workers), group in sorted(cells.items()):
        cell: dict[str, Any] = {"rooms": rooms, "subscribers_per_room": subs, "workers": workers, "runs": len(group)}
        used = [r for r in group if (r["host_cpu_busy_pct_of_all_cores"] or 0) < HOST_BUSY_LIMIT_PCT
                and (r["loss_pct"] or 0) < 1.0] or group
        cell["runs_used"] = len(used)
        cell["latency_ms"] = sorted(used, key=lambda r: r["cpu_us_per_packet"])[len(used) // 2]["latency_ms"]
        for key in FIGURES:
            values = [r[key] for r in used if r[key] is not None]
            cell[key] = round(statistics.median(values), 2) if values else None
        cell["cpu_us_per_packet_all"] = [r["cpu_us_per_packet"] for r in group]
        split = [r for r in group if r["run_cpu_s_parent"] is not None]
        parents = [r["run_cpu_s_parent"] for r in split]
        totals = [r["run_cpu_s_parent"] + sum(r["run_cpu_s_workers"]) for r in split]
        cell["parent_share_pct"] = round(100 * sum(parents) / sum(totals), 1) if totals else None
        shares = [[w / sum(r["run_cpu_s_workers"]) for w in r["run_cpu_s_workers"]] for r in group]
        cell["worker_share_pct"] = [round(100 * statistics.mean(s[i] for s in shares), 1) for i in range(workers)]
        out.append(cell)
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Pps per core with 1 and 2 workers", "",
             f"Command: `{' '.join(result['command'])}`; {result['repeats']} run(s) per cell, median of the runs "
             f"where the host was < {HOST_BUSY_LIMIT_PCT:.0f} % busy and loss < 1 % (column `runs`; all runs if "
             "none), "
             f"window {result['duration_s']} s; {result['host']['cpus']} CPUs, Python {result['host']['python']}. "
             "One publisher (VP8 ~500 kbit/s + Opus) per room; server CPU is the parent plus its workers "
             "(/proc), per forwarded packet received by the lite subscribers.", "",
             "| rooms × subs | workers | runs | forwarded pps | µs CPU / pkt | pps per core | server CPU % of a core "
             "| parent share % | workers' shares % | loss % | p50 / p99 ms | client CPU % | host busy % |",
             "|" + "---|" * 13]
    for c in result["cells"]:
        lat = c.get("latency_ms") or {}
        lines.append(
            f"| {c['rooms']} × {c['subscribers_per_room']} | {c['workers']} | {c['runs_used']}/{c['runs']} "
            f"| {c['forwarded_pps']:.0f} "
            f"| {c['cpu_us_per_packet']} | {c['pps_per_core']:.0f} | {c['server_cpu_pct_of_core']} "
            f"| {c['parent_share_pct'] if c['parent_share_pct'] is not None else '—'} "
            f"| {' / '.join(str(s) for s in c['worker_share_pct'])} | {c['loss_pct']} "
            f"| {lat.get('p50', '—')} / {lat.get('p99', '—')} | {c['client_cpu_pct_of_core']} "
            f"| {c['host_cpu_busy_pct_of_all_cores']} |")
    lines += ["", "µs / packet of every run: " + "; ".join(
        f"{c['rooms']}×{c['subscribers_per_room']} w{c['workers']}: {c['cpu_us_per_packet_all']}"
        for c in result["cells"]), "", "![workers](workers.png)", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    labels = [f"{c['rooms']}×{c['subscribers_per_room']}\n{c['workers']} worker(s)" for c in cells]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = ["tab:blue" if c["workers"] == 1 else "tab:orange" for c in cells]
    ax1.bar(labels, [c["cpu_us_per_packet"] for c in cells], color=colors)
    ax1.set(ylabel="µs CPU per forwarded packet", title="Cost per packet (parent + workers)")
    ax2.bar(labels, [c["pps_per_core"] for c in cells], color=colors)
    ax2.set(ylabel="forwarded packets per CPU second", title="Pps per core")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loads", default="4x10,4x20", help="comma list of ROOMSxSUBSCRIBERS (1 publisher each)")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    loads = [tuple(int(x) for x in load.split("x")) for load in args.loads.split(",")]
    counts = [int(w) for w in args.workers.split(",")]
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for rooms, subs in loads:
            for workers in counts:
                run = run_once(workers, rooms, subs, args.duration, args.warmup)
                runs.append(run)
                print(f"run {repeat + 1}: {rooms}x{subs}, {workers} worker(s): {run['forwarded_pps']} pps, "
                      f"{run['cpu_us_per_packet']} µs/pkt, exit {run['exit_code']}", flush=True)
    result = {
        "started_at": time.time(), "command": ["benchmarks/workers.py", *sys.argv[1:]], "repeats": args.repeats,
        "duration_s": args.duration,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "cells": median_cells(runs), "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "workers.png")
    (args.out / "workers.md").write_text(markdown(result))
    print(f"wrote {args.out / 'workers.json'}, {args.out / 'workers.md'}, {args.out / 'workers.png'}")
    return 0 if all(r["exit_code"] == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
