"""RTP header validation, header-extension lookup and per-subscriber header rewriting over raw bytes.

RFC 3550 §5.1 fixed header, RFC 3550 §5.3.1 extension block, RFC 8285 one-/two-byte extension elements.
"""

import struct
import weakref

# This module runs once per forwarded packet. It reads and patches the wire bytes in place with
# struct.unpack_from/pack_into instead of parsing into a packet object (e.g. aiortc's RtpPacket), which
# would allocate a payload slice, a CSRC list and an extensions object per packet just to re-serialize
# them unchanged.

RTP_HEADER_BYTES = 12

_ONE_BYTE_PROFILE = 0xBEDE  # RFC 8285 §4.2
_TWO_BYTE_PROFILE_MASK = 0xFFF0  # RFC 8285 §4.3: 0x100 followed by 4 "appbits"
_TWO_BYTE_PROFILE = 0x1000
_ONE_BYTE_MAX_ID = 14  # RFC 8285 §4.2: id 15 is reserved and stops parsing
_ONE_BYTE_STOP_ID = 15
_TWO_BYTE_MAX_ID = 255

# Zero runs indexed by length, so dropping an element is a same-size slice assignment with no allocation.
# The longest element is a two-byte-form one: 2 header bytes + 255 value bytes (RFC 8285 §4.3).
_ZERO_RUNS: tuple[bytes, ...] = tuple(bytes(n) for n in range(2 + _TWO_BYTE_MAX_ID + 1))

_MARKER_PT_SEQ_TS_SSRC = struct.Struct("!BHII")  # M|PT, sequence number, timestamp, SSRC (RFC 3550 §5.1)
_SEQ_TS_SSRC = struct.Struct("!HII")


def header_size(buf: bytes | bytearray) -> int:
    """Total header length (fixed + CSRCs + extension block) of a well-formed RTP packet, else -1.

    Checks version 2, that the CSRC list and extension block fit, and that the padding count (if P is set)
    is non-zero and fits after the header (RFC 3550 §5.1). Never raises.
    """
    size_bytes = len(buf)
    if size_bytes < RTP_HEADER_BYTES:
        return -1
    first = buf[0]
    if first >> 6 != 2:  # RFC 3550 §5.1 version
        return -1
    header_bytes = RTP_HEADER_BYTES + (first & 0x0F) * 4  # CC field: 4 bytes per CSRC
    if first & 0x10:  # X bit: RFC 3550 §5.3.1 profile (16) + length in 32-bit words (16)
        if size_bytes < header_bytes + 4:
            return -1
        header_bytes += 4 + ((buf[header_bytes + 2] << 8) | buf[header_bytes + 3]) * 4
    if header_bytes > size_bytes:
        return -1
    if first & 0x20:  # P bit: last byte counts padding bytes, itself included
        padding_bytes = buf[-1]
        if padding_bytes == 0 or padding_bytes > size_bytes - header_bytes:
            return -1
    return header_bytes


def parse_fixed(buf: bytes | bytearray) -> tuple[int, bool, int, int, int]:
    """(payload_type, marker, sequence_number, timestamp, ssrc) of the fixed header; len(buf) >= 12."""
    marker_pt = buf[1]
    sequence_number, timestamp, ssrc = _SEQ_TS_SSRC.unpack_from(buf, 2)
    return marker_pt & 0x7F, bool(marker_pt & 0x80), sequence_number, timestamp, ssrc


def find_extension(buf: bytes | bytearray, ext_id: int) -> bytes | None:
    """Value of the RFC 8285 header-extension element with local id `ext_id`, or None.

    None when the packet is malformed, has no extension block, uses another profile, or has no such
    element before parsing stops. Never raises.
    """
    header_bytes = header_size(buf)
    if header_bytes < 0 or not buf[0] & 0x10:
        return None
    block_start = RTP_HEADER_BYTES + (buf[0] & 0x0F) * 4
    profile = (buf[block_start] << 8) | buf[block_start + 1]
    pos = block_start + 4
    if profile == _ONE_BYTE_PROFILE:
        return _find_one_byte(buf, pos, header_bytes, ext_id)
    if profile & _TWO_BYTE_PROFILE_MASK == _TWO_BYTE_PROFILE:
        return _find_two_byte(buf, pos, header_bytes, ext_id)
    return None


