"""One misbehaving run never wedges the pod's queue, loses the evidence, or outlives its run
(../shared/cases/bad-day.md, "Runs that misbehave"): each run here is judged, named, and the run
queued behind it runs; the laptop's reading of what such a run left is one line, never a hang or a
traceback. Real sshd pods, the runtime's own supervisor."""

import json
import time

import pytest

from conftest import module_client, module_pod, needs_isolation, pod_pids

pytestmark = [needs_isolation, pytest.mark.timeout(150)]

OUT = "/mnt/pod_artifacts/outputs"
client = module_client()
pod = module_pod("bpod", volume_size="400m")
SUMMARY_OK = "printf '{\"ok\": true}' > {run_dir}/summary.json"


def submit_and_wait(ops, pod, project, runs, name):
    path = project / f"{name}.json"
    path.write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    submitted = ops("runs.submit", "--host", pod.alias, "--config", str(path), "--remote-outputs-dir", f"{OUT}/{name}",
                    "--json")
    assert submitted.returncode in (0, 1), submitted.stdout + submitted.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--remote-outputs-dir", f"{OUT}/{name}", "--timeout", "60", "--json")
    assert "Traceback" not in waited.stderr
    return {r["run_id"]: r for r in waited.json["runs"]}, waited


def pod_file(pod, path) -> str:
    return pod.sh(f"cat {path} 2>/dev/null || true").stdout


def supervisor_peak_mib(pod, root) -> float:
    """The live supervisor's peak resident memory (VmHWM), MiB."""
    info = json.loads(pod_file(pod, f"{root}/.ops/supervisor.json"))
    status = pod_file(pod, f"/proc/{info['pid']}/status")
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def test_a_run_that_deletes_its_own_directory_is_judged_and_the_next_one_runs(pod, ops, project):
    runs = [{"run_id": "vanish", "gpus": 0, "command": "echo gone; rm -rf {run_dir}"},
            {"run_id": "after", "gpus": 0, "command": SUMMARY_OK}]
    ended, waited = submit_and_wait(ops, pod, project, runs, "vanish")
    assert (ended["vanish"]["state"], ended["vanish"]["failure_class"]) == ("failed", "no_summary")
    assert ended["after"]["state"] == "succeeded"
    assert "gone" in pod_file(pod, f"{OUT}/vanish/vanish/stdout.log")  # its output kept, written again


def test_a_run_that_cleans_its_folder_first_keeps_the_evidence(pod, ops, project):
    runs = [{"run_id": "clean", "gpus": 0,
             "command": "echo before; rm -rf {run_dir}; mkdir -p {run_dir}; echo after; " + SUMMARY_OK}]
    ended, _ = submit_and_wait(ops, pod, project, runs, "clean")
    assert ended["clean"]["state"] == "succeeded"
    run_dir = f"{OUT}/clean/clean"
    log = pod_file(pod, f"{run_dir}/stdout.log")
    assert "before" in log and "after" in log
    for name in ("command.sh", "run_metadata.json", ".ops/record.json", ".ops/command.sh"):
        assert pod.sh(f"test -s {run_dir}/{name}", check=False).returncode == 0, name
    record = json.loads(pod_file(pod, f"{run_dir}/.ops/record.json"))
    assert "stdout.log" in record["restored"]


