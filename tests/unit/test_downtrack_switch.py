"""DownTrack layer switching over bytes: switch only at a keyframe of the target layer, with the
subscriber's sequence numbers, timestamps and VP8 picture ids continuous across it."""

from __future__ import annotations

import struct

from sfu.media.downtrack import DownTrack, OutStream
from sfu.media.relay import TrackRelay


class Capture:
    connected = True

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def write(self, data: bytes) -> bool:
        self.packets.append(data)
        return True


def vp8_packet(ssrc: int, seq: int, ts: int, picture_id: int, tl0: int, keyframe: bool, marker: bool = True) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq, ts & 0xFFFFFFFF, ssrc)
    descriptor = bytes([0x90, 0xC0, 0x80 | (picture_id >> 8), picture_id & 0xFF, tl0])
    vp8_header = bytes([0x00 if keyframe else 0x01, 0, 0]) + b"\x9d\x01\x2a" + b"\x40\x01\xb4\x00"
    return header + descriptor + vp8_header + b"\x00" * 20


def parsed(packet: bytes) -> tuple[int, int, int, int]:
    seq, ts = struct.unpack_from("!HI", packet, 2)
    picture_id = (packet[14] & 0x7F) << 8 | packet[15]
    return seq, ts, picture_id, packet[16]


def make_downtrack() -> tuple[DownTrack, list[TrackRelay], Capture]:
    layers = [TrackRelay("video", lambda ssrc: None) for _ in range(3)]
    for relay, rid in zip(layers, "qhf", strict=True):
        relay.rid = rid
        relay.update_codecs({96: "video/vp8"})
    writer = Capture()
    downtrack = DownTrack(layers, OutStream(0xABCD, None, writer), "sub")
    downtrack.layer_index = 2
    downtrack.configure({"video/vp8": 100}, None, {}, 90000)
    return downtrack, layers, writer


def feed(relay: TrackRelay, ssrc: int, start_seq: int, start_ts: int, start_pid: int, tl0: int,
         count: int, keyframe_at: int | None = None) -> None:
    for i in range(count):
        relay.forward(vp8_packet(ssrc, (start_seq + i) & 0xFFFF, start_ts + 3000 * i, (start_pid + i) & 0x7FFF,
                                 (tl0 + i) & 0xFF, keyframe=i == keyframe_at))


def assert_continuous(packets: list[bytes]) -> None:
    fields = [parsed(p) for p in packets]
    for (seq_a, ts_a, pid_a, tl0_a), (seq_b, ts_b, pid_b, tl0_b) in zip(fields, fields[1:], strict=False):
        assert seq_b == (seq_a + 1) & 0xFFFF, f"sequence gap {seq_a} -> {seq_b}"
        assert 0 < (ts_b - ts_a) & 0xFFFFFFFF < 90000, f"timestamp jump {ts_a} -> {ts_b}"
        assert pid_b == (pid_a + 1) & 0x7FFF, f"picture id gap {pid_a} -> {pid_b}"
        assert tl0_b == (tl0_a + 1) & 0xFF, f"tl0picidx gap {tl0_a} -> {tl0_b}"


def test_first_packet_forwarded_is_a_keyframe_of_the_wanted_layer() -> None:
    downtrack, layers, writer = make_downtrack()
    feed(layers[2], 3, 100, 1000, 50, 5, count=5, keyframe_at=3)
    assert len(writer.packets) == 2  # packets before the keyframe were held back
    assert parsed(writer.packets[0])[2] == 53  # picture ids are the layer's own until a switch


def test_switch_waits_for_the_target_keyframe_and_stays_continuous() -> None:
    downtrack, layers, writer = make_downtrack()
    feed(layers[2], 3, 65530, 4_294_960_000, 32760, 250, count=10, keyframe_at=0)  # wraps seq/ts/pid
    downtrack.select_layer(0)
    # the old layer keeps flowing until the target layer's keyframe; the target's delta frames are held
    feed(layers[0], 1, 7000, 500_000, 9000, 77, count=3)
    feed(layers[2], 3, 4, 4_294_990_000 & 0xFFFFFFFF, 2, 4, count=2)
    feed(layers[0], 1, 7003, 509_000, 9003, 80, count=6, keyframe_at=0)
    feed(layers[2], 3, 6, 5000, 4, 6, count=3)  # after the switch: the old layer is no longer forwarded
    assert len(writer.packets) == 10 + 2 + 6
    assert_continuous(writer.packets)
    assert downtrack.current is layers[0] and downtrack.target is None
    assert downtrack not in layers[2].downtracks


def test_switch_up_and_down_repeatedly_never_breaks_the_stream() -> None:
    downtrack, layers, writer = make_downtrack()
    seq = {0: 100, 1: 2000, 2: 40000}
    feed(layers[2], 3, seq[2], 0, 100, 0, count=4, keyframe_at=0)
    seq[2] += 4
    for step, index in enumerate([0, 1, 2, 1, 0, 2]):
        downtrack.select_layer(index)
        feed(layers[index], index + 1, seq[index], 90000 * step, 1000 * index + 10 * step, step, count=4, keyframe_at=0)
        seq[index] += 4
    assert len(writer.packets) == 4 + 6 * 4
    assert_continuous(writer.packets)


def test_pause_stops_forwarding_and_resume_starts_at_a_keyframe() -> None:
    downtrack, layers, writer = make_downtrack()
    feed(layers[2], 3, 0, 0, 0, 0, count=3, keyframe_at=0)
    downtrack.select_layer(None)
    feed(layers[2], 3, 3, 9000, 3, 3, count=5, keyframe_at=2)
    assert len(writer.packets) == 3 and all(downtrack not in r.downtracks for r in layers)
    downtrack.select_layer(1)
    feed(layers[1], 2, 50, 70000, 700, 9, count=4, keyframe_at=1)
    assert len(writer.packets) == 3 + 3
    assert_continuous(writer.packets)


def test_a_bandwidth_down_switch_stops_the_old_layer_at_once() -> None:
    downtrack, layers, writer = make_downtrack()
    feed(layers[2], 3, 0, 0, 0, 0, count=3, keyframe_at=0)
    downtrack.select_layer(0, drop_current=True)
    feed(layers[2], 3, 3, 9000, 3, 3, count=4)  # the old layer no longer reaches the subscriber
    assert len(writer.packets) == 3
    feed(layers[0], 1, 500, 50000, 70, 7, count=3, keyframe_at=0)
    assert len(writer.packets) == 6
    assert_continuous(writer.packets)


def test_nacks_for_packets_of_a_previous_layer_are_not_answered() -> None:
    downtrack, layers, writer = make_downtrack()
    feed(layers[2], 3, 0, 0, 0, 0, count=5, keyframe_at=0)
    old = [struct.unpack_from("!H", p, 2)[0] for p in writer.packets]
    downtrack.select_layer(0, drop_current=True)
    feed(layers[0], 1, 900, 70000, 40, 4, count=3, keyframe_at=0)
    new = [struct.unpack_from("!H", p, 2)[0] for p in writer.packets[5:]]
    sent = len(writer.packets)
    downtrack.on_nack(old + new)
    assert len(writer.packets) == sent + len(new), "only the current layer's packets are resent"
