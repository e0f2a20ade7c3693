"""runs.* end to end: configs submitted to real sshd pods, small shell commands as the runs, the
supervisor in the pod's tmux, a fake nvidia-smi for GPU packing."""

import json
import os
import signal
import subprocess
import time


from conftest import needs_isolation, ops_argv, pod_pids

pytestmark = needs_isolation

OUT = "/mnt/pod_artifacts/outputs"
WRITE_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


def write_config(project, runs, defaults=None, name="runs.json", **top):
    config = {"remote_repo": "/root", "defaults": defaults or {}, "runs": runs, **top}
    path = project / name
    path.write_text(json.dumps(config))
    return str(path)


def pod_json(pod, path):
    return json.loads(pod.sh(f"cat {path}").stdout)


def states(result) -> dict:
    return {r["run_id"]: r for r in result.json["runs"]}


def submit_and_wait(ops, pod, config, *extra):
    submitted = ops("runs.submit", "--host", pod.alias, "--config", config, "--json", *extra)
    assert submitted.returncode in (0, 1), submitted.stderr
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "120", "--json")
    return submitted, waited


def test_outcomes_each_get_their_state_class_and_a_complete_run_directory(pod, ops, project):
    config = write_config(project, slots_runs := [
        {"run_id": "ok", "command": f"echo working; {WRITE_SUMMARY}"},
        {"run_id": "fails", "command": "echo 'bad things'; exit 3"},
        {"run_id": "hangs", "command": "echo start; sleep 300", "timeout": 1.5},
        {"run_id": "silent", "command": "echo start; sleep 300", "stall_timeout": 1.5},
        {"run_id": "oom", "command": "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate'; exit 1"},
        {"run_id": "nosummary", "command": "echo done"},
        {"run_id": "notok", "command": "printf '{\"ok\": false}' > \"$OPS_RUN_DIR/summary.json\""},
        {"run_id": "flaky", "retries": 2, "retry_backoff": 0.2, "retry_on": ["exit_nonzero"],
         "command": f"if [ -e /root/flaky-once ]; then {WRITE_SUMMARY}; else touch /root/flaky-once; exit 1; fi"},
    ])

    submitted, waited = submit_and_wait(ops, pod, config, "--slots", "8")

    assert submitted.json["queued"] == [r["run_id"] for r in slots_runs]
    assert pod.sessions() == 2  # one round trip to submit 8 runs, one to wait for them
    assert waited.returncode == 1  # some failed
    runs = states(waited)
    expected = {"ok": ("succeeded", None), "fails": ("failed", "exit_nonzero"), "hangs": ("timeout", "timeout"),
                "silent": ("stalled", "stalled"), "oom": ("failed", "oom"), "nosummary": ("failed", "no_summary"),
                "notok": ("failed", "summary_not_ok"), "flaky": ("succeeded", None)}
    assert {k: (r["state"], r.get("failure_class")) for k, r in runs.items()} == expected
    for run_id in expected:
        files = pod.sh(f"ls {OUT}/{run_id}").stdout.split()
        assert {"command.sh", "run_metadata.json", "summary.json", "stdout.log", "status.json"} <= set(files), run_id
    assert pod_json(pod, f"{OUT}/fails/summary.json")["failure_class"] == "exit_nonzero"
    assert pod_json(pod, f"{OUT}/notok/summary.json") == {"ok": False}  # the command's own: never overwritten
    assert "bad things" in pod.sh(f"cat {OUT}/fails/stdout.log").stdout
    assert runs["flaky"]["attempt"] == 2
    assert pod.sh(f"cat {OUT}/flaky/attempts/1/status.json").stdout  # the failed attempt is kept
    meta = pod_json(pod, f"{OUT}/ok/run_metadata.json")
    assert meta["submission_id"] == submitted.json["submission_id"] and meta["remote_repo"] == "/root"
    # nothing of the killed runs is left running
    assert pod_pids(pod, r"sleep 300") == []


