"""Tests for sfu.media.sequencer: continuous outgoing seq/timestamp across wraparound, switches and drops.
Every test runs against the Python reference and the C sequencer of sfu._fastpath (which the
forwarding step uses when built), and a differential test drives both with the same random calls."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.media.sequencer import Sequencer as PySequencer

try:
    from sfu._fastpath import Sequencer as CSequencer  # type: ignore[import-not-found]
except ImportError:  # test_fastpath.py fails on this when the build should have made it
    CSequencer = None

IMPLEMENTATIONS = [PySequencer] + ([CSequencer] if CSequencer is not None else [])


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: "c" if cls is CSequencer else "python")
def Sequencer(request: pytest.FixtureRequest) -> Any:  # noqa: N802 - stands for the class under test
    return request.param

FRAME_TICKS = 3000  # one frame at 30 fps on the 90 kHz video clock


def test_first_source_starts_at_initial_values(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(initial_sequence_number=500, initial_timestamp=7000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (499, 7000)
    sequencer.switch_source(first_in_seq=10, first_in_ts=90000, ts_gap=FRAME_TICKS)
    assert sequencer.map(10, 90000) == (500, 7000)
    assert sequencer.map(11, 90000) == (501, 7000)
    assert sequencer.map(12, 93000) == (502, 10000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (502, 10000)


def test_map_before_switch_starts_first_source_at_that_packet(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(100, 200)
    assert sequencer.map(9, 1000) == (100, 200)
    assert sequencer.map(8, 1000) is None
    assert sequencer.map(10, 4000) == (101, 3200)


def test_incoming_and_outgoing_sequence_numbers_wrap_at_65536(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(65534, 0)
    sequencer.switch_source(65533, 0, FRAME_TICKS)
    out = [sequencer.map(seq & 0xFFFF, 0) for seq in range(65533, 65533 + 5)]
    assert [o[0] for o in out if o] == [65534, 65535, 0, 1, 2]
    assert sequencer.last_sequence_number == 2


def test_timestamps_wrap_at_2_pow_32(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 2**32 - 3000)
    sequencer.switch_source(0, 5, FRAME_TICKS)
    assert sequencer.map(0, 5) == (0, 2**32 - 3000)
    assert sequencer.map(1, 3005) == (1, 0)
    assert sequencer.map(2, 6005) == (2, 3000)
    assert sequencer.last_timestamp == 3000


def test_out_of_order_packets_map_with_constant_offset(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(1000, 0)
    sequencer.switch_source(100, 0, FRAME_TICKS)
    assert sequencer.map(100, 0) == (1000, 0)
    assert sequencer.map(103, 6000) == (1003, 6000)
    assert sequencer.map(101, 3000) == (1001, 3000)
    assert sequencer.map(102, 3000) == (1002, 3000)
    assert (sequencer.last_sequence_number, sequencer.last_timestamp) == (1003, 6000)


def test_packet_older_than_source_start_is_rejected_even_across_wraparound(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(2, 0, FRAME_TICKS)
    assert sequencer.map(65534, 0) is None
    assert sequencer.map(1, 0) is None
    assert sequencer.map(3, 0) == (1, 0)
    assert sequencer.map(2, 0) == (0, 0)  # late first packet still maps


def test_long_running_source_keeps_mapping_past_half_the_sequence_space(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(0, 0, FRAME_TICKS)
    for seq in range(70000):
        assert sequencer.map(seq & 0xFFFF, seq) == (seq & 0xFFFF, seq)


def test_switch_source_continues_seq_by_one_and_timestamp_by_gap(Sequencer: Any) -> None:  # noqa: N803
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


def test_switch_before_anything_was_sent_keeps_initial_values(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(7, 70)
    sequencer.switch_source(100, 1000, FRAME_TICKS)
    sequencer.switch_source(500, 9000, FRAME_TICKS)
    assert sequencer.map(500, 9000) == (7, 70)


def test_switch_to_same_source_again_keeps_stream_continuous(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(10, 0, FRAME_TICKS)
    sequencer.map(10, 0)
    sequencer.map(11, 3000)
    sequencer.switch_source(12, 6000, 100)
    assert sequencer.map(12, 6000) == (2, 3100)


def test_switch_rejects_non_positive_gap(Sequencer: Any) -> None:  # noqa: N803
    with pytest.raises(ValueError):
        Sequencer(0, 0).switch_source(0, 0, 0)


def test_drop_shifts_later_packets_down_so_there_is_no_gap(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(100, 0)
    sequencer.switch_source(1, 0, FRAME_TICKS)
    assert sequencer.map(1, 0) == (100, 0)
    sequencer.drop(2)
    sequencer.drop(3)
    assert sequencer.map(4, 3000) == (101, 3000)
    sequencer.drop(5)
    assert sequencer.map(6, 6000) == (102, 6000)
    assert sequencer.last_sequence_number == 102


def test_drop_of_first_packet_after_switch(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 0)
    sequencer.switch_source(65535, 0, FRAME_TICKS)
    sequencer.drop(65535)
    assert sequencer.map(0, 0) == (0, 0)
    assert sequencer.map(1, 0) == (1, 0)


def test_drop_of_old_or_repeated_sequence_number_is_ignored(Sequencer: Any) -> None:  # noqa: N803
    sequencer = Sequencer(0, 0)
    sequencer.drop(5)  # no source yet: nothing to shift
    sequencer.switch_source(10, 0, FRAME_TICKS)
    sequencer.map(10, 0)
    sequencer.map(11, 0)
    sequencer.drop(11)
    sequencer.drop(9)
    assert sequencer.map(12, 0) == (2, 0)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    initial_seq=st.integers(0, 0xFFFF),
    initial_ts=st.integers(0, 0xFFFFFFFF),
    first_in_seq=st.integers(0, 0xFFFF),
    forwarded=st.lists(st.booleans(), min_size=1, max_size=300),
)
def test_in_order_stream_with_drops_is_contiguous(
    Sequencer: Any,  # noqa: N803
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


_OPS = st.lists(st.one_of(
    st.tuples(st.just("map"), st.integers(-5, 0x1FFFF), st.integers(-5, 2**33)),
    st.tuples(st.just("switch"), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(-1, 10**6)),
    st.tuples(st.just("drop"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("near"), st.integers(-40, 40)),  # map close to the highest seen: the common case
), max_size=200)


@pytest.mark.skipif(CSequencer is None, reason="sfu._fastpath not built")
@settings(max_examples=400, deadline=None)
@given(initial_seq=st.integers(0, 0xFFFF), initial_ts=st.integers(0, 0xFFFFFFFF), ops=_OPS)
def test_c_sequencer_behaves_like_the_python_one(initial_seq: int, initial_ts: int, ops: list[tuple[Any, ...]]) -> None:
    python, c = PySequencer(initial_seq, initial_ts), CSequencer(initial_seq, initial_ts)
    last_in = 0
    for op in ops:
        if op[0] == "switch":
            if op[3] <= 0:
                with pytest.raises(ValueError):
                    python.switch_source(op[1], op[2], op[3])
                with pytest.raises(ValueError):
                    c.switch_source(op[1], op[2], op[3])
                continue
            python.switch_source(op[1], op[2], op[3])
            c.switch_source(op[1], op[2], op[3])
            last_in = op[1]
        elif op[0] == "drop":
            python.drop(op[1])
            c.drop(op[1])
        else:
            if op[0] == "map":
                seq, ts = op[1] & 0xFFFF, op[2] & 0xFFFFFFFF
            else:
                seq, ts = (last_in + op[1]) & 0xFFFF, last_in * 7
            assert c.map(seq, ts) == python.map(seq, ts), op
            last_in = seq
        assert (c.last_sequence_number, c.last_timestamp) == (python.last_sequence_number, python.last_timestamp), op
