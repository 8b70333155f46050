"""TrackRelay: one published track's fan-out point. Takes the publisher's decrypted RTP as bytes
and hands each packet to every subscriber's DownTrack; owns the throttled keyframe request."""

from __future__ import annotations

import time
from collections.abc import Callable
from struct import Struct
from typing import TYPE_CHECKING

from sfu.media import fastpath
from sfu.media.counters import COUNTERS
from sfu.media.keyframe import is_vp8_keyframe, vp8_payload_offset
from sfu.media.rtp_header import header_size
from sfu.media.vp8 import vp8_keyframe_size

if TYPE_CHECKING:
    from sfu.media.downtrack import DownTrack

_SEQ_TS_SSRC = Struct("!HII")  # sequence number, timestamp, SSRC (RFC 3550 §5.1)

KEYFRAME_REQUEST_INTERVAL_S = 0.5  # at most one PLI to the publisher per track per interval


class TrackRelay:
    """Forwarding state of one published track (one SSRC of media; RTX is not forwarded 1:1)."""

    __slots__ = (
        "kind", "mime_by_pt", "downtracks", "media_ssrc", "_request_pli", "_last_pli_s", "_pli_pending",
        "packets_in", "bytes_in", "closed", "muted", "ext_ids", "rid", "width", "height",
        "bitrate_bps", "rate_bytes", "last_packet_s",
    )

    def __init__(self, kind: str, request_pli: Callable[[int], None]) -> None:
        self.kind = kind
        self.mime_by_pt: dict[int, str] = {}  # media payload types only; RTX/unknown are dropped
        self.downtracks: list[DownTrack] = []
        self.media_ssrc: int | None = None
        self._pli_pending = False  # a keyframe was asked for before the publisher's SSRC was known
        self._request_pli = request_pli
        self._last_pli_s = 0.0
        self.packets_in = 0
        self.bytes_in = 0
        self.closed = False
        self.muted = False
        self.ext_ids: dict[str, int] = {}  # uri -> id of the extensions the publisher sends
        self.rid = ""  # simulcast layer id, "" without simulcast
        self.width = 0  # from the layer's last VP8 key frame
        self.height = 0
        self.bitrate_bps = 0.0  # measured by the allocation loop, not on the packet path
        self.rate_bytes = 0
        self.last_packet_s = 0.0

    def update_codecs(self, mime_by_pt: dict[int, str]) -> None:
        """Payload types of the latest negotiation win; older ones stay for packets in flight."""
        self.mime_by_pt.update(mime_by_pt)

    def add(self, downtrack: DownTrack) -> None:
        if downtrack not in self.downtracks:
            # copy-on-write: the packet loop iterates the old list undisturbed
            self.downtracks = [*self.downtracks, downtrack]
        if self.kind == "video":
            self.request_keyframe()

    def remove(self, downtrack: DownTrack) -> None:
        self.downtracks = [d for d in self.downtracks if d is not downtrack]

    def forward(self, data: bytes) -> None:
        """Hot path: one incoming packet to every downtrack. Only the 12-byte fixed header is read
        here (no RtpPacket object); each downtrack copies and patches its own header."""
        header_bytes = header_size(data)
        if header_bytes < 0:
            COUNTERS.rtp_malformed += 1
            return
        payload_type = data[1] & 0x7F
        mime = self.mime_by_pt.get(payload_type)
        if mime is None:
            COUNTERS.rtp_unknown_payload_type += 1
            return
        size = len(data)
        self.packets_in += 1
        self.bytes_in += size
        sequence_number, timestamp, self.media_ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        if self._pli_pending:  # one bool per incoming packet, not per subscriber
            self._pli_pending = False
            self.request_keyframe()
        if self.muted:
            return
        if mime == "video/vp8" and size > header_bytes and data[header_bytes] & 0x10:
            self._note_keyframe_size(data, header_bytes)
        fanout = fastpath.fanout
        if fanout is not None and type(data) is bytes:  # the C step (DownTrack.write for what it does not serve)
            sent = fanout(self.downtracks, data, payload_type, mime, sequence_number, timestamp, header_bytes, self)
        else:
            sent = 0
            for downtrack in self.downtracks:
                if downtrack.write(data, payload_type, mime, sequence_number, timestamp, header_bytes, self):
                    sent += 1
        if sent:  # the rewrite never changes a packet's length
            COUNTERS.rtp_forwarded += sent
            COUNTERS.rtp_forwarded_bytes += sent * size

    def _note_keyframe_size(self, data: bytes, header_bytes: int) -> None:
        """The start of a VP8 partition: if it is a key frame, learn the layer's resolution."""
        payload = data[header_bytes:]
        offset = vp8_payload_offset(payload)
        if offset > 0 and is_vp8_keyframe(payload):
            size = vp8_keyframe_size(payload, offset)
            if size is not None:
                self.width, self.height = size

    def request_keyframe(self) -> bool:
        """Ask the publisher for a keyframe (RFC 4585 §6.3.1 PLI), at most once per interval."""
        if self.kind != "video" or self.closed or self.muted:
            return False
        if self.media_ssrc is None:  # nothing received yet: ask as soon as the first packet names it
            self._pli_pending = True
            return False
        now = time.monotonic()
        if now - self._last_pli_s < KEYFRAME_REQUEST_INTERVAL_S:
            return False
        self._last_pli_s = now
        COUNTERS.pli_sent += 1
        self._request_pli(self.media_ssrc)
        return True

    def close(self) -> None:
        self.closed = True
        for downtrack in self.downtracks:
            downtrack.source_ended()
        self.downtracks = []
