"""The allocation loop: every tick, measure each layer's bitrate, then for each subscriber let
the LayerAllocator pick the layer of every video track it receives, apply it to the downtracks
and tell the subscriber (`quality_changed`). docs/allocation.md explains the rules."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sfu import metrics
from sfu.bwe.allocator import Demand, Layer, LayerAllocator
from sfu.bwe.estimator import HIGH_LOSS, SubscriberEstimate
from sfu.media.downtrack import DownTrack
from sfu.media.relay import TrackRelay
from sfu.periodic import PeriodicTask
from sfu.signaling.messages import message

if TYPE_CHECKING:
    from sfu.room.participant import Participant, PublishedTrack
    from sfu.room.room import RoomRegistry

log = logging.getLogger(__name__)

TICK_S = 0.5
RATE_WEIGHT = 0.3  # EWMA weight of the newest bitrate sample
STALE_LAYER_S = 2.0  # a layer that sent nothing for this long is not offered
CONGESTION_RATIO = 0.6  # ...60 % of what we send, without rising: the subscriber's link is the limit.
# (Not 90 %: estimators count payload bytes while we count packets and key-frame bursts, and a busy
# receiving host alone makes them back off to 0.6-0.85x; a real bottleneck drives it to ~0.1-0.3x:
# measured 0.15-0.3 behind a 300 kb/s tc cap receiving 900 kb/s, tests/network/test_bandwidth.py.)
CONGESTION_WINDOW_S = 3.0  # congestion: for this long, every REMB was below...
MIN_MEASURABLE_BPS = 30_000  # below this, receive rate says nothing about congestion
PROBE_CHECK_S = 5.0  # after a probe: congestion within this time means the link cannot carry it
PUBLISHER_REMB_BPS = 3_000_000  # what we tell publishers they may send (all layers of one track)
PUBLISHER_REMB_EVERY_S = 1.0
BUDGET_ROUNDING_BPS = 1_000  # see budget_bps
SUSTAINED_LOSS_S = 3.0  # mean loss over this long above 10 %: the link cannot carry even this
PROBE_BACKOFF_S = (4.0, 10.0)  # wait before the next probe: doubles per failure, resets on success


@dataclass
class QualityPrefs:
    max_width: int | None = None
    max_height: int | None = None
    max_layer: int | None = None


@dataclass
class SubscriberBandwidth:
    """One subscriber's estimate, preferences and allocation state."""

    estimate: SubscriberEstimate = field(default_factory=SubscriberEstimate)
    allocator: LayerAllocator = field(default_factory=LayerAllocator)
    prefs: dict[str, QualityPrefs] = field(default_factory=dict)
    receive_rate_bps: float = 0.0
    allocated_bps: float = 0.0  # what the current layers need: the send rate once a switch settled
    _bytes_sent: int = 0
    _last_tick_s: float = 0.0
    _probe_backoff_s: float = PROBE_BACKOFF_S[0]
    _next_probe_s: float = 0.0
    _probe: tuple[float, float] | None = None  # (time, bitrate needed) of the running probe
    _remb_congested: bool = False  # the last check's result (congestion lasts while the REMB stays low)
    decided: dict[str, tuple[int | None, str]] = field(default_factory=dict)

    def measure(self, now_s: float, downtracks: list[DownTrack]) -> None:
        sent = sum(d.bytes_sent for d in downtracks)
        if self._last_tick_s:
            elapsed = max(1e-3, now_s - self._last_tick_s)
            sample = max(0, sent - self._bytes_sent) * 8 / elapsed
            self.receive_rate_bps += RATE_WEIGHT * (sample - self.receive_rate_bps)
        self._bytes_sent, self._last_tick_s = sent, now_s

    @property
    def congested(self) -> bool:
        return self.estimate.loss_fraction > HIGH_LOSS or self.remb_congested

    @property
    def remb_congested(self) -> bool:
        return self._remb_congested

    def check_congestion(self) -> None:
        """Once per tick, after `allocated_bps` is known. A receiver-side estimate (REMB) follows
        what arrives: while the link keeps up it rises (slowly: ~8 %/s, so it lags behind an
        up-switch and that lag means nothing); when queues grow the receiver's delay detector cuts
        it to ~0.85x of what gets through. So REMB congestion is a cut followed by an estimate
        held well below what we send, and it lasts as long as the estimate stays there without
        rising (behind a hard cap it settles flat). Noise (one cut on a busy host) is not
        congestion. (Loss reports are the other signal: `congested`, `budget_bps`.)"""
        # the measured rate lags a down-switch by seconds; the allocation does not
        rate = min(self.receive_rate_bps, self.allocated_bps) if self.allocated_bps else self.receive_rate_bps
        if rate <= MIN_MEASURABLE_BPS:
            self._remb_congested = False
            return
        self._remb_congested = self.estimate.held_below(CONGESTION_RATIO * rate, CONGESTION_WINDOW_S,
                                                        time.monotonic(), already=self._remb_congested)

    def budget_bps(self, allocated_bps: float, floor_bps: float, headroom: float, now_s: float) -> float:
        """What the allocator may plan with: the estimate when loss has lasted (the link cannot
        carry even what it gets now: this alone can pause video); with a congested REMB or a
        lossy report, at least every track's lowest layer (tracks move down, but a receiver's
        estimate right after an overload is pessimistic, ~0.3-0.5x of a link that carries the
        lowest layer, and loss right after a failed probe says nothing about the lowest layer);
        else at least what is allocated now (an uncongested estimate only says 'at least what
        arrives')."""
        if self.estimate.lossy_for(SUSTAINED_LOSS_S, now_s):
            return self.estimate.estimate_bps
        if self.congested:
            return max(self.estimate.estimate_bps, floor_bps / headroom)
        # (+ a margin: the allocator subtracts the same measured bitrates again, and float rounding
        # made the current layers "not fit" by a fraction of a bit now and then: a spurious down-switch)
        return max(self.estimate.estimate_bps, allocated_bps / headroom + BUDGET_ROUNDING_BPS)

    def probe_allowed(self, now_s: float) -> bool:
        """Probe (step up beyond the estimate) only on an uncongested link, after the backoff."""
        if self._probe is not None:
            started, _ = self._probe
            if self.congested:  # the link could not carry the step: back off
                self._probe = None
                self._next_probe_s = now_s + self._probe_backoff_s
                self._probe_backoff_s = min(self._probe_backoff_s * 2, PROBE_BACKOFF_S[1])
            elif now_s - started >= PROBE_CHECK_S:
                self._probe = None
                self._probe_backoff_s = PROBE_BACKOFF_S[0]
            return False
        return not self.congested and now_s >= self._next_probe_s

    def probe_started(self, now_s: float, needed_bps: float) -> None:
        self._probe = (now_s, needed_bps)


