"""SfuClient: a Python (aiortc) client of the signaling protocol in docs/protocol.md, used by the
tests, the load generator and server-side bots.

aiortc cannot roll back a local offer, so this client cannot be the polite peer of perfect
negotiation on glare; it publishes in its first offer, sent right after `joined`, which the server
answers before making offers of its own (docs/protocol.md, "First offer")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from sfu.client_tracks import MidReceiver, RemoteTrack, resync_video

log = logging.getLogger(__name__)

SILENCE_S = 2.0  # no media frame for this long (while receiving tracks): the connection is gone
RESUME_TIMEOUT_S = 1.0  # one resume attempt (socket + join): short, so one begun during the cut ends soon

TrackCallback = Callable[[str, dict[str, Any], MediaStreamTrack, RTCRtpTransceiver], None]


def _own_track(mid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: bool(msg["track"].get("mid") == mid)


class SfuClient:
    def __init__(self, url: str, room: str, name: str = "", token: str | None = None, *,
                 auto_subscribe: bool = True, ssl: ssl_module.SSLContext | bool | None = None,
                 data: bool = False, auto_resume: bool = False) -> None:
        self.url = url.rstrip("/")
        self.data = data  # open the two data channels (docs/protocol.md, "Data channels")
        self.auto_resume = auto_resume  # resume by itself after a network cut
        self.resume_token: str | None = None
        self.resumes = 0
        self.resumed_at = 0.0  # wall-clock time of the last completed resume
        self.state = "connected"
        self.last_frame_s = time.monotonic()  # when the last media frame of any remote track arrived
        self._published: list[tuple[MediaStreamTrack, str]] = []
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self.channels: dict[str, Any] = {}
        # (sender participant id, data (JSON value or bytes), reliable?) for every relayed message
        self.on_data: Callable[[str, Any, bool], None] | None = None
        self.ssl = ssl  # for an https:// url (wss): a context trusting the server's certificate
        self.room = room
        self.name = name
        self.token = token
        self.auto_subscribe = auto_subscribe
        self.pc: RTCPeerConnection | None = None
        self.participant_id: str | None = None
        self.on_track: TrackCallback | None = None
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self.messages: list[dict[str, Any]] = []  # every server message, in order
        self.tracks: dict[str, dict[str, Any]] = {}  # track id -> Track info, for the whole room
        self.mids: dict[str, str] = {}  # mid -> track id, from the latest server offer
        self.remote_tracks: dict[str, RemoteTrack] = {}  # track id -> receiving track
        self._mid_receivers: dict[str, MidReceiver] = {}
        self._pending_publish: list[tuple[MediaStreamTrack, str, str]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool] | None, asyncio.Future[Any]]] = []
        self._lock = asyncio.Lock()

    # -- API ---------------------------------------------------------------------------------

    async def connect(self, tracks: list[tuple[MediaStreamTrack, str]] | None = None) -> dict[str, Any]:
        """Join the room; publish `tracks` ([(track, source)]) in the first offer. Returns `joined`."""
        join: dict[str, Any] = {"room": self.room, "name": self.name, "auto_subscribe": self.auto_subscribe}
        if self.token:
            join["token"] = self.token
        msg = await self._open(join)
        if tracks:
            await self.publish_many(tracks)
        if self.auto_resume and self._watchdog is None:
            self._watchdog = asyncio.ensure_future(self._watch())
        return msg

    async def _open(self, join: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """A socket, `join`, and a fresh peer connection configured from `joined`."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        self._ws = await self._session.ws_connect(self.url.replace("http", "ws", 1) + "/ws", max_msg_size=0,
                                                  ssl=True if self.ssl is None else self.ssl)
        self._reader = asyncio.ensure_future(self._read())
        joined = self.expect("joined")
        failed = self.expect("error")
        await self.send("join", **join)
        done, _ = await asyncio.wait({joined, failed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if joined not in done:
            failed.cancel()
            joined.cancel()
            error = failed.result() if failed in done else {"code": "timeout", "message": "no answer to join"}
            raise ConnectionError(f"join failed: {error['code']}: {error['message']}")
        failed.cancel()
        msg = joined.result()
        self.participant_id = msg["participant"]["id"]
        self.resume_token = msg.get("resume_token")
        for track in msg["tracks"]:
            self.tracks[track["id"]] = track
        ice = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in msg["ice_servers"]]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        self.pc.on("track", self._on_pc_track)
        if self.data:
            self._open_data_channels()
        return dict(msg)

    # -- resuming after a network cut (docs/protocol.md, "Resuming") ------------------------

    async def _watch(self) -> None:
        """Resume when the socket closed or no media frame arrived for a while."""
        while not self._closing:
            await asyncio.sleep(0.5)
            if self._closing:
                return
            socket_gone = self._reader is None or self._reader.done()
            silent = bool(self.remote_tracks) and time.monotonic() - self.last_frame_s > SILENCE_S
            if socket_gone or silent:
                await self._resume()

    async def _resume(self) -> None:
        self.state = "reconnecting"
        await self._drop_connection()
        delay_s = 0.25
        while not self._closing:
            try:
                await self._open({"room": self.room, "resume": self.resume_token}, timeout_s=RESUME_TIMEOUT_S)
                if self._published:
                    await self._publish(self._published)
                self.resumes += 1
                self.resumed_at = time.time()
                self.state = "connected"
                self.last_frame_s = time.monotonic()
                return
            except (TimeoutError, OSError, aiohttp.ClientError, ConnectionError) as exc:
                log.info("client %s: resume failed (%s), retrying in %.2f s", self.name, exc, delay_s)
                if "resume_failed" in str(exc):
                    self.state = "failed"
                    return
                await self._drop_connection()
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.5)

    async def _drop_connection(self) -> None:
        """Forget the old socket and peer connection without `leave` (the server holds us)."""
        for task in (self._reader,):
            if task is not None:
                task.cancel()
        for track in self.remote_tracks.values():
            track.stop()
        self.remote_tracks.clear()
        self._mid_receivers.clear()
        self.mids = {}
        with contextlib.suppress(Exception):
            if self._ws is not None:
                await self._ws.close()
        with contextlib.suppress(Exception):
            if self.pc is not None:
                await self.pc.close()
        with contextlib.suppress(Exception):
            if self._session is not None:
                await self._session.close()

    def _open_data_channels(self) -> None:
        assert self.pc is not None
        reliable = self.pc.createDataChannel("sfu-reliable", ordered=True)
        lossy = self.pc.createDataChannel("sfu-lossy", ordered=False, maxRetransmits=0)
        for channel in (reliable, lossy):
            self.channels[channel.label] = channel
            channel.on("message", lambda message, label=channel.label: self._on_data_message(label, message))

    def _on_data_message(self, label: str, message: str | bytes) -> None:
        if self.on_data is None:
            return
        if isinstance(message, bytes):
            size = message[0] if message else 0
            self.on_data(message[1:1 + size].decode(), message[1 + size:], label == "sfu-reliable")
        else:
            envelope = json.loads(message)
            self.on_data(envelope["from"], envelope["data"], label == "sfu-reliable")

    def send_data(self, data: Any, reliable: bool = True, to: list[str] | None = None) -> None:
        """Relay `data` (a JSON value, or bytes: to everyone) to the room, or to the ids in `to`."""
        channel = self.channels["sfu-reliable" if reliable else "sfu-lossy"]
        if isinstance(data, bytes):
            channel.send(data)
        else:
            channel.send(json.dumps({"data": data, **({"to": to} if to is not None else {})}))

    async def wait_data_open(self, timeout: float = 10) -> None:
        async def opened() -> None:
            while any(c.readyState != "open" for c in self.channels.values()):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(opened(), timeout)

    async def publish(self, track: MediaStreamTrack, source: str = "camera") -> str:
        return (await self.publish_many([(track, source)]))[0]

    async def publish_many(self, tracks: list[tuple[MediaStreamTrack, str]],
                           sdp_transform: Callable[[str, list[RTCRtpTransceiver]], str] | None = None,
                           ) -> list[str]:
        """Offer new sendonly m-lines; returns the track ids the server announced."""
        ids = await self._publish(tracks, sdp_transform)
        self._published.extend(tracks)
        return ids

    async def _publish(self, tracks: list[tuple[MediaStreamTrack, str]],
                       sdp_transform: Callable[[str, list[RTCRtpTransceiver]], str] | None = None,
                       ) -> list[str]:
        """Offer new sendonly m-lines; returns the track ids the server announced.
        `sdp_transform(offer_sdp, transceivers)` may rewrite the offer (e.g. to add simulcast)."""
        assert self.pc is not None
        async with self._lock:
            meta: dict[str, dict[str, str]] = {}
            transceivers = [self.pc.addTransceiver(track, direction="sendonly") for track, _ in tracks]
            await self.pc.setLocalDescription(await self.pc.createOffer())
            offer_sdp = self.pc.localDescription.sdp
            if sdp_transform is not None:
                # what the server sees may say more than aiortc knows (simulcast): aiortc only needs
                # its own description for the mids and transports, which the transform keeps
                offer_sdp = sdp_transform(offer_sdp, transceivers)
            for transceiver, (_, source) in zip(transceivers, tracks, strict=True):
                meta[str(transceiver.mid)] = {"source": source}
            # in the order of `tracks`, so the ids returned line up with them
            published = [self.expect("track_published", _own_track(str(t.mid))) for t in transceivers]
            answer = self.expect("answer")
            await self.send("offer", sdp=offer_sdp, tracks=meta)
            msg = await answer
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
        return [(await p)["track"]["id"] for p in published]

    def expect(self, type_: str, pred: Callable[[dict[str, Any]], bool] | None = None) -> asyncio.Future[Any]:
        """A future for the next server message of this type (registered now, so none is missed)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append((type_, pred, future))
        return future

    async def wait_for(self, type_: str, timeout: float = 10,
                       pred: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
        """The first server message of this type (already received or future) matching pred."""
        for msg in self.messages:
            if msg["type"] == type_ and (pred is None or pred(msg)):
                return msg
        return await asyncio.wait_for(self.expect(type_, pred), timeout)

    async def send(self, type_: str, **fields: Any) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps({"v": 1, "type": type_, **fields}))

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def close(self) -> None:
        self._closing = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        with contextlib.suppress(Exception):
            if self._ws is not None and not self._ws.closed:
                await self.send("leave")
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        for mid_receiver in self._mid_receivers.values():
            if mid_receiver.pending is not None:
                mid_receiver.pending.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self._session is not None:
            await self._session.close()

    # -- internals ---------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(frame.data)
            self.messages.append(msg)
            try:
                await self._handle(msg)
            except Exception:
                log.exception("client %s: handling %s failed", self.name, msg.get("type"))
            for waiter in list(self._waiters):
                type_, pred, future = waiter
                if type_ == msg["type"] and not future.done() and (pred is None or pred(msg)):
                    future.set_result(msg)
                    self._waiters.remove(waiter)
            if self.on_message is not None:
                self.on_message(msg)

    async def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "track_published":
            self.tracks[msg["track"]["id"]] = msg["track"]
        elif kind == "track_unpublished":
            self.tracks.pop(msg["track_id"], None)
            track = self.remote_tracks.pop(msg["track_id"], None)
            if track is not None:
                track.stop()
        elif kind == "offer" and self.pc is not None:
            async with self._lock:
                if self.pc.connectionState == "closed":  # closing: an offer crossed our leave
                    return
                self.mids = dict(msg["mids"])
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.send("answer", sdp=self.pc.localDescription.sdp)
            self._bind_mids()

    def _frame_arrived(self) -> None:
        self.last_frame_s = time.monotonic()

    def _on_pc_track(self, track: MediaStreamTrack) -> None:
        self._bind_mids()

    def _bind_mids(self) -> None:
        """Give every mid that now carries a track we have not surfaced yet a RemoteTrack: on its
        first use (aiortc fires `track`) and on every recycling (aiortc fires nothing)."""
        assert self.pc is not None
        for transceiver in self.pc.getTransceivers():
            mid = str(transceiver.mid)
            track_id = self.mids.get(mid)
            source = transceiver.receiver.track if transceiver.receiver else None
            if track_id is None or source is None or track_id in self.remote_tracks:
                continue
            resync_video(transceiver.receiver)
            mid_receiver = self._mid_receivers.get(mid)
            if mid_receiver is None or mid_receiver.source is not source:
                mid_receiver = self._mid_receivers[mid] = MidReceiver(source, self._frame_arrived)
            track = RemoteTrack(source.kind, track_id, mid_receiver)
            self.remote_tracks[track_id] = track
            if self.on_track is not None:
                self.on_track(track_id, self.tracks.get(track_id, {}), track, transceiver)
