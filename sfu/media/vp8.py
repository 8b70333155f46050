"""VP8 payload-descriptor munging (RFC 7741 §4.2): keeps PictureID and TL0PICIDX continuous
when a downtrack switches between simulcast layers, whose encoders number pictures independently.
Rewrites in place, in the copy the downtrack already made; the payload length never changes."""

from __future__ import annotations

_X = 0x80
_I = 0x80
_L = 0x40
_M = 0x80


def vp8_keyframe_size(payload: bytes | bytearray, descriptor_bytes: int) -> tuple[int, int] | None:
    """(width, height) from a VP8 key frame's header (RFC 6386 §9.1: 3-byte frame tag, start code
    9d 01 2a, then 14-bit width and height), or None if this payload does not carry it."""
    start = descriptor_bytes
    if len(payload) < start + 10 or payload[start] & 0x01:
        return None
    if payload[start + 3:start + 6] != b"\x9d\x01\x2a":
        return None
    width = (payload[start + 6] | payload[start + 7] << 8) & 0x3FFF
    height = (payload[start + 8] | payload[start + 9] << 8) & 0x3FFF
    return width, height


class Vp8Munger:
    """Per downtrack: offsets applied to the picture id and TL0PICIDX of the current source."""

    __slots__ = ("_picture_id_offset", "_tl0_offset", "_last_picture_id", "_last_tl0", "_started")

    def __init__(self) -> None:
        self._picture_id_offset = 0
        self._tl0_offset = 0
        self._last_picture_id = -1
        self._last_tl0 = -1
        self._started = False

    def switch_source(self, payload: bytes | bytearray, offset: int) -> None:
        """Called with the first packet (a keyframe) of a new source: its picture id continues
        right after the last one sent."""
        picture_id, tl0 = _read(payload, offset)
        if self._started and picture_id >= 0:
            self._picture_id_offset = (self._last_picture_id + 1 - picture_id) & 0x7FFF
        if self._started and tl0 >= 0:
            self._tl0_offset = (self._last_tl0 + 1 - tl0) & 0xFF
        self._started = True

    def munge(self, buf: bytearray, offset: int) -> None:
        """Rewrite the descriptor at buf[offset:] with the current offsets."""
        end = len(buf)
        if offset >= end or not buf[offset] & _X or offset + 1 >= end:
            return
        extension = buf[offset + 1]
        pos = offset + 2
        if extension & _I and pos < end:
            if buf[pos] & _M:
                if pos + 1 >= end:
                    return
                picture_id = (((buf[pos] & 0x7F) << 8 | buf[pos + 1]) + self._picture_id_offset) & 0x7FFF
                buf[pos] = _M | picture_id >> 8
                buf[pos + 1] = picture_id & 0xFF
                pos += 2
            else:  # 7-bit picture id
                picture_id = ((buf[pos] & 0x7F) + self._picture_id_offset) & 0x7F
                buf[pos] = picture_id
                pos += 1
            self._last_picture_id = picture_id
        if extension & _L and pos < end:
            tl0 = (buf[pos] + self._tl0_offset) & 0xFF
            buf[pos] = tl0
            self._last_tl0 = tl0


def _read(payload: bytes | bytearray, offset: int) -> tuple[int, int]:
    end = len(payload)
    if offset + 1 >= end or not payload[offset] & _X:
        return -1, -1
    extension = payload[offset + 1]
    pos = offset + 2
    picture_id = tl0 = -1
    if extension & _I and pos < end:
        if payload[pos] & _M and pos + 1 < end:
            picture_id = (payload[pos] & 0x7F) << 8 | payload[pos + 1]
            pos += 2
        else:
            picture_id = payload[pos] & 0x7F
            pos += 1
    if extension & _L and pos < end:
        tl0 = payload[pos]
    return picture_id, tl0
