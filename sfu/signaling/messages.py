"""The signaling schema, version 1 (docs/protocol.md): validation of client messages and the
error codes a client can cause."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = 1
ROOM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
SOURCES = ("camera", "microphone", "screen", "screen_audio")
MAX_NAME_CHARS = 64
MAX_TRACK_IDS = 256


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_TYPE = "unknown_type"
    WRONG_STATE = "wrong_state"
    BAD_SDP = "bad_sdp"
    BAD_CANDIDATE = "bad_candidate"
    TOO_LARGE = "too_large"
    ROOM_FULL = "room_full"
    UNKNOWN_TRACK = "unknown_track"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    DRAINING = "draining"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ROOMS = "too_many_rooms"
    TOO_MANY_TRACKS = "too_many_tracks"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RESUME_FAILED = "resume_failed"
    DATA_TOO_LARGE = "data_too_large"
    DATA_RATE_LIMITED = "data_rate_limited"
    INTERNAL = "internal"


class SignalingError(Exception):
    """A client-caused error: answered with `error {code, message}`, logged once, never raised
    out of the room."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id: Any = None  # the `id` of the invalid message, when it was a JSON object


def _str(msg: dict[str, Any], key: str, *, required: bool = True, max_chars: int = 1 << 20) -> str | None:
    value = msg.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise SignalingError(ErrorCode.BAD_MESSAGE, f"'{key}' must be a string")
    if len(value) > max_chars:
        raise SignalingError(ErrorCode.BAD_MESSAGE, f"'{key}' is longer than {max_chars} characters")
    return value


def _join(msg: dict[str, Any]) -> None:
    room = _str(msg, "room")
    if not ROOM_NAME.match(room or ""):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'room' must be 1-128 characters of [A-Za-z0-9_.-]")
    _str(msg, "name", required=False, max_chars=MAX_NAME_CHARS)
    _str(msg, "token", required=False, max_chars=8192)
    _str(msg, "resume", required=False, max_chars=128)
    if not isinstance(msg.get("auto_subscribe", True), bool):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'auto_subscribe' must be a boolean")


def _offer(msg: dict[str, Any]) -> None:
    _str(msg, "sdp")
    tracks = msg.get("tracks", {})
    if not isinstance(tracks, dict):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'tracks' must be an object keyed by mid")
    for mid, meta in tracks.items():
        if not isinstance(meta, dict):
            raise SignalingError(ErrorCode.BAD_MESSAGE, f"tracks['{mid}'] must be an object")
        source = meta.get("source")
        if source is not None and source not in SOURCES:
            raise SignalingError(ErrorCode.BAD_MESSAGE, f"tracks['{mid}'].source must be one of {SOURCES}")
        _str(meta, "name", required=False, max_chars=MAX_NAME_CHARS)


def _answer(msg: dict[str, Any]) -> None:
    _str(msg, "sdp")


def _candidate(msg: dict[str, Any]) -> None:
    candidate = msg.get("candidate")
    if candidate is None:
        return
    if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate", ""), str):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'candidate' must be an object with a 'candidate' string")


def _track_ids(msg: dict[str, Any]) -> None:
    ids = msg.get("track_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > MAX_TRACK_IDS:
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'track_ids' must be a list of strings")


def _optional_int(msg: dict[str, Any], key: str, low: int, high: int) -> None:
    value = msg.get(key)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SignalingError(ErrorCode.BAD_MESSAGE, f"'{key}' must be an integer from {low} to {high}")


def _set_quality(msg: dict[str, Any]) -> None:
    _str(msg, "track_id", max_chars=64)
    _optional_int(msg, "max_width", 0, 16384)
    _optional_int(msg, "max_height", 0, 16384)
    _optional_int(msg, "layer", 0, 16)


def _mute(msg: dict[str, Any]) -> None:
    _str(msg, "track_id", max_chars=64)
    if not isinstance(msg.get("muted"), bool):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'muted' must be a boolean")


def _nothing(msg: dict[str, Any]) -> None:
    return None


VALIDATORS = {
    "join": _join, "offer": _offer, "answer": _answer, "candidate": _candidate,
    "subscribe": _track_ids, "unsubscribe": _track_ids, "set_quality": _set_quality, "mute": _mute,
    "leave": _nothing, "ping": _nothing,
}


def parse(text: str) -> dict[str, Any]:
    """Decode and validate one client message; raises SignalingError."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SignalingError(ErrorCode.BAD_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise SignalingError(ErrorCode.BAD_JSON, "a message must be a JSON object")
    try:
        _validate(msg)
    except SignalingError as exc:
        exc.request_id = msg.get("id")  # the error still answers the request (docs/protocol.md)
        raise
    return msg


def _validate(msg: dict[str, Any]) -> None:
    if msg.get("v") != PROTOCOL_VERSION:
        raise SignalingError(ErrorCode.BAD_MESSAGE, f"'v' must be {PROTOCOL_VERSION}")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise SignalingError(ErrorCode.BAD_MESSAGE, "'type' must be a string")
    validator = VALIDATORS.get(kind)
    if validator is None:
        raise SignalingError(ErrorCode.UNKNOWN_TYPE, f"unknown message type '{kind[:64]}'")
    validator(msg)


def message(type_: str, **fields: Any) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "type": type_, **fields}


def error(code: ErrorCode, text: str, request_id: Any = None) -> dict[str, Any]:
    msg = message("error", code=str(code), message=text)
    if isinstance(request_id, str | int) and not isinstance(request_id, bool):
        msg["id"] = request_id
    return msg
