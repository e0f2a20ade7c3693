"""Run configs (issue 4, "Config"): what a config file turns into, and every way it is refused."""

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations.run_config import (
    fill_placeholders,
    generate_run_id,
    key_role,
    load_submission,
    parse_duration,
    render_entrypoint,
)
from ops_tasks.settings import Profile, resolve_profile

CHECKOUT = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
PROFILE = Profile(name="p", destination="x", outputs_dir="/profile/outputs", remote_repo="/profile/repo")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("OPS_REMOTE_REPO", "OPS_REMOTE_OUTPUTS_DIR", "OPS_PROJECT_ENV"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path, data, name="runs.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def load(tmp_path, data, profile=PROFILE, **flags):
    return load_submission(write(tmp_path, data), profile=profile, now=NOW, **flags)


def runs(tmp_path, *items, defaults=None, **flags):
    return load(tmp_path, {"defaults": defaults or {}, "runs": list(items)}, **flags).runs


def refused(tmp_path, data, *expected, profile=PROFILE):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, data, profile=profile)
    for text in expected:
        assert text in str(caught.value)
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_seed_config_loads():
    sub = load_submission(CHECKOUT / "configs" / "pilots.json", profile=PROFILE)
    assert (sub.remote_repo, sub.outputs_dir, sub.tmux_session) == (
        "/mnt/work/myrepo", "/mnt/pod_artifacts/outputs", "pilots")
    assert [run.run_id for run in sub.runs] == ["pilot_gsm8k_qwen3-4b_seed0", "pilot_gsm8k_qwen3-4b_seed1"]
    second = sub.runs[1]
    assert second.command == (
        "python inference/eval_gsm8k.py --env-id gsm8k --model-id Qwen/Qwen3-4B-Instruct-2507 --num-examples 200"
        " --rollouts-per-example 1 --best-of 1 --seed 1 --run-dir /mnt/pod_artifacts/outputs/pilot_gsm8k_qwen3-4b_seed1"
    )
    assert second.run_dir == "/mnt/pod_artifacts/outputs/pilot_gsm8k_qwen3-4b_seed1"
    assert second.cwd == "/mnt/work/myrepo"
    assert (second.gpus, second.retries, second.retry_on, second.retry_backoff) == (None, 0, None, 10.0)
    assert second.config["seed"] == 1 and second.config["run_id"] == second.run_id
    json.dumps(second.to_dict())  # JSON-able, to ship


def resolved_profile(project_dir) -> Profile:
    """Profile `p` as a task gets it: settings.py has applied the environment over invoke.yaml."""
    ops = {"profiles": {"p": {"destination": "u@pod.example:22", "outputs_dir": "/profile/outputs",
                              "remote_repo": "/profile/repo"}}}
    return resolve_profile(ops, "p", project_dir)


def test_roots_precedence_flag_file_env_profile(tmp_path, monkeypatch):
    one = [{"run_id": "a", "command": "true"}]
    in_file = {"remote_repo": "/file/repo", "remote_outputs_dir": "/file/out", "runs": one}
    assert load(tmp_path, {"runs": one}, profile=resolved_profile(tmp_path)).remote_repo == "/profile/repo"
    assert load(tmp_path, {"runs": one}, profile=resolved_profile(tmp_path)).outputs_dir == "/profile/outputs"
    monkeypatch.setenv("OPS_REMOTE_REPO", "/env/repo")
    monkeypatch.setenv("OPS_REMOTE_OUTPUTS_DIR", "/env/out/")
    profile = resolved_profile(tmp_path)
    sub = load(tmp_path, {"runs": one}, profile=profile)
    assert (sub.remote_repo, sub.outputs_dir) == ("/env/repo", "/env/out")
    sub = load(tmp_path, in_file, profile=profile)
    assert (sub.remote_repo, sub.outputs_dir) == ("/file/repo", "/file/out")
    sub = load(tmp_path, in_file, profile=profile, remote_repo="/flag/repo", outputs_dir="/flag/out",
               tmux_session="sweep")
    assert (sub.remote_repo, sub.outputs_dir, sub.tmux_session) == ("/flag/repo", "/flag/out", "sweep")
    assert sub.runs[0].run_dir == "/flag/out/a" and sub.runs[0].cwd == "/flag/repo"


def test_a_bad_root_from_the_environment_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_REMOTE_REPO", "relative/repo")
    refused(tmp_path, {"runs": [{"run_id": "a", "command": "true"}]}, "'relative/repo' (from OPS_REMOTE_REPO or "
            "profile p) must be an absolute path", profile=resolved_profile(tmp_path))