@pytest.mark.parametrize("damage, expected", [
    ("rm -f {run_dir}/summary.json; mkfifo {run_dir}/summary.json", "bad_summary"),
    ("python3 -c \"print('[' * 200000 + ']' * 200000)\" > {run_dir}/summary.json", "bad_summary"),
    ("head -c 70000000 /dev/zero | tr '\\0' ' ' > {run_dir}/summary.json; echo '{\"ok\": true}' >> {run_dir}/summary.json",
     "bad_summary"),
], ids=["fifo", "nested", "too-large"])
def test_a_summary_no_reader_can_take_is_judged_and_never_wedges_the_queue(pod, ops, project, damage, expected):
    name = "s" + str(abs(hash(damage)) % 10000)
    runs = [{"run_id": "odd", "gpus": 0, "command": f"{SUMMARY_OK}; {damage}"},
            {"run_id": "next", "gpus": 0, "command": SUMMARY_OK}]
    ended, _ = submit_and_wait(ops, pod, project, runs, name)
    assert (ended["odd"]["state"], ended["odd"]["failure_class"]) == ("failed", expected)
    assert ended["next"]["state"] == "succeeded"
    assert supervisor_peak_mib(pod, f"{OUT}/{name}") < 60  # a 70 MB summary is not read whole
    for task in ("runs.status", "runs.list"):
        listed = ops(task, "--host", pod.alias, "--remote-outputs-dir", f"{OUT}/{name}", "--json")
        assert listed.returncode in (0, 1) and "Traceback" not in listed.stderr


def test_a_daemon_that_leaves_its_group_and_environment_stops_with_its_run(pod, ops, project):
    daemon = "setsid env -i /bin/bash -c 'while true; do echo tick >> {run_dir}/daemon.log; sleep 0.2; done' &"
    runs = [{"run_id": "forks", "gpus": 0, "command": f"{daemon} sleep 2; {SUMMARY_OK}"}]  # seen by a look (1 s)
    ended, _ = submit_and_wait(ops, pod, project, runs, "forks")
    assert ended["forks"]["state"] == "succeeded"
    run_dir = f"{OUT}/forks/forks"
    record = json.loads(pod_file(pod, f"{run_dir}/.ops/record.json"))
    assert record["left_behind"], record  # named
    lines = pod_file(pod, f"{run_dir}/daemon.log").count("tick")
    time.sleep(1.0)
    assert pod_file(pod, f"{run_dir}/daemon.log").count("tick") == lines  # and stopped
    assert not pod_pids(pod, r"daemon\.log", live=True)


def test_a_run_reads_no_login_files_even_when_the_supervisor_came_from_a_login(pod, ops, project):
    pod.sh("cp /root/.bashrc /root/.bashrc.saved 2>/dev/null; echo '[ -n \"$OPS_RUN_ID\" ] && touch /mnt/bashrc-read-by-$OPS_RUN_ID' >> /root/.bashrc")
    try:
        runs = [{"run_id": "plain", "gpus": 0, "command": "env > {run_dir}/env.txt; " + SUMMARY_OK}]
        ended, _ = submit_and_wait(ops, pod, project, runs, "login")
    finally:
        pod.sh("mv /root/.bashrc.saved /root/.bashrc 2>/dev/null || sed -i '/bashrc-read-by/d' /root/.bashrc")
    assert ended["plain"]["state"] == "succeeded"
    env = pod_file(pod, f"{OUT}/login/plain/env.txt")
    assert "SSH_CLIENT=" not in env and "SSH_CONNECTION=" not in env
    assert pod.sh("test -e /mnt/bashrc-read-by-plain", check=False).returncode == 1  # the login's files are the login's


def test_one_line_of_a_hundred_megabytes_costs_the_supervisor_no_more_than_a_piece(pod, ops, project):
    line = "head -c 100000000 /dev/zero | tr '\\0' 'x' > {run_dir}/progress.txt; cat {run_dir}/progress.txt; " \
           "rm {run_dir}/progress.txt; echo; echo done"
    runs = [{"run_id": "bar", "gpus": 0, "command": f"{line}; {SUMMARY_OK}", "expect": {"log_matches": "^done$"},
             "metrics_from_log": "loss (?P<loss>[0-9.]+)"}]
    ended, _ = submit_and_wait(ops, pod, project, runs, "bar")
    assert ended["bar"]["state"] == "succeeded", ended["bar"]
    assert supervisor_peak_mib(pod, f"{OUT}/bar") < 60


