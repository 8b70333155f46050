"""Tests for sfu.media.packet_cache: the NACK retransmission ring."""

import pytest

from sfu.media.packet_cache import MAX_RESENDS, RESEND_INTERVAL_S, PacketCache


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


def test_a_packet_is_resent_at_most_once_per_interval_and_max_resends_times() -> None:
    cache = PacketCache(capacity=16)
    cache.put(7, packet(7))
    now = 100.0
    assert cache.get_for_resend(7, now) == packet(7)
    assert cache.get_for_resend(7, now + RESEND_INTERVAL_S / 2) is None, "asked again within the interval"
    sent = 1
    for i in range(1, 10):
        if cache.get_for_resend(7, now + i * RESEND_INTERVAL_S) is not None:
            sent += 1
    assert sent == MAX_RESENDS
    assert cache.get(7) == packet(7), "still cached: refused, not forgotten"


def test_a_new_packet_in_a_slot_starts_with_no_resends() -> None:
    cache = PacketCache(capacity=16)
    cache.put(3, packet(3))
    for i in range(MAX_RESENDS):
        assert cache.get_for_resend(3, float(i)) is not None
    cache.put(3 + 16, packet(3 + 16))
    assert cache.get_for_resend(3, 10.0) is None, "overwritten"
    assert cache.get_for_resend(3 + 16, 10.0) == packet(3 + 16)
    assert cache.get_for_resend(5, 10.0) is None, "never stored"