def test_a_second_submission_skips_everything_and_failed_runs_are_refused(pod, ops, project):
    config = write_config(project, [{"run_id": f"r{i}"} for i in range(3)],
                          defaults={"command": f"echo once >> /root/count; {WRITE_SUMMARY}"})
    first, waited = submit_and_wait(ops, pod, config)
    assert waited.returncode == 0, waited.stdout

    again = ops("runs.submit", "--host", pod.alias, "--config", config, "--json")

    assert again.returncode == 0
    assert again.json["queued"] == []
    assert {s["run_id"]: s["reason"] for s in again.json["skipped"]} == {f"r{i}": "succeeded" for i in range(3)}
    assert pod.sh("cat /root/count").stdout.count("once") == 3
    listing = ops("runs.list", "--host", pod.alias, "--json")
    assert {r["run_id"]: r["state"] for r in listing.json["runs"]} == {f"r{i}": "succeeded" for i in range(3)}

    failing = write_config(project, [{"run_id": "r0", "command": "exit 1"}, {"run_id": "bad", "command": "exit 1"}],
                           name="failing.json")
    ops("runs.submit", "--host", pod.alias, "--config", failing, "--force", "--json")
    ops("runs.wait", "--host", pod.alias, "--json")
    refused = ops("runs.submit", "--host", pod.alias, "--config", failing, "--json")
    assert refused.returncode == 1
    assert {r["run_id"] for r in refused.json["refused"]} == {"r0", "bad"}
    assert "--retry-failed" in refused.json["error"]
    # --force kept the succeeded attempt of r0
    assert pod_json(pod, f"{OUT}/r0/attempts/1/summary.json")["ok"] is True


def test_racing_submissions_run_each_run_once(pod, ops, project, client):
    config = write_config(project, [{"run_id": f"race{i}"} for i in range(6)],
                          defaults={"command": f"echo $OPS_RUN_ID >> /root/ran; {WRITE_SUMMARY}"})
    argv = [*ops_argv(), "runs.submit", "--host", pod.alias, "--config", config, "--json"]
    procs = [subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]

    queued = [run for out in outputs for run in out["queued"]]
    assert sorted(queued) == [f"race{i}" for i in range(6)]  # each queued by exactly one submission
    ops("runs.wait", "--host", pod.alias, "--submission", outputs[0]["submission_id"], "--json")
    deadline = time.monotonic() + 60
    while len(pod.sh("cat /root/ran", check=False).stdout.split()) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    ran = pod.sh("cat /root/ran").stdout.split()
    assert sorted(ran) == [f"race{i}" for i in range(6)]


def test_killing_the_supervisor_leaves_runs_lost_and_resume_completes_them(pod, ops, project):
    config = write_config(project, [{"run_id": "long1"}, {"run_id": "long2"}],
                          # the first attempt outlives the test's steps (a load-proof orphan), the resumed one ends
                          defaults={"command": "echo start; if [ -e /root/again-$OPS_RUN_ID ]; then "
                                               f"{WRITE_SUMMARY}; else touch /root/again-$OPS_RUN_ID; sleep 60; fi"})
    submitted = ops("runs.submit", "--host", pod.alias, "--config", config, "--slots", "2", "--json")
    assert submitted.returncode == 0
    deadline = time.monotonic() + 20
    while '"pid"' not in pod.sh(f"cat {OUT}/long2/status.json", check=False).stdout:  # started, not only claimed
        assert time.monotonic() < deadline
        time.sleep(0.1)
    supervisor = pod_json(pod, f"{OUT}/.ops/supervisor.json")["pid"]
    os.kill(supervisor, signal.SIGKILL)
    time.sleep(0.3)

    lost = ops("runs.status", "--host", pod.alias, "--json")
    assert {r["state"] for r in lost.json["runs"]} == {"lost"}
    assert lost.returncode == 1

    resumed = ops("runs.resume", "--host", pod.alias, "--json")
    assert sorted(resumed.json["resumed"]) == ["long1", "long2"]
    assert sorted(resumed.json["stopped_leftovers"]) == ["long1", "long2"]  # the orphans were stopped first
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stdout
    assert {r["state"] for r in waited.json["runs"]} == {"succeeded"}
    assert pod.sh(f"ls {OUT}/long1/attempts").stdout.split() == ["1"]


def test_four_gpus_four_runs_overlap_with_their_own_device(pod_factory, ops, project):
    pod = pod_factory(gpus=4)
    # A barrier, not timestamps: each run waits (at most 60 s) until all four have started, and
    # says so; runs that did not overlap never all see four.
    record = ("echo \"$CUDA_VISIBLE_DEVICES\" > \"$OPS_RUN_DIR/start\"; mkdir -p /mnt/barrier; "
              "touch /mnt/barrier/$OPS_RUN_ID; for i in $(seq 600); do "
              "[ $(ls /mnt/barrier | wc -l) -ge 4 ] && { echo all > \"$OPS_RUN_DIR/saw\"; break; }; sleep 0.1; done; "
              + WRITE_SUMMARY)
    config = write_config(project, [{"run_id": f"g{i}"} for i in range(4)], defaults={"command": record, "gpus": 1})

    submitted, waited = submit_and_wait(ops, pod, config)

    assert waited.returncode == 0, waited.stdout
    devices = [pod.sh(f"cat {OUT}/g{i}/start").stdout.strip() for i in range(4)]
    assert sorted(devices) == ["0", "1", "2", "3"]
    # all four ran at the same time: each saw the other three started before it ended
    assert [pod.sh(f"cat {OUT}/g{i}/saw", check=False).stdout.strip() for i in range(4)] == ["all"] * 4


