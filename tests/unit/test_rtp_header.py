"""Tests for sfu.media.rtp_header: validation, extension lookup and per-subscriber rewriting."""

import struct
from collections.abc import Callable

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.rtp_header import RTP_HEADER_BYTES, HeaderRewriter, find_extension, header_size, parse_fixed

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

FUZZ = settings(max_examples=2000, deadline=None)


def extensions_map(**ids_by_name: int) -> HeaderExtensionsMap:
    uris = {"mid": MID_URI, "audio_level": AUDIO_LEVEL_URI, "abs_send_time": ABS_SEND_TIME_URI}
    params = RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=uris[n]) for n, i in ids_by_name.items()]
    )
    ext_map = HeaderExtensionsMap()
    ext_map.configure(params)
    return ext_map


# Publisher side: mid=1, audio-level=2, abs-send-time=3 (one-byte form).
IN_MAP = extensions_map(mid=1, audio_level=2, abs_send_time=3)
# Subscriber side: mid not negotiated, audio-level=5, abs-send-time=9.
OUT_MAP = extensions_map(audio_level=5, abs_send_time=9)
ID_MAP = {2: 5, 3: 9}


def build_packet(
    payload: bytes = b"\xab" * 100,
    ext_map: HeaderExtensionsMap = IN_MAP,
    csrc: tuple[int, ...] = (),
    padding_size: int = 0,
    marker: int = 1,
    with_extensions: bool = True,
) -> bytes:
    packet = RtpPacket(payload_type=96, marker=marker, sequence_number=1000, timestamp=123456, ssrc=0x1111)
    packet.payload = payload
    packet.csrc = list(csrc)
    packet.padding_size = padding_size
    if with_extensions:
        packet.extensions.mid = "0"
        packet.extensions.audio_level = (True, 42)
        packet.extensions.abs_send_time = 0x123456
    return packet.serialize(ext_map)


def raw_packet(extension_block: bytes, profile: int, payload: bytes = b"payload") -> bytes:
    assert len(extension_block) % 4 == 0
    header = struct.pack("!BBHII", 0x90, 96, 1, 2, 3)
    return header + struct.pack("!HH", profile, len(extension_block) // 4) + extension_block + payload


# --- header_size -------------------------------------------------------------------------------------------


def test_header_size_of_plain_packet_is_fixed_header() -> None:
    assert header_size(build_packet(with_extensions=False)) == RTP_HEADER_BYTES


def test_header_size_counts_csrcs_and_extension_block() -> None:
    buf = build_packet(csrc=(1, 2, 3))
    # 12 fixed + 3 CSRCs + 4 block header + 8 bytes of elements (2+2+4 bytes, padded to 8)
    assert header_size(buf) == 12 + 12 + 4 + 8
    assert buf[header_size(buf) :] == b"\xab" * 100


def test_header_size_accepts_valid_padding() -> None:
    buf = build_packet(padding_size=7)
    assert header_size(buf) > 0
    assert RtpPacket.parse(buf, IN_MAP).padding_size == 7


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b"\x40" + b[1:], id="version-1"),
        pytest.param(lambda b: bytes([b[0] | 0x0F]) + b[1:40], id="csrc-count-overflows"),
        pytest.param(lambda b: b[:14], id="extension-header-truncated"),
        pytest.param(lambda b: b[:12] + b"\xbe\xde\x00\x40" + b[16:30], id="extension-length-overflows"),
        pytest.param(lambda b: bytes([b[0] | 0x20]) + b[1:-1] + b"\x00", id="padding-count-zero"),
        pytest.param(lambda b: bytes([b[0] | 0x20]) + b[1:-1] + b"\xff", id="padding-count-overflows"),
    ],
)
def test_header_size_rejects_malformed_packet(mutate: Callable[[bytes], bytes]) -> None:
    assert header_size(mutate(build_packet())) == -1


def test_header_size_rejects_every_truncation_inside_the_header() -> None:
    buf = build_packet(csrc=(7, 8))
    full = header_size(buf)
    for length in range(full):
        assert header_size(buf[:length]) == -1, length
    assert header_size(buf[:full]) == full


def test_parse_fixed_reads_pt_marker_seq_ts_ssrc() -> None:
    assert parse_fixed(build_packet()) == (96, True, 1000, 123456, 0x1111)
    assert parse_fixed(build_packet(marker=0))[1] is False


# --- find_extension ----------------------------------------------------------------------------------------


def test_find_extension_reads_one_byte_form_values() -> None:
    buf = build_packet()
    assert find_extension(buf, 1) == b"0"
    assert find_extension(buf, 2) == bytes([0x80 | 42])
    assert find_extension(buf, 3) == b"\x12\x34\x56"
    assert find_extension(buf, 4) is None


