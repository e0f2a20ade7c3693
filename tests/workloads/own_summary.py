"""A user's own summary function (summary_from: python:own_summary:summarize) for tests/test_workloads.py:
it reads the run's answers.txt (one 0/1 per line) and returns (summary, results); `hang` is one
that never returns (python:own_summary:hang), for the conversion's deadline."""

import os
import sys
import time


def summarize(run_dir):
    with open(os.path.join(run_dir, "answers.txt")) as handle:
        scores = [float(line) for line in handle if line.strip()]
    results = [{"id": f"q{i}", "reward": score} for i, score in enumerate(scores)]
    summary = {"ok": True, "avg_reward": sum(scores) / len(scores), "num_examples": len(scores),
               "python": sys.executable}
    return summary, results


def hang(run_dir):
    time.sleep(600)
