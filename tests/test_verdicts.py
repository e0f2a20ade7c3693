"""One verdict of a run everywhere: run_verdict itself, and validate and report agreeing on the
"wrong numbers" cases (a crashed run's partial results, an ok summary beside a failed status, an
unfinished run, the truthiness of ok, stale files after a re-run, a re-run counted twice)."""

import json

import pytest

from ops_tasks.operations.report import build_report
from ops_tasks.operations.validate import validate_root
from ops_tasks.verdicts import UNREADABLE, run_verdict


def make_run(root, run_id, *, summary=None, status=None, rewards=None, model="m", seed=0):
    run = root / run_id
    run.mkdir(parents=True)
    (run / "command.sh").write_text("true\n")
    (run / "stdout.log").write_text("")
    (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": model, "env_id": "arith",
                                                       "config": {"seed": seed}}))
    (run / "summary.json").write_text(json.dumps(summary if summary is not None else {"ok": True}))
    if status is not None:
        (run / "status.json").write_text(json.dumps(status))
    if rewards is not None:
        (run / "results.jsonl").write_text("".join(json.dumps({"id": i, "reward": r}) + "\n"
                                                   for i, r in enumerate(rewards)))
    return run


# ---------------------------------------------------------------- the function


@pytest.mark.parametrize("status, summary, state, ok", [
    ({"state": "succeeded"}, {"ok": True}, "succeeded", True),
    ({"state": "succeeded"}, None, "succeeded", True),
    ({"state": "succeeded"}, {"avg_reward": 1}, "succeeded", True),
    (None, {"ok": True}, "succeeded", True),
    ({"state": "failed", "failure_class": "oom"}, {"ok": True}, "failed", False),
    ({"state": "timeout"}, {"ok": True}, "timeout", False),
    ({"state": "stalled"}, {"ok": True}, "stalled", False),
    ({"state": "cancelled"}, {"ok": True}, "cancelled", False),
    ({"state": "lost"}, None, "lost", False),
    ({"state": "running"}, {"ok": True}, "unfinished", False),
    ({"state": "queued"}, None, "unfinished", False),
    ({"state": "exploded"}, {"ok": True}, "unknown", False),
    (["succeeded"], {"ok": True}, "unknown", False),
    (UNREADABLE, {"ok": True}, "unknown", False),
    ({"state": "succeeded"}, {"ok": False}, "failed", False),
    ({"state": "succeeded"}, {"ok": 0}, "bad_summary", False),
    (None, {"ok": 1}, "bad_summary", False),
    (None, {"ok": "false"}, "bad_summary", False),
    (None, {"ok": "true"}, "bad_summary", False),
    (None, {"ok": None}, "bad_summary", False),
    (None, {"avg_reward": 1}, "bad_summary", False),
    (None, [True], "bad_summary", False),
    (None, UNREADABLE, "bad_summary", False),
    (None, None, "unfinished", False),
])
def test_run_verdict(status, summary, state, ok):
    verdict = run_verdict(status, summary)
    assert (verdict.state, verdict.ok) == (state, ok)
    assert (verdict.failure_class is None) == ok and (verdict.reason is None) == ok


def test_the_failure_class_comes_from_the_status_then_the_summary():
    assert run_verdict({"state": "failed", "failure_class": "oom"}, {"ok": True}).failure_class == "oom"
    assert run_verdict({"state": "failed", "failure_class": 7}, None).failure_class == "failed"
    assert run_verdict(None, {"ok": False, "failure_class": "nccl", "state": "failed"}).failure_class == "nccl"
    assert run_verdict(None, {"ok": False, "state": "weird"}).state == "failed"


# ---------------------------------------------------------------- validate and report agree


def test_a_crashed_runs_partial_results_enter_no_group(tmp_path):
    make_run(tmp_path, "good-0", rewards=[1, 0, 1, 0], seed=0)
    make_run(tmp_path, "good-1", rewards=[0, 1, 0, 1], seed=1)
    # crashed after 4 examples, each right: summary written early, the supervisor says failed
    make_run(tmp_path, "crashed", rewards=[1, 1, 1, 1], summary={"ok": True, "avg_reward": 1.0},
             status={"state": "failed", "failure_class": "oom"}, seed=2)

    doc = build_report(tmp_path, group_by="model_id")

    assert [r["run_id"] for r in doc["rows"]] == ["good-0", "good-1"]
    [group] = doc["groups"]
    assert group["runs"] == 2 and group["results_mean"] == pytest.approx(0.5)
    assert doc["not_succeeded"] == [{"run_id": "crashed", "state": "failed", "failure_class": "oom",
                                     "reason": "status.json says failed, failure_class oom"}]
    assert "| crashed  | failed  | oom " in doc["markdown"]
    assert doc["header"]["states"] == {"failed": 1, "succeeded": 2}

    included = build_report(tmp_path, group_by="model_id", include_failed=True)
    rows = {r["run_id"]: r for r in included["rows"]}
    assert rows["crashed"]["state"] == "failed" and rows["crashed"]["mean"] == 1.0
    assert included["groups"][0]["runs"] == 3 and "state" in included["columns"]


