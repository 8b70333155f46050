"""DownTrack: one published track forwarded to one subscriber. Rewrites SSRC, sequence number,
timestamp, payload type and extension ids into the subscriber's negotiated values, gates video
until a keyframe, keeps the NACK cache and answers NACKs (RFC 4588 RTX when negotiated)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from struct import pack_into
from typing import Any, Protocol

from sfu.media import fastpath
from sfu.media.counters import COUNTERS
from sfu.media.keyframe import is_keyframe
from sfu.media.packet_cache import PacketCache
from sfu.media.relay import TrackRelay
from sfu.media.rtp_header import HeaderRewriter, header_size
from sfu.media.sequencer import Sequencer as PySequencer
from sfu.media.vp8 import Vp8Munger as PyVp8Munger

PACKET_CACHE_SIZE = 1024  # packets per outgoing stream kept for NACK (≥ 500: ~1 s of 4 Mb/s video)
KEYFRAME_RETRY_S = 1.0  # while gated, ask again if no keyframe arrived within this time
# The C sequencer when the C forwarding step is on (it maps packets on it directly), else the reference
Sequencer = fastpath.Sequencer or PySequencer
Vp8Munger = fastpath.Vp8Munger or PyVp8Munger


class Writer(Protocol):
    @property
    def connected(self) -> bool: ...

    def write(self, data: bytes | bytearray) -> bool: ...


class OutStream:
    """The subscriber side of one sender (one m-line): its SSRCs, its sequence/timestamp continuity
    and its NACK cache. Outlives the tracks forwarded on it, so a recycled m-line or a later layer
    switch continues one stream on the subscriber's side."""

    __slots__ = ("ssrc", "rtx_ssrc", "writer", "on_sent", "sequencer", "cache", "rtx_sequence_number",
                 "last_sent_s", "tally", "delivery_mark")

    def __init__(self, ssrc: int, rtx_ssrc: int | None, writer: Writer,
                 on_sent: Callable[[int, int, int], None] | None = None) -> None:
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.writer = writer
        # (rtp timestamp, payload bytes, packets) sent since the last call: sender-report bookkeeping,
        # called once per frame (marker bit; every audio packet), not once per packet
        self.on_sent = on_sent
        self.sequencer = Sequencer(random.randint(0, 0x7FFF), random.getrandbits(32))
        self.cache = PacketCache(PACKET_CACHE_SIZE)
        self.rtx_sequence_number = random.randint(0, 0x7FFF)
        self.last_sent_s = 0.0
        # packets and payload bytes sent but not passed to on_sent yet (C when the C step is on: it adds to it)
        self.tally: Any = fastpath.Tally() if fastpath.Tally is not None else _PyTally()
        # (our last sequence number, the receiver's highest) at its previous report: sfu.bwe.estimator.undelivered
        self.delivery_mark: tuple[int, int, int] | None = None


