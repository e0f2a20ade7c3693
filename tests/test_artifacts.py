"""artifacts.archive and artifacts.fetch against real sshd pods: rsync over OpenSSH, the tar
fallback, resuming, and the safety of what lands on the laptop."""

import hashlib
import io
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from ops_tasks.operations.artifacts import UnsafeArchive, safe_extract
from conftest import needs_isolation, ops_argv

OUT = "/mnt/pod_artifacts/outputs"


def make_run(pod, run_id, files: dict):
    """A run directory on the pod with these files (name -> text)."""
    pod.sh(f"mkdir -p {OUT}/{run_id}")
    for name, text in files.items():
        pod.sh(f"mkdir -p $(dirname {OUT}/{run_id}/{name}) && printf '%s' '{text}' > {OUT}/{run_id}/{name}")


def pod_digests(pod, run_id) -> dict:
    out = pod.sh(f"cd {OUT}/{run_id} && find . -type f ! -path './.rsync-partial/*' -exec sha256sum {{}} +").stdout
    return {line.split()[1][2:]: line.split()[0] for line in out.splitlines()}


def local_digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and ".rsync-partial" not in p.parts}


@needs_isolation
def test_archive_moves_eval_files_and_never_overwrites(pod, ops):
    make_run(pod, "r1", {"summary.json": "{}"})
    pod.sh("echo first > /mnt/eval_r1.jsonl")
    first = ops("artifacts.archive", "--host", pod.alias, "--run-id", "r1", "--json")
    pod.sh("echo second > /mnt/eval_r1.jsonl")
    second = ops("artifacts.archive", "--host", pod.alias, "--run-id", "r1", "--json")

    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert pod.sh(f"cat {OUT}/r1/eval_r1.jsonl").stdout == "first\n"
    assert pod.sh(f"cat {OUT}/r1/eval_r1.jsonl.1").stdout == "second\n"  # both kept
    assert pod.sh("ls /mnt/eval_r1.jsonl", check=False).returncode != 0
    records = [json.loads(line) for line in pod.sh(f"cat {OUT}/r1/archived.jsonl").stdout.splitlines()]
    assert [r["to"] for r in records] == [f"{OUT}/r1/eval_r1.jsonl", f"{OUT}/r1/eval_r1.jsonl.1"]
    assert pod.sessions() == 2

    make_run(pod, "r10", {"summary.json": "{}"})
    pod.sh("echo theirs > /mnt/eval_r10.jsonl")
    ops("artifacts.archive", "--host", pod.alias, "--run-id", "r1", "--json")
    assert pod.sh("cat /mnt/eval_r10.jsonl").stdout == "theirs\n"  # r10's file is not r1's

    missing = ops("artifacts.archive", "--host", pod.alias, "--run-id", "nope", "--json")
    assert missing.returncode == 1 and f"{OUT}/nope" in missing.json["error"]


@needs_isolation
def test_fetch_is_byte_identical_and_a_second_fetch_sends_nothing(pod, ops, project):
    make_run(pod, "f1", {"summary.json": '{"ok": true}', "stdout.log": "hello", "sub/results.jsonl": "{}"})
    make_run(pod, "f2", {"summary.json": '{"ok": false}'})

    first = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "f1,f2", "--json")
    again = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "f1", "--run-id", "f2", "--json")

    assert first.returncode == 0, first.stderr
    assert first.json["method"] == "rsync" and first.json["transferred"]["files"] == 4
    for run_id in ("f1", "f2"):
        assert local_digests(project / "artifacts" / "pod_logs" / run_id) == pod_digests(pod, run_id)
        record = json.loads((project / "artifacts" / "fetched" / f"{run_id}.json").read_text())
        assert record["host"] == pod.alias and record["remote_dir"] == f"{OUT}/{run_id}"
    assert again.json["transferred"] == {"files": 0, "bytes": 0, "literal_bytes": 0}
    assert pod.accepted_connections() == 2  # each fetch: one OpenSSH connection for both runs, no listing


@needs_isolation
def test_a_missing_run_is_named_and_the_others_still_fetched(pod, ops, project):
    make_run(pod, "there", {"summary.json": "{}"})

    result = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "there,gone", "--json")

    assert result.returncode == 1
    assert f"{OUT}/gone" in result.json["error"]
    assert (project / "artifacts" / "pod_logs" / "there" / "summary.json").exists()


@needs_isolation
def test_an_interrupted_fetch_resumes_where_it_stopped(pod, ops, project, client):
    pod.sh(f"mkdir -p {OUT}/big && head -c 24000000 /dev/urandom > {OUT}/big/weights.bin")
    argv = [*ops_argv(), "artifacts.fetch", "--host", pod.alias, "--run-id", "big", "--bwlimit", "4000"]
    slow = subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = project / "artifacts" / "pod_logs" / "big" / ".rsync-partial" / "weights.bin"
    target = project / "artifacts" / "pod_logs" / "big"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(p.stat().st_size > 2_000_000 for p in target.rglob("*weights.bin*")):
        time.sleep(0.1)
    slow.send_signal(signal.SIGINT)
    _, err = slow.communicate(timeout=30)
    assert slow.returncode == 130, err
    assert partial.exists() and 0 < partial.stat().st_size < 24_000_000

    resumed = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "big", "--json")

    assert resumed.returncode == 0, resumed.stderr
    assert local_digests(target) == pod_digests(pod, "big")
    assert resumed.json["transferred"]["literal_bytes"] < 24_000_000  # only the rest was sent


