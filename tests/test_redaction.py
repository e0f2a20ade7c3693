"""Every printed line goes through redaction, not only `secrets.redact` itself: real tasks, run
against a real pod, print a run's output, a server's log tail, dry-run scripts, JSON documents
and one-line errors in which a secret would appear, and no byte of stdout or stderr holds it.

The secrets come from the three places the laptop learns them: its environment, the
OPS_PROJECT_ENV file, and a task's own flags (vllm.start --env)."""

import json

import pytest

from conftest import module_client, module_pod, needs_isolation
from ops_tasks.testing.pods import free_port

pytestmark = needs_isolation

ENV_SECRET = "canary-env-7Qx93vB"  # in the laptop's environment, as OPS_REDACTION_API_KEY
FILE_SECRET = "canary-file-K2m8Zt"  # in the OPS_PROJECT_ENV file, as WANDB_API_KEY
FLAG_SECRET = "canary-flag-P4w6Nr"  # given to vllm.start --env VLLM_API_KEY=...
SECRETS = (ENV_SECRET, FILE_SECRET, FLAG_SECRET)

# A run that prints both secrets it was given (stdout and stderr), then fails with one as its
# last output line: the log, the status's last output and the failure all carry them.
LEAKY_COMMAND = ('echo "key=$OPS_REDACTION_API_KEY wandb=$WANDB_API_KEY"; '
                 'echo "stderr has $WANDB_API_KEY" >&2; echo "last: $OPS_REDACTION_API_KEY"; exit 3')
# A vLLM binary that logs the key it was given and dies: the start's log tail shows it.
LEAKY_VLLM = '#!/bin/bash\necho "serving with api key $VLLM_API_KEY"\necho "fatal: $VLLM_API_KEY rejected" >&2\nexit 1\n'


client = module_client()
pod = module_pod("rpod", gpus=1)


@pytest.fixture
def secret_ops(ops, project):
    """`ops` with the environment secret set and the file secret in OPS_PROJECT_ENV."""
    env_file = project / "project.env"
    env_file.write_text(f"WANDB_API_KEY={FILE_SECRET}\n")

    def run(*args, **kwargs):
        result = ops(*args, env={"OPS_REDACTION_API_KEY": ENV_SECRET, "OPS_PROJECT_ENV": str(env_file)}, **kwargs)
        assert_no_secret(result)
        return result

    return run


def assert_no_secret(result) -> None:
    printed = (result.stdout + result.stderr).encode()
    for secret in SECRETS:
        assert secret.encode() not in printed, (result.args, result.stdout, result.stderr)


def leaky_config(project, pod, run_id) -> str:
    path = project / f"{run_id}.json"
    path.write_text(json.dumps({
        "remote_repo": "/root",
        "remote_outputs_dir": f"/mnt/redaction-{run_id}",
        "runs": [{"run_id": run_id, "command": LEAKY_COMMAND,
                  "env": {"OPS_REDACTION_API_KEY": ENV_SECRET, "WANDB_API_KEY": FILE_SECRET}}],
    }))
    return str(path)


def test_a_runs_output_is_masked_in_every_task_that_prints_it(pod, secret_ops, project):
    config = leaky_config(project, pod, "leaky")
    host = ("--host", pod.alias)

    for mode in ((), ("--json",), ("--pretty",)):
        assert secret_ops("runs.submit", *host, "--config", config, "--dry-run", *mode).returncode == 0
    submitted = secret_ops("runs.submit", *host, "--config", config, "--json")
    assert submitted.returncode == 0, submitted.stderr

    waited = secret_ops("runs.wait", *host, "--timeout", "60", "--json")
    assert waited.returncode == 1 and waited.json["runs"][0]["state"] == "failed", waited.stdout
    assert secret_ops("runs.wait", *host, "--timeout", "60").returncode == 1

    for mode in ((), ("--json",)):
        status = secret_ops("runs.status", *host, *mode)
        assert status.returncode == 1

    logs = secret_ops("runs.logs", *host, "--run-id", "leaky")
    assert logs.returncode == 0, logs.stderr
    # What the run printed is shown, its secrets masked: there was something to redact.
    assert "key=*** wandb=***" in logs.stdout and "stderr has ***" in logs.stdout, logs.stdout
    logs_json = secret_ops("runs.logs", *host, "--run-id", "leaky", "--json")
    assert logs_json.returncode == 0 and "key=*** wandb=***" in logs_json.stdout, logs_json.stdout


def test_a_supervisor_in_the_foreground_streams_masked_lines(pod, secret_ops, project):
    config = leaky_config(project, pod, "leaky-fg")
    result = secret_ops("runs.submit", "--host", pod.alias, "--config", config, "--no-tmux", timeout=90)
    assert result.returncode == 1, result.stderr


@pytest.mark.parametrize("mode", [(), ("--json",)])
def test_an_error_naming_a_secret_is_masked(pod, secret_ops, mode):
    before = pod.accepted_connections()
    result = secret_ops("runs.logs", "--host", pod.alias, "--run-id", f"{ENV_SECRET}/../x", *mode)
    assert result.returncode == 2
    assert "***/../x" in result.stderr, result.stderr  # the bad id is named, its secret part masked
    assert pod.accepted_connections() == before  # refused before contact


def test_a_servers_log_tail_is_masked_with_the_flag_secret(pod, secret_ops):
    program = pod.bin / "leaky-vllm"
    program.write_text(LEAKY_VLLM)
    program.chmod(0o755)
    argv = ["vllm.start", "--host", pod.alias, "--vllm-bin", str(program), "--model-id", "org/model",
            "--port", str(free_port()), "--wait", "--timeout", "60", "--env", f"VLLM_API_KEY={FLAG_SECRET}"]

    human = secret_ops(*argv)
    assert human.returncode == 1
    assert "serving with api key ***" in human.stdout, human.stdout  # the tail is shown, masked
    as_json = secret_ops(*argv, "--json")
    assert as_json.returncode == 1 and "***" in json.dumps(as_json.json), as_json.stdout
    assert secret_ops(*argv, "--dry-run").returncode == 0
    assert secret_ops(*argv, "--dry-run", "--json").returncode == 0


def test_a_secret_that_holds_another_is_masked_whole(pod, ops):
    short, long = "s3cr", "s3cr-and-much-more-P9"  # the short one is the long one's start
    result = ops("runs.logs", "--host", pod.alias, "--run-id", f"{long}/x",
                 env={"A_SHORT_TOKEN": short, "B_LONG_TOKEN": long})
    assert result.returncode == 2
    assert "***/x" in result.stderr and "and-much-more" not in result.stderr, result.stderr
