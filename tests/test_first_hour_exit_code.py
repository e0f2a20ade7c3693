"""The first hour (../shared/cases/first-hour.md, item 4): a run may say that its exit code is its
verdict (`summary: exit_code`). A data-preparation step that exits 0 and writes no summary.json
then succeeds, with a summary.json the supervisor wrote from the exit code (saying so, and making
up no measurement); a non-zero exit still fails with its class; a summary.json the command wrote
is kept and judges the run; without the key, exit 0 and no summary is still `no_summary`. Runs on
one real sshd pod, then fetched: runs.status, validate and report give each run one verdict."""

import json

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error

OUT = "/mnt/exit-code/out"
OWN_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 0.5}' > {run_dir}/summary.json"

client = module_client()
pod = module_pod("xpod")


def write_config(project, runs, name="runs.json", **top) -> str:
    path = project / name
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": OUT, "runs": runs, **top}))
    return str(path)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


@pytest.fixture(scope="module")
def swept(pod, client, project):
    """Four runs, submitted once and waited for: {run id: its row of runs.wait}."""
    from conftest import run_ops

    config = write_config(project, [
        {"run_id": "prep", "summary": "exit_code", "command": "echo prepared > {run_dir}/data.txt"},
        {"run_id": "prep-crash", "summary": "exit_code", "command": "echo 'killed by a bad row'; exit 3"},
        {"run_id": "prep-own", "summary": "exit_code", "command": OWN_SUMMARY},
        {"run_id": "no-key", "command": "echo prepared"},
    ])
    submitted = run_ops(["runs.submit", "--host", pod.alias, "--config", config, "--slots", "4", "--json"],
                        cwd=project, env=client.env())
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    waited = run_ops(["runs.wait", "--host", pod.alias, "--timeout", "60", "--json"], cwd=project, env=client.env())
    assert waited.json is not None, waited.stderr
    return {r["run_id"]: r for r in waited.json["runs"]}


def pod_json(pod, path):
    return json.loads(pod.sh(f"cat {path}").stdout)


@needs_isolation
def test_exit_0_without_a_summary_succeeds_under_summary_exit_code(pod, swept):
    assert (swept["prep"]["state"], swept["prep"].get("failure_class")) == ("succeeded", None)
    summary = pod_json(pod, f"{OUT}/prep/summary.json")
    assert summary["ok"] is True and summary["exit_code"] == 0 and summary["summary"] == "exit_code"
    assert "supervisor" in summary["written_by"] and "exit code" in summary["written_by"]
    assert not {"avg_reward", "mean", "n"} & set(summary)  # no measurement made up
    record = pod_json(pod, f"{OUT}/prep/.ops/record.json")
    assert record["files"]["summary.json"] == "supervisor"


@needs_isolation
def test_a_non_zero_exit_still_fails_with_its_class(pod, swept):
    assert (swept["prep-crash"]["state"], swept["prep-crash"]["failure_class"]) == ("failed", "exit_nonzero")
    assert pod_json(pod, f"{OUT}/prep-crash/summary.json")["ok"] is False


@needs_isolation
def test_a_summary_the_command_wrote_is_kept_and_the_log_says_so(pod, swept):
    assert swept["prep-own"]["state"] == "succeeded"
    assert pod_json(pod, f"{OUT}/prep-own/summary.json") == {"ok": True, "avg_reward": 0.5}
    assert pod_json(pod, f"{OUT}/prep-own/.ops/record.json")["files"]["summary.json"] == "command"
    log = pod.sh(f"cat {OUT}/.ops/supervisor.log").stdout
    assert "prep-own: summary: exit_code, but the command wrote its own summary.json: kept" in log


@needs_isolation
def test_without_the_key_exit_0_and_no_summary_is_still_no_summary(swept):
    assert (swept["no-key"]["state"], swept["no-key"]["failure_class"]) == ("failed", "no_summary")


@needs_isolation
def test_status_validate_and_report_give_each_run_one_verdict(pod, swept, client, project):
    from conftest import run_ops

    def ops(*args):
        return run_ops(list(args), cwd=project, env=client.env())

    ids = "prep,prep-crash,prep-own,no-key"
    status = ops("runs.status", "--host", pod.alias, "--remote-outputs-dir", OUT, "--run-id", ids, "--json")
    assert {r["run_id"]: r["state"] for r in status.json["runs"]} == {
        "prep": "succeeded", "prep-crash": "failed", "prep-own": "succeeded", "no-key": "failed"}
    fetched = ops("artifacts.fetch", "--host", pod.alias, "--remote-outputs-dir", OUT, "--run-id", ids, "--json")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr

    validated = ops("validate", "--run-id", ids, "--json")
    assert sorted(f["run_id"] for f in validated.json["failed"]) == ["no-key", "prep-crash"]
    assert "prep" in validated.json["complete"] and "prep-own" in validated.json["complete"]
    reported = ops("report", "--run-id", ids, "--include-failed", "--json")
    assert reported.returncode in (0, 1), reported.stderr
    rows = {r["run_id"]: r for r in reported.json["rows"]}
    assert {run_id: row["state"] for run_id, row in rows.items()} == {
        "prep": "succeeded", "prep-crash": "failed", "prep-own": "succeeded", "no-key": "failed"}
    assert rows["prep"].get("avg_reward") is None and rows["prep-own"]["avg_reward"] == 0.5
    alone = ops("validate", "--run-id", "prep", "--json")
    assert alone.returncode == 0 and alone.json["ok"] is True, alone.stdout


@needs_isolation
def test_a_misspelt_summary_value_is_refused_before_contact_naming_the_key_and_the_fix(pod, client, project):
    from conftest import run_ops

    before = pod.accepted_connections()
    for runs, fragments in (
            ([{"run_id": "typo", "summary": "exitcode", "command": "true"}], ("summary", "exit_code", "exitcode")),
            ([{"run_id": "both", "summary": "exit_code", "summary_from": "lm_eval", "command": "true"}],
             ("summary: exit_code", "summary_from", "keep one"))):
        config = write_config(project, runs, name="bad.json")
        refused = run_ops(["runs.submit", "--host", pod.alias, "--config", config], cwd=project, env=client.env())
        one_line_error(refused, 2, *fragments)
    assert pod.accepted_connections() == before


def test_summary_exit_code_at_the_top_of_a_config_is_every_runs(tmp_path):
    from ops_tasks.operations.run_config import load_submission
    from ops_tasks.settings import resolve_profile

    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"remote_repo": "/root", "summary": "exit_code",
                                "runs": [{"run_id": "a", "command": "true"}, {"run_id": "b", "command": "true",
                                                                                "summary": "script"}]}))
    runs = load_submission(path, profile=resolve_profile({}, "local", tmp_path)).runs
    assert [run.to_dict().get("summary") for run in runs] == ["exit_code", None]  # script: the default, not sent
