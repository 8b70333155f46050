"""Tests for sfu.media.packet_cache: the NACK retransmission ring."""

import pytest

from sfu.media.packet_cache import PacketCache


def packet(sequence_number: int) -> bytes:
    return sequence_number.to_bytes(2, "big") * 10


def test_get_returns_stored_packet_and_none_when_never_stored() -> None:
    cache = PacketCache()
    cache.put(42, packet(42))
    assert cache.get(42) == packet(42)
    assert cache.get(43) is None
    assert cache.get(42 + 1024) is None  # same slot, different sequence number


def test_default_capacity_holds_last_500_packets() -> None:
    cache = PacketCache()
    assert cache.capacity >= 500
    for seq in range(3000):
        cache.put(seq, packet(seq))
    for seq in range(3000 - 500, 3000):
        assert cache.get(seq) == packet(seq)


def test_put_overwrites_packet_older_than_capacity() -> None:
    cache = PacketCache(capacity=16)
    for seq in range(20):
        cache.put(seq, packet(seq))
    assert [cache.get(seq) is not None for seq in range(20)] == [False] * 4 + [True] * 16


def test_sequence_number_wraparound_keeps_recent_packets() -> None:
    cache = PacketCache(capacity=64)
    sequence_numbers = [(65500 + i) & 0xFFFF for i in range(80)]
    for seq in sequence_numbers:
        cache.put(seq, packet(seq))
    for seq in sequence_numbers[-64:]:
        assert cache.get(seq) == packet(seq)
    for seq in sequence_numbers[:16]:
        assert cache.get(seq) is None


def test_clear_forgets_everything() -> None:
    cache = PacketCache(capacity=8)
    for seq in range(8):
        cache.put(seq, packet(seq))
    cache.clear()
    assert all(cache.get(seq) is None for seq in range(8))
    cache.put(3, packet(3))
    assert cache.get(3) == packet(3)


@pytest.mark.parametrize("capacity", [0, -1, 1000, 3, 1 << 17])
def test_capacity_must_be_a_power_of_two_up_to_65536(capacity: int) -> None:
    with pytest.raises(ValueError):
        PacketCache(capacity)
