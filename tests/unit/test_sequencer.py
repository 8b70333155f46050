"""Tests for sfu.media.sequencer: continuous outgoing seq/timestamp across wraparound, switches and drops."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.sequencer import Sequencer

FRAME_TICKS = 3000  # one frame at 30 fps on the 90 kHz video clock


def test_first_source_starts_at_initial_values() -> None:
    sequencer = Sequencer(initial_sequence_number=500, initial_timestamp=7000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (499, 7000)
    sequencer.switch_source(first_in_seq=10, first_in_ts=90000, ts_gap=FRAME_TICKS)
    assert sequencer.map(10, 90000) == (500, 7000)
    assert sequencer.map(11, 90000) == (501, 7000)
    assert sequencer.map(12, 93000) == (502, 10000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (502, 10000)


def test_map_before_switch_starts_first_source_at_that_packet() -> None:
    sequencer = Sequencer(100, 200)
    assert sequencer.map(9, 1000) == (100, 200)
    assert sequencer.map(8, 1000) is None
    assert sequencer.map(10, 4000) == (101, 3200)


def test_incoming_and_outgoing_sequence_numbers_wrap_at_65536() -> None:
    sequencer = Sequencer(65534, 0)
    sequencer.switch_source(65533, 0, FRAME_TICKS)
    out = [sequencer.map(seq & 0xFFFF, 0) for seq in range(65533, 65533 + 5)]
    assert [o[0] for o in out if o] == [65534, 65535, 0, 1, 2]
    assert sequencer.last_sequence_number == 2


def test_timestamps_wrap_at_2_pow_32() -> None:
    sequencer = Sequencer(0, 2**32 - 3000)
    sequencer.switch_source(0, 5, FRAME_TICKS)
    assert sequencer.map(0, 5) == (0, 2**32 - 3000)
    assert sequencer.map(1, 3005) == (1, 0)
    assert sequencer.map(2, 6005) == (2, 3000)
    assert sequencer.last_timestamp == 3000


def test_out_of_order_packets_map_with_constant_offset() -> None:
    sequencer = Sequencer(1000, 0)
    sequencer.switch_source(100, 0, FRAME_TICKS)
    assert sequencer.map(100, 0) == (1000, 0)
    assert sequencer.map(103, 6000) == (1003, 6000)
    assert sequencer.map(101, 3000) == (1001, 3000)
    assert sequencer.map(102, 3000) == (1002, 3000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (1003, 6000)


def test_packet_older_than_source_start_is_rejected_even_across_wraparound() -> None:
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(2, 0, FRAME_TICKS)
    assert sequencer.map(65534, 0) is None
    assert sequencer.map(1, 0) is None
    assert sequencer.map(3, 0) == (1, 0)
    assert sequencer.map(2, 0) == (0, 0)  # late first packet still maps


def test_long_running_source_keeps_mapping_past_half_the_sequence_space() -> None:
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(0, 0, FRAME_TICKS)
    for seq in range(70000):
        assert sequencer.map(seq & 0xFFFF, seq) == (seq & 0xFFFF, seq)


def test_switch_source_continues_seq_by_one_and_timestamp_by_gap() -> None:
    sequencer = Sequencer(40000, 1_000_000)
    sequencer.switch_source(5, 111, FRAME_TICKS)
    for i in range(10):
        sequencer.map(5 + i, 111 + (i // 2) * FRAME_TICKS)
    last_seq, last_ts = sequencer.last_sequence_number, sequencer.last_timestamp
    assert (last_seq, last_ts) == (40009, 1_000_000 + 4 * FRAME_TICKS)

    sequencer.switch_source(first_in_seq=60000, first_in_ts=4_000_000_000, ts_gap=FRAME_TICKS)
    assert sequencer.map(60000, 4_000_000_000) == (last_seq + 1, last_ts + FRAME_TICKS)
    assert sequencer.map(60001, 4_000_000_000 + 1500) == (last_seq + 2, last_ts + FRAME_TICKS + 1500)
    assert sequencer.map(59999, 4_000_000_000) is None  # predates the new source's first packet


def test_switch_before_anything_was_sent_keeps_initial_values() -> None:
    sequencer = Sequencer(7, 70)
    sequencer.switch_source(100, 1000, FRAME_TICKS)
    sequencer.switch_source(500, 9000, FRAME_TICKS)
    assert sequencer.map(500, 9000) == (7, 70)


def test_switch_to_same_source_again_keeps_stream_continuous() -> None:
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(10, 0, FRAME_TICKS)
    sequencer.map(10, 0)
    sequencer.map(11, 3000)
    sequencer.switch_source(12, 6000, 100)
    assert sequencer.map(12, 6000) == (2, 3100)


def test_switch_rejects_non_positive_gap() -> None:
    with pytest.raises(ValueError):
        Sequencer(0, 0).switch_source(0, 0, 0)


def test_drop_shifts_later_packets_down_so_there_is_no_gap() -> None:
    sequencer = Sequencer(100, 0)
    sequencer.switch_source(1, 0, FRAME_TICKS)
    assert sequencer.map(1, 0) == (100, 0)
    sequencer.drop(2)
    sequencer.drop(3)
    assert sequencer.map(4, 3000) == (101, 3000)
    sequencer.drop(5)
    assert sequencer.map(6, 6000) == (102, 6000)
    assert sequencer.last_sequence_number == 102


def test_drop_of_first_packet_after_switch() -> None:
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(65535, 0, FRAME_TICKS)
    sequencer.drop(65535)
    assert sequencer.map(0, 0) == (0, 0)
    assert sequencer.map(1, 0) == (1, 0)


def test_drop_of_old_or_repeated_sequence_number_is_ignored() -> None:
    sequencer = Sequencer(0, 0)
    sequencer.drop(5)  # no source yet: nothing to shift
    sequencer.switch_source(10, 0, FRAME_TICKS)
    sequencer.map(10, 0)
    sequencer.map(11, 0)
    sequencer.drop(11)
    sequencer.drop(9)
    assert sequencer.map(12, 0) == (2, 0)


@settings(max_examples=500, deadline=None)
@given(
    initial_seq=st.integers(0, 0xFFFF),
    initial_ts=st.integers(0, 0xFFFFFFFF),
    first_in_seq=st.integers(0, 0xFFFF),
    forwarded=st.lists(st.booleans(), min_size=1, max_size=300),
)
def test_in_order_stream_with_drops_is_contiguous(
    initial_seq: int, initial_ts: int, first_in_seq: int, forwarded: list[bool]
) -> None:
    sequencer = Sequencer(initial_seq, initial_ts)
    sequencer.switch_source(first_in_seq, 0, FRAME_TICKS)
    out_seqs = []
    for i, forward in enumerate(forwarded):
        in_seq = (first_in_seq + i) & 0xFFFF
        if forward:
            mapped = sequencer.map(in_seq, i * 10)
            assert mapped is not None and mapped[1] == (initial_ts + i * 10) & 0xFFFFFFFF
            out_seqs.append(mapped[0])
        else:
            sequencer.drop(in_seq)
    assert out_seqs == [(initial_seq + k) & 0xFFFF for k in range(len(out_seqs))]
