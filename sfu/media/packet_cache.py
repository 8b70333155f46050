"""Retransmission cache of recently sent RTP packets of one outgoing stream, looked up by sequence number.

Answers NACKs (RFC 4585 §6.2.1): a fixed ring of slots, no per-packet allocation, no eviction bookkeeping.
"""

_SEQUENCE_NUMBER_SPACE = 1 << 16  # RFC 3550 §5.1: 16-bit sequence numbers


class PacketCache:
    """Ring of `capacity` slots indexed by `sequence_number & (capacity - 1)`, each holding (seq, packet).

    A newer packet whose sequence number lands on the same slot overwrites the older one, so the cache
    holds the last `capacity` sequence numbers of a contiguous outgoing stream. `capacity` must be a power
    of two (so slots stay consistent across the 16-bit wraparound) and at most 65536.
    """

    __slots__ = ("_mask", "_sequence_numbers", "_packets")

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1 or capacity & (capacity - 1) or capacity > _SEQUENCE_NUMBER_SPACE:
            raise ValueError(f"capacity must be a power of two in 1..65536, got {capacity}")
        self._mask = capacity - 1
        # -1 marks an empty slot: it never equals a 16-bit sequence number.
        self._sequence_numbers: list[int] = [-1] * capacity
        self._packets: list[bytes | bytearray | None] = [None] * capacity

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
        if self._sequence_numbers[slot] != sequence_number:
            return None
        return self._packets[slot]

    def clear(self) -> None:
        """Forget every packet (e.g. when the outgoing stream is torn down)."""
        capacity = self._mask + 1
        self._sequence_numbers = [-1] * capacity
        self._packets = [None] * capacity
