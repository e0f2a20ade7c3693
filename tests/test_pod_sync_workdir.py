"""pod.sync --workdir on real sshd pods: the laptop's checkout on the pod without a commit or a
push (issue 24). What is sent is what git shows; a second sync sends what changed and removes
what left, never a file the pod made and never through a link; runs record which sync they ran,
and the commit pin takes the laptop's HEAD with its uncommitted change; a fleet is synced at once;
bad input is exit 2 before any contact."""

import json
import os
import subprocess

import pytest

from conftest import needs_isolation, one_line_error

pytestmark = needs_isolation

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x", "GIT_CONFIG_GLOBAL": "/dev/null"}
REPO = "/root/repo"  # the pod's home is bind-mounted from pod.home: REPO is pod.home / "repo" here
ORIGIN = "git@github.com:me/eval.git"  # named, never fetched
ODD_NAME = "name with space\nand newline.txt"


def git(folder, *args) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], env=GIT_ENV, check=True, capture_output=True,
                          text=True).stdout.strip()


def write(path, text="x\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def checkout(tmp_path):
    """A git checkout as an eval's is: tracked code, a nested .gitignore with a negation, an
    excluded file, a link, an untracked file with an odd name, a big ignored folder."""
    top = tmp_path / "eval"
    git(tmp_path, "init", "-q", "-b", "main", str(top))
    git(top, "remote", "add", "origin", ORIGIN)
    write(top / ".gitignore", "*.log\nartifacts/\n.venv/\n")
    write(top / "eval.py", "print('v1')\n")
    write(top / "pkg" / "__init__.py", "")
    write(top / "pkg" / "data" / ".gitignore", "*.bin\n!keep.bin\n")
    write(top / "pkg" / "data" / "keep.bin", "kept\n")
    write(top / "pkg" / "data" / "huge.bin", "ignored\n")
    write(top / "old" / "gone.py", "bye\n")
    (top / "latest").symlink_to("eval.py")
    git(top, "add", ".")
    git(top, "commit", "-q", "-m", "one")
    write(top / ".git" / "info" / "exclude", "scratch.txt\n")
    write(top / "scratch.txt", "excluded\n")
    write(top / "run.log", "ignored\n")
    write(top / ".venv" / "lib" / "big.py", "ignored\n" * 1000)
    write(top / ODD_NAME, "untracked, not ignored\n")
    return top


def on_pod(pod, *parts):
    return pod.home.joinpath("repo", *parts)


def pod_tree(pod) -> set:
    """Every file and link of the pod's repo (relative), the sync's record left out."""
    root = pod.home / "repo"
    found = set()
    for folder, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found - {".ops-workdir.json"}


def sync(ops, pod, folder, *extra, **kw):
    return ops("pod.sync", "--host", pod.alias, "--remote-repo", REPO, "--workdir", str(folder), "--json", *extra, **kw)


SENT = {".gitignore", "eval.py", "latest", "pkg/__init__.py", "pkg/data/.gitignore", "pkg/data/keep.bin",
        "old/gone.py", ODD_NAME}


def test_what_is_sent_is_what_git_shows_links_as_links_and_no_git_folder(pod, ops, checkout):
    os.chown(checkout / "eval.py", 4321, 4321)  # the laptop's user is nobody on the pod

    result = sync(ops, pod, checkout)

    assert result.returncode == 0, result.stdout + result.stderr
    assert pod_tree(pod) == SENT  # no *.log, .venv/, excluded or negated-away file, no .git
    assert not on_pod(pod, ".git").exists()
    assert os.readlink(on_pod(pod, "latest")) == "eval.py"
    assert (on_pod(pod, "eval.py").stat().st_uid, on_pod(pod, "eval.py").stat().st_gid) == (0, 0)  # the pod's user
    assert on_pod(pod, ODD_NAME).read_text() == "untracked, not ignored\n"
    document = result.json
    assert document["commit"] == git(checkout, "rev-parse", "HEAD") and document["branch"] == "main"
    assert document["dirty"] is True and document["workdir"]["change"].startswith("sha256:")  # the untracked file
    assert document["workdir"]["files"] == len(SENT) and document["workdir"]["sent_files"] == len(SENT) - 1  # a link
    # rsync's own connection, and one more for the record: one round trip.
    assert (pod.accepted_connections(), pod.sessions()) == (2, 2)


def test_a_second_sync_sends_the_change_and_removes_what_left_the_checkout_only(pod, ops, checkout):
    assert sync(ops, pod, checkout).returncode == 0
    write(on_pod(pod, "outputs", "result.json"), "{}")  # the pod's own files: never sent, never removed
    write(on_pod(pod, "notes.txt"), "mine")
    write(checkout / "eval.py", "print('v2')\n")
    synced = on_pod(pod, "eval.py").stat()  # the same size, and within the same second as the sync's copy
    os.utime(checkout / "eval.py", ns=(synced.st_atime_ns, synced.st_mtime_ns + 1000))
    git(checkout, "rm", "-q", "-r", "old")

    again = sync(ops, pod, checkout)

    assert again.returncode == 0, again.stdout + again.stderr
    assert again.json["workdir"]["sent_files"] == 1 and again.json["workdir"]["removed"] == 1
    assert on_pod(pod, "eval.py").read_text() == "print('v2')\n"
    assert pod_tree(pod) == (SENT - {"old/gone.py"}) | {"outputs/result.json", "notes.txt"}
    assert not on_pod(pod, "old").exists()  # the folder that held only what left
    unchanged = sync(ops, pod, checkout)
    assert unchanged.json["workdir"]["sent_files"] == 0 and unchanged.json["workdir"]["removed"] == 0


def test_nothing_outside_the_repo_is_written_or_removed_through_a_link_on_the_pod(pod, ops, checkout, tmp_path):
    outside = tmp_path / "outside"  # the pod sees this folder where the test does
    write(outside / "gone.py", "not the sync's\n")
    assert sync(ops, pod, checkout).returncode == 0
    # On the pod, a synced folder becomes a link out of the repo, and one is made where a folder goes.
    pod.sh(f"cd {REPO} && rm -r old && ln -s {outside} old && rm -r pkg/data && ln -s {outside} pkg/data")
    git(checkout, "rm", "-q", "-r", "old")
    write(checkout / "pkg" / "data" / "new.bin", "x")  # ignored: *.bin
    write(checkout / "pkg" / "data" / "keep.bin", "kept, v2\n")

    again = sync(ops, pod, checkout)

    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(os.listdir(outside)) == ["gone.py"] and (outside / "gone.py").read_text() == "not the sync's\n"
    assert not on_pod(pod, "pkg", "data").is_symlink()  # rsync made the folder again in the link's place
    assert on_pod(pod, "pkg", "data", "keep.bin").read_text() == "kept, v2\n"


def runs_config(folder, name, runs) -> str:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"remote_repo": REPO, "remote_outputs_dir": "/mnt/wd-out", "runs": runs}))
    return str(path)


