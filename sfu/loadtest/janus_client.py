"""A Janus videoroom client over the Janus HTTP API, as a load :class:`~.target.Target`.

One Janus session carries all handles of a run; a long-poll task dispatches asynchronous plugin
events to the request (by transaction) that waits for them. Publishers offer (aiortc), subscribers
answer Janus's offer; each subscriber has one peer connection per publisher it watches (Janus
videoroom without multistream subscriptions of several feeds at once).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import aiohttp
from aiortc import MediaStreamTrack, RTCRtpTransceiver, RTCSessionDescription

from .janus import JanusServer
from .probes import LiteSubscriber, SendTimes
from .target import PublisherHandle, SubscriberHandle, instrument_publisher, new_peer_connection

logger = logging.getLogger(__name__)

PLUGIN = "janus.plugin.videoroom"
EVENT_TIMEOUT_S = 15.0
NO_SUCH_FEED = 428  # JANUS_VIDEOROOM_ERROR_NO_SUCH_FEED
FEED_RETRY_INTERVAL_S = 0.2
FEED_RETRY_TIMEOUT_S = 15.0
CONNECT_TIMEOUT_S = 15.0


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus API session with a long-poll event loop."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.session_id: int | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": body.get("transaction") or secrets.token_hex(8)}
        async with self.http.post(f"{self.base_url}{path}", json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(reply.get("error"))
        return reply

    async def create(self) -> None:
        reply = await self._post("", {"janus": "create"})
        self.session_id = reply["data"]["id"]
        self._poller = asyncio.create_task(self._poll())

    async def attach(self) -> int:
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": PLUGIN})
        return int(reply["data"]["id"])

    async def detach(self, handle: int) -> None:
        try:
            await self._post(f"/{self.session_id}/{handle}", {"janus": "detach"})
        except (JanusError, aiohttp.ClientError):
            pass

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request (create, list...): plugin data of the reply."""
        reply = await self._post(f"/{self.session_id}/{handle}", {"janus": "message", "body": body})
        data: dict[str, Any] = reply["plugindata"]["data"]
        if "error_code" in data:
            raise JanusError(data)
        return data

    async def message(self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        """An asynchronous plugin request: waits for its event (plugin data + ``jsep``)."""
        transaction = secrets.token_hex(8)
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[transaction] = waiter
        payload: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            await self._post(f"/{self.session_id}/{handle}", payload)
            event = await asyncio.wait_for(waiter, EVENT_TIMEOUT_S)
        finally:
            self._waiters.pop(transaction, None)
        data = dict(event["plugindata"]["data"])
        if "error_code" in data:
            raise JanusError(data)
        if "jsep" in event:
            data["jsep"] = event["jsep"]
        return data

    async def _poll(self) -> None:
        url = f"{self.base_url}/{self.session_id}?maxev=20"
        while True:
            try:
                async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=40)) as response:
                    events = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.debug("janus long poll: %s", exc)
                await asyncio.sleep(0.2)
                continue
            for event in events if isinstance(events, list) else [events]:
                waiter = self._waiters.get(event.get("transaction", ""))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)

    async def destroy(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self.session_id is not None:
            try:
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
            except (JanusError, aiohttp.ClientError):
                pass


async def _wait_connected(pc: Any, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            raise JanusError(f"peer connection {pc.connectionState}")
        await asyncio.sleep(0.05)


class JanusTarget:
    """Janus in a namespace (started here) driven through its videoroom plugin."""

    name = "janus"
    metrics_url = None

    def __init__(self, install: bool = True) -> None:
        self.server = JanusServer(install=install)
        self.client_address = self.server.host_address
        self._http: aiohttp.ClientSession | None = None
        self._session: JanusSession | None = None
        self._admin_handle = 0

    @property
    def server_pid(self) -> int | None:
        return self.server.pid

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.server.start)
        self._http = aiohttp.ClientSession()
        self._session = JanusSession(self._http, self.server.base_url)
        await self._session.create()
        self._admin_handle = await self._session.attach()

    @property
    def session(self) -> JanusSession:
        assert self._session is not None, "start() first"
        return self._session

    async def create_room(self, index: int) -> str:
        room = 4200 + index
        await self.session.request(
            self._admin_handle,
            {
                "request": "create",
                "room": room,
                "publishers": 100,
                "bitrate": 0,
                "fir_freq": 0,
                "videocodec": "vp8",
                "audiocodec": "opus",
                "is_private": False,
            },
        )
        return str(room)

    async def add_publisher(
        self, room: str, name: str, tracks: list[MediaStreamTrack], send_times: SendTimes
    ) -> PublisherHandle:
        handle = await self.session.attach()
        joined = await self.session.message(
            handle, {"request": "join", "ptype": "publisher", "room": int(room), "display": name}
        )
        pc = new_peer_connection()
        try:
            for track in tracks:
                pc.addTransceiver(track, direction="sendonly")
            instrument_publisher(pc, send_times)
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"type": "offer", "sdp": pc.localDescription.sdp}
            body = {"request": "publish", "audio": True, "video": True}
            reply = await self.session.message(handle, body, offer)
            await pc.setRemoteDescription(RTCSessionDescription(reply["jsep"]["sdp"], reply["jsep"]["type"]))
            await _wait_connected(pc)
        except BaseException:  # also cancellation by the join timeout
            await self._abandon(pc, handle)
            raise

        async def close() -> None:
            await pc.close()
            await self.session.detach(handle)

        return PublisherHandle(name, room, joined["id"], send_times, tracks, close)

    async def _abandon(self, pc: Any, handle: int) -> None:
        try:
            await asyncio.wait_for(pc.close(), 5)
            await asyncio.wait_for(self.session.detach(handle), 5)
        except Exception as exc:
            logger.debug("abandoning handle %s: %r", handle, exc)

    async def _subscribe_once(
        self, room: str, feed: PublisherHandle, probe: LiteSubscriber, receiver_reports: bool
    ) -> tuple[Any, int]:
        handle = await self.session.attach()
        body = {
            "request": "join",
            "ptype": "subscriber",
            "room": int(room),
            "streams": [{"feed": feed.feed_id}],
        }
        deadline = time.monotonic() + FEED_RETRY_TIMEOUT_S
        while True:
            try:
                attached = await self.session.message(handle, body)
                break
            except JanusError as exc:
                no_feed = isinstance(exc.args[0], dict) and exc.args[0].get("error_code") == NO_SUCH_FEED
                if not no_feed or time.monotonic() > deadline:
                    await self.session.detach(handle)
                    raise
                await asyncio.sleep(FEED_RETRY_INTERVAL_S)
        pc = new_peer_connection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            transceiver: RTCRtpTransceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            probe.install(transceiver.receiver, track.kind, feed.send_times, receiver_reports)

        try:
            offer = attached["jsep"]
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
            await pc.setLocalDescription(await pc.createAnswer())
            answer = {"type": "answer", "sdp": pc.localDescription.sdp}
            await self.session.message(handle, {"request": "start"}, answer)
            await _wait_connected(pc)
        except BaseException:
            await self._abandon(pc, handle)
            raise
        return pc, handle

    async def add_subscriber(
        self,
        room: str,
        name: str,
        publishers: list[PublisherHandle],
        probe: LiteSubscriber,
        receiver_reports: bool,
    ) -> SubscriberHandle:
        links: list[tuple[Any, int]] = []
        try:
            for feed in publishers:
                links.append(await self._subscribe_once(room, feed, probe, receiver_reports))
        except BaseException:
            for pc, handle in links:
                await self._abandon(pc, handle)
            raise

        async def close() -> None:
            for pc, handle in links:
                await pc.close()
                await self.session.detach(handle)

        return SubscriberHandle(name, probe, len(links), close)

    async def stop(self) -> None:
        try:
            if self._session is not None:
                await self._session.destroy()
            if self._http is not None:
                await self._http.close()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self.server.stop)
