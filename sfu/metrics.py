"""Prometheus metrics: packet-path counters are plain ints (sfu.media.counters, and the per-track
counts of relays and downtracks) read on scrape; everything off the hot path uses
prometheus-client directly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from sfu.media import fastpath
from sfu.media.counters import COUNTERS

if TYPE_CHECKING:
    from sfu.room.room import RoomRegistry

KINDS = ("audio", "video")

REGISTRY = CollectorRegistry()
SIGNALING_ERRORS = Counter("sfu_signaling_errors", "Client errors answered, by code", ["code"],
                           registry=REGISTRY)
BANDWIDTH_ESTIMATE = Histogram(
    "sfu_bandwidth_estimate_bps", "Subscribers' bandwidth estimates as the allocator sees them, bits/s",
    buckets=(50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 8e6, 12e6, 20e6),
    registry=REGISTRY)
LOOP_LAG = Gauge("sfu_event_loop_lag_seconds", "Latest event-loop scheduling delay (watchdog, every 0.5 s)",
                 registry=REGISTRY)
LOOP_LAG_HISTOGRAM = Histogram(
    "sfu_event_loop_lag_distribution_seconds", "Event-loop scheduling delays measured by the watchdog",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), registry=REGISTRY)
LOOP_BUSY_MAX = Gauge(
    "sfu_event_loop_busy_max_seconds",
    "Longest CPU time the event-loop thread used between two heartbeats since start: bounds the "
    "longest a single handler blocked the loop", registry=REGISTRY)
LOOP_BLOCKED = Counter("sfu_event_loop_blocked", "Heartbeat intervals in which the loop thread used over 50 ms "
                       "of CPU without reaching its timers", registry=REGISTRY)
DRAINING = Gauge("sfu_draining", "1 while the node drains (refuses joins), else 0", registry=REGISTRY)
WEBHOOK_DELIVERIES = Counter("sfu_webhook_deliveries", "Webhook events by outcome (delivered, failed, dropped)",
                             ["result"], registry=REGISTRY)


LAYER_DECISIONS = Counter("sfu_layer_decisions", "Simulcast layer changes per subscriber, by reason",
                          ["reason"], registry=REGISTRY)


def observe_bandwidth_estimate(bps: float) -> None:
    """One subscriber's current estimate (called by the bandwidth allocator, off the packet path)."""
    BANDWIDTH_ESTIMATE.observe(bps)


def observe_loop_lag(lag_s: float) -> None:
    LOOP_LAG.set(lag_s)
    LOOP_LAG_HISTOGRAM.observe(lag_s)

# name, help, counter attribute
_PACKET_COUNTERS = (
    ("sfu_rtp_packets_received", "RTP packets received from publishers", "rtp_in"),
    ("sfu_rtp_bytes_received", "RTP bytes received from publishers (decrypted)", "rtp_in_bytes"),
    ("sfu_rtp_packets_forwarded", "RTP packets forwarded to subscribers", "rtp_forwarded"),
    ("sfu_rtp_bytes_forwarded", "RTP bytes forwarded to subscribers (before SRTP)", "rtp_forwarded_bytes"),
    ("sfu_rtp_packets_malformed", "RTP packets dropped as malformed", "rtp_malformed"),
    ("sfu_rtp_packets_unroutable", "RTP packets with an SSRC no published track claims", "rtp_unroutable"),
    ("sfu_rtp_packets_unknown_payload_type", "RTP packets with a payload type not negotiated",
     "rtp_unknown_payload_type"),
    ("sfu_keyframe_wait_drops", "Video packets held back until a subscriber's first keyframe", "keyframe_waits"),
    ("sfu_nack_received", "RTCP NACK packets received from subscribers", "nack_received"),
    ("sfu_nack_packets_requested", "Packets requested by subscribers' NACKs", "nack_packets_requested"),
    ("sfu_nack_packets_resent", "Packets retransmitted from the cache", "nack_packets_resent"),
    ("sfu_nack_packets_missed", "NACKed packets no longer in the cache", "nack_packets_missed"),
    ("sfu_nack_packets_throttled", "NACKed packets not resent: resent too recently or too often already",
     "nack_packets_throttled"),
    ("sfu_pli_received", "RTCP PLI received from subscribers", "pli_received"),
    ("sfu_fir_received", "RTCP FIR received from subscribers", "fir_received"),
    ("sfu_pli_sent", "RTCP PLI sent to publishers (throttled)", "pli_sent"),
    ("sfu_remb_received", "RTCP REMB received from subscribers", "remb_received"),
    ("sfu_send_failures", "Forwarded packets that could not be sent", "send_failures"),
    ("sfu_send_queue_drops", "Packets dropped for a subscriber whose send queue was full (its link is "
     "narrower than what it is sent)", "send_queue_drops"),
    ("sfu_rtcp_packets_malformed", "RTCP packets from peers dropped as malformed", "rtcp_malformed"),
    ("sfu_rtcp_packets_ssrc_refused", "SRTCP packets dropped before decryption: a sender SSRC beyond the "
     "per-connection limit", "rtcp_ssrc_refused"),
    ("sfu_layer_switches", "Simulcast layer switches done by downtracks", "layer_switches"),
)


