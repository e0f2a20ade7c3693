"""One table of run states on both sides, and one door for state changes on the pod."""

import ast
import json
from pathlib import Path

import pytest

from ops_tasks import run_states as laptop
from ops_tasks.runtime import contract as rt_contract
from ops_tasks.runtime import rundir as rt_rundir

RUNTIME = Path(__file__).resolve().parents[1] / "ops_tasks" / "runtime"
DERIVED = ("ACTIVE", "TERMINAL", "FAILED", "COUNTS_AS_FAILURE")
THE_DOOR = "set_state"


def pod_functions():
    """{name: node} of every function (and method) in the pod runtime."""
    found = {}
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text())
        found.update({node.name: node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)})
    return found


def names_used(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def test_both_sides_hold_the_same_table_and_classes():
    assert rt_contract.STATES == laptop.STATES
    assert list(rt_contract.STATES) == list(laptop.STATES)  # the derived tuples keep the table's order
    for name in DERIVED:
        assert getattr(rt_contract, name) is getattr(laptop, name), name  # one table: the laptop reads the pod's


def test_the_classes_are_what_the_tools_have_always_meant():
    assert laptop.ACTIVE == ("queued", "running")
    assert laptop.TERMINAL == ("succeeded", "failed", "timeout", "stalled", "cancelled", "lost")
    assert laptop.COUNTS_AS_FAILURE == ("failed", "timeout", "stalled", "lost")  # a cancel was asked for
    assert set(laptop.FAILED) == set(laptop.COUNTS_AS_FAILURE) | {"cancelled"}
    assert rt_contract.RETRYABLE == ("failed", "timeout", "stalled")  # a lost run is runs.resume's


@pytest.mark.parametrize("state, expected", [
    ("running", "active"), ("succeeded", "succeeded"), ("cancelled", "failed"), ("lost", "failed"),
    ("exploded", "unknown"), (None, "unknown"), (["failed"], "unknown"),
])
def test_state_class_names_a_damaged_state_unknown(state, expected):
    assert laptop.state_class(state) == expected


def test_only_the_door_writes_status_json():
    functions = pod_functions()
    assert "write_status" not in functions
    naming_the_file = {name for name, node in functions.items()
                       if any(isinstance(n, ast.Constant) and n.value == "status.json" for n in ast.walk(node))}
    assert naming_the_file == {"status_path"}
    using_the_path = {name for name, node in functions.items() if "status_path" in names_used(node)}
    # withdraw (a fleet moving a queued run away) removes its queued status: it writes no state.
    assert using_the_path == {"read_status", THE_DOOR, "forget_queued_attempt"}
    assert "write_json" in names_used(functions[THE_DOOR])


def test_every_state_change_goes_through_the_door():
    # submit, the supervisor (claim, heartbeat, finish, retry, fail-fast, orphans, abandon),
    # cancel and resume: each reaches status.json only by calling the door.
    changers = ("queue_run", "claim_ready", "heartbeat", "end_unstarted", "finish", "retry", "cancel_submission",
                "mark_orphans_lost", "abandon_all", "end_as_cancelled", "resume")
    functions = pod_functions()
    callers = {name for name, node in functions.items() if names_used(node) & {THE_DOOR, "set_attempt_state"}}
    assert set(changers) <= callers
    assert "end_as_cancelled" in names_used(functions["cancel"])


def entry(tmp_path, **extra):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return dict({"run_id": "r1", "run_dir": str(run_dir), "attempt": 2, "submission_id": "s1"}, **extra)


def read(run_dir, name):
    return json.loads((Path(run_dir) / name).read_text())


def test_the_door_writes_a_checked_status_atomically(tmp_path):
    queued = entry(tmp_path)
    written = rt_rundir.set_attempt_state(queued, "queued", queued_at=1.0)
    on_disk = read(queued["run_dir"], "status.json")
    assert on_disk == written
    assert {k: on_disk[k] for k in ("run_id", "state", "attempt", "submission_id", "queued_at")} == {
        "run_id": "r1", "state": "queued", "attempt": 2, "submission_id": "s1", "queued_at": 1.0}
    assert "updated" in on_disk
    assert sorted(p.name for p in Path(queued["run_dir"]).iterdir()) == ["status.json"]  # no temp file left


def test_each_step_starts_afresh_unless_a_status_is_kept(tmp_path):
    run = entry(tmp_path)
    rt_rundir.set_attempt_state(run, "running", pid=123, pgid=123, started=5.0)
    rt_rundir.set_attempt_state(run, "failed", failure_class="oom", finished=9.0)
    assert "pgid" not in read(run["run_dir"], "status.json")  # an ended run's pid means nothing
    rt_rundir.set_attempt_state(run, "running", pid=123, pgid=123, started=5.0)
    running = read(run["run_dir"], "status.json")
    rt_rundir.set_state(run["run_dir"], "r1", "cancelled", kept=running, finished=9.0)
    cancelled = read(run["run_dir"], "status.json")
    assert cancelled["state"] == "cancelled" and cancelled["pgid"] == 123 and cancelled["finished"] == 9.0


def test_an_ended_run_gets_its_summary_and_keeps_one_it_wrote(tmp_path):
    run = entry(tmp_path)
    rt_rundir.set_attempt_state(run, "timeout", failure_class="timeout", finished=3.0)
    summary = read(run["run_dir"], "summary.json")
    assert summary["ok"] is False and summary["state"] == "timeout" and summary["run_id"] == "r1"
    (Path(run["run_dir"]) / "summary.json").write_text('{"ok": true}')
    rt_rundir.set_attempt_state(run, "succeeded", finished=4.0)
    assert read(run["run_dir"], "summary.json") == {"ok": True}


def test_an_active_state_writes_no_summary(tmp_path):
    run = entry(tmp_path)
    rt_rundir.set_attempt_state(run, "running", started=1.0)
    assert not (Path(run["run_dir"]) / "summary.json").exists()


@pytest.mark.parametrize("state, fields, kept, message", [
    ("exploded", {"attempt": 1, "submission_id": "s"}, None, "unknown run state"),
    ("running", {"attempt": 1, "submission_id": "s", "finshed": 1.0}, None, "unknown status field(s) finshed"),
    ("queued", {"queued_at": 1.0}, None, "needs attempt, submission_id"),
    ("failed", {"attempt": 1, "submission_id": "s"}, None, "needs finished"),
    ("lost", {"failure_class": "lost"}, {"state": "running", "attempt": 1}, "needs finished"),
])
def test_the_door_refuses_a_status_the_state_machine_has_no_place_for(tmp_path, state, fields, kept, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rt_rundir.set_state(str(tmp_path), "r1", state, kept=kept, **fields)
    assert not (tmp_path / "status.json").exists()
