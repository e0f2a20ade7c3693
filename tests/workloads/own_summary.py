"""A user's own summary function (summary_from: python:own_summary:summarize) for tests/test_workloads.py:
it reads the run's answers.txt (one 0/1 per line) and returns (summary, results)."""

import os
import sys


def summarize(run_dir):
    with open(os.path.join(run_dir, "answers.txt")) as handle:
        scores = [float(line) for line in handle if line.strip()]
    results = [{"id": f"q{i}", "reward": score} for i, score in enumerate(scores)]
    summary = {"ok": True, "avg_reward": sum(scores) / len(scores), "num_examples": len(scores),
               "python": sys.executable}
    return summary, results
