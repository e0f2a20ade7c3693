"""The data plane trusts nothing the pod sends: the same hostile run directory through rsync and
the tar fallback, stale files of an earlier attempt, --include/--exclude and the teardown check,
validate and report refusing a link out of a run directory, and the tar check on its own."""

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ops_tasks.operations.artifacts import UnsafeArchive, check_member_path, member_dropped, safe_extract
from ops_tasks.testing.pods import ClientHome, SshPod
from conftest import ISOLATED, needs_isolation, one_line_error

OUT = "/mnt/pod_artifacts/outputs"
CONTRACT = {"command.sh": "true", "run_metadata.json": "{}", "stdout.log": "hello"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return ClientHome(tmp_path_factory.mktemp("client") / "home")


@pytest.fixture(scope="module")
def pods(tmp_path_factory, client):
    """Two pods for the module: one with rsync, one without (the tar plane). conftest's `ops`
    runs with this module's client."""
    if not ISOLATED:
        pytest.skip("needs root and unshare")
    started = {}
    for plane, hidden in (("rsync", ()), ("tar", ("rsync",))):
        pod = SshPod(tmp_path_factory.mktemp(plane), f"data{plane}", client.public_key, hide_tools=hidden)
        pod.start()
        client.add_alias(f"data{plane}", pod)
        pod.alias = f"data{plane}"
        started[plane] = pod
    yield started
    for pod in started.values():
        pod.stop()


def plant_run(pod, run_id, extra=""):
    files = " && ".join(f"printf %s {json.dumps(text)} > {name}" for name, text in CONTRACT.items())
    pod.sh(f"rm -rf {OUT}/{run_id} && mkdir -p {OUT}/{run_id} && cd {OUT}/{run_id} && {files} {extra}")


def plant_hostile(pod, canary: Path):
    plant_run(pod, "evil2", "&& printf '{}' > summary.json")
    plant_run(pod, "evil1", f"""&& ln -s {canary} summary.json && ln -s /etc/passwd passwd && ln -s /etc etcdir &&
        ln -s ../../ up && mkfifo f && mknod rnd c 1 8 && chmod 666 rnd && ln -s ../evil2 sibling &&
        ln -s stdout.log inner && mkdir sub && ln -s ../stdout.log sub/inner && ln -s sub/../.. bent &&
        ln command.sh hard && printf x > "$(printf 'new\\nline')" &&
        python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('sock')" """)


def tree(folder: Path) -> dict:
    """{relative path: kind} of everything below folder, links not followed."""
    kinds = {}
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(base) / name
            mode = path.lstat().st_mode
            kinds[str(path.relative_to(folder))] = ("link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode)
                                                    else "file" if stat.S_ISREG(mode) else "special")
    return kinds


@needs_isolation
@pytest.mark.parametrize("plane", ["rsync", "tar"])
def test_a_hostile_run_directory_lands_safely_on_both_planes(pods, ops, project, tmp_path, plane):
    pod = pods[plane]
    canary = tmp_path / "laptop-only.json"
    canary.write_text('{"ok": true, "avg_reward": 0.4242, "secret": "laptop-canary"}')
    plant_hostile(pod, canary)

    fetched = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "evil1", "--json")

    assert fetched.returncode == 0, fetched.stderr
    assert fetched.json["method"] == plane
    local = project / "artifacts" / "pod_logs" / "evil1"
    kinds = tree(local)
    assert "special" not in kinds.values()  # no device, FIFO or socket
    for name, kind in kinds.items():
        if kind == "link":  # what is kept leads inside the run directory
            assert os.path.realpath(local / name).startswith(str(local.resolve()) + os.sep), name
    assert {name for name, kind in kinds.items() if kind == "link"} == {"inner", "sub/inner"}
    assert (local / "new\nline").read_text() == "x" and (local / "hard").read_text() == "true"
    dropped = " ".join(fetched.json["warnings"])
    for name in ("summary.json", "passwd", "etcdir", "up", "f", "rnd", "sock", "sibling", "bent"):
        assert f'evil1/{name}"' in dropped, (name, dropped)
    assert sorted(p.name for p in (project / "artifacts").iterdir()) == ["fetched", "pod_logs"]
    assert [p.name for p in (project / "artifacts" / "pod_logs").iterdir()] == ["evil1"]

    validate = ops("validate", "--json")
    report = ops("report", "--json")
    assert validate.returncode == 1 and validate.json["missing"] == {"evil1": ["summary.json"]}
    assert "laptop-canary" not in report.stdout + report.stderr
    for path in (project / "artifacts").glob("report.*"):
        assert "laptop-canary" not in path.read_text() and "0.4242" not in path.read_text()


