"""Benchmark: `ops pod.sync --workdir` of a 200 MB checkout with one file changed, against plain
`rsync -a` of the same change, both to a pod 100 ms away (a DelayProxy, 50 ms each way).

The checkout: a git repository of --files files, --large of them large (random, so nothing
compresses), --megabytes in all, committed. Both sides sync it once into a folder of their own
on the pod (the full sync), then each round changes one file (alternately a small and a large
one, appended to: rsync's delta sends the end) and both sync again; who goes first alternates.
The baseline is `rsync -a --exclude=.git` over the same ssh config (what one types by hand:
without .git, which pod.sync never sends either); pod.sync is the `ops` a user runs, a process
of its own (in this process it would share one interpreter lock with the proxy). Printed: the
medians and their ratios; for scale, `ops pod.status` (what any task pays: the program's start,
a connection, one round trip) and the reading of the checkout (git, hashes), whose sum with
rsync's time is about what pod.sync --workdir costs (its connection opens while rsync runs).

    python bench/sync_workdir.py [--rounds 5] [--megabytes 200] [--files 2000] [--large 10]
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

from harness import timed

from ops_tasks.testing.delay_proxy import DelayProxy
from ops_tasks.testing.pods import ClientHome, SshPod

ALIAS = "farpod"
ONE_WAY_DELAY_S = 0.05
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}


@contextlib.contextmanager
def far_pod():
    """(client, folder): one real pod behind a delaying proxy, reached as ALIAS."""
    with tempfile.TemporaryDirectory(prefix="ops-bench-sync-") as tmp, contextlib.ExitStack() as stack:
        client = ClientHome(Path(tmp) / "client")
        pod = SshPod(Path(tmp) / "pod", ALIAS, client.public_key).start()
        stack.callback(pod.stop)
        proxy = stack.enter_context(DelayProxy(pod.port, delay_s=ONE_WAY_DELAY_S))
        client.add_alias(ALIAS, SimpleNamespace(port=proxy.port, user=pod.user))
        os.environ.update(client.env())
        yield client, Path(tmp)


def make_checkout(top: Path, megabytes: int, files: int, large: int) -> list:
    """A committed git checkout of `files` files (`large` of them share half the bytes); returns
    (a small file, a large file) to change."""
    top.mkdir()
    half = megabytes * 1024 * 1024 // 2
    small_size = half // (files - large)
    for i in range(files - large):
        folder = top / f"pkg{i % 40:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"mod{i:04d}.py").write_bytes(os.urandom(small_size // 2).hex().encode())
    for i in range(large):
        (top / f"data{i:02d}.bin").write_bytes(os.urandom(half // large))
    (top / ".gitignore").write_text("artifacts/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "bench"]):
        subprocess.run(["git", "-C", str(top), *args], env=GIT_ENV, check=True)
    return [top / "pkg00" / "mod0000.py", top / "data00.bin"]


def ops_sync(checkout: Path, folder: Path) -> dict:
    ops = Path(sys.executable).parent / "ops"
    done = subprocess.run([str(ops), "pod.sync", "--host", ALIAS, "--remote-repo", "/root/bench-ops",
                           "--workdir", str(checkout), "--json"], cwd=folder, capture_output=True, text=True)
    report = json.loads(done.stdout)
    assert report["ok"], report
    return report


def rsync_sync(client: ClientHome, checkout: Path) -> None:
    ssh = " ".join(client.ssh_argv(ALIAS)[:-1])
    subprocess.run(["rsync", "-a", "--exclude=.git", "-e", ssh, f"{checkout}/", f"{ALIAS}:/root/bench-rsync/"],
                   check=True)


def ops_status(folder: Path) -> None:
    """`ops pod.status`: what any task pays before its own work (start, a connection, a round trip)."""
    ops = Path(sys.executable).parent / "ops"
    subprocess.run([str(ops), "pod.status", "--host", ALIAS, "--json"], cwd=folder, check=True, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--large", type=int, default=10)
    args = parser.parse_args()

    from ops_tasks.operations.workdir import read_checkout

    with far_pod() as (client, folder):
        checkout = folder / "checkout"
        changed = make_checkout(checkout, args.megabytes, args.files, args.large)
        first = {"ops": timed(lambda: ops_sync(checkout, folder)), "rsync": timed(lambda: rsync_sync(client, checkout))}
        again = {"ops": [], "rsync": []}
        sent = []
        for round_ in range(args.rounds):
            with changed[round_ % 2].open("ab") as handle:
                handle.write(f"round {round_}\n".encode())
            sides = [("ops", lambda: sent.append(ops_sync(checkout, folder)["workdir"])),
                     ("rsync", lambda: rsync_sync(client, checkout))]
            for name, action in sides if round_ % 2 == 0 else reversed(sides):
                again[name].append(timed(action))
        listing = statistics.median(timed(lambda: read_checkout(str(checkout))) for _ in range(args.rounds))
        status = statistics.median(timed(lambda: ops_status(folder)) for _ in range(args.rounds))

    def ms(value):
        return value * 1000

    ops_ms, rsync_ms = ms(statistics.median(again["ops"])), ms(statistics.median(again["rsync"]))
    print(f"checkout: {args.megabytes} MB in {args.files} files ({args.large} large), git, committed; "
          f"pod 100 ms away; {args.rounds} rounds")
    print(f"first sync:    rsync -a {ms(first['rsync']):8.1f} ms   pod.sync --workdir {ms(first['ops']):8.1f} ms   "
          f"ratio {first['ops'] / first['rsync']:.2f}")
    print(f"one file changed: rsync -a {rsync_ms:8.1f} ms   pod.sync --workdir {ops_ms:8.1f} ms   "
          f"ratio {ops_ms / rsync_ms:.2f} (median; files sent per round: {[s['sent_files'] for s in sent]})")
    print(f"for scale: ops pod.status {ms(status):.0f} ms (start, connect, one round trip); reading the checkout "
          f"(git ls-files, diff, hashes) {ms(listing):.0f} ms; rsync -a + pod.status + reading = "
          f"{rsync_ms + ms(status) + ms(listing):.0f} ms")


if __name__ == "__main__":
    main()