def test_the_laptop_reads_what_such_runs_leave_in_one_line_each(tmp_path, ops, project):
    root = project / "artifacts" / "pod_logs"
    for run_id, summary in (("deep", "[" * 200000 + "]" * 200000), ("big", " " * (65 * 2**20) + "{}")):
        folder = root / run_id
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(summary)
        (folder / "status.json").write_text(json.dumps({"run_id": run_id, "state": "succeeded", "attempt": 1}))
    for task in (["validate", "--all"], ["report", "--all"]):
        done = ops(*task)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "deep" in done.stdout + done.stderr and "big" in done.stdout + done.stderr


def test_a_pod_turned_hostile_answers_every_read_at_once_and_leaves_nothing_blocked(pod, ops, project):
    runs = [{"run_id": f"h{i}", "gpus": 0, "command": SUMMARY_OK} for i in range(3)]
    submit_and_wait(ops, pod, project, runs, "hostile")
    root = f"{OUT}/hostile"
    # After the runs: FIFOs where its files were, a socket as a log, links to the pod's own secrets.
    pod.sh(f"rm -f {root}/h0/status.json {root}/h0/stdout.log {root}/h1/summary.json {root}/h2/stdout.log; "
           f"mkfifo {root}/h0/status.json {root}/h0/stdout.log {root}/h1/summary.json; "
           f"python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind('{root}/h2/stdout.log')\"; "
           f"ln -sf /etc/shadow {root}/h1/results.jsonl; echo '{{\"ok\": true}}' > {root}/h1/done.json")
    for task in (["runs.status", "--all"], ["runs.list"], ["runs.logs", "--run-id", "h0"],
                 ["runs.logs", "--run-id", "h2"], ["runs.status", "--run-id", "h1", "--json"]):
        done = ops(*task, "--host", pod.alias, "--remote-outputs-dir", root)
        assert "Traceback" not in done.stderr, (task, done.stderr)
        assert done.returncode in (0, 1), (task, done.stdout, done.stderr)
    assert not pod_pids(pod, "ops_runtime", live=True) or all(
        "supervise" in pod.sh(f"cat /proc/{p}/cmdline | tr '\\0' ' '", check=False).stdout
        for p in pod_pids(pod, "ops_runtime", live=True))  # no reader left blocked on a FIFO


def test_after_a_reboot_a_cancel_takes_the_secrets_off_the_pod(pod, ops, project):
    path = project / "secret.json"
    path.write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "holds", "gpus": 0, "command": "sleep 300", "env": {"HF_TOKEN": "hf_canary_reboot"}},
        {"run_id": "waits", "gpus": 0, "command": "sleep 300", "env": {"HF_TOKEN": "hf_canary_reboot"}}]}))
    submitted = ops("runs.submit", "--host", pod.alias, "--config", str(path), "--remote-outputs-dir", f"{OUT}/reboot",
                    "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    env_file = f"/root/.ops/runs/env/{submitted.json['submission_id']}.json"
    assert pod.sh(f"test -s {env_file}", check=False).returncode == 0
    # A reboot: tmux, the supervisor and the run gone at once (kill -9).
    for pid in pod_pids(pod, r"ops_runtime|sleep 300|tmux", live=True):
        pod.sh(f"kill -9 {pid}", check=False)
    cancelled = ops("runs.cancel", "--host", pod.alias, "--remote-outputs-dir", f"{OUT}/reboot", "--submission",
                    submitted.json["submission_id"], "--json")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert {r["state"] for r in cancelled.json["runs"]} == {"cancelled"}
    assert pod.sh(f"ls {OUT}/reboot/.ops/pending {OUT}/reboot/.ops/active").stdout.split() == [
        f"{OUT}/reboot/.ops/active:", f"{OUT}/reboot/.ops/pending:"]  # nothing a later supervisor would start
    assert pod.sh(f"test -e {env_file}", check=False).returncode == 1  # nothing left to run: the secret is gone
