"""The first hour (../shared/cases/first-hour.md, item 11): raw values. One rule
(runtime/contract.py: summary_leaves, is_measure, is_moment) says which summary leaves are
measurements and which are times, for runs.status on the pod and the report on the laptop: a
training script's contract_version, elapsed_s and end_time are no metric columns, and a time is
shown as a date wherever it is shown (report.md, report.html, runs.status). A fleet's summary
speaks of GPUs only when its task looked at them (vllm.start, submit and fetch did not: they said
"0 GPUs, 0 free" for two 8-GPU pods)."""

import json
import re


from conftest import module_client, module_pod, needs_isolation, run_ops
from ops_tasks.operations.report import build_report, markdown_table
from ops_tasks.operations.report_html import table_html
from ops_tasks.runtime.contract import DURATION, MEASURE, MOMENT, summary_leaves

END = 1796660021.9  # 2026-12-07 16:13:41.9 UTC
# What the guide's nanoGPT train.py writes, in its order: bookkeeping first, then what it measured.
TRAIN_SUMMARY = {"ok": True, "contract_version": 1, "run_id": "lr1", "start_time": END - 21.5, "end_time": END,
                 "elapsed_s": 21.5, "iter_num": 100, "iter_time": 0.31, "best_val_loss": 3.1,
                 "final": {"val": 3.2, "train": 3.0, "finished_at": END}}

client = module_client()
pod_a = module_pod("va", gpus=8)
pod_b = module_pod("vb", gpus=8)


def test_a_summarys_measurements_leave_out_versions_times_and_the_runs_own_duration():
    assert summary_leaves(TRAIN_SUMMARY) == [("iter_num", 100), ("iter_time", 0.31), ("best_val_loss", 3.1),
                                             ("final.val", 3.2), ("final.train", 3.0)]
    # The report's columns: the measures, then the times and durations; never the version.
    assert [name for name, _ in summary_leaves(TRAIN_SUMMARY, kinds=(MEASURE, MOMENT, DURATION))] == [
        "iter_num", "iter_time", "best_val_loss", "final.val", "final.train", "start_time", "end_time",
        "final.finished_at"]
    # A name alone decides nothing: an end_time that holds no date is what it says it is.
    assert summary_leaves({"end_time": 12.5, "schema_version": 2}) == [("end_time", 12.5)]


def write_run(root, run_id, summary):
    run = root / run_id
    run.mkdir(parents=True)
    for name, text in (("command.sh", "true\n"), ("stdout.log", "")):
        (run / name).write_text(text)
    (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": "gpt2", "env_id": "owt"}))
    (run / "summary.json").write_text(json.dumps(summary))


def test_report_md_and_html_show_a_time_as_the_same_date_and_the_measurements_first(tmp_path):
    write_run(tmp_path, "lr1", TRAIN_SUMMARY)
    write_run(tmp_path, "lr2", dict(TRAIN_SUMMARY, run_id="lr2", best_val_loss=3.4))

    doc = build_report(tmp_path)
    columns = doc["columns"]

    assert "contract_version" not in columns
    assert columns.index("best_val_loss") < columns.index("final.train") < columns.index("end_time")
    markdown, page = markdown_table(doc["rows"], columns), table_html(doc["rows"], columns)
    assert "2026-12-07 16:13:41 UTC" in markdown and "2026-12-07 16:13:41 UTC" in page
    assert not re.search(r"17966\d{5}|1\.79666e\+09", markdown + page)


@needs_isolation
def test_runs_status_columns_are_measurements_and_its_summary_shows_times_as_dates(pod_a, client, tmp_path):
    out = "/mnt/values/out"
    summary = json.dumps(TRAIN_SUMMARY)
    config = tmp_path / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": out,
                                  "runs": [{"run_id": "lr1", "gpus": 0,
                                            "command": f"echo '{summary}' > {{run_dir}}/summary.json"}]}))

    def ops(*args):
        return run_ops(list(args), cwd=tmp_path, env=client.env())

    assert ops("runs.submit", "--host", pod_a.alias, "--config", str(config), "--wait", "--timeout", "60").returncode == 0
    table = ops("runs.status", "--host", pod_a.alias, "--remote-outputs-dir", out).stdout
    header = next(line for line in table.splitlines() if line.startswith("run "))
    assert header.split()[6:10] == ["iter_num", "iter_time", "best_val_loss", "final.val"], table
    assert not re.search(r"1\.79666e\+09|contract_version|elapsed_s", table)

    one = ops("runs.status", "--host", pod_a.alias, "--remote-outputs-dir", out, "--run-id", "lr1").stdout
    line = next(line for line in one.splitlines() if line.startswith("summary: "))
    assert re.search(r"end_time=2026-12-0[78] \d\d:\d\d:\d\d \(", line), line  # local time, with its age
    assert "1796660021" not in line and "contract_version=1" in line  # shown whole, a time as a time


@needs_isolation
def test_a_fleets_summary_speaks_of_gpus_only_when_its_task_looked_at_them(pod_a, pod_b, client, tmp_path):
    fleet = f"{pod_a.alias},{pod_b.alias}"
    config = tmp_path / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": "/mnt/fleet/out", "summary": "exit_code",
                                  "runs": [{"run_id": f"r{i}", "gpus": 1, "command": "true"} for i in range(2)]}))

    submitted = run_ops(["runs.submit", "--host", fleet, "--config", str(config)], cwd=tmp_path, env=client.env())
    status = run_ops(["pod.status", "--host", fleet], cwd=tmp_path, env=client.env())

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    fleet_line = next(line for line in submitted.stdout.splitlines() if line.startswith("fleet: "))
    assert "GPUs" not in fleet_line, fleet_line  # submit did not look at the GPUs: it says nothing of them
    assert "fleet: 2 pods, 2 up, 0 not ok; 16 GPUs, 16 free" in status.stdout, status.stdout
