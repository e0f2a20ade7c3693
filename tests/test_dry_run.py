"""--dry-run on every task: exit 0, no SSH connection, no request to Lium, nothing written
locally (project, HOME) and nothing changed on the pod."""

import os
import shlex
import subprocess

import pytest

from conftest import CHECKOUT, needs_isolation
from ops_tasks.testing.fake_lium import FakeLium
from test_validate import make_run

POD = "{pod}"  # replaced by the test pod's alias
SECRET = "wandb-canary-0c1d2e3f4a5b"

# Every task `ops --list` lists, with the flags a real call would need.
TASKS = {
    "report": [],
    "validate": [],
    "campaign": ["--host", POD, "--config", str(CHECKOUT / "configs" / "pilots.json")],
    "exec": ["--host", POD, "--command", "nvidia-smi -L", "--env", f"WANDB_API_KEY={SECRET}"],
    "artifacts.archive": ["--host", POD, "--run-id", "run-a"],
    "artifacts.fetch": ["--host", POD, "--run-id", "run-a"],
    "pod.bootstrap": ["--host", POD],
    "pod.down": ["--name", "ops-lium", "--yes"],
    "pod.ls": ["--gpu", "A100"],
    "pod.ps": [],
    "pod.status": ["--host", POD],
    "pod.sync": ["--host", POD, "--remote-repo", "/root/repo", "--branch", "main"],
    "pod.up": ["--gpu", "A100", "--yes"],
    "pod.wandb": ["--host", POD],
    "runs.balance": ["--host", POD],
    "runs.cancel": ["--host", POD, "--run-id", "run-a"],
    "runs.list": ["--host", POD],
    "runs.logs": ["--host", POD, "--run-id", "run-a"],
    "runs.resume": ["--host", POD],
    "runs.status": ["--host", POD, "--run-id", "run-a"],
    "runs.submit": ["--host", POD, "--config", str(CHECKOUT / "configs" / "pilots.json")],
    "runs.wait": ["--host", POD, "--run-id", "run-a"],
    "vllm.logs": ["--host", POD],
    "vllm.start": ["--host", POD, "--model-id", "Qwen/Qwen2.5-0.5B-Instruct"],
    "vllm.status": ["--host", POD],
    "vllm.stop": ["--host", POD],
    "vllm.tunnel": ["--host", POD],
    "ui": ["--host", POD],
}
ON_A_HOST = sorted(name for name, args in TASKS.items() if POD in args)
ELSEWHERE = sorted(name for name, args in TASKS.items() if POD not in args)  # Lium's API, or local files
# The same tasks on the `local` profile, where it applies (bootstrap and wandb prepare a rented pod).
ON_LOCAL = [name for name in ON_A_HOST if name not in ("pod.bootstrap", "pod.wandb")]


def files_under(*roots) -> dict:
    """Every path under roots with its size and mtime: what a dry run must leave as it was."""
    found = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                path = os.path.join(folder, name)
                info = os.lstat(path)
                found[path] = (info.st_size, info.st_mtime_ns)
    return found


def pod_files(pod) -> str:
    """Everything on the pod's volume and in its home, with sizes and mtimes."""
    return pod.sh("find /mnt ~ -printf '%p %s %T@\\n' | sort").stdout


def with_host(task: str, host: str) -> list:
    return [host if arg == POD else arg for arg in TASKS[task]]


def test_every_listed_task_is_covered(ops):
    listing = ops("--list").stdout.splitlines()
    listed = [line.split()[0] for line in listing if line.startswith("  ") and not line.startswith("   ")]
    assert sorted(listed) == sorted(TASKS)


@pytest.fixture
def fake_lium():
    api = FakeLium().start()
    yield api
    api.stop()


