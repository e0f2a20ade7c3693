"""Benchmark: `artifacts.fetch` of a 400 MB run directory (2,000 files) from a loopback pod,
against plain `rsync -a` of the same directory over the system ssh, in the same process.

Both sides fetch into fresh local folders each round (a full copy), then both re-fetch with
nothing changed (rsync's quick check only); who goes first alternates between rounds. A third side,
plain rsync with the fetch's safety flags (no devices or specials, safe links, --delete, its log of
what it skipped), shows what that strictness costs by itself. Printed: medians and ratios (targets:
full fetch at most 1.15 x rsync, no-change re-fetch at most 1.5 x rsync's).

    python bench/fetch.py [--rounds 5] [--megabytes 400] [--files 2000]
"""

import argparse
import contextlib
import io
import json
import shutil
import statistics
import subprocess

from harness import ALIAS, bench_pod, timed

from ops_tasks.cli import program

OUTPUTS = "/root/bench-outputs"  # the pod's home is on disk; its /mnt is a small tmpfs


def fetch(local_root) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        program.run(["ops", "artifacts.fetch", "--host", ALIAS, "--run-id", "bigrun", "--remote-outputs-dir",
                     OUTPUTS, "--local-root", str(local_root), "--json"], exit=False)
    report = json.loads(out.getvalue())
    assert report["ok"], report
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    size_kib = args.megabytes * 1024 // args.files

    with bench_pod() as (pod, client, folder):
        pod.sh(f"mkdir -p {OUTPUTS}/bigrun && cd {OUTPUTS}/bigrun && head -c {size_kib * 1024} /dev/urandom > seed "
               f"&& for i in $(seq 1 {args.files}); do cp seed f$i.bin; printf $i >> f$i.bin; done && rm seed")
        ssh = " ".join(client.ssh_argv(ALIAS)[:-1])
        rsync = ["rsync", "-a", "-e", ssh, f"{ALIAS}:{OUTPUTS}/bigrun"]
        strict = rsync[:2] + ["--no-devices", "--no-specials", "--safe-links", "--delete", "--info=name1",
                              "--log-file-format=", f"--log-file={folder}/strict.log"] + rsync[2:]
        full = {"ops": [], "rsync": [], "strict": []}
        again = {"ops": [], "rsync": [], "strict": []}
        for round_ in range(args.rounds):
            ours, theirs, strictly = folder / f"ours{round_}", folder / f"theirs{round_}", folder / f"strict{round_}"
            theirs.mkdir()
            strictly.mkdir()
            sides = [("rsync", lambda: subprocess.run(rsync + [f"{theirs}/"], check=True)),
                     ("strict", lambda: subprocess.run(strict + [f"{strictly}/"], check=True, stdout=subprocess.DEVNULL)),
                     ("ops", lambda: fetch(ours))]
            if round_ % 2:  # alternate who goes first: the pod's page cache favours the second
                sides.reverse()
            for name, action in sides:
                full[name].append(timed(action))
            for name, action in sides:
                again[name].append(timed(action))
            for side in (ours, theirs, strictly):
                shutil.rmtree(side)

    def med(xs):
        return statistics.median(xs) * 1000

    print(f"{args.megabytes} MB in {args.files} files, {args.rounds} rounds (medians)")
    print(f"full fetch:     rsync -a {med(full['rsync']):8.1f} ms   artifacts.fetch {med(full['ops']):8.1f} ms   "
          f"ratio {med(full['ops']) / med(full['rsync']):.2f} (target <= 1.15)")
    print(f"no-change fetch: rsync -a {med(again['rsync']):7.1f} ms   artifacts.fetch {med(again['ops']):8.1f} ms   "
          f"ratio {med(again['ops']) / med(again['rsync']):.2f} (target <= 1.5)")
    print(f"the safety flags alone: full {med(full['strict']) / med(full['rsync']):.2f} x rsync -a, "
          f"no-change {med(again['strict']) / med(again['rsync']):.2f} x")


if __name__ == "__main__":
    main()
