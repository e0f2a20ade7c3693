"""Benchmark: `ops report` and `ops report --compare` over two runs of many results lines
(../shared/cases/bad-day.md: two runs of 10 million lines took 360 s and 2.8 GB, --compare 376 s
and 4.7 GB), against the baseline of json.loads-ing every line of both files in one process.

Each measurement is a child process: its wall time, and its peak RSS (the largest of it and its
worker processes, from RUSAGE_CHILDREN). Prints the ratios to the baseline: the report's time
should stay a small multiple of the parsing it cannot avoid, and its memory flat in the lines.

    python bench/report_big.py [--lines 1000000] [--keep DIR]
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
BASELINE = """
import json, sys
for path in sys.argv[1:]:
    with open(path, 'rb') as handle:
        for line in handle:
            json.loads(line)
"""


def make_runs(root: Path, lines: int) -> list:
    paths = []
    for run_id, model in (("run-a", "m/a"), ("run-b", "m/b")):
        run = root / "artifacts" / "pod_logs" / run_id
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps({"ok": True, "model_id": model, "env_id": "t",
                                                      "avg_reward": 0.5, "num_examples": lines}))
        (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": model, "env_id": "t"}))
        rng = random.Random(run_id)
        with (run / "results.jsonl").open("w") as handle:
            for start in range(0, lines, 100_000):
                handle.write("".join('{"id": "q-%d", "reward": %d}\n' % (i, rng.random() < 0.5)
                                     for i in range(start, min(lines, start + 100_000))))
        paths.append(str(run / "results.jsonl"))
    return paths


def measure(argv: list, cwd: Path) -> tuple:
    """(seconds, peak RSS in MiB of the child and its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024  # RUSAGE_CHILDREN: the largest child so far (Linux KiB)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="results lines per run (1,000,000)")
    parser.add_argument("--keep", help="make the runs in this folder and keep them")
    options = parser.parse_args()
    folder = Path(options.keep or tempfile.mkdtemp(prefix="ops-bench-big-"))
    paths = make_runs(folder, options.lines) if not (folder / "artifacts").exists() else \
        [str(p) for p in sorted((folder / "artifacts" / "pod_logs").glob("*/results.jsonl"))]
    size = sum(os.path.getsize(p) for p in paths) / 2 ** 20
    print(f"two runs of {options.lines:,} lines ({size:.0f} MiB) in {folder}", flush=True)
    # Memory is measured in order of growth (RUSAGE_CHILDREN keeps the largest child so far).
    base_s, base_mib = measure([PYTHON, "-c", BASELINE, *paths], folder)
    print(f"baseline (json.loads of every line): {base_s:.1f} s, {base_mib:.0f} MiB", flush=True)
    ops = [str(Path(PYTHON).parent / "ops"), "report"]  # the installed command, as a user runs it
    for name, extra in (("report", []), ("report --compare", ["--compare", "run-a,run-b"])):
        seconds, mib = measure(ops + extra, folder)
        print(f"{name}: {seconds:.1f} s (ratio {seconds / base_s:.2f}), peak RSS so far {mib:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
