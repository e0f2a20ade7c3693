"""Benchmark: median wall time of `pod.status` against `ssh HOST true` on the same pod.

Both run in this process against one real sshd pod on loopback (see ops_tasks.testing):
the baseline is the system OpenSSH client opening a connection and running `true`; the
measured side is the whole `ops pod.status --json` task (resolve host, connect with
paramiko, one round trip, judge, print), in-process so Python start-up is not counted.
Prints the medians and their ratio (target: at most 1.3).

    python bench/pod_status.py [--rounds 30]
"""

import argparse
import contextlib
import io
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


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="measurements of each side (alternating)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        client = ClientHome(Path(tmp) / "client")
        pod = SshPod(Path(tmp) / "pod", "benchpod", client.public_key).start()
        client.add_alias("benchpod", pod)
        os.environ.update(client.env())
        os.chdir(tmp)
        ssh_true = client.ssh_argv("benchpod") + ["true"]

        def baseline():
            subprocess.run(ssh_true, check=True, stdout=subprocess.DEVNULL)

        def pod_status():
            with contextlib.redirect_stdout(io.StringIO()) as out:
                program.run(["ops", "pod.status", "--host", "benchpod", "--json"], exit=False)
            assert '"ok":true' in out.getvalue(), out.getvalue()

        try:
            baseline(), pod_status()  # warm up: known_hosts, caches, imports
            base, ours = [], []
            for _ in range(args.rounds):
                base.append(timed(baseline))
                ours.append(timed(pod_status))
        finally:
            pod.stop()

    base_ms, ours_ms = statistics.median(base) * 1000, statistics.median(ours) * 1000
    print(f"ssh HOST true   median {base_ms:7.1f} ms  ({args.rounds} rounds)")
    print(f"ops pod.status  median {ours_ms:7.1f} ms  ({args.rounds} rounds)")
    print(f"ratio pod.status / ssh true: {ours_ms / base_ms:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