def test_remote_repo_missing_names_the_three_ways(tmp_path):
    bare = Profile(name="p", destination="x")
    message = refused(tmp_path, {"runs": [{"run_id": "a", "command": "true"}]}, profile=bare)
    assert message == (f"remote_repo is not set: pass --remote-repo, set remote_repo in {tmp_path / 'runs.json'}, "
                       "or export OPS_REMOTE_REPO")
    refused(tmp_path, {"remote_repo": "relative/repo", "runs": [{"run_id": "a", "command": "true"}]},
            "must be an absolute path", "remote_repo in")


def test_matrix_expands_to_the_cartesian_product(tmp_path):
    matrix = {"seed": [0, 1, 2], "temperature": [0.0, 0.7]}
    items = runs(tmp_path, {"run_id": "m_{model_id}_s{seed}_t{temperature}", "matrix": matrix},
                 defaults={"entrypoint": "python e.py", "model_id": "Qwen/Qwen3-4B", "seed": 9})
    assert len(items) == 6
    assert items[0].run_id == "m_Qwen-Qwen3-4B_s0_t0.0" and items[-1].run_id == "m_Qwen-Qwen3-4B_s2_t0.7"
    assert items[-1].command.startswith("python e.py --model-id Qwen/Qwen3-4B --seed 2 --temperature 0.7 --run-dir ")
    refused(tmp_path, {"runs": [{"command": "x", "matrix": {"seed": []}}]}, "matrix.seed must be a non-empty list")


def test_generated_run_ids(tmp_path):
    run = {"env_id": "gsm8k", "model_id": "Qwen/Qwen3-4B", "num_examples": 5, "rollouts_per_example": 2,
           "best_of": 1, "seed": 3}
    assert generate_run_id(run, NOW) == "20250304-050607_gsm8k_Qwen-Qwen3-4B_n5_r2_b1_seed3"
    assert generate_run_id({"model_id": "a b:c"}, NOW) == "20250304-050607_a-b-c"
    assert len(generate_run_id({"model_id": "x" * 300}, NOW)) == 128
    items = runs(tmp_path, {"seed": 1}, {"seed": 2}, defaults={"command": "true", "env_id": "e"})
    assert [r.run_id for r in items] == ["20250304-050607_e_seed1", "20250304-050607_e_seed2"]
    assert items[0].run_dir == "/profile/outputs/20250304-050607_e_seed1"


def test_placeholders_in_command_string_are_quoted(tmp_path):
    (run,) = runs(tmp_path, {"run_id": "r1", "prompt": "a b; rm -rf /", "n": 3,
                             "command": "python x.py --prompt {prompt} --n {n} --out {run_dir}/o.json"
                                        " --id {run_id} --cfg {cfg}",
                             "cfg": {"k": [1, 2]}})
    argv = shlex.split(run.command)
    assert argv[argv.index("--prompt") + 1] == "a b; rm -rf /"
    assert "'a b; rm -rf /'" in run.command
    assert argv[argv.index("--out") + 1] == "/profile/outputs/r1/o.json"
    assert argv[argv.index("--cfg") + 1] == '{"k":[1,2]}'
    assert "--id r1" in run.command and "--n 3" in run.command


def test_placeholders_in_list_form_and_every_value(tmp_path):
    (run,) = runs(tmp_path, {"run_id": "r_{seed}", "seed": 4, "note": ["{seed}", {"d": "{run_id}"}],
                             "command": ["python", "x.py", "--msg", "{greeting} {seed}", "--repo", "{remote_repo}"],
                             "greeting": "hi; echo", "env": {"OUT": "{run_dir}/w", "SEED": "{seed}"}})
    assert shlex.split(run.command) == ["python", "x.py", "--msg", "hi; echo 4", "--repo", "/profile/repo"]
    assert dict(run.env) == {"OUT": "/profile/outputs/r_4/w", "SEED": "4"}
    assert run.config["note"] == ["4", {"d": "r_4"}]


def test_braces_escapes_json_literals_and_shell_expansions_are_not_placeholders(tmp_path):
    (run,) = runs(tmp_path, {"run_id": "r", "seed": 1, "env": {"HF_TOKEN": "hf_x"},
                             "command": """python -c 'print({"a": 1})' {{seed}} {seed} {{unknown}} ${HOME}"""})
    assert run.command == """python -c 'print({"a": 1})' {seed} 1 {unknown} ${HOME}"""
    assert fill_placeholders("{a}{{a}}{a", {"a": "x y"}, quote=True) == "'x y'{a}{a"
    nested = """python -c 'print({"a": {"b": 1}})' {a}"""
    assert fill_placeholders(nested, {"a": "v"}, quote=True) == """python -c 'print({"a": {"b": 1}})' v"""
    assert fill_placeholders("{a}", {"a": "{a}"}, quote=False) == "{a}"  # filled once, no recursion


