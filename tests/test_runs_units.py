"""The pod-side run tool's pure parts, and its agreement with the laptop side."""

import importlib.util

import pytest

from ops_tasks.operations.run_config import FAILURE_CLASSES
from ops_tasks.scripts import scripts_dir
from ops_tasks.secrets import is_secret_name


def load_pod_tool():
    spec = importlib.util.spec_from_file_location("ops_runs", scripts_dir() / "ops_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pod = load_pod_tool()


def test_both_sides_agree_on_secrets_and_failure_classes():
    # The states' agreement is tests/test_run_states.py's.
    for name in ("WANDB_API_KEY", "HF_TOKEN", "MY_PASSWORD", "db_pass", "CREDENTIALS", "PATH", "SEED", "HF_HOME"):
        assert pod.is_secret(name) == is_secret_name(name), name
    classes = {name for name, _ in pod.FAILURE_PATTERNS} | {"timeout", "stalled", "killed", "no_summary",
                                                             "bad_summary", "summary_not_ok", "exit_nonzero",
                                                             "lost", "unschedulable", "secrets_missing"}
    assert classes <= set(FAILURE_CLASSES)  # every class the pod writes can be named in retry_on


@pytest.mark.parametrize("log, code, expected", [
    ("Traceback\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", 1, "oom"),
    ("", 137, "oom"),
    ("RuntimeError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error", 1, "nccl"),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error.", 1, "auth"),
    ("wandb: ERROR api_key not configured (no-tty). call wandb login", 1, "auth"),
    ("step 401/2000 loss 1.2\nValueError: bad shape", 1, "exit_nonzero"),
    ("tokenizer authentication ok\nFileNotFoundError: data/train.bin", 1, "data"),
    ("CUDA out of memory (recovered, retrying with a smaller batch)\nFileNotFoundError: x", 1, "data"),
    ("", -9, "killed"),
    ("", 143, "killed"),
    ("ValueError: x", 2, "exit_nonzero"),
])
def test_failure_classes_read_the_last_error(log, code, expected):
    assert pod.failure_class(code, log) == expected


def test_a_state_nobody_stands_behind_is_lost():
    queued = {"run_id": "a", "state": "queued"}
    running = {"run_id": "a", "state": "running"}
    assert pod.effective_state(queued, supervisor_alive=True, waiting={"a"}) == "queued"
    assert pod.effective_state(queued, supervisor_alive=True, waiting=set()) == "lost"
    assert pod.effective_state(running, supervisor_alive=False, waiting={"a"}) == "lost"
    assert pod.effective_state({"run_id": "a", "state": "succeeded"}, False, set()) == "succeeded"


def test_archiving_keeps_every_attempt(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stdout.log").write_text("first")
    assert pod.archive_attempt(str(run_dir)) == 1
    (run_dir / "stdout.log").write_text("second")
    assert pod.archive_attempt(str(run_dir)) == 2
    assert (run_dir / "attempts" / "1" / "stdout.log").read_text() == "first"
    assert (run_dir / "attempts" / "2" / "stdout.log").read_text() == "second"
    assert pod.archive_attempt(str(run_dir)) is None  # nothing left to keep


def test_a_summary_the_command_wrote_is_never_overwritten(tmp_path):
    (tmp_path / "summary.json").write_text('{"ok": true, "avg_reward": 0.5}')
    pod.write_missing_summary(str(tmp_path), "r", {"state": "failed"})
    assert (tmp_path / "summary.json").read_text() == '{"ok": true, "avg_reward": 0.5}'
