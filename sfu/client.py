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
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)

class _MidReceiver:
    """The receiving track of one m-line; frames are handed to whichever RemoteTrack holds the mid
    now (mids are recycled), keeping one pending read so no frame is lost on a handover."""

    def __init__(self, source: MediaStreamTrack) -> None:
        self.source = source
        self.pending: asyncio.Future[Any] | None = None

    async def next_frame(self, ended: asyncio.Event) -> Any:
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.source.recv())
            # the source ends with the connection; nobody may be left to read that error
            self.pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        waiter = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait({self.pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.pending.done():
            raise MediaStreamError
        pending, self.pending = self.pending, None
        return pending.result()


class RemoteTrack(MediaStreamTrack):
    """A track of another participant as this client receives it; ends when the server says
    `track_unpublished` (aiortc itself never ends a track whose m-line went inactive)."""

    def __init__(self, kind: str, track_id: str, mid_receiver: _MidReceiver) -> None:
        super().__init__()
        self.kind = kind
        self.track_id = track_id
        self._mid_receiver = mid_receiver
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        if self._ended.is_set():
            raise MediaStreamError
        return await self._mid_receiver.next_frame(self._ended)

    def stop(self) -> None:
        self._ended.set()
        super().stop()


TrackCallback = Callable[[str, dict[str, Any], MediaStreamTrack, RTCRtpTransceiver], None]


def _own_track(mid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda msg: bool(msg["track"].get("mid") == mid)


class SfuClient:
    def __init__(self, url: str, room: str, name: str = "", token: str | None = None, *,
                 auto_subscribe: bool = True, ssl: ssl_module.SSLContext | bool | None = None) -> None:
        self.url = url.rstrip("/")
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
        self._mid_receivers: dict[str, _MidReceiver] = {}
        self._pending_publish: list[tuple[MediaStreamTrack, str, str]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool] | None, asyncio.Future[Any]]] = []
        self._lock = asyncio.Lock()

    # -- API ---------------------------------------------------------------------------------

    async def connect(self, tracks: list[tuple[MediaStreamTrack, str]] | None = None) -> dict[str, Any]:
        """Join the room; publish `tracks` ([(track, source)]) in the first offer. Returns `joined`."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url.replace("http", "ws", 1) + "/ws", max_msg_size=0,
                                                  ssl=True if self.ssl is None else self.ssl)
        self._reader = asyncio.ensure_future(self._read())
        join: dict[str, Any] = {"room": self.room, "name": self.name, "auto_subscribe": self.auto_subscribe}
        if self.token:
            join["token"] = self.token
        joined = self.expect("joined")
        await self.send("join", **join)
        msg = await joined
        self.participant_id = msg["participant"]["id"]
        for track in msg["tracks"]:
            self.tracks[track["id"]] = track
        ice = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in msg["ice_servers"]]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=ice))
        self.pc.on("track", self._on_pc_track)
        if tracks:
            await self.publish_many(tracks)
        return msg

    async def publish(self, track: MediaStreamTrack, source: str = "camera") -> str:
        return (await self.publish_many([(track, source)]))[0]

    async def publish_many(self, tracks: list[tuple[MediaStreamTrack, str]],
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
            mids = set(meta)
            published = [self.expect("track_published", _own_track(mid)) for mid in mids]
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
                self.mids = dict(msg["mids"])
                await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.send("answer", sdp=self.pc.localDescription.sdp)
            self._bind_mids()

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
            mid_receiver = self._mid_receivers.get(mid)
            if mid_receiver is None or mid_receiver.source is not source:
                mid_receiver = self._mid_receivers[mid] = _MidReceiver(source)
            track = RemoteTrack(source.kind, track_id, mid_receiver)
            self.remote_tracks[track_id] = track
            if self.on_track is not None:
                self.on_track(track_id, self.tracks.get(track_id, {}), track, transceiver)
