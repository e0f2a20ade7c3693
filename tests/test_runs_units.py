"""The pod-side run tool's pure parts, and its agreement with the laptop side."""

import pytest

from ops_tasks.operations.run_config import FAILURE_CLASSES
from ops_tasks.secrets import is_secret_name
from ops_tasks.runtime import contract as rt_contract
from ops_tasks.runtime import files as rt_files
from ops_tasks.runtime import rundir as rt_rundir
from ops_tasks.runtime import store as rt_store


@pytest.mark.parametrize("name, secret", [
    ("WANDB_API_KEY", True), ("HF_TOKEN", True), ("OPENAI_API_KEY", True), ("MY_PASSWORD", True), ("db_pass", True),
    ("DB_PASS", True), ("CREDENTIALS", True), ("aws_secret_access_key", True), ("github_token", True),
    ("PATH", False), ("SEED", False), ("HF_HOME", False), ("CUDA_VISIBLE_DEVICES", False), ("LR", False)])
def test_secret_env_names_are_one_rule_on_both_sides(name, secret):
    # One function (runtime.contract.is_secret): what the pod keeps out of files the laptop masks.
    assert is_secret_name is rt_contract.is_secret
    assert rt_contract.is_secret(name) is secret, name


def test_every_failure_class_the_pod_writes_can_be_named_in_retry_on():
    # The states' agreement is tests/test_run_states.py's.
    classes = {name for name, _ in rt_rundir.FAILURE_PATTERNS} | {"timeout", "stalled", "killed", "no_summary",
                                                             "bad_summary", "summary_not_ok", "exit_nonzero",
                                                             "lost", "unschedulable", "secrets_missing", "bad_output"}
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
    # wandb's current wording when no key is found
    ("wandb.errors.errors.UsageError: No API key configured. Use `wandb login` to log in.", 1, "auth"),
    ("wandb.errors.UsageError: api_key not configured (no-tty). call wandb.login(key=[your_api_key])", 1, "auth"),
    # the command itself is wrong: usage, not data
    ("usage: train.py [-h]\ntrain.py: error: unrecognized arguments: --lr=3e-4", 2, "usage"),
    ("python3: can't open file '/repo/trian.py': [Errno 2] No such file or directory", 2, "usage"),
    ("bash: line 1: trainer: command not found", 127, "usage"),
])
def test_failure_classes_read_the_last_error(log, code, expected):
    assert rt_rundir.failure_class(code, log) == expected


@pytest.mark.parametrize("command, log, expected", [
    ("./run_eval.sh --n 10", "bash: line 1: ./run_eval.sh: No such file or directory", "usage"),
    ("python3 -u scripts/train.py", "python3: can't open file 'scripts/train.py': [Errno 2] No such file or directory",
     "usage"),
    ("python3 train.py --data data/train.bin",
     "FileNotFoundError: [Errno 2] No such file or directory: 'data/train.bin'", "data"),
    ("uv run eval.py", "FileNotFoundError: [Errno 2] No such file or directory: 'eval.py'", "usage"),
    ("python3 run_all.py", '  File "/usr/lib/python3.11/subprocess.py", line 1901, in _execute_child\n'
     "    raise child_exception_type(errno_num, err_msg, err_filename)\n"
     "FileNotFoundError: [Errno 2] No such file or directory: 'vf-eval'", "usage"),
    ("python3 run_all.py", '  File "/repo/run_all.py", line 3, in <module>\n    open("data/x.jsonl")\n'
     "FileNotFoundError: [Errno 2] No such file or directory: 'data/x.jsonl'", "data"),
])
def test_a_missing_file_is_usage_when_it_is_the_commands_own_program_else_data(command, log, expected):
    assert rt_rundir.failure_class(1, log, command) == expected


def test_a_state_nobody_stands_behind_is_lost():
    queued = {"run_id": "a", "state": "queued"}
    running = {"run_id": "a", "state": "running"}
    assert rt_rundir.effective_state(queued, supervisor_alive=True, waiting={"a"}) == "queued"
    assert rt_rundir.effective_state(queued, supervisor_alive=True, waiting=set()) == "lost"
    assert rt_rundir.effective_state(running, supervisor_alive=False, waiting={"a"}) == "lost"
    assert rt_rundir.effective_state({"run_id": "a", "state": "succeeded"}, False, set()) == "succeeded"


