"""Benchmark: the laptop's memory while `runs.logs --follow` streams a big log.

One real sshd pod on loopback. A run says `ready`, waits for a go file, then writes a log of --mb
megabytes (text lines); the laptop side of `runs.logs --follow` (the SSH target and the pod's
follow loop, the stream handed to a sink that counts and keeps nothing) follows it from
before its first byte, in a subprocess. So does a run with a one-line log, the baseline. Printed:
each one's peak RSS (the child's own, from wait4) and their difference (what the big log added:
it should stay flat, the stream is never kept), the big follow's time and that of
`ssh HOST cat LOG` over OpenSSH, and their ratio. The terminal's printing (output.LineEmitter)
is not measured: it is the CLI's, and has its own cost per line.

    python bench/follow.py [--mb 200]

(tests/test_faults_link.py runs its `follow` mode for the same measure on a smaller log.)
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from harness import ALIAS, bench_pod

OUTPUTS = "/mnt/pod_artifacts/outputs"
LINE = "a line of a long log, as an evaluation prints them by the million"


def follow_and_count(host: str, outputs: str, run_id: str) -> None:
    """`follow HOST OUTPUTS RUN_ID`: the laptop side of runs.logs --follow, its stream handed to a
    sink that counts and keeps nothing; says `ready` at the run's first line, the count at the end."""
    from ops_tasks.operations.runs import run_logs
    from ops_tasks.settings import resolve_profile
    from ops_tasks.targets import target_for

    seen = [0]

    def sink(chunk):
        seen[0] += len(chunk)
        if b"ready" in chunk:
            print("ready", flush=True)

    target = target_for(resolve_profile({}, host, "."))
    run_logs(target, outputs_dir=outputs, run_id=run_id, follow=True, on_output=sink)
    print(seen[0], flush=True)


def submit(folder: Path, run_id: str, size: int) -> None:
    command = f"echo ready; until [ -e \"$OPS_RUN_DIR/go\" ]; do sleep 0.1; done; yes '{LINE}' | head -c {size}"
    config = folder / f"{run_id}.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": [{"run_id": run_id, "command": command}]}))
    program = Path(sys.executable).parent / "ops"
    subprocess.run([str(program), "runs.submit", "--config", str(config), "--host", ALIAS, "--json"],
                   check=True, capture_output=True)


def follow(pod, run_id: str) -> tuple:
    """(peak RSS in MiB, bytes streamed, seconds from go to the end) of following run_id."""
    proc = subprocess.Popen([sys.executable, __file__, "follow", ALIAS, OUTPUTS, run_id],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(proc.stderr.read())
    started = time.perf_counter()
    pod.sh(f"touch {OUTPUTS}/{run_id}/go")
    streamed = int(proc.stdout.readline())
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(proc.stderr.read())
    return usage.ru_maxrss / 1024, streamed, time.perf_counter() - started


def main():
    if sys.argv[1:2] == ["follow"]:
        return follow_and_count(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the followed log in MB")
    args = parser.parse_args()
    size = args.mb * 1000 * 1000
    with bench_pod() as (pod, client, folder):
        submit(folder, "small", 100)
        small_rss, _, _ = follow(pod, "small")
        submit(folder, "big", size)
        big_rss, streamed, big_s = follow(pod, "big")
        started = time.perf_counter()
        subprocess.run([*client.ssh_argv(ALIAS), "cat", f"{OUTPUTS}/big/stdout.log"],
                       stdout=subprocess.DEVNULL, check=True)
        ssh_s = time.perf_counter() - started
    print(f"log: {args.mb} MB ({streamed} bytes streamed)")
    print(f"peak RSS, following a one-line log: {small_rss:.1f} MiB")
    print(f"peak RSS, following the {args.mb} MB log: {big_rss:.1f} MiB ({big_rss - small_rss:+.1f} MiB)")
    print(f"time: follow {big_s:.1f} s, ssh cat {ssh_s:.1f} s, ratio {big_s / ssh_s:.1f}x")


if __name__ == "__main__":
    main()