def test_entrypoint_flag_rendering(tmp_path):
    line = render_entrypoint("python 'my eval.py'", {"num_examples": 5, "do_sample": True, "greedy": False,
                                                     "split": None,
                                                     "stop": ["a", "b"], "sampling": {"t": 0.7}, "name": "x y",
                                                     "gpus": 1, "timeout": "1h"}, "/o/r")
    assert shlex.split(line) == ["python", "my eval.py", "--num-examples", "5", "--do-sample", "--stop", '["a","b"]',
                                 "--sampling", '{"t":0.7}', "--name", "x y", "--run-dir", "/o/r"]
    (run,) = runs(tmp_path, {"run_id": "r", "entrypoint": "python {script}", "script": "a b.py", "z": 1},
                  defaults={"a": 1})
    assert shlex.split(run.command) == ["python", "a b.py", "--a", "1", "--script", "a b.py", "--z", "1",
                                        "--run-dir", "/profile/outputs/r"]


def test_run_dir_override(tmp_path):
    items = runs(tmp_path, {"run_id": "a", "run_dir": "group/{run_id}"}, {"run_id": "b", "run_dir": "x//{seed}/"},
                 defaults={"entrypoint": "e", "seed": 2})
    assert [r.run_dir for r in items] == ["/profile/outputs/group/a", "/profile/outputs/x/2"]
    assert items[0].command.endswith("--run-dir /profile/outputs/group/a")
    refused(tmp_path, {"runs": [{"command": "x", "run_dir": "../escape"}]}, "run 0", "run_dir", "'..'")
    refused(tmp_path, {"runs": [{"command": "x", "run_dir": "."}]}, "outputs root")
    refused(tmp_path, {"runs": [{"command": "x", "run_dir": ".ops/x"}]}, "queue's own folder")
    refused(tmp_path, {"remote_outputs_dir": "/work/repo/out", "remote_repo": "/work/repo",
                       "runs": [{"command": "x", "run_dir": ".."}]}, "'..'")
    refused(tmp_path, {"runs": [{"run_id": "a", "command": "x"}, {"run_id": "b", "command": "x", "run_dir": "a/sub"}]},
            "run 1", "inside run 0")


def test_csv_config_and_runs_csv(tmp_path):
    (tmp_path / "sweep.csv").write_text(
        "run_id,command,seed,temperature,greedy,model_id,tag,gpus\n"
        "s1,echo {seed},1,0.7,true,Qwen/Qwen3-4B,007,\n"
        "s2,echo {seed},2,1e-3,FALSE,m,x,2\n")
    sub = load_submission(tmp_path / "sweep.csv", profile=PROFILE, now=NOW)
    first, second = sub.runs
    assert (sub.remote_repo, sub.tmux_session) == ("/profile/repo", "pilots")
    assert first.config["seed"] == 1 and first.config["temperature"] == 0.7 and first.config["greedy"] is True
    assert first.config["tag"] == "007" and "gpus" not in first.config and first.gpus is None
    assert second.config["temperature"] == 0.001 and second.config["greedy"] is False and second.gpus == 2
    assert first.command == "echo 1"
    combined = load(tmp_path, {"defaults": {"label": "L"}, "runs": [{"run_id": "j", "command": "true"}],
                               "runs_csv": "sweep.csv"})
    assert [r.run_id for r in combined.runs] == ["j", "s1", "s2"] and combined.runs[2].label == "L"
    (tmp_path / "bad.csv").write_text("run_id,command\nx y,true\n")
    with pytest.raises(ConfigError, match=r"bad\.csv line 2.*run_id must match"):
        load_submission(tmp_path / "bad.csv", profile=PROFILE)


def test_bad_json_names_line_and_column(tmp_path):
    path = write(tmp_path, '{\n  "runs": [\n    {"run_id": "a",}\n  ]\n}')
    with pytest.raises(ConfigError) as caught:
        load_submission(path, profile=PROFILE)
    assert str(caught.value).startswith(f"{path}:3:20: invalid JSON: ")
    with pytest.raises(ConfigError, match="no such file"):
        load_submission(tmp_path / "missing.json", profile=PROFILE)


