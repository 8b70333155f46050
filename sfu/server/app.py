"""The HTTP side of one server: demo page, static JS client, WebSocket signaling, health, metrics."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiohttp import web

from sfu import metrics
from sfu.config import Config
from sfu.room.room import RoomRegistry
from sfu.signaling.session import SignalingSession

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
CONFIG_KEY = web.AppKey("config", Config)
ROOMS_KEY = web.AppKey("rooms", RoomRegistry)
SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    rooms = request.app[ROOMS_KEY]
    return web.json_response({
        "status": "ok",
        "rooms": len(rooms.rooms),
        "participants": sum(len(r.participants) for r in rooms.rooms.values()),
    })


async def metrics_endpoint(request: web.Request) -> web.Response:
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG_KEY]
    # aiohttp refuses larger frames itself (close 1009); our own check answers `too_large` for
    # anything between our limit and this hard cap.
    ws = web.WebSocketResponse(heartbeat=20, max_msg_size=config.max_message_bytes * 4)
    await ws.prepare(request)
    sockets = request.app[SOCKETS_KEY]
    sockets.add(ws)
    session = SignalingSession(ws, request.app[ROOMS_KEY], config, peer=str(request.remote))
    try:
        await session.run()
    finally:
        sockets.discard(ws)
    return ws


async def _on_shutdown(app: web.Application) -> None:
    for ws in list(app[SOCKETS_KEY]):  # type: ignore[index]  # aiohttp overloads confuse mypy here
        await ws.close(code=1001, message=b"server shutting down")
    await asyncio.wait_for(app[ROOMS_KEY].close(), app[CONFIG_KEY].shutdown_timeout_s)


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.max_message_bytes * 4)
    rooms = RoomRegistry(config.max_participants)
    app[CONFIG_KEY] = config
    app[ROOMS_KEY] = rooms
    app[SOCKETS_KEY] = set()
    metrics.install(rooms)
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    if WEB_DIR.is_dir():
        app.router.add_static("/web/", WEB_DIR, show_index=False)
    if config.debug_endpoints:
        from sfu.server import debug

        debug.install(app)
    app.on_shutdown.append(_on_shutdown)
    return app
