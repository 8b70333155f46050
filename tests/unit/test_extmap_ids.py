"""ExtmapIds: the server's re-offers keep the header-extension ids negotiated first (Chromium
refuses a renumbering), and never fail when the peer took every one-byte id."""

from __future__ import annotations

from sfu.rtc.sdp import ExtmapIds

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def test_a_re_offer_keeps_the_ids_of_the_first_negotiation() -> None:
    ids = ExtmapIds()
    ids.learn(f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:4 {MID}\r\na=extmap:2 {ABS}\r\n")
    offer = f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:1 {MID}\r\na=extmap:3/sendonly {ABS}\r\na=mid:0\r\n"
    assert ids.remap(offer) == \
        f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:4 {MID}\r\na=extmap:2/sendonly {ABS}\r\na=mid:0\r\n"


def test_a_new_uri_gets_a_free_id_and_a_full_table_drops_its_line() -> None:
    ids = ExtmapIds()
    ids.learn("".join(f"a=extmap:{i} urn:example:ext{i}\r\n" for i in range(1, 14)))  # 1-13 taken
    offer = f"a=extmap:1 {MID}\r\na=extmap:2 {ABS}\r\na=mid:0\r\n"
    assert ids.remap(offer) == f"a=extmap:14 {MID}\r\na=mid:0\r\n", "14 was free; nothing left for the second"
    assert ids.remap(offer) == f"a=extmap:14 {MID}\r\na=mid:0\r\n", "the same on the next re-offer"
