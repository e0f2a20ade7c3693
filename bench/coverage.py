"""Benchmark: coverage of every 95% interval `ops report` prints, by simulation, at --reps replications.

The cases are tests/test_report_coverage.py's (each says there what its interval claims to hold and
draws its data through the report's own functions: reward_stats on a results.jsonl, pooled,
over_runs, paired, compare_groups on run directories); here each runs --reps times (default 1,000)
and the table gives

  case | nominal | empirical coverage +/- 1.96 binomial SE | relative width

relative width: the mean interval width over 2 * 1.96 * the sd of (estimate - truth) across the
replications, the width of a correct interval (1 = as narrow as the truth allows; above 1 wider than
needed, below 1 too narrow). For the prediction interval the "estimate" is the three runs' mean and
the truth the new run's value; with k = 3 runs it is ~2 by design (t(0.975, 2) = 4.30 and an sd
from three values). Rows marked "false better" give how often the verdict called one of two
identical models better (nominal at most 5%). Rows "... read without clustering" are the same data
(same seed) with the clustering the case needs left out: what a report that stopped clustering
would print. report._power is stubbed as in the test (the power lines are not simulated; exact
McNemar's costs ~0.1 s a comparison).

    python bench/coverage.py [--reps 1000]

Last run (--reps 1000, 2 cores):

| case | nominal | empirical (+/- 1.96 SE) | relative width |
|---|---|---|---|
| run, 0/1 (Wilson), n=200 | 95% | 96.5% +/- 1.1% | 1.00 |
| run, 0/1 (Wilson), n=30 | 95% | 92.9% +/- 1.6% | 0.89 |
| run, beta scores (t), n=200 | 95% | 94.4% +/- 1.4% | 0.99 |
| run, beta scores (t), n=30 | 95% | 93.6% +/- 1.5% | 1.03 |
| run, 50 passages x 4 (clustered) | 95% | 95.5% +/- 1.3% | 1.05 |
| run, 50 passages x 4 (clustered), read without clustering | 95% | 84.1% +/- 2.3% | 0.73 |
| group, 3 seeds x 100 questions | 95% | 94.2% +/- 1.4% | 0.98 |
| group, 3 seeds x 100 questions, read without clustering | 95% | 83.3% +/- 2.3% | 0.70 |
| group, 3 seeds x 30 passages x 4 | 95% | 94.7% +/- 1.4% | 1.06 |
| group, 3 seeds x 30 passages x 4, read without clustering | 95% | 79.2% +/- 2.5% | 0.64 |
| group, pi95 of a 4th run (k=3) | 95% | 96.5% +/- 1.1% | 2.00 |
| paired, continuous (t), n=100 | 95% | 94.6% +/- 1.4% | 1.03 |
| paired, 0/1 (t interval), n=200 | 95% | 95.8% +/- 1.2% | 1.07 |
| paired, identical 0/1: McNemar | <= 5% | 3.8% +/- 1.2% | - |
| paired, identical continuous: t | <= 5% | 5.7% +/- 1.4% | - |
| compare_groups, 3 strata x 60 | 95% | 95.5% +/- 1.3% | 1.03 |
| compare_groups, 3 strata x 60, read without clustering | 95% | 87.8% +/- 2.0% | 0.82 |

1000 replications a case, 16 s

(Wilson n=30 below 93%: its exact coverage at p = 0.65 is 94.7% by binomial enumeration, other seeds
give 93.9-95.3%; the prediction interval at 20,000 replications: 95.0%.)
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_report_coverage as cases  # noqa: E402

from ops_tasks.operations import report  # noqa: E402


def row(name: str, kind: str, result: dict) -> str:
    rate, reps = result["rate"], result["reps"]
    margin = 1.96 * cases.binomial_se(rate, reps)
    nominal = "<= 5%" if kind == "false better" else f"{cases.NOMINAL:.0%}"
    width = "-" if result["width"] is None else f"{result['width']:.2f}"
    return f"| {name} | {nominal} | {rate:.1%} +/- {margin:.1%} | {width} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000)
    args = parser.parse_args()
    report._power = cases.without_power
    started = time.monotonic()
    lines = ["| case | nominal | empirical (+/- 1.96 SE) | relative width |", "|---|---|---|---|"]
    with cases.scratch_folder(Path.cwd()) as folder:
        for case in cases.CASES:
            lines.append(row(case.name, case.kind, cases.simulate(case.draw, args.reps, Path(folder),
                                                                  cases.seed_of(case))))
            print(lines[-1], file=sys.stderr, flush=True)
            if case.naive:
                lines.append(row(f"{case.name}, read without clustering", "coverage",
                                 cases.simulate(case.naive, args.reps, Path(folder), cases.seed_of(case))))
                print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    print(f"\n{args.reps} replications a case, {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
