"""The shared rules of runtime/contract.py and runtime/keys.py, asked directly (no pod, no config file):
what the pod applies to a request or a queue entry that the laptop's own parsing would never send it,
and the contract helpers both sides use for the report and runs.status. Each test pins a behaviour a
mutation run of the two modules showed no fast test held."""

import re

import pytest

from ops_tasks.runtime import contract, keys
from ops_tasks.runtime.contract import (finite_number, masked_env, natural_key, number, outputs_root_problem,
                                        summary_leaves)
from ops_tasks.runtime.keys import check_expect, check_local_dir, needed_contract, run_problem, value_problem

# -- outputs roots


def test_an_outputs_root_holding_a_nul_byte_is_refused():
    # A root no file system takes is refused, not handed to mkdir on the pod.
    assert outputs_root_problem("/mnt/out\0puts") is not None


def test_a_root_written_with_a_double_leading_slash_is_judged_as_the_folder_it_names():
    # POSIX keeps '//' at the start of a path: '//etc/ops' is still /etc, '//mnt' still the volume itself.
    assert outputs_root_problem("//etc/ops") == "lies in the system folder /etc"
    assert outputs_root_problem("//mnt").startswith("is / or a folder at the top")
    assert outputs_root_problem("//mnt/outputs") is None


def test_root_and_the_users_own_home_are_refused_as_home_directories():
    # The refusal says why: a home directory (keys, dotfiles), wherever that home is.
    assert outputs_root_problem("/root") == "is a home directory"
    assert outputs_root_problem("/data/users/bob", home="/data/users/bob/") == "is a home directory"
    assert outputs_root_problem("/data/users/bob/outputs", home="/data/users/bob") is None


def test_a_root_inside_a_folder_of_keys_names_that_folder():
    # The user is told which folder of keys the root lies in.
    assert outputs_root_problem("/mnt/data/.ssh/out") == "lies in a folder of keys or settings (.ssh)"


# -- secrets


def test_secret_values_are_masked_and_the_others_kept():
    # What a run's record shows: secrets as ***, everything else as given.
    assert masked_env({"HF_TOKEN": "hf_abc", "db_password": "pw", "PATH": "/bin"}) == {
        "HF_TOKEN": contract.MASK, "db_password": contract.MASK, "PATH": "/bin"}


# -- numbers, ordering and summary columns


def test_a_number_is_an_int_or_a_float_and_never_a_boolean_or_text():
    # A reward given as true or "1" is not counted as a score.
    assert number(2) == 2 and number(0.5) == 0.5
    assert number(True) is None and number("2") is None and number(None) is None


def test_a_finite_number_excludes_booleans_text_infinities_and_integers_past_any_float():
    # summary.json values that cannot be a column are left out, not shown as inf or crash the page.
    assert finite_number(3) == 3 and finite_number(-0.25) == -0.25
    for value in (True, False, "3", None, float("inf"), float("nan"), 10 ** 400):
        assert finite_number(value) is None, value


def test_names_sort_with_their_numbers_as_numbers_and_case_ignored():
    # Report rows and lm-eval tasks: Qwen3-0.6B < Qwen3-4B < Qwen3-32B, r2 < r10, numbers before words.
    assert sorted(["Qwen3-32B", "Qwen3-4B", "Qwen3-0.6B"], key=natural_key) == ["Qwen3-0.6B", "Qwen3-4B",
                                                                                 "Qwen3-32B"]
    assert sorted(["r10", "R1", "r2"], key=natural_key) == ["R1", "r2", "r10"]
    assert sorted(["b", "10", "A"], key=natural_key) == ["10", "A", "b"]
    assert natural_key("Run") == natural_key("run")
    assert sorted([10, 9], key=natural_key) == [9, 10]  # any value: its text


