"""The C Vp8Munger (sfu._fastpath, used by simulcast downtracks when built) against the Python
reference in sfu.media.vp8: the same calls give the same bytes and the same continuity."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.media.vp8 import Vp8Munger as PyVp8Munger

try:
    from sfu._fastpath import Vp8Munger as CVp8Munger  # type: ignore[import-not-found]
except ImportError:  # tests/integration/test_fastpath.py fails on this when the build should have made it
    CVp8Munger = None

pytestmark = pytest.mark.skipif(CVp8Munger is None, reason="sfu._fastpath not built")


def descriptor(picture_id: int, tl0: int, long_id: bool = True) -> bytes:
    """RFC 7741 §4.2: X, then I and L, a 15- or 7-bit picture id and TL0PICIDX, then a payload."""
    ids = bytes([0x80 | picture_id >> 8, picture_id & 0xFF]) if long_id else bytes([picture_id & 0x7F])
    return bytes([0x90, 0xC0]) + ids + bytes([tl0]) + b"\x00" * 8


def test_layer_switch_continues_picture_ids_like_the_reference() -> None:
    outputs = []
    for cls in (PyVp8Munger, CVp8Munger):
        munger: Any = cls()
        sent = []
        for first_pid, first_tl0 in ((100, 7), (30000, 200), (5, 255)):
            munger.switch_source(descriptor(first_pid, first_tl0), 0)
            for i in range(5):
                buf = bytearray(descriptor((first_pid + i) & 0x7FFF, (first_tl0 + i) & 0xFF))
                munger.munge(buf, 0)
                sent.append(bytes(buf))
        outputs.append(sent)
    assert outputs[0] == outputs[1]
    picture_ids = [(p[2] & 0x7F) << 8 | p[3] for p in outputs[1]]
    assert picture_ids == [(100 + i) & 0x7FFF for i in range(15)]  # continuous across both switches


_STEP = st.tuples(st.booleans(), st.binary(max_size=12), st.integers(0, 0x7FFF), st.integers(0, 255),
                  st.booleans(), st.integers(0, 3))


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(_STEP, max_size=60))
def test_c_munger_behaves_like_the_python_one(steps: list[tuple[bool, bytes, int, int, bool, int]]) -> None:
    python, c = PyVp8Munger(), CVp8Munger()
    for switch, noise, picture_id, tl0, long_id, cut in steps:
        packet = (descriptor(picture_id, tl0, long_id) if not noise else noise + descriptor(picture_id, tl0))
        packet = packet[: max(0, len(packet) - cut)] if cut else packet  # truncated descriptors too
        offset = len(noise) if noise else 0
        if switch:
            python.switch_source(packet, offset)
            c.switch_source(packet, offset)
        a, b = bytearray(packet), bytearray(packet)
        python.munge(a, offset)
        c.munge(b, offset)
        assert a == b
