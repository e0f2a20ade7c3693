"""pod.status end to end: the `ops` command against real sshd pods."""

import json
import re
import socket


from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import free_port
from conftest import needs_isolation


@needs_isolation
def test_mounted_volume_is_ok_in_one_connection_and_one_session(pod, ops):
    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0, result.stderr
    status = result.json
    assert status["ok"] is True and status["reachable"] is True
    assert status["volume"]["mounted"] is True
    assert status["volume"]["fstype"] == "tmpfs"
    assert status["volume"]["size_bytes"] == 256 * 1024 * 1024
    assert status["gpus"] == []
    assert {name for name, tool in status["tools"].items() if tool["present"]} == {"tmux", "curl", "python3", "rsync"}
    assert status["problems"] == []
    assert pod.accepted_connections() == 1
    assert pod.sessions() == 1


@needs_isolation
def test_plain_directory_at_mnt_is_not_mounted_and_exits_1(pod_factory, ops):
    pod = pod_factory(volume=False)

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 1
    assert result.json["volume"]["exists"] is True
    assert result.json["volume"]["mounted"] is False
    assert any("/mnt is not mounted" in p for p in result.json["problems"])


def test_closed_port_exits_1_with_one_line_naming_host_and_port(ops, project):
    port = free_port()  # nothing listens there

    result = ops("pod.status", "--host", f"root@127.0.0.1:{port}", timeout=60)

    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stdout
    assert "refused" in result.stdout
    assert "Traceback" not in result.stderr


def test_silent_port_times_out_after_the_profile_connect_timeout(ops, project):
    # A socket that accepts TCP but never speaks SSH: only the timeout can end the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        (project / "invoke.yaml").write_text(
            f"ops:\n  profiles:\n    mute:\n      destination: root@127.0.0.1:{port}\n      connect_timeout: 1\n"
        )
        result = ops("pod.status", "--host", "mute", "--json", timeout=60)

    assert result.returncode == 1
    assert result.json["reachable"] is False
    assert f"127.0.0.1:{port}" in result.json["problems"][0]
    assert re.search(r"within 1 ?s\b", result.json["problems"][0])  # the profile's timeout, named


def test_dry_run_prints_the_script_and_opens_no_connection(pod, ops):
    result = ops("pod.status", "--host", pod.alias, "--dry-run")

    assert result.returncode == 0
    assert "pod_status.sh" in result.stdout
    assert "volume=/mnt" in result.stdout
    assert pod.accepted_connections() == 0