def _find_one_byte(buf: bytes | bytearray, pos: int, end: int, ext_id: int) -> bytes | None:
    # RFC 8285 §4.2 one-byte header: 4-bit id, 4-bit (length - 1), then the value.
    # The whole block is walked so a truncated element anywhere makes the packet malformed (None).
    if not 1 <= ext_id <= _ONE_BYTE_MAX_ID:
        return None
    found_start = found_end = -1
    while pos < end:
        element = buf[pos]
        if element == 0:  # padding byte
            pos += 1
            continue
        element_id = element >> 4
        if element_id == _ONE_BYTE_STOP_ID or element_id == 0:  # stop; id 0 with a length is invalid
            break
        value_start = pos + 1
        pos = value_start + (element & 0x0F) + 1
        if pos > end:
            return None
        if element_id == ext_id and found_start < 0:
            found_start, found_end = value_start, pos
    return bytes(buf[found_start:found_end]) if found_start >= 0 else None


def _find_two_byte(buf: bytes | bytearray, pos: int, end: int, ext_id: int) -> bytes | None:
    # RFC 8285 §4.3 two-byte header: 8-bit id, 8-bit length (0 allowed), then the value.
    if not 1 <= ext_id <= _TWO_BYTE_MAX_ID:
        return None
    found_start = found_end = -1
    while pos < end:
        element_id = buf[pos]
        if element_id == 0:  # padding byte
            pos += 1
            continue
        if pos + 2 > end:
            return None
        value_start = pos + 2
        pos = value_start + buf[pos + 1]
        if pos > end:
            return None
        if element_id == ext_id and found_start < 0:
            found_start, found_end = value_start, pos
    return bytes(buf[found_start:found_end]) if found_start >= 0 else None


