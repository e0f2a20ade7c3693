"""The ledger of a fleet submission (records.Ledger): which run is on which pod in which attempt,
surviving a crash mid-write, rebuilt from the pods' own manifests."""

import json

import pytest

from ops_tasks import records
from ops_tasks.errors import ConfigError, OpsError
from ops_tasks.records import Ledger

A, B = "root@10.0.0.1:22", "root@10.0.0.2:22"


def test_placements_moves_and_states_survive_a_reload(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    assert ledger.place("r1", A, "pod-a") == 1
    ledger.place("r2", A, "pod-a")
    ledger.move("r2", B, "pod-b")
    ledger.record_state("r1", A, "succeeded")

    again = Ledger(tmp_path, "sub1")
    assert again.as_dict() == ledger.as_dict()
    assert again.runs_on(A) == ["r1"] and again.runs_on(B) == ["r2"]
    assert again.current("r2")["attempt"] == 1 and again.current("r2")["moved_from"] == A
    assert again.winning("r1")["state"] == "succeeded"


def test_a_lost_pods_unfinished_runs_get_new_attempts_and_a_late_success_counts_once(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    for run_id in ("done", "running", "queued"):
        ledger.place(run_id, A, "pod-a")
    ledger.record_state("done", A, "succeeded")
    ledger.record_state("running", A, "running")

    assert ledger.mark_lost(A) == ["running", "queued"]
    assert ledger.place("running", B, "pod-b") == 2
    ledger.record_state("running", A, "succeeded")  # pod-a came back: it finished after all
    ledger.record_state("running", B, "succeeded")

    again = Ledger(tmp_path, "sub1")
    assert again.lost_pods == {A}
    assert [a["attempt"] for a in again.runs["running"]] == [1, 2]
    assert [a["state"] for a in again.runs["running"]] == ["succeeded", "succeeded"]
    assert again.winning("running")["host_id"] == B  # one winner, never both
    assert again.unfinished_on(A) == ["queued"]


def test_a_crash_mid_write_loses_only_the_torn_line_and_the_next_event_is_whole(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    ledger.place("r1", A, "pod-a")
    ledger.place("r2", A, "pod-a")
    data = ledger.path.read_bytes()
    ledger.path.write_bytes(data[:-7])  # the tail of the last event never reached the disk

    torn = Ledger(tmp_path, "sub1")
    assert list(torn.runs) == ["r1"]
    torn.place("r3", B, "pod-b")

    again = Ledger(tmp_path, "sub1")
    assert list(again.runs) == ["r1", "r3"]
    assert all(json.loads(line) for line in again.path.read_text().splitlines())


def test_a_log_that_is_all_one_torn_line_starts_again_empty(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text('{"event": "placed", "run_')
    Ledger(tmp_path, "sub1").place("r1", A, "pod-a")
    assert list(Ledger(tmp_path, "sub1").runs) == ["r1"]


def test_lines_that_are_not_events_are_skipped(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    ledger.place("r1", A, "pod-a")
    with ledger.path.open("a") as log:
        log.write('[1, 2]\n{"event": "placed", "run_id": 5, "host_id": "x"}\n{"event": "state"}\n')
    assert Ledger(tmp_path, "sub1").as_dict() == ledger.as_dict()


def test_events_about_runs_or_pods_it_never_had_are_refused(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    with pytest.raises(OpsError, match="never placed"):
        ledger.move("ghost", B, "pod-b")
    ledger.place("r1", A, "pod-a")
    with pytest.raises(OpsError, match="no attempt on"):
        ledger.record_state("r1", B, "succeeded")


@pytest.mark.parametrize("submission_id", ["../escape", "", ".hidden"])
def test_a_submission_id_that_could_leave_the_folder_is_refused(tmp_path, submission_id):
    with pytest.raises(ConfigError, match="not a submission id"):
        Ledger(tmp_path, submission_id)


def pod_manifest(submission_id, run_ids, submitted_at, refused=()):
    return {"submission_id": submission_id, "submitted_at": submitted_at,
            "runs": [{"run_id": r, "run_dir": f"/mnt/o/{r}"} for r in run_ids],
            "refused": [{"run_id": r, "reason": "x"} for r in refused]}


def test_rebuild_from_the_pods_manifests_gives_back_who_has_what(tmp_path):
    ledger = Ledger(tmp_path, "sub1")
    ledger.place("stale", A, "pod-a")  # what the laptop had is replaced by what the pods say
    ledger.rebuild([
        {"host_id": B, "host": "pod-b", "manifest": pod_manifest("sub1", ["r2", "r1"], 200),
         "states": {"r1": "running"}},
        {"host_id": A, "host": "pod-a", "manifest": pod_manifest("sub1", ["r1", "r3", "bad/id", "r4"], 100,
                                                                 refused=["r4"]),
         "states": {"r1": "lost", "r3": "succeeded"}},
        {"host_id": "root@10.0.0.3:22", "host": "pod-c", "manifest": pod_manifest("other", ["r9"], 50)},
        {"host_id": "root@10.0.0.4:22", "host": "pod-d", "manifest": "not a manifest"},
    ])
    again = Ledger(tmp_path, "sub1")
    assert again.as_dict() == ledger.as_dict()
    assert sorted(again.runs) == ["r1", "r2", "r3"]
    assert [(a["host_id"], a["attempt"], a["state"]) for a in again.runs["r1"]] == [(A, 1, "lost"), (B, 2, "running")]
    assert again.current("r3")["state"] == "succeeded" and again.runs_on(B) == ["r1", "r2"]


def test_a_recorded_fleet_name_must_be_a_name_and_its_aliases_a_list(tmp_path):
    with pytest.raises(ConfigError, match="not a fleet name"):
        records.save_fleet(tmp_path, "../x", ["a"])
    with pytest.raises(ConfigError, match="list of host aliases"):
        records.save_fleet(tmp_path, "f", [])
    records.save_fleet(tmp_path, "f", ["a", "b"])
    assert records.load_fleet(tmp_path, "f") == ["a", "b"]
