"""Pure pieces: destination parsing, profile precedence, quoting, JSON from bash, redaction."""

import json
import subprocess

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.scripts import render_script, scripts_dir, shell_value
from ops_tasks.secrets import redact
from ops_tasks.settings import Destination, check_ops_config, parse_destination, resolve_profile


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ("OPS_DEFAULT_HOST", "OPS_REMOTE_OUTPUTS_DIR", "OPS_REMOTE_REPO", "OPS_PROJECT_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config: bare aliases are unknown


@pytest.mark.parametrize("text, expected", [
    ("gpu.example.com", Destination("gpu.example.com")),
    ("root@10.0.0.1", Destination("10.0.0.1", "root")),
    ("ubuntu@h.example:2222", Destination("h.example", "ubuntu", 2222)),
    ("root@[::1]:22", Destination("::1", "root", 22)),
])
def test_destinations_parse(text, expected):
    assert parse_destination(text) == expected


PROFILES = {"profiles": {"a100": {"destination": "root@10.1.2.3:2200", "volume": "/data", "remote_repo": "/data/repo"}}}


def test_profile_fields_and_derived_outputs_dir(tmp_path):
    profile = resolve_profile(PROFILES, "a100", tmp_path)
    assert (profile.destination, profile.volume, profile.outputs_dir) == ("root@10.1.2.3:2200", "/data", "/data/pod_artifacts/outputs")
    assert profile.connect_timeout == 10.0 and profile.volume_must_be_mount


def test_host_precedence_flag_then_env_then_config_then_lium(tmp_path, monkeypatch):
    ops = {**PROFILES, "default_host": "a100"}
    assert resolve_profile(ops, None, tmp_path).name == "a100"
    monkeypatch.setenv("OPS_DEFAULT_HOST", "local")
    assert resolve_profile(ops, None, tmp_path).name == "local"
    assert resolve_profile(ops, "a100", tmp_path).name == "a100"
    monkeypatch.delenv("OPS_DEFAULT_HOST")
    with pytest.raises(ConfigError, match="'lium'"):
        resolve_profile(PROFILES, None, tmp_path)


def test_env_overrides_profile_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_REMOTE_OUTPUTS_DIR", "/scratch/out")
    monkeypatch.setenv("OPS_REMOTE_REPO", "/scratch/repo")
    profile = resolve_profile(PROFILES, "a100", tmp_path)
    assert (profile.outputs_dir, profile.remote_repo) == ("/scratch/out", "/scratch/repo")


def test_project_env_file_is_a_default_only(tmp_path, monkeypatch):
    env_file = tmp_path / "p.env"
    env_file.write_text("export OPS_REMOTE_OUTPUTS_DIR=/from/file\nOPS_REMOTE_REPO='/repo from file'\n")
    monkeypatch.setenv("OPS_PROJECT_ENV", str(env_file))
    monkeypatch.setenv("OPS_REMOTE_REPO", "/from/env")
    profile = resolve_profile(PROFILES, "a100", tmp_path)
    assert (profile.outputs_dir, profile.remote_repo) == ("/from/file", "/from/env")


def test_local_profile_is_built_in_and_may_be_adjusted(tmp_path):
    local = resolve_profile({}, "local", tmp_path)
    assert local.is_local and local.volume == str(tmp_path.resolve() / ".local-pod" / "mnt")
    assert local.tmux_socket == "ops-local" and not local.volume_must_be_mount
    moved = resolve_profile({"profiles": {"local": {"volume": "vol"}}}, "local", tmp_path)
    assert moved.volume == str(tmp_path.resolve() / "vol") and moved.tmux_socket == "ops-local"


@pytest.mark.parametrize("ops, message", [
    ({"profiles": {"x": {"strict_host_keys": "no"}}}, "ops.profiles.x.strict_host_keys must be true or false"),
    ({"profiles": {"x": {"connect_timeout": True}}}, "ops.profiles.x.connect_timeout must be a number"),
    ({"profiles": {"x": {"connect_timeout": 0}}}, "connect_timeout must be positive"),
    ({"profiles": {"x": {"volume": "mnt"}}}, "ops.profiles.x.volume must be an absolute path"),
    ({"profiles": ["x"]}, "ops.profiles must be a mapping"),
    ({"profiles": {"x": "root@h"}}, "ops.profiles.x must be a mapping"),
    ({"hosts": {}}, "unknown key ops.hosts"),
])
def test_bad_config_is_named(ops, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_ops_config(ops)


HOSTILE = ["it's", '"$(touch /tmp/ops-pwned)"', "`id`", "a b\nc", "$HOME", "-rf", "", "é ünï"]


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_values_reach_bash_verbatim(value):
    out = subprocess.run(["bash", "-c", f"x={shell_value(value)}; printf %s \"$x\""], capture_output=True, text=True)
    assert out.stdout == value


def test_lists_become_bash_arrays():
    out = subprocess.run(["bash", "-c", f"x={shell_value(HOSTILE)}; printf '%s|' \"${{x[@]}}\""], capture_output=True, text=True)
    assert out.stdout == "|".join(HOSTILE) + "|"


def test_json_helpers_of_remote_scripts_escape_everything():
    library = (scripts_dir() / "lib.sh").read_text()
    nasty = 'quote " backslash \\ tab \t newline \n bell \a end'
    script = (
        f"{library}\nv={shell_value(nasty)}\n"
        'json_str s "$v"; json_num n 12.5; json_num bad 12x; json_bool b 1; json_strs a x "$v"\n'
        'printf \'{"s":%s,"n":%s,"bad":%s,"b":%s,"a":%s}\' "$s" "$n" "$bad" "$b" "$a"'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    document = json.loads(out.stdout)
    assert document == {"s": nasty.replace("\a", ""), "n": 12.5, "bad": None, "b": True, "a": ["x", nasty.replace("\a", "")]}


def test_rendered_script_carries_inputs_quoted_above_the_body():
    script = render_script("pod_status.sh", volume="/mnt/it's here", tmux_socket=None)
    inputs = script.split("# ---- inputs (each value shell-quoted)\n", 1)[1].split("# ---- pod_status.sh", 1)[0]
    assert inputs.splitlines() == ["volume='/mnt/it'\"'\"'s here'", "tmux_socket=''"]


def test_render_refuses_input_names_that_are_not_shell_names():
    with pytest.raises(ValueError):
        render_script("pod_status.sh", **{"PATH": "/evil"})


def test_redact_masks_secret_values_from_the_environment(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-123")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-456789")
    monkeypatch.setenv("NOT_SENSITIVE", "visible-value")
    text = "key=wandb-secret-123 token=tok-456789 other=visible-value"
    assert redact(text) == "key=*** token=*** other=visible-value"


def test_local_target_streams_stderr_while_collecting_stdout(tmp_path):
    from ops_tasks.targets import LocalTarget

    target = LocalTarget(resolve_profile({}, "local", tmp_path))
    chunks = []
    result = target.run_script("echo progress >&2; echo '{\"ok\": true}'; exit 3", on_stderr=chunks.append)
    assert (result.stdout, result.exit_code) == ('{"ok": true}\n', 3)
    assert b"".join(chunks) == b"progress\n" and result.stderr == "progress\n"