class HeaderRewriter:
    """Rewrites packets of one publisher stream for one subscriber: PT, seq, timestamp, SSRC, extension ids.

    Extension elements whose incoming id is not in the map are dropped by overwriting them with 0x00
    padding bytes (allowed between elements in both RFC 8285 forms), so the packet length never changes.
    In the one-byte form an id that maps to an outgoing id above 14 cannot be expressed and is dropped too.
    A reserved id 15 (or an invalid id-0 element) stops parsing (RFC 8285 §4.2); the rest of the block is
    zeroed so receivers that do not honour the stop rule see only padding. Blocks with a profile other
    than RFC 8285's are left untouched (receivers ignore unknown profiles, RFC 3550 §5.3.1).
    """

    __slots__ = ("_one_byte_ids", "_two_byte_ids", "_memo_in", "_memo_out", "__weakref__")

    def __init__(self, ext_id_map: dict[int, int]) -> None:
        for in_id, out_id in ext_id_map.items():
            if not (1 <= in_id <= _TWO_BYTE_MAX_ID and 1 <= out_id <= _TWO_BYTE_MAX_ID):
                raise ValueError(f"header extension ids must be 1-255, got {in_id} -> {out_id}")
        # Outgoing id per incoming one-byte id (index 0-15); 0 means drop.
        one_byte_ids = [0] * 16
        for in_id in range(1, _ONE_BYTE_MAX_ID + 1):
            out_id = ext_id_map.get(in_id, 0)
            if out_id <= _ONE_BYTE_MAX_ID:
                one_byte_ids[in_id] = out_id
        self._one_byte_ids: tuple[int, ...] = tuple(one_byte_ids)
        self._two_byte_ids: dict[int, int] = dict(ext_id_map)
        # The last immutable input and its copy with the extension block rewritten: a relay hands the
        # same bytes object to every subscriber, and subscribers with the same id map share a rewriter
        # (`shared`), so the extension walk runs once per packet, not once per subscriber.
        self._memo_in: bytes | None = None
        self._memo_out: bytes | bytearray = b""

    @classmethod
    def shared(cls, ext_id_map: dict[int, int]) -> "HeaderRewriter":
        """The rewriter for this id map, shared by everyone who asks for an equal map while it lives."""
        key = tuple(sorted(ext_id_map.items()))
        rewriter = _SHARED_REWRITERS.get(key)
        if rewriter is None:
            rewriter = _SHARED_REWRITERS[key] = cls(ext_id_map)
        return rewriter

    def rewrite(
        self,
        buf: bytes | bytearray,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
    ) -> bytearray | None:
        """A rewritten copy of `buf` (marker bit and CSRCs kept), or None if the packet is malformed."""
        if buf is self._memo_in:
            out = bytearray(self._memo_out)
        else:
            template = self._rewrite_extensions(buf)
            if template is None:
                return None
            if type(buf) is bytes:  # immutable: safe to reuse for the next call with this very object
                self._memo_in, self._memo_out = buf, template
                out = bytearray(template)
            elif template is buf:
                out = bytearray(buf)
            else:
                out = template  # type: ignore[assignment]  # a fresh bytearray
        _MARKER_PT_SEQ_TS_SSRC.pack_into(
            out,
            1,
            (out[1] & 0x80) | (payload_type & 0x7F),
            sequence_number & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        return out

    def template(self, buf: bytes | bytearray) -> bytes | bytearray | None:
        """`buf` with its extension block rewritten (the same object when it has none), before the
        per-subscriber fields; None if malformed. Memoized like `rewrite`; the caller must not mutate it
        (sfu._fastpath copies it)."""
        if buf is self._memo_in:
            return self._memo_out
        template = self._rewrite_extensions(buf)
        if template is not None and type(buf) is bytes:
            self._memo_in, self._memo_out = buf, template
        return template

    def _rewrite_extensions(self, buf: bytes | bytearray) -> bytes | bytearray | None:
        """`buf` itself when it has no extension block, else a copy with the block rewritten; None if
        the packet is malformed."""
        header_bytes = header_size(buf)
        if header_bytes < 0:
            return None
        first = buf[0]
        if not first & 0x10:  # fast path: no extension block
            return buf
        out = bytearray(buf)
        block_start = RTP_HEADER_BYTES + (first & 0x0F) * 4
        profile = (out[block_start] << 8) | out[block_start + 1]
        if profile == _ONE_BYTE_PROFILE:
            ok = self._rewrite_one_byte(out, block_start + 4, header_bytes)
        elif profile & _TWO_BYTE_PROFILE_MASK == _TWO_BYTE_PROFILE:
            ok = self._rewrite_two_byte(out, block_start + 4, header_bytes)
        else:
            ok = True
        return out if ok else None

    def _rewrite_one_byte(self, out: bytearray, pos: int, end: int) -> bool:
        # RFC 8285 §4.2 one-byte header: 4-bit id, 4-bit (length - 1), then the value.
        ids = self._one_byte_ids
        while pos < end:
            element = out[pos]
            if element == 0:  # padding byte
                pos += 1
                continue
            element_id = element >> 4
            if element_id == _ONE_BYTE_STOP_ID or element_id == 0:
                out[pos:end] = bytes(end - pos)  # rare: blank everything from the stop element on
                return True
            element_end = pos + (element & 0x0F) + 2
            if element_end > end:
                return False
            out_id = ids[element_id]
            if out_id:
                out[pos] = (out_id << 4) | (element & 0x0F)
            else:
                out[pos:element_end] = _ZERO_RUNS[element_end - pos]
            pos = element_end
        return True

    def _rewrite_two_byte(self, out: bytearray, pos: int, end: int) -> bool:
        # RFC 8285 §4.3 two-byte header: 8-bit id, 8-bit length (0 allowed), then the value.
        ids = self._two_byte_ids
        while pos < end:
            element_id = out[pos]
            if element_id == 0:  # padding byte
                pos += 1
                continue
            if pos + 2 > end:
                return False
            element_end = pos + 2 + out[pos + 1]
            if element_end > end:
                return False
            out_id = ids.get(element_id, 0)
            if out_id:
                out[pos] = out_id
            else:
                out[pos:element_end] = _ZERO_RUNS[element_end - pos]
            pos = element_end
        return True


_SHARED_REWRITERS: "weakref.WeakValueDictionary[tuple[tuple[int, int], ...], HeaderRewriter]" = (
    weakref.WeakValueDictionary())
