"""The first hour (../shared/cases/first-hour.md, item 10): the vLLM stand-in on a remote pod.
`--vllm-bin ops-vllm-stub` ships the stand-in (ops_tasks/testing/vllm_stub.py, stdlib only,
`#!/usr/bin/env python3`) with vllm.start, in the same round trip, into the pod's ~/.ops/vllm/bin,
so the whole pipeline can be tried on a pod without a GPU and without ops-tasks installed: here a
real sshd pod whose PATH has no ops-vllm-stub, through vllm.start/status/stop and a campaign."""

import json

import pytest

from conftest import module_client, module_pod, needs_isolation, pod_cmdline, pod_pids, run_ops
from ops_tasks.testing.pods import free_port

pytestmark = needs_isolation

client = module_client()
pod = module_pod("stubpod")
FAST = "OPS_VLLM_STUB_STARTUP_S=0.4"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


def ops(project, client, *args, timeout=120):
    return run_ops(list(args), cwd=project, env=client.env(), timeout=timeout)


def test_the_pod_has_no_stand_in_of_its_own(pod):
    assert pod.sh("command -v ops-vllm-stub", check=False).returncode != 0


def test_vllm_start_ships_the_stand_in_in_its_one_round_trip_and_status_and_stop_follow(pod, project, client):
    port = free_port()
    before = pod.accepted_connections()

    started = ops(project, client, "vllm.start", "--host", pod.alias, "--vllm-bin", "ops-vllm-stub",
                  "--model-id", "Qwen/Qwen3-4B", "--port", str(port), "--session", "stub", "--env", FAST,
                  "--wait", "--json")

    assert started.returncode == 0, started.stdout + started.stderr
    assert started.json["wait"]["outcome"] == "ready"
    assert pod.accepted_connections() == before + 1  # the program travelled with the start
    shipped = pod.sh("head -1 ~/.ops/vllm/bin/ops-vllm-stub; stat -c %a ~/.ops/vllm/bin/ops-vllm-stub").stdout
    assert shipped.splitlines() == ["#!/usr/bin/env python3", "755"]
    answer = pod.sh(f"curl -s http://127.0.0.1:{port}/v1/models").stdout
    assert json.loads(answer)["data"][0]["id"] == "Qwen/Qwen3-4B"
    assert "stand-in for vLLM" in pod.sh(f"cat {started.json['log']}").stdout  # it says what it is

    status = ops(project, client, "vllm.status", "--host", pod.alias, "--session", "stub", "--json")
    assert status.returncode == 0 and status.json["models"][0]["id"] == "Qwen/Qwen3-4B", status.stdout
    stopped = ops(project, client, "vllm.stop", "--host", pod.alias, "--session", "stub", "--json")
    assert stopped.returncode == 0 and stopped.json["running"] is True, stopped.stdout + stopped.stderr
    assert pod_pids(pod, "ops-vllm-stub", live=True) == [], [pod_cmdline(p) for p in pod_pids(pod, "ops-vllm-stub", live=True)]


def test_a_dry_run_names_the_stand_in_without_printing_it(project, client, pod):
    before = pod.accepted_connections()
    shown = ops(project, client, "vllm.start", "--host", pod.alias, "--vllm-bin", "ops-vllm-stub",
                "--model-id", "m", "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "stub_bytes=" in shown.stdout and "class StubHandler" not in shown.stdout
    assert len(shown.stdout) < 40_000
    assert pod.accepted_connections() == before


def test_a_campaign_on_a_pod_without_vllm_serves_its_runs_from_the_stand_in(pod, project, client):
    port = free_port()
    ask = (f"curl -sf http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' "
           f"-d '{{\"model\": \"Qwen/Qwen3-32B\", \"messages\": [{{\"role\": \"user\", \"content\": \"2 + 3\"}}]}}' "
           f"> {{run_dir}}/answer.json")
    (project / "served.json").write_text(json.dumps({
        "remote_repo": "/root", "summary": "exit_code",
        "campaign": {"servers": [{"session": "cstub", "model_id": "Qwen/Qwen3-32B", "port": port}]},
        "runs": [{"run_id": "asks", "gpus": 0, "command": ask}]}))

    done = ops(project, client, "campaign", "--config", "served.json", "-H", pod.alias, "--vllm-bin",
               "ops-vllm-stub", "--json", timeout=180)

    assert done.json is not None and "phases" in done.json, done.stdout + done.stderr
    outcomes = {p["phase"]: p["outcome"] for p in done.json["phases"]}
    assert done.returncode == 0, (outcomes, done.json.get("error"), done.stderr)
    assert outcomes["vllm_start"] == "ok" and outcomes["vllm_stop"] == "ok"
    answer = json.loads((project / "artifacts" / "pod_logs" / "asks" / "answer.json").read_text())
    assert "5" in answer["choices"][0]["message"]["content"]
    assert pod_pids(pod, "ops-vllm-stub", live=True) == [], [pod_cmdline(p) for p in pod_pids(pod, "ops-vllm-stub", live=True)]
