"""vllm.start / status / stop / logs / tunnel end to end: real sshd pods, real tmux and curl,
the vLLM stand-in (ops-vllm-stub) as the server and a fake nvidia-smi as the GPUs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ops_tasks.testing.pods import free_port
from conftest import needs_isolation, ops_argv

pytestmark = needs_isolation

FAST = "OPS_VLLM_STUB_STARTUP_S=0.4"


@pytest.fixture
def gpu_pod(pod_factory):
    pod = pod_factory(gpus=2)
    pod.stub = pod.install_vllm_stub()
    return pod


def start(ops, pod, *args, model="Qwen/Qwen3-4B", port=None, env=FAST):
    port = port or free_port()
    argv = ["vllm.start", "--host", pod.alias, "--vllm-bin", pod.stub, "--model-id", model,
            "--port", str(port), "--json", *args]
    if env:
        argv += ["--env", env]
    result = ops(*argv)
    result.port = port
    return result


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def engine_pids(pod) -> list:
    """Pids of the stand-in's engine processes inside this pod (not other tests' pods)."""
    inside = set(pod.namespace_pids())
    found = pod.sh("grep -l 'VLLM::EngineCore' /proc/[0-9]*/cmdline 2>/dev/null || true").stdout.split()
    pids = [int(path.split("/")[2]) for path in found]
    return [pid for pid in pids if pid in inside and pid_alive(pid)]


def pod_tails(pod) -> list:
    """Pids of `tail` processes inside this pod (not the machine's other ones)."""
    inside = set(pod.namespace_pids())
    return [int(p) for p in pod.sh("pgrep -x tail", check=False).stdout.split() if int(p) in inside]


def port_listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------- the lifecycle


def test_start_wait_status_stop_each_in_one_session_and_nothing_left(gpu_pod, ops):
    pod = gpu_pod
    started = start(ops, pod, "--wait", "--timeout", "120")

    assert started.returncode == 0, started.stdout + started.stderr
    doc = started.json
    assert doc["ok"] is True and doc["wait"]["outcome"] == "ready"
    assert [p["phase"] for p in doc["wait"]["phases"]][:4] == [
        "loading weights", "compiling", "profiling / KV cache", "capturing CUDA graphs"]
    assert "vllm:" in started.stderr and "capturing CUDA graphs" in started.stderr
    assert doc["log"].startswith("/mnt/vllm/logs/vllm-")
    assert pod.sessions() == 1
    engines = engine_pids(pod)
    assert len(engines) == 1

    status = ops("vllm.status", "--host", pod.alias, "--json")
    assert status.returncode == 0, status.stdout
    assert status.json["models"] == [{"id": "Qwen/Qwen3-4B", "max_model_len": 32768}]
    assert status.json["health"] == 200 and status.json["session_alive"] is True
    assert status.json["base_url"] == f"http://127.0.0.1:{started.port}/v1"  # the port start recorded
    assert status.json["port"] == started.port
    assert status.json["pid"] == doc["pid"]
    assert pod.sessions() == 2

    stopped = ops("vllm.stop", "--host", pod.alias, "--json")
    assert stopped.returncode == 0, stopped.stdout
    report = stopped.json
    assert report["running"] is True and report["left"] == [] and report["port_free"] is True
    assert {p["pid"] for p in report["processes"]} >= {doc["pid"], *engines}
    assert report["gpu_memory_used_mib_before"][0] > report["gpu_memory_used_mib_after"][0]
    assert not pid_alive(doc["pid"]) and not any(pid_alive(p) for p in engines)
    assert not port_listening(started.port)
    assert pod.sessions() == 3

    after = ops("vllm.status", "--host", pod.alias, "--json")
    assert after.returncode == 1
    assert after.json["ok"] is False and after.json["session_alive"] is False
    assert "Application startup complete" in after.json["log_tail"]


def test_second_start_is_refused_and_restart_replaces_the_server(gpu_pod, ops):
    first = start(ops, gpu_pod, "--wait")
    assert first.returncode == 0, first.stdout

    again = start(ops, gpu_pod, port=first.port)
    assert again.returncode == 1
    assert again.json["refused"] == "session"
    assert "already exists" in again.json["error"] and "--restart" in again.json["error"]
    assert pid_alive(first.json["pid"])  # the running server was left alone

    restarted = start(ops, gpu_pod, "--restart", "--wait", model="Qwen/Qwen3-8B", port=first.port)
    assert restarted.returncode == 0, restarted.stdout
    assert not pid_alive(first.json["pid"])
    assert restarted.json["restarted"]["left"] == []
    status = ops("vllm.status", "--host", gpu_pod.alias, "--json")
    assert [m["id"] for m in status.json["models"]] == ["Qwen/Qwen3-8B"]


def test_a_taken_port_is_refused_naming_the_process(gpu_pod, ops):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        result = start(ops, gpu_pod, port=port)

    assert result.returncode == 1
    assert result.json["refused"] == "port"
    assert f"port {port} is already taken by pid {os.getpid()}" in result.json["error"]
    # named as ps names it: this process's name (pytest-xdist renames its workers when it can)
    shown = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert f"({shown}" in result.json["error"] or "python" in result.json["error"], result.json["error"]
    assert ops("vllm.status", "--host", gpu_pod.alias, "--json").json["session_alive"] is False


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("knob, cause", [
    ("oom", "cuda-out-of-memory"),
    ("gated", "model-not-found-or-gated"),
    ("not-found", "model-not-found-or-gated"),
    ("trust-remote-code", "trust-remote-code"),
    ("crash", "other"),
])
def test_a_dying_server_stops_the_wait_with_its_cause(gpu_pod, ops, knob, cause):
    result = ops("vllm.start", "--host", gpu_pod.alias, "--vllm-bin", gpu_pod.stub, "--model-id", "org/model",
                 "--port", str(free_port()), "--wait", "--timeout", "600", "--json",
                 "--env", FAST, "--env", f"OPS_VLLM_STUB_FAIL={knob}")

    assert result.returncode == 1
    waited = result.json["wait"]
    assert waited["outcome"] == "died"  # not "timeout": it did not wait the 600 s out
    assert waited["cause"] == cause
    assert waited["log_tail"] and waited["evidence"] in waited["log_tail"]
    assert cause in result.json["error"]
    assert engine_pids(gpu_pod) == []


def test_human_output_of_a_failure_shows_the_log_tail(gpu_pod, ops):
    result = ops("vllm.start", "--host", gpu_pod.alias, "--vllm-bin", gpu_pod.stub, "--model-id", "org/model",
                 "--port", str(free_port()), "--wait", "--env", "OPS_VLLM_STUB_FAIL=oom")

    assert result.returncode == 1
    assert "cuda-out-of-memory" in result.stdout
    assert "--- log tail ---" in result.stdout and "CUDA out of memory" in result.stdout
    assert "Traceback (most recent call last)" not in result.stderr  # the server's, shown as log, not ours


def test_a_hung_start_times_out_naming_its_phase_and_stays_stoppable(gpu_pod, ops):
    result = start(ops, gpu_pod, "--wait", "--timeout", "3", env="OPS_VLLM_STUB_HANG=profiling")

    assert result.returncode == 1
    assert result.json["wait"]["outcome"] == "timeout"
    assert result.json["wait"]["phase"] == "profiling / KV cache"
    assert "vllm.stop" in result.json["error"]
    stopped = ops("vllm.stop", "--host", gpu_pod.alias, "--grace", "2", "--json")
    assert stopped.returncode == 0 and stopped.json["left"] == []


# ---------------------------------------------------------------- process tree


def test_stop_kills_the_engine_a_crashed_server_left_holding_gpu_memory(gpu_pod, ops):
    started = start(ops, gpu_pod, "--wait")
    assert started.returncode == 0, started.stdout
    engines = engine_pids(gpu_pod)
    os.kill(started.json["pid"], signal.SIGKILL)  # the server dies; its engine lives on (vLLM's problem)
    deadline = time.monotonic() + 10
    while pid_alive(started.json["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engines and all(pid_alive(p) for p in engines)

    stopped = ops("vllm.stop", "--host", gpu_pod.alias, "--json")

    assert stopped.returncode == 0, stopped.stdout
    assert set(engines) <= set(stopped.json["ended_by"]["TERM"])
    assert stopped.json["gpu_memory_used_mib_before"][0] > stopped.json["gpu_memory_used_mib_after"][0]
    assert not any(pid_alive(p) for p in engines)


def test_an_engine_that_ignores_sigterm_is_killed(gpu_pod, ops):
    started = start(ops, gpu_pod, "--wait", env="OPS_VLLM_STUB_STUBBORN=1")
    assert started.returncode == 0, started.stdout
    engines = engine_pids(gpu_pod)
    os.kill(started.json["pid"], signal.SIGKILL)

    stopped = ops("vllm.stop", "--host", gpu_pod.alias, "--grace", "1", "--json")

    assert stopped.returncode == 0, stopped.stdout
    assert set(engines) <= set(stopped.json["ended_by"]["KILL"])
    assert not any(pid_alive(p) for p in engines)


def test_stop_with_nothing_running_says_so_and_exits_0(pod, ops):
    result = ops("vllm.stop", "--host", pod.alias)

    assert result.returncode == 0
    assert "not running" in result.stdout


# ---------------------------------------------------------------- quoting and secrets


def test_a_hostile_model_id_is_one_argument_and_runs_nothing(gpu_pod, ops, tmp_path):
    marker = tmp_path / "pwned"
    model = f"x'; touch {marker}; echo '"

    result = start(ops, gpu_pod, "--wait", model=model)

    assert result.returncode == 0, result.stdout
    status = ops("vllm.status", "--host", gpu_pod.alias, "--json")
    assert [m["id"] for m in status.json["models"]] == [model]
    assert not marker.exists()


def test_secrets_reach_the_server_but_not_argv_state_tmux_or_output(gpu_pod, ops):
    secret = "hf_TopSecretValue123"

    result = start(ops, gpu_pod, "--wait", "--env", f"HF_TOKEN={secret}", "--env", "HF_HOME=/mnt/hf")

    assert result.returncode == 0, result.stdout
    pid = result.json["pid"]
    assert secret.encode() in Path(f"/proc/{pid}/environ").read_bytes()  # the server has it
    assert secret not in result.stdout + result.stderr
    state = json.loads(gpu_pod.sh("cat /mnt/vllm/vllm.json").stdout)
    assert state["env"] == {"HF_HOME": "/mnt/hf", "HF_TOKEN": "***", "OPS_VLLM_STUB_STARTUP_S": "0.4"}
    assert secret not in gpu_pod.sh("cat /mnt/vllm/vllm.json /mnt/vllm/logs/*; cat /proc/[0-9]*/cmdline", check=False).stdout
    assert secret not in gpu_pod.sh("TMUX_TMPDIR=/root/.tmux tmux show-environment -g").stdout
    env_file = gpu_pod.sh("stat -c '%a %n' /root/.ops/vllm/vllm.env").stdout.split()
    assert env_file[0] == "600"
    ops("vllm.stop", "--host", gpu_pod.alias)


def test_dry_run_shows_the_tmux_command_and_contacts_nothing(gpu_pod, ops):
    result = ops("vllm.start", "--host", gpu_pod.alias, "--model-id", "m", "--env", "HF_TOKEN=hf_SecretXYZ",
                 "--dry-run")

    assert result.returncode == 0, result.stderr
    assert "tmux_cmd new-session -d -s \"$session\"" in result.stdout
    assert "argv=(vllm serve m --host 127.0.0.1 --port 8000)" in result.stdout
    assert "hf_SecretXYZ" not in result.stdout
    assert gpu_pod.accepted_connections() == 0


# ---------------------------------------------------------------- logs and tunnel


def test_logs_prints_the_last_lines_and_follow_streams_until_interrupted(gpu_pod, ops, client, project):
    started = start(ops, gpu_pod, "--wait")
    assert started.returncode == 0

    tail = ops("vllm.logs", "--host", gpu_pod.alias, "--lines", "3")
    assert tail.returncode == 0
    assert len(tail.stdout.splitlines()) == 3

    follow = subprocess.Popen([*ops_argv(), "vllm.logs", "--host", gpu_pod.alias, "--follow", "--lines", "1"],
                              cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        follow.stdout.readline()  # the last line so far: following has begun
        urllib.request.urlopen(f"http://127.0.0.1:{started.port}/v1/models", timeout=10).read()
        line = follow.stdout.readline()  # the server logs the request: it streams to us
        assert "GET /v1/models" in line
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(timeout=20)
    deadline = time.monotonic() + 10
    while pod_tails(gpu_pod) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pod_tails(gpu_pod) == []  # no tail left on the pod


def test_tunnel_forwards_a_local_port_to_the_server(gpu_pod, ops, client, project):
    started = start(ops, gpu_pod, "--wait")
    assert started.returncode == 0
    local = free_port()

    # No --port: the tunnel finds the port vllm.start recorded for the session.
    tunnel = subprocess.Popen([*ops_argv(), "vllm.tunnel", "--host", gpu_pod.alias, "--local-port", str(local)],
                              cwd=project, env=client.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert tunnel.stdout.readline().strip() == f"OPENAI_API_BASE=http://127.0.0.1:{local}/v1"
        body = json.load(urllib.request.urlopen(f"http://127.0.0.1:{local}/v1/models", timeout=10))
        assert body["data"][0]["id"] == "Qwen/Qwen3-4B"
    finally:
        tunnel.send_signal(signal.SIGINT)
        assert tunnel.wait(timeout=20) == 0


# ---------------------------------------------------------------- profiles and the local host


def test_profile_vllm_defaults_apply_and_flags_win(gpu_pod, ops, project):
    port = free_port()
    (project / "invoke.yaml").write_text(
        "ops:\n  profiles:\n    gpu:\n"
        f"      destination: {gpu_pod.alias}\n"
        "      vllm:\n"
        f"        vllm_bin: {gpu_pod.stub}\n        port: {port}\n        max_model_len: 4096\n"
        "        env: {HF_HOME: /mnt/hf, OPS_VLLM_STUB_STARTUP_S: '0.2'}\n"
    )

    result = ops("vllm.start", "--host", "gpu", "--model-id", "m", "--max-model-len", "2048", "--wait", "--json")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.json["port"] == port
    status = ops("vllm.status", "--host", "gpu", "--json")
    assert status.json["models"][0]["max_model_len"] == 2048
    state = json.loads(gpu_pod.sh("cat /mnt/vllm/vllm.json").stdout)
    assert state["env"]["HF_HOME"] == "/mnt/hf"


def test_local_host_serves_and_stops_with_its_own_tmux(ops, project, client):
    port = free_port()
    stub = str(Path(sys.executable).with_name("ops-vllm-stub"))
    try:
        started = ops("vllm.start", "--host", "local", "--vllm-bin", stub, "--model-id", "Qwen/Qwen3-0.5B",
                      "--port", str(port), "--wait", "--env", FAST, "--json")
        assert started.returncode == 0, started.stdout + started.stderr
        assert Path(started.json["log"]).is_relative_to(project / ".local-pod" / "mnt")
        status = ops("vllm.status", "--host", "local", "--json")
        assert status.returncode == 0 and status.json["models"][0]["id"] == "Qwen/Qwen3-0.5B"
    finally:
        stopped = ops("vllm.stop", "--host", "local", "--json")
    assert stopped.returncode == 0 and stopped.json["left"] == []
    assert not port_listening(port)


# ---------------------------------------------------------------- what review found


def test_a_start_is_refused_while_the_last_servers_workers_live_on(gpu_pod, ops):
    first = start(ops, gpu_pod, "--wait", env="OPS_VLLM_STUB_LEAK_ENGINE=1")
    assert first.returncode == 0, first.stdout
    engines = engine_pids(gpu_pod)
    gpu_pod.sh("tmux kill-session -t vllm")  # the session goes; the leaked engine stays
    deadline = time.monotonic() + 10
    while pid_alive(first.json["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)

    again = start(ops, gpu_pod)

    assert again.returncode == 1
    assert again.json["refused"] == "leftovers"
    assert str(engines[0]) in again.json["error"] and "vllm.stop" in again.json["error"]
    stopped = ops("vllm.stop", "--host", gpu_pod.alias, "--json")
    assert set(engines) <= {p["pid"] for p in stopped.json["processes"]}
    assert not any(pid_alive(p) for p in engines)


def test_a_missing_vllm_program_is_named_with_the_log_kept(gpu_pod, ops):
    result = ops("vllm.start", "--host", gpu_pod.alias, "--vllm-bin", "no-such-vllm", "--model-id", "m",
                 "--port", str(free_port()), "--wait", "--timeout", "60", "--json")

    assert result.returncode == 1
    assert "wait" in result.json, result.stdout
    assert result.json["wait"]["cause"] == "command-not-found"
    assert "no-such-vllm" in result.json["wait"]["log_tail"]  # tee outlived the pane's hang-up


def test_ctrl_c_during_wait_is_one_line_and_exit_130(gpu_pod, ops, client, project):
    argv = [*ops_argv(), "vllm.start", "--host", gpu_pod.alias, "--vllm-bin", gpu_pod.stub, "--model-id", "m",
            "--port", str(free_port()), "--wait", "--env", "OPS_VLLM_STUB_HANG=loading"]
    proc = subprocess.Popen(argv, cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while not engine_pids(gpu_pod) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)

    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "interrupted; the server goes on starting in tmux session 'vllm'" in err
    assert ops("vllm.stop", "--host", gpu_pod.alias, "--grace", "1").returncode == 0


def test_tunnel_dry_run_names_the_forward_and_contacts_nothing(pod, ops):
    result = ops("vllm.tunnel", "--host", pod.alias, "--local-port", str(free_port()), "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["forward"].endswith("127.0.0.1:the port vllm.start recorded")
    assert pod.accepted_connections() == 0


def test_status_port_flag_wins_over_the_recorded_port(gpu_pod, ops):
    started = start(ops, gpu_pod, "--wait")
    assert started.returncode == 0  # serving on the recorded port...
    other = free_port()

    status = ops("vllm.status", "--host", gpu_pod.alias, "--port", str(other), "--json")

    assert status.returncode == 1  # ...but the port asked for is probed
    assert status.json["base_url"] == f"http://127.0.0.1:{other}/v1"
    assert status.json["port"] == other
