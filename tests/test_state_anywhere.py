"""State from any folder, through the real `ops` program on real sshd pods: runs submitted from one
project folder are read, waited for, cancelled and fetched from another that keeps no record of
them (the pod names its latest submission, in the request the task makes anyway); Lium pods and
fleets rented from one folder are listed, priced and released from another (ops_tasks/state.py,
the user's store), against the local fake of Lium's API."""

import json

import pytest

from ops_tasks.errors import HostError
from conftest import needs_isolation, one_line_error

pytestmark = needs_isolation

SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""
CANARY_KEY = "lium-canary-0d4f6a2b8e17"


@pytest.fixture
def elsewhere(tmp_path):
    """Another folder: no invoke.yaml, no artifacts/, nothing of the project's."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def submit(ops, project, host, runs, outputs_dir=None, name="runs.json"):
    config = {"remote_repo": "/root", "runs": runs}
    if outputs_dir:
        config["remote_outputs_dir"] = outputs_dir
    (project / name).write_text(json.dumps(config))
    result = ops("runs.submit", "--host", host, "--config", str(project / name), "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    return result.json["submission_id"]


# ---------------------------------------------------------------- runs from another folder


def test_status_wait_and_fetch_from_another_folder_take_the_pods_latest_submission(pod, ops, project, elsewhere):
    older = submit(ops, project, pod.alias, [{"run_id": "old", "command": SUMMARY}], name="old.json")
    # The newest submission went to an outputs root of its own config: the pod knows where.
    newest = submit(ops, project, pod.alias, [{"run_id": "r1", "command": SUMMARY},
                                             {"run_id": "r2", "command": f"sleep 0.5; {SUMMARY}"}], "/mnt/sweep")

    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json", cwd=elsewhere)
    sessions, connections = pod.sessions(), pod.accepted_connections()
    status = ops("runs.status", "--host", pod.alias, "--json", cwd=elsewhere)
    asked = (pod.sessions() - sessions, pod.accepted_connections() - connections)
    fetched = ops("artifacts.fetch", "--host", pod.alias, "--json", cwd=elsewhere)
    text = ops("runs.status", "--host", pod.alias, cwd=elsewhere)

    assert waited.returncode == 0, (waited.stdout, waited.stderr)
    assert (waited.json["submission_id"], waited.json["submission_from_pod"]) == (newest, True)
    assert {r["run_id"]: r["state"] for r in waited.json["runs"]} == {"r1": "succeeded", "r2": "succeeded"}
    assert status.returncode == 0, status.stderr
    assert (status.json["submission_id"], status.json["outputs_dir"]) == (newest, "/mnt/sweep")
    assert asked == (1, 1)  # the pod's manifest came in the status request itself
    assert f"submission {newest} is the pod's latest, from the pod" in status.stderr
    assert fetched.returncode == 0, (fetched.stdout, fetched.stderr)
    assert fetched.json["submission_id"] == newest and fetched.json["submission_from_pod"] is True
    assert sorted(p.name for p in (elsewhere / "artifacts" / "pod_logs").iterdir()) == ["r1", "r2"]
    assert (elsewhere / "artifacts" / "pod_logs" / "r2" / "summary.json").exists()
    assert not (project / "artifacts" / "pod_logs").exists()  # results stay in the folder that fetched them
    assert not (elsewhere / "artifacts" / "submissions").exists()  # no record made up: the pod keeps it
    assert text.returncode == 0 and "from the pod" in text.stderr and f"submission {newest}" in text.stdout
    # Named, the outputs root is where the pod looks: its latest there is the older submission.
    rooted = ops("runs.status", "--host", pod.alias, "--remote-outputs-dir", "/mnt/pod_artifacts/outputs",
                 "--json", cwd=elsewhere)
    assert rooted.returncode == 0 and rooted.json["submission_id"] == older, rooted.stderr
    assert [r["run_id"] for r in rooted.json["runs"]] == ["old"]


def test_cancel_from_another_folder_finds_the_run_where_its_submission_put_it(pod, ops, project, elsewhere):
    submit(ops, project, pod.alias, [{"run_id": "long", "command": "sleep 300"}], "/mnt/elsewhere-runs")

    cancelled = ops("runs.cancel", "--host", pod.alias, "--run-id", "long", "--json", cwd=elsewhere)

    assert cancelled.returncode == 0, (cancelled.stdout, cancelled.stderr)
    assert [(r["run_id"], r["state"]) for r in cancelled.json["runs"]] == [("long", "cancelled")]
    assert cancelled.json["submission_from_pod"] is True
    state = json.loads(pod.sh("cat /mnt/elsewhere-runs/long/status.json").stdout)["state"]
    assert state == "cancelled"


def test_a_pod_with_no_submission_anywhere_is_one_line_exit_2(pod, ops, elsewhere):
    assert ops("pod.status", "--host", pod.alias).returncode == 0  # its host key known: no line about it

    result = ops("runs.status", "--host", pod.alias, cwd=elsewhere)

    one_line_error(result, 2, pod.alias, "nor on the pod", "pass --run-id, --submission or --all")


def test_what_the_pod_names_is_checked_before_a_fetch_uses_it(monkeypatch):
    from types import SimpleNamespace

    from ops_tasks.operations import runs

    target = SimpleNamespace(profile=SimpleNamespace(label="gpu1"))
    answer = {"outputs_dir": "/mnt/out", "runs": [{"run_id": "r1", "run_dir": "/mnt/out/../../home/me"}],
              "submission_id": "s1", "submission_from_pod": True}
    monkeypatch.setattr(runs, "runs_status", lambda *a, **k: answer)

    with pytest.raises(HostError, match="not a run directory under /mnt/out"):
        runs.pod_selection(target, {"outputs_dir": "/mnt/out", "run_ids": [], "latest_submission": "any"})
    answer["runs"] = [{"run_id": "r1", "run_dir": "/mnt/out/r1"}]
    assert runs.pod_selection(target, {"outputs_dir": "/mnt/out", "run_ids": [], "latest_submission": "any"}) == {
        "outputs_dir": "/mnt/out", "run_ids": [], "run_dirs": {}, "submission_id": "s1",
        "submission_from_pod": True, "runs": [{"run_id": "r1", "run_dir": "/mnt/out/r1"}]}
    with pytest.raises(HostError, match="answered for the outputs root"):  # the user named another root
        runs.pod_selection(target, {"outputs_dir": "/mnt/mine", "run_ids": [], "latest_submission": "root"})


# ---------------------------------------------------------------- Lium pods from another folder


@pytest.fixture
def fake():
    pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")
    from ops_tasks.testing.fake_lium import FakeLium

    api = FakeLium(CANARY_KEY).start()
    api.add_executor("NVIDIA A100-SXM4-80GB", 8, 1.25)  # 10 $/h
    api.add_executor("NVIDIA A100-SXM4-80GB", 8, 1.5)  # 12 $/h
    api.add_volume("my_volume")
    yield api
    api.stop()


@pytest.fixture
def lium_ops(ops, client, fake):
    def run(*args, cwd):
        result = ops(*args, cwd=cwd, env={**fake.env(), "XDG_CACHE_HOME": str(client.home / ".cache")})
        assert CANARY_KEY not in result.stdout + result.stderr and "Traceback" not in result.stderr, result.stderr
        return result

    return run


def state_bytes(client) -> bytes:
    return b"".join(path.read_bytes() for path in (client.state_home / "ops-tasks").glob("state.db*"))


def test_a_pod_rented_in_one_folder_is_listed_priced_and_released_from_another(
        lium_ops, fake, pod, project, elsewhere, client):
    fake.ssh = {"user": pod.user, "host": "127.0.0.1", "port": pod.port}
    assert lium_ops("pod.up", "--gpu", "A100", "--yes", cwd=project).returncode == 0
    submit(lambda *a: lium_ops(*a, cwd=project), project, "lium", [{"run_id": "done", "command": SUMMARY}], "/mnt/x")
    assert lium_ops("runs.wait", "--host", "lium", "artifacts.fetch", "--host", "lium", cwd=project).returncode == 0

    listed = lium_ops("pod.ps", "--json", cwd=elsewhere)
    shown = lium_ops("pod.ps", cwd=elsewhere)
    status = lium_ops("pod.status", "--host", "lium", "--json", cwd=elsewhere)
    down = lium_ops("pod.down", "--name", "ops-lium", "--yes", "--json", cwd=elsewhere)
    history = lium_ops("pod.ps", "--history", "--json", cwd=elsewhere)

    (row,) = listed.json["pods"]
    assert (row["name"], row["rented_from"], row["price_per_hour"]) == ("ops-lium", str(project.resolve()), 10.0)
    assert listed.json["totals"]["price_per_hour"] == 10.0 and listed.json["not_listed"] == []
    assert "rented from" in shown.stdout and "$10.00/h in all" in shown.stdout
    assert status.json["cost"]["price_per_hour"] == 10.0  # the price, from the user's store
    # Checked where the folder that rented it submitted (/mnt/x) and by its fetches: released.
    assert down.returncode == 0, (down.stdout, down.stderr)
    assert down.json["removed"] and down.json["records_of"] == str(project) and fake.pods == {}
    assert (down.json["check"]["outputs_dir"], down.json["check"]["runs"]) == ("/mnt/x", 1)
    assert history.json["pods"] == []
    (gone,) = history.json["history"]
    assert (gone["name"], gone["project"], gone["spent"]["price_per_hour"]) == ("ops-lium", str(project.resolve()), 10.0)
    assert gone["released_at"] is not None
    assert CANARY_KEY.encode() not in state_bytes(client)


def test_a_pod_lium_no_longer_lists_is_named_until_pod_down_marks_it_released(lium_ops, fake, pod, project, elsewhere):
    fake.ssh = {"user": pod.user, "host": "127.0.0.1", "port": pod.port}
    assert lium_ops("pod.up", "--gpu", "A100", "--yes", cwd=project).returncode == 0
    fake.pods.clear()  # removed elsewhere (Lium's site, its --ttl)

    listed = lium_ops("pod.ps", "--json", cwd=elsewhere)
    shown = lium_ops("pod.ps", cwd=elsewhere)
    down = lium_ops("pod.down", "--name", "ops-lium", "--yes", "--json", cwd=elsewhere)
    after = lium_ops("pod.ps", "--json", cwd=elsewhere)

    assert [r["name"] for r in listed.json["not_listed"]] == ["ops-lium"]  # still recorded: it may bill
    assert "ops-lium" in shown.stdout and "Lium does not list it" in shown.stdout
    assert down.returncode == 0 and down.json["found"] is False and len(down.json["released_records"]) == 1
    assert after.json["not_listed"] == []


def test_a_fleet_rented_in_one_folder_is_a_host_name_in_another(lium_ops, fake, pod_factory, project, elsewhere):
    pods = [pod_factory(), pod_factory()]
    fake.ssh_queue = [{"user": p.user, "host": "127.0.0.1", "port": p.port} for p in pods]
    assert lium_ops("pod.up", "--gpu", "A100", "--pods", "2", "--name", "sweep", "--yes", cwd=project).returncode == 0

    status = lium_ops("pod.status", "--host", "sweep", "--json", cwd=elsewhere)
    down = lium_ops("pod.down", "--name", "sweep", "--force", "--yes", "--json", cwd=elsewhere)
    after = lium_ops("pod.status", "--host", "sweep", cwd=elsewhere)

    assert status.returncode == 0, status.stderr
    assert status.json["hosts"] == ["sweep-1", "sweep-2"] and status.json["totals"]["pods_up"] == 2
    assert down.returncode == 0 and fake.pods == {}, down.stdout
    one_line_error(after, 2, "sweep")  # the name names nothing any more