def test_two_hundred_runs_are_submitted_in_one_ssh_session(pod, ops, project):
    config = write_config(project, [{"run_id": "many_{seed}", "matrix": {"seed": list(range(200))}}],
                          defaults={"command": "true"})

    submitted = ops("runs.submit", "--host", pod.alias, "--config", config, "--json")

    assert submitted.returncode == 0, submitted.stderr
    assert len(submitted.json["queued"]) == 200
    assert pod.accepted_connections() == 1 and pod.sessions() == 1


def test_a_secret_reaches_the_run_but_no_file_listing_output_or_tmux(pod, ops, project):
    canary = "canary-Secret-8f3a2b"
    config = write_config(project, [{"run_id": "secret", "env": {"WANDB_API_KEY": canary, "PLAIN": "visible"},
                                     "command": f"echo \"len=${{#WANDB_API_KEY}} $PLAIN\"; sleep 2; {WRITE_SUMMARY}"}])
    submitted = ops("runs.submit", "--host", pod.alias, "--config", config, "--json")
    deadline = time.monotonic() + 20
    while "running" not in pod.sh(f"cat {OUT}/secret/status.json", check=False).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    listing = pod.sh("cat /proc/[0-9]*/cmdline | tr '\\0' ' '", check=False).stdout
    tmux_env = pod.sh("tmux show-environment -g; tmux show-environment -t pilots", check=False).stdout
    waited = ops("runs.wait", "--host", pod.alias, "--json")
    status = ops("runs.status", "--host", pod.alias, "--run-id", "secret", "--json")

    assert waited.returncode == 0
    assert f"len={len(canary)} visible" in status.json["run"]["stdout_tail"]
    assert canary not in listing and canary not in tmux_env
    for output in (submitted, waited, status):
        assert canary not in output.stdout + output.stderr
    assert pod.sh(f"grep -rl {canary} {OUT} /mnt", check=False).stdout == ""
    assert "export WANDB_API_KEY='***'" in pod.sh(f"cat {OUT}/secret/command.sh").stdout
    assert canary not in (project / "artifacts" / "submissions" / f"{submitted.json['submission_id']}.json").read_text()
    assert pod.sh("ls /root/.ops/runs/env").stdout == ""  # the run is over: its secrets are gone from the pod


def test_hostile_config_values_are_inert(pod, ops, project, tmp_path):
    marker = tmp_path / "pwned"
    hostile = f"x'; touch {marker}; echo '$(touch {marker})"
    config = write_config(project, [{"run_id": "hostile", "model_id": hostile, "label": hostile}],
                          defaults={"entrypoint": "python3 -c 'import sys, json; print(json.dumps(sys.argv[1:]))'"})

    submitted, waited = submit_and_wait(ops, pod, config)

    logged = pod.sh(f"head -1 {OUT}/hostile/stdout.log").stdout
    assert json.loads(logged)[:2] == ["--model-id", hostile]
    assert not marker.exists()


