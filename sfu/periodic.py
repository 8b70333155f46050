"""PeriodicTask: one asyncio task that calls `tick(now_s)` every `tick_s`, started and stopped
with the aiohttp app; a failing tick is logged and the next one runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

log = logging.getLogger(__name__)


class PeriodicTask:
    name = "periodic task"

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._task: asyncio.Task[None] | None = None

    async def tick(self, now_s: float) -> None:
        raise NotImplementedError

    async def on_startup(self, app: object) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def on_cleanup(self, app: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick(time.monotonic())
            except Exception:
                log.exception("%s: tick failed", self.name)
