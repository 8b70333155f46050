"""Real aiortc participants for the integration tests: synthetic camera/mic tracks of a known
size, frame counters on what they receive, and taps on the RTP they send and receive."""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket, is_rtcp
from av import AudioFrame, VideoFrame

from sfu.client import SfuClient
from sfu.rtc.process_hooks import include_loopback_candidates

include_loopback_candidates(True)  # the clients run on loopback like the server

VIDEO_CLOCK = 90000


class PatternVideo(MediaStreamTrack):
    """A moving pattern of a fixed size at 15 fps (cheap to encode on 2 shared cores)."""

    kind = "video"

    def __init__(self, width: int, height: int, fps: int = 15) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.frame_index = 0
        self._start: float | None = None
        y, x = np.mgrid[0:height, 0:width]
        self._base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)

    async def recv(self) -> VideoFrame:
        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self.frame_index / self.fps
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        img = self._base.copy()
        bar = (self.frame_index * 4) % max(1, self.width - 16)
        img[:, bar:bar + 16] = 255
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = self.frame_index * VIDEO_CLOCK // self.fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.frame_index += 1
        return frame


class ToneAudio(MediaStreamTrack):
    """A 20 ms-paced sine tone."""

    kind = "audio"

    def __init__(self, hz: float = 440.0, amplitude: int = 8000) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude  # 0: silence; change it while running to speak or stop
        self.samples = 0
        self._start: float | None = None

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self.samples / 48000 - time.monotonic()))
        t = (np.arange(960) + self.samples) / 48000
        pcm = (np.sin(2 * np.pi * self.hz * t) * self.amplitude).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, 48000)
        self.samples += 960
        return frame


@dataclass
class Received:
    """What one subscriber got of one remote track."""

    track_id: str
    kind: str
    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    last_size: tuple[int, int] | None = None
    frame_times: list[float] = field(default_factory=list)  # monotonic arrival of each decoded frame
    ended: bool = False
    task: asyncio.Task[None] | None = None


class Participant:
    """An SfuClient plus counters of everything it decodes."""

    def __init__(self, url: str, room: str, name: str, data: bool = False, auto_resume: bool = False) -> None:
        self.client = SfuClient(url, room, name, data=data, auto_resume=auto_resume)
        self.received: dict[str, Received] = {}
        self.transceivers: dict[str, RTCRtpTransceiver] = {}
        self.client.on_track = self._on_track

    def _on_track(self, track_id: str, info: dict[str, Any], track: MediaStreamTrack,
                  transceiver: RTCRtpTransceiver) -> None:
        received = Received(track_id, track.kind)
        self.received[track_id] = received
        self.transceivers[track_id] = transceiver
        received.task = asyncio.ensure_future(self._consume(track, received))

    @staticmethod
    async def _consume(track: MediaStreamTrack, received: Received) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                received.ended = True
                return
            received.frames += 1
            if received.kind == "video":
                received.sizes.add((frame.width, frame.height))
                received.last_size = (frame.width, frame.height)
                received.frame_times.append(time.monotonic())

    async def join(self, video_size: tuple[int, int] | None = (320, 180), audio: bool = True) -> None:
        tracks: list[tuple[MediaStreamTrack, str]] = []
        if audio:
            tracks.append((ToneAudio(), "microphone"))
        if video_size:
            tracks.append((PatternVideo(*video_size), "camera"))
        await self.client.connect(tracks)

    def from_participant(self, participant_id: str, kind: str) -> list[Received]:
        return [r for tid, r in self.received.items()
                if self.client.tracks.get(tid, {}).get("participant_id") == participant_id and r.kind == kind]

    async def close(self) -> None:
        await self.client.close()
        for received in self.received.values():
            if received.task is not None:
                received.task.cancel()


async def wait_until(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval_s)
    return bool(predicate())


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def tap_sent_payloads(transceiver: RTCRtpTransceiver, into: dict[int, str]) -> None:
    """Record sha1 of every RTP payload this sender writes (media SSRC only), by sequence."""
    sender = transceiver.sender
    transport = sender.transport
    original = transport._send_rtp

    async def send_rtp(data: bytes) -> None:
        if len(data) > 12 and not is_rtcp(data):
            packet = RtpPacket.parse(data)
            if packet.ssrc == sender._ssrc:
                into[packet.sequence_number] = hashlib.sha1(packet.payload).hexdigest()
        await original(data)

    transport._send_rtp = send_rtp


def tap_received_payloads(transceiver: RTCRtpTransceiver, into: list[str]) -> None:
    """Record sha1 of every RTP payload this receiver gets, before its jitter buffer."""
    receiver = transceiver.receiver
    original = receiver._handle_rtp_packet

    async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
        into.append(hashlib.sha1(packet.payload).hexdigest())
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle


def on_video_packets(me: Participant, seen: Callable[[RtpPacket], None]) -> None:
    """Call `seen` with every RTP packet that reaches each of `me`'s video receivers, before the
    jitter buffer (the participant's own on_track handler still runs)."""
    previous = me.client.on_track

    def on_track(track_id: str, info: dict[str, Any], track: Any, transceiver: Any) -> None:
        if track.kind == "video":
            receiver = transceiver.receiver
            original = receiver._handle_rtp_packet

            async def handle(packet: RtpPacket, arrival_time_ms: int) -> None:
                seen(packet)
                await original(packet, arrival_time_ms)

            receiver._handle_rtp_packet = handle
        if previous is not None:
            previous(track_id, info, track, transceiver)

    me.client.on_track = on_track