def submit(ops, pod, config, cwd, *extra):
    return ops("runs.submit", "--host", pod.alias, "--config", config, "--no-tmux", "--json", *extra, cwd=cwd)


def test_runs_record_the_sync_they_ran_and_the_pin_takes_the_laptops_head_with_its_change(pod, ops, checkout,
                                                                                            tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    run = {"command": "python3 eval.py", "summary": "exit_code"}
    synced = sync(ops, pod, checkout)
    head, change = synced.json["commit"], synced.json["workdir"]["change"]

    # The default pin: the laptop's HEAD (ops run in the checkout, whose origin the record holds).
    accepted = submit(ops, pod, runs_config(configs, "a", [dict(run, run_id="r1")]), checkout)

    assert accepted.returncode == 0 and accepted.json["queued"] == ["r1"], accepted.stdout + accepted.stderr
    metadata = json.loads(pod.sh("cat /mnt/wd-out/r1/run_metadata.json").stdout)
    assert metadata["git"]["commit"] == head and metadata["git"]["dirty"] is True
    assert metadata["git"]["workdir"]["change"] == change and metadata["git"]["workdir"]["source"].endswith(
        str(checkout))
    assert pod.sh("cat /mnt/wd-out/r1/stdout.log").stdout == "v1\n"

    # The laptop moves on without a sync: the pod's copy is not its HEAD, and the refusal names both.
    write(checkout / "eval.py", "print('v2')\n")
    git(checkout, "commit", "-q", "-am", "two")
    moved = git(checkout, "rev-parse", "HEAD")
    refused = submit(ops, pod, runs_config(configs, "b", [dict(run, run_id="r2")]), checkout)
    [reason] = [r["reason"] for r in refused.json["refused"]]
    assert head[:12] in reason and moved[:12] in reason and change[7:19] in reason and "--workdir" in reason

    # Synced again, it runs; a synced file edited on the pod afterwards is refused, named.
    assert sync(ops, pod, checkout).returncode == 0
    assert submit(ops, pod, runs_config(configs, "c", [dict(run, run_id="r3")]), checkout).json["queued"] == ["r3"]
    assert pod.sh("cat /mnt/wd-out/r3/stdout.log").stdout == "v2\n"
    pod.sh(f"echo 'print(3)' >> {REPO}/eval.py")
    edited = submit(ops, pod, runs_config(configs, "d", [dict(run, run_id="r4")]), checkout)
    [reason] = [r["reason"] for r in edited.json["refused"]]
    assert "changed on the pod after pod.sync --workdir" in reason and "eval.py" in reason


def test_a_folder_outside_git_is_sent_but_what_its_gitignore_ignores_and_no_pin_takes_it(pod, ops, tmp_path):
    folder = tmp_path / "plain"
    write(folder / ".gitignore", "cache/\n")
    write(folder / "run.py", "print('plain')\n")
    write(folder / "cache" / "big.bin", "ignored\n")

    result = sync(ops, pod, folder)

    assert result.returncode == 0, result.stdout + result.stderr
    assert pod_tree(pod) == {".gitignore", "run.py"}
    assert result.json["commit"] is None and result.json["workdir"]["change"].startswith("sha256:")
    config = runs_config(tmp_path, "p", [{"run_id": "p1", "command": "true", "summary": "exit_code"}])
    refused = submit(ops, pod, config, tmp_path, "--expect-commit", "abcdef1")
    [reason] = [r["reason"] for r in refused.json["refused"]]
    assert "abcdef1" in reason and "from a folder outside git" in reason
    assert submit(ops, pod, config, tmp_path).json["queued"] == ["p1"]  # no pin asked: it runs


def test_a_git_sync_afterwards_takes_the_record_away(pod, ops, checkout, tmp_path):
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(checkout), str(bare))
    assert sync(ops, pod, checkout).returncode == 0
    pod.sh(f"cd {REPO} && git init -q && git remote add origin file://{bare}")

    again = ops("pod.sync", "--host", pod.alias, "--remote-repo", REPO, "--json")

    assert again.returncode == 0, again.stdout + again.stderr
    assert not on_pod(pod, ".ops-workdir.json").exists()