def measure_layers(tracks: list[PublishedTrack], now_s: float, elapsed_s: float) -> None:
    for track in tracks:
        for relay in track.relays:
            _measure(relay, now_s, elapsed_s)


def _measure(relay: TrackRelay, now_s: float, elapsed_s: float) -> None:
    sample = max(0, relay.bytes_in - relay.rate_bytes) * 8 / max(elapsed_s, 1e-3)
    if relay.bytes_in != relay.rate_bytes:
        relay.last_packet_s = now_s
    relay.rate_bytes = relay.bytes_in
    relay.bitrate_bps += RATE_WEIGHT * (sample - relay.bitrate_bps) if relay.bitrate_bps else sample


def _layer_sizes(relays: list[TrackRelay]) -> list[tuple[int, int]]:
    """Sizes seen in each layer's key frames; a layer not seen yet is assumed to be the known
    layer above it scaled by 1/2 per step (browsers' default 1/4, 1/2, 1)."""
    sizes = [(r.width, r.height) for r in relays]
    for i in range(len(sizes) - 2, -1, -1):
        if sizes[i] == (0, 0) and sizes[i + 1] != (0, 0):
            sizes[i] = (sizes[i + 1][0] // 2, sizes[i + 1][1] // 2)
    return sizes


def allocate(participant: Participant, now_s: float) -> list[dict[str, Any]]:
    """One subscriber's decisions for this tick; returns the `quality_changed` events to send."""
    bandwidth = participant.bandwidth
    slots = [s for s in participant.peer.slots if s.downtrack is not None and s.track_id]
    downtracks = [s.downtrack for s in slots if s.downtrack is not None]
    bandwidth.measure(now_s, downtracks)
    room_tracks = participant.room.tracks
    fixed_bps = 0.0
    demands: list[Demand] = []
    by_key: dict[str, tuple[DownTrack, PublishedTrack]] = {}
    for slot in slots:
        downtrack, track = slot.downtrack, room_tracks.get(slot.track_id or "")
        if downtrack is None or track is None or not downtrack.attached:
            continue
        if track.kind == "audio":
            fixed_bps += track.relay.bitrate_bps
            continue
        if track.relay.muted:  # nothing flows; unmute restarts it (Room.set_track_muted)
            continue
        prefs = bandwidth.prefs.get(track.id, QualityPrefs())
        layers = [Layer(r.bitrate_bps, w, h, now_s - r.last_packet_s < STALE_LAYER_S)
                  for r, (w, h) in zip(track.relays, _layer_sizes(track.relays), strict=True)]
        current = None if downtrack.paused else downtrack.layer_index
        demands.append(Demand(track.id, layers, current, started=track.id in bandwidth.decided,
                              priority=2 if track.source == "screen" else 0, max_width=prefs.max_width,
                              max_height=prefs.max_height, max_layer=prefs.max_layer,
                              can_pause=track.simulcast))
        by_key[track.id] = (downtrack, track)
    allocated = sum(d.layers[d.current].bitrate_bps for d in demands if d.current is not None) + fixed_bps
    bandwidth.allocated_bps = allocated
    bandwidth.check_congestion()
    if log.isEnabledFor(logging.DEBUG) and demands:
        log.debug("subscriber %s: estimate %.0f, REMB %d, loss %s, sent %.0f, allocated %.0f, congested %s/%s",
                  participant.id, bandwidth.estimate.estimate_bps, bandwidth.estimate.last_remb_bps,
                  bandwidth.estimate.loss_summary(now_s), bandwidth.receive_rate_bps, allocated,
                  bandwidth.remb_congested, bandwidth.estimate.lossy_for(SUSTAINED_LOSS_S, now_s))
    if demands:
        metrics.observe_bandwidth_estimate(bandwidth.estimate.estimate_bps)
    probe = bandwidth.probe_allowed(now_s)
    floor = fixed_bps + sum(d.layers[0].bitrate_bps for d in demands)
    budget = bandwidth.budget_bps(allocated, floor, bandwidth.allocator.headroom, now_s)
    decisions = bandwidth.allocator.allocate(now_s, budget, fixed_bps, demands, probe)
    events = []
    for key, decision in decisions.items():
        downtrack, track = by_key[str(key)]
        if decision.reason in ("up: probe", "resumed: probe") and decision.layer is not None:
            bandwidth.probe_started(now_s, allocated + track.relays[decision.layer].bitrate_bps)
        # a bandwidth down-switch stops the current layer at once: forwarding it until the target's key
        # frame kept a capped link flooded, the key frame from getting through, and the extra load
        # (key-frame requests, retransmissions) reached other subscribers (tests/network)
        changed = downtrack.select_layer(decision.layer, drop_current=decision.reason == "down: bandwidth")
        previous = bandwidth.decided.get(track.id)
        bandwidth.decided[track.id] = (decision.layer, decision.reason)
        if changed or previous is None or previous[0] != decision.layer:
            events.append(_quality_changed(participant, track, decision.layer, decision.reason))
            metrics.LAYER_DECISIONS.labels(reason=decision.reason.split(":")[0]).inc()
    for track_id in list(bandwidth.decided):
        if track_id not in by_key:
            del bandwidth.decided[track_id]
    return events


def _quality_changed(participant: Participant, track: PublishedTrack, layer: int | None,
                     reason: str) -> dict[str, Any]:
    relay = track.relays[layer] if layer is not None else None
    estimate = participant.bandwidth.estimate.estimate_bps
    log.info("subscriber %s track %s: layer %s (%s), estimate %.0f kb/s, reason %s", participant.id, track.id,
             relay.rid if relay else "paused", f"{relay.width}x{relay.height}" if relay else "-",
             estimate / 1000, reason)
    return message("quality_changed", track_id=track.id, layer=relay.rid if relay else None,
                   width=relay.width if relay else 0, height=relay.height if relay else 0,
                   paused=layer is None, reason=reason, estimate_bps=int(estimate))


class AllocationLoop(PeriodicTask):
    """One task for the whole process: cheap (a few dict walks per subscriber per tick)."""

    name = "allocation"

    def __init__(self, rooms: RoomRegistry, tick_s: float = TICK_S,
                 publisher_remb_bps: int = PUBLISHER_REMB_BPS) -> None:
        super().__init__(tick_s)
        self.rooms = rooms
        self.publisher_remb_bps = publisher_remb_bps
        self._last_s = time.monotonic()
        self._last_remb_s = 0.0

    async def tick(self, now_s: float) -> None:
        elapsed, self._last_s = now_s - self._last_s, now_s
        send_remb = now_s - self._last_remb_s >= PUBLISHER_REMB_EVERY_S
        if send_remb:
            self._last_remb_s = now_s
        for room in list(self.rooms.rooms.values()):
            measure_layers(list(room.tracks.values()), now_s, elapsed)
            for participant in list(room.participants.values()):
                if participant.left:
                    continue
                for event in allocate(participant, now_s):
                    await participant.send(event)
                if send_remb and participant.tracks:
                    await participant.peer.send_publisher_estimate(self.publisher_remb_bps)
            for track in list(room.tracks.values()):
                if track.simulcast:
                    await _tell_layers_needed(room, track)


def layers_needed(track: PublishedTrack, subscribers: list[Participant]) -> list[str]:
    """Dynacast: the layers any subscriber could use, by the sizes they asked for. Bandwidth
    never lowers this (a layer the publisher stopped could not be probed back), only tile
    sizes do; the lowest layer is always kept for a fast start."""
    sizes = _layer_sizes(track.relays)
    top = 0
    for subscriber in subscribers:
        prefs = subscriber.bandwidth.prefs.get(track.id, QualityPrefs())
        demand = Demand(track.id, [Layer(0, w, h) for w, h in sizes], None, max_width=prefs.max_width,
                        max_height=prefs.max_height, max_layer=prefs.max_layer)
        top = max(top, LayerAllocator._ceiling(demand))
    return [relay.rid for relay in track.relays[:top + 1]]


async def _tell_layers_needed(room: Any, track: PublishedTrack) -> None:
    subscribers = [p for p in room.participants.values() if track.id in p.wanted and not p.left]
    needed = layers_needed(track, subscribers) if subscribers else [track.relays[0].rid]
    if needed != track.layers_needed:
        track.layers_needed = needed
        owner = room.participants.get(track.participant_id)
        if owner is not None:
            await owner.send(message("layers_needed", track_id=track.id, layers=needed))
