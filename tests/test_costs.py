"""Costs (issue 16): a host's price per hour (Lium's as pod.up recorded it, else the profile's),
each run's cost (its share of the pod x its duration), the report's costs per run, per group,
per correct example and in total, pod.status's running cost, idle time. Every expected number is
worked out here by hand from the inputs; one real sshd pod for the module (the Lium test), the
rest in-process."""

import json

import pytest

from ops_tasks import records
from ops_tasks.errors import ConfigError
from ops_tasks.operations import costs
from ops_tasks.operations.report import build_report, group_columns
from ops_tasks.operations.report_html import render_html
from ops_tasks.pod import render_status
from ops_tasks.settings import check_ops_config, host_identity, resolve_profile
from conftest import module_client, module_pod, needs_isolation, one_line_error, run_ops

client = module_client()
cpod = module_pod("cpod", gpus=2)

HOUR = 3600.0


# ---------------------------------------------------------------- a run's cost, totals, idle time


def test_a_runs_cost_is_the_price_times_its_share_of_the_pod_times_its_duration():
    gpu_pod = {"price_per_hour": 8.0, "gpus": 8, "slots": 8}
    half_hour_on_2_of_8 = {"submission_id": "s", "started": 1000.0, "finished": 1000.0 + 1800, "gpus": 2}
    # 8 $/h x 2/8 of the pod x 0.5 h
    assert costs.run_cost(half_hour_on_2_of_8, gpu_pod) == pytest.approx(1.0)

    cpu_pod = {"price_per_hour": 2.0, "gpus": 0, "slots": 4}
    an_hour_in_one_slot = {"submission_id": "s", "started": 0.5, "finished": 0.5 + HOUR, "gpus": 0}
    assert costs.run_cost(an_hour_in_one_slot, cpu_pod) == pytest.approx(0.5)  # 2 $/h x 1/4 x 1 h

    # from a status.json as the supervisor writes it (gpus: the devices it was given)
    usage = costs.usage_of({"state": "succeeded", "submission_id": "s", "started": 100.0, "finished": 100.0 + 900,
                            "gpus": [0, 1, 2, 3]})
    assert costs.run_cost(usage, gpu_pod) == pytest.approx(8.0 * 4 / 8 * 0.25)


def test_a_cost_that_cannot_be_known_is_none_never_zero():
    pod = {"price_per_hour": 8.0, "gpus": 8, "slots": 8}
    running = costs.usage_of({"submission_id": "s", "started": 100.0, "gpus": [0]})
    assert costs.run_cost(running, pod) is None  # not finished
    assert costs.run_cost(costs.usage_of({"submission_id": "s", "started": 1.0, "finished": 5.0, "gpus": [0]}),
                          None) is None  # no price
    assert costs.usage_of({"submission_id": "s", "started": "yesterday", "finished": 5.0}) is None  # from a pod
    assert costs.run_cost(costs.usage_of({"submission_id": "s", "started": 9.0, "finished": 5.0, "gpus": [0]}),
                          pod) is None  # finished before it started
    assert costs.total([None, None]) == {"cost_usd": None, "priced": 0, "unpriced": 2}
    assert costs.total([1.5, None, 2.0]) == {"cost_usd": 3.5, "priced": 2, "unpriced": 1}


def test_idle_time_is_the_window_less_the_time_any_run_ran():
    t = 1_790_000_000  # epoch seconds
    runs = [{"started": t + 10, "finished": t + 30}, {"started": t + 20, "finished": t + 40},  # once: 10..40
            {"started": t + 60, "finished": None},  # still running: to the window's end
            {"started": None, "finished": None},  # never started
            {"started": t + 200, "finished": t + 300}, {"started": t - 50, "finished": t + 5}]  # outside; clipped
    # window t..t+100: busy 0..5, 10..40, 60..100 = 5 + 30 + 40
    assert costs.idle_time(runs, t, t + 100) == pytest.approx(100 - 75)
    assert costs.idle_time([], t, t + 100) == pytest.approx(100)


def test_a_pod_an_hour_ahead_has_the_same_idle_time_once_its_clock_is_set_against_ours():
    t = 1_790_000_000
    runs = [{"started": t + 10, "finished": t + 30}, {"started": t + 60, "finished": t + 90}]
    ahead = [{key: value + 3600 for key, value in run.items()} for run in runs]
    assert costs.idle_time(ahead, t, t + 100, clock_offset=3600.2) == pytest.approx(100 - 50, abs=0.5)
    assert costs.idle_time(ahead, t, t + 100) == pytest.approx(100)  # unset against ours: every run "outside"


