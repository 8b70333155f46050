"""The parent's `/ws` with `--workers N`: one client WebSocket piped to a WebSocket on the worker
that holds the client's room (rooms are pinned to workers by name, `worker_for_room`).

Until the client is joined, the proxy parses the messages both ways (a handful, small): a `join`
picks the worker of its room, anything else goes to worker 0, which answers it (`wrong_state`,
`pong`, ...). A `join` for a room of another worker than the one answering so far moves the
connection there, once that worker has answered every earlier message (before joining, every
client message gets exactly one reply). After `joined`, frames pass through as they are, without
parsing. A close on either side closes the other with the same code and reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import zlib
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

CLOSE_TRY_AGAIN = 1013  # no worker to take the connection (it is restarting): reconnect
CLOSE_WORKER_GONE = 1011  # the worker holding the connection went away
ANSWER_TIMEOUT_S = 5.0  # how long a move to another worker waits for the earlier replies
_UNSENDABLE = {None, 1005, 1006, 1015}  # close codes that describe a close but may not be sent

Connect = Callable[[int, str], Awaitable[aiohttp.ClientWebSocketResponse]]


def worker_for_room(room: str, workers: int) -> int:
    """The worker a room lives on: a hash that is the same in every process and every run."""
    return zlib.crc32(room.encode("utf-8", "surrogatepass")) % workers


def _join_room(data: str) -> str | None:
    try:
        msg = json.loads(data)
    except ValueError:
        return None
    if isinstance(msg, dict) and msg.get("type") == "join" and isinstance(msg.get("room"), str):
        return str(msg["room"])
    return None


def _is_joined(data: str) -> bool:
    try:
        msg = json.loads(data)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("type") == "joined"


class WsProxy:
    """One client connection. `connect(worker, peer)` opens a WebSocket to that worker's /ws."""

    def __init__(self, client: web.WebSocketResponse, workers: int, connect: Connect, peer: str) -> None:
        self.client = client
        self.workers = workers
        self.connect = connect
        self.peer = peer
        self.joined = False
        self.worker: int | None = None
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self.pump: asyncio.Task[None] | None = None
        self.unanswered = 0  # client messages the current worker has not answered yet (before joined)
        self.answered = asyncio.Event()

    async def run(self) -> None:
        try:
            async for msg in self.client:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if not self.joined:
                    room = _join_room(msg.data) if msg.type == WSMsgType.TEXT else None
                    target = worker_for_room(room, self.workers) if room is not None else (self.worker or 0)
                    if target != self.worker and not await self._move(target):
                        return
                    self.unanswered += 1
                    self.answered.clear()
                upstream = self.upstream
                if upstream is None or upstream.closed:
                    break
                if msg.type == WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                else:
                    await upstream.send_bytes(msg.data)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: proxy stopped: %r", self.peer, exc)
        finally:
            await self._close_upstream(self.client.close_code)

    async def _move(self, target: int) -> bool:
        """Answer from worker `target` from now on; False (client closed with 1013) if it cannot."""
        if self.upstream is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.answered.wait(), ANSWER_TIMEOUT_S)
            await self._close_upstream(1000)
        try:
            upstream = await self.connect(target, self.peer)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("%s: worker %d unavailable: %r", self.peer, target, exc)
            await self.client.close(code=CLOSE_TRY_AGAIN, message=b"worker unavailable, try again")
            return False
        self.worker, self.upstream, self.unanswered = target, upstream, 0
        self.answered.set()
        self.pump = asyncio.ensure_future(self._pump(upstream))
        return True

    async def _pump(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        """Worker → client, until the worker closes; then close the client the same way."""
        client = self.client
        code: int | None = None
        reason = ""
        try:
            while True:
                msg = await upstream.receive()
                if msg.type == WSMsgType.TEXT:
                    if not self.joined:
                        self.joined = _is_joined(msg.data)
                        self.unanswered = max(0, self.unanswered - 1)
                        if not self.unanswered:
                            self.answered.set()
                    await client.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await client.send_bytes(msg.data)
                else:
                    if msg.type == WSMsgType.CLOSE:
                        code, reason = msg.data, str(msg.extra or "")
                    break
        except (ConnectionError, RuntimeError) as exc:
            log.debug("%s: worker → client stopped: %r", self.peer, exc)
        if upstream is not self.upstream:
            return  # retired by a move: the client stays open
        if code in _UNSENDABLE:
            code = upstream.close_code
        if code in _UNSENDABLE:
            code, reason = CLOSE_WORKER_GONE, "worker went away"
        assert code is not None
        await client.close(code=code, message=reason.encode()[:120])

    async def _close_upstream(self, code: int | None) -> None:
        upstream, pump = self.upstream, self.pump
        self.upstream = self.pump = None
        if upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.close(code=1000 if code in _UNSENDABLE else code)  # type: ignore[arg-type]
        if pump is not None:  # ends by itself: its worker socket is closed, or it is closing the client
            await asyncio.wait({pump})


async def proxy(request: web.Request, workers: int, connect: Connect, max_msg_size: int,
                sockets: set[web.WebSocketResponse]) -> web.WebSocketResponse:
    """The parent's /ws handler body."""
    client = web.WebSocketResponse(heartbeat=20, max_msg_size=max_msg_size)
    await client.prepare(request)
    sockets.add(client)
    try:
        await WsProxy(client, workers, connect, str(request.remote)).run()
    finally:
        sockets.discard(client)
    return client
