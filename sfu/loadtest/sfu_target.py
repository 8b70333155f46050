"""Our server as a load :class:`~.target.Target`: an existing URL, or ``sfu serve`` started here."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpTransceiver

from .probes import LiteSubscriber, SendTimes
from .procstat import process_tree
from .target import PublisherHandle, SubscriberHandle, instrument_publisher

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 15.0
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m sfu serve`` on a free loopback port, stopped (with its workers) by PID."""

    def __init__(self, workers: int = 1, extra_args: list[str] | None = None) -> None:
        self.port = free_port()
        self.workers = workers
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        atexit.register(self.stop)
        fd, name = tempfile.mkstemp(prefix="sfu-serve-", suffix=".log")
        self.log_path = Path(name)
        cmd = [sys.executable, "-m", "sfu", "serve", "--host", LOOPBACK, "--port", str(self.port)]
        if self.workers != 1:
            cmd += ["--workers", str(self.workers)]
        # the forwarding-delay histogram (sfu_forwarding_delay_seconds) the report reads: docs/fastpath.md
        env = {**os.environ, "SFU_FASTPATH_PROFILE": os.environ.get("SFU_FASTPATH_PROFILE", "1")}
        self.process = subprocess.Popen(
            cmd + self.extra_args,
            env=env,
            stdout=fd,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(fd)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"sfu serve exited at start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # it answers HTTP: up, even without /healthz
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"sfu serve did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            descendants = process_tree(self.process.pid)[1:]
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(STOP_TIMEOUT_S)
            for pid in descendants:  # workers it started and failed to stop
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process = None
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        atexit.unregister(self.stop)


async def _wait_connected(pc: Any, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise RuntimeError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.05)


class SfuTarget:
    """Our server through ``sfu.client.SfuClient`` (one peer connection per participant)."""

    name = "sfu"
    client_address = LOOPBACK

    def __init__(self, url: str | None = None, workers: int = 1, participants_per_room: int = 0) -> None:
        self._given_url = url.rstrip("/") if url else None
        # the server we start admits the whole room (the default limit, 50, once stopped scale.py at
        # 80 subscribers with room_full); a server given by --url keeps its own limits
        extra = ["--max-participants", str(participants_per_room)] if participants_per_room > 50 else []
        self.server = None if url else ServerProcess(workers=workers, extra_args=extra)
        self.server_pid: int | None = None
        self._track_owner: dict[str, PublisherHandle] = {}

    @property
    def url(self) -> str:
        if self._given_url:
            return self._given_url
        assert self.server is not None
        return self.server.url

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    async def start(self) -> None:
        if self.server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.server.start)
            assert self.server.process is not None
            self.server_pid = self.server.process.pid
        else:
            self.server_pid = _pid_listening_on(self.url)
            if self.server_pid is None:
                logger.warning("cannot find the local process serving %s: no CPU/RSS figures", self.url)

    async def create_room(self, index: int) -> str:
        """Room `index` on worker `index % workers` (rooms are pinned to workers by name), so every
        worker of a multi-worker server gets its share of the load."""
        from sfu.server.ws_proxy import worker_for_room

        workers = await asyncio.get_running_loop().run_in_executor(None, _worker_count, self.url)
        base = f"loadtest-{os.getpid()}-{index}"
        if workers <= 1:
            return base
        return next(name for name in (f"{base}-{i}" for i in range(10_000))
                    if worker_for_room(name, workers) == index % workers)

    async def add_publisher(
        self, room: str, name: str, tracks: list[MediaStreamTrack], send_times: SendTimes
    ) -> PublisherHandle:
        from sfu.client import SfuClient

        client = SfuClient(self.url, room, name, auto_subscribe=False)
        try:
            await client.connect()
            sources = [(t, "camera" if t.kind == "video" else "microphone") for t in tracks]
            track_ids = await client.publish_many(sources)
            assert client.pc is not None
            instrument_publisher(client.pc, send_times)
            await _wait_connected(client.pc)
        except BaseException:  # also cancellation by the join timeout: leave no session open
            await _close_quietly(client)
            raise
        handle = PublisherHandle(name, room, client.participant_id, send_times, tracks, client.close)
        handle.extra["track_ids"] = track_ids
        for track_id in track_ids:
            self._track_owner[track_id] = handle
        return handle

    def _owner(self, track_id: str, info: dict[str, Any], publishers: list[PublisherHandle]) -> SendTimes | None:
        owner = self._track_owner.get(track_id)
        if owner is None:
            participant = info.get("participant_id")
            owner = next((p for p in publishers if p.feed_id == participant), None)
        if owner is None and len(publishers) == 1:
            owner = publishers[0]
        return owner.send_times if owner else None

    async def add_subscriber(
        self,
        room: str,
        name: str,
        publishers: list[PublisherHandle],
        probe: LiteSubscriber,
        receiver_reports: bool,
    ) -> SubscriberHandle:
        from sfu.client import SfuClient

        client = SfuClient(self.url, room, name, auto_subscribe=True)

        def on_track(
            track_id: str, info: dict[str, Any], track: MediaStreamTrack, transceiver: RTCRtpTransceiver
        ) -> None:
            probe.install(transceiver.receiver, track.kind, self._owner(track_id, info, publishers), receiver_reports)

        client.on_track = on_track
        try:
            await client.connect()
            await _wait_connected(client.pc)
        except BaseException:
            await _close_quietly(client)
            raise
        return SubscriberHandle(name, probe, 1, client.close)

    async def stop(self) -> None:
        if self.server is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.server.stop)


async def _close_quietly(client: Any) -> None:
    try:
        await asyncio.wait_for(client.close(), 5)
    except Exception as exc:
        logger.debug("closing %s: %r", client.name, exc)


def _worker_count(url: str) -> int:
    """Workers of the server at `url` (its /healthz lists them); 1 for a single process."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return max(1, len(json.loads(response.read()).get("workers", [])))
    except (OSError, ValueError, AttributeError):
        return 1


def _pid_listening_on(url: str) -> int | None:
    """PID of a local process listening on the URL's TCP port (via /proc), if any."""
    from urllib.parse import urlparse

    port = urlparse(url).port or 80
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{entry}/fd"):
                link = os.readlink(f"/proc/{entry}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry)
        except OSError:
            continue
    return None
