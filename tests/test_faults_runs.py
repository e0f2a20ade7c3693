"""The run queue at its edges, on one real sshd pod with a small (64 MB) tmpfs volume: run
directories that point outside the outputs root, a full volume, damaged status files, daemons
that leave their process group, slots changed under a live supervisor, and the verdicts a
careless supervisor gets wrong. Each test uses its own outputs root, so its supervisor and
queue are its own."""

import json
import re
import shlex
import subprocess
import time

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error, ops_argv, pod_pids
from ops_tasks.runtime import python_argv
from ops_tasks.runtime.contract import CONTRACT_VERSION
from ops_tasks.runtime.store import BadRequest, check_outputs_root

pytestmark = needs_isolation

SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


# One laptop and one pod (a 64 MB volume) for the module.
client = module_client()
pod = module_pod("fpod", volume_size="64m")


def config(project, outputs, runs, **top):
    path = project / f"runs-{len(list(project.glob('runs-*')))}.json"
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": outputs, "runs": runs, **top}))
    return str(path)


def submit_and_wait(ops, pod, path, *extra):
    submitted = ops("runs.submit", "--host", pod.alias, "--config", path, "--json", *extra)
    assert submitted.json is not None, submitted.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.json is not None, waited.stderr
    return submitted, {r["run_id"]: r for r in waited.json["runs"]}, waited


def pod_tool(pod, command, request) -> dict:
    """The pod's own run tool, asked directly (as a laptop that skipped its checks would)."""
    path = pod.root / f"request-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"contract": CONTRACT_VERSION, **request}) + "\n")
    argv = python_argv("python3", "commands", "main", command)
    done = pod.sh(" ".join(shlex.quote(a) for a in argv) + f" < {path}", check=False)
    return json.loads(done.stdout)


def processes_matching(pod, text) -> list:
    """Pids in the pod's own namespace whose command line holds text (never machine-wide)."""
    return pod_pids(pod, re.escape(text), live=True)


# ---------------------------------------------------------------- run directories and roots


# Only folders inside the pod's own namespace (its tmpfs /mnt, its private /root) are used as
# decoys: a buggy tool must never be pointed at the machine's real /etc.
@pytest.mark.parametrize("run", [
    {"run_id": "typo", "run_dir": "/root/decoy"},
    {"run_id": "typo", "run_dir": "/mnt/t-dirs/decoy"},
    {"run_id": "typo", "run_dir": "/mnt/t-dirs/out/.ops/decoy"},
    {"run_id": "a/b", "run_dir": "/mnt/t-dirs/out/a/b"},
    {"run_id": "..", "run_dir": "/mnt/t-dirs/out/../decoy"},
])
def test_the_pod_refuses_a_run_outside_its_outputs_root_whatever_the_laptop_sent(pod, run):
    pod.sh(f"mkdir -p {run['run_dir']} && echo mine > {run['run_dir']}/authorized_keys")
    answer = pod_tool(pod, "submit", {
        "outputs_dir": "/mnt/t-dirs/out", "submission_id": "s1", "force": True, "foreground": True,
        "runs": [dict(run, command="true", cwd="/root", env={})]})
    assert answer.get("bad_input") and "run" in answer["error"], answer
    assert pod.sh(f"ls {run['run_dir']}").stdout.split() == ["authorized_keys"]  # nothing moved
    assert pod.sh("test -e /mnt/t-dirs/out/.ops/queue", check=False).returncode == 1  # refused before anything


@pytest.mark.parametrize("root", ["/root", "/mnt", "/root/.ssh/out"])
def test_an_outputs_root_that_is_no_place_for_runs_is_refused_on_both_sides(pod, ops, root):
    before = pod.accepted_connections()
    one_line_error(ops("runs.list", "--host", pod.alias, "--remote-outputs-dir", root), 2, "outputs root")
    assert pod.accepted_connections() == before  # refused before contact
    answer = pod_tool(pod, "status", {"outputs_dir": root})
    assert answer.get("bad_input") and "outputs root" in answer["error"], answer
    assert pod.sh(f"test -e {root}/.ops", check=False).returncode == 1


@pytest.mark.parametrize("root", ["/", "/etc", "/etc/x", "/usr/local/out", "/home/alice", "relative"])
def test_a_system_folder_as_outputs_root_is_refused_before_contact(pod, ops, root):
    # --dry-run: a tool that failed to refuse still contacts nothing (the machine's real /etc).
    one_line_error(ops("runs.list", "--host", pod.alias, "--remote-outputs-dir", root, "--dry-run"), 2,
                   "outputs root")
    with pytest.raises(BadRequest, match="outputs root"):
        check_outputs_root(root)


