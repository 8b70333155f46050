"""What the live abuse test (tests/resilience/test_abuse.py) found, as features: an invalid
request's error still names the request, RTCP that aiortc drops as unparseable is counted, and a
peer that sends RTP on ever new SSRCs is cut off."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtp import RtcpPacket

from sfu.media.counters import COUNTERS
from sfu.media.relay import TrackRelay
from sfu.rtc import rtcp_guard
from sfu.rtc.peer import MAX_UNKNOWN_SSRCS, PeerSession, Publication
from sfu.signaling.messages import ErrorCode, SignalingError, parse


@pytest.mark.parametrize(("text", "code"), [
    ('{"v": 1, "type": "subscribe", "track_ids": "TR_x", "id": "r7"}', ErrorCode.BAD_MESSAGE),
    ('{"v": 1, "type": "teleport", "id": "r7"}', ErrorCode.UNKNOWN_TYPE),
    ('{"v": 2, "type": "ping", "id": "r7"}', ErrorCode.BAD_MESSAGE),
])
def test_an_invalid_request_is_answered_with_its_id(text: str, code: ErrorCode) -> None:
    with pytest.raises(SignalingError) as caught:
        parse(text)
    assert caught.value.code == code and caught.value.request_id == "r7"


def test_rtcp_that_aiortc_cannot_parse_is_counted_as_malformed() -> None:
    rtcp_guard.install()
    before = COUNTERS.rtcp_malformed
    sender_report_past_its_end = struct.pack("!BBHI", 0x80, 200, 200, 1234) + bytes(20)
    with pytest.raises(ValueError):  # what aiortc's transport catches and drops
        RtcpPacket.parse(sender_report_past_its_end)
    assert COUNTERS.rtcp_malformed == before + 1
    assert RtcpPacket.parse(struct.pack("!BBHI", 0x80, 201, 1, 1234))  # a valid RR is not counted
    assert COUNTERS.rtcp_malformed == before + 1


def rtp(ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, 1, 0, ssrc) + bytes(20)


async def test_a_peer_sending_rtp_on_more_than_64_unclaimed_ssrcs_is_cut_off_once() -> None:
    peer = PeerSession("PA_test", [])
    cut_off: list[str] = []
    peer.on_abuse = cut_off.append
    try:
        transceiver = peer.pc.addTransceiver("video", direction="recvonly")
        relay = TrackRelay("video", lambda ssrc: None)
        peer.publications["0"] = Publication("0", "video", [relay], transceiver, ssrcs={0xAAAA})
        peer._relay_by_ssrc[0xAAAA] = relay
        peer.remove_publication("0")  # its packets still in flight are no abuse
        for _ in range(3):
            peer._on_rtp(rtp(0xAAAA), 0)
        for ssrc in range(1, MAX_UNKNOWN_SSRCS + 1):
            peer._on_rtp(rtp(ssrc), 0)
            peer._on_rtp(rtp(ssrc), 0)  # the same SSRC again counts once
        assert not cut_off
        peer._on_rtp(rtp(MAX_UNKNOWN_SSRCS + 1), 0)
        assert len(cut_off) == 1 and "SSRCs" in cut_off[0]
        for ssrc in range(1000, 1100):
            peer._on_rtp(rtp(ssrc), 0)
        assert len(cut_off) == 1, "reported once; the set it keeps stays bounded"
        assert len(peer._unknown_ssrcs) == MAX_UNKNOWN_SSRCS + 1
    finally:
        await peer.close()
