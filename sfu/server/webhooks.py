"""Webhooks: room and participant events POSTed as JSON to the configured URLs, signed with
`X-SFU-Signature: sha256=<hex HMAC-SHA256 of the body>`. Events wait in a bounded queue that one
sender task empties, retrying each delivery with exponential backoff; the room never waits."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import aiohttp

from sfu import metrics
from sfu.config import WebhooksSection

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-SFU-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookSender:
    def __init__(self, config: WebhooksSection) -> None:
        self.config = config
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(config.queue_size)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue one event; drops it (logged, counted) when the queue is full."""
        body = json.dumps({"event": event, "id": f"EV_{secrets.token_hex(8)}",
                           "created_at": round(time.time(), 3), **data}).encode()
        try:
            self.queue.put_nowait(body)
        except asyncio.QueueFull:
            metrics.WEBHOOK_DELIVERIES.labels(result="dropped").inc()
            log.warning("webhook queue full: %s event dropped", event)
            return
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def close(self, timeout_s: float) -> None:
        """Deliver what is queued within timeout_s, then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout_s)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.timeout_s))
        while True:
            body = await self.queue.get()
            try:
                for url in self.config.urls:
                    delivered = await self._deliver(url, body)
                    metrics.WEBHOOK_DELIVERIES.labels(result="delivered" if delivered else "failed").inc()
            finally:
                self.queue.task_done()

    async def _deliver(self, url: str, body: bytes) -> bool:
        assert self._session is not None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self.config.secret, body)}
        for attempt in range(self.config.max_attempts):
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if response.status < 300:
                        return True
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = str(exc) or type(exc).__name__
            if attempt + 1 < self.config.max_attempts:
                backoff_s = min(self.config.max_backoff_s, self.config.initial_backoff_s * 2 ** attempt)
                log.info("webhook to %s failed (%s); retry in %.1f s", url, problem, backoff_s)
                await asyncio.sleep(backoff_s)
        log.warning("webhook to %s failed %d times; event dropped", url, self.config.max_attempts)
        return False
