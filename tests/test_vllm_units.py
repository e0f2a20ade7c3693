"""The pure parts of the vllm tasks: flags to ServerSpec, argv, env file, launcher, phases,
failure causes; and bad input refused with exit 2 before any contact."""

import subprocess

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations.vllm import StartupProgress, classify_failure, launcher_text, phase_of
from ops_tasks.operations.vllm_spec import build_spec, env_file_text, normalize_base_url, server_argv
from ops_tasks.settings import check_ops_config
from ops_tasks.testing.pods import free_port


def test_flags_win_over_profile_defaults_and_env_merges():
    spec = build_spec(
        {"model_id": "m", "port": "9000", "env": ["HF_TOKEN=t0ken", "HF_HOME=/mnt/other"]},
        {"port": 8001, "max_model_len": 4096, "env": {"HF_HOME": "/mnt/hf", "VLLM_LOGGING_LEVEL": "DEBUG"}},
    )
    assert spec.port == 9000 and spec.max_model_len == 4096
    assert dict(spec.env) == {"HF_TOKEN": "t0ken", "HF_HOME": "/mnt/other", "VLLM_LOGGING_LEVEL": "DEBUG"}
    assert spec.env_shown()["HF_TOKEN"] == "***"


@pytest.mark.parametrize("options, message", [
    ({}, "--model-id is required"),
    ({"model_id": "m", "port": "abc"}, "--port must be a whole number"),
    ({"model_id": "m", "port": "70000"}, "--port must be at most 65535"),
    ({"model_id": "m", "tensor_parallel_size": "0"}, "--tensor-parallel-size must be at least 1"),
    ({"model_id": "m", "gpu_memory_utilization": "1.5"}, "--gpu-memory-utilization must be in (0, 1]"),
    ({"model_id": "m", "dtype": "fp7"}, "--dtype must be one of"),
    ({"model_id": "m", "session": "a:b"}, "--session must be"),
    ({"model_id": "-m"}, "--model-id"),
    ({"model_id": "m\nrm -rf /"}, "--model-id"),
    ({"model_id": "m", "env": ["NOT_SET_ANYWHERE"]}, "--env NOT_SET_ANYWHERE: not set here"),
    ({"model_id": "m", "extra_args": "--served-model-name=x"}, "use --served-model-name instead"),
    ({"model_id": "m", "env": ["1BAD=x"]}, "not a valid environment variable name"),
    ({"model_id": "m", "extra_args": "--seed 'unclosed"}, "--extra-args"),
    ({"model_id": "m", "extra_args": "--api-key sk-123"}, "pass it with --env"),
    ({"model_id": "m", "extra_args": "--port 9"}, "use --port instead"),
])
def test_bad_flags_are_refused_naming_the_flag(options, message):
    with pytest.raises(ConfigError) as error:
        build_spec(options)
    assert message in str(error.value)


