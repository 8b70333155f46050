"""Running one node: network set-up (media addresses, UDP ports, loopback candidates), HTTP or
HTTPS listener, signals (SIGTERM drains, SIGINT stops at once) and an orderly exit."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from typing import Any

from aiohttp import web

from sfu.config import Config

log = logging.getLogger("sfu")


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return context


async def serve(config: Config, unix_path: str | None = None, worker: int | None = None) -> int:
    """`unix_path`, `worker`: a worker process of `--workers N` (sfu.server.workers) listens on a
    private unix socket instead of `host:port`, and says which worker it is in /healthz."""
    from sfu.rtc import media_ports, process_hooks, rtcp_guard
    from sfu.server.app import NODE_KEY, create_app

    process_hooks.check_aiortc()
    rtcp_guard.install()
    process_hooks.skip_receive_estimators()
    process_hooks.include_loopback_candidates(config.include_loopback_candidates)
    network = config.network
    media_ports.configure(network.media_addresses, network.udp_port_min, network.udp_port_max)
    if config.auth.dev_mode and worker is None:
        log.warning("DEV MODE: joins need no access token, any room is open to anyone "
                    "(set auth.dev_mode = false and auth.jwt_secret for production)")
    app = create_app(config, worker)
    node = app[NODE_KEY]
    # a worker's requests come from the parent, which logs the public ones
    quiet: dict[str, Any] = {"access_log": None} if worker is not None else {}
    runner = web.AppRunner(app, handle_signals=False, **quiet)
    await runner.setup()
    if unix_path is not None:
        await web.UnixSite(runner, unix_path).start()
        log.info("worker %s serving on unix:%s", worker, unix_path)
    else:
        context = tls_context(config)
        await web.TCPSite(runner, config.host, config.port, ssl_context=context).start()
        scheme = "https" if context else "http"
        log.info("serving on %s://%s:%d (demo page at /, signaling at /ws)", scheme, config.host, config.port)
    if config.server.gc_freeze:
        gc.collect()
        gc.freeze()  # what exists now lives as long as the process: keep it out of every later collection
        log.debug("gc: %d objects frozen", gc.get_freeze_count())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(node.drain.start()))
    stopped = asyncio.ensure_future(stop.wait())
    drained = asyncio.ensure_future(node.drain.done.wait())
    await asyncio.wait({stopped, drained}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    drained.cancel()
    log.info("shutting down")
    await runner.cleanup()
    return 0
