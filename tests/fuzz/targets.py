"""Every fuzz target by name (tests/fuzz/run.py and the CI test use this table)."""

from __future__ import annotations

from collections.abc import Callable

from tests.fuzz.media_targets import fuzz_rtcp, fuzz_rtp
from tests.fuzz.signaling_targets import fuzz_sdp, fuzz_session, fuzz_signaling

TARGETS: dict[str, Callable[[bytes], None]] = {
    "signaling": fuzz_signaling,
    "session": fuzz_session,
    "sdp": fuzz_sdp,
    "rtp": fuzz_rtp,
    "rtcp": fuzz_rtcp,
}
