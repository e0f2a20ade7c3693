"""Fleets: naming several pods as one, and fanning one operation out over them (ops_tasks/fleet.py).

Naming is checked without contact (aliases in the client's ~/.ssh/config, no pod behind them);
fan_out runs against three real sshd pods shared by the module."""

import contextvars
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ops_tasks import records, targets
from ops_tasks.errors import ConfigError, HostError
from ops_tasks.fleet import FleetResult, at_once, fan_out, host_names, merged_rows, resolve_hosts, totals
from ops_tasks.operations.pod import pod_status
from ops_tasks.settings import check_ops_config, resolve_profile
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import ClientHome, SshPod
from conftest import needs_isolation

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- naming a fleet (no contact)


@pytest.fixture
def laptop(client, monkeypatch, tmp_path):
    """A client HOME with aliases a0..a3 (nothing listens behind them: naming contacts nothing)."""
    monkeypatch.setenv("HOME", str(client.home))
    for index in range(4):
        client.add_alias(f"a{index}", SimpleNamespace(port=2200 + index, user="root"))
    return SimpleNamespace(client=client, project=tmp_path)


def names(profiles):
    return [p.name for p in profiles]


def test_a_comma_list_names_each_host_in_order(laptop):
    profiles = resolve_hosts({}, "a2, a0,root@10.0.0.9:2222", laptop.project)
    assert names(profiles) == ["a2", "a0", "root@10.0.0.9:2222"]


def test_one_host_is_a_fleet_of_one_exactly_as_resolve_profile_gives_it(laptop):
    assert resolve_hosts({}, "a1", laptop.project) == [resolve_profile({}, "a1", laptop.project)]


def test_a_fleet_of_invoke_yaml_names_its_hosts_and_profiles_keep_their_settings(laptop):
    ops = {"profiles": {"big": {"destination": "a3", "connect_timeout": 3}}, "fleets": {"gpu4": ["a0", "big"]}}
    profiles = resolve_hosts(ops, "gpu4", laptop.project)
    assert names(profiles) == ["a0", "big"]
    assert profiles[1].destination == "a3" and profiles[1].connect_timeout == 3


def test_a_fleet_recorded_by_pod_up_is_found_by_its_name(laptop):
    records.save_fleet(laptop.project, "sweep", ["a1", "a2"])
    assert names(resolve_hosts({}, "sweep", laptop.project)) == ["a1", "a2"]
    assert records.load_fleet(laptop.project, "nothing-recorded") is None


def test_a_damaged_fleet_record_is_named_not_taken_for_a_host(laptop):
    path = records.save_fleet(laptop.project, "sweep", ["a1"])  # the user's state database
    path.write_text('{"aliases": "a1"}')
    with pytest.raises(ConfigError, match="damaged state database") as refused:
        resolve_hosts({}, "sweep", laptop.project)
    assert str(path) in str(refused.value)


@pytest.mark.parametrize("spec", ["a0,a0", "a1,root@127.0.0.1:2201"])
def test_one_host_named_twice_however_spelt_is_refused(laptop, spec):
    with pytest.raises(ConfigError, match="are the same host") as refused:
        resolve_hosts({}, spec, laptop.project)
    assert refused.value.exit_code == 2


def test_a_fleet_listing_one_host_twice_is_refused(laptop):
    with pytest.raises(ConfigError, match="same host"):
        resolve_hosts({"fleets": {"f": ["a0", "a1", "a0"]}}, "f", laptop.project)


@pytest.mark.parametrize("spec", ["a0,,a1", "a0,", ",a0"])
def test_an_empty_name_in_a_comma_list_is_refused(laptop, spec):
    with pytest.raises(ConfigError, match="empty host name"):
        host_names({}, spec, laptop.project)


def test_an_unknown_host_in_a_fleet_is_refused_by_name(laptop):
    with pytest.raises(ConfigError, match="'nosuch'"):
        resolve_hosts({}, "a0,nosuch", laptop.project)


