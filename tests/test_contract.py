"""One contract, written once (docs/ARCHITECTURE.md, "The pod runtime"): the rules laptop and pod
share live in ops_tasks/runtime and nowhere else; the runtime is the standard library only and
Python 3.8; every run key is a row of one table whose checks both sides apply, and whose
reference the docs show."""

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations import run_config
from ops_tasks.operations.runtime import POD_PACKAGE, runtime_archive
from ops_tasks.runtime import contract, keys
from ops_tasks.settings import resolve_profile

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ops_tasks"
RUNTIME = PACKAGE / "runtime"
LAPTOP_MODULES = sorted(p for p in PACKAGE.rglob("*.py") if RUNTIME not in p.parents)
SHARED_MODULES = (contract, keys)


def top_level_names(path: Path) -> set:
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def shared_names() -> set:
    """The public names the contract and the key table define (not what they import)."""
    names = set()
    for module in SHARED_MODULES:
        names |= {n for n in top_level_names(Path(module.__file__)) if not n.startswith("_")}
    return names - {"Key"}


def literal_values(path: Path):
    """(line, value) of every tuple/list/set literal of plain constants and every re.compile
    pattern in a module: where a copy of a shared rule would hide under another name."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 3:
            try:
                yield node.lineno, frozenset(ast.literal_eval(node))
            except (ValueError, TypeError, SyntaxError):
                continue
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "compile" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            yield node.lineno, node.args[0].value


def shared_values() -> dict:
    """{value: name} of the contract's collections and patterns."""
    values = {}
    for module in SHARED_MODULES:
        for name in shared_names():
            value = getattr(module, name, None)
            if isinstance(value, (tuple, frozenset, set, dict)) and len(value) >= 3 \
                    and all(isinstance(v, str) for v in value):
                values[frozenset(value)] = name
            elif isinstance(value, re.Pattern):
                values[value.pattern] = name
    return values


def test_no_rule_shared_by_laptop_and_pod_is_written_twice():
    names, values = shared_names(), shared_values()
    assert {"STATES", "RUN_ID", "STOP_SIGNALS", "EXPECT_KEYS", "OUT_MODES", "SUMMARY_FRAMEWORKS", "SECRET_NAMES",
            "FAILURE_CLASSES", "natural_key", "summary_leaves", "RUN_KEYS", "WORKLOAD_KEYS"} <= names
    twice = []
    for path in LAPTOP_MODULES:
        shown = path.relative_to(ROOT)
        twice += [f"{shown}: defines {name}" for name in sorted(top_level_names(path) & names)]
        twice += [f"{shown}:{line}: a copy of {values[value]}" for line, value in literal_values(path)
                  if value in values]
    assert not twice, "\n".join(twice)


