"""Active speaker: reads the RFC 6464 audio-level header extension of every published audio track
on the packet path (no audio is decoded), smooths it, and picks the dominant speaker with
hysteresis so a cough does not steal the floor. docs/protocol.md: `active_speakers`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sfu.media.relay import TrackRelay
from sfu.media.rtp_header import find_extension
from sfu.periodic import PeriodicTask
from sfu.rtc.sdp import URI_AUDIO_LEVEL
from sfu.signaling.messages import message

if TYPE_CHECKING:
    from sfu.room.participant import PublishedTrack
    from sfu.room.room import Room, RoomRegistry

log = logging.getLogger(__name__)

TICK_S = 0.2
SMOOTHING = 0.25  # EWMA weight per tick of the newest 200 ms mean: ~0.8 s time constant
SPEAKING_LOUDNESS = 40  # 127 - level (-dBov): louder than -87 dBov counts as speech
SWITCH_MARGIN = 6  # a challenger must be this much louder (dB, smoothed)...
SWITCH_HOLD_S = 0.6  # ...for this long before it takes the floor
MIN_EVENT_INTERVAL_S = 0.25  # at most 4 active_speakers events per second per room


class LevelObserver:
    """Sits in an audio relay's fan-out list like a downtrack and keeps the sum of loudness
    (127 - level) over the current tick. Reading one extension byte is all it costs per packet."""

    __slots__ = ("ext_id", "loudness_sum", "packets")
    kind = "audio"  # read by the per-kind metric totals (it sends nothing: its counts are 0)

    def __init__(self, ext_id: int) -> None:
        self.ext_id = ext_id
        self.loudness_sum = 0
        self.packets = 0

    def write(self, data: bytes, payload_type: int, mime: str, sequence_number: int, timestamp: int,
              header_bytes: int, source: TrackRelay) -> bool:
        value = find_extension(data, self.ext_id)
        if value:
            self.loudness_sum += 127 - (value[0] & 0x7F)  # RFC 6464 §3: level in -dBov, 127 = silence
            self.packets += 1
        return False  # nothing is sent: not a forwarded packet

    def take_mean(self) -> float | None:
        if not self.packets:
            return None
        mean = self.loudness_sum / self.packets
        self.loudness_sum = self.packets = 0
        return mean

    def source_ended(self) -> None:
        self.packets = 0


@dataclass
class SpeakerState:
    track: PublishedTrack
    observer: LevelObserver
    smoothed: float = 0.0
    leading_since: float | None = None


class SpeakerDetector:
    """One per room."""

    def __init__(self) -> None:
        self.states: dict[str, SpeakerState] = {}
        self.dominant: str | None = None  # track id
        self.announced: list[str] = []
        self._last_event_s = 0.0

    def watch(self, track: PublishedTrack) -> None:
        ext_id = track.relay.ext_ids.get(URI_AUDIO_LEVEL)
        if track.kind != "audio" or ext_id is None or track.id in self.states:
            return
        observer = LevelObserver(ext_id)
        track.relay.downtracks = [*track.relay.downtracks, observer]  # type: ignore[list-item]
        self.states[track.id] = SpeakerState(track, observer)

    def tick(self, now_s: float) -> dict[str, Any] | None:
        """Update the levels; return an `active_speakers` event when the order changed."""
        for track_id, state in list(self.states.items()):
            if state.track.relay.closed:
                del self.states[track_id]
                continue
            mean = state.observer.take_mean()
            sample = 0.0 if mean is None or state.track.relay.muted else mean
            state.smoothed += SMOOTHING * (sample - state.smoothed)
        self._update_dominant(now_s)
        speaking = sorted((s for s in self.states.values() if s.smoothed >= SPEAKING_LOUDNESS),
                          key=lambda s: (s.track.id != self.dominant, -s.smoothed))
        order = [s.track.id for s in speaking]
        if order == self.announced or now_s - self._last_event_s < MIN_EVENT_INTERVAL_S:
            return None
        self.announced, self._last_event_s = order, now_s
        return message("active_speakers", speakers=[
            {"participant_id": s.track.participant_id, "track_id": s.track.id, "level": round(s.smoothed, 1)}
            for s in speaking])

    def _update_dominant(self, now_s: float) -> None:
        current = self.states.get(self.dominant or "")
        floor = current.smoothed if current is not None else 0.0
        best: SpeakerState | None = None
        for state in self.states.values():
            leads = state is not current and state.smoothed >= SPEAKING_LOUDNESS \
                and state.smoothed > floor + (SWITCH_MARGIN if current is not None else 0)
            if not leads:
                state.leading_since = None
                continue
            if state.leading_since is None:
                state.leading_since = now_s
            if now_s - state.leading_since >= SWITCH_HOLD_S and (best is None or state.smoothed > best.smoothed):
                best = state
        if best is not None:
            self.dominant = best.track.id
            best.leading_since = None
        elif current is not None and current.smoothed < SPEAKING_LOUDNESS / 2:
            self.dominant = None  # the room went quiet


class SpeakerLoop(PeriodicTask):
    name = "active speaker"

    def __init__(self, rooms: RoomRegistry, tick_s: float = TICK_S) -> None:
        super().__init__(tick_s)
        self.rooms = rooms

    async def tick(self, now_s: float) -> None:
        for room in list(self.rooms.rooms.values()):
            await self._tick_room(room, now_s)

    @staticmethod
    async def _tick_room(room: Room, now_s: float) -> None:
        for track in list(room.tracks.values()):
            room.speakers.watch(track)
        event = room.speakers.tick(now_s)
        if event is not None:
            await room.broadcast(event)
