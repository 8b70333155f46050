"""Prometheus metrics: packet-path counters are plain ints (sfu.media.counters) read on scrape;
everything off the hot path uses prometheus-client directly."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from sfu.media.counters import COUNTERS

if TYPE_CHECKING:
    from sfu.room.room import RoomRegistry

REGISTRY = CollectorRegistry()
SIGNALING_ERRORS = Counter("sfu_signaling_errors", "Client errors answered, by code", ["code"],
                           registry=REGISTRY)

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
    ("sfu_pli_received", "RTCP PLI received from subscribers", "pli_received"),
    ("sfu_fir_received", "RTCP FIR received from subscribers", "fir_received"),
    ("sfu_pli_sent", "RTCP PLI sent to publishers (throttled)", "pli_sent"),
    ("sfu_remb_received", "RTCP REMB received from subscribers", "remb_received"),
    ("sfu_send_failures", "Forwarded packets that could not be sent", "send_failures"),
)


class SfuCollector(Collector):
    def __init__(self, rooms: RoomRegistry | None) -> None:
        self.rooms = rooms

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        for name, text, attr in _PACKET_COUNTERS:
            family = CounterMetricFamily(name, text)
            family.add_metric([], getattr(COUNTERS, attr))
            yield family
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
            subscribed.add_metric([kind], sum(len(t.relay.downtracks) for t in tracks))
        yield published
        yield subscribed


def install(rooms: RoomRegistry) -> None:
    REGISTRY.register(SfuCollector(rooms))


def render() -> bytes:
    return generate_latest(REGISTRY)
