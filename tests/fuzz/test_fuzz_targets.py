"""The fuzz targets in CI, bounded: every crash input found so far passes, then each target runs a
few thousand inputs under atheris (coverage-guided) from its seed corpus, or through a small
deterministic mutator where atheris is not installed. The long runs: benchmarks/fuzz_long.py."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.inputs import mutate
from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CI_RUNS = {"signaling": 4000, "sdp": 3000, "rtp": 4000, "rtcp": 4000, "session": 300}
HAVE_ATHERIS = importlib.util.find_spec("atheris") is not None


def regression_inputs() -> list[tuple[str, Path]]:
    return [(path.parent.name, path) for path in sorted((HERE / "regressions").glob("*/*"))]


@pytest.mark.parametrize(("target", "path"), regression_inputs(), ids=lambda v: getattr(v, "name", v))
def test_every_crash_the_fuzzers_found_stays_fixed(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(CI_RUNS))
def test_fuzz_target_runs_a_few_thousand_inputs_without_a_crash(target: str, tmp_path: Path) -> None:
    seeds = sorted((HERE / "corpus" / target).iterdir())
    assert seeds, f"{target} has a seed corpus"
    if not HAVE_ATHERIS:
        rng = random.Random(target)
        for seed in seeds:
            TARGETS[target](seed.read_bytes())
        for _ in range(CI_RUNS[target]):
            TARGETS[target](mutate(rng.choice(seeds).read_bytes(), rng))
        return
    result = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, f"-runs={CI_RUNS[target]}", "-seed=1",
         f"-artifact_prefix={tmp_path}/", str(tmp_path), str(HERE / "corpus" / target)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "Done" in result.stderr, result.stderr[-4000:]