def test_summary_columns_are_its_finite_measurements_in_file_order_three_levels_deep():
    # runs.status's and the report's columns: what the run measured, named by its path.
    summary = {
        "ok": True, "run_id": "r1", "n": 5,  # who the run is: never a column
        "avg_reward": 0.5,
        "passed": True, "note": "7", "blown": float("inf"), "huge": 10 ** 400,  # not measurements
        "ops": {"elapsed_s": 12}, "run_metadata": {"seed": 1},  # objects that describe the run
        "last_eval": {"val": 2, "ok": 1, "deep": {"d3": 3, "deeper": {"d4": 4}}},
        "loss": 0.1,
    }
    assert summary_leaves(summary) == [("avg_reward", 0.5), ("last_eval.val", 2), ("last_eval.ok", 1),
                                       ("last_eval.deep.d3", 3), ("loss", 0.1)]


def test_summary_columns_stop_at_the_limit_and_skip_what_the_caller_shows_itself():
    # A table stays readable (the first `limit`), and the report's own columns are not shown twice.
    assert summary_leaves({"a": 1, "b": 2, "c": 3}, limit=2) == [("a", 1), ("b", 2)]
    assert summary_leaves({"x": {"p": 1, "q": 2}, "y": 3}, limit=2) == [("x.p", 1), ("x.q", 2)]
    assert summary_leaves({"acc": 0.9, "avg_reward": 0.5}, skip=("acc",)) == [("avg_reward", 0.5)]
    assert summary_leaves([1, 2]) == [] and summary_leaves(None) == []


# -- the key table's checks, as the pod applies them to what it is sent


def test_needed_contract_counts_the_keys_a_run_sets_and_only_those(monkeypatch):
    # A run asks for the supervisor its keys need: request fields and keys left null never raise it.
    assert needed_contract({"command": "x", "cwd": "/repo", "config": {"lr": 0.1}, "identity": {}}) == 2
    newer = keys.BY_NAME["command"]._replace(name="future_key", since=contract.CONTRACT_VERSION + 1)
    monkeypatch.setitem(keys.BY_NAME, "future_key", newer)
    assert needed_contract({"command": "x", "future_key": 1}) == contract.CONTRACT_VERSION + 1
    assert needed_contract({"command": "x", "future_key": None}) == 2


@pytest.mark.parametrize("key, value, start, got", [
    ("env", ["HF_HOME=/x"], "env must be an object of NAME: value", "got list"),
    ("env", {"SEED": 1}, "env.SEED must be a string", "got int"),
    ("meta", ["a"], "meta must be an object", "got list"),
    ("retry_backoff", True, "retry_backoff must be a duration", "got True"),
    ("retry_backoff", "10s", "retry_backoff must be a duration", "got '10s'"),
    ("metrics_from_log", 5, "metrics_from_log must be a regex with named groups", "got 5"),
    ("stop_grace", True, "stop_grace must be a duration", "got True"),
    ("summary_timeout", "5m", "summary_timeout must be a duration", "got '5m'"),
    ("gpus", True, "gpus must be a whole number >= 0", "got True"),
    ("retries", "2", "retries must be a whole number >= 0", "got '2'"),
])
def test_a_bad_value_sent_to_the_pod_is_refused_naming_the_key_and_what_it_got(key, value, start, got):
    # A hand-edited entry or another client's request is refused with a reason, never a crash.
    problem = value_problem(key, value)
    assert problem is not None and problem.startswith(start) and problem.endswith(got), problem


def test_a_duration_of_a_second_or_less_is_a_duration():
    # "more than 0 seconds": a 1 s grace or a half-second sync interval is taken as written.
    assert value_problem("stop_grace", 1) is None
    assert value_problem("sync_interval", 0.5) is None
    assert value_problem("stop_grace", 0) is not None


def test_retry_backoff_may_be_zero():
    # "a duration of 0 or more seconds": retry at once.
    assert value_problem("retry_backoff", 0) is None
    assert value_problem("retry_backoff", 0.5) is None


def test_the_metrics_from_log_example_in_the_refusal_works_as_written():
    # The user may copy the suggested regex: it compiles and reads iter and loss.
    problem = value_problem("metrics_from_log", "loss ([0-9.]+)")
    example = re.search(r"e\.g\. '(.*)', got", problem).group(1)
    match = re.search(example, "iter 12: loss 0.25")
    assert match and match.groupdict() == {"iter": "12", "loss": "0.25"}


