"""Turning fuzzer bytes into structured inputs (so every target takes plain bytes, from atheris or
from the small deterministic mutator CI falls back to without atheris)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")

INTERESTING_INTS = (0, 1, -1, 127, 128, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
                    2**63, 10**30, -(2**63))
INTERESTING_TEXT = ("", " ", "a" * 129, "\x00", "é", "\ud7ff", "🙂" * 40, "v=0", "candidate:", "TR_", "PA_",
                    "../../etc/passwd", "%s%s%n", "${jndi:x}", "\r\n", "<script>")
MAX_DEPTH = 64


class Bytes:
    """Reads decisions from fuzzer bytes; when the bytes run out every answer is 0."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, high: int) -> int:
        """0 <= n < high."""
        return (self.byte() << 8 | self.byte()) % high if high > 0 else 0

    def choice(self, options: Sequence[T]) -> T:
        return options[self.int(len(options))]

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def text(self, max_chars: int = 64) -> str:
        n = self.int(max_chars + 1)
        return self.data[self.pos:self.pos + n].decode("utf-8", "replace") if self.flag() else \
            self.choice(INTERESTING_TEXT)

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, wrong types included, nested at most MAX_DEPTH deep."""
        kind = self.int(10)
        if kind == 0:
            return None
        if kind == 1:
            return self.flag()
        if kind == 2:
            return self.choice(INTERESTING_INTS)
        if kind == 3:
            return self.choice((0.5, -0.0, 1e308, float("inf"), float("nan")))
        if kind in (4, 5):
            return self.text()
        if kind == 6:  # huge strings, rarely: they dominate the time of an input
            return "x" * self.choice((1000, 70_000, 300_000)) if self.byte() == 0x42 else self.text()
        if depth >= MAX_DEPTH:
            return []
        if kind == 7:
            return [self.value(depth + 1) for _ in range(self.int(4))]
        return {self.text(8): self.value(depth + 1) for _ in range(self.int(4))}


def mutate(seed: bytes, rng: random.Random, max_size: int = 4096) -> bytes:
    """One libFuzzer-like mutation: bit flip, byte set, insert, erase, duplicate a span, or an
    interesting value; the fallback when atheris is not installed."""
    data = bytearray(seed or b"\x00")
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and len(data) > 1:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 4 and data:
            end = min(len(data), pos + rng.randint(1, 64))
            data[pos:pos] = data[pos:end]
        elif op == 5 and len(data) >= 2:
            data[pos:pos + 2] = rng.choice((b"\xff\xff", b"\x00\x00", b"\x7f\xff", b"\x80\x00"))
    return bytes(data[:max_size])