@needs_isolation
@pytest.mark.parametrize("plane", ["rsync", "tar"])
def test_a_rerun_leaves_no_stale_results_beside_the_new_attempt(pods, ops, project, plane):
    pod = pods[plane]
    plant_run(pod, "stale1", "&& printf '{\"ok\": true}' > summary.json && "
              "for i in 1 2 3 4; do echo '{\"reward\": 1}' >> results.jsonl; done")
    assert ops("artifacts.fetch", "--host", pod.alias, "--run-id", "stale1").returncode == 0
    # What runs.submit --force does: the earlier attempt moves to attempts/1/, the new one crashes.
    pod.sh(f"cd {OUT}/stale1 && mkdir -p attempts/1 && mv results.jsonl summary.json attempts/1/ "
           "&& printf '{\"ok\": false}' > summary.json")

    again = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "stale1", "--json")

    assert again.returncode == 0, again.stderr
    local = project / "artifacts" / "pod_logs" / "stale1"
    assert not (local / "results.jsonl").exists()
    assert len((local / "attempts" / "1" / "results.jsonl").read_text().splitlines()) == 4
    assert json.loads((local / "summary.json").read_text()) == {"ok": False}


TEARDOWN = """
import json, sys
from pathlib import Path
from ops_tasks.operations.teardown import teardown_check
from ops_tasks.settings import resolve_profile
from ops_tasks.targets import target_for
profile = resolve_profile({}, sys.argv[1], Path.cwd())
check = teardown_check(target_for(profile), outputs_dir=sys.argv[2], records_dir=Path("artifacts/fetched"))
print(json.dumps(check["unfetched"]))
"""


def plant_checkpoints(pod, outputs):
    pod.sh(f"rm -rf {outputs} && mkdir -p {outputs}/ck1/ckpt/deep && cd {outputs}/ck1 && printf '{{}}' > summary.json "
           "&& head -c 100000 /dev/urandom > ckpt/deep/model.pt && printf k > keep.pt && printf s > ckpt/step.txt")


def fetch_without_checkpoints(ops, pod, outputs):
    return ops("artifacts.fetch", "--host", pod.alias, "--run-id", "ck1", "--remote-outputs-dir", outputs,
               "--exclude", "*.pt", "--include", "keep.pt", "--json")


@needs_isolation
@pytest.mark.parametrize("plane", ["rsync", "tar"])
def test_exclude_leaves_files_on_the_pod_and_include_wins(pods, ops, project, plane):
    pod = pods[plane]
    outputs = f"/mnt/ex-{plane}"
    plant_checkpoints(pod, outputs)
    local = project / "artifacts" / "pod_logs" / "ck1"
    (local / "ckpt").mkdir(parents=True)
    (local / "ckpt" / "old.pt").write_text("fetched before")  # what is left on the pod is never deleted here

    fetched = fetch_without_checkpoints(ops, pod, outputs)

    assert fetched.returncode == 0, fetched.stderr
    assert fetched.json["transferred"]["bytes"] < 100000
    assert sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()) == [
        "ckpt/old.pt", "ckpt/step.txt", "keep.pt", "summary.json"]
    record = json.loads((project / "artifacts" / "fetched" / "ck1.json").read_text())
    assert (record["exclude"], record["include"], record["files"]) == (["*.pt"], ["keep.pt"], 3)


TEARDOWN = """
import json, sys
from pathlib import Path
from ops_tasks.operations.teardown import teardown_check
from ops_tasks.settings import resolve_profile
from ops_tasks.targets import target_for
profile = resolve_profile({}, sys.argv[1], Path.cwd())
check = teardown_check(target_for(profile), outputs_dir=sys.argv[2], records_dir=Path("artifacts/fetched"))
print(json.dumps([run["reason"] for run in check["unfetched"]]))
"""


