"""Room and RoomRegistry: who is in which room, which tracks are published there, and the events
everyone gets when that changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiortc import RTCIceServer

from sfu.data.relay import DataRelay
from sfu.room.participant import Participant, PublishedTrack, Send
from sfu.signaling.messages import ErrorCode, SignalingError, error, message
from sfu.speaker import SpeakerDetector

log = logging.getLogger(__name__)

# (event, room, data): room_started, room_finished, participant_joined, participant_left,
# track_published, track_unpublished. Observers (webhooks) must not block: the room awaits nothing.
RoomObserver = Callable[[str, "Room", dict[str, Any]], None]


NO_LIMIT = 1 << 30


class Room:
    def __init__(self, name: str, max_participants: int, observer: RoomObserver | None = None,
                 max_subscriptions: int = NO_LIMIT) -> None:
        self.name = name
        self.max_participants = max_participants
        self.max_subscriptions = max_subscriptions  # per participant: auto-subscription stops there
        self.participants: dict[str, Participant] = {}
        self.tracks: dict[str, PublishedTrack] = {}
        self.data = DataRelay()
        self.speakers = SpeakerDetector()
        self.observer = observer

    def notify(self, event: str, **data: Any) -> None:
        if self.observer is not None:
            try:
                self.observer(event, self, data)
            except Exception:
                log.exception("room %s: observer failed on %s", self.name, event)

    def join(self, name: str, send: Send, *, auto_subscribe: bool, ice_servers: list[RTCIceServer],
             identity: str = "", can_publish: bool = True) -> Participant:
        if len(self.participants) >= self.max_participants:
            raise SignalingError(ErrorCode.ROOM_FULL,
                                 f"room '{self.name}' is full ({self.max_participants} participants)")
        participant = Participant(self, name, send, auto_subscribe=auto_subscribe, ice_servers=ice_servers)
        participant.identity = identity or participant.id
        participant.can_publish = can_publish
        if not self.participants:
            self.notify("room_started")
        self.participants[participant.id] = participant
        if auto_subscribe:
            participant.wanted.update(list(self.tracks)[:self.max_subscriptions])
        log.info("room %s: participant %s (%s) joined", self.name, participant.id, name,
                 extra={"room": self.name, "participant": participant.id, "event": "join"})
        self.notify("participant_joined", participant=_described(participant))
        return participant

    def joined_message(self, participant: Participant, ice_servers: list[dict[str, Any]],
                       resumed: bool = False) -> dict[str, Any]:
        return message(
            "joined", participant=participant.info(), room=self.name,
            participants=[p.info() for p in self.participants.values() if p is not participant],
            tracks=[t.info(own=t.participant_id == participant.id) for t in self.tracks.values()],
            ice_servers=ice_servers, resume_token=participant.resume_token, resumed=resumed,
        )

    async def broadcast(self, msg: dict[str, Any], exclude: Participant | None = None) -> None:
        for participant in list(self.participants.values()):
            if participant is not exclude and not participant.left:
                await participant.send(msg)

    async def announce_track(self, track: PublishedTrack) -> None:
        self.tracks[track.id] = track
        self.notify("track_published", track=track.info())
        owner = self.participants.get(track.participant_id)
        for participant in list(self.participants.values()):
            if participant.left:
                continue
            own = participant is owner
            await participant.send(message("track_published", track=track.info(own=own)))
            if not own and participant.auto_subscribe:
                if len(participant.wanted) >= self.max_subscriptions:
                    await participant.send(error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, f"not subscribed to {track.id}: "
                                                 f"at most {self.max_subscriptions} subscriptions"))
                    continue
                participant.want([track.id])

    async def unpublish(self, track: PublishedTrack) -> None:
        if self.tracks.pop(track.id, None) is None:
            return
        for relay in track.relays:
            relay.close()
        owner = self.participants.get(track.participant_id)
        if owner is not None:
            owner.tracks.pop(track.id, None)
            owner.peer.remove_publication(track.mid)
        log.info("room %s: track %s unpublished", self.name, track.id)
        self.notify("track_unpublished", track=track.info())
        await self.broadcast(message("track_unpublished", track_id=track.id,
                                     participant_id=track.participant_id))
        for participant in list(self.participants.values()):
            if track.id in participant.wanted:
                participant.unwant([track.id])

    async def leave(self, participant: Participant) -> None:
        if self.participants.get(participant.id) is not participant:
            return
        for track in list(participant.tracks.values()):
            await self.unpublish(track)
        del self.participants[participant.id]
        self.data.detach(participant.id)
        try:
            await participant.close()
        except Exception:  # whatever state the peer's connection is in, the others are told it left
            log.exception("room %s: closing participant %s failed", self.name, participant.id)
        log.info("room %s: participant %s left", self.name, participant.id,
                 extra={"room": self.name, "participant": participant.id, "event": "leave"})
        self.notify("participant_left", participant=_described(participant))
        await self.broadcast(message("participant_left", participant_id=participant.id))

    async def set_track_muted(self, track: PublishedTrack, muted: bool) -> None:
        """Stop (or resume) forwarding a published track and tell everyone (`track_muted` /
        `track_unmuted`). The admin API calls it; client-side mute will too."""
        relays = getattr(track, "relays", None) or [track.relay]
        if all(relay.muted == muted for relay in relays):
            return
        for relay in relays:
            relay.muted = muted
        if not muted:
            # The packets dropped while muted would leave a gap in each subscriber's sequence
            # numbers that its jitter buffer waits on: restart every downtrack instead (pause, then
            # resume: it continues the sequence at the publisher's next keyframe).
            downtracks = {id(d): d for relay in relays for d in relay.downtracks if hasattr(d, "select_layer")}
            for downtrack in downtracks.values():
                downtrack.select_layer(None)
                downtrack.select_layer(downtrack.layer_index)
            for relay in relays:
                relay.request_keyframe()
        log.info("room %s: track %s %s", self.name, track.id, "muted" if muted else "unmuted",
                 extra={"room": self.name, "participant": track.participant_id, "track": track.id})
        await self.broadcast(message("track_muted" if muted else "track_unmuted", track_id=track.id,
                                     participant_id=track.participant_id))

    @property
    def empty(self) -> bool:
        return not self.participants


def _described(participant: Participant) -> dict[str, Any]:
    return {**participant.info(), "identity": participant.identity}


class RoomRegistry:
    """The rooms of this process, created on first join and dropped when empty."""

    def __init__(self, max_participants: int, observer: RoomObserver | None = None,
                 max_subscriptions: int = NO_LIMIT) -> None:
        self.max_participants = max_participants
        self.observer = observer
        self.max_subscriptions = max_subscriptions
        self.rooms: dict[str, Room] = {}

    def get_or_create(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.max_participants, self.observer, self.max_subscriptions)
        return room

    async def suspend(self, participant: Participant, grace_s: float) -> None:
        """Hold a participant whose connection dropped: its tracks stay, the others are told
        nothing; unless it resumes within `grace_s`, it leaves like any other."""
        await participant.suspend()

        async def expire() -> None:
            await asyncio.sleep(grace_s)
            if not participant.connected and not participant.left:
                log.info("room %s: participant %s did not resume within %.0f s", participant.room.name,
                         participant.id, grace_s)
                await self.leave(participant)

        self.cancel_grace(participant)
        participant.grace_task = asyncio.ensure_future(expire())

    def cancel_grace(self, participant: Participant) -> None:
        task = getattr(participant, "grace_task", None)
        if task is not None and not task.done():
            task.cancel()
        participant.grace_task = None

    async def leave(self, participant: Participant) -> None:
        room = participant.room
        await room.leave(participant)
        if room.empty and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            room.notify("room_finished")

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                await self.leave(participant)
        self.rooms.clear()
