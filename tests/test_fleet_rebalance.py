"""Keeping a fleet submission going (ops_tasks/operations/fleet_runs.py, FleetSteer; ops_tasks/runtime,
probe and withdraw): queued runs move to idle pods, a lost pod's runs are placed again, a move
cut short by a crash is repaired, the ledger is rebuilt from the pods. Three real sshd pods shared
by the module: rb0 with two fake GPUs, rb1 with four, rb2 with none (CPU slots). Every run
appends its id to one file outside the pods (the test's own folder, seen by every pod), so a run
that ran twice shows as two lines."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from ops_tasks import records, targets
from ops_tasks.fleet import resolve_hosts
from ops_tasks.operations.fleet_runs import rebuild_ledger, steer, submit_to_fleet, withdraw_runs
from ops_tasks.records import Ledger, load_manifest
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import SshPod
from conftest import module_client, needs_isolation, pod_pids

pytestmark = needs_isolation

client = module_client()
NAMES = ("rb0", "rb1", "rb2")
GPUS = ([gpu(0), gpu(1)], [gpu(i) for i in range(4)], None)


@pytest.fixture(scope="module")
def pods(tmp_path_factory, client):
    started = []
    try:
        for name, gpus in zip(NAMES, GPUS):
            pod = SshPod(tmp_path_factory.mktemp(name) / "pod", name, client.public_key, gpus=gpus).start()
            client.add_alias(name, pod)
            pod.alias = name
            started.append(pod)
        yield started
    finally:
        targets.close_all()
        for pod in started:
            pod.stop()


@pytest.fixture
def laptop(client, project, monkeypatch):
    """This process as the laptop (in-process operations read its HOME's ssh config)."""
    for key, value in client.env().items():
        monkeypatch.setenv(key, value)
    targets.close_all()
    yield project
    targets.close_all()


def fleet_targets(project, names):
    return [targets.target_for(p) for p in resolve_hosts({}, ",".join(names), project)]


def write_config(project, name, run_ids, seconds, shared: Path, gpus=1) -> Path:
    """Runs that sleep, then append their id to shared/ran.txt (one line per run that ran to its end);
    on a pod whose volume holds /mnt/run-seconds they sleep as long as it says instead."""
    config = project / f"{name}.json"
    line = f"sleep \"$(cat /mnt/run-seconds 2>/dev/null || echo {seconds})\"; echo \"$OPS_RUN_ID\" >> {shared}/ran.txt; printf '{{\"ok\": true}}' > \"$OPS_RUN_DIR/summary.json\""
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": f"/mnt/{name}",
                                  "runs": [{"run_id": r, "command": line, "gpus": gpus} for r in run_ids]}))
    return config


def ran(shared: Path) -> list:
    path = shared / "ran.txt"
    return sorted(path.read_text().split()) if path.exists() else []


def manifest_of(project, submitted) -> dict:
    return load_manifest(project, submitted.json["submission_id"])