def test_dry_run_prints_the_manifest_and_contacts_nothing(pod, ops, project):
    config = write_config(project, [{"run_id": "d", "env": {"HF_TOKEN": "hf_DrySecret"}, "command": "true"}])

    result = ops("runs.submit", "--host", pod.alias, "--config", config, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert '"run_id": "d"' in result.stdout and "exec python3" in result.stdout
    assert "hf_DrySecret" not in result.stdout
    assert pod.accepted_connections() == 0


def test_an_invalid_config_is_refused_whole_before_contact(pod, ops, project):
    (project / "bad.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "a", "command": "true"},]}')

    result = ops("runs.submit", "--host", pod.alias, "--config", str(project / "bad.json"))

    assert result.returncode == 2
    assert "bad.json:1:" in result.stderr and "invalid JSON" in result.stderr
    assert pod.accepted_connections() == 0


def test_no_tmux_supervises_in_the_foreground_and_exits_1_on_a_failure(pod, ops, project):
    config = write_config(project, [{"run_id": "fg_ok", "command": WRITE_SUMMARY},
                                    {"run_id": "fg_bad", "command": "exit 2"}])

    result = ops("runs.submit", "--host", pod.alias, "--config", config, "--no-tmux", "--json")

    assert result.returncode == 1
    assert {r["run_id"]: r["state"] for r in result.json["runs"]} == {"fg_ok": "succeeded", "fg_bad": "failed"}
    assert "fg_bad: failed [exit_nonzero]" in result.stderr  # the supervisor's lines, streamed
    assert pod.sh("tmux ls", check=False).stdout == ""  # no tmux involved


def test_cancel_stops_a_running_run_and_its_process_group(pod, ops, project):
    config = write_config(project, [{"run_id": "victim", "command": "sleep 301 & sleep 302; wait"}])
    ops("runs.submit", "--host", pod.alias, "--config", config, "--json")
    deadline = time.monotonic() + 20
    while not pod_pids(pod, r"sleep 302"):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    cancelled = ops("runs.cancel", "--host", pod.alias, "--run-id", "victim", "--json")

    assert cancelled.returncode == 0
    assert cancelled.json["runs"] == [{"run_id": "victim", "was": "running", "state": "cancelled"}]
    assert pod_pids(pod, r"sleep 30[12]") == []


def test_logs_follow_streams_until_the_run_ends(pod, ops, project):
    config = write_config(project, [{"run_id": "talker",
                                     "command": f"for i in 1 2 3; do echo line$i; sleep 0.5; done; {WRITE_SUMMARY}"}])
    ops("runs.submit", "--host", pod.alias, "--config", config, "--json")

    followed = ops("runs.logs", "--host", pod.alias, "--run-id", "talker", "--follow", timeout=60)

    assert followed.returncode == 0
    assert followed.stdout.split() == ["line1", "line2", "line3"]


def test_chained_tasks_need_no_ids_retyped(pod, ops, project):
    config = write_config(project, [{"run_id": "chained", "command": WRITE_SUMMARY}])

    result = ops("runs.submit", "--host", pod.alias, "--config", config,
                 "runs.wait", "--host", pod.alias, "runs.status", "--host", pod.alias)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": 1 succeeded") == 2  # runs.wait's table, then runs.status's
    assert pod.accepted_connections() == 1  # three tasks, one connection
    assert pod.sessions() == 3


# ---------------------------------------------------------------- what review found


def test_a_pod_without_tmux_refuses_before_queueing_anything(pod_factory, ops, project):
    pod = pod_factory(hide_tools=("tmux",))
    config = write_config(project, [{"run_id": "t", "command": WRITE_SUMMARY}])

    result = ops("runs.submit", "--host", pod.alias, "--config", config, "--json")

    assert result.returncode == 1
    assert "tmux is not installed on this pod" in result.json["error"] and "--no-tmux" in result.json["error"]
    assert pod.sh(f"test -e {OUT}/t", check=False).returncode == 1  # nothing queued to block a later submit


def test_run_ids_are_found_where_the_config_put_them(pod, ops, project):
    config = write_config(project, [{"run_id": "elsewhere", "command": "sleep 300"}],
                          remote_outputs_dir="/mnt/custom/outputs")
    ops("runs.submit", "--host", pod.alias, "--config", config, "--json")
    deadline = time.monotonic() + 20
    while "running" not in pod.sh("cat /mnt/custom/outputs/elsewhere/status.json", check=False).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    status = ops("runs.status", "--host", pod.alias, "--run-id", "elsewhere", "--json")
    cancelled = ops("runs.cancel", "--host", pod.alias, "--run-id", "elsewhere", "--json")
    unknown = ops("runs.cancel", "--host", pod.alias, "--run-id", "nosuchrun", "--json")

    assert status.json["run"]["state"] == "running"
    assert cancelled.returncode == 0 and cancelled.json["runs"][0]["state"] == "cancelled"
    assert unknown.returncode == 1 and "nosuchrun" in unknown.json["error"]
    assert pod_pids(pod, r"sleep 300") == []


def test_a_new_supervisor_stops_what_a_dead_one_left_running(pod, ops, project):
    first = write_config(project, [{"run_id": "orphan", "command": "sleep 303"}], name="first.json")
    ops("runs.submit", "--host", pod.alias, "--config", first, "--json")
    deadline = time.monotonic() + 20
    while not pod_pids(pod, r"sleep 303"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(pod_json(pod, f"{OUT}/.ops/supervisor.json")["pid"], signal.SIGKILL)

    second = write_config(project, [{"run_id": "next", "command": WRITE_SUMMARY}], name="second.json")
    ops("runs.submit", "--host", pod.alias, "--config", second, "--json")
    waited = ops("runs.wait", "--host", pod.alias, "--json")

    assert waited.returncode == 0
    assert pod_pids(pod, r"sleep 303") == []  # its slot was not double-booked
    assert ops("runs.status", "--host", pod.alias, "--run-id", "orphan", "--json").json["run"]["state"] == "lost"