@pytest.mark.parametrize("data, expected", [
    ({"runs": [{"command": "x"}], "remotes_repo": "/r"}, ["unknown top-level key 'remotes_repo'"]),
    ({"runs": []}, ["runs must be a non-empty list"]),
    ({"runs": [{"run_id": "same", "command": "x"}, {"run_id": "same", "command": "y"}]},
     ["duplicate run_id 'same'", "run 0", "run 1"]),
    ({"runs": [{"run_id": "k", "command": "x", "matrix": {"seed": [1, 2]}}]},
     ["duplicate run_id 'k'", "seed=1", "seed=2"]),
    ({"runs": [{"run_id": "bad id!", "command": "x"}]}, ["run 0 ('bad id!')", "run_id must match"]),
    ({"runs": [{"run_id": "-x", "command": "x"}]}, ["run_id must match"]),
    ({"runs": [{"run_id": "a", "seed": 1}]}, ["run 0 ('a')", "no command"]),
    ({"runs": [{"run_id": "a", "command": "x", "entrypoint": "y"}]}, ["run 0 ('a')", "both command and entrypoint"]),
    ({"runs": [{"run_id": "a", "command": ["x", 1]}]}, ["command must be a string or a non-empty list"]),
    ({"runs": [{"run_id": "a", "command": "x", "gpus": True}]}, ["run 0 ('a')", "gpus must be a whole number"]),
    ({"runs": [{"run_id": "a", "command": "x", "gpus": -1}]}, ["gpus"]),
    ({"runs": [{"run_id": "a", "command": "x", "retries": 1.5}]}, ["retries"]),
    ({"runs": [{"run_id": "a", "command": "x", "retry_on": ["oom", "bogus"]}]},
     ["retry_on must be a list of failure classes"]),
    ({"runs": [{"run_id": "a", "command": "x", "timeout": "5 minutes"}]}, ["timeout must be a number of seconds"]),
    ({"runs": [{"run_id": "a", "command": "x", "stall_timeout": 0}]}, ["stall_timeout"]),
    ({"runs": [{"run_id": "a", "command": "x", "env": {"BAD-NAME": "1"}}]}, ["'BAD-NAME' is not a valid environment"]),
    ({"runs": [{"run_id": "a", "command": "x", "env": {"A": [1]}}]}, ["env.A must be a string"]),
    ({"runs": [{"run_id": "a", "command": "x", "bad-key": 1}]}, ["key 'bad-key' is not a valid name"]),
    ({"runs": [{"run_id": "a", "command": "x", "note": "a\u0000b"}]}, ["note", "NUL"]),
    ({"runs": [{"run_id": "a", "command": "x", "label": 3}]}, ["label"]),
    ({"runs": ["not an object"]}, ["run 0: expected an object"]),
    ({"tmux_session": "a:b", "runs": [{"command": "x"}]}, ["tmux_session"]),
])
def test_invalid_configs_are_refused_whole(tmp_path, data, expected):
    assert str(tmp_path / "runs.json") in refused(tmp_path, data, *expected)


def test_durations_and_retries(tmp_path):
    assert [parse_duration(v, "timeout", "w") for v in (90, "90", "90s", "30m", "2h", "1h30m", None)] == \
        [90.0, 90.0, 90.0, 1800.0, 7200.0, 5400.0, None]
    (run,) = runs(tmp_path, {"run_id": "a", "command": "x", "timeout": "1h", "stall_timeout": 600, "retries": 2,
                             "retry_on": ["oom", "nccl"], "retry_backoff": "30s", "gpus": 0, "label": "pilot"})
    assert (run.timeout, run.stall_timeout, run.retries, run.retry_on, run.retry_backoff, run.gpus, run.label) == \
        (3600.0, 600.0, 2, ("oom", "nccl"), 30.0, 0, "pilot")


def test_secrets_masked_in_config_and_shown_but_kept_in_env(tmp_path):
    (run,) = runs(tmp_path, {"run_id": "a", "command": "x", "env": {"HF_TOKEN": "hf_canary", "MY_PASSWORD": "pw"}},
                  defaults={"env": {"WANDB_API_KEY": "wb_canary", "PLAIN": "1"}})
    assert dict(run.env) == {"HF_TOKEN": "hf_canary", "MY_PASSWORD": "pw", "PLAIN": "1", "WANDB_API_KEY": "wb_canary"}
    assert run.config["env"] == {"HF_TOKEN": "***", "MY_PASSWORD": "***", "PLAIN": "1", "WANDB_API_KEY": "***"}
    shown = json.dumps(run.shown())
    assert "canary" not in shown and '"pw"' not in shown and "canary" in json.dumps(run.to_dict())


# ---------------------------------------------------------------- keys, placeholders, depth


@pytest.mark.parametrize("typo, intended", [("timout", "timeout"), ("stal_timeout", "stall_timeout"),
                                            ("retrys", "retries"), ("gpu", "gpus"), ("envs", "env")])
def test_a_key_one_typo_from_a_run_setting_is_refused_naming_it(tmp_path, typo, intended):
    refused(tmp_path, {"runs": [{"run_id": "a", "entrypoint": "python e.py", typo: "5m"}]},
            "run 0 ('a')", f"key {typo!r} is not a run setting", f"did you mean {intended!r}", '"flags"')