def test_runs_status_and_the_fleets_probe_say_how_far_the_pods_clock_is_ahead(ops, cpod, client):
    from ops_tasks.operations.fleet_runs import probe_pod
    from ops_tasks.settings import resolve_profile
    from ops_tasks.targets import target_for

    listed = ops("runs.status", "--host", cpod.alias, "--all", "--json")
    assert abs(listed.json["clock_offset"]) < 5  # the same machine: within the round trip
    import os

    home = os.environ.get("HOME")
    os.environ["HOME"] = str(client.home)
    try:
        target = target_for(resolve_profile({}, cpod.alias, client.home))
        probed = probe_pod(target, outputs_dir="/mnt/pod_artifacts/outputs")
    finally:
        os.environ["HOME"] = home
    assert abs(probed["clock_offset"]) < 5  # what a campaign's idle time sets the runs' times against


# ---------------------------------------------------------------- where a price comes from


def test_the_price_comes_from_the_lium_record_then_the_profile_then_nowhere(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ops = {"profiles": {"priced": {"destination": "root@203.0.113.9:2200", "price_per_hour": 3},
                        "free": {"destination": "root@203.0.113.10:2200"}}}
    priced, free = (resolve_profile(ops, name, tmp_path) for name in ("priced", "free"))

    assert costs.price_of(priced) == {"price_per_hour": 3.0, "source": "profile", "pod_gpus": None}
    assert costs.price_of(free) is None
    assert costs.lium_running_cost(free) is None

    records.save_lium_pod("mypod", {"id": "p1", "name": "ops-mypod", "price_per_hour": 10.0, "gpu_count": 8,
                                    "uptime_s": 7200}, host_identity(priced))
    assert costs.price_of(priced) == {"price_per_hour": 10.0, "source": "lium", "pod_gpus": 8}
    # pod.status's running cost: 2 h at 10 $/h, at the moment the record was written
    record = records.lium_pod_of(host_identity(priced))
    assert costs.running_cost(record, now=record["recorded_at"])["cost_usd"] == pytest.approx(20.0)

    records.forget_lium_pod("p1")  # pod.down
    assert costs.price_of(priced)["source"] == "profile"


@pytest.mark.parametrize("value, fragment", [(-1, "at least 0"), ("cheap", "must be a number"),
                                             (float("nan"), "at least 0"), (True, "must be a number")])
def test_a_bad_price_per_hour_is_one_clear_error(value, fragment):
    with pytest.raises(ConfigError) as refused:
        check_ops_config({"profiles": {"gpu1": {"destination": "root@h:22", "price_per_hour": value}}})
    assert "ops.profiles.gpu1.price_per_hour" in str(refused.value) and fragment in str(refused.value)


def test_a_bad_price_in_invoke_yaml_exits_2_in_one_line_before_any_contact(project, client):
    (project / "invoke.yaml").write_text("ops:\n  profiles:\n    gpu1:\n      destination: root@127.0.0.1:9\n"
                                         "      price_per_hour: -2.5\n")
    result = run_ops(["pod.status", "--host", "gpu1"], cwd=project, env=client.env(), timeout=60)
    one_line_error(result, 2, "price_per_hour", "-2.5")


# ---------------------------------------------------------------- the report


def _fetched_run(root, run_id, *, submission, started, took, gpus, rewards, model="m1"):
    path = root / run_id
    path.mkdir(parents=True)
    mean = sum(rewards) / len(rewards)
    (path / "summary.json").write_text(json.dumps({"ok": True, "avg_reward": mean, "model_id": model}))
    (path / "status.json").write_text(json.dumps({"run_id": run_id, "state": "succeeded", "submission_id": submission,
                                                  "started": started, "finished": started + took, "gpus": gpus}))
    (path / "results.jsonl").write_text("".join(json.dumps({"id": i, "reward": r}) + "\n"
                                                for i, r in enumerate(rewards)))


def test_the_report_shows_each_runs_cost_its_groups_and_per_correct_example_and_the_total(tmp_path):
    project = tmp_path / "project"
    root = project / "artifacts" / "pod_logs"
    t0 = 1_790_000_000.0
    _fetched_run(root, "a", submission="s1", started=t0, took=1800, gpus=[0], rewards=[1, 1, 1, 0])
    _fetched_run(root, "b", submission="s1", started=t0, took=3600, gpus=[2, 3], rewards=[1, 0, 0, 0])
    _fetched_run(root, "c", submission="s2", started=t0, took=HOUR, gpus=[], rewards=[1, 1], model="m2")
    _fetched_run(root, "d", submission="s3", started=t0, took=HOUR, gpus=[0], rewards=[1], model="m2")
    records.save_manifest(project, {"submission_id": "s1", "host_id": "root@gpu:22",
                                    "runs": [{"run_id": "a"}, {"run_id": "b"}],
                                    "pricing": {"root@gpu:22": {"price_per_hour": 8.0, "source": "lium", "gpus": 4,
                                                                "slots": 4}}})
    records.save_manifest(project, {"submission_id": "s2", "host_id": "root@cpu:22", "runs": [{"run_id": "c"}],
                                    "pricing": {"root@cpu:22": {"price_per_hour": 2.0, "source": "profile",
                                                                "gpus": 0, "slots": 2}}})
    records.save_manifest(project, {"submission_id": "s3", "host_id": "root@x:22", "runs": [{"run_id": "d"}],
                                    "pricing": None})  # a host without a price

    doc = build_report(root, group_by="model_id")

    cost = {r["run_id"]: r.get("cost") for r in doc["rows"]}
    # a: 8 $/h x 1/4 x 0.5 h = 1; b: 8 x 2/4 x 1 h = 4; c: 2 x 1/2 slots x 1 h = 1; d: unknown
    assert cost == {"a": pytest.approx(1.0), "b": pytest.approx(4.0), "c": pytest.approx(1.0), "d": None}
    assert "cost" in doc["columns"]
    groups = {g["model_id"]: g for g in doc["groups"]}
    # m1: 5 $ over 3 + 1 correct examples; m2: d's cost is unknown, so the group's is too (not 1)
    assert groups["m1"]["cost"] == pytest.approx(5.0) and groups["m1"]["cost_per_correct"] == pytest.approx(5 / 4)
    assert groups["m2"]["cost"] is None and groups["m2"]["cost_per_correct"] is None
    assert doc["header"]["cost"] == {"cost_usd": pytest.approx(6.0), "priced": 3, "unpriced": 1}
    assert group_columns(["model_id"], "avg_reward", doc["groups"])[-2:] == ["cost", "cost_per_correct"]  # CSV
    assert "- cost: $6.00 over 3 runs (1 more without a price)" in doc["markdown"]
    assert "<b>cost</b>: $6.00 over 3 runs" in render_html(doc, [])


def test_a_fleet_submission_prices_each_run_at_its_own_pods_price():
    manifest = {"submission_id": "s", "fleet": True, "host_ids": ["root@a:22", "root@b:22"],
                "runs": [{"run_id": "on_a", "host_id": "root@a:22"}, {"run_id": "on_b", "host_id": "root@b:22"},
                         {"run_id": "unplaced"}],
                "pricing": {"root@a:22": {"price_per_hour": 8.0, "gpus": 8, "slots": 8},
                            "root@b:22": {"price_per_hour": 2.0, "gpus": 1, "slots": 1}}}
    priced = costs.pricing_of_runs(manifest)
    an_hour_on_one_gpu = {"submission_id": "s", "started": 1.0, "finished": 1.0 + HOUR, "gpus": 1}
    assert sorted(priced) == ["on_a", "on_b"]
    # a: 8 $/h x 1/8 x 1 h; b: 2 $/h x 1/1 x 1 h
    assert costs.run_cost(an_hour_on_one_gpu, priced["on_a"]) == pytest.approx(1.0)
    assert costs.run_cost(an_hour_on_one_gpu, priced["on_b"]) == pytest.approx(2.0)


def test_a_report_with_no_price_known_shows_no_cost_at_all(tmp_path):
    root = tmp_path / "project" / "artifacts" / "pod_logs"
    _fetched_run(root, "a", submission="s1", started=1_790_000_000.0, took=60, gpus=[0], rewards=[1, 0])

    doc = build_report(root, group_by="model_id")

    assert "cost" not in doc["columns"] and "cost" not in doc["header"]
    assert not any(key.startswith("cost") for key in doc["groups"][0])
    assert "cost" not in group_columns(["model_id"], "avg_reward", doc["groups"])  # CSV
    assert "cost" not in doc["markdown"]


# ---------------------------------------------------------------- a Lium pod, end to end


@pytest.fixture
def lium(client, cpod):
    pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")
    from ops_tasks.testing.fake_lium import FakeLium

    fake = FakeLium().start()
    fake.add_executor("NVIDIA A100-SXM4-80GB", 8, 1.25)  # 10 $/h
    fake.add_volume("my_volume")
    fake.ssh = {"user": cpod.user, "host": "127.0.0.1", "port": cpod.port}
    yield fake
    fake.stop()


def _ops(client, project, fake, *args):
    env = client.env(**fake.env(), XDG_CACHE_HOME=str(client.home / ".cache"))
    result = run_ops(args, cwd=project, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    documents = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    result.json = documents[0] if len(documents) == 1 else documents  # a chain: one document per task
    return result


RESULTS = "printf '{\"id\": 1, \"reward\": 1}\\n{\"id\": 2, \"reward\": %s}\\n' > \"$OPS_RUN_DIR/results.jsonl\""
SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1, \"model_id\": \"m1\"}' > \"$OPS_RUN_DIR/summary.json\""


@needs_isolation
def test_a_lium_pod_prices_its_runs_and_shows_its_running_cost_until_pod_down(client, cpod, lium, project):
    up = _ops(client, project, lium, "pod.up", "--gpu", "A100", "--count", "8", "--alias", "cheap", "--yes",
              "--json")
    assert up.returncode == 0, up.stderr
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "one_gpu", "gpus": 1, "command": f"sleep 0.3; {RESULTS % 0}; {SUMMARY}"},
        {"run_id": "two_gpus", "gpus": 2, "command": f"sleep 0.3; {RESULTS % 1}; {SUMMARY}"}]}))

    submitted, fetched = _ops(client, project, lium, "runs.submit", "--host", "cheap", "--config", str(config),
                              "--wait", "--timeout", "60", "--json", "artifacts.fetch", "--host", "cheap", "--json").json
    assert submitted["ok"] and fetched["ok"], (submitted, fetched)
    manifest = json.loads((project / "artifacts" / "submissions" / f"{submitted['submission_id']}.json").read_text())
    # Lium's price; the GPUs the pod's supervisor hands out (the fake nvidia-smi's two)
    assert list(manifest["pricing"].values()) == [{"price_per_hour": 10.0, "source": "lium", "gpus": 2, "slots": 2}]

    root = project / "artifacts" / "pod_logs"
    report = build_report(root, group_by="model_id")

    took = {}
    for run_id in ("one_gpu", "two_gpus"):
        status = json.loads((root / run_id / "status.json").read_text())
        took[run_id] = status["finished"] - status["started"]
    by_hand = {"one_gpu": 10.0 * 1 / 2 * took["one_gpu"] / HOUR, "two_gpus": 10.0 * 2 / 2 * took["two_gpus"] / HOUR}
    assert {r["run_id"]: r["cost"] for r in report["rows"]} == pytest.approx(by_hand)
    (group,) = report["groups"]
    # one correct example in one_gpu, two in two_gpus
    assert group["cost_per_correct"] == pytest.approx(sum(by_hand.values()) / 3)
    assert report["header"]["cost"]["cost_usd"] == pytest.approx(sum(by_hand.values()))

    sessions = cpod.sessions()
    status = _ops(client, project, lium, "pod.status", "--host", "cheap", "--json")
    assert status.returncode == 0, status.stderr
    spent = status.json["cost"]
    assert spent["price_per_hour"] == 10.0 and spent["uptime_s"] >= 0
    assert spent["cost_usd"] == pytest.approx(spent["uptime_s"] / HOUR * 10.0)
    assert cpod.sessions() - sessions == 1  # from the records: no round trip of its own

    down = _ops(client, project, lium, "pod.down", "--name", "ops-cheap", "--force", "--yes", "--json")
    assert down.returncode == 0, down.stderr
    # the address may serve another pod now: its price goes with the pod, which stays in the history
    after = _ops(client, project, lium, "pod.status", "--host", "cheap", "--json")
    assert after.returncode == 0 and "cost" not in after.json, after.stdout
    history = _ops(client, project, lium, "pod.ps", "--history", "--json").json["history"]
    assert [(pod["name"], pod["price_per_hour"]) for pod in history] == [("ops-cheap", 10.0)]


def test_pod_status_text_shows_the_running_cost():
    data = {"host": "cheap", "destination": "cheap", "ok": True, "reachable": True, "latency_ms": 3,
            "connect_ms": 10, "hostname": "h", "user": "root",
            "volume": {"path": "/mnt", "mounted": True, "exists": True, "fstype": "tmpfs", "free_bytes": 1,
                       "size_bytes": 2}, "gpus": [], "tools": {}, "tmux_sessions": [], "disk_free_bytes": 1,
            "disk_size_bytes": 2, "load": [0.1], "cpus": 2, "problems": [], "warnings": [],
            "cost": {"price_per_hour": 10.0, "uptime_s": 2 * HOUR, "cost_usd": 20.0, "pod": "ops-cheap"}}
    assert "$20.00 so far ($10.00/h for 2.0h)" in render_status(data)
