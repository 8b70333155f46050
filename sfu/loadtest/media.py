"""Pre-encoded synthetic media for load clients: encode once, then only packetize.

A clip (VP8 640x360 and Opus 20 ms) is encoded once at start-up (cached on disk) and looped by
tracks whose ``recv()`` returns ``av.Packet``s. aiortc's ``RTCRtpSender`` then calls
``encoder.pack()`` (packetize only) instead of encoding, so a publisher costs a few µs per packet.
Every video frame carries a drawn frame counter, so every encoded frame (and every RTP payload after
the VP8 payload descriptor) is unique within the loop: that is what latency matching relies on.
"""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

logger = logging.getLogger(__name__)

VIDEO_CLOCK_HZ = 90_000
AUDIO_CLOCK_HZ = 48_000
AUDIO_FRAME_S = 0.020
AUDIO_SAMPLES_PER_FRAME = int(AUDIO_CLOCK_HZ * AUDIO_FRAME_S)
# If the event loop falls this far behind the real-time schedule, restart the schedule instead of
# bursting the backlog (a burst would look like server-added latency and loss).
MAX_LAG_S = 0.5
# At most one keyframe jump per this interval, however many PLIs arrive (N subscribers joining).
KEYFRAME_REQUEST_MIN_INTERVAL_S = 1.0
CACHE_FORMAT_VERSION = 2

_DIGITS = {  # 3x5 pixel font, one string per row
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}


@dataclass(frozen=True)
class ClipSpec:
    width: int = 640
    height: int = 360
    fps: int = 30
    video_bitrate_bps: int = 500_000
    audio_bitrate_bps: int = 32_000
    duration_s: float = 10.0
    keyframe_interval_s: float = 2.0

    def cache_key(self) -> str:
        text = f"{CACHE_FORMAT_VERSION}:{self!r}:{av.__version__}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EncodedClip:
    """Encoded frames of one loop: ``video[i]`` is frame i, ``keyframes`` the keyframe indices."""

    spec: ClipSpec
    video: list[bytes]
    keyframes: list[int]
    audio: list[bytes]

    @property
    def video_bitrate_bps(self) -> float:
        return sum(len(f) for f in self.video) * 8 / self.spec.duration_s


def _draw_number(img: np.ndarray, number: int, x: int, y: int, scale: int) -> None:
    for pos, digit in enumerate(f"{number:06d}"):
        for row, bits in enumerate(_DIGITS[digit]):
            for col, bit in enumerate(bits):
                y0, x0 = y + row * scale, x + (pos * 4 + col) * scale
                img[y0 : y0 + scale, x0 : x0 + scale] = 255 if bit == "1" else 0


