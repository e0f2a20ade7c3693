"""Fleets of rented pods and the tasks over them, through the real `ops` program: pod.up --pods N
--name NAME rents N pods at once against the local fake of Lium's API (real sshd pods stand in
for the rented ones), pod.down --name NAME releases each behind its own teardown check; and
pod.sync/bootstrap/wandb, runs.resume/logs and vllm.tunnel over a fleet. Two real sshd pods
shared by the module."""

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from ops_tasks import records, ssh_config
from ops_tasks.testing.pods import free_port
from conftest import module_client, module_pod, needs_isolation, one_line_error, ops_argv
from test_fleet_tasks import connections, new_connections

pytestmark = needs_isolation

client = module_client()
NAMES = ("fp0", "fp1")
FLEET = ",".join(NAMES)
CANARY_KEY = "lium-canary-31c9e0a7b25d"


first_pod, second_pod = module_pod("fp0"), module_pod("fp1")


@pytest.fixture(scope="module")
def pods(first_pod, second_pod):
    return [first_pod, second_pod]


# ---------------------------------------------------------------- pod.up --pods / pod.down of a fleet


@pytest.fixture
def fake():
    pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")
    from ops_tasks.testing.fake_lium import FakeLium

    api = FakeLium(CANARY_KEY).start()
    yield api
    api.stop()


@pytest.fixture
def lium_ops(ops, client, fake):
    def run(*args, env=None):
        result = ops(*args, env={**fake.env(), "XDG_CACHE_HOME": str(client.home / ".cache"), **(env or {})})
        assert "canary" not in result.stdout + result.stderr, "the API key was printed"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    return run


def rented_pods_answer_at(fake, pods):
    """Each rent answers SSH at the next of these sshd pods."""
    fake.ssh_queue = [{"user": pod.user, "host": "127.0.0.1", "port": pod.port} for pod in pods]


