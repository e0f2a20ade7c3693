"""Benchmark: `runs.submit` of 20 runs and one `runs.status` against `ssh HOST true` on the same
pod, 100 ms away, with the bytes the laptop sends per call; or, with --delay-ms 0, `runs.submit`
of 20 and of 200 runs on loopback.

One real sshd pod on loopback; each submission and status call runs in this process
(`program.run`), so Python start-up is not counted. The runs' command is `true` and a fresh
outputs root is used for every round, so each round really queues every run (none is skipped as
already done); `runs.status` (no flags: the latest submission) then reads that round's 20 runs.

With --delay-ms N (default 100) the pod is reached through ops_tasks/testing/delay_proxy.py's
DelayProxy holding every chunk N/2 ms each way (an N ms round trip), counting the bytes it
passes (bench/runs_bytes.py; the proxy runs in a child process). `ssh HOST true` goes through
the same proxy. Printed: the medians, their ratios to `ssh HOST true`, and the bytes sent
laptop -> pod per call (client -> server at the proxy; the whole call: key exchange,
authentication, scripts), with what came back.

With --delay-ms 0 there is no proxy (and no byte count): the medians of `ssh HOST true`, of
`runs.submit` of 20 and of 200 runs and of `runs.status`, with their ratios. The seed's tool
made two SSH calls per run: 40 and 400 connections.

    python bench/runs_submit.py [--rounds 10] [--delay-ms 100]
"""

import argparse
import contextlib
import io
import json
import statistics
import subprocess
from pathlib import Path
from types import SimpleNamespace

from harness import ALIAS, bench_pod, timed

import ops_tasks
from ops_tasks.cli import program

FAR = "benchfar"  # the pod through the delaying proxy


def write_config(folder: Path, count: int) -> str:
    path = folder / f"runs{count}.json"
    path.write_text(json.dumps({
        "remote_repo": "/root", "defaults": {"command": "true"},
        "runs": [{"run_id": "bench_{seed}", "matrix": {"seed": list(range(count))}}],
    }))
    return str(path)


def ops_json(argv: list) -> dict:
    """One `ops` call in this process; its --json document."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        program.run(["ops", *argv, "--json"], exit=False)
    return json.loads(out.getvalue())


def submit(config: str, outputs: str, host: str = ALIAS) -> float:
    report = {}

    def run():
        report.update(ops_json(["runs.submit", "--host", host, "--config", config, "--remote-outputs-dir", outputs]))

    elapsed = timed(run)
    assert len(report["queued"]) == int(Path(config).stem[4:]), report
    return elapsed


def status(runs: int, host: str = ALIAS) -> float:
    """One `runs.status` of the latest submission (no flags), which has `runs` runs."""
    report = {}
    elapsed = timed(lambda: report.update(ops_json(["runs.status", "--host", host])))
    assert len(report["runs"]) == runs, report
    return elapsed


def kb(count: float) -> str:
    return f"{count / 1000:7.2f} KB ({count:,.0f} B)"


def loopback_main(args) -> None:
    """No proxy: the script's original measurement, plus one runs.status."""
    with bench_pod() as (pod, client, folder):
        ssh_true = client.ssh_argv(ALIAS) + ["true"]
        configs = {n: write_config(folder, n) for n in (20, 200)}
        times = {"true": [], 20: [], "status": [], 200: []}
        subprocess.run(ssh_true, check=True)  # known_hosts
        for round_ in range(args.rounds):
            times["true"].append(timed(lambda: subprocess.run(ssh_true, check=True)))
            times[20].append(submit(configs[20], f"/mnt/bench/20-{round_}"))
            times["status"].append(status(20))
            times[200].append(submit(configs[200], f"/mnt/bench/200-{round_}"))
        connections = pod.accepted_connections()

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"ssh HOST true             median {med['true']:7.1f} ms  ({args.rounds} rounds)")
    for count in (20, 200):
        print(f"runs.submit {count:3d} runs      median {med[count]:7.1f} ms   ratio {med[count] / med['true']:.2f}")
    print(f"runs.status (20 runs)     median {med['status']:7.1f} ms   ratio {med['status'] / med['true']:.2f}")
    print(f"SSH connections accepted: {connections} for {args.rounds} x (ssh true + 2 submissions + 1 status)")


def far_main(args) -> None:
    from runs_bytes import ProxyProcess

    with bench_pod() as (pod, client, folder), \
            ProxyProcess(pod.port, delay_s=args.delay_ms / 2000) as proxy:
        client.add_alias(FAR, SimpleNamespace(port=proxy.port, user=pod.user))
        ssh_true = client.ssh_argv(FAR) + ["true"]
        config = write_config(folder, 20)
        subprocess.run(ssh_true, check=True)  # known_hosts

        sides = ("true", "submit", "status")
        times = {side: [] for side in sides}
        sent = {side: [] for side in sides}
        received = {side: [] for side in sides}
        connections = {side: [] for side in sides}

        def measure(side, action):
            before = proxy.settle()
            times[side].append(action())
            after = proxy.settle()
            sent[side].append(after.sent - before.sent)
            received[side].append(after.received - before.received)
            connections[side].append(after.connections - before.connections)

        for round_ in range(args.rounds):
            measure("true", lambda: timed(lambda: subprocess.run(ssh_true, check=True)))
            measure("submit", lambda: submit(config, f"/mnt/bench/far20-{round_}", host=FAR))
            measure("status", lambda: status(20, host=FAR))
        if not statistics.median(sent["true"]):
            raise RuntimeError("the proxy counted no bytes of ssh HOST true: bench/runs_bytes.py's counting is broken")

    med = {side: statistics.median(times[side]) * 1000 for side in sides}
    labels = {"true": "ssh HOST true", "submit": "runs.submit 20 runs", "status": "runs.status (20 runs)"}
    print(f"pod behind a delaying proxy: {args.delay_ms:g} ms round trip; {args.rounds} rounds, medians")
    for side in sides:
        ratio = "" if side == "true" else f"ratio {med[side] / med['true']:5.2f}"
        print(f"{labels[side]:<22} {med[side]:8.1f} ms  {ratio:<11}  "
              f"sent {kb(statistics.median(sent[side]))}  received {kb(statistics.median(received[side]))}")
    per_call = ", ".join(f"{labels[side]} {min(connections[side])}-{max(connections[side])}" for side in sides)
    print(f"connections through the proxy per call: {per_call}")
    spread = ", ".join(f"{labels[side]} {min(sent[side]):,}-{max(sent[side]):,} B" for side in sides)
    print(f"bytes sent per call, min-max over rounds: {spread}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measurements of each side")
    parser.add_argument("--delay-ms", type=float, default=100,
                        help="round trip the delaying proxy adds (default 100); 0: no proxy, 20 and 200 runs")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms cannot be negative")
    print(f"ops_tasks imported from {Path(ops_tasks.__file__).parent}")
    if args.delay_ms:
        far_main(args)
    else:
        loopback_main(args)


if __name__ == "__main__":
    main()
