"""ops campaign: from a config to released pods, end to end, against the local fake of Lium's API
(the real SDK talks to it) and real sshd pods; resumed after a kill mid-wait; teardown refused
while a run is unfetched; costs from the fake's prices."""

import json
import os
import signal
import subprocess
import time

import pytest

from ops_tasks.testing.fake_lium import FakeLium
from conftest import module_client, module_pod, needs_isolation, ops_argv, pod_pids
from ops_tasks.testing.pods import free_port

pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")

client = module_client()
pod_a = module_pod("cpod-a")
pod_b = module_pod("cpod-b")
OUT = "/mnt/pod_artifacts/outputs"
PRICE_PER_GPU, GPUS = 1.25, 8  # the fake's executor: $10.00/h
WRITE_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


class PodsInOrder(FakeLium):
    """Each rent answers SSH at the next of `endpoints`; None: a pod that stays PENDING for ever."""

    endpoints: list = []

    def _rent(self, executor_id, body):
        status, answer = super()._rent(executor_id, body)
        if status == 200 and self.endpoints:
            pod, ssh = self.pods[answer["pod_id"]], self.endpoints.pop(0)
            if ssh is None:
                pod.update(status="PENDING", polls_left=10 ** 9)
            else:
                pod["ssh"] = dict(ssh)
        return status, answer


@pytest.fixture(scope="module")
def fake():
    api = PodsInOrder().start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = tmp_path_factory.mktemp("campaign-project")
    runs = [{"run_id": f"r{i}", "command": f"sleep 1; {WRITE_SUMMARY}"} for i in range(4)]
    (path / "sweep.json").write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    return path


