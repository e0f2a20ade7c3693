"""Benchmark: `runs.cancel --submission` of 3,000 queued runs against `ssh HOST true`.

One real sshd pod on loopback. A first run holds the pod's only slot, so the 3,000 runs of the
second submission stay queued (nothing starts while they are cancelled). The cancel runs in
this process (`program.run`), so Python start-up is not counted. Printed: the cancel's time,
the median of `ssh HOST true` (one connection, one command) and their ratio. The queue is read
once per cancel, so the cost is linear in the runs (it was quadratic: 124 s for 3,000).

    python bench/cancel.py [--runs 3000]
"""

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import time
from pathlib import Path

from harness import ALIAS, bench_pod, timed

from ops_tasks.cli import program

OUTPUTS = "/mnt/pod_artifacts/bench-cancel"


def ops_json(*args) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        program.run(["ops", *args, "--host", ALIAS, "--json"], exit=False)
    return json.loads(out.getvalue())


def write_config(folder: Path, name: str, runs: list) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": OUTPUTS, "runs": runs}))
    return str(path)


def wait_until_running(pod, run_id: str) -> None:
    deadline = time.monotonic() + 30
    while '"pid"' not in pod.sh(f"cat {OUTPUTS}/{run_id}/status.json", check=False).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_id} did not start")
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="queued runs to cancel")
    args = parser.parse_args()

    with bench_pod() as (pod, client, folder):
        ssh_true = client.ssh_argv(ALIAS) + ["true"]
        subprocess.run(ssh_true, check=True)  # known_hosts
        holder = write_config(folder, "holder", [{"run_id": "holder", "command": "sleep 600"}])
        ops_json("runs.submit", "--config", holder)
        wait_until_running(pod, "holder")
        many = write_config(folder, "many", [{"run_id": "q_{seed}", "command": "true",
                                              "matrix": {"seed": list(range(args.runs))}}])
        submitted = ops_json("runs.submit", "--config", many)
        assert len(submitted["queued"]) == args.runs, submitted.get("error")

        true_s = statistics.median(timed(lambda: subprocess.run(ssh_true, check=True)) for _ in range(5))
        answer = {}
        cancel_s = timed(lambda: answer.update(ops_json("runs.cancel", "--submission", submitted["submission_id"])))
        cancelled = sum(r["state"] == "cancelled" for r in answer["runs"])
        assert cancelled == args.runs, answer.get("error")
        ops_json("runs.cancel", "--run-id", "holder", "--remote-outputs-dir", OUTPUTS)

    print(f"runs.cancel --submission of {args.runs} queued runs: {cancel_s:.2f}s")
    print(f"ssh HOST true (median of 5): {true_s:.3f}s")
    print(f"ratio cancel / ssh true: {cancel_s / true_s:.1f}")


if __name__ == "__main__":
    main()
