"""`sfu loadtest` end to end: a short load through a server it starts (and through Janus)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sfu.loadtest import command
from sfu.loadtest.procstat import process_tree

FIGURES = [
    "cpu_us_per_packet",
    "forwarded_pps",
    "forwarded_bps",
    "pps_per_core",
    "server_cpu_pct_of_core",
    "latency_ms",
    "loss_pct",
    "server_rss_bytes",
    "server_rss_per_participant_bytes",
    "join_to_first_media_ms",
    "metrics_forwarded_packets",
]


def _children() -> list[int]:
    return process_tree(os.getpid())[1:]


def _run_loadtest(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "loadtest.json"
    before = set(_children())
    argv = ["--rooms", "1", "--publishers", "1", "--subscribers", "3", "--warmup", "2"]
    code = command.main([*argv, "--asyncio", "--json", str(out), *extra])
    assert set(_children()) <= before, "the load test left processes behind"
    assert code == 0
    document: dict[str, Any] = json.loads(out.read_text())
    return document


def _check_figures(figures: dict[str, Any], subscribers: int) -> None:
    for key in FIGURES:
        assert key in figures, key
    assert figures["subscribers_joined"] == subscribers
    assert figures["forwarded_packets"] > 0
    assert figures["loss_pct"] is not None and figures["loss_pct"] < 2.0
    assert figures["cpu_us_per_packet"] > 0
    assert figures["latency_ms"]["samples"] > 0
    assert figures["latency_ms"]["p50"] is not None


@pytest.mark.slow
def test_loadtest_forwards_packets_through_a_server_it_starts(tmp_path: Path) -> None:
    document = _run_loadtest(tmp_path, "--duration", "8")
    _check_figures(document["results"]["sfu"], subscribers=3)
    assert document["ratios_ours_over_janus"] is None


@pytest.mark.slow
@pytest.mark.janus
def test_loadtest_compares_with_janus_in_the_same_run(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("Janus runs in a network namespace, which needs root")
    from sfu.loadtest.janus import JanusUnavailable, ensure_installed

    try:
        ensure_installed(install=True)
    except JanusUnavailable as exc:
        pytest.skip(f"Janus unavailable: {exc}")
    document = _run_loadtest(tmp_path, "--duration", "5", "--compare", "janus")
    _check_figures(document["results"]["sfu"], subscribers=3)
    _check_figures(document["results"]["janus"], subscribers=3)
    ratios = document["ratios_ours_over_janus"]
    assert ratios["cpu_us_per_packet"] is not None and ratios["cpu_us_per_packet"] > 0
    own_netns = f"sfult{os.getpid() % 100000}"  # JanusServer names its namespace after our pid
    assert own_netns not in os.popen("ip netns list").read().split()
