"""What a subscriber's RTCP tells the server about one of its outgoing streams: NACKs (resend),
PLI/FIR (a key frame), REMB and receiver reports (its bandwidth estimate and loss)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiortc.rtp import RTCP_PSFB_APP, RTCP_PSFB_FIR, RTCP_PSFB_PLI, RTCP_RTPFB_NACK, unpack_remb_fci

from sfu.bwe.estimator import SubscriberEstimate, undelivered
from sfu.media.counters import COUNTERS

if TYPE_CHECKING:
    from sfu.rtc.peer import Slot

MAX_NACKED_PER_PACKET = 256  # sequence numbers honoured per NACK packet


async def on_subscriber_rtcp(estimate: SubscriberEstimate, slot: Slot, packet: Any) -> None:
    """One RTCP packet for `slot`'s sender (aiortc hands a compound's packets one by one)."""
    downtrack = slot.downtrack
    name = type(packet).__name__
    if name == "RtcpRtpfbPacket" and packet.fmt == RTCP_RTPFB_NACK:
        COUNTERS.nack_received += 1
        if downtrack is not None:
            # one NACK can name thousands of packets (RFC 4585 §6.2.1 bitmasks); more than this
            # many is a subscriber asking for a resend of seconds of video: answer the newest
            downtrack.on_nack([seq & 0xFFFF for seq in packet.lost[-MAX_NACKED_PER_PACKET:]])
    elif name == "RtcpPsfbPacket" and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
        if packet.fmt == RTCP_PSFB_PLI:
            COUNTERS.pli_received += 1
        else:
            COUNTERS.fir_received += 1
        if downtrack is not None:
            downtrack.on_keyframe_request()
    elif name == "RtcpPsfbPacket" and packet.fmt == RTCP_PSFB_APP:
        COUNTERS.remb_received += 1
        try:
            bitrate_bps, _ = unpack_remb_fci(packet.fci)
        except ValueError:
            COUNTERS.rtcp_malformed += 1
            return
        estimate.on_remb(bitrate_bps, packet)
    elif name in ("RtcpRrPacket", "RtcpSrPacket"):
        out = slot.out
        for report in packet.reports:
            if report.ssrc == out.ssrc:
                lost, out.delivery_mark = undelivered(out.delivery_mark, out.sequencer.last_sequence_number,
                                                      report.highest_sequence, report.packets_lost)
                estimate.on_loss(max(report.fraction_lost / 256, lost), report.ssrc)
