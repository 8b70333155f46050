"""The parent's HTTP side with `--workers N` (sfu.server.workers): the demo page and static files,
`/ws` proxied to the worker of the room (sfu.server.ws_proxy), and the node-wide views made from
every worker's own endpoints:

- `/healthz`: 200 when every worker answers, else 503; per-worker rooms, participants, pid, restarts.
- `/readyz`: 200 when every worker is ready (none draining, none restarting), else 503.
- `/metrics`: every worker's samples, each with a `worker="i"` label (sum over it for node totals),
  plus `sfu_worker_up` and `sfu_worker_restarts_total`.
- `/admin/` (when `admin.api_key` is set): `GET /admin/rooms` lists the rooms of all workers (each
  with its `worker`); `/admin/rooms/{room}...` goes to the worker of that room; `POST /admin/drain`
  drains the whole node, as SIGTERM does.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from yarl import URL

from sfu.config import Config
from sfu.server.admin import Handler, _authorized
from sfu.server.app import WEB_DIR, index
from sfu.server.ws_proxy import proxy, worker_for_room

if TYPE_CHECKING:
    from sfu.server.workers import Worker, WorkerPool

POOL_KEY: web.AppKey[WorkerPool] = web.AppKey("pool")
CONFIG_KEY = web.AppKey("front_config", Config)
DRAIN_KEY = web.AppKey("drain", asyncio.Event)
SOCKETS_KEY: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("front_sockets")
TIMEOUT = aiohttp.ClientTimeout(total=5)
_HOP_HEADERS = ("Authorization", "Content-Type")


async def _ask(worker: Worker, method: str, path_qs: str, headers: dict[str, str] | None = None,
               body: bytes | None = None) -> tuple[int, bytes]:
    """One request to a worker; (0, b"") if it does not answer."""
    if not worker.alive.is_set():
        return 0, b""
    try:
        async with worker.client().request(method, URL(worker.url(path_qs), encoded=True), headers=headers,
                                           data=body, timeout=TIMEOUT) as response:
            return response.status, await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0, b""


async def _ask_all(pool: WorkerPool, path: str) -> list[tuple[int, bytes]]:
    return list(await asyncio.gather(*(_ask(w, "GET", path) for w in pool.workers)))


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def healthz(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    answers = await _ask_all(pool, "/healthz")
    workers = []
    for worker, (status, body) in zip(pool.workers, answers, strict=True):
        info = _json(body) if status == 200 else {}
        workers.append({"worker": worker.index, "pid": worker.pid, "alive": status == 200,
                        "restarts": worker.restarts, "rooms": info.get("rooms", 0),
                        "participants": info.get("participants", 0)})
    healthy = all(w["alive"] for w in workers)
    return web.json_response({
        "status": "ok" if healthy else "degraded",
        "rooms": sum(w["rooms"] for w in workers),
        "participants": sum(w["participants"] for w in workers),
        "workers": workers,
    }, status=200 if healthy else 503)


async def readyz(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    answers = await _ask_all(pool, "/readyz")
    ready = [status == 200 for status, _ in answers]
    draining = request.app[DRAIN_KEY].is_set() or any(_json(body).get("draining") for _, body in answers)
    body = {"ready": all(ready) and not draining, "draining": draining, "workers_ready": ready}
    return web.json_response(body, status=200 if body["ready"] else 503)


def label_samples(text: str, worker: int) -> list[tuple[str, str]]:
    """(family, line) of one worker's exposition: comments as they are, samples with `worker="i"`."""
    out: list[tuple[str, str]] = []
    family = ""
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                family = parts[2]
                out.append((family, line))
            continue
        cut = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
        label = f'worker="{worker}"'
        if line[cut:cut + 1] == "{":
            rest = line[cut + 1:]
            line = f"{line[:cut]}{{{label}{'' if rest.startswith('}') else ','}{rest}"
        else:
            line = f"{line[:cut]}{{{label}}}{line[cut:]}"
        out.append((family, line))
    return out


