"""Benchmark: `runs.submit` of 20 and of 200 runs against `ssh HOST true` on the same pod.

One real sshd pod on loopback; each submission runs in this process (`program.run`), so Python
start-up is not counted. The runs' command is `true` and a fresh outputs root is used for every
round, so each round really queues every run (none is skipped as already done). Printed: the
medians and the ratios to `ssh HOST true` (one connection, one command). The seed's tool made
two SSH calls per run: 40 and 400 connections.

    python bench/runs_submit.py [--rounds 10]
"""

import argparse
import contextlib
import io
import json
import statistics
import subprocess
from pathlib import Path

from harness import ALIAS, bench_pod, timed

from ops_tasks.cli import program


def write_config(folder: Path, count: int) -> str:
    path = folder / f"runs{count}.json"
    path.write_text(json.dumps({
        "remote_repo": "/root", "defaults": {"command": "true"},
        "runs": [{"run_id": "bench_{seed}", "matrix": {"seed": list(range(count))}}],
    }))
    return str(path)


def submit(config: str, outputs: str) -> float:
    out = io.StringIO()

    def run():
        with contextlib.redirect_stdout(out):
            program.run(["ops", "runs.submit", "--host", ALIAS, "--config", config,
                         "--remote-outputs-dir", outputs, "--json"], exit=False)

    elapsed = timed(run)
    queued = len(json.loads(out.getvalue())["queued"])
    assert queued == int(Path(config).stem[4:]), out.getvalue()
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measurements of each side")
    args = parser.parse_args()

    with bench_pod() as (pod, client, folder):
        ssh_true = client.ssh_argv(ALIAS) + ["true"]
        configs = {n: write_config(folder, n) for n in (20, 200)}
        times = {"true": [], 20: [], 200: []}
        subprocess.run(ssh_true, check=True)  # known_hosts
        for round_ in range(args.rounds):
            times["true"].append(timed(lambda: subprocess.run(ssh_true, check=True)))
            for count, config in configs.items():
                times[count].append(submit(config, f"/mnt/bench/{count}-{round_}"))
        connections = pod.accepted_connections()

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"ssh HOST true             median {med['true']:7.1f} ms  ({args.rounds} rounds)")
    for count in (20, 200):
        print(f"runs.submit {count:3d} runs      median {med[count]:7.1f} ms   ratio {med[count] / med['true']:.2f}")
    print(f"SSH connections accepted: {connections} for {args.rounds} x (ssh true + 2 submissions)")


if __name__ == "__main__":
    main()
