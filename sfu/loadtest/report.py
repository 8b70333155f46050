"""Result table (rich) and the ours/Janus ratios."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# (label, key path in the figures, format, lower is better?)
ROWS: list[tuple[str, str, str, bool | None]] = [
    ("server CPU µs / forwarded packet", "cpu_us_per_packet", "{:.1f}", True),
    ("forwarded packets/s", "forwarded_pps", "{:,.0f}", None),
    ("forwarded Mbit/s", "forwarded_bps", "{:.2f}", None),
    ("pps per core (packets / CPU s)", "pps_per_core", "{:,.0f}", False),
    ("server CPU % of a core", "server_cpu_pct_of_core", "{:.1f}", None),
    ("added latency p50 ms", "latency_ms.p50", "{:.2f}", True),
    ("added latency p99 ms", "latency_ms.p99", "{:.2f}", True),
    ("loss %", "loss_pct", "{:.3f}", True),
    ("server RSS MiB", "server_rss_bytes", "{:.1f}", True),
    ("RSS KiB / participant", "server_rss_per_participant_bytes", "{:.0f}", True),
    ("join → first media p50 ms", "join_to_first_media_ms.p50", "{:.0f}", True),
    ("join → first media max ms", "join_to_first_media_ms.max", "{:.0f}", True),
    ("/metrics forwarded packets/s", "metrics_forwarded_pps", "{:,.0f}", None),
    ("subscribers joined", "subscribers_joined", "{}", None),
    ("load client CPU % of a core", "client_cpu_pct_of_core", "{:.1f}", None),
    ("load client loop lag p99 ms", "client_loop_lag_ms.p99", "{:.1f}", None),
    ("host CPU busy % (all cores)", "host_cpu_busy_pct_of_all_cores", "{:.1f}", None),
]
RATIO_KEYS = [
    "cpu_us_per_packet",
    "forwarded_pps",
    "pps_per_core",
    "latency_ms.p50",
    "latency_ms.p99",
    "server_rss_bytes",
    "server_rss_per_participant_bytes",
    "join_to_first_media_ms.p50",
]
_SCALE = {"forwarded_bps": 1e-6, "server_rss_bytes": 1 / 2**20, "server_rss_per_participant_bytes": 1 / 2**10}


def lookup(figures: dict[str, Any], path: str) -> Any:
    value: Any = figures
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def ratios(ours: dict[str, Any], janus: dict[str, Any]) -> dict[str, float | None]:
    """ours / janus for the headline figures (< 1 is better for costs and latency)."""
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        a, b = lookup(ours, key), lookup(janus, key)
        out[key] = round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None
    return out


def _fmt(value: Any, fmt: str, key: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | float):
        return fmt.format(value * _SCALE.get(key, 1))
    return str(value)


def render(results: dict[str, dict[str, Any]], ratio: dict[str, float | None] | None, console: Console) -> None:
    names = list(results)
    spec = next(iter(results.values()))["spec"]
    title = (
        f"{spec['rooms']} room(s) × ({spec['publishers']} pub + {spec['subscribers']} sub), "
        f"{spec['duration_s']:.0f} s window"
    )
    table = Table(title=title)
    table.add_column("figure")
    for name in names:
        table.add_column(name, justify="right")
    if ratio is not None:
        table.add_column("ours/janus", justify="right")
    for label, key, fmt, _ in ROWS:
        row = [label] + [_fmt(lookup(results[n], key), fmt, key) for n in names]
        if ratio is not None:
            r = ratio.get(key)
            row.append("" if r is None else f"{r:.2f}")
        table.add_row(*row)
    console.print(table)
    for name in names:
        for error in results[name].get("errors", []):
            console.print(f"[yellow]{name}: {error}[/yellow]")
