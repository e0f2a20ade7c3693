"""The first hour (../shared/cases/first-hour.md, item 12, the small ones): vllm.status without
--session names the session that serves (not "serving" beside "session vllm (none)"); a campaign's
checklist marks a not_ok phase [!], not [x]; an error names its pod once ("nc1: nc1: ..." no more);
report.html's title says what the page is about (the folder is in its header); its groups table is a
few columns of figures with their intervals, and leaves out what the models x tasks table above
shows. Runs on one real sshd pod with the vLLM stand-in shipped by vllm.start."""

import json
import re

import pytest

from conftest import module_client, module_pod, needs_isolation, run_ops
from ops_tasks.operations.report import build_report
from ops_tasks.operations.report_html import render_html
from ops_tasks.testing.pods import free_port
from test_report_html import make_run

client = module_client()
pod = module_pod("smallpod")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


def ops(project, client, *args, timeout=120):
    return run_ops(list(args), cwd=project, env=client.env(), timeout=timeout)


def foreign_server(pod, port) -> int:
    """A web server on the pod's port that vllm.start did not start (it lists no model): its pid."""
    pid = int(pod.sh(f"setsid python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 & echo $!").stdout)
    pod.sh(f"for i in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:{port}/ && break; sleep 0.1; done")
    return pid


@needs_isolation
def test_vllm_status_without_a_session_names_the_one_that_serves_the_port(pod, project, client):
    port = free_port()
    started = ops(project, client, "vllm.start", "--host", pod.alias, "--vllm-bin", "ops-vllm-stub", "--model-id",
                  "Qwen/Qwen3-4B", "--port", str(port), "--session", "demo0", "--wait", "--json")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        found = ops(project, client, "vllm.status", "--host", pod.alias, "--port", str(port), "--json")
        shown = ops(project, client, "vllm.status", "--host", pod.alias, "--port", str(port))
        by_url = ops(project, client, "vllm.status", "--host", pod.alias, "--api-base-url",
                     f"http://127.0.0.1:{port}", "--json")
        asked = ops(project, client, "vllm.status", "--host", pod.alias, "--port", str(port), "--session", "vllm",
                    "--json")
    finally:
        ops(project, client, "vllm.stop", "--host", pod.alias, "--session", "demo0")

    assert found.returncode == 0 and (found.json["session"], found.json["session_alive"]) == ("demo0", True)
    assert found.json["pid"] == started.json["pid"]
    assert re.search(r"^session +demo0 \(alive\)$", shown.stdout, re.M), shown.stdout
    assert (by_url.json["session"], by_url.json["session_alive"]) == ("demo0", True)
    # A session named is the one looked at: what serves its port is not its own.
    assert (asked.json["session"], asked.json["session_alive"]) == ("vllm", False)


@needs_isolation
def test_vllm_status_of_a_server_vllm_start_did_not_start_says_so(pod, project, client):
    port = free_port()
    server = foreign_server(pod, port)
    try:
        shown = ops(project, client, "vllm.status", "--host", pod.alias, "--port", str(port))
    finally:
        pod.sh(f"kill {server}")
    # http.server lists no model: not serving, and no session of vllm.start's claims it.
    assert re.search(r"^session +vllm \(none\)$", shown.stdout, re.M), shown.stdout


@needs_isolation
def test_a_campaigns_checklist_marks_what_is_not_ok_and_its_errors_name_each_pod_once(pod, project, client):
    port = free_port()
    holder = foreign_server(pod, port)  # on the port a server of the config wants
    (project / "broken.json").write_text(json.dumps({
        "remote_repo": "/root", "summary": "exit_code",
        "campaign": {"servers": [{"session": "held", "model_id": "m", "port": port}]},
        "runs": [{"run_id": "fine", "gpus": 0, "command": "true"}, {"run_id": "broken", "gpus": 0, "command": "exit 3"}]}))
    try:
        stopped = ops(project, client, "campaign", "--config", "broken.json", "-H", pod.alias, "--vllm-bin",
                      "ops-vllm-stub", "--json", timeout=180)
    finally:
        pod.sh(f"kill {holder}")
    assert stopped.json is not None, stopped.stdout + stopped.stderr
    assert stopped.json["stopped_at"] == "vllm_start" and "port" in stopped.json["error"]
    assert f"{pod.alias}: {pod.alias}" not in stopped.json["error"] and stopped.json["error"].count(pod.alias) >= 1

    (project / "runs.json").write_text(json.dumps({
        "remote_repo": "/root", "summary": "exit_code",
        "runs": [{"run_id": "fine", "gpus": 0, "command": "true"}, {"run_id": "broken", "gpus": 0, "command": "exit 3"}]}))
    ended = ops(project, client, "campaign", "--config", "runs.json", "-H", pod.alias, "--json", timeout=180)
    outcomes = {p["phase"]: p["outcome"] for p in ended.json["phases"]}
    assert (outcomes["wait"], outcomes["validate"], outcomes["report"]) == ("not_ok", "not_ok", "ok"), outcomes
    checklist = (project / "artifacts" / "campaigns" / ended.json["campaign_id"] / "checklist.md").read_text()
    assert re.search(r"^- \[!\] wait: not_ok", checklist, re.M) and re.search(r"^- \[!\] validate: not_ok", checklist, re.M)
    assert re.search(r"^- \[x\] report: ok", checklist, re.M), checklist
    assert not re.search(r"^- \[x\] \w+: not_ok", checklist, re.M)


def test_report_html_is_titled_by_what_it_holds_and_its_groups_table_is_narrow(tmp_path):
    root = tmp_path / "pod_logs"
    for index, model in enumerate(("Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "Qwen/Qwen3-32B")):
        for seed in range(2):
            make_run(root, f"r{index}-{seed}", model, [1, 0, 1, index % 2, seed, 1])
    doc = build_report(root, group_by="model_id")
    page = render_html(doc, [])

    title = re.search(r"<title>(.*?)</title>", page).group(1)
    assert title == "Report: Qwen/Qwen3-0.6B, Qwen/Qwen3-4B, Qwen/Qwen3-32B on arith (6 runs)"
    assert re.search(r"<h1>(.*?)</h1>", page).group(1) == title and str(root) not in title
    assert f"<li><b>root</b>: {root}</li>" in page
    groups = re.search(r'<table class="groups"><thead><tr>(.*?)</tr>', page).group(1)
    # One task: the models x tasks table above has the groups' pooled figures; the groups add the runs'.
    assert re.findall(r"<th>(.*?)</th>", groups) == ["model_id", "runs", "avg_reward over runs"]
    cell = re.search(r'<table class="groups">.*?<tbody><tr><td>Qwen/Qwen3-0.6B</td><td>2</td><td>(.*?)</td>', page)
    assert re.fullmatch(r"0\.\d{4} ± 0\.\d{4} \[-?\d\.\d{4}, \d\.\d{4}\] \(2 runs\)", cell.group(1)), cell.group(1)


@needs_isolation
def test_a_pod_that_cannot_be_reached_is_named_once_in_a_fleets_output(pod, project, client):
    nobody = f"root@127.0.0.1:{free_port()}"  # nothing listens there

    listed = ops(project, client, "runs.list", "--host", f"{pod.alias},{nobody}", "--remote-outputs-dir", "/mnt/none/out")

    line = next(line for line in listed.stdout.splitlines() if line.startswith(f"{nobody}: error: "))
    assert "connection refused" in line and line.count(nobody) == 1, line