def test_a_key_declared_in_flags_stays_a_flag_and_ordinary_flags_are_untouched(tmp_path):
    (run,) = runs(tmp_path, {"run_id": "a", "entrypoint": "python e.py", "gpu": "a100", "flags": ["gpu"],
                             "metric": "acc", "n_gpus": 2, "max_retries": 3, "max_tokens": 512, "tokenizer": "t"})
    assert shlex.split(run.command) == ["python", "e.py", "--gpu", "a100", "--metric", "acc", "--n-gpus", "2",
                                        "--max-retries", "3", "--max-tokens", "512", "--tokenizer", "t",
                                        "--run-dir", "/profile/outputs/a"]
    refused(tmp_path, {"runs": [{"run_id": "a", "command": "x", "flags": "gpu"}]}, "flags must be a list")


@pytest.mark.parametrize("key", ["hf_token", "api_key", "openai_api_key", "wandb_apikey", "db_password"])
def test_a_secret_named_key_is_refused_and_pointed_at_env(tmp_path, key):
    message = refused(tmp_path, {"runs": [{"run_id": "a", "entrypoint": "python e.py", key: "hf_canaryABC",
                                           "flags": [key]}]}, f"key {key!r} names a secret", "env")
    assert "hf_canaryABC" not in message


def test_an_unknown_placeholder_is_refused_naming_the_run_and_the_known_names(tmp_path):
    message = refused(tmp_path, {"runs": [{"run_id": "a", "model_id": "m", "command": "eval --model {modle_id}"}]},
                      "run 0 ('a')", "unknown placeholder {modle_id}", "model_id", "run_dir")
    assert "{{modle_id}}" in message  # and how to write a literal one
    refused(tmp_path, {"runs": [{"run_id": "a-{sed}", "seed": 1, "command": "x"}]}, "{sed}")
    refused(tmp_path, {"runs": [{"run_id": "a", "command": "x", "env": {"OUT": "{outdir}/x"}}]}, "{outdir}")


def test_a_run_dir_must_be_relative_to_the_outputs_root(tmp_path):
    for run_dir in ("/root/.ssh", "/etc", "/profile/outputs/a"):
        refused(tmp_path, {"runs": [{"run_id": "a", "command": "x", "run_dir": run_dir}]},
                "run_dir must be relative to the outputs root")


def test_a_config_nested_deeper_than_anyone_writes_is_one_error(tmp_path):
    deep = '{"runs": [{"run_id": "a", "command": "x", "note": ' + "[" * 600 + "]" * 600 + "}]}"
    refused(tmp_path, deep, "nested deeper than")
    refused(tmp_path, '{"runs": ' + "[" * 100000 + "]" * 100000 + "}", "nested deeper than")