def test_a_link_to_a_folder_outside_the_root_is_no_run_directory(pod):
    pod.sh("mkdir -p /mnt/t-link/out /root/linked && echo mine > /root/linked/authorized_keys"
           " && ln -sfn /root/linked /mnt/t-link/out/evil")
    answer = pod_tool(pod, "submit", {
        "outputs_dir": "/mnt/t-link/out", "submission_id": "s1", "force": True, "foreground": True,
        "runs": [{"run_id": "evil", "run_dir": "/mnt/t-link/out/evil", "command": "true", "cwd": "/root", "env": {}}]})
    assert answer.get("bad_input"), answer
    assert pod.sh("ls /root/linked").stdout.split() == ["authorized_keys"]
    listing = pod_tool(pod, "status", {"outputs_dir": "/mnt/t-link/out"})
    assert listing["runs"] == []  # a listing never takes the link for a run


def test_force_never_moves_files_the_supervisor_did_not_write(pod, ops, project):
    pod.sh("mkdir -p /mnt/t-force/out/mine && echo precious > /mnt/t-force/out/mine/notes.txt"
           " && echo '{\"state\": \"succeeded\"}' > /mnt/t-force/out/mine/status.json")
    path = config(project, "/mnt/t-force/out", [{"run_id": "mine", "command": "true"}])
    result = ops("runs.submit", "--host", pod.alias, "--config", path, "--force", "--json")
    assert result.returncode == 1 and [r["run_id"] for r in result.json["refused"]] == ["mine"]
    assert "--force" not in result.json["refused"][0]["reason"]
    assert pod.sh("cat /mnt/t-force/out/mine/notes.txt").stdout == "precious\n"
    assert pod.sh("test -e /mnt/t-force/out/mine/attempts", check=False).returncode == 1


def test_read_only_tasks_create_nothing_on_the_pod(pod, ops):
    for task in (["runs.list"], ["runs.status", "--run-id", "r1"], ["runs.logs", "r1"], ["runs.wait", "--run-id", "r1",
                                                                                          "--timeout", "1"]):
        ops(*task, "--host", pod.alias, "--remote-outputs-dir", "/root/nonexistent/x")  # the pod's own /root
        assert pod.sh("test -e /root/nonexistent", check=False).returncode == 1, task


# ---------------------------------------------------------------- a full volume


def test_a_full_volume_leaves_every_run_with_its_real_end_once_space_is_back(pod, ops, project):
    out = "/mnt/t-full/out"
    path = config(project, out, [
        {"run_id": "filler", "command": "[ -e /mnt/t-full/filled ] && exit 5; touch /mnt/t-full/filled; "
                                        "dd if=/dev/zero of=/mnt/t-full/fill bs=1M count=100; exit 7"},
        {"run_id": "after", "command": SUMMARY},
    ])
    submitted = ops("runs.submit", "--host", pod.alias, "--config", path, "--json")
    assert submitted.json["queued"] == ["filler", "after"], submitted.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (processes_matching(pod, "of=/mnt/t-full/fill")
                                           or pod.sh("test -e /mnt/t-full/fill", check=False).returncode):
        time.sleep(0.1)
    assert pod.sh("df --output=avail /mnt | tail -1").stdout.strip() == "0"  # the volume is full
    time.sleep(1.5)  # the supervisor's loop meets the full volume several times (a lower bound)
    pod.sh("rm /mnt/t-full/fill")

    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")

    runs = {r["run_id"]: r for r in waited.json["runs"]}
    assert (runs["filler"]["state"], runs["filler"]["exit_code"]) == ("failed", 7), runs["filler"]
    assert runs["after"]["state"] == "succeeded", runs["after"]
    assert pod.sh(f"find {out} -name '*.tmp.*'").stdout == ""
    log = pod.sh(f"cat {out}/.ops/supervisor.log").stdout
    assert "crashed" not in log and "Traceback" not in log
    # nothing half-written makes the run id refused: it can be run again
    again = ops("runs.submit", "--host", pod.alias, "--config", path, "--retry-failed", "--json")
    assert "filler" in again.json["queued"], again.json
    assert ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json").json["outcome"] == "done"


