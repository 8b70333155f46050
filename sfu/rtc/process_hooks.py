"""Process-wide hooks into aiortc/aioice, installed once by `sfu serve` (sfu.server.run), and the
start-up check that the private attributes this package relies on (here and in `sfu.rtc.hooks`)
exist for the aiortc 1.16 / aioice 0.13 in use, so that an upgrade fails loudly instead of
silently not forwarding.
"""

from __future__ import annotations

import aioice.ice
import aiortc.rtcrtpreceiver
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender

_original_get_host_addresses = aioice.ice.get_host_addresses


def check_aiortc() -> None:
    """Fail at start-up if the private attributes this package relies on are gone."""
    missing = [
        f"{cls.__name__}.{name}"
        for cls, name in (
            (RTCDtlsTransport, "_handle_rtp_data"),
            (RTCDtlsTransport, "_send_rtp"),
            (RTCRtpSender, "_handle_rtcp_packet"),
            (RTCRtpReceiver, "_send_rtcp_pli"),
            (RTCRtpReceiver, "_send_rtcp"),
        )
        if not hasattr(cls, name)
    ]
    if not hasattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator"):
        missing.append("aiortc.rtcrtpreceiver.RemoteBitrateEstimator")
    if not hasattr(aioice.ice, "get_host_addresses"):
        missing.append("aioice.ice.get_host_addresses")
    if missing:
        raise RuntimeError(f"unsupported aiortc/aioice version, missing: {', '.join(missing)}")


class _NoReceiveEstimate:
    """Stands in for aiortc's RemoteBitrateEstimator in the server: it is built with every video
    RTCRtpReceiver (a 1,000-bucket rate counter: 0.3 ms on an idle core, ~10 % of the server's CPU
    in the churn test by py-spy, all of it on the loop while a join negotiates), but the server
    never runs aiortc's receive path (`tap_rtp` takes every RTP packet) and sends publishers its
    own REMB (PeerSession.send_publisher_estimate)."""

    def add(self, arrival_time_ms: int, abs_send_time: int, payload_size: int, ssrc: int) -> None:
        return None


def skip_receive_estimators() -> None:
    """Server processes only: aiortc clients in the same process would lose their REMB."""
    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = _NoReceiveEstimate  # type: ignore[assignment,misc]


def include_loopback_candidates(enabled: bool) -> None:
    """aioice skips 127.0.0.1 when gathering host candidates; a loopback deployment (tests, the
    embedded demo) needs it. Process-wide by nature: aioice reads a module-level function."""

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = _original_get_host_addresses(use_ipv4, use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.insert(0, "127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = get_host_addresses if enabled else _original_get_host_addresses
