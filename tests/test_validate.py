"""`ops validate`: a gate over local run directories; exit 1 on each kind of defect, 0 on a complete root."""

import json

from conftest import one_line_error
from ops_tasks.operations.validate import validate_root


def make_run(root, run_id, *, summary=None, results=None, status=None, skip=()):
    """A complete run directory (the artifact contract), minus the files named in skip."""
    run = root / run_id
    run.mkdir(parents=True)
    files = {
        "command.sh": "#!/bin/bash\npython3 examples/eval_arith.py\n",
        "run_metadata.json": json.dumps({"run_id": run_id, "model_id": "m", "env_id": "arith", "config": {}}),
        "summary.json": json.dumps(summary if summary is not None else {"ok": True, "avg_reward": 0.5}),
        "stdout.log": "done\n",
    }
    if results is not None:
        files["results.jsonl"] = results
    if status is not None:
        files["status.json"] = json.dumps(status)
    for name, text in files.items():
        if name not in skip:
            (run / name).write_text(text)
    return run


def test_a_complete_root_passes_with_the_default_root_of_the_project(ops, root):
    make_run(root, "run-a", results='{"id": 1, "reward": 1}\n{"id": 2, "reward": 0}\n')
    make_run(root, "run-b")

    result = ops("validate", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["ok"] is True
    assert result.json["root"] == str(root)
    assert result.json["runs"] == 2
    assert result.json["complete"] == ["run-a", "run-b"]
    assert result.json["missing"] == {} and result.json["invalid"] == [] and result.json["failed"] == []


def test_dotfiles_files_and_earlier_attempts_are_not_runs(ops, root):
    run = make_run(root, "run-a")
    (run / "attempts" / "1").mkdir(parents=True)
    (run / "attempts" / "1" / "summary.json").write_text("{broken")
    (root / ".fetch-state").mkdir()
    (root / "notes.txt").write_text("not a run\n")

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 0, result.stdout
    assert result.json["runs"] == 1 and result.json["complete"] == ["run-a"]


def test_missing_files_are_listed_per_run_and_exit_1(ops, root):
    make_run(root, "good")
    make_run(root, "half", skip=("stdout.log", "summary.json"))

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    assert result.json["ok"] is False
    assert result.json["missing"] == {"half": ["summary.json", "stdout.log"]}
    assert result.json["complete"] == ["good"]


def test_an_unparseable_summary_is_named_with_line_and_column(ops, root):
    run = make_run(root, "run-a")
    (run / "summary.json").write_text('{\n  "ok": true,\n  "avg_reward": ,\n}\n')

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    [error] = result.json["invalid"]
    assert (error["run_id"], error["file"], error["line"], error["column"]) == ("run-a", "summary.json", 3, 17)
    assert "Expecting value" in error["error"]
    assert result.json["complete"] == []


def test_results_jsonl_reports_the_first_bad_line(ops, root):
    good = '{"id": 1, "reward": 1}\n'
    make_run(root, "run-a", results=good + "\n" + good + '{"id": 3, "reward": 1\n' + "[1, 2]\n")

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    [error] = result.json["invalid"]
    assert (error["file"], error["line"]) == ("results.jsonl", 4)


def test_a_summary_with_ok_false_is_failed_with_its_failure_class(ops, root):
    make_run(root, "oom", summary={"ok": False, "state": "failed", "failure_class": "oom", "exit_code": 1})
    make_run(root, "fine")

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    [failed] = result.json["failed"]
    assert failed["run_id"] == "oom"
    assert "ok: false" in failed["reason"] and "failure_class oom" in failed["reason"]
    assert result.json["complete"] == ["fine"]


def test_a_supervisor_status_of_timeout_is_failed_even_with_an_ok_summary(ops, root):
    make_run(root, "slow", status={"state": "timeout", "failure_class": "timeout"})

    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    assert result.json["failed"] == [{"run_id": "slow", "reason": "status.json says state timeout, "
                                                                   "failure_class timeout"}]


def test_human_output_names_each_problem(ops, root):
    make_run(root, "good")
    make_run(root, "half", skip=("stdout.log",), status={"state": "running"})
    make_run(root, "bad", summary={"ok": False, "failure_class": "oom"})

    result = ops("validate", "--root", str(root))

    assert result.returncode == 1
    out = result.stdout
    assert "NOT OK: 3 runs, 1 complete, 1 missing files, 0 invalid, 1 failed" in out
    assert "half" in out and "stdout.log (still running or queued)" in out
    assert "bad" in out and "failure_class oom" in out


def test_an_empty_root_is_not_a_pass(ops, root):
    result = ops("validate", "--root", str(root), "--json")

    assert result.returncode == 1
    assert result.json["ok"] is False and result.json["runs"] == 0
    assert result.json["error"] == f"no run directories under {root}"


def test_a_missing_root_is_one_line_exit_2(ops, project):
    one_line_error(ops("validate", "--root", "nowhere/pod_logs"), 2, str(project / "nowhere" / "pod_logs"),
              "no such directory")


def test_validate_root_as_a_function(tmp_path):
    make_run(tmp_path, "a", results="not json\n")

    report = validate_root(tmp_path)

    assert report["invalid"] == [{"run_id": "a", "file": "results.jsonl", "line": 1, "column": 1,
                                  "error": "Expecting value"}]
    assert report["ok"] is False