def test_local_runs_in_the_project_directory_by_default(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    local = resolve_profile({}, "local", project)
    path = write(tmp_path, {"runs": [{"run_id": "a", "command": "x"}]})
    assert load_submission(path, profile=local).remote_repo == str(project.resolve())
    dotted = write(tmp_path, {"remote_repo": ".", "runs": [{"run_id": "a", "command": "x"}]}, name="dot.json")
    assert load_submission(dotted, profile=local, project_dir=project).remote_repo == str(project.resolve())


# ---------------------------------------------------------------- workload keys (summary_from, stop_signal, ...)


def test_workload_keys_reach_the_pod_checked_and_are_no_flags_of_the_entrypoint(tmp_path):
    run, = runs(tmp_path, {"run_id": "a", "entrypoint": "python3 train.py", "summary_from": "lm_eval",
                           "summary_metric": "exact_match,strict-match", "stop_signal": "sigint", "stop_grace": "30s",
                           "metrics_from_log": r"iter (?P<iter>\d+): loss (?P<loss>[\d.]{1,8})",
                           "meta": {"purpose": "sweep {run_id}"}})
    sent = run.to_dict()
    assert (sent["summary_from"], sent["stop_signal"], sent["stop_grace"]) == ("lm_eval", "INT", 30.0)
    assert sent["summary_metric"] == "exact_match,strict-match" and sent["meta"] == {"purpose": "sweep a"}
    assert sent["metrics_from_log"] == r"iter (?P<iter>\d+): loss (?P<loss>[\d.]{1,8})"  # braces are no placeholder
    assert "--summary-from" not in run.command and "--stop-signal" not in run.command
    assert "summary_from" not in runs(tmp_path, {"run_id": "b", "command": "x"})[0].to_dict()


def test_a_users_own_summary_function_is_named_python_module_function(tmp_path):
    run, = runs(tmp_path, {"run_id": "a", "command": "x", "summary_from": "python:my_pkg.summaries:summarize"})
    assert run.to_dict()["summary_from"] == "python:my_pkg.summaries:summarize"


@pytest.mark.parametrize("key, value, expected", [
    ("summary_from", "vf-eval", "summary_from must be verifiers, lm_eval or python:module:function"),
    ("summary_from", "python:mod", "python:module:function"),
    ("summary_from", "python:mod:fn; rm -rf /", "python:module:function"),
    ("stop_signal", "SIGSTOP", "stop_signal must be one of INT, TERM"),
    ("stop_signal", 2, "stop_signal must be one of"),
    ("stop_grace", "soon", "stop_grace must be a number of seconds"),
    ("stop_grace", ".inf", "stop_grace must be a number of seconds"),
    ("metrics_from_log", "iter (?P<iter>\\d+", "metrics_from_log 'iter (?P<iter>\\\\d+' does not compile"),
    ("metrics_from_log", "loss ([\\d.]+)", "named groups"),
    ("summary_metric", "", "summary_metric must be a metric name"),
    ("meta", ["a"], "meta must be an object"),
    ("meta", {"wandb_api_key": "k"}, "meta.wandb_api_key names a secret"),
])
def test_a_bad_workload_value_is_refused_naming_it(tmp_path, key, value, expected):
    refused(tmp_path, {"runs": [{"run_id": "a", "command": "x", key: value}]}, "run 0 ('a')", expected)


def test_a_workload_key_at_the_top_is_every_runs_unless_a_run_says_otherwise(tmp_path):
    first, second = load(tmp_path, {"summary_from": "verifiers", "stop_signal": "INT", "runs": [
        {"run_id": "a", "command": "x"}, {"run_id": "b", "command": "x", "summary_from": "lm_eval"}]}).runs
    assert (first.to_dict()["summary_from"], first.to_dict()["stop_signal"]) == ("verifiers", "INT")
    assert second.to_dict()["summary_from"] == "lm_eval"
    refused(tmp_path, {"summary_from": "nope", "runs": [{"run_id": "a", "command": "x"}]}, "summary_from must be")


# ---------------------------------------------------------------- flag and value styles, meta


def one_run(tmp_path, defaults=None, **run):
    return runs(tmp_path, {"run_id": "r", **run}, defaults=defaults)[0]


def test_each_flag_style_writes_the_entrypoints_flags_its_way(tmp_path):
    keys = {"entrypoint": "python train.py", "batch_size": 8, "compile": True}
    assert one_run(tmp_path, **keys).command == (
        "python train.py --batch-size 8 --compile --run-dir /profile/outputs/r")
    assert one_run(tmp_path, flag_style="--key=value", value_style="python", **keys).command == (
        "python train.py --batch_size=8 --compile=True --run_dir=/profile/outputs/r")
    assert one_run(tmp_path, flag_style="key=value", value_style="python", **keys).command == (
        "python train.py batch_size=8 compile=True run_dir=/profile/outputs/r")


def test_value_styles_write_booleans_and_null_as_json_python_or_bare_flags(tmp_path):
    keys = {"entrypoint": "e", "on": True, "off": False, "none": None, "ids": [1, None]}
    tail = " --run-dir /profile/outputs/r"
    assert one_run(tmp_path, value_style="json", **keys).command == (
        "e --on true --off false --none null --ids '[1,null]'" + tail)
    assert one_run(tmp_path, value_style="python", **keys).command == (
        "e --on True --off False --none None --ids '[1, None]'" + tail)
    assert one_run(tmp_path, value_style="flag", **keys).command == "e --on --ids '[1,null]'" + tail
    # A per-key style beats the run's; the run's beats the defaults'.
    run = one_run(tmp_path, defaults={"value_style": "json"}, value_style="flag",
                  styles={"off": {"value_style": "python"}}, **keys)
    assert run.command == "e --on --off False --ids '[1,null]'" + tail


def test_a_placeholder_takes_the_value_style_of_its_key_or_the_one_it_names(tmp_path):
    command = "python t.py a={w} b={w!python} c={w!json} d={w!r} e={w}"
    assert one_run(tmp_path, command=command, w=False).command == (
        "python t.py a=false b=False c=false d={w!r} e=false")  # {w!r} is not a placeholder: text
    assert one_run(tmp_path, command=command, w=False, value_style="python").command == (
        "python t.py a=False b=False c=false d={w!r} e=False")
    assert one_run(tmp_path, command="t {w} {n}", w=True, n=None, styles={"n": {"value_style": "python"}}).command == (
        "t true None")
    assert fill_placeholders("{x!python} {x}", {"x": None}, quote=False, value_styles={"x": "python"}) == "None None"


@pytest.mark.parametrize("bad, fragment", [
    ({"flag_style": "--key:value"}, "flag_style must be one of '--key value', '--key=value', 'key=value'"),
    ({"value_style": "yaml"}, "value_style must be one of 'json', 'python', 'flag', got 'yaml'"),
    ({"styles": {"wandb_log": {"value_style": "Python"}}}, "styles.wandb_log.value_style must be one of"),
    ({"styles": {"wandb_lg": {"value_style": "python"}}}, "styles.wandb_lg names no flag, placeholder or meta key"),
    ({"styles": {"wandb_log": {"quote": "always"}}}, "styles.wandb_log must be an object of flag_style"),
    ({"styles": ["wandb_log"]}, "styles must be an object"),
    ({"flag_style": "key=value", "value_style": "flag"}, "value_style \"flag\" needs a flag style with '--'"),
])
def test_a_bad_style_is_refused_naming_the_key(tmp_path, bad, fragment):
    run = {"run_id": "r", "entrypoint": "python train.py", "wandb_log": False, **bad}
    refused(tmp_path, {"runs": [run]}, fragment, "run 0 ('r')")


def test_a_boolean_a_python_configurator_would_read_as_text_is_warned_naming_run_key_and_fix(tmp_path):
    key_value = one_run(tmp_path, entrypoint="python train.py", flag_style="key=value", wandb_log=False)
    placeholder = one_run(tmp_path, command="python train.py wandb_log={wandb_log}", wandb_log=False)
    named = one_run(tmp_path, command="python train.py configurator.py {wandb_log}", wandb_log=True)
    for run in (key_value, placeholder, named):
        assert len(run.warnings) == 1
        assert "('r')" in run.warnings[0] and "wandb_log" in run.warnings[0]
        assert '"value_style": "python"' in run.warnings[0]
    assert "'false'" in key_value.warnings[0] and "'true'" in named.warnings[0]


def test_no_warning_where_the_boolean_reaches_the_command_as_meant(tmp_path):
    quiet = [
        one_run(tmp_path, entrypoint="python train.py", wandb_log=False),  # argparse: left out
        one_run(tmp_path, entrypoint="python train.py", flag_style="key=value", value_style="python", wandb_log=False),
        one_run(tmp_path, command="python train.py wandb_log={wandb_log!json}", wandb_log=False),  # chosen
        one_run(tmp_path, command="python train.py wandb_log={wandb_log}", wandb_log=False,
                styles={"wandb_log": {"value_style": "python"}}),
        one_run(tmp_path, command="WANDB={wandb_log} python train.py --log {wandb_log}", wandb_log=False),
    ]
    assert [run.warnings for run in quiet] == [()] * len(quiet)


def test_meta_keys_are_placeholders_and_metadata_never_flags(tmp_path):
    run = one_run(tmp_path, defaults={"meta": {"team": "evals", "note": "d"}}, entrypoint="python e.py --tag {team}",
                  seed=1, meta={"note": "seed {seed} of {team}"})
    assert run.command == "python e.py --tag evals --seed 1 --run-dir /profile/outputs/r"
    assert run.config["meta"] == {"team": "evals", "note": "seed 1 of evals"}
    assert dict(run.workload)["meta"] == {"team": "evals", "note": "seed 1 of evals"}


def test_a_meta_key_that_is_also_a_key_of_the_run_is_refused(tmp_path):
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "t {seed}", "seed": 1, "meta": {"seed": 2}}]},
            "meta.seed is also a key of the run")
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "t", "meta": {"run_dir": "x"}}]}, "meta.run_dir")


