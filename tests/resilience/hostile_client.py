"""A hostile participant in its own process (its floods must not share the healthy participants'
event loop): it joins a room properly, so it owns an authenticated DTLS-SRTP transport, publishes
one video track, and then, for a bounded time, sends malformed signaling, garbage RTP and RTCP
that passes SRTP (its own SRTP session protects it, so the server's parsers see it), feedback
storms aimed at the tracks it receives, and a signaling flood; disconnected by the server, it
joins again and floods media once more. It prints one line, `REPORT {json}` (see `Report`).

    python -m tests.resilience.hostile_client URL ROOM [--media-s 5] [--pps 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc.rtp import (
    RtcpRrPacket,
)
from aiortc.sdp import SessionDescription

from sfu.client import SfuClient
from tests.integration.peers import PatternVideo
from tests.integration.test_bad_input import _BROKEN_SDP, _open
from tests.resilience.hostile_packets import (
    FRESH_SSRC,
    RTCP_KINDS,
    RTP_KINDS,
    RtcpGarbage,
    RtpGarbage,
    feedback_storm,
)

log = logging.getLogger("hostile")

RTCP_PSFB_FIR = 4  # RFC 5104 §4.3.1
TICK_S = 0.01  # media abuse is paced in 10 ms ticks
ANSWER_TIMEOUT_S = 10.0
FLOOD_MESSAGES = 1000  # the server closes long before: burst 100 + 50 refused by default
FRESH_SSRC_PACKETS = 2000  # the server cuts us off after 64 unclaimed SSRCs
FRESH_RTCP_SSRCS = 1300  # the server decrypts SRTCP from at most 1024 sender SSRCs per connection


@dataclass
class Report:
    probes: list[dict[str, Any]] = field(default_factory=list)  # {what, expected, got}
    errors: Counter[str] = field(default_factory=Counter)  # every `error` received, by code
    oversized_close_code: int | None = None  # a frame over the server's hard cap (4x the limit)
    fresh_ssrcs_sent: int = 0  # packets on a new SSRC each until the server closed our socket
    fresh_rtcp_ssrcs_sent: int = 0  # receiver reports from a new sender SSRC each
    fresh_ssrc_close_code: int | None = None
    flood_sent: int = 0
    flood_close_code: int | None = None
    rejoins: int = 0  # joins after being cut off whose media connected
    rtp_sent: Counter[str] = field(default_factory=Counter)
    rtp_refused: Counter[str] = field(default_factory=Counter)  # refused by our own SRTP: never sent
    rtcp_sent: Counter[str] = field(default_factory=Counter)
    rtcp_refused: Counter[str] = field(default_factory=Counter)
    targets: list[int] = field(default_factory=list)  # the video SSRCs the server sends us
    media_packets_received: int = 0  # RTP from the server on the SSRCs of its m-lines
    phases: dict[str, list[float]] = field(default_factory=dict)  # name -> [start, end], time.monotonic()

    def as_json(self) -> str:
        # dataclasses.asdict would rebuild each Counter from (key, value) pairs, counting the pairs
        return json.dumps({k: dict(v) if isinstance(v, Counter) else v for k, v in vars(self).items()})


class Hostile:
    def __init__(self, url: str, room: str, media_s: float, pps: int, seed: int) -> None:
        self.url, self.room = url, room
        self.media_s, self.pps = media_s, pps
        self.rng = random.Random(seed)
        self.report = Report()
        self.client = SfuClient(url, room, "hostile")
        self.sender: Any = None  # the published track's RTCRtpSender
        self.transport: Any = None  # its sender's RTCDtlsTransport
        self.own_ssrc = 0
        self.own_pt = 96
        self.last_own_seq: int | None = None
        self.received_seq: dict[int, int] = {}  # ssrc -> last sequence number the server sent us
        self._probe = 0

    # -- joining --------------------------------------------------------------------------------

    async def join(self) -> None:
        self.client = SfuClient(self.url, self.room, "hostile")
        self.client.on_message = self._count_error
        video = PatternVideo(160, 120)
        await self.client.connect([(video, "camera")])
        assert self.client.pc is not None
        transceiver = next(t for t in self.client.pc.getTransceivers() if t.sender.track is video)
        self.sender = transceiver.sender
        self.transport = transceiver.sender.transport
        self.own_ssrc = transceiver.sender._ssrc
        self.own_pt = transceiver._codecs[0].payloadType
        original = self.transport._send_rtp

        async def send_rtp(data: bytes) -> None:  # learn where our real sequence numbers are
            if len(data) >= 12 and data[8:12] == self.own_ssrc.to_bytes(4, "big") and data[1] & 0x7F == self.own_pt:
                self.last_own_seq = int.from_bytes(data[2:4], "big")
            await original(data)

        self.transport._send_rtp = send_rtp
        deadline = time.monotonic() + 15
        while self.transport.state != "connected" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _count_error(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "error":
            self.report.errors[msg["code"]] += 1

    async def wait_targets(self, count: int, timeout_s: float = 15) -> list[int]:
        """The SSRCs of the video the server sends us (its sendonly m-lines), once `count` exist;
        our receivers stop decoding and only note sequence numbers (for the NACK storm)."""
        deadline = time.monotonic() + timeout_s
        targets: list[int] = []
        while time.monotonic() < deadline:
            pc = self.client.pc
            if pc is not None and pc.remoteDescription is not None and pc.signalingState == "stable":
                media = SessionDescription.parse(pc.remoteDescription.sdp).media
                targets = [s.ssrc for m in media if m.kind == "video" and m.direction == "sendonly"
                           for s in m.ssrc[:1]]
                if len(targets) >= count:
                    break
            await asyncio.sleep(0.1)
        assert self.client.pc is not None
        for transceiver in self.client.pc.getTransceivers():
            if transceiver.receiver is not None and transceiver.kind == "video":
                transceiver.receiver._handle_rtp_packet = self._note_received
        self.report.targets = targets
        return targets

    async def _note_received(self, packet: Any, arrival_time_ms: int) -> None:
        self.received_seq[packet.ssrc] = packet.sequence_number
        self.report.media_packets_received += 1

    # -- malformed signaling ----------------------------------------------------------------------

    async def probe(self, what: str, expected: tuple[str, ...], payload: Any, client: SfuClient | None = None,
                    by_id: bool = True) -> None:
        """Send one bad message and record the error code that answers it (`expected`: acceptable
        codes; "pong" for a probe the server must accept)."""
        client = client or self.client
        assert client._ws is not None
        self._probe += 1
        request_id = f"h{self._probe}"
        if by_id and isinstance(payload, dict):
            payload = {**payload, "id": request_id}
            waiter = client.expect("error", lambda m: m.get("id") == request_id)
        elif "pong" in expected:
            waiter = client.expect("pong")
        else:
            waiter = client.expect("error", lambda m: m["code"] in expected)
        if isinstance(payload, bytes):
            await client._ws.send_bytes(payload)
        else:
            await client._ws.send_str(payload if isinstance(payload, str) else json.dumps(payload))
        try:
            msg = await asyncio.wait_for(waiter, ANSWER_TIMEOUT_S)
            got = msg["type"] if msg["type"] == "pong" else msg["code"]
        except TimeoutError:
            got = "no answer"
        self.report.probes.append({"what": what, "expected": list(expected), "got": got})
        log.warning("probe %s: %s", what, got)

    async def malformed_signaling(self) -> None:
        other_track = next((t for t, info in self.client.tracks.items()
                            if info.get("participant_id") != self.client.participant_id), "TR_none")
        nested = '{"v": 1, "type": "ping", "x": ' + "[" * 50_000 + "]" * 50_000 + "}"
        probes: list[tuple[str, tuple[str, ...], Any]] = [
            ("invalid JSON", ("bad_json",), "{not json"),
            ("JSON that is not an object", ("bad_json",), '"just a string"'),
            ("JSON nested 50,000 deep", ("bad_json",), nested),
            ("protocol version 2", ("bad_message",), {"v": 2, "type": "ping"}),
            ("type not a string", ("bad_message",), {"v": 1, "type": 42}),
            ("unknown type", ("unknown_type",), {"v": 1, "type": "teleport"}),
            ("join with a numeric room", ("bad_message",), {"v": 1, "type": "join", "room": 42}),
            ("second join", ("wrong_state",), {"v": 1, "type": "join", "room": self.room}),
            ("track_ids not a list", ("bad_message",), {"v": 1, "type": "subscribe", "track_ids": "TR_x"}),
            ("max_width not an integer", ("bad_message",),
             {"v": 1, "type": "set_quality", "track_id": other_track, "max_width": "huge"}),
            ("muted not a boolean", ("bad_message",), {"v": 1, "type": "mute", "track_id": "x", "muted": "yes"}),
            ("candidate a number", ("bad_message",), {"v": 1, "type": "candidate", "candidate": 42}),
            ("offer with a bad source", ("bad_message",),
             {"v": 1, "type": "offer", "sdp": "v=0", "tracks": {"0": {"source": "satellite"}}}),
            ("subscribe to an unknown track", ("unknown_track",),
             {"v": 1, "type": "subscribe", "track_ids": ["TR_nope"]}),
            ("set_quality of an unknown track", ("unknown_track",),
             {"v": 1, "type": "set_quality", "track_id": "TR_nope", "max_width": 10}),
            ("mute someone else's track", ("unknown_track",),
             {"v": 1, "type": "mute", "track_id": other_track, "muted": True}),
            ("offer that is not SDP", ("bad_sdp",), {"v": 1, "type": "offer", "sdp": "this is not sdp"}),
            ("offer with a broken SDP", ("bad_sdp",), {"v": 1, "type": "offer", "sdp": _BROKEN_SDP}),
            # an answer with no offer of the server's outstanding; bad_sdp if one happens to be
            ("bogus answer", ("wrong_state", "bad_sdp"), {"v": 1, "type": "answer", "sdp": "v=0 bogus"}),
            ("garbage candidate", ("bad_candidate",), {"v": 1, "type": "candidate", "candidate": {
                "candidate": "candidate:garbage", "sdpMid": "0", "sdpMLineIndex": 0}}),
            ("a message just under the size limit", ("pong",),
             json.dumps({"v": 1, "type": "ping", "pad": "x" * 261_000})),
            ("a message over the size limit", ("too_large",),
             json.dumps({"v": 1, "type": "ping", "pad": "x" * 300_000})),
            ("a binary frame", ("bad_message",), b"\x00\x01binary"),
        ]
        for what, expected, payload in probes:
            await self.probe(what, expected, payload, by_id=isinstance(payload, dict))
        await self.probe("ping after all of it", ("pong",), {"v": 1, "type": "ping"}, by_id=False)
        await self._oversized_frame()

    async def _oversized_frame(self) -> None:
        """A frame over the server's hard cap (4x the message limit), on a socket of its own: the
        WebSocket layer ends that connection."""
        side = SfuClient(self.url, self.room, "hostile-side")
        await _open(side)
        try:
            assert side._ws is not None
            await side._ws.send_str("x" * (5 * 262_144))
            await asyncio.wait_for(side._reader, ANSWER_TIMEOUT_S)  # type: ignore[arg-type]
            self.report.oversized_close_code = side._ws.close_code
            self.report.errors.update(m["code"] for m in side.messages if m["type"] == "error")
        except (TimeoutError, ConnectionError) as exc:
            self.report.probes.append({"what": "frame over the hard cap", "expected": ["closed"], "got": repr(exc)})
        finally:
            await side.close()

    async def trickle_signaling(self, stop: asyncio.Event) -> None:
        """Malformed messages interleaved with the media abuse, below the rate limit (5 per second)."""
        assert self.client._ws is not None
        bad = ["{not json", json.dumps({"v": 1, "type": "teleport"}),
               json.dumps({"v": 1, "type": "subscribe", "track_ids": ["TR_nope"]})]
        index = 0
        while not stop.is_set() and not self.client._ws.closed:
            await self.client._ws.send_str(bad[index % len(bad)])
            index += 1
            await asyncio.sleep(0.2)

    async def flood(self) -> None:
        """Messages as fast as the socket takes them until the server closes it (1008)."""
        ws = self.client._ws
        assert ws is not None
        for _ in range(FLOOD_MESSAGES):
            if ws.closed:
                break
            try:
                await ws.send_str('{"v": 1, "type": "ping"}')
            except (ConnectionError, RuntimeError):
                break
            self.report.flood_sent += 1
        try:
            await asyncio.wait_for(asyncio.shield(self.client._reader), ANSWER_TIMEOUT_S)  # type: ignore[arg-type]
        except TimeoutError:
            pass
        self.report.flood_close_code = ws.close_code

    async def fresh_ssrcs(self) -> None:
        """Well-formed RTP on a new SSRC each (libsrtp keeps state per SSRC) until cut off."""
        garbage = await self._own_garbage()
        reader = self.client._reader
        assert reader is not None and self.client._ws is not None
        for _ in range(FRESH_SSRC_PACKETS // 10):
            if reader.done() or self.transport.state != "connected":
                break
            for _ in range(10):
                await self._send(garbage.build(FRESH_SSRC), FRESH_SSRC, self.report.rtp_sent, self.report.rtp_refused)
                self.report.fresh_ssrcs_sent += 1
            await asyncio.sleep(0.002)
        try:
            await asyncio.wait_for(asyncio.shield(reader), ANSWER_TIMEOUT_S)
        except TimeoutError:
            pass
        self.report.fresh_ssrc_close_code = self.client._ws.close_code

    async def fresh_rtcp_ssrcs(self) -> None:
        """Receiver reports from a new sender SSRC each: SRTCP grows libsrtp's per-SSRC state too."""
        for i in range(FRESH_RTCP_SSRCS):
            if self.transport.state != "connected":
                break
            report = RtcpRrPacket(ssrc=self.rng.getrandbits(32))
            await self._send(bytes(report), "fresh_rtcp_ssrc", self.report.rtcp_sent, self.report.rtcp_refused)
            self.report.fresh_rtcp_ssrcs_sent += 1
            if i % 20 == 19:
                await asyncio.sleep(0.002)

    # -- garbage media ----------------------------------------------------------------------------

    async def _send(self, data: bytes, kind: str, sent: Counter[str], refused: Counter[str]) -> None:
        try:
            await self.transport._send_rtp(data)  # protect_rtcp for RTCP, protect for RTP
            sent[kind] += 1
        except pylibsrtp.Error:
            refused[kind] += 1

    async def _own_garbage(self) -> RtpGarbage:
        """Our real video stops: the garbage takes over its SSRC's sequence numbers (SRTP's replay
        window would drop garbage that reuses them, and ours too far behind)."""
        if self.sender.track is not None:
            self.sender.replaceTrack(None)
            await asyncio.sleep(0.2)  # a frame being sent
        start = (self.last_own_seq + 1) if self.last_own_seq is not None else self.rng.randrange(1 << 16)
        return RtpGarbage(self.rng, self.own_ssrc, self.own_pt, start)

    async def media_abuse(self, seconds: float, rtp_kinds: tuple[str, ...] = RTP_KINDS,
                          storms: bool = True) -> None:
        """Every tick: `pps * TICK_S` garbage RTP packets round-robin over `rtp_kinds`, and (with
        `storms`) one of each RTCP garbage kind plus a PLI, a FIR and a NACK of the last 256
        packets to every target, and an absurd REMB."""
        garbage = await self._own_garbage()
        rtcp = RtcpGarbage(self.rng, self.own_ssrc)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        per_tick = max(1, int(self.pps * TICK_S))
        tick = 0
        while loop.time() < end and self.transport.state == "connected":
            started = loop.time()
            for i in range(per_tick):
                kind = rtp_kinds[(tick * per_tick + i) % len(rtp_kinds)]
                await self._send(garbage.build(kind), kind, self.report.rtp_sent, self.report.rtp_refused)
            if storms:
                for kind in RTCP_KINDS:
                    await self._send(rtcp.build(kind), kind, self.report.rtcp_sent, self.report.rtcp_refused)
                for packet, kind in feedback_storm(self.own_ssrc, self.report.targets, self.received_seq, tick):
                    await self._send(packet, kind, self.report.rtcp_sent, self.report.rtcp_refused)
            tick += 1
            await asyncio.sleep(max(0.0, TICK_S - (loop.time() - started)))

    # -- the run ----------------------------------------------------------------------------------

    async def phase(self, name: str, coro: Any) -> None:
        start = time.monotonic()
        log.warning("phase %s", name)
        try:
            await coro
        finally:
            self.report.phases[name] = [start, time.monotonic()]

    async def rejoin(self) -> None:
        """The server cut us off: come back and go on."""
        await self.client.close()
        await self.join()
        self.report.rejoins += self.transport.state == "connected"
        await self.wait_targets(2)

    async def run(self) -> Report:
        await self.join()
        await self.wait_targets(2)
        await self.phase("signaling", self.malformed_signaling())
        stop = asyncio.Event()
        trickle = asyncio.ensure_future(self.trickle_signaling(stop))
        await self.phase("media", self.media_abuse(self.media_s))
        stop.set()
        await trickle
        await self.phase("fresh_ssrcs", self.fresh_ssrcs())
        await self.rejoin()
        await self.phase("flood", self.flood())
        await self.rejoin()
        await self.phase("rejoined", self.media_abuse(2.0, rtp_kinds=("unknown_ssrc", "unknown_payload_type")))
        await self.phase("fresh_rtcp_ssrcs", self.fresh_rtcp_ssrcs())
        await self.client.close()
        return self.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("--media-s", type=float, default=5.0, help="seconds of garbage RTP/RTCP")
    parser.add_argument("--pps", type=int, default=2000, help="garbage RTP packets per second")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from sfu.rtc.process_hooks import include_loopback_candidates

    include_loopback_candidates(True)
    hostile = Hostile(args.url, args.room, args.media_s, args.pps, args.seed)
    report = asyncio.run(asyncio.wait_for(hostile.run(), 120))
    print("REPORT " + report.as_json(), flush=True)


if __name__ == "__main__":
    main()
