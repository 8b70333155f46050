"""TokenBucket: the per-connection signaling message rate limit (`signaling.messages_per_s`,
`signaling.message_burst`)."""

from __future__ import annotations

import time


class TokenBucket:
    """Holds up to `burst` tokens, refilled at `rate_per_s`; each message takes one. A client
    may burst (a join, an offer and a dozen candidates arrive together) but not sustain more."""

    __slots__ = ("rate_per_s", "burst", "tokens", "_last_s")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self._last_s = time.monotonic()

    def take(self, now_s: float | None = None) -> bool:
        now_s = time.monotonic() if now_s is None else now_s
        self.tokens = min(self.burst, self.tokens + (now_s - self._last_s) * self.rate_per_s)
        self._last_s = now_s
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
