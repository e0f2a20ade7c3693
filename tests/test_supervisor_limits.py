"""The supervisor's two limits, each measured from what it names: `stall_timeout` from the last
output (a run that keeps printing never stalls), `timeout` from the start; and a limit stops the
run's whole process group, also a child that dropped the run's environment (so its owner mark)."""

import json
import re


from conftest import module_client, module_pod, needs_isolation, pod_pids

pytestmark = needs_isolation

SUMMARY_OK = "printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\""

client = module_client()
pod = module_pod("lpod")


def run_all(ops, pod, project, outputs, runs) -> dict:
    """Submit runs under their own outputs root, wait for them, return {run_id: run}."""
    path = project / "runs.json"
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": outputs, "runs": runs}))
    submitted = ops("runs.submit", "--host", pod.alias, "--config", str(path), "--slots", str(len(runs)), "--json")
    assert submitted.returncode == 0, submitted.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.json is not None, waited.stderr
    return {run["run_id"]: run for run in waited.json["runs"]}


def live_pod_processes(pod, text: str) -> list:
    """Pids inside this pod's own namespace whose command line holds text (zombies left out)."""
    return pod_pids(pod, re.escape(text), live=True)


def test_a_run_that_keeps_printing_outlives_its_stall_timeout(pod, ops, project):
    # Twelve lines a quarter second apart: never a second without output, three seconds in all.
    chatty = f"for i in $(seq 1 12); do echo tick $i; sleep 0.25; done; {SUMMARY_OK}"
    runs = run_all(ops, pod, project, "/mnt/limits-stall/out", [
        {"run_id": "chatty", "command": chatty, "stall_timeout": 1},
        {"run_id": "quiet", "command": "echo start; sleep 30", "stall_timeout": 1},
    ])

    assert runs["chatty"]["state"] == "succeeded", runs["chatty"]
    assert runs["quiet"]["state"] == "stalled"  # the limit itself works


def test_a_timeout_stops_a_child_that_dropped_the_runs_environment(pod, ops, project):
    # `env -i` clears OPS_RUN_OWNER: only the process group still ties the child to its run.
    runs = run_all(ops, pod, project, "/mnt/limits-group/out", [
        {"run_id": "bare-child", "command": "env -i /bin/sleep 306 & sleep 306; wait", "timeout": 1},
    ])

    assert runs["bare-child"]["state"] == "timeout"
    assert live_pod_processes(pod, "sleep 306") == []
    # Stopped by its group's signal at the timeout, not found later by the supervisor's sweeps of
    # what it remembered (those exist for what leaves the group).
    log = pod.sh("cat /mnt/limits-group/out/.ops/supervisor.log").stdout
    assert "left behind" not in log and "outside its process group" not in log, log