def submit(ops, project, host, runs, outputs):
    config = project / f"{outputs}.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": f"/mnt/{outputs}", "runs": runs}))
    result = ops("runs.submit", "--host", host, "--config", str(config), "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.json


def test_up_rents_a_fleet_at_once_and_down_releases_each_pod_behind_its_own_check(lium_ops, fake, pods, client,
                                                                                 project, monkeypatch):
    monkeypatch.setenv("OPS_STATE_DIR", str(client.state_home / "ops-tasks"))  # what `ops` records, read here
    for price in (1.0, 1.2, 1.4, 3.0):
        fake.add_executor("NVIDIA A100-SXM4-80GB", 1, price)
    volume = fake.add_volume("my_volume")["id"]
    rented_pods_answer_at(fake, pods)
    fake.failing_names = {"sweep-3"}

    too_many = lium_ops("pod.up", "--gpu", "A100", "--pods", "5", "--name", "sweep", "--yes")
    up = lium_ops("pod.up", "--gpu", "A100", "--pods", "3", "--name", "sweep", "--ttl", "2h", "--yes", "--json")

    one_line_error(too_many, 1, "5 pods to rent, and 4 Lium executor(s) are available", "nothing rented")
    assert up.returncode == 1, (up.stdout, up.stderr)
    doc = up.json
    assert doc["hosts"] == ["sweep-1", "sweep-2", "sweep-3"] and doc["fleet_name"] == "sweep"
    assert doc["failed"] == ["sweep-3"]  # its own row, saying how to release it
    assert "failed to start" in doc["pods"]["sweep-3"]["error"]
    assert "remove it with pod.down --name sweep-3" in doc["pods"]["sweep-3"]["error"]
    rents = fake.rents()
    assert sorted(r["pod_name"] for r in rents) == ["sweep-1", "sweep-2", "sweep-3"]
    assert [r["volume_id"] for r in rents] == [volume] * 3  # a volume each
    assert sorted(p["price"] for p in (fake._pod_json(p) for p in fake.pods.values())) == [1.0, 1.2, 1.4]
    assert records.load_fleet(project, "sweep") == ["sweep-1", "sweep-2"]  # --host sweep: the pods that came up
    for name in ("sweep-1", "sweep-2"):  # ends with pod.status of the fleet (--host sweep), each through its alias
        status = doc["pods"][name]["status"]
        assert status["ok"] and status["volume"]["mounted"] and doc["pods"][name]["alias"] == name
    ports = {ssh_config.find_host(client.config, name)["options"]["port"] for name in ("sweep-1", "sweep-2")}
    assert ports == {str(pod.port) for pod in pods}
    failed_pod = next(pod_id for pod_id, pod in fake.pods.items() if pod["pod_name"] == "sweep-3")
    del fake.pods[failed_pod]  # as pod.down --name sweep-3 would

    # A run in an outputs root of its own: the check looks where the pod's latest submission put it.
    submit(lium_ops, project, "sweep-1", [{"run_id": "busy", "command": "sleep 60"}], "down")
    refused = lium_ops("pod.down", "--name", "sweep", "--yes", "--json")

    assert refused.returncode == 1, refused.stdout
    assert refused.json["failed"] == ["sweep-1"] and "sweep-1" in refused.json["error"]
    assert [r["run_id"] for r in refused.json["pods"]["sweep-1"]["check"]["active"]] == ["busy"]
    assert refused.json["pods"]["sweep-2"]["removed"] is True  # one pod's refusal stops no other
    assert [p["pod_name"] for p in fake.pods.values()] == ["sweep-1"]
    assert records.load_fleet(project, "sweep") == ["sweep-1"]  # the name now means the pod that stayed

    forced = lium_ops("pod.down", "--name", "sweep", "--force", "--forget", "--yes")  # the run still runs

    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "removed pod sweep-1" in forced.stdout and fake.pods == {}
    assert not ssh_config.written_by_pod_up(client.config, "sweep-1")
    assert records.load_fleet(project, "sweep") is None


def test_a_fleet_name_invoke_yaml_already_gives_is_refused_before_anything_is_rented(lium_ops, fake, project):
    (project / "invoke.yaml").write_text("ops:\n  fleets:\n    trio: [fp0, fp1]\n")

    result = lium_ops("pod.up", "--gpu", "A100", "--yes", "--pods", "2", "--name", "trio")

    one_line_error(result, 2, "pod.up --name trio: invoke.yaml has a fleet of that name")
    assert fake.requests == []


# ---------------------------------------------------------------- preparing every pod of a fleet


def git(*args, cwd=None):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_sync_bootstrap_and_wandb_run_on_every_pod_over_one_connection_each(ops, pods, tmp_path):
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "--bare", "-b", "main", str(bare))
    git("clone", str(bare), str(work))
    (work / "f").write_text("1")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-m", "one", cwd=work)
    git("push", "origin", "main", cwd=work)
    canary = "wandb-canary-fleet-0123456789abcdef0123456789ab"
    before = connections(pods)

    synced = ops("pod.sync", "--host", FLEET, "--remote-repo", "/root/repo", "--repo-url", f"file://{bare}", "--json")
    booted = ops("pod.bootstrap", "--host", FLEET, "--json")
    keyed = ops("pod.wandb", "--host", FLEET, "--json", env={"WANDB_API_KEY": canary})

    for result in (synced, booted, keyed):
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert result.json["hosts"] == list(NAMES) and result.json["failed"] == []
    assert new_connections(pods, before) == [3, 3]  # one per task and pod
    head = git("rev-parse", "main", cwd=work)
    assert [synced.json["pods"][name]["commit"] for name in NAMES] == [head, head]
    assert all(booted.json["pods"][name]["ok"] for name in NAMES)
    assert [keyed.json["pods"][name]["result"] for name in NAMES] == ["WANDB_NETRC_OK"] * 2
    assert all(canary in (pod.home / ".netrc").read_text() for pod in pods)
    assert canary not in keyed.stdout + keyed.stderr

    pods[0].sh("cp -a /root/repo /root/only-here")  # a repo on one pod, none on the other
    text = ops("pod.sync", "--host", FLEET, "--remote-repo", "/root/only-here")

    assert text.returncode == 1 and "Traceback" not in text.stderr
    assert text.stdout.startswith(f"fp0: OK: /root/only-here at {head[:12]}")
    assert "error: not ok on 1 of 2 pods: fp1" in text.stdout


# ---------------------------------------------------------------- runs over a fleet


