"""Tests for sfu.media.keyframe: VP8 and H.264 key-frame detection on RTP payloads."""

import fractions
import struct

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.keyframe import is_h264_keyframe, is_keyframe, is_vp8_keyframe, vp8_payload_offset

FUZZ = settings(max_examples=2000, deadline=None)

VP8_KEY_HEADER = b"\x90\x01\x00\x9d\x01\x2a"  # P=0, then the key-frame start code (RFC 6386 §9.1)
VP8_INTER_HEADER = b"\x91\x01\x00"  # P=1


def vp8_descriptor(
    start: bool = True,
    partition_id: int = 0,
    picture_id: int | None = None,
    tl0picidx: int | None = None,
    tid: tuple[int, int] | None = None,
    keyidx: int | None = None,
) -> bytes:
    descriptor = VpxPayloadDescriptor(
        partition_start=int(start),
        partition_id=partition_id,
        picture_id=picture_id,
        tl0picidx=tl0picidx,
        tid=tid,
        keyidx=keyidx,
    )
    return bytes(descriptor)


# --- VP8 descriptor ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "descriptor, size_bytes",
    [
        (b"\x10", 1),  # no X
        (b"\x90\x00", 2),  # X, no optional fields
        (b"\x90\x80\x05", 3),  # I, 7-bit picture id
        (b"\x90\x80\x85\x01", 4),  # I + M, 15-bit picture id
        (b"\x90\x40\x07", 3),  # L
        (b"\x90\x20\x40", 3),  # T
        (b"\x90\x10\x03", 3),  # K
        (b"\x90\x30\x43", 3),  # T and K share one octet
        (b"\x90\xf0\x80\x01\x07\x43", 6),  # everything
    ],
)
def test_vp8_payload_offset_skips_optional_descriptor_fields(descriptor: bytes, size_bytes: int) -> None:
    assert vp8_payload_offset(descriptor + b"\xff\xff") == size_bytes
    assert vp8_payload_offset(descriptor) == size_bytes
    for length in range(size_bytes):
        assert vp8_payload_offset(descriptor[:length]) == -1


def test_vp8_payload_offset_matches_aiortc_descriptor_parser() -> None:
    for picture_id in (None, 5, 300):
        for tl0picidx in (None, 7):
            for tid, keyidx in ((None, None), ((2, 1), None), (None, 3), ((1, 0), 9)):
                descriptor = vp8_descriptor(
                    picture_id=picture_id, tl0picidx=tl0picidx, tid=tid, keyidx=keyidx
                )
                _, rest = VpxPayloadDescriptor.parse(descriptor + VP8_KEY_HEADER)
                assert vp8_payload_offset(descriptor + VP8_KEY_HEADER) == len(descriptor)
                assert rest == VP8_KEY_HEADER


# --- VP8 key frames ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("picture_id", [None, 17, 20000])
@pytest.mark.parametrize("tl0picidx", [None, 3])
def test_vp8_key_frame_start_is_keyframe_with_any_descriptor(
    picture_id: int | None, tl0picidx: int | None
) -> None:
    descriptor = vp8_descriptor(picture_id=picture_id, tl0picidx=tl0picidx, tid=(0, 1), keyidx=2)
    assert is_vp8_keyframe(descriptor + VP8_KEY_HEADER)
    assert not is_vp8_keyframe(descriptor + VP8_INTER_HEADER)


def test_vp8_continuation_or_later_partition_is_not_keyframe() -> None:
    assert not is_vp8_keyframe(vp8_descriptor(start=False, picture_id=1) + VP8_KEY_HEADER)
    assert not is_vp8_keyframe(vp8_descriptor(partition_id=1, picture_id=1) + VP8_KEY_HEADER)
    assert is_vp8_keyframe(b"\x10" + VP8_KEY_HEADER)  # minimal descriptor, no X


def test_vp8_truncated_payload_is_not_keyframe() -> None:
    payload = vp8_descriptor(picture_id=300, tl0picidx=1) + VP8_KEY_HEADER
    offset = vp8_payload_offset(payload)
    for length in range(offset + 1):
        assert not is_vp8_keyframe(payload[:length])
    assert is_vp8_keyframe(payload[: offset + 1])


def video_frame(index: int, width: int = 64, height: int = 48) -> av.VideoFrame:
    pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    frame.pts = index * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


