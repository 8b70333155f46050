"""Helpers shared by the browser tests: page console capture and polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PageLog:
    """Console messages and uncaught errors of one page, for diagnostics on failure."""

    label: str
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda err: self.errors.append(f"pageerror: {err}"))

    def _on_console(self, msg: Any) -> None:
        line = f"{msg.type}: {msg.text}"
        self.lines.append(line)
        if msg.type == "error":
            self.errors.append(line)

    def report(self, last_lines: int = 60) -> str:
        out = [f"--- {self.label}: {len(self.errors)} console error(s)"]
        out += [f"  {e}" for e in self.errors]
        out.append(f"--- {self.label}: last {last_lines} console lines")
        out += [f"  {line}" for line in self.lines[-last_lines:]]
        return "\n".join(out)


async def wait_for(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """Polls `check` until it returns something truthy; fails with its last value on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last value: {last!r}")