def test_what_a_key_is_is_one_rule():
    run = {"seed": 1, "gpus": 1, "meta": {"team": "x"}}
    assert [key_role(key, run) for key in ("seed", "gpus", "meta", "team", "flag_style", "styles")] == [
        "flag", "reserved", "reserved", "metadata", "reserved", "reserved"]


# ---------------------------------------------------------------- campaigns' run-side gates (issue 16)


def test_every_run_has_a_wall_clock_and_a_stall_budget_unless_it_says_null(tmp_path):
    plain, set_here, unlimited = runs(tmp_path, {"run_id": "a", "command": "x"},
                                      {"run_id": "b", "command": "x", "timeout": "2h", "stall_timeout": 60},
                                      {"run_id": "c", "command": "x", "timeout": None})
    assert (plain.timeout, plain.stall_timeout) == (24 * 3600.0, 30 * 60.0) and plain.warnings == ()
    assert (set_here.timeout, set_here.stall_timeout) == (7200.0, 60.0)
    assert (unlimited.timeout, unlimited.stall_timeout) == (None, 30 * 60.0)
    assert len(unlimited.warnings) == 1 and "timeout: null" in unlimited.warnings[0] and "('c')" in unlimited.warnings[0]
    # In defaults, null opts every run out (and each says so).
    assert [r.timeout for r in runs(tmp_path, {"run_id": "d", "command": "x"}, defaults={"timeout": None})] == [None]