def _video_frames(spec: ClipSpec) -> list[np.ndarray]:
    """Moving gradient + scrolling texture + moving box + frame counter, as RGB arrays."""
    rng = np.random.default_rng(1234)
    texture = rng.integers(0, 256, size=(spec.height // 8, spec.width // 8, 3), dtype=np.uint8)
    texture = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width]
    count = int(spec.duration_s * spec.fps)
    frames = []
    for i in range(count):
        shift = (i * 4) % spec.width
        img = (np.roll(texture, shift, axis=1) // 2).astype(np.uint8)
        img[..., 0] += ((xx + i * 3) % 256 // 2).astype(np.uint8)
        img[..., 2] += ((yy + i * 2) % 256 // 2).astype(np.uint8)
        bx = int((spec.width - 80) * (0.5 + 0.5 * math.sin(i / 15)))
        img[140:220, bx : bx + 80] = (255, 255, 0)
        _draw_number(img, i, 16, 16, 8)
        frames.append(img)
    return frames


def _encode_video(spec: ClipSpec) -> tuple[list[bytes], list[int]]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = spec.width, spec.height
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, spec.fps)
    codec.framerate = fractions.Fraction(spec.fps, 1)
    codec.bit_rate = spec.video_bitrate_bps
    codec.gop_size = int(spec.keyframe_interval_s * spec.fps)
    rate = str(spec.video_bitrate_bps)
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "minrate": rate,
        "maxrate": rate,
        "bufsize": rate,
    }
    video: list[bytes] = []
    keyframes: list[int] = []
    for i, rgb in enumerate(_video_frames(spec)):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = codec.time_base
        for packet in codec.encode(frame):
            if packet.is_keyframe:
                keyframes.append(len(video))
            video.append(bytes(packet))
    for packet in codec.encode(None):
        if packet.is_keyframe:
            keyframes.append(len(video))
        video.append(bytes(packet))
    return video, keyframes


def _encode_audio(spec: ClipSpec) -> list[bytes]:
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = AUDIO_CLOCK_HZ
    codec.layout = "stereo"
    codec.format = "s16"
    codec.bit_rate = spec.audio_bitrate_bps
    count = int(spec.duration_s / AUDIO_FRAME_S)
    out: list[bytes] = []
    t = np.arange(AUDIO_SAMPLES_PER_FRAME) / AUDIO_CLOCK_HZ
    for i in range(count):
        freq = 300 + 20 * (i % 40)  # a rising tone, so frames differ
        mono = (8000 * np.sin(2 * np.pi * freq * (t + i * AUDIO_FRAME_S))).astype(np.int16)
        stereo = np.repeat(mono, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK_HZ
        frame.pts = i * AUDIO_SAMPLES_PER_FRAME
        frame.time_base = fractions.Fraction(1, AUDIO_CLOCK_HZ)
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return out


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sfu-loadtest"


def load_clip(spec: ClipSpec | None = None, use_cache: bool = True) -> EncodedClip:
    """Encode (or load from the on-disk cache) one loop of video and audio."""
    spec = spec or ClipSpec()
    path = _cache_dir() / f"clip-{spec.cache_key()}.pickle"
    if use_cache and path.exists():
        try:
            with path.open("rb") as f:
                clip = pickle.load(f)
            if isinstance(clip, EncodedClip) and clip.spec == spec:
                return clip
        except Exception:  # a corrupt cache is re-encoded below
            logger.warning("ignoring unreadable clip cache %s", path)
    started = time.monotonic()
    video, keyframes = _encode_video(spec)
    clip = EncodedClip(spec=spec, video=video, keyframes=keyframes, audio=_encode_audio(spec))
    logger.info(
        "encoded %d video frames (%.0f kbps, keyframes at %s) and %d audio frames in %.1f s",
        len(video),
        clip.video_bitrate_bps / 1000,
        keyframes,
        len(clip.audio),
        time.monotonic() - started,
    )
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            with tmp.open("wb") as f:
                pickle.dump(clip, f)
            tmp.replace(path)
        except OSError:
            logger.warning("cannot write clip cache %s", path)
    return clip


class _PacedPacketTrack(MediaStreamTrack):
    """Returns one pre-encoded ``av.Packet`` per frame interval, looping a list of payloads."""

    def __init__(self, payloads: list[bytes], interval_s: float, clock_hz: int, start_index: int = 0):
        super().__init__()
        self._payloads = payloads
        self._interval_s = interval_s
        self._ticks_per_frame = round(interval_s * clock_hz)
        self._time_base = fractions.Fraction(1, clock_hz)
        self._index = start_index % len(payloads)
        self._count = 0
        self._start: float | None = None
        self.late_restarts = 0
        self.frames_sent = 0

    def _next_index(self) -> int:
        index = self._index
        self._index = (index + 1) % len(self._payloads)
        return index

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._count * self._interval_s
        if now - due > MAX_LAG_S:
            self.late_restarts += 1
            self._start, due = now - self._count * self._interval_s, now
        if due > now:
            await asyncio.sleep(due - now)
        packet = av.Packet(self._payloads[self._next_index()])
        packet.pts = self._count * self._ticks_per_frame
        packet.time_base = self._time_base
        self._count += 1
        self.frames_sent += 1
        return packet


class PreEncodedVideoTrack(_PacedPacketTrack):
    """VP8 from an :class:`EncodedClip`; :meth:`request_keyframe` jumps to the next keyframe."""

    kind = "video"

    def __init__(self, clip: EncodedClip, start_index: int = 0):
        super().__init__(clip.video, 1 / clip.spec.fps, VIDEO_CLOCK_HZ, start_index)
        self._keyframes = clip.keyframes
        self._keyframe_wanted = False
        self._last_jump = -math.inf
        self.keyframe_requests = 0
        self.keyframe_jumps = 0

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self._keyframe_wanted = True

    def _next_index(self) -> int:
        now = time.monotonic()
        if self._keyframe_wanted and now - self._last_jump >= KEYFRAME_REQUEST_MIN_INTERVAL_S:
            self._keyframe_wanted = False
            if self._index not in self._keyframes:
                later = [k for k in self._keyframes if k > self._index]
                self._index = later[0] if later else self._keyframes[0]
                self.keyframe_jumps += 1
            self._last_jump = now
        return super()._next_index()


class PreEncodedAudioTrack(_PacedPacketTrack):
    """Opus 20 ms frames from an :class:`EncodedClip`."""

    kind = "audio"

    def __init__(self, clip: EncodedClip, start_index: int = 0):
        super().__init__(clip.audio, AUDIO_FRAME_S, AUDIO_CLOCK_HZ, start_index)


def honour_keyframe_requests(sender: object, track: PreEncodedVideoTrack) -> None:
    """Make the sender's PLI/FIR handling (``_send_keyframe``) jump the track to a keyframe.

    aiortc's sender only sets a private flag read by its encoder, which a pre-encoded track never
    sees, so the instance method is wrapped.
    """
    original = sender._send_keyframe  # type: ignore[attr-defined]

    def _send_keyframe() -> None:
        track.request_keyframe()
        original()

    sender._send_keyframe = _send_keyframe  # type: ignore[attr-defined]