def test_a_volume_already_full_at_submit_is_named_and_nothing_is_half_queued(pod, ops, project):
    out = "/mnt/t-fullnow/out"
    path = config(project, out, [{"run_id": "first", "command": SUMMARY}, {"run_id": "second", "command": SUMMARY}])
    pod.sh(f"mkdir -p {out}; dd if=/dev/zero of=/mnt/t-fullnow/fill bs=1M count=200 2>/dev/null; true")
    try:
        refused = ops("runs.submit", "--host", pod.alias, "--config", path, "--json")
    finally:
        pod.sh("rm -f /mnt/t-fullnow/fill")
    assert refused.returncode in (1, 2) and "Traceback" not in refused.stderr
    said = json.dumps(refused.json)
    assert "is full" in said and out in said, said  # the disk named, not only "Errno 28"
    assert pod.sh(f"ls {out}/.ops/pending 2>/dev/null | wc -l").stdout.strip() in ("", "0")  # nothing half-queued
    again = ops("runs.submit", "--host", pod.alias, "--config", path, "--json")
    assert again.returncode == 0 and sorted(again.json["queued"]) == ["first", "second"], again.stdout
    assert ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json").returncode == 0


# ---------------------------------------------------------------- damaged status files


def test_one_damaged_status_json_is_unknown_and_every_other_run_still_listed(pod, ops, project):
    out = "/mnt/t-bad/out"
    path = config(project, out, [{"run_id": "good", "command": SUMMARY}])
    submit_and_wait(ops, pod, path)
    for name, text in (("list", "[1]"), ("text", '"x"'), ("state", '{"state": [1]}'), ("attempt", '{"state": "failed", "attempt": "2"}')):
        pod.sh(f"mkdir -p {out}/{name} && echo {shlex.quote(text)} > {out}/{name}/status.json")
    # and damaged bookkeeping beside them: skipped, never a crash of the listing
    pod.sh(f"echo '[1]' > {out}/.ops/pending/0-list.json && echo '{{\"run_id\": \"zz\"}}' > {out}/.ops/active/zz.json")

    listed = ops("runs.list", "--host", pod.alias, "--remote-outputs-dir", out, "--json")

    states = {r["run_id"]: r["state"] for r in listed.json["runs"]}
    assert states == {"good": "succeeded", "list": "unknown", "text": "unknown", "state": "unknown",
                      "attempt": "unknown"}, listed.stderr
    assert all(r.get("error") for r in listed.json["runs"] if r["state"] == "unknown")
    status = ops("runs.status", "--host", pod.alias, "--remote-outputs-dir", out, "--run-id", "state", "--json")
    assert status.returncode == 1 and status.json["run"]["state"] == "unknown"
    waited = ops("runs.wait", "--host", pod.alias, "--remote-outputs-dir", out, "--run-id", "list,good",
                 "--timeout", "30", "--json")
    assert waited.returncode == 1 and waited.json["outcome"] == "done" and waited.json["failed"] == ["list"]


# ---------------------------------------------------------------- processes


def test_a_setsid_daemon_is_stopped_when_its_run_ends_or_times_out(pod, ops, project):
    out = "/mnt/t-daemon/out"
    daemon = "setsid bash -c 'while sleep 0.1; do echo still-{tag}; done' & "
    path = config(project, out, [
        {"run_id": "ends", "command": daemon.format(tag="ends") + SUMMARY},
        {"run_id": "times", "command": daemon.format(tag="times") + "sleep 303", "timeout": 1},
    ], defaults={})
    _, runs, _ = submit_and_wait(ops, pod, path, "--slots", "2")

    assert (runs["ends"]["state"], runs["times"]["state"]) == ("succeeded", "timeout")
    assert processes_matching(pod, "still-") == [] and processes_matching(pod, "sleep 303") == []
    sizes = pod.sh(f"stat -c %s {out}/ends/stdout.log {out}/times/stdout.log").stdout
    time.sleep(0.5)
    assert pod.sh(f"stat -c %s {out}/ends/stdout.log {out}/times/stdout.log").stdout == sizes  # nobody writes on
    assert "outside its process group" in pod.sh(f"cat {out}/.ops/supervisor.log").stdout


@pytest.mark.parametrize("limit, state", [("timeout", "timeout"), ("stall_timeout", "stalled")])
def test_a_timeout_or_stall_kills_the_whole_process_group(pod, ops, project, limit, state):
    seconds = 304 if limit == "timeout" else 305  # each case its own sleeps, found by their argv
    path = config(project, f"/mnt/t-group-{limit}/out",
                  [{"run_id": "grp", "command": f"sleep {seconds} & sleep {seconds}; wait", limit: 1}])
    _, runs, _ = submit_and_wait(ops, pod, path)
    assert runs["grp"]["state"] == state
    assert processes_matching(pod, f"sleep {seconds}") == []
    # Stopped as a group at the limit: nothing was left for the later sweeps (the owner marker,
    # the remembered process tree), which exist for what leaves the group.
    log = pod.sh(f"cat /mnt/t-group-{limit}/out/.ops/supervisor.log").stdout
    assert "outside its process group" not in log and "left behind" not in log, log


