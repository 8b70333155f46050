"""SignalingSession: one WebSocket connection's state machine (connected → joined → closed),
dispatching client messages to the room layer and answering every client error with a code."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from sfu import ice_servers
from sfu.auth import authorize_join
from sfu.room.participant import Participant
from sfu.rtc.sdp import media_sections
from sfu.signaling.messages import ErrorCode, SignalingError, error, message, parse
from sfu.signaling.rate_limit import TokenBucket

if TYPE_CHECKING:
    from sfu.server.node import Node

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 1000  # queued server messages before a client that does not read is dropped
CLOSE_POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1: kept flooding past `rate_limited`, or abusive media
CLOSE_INTERNAL_ERROR = 1011  # RFC 6455 §7.4.1: the server cannot go on with this connection (resumable)


class SignalingSession:
    def __init__(self, ws: web.WebSocketResponse, node: Node, peer: str) -> None:
        self.ws = ws
        self.node = node
        self.registry = node.rooms
        self.config = node.config
        self.peer = peer
        self.participant: Participant | None = None
        self.forced_close = False  # the server closed the socket (limits): no resume grace
        self.can_subscribe = True
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_LIMIT)
        self.errors = 0
        signaling = self.config.signaling
        self.bucket = TokenBucket(signaling.messages_per_s, signaling.message_burst)
        self.rate_limited = 0  # messages refused by the bucket on this connection

    async def send(self, msg: dict[str, Any]) -> None:
        """Queue a message; never blocks the room on a slow socket."""
        if self.node.address_map and msg.get("type") in ("offer", "answer"):
            msg = {**msg, "sdp": self.node.address_map.rewrite_sdp(msg["sdp"])}
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("%s: outbox full, closing the connection", self.peer)
            self.forced_close = True
            asyncio.ensure_future(self.ws.close(code=1011, message=b"outbox overflow"))

    async def _writer(self) -> None:
        while True:
            msg = await self.outbox.get()
            if msg is None or self.ws.closed:
                return
            try:
                await self.ws.send_json(msg)
            except (ConnectionError, RuntimeError):
                return

    async def run(self) -> None:
        writer = asyncio.ensure_future(self._writer())
        try:
            async for frame in self.ws:
                if frame.type == WSMsgType.TEXT:
                    await self.handle(frame.data)
                elif frame.type == WSMsgType.BINARY:
                    await self._client_error(SignalingError(ErrorCode.BAD_MESSAGE, "binary frames are not accepted"))
                elif frame.type == WSMsgType.ERROR:
                    err = self.ws.exception()
                    if "too big" in str(err).lower() or "message size" in str(err).lower():
                        with contextlib.suppress(ConnectionError, RuntimeError):  # aiohttp may be closing it
                            await self.ws.send_json(error(ErrorCode.TOO_LARGE, "message exceeds the size limit"))
                    break
                if self.participant is not None and self.participant.left:
                    break
        finally:
            await self._disconnected()
            self.outbox.put_nowait(None) if not self.outbox.full() else None
            try:
                await asyncio.wait_for(writer, 2)
            except (TimeoutError, asyncio.CancelledError):
                writer.cancel()

    async def handle(self, text: str) -> None:
        if not self.bucket.take():
            await self._refuse_over_rate()
            return
        request_id = None
        try:
            if len(text.encode()) > self.config.max_message_bytes:
                raise SignalingError(ErrorCode.TOO_LARGE,
                                     f"message exceeds {self.config.max_message_bytes} bytes")
            msg = parse(text)
            request_id = msg.get("id")
            await self.dispatch(msg)
        except SignalingError as exc:
            await self._client_error(exc, request_id if request_id is not None else exc.request_id)
        except Exception:
            log.exception("%s: internal error handling a message", self.peer)
            await self.send(error(ErrorCode.INTERNAL, "internal error (logged)", request_id))

    async def _refuse_over_rate(self) -> None:
        """A message beyond the bucket is not parsed: `rate_limited` (logged once per connection);
        a client that keeps going is disconnected."""
        from sfu.metrics import SIGNALING_ERRORS

        self.rate_limited += 1
        SIGNALING_ERRORS.labels(code=str(ErrorCode.RATE_LIMITED)).inc()
        limit = self.config.signaling.max_rate_limited
        if self.rate_limited == 1:
            log.warning("%s: signaling rate limit reached", self.peer,
                        extra={"event": "error", "code": str(ErrorCode.RATE_LIMITED), "peer": self.peer})
        if self.rate_limited >= limit:
            log.warning("%s: %d messages over the rate limit, closing the connection", self.peer, limit)
            self.forced_close = True
            await self.ws.close(code=CLOSE_POLICY_VIOLATION, message=b"signaling rate limit exceeded")
            return
        await self.send(error(ErrorCode.RATE_LIMITED, "too many messages: "
                              f"at most {self.config.signaling.messages_per_s:g} per second"))

    async def close_for_abuse(self) -> None:
        """The participant's media broke a limit (sfu.rtc.peer): closed like a flooder (1008), and
        it leaves at once (no resume grace)."""
        self.forced_close = True
        await self.ws.close(code=CLOSE_POLICY_VIOLATION, message=b"media abuse")

    async def close_for_resume(self) -> None:
        """The participant's peer connection cannot negotiate any more: closed as by a network
        cut (1011, resumable), so that the client resumes with a fresh one (docs/protocol.md)."""
        await self.ws.close(code=CLOSE_INTERNAL_ERROR, message=b"peer connection unusable: resume")

    async def _client_error(self, exc: SignalingError, request_id: Any = None) -> None:
        self.errors += 1
        participant = self.participant
        who = participant.id if participant else self.peer
        log.warning("%s: %s: %s", who, exc.code, exc.message,
                    extra={"event": "error", "code": str(exc.code), "peer": self.peer,
                           "participant": participant.id if participant else None,
                           "room": participant.room.name if participant else None})
        from sfu.metrics import SIGNALING_ERRORS

        SIGNALING_ERRORS.labels(code=str(exc.code)).inc()
        await self.send(error(exc.code, exc.message, request_id))

    async def dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ping":
            await self.send(message("pong"))
            return
        if kind == "join":
            await self._join(msg)
            return
        participant = self.participant
        if participant is None:
            raise SignalingError(ErrorCode.WRONG_STATE, f"'{kind}' before 'join'")
        if kind == "offer":
            self._check_track_limit(msg["sdp"])
            await participant.handle_offer(msg["sdp"], msg.get("tracks") or {})
        elif kind == "answer":
            await participant.handle_answer(msg["sdp"])
        elif kind == "candidate":
            await participant.handle_candidate(msg.get("candidate"))
        elif kind == "mute":
            track = participant.tracks.get(msg["track_id"])
            if track is None:
                raise SignalingError(ErrorCode.UNKNOWN_TRACK, f"you publish no track {msg['track_id']}")
            await participant.room.set_track_muted(track, msg["muted"])
        elif kind == "set_quality":
            if msg["track_id"] not in participant.room.tracks:
                raise SignalingError(ErrorCode.UNKNOWN_TRACK, f"no such track: {msg['track_id']}")
            participant.set_quality(msg["track_id"], msg.get("max_width"), msg.get("max_height"), msg.get("layer"))
        elif kind in ("subscribe", "unsubscribe"):
            if kind == "subscribe" and not self.can_subscribe:
                raise SignalingError(ErrorCode.FORBIDDEN, "the access token does not grant subscribing")
            unknown = [t for t in msg["track_ids"] if t not in participant.room.tracks]
            if kind == "subscribe" and unknown:
                raise SignalingError(ErrorCode.UNKNOWN_TRACK, f"no such track: {', '.join(unknown[:5])}")
            limit = self.config.rooms.max_subscriptions_per_participant
            if kind == "subscribe" and len(participant.wanted | set(msg["track_ids"])) > limit:
                raise SignalingError(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"at most {limit} subscriptions")
            (participant.want if kind == "subscribe" else participant.unwant)(msg["track_ids"])
        elif kind == "leave":
            await self._leave()
            await self.ws.close()

    async def _join(self, msg: dict[str, Any]) -> None:
        if self.participant is not None:
            raise SignalingError(ErrorCode.WRONG_STATE, "already joined")
        if msg.get("resume"):
            await self._resume(msg)
            return
        if self.node.drain.active:
            raise SignalingError(ErrorCode.DRAINING, "this server is draining; join another one")
        auth = self.config.auth
        grant = authorize_join(dev_mode=auth.dev_mode, secret=auth.jwt_secret, token=msg.get("token"),
                               room=msg["room"], identity="")
        self.can_subscribe = grant.can_subscribe
        max_rooms = self.config.rooms.max_rooms
        if msg["room"] not in self.registry.rooms and len(self.registry.rooms) >= max_rooms:
            raise SignalingError(ErrorCode.TOO_MANY_ROOMS, f"this server holds its maximum of {max_rooms} rooms")
        room = self.registry.get_or_create(msg["room"])
        try:
            participant = room.join(grant.name or str(msg.get("name") or ""), self.send,
                                    auto_subscribe=msg.get("auto_subscribe", True) and grant.can_subscribe,
                                    ice_servers=self.config.rtc_ice_servers(), identity=grant.identity,
                                    can_publish=grant.can_publish)
        except SignalingError:
            if room.empty:
                self.registry.rooms.pop(room.name, None)
            raise
        self.participant = participant
        participant.close_connection = self.close_for_abuse
        participant.replace_connection = self.close_for_resume
        self.node.sessions[participant.id] = self
        await self.send(room.joined_message(participant,
                                            ice_servers.client_ice_servers(self.config, participant.identity)))
        await room.broadcast(message("participant_joined", participant=participant.info()), exclude=participant)
        participant.schedule_negotiation()

    def _check_track_limit(self, offer_sdp: str) -> None:
        """An offer describes every m-line; its sending ones are what the client publishes after it."""
        limit = self.config.rooms.max_tracks_per_participant
        sending = [s for s in media_sections(offer_sdp) if s.direction in ("sendonly", "sendrecv") and not s.rejected]
        if len(sending) > limit:
            raise SignalingError(ErrorCode.TOO_MANY_TRACKS, f"at most {limit} published tracks per participant "
                                 "(the offer is rejected)")

    async def _resume(self, msg: dict[str, Any]) -> None:
        """Take a participant over with its resume token (from `joined`): same id, same tracks,
        a fresh peer connection; the others notice nothing. A socket it still holds is closed."""
        room = self.registry.rooms.get(msg["room"])
        participant = next((p for p in room.participants.values() if p.resume_token == msg["resume"] and not p.left),
                           None) if room is not None else None
        if room is None or participant is None:
            raise SignalingError(ErrorCode.RESUME_FAILED, "nothing to resume (left, or the grace period ended): join")
        old = self.node.sessions.get(participant.id)
        if old is not None and old is not self:
            old.participant = None  # its socket may still look open: it no longer speaks for the participant
            asyncio.ensure_future(old.ws.close(code=4003, message=b"resumed on another connection"))
        self.registry.cancel_grace(participant)
        await participant.rebind(self.send)
        self.participant = participant
        participant.close_connection = self.close_for_abuse
        participant.replace_connection = self.close_for_resume
        self.node.sessions[participant.id] = self
        log.info("%s: participant %s resumed", self.peer, participant.id,
                 extra={"room": room.name, "participant": participant.id})
        await self.send(room.joined_message(participant,
                                            ice_servers.client_ice_servers(self.config, participant.identity),
                                            resumed=True))
        participant.schedule_negotiation()

    async def _disconnected(self) -> None:
        """The socket ended without `leave`: keep the participant for the resume grace period."""
        participant = self.participant
        grace_s = self.config.rooms.resume_grace_s
        # resume is for a call cut short: not for a participant whose media never connected, nor for
        # one the server disconnected itself
        held = participant is not None and participant.media_connected and not self.forced_close
        if participant is None or participant.left or grace_s <= 0 or self.node.drain.active or not held:
            await self._leave()
            return
        self.participant = None
        if self.node.sessions.get(participant.id) is self:
            del self.node.sessions[participant.id]
        await self.registry.suspend(participant, grace_s)

    async def _leave(self) -> None:
        participant, self.participant = self.participant, None
        if participant is None:
            return
        if self.node.sessions.get(participant.id) is self:
            del self.node.sessions[participant.id]
        if not participant.left:
            await self.registry.leave(participant)

    async def kick(self, code: int, reason: str) -> None:
        """Remove this participant (admin API, drain timeout) and close the socket with `code`."""
        await self._leave()
        await self.ws.close(code=code, message=reason.encode())
