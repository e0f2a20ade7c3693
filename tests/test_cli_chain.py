"""Chains on the command line: `ops -H HOST a b c` and `inv a --host HOST b c` run every task of
the chain on one host, over real sshd pods."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import CHECKOUT, needs_isolation, one_line_error

pytestmark = needs_isolation

WRITE_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


def write_config(folder, run_ids, name="c.json"):
    config = {"remote_repo": "/root", "runs": [{"run_id": r, "command": f"echo hi; {WRITE_SUMMARY}"} for r in run_ids]}
    path = folder / name
    path.write_text(json.dumps(config))
    return path


def json_lines(stdout: str) -> list:
    """One JSON document per task of a chain run with --json."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_ops_dash_h_runs_the_whole_chain_on_one_pod(ops, project, pod):
    write_config(project, ["chain-a", "chain-b"])

    result = ops("-H", pod.alias, "runs.submit", "--config", "c.json", "runs.wait", "--timeout", "60",
                 "artifacts.fetch", "validate", "report")

    assert result.returncode == 0, (result.stdout, result.stderr)
    for run_id in ("chain-a", "chain-b"):
        assert (project / "artifacts" / "pod_logs" / run_id / "summary.json").is_file()
    assert "chain-a" in (project / "artifacts" / "report.md").read_text()
    assert "lium" not in result.stderr  # no task fell back to the default host


def test_a_tasks_own_host_wins_for_that_task_only(ops, project, pod_factory):
    first, second = pod_factory(), pod_factory()

    result = ops("-H", first.alias, "pod.status", "--json", "runs.list", "--host", second.alias, "--json",
                 "runs.list", "--json")

    assert result.returncode == 0, result.stderr
    assert [doc["host"] for doc in json_lines(result.stdout)] == [first.alias, second.alias, first.alias]


def test_ops_without_dash_h_carries_the_last_named_host_down_the_chain(ops, project, pod):
    result = ops("pod.status", "--host", pod.alias, "--json", "runs.list", "--json")

    assert result.returncode == 0, result.stderr
    assert [doc["host"] for doc in json_lines(result.stdout)] == [pod.alias, pod.alias]
    assert pod.accepted_connections() == 1  # the chain shares one connection


def test_inv_chain_takes_the_host_of_the_previous_task(tmp_path, client, pod):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(CHECKOUT / "tasks.py", checkout)
    write_config(checkout, ["inv-a"])
    inv = Path(sys.executable).parent / "inv"

    result = subprocess.run([str(inv), "runs.submit", "--host", pod.alias, "--config", "c.json",
                             "runs.wait", "--timeout", "60", "artifacts.fetch"],
                            cwd=checkout, env=client.env(), capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, (result.stdout, result.stderr)
    assert (checkout / "artifacts" / "pod_logs" / "inv-a" / "summary.json").is_file()


def test_a_fleet_is_refused_before_any_contact(ops, pod_factory):
    first, second = pod_factory(), pod_factory()

    one_line_error(ops("-H", f"{first.alias},{second.alias}", "pod.status"), 2, "fleets are not supported yet")
    assert first.accepted_connections() == 0 and second.accepted_connections() == 0


def test_a_list_of_one_host_is_that_host(ops, pod):
    result = ops("-H", f"{pod.alias},", "pod.status", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["host"] == pod.alias