def test_invoke_dry_flag_also_contacts_nothing(pod, ops):
    result = ops("--dry", "pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0
    assert result.json["dry_run"] is True
    assert result.json["scripts"][0].startswith("# ops-tasks remote script: pod_status.sh")
    assert pod.accepted_connections() == 0


@needs_isolation
def test_every_way_of_naming_the_host_reaches_the_pod(pod, ops, project):
    (project / "invoke.yaml").write_text(f"ops:\n  profiles:\n    gpu-box:\n      destination: {pod.destination}\n")

    by_address = ops("pod.status", "--host", pod.destination, "--json")
    by_profile = ops("pod.status", "--host", "gpu-box", "--json")
    by_env = ops("pod.status", "--json", env={"OPS_DEFAULT_HOST": pod.alias})
    by_project_default = ops("pod.status", "--json", env={"OPS_PROJECT_ENV": _env_file(project, f"OPS_DEFAULT_HOST={pod.alias}")})

    for result in (by_address, by_profile, by_env, by_project_default):
        assert result.returncode == 0, result.stderr
        assert result.json["volume"]["mounted"] is True
    assert by_profile.json["host"] == "gpu-box"
    assert by_env.json["host"] == pod.alias
    assert pod.accepted_connections() == 4


@needs_isolation
def test_chained_tasks_share_one_connection(pod, ops):
    # (Invoke dedupes identical calls, so the second asks for JSON.)
    result = ops("pod.status", "--host", pod.alias, "pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0, result.stderr
    human, document = result.stdout.rstrip("\n").rsplit("\n", 1)
    assert human.startswith(f"{pod.alias}: OK")
    assert json.loads(document)["ok"] is True
    assert pod.accepted_connections() == 1
    assert pod.sessions() == 2


@needs_isolation
def test_human_output_is_a_short_table(pod, ops):
    result = ops("pod.status", "--host", pod.alias)

    assert result.returncode == 0
    assert result.stdout.startswith(f"{pod.alias}: OK")
    assert "/mnt: mounted, tmpfs" in result.stdout
    assert "tmux 3" in result.stdout
    assert len(result.stdout.splitlines()) < 15


@needs_isolation
def test_fake_gpus_are_listed_with_memory_and_utilization(pod_factory, ops):
    pod = pod_factory(gpus=[gpu(0, used_mib=40000, utilization_pct=97), gpu(1)])

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0
    assert result.json["gpus"] == [
        {"index": 0, "name": "NVIDIA A100-SXM4-80GB", "utilization_pct": 97, "memory_used_mib": 40000, "memory_total_mib": 81920},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "utilization_pct": 0, "memory_used_mib": 1, "memory_total_mib": 81920},
    ]


@needs_isolation
def test_a_broken_gpu_driver_is_a_warning_not_a_crash(pod_factory, ops):
    pod = pod_factory(gpus="driver-error")

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0
    assert result.json["gpus"] == []
    assert any("couldn't communicate with the NVIDIA driver" in w for w in result.json["warnings"])


@needs_isolation
def test_missing_tmux_and_curl_are_problems(pod_factory, ops):
    pod = pod_factory(hide_tools=("tmux", "curl"))

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 1
    assert result.json["tools"]["tmux"]["present"] is False
    assert result.json["tools"]["curl"]["present"] is False
    problems = " ".join(result.json["problems"])
    assert "tmux is not installed" in problems and "curl is not installed" in problems


@needs_isolation
def test_tmux_sessions_on_the_pod_are_listed(pod, ops):
    pod.sh("tmux new-session -d -s vllm 'sleep 600' && tmux new-session -d -s pilots 'sleep 600'")

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert sorted(result.json["tmux_sessions"]) == ["pilots", "vllm"]


def _env_file(project, text):
    path = project / "project.env"
    path.write_text(text + "\n")
    return str(path)


# ---------------------------------------------------------------- disk space and filesystem type


def _fill_volume(pod, leave_bytes=0):
    """Fill the pod's tmpfs volume with dd, then free leave_bytes again (a real full disk)."""
    pod.sh("dd if=/dev/zero of=/mnt/fill bs=1M 2>/dev/null; sync", check=False)
    if leave_bytes:
        pod.sh(f"truncate -s -{leave_bytes} /mnt/fill")


@needs_isolation
def test_a_full_volume_is_a_warning_naming_its_free_bytes(pod, ops):
    _fill_volume(pod)

    result = ops("pod.status", "--host", pod.alias, "--json")
    human = ops("pod.status", "--host", pod.alias)

    assert result.returncode == 0, result.stdout  # a warning: the pod is still usable for reading
    assert result.json["volume"]["free_bytes"] == 0
    assert any(w.startswith("volume /mnt is full: 0 bytes") for w in result.json["warnings"]), result.json["warnings"]
    assert "warning: volume /mnt is full: 0 bytes" in human.stdout


@needs_isolation
def test_a_nearly_full_volume_warns_with_what_is_left(pod, ops):
    _fill_volume(pod, leave_bytes=4 * 1024 * 1024)  # 4 MiB of 256 MiB: under 5%

    result = ops("pod.status", "--host", pod.alias, "--json")

    free = result.json["volume"]["free_bytes"]
    assert 0 < free < 256 * 1024 * 1024 * 0.05
    assert [w for w in result.json["warnings"] if w.startswith("volume /mnt is")] == [
        next(w for w in result.json["warnings"] if f": {free} bytes (" in w)]


@needs_isolation
def test_a_volume_with_room_to_spare_is_not_warned_about(pod, ops):
    _fill_volume(pod, leave_bytes=64 * 1024 * 1024)  # a quarter free

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.returncode == 0
    assert not any(w.startswith("volume ") for w in result.json["warnings"])


@needs_isolation
def test_the_filesystem_type_is_the_kernels_name_also_for_a_plain_directory(pod_factory, ops):
    pod = pod_factory(volume=False)  # /mnt is a folder of the pod's root filesystem
    kernel_name = pod.sh("findmnt -n -o FSTYPE --target /mnt").stdout.strip()

    result = ops("pod.status", "--host", pod.alias, "--json")

    assert result.json["volume"]["fstype"] == kernel_name
    assert "/" not in kernel_name  # not `stat -f`'s "ext2/ext3"
