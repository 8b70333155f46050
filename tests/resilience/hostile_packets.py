"""Garbage RTP and RTCP for the hostile client: each kind is one way a peer's bytes can lie
(RFC 3550 §5.1 fixed header, §5.3.1 extension block, RFC 8285 elements, §6.4 RTCP lengths,
draft-alvestrand-rmcat-remb). Before the server sees them they go through the client's SRTP
session, which itself refuses some (libsrtp parses CSRCs and the extension length to find the
payload): those are counted as refused by the client, never sent."""

from __future__ import annotations

import random
import struct

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

RTP_KINDS = (
    "random_v2",  # random bytes whose first byte says version 2 (SSRC: one of the unknown ones)
    "truncated",  # shorter than the 12-byte fixed header
    "extension_length_lies",  # X bit, extension block longer than the packet
    "extension_element_lies",  # the block fits, a one-byte element inside runs past it
    "csrc_count_lies",  # CC = 15 with room for none
    "padding_too_long",  # P bit, padding count larger than the payload
    "padding_zero",  # P bit, padding count 0
    "unknown_ssrc",  # well-formed, an SSRC nobody announced (32 of them, sequence numbers advancing)
    "unknown_payload_type",  # our own SSRC, a payload type never negotiated
)
FRESH_SSRC = "fresh_ssrc"  # well-formed, a new SSRC every packet: the server cuts such a peer off
UNKNOWN_SSRCS = 32  # below the server's limit of distinct unclaimed SSRCs per peer (sfu.rtc.peer)

RTCP_KINDS = (
    "length_past_end",  # SR whose length field says 200 words
    "report_count_lies",  # RR with RC = 31 and no report blocks
    "padding_zero",  # P bit, padding count 0
    "compound_tail_lies",  # a valid RR followed by a truncated PSFB
    "feedback_too_short",  # PSFB with no media SSRC
    "remb_count_lies",  # REMB naming 200 SSRCs with room for one
    "bye_count_lies",  # BYE with SC = 31 and one SSRC
    "tiny",  # 4 bytes: only an RTCP header
)

_FIXED = struct.Struct("!BBHII")
_UNKNOWN_PT = 77  # no client negotiates it; without the marker bit it is not in RTCP's 192-208
_PAYLOAD = bytes(range(100))


class RtpGarbage:
    def __init__(self, rng: random.Random, own_ssrc: int, own_pt: int, own_seq: int) -> None:
        self.rng = rng
        self.own_ssrc, self.own_pt = own_ssrc, own_pt
        self.own_seq = own_seq  # continues our stream's numbers: SRTP's replay window accepts them
        self.unknown_ssrcs = [rng.randrange(1, 1 << 32) for _ in range(UNKNOWN_SSRCS)]
        self.unknown_seq = [0] * UNKNOWN_SSRCS
        self.count = 0

    def _own(self, first_byte: int, pt: int | None = None) -> bytes:
        self.own_seq = (self.own_seq + 1) & 0xFFFF
        payload_type = self.own_pt if pt is None else pt
        return _FIXED.pack(first_byte, payload_type, self.own_seq, self.count * 3000, self.own_ssrc)

    def build(self, kind: str) -> bytes:
        self.count += 1
        rng = self.rng
        if kind == "random_v2":
            data = bytearray(rng.randbytes(rng.randint(12, 1200)))
            data[0] = 0x80 | (data[0] & 0x3F)
            if 191 < data[1] < 209:  # would be demultiplexed as RTCP (RFC 5761 §4)
                data[1] &= 0x7F
            data[8:12] = self.unknown_ssrcs[self.count % UNKNOWN_SSRCS].to_bytes(4, "big")
            return bytes(data)
        if kind == "truncated":
            return self._own(0x80)[:rng.randint(2, 11)]
        if kind == "extension_length_lies":
            return self._own(0x90) + b"\xbe\xde\xff\xff" + _PAYLOAD[:20]
        if kind == "extension_element_lies":  # one 4-byte word; element id 1 claims 16 bytes
            return self._own(0x90) + b"\xbe\xde\x00\x01" + b"\x1f\x00\x00\x00" + _PAYLOAD[:20]
        if kind == "csrc_count_lies":
            return self._own(0x8F) + _PAYLOAD[:20]
        if kind == "padding_too_long":
            return self._own(0xA0) + _PAYLOAD[:7] + b"\xff"
        if kind == "padding_zero":
            return self._own(0xA0) + _PAYLOAD[:7] + b"\x00"
        if kind == "unknown_ssrc":
            index = self.count % len(self.unknown_ssrcs)
            self.unknown_seq[index] += 1
            return _FIXED.pack(0x80, self.own_pt, self.unknown_seq[index] & 0xFFFF, 0,
                               self.unknown_ssrcs[index]) + _PAYLOAD
        if kind == FRESH_SSRC:
            return _FIXED.pack(0x80, self.own_pt, 1, 0, rng.randrange(1, 1 << 32)) + _PAYLOAD
        if kind == "unknown_payload_type":
            return self._own(0x80, _UNKNOWN_PT) + _PAYLOAD
        raise ValueError(kind)