@needs_isolation
def test_the_teardown_check_knows_what_a_fetch_left_on_purpose(pods, ops, project, client):
    pod, outputs = pods["rsync"], "/mnt/ex-teardown"
    plant_checkpoints(pod, outputs)
    pod.sh(f"printf '{{\"state\": \"failed\"}}' > {outputs}/ck1/status.json")

    def unfetched():
        check = subprocess.run([sys.executable, "-c", TEARDOWN, pod.alias, outputs], cwd=project, env=client.env(),
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr
        return json.loads(check.stdout)

    assert fetch_without_checkpoints(ops, pod, outputs).returncode == 0
    assert unfetched() == []  # model.pt was left on purpose
    pod.sh(f"printf late > {outputs}/ck1/late.txt")
    assert [reason.split(" (")[0] for reason in unfetched()] == ["changed after it was fetched"]


@pytest.mark.parametrize("pattern", ["ckpt/*.pt", "", "a\nb"])
def test_a_pattern_that_is_not_a_name_is_refused_before_contact(ops, pattern):
    result = ops("artifacts.fetch", "--host", "nowhere.invalid", "--run-id", "r1", "--exclude", pattern)
    one_line_error(result, 2, "--exclude")


# ---------------------------------------------------------------- validate and report readers


def test_validate_and_report_never_read_through_a_link_out(ops, project, tmp_path):
    canary = tmp_path / "laptop.jsonl"
    canary.write_text('{"ok": true, "avg_reward": 0.4242, "reward": 0.4242, "secret": "laptop-canary"}\n')
    root = project / "artifacts" / "pod_logs"
    for run_id in ("linked", "whole"):
        run = root / run_id if run_id == "linked" else tmp_path / "elsewhere"
        run.mkdir(parents=True)
        for name, text in CONTRACT.items():
            (run / name).write_text(text)
        (run / "summary.json").symlink_to(canary)
        (run / "results.jsonl").symlink_to(canary)
    (root / "whole").symlink_to(tmp_path / "elsewhere")  # the run directory itself a link out

    validate = ops("validate", "--json")
    report = ops("report", "--json")

    assert validate.returncode == 1
    invalid = {(e["run_id"], e["file"]) for e in validate.json["invalid"]}
    assert {("linked", "summary.json"), ("whole", "summary.json")} <= invalid
    assert all("refused" in e["error"] for e in validate.json["invalid"])
    assert "laptop-canary" not in report.stdout + report.stderr and "0.4242" not in report.stdout
    for path in (project / "artifacts").glob("report.*"):
        assert "0.4242" not in path.read_text()


# ---------------------------------------------------------------- the project's own tar check


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("bad", ["run/../x", "../x", "/etc/x", "other/x"])
def test_the_tar_check_refuses_a_path_out_of_the_run(bad):
    with pytest.raises(UnsafeArchive):
        check_member_path(member(bad), {"run"})


@pytest.mark.parametrize("bad", [
    member("run/up", tarfile.SYMTYPE, "../../etc/passwd"), member("run/abs", tarfile.SYMTYPE, "/etc/passwd"),
    member("run/bent", tarfile.SYMTYPE, "sub/../.."), member("run/hard", tarfile.LNKTYPE, "etc/passwd"),
    member("run/rnd", tarfile.CHRTYPE), member("run/blk", tarfile.BLKTYPE), member("run/f", tarfile.FIFOTYPE),
], ids=["symlink-up", "symlink-absolute", "symlink-bent", "hardlink-out", "chardev", "blockdev", "fifo"])
def test_the_tar_check_drops_links_out_and_devices(bad):
    assert member_dropped(bad, kept=[])
    assert not member_dropped(member("run/sub/ok", tarfile.SYMTYPE, "../x"), kept=[])


def crafted_stream(tmp_path, members) -> Path:
    path = tmp_path / "crafted.tar"
    with tarfile.open(path, "w") as tar:
        for info in members:
            data = b"x" if info.isfile() else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


def test_without_pythons_tar_filter_the_projects_check_alone_holds(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)  # as on Python 3.10
    dest = tmp_path / "dest"
    for bad in (member("run/../x"), member("/tmp/x")):
        with pytest.raises(UnsafeArchive):
            safe_extract(crafted_stream(tmp_path, [member("run/ok"), bad]), dest, {"run"})
        assert not dest.exists()
    below_link = [member("run/l", tarfile.SYMTYPE, "."), member("run/l/x")]
    with pytest.raises(UnsafeArchive):
        safe_extract(crafted_stream(tmp_path, below_link), dest, {"run"})

    stream = crafted_stream(tmp_path, [member("run/ok"), member("run/out", tarfile.SYMTYPE, str(tmp_path)),
                                       member("run/rnd", tarfile.CHRTYPE), member("run/in", tarfile.SYMTYPE, "ok")])
    files, dropped = safe_extract(stream, dest, {"run"})

    assert (files, sorted(dropped)) == (1, ["run/out", "run/rnd"])
    assert tree(dest) == {"run": "dir", "run/ok": "file", "run/in": "link"}


@needs_isolation
def test_text_no_utf8_can_hold_is_shown_by_validate_and_report_not_a_traceback(pods, ops, project):
    # JSON lets a pod write a lone surrogate ("\ud800"): a Python str then holds a character no
    # UTF-8 file or terminal takes, and report.md, report.html and the printed table stopped there.
    pod = pods["rsync"]
    plant_run(pod, "surr1", r"""&& printf '%s' '{"ok": true, "avg_reward": 0.5, "model_id": "m\ud800x"}' > summary.json &&
        printf '%s\n' '{"id": "q\udfff", "response": "said \ud83d\ude00 \ud800", "reward": 1}' '{"id": "q2", "reward": 0}' \
        > results.jsonl""")
    assert ops("artifacts.fetch", "--host", pod.alias, "--run-id", "surr1").returncode == 0

    shown, validated = ops("report"), ops("validate")

    assert shown.returncode == 0 and validated.returncode == 0, shown.stderr + validated.stderr
    assert "Traceback" not in shown.stderr + validated.stderr
    assert "m\ufffdx" in shown.stdout and "m\ufffdx" in (project / "artifacts" / "report.md").read_text()
    page = (project / "artifacts" / "report.html").read_text()
    assert "said \U0001F600 \ufffd" in page and "q\ufffd" in page  # the pair is one emoji, the lone one U+FFFD
    assert ops("report", "--json").json["rows"][0]["model_id"] == "m\ufffdx"
