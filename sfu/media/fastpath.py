"""The optional C forwarding step (`sfu._fastpath`, sources in csrc/, docs/fastpath.md).

`fanout`, `Sequencer`, `Sink`, `Lane`, `Tally`, `Vp8Munger` and `feed_sender_report` are the C
versions, or None when the extension is not built (no C compiler at install time), when
`SFU_FASTPATH=0` is set (to compare both paths in one run: benchmarks/README.md), or when
pylibsrtp's or aiortc's internals it relies on are not what it expects. The Python code paths stay
the reference and serve every case the C step does not (see `sfu._fastpath.fanout`)."""

from __future__ import annotations

import atexit
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

_native: Any = None  # the sfu._fastpath module while the C step is on
fanout: Any = None
Sequencer: Any = None
Sink: Any = None
Lane: Any = None
Tally: Any = None
Vp8Munger: Any = None
feed_sender_report: Any = None
_configuration: tuple[Any, int] = (None, 0)  # aiortc's DTLS CONNECTED state, srtp_protect's address


def _load() -> str:
    """Bind the module's names; returns why the C step is off, "" if it is on."""
    global _native, fanout, Sequencer, Sink, Lane, Tally, Vp8Munger, feed_sender_report, _configuration
    if os.environ.get("SFU_FASTPATH", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by SFU_FASTPATH"
    try:
        from sfu import _fastpath  # type: ignore[attr-defined]
    except ImportError as exc:
        return f"not built ({exc})"
    try:
        from aiortc.rtcdtlstransport import State
        from pylibsrtp._binding import ffi, lib

        # libsrtp 2's srtp_protect(srtp_t, void *, int *), from the very copy pylibsrtp's sessions use
        protect = ffi.addressof(lib, "srtp_protect")
        if ffi.typeof(protect).cname != "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)":
            return f"unexpected srtp_protect signature {ffi.typeof(protect).cname}"
        _configuration = (State.CONNECTED, int(ffi.cast("uintptr_t", protect)))
    except (ImportError, AttributeError) as exc:
        return f"pylibsrtp/aiortc internals differ ({exc})"
    _native = _fastpath
    fanout, Sequencer, Sink, Lane = _fastpath.fanout, _fastpath.Sequencer, _fastpath.Sink, _fastpath.Lane
    Tally, Vp8Munger = _fastpath.Tally, _fastpath.Vp8Munger
    feed_sender_report = _fastpath.feed_sender_report
    return ""


UNAVAILABLE_REASON = _load()
ENABLED = not UNAVAILABLE_REASON
# SFU_FASTPATH_PROFILE=1: the thread CPU time inside the C fan-out (logged at exit), and the delay of
# every copy it sends from its datagram's kernel timestamp, which the receive tap notes (one more
# system call per incoming packet): `delay_histogram`
PROFILING = ENABLED and os.environ.get("SFU_FASTPATH_PROFILE") == "1"
DELAY_BUCKETS_S = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
                   0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1)


def register(downtrack_type: type) -> None:
    """Called by sfu.media.downtrack once DownTrack exists: the C step serves objects of exactly
    this type (a relay's other listeners, e.g. the audio-level observer, keep their `write`). Until
    then `fanout` hands every packet to `write`."""
    if _native is None:
        return
    from sfu.media.counters import COUNTERS

    connected_state, protect_address = _configuration
    _native.configure(connected_state, protect_address, COUNTERS, downtrack_type)
    if PROFILING:
        _native.profile(True)
        atexit.register(lambda: log.warning("fastpath profile: %s", _native.stats()))


def note_arrival(fd: int) -> None:
    """The datagram just read on socket `fd` is the one forwarded next (profiling only)."""
    _native.note_arrival(fd)


def stats() -> dict[str, int]:
    """Downtrack writes of this process's fan-outs: served in C, handed to DownTrack.write."""
    if _native is None:
        return {"served_in_c": 0, "handed_to_python": 0}
    return {k: v for k, v in _native.stats().items() if k in ("served_in_c", "handed_to_python")}


def delay_histogram() -> tuple[list[tuple[float, int]], float, int] | None:
    """Forwarding delays so far as cumulative Prometheus buckets (DELAY_BUCKETS_S and +Inf), their
    sum in seconds and their count; None unless profiling."""
    if not PROFILING:
        return None
    histogram = _native.delay_histogram()
    bin_s, counts = histogram["bin_ns"] / 1e9, histogram["counts"]
    buckets, cumulative, index, total_s = [], 0, 0, 0.0
    for bound in DELAY_BUCKETS_S:
        while index < len(counts) and (index + 1) * bin_s <= bound + 1e-12:  # bins wholly under the bound
            cumulative += counts[index]
            total_s += counts[index] * (index + 0.5) * bin_s
            index += 1
        buckets.append((bound, cumulative))
    for later in range(index, len(counts)):
        cumulative += counts[later]
        total_s += counts[later] * (later + 0.5) * bin_s
    buckets.append((float("inf"), cumulative))
    return buckets, total_s, cumulative