def test_queued_runs_move_to_a_pod_that_came_up_a_cut_move_is_repaired_and_each_runs_once(
        ops, pods, laptop, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    run_ids = [f"mv-{i:02d}" for i in range(10)]
    config = write_config(laptop, "move", run_ids, 0.3, shared)
    busy, idle = pods[0], pods[1]
    busy.sh("echo 5 > /mnt/run-seconds")  # its queue stays long while the fleet looks at it
    port = idle.port
    idle.stop()  # down at submission time: every run goes to rb0 (two GPUs), eight of them queued
    try:
        submitted = ops("runs.submit", "--host", "rb0,rb1", "--config", str(config), "--json")
    finally:
        idle.start(port=port)
    assert submitted.returncode == 1 and submitted.json["failed"] == ["rb1"], submitted.stderr
    assert sorted(submitted.json["placed"]["rb0"]) == run_ids
    manifest = manifest_of(laptop, submitted)
    fleet = fleet_targets(laptop, ["rb0", "rb1"])

    # A move cut short: withdrawn from rb0 and recorded for rb1, and the laptop died before rb1's submit.
    (cut,) = withdraw_runs(fleet[0], outputs_dir="/mnt/move", submission_id=manifest["submission_id"],
                           run_ids=[run_ids[-1]])
    ledger = Ledger(laptop, manifest["submission_id"])
    ledger.move(cut, records.host_fields(fleet[1].profile)["host_id"], "rb1")
    not_there = busy.sh(f"test -e /mnt/move/{cut}/status.json || echo gone").stdout.strip()
    assert not_there == "gone"  # rb0 gave its queued run back as it was before

    looks = []
    document = steer(fleet, manifest, laptop, interval_s=0.1, timeout_s=90, on_look=looks.append)

    assert document["ok"] is True and document["outcome"] == "done", document
    assert ran(shared) == run_ids  # each run ran to its end exactly once, on whichever pod
    moved = [m["run_id"] for m in document["moves"]]
    assert moved and all(m["from"] == "rb0" and m["to"] == "rb1" for m in document["moves"])
    held = {r["run_id"]: r["pod"] for r in document["runs"]}
    assert sorted(held) == run_ids and all(r["state"] == "succeeded" for r in document["runs"])
    assert {held[r] for r in moved + [cut]} == {"rb1"}  # the repaired run was queued where the ledger said
    final = Ledger(laptop, manifest["submission_id"])
    assert all(final.current(r)["attempt"] == 1 for r in run_ids)  # a move is not a new attempt
    assert {r["run_id"]: r["host"] for r in load_manifest(laptop, manifest["submission_id"])["runs"]} == held
    assert len(looks) >= 2
    busy.sh("rm /mnt/run-seconds")


def test_withdraw_takes_only_runs_not_started_and_a_bad_submission_id_is_refused(pods, laptop):
    from ops_tasks.errors import ConfigError
    from ops_tasks.operations.run_config import load_submission
    from ops_tasks.operations.runs import cancel_runs, new_submission_id, runs_status, submit_runs

    config = laptop / "hold.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": "/mnt/hold", "runs": [
        {"run_id": "holder", "command": "sleep 30"}, {"run_id": "waiter", "command": "true"}]}))
    (target,) = fleet_targets(laptop, ["rb2"])
    sub = new_submission_id()
    submit_runs(target, load_submission(config, profile=target.profile), submission_id=sub, slots=1)
    for _ in range(200):  # until the supervisor has started the first run (one CPU slot: the other waits)
        if "running" in pods[2].sh("cat /mnt/hold/holder/status.json 2>/dev/null || true").stdout:
            break
        time.sleep(0.05)

    assert withdraw_runs(target, outputs_dir="/mnt/hold", submission_id=sub, run_ids=["holder", "waiter"]) == ["waiter"]
    on_pod = json.loads(pods[2].sh(f"cat /mnt/hold/.ops/submissions/{sub}.json").stdout)
    assert [r["run_id"] for r in on_pod["runs"]] == ["holder"] and on_pod["withdrawn"] == ["waiter"]
    states = {r["run_id"]: r["state"] for r in runs_status(target, outputs_dir="/mnt/hold", run_ids=["holder", "waiter"])["runs"]}
    assert states == {"holder": "running", "waiter": "missing"}  # its directory as before it was queued
    with pytest.raises(ConfigError, match="not one"):
        withdraw_runs(target, outputs_dir="/mnt/hold", submission_id="../x", run_ids=["holder"])
    cancel_runs(target, outputs_dir="/mnt/hold", run_ids=["holder"])


def test_a_pod_stopped_mid_sweep_loses_its_runs_to_the_others_and_back_adds_no_duplicate(ops, pods, laptop, tmp_path):
    project = laptop
    shared = tmp_path / "shared"
    shared.mkdir()
    run_ids = [f"lost-{i}" for i in range(6)]
    config = write_config(project, "lost", run_ids, 0.5, shared)
    pods[1].sh("echo 60 > /mnt/run-seconds")  # its runs are still going when its sshd stops (gone with its volume)
    submitted = ops("runs.submit", "--host", "rb0,rb1,rb2", "--config", str(config), "--json")
    assert submitted.returncode == 0, submitted.stderr
    on_lost = submitted.json["placed"]["rb1"]
    assert on_lost  # four free GPUs: rb1 has runs of its own
    port = pods[1].port
    pods[1].stop()  # mid-sweep: its runs die with it, before any ran to its end
    try:
        waited = ops("runs.wait", "--host", "rb0,rb1,rb2", "--lost-after", "1", "--timeout", "90", "--json")
    finally:
        pods[1].start(port=port)

    assert waited.returncode == 0, waited.stdout + waited.stderr
    doc = waited.json
    assert doc["lost_pods"] == ["rb1"] and doc["pods"]["rb1"]["lost"] is True
    assert sorted(r["run_id"] for r in doc["replaced"]) == sorted(on_lost)
    assert {r["to"] for r in doc["replaced"]} == {"rb0"}  # rb2 has no GPU for them
    assert sorted(r["run_id"] for r in doc["runs"]) == run_ids  # each run once, on its current pod
    assert all(r["state"] == "succeeded" and r["pod"] == "rb0" for r in doc["runs"])
    assert "placed again" in waited.stderr and "Traceback" not in waited.stderr
    ledger = Ledger(project, doc["submission_id"])
    assert all(ledger.current(r)["attempt"] == 2 for r in on_lost)

    # rb1 is back (a pod anew) and answers: a look moves nothing and places nothing again.
    fleet = fleet_targets(project, NAMES)
    ledger_before = ledger.path.read_bytes()
    for task, extra in (("runs.wait", []), ("runs.balance", []), ("runs.status", ["--rebuild"])):
        dry = ops(task, "--host", "rb0,rb1,rb2", "--dry-run", "--json", *extra)
        assert dry.returncode == 0 and dry.json["dry_run"] is True, (task, dry.stdout, dry.stderr)
    assert ledger.path.read_bytes() == ledger_before  # a dry run writes nothing
    balanced = steer(fleet, load_manifest(project, doc["submission_id"]), project, once=True)
    assert balanced["moves"] == [] and balanced["replaced"] == [] and balanced["ok"] is True
    rebuilt = rebuild_ledger(fleet, load_manifest(project, doc["submission_id"]), project)
    assert rebuilt["pods_read"] == ["rb0"]  # rb1 came back without its volume's manifest
    again = Ledger(project, doc["submission_id"])
    assert {r: again.current(r)["host"] for r in run_ids} == {r: "rb0" for r in run_ids}
    assert all(again.current(r)["state"] == "succeeded" for r in run_ids)
    fetched = ops("artifacts.fetch", "--host", "rb0,rb1,rb2", "--json")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert sorted(p.name for p in (project / "artifacts" / "pod_logs").iterdir()) == run_ids
    assert ran(shared) == run_ids  # no run ran to its end twice


