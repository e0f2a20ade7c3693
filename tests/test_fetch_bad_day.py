"""artifacts.fetch on a bad day (issue 22, ../shared/cases/bad-day.md), on real sshd pods with
the system OpenSSH and rsync: what the laptop already holds is never replaced by another pod's
copy nor written through, a killed fetch leaves nothing behind, and a login or a link that stops
answering ends the fetch within its deadline, naming the pod and how to pick up again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import needs_isolation, one_line_error, ops_argv, pod_pids
from test_artifacts import local_digests, make_run, pod_digests
from ops_tasks.testing.delay_proxy import DelayProxy

pytestmark = needs_isolation

OUT = "/mnt/pod_artifacts/outputs"
TIMEOUT = 2  # connect_timeout of the profiles below: how long a pod may take to answer


def big_run(pod, run_id, files: dict):
    """A run directory on the pod with these files of random bytes (name -> size)."""
    for name, size in files.items():
        pod.sh(f"mkdir -p $(dirname {OUT}/{run_id}/{name}) && head -c {size} /dev/urandom > {OUT}/{run_id}/{name}")


def everything_under(folder: Path) -> list:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fetch_record(project, run_id) -> dict:
    return json.loads((project / "artifacts" / "fetched" / f"{run_id}.json").read_text())


def local_processes(marker: str) -> list:
    """Pids on this machine whose command line holds marker: a path of this test's own (its
    project, its client HOME), so only what this test started matches."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and not _zombie(entry):
                pids.append(int(entry.name))
    return pids