@pytest.mark.parametrize("flags, fragments", [
    (["--workdir", "{checkout}", "--branch", "main"], ["--workdir sends a local folder", "--branch"]),
    (["--workdir", "{checkout}", "--repo-url", "git@x:y.git"], ["--repo-url"]),
    (["--workdir", "{checkout}/missing"], ["--workdir:", "is not a folder"]),
    (["--workdir", "{checkout}", "--remote-repo", "/root"], ["'/root'", "home directory"]),
    (["--workdir", "{checkout}", "--remote-repo", "/mnt"], ["'/mnt'", "top of the file system"]),
    (["--workdir", "{checkout}", "--remote-repo", "repo"], ["absolute path"]),
])
def test_bad_input_is_one_line_exit_2_before_any_contact(pod, ops, checkout, flags, fragments):
    argv = [flag.replace("{checkout}", str(checkout)) for flag in flags]
    if "--remote-repo" not in argv:
        argv += ["--remote-repo", REPO]

    result = ops("pod.sync", "--host", pod.alias, *argv)

    one_line_error(result, 2, *fragments)
    assert pod.accepted_connections() == 0


def test_the_local_profile_is_refused_it_runs_in_the_checkout_already(ops, checkout):
    one_line_error(ops("pod.sync", "--host", "local", "--workdir", str(checkout)), 2, "--workdir", "--host")


def test_a_repo_that_is_the_pods_home_through_a_link_is_refused_there_and_nothing_is_written(pod, ops, checkout):
    pod.sh("mkdir -p /mnt/work && ln -s /root /mnt/work/repo")
    before = sorted(os.listdir(pod.home))

    result = ops("pod.sync", "--host", pod.alias, "--remote-repo", "/mnt/work/repo", "--workdir", str(checkout))

    # The first contact may also say it trusted the pod's key (the record's connection opens
    # while rsync runs); the refusal is one line of its own, said as the pod's, not as ssh's.
    lines = [line for line in result.stderr.splitlines() if "trusted the host key" not in line]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "/mnt/work/repo is the home folder on this pod" in lines[0] and "ssh" not in lines[0]
    assert sorted(os.listdir(pod.home)) == before


