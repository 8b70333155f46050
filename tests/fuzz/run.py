"""Run one fuzz target under atheris (coverage-guided, libFuzzer flags after the target name):

    python -m tests.fuzz.run rtp -runs=1000000 /tmp/rtp-corpus tests/fuzz/corpus/rtp

libFuzzer writes new interesting inputs into the first corpus directory, so give it a scratch one
before the seed corpus. A crash is written as crash-<sha1> and the exit status is non-zero."""

from __future__ import annotations

import sys

import atheris


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.run TARGET [libFuzzer flags] [corpus dirs]")
    name = sys.argv[1]
    with atheris.instrument_imports(include=["sfu", "aiortc", "tests.fuzz"]):
        from tests.fuzz.targets import TARGETS
    if name not in TARGETS:
        raise SystemExit(f"unknown target {name!r}; one of {', '.join(TARGETS)}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
