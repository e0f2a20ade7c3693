"""Campaigns on a bad day (issue 22, ../shared/cases/bad-day.md "Campaign faults"): whatever
breaks, an unattended `ops campaign` ends with every run exactly once in its report. On real sshd
pods, with existing hosts (-H): generated run ids kept across a kill mid-submit, a pod rebooted
mid-wait, its sshd down for a while, a pod of two lost for good, the same campaign twice at once
from one checkout and from two.

Every run holds until the test lets it go (a file in the test's own folder, which every pod sees),
then appends its id to ran.txt there: a run that ran to its end twice shows as two lines."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ops_tasks.testing.delay_proxy import DelayProxy
from conftest import module_client, module_pod, needs_isolation, ops_argv, run_ops

pytestmark = needs_isolation

client = module_client()
pod_a = module_pod("bd-a")


# ---------------------------------------------------------------- helpers


@pytest.fixture
def shared(tmp_path):
    """The test's folder every pod sees: `go` lets the runs end, ran.txt says which did."""
    path = tmp_path / "shared"
    path.mkdir()
    return path


def new_project(tmp_path, name="project"):
    path = tmp_path / name
    path.mkdir()
    return path


def write_config(project, name, shared, runs, outputs=None) -> str:
    """A config of these runs (each a dict of keys; the command is added): each holds until
    shared/go (or shared/go-<its run id>) exists (at most 60 s), then says it ran."""
    command = (f"for i in $(seq 1200); do [ -e {shared}/go ] || [ -e {shared}/go-$OPS_RUN_ID ] && break; "
               "sleep 0.05; done; "
               f"echo \"$OPS_RUN_ID\" >> {shared}/ran.txt; "
               "printf '{\"ok\": true, \"score\": 1}' > \"$OPS_RUN_DIR/summary.json\"")
    path = project / f"{name}.json"
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": outputs or f"/mnt/{name}",
                                "runs": [dict(run, command=command) for run in runs]}))
    return path.name


def ran(shared) -> list:
    path = shared / "ran.txt"
    return sorted(path.read_text().split()) if path.exists() else []


def client_env(client) -> dict:
    return client.env(XDG_CACHE_HOME=str(client.home / ".cache"))


def campaign(client, project, *args):
    """`ops campaign ARGS --json` to its end, as a user runs it."""
    result = run_ops(["campaign", *args, "--json"], cwd=project, env=client_env(client), timeout=150)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def started(client, project, *args):
    """`ops campaign ARGS --json` started in its own process (to be killed, or to run beside another)."""
    return subprocess.Popen([*ops_argv(), "campaign", *args, "--json"], cwd=project, env=client_env(client),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc, timeout=150):
    stdout, stderr = proc.communicate(timeout=timeout)
    assert "Traceback" not in stderr, stderr
    proc.stdout_text, proc.stderr_text = stdout, stderr
    proc.json = json.loads(stdout) if stdout.strip().startswith("{") else None
    return proc


def state_of(project) -> dict:
    folders = list((project / "artifacts" / "campaigns").glob("*/state.json"))
    return json.loads(folders[0].read_text()) if folders else {}


def evidence(project, phase) -> dict:
    (folder,) = (project / "artifacts" / "campaigns").iterdir()
    return json.loads((folder / f"{phase}.json").read_text())