def test_an_ok_summary_beside_a_failed_status_is_failed_in_validate_and_report(tmp_path):
    make_run(tmp_path, "liar", summary={"ok": True, "avg_reward": 0.9}, status={"state": "failed"})
    make_run(tmp_path, "fine", summary={"ok": True, "avg_reward": 0.5}, status={"state": "succeeded"})

    checked = validate_root(tmp_path)
    doc = build_report(tmp_path, group_by="model_id")

    assert checked["ok"] is False and [f["run_id"] for f in checked["failed"]] == ["liar"]
    assert [r["run_id"] for r in doc["rows"]] == ["fine"] and doc["failed"] == ["liar"]
    assert doc["groups"][0]["avg_reward_mean"] == 0.5


def test_validate_fails_an_unfinished_run_and_report_leaves_it_out(tmp_path):
    make_run(tmp_path, "early", summary={"ok": True, "avg_reward": 1.0}, status={"state": "running"},
             rewards=[1, 1])

    checked = validate_root(tmp_path)
    doc = build_report(tmp_path)

    assert checked["ok"] is False and checked["unfinished"] == ["early"]
    assert checked["failed"][0]["state"] == "unfinished"
    assert doc["rows"] == [] and doc["not_succeeded"][0]["state"] == "unfinished" and doc["ok"] is False


@pytest.mark.parametrize("ok", [0, 1, "false", "true", None, [], {}])
def test_ok_must_be_a_json_boolean(tmp_path, ok):
    make_run(tmp_path, "odd", summary={"ok": ok, "avg_reward": 0.7})

    checked = validate_root(tmp_path)
    doc = build_report(tmp_path)

    assert checked["ok"] is False and checked["failed"][0]["state"] == "bad_summary"
    assert doc["rows"] == [] and doc["not_succeeded"][0]["state"] == "bad_summary"


def test_stale_results_of_a_crashed_rerun_are_not_its_numbers_but_the_earlier_success_counts_once(tmp_path):
    # attempt 1 succeeded with 4 results; the --force re-run crashed, and the fetched copy kept
    # attempt 1's results.jsonl at the top beside attempt 2's failed status.
    run = make_run(tmp_path, "stale1", rewards=[1, 1, 0, 1], status={"state": "failed", "attempt": 2})
    first = run / "attempts" / "1"
    first.mkdir(parents=True)
    for name in ("command.sh", "stdout.log", "run_metadata.json"):
        (first / name).write_text((run / name).read_text())
    (first / "summary.json").write_text(json.dumps({"ok": True, "avg_reward": 0.5}))
    (first / "status.json").write_text(json.dumps({"state": "succeeded", "attempt": 1}))
    (first / "results.jsonl").write_text("".join(json.dumps({"id": i, "reward": r}) + "\n"
                                                 for i, r in enumerate([1, 0])))

    doc = build_report(tmp_path)
    checked = validate_root(tmp_path)

    [row] = doc["rows"]
    assert (row["run_id"], row["attempt"], row["n"], row["mean"]) == ("stale1", 1, 2, 0.5)
    assert checked["ok"] is True and checked["earlier_attempts"] == {"stale1": 1}

    (first / "status.json").write_text(json.dumps({"state": "failed", "attempt": 1}))
    doc = build_report(tmp_path)
    assert doc["rows"] == [] and doc["not_succeeded"][0]["run_id"] == "stale1"


def test_a_run_in_scope_twice_counts_once_and_one_not_fetched_is_listed(tmp_path):
    make_run(tmp_path, "a", rewards=[1, 0])
    make_run(tmp_path, "b", rewards=[0, 0])

    doc = build_report(tmp_path, run_ids=["a", "a", "gone"], group_by="model_id")

    assert [r["run_id"] for r in doc["rows"]] == ["a"] and doc["groups"][0]["runs"] == 1
    assert doc["not_succeeded"] == [{"run_id": "gone", "state": "missing", "failure_class": "missing",
                                     "reason": "in scope but not fetched: no run directory"}]
    assert validate_root(tmp_path, ["a", "gone"])["missing"] == {"gone": ["the run directory (not fetched)"]}