def _zombie(entry: Path) -> bool:
    try:
        return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for(predicate, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def profile(project, name: str, destination: str) -> str:
    """A profile with a short connect_timeout in the project's invoke.yaml (kept with the others)."""
    path = project / "invoke.yaml"
    config = json.loads(path.read_text()) if path.exists() else {"ops": {"profiles": {}}}
    config["ops"]["profiles"][name] = {"destination": destination, "connect_timeout": TIMEOUT}
    path.write_text(json.dumps(config))
    return name


# ---------------------------------------------------------------- another pod's copy of a run


def test_a_run_fetched_from_another_pod_is_refused_naming_both_and_the_ways_to_keep_both(pod_factory, ops, project,
                                                                                       client):
    first, second = pod_factory(), pod_factory()
    make_run(first, "r1", {"summary.json": '{"ok": true}', "from_first.txt": "first"})
    make_run(second, "r1", {"summary.json": '{"ok": false}', "from_second.txt": "second"})
    assert ops("artifacts.fetch", "--host", first.alias, "--run-id", "r1").returncode == 0
    local = project / "artifacts" / "pod_logs" / "r1"
    firsts = local_digests(local)
    first.stop()  # the first pod is released: the local copy is all there is of its run
    connections = second.accepted_connections()

    refused = ops("artifacts.fetch", "--host", second.alias, "--run-id", "r1")

    one_line_error(refused, 2, "r1", f"from {first.alias}", second.alias, "--local-root", "--replace")
    assert local_digests(local) == firsts and fetch_record(project, "r1")["host"] == first.alias
    assert second.accepted_connections() == connections  # refused before any contact

    # Keep both: the second pod's copy in a folder of its own; the first one's untouched.
    both = ops("artifacts.fetch", "--host", second.alias, "--run-id", "r1", "--local-root", "artifacts/second",
               "--json")
    assert both.returncode == 0, both.stderr
    assert local_digests(project / "artifacts" / "second" / "r1") == pod_digests(second, "r1")
    assert local_digests(local) == firsts
    # And the first folder is still the first pod's: asked again, it is still refused.
    assert ops("artifacts.fetch", "--host", second.alias, "--run-id", "r1").returncode == 2

    # Or say which wins.
    replaced = ops("artifacts.fetch", "--host", second.alias, "--run-id", "r1", "--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    assert local_digests(local) == pod_digests(second, "r1")
    assert fetch_record(project, "r1")["host"] == second.alias
    # The same pod by another name is the same host: fetched again, nothing to refuse.
    client.add_alias("second-again", second)
    again = ops("artifacts.fetch", "--host", "second-again", "--run-id", "r1", "--json")
    assert again.returncode == 0, again.stderr


def test_a_fleets_fetch_of_every_run_keeps_one_pods_copy_of_a_run_id_both_hold(pod_factory, ops, project):
    pods = pod_factory(), pod_factory()
    for n, pod in enumerate(pods):
        make_run(pod, "same", {"summary.json": f'{{"n": {n}}}', f"only_{n}.txt": "x" * 100_000})
        make_run(pod, f"own{n}", {"summary.json": "{}"})

    fetched = ops("artifacts.fetch", "--host", ",".join(p.alias for p in pods), "--all", "--json")

    assert fetched.returncode == 1, fetched.stdout + fetched.stderr
    local = local_digests(project / "artifacts" / "pod_logs" / "same")
    winner = [pod for pod in pods if pod_digests(pod, "same") == local]
    assert len(winner) == 1, local  # one pod's copy whole, never a mix of both
    loser = next(pod for pod in pods if pod is not winner[0])
    assert f"from {winner[0].alias}" in fetched.json["pods"][loser.alias]["error"]
    assert sorted(r["run_id"] for r in fetched.json["runs"]) == ["own0", "own1", "same"]


def test_the_records_keep_each_hosts_copy_for_the_check_before_a_pod_goes(tmp_path):
    from ops_tasks import records

    folder = tmp_path / "artifacts" / "fetched"
    old = {"run_id": "r1", "host": "a", "host_id": "root@a:22", "destination": "a", "remote_dir": f"{OUT}/r1",
           "local_dir": str(tmp_path / "artifacts" / "pod_logs" / "r1"), "files": 2, "bytes": 9, "fetched_at": 10.0}
    folder.mkdir(parents=True)
    (folder / "r1.json").write_text(json.dumps(old))  # a record older than copies
    assert records.fetch_origin(folder, "r1", old["local_dir"])["host_id"] == "root@a:22"

    records.save_fetch_record(folder, {**old, "host": "b", "host_id": "root@b:22", "destination": "b",
                                       "local_dir": str(tmp_path / "artifacts" / "second" / "r1"), "fetched_at": 20.0})

    assert records.load_fetch_record(folder, "r1")["host_id"] == "root@b:22"  # the latest
    assert records.load_fetch_record(folder, "r1", host_id="root@a:22")["files"] == 2  # a's copy, kept beside
    assert records.load_fetch_record(folder, "r1", host_id="root@c:22") is None
    claimed, _ = records.claim_fetch(folder, "r2", tmp_path / "r2", {"host": "c", "host_id": "root@c:22"},
                                     lambda now: False)
    assert claimed and records.load_fetch_record(folder, "r2") is None  # a fetch begun is no fetch yet
    records.release_fetch_claim(folder, "r2", tmp_path / "r2")
    assert not (folder / "r2.json").exists()


FETCH_AS_A_CAMPAIGN_DOES = """
import json, sys
from pathlib import Path
from ops_tasks.errors import OpsError
from ops_tasks.operations.artifacts import fetch_runs
from ops_tasks.settings import resolve_profile
from ops_tasks.targets import target_for
target = target_for(resolve_profile({}, sys.argv[1], Path.cwd()))
try:
    result = fetch_runs(target, runs=[{"run_id": "c1", "run_dir": sys.argv[2] + "/c1"}], outputs_dir=sys.argv[2],
                        local_root=Path("artifacts/pod_logs").resolve(), records_dir=Path("artifacts/fetched"))
except OpsError as exc:
    result = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
print(json.dumps(result))
"""


def test_every_caller_of_the_fetch_operation_keeps_the_first_pods_copy(pod_factory, project, client):
    """The campaign's fetch phase calls the operation itself, with no flag to say which wins."""
    pods = pod_factory(), pod_factory()
    for n, pod in enumerate(pods):
        make_run(pod, "c1", {"summary.json": f'{{"n": {n}}}'})

    def fetch(pod) -> dict:
        done = subprocess.run([sys.executable, "-c", FETCH_AS_A_CAMPAIGN_DOES, pod.alias, OUT], cwd=project,
                              env=client.env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    assert fetch(pods[0])["ok"] is True
    refused = fetch(pods[1])

    assert refused["ok"] is False and refused["exit_code"] == 2, refused
    assert pods[0].alias in refused["error"] and pods[1].alias in refused["error"]
    assert (project / "artifacts" / "pod_logs" / "c1" / "summary.json").read_text() == '{"n": 0}'


# ---------------------------------------------------------------- the user's own things


def test_a_file_or_link_of_the_users_named_like_a_run_is_never_replaced_nor_followed(pod, ops, project, tmp_path):
    for run_id in ("r0", "r5", "r6"):
        make_run(pod, run_id, {"summary.json": '{"ok": true}'})
    root = project / "artifacts" / "pod_logs"
    root.mkdir(parents=True)
    (root / "r0").write_text("my own notes")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious")
    (root / "r5").symlink_to(mine)
    connections = pod.accepted_connections()

    for run_id in ("r0", "r5"):
        for extra in ((), ("--replace",)):  # saying which pod wins says nothing about the user's files
            refused = ops("artifacts.fetch", "--host", pod.alias, "--run-id", f"{run_id},r6", *extra)
            one_line_error(refused, 2, f"artifacts/pod_logs/{run_id} is a ")
    every = ops("artifacts.fetch", "--host", pod.alias, "--all", "--json")

    # Only --all's two (its listing, its rsync of r6): the others were refused before any contact.
    assert pod.accepted_connections() == connections + 2
    assert every.returncode == 1 and [r["run_id"] for r in every.json["runs"]] == ["r6"], every.stdout
    assert "r0" in every.json["error"] and "r5" in every.json["error"]
    assert (root / "r0").read_text() == "my own notes"
    assert (root / "r5").is_symlink() and os.readlink(root / "r5") == str(mine)
    assert everything_under(mine) == ["keep.txt"] and (mine / "keep.txt").read_text() == "precious"
    assert not (project / "artifacts" / "fetched" / "r0.json").exists()


# ---------------------------------------------------------------- a killed fetch


def test_a_killed_fetch_stops_its_rsync_and_the_next_fetch_leaves_nothing_of_it(pod, ops, project, client):
    big_run(pod, "k1", {"a.bin": 10_000_000, "sub/b.bin": 10_000_000, "sub/c.bin": 10_000_000})
    local = project / "artifacts" / "pod_logs" / "k1"
    argv = [*ops_argv(), "artifacts.fetch", "--host", pod.alias, "--run-id", "k1", "--bwlimit", "1000", "--json"]
    killed = subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    assert wait_for(lambda: sum(p.stat().st_size for p in local.rglob("*") if p.is_file()) > 2_000_000, 30)
    killed.kill()  # SIGKILL: the fetch has no say in it
    killed.wait()

    # Its rsync does not go on writing into the run folder (a rerun would race it).
    assert wait_for(lambda: not local_processes(str(project)), 15), local_processes(str(project))

    # Interrupted once more, then the pod moves a file away (runs.submit --force keeps the
    # earlier attempt under attempts/1/) before the fetch that completes.
    interrupted = subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    assert wait_for(lambda: local_processes(f"--log-file={local.parent}"), 30)  # its rsync runs
    time.sleep(0.5)
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(timeout=30) == 130
    pod.sh(f"cd {OUT}/k1 && mkdir -p attempts/1 && mv a.bin sub attempts/1/")

    resumed = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "k1", "--json")

    assert resumed.returncode == 0, resumed.stderr
    assert local_digests(local) == pod_digests(pod, "k1")
    # Nothing of a fetch's own is left: no partial folder, no rsync log, no temporary.
    assert [p for p in everything_under(project / "artifacts") if any(
        part.startswith(".") for part in Path(p).parts)] == []


# ---------------------------------------------------------------- deadlines


@pytest.mark.timeout(100)
def test_a_login_that_hangs_only_for_rsyncs_session_ends_the_fetch_naming_the_pod(pod, ops, project, client):
    make_run(pod, "h1", {"summary.json": '{"ok": true}'})
    host = profile(project, "slowlogin", pod.alias)
    # A conda or module init on a network file system that blocks the next SSH session: here,
    # every session that runs rsync.
    bashrc = pod.home / ".bashrc"
    bashrc.write_text('case "$BASH_EXECUTION_STRING" in *rsync*) sleep 3600;; esac\n')
    try:
        hung = ops("artifacts.fetch", "--host", host, "--run-id", "h1", timeout=60)
        # The ssh that waited for it is gone too.
        left = wait_for(lambda: not local_processes(str(client.home)), 15)
    finally:
        bashrc.unlink()
        for pid in pod_pids(pod, "sleep 3600"):
            os.kill(pid, signal.SIGKILL)

    line = one_line_error(hung, 1, f"no answer from {host} ({pod.alias})", "bashrc", "fetch again")
    assert "Traceback" not in line and left, local_processes(str(client.home))
    fetched = ops("artifacts.fetch", "--host", host, "--run-id", "h1", "--json")
    assert fetched.returncode == 0, fetched.stderr
    assert local_digests(project / "artifacts" / "pod_logs" / "h1") == pod_digests(pod, "h1")


@pytest.mark.timeout(100)
def test_a_link_that_goes_silent_mid_fetch_ends_it_in_bounded_time_and_a_rerun_resumes(pod, ops, project, client):
    big_run(pod, "s1", {"weights.bin": 24_000_000})
    local = project / "artifacts" / "pod_logs" / "s1"
    with DelayProxy(pod.port, delay_s=0) as proxy:
        client.add_alias("silent", pod)
        text = client.config.read_text().replace(f"Host silent\n  HostName 127.0.0.1\n  Port {pod.port}\n",
                                                 f"Host silent\n  HostName 127.0.0.1\n  Port {proxy.port}\n")
        client.config.write_text(text)
        host = profile(project, "silentlink", "silent")
        argv = [*ops_argv(), "artifacts.fetch", "--host", host, "--run-id", "s1", "--bwlimit", "3000"]
        fetching = subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        assert wait_for(lambda: sum(p.stat().st_size for p in local.rglob("*") if p.is_file()) > 2_000_000, 30)
        proxy.hold()  # no RST, no FIN: nothing passes any more
        out, err = fetching.communicate(timeout=60)
        proxy.release()

        resumed = ops("artifacts.fetch", "--host", host, "--run-id", "s1", "--json")

    assert fetching.returncode == 1, (out, err)
    line = err.strip().splitlines()[-1]
    assert "Traceback" not in err and f"{host} (silent)" in line and "fetch again" in line, err
    assert resumed.returncode == 0, resumed.stderr
    assert local_digests(local) == pod_digests(pod, "s1")
    assert resumed.json["transferred"]["literal_bytes"] < 24_000_000  # only the rest was sent
