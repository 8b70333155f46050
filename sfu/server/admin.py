"""Admin HTTP API under /admin/, for operators: list rooms and participants, close a room, remove
a participant, mute a track, start a drain. Every request needs `Authorization: Bearer <admin.api_key>`
(401 otherwise); with no key configured the API is not mounted at all (404)."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sfu.room.participant import Participant
from sfu.room.room import Room
from sfu.server.node import Node

log = logging.getLogger(__name__)

NODE_KEY = web.AppKey("node", Node)
CLOSE_REMOVED = 4001  # WebSocket close code: the operator removed this participant
CLOSE_ROOM_CLOSED = 4002  # WebSocket close code: the operator closed the room

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authorized(request: web.Request, api_key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), api_key.encode())


def _participant_json(participant: Participant, room: Room) -> dict[str, Any]:
    tracks = [t for t in room.tracks.values() if t.participant_id == participant.id]
    return {
        **participant.info(), "identity": participant.identity, "can_publish": participant.can_publish,
        "tracks": [{**t.info(own=True), "muted": t.relay.muted} for t in tracks],
    }


def _room_json(room: Room) -> dict[str, Any]:
    return {"name": room.name, "participants": [_participant_json(p, room) for p in room.participants.values()]}


def _room(request: web.Request) -> Room:
    room = request.app[NODE_KEY].rooms.rooms.get(request.match_info["room"])
    if room is None:
        raise web.HTTPNotFound(text='{"error": "no such room"}', content_type="application/json")
    return room


async def _remove(node: Node, participant: Participant, code: int, reason: str) -> None:
    session = node.sessions.get(participant.id)
    if session is not None:
        await session.kick(code, reason)
    else:
        await node.rooms.leave(participant)
    log.info("admin: removed participant %s from room %s (%s)", participant.id, participant.room.name, reason,
             extra={"event": "leave", "room": participant.room.name, "participant": participant.id})


async def list_rooms(request: web.Request) -> web.Response:
    rooms = request.app[NODE_KEY].rooms.rooms.values()
    return web.json_response({"rooms": [_room_json(r) for r in rooms]})


async def get_room(request: web.Request) -> web.Response:
    return web.json_response(_room_json(_room(request)))


async def close_room(request: web.Request) -> web.Response:
    room, node = _room(request), request.app[NODE_KEY]
    participants = list(room.participants.values())
    for participant in participants:
        await _remove(node, participant, CLOSE_ROOM_CLOSED, "room closed by the operator")
    return web.json_response({"closed": room.name, "participants_removed": len(participants)})


async def remove_participant(request: web.Request) -> web.Response:
    room = _room(request)
    participant = room.participants.get(request.match_info["participant"])
    if participant is None:
        raise web.HTTPNotFound(text='{"error": "no such participant"}', content_type="application/json")
    await _remove(request.app[NODE_KEY], participant, CLOSE_REMOVED, "removed by the operator")
    return web.json_response({"removed": participant.id})


async def mute_track(request: web.Request) -> web.Response:
    room = _room(request)
    track = room.tracks.get(request.match_info["track"])
    if track is None:
        raise web.HTTPNotFound(text='{"error": "no such track"}', content_type="application/json")
    body: Any = await request.json() if request.can_read_body else {}
    muted = body.get("muted", True) if isinstance(body, dict) else None
    if not isinstance(muted, bool):
        raise web.HTTPBadRequest(text='{"error": "\\"muted\\" must be a boolean"}', content_type="application/json")
    await room.set_track_muted(track, muted)
    return web.json_response({"track_id": track.id, "muted": muted})


async def drain(request: web.Request) -> web.Response:
    deadline_s = await request.app[NODE_KEY].drain.start()
    return web.json_response({"draining": True, "deadline_s": deadline_s}, status=202)


def create_admin_app(node: Node) -> web.Application:
    api_key = node.config.admin.api_key

    @web.middleware
    async def require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _authorized(request, api_key):
            return web.json_response({"error": "missing or wrong admin API key"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    admin = web.Application(middlewares=[require_key])
    admin[NODE_KEY] = node
    admin.router.add_get("/rooms", list_rooms)
    admin.router.add_get("/rooms/{room}", get_room)
    admin.router.add_delete("/rooms/{room}", close_room)
    admin.router.add_delete("/rooms/{room}/participants/{participant}", remove_participant)
    admin.router.add_post("/rooms/{room}/tracks/{track}/mute", mute_track)
    admin.router.add_post("/drain", drain)
    return admin
