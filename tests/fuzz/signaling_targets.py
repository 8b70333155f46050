"""Fuzz targets for what a peer sends over the WebSocket: the message schema
(`sfu.signaling.messages.parse`), a whole `SignalingSession` with a fake socket, and SDP as the
`rtc/` layer and aiortc read it. Each target takes bytes and raises only on a bug."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from sfu.config import Config
from sfu.room import participant
from sfu.rtc import sdp
from sfu.server.node import Node
from sfu.signaling.messages import VALIDATORS, ErrorCode, SignalingError, parse
from sfu.signaling.session import SignalingSession
from tests.fuzz.inputs import Bytes

FIELDS = ("v", "type", "id", "room", "name", "token", "auto_subscribe", "sdp", "tracks", "candidate", "track_ids",
          "track_id", "max_width", "max_height", "layer")
TYPES = (*VALIDATORS, "", "error", "joined", "x" * 200)
MESSAGE_SEPARATOR = b"\n\x1e\n"  # splits one session input into several messages
MAX_MESSAGES = 6
CORPUS_SDP = Path(__file__).resolve().parent / "corpus" / "sdp"

logging.getLogger("sfu").setLevel(logging.CRITICAL)  # client errors are logged once each: too loud here
logging.getLogger("aiortc").setLevel(logging.CRITICAL)


def structured_message(b: Bytes) -> str:
    """A message of a known (or bogus) type, each field missing, right or of a wrong type; or JSON
    nested far deeper than the parser's recursion limit."""
    if b.byte() == 0xFF:
        depth = b.choice((10, 1000, 100_000))
        return "[" * depth + "]" * depth if b.flag() else '{"a":' * depth + "1" + "}" * depth
    msg: dict[str, Any] = {"v": 1, "type": b.choice(TYPES)}
    for _ in range(b.int(6)):
        key = b.choice(FIELDS)
        msg[key] = b.value()
    if b.flag() and msg["type"] == "offer":
        msg["tracks"] = {b.text(4): {"source": b.value(), "name": b.value()} for _ in range(b.int(3))}
    return json.dumps(msg)


def check_parse(text: str) -> dict[str, Any] | None:
    try:
        msg = parse(text)
    except SignalingError as exc:
        assert exc.code in ErrorCode.__members__.values() and exc.message
        return None
    assert isinstance(msg, dict) and msg["type"] in VALIDATORS
    return msg


def fuzz_signaling(data: bytes) -> None:
    """`parse` returns a valid message or raises SignalingError, for raw text and for generated
    messages of every type."""
    check_parse(data.decode("utf-8", "replace"))
    check_parse(structured_message(Bytes(data)))


def fuzz_sdp(data: bytes) -> None:
    """validate() raises only SdpError; whatever it lets through, media_sections(),
    section_by_mid(), add_simulcast_recv() and the extmap id bookkeeping read without raising.
    media_sections() is also robust on unvalidated text (the publish-permission check reads it
    before validation)."""
    text = data.decode("utf-8", "replace")
    try:
        sdp.validate(text)
        valid = True
    except sdp.SdpError:
        valid = False
    sections = sdp.media_sections(text)
    if not valid:
        return
    ids = sdp.ExtmapIds()
    ids.learn(text)
    ids.remap(AIORTC_OFFER_EXTMAPS)
    for section in sections:
        assert sdp.section_by_mid(text, section.mid) is not None
        if section.send_rids:
            sdp.add_simulcast_recv(text, section.mid, section.send_rids, ids.by_uri)


AIORTC_OFFER_EXTMAPS = ("m=video 9 UDP/TLS/RTP/SAVPF 97\r\na=mid:0\r\n"
                        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
                        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n")


class FakeWebSocket:
    """What SignalingSession uses of aiohttp's WebSocketResponse."""

    def __init__(self) -> None:
        self.closed = False
        self.close_code: int | None = None

    async def close(self, code: int = 1000, message: bytes = b"") -> bool:
        self.closed, self.close_code = True, code
        return True

    async def send_json(self, data: Any) -> None:
        json.dumps(data)

    def exception(self) -> BaseException | None:
        return None


class SessionHarness:
    """One node for the whole fuzzing run; each input plays one connection's life on it."""

    def __init__(self) -> None:
        participant.FIRST_OFFER_WAIT_S = 0  # server offers within an episode, not a second later
        self.loop = asyncio.new_event_loop()
        self.node = Node.create(Config())
        self.resident = SignalingSession(FakeWebSocket(), self.node, peer="resident")  # type: ignore[arg-type]
        self.track_ids = self.loop.run_until_complete(self._publish_resident())

    async def _publish_resident(self) -> list[str]:
        """A participant who stays in room "fuzz" for the whole run, publishing audio and video,
        so fuzzed sessions there subscribe to real tracks (and "TR_a"/"TR_b" in an input name them)."""
        offer = next(text for text in (p.read_text() for p in sorted(CORPUS_SDP.iterdir()))
                     if "a=sendonly" in text and "a=simulcast" not in text)
        await self.resident.handle(json.dumps({"v": 1, "type": "join", "room": "fuzz"}))
        await self.resident.handle(json.dumps({"v": 1, "type": "offer", "sdp": offer}))
        assert self.resident.participant is not None
        return sorted(self.resident.participant.tracks)

    def run(self, data: bytes) -> list[dict[str, Any]]:
        return self.loop.run_until_complete(self._episode(data))

    async def _episode(self, data: bytes) -> list[dict[str, Any]]:
        session = SignalingSession(FakeWebSocket(), self.node, peer="fuzz")  # type: ignore[arg-type]
        parts = data.split(MESSAGE_SEPARATOR)[:MAX_MESSAGES]
        texts = [p.decode("utf-8", "replace").replace("TR_a", self.track_ids[0]).replace("TR_b", self.track_ids[-1])
                 for p in parts]
        if parts and parts[0][:1] == b"J":  # most inputs start inside a room
            texts[0] = json.dumps({"v": 1, "type": "join", "room": "fuzz"})
        sent: list[dict[str, Any]] = []
        try:
            for text in texts:
                await session.handle(text)
                for _ in range(3):  # let a scheduled renegotiation make its offer
                    await asyncio.sleep(0)
                sent += _drain(session)
        finally:
            await session._leave()
            sent += _drain(session)
        internal = [m for m in sent if m.get("code") == str(ErrorCode.INTERNAL)]
        assert not internal, f"a client message caused an internal error: {internal}"
        rooms = self.node.rooms.rooms
        assert list(rooms) == ["fuzz"] and len(rooms["fuzz"].participants) == 1, "the session left state behind"
        assert len(self.node.sessions) == 1
        _drain(self.resident)
        return sent


def _drain(session: SignalingSession) -> list[dict[str, Any]]:
    out = []
    while not session.outbox.empty():
        msg = session.outbox.get_nowait()
        if msg is not None:
            out.append(msg)
    return out


_harness: SessionHarness | None = None


def fuzz_session(data: bytes) -> None:
    """Up to six messages through a real SignalingSession (join, offers with real SDP through
    aiortc, answers, candidates, subscriptions...): no message may cause an `internal` error, and
    leaving removes everything."""
    global _harness
    if _harness is None:
        _harness = SessionHarness()
    _harness.run(data)
