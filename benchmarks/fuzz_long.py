"""The long fuzzing run behind benchmarks/results/fuzz.md: each target under atheris for a fixed
number of inputs, one after the other (one core), from the committed seed corpus.

    python benchmarks/fuzz_long.py [--runs 1000000] [--session-runs 100000] [--out DIR] [targets...]

Prints one Markdown table row per target (target, inputs executed, seconds, exec/s, crashes,
final coverage); crash inputs are left in OUT/<target>/ as crash-<sha1>."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
TARGETS = ("signaling", "sdp", "rtp", "rtcp", "session")


def run_target(target: str, runs: int, out: Path) -> dict[str, object]:
    work = out / target
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    log = work / "fuzz.log"
    started = time.monotonic()
    with log.open("w") as logf:
        code = subprocess.call(
            [sys.executable, "-m", "tests.fuzz.run", target, f"-runs={runs}", "-seed=1", "-print_final_stats=1",
             f"-artifact_prefix={work}/", str(work / "corpus"), str(CORPUS / target)],
            cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    elapsed_s = time.monotonic() - started
    text = log.read_text(errors="replace")
    done = re.search(r"Done (\d+) runs in (\d+) second", text)
    executed = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    return {"target": target, "runs": int(done.group(1)) if done else int(executed[-1]) if executed else 0,
            "seconds": round(elapsed_s), "exit": code, "crashes": len(list(work.glob("crash-*"))),
            "cov": cov[-1][0] if cov else "?", "ft": cov[-1][1] if cov else "?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--session-runs", type=int, default=100_000,
                        help="the session target plays whole connections (~100 inputs/s)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sfu-fuzz-long"))
    parser.add_argument("targets", nargs="*", default=list(TARGETS))
    args = parser.parse_args()
    print("| target | inputs executed | seconds | inputs/s | crashes | coverage (cov/ft) |")
    print("|---|---|---|---|---|---|")
    for target in args.targets:
        row = run_target(target, args.session_runs if target == "session" else args.runs, args.out)
        rate = int(row["runs"]) // max(1, int(row["seconds"]))  # type: ignore[call-overload]
        print(f"| {row['target']} | {row['runs']:,} | {row['seconds']} | {rate:,} | {row['crashes']} "
              f"| {row['cov']}/{row['ft']} |", flush=True)


if __name__ == "__main__":
    main()
