"""Opt-in debug endpoint (`--debug-endpoints`): live object counts for tests and leak hunting.
It walks the garbage collector's objects, which costs milliseconds: never enable it on a node
that takes real traffic."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections import Counter

from aiohttp import web
from aiortc import RTCPeerConnection

from sfu.media import fastpath
from sfu.server.loop_watchdog import BUSY_WATCH_KEY


def object_counts() -> dict[str, object]:
    codecs: Counter[str] = Counter()
    peer_connections = 0
    gc.collect()  # count what is alive, not garbage the collector has not reached yet
    objects = gc.get_objects()
    ours = theirs = 0  # instances of sfu.* and aiortc.* classes: a leak of per-participant state shows here
    for obj in objects:
        cls = type(obj)
        module = getattr(cls, "__module__", None)
        if not isinstance(module, str):
            continue
        if module.startswith("sfu."):
            ours += 1
        elif module.startswith("aiortc."):
            theirs += 1
        if module.startswith("aiortc.codecs") and cls.__name__.endswith(("Encoder", "Decoder")):
            codecs[cls.__name__] += 1
        elif cls is RTCPeerConnection and obj.connectionState != "closed":
            peer_connections += 1
    return {
        "codecs": dict(codecs),
        "peer_connections": peer_connections,
        "gc_objects": len(objects),
        "sfu_objects": ours,
        "aiortc_objects": theirs,
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "open_fds": len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1,
        "gc_frozen": gc.get_freeze_count(),  # objects of start-up kept out of collections (server.gc_freeze)
        "fastpath": {"enabled": fastpath.ENABLED, **fastpath.stats()},
    }


async def objects(request: web.Request) -> web.Response:
    counts = object_counts()
    watch = request.app.get(BUSY_WATCH_KEY)
    if watch is not None:  # the collection above blocks the loop on purpose: not a handler's fault
        watch.forgive()
    return web.json_response(counts)


def install(app: web.Application) -> None:
    app.router.add_get("/debug/objects", objects)
