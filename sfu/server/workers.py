"""`sfu serve --workers N`: the parent process starts N worker processes, each a full server with
the same configuration listening on a private unix socket, and serves the public port itself
(demo page, `/ws` proxied to the worker of the room, aggregated health and metrics: sfu.server.front).
Media never passes through the parent: each worker's SDP carries its own ICE candidates.

A worker that exits unexpectedly is restarted (with a backoff); its rooms are lost and its
clients' sockets closed. SIGTERM drains every worker (they get SIGTERM) and exits 0 once all have
exited; SIGINT stops them at once. A worker also stops when its stdin reaches EOF, i.e. when the
parent is gone, however it died.

Run as `python -m sfu.server.workers INDEX SOCKET` it is one worker: it reads the configuration
(JSON) from the first line of stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from sfu.config import Config

log = logging.getLogger("sfu.workers")

START_TIMEOUT_S = 30.0  # a worker answers /healthz within this, or the start failed
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)  # after a stable run, then after 1, 2, 3... quick exits in a row
STABLE_AFTER_S = 60.0  # a worker that ran this long before exiting is restarted after the shortest backoff
KILL_GRACE_S = 5.0  # beyond the drain and shutdown timeouts, before SIGKILL


@dataclass
class Worker:
    """One worker process and the HTTP client session that talks to it over its unix socket."""

    index: int
    socket_path: str
    process: asyncio.subprocess.Process | None = None
    session: aiohttp.ClientSession | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_exits: int = 0
    alive: asyncio.Event = field(default_factory=asyncio.Event)  # set while it answers

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None or self.session.closed:
            # limit=0: one connection per proxied WebSocket, however many
            self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(self.socket_path, limit=0))
        return self.session

    def url(self, path: str) -> str:
        return f"http://sfu-worker-{self.index}{path}"


def worker_config(config: Config) -> str:
    """The configuration a worker runs with: the parent's, as one JSON line, without TLS (the
    parent terminates it) and with one process."""
    data = config.model_dump(mode="json")
    data["server"].update(workers=1, tls_cert="", tls_key="")
    return json.dumps(data)


class WorkerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.directory = tempfile.mkdtemp(prefix="sfu-workers-")
        self.workers = [Worker(i, str(Path(self.directory) / f"worker-{i}.sock")) for i in range(config.workers)]
        self.stopping = False
        self._supervisors: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every worker and wait until all answer; raises RuntimeError if one does not."""
        await asyncio.gather(*(self._spawn(w) for w in self.workers))
        self._supervisors = [asyncio.ensure_future(self._supervise(w)) for w in self.workers]

    async def _spawn(self, worker: Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.socket_path)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfu.server.workers", str(worker.index), worker.socket_path,
            stdin=asyncio.subprocess.PIPE)
        assert process.stdin is not None
        process.stdin.write(worker_config(self.config).encode() + b"\n")  # stdin stays open: the life-line
        worker.process, worker.started_at = process, time.monotonic()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.returncode is None:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with worker.client().get(worker.url("/healthz"), timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        worker.alive.set()
                        log.info("worker %d started (pid %d)", worker.index, process.pid)
                        return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"worker {worker.index} (pid {process.pid}) did not start "
                           f"(exit code {process.returncode})")

    async def _supervise(self, worker: Worker) -> None:
        """Restart the worker whenever it exits, until the pool stops."""
        while not self.stopping:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.alive.clear()
            if self.stopping:
                return
            if worker.session is not None:  # its pooled connections went with the process
                await worker.session.close()
                worker.session = None
            ran_s = time.monotonic() - worker.started_at
            worker.quick_exits = 0 if ran_s > STABLE_AFTER_S else worker.quick_exits + 1
            backoff = RESTART_BACKOFF_S[min(worker.quick_exits, len(RESTART_BACKOFF_S) - 1)]
            log.error("worker %d (pid %d) exited with code %s after %.1f s; its rooms are lost; "
                      "restarting in %.1f s", worker.index, worker.process.pid, code, ran_s, backoff)
            await asyncio.sleep(backoff)
            if self.stopping:
                return
            worker.restarts += 1
            try:
                await self._spawn(worker)
            except (RuntimeError, OSError) as exc:
                log.error("worker %d: restart failed: %s", worker.index, exc)
                if worker.process is not None and worker.process.returncode is None:
                    worker.process.kill()

    async def connect(self, index: int, peer: str) -> aiohttp.ClientWebSocketResponse:
        """A WebSocket to worker `index`'s /ws (for sfu.server.ws_proxy)."""
        worker = self.workers[index]
        if not worker.alive.is_set():
            raise aiohttp.ClientConnectionError(f"worker {index} is not running")
        return await worker.client().ws_connect(worker.url("/ws"), max_msg_size=0, autoping=True,
                                                headers={"X-Forwarded-For": peer},
                                                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0))

    async def stop(self, drain: bool) -> None:
        """SIGTERM (drain) or SIGINT every worker, wait for all to exit, SIGKILL what is left."""
        self.stopping = True
        sig = signal.SIGTERM if drain else signal.SIGINT
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(sig)
        server = self.config.server
        timeout_s = (server.drain_timeout_s if drain else 0.0) + server.shutdown_timeout_s + KILL_GRACE_S
        waits = [w.process.wait() for w in self.workers if w.process is not None]
        if waits:
            await asyncio.wait([asyncio.ensure_future(c) for c in waits], timeout=timeout_s)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                log.error("worker %d (pid %d) still running after %.0f s: killed", worker.index, worker.pid, timeout_s)
                worker.process.kill()
                await worker.process.wait()
        for task in self._supervisors:
            task.cancel()
        for worker in self.workers:
            if worker.process is not None and worker.process.stdin is not None:
                worker.process.stdin.close()
            if worker.session is not None:
                await worker.session.close()
        shutil.rmtree(self.directory, ignore_errors=True)


