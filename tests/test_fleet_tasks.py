"""Tasks over a fleet, through the real `ops` program: `--host a,b,c` (or -H, or a fleet's name)
runs the task on every pod at once, one connection each; the output is each pod's result, a
row per pod and the totals; exit 1 names the pods that are not ok (ops_tasks/output.py,
on_each_pod; ops_tasks/fleet.py). Three real sshd pods shared by the module, pod0 with two
fake GPUs."""

import contextlib
import json
from pathlib import Path

from ops_tasks.testing.pods import free_port

import pytest

from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import SshPod
from conftest import module_client, needs_isolation, one_line_error

pytestmark = needs_isolation

client = module_client()
NAMES = ("fa0", "fa1", "fa2")
GPUS = ([gpu(0), gpu(1, used_mib=40000)], [gpu(0)], None)  # 3 GPUs, 2 of them free


@pytest.fixture(scope="module")
def pods(tmp_path_factory, client):
    started = []
    try:
        for index, name in enumerate(NAMES):
            pod = SshPod(tmp_path_factory.mktemp(name) / "pod", name, client.public_key,
                         gpus=GPUS[index]).start()
            client.add_alias(name, pod)
            pod.alias = name
            started.append(pod)
        yield started
    finally:
        for pod in started:
            pod.stop()


FLEET = ",".join(NAMES)


def connections(pods) -> list:
    return [pod.accepted_connections() for pod in pods]


def new_connections(pods, before) -> list:
    return [now - then for now, then in zip(connections(pods), before)]


@contextlib.contextmanager
def stopped(pod):
    """The pod's sshd down for the block (nothing listens on its port), then up again."""
    port = pod.port
    pod.stop()
    try:
        yield pod
    finally:
        pod.start(port=port)


# ---------------------------------------------------------------- pod.status


def test_pod_status_of_a_fleet_answers_for_every_pod_over_one_connection_each(ops, pods):
    before = connections(pods)

    result = ops("pod.status", "--host", FLEET, "--json")

    assert result.returncode == 0, result.stderr
    document = result.json
    assert document["ok"] is True and document["failed"] == [] and document["hosts"] == list(NAMES)
    assert [document["pods"][name]["host"] for name in NAMES] == list(NAMES)
    assert all(document["pods"][name]["volume"]["mounted"] for name in NAMES)
    assert document["totals"] == {"pods": 3, "pods_up": 3, "pods_not_ok": 0, "gpus": 3, "gpus_free": 2,
                                  "runs_by_state": {}}
    assert new_connections(pods, before) == [1, 1, 1]


def test_a_stopped_pod_is_its_own_row_the_others_answer_and_exit_1_names_it(ops, pods):
    with stopped(pods[1]):
        result = ops("pod.status", "--host", FLEET)
        as_json = ops("pod.status", "--host", FLEET, "--json")

    assert result.returncode == 1 and "Traceback" not in result.stderr
    text = result.stdout
    assert text.startswith("fa0: OK") and "\nfa2: OK" in text  # each pod's own section
    row = next(line for line in text.splitlines() if line.startswith("fa1 "))
    assert "NOT OK" in row and "connection refused" in row
    assert "fleet: 3 pods, 2 up, 1 not ok; 2 GPUs, 1 free" in text  # fa1's GPU is not counted: it did not answer
    assert "error: not ok on 1 of 3 pods: fa1" in text
    assert as_json.returncode == 1
    assert as_json.json["failed"] == ["fa1"] and as_json.json["pods"]["fa1"]["reachable"] is False
    assert as_json.json["pods"]["fa0"]["ok"] is True and as_json.json["pods"]["fa2"]["ok"] is True


