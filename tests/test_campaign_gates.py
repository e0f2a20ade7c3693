"""Campaigns, the run-side gates (issue 16): `expect` failing a run that exited 0, out_mode
local_sync (files on the volume while the run goes and after it), a run id reused with another
config refused (and `--force` keeping the old attempt), the commit pin (another commit, a dirty
repo, the laptop's HEAD by default). One real sshd pod for the module; three submissions."""

import json
import shlex
import subprocess
import time

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error, ops_argv
from ops_tasks.runtime import gates as rt_gates
from ops_tasks.runtime import local_sync as rt_local_sync
from ops_tasks.runtime import rundir as rt_rundir
from ops_tasks.runtime import submit as rt_submit


client = module_client()
pod = module_pod("gpod")

OUT = "/mnt/g-gates/out"
GIT = ["git", "-c", "user.name=ops-test", "-c", "user.email=ops@test", "-c", "init.defaultBranch=main"]


# ---------------------------------------------------------------- the pod tool's rules, pure


def test_two_spellings_of_one_remote_are_one_origin_and_a_token_is_not_part_of_it():
    same = rt_gates.same_origin
    assert same("git@github.com:team/repo.git", "https://github.com/team/repo")
    assert same("https://user:tok3n@github.com/team/repo.git", "ssh://git@github.com/team/repo/")
    assert not same("git@github.com:team/repo.git", "git@github.com:team/other.git")
    assert not same(None, None) and not same("", "")


def test_an_identity_difference_names_the_key_and_both_values(tmp_path):
    run_dir = tmp_path / "r"
    old = {"command": "python t.py --lr 0.1", "env_names": ["A"], "config": {"lr": 0.1, "seed": 1}}
    rt_gates.write_identity({"run_dir": str(run_dir), "identity": old})
    assert rt_gates.identity_difference(str(run_dir), old) is None
    new = {"command": "python t.py --lr 0.2", "env_names": ["A", "B"], "config": {"lr": 0.2, "seed": 1}}
    assert rt_gates.identity_difference(str(run_dir), new) == "lr: 0.1 -> 0.2; env +B"
    # A file of the wrong shape on the pod proves nothing either way.
    (run_dir / ".ops" / "identity.json").write_text("[1, 2]")
    assert rt_gates.identity_difference(str(run_dir), new) is None