def campaign_ops(client, project, fake):
    def run(*args, wait=True, env=None):
        environment = client.env(**{**fake.env(), "XDG_CACHE_HOME": str(client.home / ".cache"), **(env or {})})
        proc = subprocess.Popen([*ops_argv(), *args], cwd=project, env=environment, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if not wait:
            return proc
        stdout, stderr = proc.communicate(timeout=100)
        proc.stdout_text, proc.stderr_text = stdout, stderr
        assert "Traceback" not in stderr, stderr
        proc.json = json.loads(stdout) if stdout.strip().startswith("{") else None
        return proc

    return run


COMMAND = ("campaign", "--config", "sweep.json", "--pods", "2", "--gpu", "A100", "--count", "8",
           "--teardown", "release", "--ready-timeout", "1", "--json")


def _state(project) -> dict:
    (folder,) = (project / "artifacts" / "campaigns").iterdir()
    return json.loads((folder / "state.json").read_text())


def _wait_for_phase(project, phase: str, proc, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if _state(project)["phases"].get(phase, {}).get("outcome") == "running":
                return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    raise AssertionError(f"the campaign never reached {phase}")


def _statuses(*pods) -> dict:
    """The status.json of every run of the sweep on these pods, by run id."""
    found = {}
    for pod in pods:
        for run_id in ("r0", "r1", "r2", "r3"):
            text = pod.sh(f"cat {OUT}/{run_id}/status.json 2>/dev/null", check=False).stdout
            if text.strip():
                found[run_id] = json.loads(text)
    return found


def _fetched_at(project) -> dict:
    folder = project / "artifacts" / "fetched"
    return {p.stem: json.loads(p.read_text())["fetched_at"] for p in folder.glob("*.json")}


@needs_isolation
def test_a_two_pod_campaign_rents_replaces_resumes_refuses_then_releases(client, pod_a, pod_b, fake, project,
                                                                         ops_here):
    fake.add_volume("my_volume")
    for _ in range(3):
        fake.add_executor("NVIDIA A100-SXM4-80GB", GPUS, PRICE_PER_GPU)
    fake.endpoints = [None] + [{"user": p.user, "host": "127.0.0.1", "port": p.port} for p in (pod_a, pod_b)]
    ops = campaign_ops(client, project, fake)

    # 1. Stopped mid-wait (the laptop going to sleep): the runs go on on the pods.
    first = ops(*COMMAND, wait=False)
    try:
        _wait_for_phase(project, "wait", first)
    finally:
        os.kill(first.pid, signal.SIGTERM)
        _, stderr = first.communicate(timeout=30)
    assert first.returncode == 143 and "Traceback" not in stderr, stderr
    assert "run the same command again to resume" in stderr.strip().splitlines()[-1]
    before = _state(project)
    assert f"campaign {before['campaign_id']}: watch it live: ops ui -H {before['campaign_id']}" in stderr
    cid = before["campaign_id"]
    assert before["phases"]["wait"]["outcome"] == "interrupted"
    assert [(a["pod"], a["outcome"]) for a in before["rent_attempts"]] == [
        (f"{cid}-0", "released"), (f"{cid}-0", "ready"), (f"{cid}-1", "ready")]
    assert "not ready after 1s" in before["rent_attempts"][0]["reason"]
    assert len(fake.rents()) == 3 and len(fake.pods) == 2  # the pod that never came up is gone

    # A run the campaign did not make, on its second pod, never fetched: it keeps that pod.
    (project / "stray.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "stray", "command": WRITE_SUMMARY}]}))
    assert ops_here("runs.submit", "--host", f"{cid}-1", "--config", "stray.json")[0] == 0

    # 2. The same command resumes at the wait: nothing submitted or rented again. (In process from
    # here: the program's start-up is not what this is about.)
    code, out, _ = ops_here(*COMMAND)

    assert code == 1
    doc = json.loads(out)
    assert doc["submission_id"] == before["submission_id"] and len(fake.rents()) == 3
    outcomes = {p["phase"]: p["outcome"] for p in doc["phases"]}
    assert all(outcomes[p] == "ok" for p in ("rent", "ready", "bootstrap", "submit", "wait", "fetch", "validate",
                                             "report")), outcomes
    assert outcomes["teardown"] == "failed" and "stray (never fetched)" in doc["error"]
    # The first pod, all of whose runs are fetched, is released; the second is kept, and what it costs said.
    assert f"kept 1 pod(s), costing $10.00/h: {cid}-1" in doc["error"]
    assert [p["pod_name"] for p in fake.pods.values()] == [f"{cid}-1"]
    # The campaign's fleet name goes on naming only the pod that stays (ops ui -H <id>, runs.status -H <id>).
    code, out, err = ops_here("pod.status", "--host", cid, "--dry-run", "--json")
    assert code == 0 and f"{cid}-1" in out and f"{cid}-0" not in out, (out, err)
    statuses = _statuses(pod_a, pod_b)
    assert sorted(statuses) == ["r0", "r1", "r2", "r3"]
    assert {s["attempt"] for s in statuses.values()} == {1}  # no run ran twice
    report = json.loads((project / "artifacts" / "report.json").read_text())
    assert sorted(r["run_id"] for r in report["rows"]) == ["r0", "r1", "r2", "r3"]
    assert (project / "artifacts" / "report.html").exists()
    assert (project / "artifacts" / "campaigns" / cid / "checklist.md").read_text().count("- [x]") == 11
    fetched = _fetched_at(project)

    # Costs: each run's time on its pod at the fake's price (a pod without GPUs runs one at a time).
    cost = json.loads((project / "artifacts" / "campaigns" / cid / "report.json").read_text())["cost"]
    assert {pod["price_per_hour"] for pod in cost["pods"].values()} == {PRICE_PER_GPU * GPUS}
    expected = sum((s["finished"] - s["started"]) * PRICE_PER_GPU * GPUS / 3600 for s in statuses.values())
    assert cost["runs"]["priced"] == 4 and cost["runs"]["cost_usd"] == pytest.approx(expected, rel=1e-6)
    assert all(pod["idle_s"] >= 0 for pod in cost["pods"].values())

    # 3. Once the stray run is fetched, the same command only tears down: both pods released.
    assert ops_here("artifacts.fetch", "--host", f"{cid}-1", "--run-id", "stray")[0] == 0
    code, out, _ = ops_here(*COMMAND)

    assert code == 0
    assert {p["phase"]: p["outcome"] for p in json.loads(out)["phases"]}["teardown"] == "ok"
    assert fake.pods == {} and len(fake.rents()) == 3
    # Every pod released: the campaign's id names no fleet any more (it named released pods).
    code, _, err = ops_here("pod.status", "--host", cid, "--dry-run")
    assert code == 2 and f"unknown host '{cid}'" in "\n".join(err), err
    assert {k: v for k, v in _fetched_at(project).items() if k != "stray"} == fetched  # nothing fetched again

    # 4. Done is done: nothing contacted, rented, run or fetched.
    requests = len(fake.requests)
    assert ops_here(*COMMAND)[0] == 0 and len(fake.requests) == requests
    assert {k: v for k, v in _fetched_at(project).items() if k != "stray"} == fetched


@needs_isolation
def test_on_an_existing_host_the_repo_is_pinned_servers_serve_stop_on_a_failure_and_start_again_on_resume(
        ops_here, pod_a, project):
    pod_a.install_vllm_stub()
    port = free_port()
    # The repo's origin on the pod, two commits on it: the campaign pins the first.
    commit = "git -c user.email=t@example.com -c user.name=t commit -q --allow-empty -m"
    pinned = pod_a.sh(f"set -e; git init -q --bare /mnt/origin.git; git init -q /mnt/src; cd /mnt/src; "
                      f"{commit} one; git rev-parse HEAD; {commit} two; "
                      f"git push -q /mnt/origin.git HEAD:refs/heads/master").stdout.strip()
    (project / "served.json").write_text(json.dumps({"remote_repo": "/root/repo", "campaign": {
        "servers": [{"session": "cvllm", "model_id": "org/model", "port": port, "vllm_bin": "ops-vllm-stub"}],
        "sync": {"repo_url": "/mnt/origin.git", "ref": pinned}},
        "runs": [{"run_id": "served", "command": f"git rev-parse HEAD > \"$OPS_RUN_DIR/commit.txt\" && "
                                                 f"curl -sf http://127.0.0.1:{port}/v1/models > "
                                                 f"\"$OPS_RUN_DIR/models.json\" && {WRITE_SUMMARY}"},
                 {"run_id": "broken", "command": "sleep 2; exit 3"}]}))
    command = ("campaign", "--config", "served.json", "-H", "cpod-a", "--json")

    # The wait's deadline passes: the campaign stops there, and so do the servers it started.
    code, out, _ = ops_here(*command, "--wait-timeout", "1")

    doc = json.loads(out)
    outcomes = {p["phase"]: p["outcome"] for p in doc["phases"]}
    assert code == 1 and doc["stopped_at"] == "wait" and "runs still going after 1s" in doc["error"]
    assert (outcomes["sync"], outcomes["vllm_start"], outcomes["wait"], outcomes["vllm_stop"], outcomes["fetch"]) == (
        "ok", "stopped", "failed", "ok after the failure", "pending")
    assert pod_pids(pod_a, "ops-vllm-stub", live=True) == []

    # Resumed: the servers start again, the runs are waited for, and a failed run is still fetched,
    # validated and reported; --idle-release warns about a host the campaign may not release.
    code, out, _ = ops_here(*command, "--idle-release", "0.02")

    doc = json.loads(out)
    outcomes = {p["phase"]: p["outcome"] for p in doc["phases"]}
    assert code == 1 and doc["hosts"] == ["cpod-a"] and doc["rented"] == []
    assert (outcomes["vllm_start"], outcomes["wait"], outcomes["fetch"], outcomes["validate"]) == (
        "ok", "not_ok", "ok", "not_ok")
    assert (outcomes["report"], outcomes["vllm_stop"], outcomes["teardown"]) == ("ok", "ok", "ok")
    assert "broken" in doc["error"]
    assert "org/model" in (project / "artifacts" / "pod_logs" / "served" / "models.json").read_text()
    assert (project / "artifacts" / "pod_logs" / "served" / "commit.txt").read_text().strip() == pinned
    assert pod_pids(pod_a, "ops-vllm-stub", live=True) == []
    teardown = next(p for p in doc["phases"] if p["phase"] == "teardown")
    assert "cpod-a idle for 0.02 min and kept (not a Lium pod that ops rented" in teardown["summary"]


# ---------------------------------------------------------------- bad input, dry run
# In process (the program's own parsing and output contract, without a start-up each).


@pytest.fixture
def ops_here(monkeypatch, capsys, client, fake, project):
    from ops_tasks.cli import program

    def run(*args, env=None):
        # One laptop, one user: the same store of rented pods and fleets as the `ops` processes
        # campaign_ops starts (the test's own OPS_STATE_DIR would be a second one).
        environment = {**fake.env(), "XDG_CACHE_HOME": str(client.home / ".cache"),
                       "OPS_STATE_DIR": str(client.state_home / "ops-tasks"), **(env or {})}
        for name, value in client.env(**environment).items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(project)
        code = 0
        try:
            program.run(["ops", *args])
        except SystemExit as exited:
            code = exited.code or 0
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        return code, out.out, lines

    return run


@pytest.mark.parametrize("args, fragment", [
    (("--host", "local", "--teardown", "burn"), "--teardown must be one of release, keep"),
    (("--pods", "2"), "--pods needs --gpu"),
    (("--pods", "2", "--gpu", "A100", "--host", "cpod-a"), "pass one of them"),
    (("--pods", "two", "--gpu", "A100"), "--pods must be a whole number"),
    (("--host", "local", "--gpu", "A100"), "go with --pods N"),
    (("--host", "local", "--ready-timeout", "soon"), "--ready-timeout must be a number"),
    (("--pods", "1", "--gpu", "A100", "--config", "nope.json"), "nope.json: no such file"),
])
def test_bad_flags_are_one_line_before_any_contact(args, fragment, ops_here, fake):
    requests = len(fake.requests)

    config = () if "--config" in args else ("--config", "sweep.json")

    code, _, lines = ops_here("campaign", *config, *args)

    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert len(fake.requests) == requests and not fake.pods


def test_renting_without_lium_credentials_is_refused_before_anything_is_rented(ops_here, fake):
    requests = len(fake.requests)

    code, _, lines = ops_here("campaign", "--config", "sweep.json", "--pods", "1", "--gpu", "A100",
                              env={"LIUM_API_KEY": ""})

    assert code == 2 and len(lines) == 1 and "lium init" in lines[0], lines
    assert len(fake.requests) == requests


def test_releasing_a_pod_up_host_needs_lium_credentials_and_is_checked_before_contact(ops_here, client, fake):
    from ops_tasks import ssh_config

    ssh_config.set_pod_host(client.config, "upod", [("HostName", "127.0.0.1"), ("Port", 9)], "upod", "pod-id-1")
    try:
        from ops_tasks.operations.campaign import lium_pod_behind

        code, _, lines = ops_here("campaign", "--config", "sweep.json", "-H", "upod", "--teardown", "release",
                                  env={"LIUM_API_KEY": ""})
        kept, _, kept_lines = ops_here("campaign", "--config", "sweep.json", "-H", "upod", "--dry-run",
                              env={"LIUM_API_KEY": ""})

        assert code == 2 and len(lines) == 1 and "lium init" in lines[0], lines
        assert kept == 0, kept_lines  # keep: Lium is never asked
        assert (lium_pod_behind("upod"), lium_pod_behind("local")) == ("upod", None)
    finally:
        ssh_config.remove_host(client.config, "upod")


def test_dry_run_lists_the_phases_and_rents_nothing(ops_here, fake, project):
    requests = len(fake.requests)

    code, out, _ = ops_here("campaign", "--config", "sweep.json", "--pods", "3", "--gpu", "H100", "--dry-run",
                            "--json")

    assert code == 0
    doc = json.loads(out)
    assert doc["would_rent"]["pods"] == 3 and [p["phase"] for p in doc["phases"]][:2] == ["rent", "ready"]
    assert all(p["would_run"] for p in doc["phases"])
    assert len(fake.requests) == requests and not (project / "artifacts" / "campaigns" / doc["campaign_id"]).exists()