def test_the_flag_alone_sends_the_checkout_holding_the_current_folder(pod, ops, checkout):
    result = ops("pod.sync", "--host", pod.alias, "--remote-repo", REPO, "--workdir", "--json", cwd=checkout / "pkg")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.json["workdir"]["path"] == str(checkout) and pod_tree(pod) == SENT


def test_a_fleet_is_synced_at_once_each_pod_recorded(pod_factory, ops, checkout):
    pods = [pod_factory(), pod_factory()]

    result = ops("pod.sync", "--host", ",".join(p.alias for p in pods), "--remote-repo", REPO,
                 "--workdir", str(checkout), "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert [p["ok"] for p in result.json["pods"].values()] == [True, True]
    for each in pods:
        assert pod_tree(each) == SENT
        record = json.loads(on_pod(each, ".ops-workdir.json").read_text())
        assert record["commit"] == git(checkout, "rev-parse", "HEAD") and len(record["files"]) == len(SENT)
    text = ops("pod.sync", "--host", ",".join(p.alias for p in pods), "--remote-repo", REPO,
               "--workdir", str(checkout))
    assert text.returncode == 0 and text.stdout.count("0 of 8 files sent") == 2, text.stdout


def test_install_runs_in_the_synced_repo(pod, ops, checkout):
    result = sync(ops, pod, checkout, "--install", "python3 eval.py > installed.txt")

    assert result.returncode == 0, result.stdout + result.stderr
    assert [s["step"] for s in result.json["steps"]] == ["rsync", "record", "install"]
    assert on_pod(pod, "installed.txt").read_text() == "v1\n"


# ---------------------------------------------------------------- the pod's own checks (no pod needed)


def test_the_pod_takes_no_path_out_of_the_repo_and_no_home_for_a_repo(tmp_path, monkeypatch):
    from ops_tasks.runtime.store import BadRequest
    from ops_tasks.runtime.workdir import receive
    repo = tmp_path / "work" / "repo"
    repo.mkdir(parents=True)
    outside = write(tmp_path / "work" / "outside.txt", "keep")
    sync = {"commit": None, "change": None}
    for bad in ["../outside.txt", str(outside), "a/./b", "a//b", ""]:
        with pytest.raises(BadRequest, match="not a path inside the repo"):
            receive({"repo": str(repo), "sync": sync, "files": [bad]})
    # A record edited by hand to name a file outside: the next sync never reaches it.
    write(repo / ".ops-workdir.json", json.dumps({"files": {"../outside.txt": [32768, 4, 0]}}))
    write(repo / "a.py", "a")
    assert receive({"repo": str(repo), "sync": sync, "files": ["a.py"]})["removed"] == 0
    assert outside.read_text() == "keep"
    monkeypatch.setenv("HOME", str(repo))
    with pytest.raises(BadRequest, match="home directory"):
        receive({"repo": str(repo), "sync": sync, "files": ["a.py"]})


def test_the_change_hash_follows_the_content_of_what_differs_from_head(checkout):
    from ops_tasks.operations.workdir import read_checkout
    (checkout / ODD_NAME).unlink()
    for ignored in ("scratch.txt", "run.log"):
        (checkout / ignored).unlink()
    assert read_checkout(str(checkout)).change is None  # what git shows is HEAD: nothing uncommitted

    write(checkout / "eval.py", "print('v2')\n")
    edited = read_checkout(str(checkout)).change
    write(checkout / "eval.py", "print('v3')\n")
    assert read_checkout(str(checkout)).change not in (None, edited)
    write(checkout / "eval.py", "print('v2')\n")
    assert read_checkout(str(checkout)).change == edited  # the same change, the same hash
    write(checkout / "notes.md", "new")
    with_notes = read_checkout(str(checkout)).change
    assert with_notes != edited
    write(checkout / "run.log", "ignored: not part of it")
    with_ignored = read_checkout(str(checkout))
    assert with_ignored.change == with_notes and "run.log" not in with_ignored.files