async def serve_workers(config: Config) -> int:
    """The parent process: start the workers, serve the public port, stop on SIGTERM/SIGINT."""
    from aiohttp import web

    from sfu.server.front import create_front_app
    from sfu.server.run import tls_context

    if config.auth.dev_mode:
        log.warning("DEV MODE: joins need no access token, any room is open to anyone "
                    "(set auth.dev_mode = false and auth.jwt_secret for production)")
    pool = WorkerPool(config)
    stop = asyncio.Event()
    drain = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, drain.set)
    try:
        await pool.start()
    except (RuntimeError, OSError) as exc:
        log.error("cannot start the workers: %s", exc)
        await pool.stop(drain=False)
        return 1
    app = create_front_app(config, pool, drain)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    context = tls_context(config)
    await web.TCPSite(runner, config.host, config.port, ssl_context=context).start()
    log.info("serving on %s://%s:%d with %d workers (pids %s)", "https" if context else "http", config.host,
             config.port, len(pool.workers), ", ".join(str(w.pid) for w in pool.workers))
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(drain.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    draining = not stop.is_set()
    log.info("%s the workers", "draining" if draining else "stopping")
    stopping = asyncio.ensure_future(pool.stop(drain=draining))
    stopped = asyncio.ensure_future(stop.wait())  # SIGINT during a drain: stop at once
    await asyncio.wait([stopping, stopped], return_when=asyncio.FIRST_COMPLETED)
    if not stopping.done():
        for worker in pool.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGINT)
        await stopping
    stopped.cancel()
    log.info("shutting down")
    await runner.cleanup()
    return 0


def _exit_with_parent() -> None:
    """Block on stdin; at EOF (the parent is gone) stop this worker as SIGINT would."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):  # the raw descriptor: no buffer lock held at interpreter exit
            pass
    os.kill(os.getpid(), signal.SIGINT)


class _WorkerTag(logging.Filter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.prefix = f"worker{index}/"

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            record.name = self.prefix + record.name
        return True


def worker_main(argv: list[str]) -> int:
    from sfu import logs
    from sfu.server.run import serve

    index, socket_path = int(argv[0]), argv[1]
    config = Config.model_validate(json.loads(sys.stdin.buffer.readline()))  # validated, env not read again
    logs.configure(config.log_level, config.server.log_json)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(index))
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        return asyncio.run(serve(config, unix_path=socket_path, worker=index))
    except KeyboardInterrupt:  # SIGINT before the loop installed its handler
        return 0


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