def test_find_extension_reads_two_byte_form_values() -> None:
    buf = build_packet(ext_map=extensions_map(mid=20, audio_level=2, abs_send_time=3))
    assert buf[12:14] == b"\x10\x00"
    assert find_extension(buf, 20) == b"0"
    assert find_extension(buf, 3) == b"\x12\x34\x56"
    assert find_extension(buf, 21) is None


def test_find_extension_skips_padding_between_one_byte_elements() -> None:
    buf = raw_packet(b"\x00\x00\x10a\x00\x21bc\x00\x00\x00\x00", 0xBEDE)
    assert find_extension(buf, 1) == b"a"
    assert find_extension(buf, 2) == b"bc"


def test_find_extension_skips_padding_between_two_byte_elements() -> None:
    buf = raw_packet(b"\x05\x01a\x00\x00\xc8\x00\x07\x02bc\x00", 0x1003)
    assert find_extension(buf, 5) == b"a"
    assert find_extension(buf, 200) == b""
    assert find_extension(buf, 7) == b"bc"


def test_find_extension_stops_at_one_byte_id_15() -> None:
    buf = raw_packet(b"\x10a\xf0\x20b\x00\x00\x00", 0xBEDE)
    assert find_extension(buf, 1) == b"a"
    assert find_extension(buf, 2) is None


def test_find_extension_returns_none_for_absent_block_unknown_profile_and_bad_id() -> None:
    assert find_extension(build_packet(with_extensions=False), 1) is None
    assert find_extension(raw_packet(b"\x10a\x00\x00", 0x1234), 1) is None
    assert find_extension(build_packet(), 0) is None
    assert find_extension(build_packet(), 15) is None


def test_find_extension_returns_none_for_truncated_element() -> None:
    assert find_extension(raw_packet(b"\x10a\x00\x2f", 0xBEDE), 1) is None
    assert find_extension(raw_packet(b"\x00\x00\x01\x09", 0x1000), 1) is None


# --- HeaderRewriter ----------------------------------------------------------------------------------------


def rewrite(buf: bytes, id_map: dict[int, int] | None = None) -> bytearray | None:
    return HeaderRewriter(ID_MAP if id_map is None else id_map).rewrite(buf, 111, 65535, 0xFFFFFFFE, 0xCAFE)


def test_rewrite_patches_fixed_header_and_keeps_marker() -> None:
    for marker in (0, 1):
        out = rewrite(build_packet(marker=marker))
        assert out is not None
        parsed = RtpPacket.parse(bytes(out), OUT_MAP)
        assert (parsed.payload_type, parsed.marker) == (111, marker)
        assert (parsed.sequence_number, parsed.timestamp, parsed.ssrc) == (65535, 0xFFFFFFFE, 0xCAFE)
        assert parsed.payload == b"\xab" * 100


def test_rewrite_drops_unmapped_extension_without_changing_length() -> None:
    buf = build_packet()
    out = rewrite(buf)
    assert out is not None
    assert len(out) == len(buf)
    parsed = RtpPacket.parse(bytes(out), OUT_MAP)
    assert parsed.extensions.mid is None
    assert parsed.extensions.audio_level == (True, 42)
    assert parsed.extensions.abs_send_time == 0x123456
    assert find_extension(out, 1) is None
    assert find_extension(out, 5) == bytes([0x80 | 42])
    assert find_extension(out, 9) == b"\x12\x34\x56"


def test_rewrite_of_already_rewritten_packet_skips_padding_left_by_drops() -> None:
    once = rewrite(build_packet())
    assert once is not None
    twice = HeaderRewriter({5: 2, 9: 3}).rewrite(bytes(once), 96, 1, 2, 3)
    assert twice is not None
    parsed = RtpPacket.parse(bytes(twice), extensions_map(audio_level=2, abs_send_time=3))
    assert (parsed.extensions.audio_level, parsed.extensions.abs_send_time) == ((True, 42), 0x123456)


def test_rewrite_remaps_two_byte_form_ids_up_to_255() -> None:
    buf = build_packet(ext_map=extensions_map(mid=20, audio_level=2, abs_send_time=30))
    out = rewrite(buf, {2: 200, 30: 17})
    assert out is not None and len(out) == len(buf)
    parsed = RtpPacket.parse(bytes(out), extensions_map(audio_level=200, abs_send_time=17))
    assert parsed.extensions.mid is None
    assert parsed.extensions.audio_level == (True, 42)
    assert parsed.extensions.abs_send_time == 0x123456
    assert find_extension(out, 20) is None


def test_rewrite_keeps_csrcs_and_padding() -> None:
    buf = build_packet(csrc=(0xAAAA, 0xBBBB), padding_size=5)
    out = rewrite(buf)
    assert out is not None
    parsed = RtpPacket.parse(bytes(out), OUT_MAP)
    assert parsed.csrc == [0xAAAA, 0xBBBB]
    assert parsed.padding_size == 5
    assert parsed.payload == b"\xab" * 100
    assert parsed.extensions.audio_level == (True, 42)
    assert out[-5:] == buf[-5:]