def test_a_queued_run_is_known_by_its_queue_entry_until_it_starts(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    rt_rundir.set_state(str(run_dir), "r", "queued", attempt=1, submission_id="s1", queued_at=1.0)
    old = {"command": "t --lr 0.1", "env_names": [], "config": {"lr": 0.1}}
    new = {"command": "t --lr 0.2", "env_names": [], "config": {"lr": 0.2}}
    run = {"run_id": "r", "run_dir": str(run_dir), "identity": new}
    decision = rt_submit.admission(run, True, {"r"}, False, False, {"r": old})
    assert decision[0] == "refuse" and "lr: 0.1 -> 0.2" in decision[1]
    assert rt_submit.admission(dict(run, identity=old), True, {"r"}, False, False, {"r": old})[0] == "skip"


def test_local_sync_never_writes_the_supervisors_own_files_from_the_runs_disk(tmp_path):
    work, volume = tmp_path / "work", tmp_path / "volume"
    (work / ".ops").mkdir(parents=True)
    (work / "sub").mkdir()
    volume.mkdir()
    (volume / "status.json").write_text('{"state": "running"}')
    (work / "status.json").write_text('{"state": "succeeded"}')  # the command's, not a state
    (work / ".ops" / "record.json").write_text("{}")
    (work / "sub" / "ckpt.pt").write_bytes(b"weights")
    (work / "latest").symlink_to("sub/ckpt.pt")
    sync = rt_local_sync.LocalSync(str(work), str(volume), 60)
    sync.sync()
    assert (volume / "status.json").read_text() == '{"state": "running"}' and not (volume / ".ops").exists()
    assert (volume / "sub" / "ckpt.pt").read_bytes() == b"weights"
    assert (volume / "latest").is_symlink() and str((volume / "latest").readlink()) == "sub/ckpt.pt"
    (work / "sub" / "ckpt.pt").write_bytes(b"weights, step 2")
    sync.sync()
    assert (volume / "sub" / "ckpt.pt").read_bytes() == b"weights, step 2"
    assert not [p for p in volume.rglob("*") if ".tmp." in p.name]


def test_a_bad_expect_commit_is_one_line_exit_2_before_any_contact(ops, project):
    (project / "c.json").write_text(json.dumps({"remote_repo": "/srv/repo", "remote_outputs_dir": "/mnt/o/out",
                                                "runs": [{"run_id": "a", "command": "x", "timeout": None}]}))
    result = ops("runs.submit", "--host", "nobody@127.0.0.1:1", "--config", "c.json", "--expect-commit", "main")
    assert one_line_error(result, 2, "--expect-commit must be a commit id", "'main'")
    assert "warning" not in result.stderr  # the refusal is the one line


# ---------------------------------------------------------------- on a real pod


def git(folder, *args):
    return subprocess.run([*GIT, "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def campaign(pod, client, tmp_path_factory):
    """A bare origin, the laptop's checkout of it (the project) and the pod's (remote_repo)."""
    base = tmp_path_factory.mktemp("gates")
    origin, laptop, repo = base / "origin.git", base / "laptop", base / "pod-repo"
    subprocess.run([*GIT, "init", "-q", "--bare", str(origin)], check=True)
    subprocess.run([*GIT, "clone", "-q", str(origin), str(laptop)], check=True, capture_output=True)
    (laptop / "tracked.txt").write_text("one\n")
    git(laptop, "add", "tracked.txt")
    git(laptop, "commit", "-q", "-m", "first")
    git(laptop, "push", "-q", "origin", "HEAD:main")
    subprocess.run([*GIT, "clone", "-q", "-b", "main", str(origin), str(repo)], check=True, capture_output=True)

    def submit(path, *extra):
        """runs.submit --wait, started: finished() gives its JSON document (and its stderr)."""
        return subprocess.Popen([*ops_argv(), "runs.submit", "--host", "gpod", "--config", path, "--wait",
                                 "--timeout", "60", "--json", *extra], cwd=laptop, env=client.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    return {"submit": submit, "laptop": laptop, "repo": repo, "local_dir": base / "local-disk", "head": git(repo, "rev-parse", "HEAD"),
            "release": base / "release"}


def config(campaign, runs, name):
    path = campaign["laptop"] / f"{name}.json"
    path.write_text(json.dumps({"remote_repo": str(campaign["repo"]), "remote_outputs_dir": OUT, "runs": runs}))
    return str(path)


def ok_summary(extra=""):
    return f"{extra}printf '{{\"ok\": true}}' > \"$OPS_RUN_DIR/summary.json\""


def finished(submission):
    """The document of a runs.submit --wait, its runs by id, and its stderr. A refused run (no
    directory on the pod) ends the wait like any ended run: it never reads as stuck."""
    stdout, stderr = submission.communicate(timeout=120)
    document = json.loads(stdout)
    assert document.get("outcome") == "done", (document, stderr)
    return document, {r["run_id"]: r for r in document["runs"]}, stderr


def pod_text(pod, path):
    return pod.sh(f"cat {shlex.quote(path)}").stdout


def release_when(pod, condition, release):
    """Poll the pod (bounded) until condition (a shell test) holds, then let the run finish."""
    for _ in range(200):
        if pod.sh(condition, check=False).returncode == 0:
            release.write_text("go")
            return True
        time.sleep(0.05)
    release.write_text("go")
    return False


@pytest.fixture(scope="module")
def first(campaign, pod):
    """One submission of many runs: expect met and unmet, a retry on `expectation`, W&B synced or
    not, a local_sync run held until its files are seen on the volume, the commit pin."""
    release = campaign["release"]
    hold = f"for i in $(seq 300); do [ -e {shlex.quote(str(release))} ] && break; sleep 0.1; done; "
    runs = [
        {"run_id": "no-ckpt", "expect": {"files": ["ckpt.pt"]}, "command": ok_summary()},
        {"run_id": "all-met", "lr": 0.1, "expect": {"files": ["ckpt*.pt"], "log_matches": "training done",
                                                    "log_not_matches": ["Traceback"]},
         "command": ok_summary("echo lr={lr}; touch \"$OPS_RUN_DIR/ckpt-9.pt\"; echo training done; ")},
        {"run_id": "traceback", "expect": {"log_not_matches": "^Traceback"},
         "command": ok_summary("echo 'Traceback (most recent call last):'; ")},
        {"run_id": "second-try", "retries": 1, "retry_on": ["expectation"], "retry_backoff": 0.1,
         "expect": {"files": ["marker"]},
         "command": ok_summary("test -d \"$OPS_RUN_DIR/attempts\" && touch \"$OPS_RUN_DIR/marker\"; ")},
        {"run_id": "wandb-synced", "expect": {"wandb_synced": True},
         "command": ok_summary("echo 'wandb: Synced 3 W&B file(s), 0 media file(s), 0 artifact file(s)'; ")},
        {"run_id": "wandb-offline", "expect": {"wandb_synced": True},
         "command": ok_summary("echo 'wandb: You can sync this run to the cloud by running:'; ")},
        {"run_id": "synced", "out_mode": "local_sync", "sync_interval": 0.2, "local_dir": str(campaign["local_dir"]),
         "expect": {"files": ["ckpt.pt"]},
         "command": "echo started; echo progress > {run_dir}/progress.txt; " + hold
                    + "touch {run_dir}/ckpt.pt; echo finished; " + ok_summary()},
        {"run_id": "pinned", "expect_commit": campaign["head"], "timeout": None, "command": ok_summary()},
        {"run_id": "pinned-elsewhere", "expect_commit": "deadbeef00", "command": ok_summary()},
    ]
    submission = campaign["submit"](config(campaign, runs, "first"), "--slots", "8")
    work, volume = f"{campaign['local_dir']}/synced", f"{OUT}/synced"
    seen_while_running = release_when(
        pod, f"test -f {volume}/progress.txt && grep -q running {volume}/status.json && test -d {work}", release)
    document, by_id, stderr = finished(submission)
    return {"submitted": document, "runs": by_id, "stderr": stderr, "seen_while_running": seen_while_running}


@needs_isolation
def test_a_run_that_exits_0_without_what_it_expects_fails_as_expectation(first, pod):
    runs = first["runs"]
    assert runs["no-ckpt"]["state"] == "failed" and runs["no-ckpt"]["failure_class"] == "expectation"
    assert "no ckpt.pt in the run directory" in runs["no-ckpt"]["error"]
    assert (runs["traceback"]["state"], runs["traceback"]["failure_class"]) == ("failed", "expectation")
    assert "has a line matching '^Traceback'" in runs["traceback"]["error"]
    assert runs["all-met"]["state"] == "succeeded", runs["all-met"]
    # The command's own summary said ok: the verdict everywhere is still failed.
    assert json.loads(pod_text(pod, f"{OUT}/no-ckpt/summary.json"))["ok"] is True
    status = json.loads(pod_text(pod, f"{OUT}/no-ckpt/status.json"))
    assert (status["state"], status["failure_class"]) == ("failed", "expectation")


@needs_isolation
def test_an_unmet_expectation_is_retried_when_retry_on_names_it(first, pod):
    run = first["runs"]["second-try"]
    assert (run["state"], run["attempt"]) == ("succeeded", 2), run
    first_attempt = json.loads(pod_text(pod, f"{OUT}/second-try/attempts/1/status.json"))
    assert first_attempt["failure_class"] == "expectation"


@needs_isolation
def test_wandb_synced_is_its_own_line_in_the_log_not_the_offline_hint(first):
    assert first["runs"]["wandb-synced"]["state"] == "succeeded"
    offline = first["runs"]["wandb-offline"]
    assert offline["failure_class"] == "expectation" and "W&B did not say it synced" in offline["error"]


@needs_isolation
def test_local_sync_puts_the_run_on_the_volume_while_it_runs_and_after_it_ends(first, pod, campaign):
    assert first["seen_while_running"], "progress.txt never reached the volume while the run was held"
    run = first["runs"]["synced"]
    assert run["state"] == "succeeded", run  # expect.files was judged on the volume
    volume = f"{OUT}/synced"
    assert pod_text(pod, f"{volume}/stdout.log").splitlines() == ["started", "finished"]
    assert pod.sh(f"test -f {volume}/ckpt.pt && test -f {volume}/summary.json && test -f {volume}/command.sh",
                  check=False).returncode == 0
    # The command was given its directory on the pod's own disk; that copy is gone once synced.
    assert pod.sh(f"test -e {campaign['local_dir']}/synced", check=False).returncode != 0
    assert json.loads(pod_text(pod, f"{volume}/status.json"))["state"] == "succeeded"


@needs_isolation
def test_the_commit_pin_refuses_another_commit_naming_both(first, campaign):
    submitted = first["submitted"]
    refused = {r["run_id"]: r["reason"] for r in submitted["refused"]}
    assert list(refused) == ["pinned-elsewhere"], refused
    assert campaign["head"][:12] in refused["pinned-elsewhere"] and "deadbeef00" in refused["pinned-elsewhere"]
    assert first["runs"]["pinned"]["state"] == "succeeded"
    assert "pinned-elsewhere" not in first["runs"] or first["runs"]["pinned-elsewhere"]["state"] == "missing"


@needs_isolation
def test_budgets_are_on_by_default_and_null_opts_out_with_a_warning(first, campaign):
    assert "'pinned'" in first["stderr"] and "timeout: null" in first["stderr"]
    manifest = json.loads((campaign["laptop"] / "artifacts" / "submissions"
                           / f"{first['submitted']['submission_id']}.json").read_text())
    budgets = {r["run_id"]: (r["timeout"], r["stall_timeout"]) for r in manifest["runs"]}
    assert budgets["no-ckpt"] == (24 * 3600.0, 30 * 60.0)
    assert budgets["pinned"] == (None, 30 * 60.0)


@pytest.fixture(scope="module")
def again(first, campaign, pod):
    """The campaign submitted again after the laptop moved on: a run id with another config, one
    unchanged, a new run under the laptop's HEAD, one opting out of the pin; then the pod's repo
    made dirty and the changed run forced."""
    git(campaign["laptop"], "commit", "-q", "--allow-empty", "-m", "second")
    laptop_head = git(campaign["laptop"], "rev-parse", "HEAD")
    runs = [
        {"run_id": "all-met", "lr": 0.2, "expect": {"files": ["ckpt*.pt"]},
         "command": ok_summary("echo lr={lr}; touch \"$OPS_RUN_DIR/ckpt-9.pt\"; ")},
        {"run_id": "wandb-synced", "expect": {"wandb_synced": True}, "retries": 2,  # retries: not what it computes
         "command": ok_summary("echo 'wandb: Synced 3 W&B file(s), 0 media file(s), 0 artifact file(s)'; ")},
        {"run_id": "follows-laptop", "command": ok_summary()},
        {"run_id": "unpinned", "expect_commit": None, "command": ok_summary()},
    ]
    second, second_runs, _ = finished(campaign["submit"](config(campaign, runs, "second")))
    pod.sh(f"echo changed >> {shlex.quote(str(campaign['repo']))}/tracked.txt")
    forced = [dict(runs[0], expect_commit=None),
              {"run_id": "dirty", "expect_commit": campaign["head"], "command": ok_summary()}]
    third, third_runs, _ = finished(campaign["submit"](config(campaign, forced, "third"), "--force"))
    return {"second": second, "second_runs": second_runs, "third": third, "third_runs": third_runs,
            "laptop_head": laptop_head}


@needs_isolation
def test_a_run_id_reused_with_another_config_is_refused_with_the_difference(again):
    refused = {r["run_id"]: r["reason"] for r in again["second"]["refused"]}
    assert "another config" in refused["all-met"] and "lr: 0.1 -> 0.2" in refused["all-met"], refused
    # The same run submitted again (only how it is retried changed) is done, not refused.
    assert {s["run_id"]: s["reason"] for s in again["second"]["skipped"]} == {"wandb-synced": "succeeded"}


@needs_isolation
def test_force_runs_the_new_config_and_keeps_the_old_attempt(again, pod):
    assert again["third"]["queued"] == ["all-met"] and again["third"]["archived"] == {"all-met": 1}
    assert again["third_runs"]["all-met"]["state"] == "succeeded"
    assert pod_text(pod, f"{OUT}/all-met/stdout.log").splitlines() == ["lr=0.2"]
    assert pod_text(pod, f"{OUT}/all-met/attempts/1/stdout.log").splitlines() == ["lr=0.1", "training done"]


@needs_isolation
def test_the_laptops_head_pins_a_pod_repo_of_the_same_origin_unless_a_run_opts_out(again, campaign):
    refused = {r["run_id"]: r["reason"] for r in again["second"]["refused"]}
    reason = refused["follows-laptop"]
    assert campaign["head"][:12] in reason and again["laptop_head"][:12] in reason and "laptop's HEAD" in reason
    assert again["second_runs"]["unpinned"]["state"] == "succeeded"


@needs_isolation
def test_the_commit_pin_refuses_a_dirty_pod_repo(again):
    refused = {r["run_id"]: r["reason"] for r in again["third"]["refused"]}
    assert list(refused) == ["dirty"] and "uncommitted changes" in refused["dirty"], refused
    assert again["third"]["ok"] is False