def test_a_fleet_named_in_invoke_yaml_and_one_given_to_ops_h_are_the_same_fleet(ops, pods, project):
    (project / "invoke.yaml").write_text("ops:\n  fleets:\n    trio: [fa0, fa1, fa2]\n")

    by_name = ops("pod.status", "--host", "trio", "--json")
    by_cli = ops("-H", FLEET, "pod.status", "--json")

    for result in (by_name, by_cli):
        assert result.returncode == 0, result.stderr
        assert result.json["hosts"] == list(NAMES)


def test_a_fleet_of_one_is_exactly_the_single_host(ops, pods, project):
    (project / "invoke.yaml").write_text("ops:\n  fleets:\n    solo: [fa2]\n")

    result = ops("pod.status", "--host", "solo", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["host"] == "fa2" and "fleet" not in result.json and "pods" not in result.json


def test_a_dry_run_over_a_fleet_shows_each_pods_script_and_contacts_nothing(ops, pods):
    before = connections(pods)

    text = ops("pod.status", "--host", FLEET, "--dry-run")
    as_json = ops("pod.status", "--host", FLEET, "--dry-run", "--json")

    assert text.returncode == 0, text.stderr
    for name in NAMES:
        assert f"# dry run: nothing contacted. Would run on {name} over SSH" in text.stdout
    assert as_json.json["dry_run"] is True
    assert all(as_json.json["pods"][name]["scripts"][0].startswith("# ops-tasks remote script: pod_status.sh")
               for name in NAMES)
    assert new_connections(pods, before) == [0, 0, 0]


def test_an_unknown_host_in_a_fleet_is_refused_before_any_contact(ops, pods):
    before = connections(pods)

    one_line_error(ops("pod.status", "--host", "fa0,nosuch-pod", "--json"), 2, "nosuch-pod")
    assert new_connections(pods, before) == [0, 0, 0]


def test_a_task_that_needs_one_pod_of_a_fleet_refuses_naming_the_pods_before_any_contact(ops, pods):
    before = connections(pods)

    one_line_error(ops("-H", FLEET, "runs.logs", "--run-id", "nowhere"), 2, "runs.logs --run-id nowhere",
                   "fa0, fa1, fa2")
    assert new_connections(pods, before) == [0, 0, 0]


def test_json_of_a_fleet_is_one_strict_document(ops, pods):
    result = ops("pod.status", "--host", FLEET, "--pretty")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


# ---------------------------------------------------------------- runs over a fleet


WRITE_SUMMARY = "printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\""


def submit(ops, project, pod_name, runs, outputs):
    """A submission of these runs to one pod (runs.submit is a single-host task)."""
    config = project / f"{pod_name}-{outputs}.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": f"/mnt/{outputs}", "runs": runs}))
    result = ops("runs.submit", "--host", pod_name, "--config", str(config), "--slots", "4", "--json")
    assert result.returncode == 0, result.stderr
    return result.json


def test_runs_wait_status_and_list_over_a_fleet_merge_every_pods_runs(ops, pods, project):
    submit(ops, project, "fa0", [{"run_id": "a-ok", "command": WRITE_SUMMARY}], "merge")
    submit(ops, project, "fa1", [{"run_id": "b-ok", "command": WRITE_SUMMARY}], "merge")
    submit(ops, project, "fa2", [{"run_id": "c-fails", "command": "echo broken; exit 3"}], "merge")
    before = connections(pods), [pod.sessions() for pod in pods]

    waited = ops("runs.wait", "--host", FLEET, "--timeout", "60", "--json")

    assert waited.returncode == 1, waited.stderr
    assert new_connections(pods, before[0]) == [1, 1, 1]
    assert [pod.sessions() - then for pod, then in zip(pods, before[1])] == [1, 1, 1]  # one round trip each
    doc = waited.json
    assert doc["failed"] == ["fa2"] and doc["error"] == "not ok on 1 of 3 pods: fa2"
    assert {(r["pod"], r["run_id"], r["state"]) for r in doc["runs"]} == {
        ("fa0", "a-ok", "succeeded"), ("fa1", "b-ok", "succeeded"), ("fa2", "c-fails", "failed")}
    assert doc["totals"]["runs_by_state"] == {"succeeded": 2, "failed": 1}
    assert doc["pods"]["fa2"]["runs"][0]["exit_code"] == 3  # each pod's own result, whole

    status = ops("runs.status", "--host", FLEET)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert "fleet: 3 pods, 3 up, 1 not ok" in status.stdout and "runs: 1 failed, 2 succeeded" in status.stdout
    assert next(line for line in status.stdout.splitlines() if line.startswith("fa2 ")).split()[1:3] == ["NOT", "OK"]

    listed = ops("runs.list", "--host", FLEET, "--json")
    assert listed.returncode == 0, listed.stderr  # a listing is not a verdict, on any pod
    assert {r["run_id"] for r in listed.json["runs"]} >= {"a-ok", "b-ok", "c-fails"}