@pytest.mark.parametrize("fleets, fragment", [
    ({"f": "a0,a1"}, "ops.fleets.f must be a non-empty list"),
    ({"f": []}, "ops.fleets.f must be a non-empty list"),
    ({"f": ["a0", 3]}, "ops.fleets.f[1] must be a host name"),
    ({"f": ["a0", "a1,a2"]}, "ops.fleets.f[1] must be a host name"),
    ({"bad name": ["a0"]}, "ops.fleets.bad name: not a fleet name"),
    ({"big": ["a0"]}, "ops.fleets.big: 'big' is also a profile"),
])
def test_malformed_fleets_are_refused_naming_the_key(fleets, fragment):
    with pytest.raises(ConfigError, match="invoke.yaml: ") as refused:
        check_ops_config({"profiles": {"big": {}}, "fleets": fleets})
    assert fragment in str(refused.value)


def test_fleets_must_be_a_mapping():
    with pytest.raises(ConfigError, match="ops.fleets must be a mapping"):
        check_ops_config({"fleets": ["a0"]})


# ---------------------------------------------------------------- fan_out without contact


def unreachable_profiles(count, tmp_path):
    """Profiles of hosts nobody contacts (the operation never touches its target)."""
    return [resolve_profile({}, f"root@192.0.2.{i + 1}:22", tmp_path) for i in range(count)]


def test_results_come_back_in_host_order_and_the_workers_are_bounded(tmp_path):
    lock = threading.Lock()
    running, most = [0], [0]
    started = threading.Barrier(2, timeout=20)

    def operation(target):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        started.wait()  # two at a time start together: the bound is reached, never passed
        with lock:
            running[0] -= 1
        return {"ok": True, "host": target.profile.name}

    profiles = unreachable_profiles(6, tmp_path)
    result = fan_out(profiles, operation, max_workers=2)
    assert [p["pod"] for p in result.pods] == [p.name for p in profiles]
    assert most[0] == 2 and result.ok and result.exit_code == 0


def test_one_pods_expected_failure_is_its_own_result_and_the_worst_exit_code_wins(tmp_path):
    profiles = unreachable_profiles(3, tmp_path)
    failures = {profiles[0].name: HostError("pod gone"), profiles[2].name: ConfigError("bad key")}

    def operation(target):
        if target.profile.name in failures:
            raise failures[target.profile.name]
        return {"ok": True}

    result = fan_out(profiles, operation)
    assert [p["ok"] for p in result.pods] == [False, True, False]
    assert result.pods[0]["error"] == "pod gone" and result.failed == [profiles[0].name, profiles[2].name]
    assert result.exit_code == 2
    assert result.as_dict()["pods"][profiles[1].name] == {"pod": profiles[1].name, "ok": True}


def test_a_result_that_is_not_ok_fails_the_fleet_without_an_error(tmp_path):
    profiles = unreachable_profiles(2, tmp_path)
    result = fan_out(profiles, lambda t: {"ok": t.profile.name != profiles[1].name})
    assert result.failed == [profiles[1].name] and result.exit_code == 1


def test_a_bug_in_an_operation_is_raised_after_every_pod_finished(tmp_path):
    finished = []

    def operation(target):
        if target.profile.name.endswith(".1:22"):
            raise KeyError("a bug")
        finished.append(target.profile.name)
        return {"ok": True}

    with pytest.raises(KeyError):
        fan_out(unreachable_profiles(3, tmp_path), operation)
    assert len(finished) == 2


def test_at_once_gives_each_item_its_own_result_in_order_at_most_max_workers_at_a_time():
    """fleet.at_once, under fan_out and pod.up alike: a failure is that item's, the caller's
    context reaches every call, and no more than max_workers run at once."""
    flag = contextvars.ContextVar("flag")
    flag.set("the task's")
    together = threading.Barrier(3, timeout=30)  # the first three run at once, or this breaks
    lock, running, peak = threading.Lock(), [0], [0]

    def one(item):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if item < 3:
            together.wait()
        with lock:
            running[0] -= 1
        if item == 4:
            raise HostError("pod 4 is down")
        return {"ok": True, "item": item, "flag": flag.get()}

    results = at_once(range(8), one, max_workers=3)
    assert results[4] == {"ok": False, "error": "pod 4 is down", "exit_code": 1}
    assert [r["item"] for r in results if r["ok"]] == [0, 1, 2, 3, 5, 6, 7]
    assert {r["flag"] for r in results if r["ok"]} == {"the task's"} and peak[0] == 3


