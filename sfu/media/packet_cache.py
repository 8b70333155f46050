"""Retransmission cache of recently sent RTP packets of one outgoing stream, looked up by sequence number.

Answers NACKs (RFC 4585 §6.2.1): a fixed ring of slots, no per-packet allocation, no eviction bookkeeping.
Each packet is resent a bounded number of times: a receiver on a congested link names every packet it
still misses in each NACK (aiortc: on every new gap), and answering each of them would multiply what is
sent into the link that is already too narrow.
"""

_SEQUENCE_NUMBER_SPACE = 1 << 16  # RFC 3550 §5.1: 16-bit sequence numbers
_RESEND = 1 << 16  # a slot's tag is its sequence number + this times the packet's resends
RESEND_INTERVAL_S = 0.1  # a packet is resent at most once per this interval (about one RTT)...
MAX_RESENDS = 3  # ...and at most this many times in all


class PacketCache:
    """Ring of `capacity` slots indexed by `sequence_number & (capacity - 1)`, each holding (seq, packet).

    A newer packet whose sequence number lands on the same slot overwrites the older one, so the cache
    holds the last `capacity` sequence numbers of a contiguous outgoing stream. `capacity` must be a power
    of two (so slots stay consistent across the 16-bit wraparound) and at most 65536.
    """

    __slots__ = ("_mask", "_sequence_numbers", "_packets", "_resent_s")

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1 or capacity & (capacity - 1) or capacity > _SEQUENCE_NUMBER_SPACE:
            raise ValueError(f"capacity must be a power of two in 1..65536, got {capacity}")
        self._mask = capacity - 1
        # Per slot: sequence number | resends << 16, so `put` (once per forwarded packet) resets the resend
        # count with the store it does anyway. -1 marks an empty slot (its packet is None).
        self._sequence_numbers: list[int] = [-1] * capacity
        self._packets: list[bytes | bytearray | None] = [None] * capacity
        self._resent_s: list[float] = [0.0] * capacity  # the last resend of the slot's packet, if any

    @property
    def capacity(self) -> int:
        return self._mask + 1

    def put(self, sequence_number: int, packet: bytes | bytearray) -> None:
        """Store `packet` (kept by reference, not copied) under its 16-bit outgoing sequence number."""
        slot = sequence_number & self._mask
        self._sequence_numbers[slot] = sequence_number & 0xFFFF
        self._packets[slot] = packet

    def get(self, sequence_number: int) -> bytes | bytearray | None:
        """The packet stored under `sequence_number`, or None if never stored or already overwritten."""
        slot = sequence_number & self._mask
        if self._sequence_numbers[slot] & 0xFFFF != sequence_number:
            return None
        return self._packets[slot]

    def get_for_resend(self, sequence_number: int, now_s: float) -> bytes | bytearray | None:
        """The packet to resend for a NACK, counted as resent; None if it is not cached (`get` is None),
        was resent less than RESEND_INTERVAL_S ago, or MAX_RESENDS times already."""
        slot = sequence_number & self._mask
        tag = self._sequence_numbers[slot]
        packet = self._packets[slot]
        if tag & 0xFFFF != sequence_number or packet is None:
            return None
        resends = tag >> 16
        if resends and (resends >= MAX_RESENDS or now_s - self._resent_s[slot] < RESEND_INTERVAL_S):
            return None
        self._sequence_numbers[slot] = tag + _RESEND
        self._resent_s[slot] = now_s
        return packet

    def clear(self) -> None:
        """Forget every packet (e.g. when the outgoing stream is torn down)."""
        capacity = self._mask + 1  # in place: sfu._fastpath.Lane holds these lists
        self._sequence_numbers[:] = [-1] * capacity
        self._packets[:] = [None] * capacity