@pytest.mark.parametrize("expect, fragment", [
    ("files", "expect must be an object of files, log_matches, log_not_matches, wandb_synced, got str"),
    ({"files": "summary.json"}, "expect.files must be a list of paths"),
    ({"files": ["   "]}, "expect.files must be a list of paths"),
    ({"files": [5]}, "expect.files must be a list of paths"),
    ({"files": ["out\nput.json"]}, "expect.files: 'out\\nput.json' must be a path inside the run directory"),
    ({"log_matches": "done"}, "expect.log_matches must be a regex or a list of regexes"),
    ({"log_matches": []}, "expect.log_matches must be a regex or a list of regexes"),
    ({"log_matches": [""]}, "expect.log_matches must be a regex or a list of regexes"),
    ({"log_matches": [7]}, "expect.log_matches must be a regex or a list of regexes"),
    ({"log_not_matches": ["("]}, "expect.log_not_matches '(' does not compile"),
    ({"log_not_matches": []}, "expect.log_not_matches must be a regex or a list of regexes"),
])
def test_an_expect_the_pod_cannot_judge_by_is_refused_naming_its_part(expect, fragment):
    # An expect is refused as a whole, naming the part that is wrong, before any run is judged by it.
    problem = check_expect(expect)
    assert problem is not None and problem.startswith(fragment), problem


@pytest.mark.parametrize("local_dir", ["/tmp/ops/../runs", "/tmp/ops\nruns"])
def test_a_local_dir_with_dot_dot_or_a_control_character_is_refused(local_dir):
    # local_sync's folder on the pod's disk is a plain absolute path: what it says is where runs write.
    assert check_local_dir(local_dir) == "local_dir must be an absolute path on the pod's own disk, got %r" % (
        local_dir,)


def test_an_unknown_field_is_named_in_the_singular_or_the_plural():
    # The supervisor names what it does not know, one field or several (sorted).
    one = run_problem({"command": "x", "lr_typo": 1})
    assert one.startswith("it holds a field this supervisor (contract %d) does not know: lr_typo;"
                          % contract.CONTRACT_VERSION), one
    two = run_problem({"command": "x", "zeta": 1, "alpha": 2})
    assert two.startswith("it holds fields this supervisor (contract %d) does not know: alpha, zeta;"
                          % contract.CONTRACT_VERSION), two


def test_local_sync_needs_both_its_interval_and_its_folder_and_a_volume_run_neither():
    # A local_sync run missing either setting is refused; an ordinary run needs neither.
    need = "out_mode local_sync needs sync_interval and local_dir"
    assert run_problem({"command": "x", "out_mode": "local_sync"}) == need
    assert run_problem({"command": "x", "out_mode": "local_sync", "sync_interval": 60}) == need
    assert run_problem({"command": "x", "out_mode": "local_sync", "local_dir": "/tmp/ops-runs"}) == need
    assert run_problem({"command": "x", "out_mode": "local_sync", "sync_interval": 60,
                        "local_dir": "/tmp/ops-runs"}) is None
    assert run_problem({"command": "x"}) is None
    assert run_problem({"command": "x", "out_mode": "volume"}) is None


def test_runs_in_a_repo_synced_by_workdir_need_a_supervisor_that_reads_the_record():
    # An older supervisor knows git only: a pinned run in a pod.sync --workdir repo would fail there
    # as "not a git repository" where this one accepts the sync: such runs ask it to hand over.
    from ops_tasks.runtime.submit import needed_for

    runs = [{"run_id": "r", "command": "true", "cwd": "/w"}]
    git_repo = {"/w": {"commit": "a" * 40, "branch": "main", "dirty": False, "origin": None}}
    synced = {"/w": dict(git_repo["/w"], workdir={"repo": "/w", "change": None, "files": 3})}
    assert needed_for(runs, git_repo) == keys.needed_contract(runs[0]) < contract.WORKDIR_CONTRACT
    assert needed_for(runs, synced) == contract.WORKDIR_CONTRACT <= contract.CONTRACT_VERSION
    assert needed_for(runs, {}) == keys.needed_contract(runs[0])