class RtcpGarbage:
    def __init__(self, rng: random.Random, own_ssrc: int) -> None:
        self.rng = rng
        self.own_ssrc = own_ssrc

    def build(self, kind: str) -> bytes:
        ssrc = self.own_ssrc
        if kind == "length_past_end":
            return struct.pack("!BBHI", 0x80, 200, 200, ssrc) + bytes(20)
        if kind == "report_count_lies":
            return struct.pack("!BBHI", 0x9F, 201, 1, ssrc)
        if kind == "padding_zero":
            return struct.pack("!BBHII", 0xA0, 201, 2, ssrc, 0)
        if kind == "compound_tail_lies":
            rr = bytes(RtcpRrPacket(ssrc=ssrc, reports=[RtcpReceiverInfo(
                ssrc=self.rng.randrange(1 << 32), fraction_lost=0, packets_lost=0, highest_sequence=0,
                jitter=0, lsr=0, dlsr=0)]))
            return rr + struct.pack("!BBHI", 0x81, 206, 9, ssrc)
        if kind == "feedback_too_short":
            return struct.pack("!BBHI", 0x81, 206, 1, ssrc)
        if kind == "remb_count_lies":
            fci = b"REMB" + struct.pack("!BBH", 200, 0x04, 0) + struct.pack("!I", ssrc)
            return struct.pack("!BBHII", 0x8F, 206, 2 + len(fci) // 4, ssrc, 0) + fci
        if kind == "bye_count_lies":
            return struct.pack("!BBHI", 0x9F, 203, 1, ssrc)
        if kind == "tiny":
            return struct.pack("!BBH", 0x80, 201, 0)
        raise ValueError(kind)


REMB_ABSURD_BPS = (0, 1, 10**15, 0x3FFFF << 63)  # the last: the largest the 6-bit exponent encodes


def feedback_storm(own: int, targets: list[int], received_seq: dict[int, int], tick: int) -> list[tuple[bytes, str]]:
    """One tick of feedback abuse: a PLI, a FIR and a NACK of the newest 256 packets (all still in the
    server's cache) for every target, and an absurd REMB."""
    out: list[tuple[bytes, str]] = []
    for target in targets:
        out.append((bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=own, media_ssrc=target)), "pli"))
        fir_fci = target.to_bytes(4, "big") + bytes([tick & 0xFF, 0, 0, 0])
        out.append((bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=own, media_ssrc=target, fci=fir_fci)), "fir"))
        last = received_seq.get(target)
        if last is not None and last >= 256:
            lost = list(range(last - 255, last + 1))
            out.append((bytes(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=own, media_ssrc=target, lost=lost)),
                        "nack_256"))
    bps = REMB_ABSURD_BPS[tick % len(REMB_ABSURD_BPS)]
    remb = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=own, media_ssrc=0, fci=pack_remb_fci(bps, targets or [own]))
    out.append((bytes(remb), "remb_absurd"))
    return out