def supervisor_pid(pod, outputs: str) -> int:
    return json.loads(pod.sh(f"cat {outputs}/.ops/supervisor.json").stdout)["pid"]


def wait_until(predicate, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_logs_over_a_fleet_read_the_pod_holding_the_run_and_resume_requeues_each_pods_lost_runs(ops, pods, project):
    outputs = "/mnt/fleet-runs"
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": outputs, "runs": [
        {"run_id": f"say-{i}", "command": "echo said-$OPS_RUN_ID; sleep 60"} for i in range(2)]}))
    submitted = ops("runs.submit", "--host", FLEET, "--config", str(config), "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    placed = {run_id: name for name, ids in submitted.json["placed"].items() for run_id in ids}
    assert sorted(placed.values()) == list(NAMES)  # one run on each pod
    for pod in pods:
        run_id = next(r for r, name in placed.items() if name == pod.alias)
        wait_until(lambda: "said-" in pod.sh(f"cat {outputs}/{run_id}/stdout.log", check=False).stdout)
    before = connections(pods)

    logs = ops("runs.logs", "--host", FLEET, "--run-id", "say-1")
    nowhere = ops("runs.logs", "--host", FLEET, "--run-id", "never-submitted")

    assert logs.returncode == 0, logs.stderr
    assert "said-say-1" in logs.stdout and "said-say-0" not in logs.stdout
    assert f"run say-1 is on {placed['say-1']}" in logs.stderr
    assert new_connections(pods, before) == [int(name == placed["say-1"]) for name in NAMES]  # only the holder
    one_line_error(nowhere, 2, "runs.logs --run-id never-submitted", "(fp0, fp1)", "--host")

    for pod in pods:  # a dead supervisor on every pod leaves its run lost
        os.kill(supervisor_pid(pod, outputs), signal.SIGKILL)
    before = connections(pods)
    resumed = ops("runs.resume", "--host", FLEET, "--json")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert {name: resumed.json["pods"][name]["resumed"] for name in NAMES} == {
        name: [run_id] for run_id, name in placed.items()}
    assert new_connections(pods, before) == [1, 1]
    ops("runs.cancel", "--host", FLEET, "--submission", submitted.json["submission_id"])


# ---------------------------------------------------------------- vllm.tunnel over a fleet


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def answering(body: bytes):
    """An HTTP server on the loopback the pods share, answering every GET with body."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.body = body
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def two_free_ports() -> int:
    """A port whose next one is free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two free ports in a row")


def test_tunnel_over_a_fleet_opens_one_local_port_per_pod(pods, client, project):
    with answering(b"from-0") as port0, answering(b"from-1") as port1:
        (project / "invoke.yaml").write_text(
            "ops:\n  profiles:\n"
            f"    fp0: {{destination: fp0, vllm: {{port: {port0}}}}}\n"
            f"    fp1: {{destination: fp1, vllm: {{port: {port1}}}}}\n")
        local = two_free_ports()
        before = connections(pods)
        tunnel = subprocess.Popen([*ops_argv(), "vllm.tunnel", "--host", FLEET, "--local-port", str(local)],
                                  cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            lines = [tunnel.stdout.readline().strip() for _ in NAMES]
            assert lines == [f"fp0: OPENAI_API_BASE=http://127.0.0.1:{local}/v1",
                             f"fp1: OPENAI_API_BASE=http://127.0.0.1:{local + 1}/v1"], tunnel.stderr.read()
            answers = [subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/v1/models"],
                                      capture_output=True, text=True).stdout for port in (local, local + 1)]
            assert answers == ["from-0", "from-1"]
            assert new_connections(pods, before) == [1, 1]
        finally:
            tunnel.send_signal(signal.SIGINT)
            code = tunnel.wait(timeout=20)
        assert code == 0, tunnel.stderr.read()


def test_tunnel_over_a_fleet_with_a_busy_port_is_refused_before_any_contact(ops, pods):
    local = two_free_ports()
    before = connections(pods)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", local + 1))
        busy.listen(1)

        result = ops("vllm.tunnel", "--host", FLEET, "--local-port", str(local), "--port", "8000")

    one_line_error(result, 2, f"local port {local + 1} is in use")
    assert new_connections(pods, before) == [0, 0]
