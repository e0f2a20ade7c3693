"""Benchmark: pod.status over a fleet of 8 pods against 1 pod, each pod 100 ms away.

Real sshd pods on loopback, each behind a DelayProxy holding every chunk 50 ms each way (a
100 ms round trip, a pod across the world). Measured twice: fleet.fan_out of the pod.status
operation in this process (connect, one round trip, judge, for every pod at once; each round
starts with no pooled connection, as a fresh `ops` would), and the whole task as a user runs
it, `ops pod.status --host <8 pods> --json` against `--host <1 pod>` (a new process each: the
wiring, the dry-run check of each pod before contact, the merged document). Prints the medians
and their ratios (target: at most 1.5). Then runs.submit as a user runs it: 400 runs onto 4 pods
(probe, placement, each pod's share) against 100 runs onto 1 pod (target: at most 2).

`--sweep` instead runs the issue's sweep: 200 sleep runs of random lengths (1-20 s, seeded) on 4
pods x 4 fake GPUs, submitted over the fleet (every run with one timeout, so placement cannot
tell long from short) and waited on (fleet_runs.steer), with and without rebalancing. Reported: GPU-slot
occupancy while any run is queued anywhere (target >= 90%) and the makespan against the ideal,
max(longest run, total run time / slots) (target <= 1.15). `--scale 0.1` shortens every run for
a quick check (the figures to report are at 1).

    python bench/fleet.py [--rounds 10] [--pods 8]
    python bench/fleet.py --sweep [--scale 1] [--runs 200]
"""

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from harness import timed

from ops_tasks import targets
from ops_tasks.fleet import fan_out, resolve_hosts
from ops_tasks.operations.fleet_runs import steer, submit_to_fleet
from ops_tasks.operations.pod import pod_status
from ops_tasks.operations.run_config import load_submission
from ops_tasks.operations.runs import new_submission_id
from ops_tasks.records import load_manifest
from ops_tasks.testing.delay_proxy import DelayProxy
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import ClientHome, SshPod

ONE_WAY_DELAY_S = 0.05


@contextlib.contextmanager
def far_pods(count: int):
    """Yield (aliases, folder): count real pods, each reached through its own delaying proxy."""
    with tempfile.TemporaryDirectory(prefix="ops-bench-fleet-") as tmp, contextlib.ExitStack() as stack:
        client = ClientHome(Path(tmp) / "client")
        os.environ.update(client.env())
        aliases = []
        for index in range(count):
            pod = SshPod(Path(tmp) / f"pod{index}", f"far{index}", client.public_key).start()
            stack.callback(pod.stop)
            proxy = stack.enter_context(DelayProxy(pod.port, delay_s=ONE_WAY_DELAY_S))
            client.add_alias(pod.name, SimpleNamespace(port=proxy.port, user=pod.user))
            aliases.append(pod.name)
        # Last in, first out: close the connections, then let the proxies see them end (an EOF is
        # delayed too) before they stop: a proxy stopped with connections open logs their cancel.
        stack.callback(time.sleep, 4 * ONE_WAY_DELAY_S + 0.3)
        stack.callback(targets.close_all)
        yield aliases, Path(tmp)


def status_round(profiles) -> None:
    targets.close_all()  # every round connects, as a new `ops pod.status` would
    result = fan_out(profiles, pod_status)
    assert result.ok, result.failed


def task_round(hosts: str, folder: Path) -> None:
    """One `ops pod.status` over these hosts, a process of its own, as a user runs it."""
    ops = Path(sys.executable).parent / "ops"
    done = subprocess.run([str(ops), "pod.status", "--host", hosts, "--json"], cwd=folder, capture_output=True)
    assert done.returncode == 0, done.stderr


SUBMIT_RUNS_PER_POD = 100
SUBMIT_PODS = 4


def submit_round(hosts: str, runs: int, folder: Path, label: str) -> None:
    """One `ops runs.submit` of `runs` quick runs into an outputs root of its own (nothing skipped)."""
    config = folder / f"{label}.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": f"/mnt/bench-{label}",
                                  "runs": [{"run_id": f"r{i:04d}", "command": "true"} for i in range(runs)]}))
    ops = Path(sys.executable).parent / "ops"
    done = subprocess.run([str(ops), "runs.submit", "--host", hosts, "--config", str(config), "--json"], cwd=folder,
                          capture_output=True)
    assert done.returncode == 0, done.stderr


SWEEP_PODS, SWEEP_GPUS = 4, 4
WRITE_SUMMARY = "printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\""


@contextlib.contextmanager
def gpu_pods(count: int, gpus: int):
    """Yield (aliases, folder): count real pods on loopback, each with this many fake GPUs."""
    with tempfile.TemporaryDirectory(prefix="ops-bench-sweep-") as tmp, contextlib.ExitStack() as stack:
        client = ClientHome(Path(tmp) / "client")
        os.environ.update(client.env())
        aliases = []
        for index in range(count):
            pod = SshPod(Path(tmp) / f"pod{index}", f"gpu{index}", client.public_key,
                         gpus=[gpu(i) for i in range(gpus)]).start()
            stack.callback(pod.stop)
            client.add_alias(pod.name, pod)
            aliases.append(pod.name)
        stack.callback(targets.close_all)
        yield aliases, Path(tmp)


def sweep_config(folder: Path, label: str, lengths: list) -> Path:
    """Sleep runs of these lengths, one GPU each, every one with the same timeout."""
    config = folder / f"{label}.json"
    timeout = 3 * max(lengths) + 30
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": f"/mnt/sweep-{label}", "runs": [
        {"run_id": f"s{i:03d}", "command": f"sleep {length:.2f}; {WRITE_SUMMARY}", "gpus": 1, "timeout": timeout}
        for i, length in enumerate(lengths)]}))
    return config