def test_real_vp8_first_frame_is_keyframe_and_next_frames_are_not() -> None:
    encoder = Vp8Encoder()
    frames = [encoder.encode(video_frame(i))[0] for i in range(4)]
    assert is_vp8_keyframe(frames[0][0])
    assert is_keyframe("video/VP8", frames[0][0])
    assert not any(is_vp8_keyframe(p) for p in frames[0][1:])  # continuation packets: S=0
    for payloads in frames[1:]:
        assert not any(is_vp8_keyframe(p) for p in payloads)
    forced, _ = encoder.encode(video_frame(4), force_keyframe=True)
    assert is_vp8_keyframe(forced[0])


# --- H.264 -------------------------------------------------------------------------------------------------

SPS = b"\x67\x42\xc0\x1f\xda"
PPS = b"\x68\xce\x3c\x80"
IDR = b"\x65\x88\x84\x00\x33"
NON_IDR = b"\x41\x9a\x02\x03"
SEI = b"\x06\x05\x01\x02"


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(nal)) + nal for nal in nals)


def fu_a(nal: bytes, start: bool, end: bool = False) -> bytes:
    indicator = (nal[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes([indicator, header]) + nal[1:]


@pytest.mark.parametrize(
    "nal, expected", [(IDR, True), (SPS, True), (PPS, False), (NON_IDR, False), (SEI, False)]
)
def test_h264_single_nal_unit_keyframe_types(nal: bytes, expected: bool) -> None:
    assert is_h264_keyframe(nal) is expected


def test_h264_stap_a_is_keyframe_if_any_aggregated_nal_is_idr_or_sps() -> None:
    assert is_h264_keyframe(stap_a(SPS, PPS, IDR))
    assert is_h264_keyframe(stap_a(SEI, PPS, IDR))  # found only by walking past the first NALs
    assert not is_h264_keyframe(stap_a(SEI, PPS, NON_IDR))
    assert not is_h264_keyframe(stap_a())


def test_h264_malformed_stap_a_stops_walking() -> None:
    truncated = stap_a(SEI, IDR)[:-3]
    assert not is_h264_keyframe(truncated)
    assert not is_h264_keyframe(b"\x78\x00\x00" + struct.pack("!H", len(IDR)) + IDR)  # zero-size NAL
    assert not is_h264_keyframe(b"\x78\x00")


def test_h264_fu_a_start_fragment_of_idr_is_keyframe() -> None:
    assert is_h264_keyframe(fu_a(IDR, start=True))
    assert is_h264_keyframe(fu_a(SPS, start=True))
    assert not is_h264_keyframe(fu_a(IDR, start=False))
    assert not is_h264_keyframe(fu_a(IDR, start=False, end=True))
    assert not is_h264_keyframe(fu_a(NON_IDR, start=True))
    assert not is_h264_keyframe(b"\x7c")


def test_real_h264_first_frame_is_keyframe_and_next_frames_are_not() -> None:
    encoder = H264Encoder()
    frames = [encoder.encode(video_frame(i))[0] for i in range(3)]
    assert is_h264_keyframe(frames[0][0])  # aiortc sends SPS/PPS aggregated first
    assert is_keyframe("VIDEO/H264", frames[0][0])
    for payloads in frames[1:]:
        assert not any(is_h264_keyframe(p) for p in payloads)


# --- dispatch and fuzzing ----------------------------------------------------------------------------------


def test_is_keyframe_dispatches_on_codec_mime_case_insensitively() -> None:
    assert is_keyframe("video/vp8", b"\x10" + VP8_KEY_HEADER)
    assert is_keyframe("Video/H264", IDR)
    assert not is_keyframe("video/VP8", IDR)
    assert not is_keyframe("video/AV1", IDR)
    assert not is_keyframe("audio/opus", b"\x10" + VP8_KEY_HEADER)


@FUZZ
@given(st.binary(max_size=40))
def test_fuzz_keyframe_detectors_never_raise(payload: bytes) -> None:
    offset = vp8_payload_offset(payload)
    assert offset == -1 or 1 <= offset <= len(payload)
    assert isinstance(is_vp8_keyframe(payload), bool)
    assert isinstance(is_h264_keyframe(payload), bool)
    assert isinstance(is_keyframe("video/VP8", payload), bool)


@FUZZ
@given(st.lists(st.binary(min_size=1, max_size=12), max_size=6), st.integers(0, 40))
def test_fuzz_h264_aggregates_never_raise(nals: list[bytes], cut: int) -> None:
    payload = stap_a(*nals)
    expected = any(nal[0] & 0x1F in (5, 7) for nal in nals)
    assert is_h264_keyframe(payload) is expected
    assert isinstance(is_h264_keyframe(payload[:cut]), bool)
