"""Sequence-number and timestamp munging for one outgoing RTP stream whose source may change over time.

The subscriber sees one continuous stream (RFC 3550 §5.1 seq/timestamp) across source switches and drops.
"""

_SEQ_MASK = 0xFFFF
_SEQ_HALF = 0x8000  # RFC 1982 serial arithmetic on 16-bit sequence numbers
_TS_MASK = 0xFFFFFFFF
_TS_HALF = 0x80000000  # RFC 1982 serial arithmetic on 32-bit timestamps


class Sequencer:
    """Maps (incoming seq, ts) of the current source to (outgoing seq, ts) with constant per-source offsets.

    Incoming sequence numbers are unwrapped to an extended (unbounded) counter relative to the highest one
    seen, so a source can run for any number of wraparounds, and packets from before the current source's
    first packet are recognised and rejected.

    Limitation of `drop()`: it shifts the offset for every later packet, so it is only exact when packets
    are dropped in order (the dropped sequence number is the next one after the highest seen). A packet
    older than a drop that arrives after it (reordering, or a gap filled late) maps one lower than it
    should and may collide with an already-sent sequence number.
    """

    __slots__ = (
        "_initial_sequence_number",
        "_initial_timestamp",
        "_has_source",
        "_sent_any",
        "_first_in_ext",
        "_highest_in_ext",
        "_highest_in_seq",
        "_seq_offset",
        "_ts_offset",
        "_last_out_seq",
        "_last_out_ts",
    )

    def __init__(self, initial_sequence_number: int, initial_timestamp: int) -> None:
        self._initial_sequence_number = initial_sequence_number & _SEQ_MASK
        self._initial_timestamp = initial_timestamp & _TS_MASK
        self._has_source = False
        self._sent_any = False
        self._first_in_ext = 0  # extended incoming seq of the current source's first packet
        self._highest_in_ext = 0  # extended incoming seq of the highest packet seen (mapped or dropped)
        self._highest_in_seq = 0  # the same, as a 16-bit value
        self._seq_offset = 0  # outgoing seq = (extended incoming seq + offset) & 0xFFFF
        self._ts_offset = 0  # outgoing ts = (incoming ts + offset) & 0xFFFFFFFF
        # Before anything is sent: "last" is one before the initial seq, and the initial timestamp.
        self._last_out_seq = (self._initial_sequence_number - 1) & _SEQ_MASK
        self._last_out_ts = self._initial_timestamp

    @property
    def last_sequence_number(self) -> int:
        """Highest outgoing sequence number sent so far (initial - 1 before the first packet)."""
        return self._last_out_seq

    @property
    def last_timestamp(self) -> int:
        """Highest outgoing timestamp sent so far (the initial timestamp before the first packet)."""
        return self._last_out_ts

    def switch_source(self, first_in_seq: int, first_in_ts: int, ts_gap: int) -> None:
        """Make the next forwarded packet, (first_in_seq, first_in_ts), follow on from the last one sent.

        Its outgoing seq becomes last + 1 and its outgoing timestamp last + `ts_gap` (> 0, in RTP clock
        units, e.g. 3000 for one frame at 90 kHz). Before anything was sent, the initial values are used.
        """
        if ts_gap <= 0:
            raise ValueError(f"ts_gap must be positive, got {ts_gap}")
        first_in_seq &= _SEQ_MASK
        if self._sent_any:
            first_out_seq = self._last_out_seq + 1
            first_out_ts = self._last_out_ts + ts_gap
        else:
            first_out_seq = self._initial_sequence_number
            first_out_ts = self._initial_timestamp
        self._first_in_ext = first_in_seq
        self._highest_in_ext = first_in_seq - 1
        self._highest_in_seq = (first_in_seq - 1) & _SEQ_MASK
        self._seq_offset = first_out_seq - first_in_seq
        self._ts_offset = (first_out_ts - first_in_ts) & _TS_MASK
        self._has_source = True

    def map(self, in_seq: int, in_ts: int) -> tuple[int, int] | None:
        """Outgoing (seq, ts) for a packet of the current source, or None if it predates the source.

        Calling it before any switch_source() starts the first source at this packet.
        """
        if not self._has_source:
            self.switch_source(in_seq, in_ts, 1)
        delta = (in_seq - self._highest_in_seq) & _SEQ_MASK  # RFC 1982: newer iff 0 < delta < 2^15
        if delta >= _SEQ_HALF:
            delta -= _SEQ_MASK + 1
        in_ext = self._highest_in_ext + delta
        if in_ext < self._first_in_ext:
            return None  # belongs to the previous source segment
        out_seq = (in_ext + self._seq_offset) & _SEQ_MASK
        out_ts = (in_ts + self._ts_offset) & _TS_MASK
        if delta > 0:
            self._highest_in_ext = in_ext
            self._highest_in_seq = in_seq & _SEQ_MASK
            self._last_out_seq = out_seq
        if (out_ts - self._last_out_ts) & _TS_MASK < _TS_HALF:
            self._last_out_ts = out_ts
        self._sent_any = True
        return out_seq, out_ts

    def drop(self, in_seq: int) -> None:
        """Skip a packet of the current source that will not be forwarded; later packets shift down by one.

        Ignored if no source is active or `in_seq` is not newer than the highest seen (see class docstring).
        """
        if not self._has_source:
            return
        delta = (in_seq - self._highest_in_seq) & _SEQ_MASK
        if delta == 0 or delta >= _SEQ_HALF:
            return
        self._highest_in_ext += delta
        self._highest_in_seq = in_seq & _SEQ_MASK
        self._seq_offset -= 1