def test_the_duplicate_finder_finds_a_copy_under_another_name(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('SIGNALS = ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2")\n'
                       'ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")\n'
                       'def natural_key(text):\n    return text\n')
    values = shared_values()
    found = {values[value] for _, value in literal_values(planted) if value in values}
    assert found == {"STOP_SIGNALS", "RUN_ID"}
    assert top_level_names(planted) & shared_names() == {"natural_key"}


# ---------------------------------------------------------------- the runtime travels alone

NEWER_THAN_3_8 = re.compile(r"\.(removeprefix|removesuffix)\(|functools\.cache\b|\bfrom functools import cache\b|"
                            r"\bzoneinfo\b|\bgraphlib\b|math\.lcm|\bstr \| |\bdict\[|\blist\[|\btuple\[")


@pytest.mark.parametrize("path", sorted(RUNTIME.glob("*.py")), ids=lambda p: p.name)
def test_the_runtime_is_stdlib_only_relative_imports_and_python_3_8(path):
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # a 3.9+ syntax is a SyntaxError here
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            top = node.module.split(".")[0]
        elif isinstance(node, ast.Import):
            top = node.names[0].name.split(".")[0]
        else:
            continue
        allowed = top in sys.stdlib_module_names or (path.name == "boot.py" and top == POD_PACKAGE)
        assert allowed, f"{path.name}:{node.lineno} imports {top}: the pod runtime is the standard library only"
    newer = [(n, line) for n, line in enumerate(source.splitlines(), 1) if NEWER_THAN_3_8.search(line)]
    assert not newer, f"{path.name}: Python 3.9+ only: {newer}"


def test_the_archive_is_the_package_byte_for_byte_and_named_by_its_hash():
    import hashlib
    import io
    import tarfile

    runtime_id, archive = runtime_archive()
    assert runtime_id == hashlib.sha256(archive).hexdigest()[:16]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    assert members == {f"{POD_PACKAGE}/{p.name}": p.read_bytes() for p in RUNTIME.glob("*.py")}
    runtime_archive.cache_clear()
    assert runtime_archive() == (runtime_id, archive)  # the same sources, the same bytes: one id per version


# ---------------------------------------------------------------- one table of run keys

# A value each checked key refuses, as a config would say it.
BAD = {"command": "", "env": {"A": ["x"]}, "gpus": -1, "timeout": -5, "stall_timeout": "soon", "retries": -1,
       "retry_on": ["flaky"], "retry_backoff": -1, "summary_from": "vf-eval", "summary": "exitcode", "summary_metric": "",
       "summary_timeout": 0, "stop_signal": "STOP", "stop_grace": -3, "metrics_from_log": "loss ([\\d.]+)",
       "meta": ["a"], "expect": {"file": ["x"]}, "expect_commit": "main", "out_mode": "s3",
       "sync_interval": 0, "local_dir": "/etc/runs"}
# What the pod is sent for it (a laptop that skipped its own checks).
SENT_BAD = dict(BAD, env={"A": 1}, timeout=-5.0, stall_timeout=-1.0, retry_backoff=-1.0, summary_timeout=0, stop_grace=-3.0,
                sync_interval=0)


def load_one(tmp_path, **run):
    path = tmp_path / "runs.json"
    base = {"run_id": "r", "command": "true"}
    if run.get("sync_interval") is not None or run.get("local_dir") is not None:
        base["out_mode"] = "local_sync"
    path.write_text(json.dumps({"remote_repo": "/root", "runs": [dict(base, **run)]}))
    return run_config.load_submission(path, profile=resolve_profile({}, "local", ROOT))


def test_every_checked_key_has_a_bad_value_here():
    assert set(BAD) == {key.name for key in keys.RUN_KEYS if key.check is not None}


@pytest.mark.parametrize("name", sorted(BAD))
def test_laptop_and_pod_refuse_the_same_bad_value_of_each_key(tmp_path, name):
    with pytest.raises(ConfigError, match=re.escape(name)):
        load_one(tmp_path, **{name: BAD[name]})
    sent = load_one(tmp_path).runs[0].to_dict()
    if name in ("sync_interval", "local_dir"):
        sent.update(out_mode="local_sync", sync_interval=60.0, local_dir="/tmp/ops-runs")
    sent[name] = SENT_BAD[name]
    problem = keys.run_problem(sent)
    assert problem and name in problem, problem


def test_a_run_the_laptop_takes_the_pod_takes_whole(tmp_path):
    good = {"label": "l", "env": {"A": "1", "HF_TOKEN": "hf_x"}, "gpus": 0, "timeout": "1h", "retries": 2,
            "retry_on": ["oom"], "retry_backoff": "5s", "summary_from": "lm_eval", "summary_metric": "acc,none",
            "summary_timeout": "2m", "stop_signal": "sigint", "stop_grace": 3, "metrics_from_log": "(?P<loss>\\d)",
            "meta": {"team": "x"}, "expect": {"log_matches": "done", "files": ["out/*.pt"], "wandb_synced": False},
            "expect_commit": "abcdef1", "out_mode": "local_sync", "sync_interval": "30s", "local_dir": "/scratch/r"}
    sent = load_one(tmp_path, **good).runs[0].to_dict()
    assert keys.run_problem(sent) is None
    assert sent["stop_signal"] == "INT" and sent["expect"]["log_matches"] == ["done"]


def test_the_pod_refuses_an_env_name_no_shell_could_hold():
    assert "env" in keys.run_problem({"run_id": "r", "env": {"A B": "1"}})


def test_a_field_the_contract_does_not_know_is_named():
    sent = {"run_id": "r", "run_dir": "/mnt/o/r", "command": "true", "expect_gpu_hours": 1, "zz": 2}
    assert "expect_gpu_hours, zz" in keys.run_problem(sent)
    assert keys.unknown_fields(dict(sent, _file="/q")) == ["expect_gpu_hours", "zz"]


def test_the_laptops_key_sets_are_the_tables():
    assert run_config.RESERVED == keys.RESERVED == frozenset(k.name for k in keys.RUN_KEYS)
    assert set(run_config.WORKLOAD_KEYS) <= set(run_config.TOP_LEVEL_KEYS)
    assert "expect" in run_config.NOT_IDENTITY and "command" not in run_config.NOT_IDENTITY


def test_the_key_reference_is_made_from_the_table():
    shown = (ROOT / "docs" / "reference" / "run-keys.md").read_text()
    assert shown == keys.reference_markdown(), "docs/reference/run-keys.md is stale: run `make docs`"
    for key in keys.RUN_KEYS:
        assert f"| {key.name} |" in shown


def test_the_runtime_refuses_a_request_of_another_contract(tmp_path):
    import subprocess

    from ops_tasks.runtime import python_argv

    request = {"contract": contract.CONTRACT_VERSION + 1, "outputs_dir": str(tmp_path / "out")}
    done = subprocess.run(python_argv(sys.executable, "commands", "main", "status"), input=json.dumps(request) + "\n",
                          capture_output=True, text=True, check=True)
    answer = json.loads(done.stdout)
    assert answer["bad_input"] and f"contract {contract.CONTRACT_VERSION}" in answer["error"], answer
    assert not (tmp_path / "out").exists()  # refused before anything


def test_a_hand_over_binds_while_its_successor_starts_or_waits_and_never_after(tmp_path):
    import time

    from ops_tasks.runtime.handover import HANDOVER_START_S, handover_asked, successor_lock
    from ops_tasks.runtime.store import Store

    store = Store(str(tmp_path / "outputs"), create=True)
    newer = contract.CONTRACT_VERSION + 1

    def asked(age):
        (tmp_path / "outputs" / ".ops" / "handover.json").write_text(
            json.dumps({"contract": newer, "asked_at": time.time() - age}))
        return handover_asked(store)

    assert asked(1) == newer  # just asked: its successor is being started
    assert asked(HANDOVER_START_S + 60) is None  # never met (the successor died): the queue is not held for ever
    waiting = successor_lock(store)
    assert waiting.acquire(blocking=False)
    try:
        assert asked(HANDOVER_START_S + 60) == newer  # a successor waits: however long it has been
    finally:
        waiting.release()
    (tmp_path / "outputs" / ".ops" / "handover.json").write_text(json.dumps({"contract": contract.CONTRACT_VERSION,
                                                                            "asked_at": time.time()}))
    assert handover_asked(store) is None  # not newer: nothing to hand over


def test_a_value_the_laptops_parsing_lets_through_is_still_refused_by_the_table(tmp_path):
    # timeout: "400d" parses as a duration; the key table bounds a run's budget where a profile's is.
    with pytest.raises(ConfigError, match="timeout must be a duration of more than 0 and at most 3.16224e"):
        load_one(tmp_path, timeout="400d")
    assert load_one(tmp_path, timeout="366d").runs[0].timeout == keys.LONGEST_BUDGET_S
    from ops_tasks.settings import PROFILE_RANGES

    assert PROFILE_RANGES["run_timeout"][1] == keys.LONGEST_BUDGET_S


@pytest.mark.parametrize("value, named", [
    ({"model": "m", "api_key": "sk-abc"}, "model_args.api_key"),
    ({"client": {"auth": {"hf_token": "hf_x"}}}, "model_args.client.auth.hf_token"),
    ([{"name": "a"}, {"password": "p"}], "model_args[1].password"),
    ("pretrained=m,api_key=sk-abc", "model_args (api_key=...)"),
    ("base_url=http://h/v1?token=abc", "model_args (token=...)"),
])
def test_a_secret_inside_a_structured_flag_is_refused_before_it_reaches_argv(tmp_path, value, named):
    # lm-eval's style: --model_args '{..."api_key": ...}' would put the key in ps, command.sh, the manifest.
    with pytest.raises(ConfigError, match=re.escape(named) + ".*pass it in env"):
        load_one(tmp_path, model_args=value)
    with pytest.raises(ConfigError, match="names a secret"):
        load_one(tmp_path, meta={"owner": {"api_key": "x"}})


def test_ordinary_structured_flags_stay_flags(tmp_path):
    spec = load_one(tmp_path, model_args={"model": "m", "max_tokens": 5, "tokenizer": "t"},
                    gen_kwargs="temperature=0,max_gen_toks=64").runs[0]
    assert spec.config["model_args"]["max_tokens"] == 5 and spec.config["gen_kwargs"] == "temperature=0,max_gen_toks=64"


def test_a_supervisor_that_has_not_yet_said_its_version_is_known_by_its_runtime(tmp_path):
    # A submission racing a supervisor's start (the lock taken, supervisor.json not yet written)
    # must not take it for a release before contract 2 and hand its queue over.
    import subprocess
    import time

    from ops_tasks.runtime import python_argv
    from ops_tasks.runtime.handover import runtime_of

    argv = python_argv(sys.executable, "commands", "main", "supervise", "{}")
    argv[2] = "import time; time.sleep(30)"  # a process with a supervisor's argv, that does nothing
    process = subprocess.Popen(argv)
    try:
        time.sleep(0.2)
        assert runtime_of(process.pid) == {"contract": contract.CONTRACT_VERSION,
                                           "tool": f"ops-tasks-runs/{contract.CONTRACT_VERSION}"}
    finally:
        process.kill()
        process.wait()
    assert runtime_of(os.getpid()) == {}  # anything else is not one of ours


def test_a_submission_racing_a_supervisors_start_sees_this_contract(tmp_path):
    # The lock is held, supervisor.json not written yet: live_supervisor asks the holder's runtime.
    import subprocess
    import time

    from ops_tasks.runtime import python_argv
    from ops_tasks.runtime.handover import live_supervisor
    from ops_tasks.runtime.store import Store

    store = Store(str(tmp_path / "outputs"), create=True)
    argv = python_argv(sys.executable, "commands", "main", "supervise", store.path("supervisor.lock"))
    argv[2] = ("import fcntl, sys, time; h = open(sys.argv[5], 'a'); fcntl.flock(h, fcntl.LOCK_EX); "
               "print('held', flush=True); time.sleep(30)")
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        live = live_supervisor(store)
        assert (live["pid"], live["contract"]) == (holder.pid, contract.CONTRACT_VERSION)
    finally:
        holder.kill()
        holder.wait()