def test_env_name_alone_takes_the_local_value_and_it_is_masked(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fromLocalEnv")
    spec = build_spec({"model_id": "m", "env": ["HF_TOKEN"]})
    assert dict(spec.env) == {"HF_TOKEN": "hf_fromLocalEnv"}
    assert spec.env_shown() == {"HF_TOKEN": "***"}


def test_argv_serve_form_python_form_and_flags():
    spec = build_spec({"model_id": "Qwen/Qwen3-4B", "tensor_parallel_size": "8", "trust_remote_code": True,
                       "extra_args": "--enable-prefix-caching --seed 1"})
    assert server_argv(spec) == ["vllm", "serve", "Qwen/Qwen3-4B", "--host", "127.0.0.1", "--port", "8000",
                                 "--tensor-parallel-size", "8", "--trust-remote-code",
                                 "--enable-prefix-caching", "--seed", "1"]
    python = build_spec({"model_id": "m", "vllm_bin": "/opt/venv/bin/python"})
    assert server_argv(python)[:5] == ["/opt/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                                       "--model", "m"]


def test_env_file_round_trips_awkward_values_through_bash():
    env = (("A", "two words"), ("B", "it's \"quoted\" $HOME `x`"), ("C", "line1\nline2"))
    script = env_file_text(env).decode() + 'printf "%s|" "$A" "$B" "$C"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "two words|it's \"quoted\" $HOME `x`|line1\nline2|"


def test_launcher_is_valid_bash_that_execs_the_quoted_argv():
    spec = build_spec({"model_id": "x'; touch /tmp/p; echo '"})
    text = launcher_text(server_argv(spec), "/mnt/vllm/logs/vllm-1.log", "vllm-abc123")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    assert "argv=(vllm serve 'x'\"'\"'; touch /tmp/p; echo '\"'\"'' --host" in text
    assert '. "$env_file"' in text and "owner=vllm-abc123" in text and 'exec "$@"' in text
    assert text.index("trap '' HUP") < text.index("exec > >(exec tee") < text.index("trap - HUP")


def test_launcher_runs_the_argv_with_the_env_file_and_logs_its_output(tmp_path):
    """Run for real: the env file's names (even `argv`, `owner`) change neither what runs nor its marker."""
    show = "import os, sys; print(sys.argv[1:], os.environ['A'], os.environ['OPS_VLLM_OWNER'], os.environ['LC_ALL'])"
    argv = ["python3", "-c", show, "x'; touch /tmp/p; echo '", "two words"]
    log_path = tmp_path / "server.log"
    (tmp_path / "launcher.sh").write_text(launcher_text(argv, str(log_path), "vllm-abc123"))
    (tmp_path / "env").write_bytes(env_file_text((("A", "it's $HOME"), ("OPS_VLLM_OWNER", "other"),
                                                  ("argv", "false"), ("owner", "other"), ("log", "/nowhere"))))
    done = subprocess.run(["bash", str(tmp_path / "launcher.sh"), str(tmp_path / "env")], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    shown = "[\"x'; touch /tmp/p; echo '\", 'two words'] it's $HOME vllm-abc123 C.UTF-8"
    assert shown in done.stdout
    log_text = log_path.read_text()
    assert "[ops-tasks] " in log_text and " starting: python3 -c " in log_text and shown in log_text


@pytest.mark.parametrize("line, cause", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.", "cuda-out-of-memory"),
    ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization`",
     "cuda-out-of-memory"),
    ("OSError: [Errno 98] Address already in use", "port-in-use"),
    ("huggingface_hub.errors.GatedRepoError: 401 Client Error.", "model-not-found-or-gated"),
    ("OSError: org/m is not a local folder and is not a valid model identifier", "model-not-found-or-gated"),
    ("Please pass the argument `trust_remote_code=True` to allow custom code to be run.", "trust-remote-code"),
    ("bash: line 1: vllm: command not found", "command-not-found"),
    ("/root/.ops/vllm/vllm.sh: line 11: exec: no-such-vllm: not found", "command-not-found"),
    ("RuntimeError: Engine core initialization failed. See root cause above.", "other"),
])
def test_failure_causes(line, cause):
    found = classify_failure(f"INFO starting\n{line}\nRuntimeError: Engine core initialization failed.\n")
    assert found["cause"] == cause
    assert found["evidence"] == (line if cause != "other" else "RuntimeError: Engine core initialization failed.")


def test_phases_only_move_forward_and_survive_split_chunks():
    seen = []
    progress = StartupProgress(lambda elapsed, phase: seen.append(phase))
    stream = (b"L|INFO Starting to load model m...\nL|INFO torch.compile takes 3.1 s in total\n"
              b"L|INFO Loading weights took 2 s\nT|4\nL|Capturing CUDA graph shapes: 10%\nL|INFO:     Application "
              b"startup complete.\nbash: warning\n")
    for i in range(0, len(stream), 7):
        progress.feed(stream[i:i + 7])
    assert [p["phase"] for p in progress.phases] == [
        "loading weights", "profiling / KV cache", "capturing CUDA graphs", "ready"]
    assert seen[-1] == "ready"
    assert progress.other_stderr == ["bash: warning"]
    assert phase_of("nothing to see") is None


@pytest.mark.parametrize("given, expected", [
    ("http://10.0.0.5:8000", "http://10.0.0.5:8000/v1"),
    ("http://10.0.0.5:8000/v1/", "http://10.0.0.5:8000/v1"),
    ("https://api.example.com/v1", "https://api.example.com/v1"),
])
def test_base_urls_are_normalised_to_v1(given, expected):
    assert normalize_base_url(given) == expected


@pytest.mark.parametrize("bad", ["localhost:8000", "ftp://x/v1", "http://a b/v1", ""])
def test_a_base_url_that_is_not_http_is_refused(bad):
    with pytest.raises(ConfigError):
        normalize_base_url(bad)


def test_profile_vllm_section_is_checked():
    with pytest.raises(ConfigError, match=r"ops.profiles.gpu.vllm.max_len"):
        check_ops_config({"profiles": {"gpu": {"vllm": {"max_len": 4096}}}})
    with pytest.raises(ConfigError, match=r"ops.profiles.gpu.vllm.port must be a number"):
        check_ops_config({"profiles": {"gpu": {"vllm": {"port": "8000"}}}})


@pytest.mark.parametrize("argv, message", [
    (["vllm.start", "--model-id", "m", "--timeout", "soon"], "--timeout must be a number of seconds"),
    (["vllm.start", "--model-id", "m", "--env", "HF_TOKEN"], "--env HF_TOKEN: not set here"),
    (["vllm.logs", "--follow", "--json"], "cannot be combined with --json"),
    (["vllm.status", "--api-base-url", "nope"], "--api-base-url"),
    (["vllm.stop", "--grace", "-1"], "--grace must be zero or positive"),
    (["vllm.logs", "--lines", "many"], "--lines must be a whole number"),
])
def test_bad_input_exits_2_with_one_line_before_any_contact(ops, argv, message):
    closed = f"root@127.0.0.1:{free_port()}"  # contacting it would fail with exit 1, not 2

    result = ops(*argv, "--host", closed)

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_the_engine_config_line_is_not_taken_for_a_trust_remote_code_error():
    log = ("INFO Initializing a V1 LLM engine with config: model='m', trust_remote_code=True, dtype=auto\n"
           "RuntimeError: NCCL error: unhandled system error\n")
    assert classify_failure(log)["cause"] == "other"
