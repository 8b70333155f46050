"""What the Python client receives: one RemoteTrack per server track id over recycled m-lines,
and a video jitter buffer that resumes at the next key frame (aiortc's waits for up to 512
packets after a lost retransmission)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from sfu.media.keyframe import is_vp8_keyframe


class MidReceiver:
    """The receiving track of one m-line; frames are handed to whichever RemoteTrack holds the mid
    now (mids are recycled), keeping one pending read so no frame is lost on a handover."""

    def __init__(self, source: MediaStreamTrack, on_frame: Callable[[], None] | None = None) -> None:
        self.source = source
        self.on_frame = on_frame
        self.pending: asyncio.Future[Any] | None = None

    async def next_frame(self, ended: asyncio.Event) -> Any:
        if self.pending is None:
            self.pending = asyncio.ensure_future(self.source.recv())
            # the source ends with the connection; nobody may be left to read that error
            self.pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        waiter = asyncio.ensure_future(ended.wait())
        try:
            await asyncio.wait({self.pending, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.pending.done():
            raise MediaStreamError
        pending, self.pending = self.pending, None
        frame = pending.result()
        if self.on_frame is not None:
            self.on_frame()
        return frame


class RemoteTrack(MediaStreamTrack):
    """A track of another participant as this client receives it; ends when the server says
    `track_unpublished` (aiortc itself never ends a track whose m-line went inactive)."""

    def __init__(self, kind: str, track_id: str, mid_receiver: MidReceiver) -> None:
        super().__init__()
        self.kind = kind
        self.track_id = track_id
        self._mid_receiver = mid_receiver
        self._ended = asyncio.Event()

    async def recv(self) -> Any:
        if self._ended.is_set():
            raise MediaStreamError
        return await self._mid_receiver.next_frame(self._ended)

    def stop(self) -> None:
        self._ended.set()
        super().stop()


class ResyncingJitterBuffer(JitterBuffer):
    """aiortc's video jitter buffer waits at the first missing packet until it arrives or 512
    packets later, and aiortc never NACKs a packet twice: one lost retransmission freezes video
    for many seconds. Browsers resume at the next key frame instead; so does this: a VP8 key frame
    that arrives behind a hole drops everything before it (the decoder needs none of it)."""

    STUCK_PACKETS = 20  # a hole this many packets old: ask for a key frame (again every 50 packets)

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch, is_video)
        self._stuck_packets = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        hole = frame is None and self._has_hole(packet.sequence_number)
        origin = self._origin
        if frame is None and hole and origin is not None and packet.sequence_number != origin \
                and is_vp8_keyframe(packet.payload):
            self.remove(uint16_add(packet.sequence_number, -origin))
            frame = self._remove_frame(packet.sequence_number)
            hole = False
        if frame is not None or not hole:
            self._stuck_packets = 0
        else:  # the key frame that would resync us was lost too: ask for another one
            self._stuck_packets += 1
            if self._stuck_packets % 50 == self.STUCK_PACKETS:
                pli = True
        return pli, frame

    def _has_hole(self, newest: int) -> bool:
        """A missing packet between the oldest held and `newest`: no frame can leave before it."""
        if self._origin is None:
            return False
        span = uint16_add(newest, -self._origin)
        return span < self._capacity and any(
            self._packets[(self._origin + i) % self._capacity] is None for i in range(span))


def resync_video(receiver: Any) -> None:
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if buffer is not None and buffer._is_video and not isinstance(buffer, ResyncingJitterBuffer):
        receiver._RTCRtpReceiver__jitter_buffer = ResyncingJitterBuffer(buffer.capacity, is_video=True)
