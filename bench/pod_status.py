"""Benchmark: median wall time of `pod.status` against `ssh HOST true` on the same pod.

Both run in this process against one real sshd pod on loopback (see ops_tasks.testing):
the baseline is the system OpenSSH client opening a connection and running `true`; the
measured side is the whole `ops pod.status --json` task (resolve host, connect with
paramiko, one round trip, judge, print), in-process so Python start-up is not counted.
Prints the medians and their ratio (target: at most 1.3). OpenSSH's default key exchange
(sntrup761x25519, post-quantum) costs more CPU than paramiko's curve25519, so a second
baseline forces curve25519 on ssh: the like-for-like figure.

    python bench/pod_status.py [--rounds 30]
"""

import argparse
import contextlib
import io
import statistics
import subprocess

from harness import ALIAS, bench_pod, timed

from ops_tasks.cli import program


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="measurements of each side (alternating)")
    args = parser.parse_args()

    with bench_pod() as (pod, client, _):
        ssh_true = client.ssh_argv(ALIAS) + ["true"]
        ssh_true_same_kex = [ssh_true[0], "-o", "KexAlgorithms=curve25519-sha256", *ssh_true[1:]]

        def baseline():
            subprocess.run(ssh_true, check=True, stdout=subprocess.DEVNULL)

        def baseline_same_kex():
            subprocess.run(ssh_true_same_kex, check=True, stdout=subprocess.DEVNULL)

        def pod_status():
            with contextlib.redirect_stdout(io.StringIO()) as out:
                program.run(["ops", "pod.status", "--host", "benchpod", "--json"], exit=False)
            assert '"ok":true' in out.getvalue(), out.getvalue()

        baseline(), pod_status()  # warm up: known_hosts, caches, imports
        base, base_kex, ours = [], [], []
        for _ in range(args.rounds):
            base.append(timed(baseline))
            base_kex.append(timed(baseline_same_kex))
            ours.append(timed(pod_status))

    base_ms, kex_ms, ours_ms = (statistics.median(xs) * 1000 for xs in (base, base_kex, ours))
    print(f"ssh HOST true                   median {base_ms:7.1f} ms  ({args.rounds} rounds)")
    print(f"ssh -o KexAlgorithms=curve25519 median {kex_ms:7.1f} ms")
    print(f"ops pod.status                  median {ours_ms:7.1f} ms")
    print(f"ratio pod.status / ssh true:              {ours_ms / base_ms:.2f} (target <= 1.3)")
    print(f"ratio pod.status / ssh true (same kex):   {ours_ms / kex_ms:.2f}")


if __name__ == "__main__":
    main()