AT_ONCE_INTERRUPTED = """
import os, signal, threading, time
from ops_tasks.fleet import at_once

# Python raises KeyboardInterrupt on SIGINT only where SIGINT was not ignored when it started; a
# test run started in the background (`make test &`, nohup, a runner's job) passes SIGINT ignored
# to its children, and this child then waited on item 0 for ever. A terminal's Ctrl-C always
# reaches a foreground `ops`: say so here.
signal.signal(signal.SIGINT, signal.default_int_handler)

started, stops, handled = [], [], threading.Event()

def one(item):
    started.append(item)
    if item == 1:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while item 0 is in flight
        handled.wait(30)
        return {"ok": True}
    threading.Event().wait()  # a call nothing ends (pod.up's wait on Lium): never returns

def on_stop():
    stops.append(True)
    handled.set()

try:
    at_once(range(5), one, max_workers=2, on_stop=on_stop)
except KeyboardInterrupt:
    time.sleep(0.3)  # room for a worker that wrongly takes the next item
    print(sorted(started), stops, flush=True)
"""


def test_ctrl_c_reaches_the_caller_at_once_starts_nothing_more_and_leaves_no_thread_to_wait_for():
    """Item 0 never returns: the process still ends (daemon threads), item 1's worker takes no
    more items, and on_stop ran (fan_out closes its connections there)."""
    done = subprocess.run([sys.executable, "-c", AT_ONCE_INTERRUPTED], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 1] [True]"


def test_a_dry_run_records_each_pods_script_and_contacts_nothing(tmp_path):
    profiles = unreachable_profiles(2, tmp_path)
    result = fan_out(profiles, lambda t: t.run_script(f"echo {t.profile.name}"), dry_run=True)
    assert [p["scripts"] for p in result.pods] == [[f"echo {p.name}"] for p in profiles]
    assert all(p["dry_run"] for p in result.pods)


# ---------------------------------------------------------------- merging


def test_merged_rows_carry_the_pod_and_skip_what_a_pod_got_wrong():
    results = [{"pod": "a", "ok": True, "runs": [{"run_id": "r1", "state": "running", "pod": "forged"}, "junk"]},
               {"pod": "b", "ok": False, "error": "down"},
               {"pod": "c", "ok": True, "runs": "not a list"},
               {"pod": "d", "ok": True, "runs": [{"run_id": "r2", "state": "queued"}]}]
    assert merged_rows(results, "runs") == [{"pod": "a", "run_id": "r1", "state": "running"},
                                            {"pod": "d", "run_id": "r2", "state": "queued"}]


def test_a_pod_whose_runs_failed_is_up_and_its_runs_are_counted():
    results = [{"pod": "a", "ok": False, "error": "1 run failed", "runs": [{"state": "failed"}]},
               {"pod": "b", "ok": False, "error": "connection refused", "exit_code": 1}]
    assert totals(results)["pods_up"] == 1 and totals(results)["runs_by_state"] == {"failed": 1}


def test_totals_count_pods_up_gpus_free_and_runs_by_state():
    free = {"memory_used_mib": 100, "memory_total_mib": 81920}
    busy = {"memory_used_mib": 60000, "memory_total_mib": 81920}
    results = [{"pod": "a", "ok": True, "reachable": True, "gpus": [free, busy], "runs": [{"state": "running"}]},
               {"pod": "b", "ok": False, "reachable": False, "gpus": [free]},
               {"pod": "c", "ok": False, "error": "auth failed"},
               {"pod": "d", "ok": True, "gpus": [free, {"memory_used_mib": "x"}],
                "runs": [{"state": "queued"}, {"state": "running"}, {"state": 7}]}]
    assert totals(results) == {"pods": 4, "pods_up": 2, "pods_not_ok": 2, "gpus": 4, "gpus_free": 2,
                               "runs_by_state": {"running": 2, "queued": 1, "unknown": 1}}