@needs_isolation
def test_without_rsync_on_the_pod_a_tar_stream_does_it(pod_factory, ops, project):
    pod = pod_factory(hide_tools=("rsync",))
    make_run(pod, "t1", {"summary.json": '{"ok": true}', "deep/a/b.txt": "x"})
    make_run(pod, "t2", {"stdout.log": "two"})
    pod.sh(f"ln -s summary.json {OUT}/t1/link.json")

    result = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "t1,t2", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["method"] == "tar"
    for run_id in ("t1", "t2"):
        assert local_digests(project / "artifacts" / "pod_logs" / run_id) == pod_digests(pod, run_id)
    assert (project / "artifacts" / "pod_logs" / "t1" / "link.json").is_symlink()


def hostile_tar(tmp_path, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
    path = tmp_path / "hostile.tar"
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo("run/ok.txt")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"y"))
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("run/../../evil.txt"),
    tarfile.TarInfo("/etc/evil.txt"),
    tarfile.TarInfo("other/evil.txt"),
], ids=["dotdot", "absolute", "outside-run"])
def test_a_hostile_tar_stream_is_refused_whole(tmp_path, member):
    archive = hostile_tar(tmp_path, member)
    dest = tmp_path / "dest"

    with pytest.raises(UnsafeArchive):
        safe_extract(archive, dest, {"run"})

    assert not dest.exists()  # nothing extracted, not even the harmless member
    assert not (tmp_path / "evil.txt").exists()


def test_links_inside_the_run_are_fine(tmp_path):
    archive = hostile_tar(tmp_path, link("run/sub/l", "../ok.txt"))
    assert safe_extract(archive, tmp_path / "dest", {"run"}) == (1, [])
    assert (tmp_path / "dest" / "run" / "sub" / "l").resolve() == (tmp_path / "dest" / "run" / "ok.txt").resolve()


@needs_isolation
def test_submit_wait_fetch_report_chain_in_one_command_line(pod, ops, project):
    (project / "c.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "chain1", "command": "printf '{\"ok\": true, \"avg_reward\": 0.75}' > $OPS_RUN_DIR/summary.json"}]}))

    result = ops("runs.submit", "--host", pod.alias, "--config", str(project / "c.json"),
                 "runs.wait", "--host", pod.alias, "artifacts.fetch", "--host", pod.alias, "validate", "report")

    assert result.returncode == 0, result.stdout + result.stderr
    fetched = project / "artifacts" / "pod_logs" / "chain1"
    assert json.loads((fetched / "summary.json").read_text())["ok"] is True
    assert {"command.sh", "run_metadata.json", "stdout.log", "status.json"} <= {p.name for p in fetched.iterdir()}
    report = json.loads((project / "artifacts" / "report.json").read_text())
    assert [(row["run_id"], row["avg_reward"]) for row in report["rows"]] == [("chain1", 0.75)]


@needs_isolation
def test_fetch_all_takes_every_run_directory_but_not_the_queue(pod, ops, project):
    make_run(pod, "x1", {"summary.json": "{}"})
    make_run(pod, "x2", {"stdout.log": "y"})
    pod.sh(f"mkdir -p {OUT}/.ops/queue && echo secret-queue > {OUT}/.ops/queue/q.json")

    (project / "artifacts" / "pod_logs" / "from-another-pod").mkdir(parents=True)

    result = ops("artifacts.fetch", "--host", pod.alias, "--all", "--json")
    nothing = ops("artifacts.fetch", "--host", pod.alias, "--all", "--remote-outputs-dir", "/mnt/none", "--json")

    assert result.returncode == 0, result.stderr
    assert sorted(r["run_id"] for r in result.json["runs"]) == ["x1", "x2"]
    assert sorted(p.name for p in (project / "artifacts" / "fetched").iterdir()) == ["x1.json", "x2.json"]
    assert nothing.returncode == 1 and "no run directories under /mnt/none" in nothing.json["error"]


@needs_isolation
def test_fetch_goes_through_a_proxyjump_like_the_connection(pod_factory, ops, project, client):
    # OpenSSH reads the passwd home's known_hosts, not this test's HOME: say where it is, as a
    # user's own config does not need to.
    jump = pod_factory(UserKnownHostsFile=str(client.known_hosts), StrictHostKeyChecking="accept-new")
    target = pod_factory()
    client.add_alias("behind", target, ProxyJump=jump.alias)
    make_run(target, "j1", {"summary.json": '{"ok": true}'})

    result = ops("artifacts.fetch", "--host", "behind", "--run-id", "j1", "--json")

    assert result.returncode == 0, result.stderr
    assert local_digests(project / "artifacts" / "pod_logs" / "j1") == pod_digests(target, "j1")
    assert jump.accepted_connections() == 1  # rsync's ssh hopped through the jump host
