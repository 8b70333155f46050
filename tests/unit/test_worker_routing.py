"""`--workers N` pieces that need no process: room placement and the merged /metrics exposition."""

from __future__ import annotations

from sfu.server.front import label_samples, merge_metrics
from sfu.server.ws_proxy import worker_for_room

WORKER_TEXT = """# HELP sfu_rooms Rooms open
# TYPE sfu_rooms gauge
sfu_rooms 2.0
# HELP sfu_rtp_packets_forwarded_total RTP packets forwarded
# TYPE sfu_rtp_packets_forwarded_total counter
sfu_rtp_packets_forwarded_total{kind="video"} 10.0
sfu_rtp_packets_forwarded_total{} 1.0
"""


def test_rooms_are_placed_by_a_stable_hash_over_all_workers() -> None:
    assert worker_for_room("demo", 1) == 0
    assert worker_for_room("demo", 2) == worker_for_room("demo", 2)
    assert worker_for_room("demo", 4) == 0xD642DFA0 % 4  # crc32: the same in every process and run
    placed = {worker_for_room(f"room-{i}", 4) for i in range(64)}
    assert placed == {0, 1, 2, 3}


def test_samples_get_a_worker_label() -> None:
    lines = [line for _, line in label_samples(WORKER_TEXT, 3)]
    assert 'sfu_rooms{worker="3"} 2.0' in lines
    assert 'sfu_rtp_packets_forwarded_total{worker="3",kind="video"} 10.0' in lines
    assert 'sfu_rtp_packets_forwarded_total{worker="3"} 1.0' in lines


def test_merged_exposition_declares_each_family_once_with_all_workers_samples() -> None:
    text = merge_metrics([(0, WORKER_TEXT), (1, WORKER_TEXT)])
    lines = text.splitlines()
    assert lines.count("# TYPE sfu_rooms gauge") == 1
    assert lines.count("# HELP sfu_rtp_packets_forwarded_total RTP packets forwarded") == 1
    rooms = lines.index("# TYPE sfu_rooms gauge")
    assert lines[rooms + 1:rooms + 3] == ['sfu_rooms{worker="0"} 2.0', 'sfu_rooms{worker="1"} 2.0']
    assert sum(1 for line in lines if line.startswith("sfu_rtp_packets_forwarded_total{")) == 4
