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
DECREASE_RATIO = 0.97  # a REMB this much below the previous one is the receiver backing off


class SubscriberEstimate:
    """Smoothed so that a single optimistic REMB does not move layers up, while a drop applies at
    once (down-switches must be prompt, the allocator adds its own hold before up-switches)."""

    __slots__ = ("estimate_bps", "last_remb_bps", "loss_fraction", "rembs", "_last_packet", "last_decrease_s",
                 "history")

    def __init__(self, initial_bps: int = INITIAL_ESTIMATE_BPS) -> None:
        self.estimate_bps = float(initial_bps)
        self.last_remb_bps = 0
        self.loss_fraction = 0.0
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

    def on_loss(self, fraction_lost: float) -> None:
        """`fraction_lost` in 0..1 from one report block for one of our streams."""
        self.loss_fraction = fraction_lost
        if fraction_lost > HIGH_LOSS:
            self.estimate_bps = max(MIN_ESTIMATE_BPS, self.estimate_bps * LOSS_CUT)

    def held_below(self, limit_bps: float, window_s: float, now_s: float) -> bool:
        """The receiver cut its REMB within the last `window_s`, every REMB since is below
        `limit_bps`, and they did not rise: it keeps reporting less than it is sent. (A ramp after
        an up-switch rises; the flat start of an estimator, before it has seen a limit, never cut.)"""
        recent = [bps for t, bps in self.history if now_s - t <= window_s]
        if len(recent) < 3 or now_s - self.history[0][0] < window_s or now_s - self.last_decrease_s > window_s:
            return False
        third = max(1, len(recent) // 3)
        rising = sum(recent[-third:]) / third > sum(recent[:third]) / third * 1.02
        return max(recent) < limit_bps and not rising
