"""Key-frame detection on raw RTP payloads for VP8 (RFC 7741) and H.264 (RFC 6184).

Used on every forwarded video packet, so it inspects a few bytes in place instead of depacketizing.
"""

from collections.abc import Callable

# VP8 payload descriptor, first octet (RFC 7741 §4.2): |X|R|N|S|R| PID |
_VP8_X = 0x80
_VP8_S = 0x10
_VP8_PID = 0x07
# Extension octet: |I|L|T|K| RSV |
_VP8_I = 0x80
_VP8_L = 0x40
_VP8_TK = 0x30
_VP8_M = 0x80  # first picture-id octet: M set means a 15-bit picture id (two octets)
_VP8_P = 0x01  # VP8 payload header, first octet (RFC 7741 §4.3): |Size0|H| VER |P|

# H.264 NAL unit types (RFC 6184 §5.2, ITU-T H.264 table 7-1)
_NAL_TYPE = 0x1F
_NAL_IDR = 5
_NAL_SPS = 7
_NAL_STAP_A = 24
_NAL_FU_A = 28
_FU_START = 0x80  # FU header (RFC 6184 §5.8): |S|E|R| Type |


def vp8_payload_offset(payload: bytes | bytearray) -> int:
    """Length of the VP8 payload descriptor at the start of `payload` (RFC 7741 §4.2), -1 if truncated."""
    size_bytes = len(payload)
    if size_bytes < 1:
        return -1
    if not payload[0] & _VP8_X:
        return 1
    if size_bytes < 2:
        return -1
    extension = payload[1]
    offset = 2
    if extension & _VP8_I:  # PictureID: 7 bits, or 15 bits when M is set
        if size_bytes <= offset:
            return -1
        offset += 2 if payload[offset] & _VP8_M else 1
    if extension & _VP8_L:  # TL0PICIDX
        offset += 1
    if extension & _VP8_TK:  # one octet shared by TID|Y|KEYIDX
        offset += 1
    return offset if offset <= size_bytes else -1


def is_vp8_keyframe(payload: bytes | bytearray) -> bool:
    """True iff this RTP payload starts a VP8 key frame (RFC 7741 §4.3). Never raises."""
    offset = vp8_payload_offset(payload)
    if offset < 0 or offset >= len(payload):
        return False
    first = payload[0]
    # Start of partition 0, and the payload header's inverse key-frame flag P is 0.
    return bool(first & _VP8_S) and first & _VP8_PID == 0 and not payload[offset] & _VP8_P


def is_h264_keyframe(payload: bytes | bytearray) -> bool:
    """True if the RTP payload (RFC 6184) carries an IDR slice or an SPS. Never raises."""
    size_bytes = len(payload)
    if size_bytes < 1:
        return False
    nal_type = payload[0] & _NAL_TYPE
    if nal_type == _NAL_IDR or nal_type == _NAL_SPS:  # RFC 6184 §5.6 single NAL unit packet
        return True
    if nal_type == _NAL_STAP_A:
        return _stap_a_has_keyframe_nal(payload, size_bytes)
    if nal_type == _NAL_FU_A:  # RFC 6184 §5.8: only the first fragment names the NAL type reliably
        if size_bytes < 2:
            return False
        fu_header = payload[1]
        original_type = fu_header & _NAL_TYPE
        return bool(fu_header & _FU_START) and (original_type == _NAL_IDR or original_type == _NAL_SPS)
    return False


def _stap_a_has_keyframe_nal(payload: bytes | bytearray, size_bytes: int) -> bool:
    # RFC 6184 §5.7.1 STAP-A: header octet, then repeated (16-bit NALU size, NAL unit).
    pos = 1
    while pos + 2 < size_bytes:
        nal_size_bytes = (payload[pos] << 8) | payload[pos + 1]
        pos += 2
        if nal_size_bytes == 0 or pos + nal_size_bytes > size_bytes:
            return False  # malformed aggregate: stop walking
        nal_type = payload[pos] & _NAL_TYPE
        if nal_type == _NAL_IDR or nal_type == _NAL_SPS:
            return True
        pos += nal_size_bytes
    return False


_DETECTORS: dict[str, Callable[[bytes | bytearray], bool]] = {
    "video/vp8": is_vp8_keyframe,
    "video/h264": is_h264_keyframe,
}


def is_keyframe(codec_mime: str, payload: bytes | bytearray) -> bool:
    """Key-frame check for the codec named by `codec_mime` ("video/VP8", "video/H264"); False for others."""
    detector = _DETECTORS.get(codec_mime.lower())
    return detector(payload) if detector is not None else False
