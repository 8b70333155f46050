"""The HTTP side of one server: demo page, static JS client, WebSocket signaling, health and
readiness, metrics, and the admin API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import web

from sfu import metrics
from sfu.config import Config
from sfu.room.allocation import AllocationLoop
from sfu.room.room import RoomRegistry
from sfu.server.loop_watchdog import BUSY_WATCH_KEY, BusyWatch, watch_loop_lag
from sfu.server.node import Node
from sfu.signaling.session import SignalingSession
from sfu.speaker import SpeakerLoop

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomRegistry)
NODE_KEY = web.AppKey("node", Node)
SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
WATCHDOG_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("watchdog")
WORKER_KEY = web.AppKey("worker", int)  # set in a worker process of `--workers N` (sfu.server.workers)


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    rooms = request.app[ROOMS_KEY]
    body: dict[str, object] = {
        "status": "ok",
        "rooms": len(rooms.rooms),
        "participants": sum(len(r.participants) for r in rooms.rooms.values()),
    }
    if WORKER_KEY in request.app:
        body["worker"] = request.app[WORKER_KEY]
    return web.json_response(body)


async def readyz(request: web.Request) -> web.Response:
    """Accepting joins: 200, else (draining) 503 — load balancers stop sending new clients."""
    drain = request.app[NODE_KEY].drain
    if drain.active:
        return web.json_response({"ready": False, "draining": True, "deadline_s": round(drain.remaining_s, 3)},
                                 status=503)
    return web.json_response({"ready": True, "draining": False})


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG_KEY]
    # aiohttp refuses larger frames itself (close 1009); our own check answers `too_large` for
    # anything between our limit and this hard cap.
    # heartbeat: a peer that vanished without closing (cable pulled) is noticed within ~5-10 s
    ws = web.WebSocketResponse(heartbeat=5, max_msg_size=config.max_message_bytes * 4)
    await ws.prepare(request)
    sockets = request.app[SOCKETS_KEY]
    sockets.add(ws)
    peer = str(request.remote)
    if WORKER_KEY in request.app:  # behind the parent's proxy, on a private unix socket
        peer = request.headers.get("X-Forwarded-For", peer)
    session = SignalingSession(ws, request.app[NODE_KEY], peer=peer)
    try:
        await session.run()
    finally:
        sockets.discard(ws)
    return ws


async def _on_startup(app: web.Application) -> None:
    app[WATCHDOG_KEY] = asyncio.ensure_future(watch_loop_lag())
    app[BUSY_WATCH_KEY] = BusyWatch(app[CONFIG_KEY].server.loop_heartbeat_s)
    app[BUSY_WATCH_KEY].start()


async def _on_shutdown(app: web.Application) -> None:
    for ws in list(app[SOCKETS_KEY]):  # type: ignore[index]  # aiohttp overloads confuse mypy here
        await ws.close(code=1001, message=b"server shutting down")
    await asyncio.wait_for(app[ROOMS_KEY].close(), app[CONFIG_KEY].shutdown_timeout_s)
    node = app[NODE_KEY]
    if node.webhooks is not None:
        await node.webhooks.close(timeout_s=min(2.0, app[CONFIG_KEY].shutdown_timeout_s))
    busy = app.get(BUSY_WATCH_KEY)
    if busy is not None:
        busy.stop()
        log.info("%s", busy.summary())  # tests/conftest.py collects this line from every server it ran
    watchdog = app.get(WATCHDOG_KEY)
    if watchdog is not None:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog


def create_app(config: Config, worker: int | None = None) -> web.Application:
    app = web.Application(client_max_size=config.max_message_bytes * 4)
    node = Node.create(config)
    app[CONFIG_KEY] = config
    if worker is not None:
        app[WORKER_KEY] = worker
    app[ROOMS_KEY] = node.rooms
    app[NODE_KEY] = node
    app[SOCKETS_KEY] = set()
    metrics.install(node.rooms)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if WEB_DIR.is_dir():
        app.router.add_static("/web/", WEB_DIR, show_index=False)
    if config.debug_endpoints:
        from sfu.server import debug

        debug.install(app)
    if config.admin.api_key:
        from sfu.server.admin import create_admin_app

        app.add_subapp("/admin/", create_admin_app(node))
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    allocation = AllocationLoop(node.rooms)
    app.on_startup.append(allocation.on_startup)
    app.on_cleanup.append(allocation.on_cleanup)
    speakers = SpeakerLoop(node.rooms)
    app.on_startup.append(speakers.on_startup)
    app.on_cleanup.append(speakers.on_cleanup)
    return app