def test_compare_refuses_a_run_that_did_not_succeed_in_one_line(tmp_path):
    from ops_tasks.errors import ConfigError

    make_run(tmp_path, "good", rewards=[1, 0])
    make_run(tmp_path, "crashed", rewards=[1, 1], status={"state": "failed", "failure_class": "oom"})

    with pytest.raises(ConfigError, match=r"run crashed is failed \(oom\): not compared \(--include-failed"):
        build_report(tmp_path, compare=["good", "crashed"])
    assert build_report(tmp_path, compare=["good", "crashed"], include_failed=True)["comparison"]["n"] == 2


def test_a_commit_from_the_pod_that_is_not_one_is_not_shown(tmp_path):
    run = make_run(tmp_path, "r", rewards=[1])
    (run / "run_metadata.json").write_text(json.dumps({"run_id": "r", "git": {"commit": "abc\n# injected"}}))

    doc = build_report(tmp_path)

    assert doc["header"]["commits"] == [] and "injected" not in doc["markdown"]


def test_a_run_that_wrote_no_summary_yet_is_listed_by_its_status_not_as_an_unreadable_file(tmp_path):
    make_run(tmp_path, "done", rewards=[1, 0])
    for run_id, state in (("running", "running"), ("lost", "lost"), ("crashed", "failed")):
        run = make_run(tmp_path, run_id, status={"state": state, "failure_class": "oom" if state == "failed" else None})
        (run / "summary.json").unlink()

    make_run(tmp_path, "empty", summary={})  # a summary, empty, and no status: not a success

    doc = build_report(tmp_path)

    assert {f["run_id"]: f["state"] for f in doc["not_succeeded"]} == {"running": "unfinished", "lost": "lost",
                                                                       "crashed": "failed", "empty": "bad_summary"}
    assert doc["errors"] == [] and doc["header"]["states"] == {"bad_summary": 1, "failed": 1, "lost": 1,
                                                               "succeeded": 1, "unfinished": 1}
    assert [r["run_id"] for r in doc["rows"]] == ["done"]


def test_a_rerun_still_running_is_unfinished_whatever_an_earlier_attempt_said(tmp_path):
    top = make_run(tmp_path, "again", rewards=[0, 0], status={"state": "running", "attempt": 2})
    first = top / "attempts" / "1"
    first.mkdir(parents=True)
    for name in ("command.sh", "stdout.log", "run_metadata.json"):
        (first / name).write_text((top / name).read_text())
    (first / "summary.json").write_text(json.dumps({"ok": True}))
    (first / "status.json").write_text(json.dumps({"state": "succeeded", "attempt": 1}))

    checked, doc = validate_root(tmp_path), build_report(tmp_path)

    assert checked["ok"] is False and checked["unfinished"] == ["again"] and checked["earlier_attempts"] == {}
    assert doc["rows"] == [] and doc["not_succeeded"][0]["state"] == "unfinished"


def test_an_empty_scope_leaves_the_saved_report_and_names_what_was_not_fetched(ops, project):
    from test_validate import record_submission

    root = project / "artifacts" / "pod_logs"
    make_run(root, "kept", rewards=[1, 0])
    record_submission(project, "first", ["kept"], 100.0)
    assert ops("report").returncode == 0
    saved = (project / "artifacts" / "report.md").read_text()
    (project / "artifacts" / "submissions" / "first.json").write_text(json.dumps(
        {"submission_id": "first", "submitted_at": "2025-01-01", "runs": [{"run_id": "kept"}]}))  # edited by hand
    record_submission(project, "empty", [], 200.0)

    empty = ops("report")  # the latest submission names no run
    unfetched = ops("validate", "--submission", "first")
    record_submission(project, "later", ["never-fetched"], 300.0)
    missing = ops("validate")

    assert empty.returncode == 1 and "Traceback" not in empty.stderr
    assert (project / "artifacts" / "report.md").read_text() == saved
    assert unfetched.returncode == 0, unfetched.stdout + unfetched.stderr
    assert missing.returncode == 1 and "none of the 1 runs in scope is under" in missing.stdout
    assert "never-fetched" in missing.stdout  # the run is named, not only the count
