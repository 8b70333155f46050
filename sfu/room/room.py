"""Room and RoomRegistry: who is in which room, which tracks are published there, and the events
everyone gets when that changes."""

from __future__ import annotations

import logging
from typing import Any

from aiortc import RTCIceServer

from sfu.room.participant import Participant, PublishedTrack, Send
from sfu.signaling.messages import ErrorCode, SignalingError, message

log = logging.getLogger(__name__)


class Room:
    def __init__(self, name: str, max_participants: int) -> None:
        self.name = name
        self.max_participants = max_participants
        self.participants: dict[str, Participant] = {}
        self.tracks: dict[str, PublishedTrack] = {}

    def join(self, name: str, send: Send, *, auto_subscribe: bool,
             ice_servers: list[RTCIceServer]) -> Participant:
        if len(self.participants) >= self.max_participants:
            raise SignalingError(ErrorCode.ROOM_FULL,
                                 f"room '{self.name}' is full ({self.max_participants} participants)")
        participant = Participant(self, name, send, auto_subscribe=auto_subscribe, ice_servers=ice_servers)
        self.participants[participant.id] = participant
        if auto_subscribe:
            participant.wanted.update(self.tracks)
        log.info("room %s: participant %s (%s) joined", self.name, participant.id, name)
        return participant

    def joined_message(self, participant: Participant, ice_servers: list[dict[str, Any]]) -> dict[str, Any]:
        return message(
            "joined", participant=participant.info(), room=self.name,
            participants=[p.info() for p in self.participants.values() if p is not participant],
            tracks=[t.info() for t in self.tracks.values()], ice_servers=ice_servers,
        )

    async def broadcast(self, msg: dict[str, Any], exclude: Participant | None = None) -> None:
        for participant in list(self.participants.values()):
            if participant is not exclude and not participant.left:
                await participant.send(msg)

    async def announce_track(self, track: PublishedTrack) -> None:
        self.tracks[track.id] = track
        owner = self.participants.get(track.participant_id)
        for participant in list(self.participants.values()):
            if participant.left:
                continue
            own = participant is owner
            await participant.send(message("track_published", track=track.info(own=own)))
            if not own and participant.auto_subscribe:
                participant.want([track.id])

    async def unpublish(self, track: PublishedTrack) -> None:
        if self.tracks.pop(track.id, None) is None:
            return
        track.relay.close()
        owner = self.participants.get(track.participant_id)
        if owner is not None:
            owner.tracks.pop(track.id, None)
            owner.peer.remove_publication(track.mid)
        log.info("room %s: track %s unpublished", self.name, track.id)
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
        await participant.close()
        log.info("room %s: participant %s left", self.name, participant.id)
        await self.broadcast(message("participant_left", participant_id=participant.id))

    @property
    def empty(self) -> bool:
        return not self.participants


class RoomRegistry:
    """The rooms of this process, created on first join and dropped when empty."""

    def __init__(self, max_participants: int) -> None:
        self.max_participants = max_participants
        self.rooms: dict[str, Room] = {}

    def get_or_create(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.max_participants)
        return room

    async def leave(self, participant: Participant) -> None:
        room = participant.room
        await room.leave(participant)
        if room.empty and self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    async def close(self) -> None:
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                await room.leave(participant)
        self.rooms.clear()