@pytest.fixture
def dry_ops(ops, client, project, fake_lium):
    """`ops <task> --dry-run` with everything a real call would reach in place; asserts exit 0,
    no request to Lium, no secret printed, and nothing written in the project or HOME."""
    make_run(project / "artifacts" / "pod_logs", "run-a")
    env = {**fake_lium.env(), "XDG_CACHE_HOME": str(client.home / ".cache"), "WANDB_API_KEY": SECRET}

    def run(task, *args):
        before = files_under(project, client.home)
        result = ops(task, *args, "--dry-run", env=env)
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert "Traceback" not in result.stderr and SECRET not in result.stdout + result.stderr
        assert files_under(project, client.home) == before
        assert fake_lium.requests == []
        return result

    return run


@needs_isolation
@pytest.mark.parametrize("task", ON_A_HOST)
def test_a_dry_run_on_a_pod_contacts_nothing_and_writes_nothing(task, pod, dry_ops):
    on_pod = pod_files(pod)

    result = dry_ops(task, *with_host(task, pod.alias))

    assert "dry run" in result.stdout
    assert pod.accepted_connections() == 0 and pod.sessions() == 0
    assert pod_files(pod) == on_pod


@pytest.mark.parametrize("task", ELSEWHERE)
def test_a_dry_run_of_a_task_without_a_host_writes_nothing(task, dry_ops):
    dry_ops(task, *TASKS[task])


@pytest.mark.parametrize("task", ON_LOCAL)
def test_a_dry_run_on_the_local_profile_creates_no_volume_folder(task, dry_ops, project):
    dry_ops(task, *with_host(task, "local"))

    assert not (project / ".local-pod").exists()


@needs_isolation
def test_fetch_dry_run_on_a_remote_pod_records_the_rsync_it_would_run(pod, ops, project, client):
    pod.sh("mkdir -p /mnt/pod_artifacts/outputs/run-a && echo done > /mnt/pod_artifacts/outputs/run-a/stdout.log")

    result = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "run-a", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["dry_run"] is True and result.json["scripts"] == []
    [command] = result.json["commands"]
    assert command.startswith("rsync ") and f"{pod.alias}:/mnt/pod_artifacts/outputs/run-a" in command
    assert pod.accepted_connections() == 0
    assert not (project / "artifacts").exists()
    # The command recorded is the one a real fetch runs: run by hand, it fetches the run.
    (project / "artifacts" / "pod_logs").mkdir(parents=True)
    subprocess.run(shlex.split(command), cwd=project, env=client.env(), check=True, capture_output=True, timeout=60)
    assert (project / "artifacts" / "pod_logs" / "run-a" / "stdout.log").read_text() == "done\n"
    assert pod.accepted_connections() == 1


def test_fetch_dry_run_in_human_form_shows_the_command(pod, ops):
    result = ops("artifacts.fetch", "--host", pod.alias, "--run-id", "run-a", "--dry-run")

    assert result.returncode == 0, result.stderr
    first, command = result.stdout.strip().splitlines()
    assert first == f"# dry run: nothing contacted. Would run on this machine, for {pod.alias}:"
    assert command.startswith("rsync -a ")


@needs_isolation
def test_workdir_sync_dry_run_counts_what_it_would_send_and_contacts_nothing(pod, dry_ops, tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / ".gitignore").write_text("*.log\n")
    (folder / "eval.py").write_text("print(1)\n")
    (folder / "run.log").write_text("ignored, not counted\n")
    on_pod = pod_files(pod)

    result = dry_ops("pod.sync", "--host", pod.alias, "--remote-repo", "/root/repo", "--workdir", str(folder),
                     "--json")

    assert (result.json["workdir"]["files"], result.json["workdir"]["bytes"]) == (2, 6 + 9)
    [command] = result.json["commands"]
    assert command.startswith("rsync -a ") and command.endswith(f"{folder}/ {pod.alias}:/root/repo/")
    listing = next(arg for arg in shlex.split(command) if arg.startswith("--files-from="))
    assert not os.path.exists(listing.split("=", 1)[1])  # the list of files is written only to be sent
    assert pod.accepted_connections() == 0 and pod_files(pod) == on_pod
