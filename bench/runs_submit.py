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
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_tasks.cli import program  # noqa: E402
from ops_tasks.testing.pods import ClientHome, SshPod  # noqa: E402


def write_config(folder: Path, count: int) -> str:
    path = folder / f"runs{count}.json"
    path.write_text(json.dumps({
        "remote_repo": "/root", "defaults": {"command": "true"},
        "runs": [{"run_id": "bench_{seed}", "matrix": {"seed": list(range(count))}}],
    }))
    return str(path)


def submit(config: str, outputs: str) -> float:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        program.run(["ops", "runs.submit", "--host", "benchpod", "--config", config,
                     "--remote-outputs-dir", outputs, "--json"], exit=False)
    elapsed = time.perf_counter() - started
    queued = len(json.loads(out.getvalue())["queued"])
    assert queued == int(Path(config).stem[4:]), out.getvalue()
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measurements of each side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        client = ClientHome(Path(tmp) / "client")
        pod = SshPod(Path(tmp) / "pod", "benchpod", client.public_key).start()
        client.add_alias("benchpod", pod)
        os.environ.update(client.env())
        os.chdir(tmp)
        ssh_true = client.ssh_argv("benchpod") + ["true"]
        configs = {n: write_config(Path(tmp), n) for n in (20, 200)}
        times = {"true": [], 20: [], 200: []}
        try:
            subprocess.run(ssh_true, check=True)  # known_hosts
            for round_ in range(args.rounds):
                started = time.perf_counter()
                subprocess.run(ssh_true, check=True)
                times["true"].append(time.perf_counter() - started)
                for count, config in configs.items():
                    times[count].append(submit(config, f"/mnt/bench/{count}-{round_}"))
            connections = pod.accepted_connections()
        finally:
            pod.stop()

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"ssh HOST true             median {med['true']:7.1f} ms  ({args.rounds} rounds)")
    for count in (20, 200):
        print(f"runs.submit {count:3d} runs      median {med[count]:7.1f} ms   ratio {med[count] / med['true']:.2f}")
    print(f"SSH connections accepted: {connections} for {args.rounds} x (ssh true + 2 submissions)")


if __name__ == "__main__":
    main()
