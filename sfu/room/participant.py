"""Participant: one member of a room — its published tracks, the tracks it should receive, and
the server-driven renegotiation that brings its peer connection in line with them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer

from sfu.media.relay import TrackRelay
from sfu.room.allocation import QualityPrefs, SubscriberBandwidth
from sfu.rtc import sdp
from sfu.rtc.peer import PeerSession
from sfu.signaling.messages import ErrorCode, SignalingError, error, message

if TYPE_CHECKING:
    from sfu.room.room import Room

log = logging.getLogger(__name__)

FIRST_OFFER_WAIT_S = 1.0  # how long a new participant's own first offer may keep ours waiting

Send = Callable[[dict[str, Any]], Awaitable[None]]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


@dataclass
class PublishedTrack:
    id: str
    participant_id: str
    kind: str
    source: str
    name: str
    mid: str
    relays: list[TrackRelay]  # one per simulcast layer, in the publisher's order
    layers_needed: list[str] = field(default_factory=list)  # last told to the publisher (dynacast)
    orphaned: bool = False  # its publisher is resuming on a new connection and has not republished it yet

    @property
    def relay(self) -> TrackRelay:
        return self.relays[-1]

    @property
    def simulcast(self) -> bool:
        return len(self.relays) > 1

    def info(self, own: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "participant_id": self.participant_id, "kind": self.kind,
                                "source": self.source, "name": self.name, "muted": self.relay.muted}
        if self.simulcast:
            data["layers"] = [relay.rid for relay in self.relays]
        if own:
            data["mid"] = self.mid
        return data


async def _discard(msg: dict[str, Any]) -> None:
    return None


class Participant:
    def __init__(self, room: Room, name: str, send: Send, *, auto_subscribe: bool,
                 ice_servers: list[RTCIceServer]) -> None:
        self.id = new_id("PA")
        self.name = name
        self.room = room
        self.send = send
        self.auto_subscribe = auto_subscribe
        self.peer = PeerSession(self.id, ice_servers)
        self.peer.pc.on("datachannel", self._on_datachannel)
        self.peer.pc.on("connectionstatechange", self._on_connection_state)
        self.peer.on_abuse = self._on_media_abuse
        self.bandwidth = SubscriberBandwidth(estimate=self.peer.estimate)
        self.tracks: dict[str, PublishedTrack] = {}  # own publications by track id
        self.wanted: set[str] = set()  # track ids this participant should receive
        self._negotiation: asyncio.Task[None] | None = None
        self._renegotiate = False
        self._first_offer = asyncio.Event()  # set once the client's first offer was answered
        self.resume_token = secrets.token_urlsafe(24)
        self.connected = True  # False while its signaling connection is gone (resume grace period)
        self.media_connected = False  # its peer connection connected at least once
        self.close_connection: Callable[[], Awaitable[None]] | None = None  # closes the current socket
        # closes the current socket so that the client resumes (1011): its peer connection is beyond repair
        self.replace_connection: Callable[[], Awaitable[None]] | None = None
        self._ice_servers = ice_servers
        self.grace_task: asyncio.Task[None] | None = None
        self.left = False
        self.can_publish = True  # from the access token's grant, set at join
        self.identity = ""  # the access token's subject (else the participant id), set at join

    def _on_connection_state(self) -> None:
        if self.peer.pc.connectionState == "connected":
            self.media_connected = True

    def _on_media_abuse(self, reason: str) -> None:
        """Its media broke a limit no honest client reaches (sfu.rtc.peer): disconnect it."""
        log.warning("participant %s: %s: disconnecting it", self.id, reason)
        if self.close_connection is not None:
            asyncio.ensure_future(self.close_connection())

    def _on_datachannel(self, channel: Any) -> None:
        def on_error(code: str, text: str) -> None:
            log.warning("participant %s: data: %s: %s", self.id, code, text)
            asyncio.ensure_future(self.send(error(ErrorCode(code), text)))

        self.room.data.attach(self, channel, on_error)

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}

    # -- client SDP --------------------------------------------------------------------------

    async def handle_offer(self, offer_sdp: str, meta: dict[str, Any]) -> None:
        try:
            async with self.peer.lock:
                if not self.can_publish and self._offers_new_tracks(offer_sdp):
                    raise SignalingError(ErrorCode.FORBIDDEN, "the access token does not grant publishing")
                result = await self.peer.answer_offer(offer_sdp)
                if result is None:
                    log.debug("participant %s: offer ignored during our own offer (glare)", self.id)
                    return
                answer_sdp, new_sections, gone_mids = result
                published = [self._publish_section(s, meta.get(s.mid) or {}) for s in new_sections]
                gone = [t for t in self.tracks.values() if t.mid in gone_mids and not t.orphaned]
                gone += [t for t in self.tracks.values() if t.orphaned]  # not republished after a resume
            await self.send(message("answer", sdp=answer_sdp))
            self._first_offer.set()
        except sdp.SdpError as exc:
            if exc.unusable and self.replace_connection is not None:
                # stuck in have-remote-offer for good (aiortc has no rollback): end this socket so
                # that the client resumes with a fresh peer connection, as after a network cut
                log.warning("participant %s: peer connection unusable after a failed offer: "
                            "closing its socket for a resume", self.id)
                asyncio.ensure_future(self.replace_connection())
            raise SignalingError(ErrorCode.BAD_SDP, str(exc)) from None
        for track, resumed in published:
            if resumed:  # the others keep receiving it as the same track: only its owner hears of it
                await self.send(message("track_published", track=track.info(own=True)))
            else:
                await self.room.announce_track(track)
        for track in gone:
            await self.room.unpublish(track)
        self.schedule_negotiation()

    def _offers_new_tracks(self, offer_sdp: str) -> bool:
        return any(s.direction in ("sendonly", "sendrecv") and not s.rejected and s.mid not in self.peer.publications
                   for s in sdp.media_sections(offer_sdp))

    def _publish_section(self, section: sdp.MediaSection, meta: dict[str, Any]) -> tuple[PublishedTrack, bool]:
        source = meta.get("source") or ("microphone" if section.kind == "audio" else "camera")
        request_pli = self.peer.keyframe_requester(section.mid)
        answered = sdp.section_by_mid(self.peer.pc.localDescription.sdp, section.mid)
        orphan = next((t for t in self.tracks.values() if t.orphaned and t.kind == section.kind
                       and t.source == source and len(t.relays) == len(self.peer.simulcast.get(section.mid) or [""])),
                      None)
        if orphan is not None:
            return self._resume_track(orphan, section, request_pli, answered), True
        relays = [TrackRelay(section.kind, request_pli) for _ in (self.peer.simulcast.get(section.mid) or [""])]
        for relay in relays:
            relay.ext_ids = dict(answered.extmaps) if answered else {}
        self.peer.add_publication(section, relays)
        track = PublishedTrack(new_id("TR"), self.id, section.kind, source, str(meta.get("name") or ""),
                               section.mid, relays)
        self.tracks[track.id] = track
        log.info("participant %s published %s %s (%s) as %s", self.id, track.kind, track.source,
                 section.mid, track.id)
        return track, False

    def _resume_track(self, track: PublishedTrack, section: sdp.MediaSection, request_pli: Any,
                      answered: sdp.MediaSection | None) -> PublishedTrack:
        """A track republished after a resume feeds the same relays: every subscriber's downtrack
        restarts at the next key frame, continuing its own sequence numbers and timestamps, so its
        decoder sees one stream and no new track."""
        for relay in track.relays:
            relay._request_pli = request_pli
            relay.media_ssrc = None
            if answered is not None:
                relay.ext_ids = dict(answered.extmaps)
        self.peer.add_publication(section, track.relays)
        track.mid, track.orphaned = section.mid, False
        for downtrack in {id(d): d for r in track.relays for d in r.downtracks if hasattr(d, "select_layer")}.values():
            downtrack.select_layer(None)
            downtrack.select_layer(downtrack.layer_index)
        log.info("participant %s resumed %s %s (%s) as %s", self.id, track.kind, track.source, section.mid, track.id)
        return track

    async def handle_answer(self, answer_sdp: str) -> None:
        async with self.peer.lock:
            try:
                await self.peer.apply_answer(answer_sdp)
            except sdp.SdpError as exc:
                code = ErrorCode.WRONG_STATE if "outstanding" in str(exc) else ErrorCode.BAD_SDP
                raise SignalingError(code, str(exc)) from None
        self.schedule_negotiation()

    async def handle_candidate(self, candidate: dict[str, Any] | None) -> None:
        try:
            await self.peer.add_candidate(candidate)
        except Exception as exc:
            raise SignalingError(ErrorCode.BAD_CANDIDATE, f"cannot add candidate: {exc}") from None

    # -- subscriptions -----------------------------------------------------------------------

    def set_quality(self, track_id: str, max_width: int | None, max_height: int | None,
                    max_layer: int | None) -> None:
        """The subscriber's wish for one track (its tile size); the allocator honours it."""
        self.bandwidth.prefs[track_id] = QualityPrefs(max_width, max_height, max_layer)

    def want(self, track_ids: list[str]) -> None:
        self.wanted.update(track_ids)
        self.schedule_negotiation()

    def unwant(self, track_ids: list[str]) -> None:
        self.wanted.difference_update(track_ids)
        self.schedule_negotiation()

    def schedule_negotiation(self) -> None:
        """Bring the connection's m-lines in line with `wanted`, one server offer at a time."""
        if self.left:
            return
        if self._negotiation is not None and not self._negotiation.done():
            self._renegotiate = True
            return
        self._negotiation = asyncio.ensure_future(self._negotiate())

    async def _negotiate(self) -> None:
        if not self._first_offer.is_set():
            # Clients that cannot roll back (aiortc) publish in their first offer; wait for it
            # rather than cross it with ours (docs/protocol.md, "First offer").
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_offer.wait(), FIRST_OFFER_WAIT_S)
            self._first_offer.set()
        try:
            async with self.peer.lock:
                if self.left or not self.peer.stable:
                    return  # the answer (or the client's offer) will schedule us again
                current = {s.track_id for s in self.peer.slots if s.track_id}
                add = [t for t in self.wanted - current if t in self.room.tracks]
                remove = [t for t in current if t not in self.wanted or t not in self.room.tracks]
                if not add and not remove:
                    return
                self.peer.plan_offer([(t, self.room.tracks[t].relays) for t in sorted(add)], remove)
                offer_sdp, mids = await self.peer.create_offer()
            await self.send(message("offer", sdp=offer_sdp, mids=mids))
        except Exception:
            log.exception("participant %s: renegotiation failed", self.id)
        finally:
            if self._renegotiate and not self.left:
                self._renegotiate = False
                self._negotiation = asyncio.ensure_future(self._negotiate())

    async def suspend(self) -> None:
        """The signaling connection is gone: close the peer connection (its transport is dead or
        about to be replaced) but keep the published tracks, whose subscribers keep their
        downtracks, until the participant resumes or its grace period ends."""
        self.connected = False
        self.send = _discard  # nobody listens until it resumes
        for track in self.tracks.values():
            track.orphaned = True
        if self._negotiation is not None and not self._negotiation.done():
            self._negotiation.cancel()
        await self.peer.close()

    async def rebind(self, send: Send) -> None:
        """Resume on a new signaling connection with a fresh peer connection."""
        if self.connected:
            await self.suspend()
        self.send = send
        self.peer = PeerSession(self.id, self._ice_servers)
        self.peer.pc.on("datachannel", self._on_datachannel)
        self.peer.pc.on("connectionstatechange", self._on_connection_state)
        self.peer.on_abuse = self._on_media_abuse
        self.bandwidth = SubscriberBandwidth(estimate=self.peer.estimate, prefs=self.bandwidth.prefs)
        self._first_offer = asyncio.Event()
        self.connected = True
        self.left = False

    async def close(self) -> None:
        self.left = True
        if self._negotiation is not None and not self._negotiation.done():
            self._negotiation.cancel()
        await self.peer.close()
