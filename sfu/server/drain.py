"""Drain: the node stops accepting joins, tells every participant (`draining {deadline_s}`), and
is done when its rooms are empty or the timeout has passed (SIGTERM, or POST /admin/drain)."""

from __future__ import annotations

import asyncio
import logging
import time

from sfu import metrics
from sfu.room.room import RoomRegistry
from sfu.signaling.messages import message

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1  # how often a drain checks whether the rooms are empty


class Drain:
    def __init__(self, rooms: RoomRegistry, timeout_s: float) -> None:
        self.rooms = rooms
        self.timeout_s = timeout_s
        self.active = False
        self.done = asyncio.Event()  # set when the rooms are empty or the deadline passed
        self._deadline_s = 0.0  # time.monotonic() at which remaining connections are closed
        self._task: asyncio.Task[None] | None = None

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._deadline_s - time.monotonic()) if self.active else self.timeout_s

    async def start(self) -> float:
        """Begin draining (idempotent); returns the seconds left before the node closes."""
        if self.active:
            return self.remaining_s
        self.active = True
        self._deadline_s = time.monotonic() + self.timeout_s
        metrics.DRAINING.set(1)
        participants = [p for room in self.rooms.rooms.values() for p in room.participants.values()]
        log.warning("draining: refusing joins; %d participant(s) in %d room(s); closing in %.0f s at most",
                    len(participants), len(self.rooms.rooms), self.timeout_s)
        for participant in participants:
            if not participant.left:
                await participant.send(message("draining", deadline_s=round(self.timeout_s, 3)))
        self._task = asyncio.ensure_future(self._wait())
        return self.timeout_s

    async def _wait(self) -> None:
        while self.rooms.rooms and time.monotonic() < self._deadline_s:
            await asyncio.sleep(POLL_INTERVAL_S)
        if self.rooms.rooms:
            log.warning("drain timeout: closing %d room(s) with participants", len(self.rooms.rooms))
        else:
            log.info("drained: no rooms left")
        self.done.set()
