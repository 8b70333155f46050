"""SubscriberEstimate: one subscriber's downlink estimate from its REMB (RFC draft
alvestrand-rmcat-remb) and the loss in its receiver reports (RFC 3550 §6.4.2)."""

from __future__ import annotations

import time
from collections import deque

INITIAL_ESTIMATE_BPS = 1_000_000  # until the first REMB: enough for a middle layer, not the top
MIN_ESTIMATE_BPS = 30_000
RISE_WEIGHT = 0.25  # an increase moves the estimate a quarter of the way per REMB...
HIGH_LOSS = 0.10  # ...a decrease applies at once; loss above 10 % cuts the estimate
LOSS_CUT = 0.85
LOSS_REPORTS_KEPT = 16  # per stream: receivers report every ~1 s
REPORT_FRESH_S = 3.0  # receivers report every ~1 s: an older report is of a stream that went away
DECREASE_RATIO = 0.97  # a REMB this much below the previous one is the receiver backing off


class SubscriberEstimate:
    """Smoothed so that a single optimistic REMB does not move layers up, while a drop applies at
    once (down-switches must be prompt, the allocator adds its own hold before up-switches)."""

    __slots__ = ("estimate_bps", "last_remb_bps", "rembs", "_last_packet", "last_decrease_s", "history", "_loss")

    def __init__(self, initial_bps: int = INITIAL_ESTIMATE_BPS) -> None:
        self.estimate_bps = float(initial_bps)
        self.last_remb_bps = 0
        self._loss: dict[int, deque[tuple[float, float]]] = {}  # ssrc -> its recent (when, fraction lost)
        self.rembs = 0
        self._last_packet: object | None = None
        self.last_decrease_s = 0.0  # when the receiver last lowered its REMB: it saw queues grow
        self.history: deque[tuple[float, int]] = deque(maxlen=32)  # (monotonic s, REMB bps)

    def on_remb(self, bitrate_bps: int, packet: object | None = None) -> None:
        """aiortc hands one compound REMB to every sender it names: count each packet once."""
        if packet is not None and packet is self._last_packet:
            return
        self._last_packet = packet
        self.rembs += 1
        now_s = time.monotonic()
        if self.last_remb_bps and bitrate_bps < self.last_remb_bps * DECREASE_RATIO:
            self.last_decrease_s = now_s
        self.history.append((now_s, bitrate_bps))
        self.last_remb_bps = bitrate_bps
        if bitrate_bps < self.estimate_bps:
            self.estimate_bps = float(bitrate_bps)
        else:
            self.estimate_bps += RISE_WEIGHT * (bitrate_bps - self.estimate_bps)
        self.estimate_bps = max(self.estimate_bps, MIN_ESTIMATE_BPS)

    def on_loss(self, fraction_lost: float, ssrc: int = 0, now_s: float | None = None) -> None:
        """`fraction_lost` in 0..1 from one report block for our stream `ssrc`. Streams are kept
        apart: a paused video reports no loss (nothing was expected) while its audio loses."""
        now_s = time.monotonic() if now_s is None else now_s
        if fraction_lost > HIGH_LOSS:
            self.estimate_bps = max(MIN_ESTIMATE_BPS, self.estimate_bps * LOSS_CUT)
        reports = self._loss.get(ssrc)
        if reports is None:
            reports = self._loss[ssrc] = deque(maxlen=LOSS_REPORTS_KEPT)
        reports.append((now_s, fraction_lost))
        if len(self._loss) > 64:  # streams come and go: keep the recent ones
            for stale in sorted(self._loss, key=lambda k: self._loss[k][-1][0])[:len(self._loss) - 64]:
                del self._loss[stale]

    def _fresh_streams(self, now_s: float) -> list[deque[tuple[float, float]]]:
        return [reports for reports in self._loss.values() if reports and now_s - reports[-1][0] <= REPORT_FRESH_S]

    @property
    def loss_fraction(self) -> float:
        """The highest loss among the latest reports of our streams (reports of the last 3 s)."""
        return max((reports[-1][1] for reports in self._fresh_streams(time.monotonic())), default=0.0)

    def loss_summary(self, now_s: float) -> str:
        """For the debug log: each fresh stream's latest loss and its mean over the last 3 s."""
        return " ".join(f"{reports[-1][1]:.2f}/{self._mean_loss(reports, 3.0, now_s) or 0:.2f}"
                        for reports in self._fresh_streams(now_s)) or "-"

    @staticmethod
    def _mean_loss(reports: deque[tuple[float, float]], window_s: float, now_s: float) -> float | None:
        """Mean loss of the reports of the last `window_s`, or None unless they span most of it."""
        recent = [(t, fraction) for t, fraction in reports if now_s - t <= window_s]
        if len(recent) < 2 or now_s - recent[0][0] < window_s * 0.6:
            return None
        return sum(fraction for _, fraction in recent) / len(recent)

    def lossy_for(self, window_s: float, now_s: float) -> bool:
        """Some stream's reports over the last `window_s` lost more than HIGH_LOSS on average:
        the link cannot carry what is sent, whatever the delay-based estimate says. (A mean, not
        every report: behind a tail-drop queue a report that saw a few packets through reads
        clean between reports that saw none.)"""
        return any((self._mean_loss(reports, window_s, now_s) or 0.0) > HIGH_LOSS
                   for reports in self._fresh_streams(now_s))

    def held_below(self, limit_bps: float, window_s: float, now_s: float, already: bool = False) -> bool:
        """The receiver cut its REMB within the last `window_s`, every REMB since is below
        `limit_bps`, and they did not rise: it keeps reporting less than it is sent. (A ramp after
        an up-switch rises; the flat start of an estimator, before it has seen a limit, never cut.)
        `already`: the link was found congested at the last check; it stays so while the REMBs stay
        below the limit without rising, however long ago the cut was (behind a hard cap the
        estimate settles flat at what gets through)."""
        recent = [bps for t, bps in self.history if now_s - t <= window_s]
        cut_recently = now_s - self.last_decrease_s <= window_s
        if len(recent) < 3 or now_s - self.history[0][0] < window_s or not (cut_recently or already):
            return False
        third = max(1, len(recent) // 3)
        rising = sum(recent[-third:]) / third > sum(recent[:third]) / third * 1.02
        return max(recent) < limit_bps and not rising


UNDELIVERED_MIN_PACKETS = 10  # fewer sent since the last report says nothing
UNDELIVERED_SHARE = 0.3  # count our own measure only above this (packets queued at report time arrive later)

Mark = tuple[int, int, int]  # (our last sequence number, the receiver's highest, its cumulative lost)


def undelivered(mark: Mark | None, sent_seq: int, highest_seq: int, cumulative_lost: int) -> tuple[float, Mark]:
    """The share of what we sent since the previous receiver report that never reached the
    receiver, from its report (highest sequence number, cumulative number lost): (fraction, the
    new mark). A receiver cannot report the loss of packets it never heard of: when a queue in
    front of it drops nearly every video packet (tail drop keeps the small audio packets and loses
    the large ones), its fraction lost for that stream says 0 (nothing expected), or little (a late
    packet moves its highest sequence number past the ones it lost), and it sends no REMB, while we
    keep sending. Only a large shortfall counts: packets still queued at report time arrive later."""
    new_mark = (sent_seq & 0xFFFF, highest_seq & 0xFFFF, cumulative_lost)
    if mark is None:
        return 0.0, new_mark
    sent = (sent_seq - mark[0]) & 0xFFFF
    advanced = (highest_seq - mark[1]) & 0xFFFF
    if sent < UNDELIVERED_MIN_PACKETS or sent >= 0x8000 or advanced >= 0x8000:
        return 0.0, new_mark
    arrived = max(0, advanced - max(0, cumulative_lost - mark[2]))
    missing = 1.0 - min(arrived, sent) / sent
    return (missing if missing > UNDELIVERED_SHARE else 0.0), new_mark