def test_a_pod_whose_supervisor_died_leaving_its_runs_lost_has_them_placed_on_the_others(pods, laptop, tmp_path):
    from ops_tasks.operations.run_config import load_submission
    from ops_tasks.operations.runs import new_submission_id

    shared = tmp_path / "shared"
    shared.mkdir()
    run_ids = [f"orphan-{i}" for i in range(4)]
    config = write_config(laptop, "orphan", run_ids, 0.3, shared)
    pods[1].sh("echo 60 > /mnt/run-seconds")
    fleet = fleet_targets(laptop, ["rb0", "rb1"])
    submitted = submit_to_fleet(fleet, {t.profile.name: load_submission(config, profile=t.profile) for t in fleet},
                                submission_id=new_submission_id(), project_dir=laptop, config=str(config))
    orphans = submitted["placed"]["rb1"]
    assert orphans  # four free GPUs there
    for _ in range(200):
        states = pods[1].sh("cat /mnt/orphan/*/status.json").stdout
        if states.count('"running"') == len(orphans):
            break
        time.sleep(0.05)
    # This outputs root's supervisor (another test's, of another root, may still be winding down).
    supervisor = json.loads(pods[1].sh("cat /mnt/orphan/.ops/supervisor.json").stdout)["pid"]
    assert supervisor in pod_pids(pods[1], r"^python3 -c .* ops_runtime\.commands main supervise .*/mnt/orphan",
                                  live=True)
    os.kill(supervisor, signal.SIGKILL)  # its runs go on, unwatched: `lost`

    document = steer(fleet, load_manifest(laptop, submitted["submission_id"]), laptop, interval_s=0.2, timeout_s=60)

    pods[1].sh("rm /mnt/run-seconds")
    assert document["ok"] is True and document["lost_pods"] == ["rb1"], document
    assert sorted(r["run_id"] for r in document["replaced"]) == sorted(orphans)
    assert sorted((r["run_id"], r["pod"], r["state"]) for r in document["runs"]) == [
        (r, "rb0", "succeeded") for r in run_ids]
    assert ran(shared) == run_ids
    from ops_tasks.output import render_fleet
    from ops_tasks.runs import render_table

    text = render_fleet(document, render_table)  # what runs.wait prints for people
    assert text.startswith("rb0: submission") and "4 succeeded" in text and "rb1:" in text


def test_rebuild_refuses_what_is_not_a_fleet_submission_and_balance_of_one_pod_moves_nothing(ops, pods):
    before = [pod.accepted_connections() for pod in pods]
    refused = ops("runs.status", "--host", "rb0", "--rebuild")
    assert refused.returncode == 2 and "fleet submission" in refused.stderr and "Traceback" not in refused.stderr
    assert [pod.accepted_connections() for pod in pods] == before

    alone = ops("runs.balance", "--host", "rb2", "--json")
    assert alone.returncode == 0, alone.stderr
    assert alone.json["moves"] == [] and "not a fleet submission" in alone.json["note"]
