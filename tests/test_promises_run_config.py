"""ops_tasks/operations/run_config.py's promises (README "Runs", "Config", "Rendering values";
docs/reference/run-keys.md), held by in-process calls (bench/mutmut_fast.py sees them): what a
user reads when a config is refused (the file, the run, the key and what is wrong), the values a
run receives (its command line, env, budgets, workload keys) and the defaults it gets unasked."""

import json
import shlex
import time
from datetime import datetime, timedelta, timezone

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations import run_config
from ops_tasks.operations.run_config import (
    expected_commit_flag,
    fill_placeholders,
    generate_run_id,
    key_role,
    load_submission,
    nested_secret,
    parse_duration,
    render_entrypoint,
    render_value,
    run_key_problem,
)
from ops_tasks.runtime.contract import FAILURE_CLASSES
from ops_tasks.settings import Profile, resolve_profile
from test_run_config import NOW, PROFILE, clean_env  # noqa: F401 (clean_env: its autouse fixture, here too)


def write(tmp_path, data, name="runs.json"):
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def load(tmp_path, data, profile=PROFILE, name="runs.json", **flags):
    return load_submission(write(tmp_path, data, name), profile=profile, now=NOW, **flags)


def one(tmp_path, defaults=None, **run):
    """The one run of a config of one run (run_id "r" unless given)."""
    return load(tmp_path, {"defaults": defaults or {}, "runs": [{"run_id": "r", **run}]}).runs[0]