def test_rewrite_without_extension_block_copies_and_patches() -> None:
    buf = build_packet(with_extensions=False)
    out = rewrite(buf)
    assert out is not None
    assert out[12:] == buf[12:]
    assert parse_fixed(out) == (111, True, 65535, 0xFFFFFFFE, 0xCAFE)
    assert isinstance(out, bytearray) and out is not buf


def test_rewrite_drops_one_byte_element_whose_outgoing_id_needs_two_byte_form() -> None:
    out = rewrite(build_packet(), {2: 20, 3: 9})
    assert out is not None
    assert find_extension(out, 9) == b"\x12\x34\x56"
    assert find_extension(out, 2) is None
    assert RtpPacket.parse(bytes(out), OUT_MAP).extensions.audio_level is None


def test_rewrite_blanks_one_byte_block_after_reserved_id_15() -> None:
    out = rewrite(raw_packet(b"\x20a\xf0\x30bcd" + bytes(5), 0xBEDE))
    assert out is not None
    assert out[16:28] == b"\x50a" + bytes(10)


def test_rewrite_leaves_unknown_profile_block_untouched() -> None:
    buf = raw_packet(b"\x10a\x20b", 0x1234)
    out = rewrite(buf)
    assert out is not None and out[12:] == buf[12:]


@pytest.mark.parametrize(
    "block, profile",
    [(b"\x20a\x00\x3f", 0xBEDE), (b"\x02\x01a\x00\x03\x05ab", 0x1000), (b"\x00\x00\x00\x02", 0x1000)],
)
def test_rewrite_returns_none_for_truncated_extension_element(block: bytes, profile: int) -> None:
    assert rewrite(raw_packet(block, profile)) is None


@pytest.mark.parametrize("padding_size", [0, 9])
def test_rewrite_handles_truncation_at_every_length(padding_size: int) -> None:
    buf = build_packet(csrc=(5,), padding_size=padding_size)
    rewriter = HeaderRewriter(ID_MAP)
    full_header = header_size(buf)
    for length in range(len(buf) + 1):
        out = rewriter.rewrite(buf[:length], 111, 1, 2, 3)
        if length < full_header:
            assert out is None, length
        elif out is not None:
            assert len(out) == length


def test_rewriter_rejects_out_of_range_ids() -> None:
    for bad in ({0: 1}, {1: 0}, {256: 1}, {1: 256}):
        with pytest.raises(ValueError):
            HeaderRewriter(bad)


# --- fuzzing -----------------------------------------------------------------------------------------------


@st.composite
def rtp_like(draw: st.DrawFn) -> bytes:
    """Mostly-plausible packets: version 2, an extension block with an RFC 8285 profile, random contents."""
    first = 0x80 | draw(st.integers(0, 0x3F))
    head = bytes([first]) + draw(st.binary(min_size=11, max_size=11))
    csrcs = draw(st.binary(min_size=0, max_size=(first & 0x0F) * 4 + 4))
    profile = draw(st.sampled_from([0xBEDE, 0x1000, 0x100F, 0x1234]))
    words = draw(st.integers(0, 6))
    block = struct.pack("!HH", profile, words) + draw(st.binary(min_size=0, max_size=words * 4 + 4))
    return head + csrcs + block + draw(st.binary(max_size=40))


@FUZZ
@given(st.one_of(st.binary(max_size=80), rtp_like()), st.integers(0, 260))
def test_fuzz_parsers_never_raise(buf: bytes, ext_id: int) -> None:
    size = header_size(buf)
    assert size == -1 or RTP_HEADER_BYTES <= size <= len(buf)
    value = find_extension(buf, ext_id)
    assert value is None or size > 0
    out = HeaderRewriter({1: 2, 2: 1, 3: 14, 200: 7}).rewrite(buf, 1, 2, 3, 4)
    if out is not None:
        assert size > 0 and len(out) == len(buf)
        assert header_size(out) == size
        assert out[size:] == buf[size:]


@FUZZ
@given(
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    padding_size=st.integers(0, 255),
    payload=st.binary(max_size=64),
    two_byte=st.booleans(),
)
def test_fuzz_rewrite_of_aiortc_packets_round_trips_through_aiortc(
    csrc: list[int], padding_size: int, payload: bytes, two_byte: bool
) -> None:
    in_map = extensions_map(mid=20 if two_byte else 1, audio_level=2, abs_send_time=3)
    buf = build_packet(payload=payload, ext_map=in_map, csrc=tuple(csrc), padding_size=padding_size)
    assert header_size(buf) > 0
    out = rewrite(buf)
    assert out is not None
    parsed = RtpPacket.parse(bytes(out), OUT_MAP)
    assert (parsed.csrc, parsed.payload, parsed.padding_size) == (csrc, payload, padding_size)
    assert (parsed.extensions.mid, parsed.extensions.audio_level) == (None, (True, 42))
    assert parsed.extensions.abs_send_time == 0x123456
