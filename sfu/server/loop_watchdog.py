"""Event-loop lag watchdog: a task that sleeps a fixed interval and records how late it woke up.
Everything in the process shares one loop, so this delay is what every packet and message waits."""

from __future__ import annotations

import asyncio

from sfu import metrics

INTERVAL_S = 0.5


async def watch_loop_lag(interval_s: float = INTERVAL_S) -> None:
    loop = asyncio.get_running_loop()
    while True:
        started_s = loop.time()
        await asyncio.sleep(interval_s)
        metrics.observe_loop_lag(max(0.0, loop.time() - started_s - interval_s))