# ---------------------------------------------------------------- verdicts


def test_verdicts_a_careless_supervisor_gets_wrong(pod, ops, project):
    out = "/mnt/t-verdicts/out"
    count = "echo x >> $OPS_RUN_DIR/../count-$OPS_RUN_ID; "
    path = config(project, out, [
        {"run_id": "exit3_ok", "command": SUMMARY + "; exit 3"},
        {"run_id": "ok_zero", "command": "echo '{\"ok\": 0}' > $OPS_RUN_DIR/summary.json"},
        {"run_id": "ok_false_text", "command": "echo '{\"ok\": \"false\"}' > $OPS_RUN_DIR/summary.json"},
        {"run_id": "ok_one", "command": "echo '{\"ok\": 1}' > $OPS_RUN_DIR/summary.json"},
        {"run_id": "talkative", "command": "while true; do echo tick; sleep 0.1; done", "timeout": 1},
        {"run_id": "once", "command": count + "exit 1"},
        {"run_id": "twice", "command": count + "exit 1", "retries": 1},
    ])
    _, runs, waited = submit_and_wait(ops, pod, path, "--slots", "7")

    found = {k: (r["state"], r.get("failure_class")) for k, r in runs.items()}
    assert found == {"exit3_ok": ("failed", "exit_nonzero"), "ok_zero": ("failed", "bad_summary"),
                     "ok_false_text": ("failed", "bad_summary"), "ok_one": ("failed", "bad_summary"),
                     "talkative": ("timeout", "timeout"), "once": ("failed", "exit_nonzero"),
                     "twice": ("failed", "exit_nonzero")}
    assert waited.returncode == 1
    assert pod.sh(f"cat {out}/count-once").stdout == "x\n"  # no retries: exactly one run
    assert pod.sh(f"cat {out}/count-twice").stdout == "x\nx\n"


def test_run_ids_with_a_slash_are_refused_on_the_laptop(pod, ops, project):
    before = pod.accepted_connections()
    path = config(project, "/mnt/t-ids/out", [{"run_id": "../escape", "command": "true"}])
    one_line_error(ops("runs.submit", "--host", pod.alias, "--config", path), 2, "escape")
    one_line_error(ops("runs.status", "--host", pod.alias, "--run-id", "a/b", "--remote-outputs-dir", "/mnt/t-ids/out"),
                   2, "a/b")
    assert pod.accepted_connections() == before


# ---------------------------------------------------------------- a live supervisor


def test_slots_given_to_a_live_supervisor_apply(pod, ops, project):
    out = "/mnt/t-slots/out"
    # Each run waits (bounded) until all three have started: only three slots at once let them succeed.
    together = ("touch /mnt/t-slots/started-$OPS_RUN_ID; for i in $(seq 100); do "
                "[ $(ls /mnt/t-slots/started-* | wc -l) -ge 3 ] && break; sleep 0.1; done; "
                "[ $(ls /mnt/t-slots/started-* | wc -l) -ge 3 ] && " + SUMMARY)
    # The holder keeps the supervisor busy (bounded) until two of the later runs have started.
    holder = ("for i in $(seq 300); do [ $(ls /mnt/t-slots/started-* 2>/dev/null | wc -l) -ge 2 ] && break; "
              "sleep 0.1; done; " + SUMMARY)
    first = config(project, out, [{"run_id": "holder", "command": holder}])
    assert ops("runs.submit", "--host", pod.alias, "--config", first, "--json").returncode == 0
    later = config(project, out, [{"run_id": f"t{i}", "command": together} for i in range(3)])

    submitted = ops("runs.submit", "--host", pod.alias, "--config", later, "--slots", "3", "--json")

    assert submitted.json["supervisor"] == "running; slots now 3 (it reads them again each loop)"
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert {r["run_id"]: r["state"] for r in waited.json["runs"]} == {f"t{i}": "succeeded" for i in range(3)}


def test_racing_submissions_report_the_supervisor_truthfully(pod, project, client):
    out = "/mnt/t-race/out"
    paths = [config(project, out, [{"run_id": f"r{i}", "command": "sleep 0.5; " + SUMMARY}]) for i in range(3)]
    racers = [subprocess.Popen([*ops_argv(), "runs.submit", "--host", pod.alias, "--config", path, "--json"],
                               cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for path in paths]
    answers = [json.loads(racer.communicate(timeout=60)[0]) for racer in racers]

    said = sorted(a["supervisor"].split(" (")[0].split(" in ")[0] for a in answers)
    assert all(s in ("started", "running", "already running") for s in said), said  # never "failed to start"