def sweep(aliases: list, folder: Path, lengths: list, *, rebalance: bool) -> dict:
    """Submit the sweep over the fleet and wait on it; occupancy and makespan from the runs' own times."""
    label = "rebalanced" if rebalance else "placed"
    config = sweep_config(folder, label, lengths)
    fleet = [targets.target_for(p) for p in resolve_hosts({}, ",".join(aliases), folder)]
    submissions = {t.profile.name: load_submission(config, profile=t.profile) for t in fleet}
    started = time.time()
    submitted = submit_to_fleet(fleet, submissions, submission_id=new_submission_id(), project_dir=folder,
                                config=str(config))
    assert submitted["ok"], submitted.get("error")
    document = steer(fleet, load_manifest(folder, submitted["submission_id"]), folder, rebalance=rebalance)
    assert document["ok"], document.get("error")
    runs = document["runs"]
    # From the first run queued on a pod (the laptop's submission itself is bench/fleet.py's other figure).
    started = min((r["queued_at"] for r in runs if isinstance(r.get("queued_at"), (int, float))), default=started)
    last_start = max(r["started"] for r in runs)  # the last moment a run was queued anywhere
    slots = SWEEP_PODS * SWEEP_GPUS
    busy = sum(max(0.0, min(r["finished"], last_start) - max(r["started"], started)) for r in runs)
    makespan = max(r["finished"] for r in runs) - started
    ideal = max(max(lengths), sum(lengths) / slots)
    return {"label": label, "occupancy": busy / (slots * (last_start - started)), "makespan": makespan,
            "ideal": ideal, "moves": len(document["moves"])}


def main_sweep(args) -> None:
    rng = random.Random(15)
    lengths = [rng.uniform(1, 20) * args.scale for _ in range(args.runs)]
    with gpu_pods(SWEEP_PODS, SWEEP_GPUS) as (aliases, folder):
        results = [sweep(aliases, folder, lengths, rebalance=flag) for flag in (False, True)]
    print(f"sweep: {args.runs} sleep runs of 1-20 s x {args.scale:g}, {SWEEP_PODS} pods x {SWEEP_GPUS} fake GPUs")
    for result in results:
        print(f"  {result['label']:10s}  occupancy while queued {result['occupancy']:6.1%} (target >= 90%)  "
              f"makespan {result['makespan']:6.1f} s / ideal {result['ideal']:6.1f} s = "
              f"{result['makespan'] / result['ideal']:.2f} (target <= 1.15)  moves {result['moves']}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measurements of each side (alternating)")
    parser.add_argument("--pods", type=int, default=8, help="pods in the fleet")
    parser.add_argument("--sweep", action="store_true", help="the sweep of sleep runs instead (occupancy, makespan)")
    parser.add_argument("--scale", type=float, default=1.0, help="with --sweep: each run's length times this")
    parser.add_argument("--runs", type=int, default=200, help="with --sweep: how many runs")
    args = parser.parse_args()
    if args.sweep:
        main_sweep(args)
        return

    with far_pods(max(args.pods, SUBMIT_PODS)) as (aliases, folder):
        one = resolve_hosts({}, aliases[0], folder)
        fleet = resolve_hosts({}, ",".join(aliases[:args.pods]), folder)
        status_round(fleet)  # warm up: known_hosts learns every key, imports
        single, many, task_single, task_many = [], [], [], []
        for _ in range(args.rounds):
            single.append(timed(lambda: status_round(one)))
            many.append(timed(lambda: status_round(fleet)))
            task_single.append(timed(lambda: task_round(aliases[0], folder)))
            task_many.append(timed(lambda: task_round(",".join(aliases[:args.pods]), folder)))
        submit_one, submit_many = [], []
        for index in range(args.rounds):
            submit_one.append(timed(lambda: submit_round(aliases[0], SUBMIT_RUNS_PER_POD, folder, f"one{index}")))
            submit_many.append(timed(lambda: submit_round(",".join(aliases[:SUBMIT_PODS]),
                                                          SUBMIT_RUNS_PER_POD * SUBMIT_PODS, folder, f"many{index}")))

    one_ms, many_ms = (statistics.median(xs) * 1000 for xs in (single, many))
    print(f"pod.status, 1 pod ({ONE_WAY_DELAY_S * 2000:.0f} ms away)   median {one_ms:7.1f} ms  ({args.rounds} rounds)")
    print(f"pod.status, {args.pods} pods (fan_out)        median {many_ms:7.1f} ms")
    print(f"ratio {args.pods} pods / 1 pod:                {many_ms / one_ms:.2f} (target <= 1.5)")
    task_one, task_all = (statistics.median(xs) * 1000 for xs in (task_single, task_many))
    print(f"ops pod.status, 1 pod                median {task_one:7.1f} ms")
    print(f"ops pod.status --host <{args.pods} pods>      median {task_all:7.1f} ms")
    print(f"ratio, the whole task:               {task_all / task_one:.2f} (target <= 1.5)")
    one_s, many_s = (statistics.median(xs) * 1000 for xs in (submit_one, submit_many))
    print(f"ops runs.submit, {SUBMIT_RUNS_PER_POD} runs onto 1 pod       median {one_s:7.1f} ms")
    print(f"ops runs.submit, {SUBMIT_RUNS_PER_POD * SUBMIT_PODS} runs onto {SUBMIT_PODS} pods      median {many_s:7.1f} ms")
    print(f"ratio:                               {many_s / one_s:.2f} (target <= 2)")


if __name__ == "__main__":
    main()