def test_archiving_keeps_every_attempt(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "stdout.log").write_text("first")
    assert rt_rundir.archive_attempt(str(run_dir)) == 1
    (run_dir / "stdout.log").write_text("second")
    assert rt_rundir.archive_attempt(str(run_dir)) == 2
    assert (run_dir / "attempts" / "1" / "stdout.log").read_text() == "first"
    assert (run_dir / "attempts" / "2" / "stdout.log").read_text() == "second"
    assert rt_rundir.archive_attempt(str(run_dir)) is None  # nothing left to keep


def test_a_summary_the_command_wrote_is_never_overwritten(tmp_path):
    (tmp_path / "summary.json").write_text('{"ok": true, "avg_reward": 0.5}')
    rt_rundir.write_missing_summary(str(tmp_path), "r", {"state": "failed"})
    assert (tmp_path / "summary.json").read_text() == '{"ok": true, "avg_reward": 0.5}'


@pytest.mark.parametrize("root", ["/mnt/pod_artifacts/outputs", "/workspace/out", "/root/project/outputs",
                                  "/tmp/pytest-of-x/volume/outputs", "/mnt/data/ssh_logs"])
def test_an_outputs_root_below_the_volume_or_a_home_is_accepted(root):
    assert rt_contract.outputs_root_problem(root, home="/root") is None


@pytest.mark.parametrize("root, why", [
    ("/", "top"), ("/mnt", "top"), ("/tmp", "top"), ("/etc", "system"), ("/usr/local/out", "system"),
    ("/var/lib/x", "system"), ("/root", "home"), ("/home/alice", "home"), ("/srv/u", "system"),
    ("/mnt/.ssh/out", "keys"), ("/mnt/ssh", "keys"), ("/root/.ssh", "keys"), ("out", "absolute"), (None, "absolute"),
    ("//etc", "system"), ("/mnt/x/../../etc", "system"),
])
def test_an_outputs_root_that_is_no_place_for_runs_says_why(root, why):
    problem = rt_contract.outputs_root_problem(root, home="/root")
    assert problem and why in problem, problem


@pytest.mark.parametrize("run_id, run_dir", [
    ("a/b", "/mnt/o/a/b"), ("..", "/mnt/o/.."), (".hidden", "/mnt/o/.hidden"), ("r", "/mnt/o"), ("r", "/mnt/other/r"),
    ("r", "/mnt/o/.ops"), ("r", "/mnt/o/.ops/queue"), ("r", "relative/r"), ("r", "/mnt/o/../o2/r"), (["r"], "/mnt/o/r"),
])
def test_a_run_outside_its_outputs_root_is_refused(run_id, run_dir):
    with pytest.raises(rt_store.BadRequest):
        rt_store.check_run(run_id, run_dir, "/mnt/o")


def test_a_run_below_its_outputs_root_is_taken():
    assert rt_store.check_run("r1", "/mnt/o/sweep/r1", "/mnt/o") == ("r1", "/mnt/o/sweep/r1")


@pytest.mark.parametrize("text, ok, klass", [
    ('{"ok": true}', True, None), ('{"avg_reward": 1}', True, None), ('{"ok": false}', False, "summary_not_ok"),
    ('{"ok": 0}', False, "bad_summary"), ('{"ok": "false"}', False, "bad_summary"), ('{"ok": 1}', False, "bad_summary"),
    ('{"ok": null}', False, "bad_summary"), ("[1]", False, "bad_summary"), ("not json", False, "bad_summary"),
])
def test_a_summary_ok_must_be_a_json_boolean(tmp_path, text, ok, klass):
    (tmp_path / "summary.json").write_text(text)
    assert rt_rundir.summary_verdict(str(tmp_path))[:2] == (ok, klass)


@pytest.mark.parametrize("status", [[1], "x", 3, {"state": [1]}, {"state": "exploded"}, {"state": "failed", "attempt": "2"},
                                    {"state": "running", "pid": True}, {"state": "failed", "finished": "soon"}])
def test_a_status_of_the_wrong_shape_is_named(status):
    assert rt_rundir.status_shape_problem(status)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    path.write_text('{"old": 1}')

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rt_files.os, "fsync", full)
    with pytest.raises(OSError):
        rt_files.write_json(str(path), {"new": 1})
    assert path.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["status.json"]