def merge_metrics(texts: list[tuple[int, str]]) -> str:
    """Every worker's exposition as one: each family once (HELP/TYPE from the first worker that has
    it), then its samples from all workers, labelled."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in texts:
        for family, line in label_samples(text, worker):
            headers.setdefault(family, [])
            samples.setdefault(family, [])
            if line.startswith("#"):
                kind = line.split(" ", 2)[1]
                if not any(h.split(" ", 2)[1] == kind for h in headers[family]):
                    headers[family].append(line)
            else:
                samples[family].append(line)
    lines: list[str] = []
    for family, header in headers.items():
        lines.extend(header)
        lines.extend(samples[family])
    return "\n".join(lines) + "\n"


async def metrics_endpoint(request: web.Request) -> web.Response:
    pool = request.app[POOL_KEY]
    answers = await _ask_all(pool, "/metrics")
    texts = [(w.index, body.decode(errors="replace")) for w, (status, body) in
             zip(pool.workers, answers, strict=True) if status == 200]
    own = ["# HELP sfu_worker_up 1 when the worker process answers, else 0", "# TYPE sfu_worker_up gauge"]
    own += [f'sfu_worker_up{{worker="{w.index}"}} {int(status == 200)}'
            for w, (status, _) in zip(pool.workers, answers, strict=True)]
    own += ["# HELP sfu_worker_restarts_total Worker processes restarted after an unexpected exit",
            "# TYPE sfu_worker_restarts_total counter"]
    own += [f'sfu_worker_restarts_total{{worker="{w.index}"}} {w.restarts}' for w in pool.workers]
    return web.Response(text=merge_metrics(texts) + "\n".join(own) + "\n", content_type="text/plain",
                        charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    pool = request.app[POOL_KEY]
    limit = request.app[CONFIG_KEY].max_message_bytes * 4  # the same hard cap as a worker's
    return await proxy(request, len(pool.workers), pool.connect, limit, request.app[SOCKETS_KEY])


def _admin_app(config: Config, pool: WorkerPool, drain: asyncio.Event) -> web.Application:
    api_key = config.admin.api_key

    async def forward(request: web.Request, worker: Worker) -> web.Response:
        headers = {k: v for k in _HOP_HEADERS if (v := request.headers.get(k)) is not None}
        body = await request.read() if request.can_read_body else None
        status, data = await _ask(worker, request.method, request.raw_path, headers, body)
        if status == 0:
            return web.json_response({"error": f"worker {worker.index} is not answering"}, status=503)
        return web.Response(body=data, status=status, content_type="application/json")

    async def rooms(request: web.Request) -> web.Response:
        answers = await asyncio.gather(*(_ask(w, "GET", request.raw_path, {"Authorization": request.headers.get(
            "Authorization", "")}) for w in pool.workers))
        out = []
        for worker, (status, body) in zip(pool.workers, answers, strict=True):
            if status != 200:
                return web.json_response({"error": f"worker {worker.index} answered {status or 'nothing'}"},
                                         status=503 if status in (0, 503) else status)
            out += [{**room, "worker": worker.index} for room in _json(body).get("rooms", [])]
        return web.json_response({"rooms": out})

    async def room(request: web.Request) -> web.Response:
        return await forward(request, pool.workers[worker_for_room(request.match_info["room"], len(pool.workers))])

    async def drain_node(request: web.Request) -> web.Response:
        drain.set()
        return web.json_response({"draining": True, "deadline_s": config.server.drain_timeout_s}, status=202)

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _authorized(request, api_key):  # checked here and again by the worker
            return web.json_response({"error": "missing or wrong admin API key"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    admin = web.Application(middlewares=[require_key])
    admin.router.add_get("/rooms", rooms)
    admin.router.add_route("*", "/rooms/{room}", room)
    admin.router.add_route("*", "/rooms/{room}/{tail:.*}", room)
    admin.router.add_post("/drain", drain_node)
    return admin


async def _on_shutdown(app: web.Application) -> None:
    for ws in list(app[SOCKETS_KEY]):  # type: ignore[index]  # aiohttp overloads confuse mypy here
        await ws.close(code=1001, message=b"server shutting down")


def create_front_app(config: Config, pool: WorkerPool, drain: asyncio.Event) -> web.Application:
    app = web.Application(client_max_size=config.max_message_bytes * 4)
    app[CONFIG_KEY] = config
    app[POOL_KEY] = pool
    app[DRAIN_KEY] = drain
    app[SOCKETS_KEY] = set()
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    if WEB_DIR.is_dir():
        app.router.add_static("/web/", WEB_DIR, show_index=False)
    if config.admin.api_key:
        app.add_subapp("/admin/", _admin_app(config, pool, drain))
    app.on_shutdown.append(_on_shutdown)
    return app