def test_a_hosts_profile_sets_its_runs_budgets_and_a_bad_one_is_refused_naming_it(tmp_path):
    ops = {"profiles": {"slow": {"destination": "root@10.0.0.1:22", "remote_repo": "/r", "run_timeout": 3 * 86400,
                                 "run_stall_timeout": 7200}}}
    slow = resolve_profile(ops, "slow", tmp_path)
    plain, own = load(tmp_path, {"runs": [{"run_id": "a", "command": "x"},
                                          {"run_id": "b", "command": "x", "timeout": "1h"}]}, profile=slow).runs
    assert (plain.timeout, plain.stall_timeout) == (3 * 86400.0, 7200.0)  # the host's, not the built-in 24 h
    assert (own.timeout, own.stall_timeout) == (3600.0, 7200.0)  # a run's own budget wins
    for key, value in (("run_timeout", 0), ("run_stall_timeout", -5), ("run_timeout", "a day")):
        with pytest.raises(ConfigError) as caught:
            resolve_profile({"profiles": {"bad": {"destination": "root@10.0.0.1:22", key: value}}}, "bad", tmp_path)
        assert key in str(caught.value) and caught.value.exit_code == 2


@pytest.mark.parametrize("typo, intended", [("expct", "expect"), ("out_mod", "out_mode"),
                                            ("expect_comit", "expect_commit"), ("sync_intervl", "sync_interval")])
def test_a_typo_of_a_gate_key_is_refused_naming_it(tmp_path, typo, intended):
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", typo: 1}]}, f"did you mean {intended!r}")


def test_expect_is_checked_before_any_contact(tmp_path):
    def refuses(expect, *text):
        refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "expect": expect}]}, *text)

    refuses({"file": ["ckpt.pt"]}, "expect.file is not known")
    refuses({"files": ["/root/.ssh/id_rsa"]}, "inside the run directory")
    refuses({"files": ["../other/ckpt.pt"]}, "inside the run directory")
    refuses({"log_matches": "(unclosed"}, "expect.log_matches '(unclosed' does not compile")
    refuses({"wandb_synced": "yes"}, "expect.wandb_synced must be true or false")
    refuses(["ckpt.pt"], "expect must be an object")


def test_expect_merges_with_defaults_and_its_regexes_are_never_placeholders(tmp_path):
    run = one_run(tmp_path, defaults={"expect": {"files": ["ckpt.pt"]}}, command="x",
                  expect={"log_matches": r"step \d{3}"})
    assert dict(run.workload)["expect"] == {"files": ["ckpt.pt"], "log_matches": [r"step \d{3}"]}


def test_local_sync_gives_the_command_its_folder_on_the_pods_disk_and_keeps_the_run_on_the_volume(tmp_path):
    run = one_run(tmp_path, out_mode="local_sync", entrypoint="python t.py", command=None)
    assert run.run_dir == "/profile/outputs/r"
    assert run.command == "python t.py --run-dir /tmp/ops-runs/r"
    assert {k: v for k, v in run.workload} == {"out_mode": "local_sync", "sync_interval": 60.0,
                                               "local_dir": "/tmp/ops-runs"}
    placed = one_run(tmp_path, out_mode="local_sync", local_dir="/scratch/runs", sync_interval="5m",
                     command="python t.py --out {run_dir}")
    assert placed.command == "python t.py --out /scratch/runs/r" and dict(placed.workload)["sync_interval"] == 300.0


def test_local_sync_settings_are_refused_where_they_cannot_work(tmp_path):
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "sync_interval": 5}]}, "local_sync\" only")
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "out_mode": "s3"}]}, "out_mode must be one of")
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "out_mode": "local_sync",
                                 "local_dir": "/profile/outputs/local"}]}, "must be outside the outputs root")
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "out_mode": "local_sync", "local_dir": "rel"}]},
            "local_dir must be an absolute path")


def test_expect_commit_is_a_commit_id_or_null(tmp_path):
    assert dict(one_run(tmp_path, command="x", expect_commit="ABCDEF1").workload)["expect_commit"] == "abcdef1"
    assert dict(one_run(tmp_path, command="x", expect_commit=None).workload) == {"expect_commit": None}
    refused(tmp_path, {"runs": [{"run_id": "r", "command": "x", "expect_commit": "main"}]},
            "expect_commit must be a commit id")


def test_a_runs_identity_is_what_it_computes_not_how_it_is_watched(tmp_path):
    base = {"run_id": "r", "command": "python t.py --lr {lr}", "lr": 0.1, "env": {"A": "1", "HF_TOKEN": "s1"}}
    same = [one_run(tmp_path, **{**base, **change}).identity() for change in
            ({}, {"timeout": "1h", "retries": 3, "label": "again", "expect": {"files": ["x"]}},
             {"env": {"A": "1", "HF_TOKEN": "another secret"}})]
    assert same[0] == same[1] == same[2]
    assert "s1" not in json.dumps(same[0])
    other = [one_run(tmp_path, **{**base, **change}).identity() for change in
             ({"lr": 0.2}, {"env": {"A": "2", "HF_TOKEN": "s1"}}, {"env": {"A": "1", "HF_TOKEN": "s1", "B": "x"}})]
    assert all(identity != same[0] for identity in other)