def test_runs_cancel_over_a_fleet_cancels_the_run_on_every_pod(ops, pods, project):
    for name in NAMES:
        submit(ops, project, name, [{"run_id": "sleeper", "command": "sleep 300"}], "cancel")

    cancelled = ops("runs.cancel", "--host", FLEET, "--run-id", "sleeper", "--json")

    assert cancelled.returncode == 0, cancelled.stderr
    assert [cancelled.json["pods"][name]["runs"][0]["state"] for name in NAMES] == ["cancelled"] * 3


def test_two_checkouts_naming_one_fleet_in_either_order_run_each_run_once(pods, client, tmp_path):
    import subprocess

    from conftest import ops_argv

    runs = [{"run_id": f"twice-{i}", "gpus": 0, "command": "sleep 1"} for i in range(8)]
    started = []
    for number, fleet in enumerate((FLEET, ",".join(reversed(NAMES)))):  # a colleague's `-H fa2,fa1,fa0`
        checkout = tmp_path / f"checkout{number}"
        checkout.mkdir()
        (checkout / "runs.json").write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": "/mnt/twice",
                                                        "runs": runs}))
        started.append(subprocess.Popen([*ops_argv(), "runs.submit", "--host", fleet, "--config", "runs.json",
                                          "--slots", "4", "--json"], cwd=checkout, env=client.env(),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in started:
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, out + err
    held = {run["run_id"]: [pod.alias for pod in pods if pod.sh(f"test -d /mnt/twice/{run['run_id']}",
                                                                 check=False).returncode == 0] for run in runs}
    assert all(len(where) == 1 for where in held.values()), held  # on one pod each: queued there once


def test_runs_cancel_of_a_run_on_one_pod_of_a_fleet_is_ok_and_a_run_on_none_is_named(ops, pods, project):
    submit(ops, project, "fa1", [{"run_id": "only-here", "command": "sleep 300"}], "cancel1")

    cancelled = ops("runs.cancel", "--host", FLEET, "--run-id", "only-here", "--remote-outputs-dir", "/mnt/cancel1",
                    "--json")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr  # the others simply do not hold it
    assert cancelled.json["pods"]["fa1"]["runs"][0]["state"] == "cancelled"

    nowhere = ops("runs.cancel", "--host", FLEET, "--run-id", "no-such-run", "--remote-outputs-dir", "/mnt/cancel1")
    assert nowhere.returncode == 1 and "on no pod: no-such-run" in nowhere.stdout + nowhere.stderr


@pytest.mark.parametrize("task, flags, fragment", [
    ("runs.wait", ["--run-id", "x", "--timeout", "-1"], "--timeout"),
    ("runs.status", ["--run-id", "x", "--watch"], "runs.status --watch redraws one pod's table"),
    ("vllm.stop", ["--grace", "x"], "--grace"),
    ("vllm.logs", ["--follow"], "vllm.logs --follow streams one pod's log"),
    ("runs.submit", ["--config", "nosuch.json"], "nosuch.json"),
    ("runs.submit", ["--config", "nosuch.json", "--wait"], "--wait and --no-tmux take one host"),
])
def test_bad_input_over_a_fleet_is_refused_before_any_pod_is_contacted(ops, pods, project, task, flags, fragment):
    before = connections(pods)

    one_line_error(ops(task, "--host", FLEET, *flags), 2, fragment)
    assert new_connections(pods, before) == [0, 0, 0]


# ---------------------------------------------------------------- vLLM over a fleet


def test_vllm_over_a_fleet_starts_a_replica_per_pod_then_status_logs_and_stop_each(ops, pods, project):
    ports = {name: free_port() for name in NAMES[:2]}  # loopback pods share ports: one each
    profiles = "".join(f"    {name}:\n      destination: {name}\n      vllm:\n        port: {port}\n"
                       for name, port in ports.items())
    (project / "invoke.yaml").write_text(f"ops:\n  profiles:\n{profiles}  fleets:\n    servers: [fa0, fa1]\n")
    for pod in pods[:2]:
        pod.install_vllm_stub()
    secret = "hf_fleet_secret_value_123"

    started = ops("vllm.start", "--host", "servers", "--vllm-bin", "ops-vllm-stub", "--model-id", "Qwen/Qwen3-4B",
                  "--env", "OPS_VLLM_STUB_STARTUP_S=0.4", "--env", f"HF_TOKEN={secret}", "--wait", "--timeout", "60",
                  "--json")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert secret not in started.stdout + started.stderr
        for name, port in ports.items():
            assert started.json["pods"][name]["wait"]["outcome"] == "ready"
            assert started.json["pods"][name]["base_url"] == f"http://127.0.0.1:{port}/v1"

        status = ops("vllm.status", "--host", "servers", "--json")
        assert status.returncode == 0, status.stderr
        assert all(status.json["pods"][name]["models"][0]["id"] == "Qwen/Qwen3-4B" for name in ports)

        logs = ops("vllm.logs", "--host", "servers", "--lines", "5")
        assert logs.returncode == 0, logs.stderr
        assert "--- fa0 ---" in logs.stdout and "--- fa1 ---" in logs.stdout and secret not in logs.stdout
    finally:
        stopped_servers = ops("vllm.stop", "--host", "servers", "--grace", "2", "--json")
    assert stopped_servers.returncode == 0, stopped_servers.stderr
    assert all(stopped_servers.json["pods"][name]["port_free"] for name in ports)


# ---------------------------------------------------------------- artifacts over a fleet


def wait_for(ops, host):
    waited = ops("runs.wait", "--host", host, "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr


def test_fetch_over_a_fleet_takes_each_run_from_its_pod_and_records_that_pod(ops, pods, project):
    for name in NAMES[:2]:
        submit(ops, project, name, [{"run_id": f"{name}-run", "command": f"echo from {name}; {WRITE_SUMMARY}"}],
               "fetch")
    wait_for(ops, "fa0,fa1")
    before = connections(pods)

    fetched = ops("artifacts.fetch", "--host", "fa0,fa1", "--json")

    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert new_connections(pods, before)[:2] == [1, 1]  # rsync's own OpenSSH connection, one per pod
    for name, pod in zip(NAMES[:2], pods):
        run_id = f"{name}-run"
        assert [r["run_id"] for r in fetched.json["pods"][name]["runs"]] == [run_id]
        local = project / "artifacts" / "pod_logs" / run_id
        assert (local / "stdout.log").read_text().startswith(f"from {name}")
        record = json.loads((project / "artifacts" / "fetched" / f"{run_id}.json").read_text())
        assert record["host"] == name and record["host_id"].endswith(f":{pod.port}")
    assert not list((project / "artifacts" / "pod_logs").glob(".rsync-*"))  # each pod's log of skips is gone


def test_one_run_id_fetched_from_two_pods_is_named_and_not_ok(ops, pods, project):
    for name in NAMES[:2]:
        submit(ops, project, name, [{"run_id": "same-id", "command": WRITE_SUMMARY}], "twice")
    wait_for(ops, "fa0,fa1")

    fetched = ops("artifacts.fetch", "--host", "fa0,fa1", "--json")

    assert fetched.returncode == 1, fetched.stdout + fetched.stderr
    assert fetched.json["failed"] == ["fa0", "fa1"]
    assert "same-id (from fa0 and fa1)" in fetched.json["pods"]["fa0"]["error"]
    # Fetched once, from the first pod: two rsyncs into one folder would delete each other's files.
    assert [r["run_id"] for r in fetched.json["pods"]["fa0"]["runs"]] == ["same-id"]
    assert fetched.json["pods"]["fa1"]["runs"] == []
    # fa1 never even tried it (the fetch's own claim would refuse a second writer, by luck of timing).
    assert not fetched.json["pods"]["fa1"].get("refused") and not fetched.json["pods"]["fa0"].get("refused")


def test_archive_over_a_fleet_runs_on_every_pod(ops, pods, project):
    for name in NAMES:
        submit(ops, project, name, [{"run_id": f"{name}-arch", "command": WRITE_SUMMARY}], "archive")

    archived = ops("artifacts.archive", "--host", FLEET, "--json")

    assert archived.returncode == 0, archived.stdout + archived.stderr
    assert archived.json["hosts"] == list(NAMES) and all(archived.json["pods"][n]["ok"] for n in NAMES)


def test_one_byte_bar_counts_every_pods_bytes(capsys):
    from ops_tasks.artifacts import ByteBar

    bar = ByteBar()
    bar.enabled = True  # as on a terminal
    first, second = bar.of("fa0"), bar.of("fa1")
    first(10, 100)
    second(5, 50)
    first(100, 100)
    assert (bar.bar.n, bar.bar.total) == (105, 150)
    bar.close()


def test_a_dry_run_of_vllm_start_over_a_fleet_shows_no_secret_and_contacts_nothing(ops, pods):
    before = connections(pods)
    secret = "hf_dry_fleet_secret_456"

    for mode in ((), ("--json",)):
        result = ops("vllm.start", "--host", "fa0,fa1", "--model-id", "Qwen/Qwen3-4B", "--env", f"HF_TOKEN={secret}",
                     "--dry-run", *mode)
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
        assert "fa0" in result.stdout and "fa1" in result.stdout
    assert new_connections(pods, before) == [0, 0, 0]


# ---------------------------------------------------------------- one submission over a fleet


def test_a_fleet_submission_places_each_run_once_then_waits_fetches_and_skips_what_succeeded(ops, pods, project):
    from ops_tasks.records import Ledger

    config = project / "spread.json"
    runs = [{"run_id": f"spread-{i}", "command": f"echo run {i}; {WRITE_SUMMARY}", "gpus": 1} for i in range(4)]
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": "/mnt/spread", "runs": runs}))
    before = connections(pods), [pod.sessions() for pod in pods]

    submitted = ops("runs.submit", "--host", "fa0,fa1", "--config", str(config), "--json")

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    doc = submitted.json
    placed = doc["placed"]
    assert sorted(placed["fa0"] + placed["fa1"]) == [r["run_id"] for r in runs]  # each run once
    assert placed["fa0"] and placed["fa1"]  # both pods have a free GPU: both get runs
    assert new_connections(pods, before[0]) == [1, 1, 0]
    assert [pod.sessions() - then for pod, then in zip(pods, before[1])][:2] == [2, 2]  # probe + submit
    submission_id = doc["submission_id"]
    assert all(doc["pods"][name]["submission_id"] == submission_id for name in ("fa0", "fa1"))
    ledger = Ledger(project, submission_id)
    assert {run_id: ledger.current(run_id)["host"] for run_id in placed["fa0"] + placed["fa1"]} == {
        **{r: "fa0" for r in placed["fa0"]}, **{r: "fa1" for r in placed["fa1"]}}
    for pod, name in zip(pods[:2], ("fa0", "fa1")):
        on_pod = json.loads(pod.sh(f"cat /mnt/spread/.ops/submissions/{submission_id}.json").stdout)
        assert on_pod["submission_id"] == submission_id

    waited = ops("runs.wait", "--host", "fa0,fa1", "--timeout", "60", "--json")
    # Once in a full run a run stayed queued on fa1 for the whole minute: the supervisors' logs say why.
    assert waited.returncode == 0, waited.stdout + waited.stderr + "".join(
        f"\n{pod.alias} supervisor.log:\n" + pod.sh("tail -n 30 /mnt/spread/.ops/supervisor.log", check=False).stdout
        for pod in pods[:2])
    # Each run once, where the ledger says it ran: the wait may move a queued run to an idle pod
    # (rebalancing), so "where it was placed" is not a promise; "once, and recorded where" is.
    ended = [(r["pod"], r["run_id"]) for r in waited.json["runs"]]
    assert sorted(run_id for _, run_id in ended) == [r["run_id"] for r in runs]
    ledger = Ledger(project, submission_id)
    assert all(ledger.current(run_id)["host"] == pod for pod, run_id in ended), (ended, placed)

    fetched = ops("artifacts.fetch", "--host", "fa0,fa1", "--json")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    for run in runs:
        assert (project / "artifacts" / "pod_logs" / run["run_id"] / "summary.json").is_file()

    again = ops("runs.submit", "--host", "fa0,fa1", "--config", str(config), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert sorted(again.json["already_succeeded"]) == [r["run_id"] for r in runs]
    manifest = json.loads(Path(again.json["manifest"]).read_text())
    assert manifest["queued"] == [] and {r["host"] for r in manifest["runs"]} <= {"fa0", "fa1"}
    assert all(not again.json["pods"][name]["queued"] for name in ("fa0", "fa1"))


def test_placing_many_runs_at_once_numbers_attempts_as_one_by_one_and_survives_a_reload(tmp_path):
    from ops_tasks.records import Ledger

    ledger = Ledger(tmp_path, "20261201-000000.000-abcd")
    ledger.place("r1", "root@a:22", "a")
    ledger.place_all([("r1", "root@b:22", "b"), ("r2", "root@a:22", "a"), ("r2", "root@b:22", "b")])

    again = Ledger(tmp_path, "20261201-000000.000-abcd")
    assert [(a["attempt"], a["host"]) for a in again.runs["r1"]] == [(1, "a"), (2, "b")]
    assert [(a["attempt"], a["host"]) for a in again.runs["r2"]] == [(1, "a"), (2, "b")]
    assert again.current("r2")["host_id"] == "root@b:22"


def test_a_pod_given_no_run_of_a_fleet_submission_is_ok_and_not_asked_about_it(ops, pods, project):
    config = project / "lonely.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": "/mnt/lonely",
                                  "runs": [{"run_id": "lonely", "command": WRITE_SUMMARY, "gpus": 0}]}))
    submitted = ops("runs.submit", "--host", "fa1,fa2", "--config", str(config), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    (holder,) = [name for name, ids in submitted.json["placed"].items() if ids]
    idle = next(pod for pod in pods if pod.alias in ("fa1", "fa2") and pod.alias != holder)
    before = idle.sessions()

    for task, extra in (("runs.wait", ["--timeout", "60"]), ("runs.status", []), ("artifacts.fetch", [])):
        result = ops(task, "--host", "fa1,fa2", "--json", *extra)
        assert result.returncode == 0, (task, result.stdout, result.stderr)
        assert result.json["pods"][idle.alias]["runs"] == []
    assert idle.sessions() == before  # nothing was asked of the idle pod
    assert (project / "artifacts" / "pod_logs" / "lonely" / "summary.json").is_file()
