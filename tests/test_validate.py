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
    assert result.json["failed"] == [{"run_id": "slow", "state": "timeout", "failure_class": "timeout",
                                      "reason": "status.json says timeout"}]


def test_human_output_names_each_problem(ops, root):
    make_run(root, "good")
    make_run(root, "half", skip=("stdout.log",), status={"state": "running"})
    make_run(root, "bad", summary={"ok": False, "failure_class": "oom"})

    result = ops("validate", "--root", str(root))

    assert result.returncode == 1
    out = result.stdout
    assert "NOT OK: 3 runs, 1 complete, 1 missing files, 0 invalid, 2 failed" in out  # unfinished fails the gate
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


# ---------------------------------------------------------------- one verdict, and the scope


def record_submission(project, submission_id, run_ids, submitted_at):
    folder = project / "artifacts" / "submissions"
    folder.mkdir(parents=True, exist_ok=True)
    runs = [{"run_id": run_id, "run_dir": f"/mnt/pod_artifacts/outputs/{run_id}"} for run_id in run_ids]
    (folder / f"{submission_id}.json").write_text(json.dumps({
        "submission_id": submission_id, "submitted_at": submitted_at, "host": "local", "runs": runs,
        "outputs_dir": "/mnt/pod_artifacts/outputs"}))


def test_validate_fails_a_run_fetched_before_it_finished(ops, root):
    make_run(root, "early", summary={"ok": True, "avg_reward": 1.0}, status={"state": "running"})

    result = ops("validate", "--json")

    assert result.returncode == 1
    assert result.json["unfinished"] == ["early"] and result.json["failed"][0]["state"] == "unfinished"


def test_validate_takes_only_a_json_boolean_ok_as_success(ops, root):
    make_run(root, "zero", summary={"ok": 0})
    make_run(root, "text", summary={"ok": "false"})

    result = ops("validate", "--json")

    assert result.returncode == 1
    assert {f["run_id"]: f["state"] for f in result.json["failed"]} == {"text": "bad_summary", "zero": "bad_summary"}


def test_an_old_failed_run_outside_the_latest_submission_no_longer_blocks_the_chain(ops, project, root):
    make_run(root, "old-run", summary={"ok": False, "failure_class": "oom"})
    make_run(root, "new-run")
    record_submission(project, "sub-old", ["old-run"], 100.0)
    record_submission(project, "sub-new", ["new-run"], 200.0)

    latest = ops("validate", "--json")
    every = ops("validate", "--all", "--json")
    old = ops("validate", "--submission", "sub-old", "--json")
    by_id = ops("validate", "--run-id", "new-run,missing-run", "--json")

    assert latest.returncode == 0, latest.stdout
    assert latest.json["complete"] == ["new-run"] and "sub-new" in latest.json["scope"]
    assert every.returncode == 1 and old.returncode == 1 and old.json["failed"][0]["run_id"] == "old-run"
    assert by_id.returncode == 1 and by_id.json["missing"] == {"missing-run": ["the run directory (not fetched)"]}
    one_line_error(ops("validate", "--all", "--run-id", "new-run"), 2, "--run-id and --all")
    one_line_error(ops("validate", "--submission", "nope"), 2, "--submission nope", "no such submission")


LINES = [b'{"a": 1}\n', b'  {"a": 1}  \r\n', b'{"a": 1} x\n', b'{"a": 1}\x0c\n', b'\n', b' \t\r\n', b'1,2\n',
         b'\xff\n', b'{"a": "\\u00e9"}\n', b'[1, {"b": null}]', b'NaN\n', b'{"a": 1', b'\xef\xbb\xbf{"bom": 1}\n']


def test_results_lines_are_read_as_json_loads_reads_each(tmp_path):
    from ops_tasks.operations.validate import BadJsonLine, json_lines

    for index, line in enumerate(LINES):
        path = tmp_path / f"r{index}" / "results.jsonl"
        path.parent.mkdir()
        path.write_bytes(b'{"first": true}\n' + line)
        try:
            expected = [] if not line.strip() else [(2, json.loads(line))]
        except ValueError as exc:
            expected = str(exc)
        try:
            got = list(json_lines(str(path), "r"))[1:]
        except BadJsonLine as bad:
            assert bad.error["line"] == 2
            got = bad.error["error"]
        assert repr(got) == repr(expected) if isinstance(expected, list) else expected.startswith(got), line