class KindTotals:
    """Monotonic per-kind totals from the per-object counts of live relays and downtracks: each
    scrape adds what every object counted since the previous scrape. Objects are keyed by id()
    (they have __slots__ and no weakref); an object that went away since the previous scrape takes
    its last interval's counts with it, which a rate over minutes does not notice."""

    def __init__(self, attrs: tuple[str, ...]) -> None:
        self.attrs = attrs
        self.totals = {(kind, attr): 0 for kind in KINDS for attr in attrs}
        self._last: dict[int, tuple[int, ...]] = {}

    def update(self, objects: Iterable[Any]) -> None:
        seen: dict[int, tuple[int, ...]] = {}
        for obj in objects:
            key = id(obj)
            if key in seen:
                continue
            now = tuple(int(getattr(obj, attr, 0)) for attr in self.attrs)
            before = self._last.get(key, (0,) * len(now))
            kind = obj.kind if obj.kind in KINDS else "video"
            for attr, new, old in zip(self.attrs, now, before, strict=True):
                self.totals[(kind, attr)] += new - old if new >= old else new  # id reused: a new object
            seen[key] = now
        self._last = seen


_BY_KIND = (
    ("sfu_rtp_packets_in", "RTP packets received from publishers, by kind", "relay", "packets_in"),
    ("sfu_rtp_bytes_in", "RTP bytes received from publishers (decrypted), by kind", "relay", "bytes_in"),
    ("sfu_rtp_packets_out", "RTP packets forwarded to subscribers, by kind", "downtrack", "packets_sent"),
    ("sfu_rtp_bytes_out", "RTP bytes forwarded to subscribers (before SRTP), by kind", "downtrack", "bytes_sent"),
)


class SfuCollector(Collector):
    def __init__(self, rooms: RoomRegistry | None) -> None:
        self.rooms = rooms
        self.relays = KindTotals(("packets_in", "bytes_in"))
        self.downtracks = KindTotals(("packets_sent", "bytes_sent"))

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        for name, text, attr in _PACKET_COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], getattr(COUNTERS, attr))
            yield family
        yield from _fastpath_metrics()
        if self.rooms is None:
            return
        rooms = list(self.rooms.rooms.values())
        participants = [p for r in rooms for p in r.participants.values()]
        yield GaugeMetricFamily("sfu_rooms", "Rooms with at least one participant", value=len(rooms))
        yield GaugeMetricFamily("sfu_participants", "Participants in all rooms", value=len(participants))
        published = GaugeMetricFamily("sfu_published_tracks", "Published tracks", labels=["kind"])
        subscribed = GaugeMetricFamily("sfu_subscribed_tracks", "Forwarded (track, subscriber) pairs",
                                       labels=["kind"])
        for kind in ("audio", "video"):
            tracks = [t for r in rooms for t in r.tracks.values() if t.kind == kind]
            published.add_metric([kind], len(tracks))
            subscribed.add_metric([kind], sum(
                len({id(d) for r in t.relays for d in r.downtracks if hasattr(d, "subscriber_id")}) for t in tracks))
        yield published
        yield subscribed
        estimates = GaugeMetricFamily("sfu_subscriber_estimate_bps",
                                      "Downlink estimate per subscriber (REMB and loss, smoothed)",
                                      labels=["room", "participant"])
        layers = GaugeMetricFamily("sfu_subscriber_layer",
                                   "Simulcast layer forwarded per subscriber and track (-1: paused)",
                                   labels=["room", "participant", "track", "reason"])
        for room in rooms:
            for participant in room.participants.values():
                bandwidth = getattr(participant, "bandwidth", None)
                if bandwidth is None:
                    continue
                estimates.add_metric([room.name, participant.id], bandwidth.estimate.estimate_bps)
                for track_id, (layer, reason) in bandwidth.decided.items():
                    layers.add_metric([room.name, participant.id, track_id, reason], -1 if layer is None else layer)
        yield estimates
        yield layers
        yield from self._by_kind(rooms)

    def _by_kind(self, rooms: list[Any]) -> Iterator[CounterMetricFamily]:
        relays = [relay for r in rooms for t in r.tracks.values() for relay in _relays(t)]
        self.relays.update(relays)
        self.downtracks.update(d for relay in relays for d in relay.downtracks)
        for name, text, source, attr in _BY_KIND:
            totals = self.relays if source == "relay" else self.downtracks
            family = CounterMetricFamily(name, text, labels=["kind"])
            for kind in KINDS:
                family.add_metric([kind], totals.totals[(kind, attr)])
            yield family


def _fastpath_metrics() -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
    """How much of the fan-out the C step (docs/fastpath.md) serves: a share of `python` that grows
    means downtracks left the steady state (simulcast munging, full send queues, TURN) or the step is off."""
    yield GaugeMetricFamily("sfu_fastpath_enabled", "1 if the C forwarding step is on (sfu._fastpath)",
                            value=1 if fastpath.ENABLED else 0)
    family = CounterMetricFamily("sfu_fastpath_writes", "Downtrack writes of the fan-out, by path (c, python)",
                                 labels=["path"])
    stats = fastpath.stats()
    family.add_metric(["c"], stats["served_in_c"])
    family.add_metric(["python"], stats["handed_to_python"])
    yield family
    delays = fastpath.delay_histogram()
    if delays is not None:
        buckets, total_s, _count = delays
        yield HistogramMetricFamily(
            "sfu_forwarding_delay_seconds",
            "Publisher datagram's kernel arrival to sendto of each copy sent by the C step (SFU_FASTPATH_PROFILE=1)",
            buckets=[("+Inf" if b == float("inf") else repr(b), c) for b, c in buckets], sum_value=total_s)


def _relays(track: Any) -> list[Any]:
    return list(getattr(track, "relays", None) or [track.relay])


_installed: list[SfuCollector] = []


def install(rooms: RoomRegistry) -> None:
    """Export this registry's rooms (one per process; a second app replaces the first)."""
    while _installed:
        REGISTRY.unregister(_installed.pop())
    collector = SfuCollector(rooms)
    REGISTRY.register(collector)
    _installed.append(collector)


def render() -> bytes:
    return generate_latest(REGISTRY)