def until(condition, what, proc=None, limit=60.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the campaign ended before {what}: {proc.stdout.read()} {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def phase_is(project, phase, *outcomes):
    return lambda: state_of(project).get("phases", {}).get(phase, {}).get("outcome") in outcomes


def reported(project) -> list:
    """The run ids of the campaign's report (its rows and the runs that did not succeed)."""
    doc = json.loads((project / "artifacts" / "report.json").read_text())
    return sorted(r["run_id"] for r in doc["rows"] + doc.get("not_succeeded", []))


def pod_text(pod, script) -> str:
    return pod.sh(script, check=False).stdout


def run_state(pod, outputs, run_id) -> str:
    text = pod_text(pod, f"cat {outputs}/{run_id}/status.json 2>/dev/null")
    return json.loads(text)["state"] if text.strip() else ""


def ledger_state(project, run_id):
    """What the campaign's ledger last recorded of run_id (None before it heard anything)."""
    (path,) = (project / "artifacts" / "ledgers").glob("*.jsonl")
    states = [e.get("state") for e in map(json.loads, path.read_text().splitlines())
              if e.get("event") == "state" and e.get("run_id") == run_id]
    return states[-1] if states else None


# ---------------------------------------------------------------- 1. generated run ids


@pytest.fixture
def slow_tmux(pod_a, shared):
    """The pod's tmux starting a session or window only once shared/tmux-go exists: a submit
    that queued its runs and has not answered yet (its supervisor is being started)."""
    wrapper = pod_a.bin / "tmux"
    wrapper.write_text(f"#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in new-session|new-window)\n"
                       f"  for i in $(seq 600); do [ -e {shared}/tmux-go ] && break; sleep 0.05; done;; esac; done\n"
                       f"exec {shutil.which('tmux')} \"$@\"\n")
    wrapper.chmod(0o755)
    yield shared / "tmux-go"
    wrapper.unlink()


def test_generated_run_ids_are_fixed_once_so_a_campaign_killed_mid_submit_runs_each_run_once(
        client, pod_a, shared, tmp_path, slow_tmux):
    project = new_project(tmp_path)
    outputs = "/mnt/bd-generated"
    # No run_id: the seed's <timestamp>_<env_id>_..._seed<n>, stamped with the time of loading.
    config = write_config(project, "generated", shared, [{"env_id": "gen", "seed": n} for n in range(3)], outputs)
    command = ("--config", config, "-H", "bd-a")

    first = started(client, project, *command)
    try:
        until(lambda: pod_text(pod_a, f"ls {outputs}/*/status.json 2>/dev/null").count("status.json") == 3,
              "the pod queued the three runs", first)
    finally:
        first.kill()  # SIGKILL: the pod queued them, the laptop never heard its answer
        first.communicate(timeout=30)
    slow_tmux.write_text("")
    time.sleep(1.1)  # a new load of the config now stamps other ids
    (shared / "go").write_text("")

    again = campaign(client, project, *command)

    assert again.returncode == 0, again.stdout + again.stderr
    on_pod = pod_text(pod_a, f"ls {outputs}").split()
    assert len(on_pod) == 3 and all(name.endswith(f"_gen_seed{n}") for name, n in zip(sorted(on_pod), range(3))), on_pod
    assert ran(shared) == sorted(on_pod)  # each ran once
    assert reported(project) == sorted(on_pod)
    ids_at = state_of(project)["ids_at"]
    assert sorted(on_pod)[0].startswith(time.strftime("%Y%m%d-%H%M%S", time.gmtime(ids_at)))


# ---------------------------------------------------------------- 2. a pod reboot mid-wait


def reboot(pod) -> None:
    """Every process of the pod but its sshd listener killed at once (tmux server, supervisor,
    the runs, the SSH sessions), as a reboot does; its volume and home stay. Again until none is
    left: a process forked while the first ones were being killed (a submit starting its
    supervisor) would otherwise outlive the "reboot" (seen under load: the resume found the run
    still owned by a live supervisor and resumed nothing)."""
    for _ in range(100):
        left = [pid for pid in pod.namespace_pids() if pid != pod.proc.pid]
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    raise AssertionError(f"processes outlived the reboot: {left}")


def test_a_pod_rebooted_mid_wait_has_its_lost_runs_resumed_by_the_campaign_itself(client, pod_a, shared, tmp_path):
    project = new_project(tmp_path)
    outputs = "/mnt/bd-reboot"
    run_ids = [f"rb{n}" for n in range(3)]
    config = write_config(project, "reboot", shared, [{"run_id": r} for r in run_ids], outputs)

    proc = started(client, project, "--config", config, "-H", "bd-a", "--wait-timeout", "120")
    until(phase_is(project, "wait", "running"), "the campaign waits", proc)
    until(lambda: run_state(pod_a, outputs, "rb0") == "running", "rb0 runs", proc)
    reboot(pod_a)  # rb0 stays `running` in its status.json, with nobody to run it: lost
    (shared / "go").write_text("")

    done = finished(proc)

    assert done.returncode == 0, done.stdout_text + done.stderr_text
    print(pod_text(pod_a, f"cat {outputs}/rb0/attempts/*/status.json {outputs}/rb0/status.json; cat {outputs}/.ops/supervisor.log"))
    assert ran(shared) == run_ids and reported(project) == run_ids
    wait = evidence(project, "wait")
    assert [(r["pod"], r["runs"]) for r in wait["resumed"]] == [("bd-a", ["rb0"])], wait["resumed"]
    assert json.loads(pod_text(pod_a, f"cat {outputs}/rb0/status.json"))["attempt"] == 2
    assert "resumed" in next(p for p in done.json["phases"] if p["phase"] == "wait")["summary"]


def test_a_run_claimed_but_not_started_when_its_pod_rebooted_is_resumed_once(client, pod_a, shared, tmp_path,
                                                                           slow_tmux):
    """A reboot between a supervisor's claim of a run (status `running`, its active entry) and its
    start (its queue entry is removed only then): resumed, it runs once, not twice."""
    project = new_project(tmp_path)
    outputs = "/mnt/bd-claimed"
    config = write_config(project, "claimed", shared, [{"run_id": "cl0"}], outputs)
    (shared / "go").write_text("")
    submit = subprocess.Popen([*ops_argv(), "runs.submit", "--host", "bd-a", "--config", config], cwd=project,
                              env=client_env(client), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Queued means its status and its queue entry both written (the status comes first: under load a
    # reboot between the two left no entry to claim, and the test nothing to resume).
    until(lambda: run_state(pod_a, outputs, "cl0") == "queued" and pod_a.sh(
        f"ls {outputs}/.ops/pending/*-cl0.json", check=False).returncode == 0, "cl0 queued", submit)
    reboot(pod_a)  # the supervisor never started (tmux held); what its claim writes, written here
    submit.kill()
    submit.wait(timeout=30)
    pod_a.sh(f"""python3 - <<'PY'
import glob, json, os, shutil
entry, = glob.glob("{outputs}/.ops/pending/*-cl0.json")
shutil.copy(entry, "{outputs}/.ops/active/cl0.json")
status = json.load(open("{outputs}/cl0/status.json"))
status.update(state="running", started=status["queued_at"], supervisor_pid=2 ** 22 + 1)
json.dump(status, open("{outputs}/cl0/status.json", "w"))
PY""")
    slow_tmux.write_text("")

    resumed = run_ops(["runs.resume", "--host", "bd-a", "--remote-outputs-dir", outputs, "--json"], cwd=project,
                      env=client_env(client))
    assert resumed.returncode == 0 and resumed.json["resumed"] == ["cl0"], resumed.stdout + resumed.stderr
    waited = run_ops(["runs.wait", "--host", "bd-a", "--run-id", "cl0", "--remote-outputs-dir", outputs,
                      "--timeout", "60", "--json"], cwd=project, env=client_env(client))

    assert waited.returncode == 0 and waited.json["runs"][0]["attempt"] == 2, waited.stdout + waited.stderr
    time.sleep(1)  # a second queue entry would have been started by now
    assert ran(shared) == ["cl0"]


# ---------------------------------------------------------------- 3. the link down for a while


class SshdGate(DelayProxy):
    """The pod's sshd as the laptop sees it: down() drops every connection and refuses new ones
    (each counted), up() serves again."""

    def __init__(self, port):
        super().__init__(port, delay_s=0)
        self.refusing, self.refused = False, 0

    async def _accept(self, reader, writer):
        if self.refusing:
            self.refused += 1
            writer.transport.abort()
            return
        await super()._accept(reader, writer)

    def down(self):
        self.refusing = True
        self.cut()

    def up(self):
        self.refusing = False


@pytest.fixture
def gate(pod_a, client):
    with SshdGate(pod_a.port) as proxy:
        with client.config.open("a") as handle:
            handle.write(f"Host bd-gate\n  HostName 127.0.0.1\n  Port {proxy.port}\n  User {pod_a.user}\n"
                         f"  IdentityFile {client.key}\n  IdentitiesOnly yes\n\n")
        yield proxy


def test_an_unattended_campaign_rides_out_a_lost_link_and_stops_saying_so_past_its_deadline(
        client, pod_a, shared, tmp_path, gate):
    project = new_project(tmp_path)
    config = write_config(project, "link", shared, [{"run_id": f"ln{n}"} for n in range(2)])

    # Down for a few looks, well within --ready-timeout: the campaign goes on once it is back.
    proc = started(client, project, "--config", config, "-H", "bd-gate", "--ready-timeout", "60")
    until(phase_is(project, "wait", "running"), "the campaign waits", proc)
    gate.down()
    until(lambda: gate.refused >= 3, "three looks refused", proc)
    gate.up()
    (shared / "go").write_text("")
    done = finished(proc)

    assert done.returncode == 0, done.stdout_text + done.stderr_text
    assert ran(shared) == ["ln0", "ln1"] and reported(project) == ["ln0", "ln1"]
    assert evidence(project, "wait")["outages"]["bd-gate"] > 0

    # Down longer than --ready-timeout, with no other pod to take its runs: the campaign stops,
    # says why and how to go on; the same command then resumes.
    (shared / "go").unlink()
    other = new_project(tmp_path, "other")
    config = write_config(other, "link2", shared, [{"run_id": "ln2"}])
    proc = started(client, other, "--config", config, "-H", "bd-gate", "--ready-timeout", "2")
    until(phase_is(other, "wait", "running"), "the campaign waits", proc)
    gate.down()
    stopped = finished(proc)
    gate.up()

    assert stopped.returncode == 1 and stopped.json["stopped_at"] == "wait", stopped.stdout_text
    assert "bd-gate: no answer for" in stopped.json["error"] and "--ready-timeout" in stopped.json["error"]
    (shared / "go").write_text("")
    resumed = campaign(client, other, "--config", config, "-H", "bd-gate", "--ready-timeout", "2")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert ran(shared) == ["ln0", "ln1", "ln2"] and reported(other) == ["ln2"]


# ---------------------------------------------------------------- 4. a pod of two lost for good


def test_a_two_pod_campaign_that_loses_a_pod_for_good_places_its_runs_on_the_other(
        client, pod_a, pod_factory, shared, tmp_path):
    lost = pod_factory(alias="bd-lost")
    project = new_project(tmp_path)
    outputs = "/mnt/bd-two"
    run_ids = [f"tw{n}" for n in range(4)]
    config = write_config(project, "two", shared, [{"run_id": r} for r in run_ids], outputs=outputs)

    proc = started(client, project, "--config", config, "-H", "bd-a,bd-lost", "--ready-timeout", "2",
                   "--idle-release", "0.01")
    until(phase_is(project, "wait", "running"), "the campaign waits", proc)
    on_lost = sorted(r for r in run_ids if run_state(lost, outputs, r))
    assert len(on_lost) == 2, on_lost  # one CPU slot on each pod: two runs each
    # One of them ends there (its results on that pod only, not fetched yet), the other starts.
    first_done = next(r for r in on_lost if run_state(lost, outputs, r) == "running")
    (shared / f"go-{first_done}").write_text("")
    until(lambda: [run_state(lost, outputs, r) for r in on_lost].count("running") == 1
          and run_state(lost, outputs, first_done) == "succeeded", "one run ended on the pod, the other runs", proc)
    until(lambda: ledger_state(project, first_done) == "succeeded", "the campaign saw it end", proc)
    lost.stop()  # gone for good, with its volume
    (shared / "go").write_text("")

    done = finished(proc)

    assert done.returncode == 0, done.stdout_text + done.stderr_text
    assert ran(shared) == sorted(run_ids + [first_done])  # it ran again: what it wrote went with its pod
    assert reported(project) == run_ids
    wait = evidence(project, "wait")
    assert wait["lost_pods"] == ["bd-lost"] and sorted(r["run_id"] for r in wait["replaced"]) == on_lost
    # The phases after the wait leave the lost pod be (it never answers again) and say so.
    teardown = next(p for p in done.json["phases"] if p["phase"] == "teardown")
    assert teardown["outcome"] == "ok" and "bd-lost" in teardown["summary"], teardown
    assert "lost during the wait" in teardown["summary"]
    assert sorted(p.name for p in (project / "artifacts" / "pod_logs").iterdir()) == run_ids


# ---------------------------------------------------------------- 5. the same campaign twice at once


def test_the_same_campaign_started_twice_from_one_checkout_refuses_the_second_naming_the_first(
        client, pod_a, shared, tmp_path):
    project = new_project(tmp_path)
    config = write_config(project, "twice", shared, [{"run_id": f"tc{n}"} for n in range(2)])
    command = ("--config", config, "-H", "bd-a")

    first = started(client, project, *command)
    until(phase_is(project, "submit", "running", "ok"), "the first one submits", first)
    second = started(client, project, *command)
    try:
        second.wait(timeout=30)  # refused at once (before the fix it waited for the same runs)
    except subprocess.TimeoutExpired:
        pass
    (shared / "go").write_text("")
    done, second = finished(first), finished(second)

    assert second.returncode == 1, second.stdout_text + second.stderr_text
    (line,) = second.stderr_text.strip().splitlines()
    assert "already running" in line and f"pid {first.pid}" in line, line
    assert done.returncode == 0, done.stdout_text + done.stderr_text
    assert ran(shared) == ["tc0", "tc1"] and reported(project) == ["tc0", "tc1"]
    assert len(pod_text(pod_a, "ls /mnt/twice/.ops/submissions").split()) == 1


def test_one_campaign_from_two_checkouts_at_once_runs_each_run_once_and_both_report_every_run(
        client, pod_a, shared, tmp_path):
    laptops = [new_project(tmp_path, "laptop-1"), new_project(tmp_path, "laptop-2")]
    run_ids = ["tl0", "tl1", "tl2"]
    configs = [write_config(p, "two-laptops", shared, [{"run_id": r} for r in run_ids]) for p in laptops]

    first = started(client, laptops[0], "--config", configs[0], "-H", "bd-a")
    until(phase_is(laptops[0], "wait", "running"), "the first laptop waits", first)
    second = started(client, laptops[1], "--config", configs[1], "-H", "bd-a")
    until(phase_is(laptops[1], "wait", "running", "ok", "not_ok", "failed"), "the second laptop waits", second)
    (shared / "go").write_text("")
    done = [finished(first), finished(second)]

    assert [d.returncode for d in done] == [0, 0], [d.stdout_text + d.stderr_text for d in done]
    assert ran(shared) == run_ids  # each run ran once, on the pod's queue
    assert [reported(p) for p in laptops] == [run_ids, run_ids]


# ---------------------------------------------------------------- 6. failed runs taken up again


def test_a_campaign_whose_run_failed_runs_it_again_with_retry_failed_and_goes_on(client, pod_a, shared, tmp_path):
    project = new_project(tmp_path)
    outputs = "/mnt/bd-retry"
    ok = f"echo \"$OPS_RUN_ID\" >> {shared}/ran.txt; printf '{{\"ok\": true, \"score\": 1}}' > \"$OPS_RUN_DIR/summary.json\""
    (project / "retry.json").write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": outputs, "runs": [
        {"run_id": "steady", "command": ok},
        {"run_id": "flaky", "command": f"if [ -e {shared}/failed-once ]; then {ok}; else touch {shared}/failed-once; "
                                       f"exit 3; fi"}]}))
    command = ("campaign", "--config", "retry.json", "-H", "bd-a")

    first = run_ops(command, cwd=project, env=client_env(client), timeout=150)
    again = campaign(client, project, *command[1:])

    assert first.returncode == 1 and "--retry-failed" in first.stdout.strip().splitlines()[-1], first.stdout
    assert again.returncode == 1 and json.loads(pod_text(pod_a, f"cat {outputs}/flaky/status.json"))["attempt"] == 1

    retried = campaign(client, project, *command[1:], "--retry-failed")

    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert ran(shared) == ["flaky", "steady"] and reported(project) == ["flaky", "steady"]
    attempts = {r: json.loads(pod_text(pod_a, f"cat {outputs}/{r}/status.json"))["attempt"] for r in ("steady", "flaky")}
    assert attempts == {"steady": 1, "flaky": 2}  # only the failed run ran again
    submit = next(p for p in retried.json["phases"] if p["phase"] == "submit")
    assert "sent again 1 failed run(s) (--retry-failed): bd-a: flaky" in submit["summary"]
    assert [sorted(e) for e in state_of(project)["earlier"]] == [
        ["fetch", "report", "submit", "teardown", "validate", "vllm_stop", "wait"]]