class DownTrack:
    """Forwarding state of one (published track → subscriber) pair. A simulcast track has one
    relay per layer; the downtrack forwards from `current` and, while switching, also listens to
    `target` until that layer's next keyframe, where it switches without a gap in sequence
    numbers, timestamps or VP8 picture ids."""

    __slots__ = ("layers", "out", "subscriber_id", "kind", "ready", "current", "target", "paused",
                 "pt_map", "rtx_pt", "clock_rate", "rewriter", "munger", "_last_keyframe_request_s",
                 "lane", "closed", "attached", "layer_index", "source_first_seq", "_report_every_packet")

    def __init__(self, layers: list[TrackRelay], out: OutStream, subscriber_id: str) -> None:
        self.layers = layers  # low to high; one relay for a track without simulcast
        self.out = out
        self.subscriber_id = subscriber_id
        self.kind = layers[0].kind
        self.ready = False  # set by configure() once the subscriber's answer fixed the parameters
        self.attached = False
        self.current: TrackRelay | None = None
        self.target: TrackRelay | None = None
        self.paused = False
        self.layer_index = 0  # the layer wanted: the lowest until the allocator's first decision
        self.pt_map: dict[str, int] = {}  # codec mime -> subscriber payload type
        self.rtx_pt: int | None = None
        self.clock_rate = 90000 if self.kind == "video" else 48000
        self.rewriter = HeaderRewriter({})
        self.munger = Vp8Munger() if len(layers) > 1 else None
        self._last_keyframe_request_s = 0.0
        self.closed = False
        self.source_first_seq = -1  # first sequence number sent from the current source
        self._report_every_packet = self.kind != "video"  # audio: a packet is a frame, marker or not
        # what the C fan-out reads (sfu._fastpath.Lane, kept in step by _sync_lane) and the counters
        self.lane: Any = _PyLane()
        if (fastpath.Lane is not None and type(out.sequencer) is fastpath.Sequencer
                and type(out.tally) is fastpath.Tally):
            self.lane = fastpath.Lane(out, self._report_every_packet)

    @property
    def packets_sent(self) -> int:
        return int(self.lane.packets_sent)

    @property
    def bytes_sent(self) -> int:
        return int(self.lane.bytes_sent)

    def _sync_lane(self) -> None:
        """After every change of the state below: the C fan-out serves this downtrack for `relay`
        only in the steady state, and hands every other packet to `write`."""
        lane = self.lane
        munger = self.munger
        steady = (self.ready and not self.closed and self.target is None
                  and (munger is None or type(munger) is fastpath.Vp8Munger))
        lane.relay = self.current if steady else None
        lane.pt_map = self.pt_map
        lane.rewriter = self.rewriter
        lane.munger = munger if steady else None

    @property
    def relay(self) -> TrackRelay:
        """The layer forwarded now, else the one being started."""
        return self.current or self.target or self.layers[self.layer_index]

    def configure(self, pt_map: dict[str, int], rtx_pt: int | None, ext_id_map: dict[int, int],
                  clock_rate: int) -> None:
        """Subscriber-side parameters from the latest completed negotiation."""
        self.pt_map = pt_map
        self.rtx_pt = rtx_pt
        self.clock_rate = clock_rate or self.clock_rate
        self.rewriter = HeaderRewriter.shared(ext_id_map)
        self.ready = bool(pt_map)
        if self.ready and not self.attached and not self.closed:
            self.attached = True
            self.select_layer(self.layer_index)
        self._sync_lane()

    def select_layer(self, index: int | None, drop_current: bool = False) -> bool:
        """See `_select_layer`."""
        changed = self._select_layer(index, drop_current)
        self._sync_lane()
        return changed

    def _select_layer(self, index: int | None, drop_current: bool = False) -> bool:
        """Forward layer `index` (switching at its next keyframe), or pause video with None.
        `drop_current`: stop the current layer now instead of at the switch (its link is
        overloaded: forwarding it until the target's keyframe would keep the queue full and
        that keyframe from getting through). Returns True if anything changed."""
        if self.closed or not self.attached:
            if index is not None:
                self.layer_index = index
            return False
        if index is None:
            if self.paused:
                return False
            self.paused = True
            for relay in (self.current, self.target):
                if relay is not None:
                    relay.remove(self)
            self.current = self.target = None
            return True
        index = max(0, min(index, len(self.layers) - 1))
        wanted = self.layers[index]
        changed = self.paused or index != self.layer_index
        self.paused = False
        self.layer_index = index
        if wanted is self.current:
            if self.target is not None and self.target is not wanted:
                self.target.remove(self)
            self.target = None
            return changed
        if self.target is not None and self.target is not wanted:
            self.target.remove(self)
        if self.target is not wanted:
            self.target = wanted
            wanted.add(self)
        if drop_current and self.current is not None:
            self.current.remove(self)
            self.current = None
        return changed

    def write(self, data: bytes, payload_type: int, mime: str, sequence_number: int, timestamp: int,
              header_bytes: int, source: TrackRelay) -> bool:
        """Hot path, once per packet per subscriber: copy + 12-byte patch + SRTP + sendto. True if the
        packet was sent (the relay counts forwarded packets once per incoming packet)."""
        if not self.ready:
            return False
        if source is not self.current or self.target is not None:
            if source is self.target:
                if not self._switch(data, mime, sequence_number, timestamp, header_bytes):
                    return False
            elif source is not self.current:
                return False
        out = self.out
        mapped = out.sequencer.map(sequence_number, timestamp)
        if mapped is None:
            return False
        out_pt = self.pt_map.get(mime)
        if out_pt is None:
            return False
        out_sequence_number, out_timestamp = mapped
        buf = self.rewriter.rewrite(data, out_pt, out_sequence_number, out_timestamp, out.ssrc)
        if buf is None:
            COUNTERS.rtp_malformed += 1
            return False
        if self.munger is not None:
            self.munger.munge(buf, header_bytes)
        out.cache.put(out_sequence_number, buf)  # nothing mutates buf after this point
        if not out.writer.write(buf):
            COUNTERS.send_failures += 1
            return False
        size = len(buf)
        lane = self.lane
        lane.packets_sent += 1
        lane.bytes_sent += size
        tally = out.tally
        tally.unreported_packets += 1
        tally.unreported_bytes += size - header_bytes
        marker = data[1] & 0x80  # the end of a frame: a later switch continues from here
        if marker or self._report_every_packet:
            if out.on_sent is not None:
                out.on_sent(out_timestamp, tally.unreported_bytes, tally.unreported_packets)
            tally.unreported_packets = tally.unreported_bytes = 0
            if marker:
                out.last_sent_s = time.monotonic()
        return True

    def _switch(self, data: bytes, mime: str, sequence_number: int, timestamp: int,
                header_bytes: int) -> bool:
        """The first packet of a new source (first start, layer switch, resume): video waits for
        a keyframe so the decoder can go on; sequence numbers, timestamps and picture ids continue
        what this m-line carried before. Nothing starts before the subscriber's transport is up:
        a keyframe sent into a closed transport is a lost keyframe."""
        if not self.out.writer.connected:
            return False
        if self.kind == "video":
            if not is_keyframe(mime, data[header_bytes:]):
                COUNTERS.keyframe_waits += 1
                now = time.monotonic()
                if now - self._last_keyframe_request_s >= KEYFRAME_RETRY_S:
                    self._last_keyframe_request_s = now
                    if self.target is not None:
                        self.target.request_keyframe()
                return False
        now = time.monotonic()
        out = self.out
        gap = max(1, int((now - out.last_sent_s) * self.clock_rate)) if out.last_sent_s else 1
        out.sequencer.switch_source(sequence_number, timestamp, min(gap, self.clock_rate * 10))
        self.source_first_seq = (out.sequencer.last_sequence_number + 1) & 0xFFFF
        if self.munger is not None:
            self.munger.switch_source(data, header_bytes)
        previous, self.current, self.target = self.current, self.target, None
        if previous is not None and previous is not self.current:
            previous.remove(self)
            COUNTERS.layer_switches += 1
        out.last_sent_s = now
        self._sync_lane()
        return True

    def on_nack(self, sequence_numbers: list[int]) -> None:
        """RFC 4585 §6.2.1 Generic NACK: resend from the cache, as RTX (RFC 4588 §4) if negotiated;
        each packet a bounded number of times, however often it is asked for (PacketCache)."""
        out = self.out
        first = self.source_first_seq
        now_s = time.monotonic()
        for sequence_number in sequence_numbers:
            COUNTERS.nack_packets_requested += 1
            if first >= 0 and (sequence_number - first) & 0x8000:
                # sent before the current source's key frame: the decoder no longer needs it, and
                # resending the old layer after a bandwidth down-switch would refill the link
                COUNTERS.nack_packets_missed += 1
                continue
            packet = out.cache.get_for_resend(sequence_number, now_s)
            if packet is None:
                if out.cache.get(sequence_number) is None:
                    COUNTERS.nack_packets_missed += 1
                else:
                    COUNTERS.nack_packets_throttled += 1
                continue
            resend = self._rtx(packet) if self.rtx_pt is not None and out.rtx_ssrc else packet
            if resend is not None and out.writer.write(resend):
                COUNTERS.nack_packets_resent += 1

    def _rtx(self, packet: bytes | bytearray) -> bytes | bytearray | None:
        header_bytes = header_size(packet)
        if header_bytes < 0:
            return None
        if packet[0] & 0x20:  # padded: resend the original rather than re-pad an RTX payload
            return packet
        out = self.out
        rtx = bytearray(packet[:header_bytes])
        rtx += packet[2:4]  # original sequence number (OSN) leads the RTX payload
        rtx += packet[header_bytes:]
        rtx[1] = (rtx[1] & 0x80) | (self.rtx_pt or 0)
        pack_into("!H", rtx, 2, out.rtx_sequence_number)
        pack_into("!I", rtx, 8, out.rtx_ssrc or 0)
        out.rtx_sequence_number = (out.rtx_sequence_number + 1) & 0xFFFF
        return bytes(rtx)

    def on_keyframe_request(self) -> None:
        """A PLI/FIR from the subscriber becomes a (throttled) PLI to the publisher."""
        (self.target or self.current or self.relay).request_keyframe()

    def source_ended(self) -> None:
        """The published track went away; remember when, so a recycled m-line continues."""
        self.closed = True
        self.ready = False
        self._sync_lane()
        if self.current is not None:
            self.out.last_sent_s = time.monotonic()

    def close(self) -> None:
        for relay in self.layers:
            relay.remove(self)
        self.source_ended()



class _PyTally:
    __slots__ = ("unreported_packets", "unreported_bytes")

    def __init__(self) -> None:
        self.unreported_packets = 0
        self.unreported_bytes = 0


class _PyLane:
    """The Lane's fields where the C step is off: only the counters are read."""

    __slots__ = ("relay", "pt_map", "rewriter", "munger", "packets_sent", "bytes_sent")

    def __init__(self) -> None:
        self.relay: TrackRelay | None = None
        self.pt_map: dict[str, int] = {}
        self.rewriter: HeaderRewriter | None = None
        self.munger: Any = None
        self.packets_sent = 0
        self.bytes_sent = 0


fastpath.register(DownTrack)