def message(tmp_path, data, profile=PROFILE, name="runs.json", **flags):
    """The whole message a refused config shows (exit 2), the file's path written as FILE."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data, profile=profile, name=name, **flags)
    assert caught.value.exit_code == 2
    return str(caught.value).replace(str(tmp_path / name), "FILE")


def run_message(tmp_path, **run):
    """The message for a config whose one run (run_id "r", command "x" unless given) is refused."""
    return message(tmp_path, {"runs": [{"run_id": "r", "command": "x", **run}]})


# ---------------------------------------------------------------- reading the file


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe{}", "FILE: not UTF-8 text (byte 0)"),
    ('{"runs": [], "runs": []}', "FILE: key 'runs' appears twice in one JSON object"),
    ('{"runs": [{"run_id": "a", "command": "x", "n": NaN}]}', "FILE: invalid JSON: NaN is not a number"),
    ('{"runs": [{"run_id": "a", "command": "x", "n": -Infinity}]}', "FILE: invalid JSON: -Infinity is not a number"),
    ("[1]", "FILE: expected a JSON object at the top, got a list"),
    ('"x"', "FILE: expected a JSON object at the top, got a string"),
    ("3", "FILE: expected a JSON object at the top, got a number"),
    ("null", "FILE: expected a JSON object at the top, got null"),
    ('{"runs": [{"command": "x", "deep": ' + "[" * 32 + "]" * 32 + "}]}", "FILE: nested deeper than 32 levels"),
])
def test_a_file_that_is_no_config_is_refused_saying_why(tmp_path, content, expected):
    assert message(tmp_path, content) == expected


def test_the_file_itself_is_named_when_it_cannot_be_read(tmp_path):
    for name, expected in (("missing.json", "no such file"), ("folder.json", "is a directory, not a config file")):
        if name == "folder.json":
            (tmp_path / name).mkdir()
        with pytest.raises(ConfigError) as caught:
            load_submission(tmp_path / name, profile=PROFILE)
        assert str(caught.value) == f"{tmp_path / name}: {expected}" and caught.value.exit_code == 2
    with pytest.raises(ConfigError) as caught:
        load_submission(tmp_path / "runs.yaml", profile=PROFILE)
    assert str(caught.value) == f"{tmp_path / 'runs.yaml'}: a run config must be a .json or .csv file"


def test_nesting_up_to_the_limit_loads_and_a_byte_order_mark_is_no_error(tmp_path):
    depth_32 = '{"runs": [{"run_id": "a", "command": "x", "deep": ' + "[" * 29 + "]" * 29 + "}]}"
    assert load(tmp_path, depth_32).runs[0].config["deep"] == [[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    bom = b"\xef\xbb\xbf" + json.dumps({"runs": [{"run_id": "a", "command": "x"}]}).encode()
    assert [run.run_id for run in load(tmp_path, bom, name="RUNS.JSON").runs] == ["a"]


@pytest.mark.parametrize("top, expected", [
    ({"runs": [{"command": "x"}], "remotes_repo": "/r"},
     "FILE: unknown top-level key 'remotes_repo' (known: remote_repo, remote_outputs_dir, tmux_session, defaults, "
     "runs, runs_csv, campaign, summary_from, summary, summary_metric, summary_timeout, stop_signal, stop_grace, "
     "metrics_from_log, meta, expect, expect_commit, out_mode, sync_interval, local_dir)"),
    ({"remote_repo": 3, "runs": [{"command": "x"}]}, "FILE: remote_repo must be a string, got a number"),
    ({"remote_outputs_dir": ["/o"], "runs": [{"command": "x"}]}, "FILE: remote_outputs_dir must be a string, got a list"),
    ({"tmux_session": True, "runs": [{"command": "x"}]}, "FILE: tmux_session must be a string, got a boolean"),
    ({"runs_csv": {"f": 1}}, "FILE: runs_csv must be a string, got an object"),
    ({"defaults": [1], "runs": [{"command": "x"}]}, "FILE: defaults must be an object, got a list"),
    ({"runs": {"a": 1}}, "FILE: runs must be a non-empty list of objects, got an object"),
    ({}, "FILE: runs must be a non-empty list of objects, got null"),
    ({"runs": []}, "FILE: runs must be a non-empty list of objects"),
    ({"runs": [{"command": "x"}, 3]}, "FILE: run 1: expected an object, got a number"),
])
def test_the_shape_of_the_config_is_refused_naming_the_key(tmp_path, top, expected):
    assert message(tmp_path, top) == expected


# ---------------------------------------------------------------- CSV runs


@pytest.mark.parametrize("text, expected", [
    ("", "FILE: empty CSV (expected a header row)"),
    ("run_id,1bad\n", "FILE: column '1bad' is not a valid key (letters, digits and '_')"),
    ("run_id,seed,seed\n", "FILE: column 'seed' appears twice"),
    ("run_id,command\na,x,extra\n", "FILE line 2: 3 cells, header has 2"),
    ("run_id,command\n\n", "FILE: no runs (only a header row)"),
    ("run_id,command\na,x\nb," + "y" * 131073 + "\n", "FILE line 3: invalid CSV: field larger than field limit (131072)"),
])
def test_a_bad_csv_is_refused_naming_the_line(tmp_path, text, expected):
    assert message(tmp_path, text, name="sweep.csv") == expected


def test_csv_cells_are_typed_as_a_user_means_them(tmp_path):
    (tmp_path / "s.csv").write_text(
        " run_id , command,a,b,c,d,e,f,g,h,label\n"
        "\n"
        "r1,x,True,fAlse,-3,+0,.5,1e3,1.,007,12\n"
        "r2,x,truth,1.5e-2,1_0,0x1,-.5e+2,,-0,2e,\n")
    first, second = load_submission(tmp_path / "s.csv", profile=PROFILE, now=NOW).runs
    assert {key: first.config[key] for key in "abcdefgh"} == {
        "a": True, "b": False, "c": -3, "d": 0, "e": 0.5, "f": 1000.0, "g": 1.0, "h": "007"}
    assert first.label == "12" and first.command == "x"
    assert [type(first.config[key]) for key in "cdefg"] == [int, int, float, float, float]
    assert {key: second.config.get(key) for key in "abcdefgh"} == {
        "a": "truth", "b": 0.015, "c": "1_0", "d": "0x1", "e": -50.0, "f": None, "g": 0, "h": "2e"}
    assert "label" not in second.config  # an empty cell is no key at all
    mixed = load(tmp_path, {"runs": [{"run_id": "j", "command": "x"}], "runs_csv": "s.csv"})
    assert [run.run_id for run in mixed.runs] == ["j", "r1", "r2"]


def test_a_csv_with_old_mac_line_ends_loads_and_a_missing_one_is_named(tmp_path):
    (tmp_path / "s.csv").write_bytes(b"run_id,command\ra,x\rb,y\r")
    assert [run.command for run in load_submission(tmp_path / "s.csv", profile=PROFILE, now=NOW).runs] == ["x", "y"]
    assert message(tmp_path, {"runs_csv": "gone.csv"}) == f"{tmp_path / 'gone.csv'}: no such file"


def test_a_bad_csv_row_is_named_by_its_run_number_file_and_line(tmp_path):
    (tmp_path / "s.csv").write_text("run_id,command\nok,x\n\nbad id,x\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, {"runs": [{"run_id": "j", "command": "x"}], "runs_csv": "s.csv"})
    csv_path = tmp_path / "s.csv"
    assert str(caught.value).startswith(f"{tmp_path / 'runs.json'}: run 2 ({csv_path} line 4) ('bad id'): run_id must")


# ---------------------------------------------------------------- roots and the tmux session


def test_roots_are_normalised_and_a_bad_one_names_its_source(tmp_path):
    sub = load(tmp_path, {"runs": [{"run_id": "a", "command": "x"}]}, remote_repo="//repo/./x/", outputs_dir="/o//p/")
    assert (sub.remote_repo, sub.outputs_dir, sub.runs[0].run_dir) == ("/repo/x", "/o/p", "/o/p/a")
    assert message(tmp_path, {"runs": [{"command": "x"}]}, outputs_dir="/o\tp") == (
        "outputs dir '/o\\tp' (from --remote-outputs-dir) must be an absolute path without control characters")
    assert message(tmp_path, {"remote_outputs_dir": "rel", "runs": [{"command": "x"}]}) == (
        "outputs dir 'rel' (from remote_outputs_dir in FILE) must be an absolute path without control characters")
    bare = Profile(name="bare", destination="x", remote_repo="/r", outputs_dir="")
    assert message(tmp_path, {"runs": [{"command": "x"}]}, profile=bare) == (
        "the outputs dir is not set: pass --remote-outputs-dir, set remote_outputs_dir in FILE, "
        "or export OPS_REMOTE_OUTPUTS_DIR")
    relative = Profile(name="q", destination="x", remote_repo="repo", outputs_dir="/o")
    assert message(tmp_path, {"runs": [{"command": "x"}]}, profile=relative, project_dir=tmp_path) == (
        "remote_repo 'repo' (from OPS_REMOTE_REPO or profile q) must be an absolute path without control characters")


def test_a_csv_config_takes_remote_repo_from_the_profile_and_says_so(tmp_path):
    bare = Profile(name="p", destination="x", outputs_dir="/o")
    assert message(tmp_path, "run_id,command\na,x\n", profile=bare, name="s.csv") == (
        "remote_repo is not set: pass --remote-repo, set remote_repo in the host's profile, or export OPS_REMOTE_REPO")


def test_the_tmux_session_defaults_to_pilots_and_a_bad_one_names_where_it_came_from(tmp_path):
    plain = {"runs": [{"run_id": "a", "command": "x"}]}
    assert load(tmp_path, plain).tmux_session == "pilots"
    assert load(tmp_path, {**plain, "tmux_session": "sweep"}).tmux_session == "sweep"
    assert load(tmp_path, {**plain, "tmux_session": "sweep"}, tmux_session="flag").tmux_session == "flag"
    assert message(tmp_path, {**plain, "tmux_session": "a.b"}) == (
        "tmux_session in FILE must be 1-64 letters, digits, '_' or '-', got 'a.b'")
    assert message(tmp_path, plain, tmux_session="a:b") == (
        "--tmux-session must be 1-64 letters, digits, '_' or '-', got 'a:b'")


# ---------------------------------------------------------------- defaults, matrix, limits


def test_env_meta_styles_and_expect_merge_name_by_name_and_other_keys_are_replaced(tmp_path):
    run = one(tmp_path, defaults={"command": "x", "env": {"A": "1", "B": "1"}, "note": {"a": 1},
                                  "expect": {"files": ["a"]}},
              env={"B": "2"}, note={"b": 2}, expect={"wandb_synced": True})
    assert dict(run.env) == {"A": "1", "B": "2"}
    assert run.config["note"] == {"b": 2}
    assert dict(run.workload)["expect"] == {"files": ["a"], "wandb_synced": True}
    replaced = one(tmp_path, defaults={"command": "x", "env": {"A": "1"}}, env=None)
    assert replaced.env == ()


@pytest.mark.parametrize("matrix, expected", [
    ([1, 2], "FILE: run 0: matrix must be an object of key: [values], got a list"),
    ({"bad-key": [1]}, "FILE: run 0: matrix key 'bad-key' is not a usable key"),
    ({"matrix": [1]}, "FILE: run 0: matrix key 'matrix' is not a usable key"),
    ({"seed": 1}, "FILE: run 0: matrix.seed must be a non-empty list of values"),
])
def test_a_bad_matrix_is_refused_naming_the_run(tmp_path, matrix, expected):
    assert message(tmp_path, {"runs": [{"command": "x", "matrix": matrix}]}) == expected


def test_a_matrix_of_exactly_the_limit_expands_and_one_run_more_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(run_config, "MAX_RUNS", 6)  # the limit's rule, at a size a test can build
    matrix = {"a": [0, 1, 2], "b": [0, 1]}
    sub = load(tmp_path, {"runs": [{"run_id": "m{a}_{b}", "command": "x", "matrix": matrix}]})
    assert [run.run_id for run in sub.runs] == ["m0_0", "m0_1", "m1_0", "m1_1", "m2_0", "m2_1"]
    assert message(tmp_path, {"runs": [{"run_id": "m{a}_{b}", "command": "x", "matrix": matrix},
                                       {"run_id": "extra", "command": "x"}]}) == (
        "FILE: more than 6 runs after matrix expansion")
    assert message(tmp_path, {"runs": [{"command": "x", "matrix": {**matrix, "c": [0, 1]}}]}) == (
        "FILE: run 0: matrix makes more than 6 runs")


def test_a_matrix_run_holds_its_values_not_the_matrix(tmp_path):
    first, second = load(tmp_path, {"runs": [{"run_id": "s{seed}", "command": "x", "matrix": {"seed": [1, 2]}}]}).runs
    assert (first.config, second.config["seed"]) == ({"run_id": "s1", "command": "x", "seed": 1,
                                                      "run_dir": "/profile/outputs/s1"}, 2)


def test_a_matrix_run_is_named_by_its_values(tmp_path):
    assert message(tmp_path, {"runs": [{"run_id": "k", "command": "x",
                                        "matrix": {"seed": [1, 2], "on": [True]}}]}) == (
        "FILE: duplicate run_id 'k' in run 0 [seed=1, on=true] and run 0 [seed=2, on=true] "
        "(give each run its own run_id, e.g. with placeholders such as {seed})")


# ---------------------------------------------------------------- one run: ids, label, retries, env


@pytest.mark.parametrize("run, expected", [
    ({"run_id": 7}, "FILE: run 0: run_id must be a string, got a number"),
    ({"run_id": "a b"}, "FILE: run 0 ('a b'): run_id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ (letters, digits, "
                        "'.', '_', '-', at most 128), got 'a b'"),
    ({"label": "two\nlines"}, "FILE: run 0 ('r'): label must be one line of text, got 'two\\nlines'"),
    ({"retry_on": "oom"}, f"FILE: run 0 ('r'): retry_on must be a list of failure classes "
                          f"({', '.join(FAILURE_CLASSES)}), got 'oom'"),
    ({"retries": -1}, "FILE: run 0 ('r'): retries must be a whole number >= 0, got -1"),
    ({"gpus": "2"}, "FILE: run 0 ('r'): gpus must be a whole number >= 0, got '2'"),
    ({"retry_backoff": "0s"}, "FILE: run 0 ('r'): retry_backoff must be a number of seconds > 0 or a duration such as "
                              "90s, 30m, 2h or 1h30m, got '0s'"),
    ({"env": ["A=1"]}, "FILE: run 0 ('r'): env must be an object of NAME: value, got a list"),
    ({"env": {"A": [1]}}, "FILE: run 0 ('r'): env.A must be a string, number or boolean, got a list"),
    ({"env": {"1A": "x"}}, "FILE: run 0 ('r'): env: '1A' is not a valid environment variable name"),
])
def test_a_bad_run_setting_is_refused_naming_the_run_and_the_setting(tmp_path, run, expected):
    assert message(tmp_path, {"runs": [{"run_id": "r", "command": "x", **run}]}) == expected


def test_a_run_gets_its_settings_and_their_defaults(tmp_path):
    plain = one(tmp_path, command="x")
    assert (plain.label, plain.gpus, plain.retries, plain.retry_on, plain.retry_backoff, plain.env) == (
        None, None, 0, None, 10.0, ())
    assert (plain.cwd, plain.run_dir, plain.workload, plain.warnings) == ("/profile/repo", "/profile/outputs/r", (), ())
    set_ = one(tmp_path, command="x", retries=0, gpus=0, retry_on=["oom", "nccl", "oom"], retry_backoff=2,
               env={"B": True, "A": False, "N": 1.5, "I": 3})
    assert (set_.retries, set_.gpus, set_.retry_on, set_.retry_backoff) == (0, 0, ("oom", "nccl"), 2.0)
    assert set_.env == (("A", "false"), ("B", "true"), ("I", "3"), ("N", "1.5"))  # sorted by name


def test_what_a_run_is_sent_and_shown(tmp_path):
    run = one(tmp_path, run_id="s{seed}", seed=1, entrypoint="python {script}", script="t.py", retry_on=["oom"],
              env={"HF_TOKEN": "hf_canary", "PLAIN": "{seed}"}, summary_from="lm_eval")
    sent = run.to_dict()
    assert sent == {
        "run_id": "s1", "label": None, "run_dir": "/profile/outputs/s1",
        "command": "python t.py --seed 1 --script t.py --run-dir /profile/outputs/s1", "cwd": "/profile/repo",
        "env": {"HF_TOKEN": "hf_canary", "PLAIN": "1"}, "gpus": None, "timeout": 86400.0, "stall_timeout": 1800.0,
        "retries": 0, "retry_on": ["oom"], "retry_backoff": 10.0,
        "config": {"run_id": "s1", "seed": 1, "entrypoint": "python t.py", "script": "t.py", "retry_on": ["oom"],
                   "env": {"HF_TOKEN": "***", "PLAIN": "1"}, "summary_from": "lm_eval",
                   "run_dir": "/profile/outputs/s1"},
        "summary_from": "lm_eval",
        "identity": {"command": "python t.py --seed 1 --script t.py --run-dir /profile/outputs/s1",
                     "env_names": ["HF_TOKEN", "PLAIN"],
                     "config": {"seed": 1, "entrypoint": "python t.py", "script": "t.py",
                                "env": {"HF_TOKEN": "***", "PLAIN": "1"}, "summary_from": "lm_eval"}},
    }
    assert run.shown()["env"] == {"HF_TOKEN": "***", "PLAIN": "1"} and run.to_dict()["env"]["HF_TOKEN"] == "hf_canary"
    sent["config"]["env"]["PLAIN"] = "2"  # what was sent is a copy: the run keeps its own config
    sent["summary_from"] = "verifiers"
    assert run.config["env"]["PLAIN"] == "1"
    meta = one(tmp_path, command="x", meta={"team": "a"})
    meta.to_dict()["meta"]["team"] = "b"
    assert dict(meta.workload)["meta"] == {"team": "a"}
    listed = one(tmp_path, command=["echo", "{seed}"], seed=3)
    assert listed.config["command"] == ["echo", "3"] and listed.command == "echo 3"


def test_the_run_id_fills_its_placeholders_id_safe(tmp_path):
    run = one(tmp_path, run_id="{model_id}_{on}_{cfg}", model_id="Qwen/Qwen3 4B", on=True, cfg={"a": 1},
              command="x {model_id}")
    assert run.run_id == "Qwen-Qwen3-4B_true_--a--1-"
    assert run.command == "x 'Qwen/Qwen3 4B'"


def test_a_generated_run_id_stamps_the_time_given_in_any_form(tmp_path):
    run = {"env_id": "e", "model_id": "", "num_examples": 0, "seed": None, "best_of": False}
    assert generate_run_id(run, NOW) == "20250304-050607_e_n0_bfalse"
    assert generate_run_id({}, datetime(2025, 3, 4, 5, 6, 7)) == "20250304-050607"  # naive is UTC
    assert generate_run_id({}, datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))) == "20250304-050607"
    assert generate_run_id({}, NOW.timestamp()) == "20250304-050607"
    assert generate_run_id({}, int(NOW.timestamp())) == "20250304-050607"
    assert len(generate_run_id({}, None)) == 15
    (generated,) = load_submission(write(tmp_path, {"runs": [{"command": "x", "seed": 1}]}), profile=PROFILE).runs
    assert generated.run_id.endswith("_seed1") and generated.run_id[:2] == "20"


# ---------------------------------------------------------------- budgets and durations


@pytest.mark.parametrize("value, seconds", [
    (1, 1.0), (0.5, 0.5), ("1.5", 1.5), (" 90S ", 90.0), ("1d", 86400.0), ("1d2h", 93600.0), ("1h30m15s", 5415.0),
    ("2.5m", 150.0), ("1m", 60.0), ("1h", 3600.0),
])
def test_a_duration_is_seconds_or_text(value, seconds):
    assert parse_duration(value, "timeout", "w") == seconds


@pytest.mark.parametrize("value", [0, -1, True, False, "", " ", "-5", "0m", "5 m", "1h30", "inf", float("inf"),
                                   float("nan"), "1e3", [60], {"s": 1}])
def test_a_duration_that_is_none_is_refused_naming_the_key_and_value(value):
    with pytest.raises(ConfigError) as caught:
        parse_duration(value, "stop_grace", "FILE: run 0 ('r')")
    assert str(caught.value) == (f"FILE: run 0 ('r'): stop_grace must be a number of seconds > 0 or a duration such "
                                 f"as 90s, 30m, 2h or 1h30m, got {value!r}")


def test_each_budget_set_to_null_is_warned_by_name(tmp_path):
    run = one(tmp_path, command="x", timeout=None, stall_timeout=None)
    assert (run.timeout, run.stall_timeout) == (None, None)
    assert run.warnings == (
        f"{tmp_path / 'runs.json'}: run 0 ('r'): timeout: null: this run has no wall-clock limit; it can hold the "
        f"pod's GPUs for ever",
        f"{tmp_path / 'runs.json'}: run 0 ('r'): stall_timeout: null: this run has no stall limit; it can hold the "
        f"pod's GPUs for ever")


def test_a_profile_without_budgets_gives_the_built_in_ones(tmp_path):
    class Bare:
        name, remote_repo, outputs_dir, is_local = "b", "/r", "/o", False

    (run,) = load(tmp_path, {"runs": [{"run_id": "a", "command": "x"}]}, profile=Bare()).runs
    assert (run.timeout, run.stall_timeout) == (24 * 3600.0, 30 * 60.0)


# ---------------------------------------------------------------- workload keys and gates


def test_workload_values_reach_the_pod_in_the_form_it_reads(tmp_path):
    run = one(tmp_path, command="x", summary_metric="  acc,none ", stop_signal="sigusr1", stop_grace=5,
              summary_timeout="2m", expect={"log_not_matches": "Traceback", "files": None, "wandb_synced": False},
              metrics_from_log=r"step (?P<step>\d+)", meta={"team": "evals"}, summary_from=None)
    assert dict(run.workload) == {
        "expect": {"log_not_matches": ["Traceback"], "wandb_synced": False}, "summary_metric": "acc,none",
        "stop_signal": "USR1", "stop_grace": 5.0, "summary_timeout": 120.0,
        "metrics_from_log": r"step (?P<step>\d+)", "meta": {"team": "evals"}}
    assert "summary_from" not in run.to_dict() and "--summary-metric" not in run.command
    assert dict(one(tmp_path, command="x", stop_signal="TERM").workload) == {"stop_signal": "TERM"}


@pytest.mark.parametrize("run, expected", [
    ({"summary_metric": 3}, "summary_metric must be a metric name"),
    ({"stop_signal": "SIGKILL"}, "stop_signal must be one of"),
    ({"summary_timeout": "never"}, "summary_timeout must be a number of seconds > 0"),
    ({"expect": {"files": "ckpt.pt"}}, "FILE: run 0 ('r'): expect.files must be"),
    ({"expect_commit": 1234567}, "FILE: run 0 ('r'): expect_commit must be a commit id (7 to 40 hex digits), "
                                 "got 1234567"),
    ({"expect_commit": "abc12"}, "got 'abc12'"),
])
def test_a_bad_workload_value_is_refused_before_contact(tmp_path, run, expected):
    assert expected in run_message(tmp_path, **run)


def test_expect_commit_from_the_flag_is_a_commit_or_none():
    assert expected_commit_flag(None) is None
    assert expected_commit_flag("NONE") == "none"
    assert expected_commit_flag(" ABCDEF12 ") == "abcdef12"
    with pytest.raises(ConfigError) as caught:
        expected_commit_flag("main")
    assert str(caught.value) == "--expect-commit must be a commit id (7 to 40 hex digits), got 'main'"


def test_local_sync_defaults_and_where_its_folder_may_be(tmp_path):
    run = one(tmp_path, command="x {run_dir}", out_mode="local_sync", local_dir="/scratch//runs/")
    assert dict(run.workload) == {"out_mode": "local_sync", "sync_interval": 60.0, "local_dir": "/scratch/runs"}
    assert run.command == "x /scratch/runs/r" and run.run_dir == "/profile/outputs/r"
    volume = one(tmp_path, command="x {run_dir}", out_mode="volume", sync_interval=None)
    assert volume.workload == ()  # the volume is the default: nothing for the pod to do differently
    assert volume.command == "x /profile/outputs/r"
    outside = "must be outside the outputs root /profile/outputs (local_sync writes to the pod's own disk, then " \
              "copies to the volume)"
    for local_dir in ("/profile/outputs", "/profile/outputs/sub"):
        assert run_message(tmp_path, out_mode="local_sync", local_dir=local_dir) == (
            f"FILE: run 0 ('r'): local_dir {local_dir!r} {outside}")
    assert message(tmp_path, {"runs": [{"run_id": "r", "command": "x", "out_mode": "local_sync",
                                        "local_dir": "/mnt/vol"}]}, outputs_dir="/mnt/vol/outputs") == (
        "FILE: run 0 ('r'): local_dir '/mnt/vol' must be outside the outputs root /mnt/vol/outputs (local_sync "
        "writes to the pod's own disk, then copies to the volume)")
    assert one(tmp_path, command="x", out_mode="local_sync", local_dir="/profile/outputs2").run_dir == (
        "/profile/outputs/r")
    assert run_message(tmp_path, local_dir="/scratch") == (
        "FILE: run 0 ('r'): local_dir applies to out_mode \"local_sync\" only")
    assert run_message(tmp_path, out_mode="volume", sync_interval="1m") == (
        "FILE: run 0 ('r'): sync_interval applies to out_mode \"local_sync\" only")
    assert "out_mode must be one of" in run_message(tmp_path, out_mode="local")


# ---------------------------------------------------------------- keys: reserved, typos, secrets, meta


@pytest.mark.parametrize("key, expected", [
    ("timeout", None), ("seed", None), ("max_retries", None), ("metric", None), ("n_gpus", None), ("lr", None),
    ("gpu", "key 'gpu' is not a run setting; did you mean 'gpus'? (if it really is a flag of the command, list it: "
            "\"flags\": [\"gpu\"])"),
    ("lable", "did you mean 'label'?"),  # a swap of neighbours is one edit
    ("retrys", "did you mean 'retries'?"),  # two edits between long names
    ("envs", "did you mean 'env'?"),
    ("xenv", None),  # another first letter
    ("retry_ab", "did you mean 'retry_on'?"),  # two edits, 3/4 of the letters alike: the least that is a typo
    ("lbl", None), ("metric", None), ("commnads", "did you mean 'command'?"),  # two edits: long and alike only
    ("api_key", "key 'api_key' names a secret: as a flag or placeholder it would be written into the command line "
                "and the run's files; pass it in env instead (env: {\"API_KEY\": ...}), which reaches the pod on "
                "stdin only"),
])
def test_what_a_key_may_be_is_one_rule(key, expected):
    problem = run_key_problem(key)
    assert problem == expected if expected is None or expected.startswith("key") else expected in problem
    assert run_key_problem(key, frozenset({key})) == (problem if key == "api_key" else None)


def test_a_key_of_the_run_that_is_no_usable_name_or_a_secret_inside_a_value_is_refused(tmp_path):
    assert run_message(tmp_path, **{"2x": 1}) == (
        "FILE: run 0 ('r'): key '2x' is not a valid name (letters, digits and '_', not starting with a digit)")
    assert run_message(tmp_path, timout="1h") == (
        "FILE: run 0 ('r'): key 'timout' is not a run setting; did you mean 'timeout'? (if it really is a flag of the "
        "command, list it: \"flags\": [\"timout\"])")
    assert run_message(tmp_path, model_args={"inner": [{"api-key": "k"}]}) == (
        "FILE: run 0 ('r'): model_args.inner[0].api-key names a secret: inside model_args it would be written into "
        "the command line (visible in ps) and the run's files; pass it in env instead, which reaches the pod on stdin "
        "only, and let the command read it from there")
    assert "meta.hf_token names a secret: inside meta" in run_message(tmp_path, meta={"note": "x", "hf_token": "t"})
    assert run_message(tmp_path, env={"A": "a\x00"}) == "FILE: run 0 ('r'): env: a value contains a NUL byte"
    assert run_message(tmp_path, cfg={"k\x00": 1}) == "FILE: run 0 ('r'): cfg: a value contains a NUL byte"
    assert run_message(tmp_path, cfg=[1, ["\x00"]]) == "FILE: run 0 ('r'): cfg: a value contains a NUL byte"
    assert run_message(tmp_path, flags=["gpu", 1]) == "FILE: run 0 ('r'): flags must be a list of key names, got ['gpu', 1]"
    # The run's own settings are checked by their rows, not by the secret rule; env is where secrets go.
    assert dict(one(tmp_path, command="x", env={"HF_TOKEN": "t"}, label="api_key=x").env) == {"HF_TOKEN": "t"}


@pytest.mark.parametrize("value, found", [
    ({"a": {"b": {"db_password": 1}}}, "v.a.b.db_password"),
    ({"a": ["x", "pretrained=m,api_key=sk"]}, "v.a[1] (api_key=...)"),
    ("pretrained=m api.key=sk", "v (api.key=...)"),
    ("pretrained=m;hf-token=x", "v (hf-token=...)"),
    ("m=1,api-key=sk", "v (api-key=...)"),
    ("a=1&token=x", "v (token=...)"), ("--token=x", None),
    ("api_key", None), ("tokens=5,max_tokens=3", None), ({"max_tokens": 3}, None), ([1, {"a": "b"}], None), (5, None),
])
def test_a_secret_inside_a_structured_value_is_found_by_its_path(value, found):
    assert nested_secret(value, "v") == found


def test_a_secret_deeper_than_the_nesting_limit_is_no_longer_searched():
    value = {"token": 1}
    for _ in range(32):
        value = {"a": value}
    assert nested_secret(value, "v") == "v" + ".a" * 32 + ".token"
    assert nested_secret({"a": value}, "v") is None
    listed = [{"token": 1}]
    for _ in range(31):
        listed = [listed]
    assert nested_secret(listed, "v") == "v" + "[0]" * 32 + ".token"
    assert nested_secret([listed], "v") is None


@pytest.mark.parametrize("meta, expected", [
    ({"bad-name": 1}, "FILE: run 0 ('r'): meta key 'bad-name' is not a valid name (letters, digits and '_', not "
                     "starting with a digit)"),
    ({"seed": 1}, "FILE: run 0 ('r'): meta.seed is also a key of the run (or a run setting): keep one"),
    ({"gpus": 1}, "FILE: run 0 ('r'): meta.gpus is also a key of the run (or a run setting): keep one"),
    ({"remote_repo": "x"}, "FILE: run 0 ('r'): meta.remote_repo is also a key of the run (or a run setting): keep one"),
    ({"outputs_dir": "x"}, "FILE: run 0 ('r'): meta.outputs_dir is also a key of the run (or a run setting): keep one"),
])
def test_a_meta_key_that_could_mean_two_things_is_refused(tmp_path, meta, expected):
    assert run_message(tmp_path, seed=1, meta=meta) == expected


def test_meta_keys_fill_placeholders_but_never_become_flags(tmp_path):
    run = one(tmp_path, entrypoint="python e.py --team {team}", meta={"team": "evals"}, seed=2)
    assert run.command == "python e.py --team evals --seed 2 --run-dir /profile/outputs/r"
    assert key_role("team", {"meta": {"team": 1}}) == "metadata"
    assert key_role("team", {"meta": ["team"]}) == "flag"


# ---------------------------------------------------------------- styles


@pytest.mark.parametrize("run, expected", [
    ({"styles": {"lr": {"value_style": "flag"}}, "flag_style": "key=value"},
     "styles.lr: value_style \"flag\" needs a flag style with '--' (a key=value argument has no bare form); "
     "use json or python"),
    ({"styles": {"lr": {"flag_style": "key=value"}}, "value_style": "flag"},
     "styles.lr: value_style \"flag\" needs a flag style with '--'"),
    ({"flag_style": "key=value", "value_style": "flag"},
     "the run: value_style \"flag\" needs a flag style with '--' (a key=value argument has no bare form); "
     "use json or python"),
    ({"styles": {"lr": {}}}, "styles.lr must be an object of flag_style and/or value_style, got {}"),
    ({"styles": {"lr": "python"}}, "styles.lr must be an object of flag_style and/or value_style, got 'python'"),
    ({"styles": {"gpus": {"value_style": "json"}}}, "styles.gpus names no flag, placeholder or meta key of the run"),
    ({"styles": {"lr": {"flag_style": "-k v"}}},
     "styles.lr.flag_style must be one of '--key value', '--key=value', 'key=value', got '-k v'"),
    ({"styles": "python"}, "styles must be an object of key: {flag_style, value_style}, got a string"),
])
def test_a_bad_style_is_refused_naming_where(tmp_path, run, expected):
    text = run_message(tmp_path, command=None, entrypoint="e", lr=0.1, gpus=1, **run)
    assert text.startswith("FILE: run 0 ('r'): ") and expected in text


def test_a_keys_own_style_takes_the_runs_for_what_it_leaves_unsaid(tmp_path):
    keys = {"entrypoint": "e", "on": True, "off": False, "n": 1}
    run = one(tmp_path, flag_style="--key=value", value_style="python",
              styles={"on": {"flag_style": "key=value"}, "off": {"value_style": "json"}}, **keys)
    assert run.command == "e on=True --off=false --n=1 --run_dir=/profile/outputs/r"
    unset = one(tmp_path, styles=None, **keys)
    assert unset.command == "e --on --n 1 --run-dir /profile/outputs/r"


# ---------------------------------------------------------------- run directories


@pytest.mark.parametrize("run_dir, expected", [
    (3, "FILE: run 0 ('r'): run_dir must be a string, got a number"),
    ("a/../../b", "FILE: run 0 ('r'): run_dir must be a path without '..' or control characters, got 'a/../../b'"),
    ("a\x1fb", "FILE: run 0 ('r'): run_dir must be a path without '..' or control characters, got 'a\\x1fb'"),
    ("  ", "FILE: run 0 ('r'): run_dir must be a path without '..' or control characters, got '  '"),
    ("a/..", "FILE: run 0 ('r'): run_dir must be a path without '..' or control characters, got 'a/..'"),
    ("./", "FILE: run 0 ('r'): run_dir './' is the outputs root itself, not a run directory"),
    (".ops", "FILE: run 0 ('r'): run_dir '/profile/outputs/.ops' is the run queue's own folder"),
    (".ops/x", "FILE: run 0 ('r'): run_dir '/profile/outputs/.ops/x' is the run queue's own folder"),
    ("/abs", "FILE: run 0 ('r'): run_dir must be relative to the outputs root /profile/outputs, got '/abs'"),
])
def test_a_run_directory_is_a_folder_of_its_own_below_the_outputs_root(tmp_path, run_dir, expected):
    assert run_message(tmp_path, run_dir=run_dir) == expected


def test_a_run_directory_may_not_hold_the_repo_and_names_like_the_queue_are_fine(tmp_path):
    data = {"remote_repo": "/out/repo", "remote_outputs_dir": "/out",
            "runs": [{"run_id": "r", "command": "x", "run_dir": "./repo/.."}]}
    assert message(tmp_path, data).endswith("run_dir must be a path without '..' or control characters, got "
                                            "'./repo/..'")
    data["runs"][0]["run_dir"] = "repo"
    assert message(tmp_path, data) == ("FILE: run 0 ('r'): run_dir '/out/repo' holds /out/repo: a run directory must be a "
                                       "folder of its own")
    data["runs"][0]["run_dir"] = "re"
    assert load(tmp_path, data).runs[0].run_dir == "/out/re"
    assert one(tmp_path, command="x", run_dir=".opsx").run_dir == "/profile/outputs/.opsx"
    assert one(tmp_path, command="x", run_dir="a/./b/").run_dir == "/profile/outputs/a/b"


def test_two_runs_sharing_a_directory_are_refused_naming_both(tmp_path):
    runs = [{"run_id": "a", "command": "x", "run_dir": "d"}, {"run_id": "b", "command": "x", "run_dir": "d"},
            {"run_id": "c", "command": "x", "run_dir": "dd"}]
    assert message(tmp_path, {"runs": runs}) == (
        "FILE: run 1 has run_dir '/profile/outputs/d', the same as or inside run 0's '/profile/outputs/d'")
    runs[1]["run_dir"] = "d2"
    assert [run.run_dir for run in load(tmp_path, {"runs": runs}).runs] == [
        "/profile/outputs/d", "/profile/outputs/d2", "/profile/outputs/dd"]


# ---------------------------------------------------------------- command, entrypoint, run_dir_flag


@pytest.mark.parametrize("run, expected", [
    ({"command": "x", "run_dir_flag": "out"}, "run_dir_flag is for the entrypoint form; a command writes {run_dir} "
                                              "where it wants it"),
    ({"command": "  "}, "command is empty"),
    ({"command": []}, "command must be a string or a non-empty list of strings"),
    ({"command": 3}, "command must be a string or a non-empty list of strings"),
    ({"command": None, "entrypoint": ["python"]}, "entrypoint must be a string, got a list"),
    ({"command": None, "entrypoint": "python 'x"}, "entrypoint: No closing quotation"),
    ({"command": None, "entrypoint": " "}, "entrypoint is empty"),
    ({"command": None}, "no command: set command (a string or list) or entrypoint"),
    ({"command": None, "entrypoint": "e", "run_dir_flag": "out-dir"},
     "run_dir_flag must be a flag name (letters, digits and '_', e.g. out_dir) or null (no run directory flag), "
     "got 'out-dir'"),
    ({"command": None, "entrypoint": "e", "run_dir_flag": 1},
     "run_dir_flag must be a flag name (letters, digits and '_', e.g. out_dir) or null (no run directory flag), got 1"),
    ({"command": None, "entrypoint": "e", "run_dir_flag": "out", "out": "/x"},
     "run_dir_flag 'out' is also a flag of the run: keep one"),
])
def test_a_command_that_cannot_be_run_as_written_is_refused(tmp_path, run, expected):
    assert run_message(tmp_path, **run) == f"FILE: run 0 ('r'): {expected}"


def test_the_run_directory_flag_is_renamed_dropped_or_may_share_a_meta_name(tmp_path):
    assert one(tmp_path, entrypoint="e", run_dir_flag="out_dir").command == "e --out-dir /profile/outputs/r"
    assert one(tmp_path, entrypoint="e", run_dir_flag=None).command == "e"
    assert one(tmp_path, entrypoint="e", run_dir_flag="out", meta={"out": "x"}).command == "e --out /profile/outputs/r"
    assert one(tmp_path, entrypoint="e", run_dir_flag="gpus", gpus=1).command == "e --gpus /profile/outputs/r"
    assert one(tmp_path, entrypoint="e {a}", a="x y", flag_style="key=value").command == (
        "e 'x y' 'a=x y' run_dir=/profile/outputs/r")
    assert one(tmp_path, entrypoint="e", flag_style="key=value", run_dir_flag="out_dir").config["entrypoint"] == "e"


# ---------------------------------------------------------------- rendering


def test_each_value_is_written_as_one_argument(tmp_path):
    line = render_entrypoint("e", {"a_b": None, "on": True, "lst": [1, "x"], "txt": "it's", "f": 0.5, "run_dir_flag":
                                   None}, "/o/r")
    assert shlex.split(line) == ["e", "--on", "--lst", '[1,"x"]', "--txt", "it's", "--f", "0.5"]
    styled = render_entrypoint("e", {"a_b": False, "c": None}, "/o", lambda key: ("--key=value", "flag"))
    assert styled == "e --run_dir=/o"
    styled = render_entrypoint("e", {"a_b": True}, "/o", lambda key: ("--key=value", "flag"))
    assert styled == "e --a_b --run_dir=/o"
    assert render_value("é", "python") == "é" and render_value(["é"], "json") == '["é"]'
    assert render_value(None, "python") == "None" and render_value({"a": True}, "python") == "{'a': True}"
    assert render_value(2, "python") == "2" and render_value(1.0) == "1.0" and render_value("s", "python") == "s"
    assert render_value(True) == "true" and render_value(None) == "null"


def test_placeholders_are_refused_when_unknown_and_left_alone_when_escaped(tmp_path):
    with pytest.raises(ConfigError) as caught:
        fill_placeholders("{b} {a}", {"a": 1, "c": 2}, quote=False)
    assert str(caught.value) == "unknown placeholder {b} (known: a, c; write {{b}} for a literal {b})"
    with pytest.raises(ConfigError) as caught:
        fill_placeholders("{b}", {}, quote=False, where="W")
    assert str(caught.value) == "W: unknown placeholder {b} (known: ; write {{b}} for a literal {b})"
    assert fill_placeholders("{a} {{a}} ${a} {a!json} {a!python}", {"a": [True]}, quote=True,
                             value_styles={"a": "python"}) == "'[True]' {a} ${a} '[true]' '[True]'"
    run = one(tmp_path, command="x", note="{seed}", seed=1, cfg={"k": ["{seed}", 2, None]}, env={"S": "{seed}"})
    assert run.config["note"] == "1" and run.config["cfg"] == {"k": ["1", 2, None]}


def test_configurator_warnings_name_the_run_the_key_and_the_fix(tmp_path):
    where = f"{tmp_path / 'runs.json'}: run 0 ('r')"
    flag = one(tmp_path, entrypoint="python train.py", flag_style="--key=value", compile=True, n=1)
    assert flag.warnings == (
        f"{where}: compile is written 'true' (--key=value); a Python configurator (key=value read with "
        "ast.literal_eval) reads that as the string 'true', which is true: set \"value_style\": \"python\" "
        "(or \"styles\": {\"compile\": {\"value_style\": \"python\"}}, or write {compile!python}) to pass True",)
    placed = one(tmp_path, command=["python", "train.py", "--wandb_log={wandb_log}"], wandb_log=False)
    assert placed.warnings == (
        f"{where}: wandb_log is written 'false' ({{wandb_log}}); a Python configurator (key=value read with "
        "ast.literal_eval) reads that as the string 'false', which is true: set \"value_style\": \"python\" "
        "(or \"styles\": {\"wandb_log\": {\"value_style\": \"python\"}}, or write {wandb_log!python}) to pass False",)
    quiet = [
        one(tmp_path, entrypoint="python train.py", flag_style="--key=value", value_style="python", compile=True),
        one(tmp_path, entrypoint="python train.py", flag_style="--key=value", meta={"on": True}),
        one(tmp_path, entrypoint="python train.py", flag_style="--key=value", styles={"c": {"value_style": "flag"}},
            c=True),
        one(tmp_path, command="python train.py X={x} {{y}}=1 n={n}", x=True, n=1),
        one(tmp_path, command="python train.py --x={x}", x=True, value_style="python"),
        one(tmp_path, command=["python", "train.py", "a={x!json}"], x=True),
    ]
    assert [run.warnings for run in quiet] == [()] * len(quiet)
    assert one(tmp_path, entrypoint="python train.py", value_style="json", compile=True).warnings == ()  # argparse's
    later = [one(tmp_path, command="python train.py {n} wandb_log={w}", n=1, w=False),
             one(tmp_path, command="python train.py a={p} b={w}", p=True, w=False, styles={"p": {"value_style": "python"}})]
    assert [len(run.warnings) for run in later] == [1, 1] and all("w is written 'false'" in run.warnings[0] for run in later)
    named = one(tmp_path, command=["python", "configurator.py", "{x}"], x=True, y=1, value_style="flag")
    assert len(named.warnings) == 1 and "x is written 'true' ({x})" in named.warnings[0]


def test_a_quoted_csv_cell_keeps_its_line_breaks_as_written(tmp_path):
    (tmp_path / "s.csv").write_bytes(b'run_id,command,prompt\r\na,x,"one\r\ntwo"\r\n')
    (run,) = load_submission(tmp_path / "s.csv", profile=PROFILE, now=NOW).runs
    assert run.config["prompt"] == "one\r\ntwo"


def test_paths_keep_every_letter_of_their_roots(tmp_path):
    run = one(tmp_path, command="x {run_dir}", run_dir="d", out_mode="local_sync", local_dir="/XL/runs")
    assert (run.run_dir, dict(run.workload)["local_dir"], run.command) == ("/profile/outputs/d", "/XL/runs", "x /XL/runs/r")
    sub = load(tmp_path, {"runs": [{"run_id": "r", "command": "x", "run_dir": "d"}]}, outputs_dir="/Xo")
    assert sub.runs[0].run_dir == "/Xo/d"


def test_log_patterns_are_taken_as_written_and_every_other_value_fills_its_placeholders_in_its_style(tmp_path):
    run = one(tmp_path, command="x", seed=1, on=True, off=False, styles={"on": {"value_style": "python"}},
              note="{on} {off} {seed} {text}", text="a b", cfg={"k": ["{on}"], "j": {"i": "{on}"}},
              metrics_from_log=r"step {seed} (?P<loss>\d+)", expect={"log_matches": "done {seed}"})
    assert run.config["note"] == "True false 1 a b" and run.config["cfg"] == {"k": ["True"], "j": {"i": "True"}}
    assert dict(run.workload)["metrics_from_log"] == r"step {seed} (?P<loss>\d+)"
    assert dict(run.workload)["expect"] == {"log_matches": ["done {seed}"]}
    listed = one(tmp_path, command=["x", "--on={on}", "{off}"], on=True, off=False, value_style="python")
    assert listed.command == "x --on=True False"
    entry = one(tmp_path, entrypoint="e --v={v} {script}", script="a b.py", meta={"v": True}, value_style="python",
                run_dir_flag=None)
    assert entry.command == "e --v=True 'a b.py' --script 'a b.py'"
    assert entry.config["entrypoint"] == "e --v=True a b.py"  # filled, as the config reads


@pytest.mark.parametrize("run", [
    {"command": ["echo", "{nope}"]},
    {"command": None, "entrypoint": "python {nope}"},
    {"command": None, "entrypoint": 'echo "$"{nope}'},
    {"run_id": "r{nope}"},
    {"note": ["{nope}"]},
    {"note": {"k": "{nope}"}},
])
def test_an_unknown_placeholder_anywhere_is_refused_naming_the_run(tmp_path, run):
    text = run_message(tmp_path, **run)
    assert text.startswith("FILE: run 0 (") and "): unknown placeholder {nope} (known: " in text


def test_a_run_id_placeholder_of_an_empty_value_leaves_nothing(tmp_path):
    assert one(tmp_path, run_id="r{suffix}", suffix="", command="x").run_id == "r"


@pytest.mark.parametrize("run, expected", [
    ({"retry_on": 5}, f"retry_on must be a list of failure classes ({', '.join(FAILURE_CLASSES)}), got 5"),
    ({"command": ["x", {"k": "{nope}"}]}, "command must be a string or a non-empty list of strings"),
    ({"command": None, "entrypoint": ["{nope}"]}, "entrypoint must be a string, got a list"),
])
def test_a_value_of_the_wrong_type_is_refused_for_its_type(tmp_path, run, expected):
    assert run_message(tmp_path, **run) == f"FILE: run 0 ('r'): {expected}"


def test_a_deep_value_after_a_plain_one_is_still_refused(tmp_path):
    deep = '{"runs": [{"command": "x", "deep": ' + "[" * 32 + "]" * 32 + ', "z": 1}]}'
    assert message(tmp_path, deep) == "FILE: nested deeper than 32 levels"


def test_a_config_of_only_a_csv_of_runs_loads_it(tmp_path):
    (tmp_path / "s.csv").write_text("run_id,command\na,x\n")
    assert [run.run_id for run in load(tmp_path, {"runs_csv": "s.csv"}).runs] == ["a"]


def test_styles_in_defaults_and_in_the_run_merge_key_by_key(tmp_path):
    run = one(tmp_path, defaults={"styles": {"a": {"value_style": "python"}}}, entrypoint="e", a=True, b=None,
              styles={"b": {"value_style": "json"}}, run_dir_flag=None)
    assert run.command == "e --a True --b null"


@pytest.mark.parametrize("local_dir, outputs_dir, refused", [
    ("/mnt/dX", "/mnt/d/out", False), ("/mnt/d ", "/mnt/d/out", False), ("/mnt/d/runs", "/mnt/dX", False),
    ("/mnt/d", "/mnt/d/out", True), ("/tmp/ops-runs", "/", True),
])
def test_local_dir_and_the_outputs_root_are_compared_as_whole_folders(tmp_path, local_dir, outputs_dir, refused):
    data = {"runs": [{"run_id": "r", "command": "x", "out_mode": "local_sync", "local_dir": local_dir}]}
    if refused:
        assert message(tmp_path, data, outputs_dir=outputs_dir) == (
            f"FILE: run 0 ('r'): local_dir {local_dir!r} must be outside the outputs root {outputs_dir} (local_sync "
            f"writes to the pod's own disk, then copies to the volume)")
    else:
        assert dict(load(tmp_path, data, outputs_dir=outputs_dir).runs[0].workload)["local_dir"] == local_dir
    assert run_message(tmp_path, out_mode="local_sync", sync_interval="often") == (
        "FILE: run 0 ('r'): sync_interval must be a number of seconds > 0 or a duration such as 90s, 30m, 2h or "
        "1h30m, got 'often'")


def test_a_run_directory_fills_its_placeholders_as_written_and_never_holds_the_repo(tmp_path):
    assert one(tmp_path, command="x", group="my runs", run_dir="{group}/x").run_dir == "/profile/outputs/my runs/x"
    assert run_message(tmp_path, run_dir="{nope}/x").startswith("FILE: run 0 ('r'): unknown placeholder {nope}")
    data = {"remote_repo": "/out/sub/repo", "remote_outputs_dir": "/out",
            "runs": [{"run_id": "r", "command": "x", "run_dir": "sub"}]}
    assert message(tmp_path, data) == ("FILE: run 0 ('r'): run_dir '/out/sub' holds /out/sub/repo: a run directory "
                                       "must be a folder of its own")


def test_an_unreadable_config_says_why(tmp_path):
    (tmp_path / "loop.json").symlink_to(tmp_path / "loop.json")
    with pytest.raises(ConfigError) as caught:
        load_submission(tmp_path / "loop.json", profile=PROFILE)
    assert str(caught.value) == f"{tmp_path / 'loop.json'}: cannot read: Too many levels of symbolic links"


def test_on_the_local_profile_a_relative_remote_repo_is_taken_from_the_project(tmp_path):
    local = resolve_profile({}, "local", tmp_path)
    for repo, expected in (("sub/dir", tmp_path.resolve() / "sub" / "dir"), ("/abs/repo", "/abs/repo")):
        path = write(tmp_path, {"remote_repo": repo, "runs": [{"run_id": "a", "command": "x"}]})
        assert load_submission(path, profile=local, project_dir=tmp_path).remote_repo == str(expected)


@pytest.fixture
def far_from_utc(monkeypatch):
    """This machine's local time 9 hours ahead of UTC, for the length of a test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_generated_run_ids_are_stamped_in_utc_whatever_the_local_time(far_from_utc):
    assert generate_run_id({}, datetime(2025, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))) == "20250304-050607"
    assert generate_run_id({}, datetime(2025, 3, 4, 5, 6, 7)) == "20250304-050607"  # naive: UTC, not local
    assert generate_run_id({}, int(NOW.timestamp())) == "20250304-050607"
    before = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    stamp = generate_run_id({}, None)
    assert stamp in (before, datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"))


def test_a_local_sync_folder_with_placeholders_is_the_same_folder_for_the_command_and_the_pod(tmp_path):
    run = one(tmp_path, command="x {run_dir}", user="bob", out_mode="{mode}", mode="local_sync", fast=True,
              local_dir="/scratch/{user}-{fast}", sync_interval="{every}", every="5m", value_style="python")
    assert run.command == "x /scratch/bob-True/r"
    assert dict(run.workload) == {"out_mode": "local_sync", "sync_interval": 300.0, "local_dir": "/scratch/bob-True"}
    assert run_message(tmp_path, out_mode="local_sync", local_dir="/scratch/{run_dir}").startswith(
        "FILE: run 0 ('r'): unknown placeholder {run_dir}")
    assert run_message(tmp_path, out_mode="local_sync", local_dir="/scratch/{sub}", sub="../etc") == (
        "FILE: run 0 ('r'): local_dir must be an absolute path on the pod's own disk, got '/scratch/../etc'")


def test_a_bad_root_or_row_names_where_it_came_from(tmp_path):
    assert message(tmp_path, {"runs": [{"command": "x"}]}, remote_repo="repo") == (
        "remote_repo 'repo' (from --remote-repo) must be an absolute path without control characters")
    assert message(tmp_path, "run_id,command\nx y,true\n", name="s.csv").startswith(
        "FILE: run 0 (FILE line 2) ('x y'): run_id must match")
