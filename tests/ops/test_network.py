"""Network settings: media bound to chosen addresses and a UDP port range, announced public
addresses in the server's SDP (1:1 NAT)."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from sfu.rtc.announce import AddressMap
from sfu.rtc.media_ports import MediaBinding
from tests.conftest import start_server
from tests.integration.peers import Participant, wait_until

SDP = ("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 50000 UDP/TLS/RTP/SAVPF 111\r\n"
       "c=IN IP4 10.0.0.5\r\n"
       "a=candidate:a 1 udp 2130706431 10.0.0.5 50000 typ host\r\n"
       "a=candidate:b 1 udp 2130706431 127.0.0.1 50001 typ host\r\n"
       "a=candidate:c 1 udp 1694498815 192.0.2.1 50002 typ srflx raddr 10.0.0.5 rport 50000\r\n"
       "a=candidate:d 1 udp 2130706431 fd00::5 50003 typ host\r\n")


def candidates(sdp: str) -> list[tuple[str, int, str]]:
    return [(m[0], int(m[1]), m[2]) for m in re.findall(r"a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ (\w+)", sdp)]


def test_one_public_address_replaces_every_non_loopback_host_address_of_its_version() -> None:
    out = AddressMap(["203.0.113.7"]).rewrite_sdp(SDP)
    assert candidates(out) == [("203.0.113.7", 50000, "host"), ("127.0.0.1", 50001, "host"),
                               ("192.0.2.1", 50002, "srflx"), ("fd00::5", 50003, "host")]
    assert "c=IN IP4 203.0.113.7\r\n" in out


def test_public_private_pairs_map_only_their_address() -> None:
    out = AddressMap(["203.0.113.7/10.0.0.9", "2001:db8::1/fd00::5"]).rewrite_sdp(SDP)
    assert [c[0] for c in candidates(out)] == ["10.0.0.5", "127.0.0.1", "192.0.2.1", "2001:db8::1"]
    assert not AddressMap([])


def test_port_range_is_walked_from_the_last_port_handed_out() -> None:
    binding = MediaBinding([], 40000, 40003, 40002)
    assert binding.ports() == [40002, 40003, 40000, 40001]


@pytest.mark.slow
async def test_media_uses_the_configured_address_and_port_range(tmp_path: Path) -> None:
    low = random.randrange(20000, 60000, 100)
    server = start_server(tmp_path, "--media-address", "127.0.0.1", "--udp-ports", f"{low}-{low + 9}")
    pair = [Participant(server.url, "ranged", "a"), Participant(server.url, "ranged", "b")]
    try:
        for participant in pair:
            await participant.join(video_size=(160, 120))
        assert await wait_until(lambda: all(r.frames > 10 for p in pair for r in p.received.values()
                                            if r.kind == "video") and all(p.received for p in pair), 30)
        for participant in pair:
            server_sdps = [m["sdp"] for m in participant.client.messages if m["type"] in ("offer", "answer")]
            found = [c for sdp in server_sdps for c in candidates(sdp)]
            assert found and all(address == "127.0.0.1" for address, _, _ in found), found
            assert all(low <= port <= low + 9 for _, port, _ in found), found
    finally:
        for participant in pair:
            await participant.close()
        assert server.stop() == 0, server.log()[-3000:]


@pytest.mark.slow
async def test_announced_address_replaces_the_bound_one_in_the_servers_sdp(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--media-address", "127.0.0.1", "--announce-ip", "198.51.100.9/127.0.0.1")
    publisher = Participant(server.url, "natted", "a")
    try:
        await publisher.join(video_size=(160, 120))
        answer = next(m["sdp"] for m in publisher.client.messages if m["type"] == "answer")
        assert {c[0] for c in candidates(answer)} == {"198.51.100.9"}
    finally:
        await publisher.close()
        assert server.stop() == 0, server.log()[-3000:]
