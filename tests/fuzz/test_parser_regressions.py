"""What the fuzzers found, as features: each input a peer could send that once raised out of a
parser (or left a connection that could not be closed) is now refused or dropped and counted."""

from __future__ import annotations

import asyncio
import struct
import types

import pytest
from aiortc import RTCDtlsTransport, RTCPeerConnection
from aiortc.rtcdtlstransport import RtpRouter

from sfu.media.counters import COUNTERS
from sfu.rtc import rtcp_guard, sdp

# REMB (draft-alvestrand-rmcat-remb §2.2) whose "Num SSRC" says 69 with room for 2 (the fuzzer's find)
LYING_REMB = b"\x8f\xce\x00\x064\x00\x00\x00\x00\x00\x00\x00REMBEM\x82\xcb\x00\x02\x00\x00\x00\x01\x00x"


async def offer_sdp() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    text = pc.localDescription.sdp
    await pc.close()
    return text


async def test_a_remb_whose_ssrc_count_lies_is_counted_and_dropped_instead_of_ending_the_transport() -> None:
    transport = types.SimpleNamespace(_rtp_router=RtpRouter(), _RTCDtlsTransport__log_debug=lambda *a: None)
    rtcp_guard.install()
    before = COUNTERS.rtcp_malformed
    await RTCDtlsTransport._handle_rtcp_data(transport, LYING_REMB)  # type: ignore[arg-type]
    assert COUNTERS.rtcp_malformed == before + 1
    rtcp_guard.install()  # idempotent
    with pytest.raises(struct.error):  # what aiortc alone does (and its transport's loop then ends)
        await rtcp_guard._original(transport, LYING_REMB)  # type: ignore[misc]


@pytest.mark.parametrize(("change", "reason"), [
    (lambda s: s.replace("a=group:BUNDLE 0", "a=group:BUNDLE 7 0"), "BUNDLE"),
    (lambda s: s.replace("a=sendonly\r\n", ""), "direction"),
    (lambda s: s.replace("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0,0.0.0"), "invalid SDP"),
    # found by the long session run: aiortc's connect task then died on a transceiver without
    # transport (bundled onto an m-section it keeps no transceiver for) or without remote DTLS
    (lambda s: s.replace("m=video", "m=videoaudio"), "kind"),
    (lambda s: s.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0\r\na=group:BUNDLE 0"), "more than one"),
])
def test_an_offer_aiortc_would_choke_on_later_is_refused_as_bad_sdp(change, reason) -> None:  # type: ignore[no-untyped-def]
    good = asyncio.run(offer_sdp())
    sdp.validate(good)
    with pytest.raises(sdp.SdpError, match=reason):
        sdp.validate(change(good))


def test_media_sections_skips_malformed_lines_instead_of_raising() -> None:
    text = ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=rtpmap:96 VP8/a=rtpmap:98\r\n"
            "a=rtpmap:x VP8/90000\r\na=ssrc:notanumber cname:x\r\na=ssrc-group:FID 1 y\r\na=rtpmap:97 VP8/90000\r\n"
            "m=audio\r\nm=audio x UDP 0\r\n")
    sections = sdp.media_sections(text)
    assert [(s.mid, s.kind, sorted(s.codecs)) for s in sections] == [("0", "video", [97])]