# ---------------------------------------------------------------- fan_out over real pods


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three real sshd pods (pod0 with two fake GPUs) and a laptop whose ~/.ssh/config names them."""
    root = tmp_path_factory.mktemp("fleet")
    client = ClientHome(root / "client")
    pods = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(client.home))
        try:
            for index in range(3):
                pod = SshPod(root / f"pod{index}", f"pod{index}", client.public_key,
                             gpus=[gpu(0), gpu(1)] if index == 0 else None).start()
                client.add_alias(pod.name, pod)
                pods.append(pod)
            yield SimpleNamespace(client=client, pods=pods, project=root / "project")
        finally:
            targets.close_all()
            for pod in pods:
                pod.stop()


@pytest.fixture
def fresh_connections():
    """Each test opens its own connections (the pool would otherwise reuse the last test's)."""
    targets.close_all()
    yield
    targets.close_all()


def fleet_profiles(fleet, **profile_settings):
    ops = {"profiles": {p.name: dict(profile_settings) for p in fleet.pods}} if profile_settings else {}
    return resolve_hosts(ops, ",".join(p.name for p in fleet.pods), fleet.project)


@needs_isolation
def test_every_pod_answers_in_parallel_over_one_connection_each(fleet, fresh_connections):
    before = [p.accepted_connections() for p in fleet.pods]
    all_started = threading.Barrier(3, timeout=20)
    order = []

    def operation(target):
        order.append(("started", target.profile.name))
        all_started.wait()  # releases only once all three are in: the calls overlap
        order.append(("contacting", target.profile.name))
        return pod_status(target)

    result = fan_out(fleet_profiles(fleet), operation)
    assert result.ok, result.pods
    assert [p["pod"] for p in result.pods] == ["pod0", "pod1", "pod2"]
    assert {kind for kind, _ in order[:3]} == {"started"}  # every pod started before any contact
    assert [p.accepted_connections() - b for p, b in zip(fleet.pods, before)] == [1, 1, 1]
    assert totals(result.pods)["gpus"] == 2 and totals(result.pods)["pods_up"] == 3


@needs_isolation
def test_a_stopped_pod_gives_its_error_while_the_others_answer(fleet, fresh_connections):
    stopped = fleet.pods[1]
    port = stopped.port
    stopped.stop()
    try:
        result = fan_out(fleet_profiles(fleet), pod_status)
    finally:
        stopped.start(port=port)
    by_pod = {p["pod"]: p for p in result.pods}
    assert by_pod["pod0"]["ok"] is True and by_pod["pod2"]["ok"] is True
    assert by_pod["pod1"]["ok"] is False and by_pod["pod1"]["reachable"] is False
    assert "connection refused" in by_pod["pod1"]["problems"][0]
    assert result.failed == ["pod1"] and result.exit_code == 1


@needs_isolation
def test_each_pod_has_its_own_deadline_and_a_slow_one_stops_no_other(fleet, fresh_connections):
    slow = "pod2"

    def operation(target):
        script = "sleep 30; echo late" if target.profile.name == slow else "echo prompt"
        answer = target.run_script(script)
        return {"ok": True, "said": answer.stdout.strip()}

    result = fan_out(fleet_profiles(fleet, connect_timeout=1), operation, deadline_s=1)
    by_pod = {p["pod"]: p for p in result.pods}
    assert by_pod["pod0"]["said"] == by_pod["pod1"]["said"] == "prompt"
    assert by_pod[slow]["ok"] is False and "its own time limit of 1 s" in by_pod[slow]["error"]
    assert result.failed == [slow]


def test_an_empty_fleet_is_an_empty_ok_result():
    assert fan_out([], pod_status) == FleetResult([])
