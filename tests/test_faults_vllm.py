"""Safe at the edges, for vLLM: the tasks act only on what vllm.start started, the env file of
secrets does not outlive its server, and numeric profile keys are checked before any contact.

One real sshd pod for the module (the vLLM stand-in and a fake nvidia-smi on it); each test
leaves it as it found it: no tmux server, no vLLM state, no env file.
"""

from pathlib import Path

import pytest

from ops_tasks.testing.pods import ClientHome, SshPod, free_port
from conftest import needs_isolation, one_line_error
from test_vllm import pid_alive as alive

pytestmark = needs_isolation

FAST = "OPS_VLLM_STUB_STARTUP_S=0.2"
SOCKET = "ops-faults"  # the profile's own tmux socket (tmux -L)
ENV_FILE = "/root/.ops/vllm/vllm.env"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One laptop for the module (conftest's ops runs with it)."""
    return ClientHome(tmp_path_factory.mktemp("faults-client") / "home")


@pytest.fixture(scope="module")
def module_pod(tmp_path_factory, client):
    pod = SshPod(tmp_path_factory.mktemp("faults-pod") / "pod", "fpod", client.public_key, gpus=2)
    pod.start()
    client.add_alias("fpod", pod)
    pod.alias = "fpod"
    pod.stub = pod.install_vllm_stub()
    yield pod
    pod.stop()


@pytest.fixture
def gpu_pod(module_pod, project):
    """The module's pod, with a profile `sock` on its own tmux socket; cleaned after the test."""
    (project / "invoke.yaml").write_text(
        f"ops:\n  profiles:\n    sock:\n      destination: {module_pod.alias}\n      tmux_socket: {SOCKET}\n")
    yield module_pod
    module_pod.sh(f"tmux kill-server 2>/dev/null; tmux -L {SOCKET} kill-server 2>/dev/null; "
                  f"rm -rf /mnt/vllm /root/.ops/vllm", check=False)


def start(ops, host, pod, *args, port=None, env=FAST):
    port = port or free_port()
    result = ops("vllm.start", "--host", host, "--vllm-bin", pod.stub, "--model-id", "Qwen/Qwen3-4B",
                 "--port", str(port), "--json", "--env", env, *args)
    result.port = port
    return result


def foreign_session(pod, command="sleep 1002", socket_name=None, env=""):
    """The user's own tmux session `vllm` (not vllm.start's); returns its pane's pid."""
    tmux = f"tmux -L {socket_name}" if socket_name else "tmux"
    pod.sh(f"{env} {tmux} new-session -d -s vllm {command!r}")
    return int(pod.sh(f"{tmux} list-panes -t =vllm -F '#{{pane_pid}}'").stdout.split()[0])


def has_session(pod, socket_name=None) -> bool:
    tmux = f"tmux -L {socket_name}" if socket_name else "tmux"
    return pod.sh(f"{tmux} has-session -t =vllm", check=False).returncode == 0


def env_file_exists(pod) -> bool:
    return pod.sh(f"test -e {ENV_FILE}", check=False).returncode == 0


# ---------------------------------------------------------------- a session vllm.start did not start


@pytest.mark.parametrize("host, socket_name", [("fpod", None), ("sock", SOCKET)])
def test_stop_names_a_foreign_session_and_leaves_it_alone(gpu_pod, ops, host, socket_name):
    pane = foreign_session(gpu_pod, socket_name=socket_name)

    result = ops("vllm.stop", "--host", host)

    assert result.returncode == 1, result.stdout
    where = f"on socket {socket_name}" if socket_name else "on the default socket"
    assert f"tmux session 'vllm' {where} was not started by ops-tasks" in result.stdout
    assert "left alone" in result.stdout and "stopped vLLM session" not in result.stdout
    assert alive(pane) and has_session(gpu_pod, socket_name)


def test_status_says_a_session_is_not_ops_tasks_own(gpu_pod, ops):
    foreign_session(gpu_pod)

    status = ops("vllm.status", "--host", "fpod", "--json")
    human = ops("vllm.status", "--host", "fpod")

    assert status.json["session_alive"] is True and status.json["session_foreign"] is True
    assert status.json["pid"] is None
    assert "NOT started by ops-tasks" in human.stdout


def test_restart_refuses_a_foreign_session_and_starts_nothing(gpu_pod, ops):
    pane = foreign_session(gpu_pod, socket_name=SOCKET)

    result = start(ops, "sock", gpu_pod, "--restart")

    assert result.returncode == 1, result.stdout
    assert result.json["refused"] == "foreign-session"
    assert f"tmux session 'vllm' on socket {SOCKET} was not started by ops-tasks" in result.json["error"]
    assert "stop it yourself or pick another --session" in result.json["error"]
    assert alive(pane) and has_session(gpu_pod, SOCKET)
    assert not env_file_exists(gpu_pod)


def test_start_without_restart_does_not_offer_to_replace_a_foreign_session(gpu_pod, ops):
    foreign_session(gpu_pod)

    result = start(ops, "fpod", gpu_pod)

    assert result.returncode == 1
    assert result.json["refused"] == "foreign-session"
    assert "--restart" not in result.json["error"]


@pytest.mark.parametrize("marker", ["", "OPS_VLLM_OWNER=vllm-0123456789ab"])
def test_a_state_file_of_an_old_start_does_not_make_a_new_foreign_session_ours(gpu_pod, ops, marker):
    first = start(ops, "fpod", gpu_pod, "--wait")
    assert first.returncode == 0, first.stdout
    assert ops("vllm.stop", "--host", "fpod").returncode == 0  # the state file stays, as a record
    # The user's own command in a session of the same name; perhaps even with an owner mark of
    # its own (copied from another shell): not the one vllm.start recorded.
    pane = foreign_session(gpu_pod, env=marker)

    stopped = ops("vllm.stop", "--host", "fpod", "--json")
    restarted = start(ops, "fpod", gpu_pod, "--restart")

    assert stopped.returncode == 1 and "was not started by ops-tasks" in stopped.json["error"]
    assert stopped.json["processes"] == [] and stopped.json["session_killed"] is False
    assert restarted.returncode == 1 and restarted.json["refused"] == "foreign-session"
    assert alive(pane)


def test_a_server_of_ours_is_still_stopped_and_restarted(gpu_pod, ops):
    first = start(ops, "sock", gpu_pod, "--wait")
    assert first.returncode == 0, first.stdout

    again = start(ops, "sock", gpu_pod, "--restart", "--wait", port=first.port)
    stopped = ops("vllm.stop", "--host", "sock", "--json")

    assert again.returncode == 0, again.stdout
    assert not alive(first.json["pid"])
    assert stopped.returncode == 0 and stopped.json["running"] is True
    assert not alive(again.json["pid"]) and not has_session(gpu_pod, SOCKET)


def test_a_foreign_session_on_the_default_socket_is_no_concern_of_a_profile_with_its_own(gpu_pod, ops):
    pane = foreign_session(gpu_pod)  # the user's tmux, default socket

    started = start(ops, "sock", gpu_pod, "--restart", "--wait")
    stopped = ops("vllm.stop", "--host", "sock", "--json")

    assert started.returncode == 0, started.stdout
    assert stopped.returncode == 0, stopped.stdout
    assert alive(pane) and has_session(gpu_pod)


# ---------------------------------------------------------------- a port vllm.start did not take


def test_a_foreign_process_on_the_port_is_named_and_left_alone_by_restart_and_stop(gpu_pod, ops):
    holder = gpu_pod.sh("python3 -c 'import socket,time,os; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); "
                        "s.listen(1); print(os.getpid(), s.getsockname()[1], flush=True); "
                        "os.close(1); time.sleep(1000)' 2>/dev/null &", check=False)
    pid, port = (int(word) for word in holder.stdout.split())
    try:
        restarted = start(ops, "fpod", gpu_pod, "--restart", port=port)
        stopped = ops("vllm.stop", "--host", "fpod", "--port", str(port), "--json")

        assert restarted.returncode == 1 and restarted.json["refused"] == "port"
        assert f"port {port} is already taken by pid {pid}" in restarted.json["error"]
        assert "which vllm.start did not start: left alone" in restarted.json["error"]
        assert "--restart" not in restarted.json["error"]
        assert stopped.returncode == 1, stopped.stdout
        assert f"port {port} is held by pid {pid}" in stopped.json["error"]
        assert "left alone" in stopped.json["error"]
        assert alive(pid)
    finally:
        gpu_pod.sh(f"kill {pid}", check=False)


# ---------------------------------------------------------------- the env file of secrets


def test_the_env_file_goes_when_the_server_stops(gpu_pod, ops):
    started = start(ops, "fpod", gpu_pod, "--wait", "--env", "HF_TOKEN=hf_canary123")
    assert started.returncode == 0, started.stdout
    assert gpu_pod.sh(f"stat -c %a {ENV_FILE}").stdout.strip() == "600"  # while it serves

    stopped = ops("vllm.stop", "--host", "fpod")

    assert stopped.returncode == 0, stopped.stdout
    assert not env_file_exists(gpu_pod)
    assert "hf_canary123" not in gpu_pod.sh("cat /root/.ops/vllm/* 2>/dev/null", check=False).stdout


def test_a_restart_leaves_only_the_new_servers_env_file(gpu_pod, ops):
    first = start(ops, "fpod", gpu_pod, "--wait", "--env", "HF_TOKEN=hf_first111")
    assert first.returncode == 0, first.stdout

    again = start(ops, "fpod", gpu_pod, "--restart", "--wait", port=first.port, env="HF_TOKEN=hf_second222")

    assert again.returncode == 0, again.stdout
    text = gpu_pod.sh(f"cat {ENV_FILE}").stdout
    assert "hf_second222" in text and "hf_first111" not in text


@pytest.mark.parametrize("knob", ["OPS_VLLM_STUB_FAIL=crash", "OPS_VLLM_STUB_FAIL=oom"])
def test_a_failed_start_leaves_no_env_file(gpu_pod, ops, knob):
    result = start(ops, "fpod", gpu_pod, "--wait", "--env", "HF_TOKEN=hf_canary456", env=knob)

    assert result.returncode == 1 and result.json["wait"]["outcome"] == "died"
    assert not env_file_exists(gpu_pod)


def test_a_start_not_serving_in_time_leaves_no_env_file_and_the_server_its_env(gpu_pod, ops):
    result = start(ops, "fpod", gpu_pod, "--wait", "--timeout", "2", "--env", "HF_TOKEN=hf_canary000",
                   env="OPS_VLLM_STUB_HANG=profiling")

    assert result.returncode == 1 and result.json["wait"]["outcome"] == "timeout"
    assert not env_file_exists(gpu_pod)
    assert b"HF_TOKEN=hf_canary000" in Path(f"/proc/{result.json['pid']}/environ").read_bytes()
    assert ops("vllm.stop", "--host", "fpod", "--grace", "1").returncode == 0


def test_a_server_that_died_on_its_own_leaves_no_env_file_after_stop(gpu_pod, ops):
    started = start(ops, "fpod", gpu_pod, "--wait", "--env", "HF_TOKEN=hf_canary789")
    assert started.returncode == 0, started.stdout
    gpu_pod.sh(f"kill -9 {started.json['pid']}")

    stopped = ops("vllm.stop", "--host", "fpod", "--json")

    assert stopped.returncode == 0, stopped.stdout
    assert not env_file_exists(gpu_pod)


# ---------------------------------------------------------------- numeric profile keys


NUMERIC_CASES = [
    ("connect_timeout", ".nan"), ("connect_timeout", ".inf"), ("connect_timeout", "-.inf"),
    ("connect_timeout", "-1"), ("connect_timeout", "0"), ("connect_timeout", "1e308"),
    ("vllm.gpu_memory_utilization", ".nan"), ("vllm.gpu_memory_utilization", ".inf"),
    ("vllm.gpu_memory_utilization", "0"), ("vllm.gpu_memory_utilization", "1.5"),
    ("vllm.port", "0"), ("vllm.port", "70000"), ("vllm.max_model_len", "-5"),
    ("vllm.tensor_parallel_size", "0"), ("vllm.pipeline_parallel_size", "-1"),
]
TASKS = (["pod.status"], ["vllm.status"], ["vllm.start", "--model-id", "m"], ["runs.list"])


@pytest.mark.parametrize("key, value", NUMERIC_CASES)
def test_a_numeric_profile_key_out_of_range_is_one_line_exit_2_before_contact(module_pod, ops, project, key,
                                                                              value):
    before = module_pod.accepted_connections()
    if key.startswith("vllm."):
        setting = f"      vllm:\n        {key[5:]}: {value}\n"
    else:
        setting = f"      {key}: {value}\n"
    (project / "invoke.yaml").write_text(
        f"ops:\n  profiles:\n    bad:\n      destination: {module_pod.alias}\n{setting}")

    # The check is the preflight every task passes; the tasks take turns, to keep this quick.
    task = TASKS[NUMERIC_CASES.index((key, value)) % len(TASKS)]
    result = ops(*task, "--host", "bad")

    one_line_error(result, 2, f"ops.profiles.bad.{key}")
    assert module_pod.accepted_connections() == before


@pytest.mark.parametrize("task", [
    ["vllm.stop", "--grace", "nan"], ["vllm.stop", "--grace", "inf"],
    ["vllm.start", "--model-id", "m", "--restart", "--grace", "-inf"],
    ["vllm.start", "--model-id", "m", "--wait", "--timeout", "inf"],
    ["vllm.start", "--model-id", "m", "--wait", "--timeout", "1e400"],
])
def test_a_duration_flag_that_is_no_number_of_seconds_is_one_line_exit_2_before_contact(module_pod, ops, task):
    before = module_pod.accepted_connections()

    result = ops(*task, "--host", module_pod.alias)

    one_line_error(result, 2, f"{task[-2]} must be a finite number of seconds")
    assert module_pod.accepted_connections() == before
