"""Benchmark: `artifacts.fetch` of a 400 MB run directory (2,000 files) from a loopback pod,
against plain `rsync -a` of the same directory over the system ssh, in the same process.

Both sides fetch into fresh local folders each round (a full copy), then both re-fetch with
nothing changed (rsync's quick check only); who goes first alternates between rounds. A third side,
plain rsync with the fetch's safety flags (no devices or specials, safe links, --delete, its log of
what it skipped), shows what that strictness costs by itself. Printed: medians and ratios (targets:
full fetch at most 1.15 x rsync, no-change re-fetch at most 1.5 x rsync's).

    python bench/fetch.py [--rounds 5] [--megabytes 400] [--files 2000]

Fleet mode: `ops artifacts.fetch --all` (a process of its own, as a user runs it) over N pods
holding a run directory of --megabytes each, against the same fetch from one of them, every pod
behind a delaying proxy (100 ms round trip, bench/fleet.py's far_pods); the pods are fetched at
once, so the ratio is bound by what this machine's loopback, ssh and rsync move in all (target:
at most 1.5 for 4 pods x 100 MB).

    python bench/fetch.py --fleet 4 [--rounds 5] [--megabytes 100] [--files 100]
"""

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

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


def fill_script(run_id: str, megabytes: int, files: int, outputs: str = OUTPUTS) -> str:
    """A run directory of megabytes in files files (random, so no compression helps)."""
    size_kib = megabytes * 1024 // files
    return (f"mkdir -p {outputs}/{run_id} && cd {outputs}/{run_id} && head -c {size_kib * 1024} /dev/urandom > seed "
            f"&& for i in $(seq 1 {files}); do cp seed f$i.bin; printf $i >> f$i.bin; done && rm seed")


def fetch_all(hosts: str, local_root, folder) -> dict:
    """One `ops artifacts.fetch --all` over these hosts (a fleet when several), a process of its
    own as a user runs it: in this process it would share one interpreter lock with the delaying
    proxies, which then, not the fetch, set the pace of four pods at once."""
    ops = Path(sys.executable).parent / "ops"
    done = subprocess.run([str(ops), "artifacts.fetch", "--host", hosts, "--all", "--remote-outputs-dir",
                           FLEET_OUTPUTS, "--local-root", str(local_root), "--json"], cwd=folder, capture_output=True,
                          text=True)
    report = json.loads(done.stdout)
    assert report["ok"], report
    return report


FLEET_OUTPUTS = "/root/bench-fleet-outputs"  # one run directory per pod, a run id of its own


def fleet_main(args) -> None:
    from fleet import far_pods

    from ops_tasks.fleet import resolve_hosts
    from ops_tasks.targets import target_for

    with far_pods(args.fleet) as (aliases, folder):
        os.chdir(folder)
        for index, alias in enumerate(aliases):  # over SSH: far_pods gives the pods' names only
            target = target_for(resolve_hosts({}, alias, folder)[0])
            target.run_script(fill_script(f"run{index}", args.megabytes, args.files, FLEET_OUTPUTS))
        fleet = ",".join(aliases)
        one, many = [], []
        for round_ in range(args.rounds):
            sides = [(one, aliases[0]), (many, fleet)]
            if round_ % 2:
                sides.reverse()
            for times, hosts in sides:
                local = folder / f"local-{round_}-{len(times)}-{hosts.count(',')}"
                times.append(timed(lambda: fetch_all(hosts, local, folder)))
                shutil.rmtree(local)

    one_ms, many_ms = (statistics.median(xs) * 1000 for xs in (one, many))
    print(f"artifacts.fetch --all, 1 pod x {args.megabytes} MB ({args.files} files, 100 ms away)  "
          f"median {one_ms:8.1f} ms  ({args.rounds} rounds)")
    print(f"artifacts.fetch --all, {args.fleet} pods x {args.megabytes} MB at once          median {many_ms:8.1f} ms")
    print(f"ratio {args.fleet} pods / 1 pod: {many_ms / one_ms:.2f} (target <= 1.5)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=None, help="per run directory (default 400; fleet: 100)")
    parser.add_argument("--files", type=int, default=None, help="files in it (default 2000; fleet: 100)")
    parser.add_argument("--fleet", type=int, default=0, help="fetch from this many far pods at once vs one")
    args = parser.parse_args()
    if args.fleet:
        args.megabytes, args.files = args.megabytes or 100, args.files or 100
        return fleet_main(args)
    args.megabytes, args.files = args.megabytes or 400, args.files or 2000

    with bench_pod() as (pod, client, folder):
        pod.sh(fill_script("bigrun", args.megabytes, args.files))
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
