"""The user's store of rented pods and fleets (ops_tasks/state.py): one SQLite database per user,
whatever folder ops runs in. Each test has a store of its own (conftest sets OPS_STATE_DIR)."""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops_tasks import records, state
from ops_tasks.errors import ConfigError
from ops_tasks.fleet import resolve_hosts
from ops_tasks.operations import costs
from ops_tasks.settings import host_identity, resolve_profile
from conftest import one_line_error

CANARY = "lium-canary-5b1e0c7d93aa"
POD = {"id": "pod-1", "name": "ops-a", "huid": "brave-fox-01", "gpu_type": "A100", "gpu_count": 8,
       "price_per_hour": 10.0, "uptime_s": 3600, "created_at": "2026-11-28T12:00:00Z"}


def database_bytes() -> bytes:
    """Everything the store holds on disk: the database and any write-ahead log beside it."""
    return b"".join(path.read_bytes() for path in sorted(state.state_dir().glob("state.db*")))


# ---------------------------------------------------------------- where it is


def test_it_lives_in_the_users_state_directory_and_ops_state_dir_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("OPS_STATE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    assert state.database_path() == tmp_path / "home" / ".local" / "state" / "ops-tasks" / "state.db"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert state.database_path() == tmp_path / "home" / ".local" / "state" / "ops-tasks" / "state.db"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state.database_path() == tmp_path / "xdg" / "ops-tasks" / "state.db"
    monkeypatch.setenv("OPS_STATE_DIR", str(tmp_path / "mine"))
    assert state.database_path() == tmp_path / "mine" / "state.db"


def test_reading_an_empty_store_creates_nothing(tmp_path):
    assert records.lium_pod_of("root@203.0.113.7:22") is None
    assert records.load_fleet(tmp_path, "sweep") is None and records.lium_pods(released=True) == []
    assert not state.database_path().exists()


def test_the_database_is_the_users_alone(tmp_path):
    records.save_lium_pod("a", POD, "root@203.0.113.7:22", tmp_path)
    assert state.database_path().stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- rented pods


def test_a_released_pod_stays_in_the_history_and_its_address_loses_its_price(tmp_path):
    host = "root@203.0.113.7:22"
    records.save_lium_pod("a", POD, host, tmp_path / "project-a")
    assert records.lium_pod_of(host)["price_per_hour"] == 10.0

    records.forget_lium_pod("pod-1")  # pod.down

    assert records.lium_pod_of(host) is None and records.lium_pods() == []
    (kept,) = records.lium_pods(released=True)
    assert (kept["name"], kept["id"], kept["project"]) == ("ops-a", "pod-1", str((tmp_path / "project-a").resolve()))
    assert kept["released_at"] >= kept["recorded_at"]
    spent = costs.released_cost(kept)  # an hour up when recorded, released at once: about $10
    assert spent["cost_usd"] == pytest.approx(10.0, abs=0.1)

    records.save_lium_pod("a", {**POD, "id": "pod-2"}, host, tmp_path)  # the address, rented again
    assert records.lium_pod_of(host)["id"] == "pod-2"
    assert [p["id"] for p in records.lium_pods(released=True)] == ["pod-1", "pod-2"]


def test_a_pod_recorded_again_is_brought_up_to_date_not_recorded_twice(tmp_path):
    records.save_lium_pod("a", POD, "root@203.0.113.7:22", tmp_path)
    records.save_lium_pod("a", {**POD, "price_per_hour": 12.0}, "root@203.0.113.8:22", tmp_path)  # pod.up again
    (pod,) = records.lium_pods()
    assert (pod["price_per_hour"], pod["host_id"]) == (12.0, "root@203.0.113.8:22")


def test_costs_read_a_price_recorded_from_another_folder(tmp_path):
    ops = {"profiles": {"gpu": {"destination": "root@203.0.113.9:2200"}}}
    records.save_lium_pod("gpu", POD, host_identity(resolve_profile(ops, "gpu", tmp_path / "a")), tmp_path / "a")
    elsewhere = resolve_profile(ops, "gpu", tmp_path / "b")
    assert costs.price_of(elsewhere) == {"price_per_hour": 10.0, "source": "lium", "pod_gpus": 8}


def test_a_secret_in_what_lium_said_is_never_stored(tmp_path):
    pod = {**POD, "api_key": CANARY, "ssh_cmd": f"ssh root@h -p 22 # {CANARY}", "env": {"HF_TOKEN": CANARY}}
    records.save_lium_pod("a", pod, "root@203.0.113.7:22", tmp_path)
    records.save_fleet(tmp_path, "sweep", ["a"])
    assert CANARY.encode() not in database_bytes()
    assert set(records.lium_pods()[0]) == {*state.POD_FIELDS, "id"} - {"lium_id"}


@pytest.mark.parametrize("alias", ["../x", "", None])
def test_a_pod_is_recorded_under_an_alias_only(alias, tmp_path):
    with pytest.raises(ConfigError, match="not an alias"):
        records.save_lium_pod(alias, POD, "root@203.0.113.7:22", tmp_path)


# ---------------------------------------------------------------- fleets


def test_a_fleet_recorded_in_one_folder_is_found_from_another(tmp_path, monkeypatch, client):
    monkeypatch.setenv("HOME", str(client.home))
    for index in (1, 2):
        client.add_alias(f"sweep-{index}", type("Pod", (), {"port": 2200 + index, "user": "root"}))
    records.save_fleet(tmp_path / "a", "sweep", ["sweep-1", "sweep-2"])

    assert [p.name for p in resolve_hosts({}, "sweep", tmp_path / "b")] == ["sweep-1", "sweep-2"]

    records.save_fleet(tmp_path / "b", "sweep", ["sweep-2"])  # pod.down kept one
    assert records.load_fleet(tmp_path / "a", "sweep") == ["sweep-2"]
    records.forget_fleet(tmp_path / "c", "sweep")
    assert records.load_fleet(tmp_path / "a", "sweep") is None


def test_a_recorded_fleet_must_be_a_name_with_aliases(tmp_path):
    with pytest.raises(ConfigError, match="not a fleet name"):
        records.save_fleet(tmp_path, "../x", ["a"])
    with pytest.raises(ConfigError, match="list of host aliases"):
        records.save_fleet(tmp_path, "f", ["a", ""])
    assert records.load_fleet(tmp_path, "../x") is None


# ---------------------------------------------------------------- the records of earlier releases


def _old_records(tmp_path, monkeypatch) -> Path:
    """The JSON files releases before the store wrote: a pod under the cache, a project's fleets."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pods = tmp_path / "cache" / "ops-tasks" / "lium_pods"
    pods.mkdir(parents=True)
    (pods / "old.json").write_text(json.dumps({
        "alias": "old", "host_id": "root@203.0.113.7:22", "recorded_at": 1_790_000_000.0, "created": 1_789_990_000.0,
        "id": "pod-old", "name": "ops-old", "huid": "old-fox", "gpu_type": "H100", "gpu_count": 8,
        "price_per_hour": 20.0, "created_at": "2026-09-21T10:13:20Z"}))
    (pods / "torn.json").write_text('{"alias": "to')
    project = tmp_path / "project"
    (project / "artifacts" / "fleets").mkdir(parents=True)
    (project / "artifacts" / "fleets" / "sweep.json").write_text(json.dumps({"name": "sweep", "aliases": ["s-1", "s-2"]}))
    (project / "artifacts" / "fleets" / "bad.json").write_text(json.dumps({"aliases": "s-1"}))
    return project


def test_the_first_use_imports_the_pods_and_fleets_earlier_releases_recorded(tmp_path, monkeypatch):
    project = _old_records(tmp_path, monkeypatch)

    old = records.lium_pod_of("root@203.0.113.7:22")  # the first call after the upgrade

    assert (old["name"], old["price_per_hour"], old["created"], old["project"]) == ("ops-old", 20.0,
                                                                                  1_789_990_000.0, None)
    assert [p["alias"] for p in records.lium_pods()] == ["old"]  # the torn file is left out
    assert records.load_fleet(project, "sweep") == ["s-1", "s-2"]
    assert records.load_fleet(tmp_path / "elsewhere", "sweep") == ["s-1", "s-2"]  # imported: the user's now
    assert records.load_fleet(project, "bad") is None
    with sqlite3.connect(state.database_path()) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == state.SCHEMA_VERSION


def test_old_records_are_imported_once(tmp_path, monkeypatch):
    project = _old_records(tmp_path, monkeypatch)
    assert records.load_fleet(project, "sweep") == ["s-1", "s-2"]

    records.forget_lium_pod("pod-old")
    records.forget_fleet(project, "sweep")  # pod.down released them: their old files must not bring them back

    assert records.lium_pod_of("root@203.0.113.7:22") is None
    assert records.load_fleet(project, "sweep") is None
    assert (project / "artifacts" / "fleets" / "sweep.json").exists()  # an older checkout may still read it


def test_a_store_of_a_newer_release_is_refused_by_name(tmp_path):
    records.save_fleet(tmp_path, "sweep", ["a"])
    with sqlite3.connect(state.database_path()) as db:
        db.execute(f"PRAGMA user_version = {state.SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match="written by a newer ops-tasks") as refused:
        records.load_fleet(tmp_path, "sweep")
    assert str(state.database_path()) in str(refused.value)


# ---------------------------------------------------------------- a damaged file


def test_a_damaged_database_is_one_line_naming_it(tmp_path, ops, client):
    path = client.state_home / "ops-tasks" / "state.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database, " * 512)

    with pytest.raises(ConfigError, match="damaged state database"):
        os.environ["OPS_STATE_DIR"] = str(path.parent)  # restored by conftest's monkeypatch
        records.lium_pod_of("root@203.0.113.7:22")
    result = ops("pod.status", "--host", "sweep")  # a host name that may be a recorded fleet

    line = one_line_error(result, 2, str(path), "damaged state database", "move it aside")
    assert "Traceback" not in result.stderr, line


# ---------------------------------------------------------------- two processes at once

WRITER = """
import sys, time
from pathlib import Path
from ops_tasks import records
worker, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:  # all of them at once
    time.sleep(0.001)
for n in range(25):
    records.save_lium_pod(f"w{worker}-{n}", {"id": f"pod-{worker}-{n}", "price_per_hour": 1.0}, "h", Path("/tmp"))
    records.save_fleet(Path("/tmp"), f"fleet-{worker}", [f"w{worker}-{m}" for m in range(n + 1)])
    records.lium_pods()
    if n % 5 == 4:
        records.forget_lium_pod(f"pod-{worker}-{n}")
"""


def test_processes_writing_at_once_never_fail_and_lose_nothing(tmp_path):
    start = time.time() + 2  # each interpreter has imported ops_tasks by then
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(worker), str(start)], stderr=subprocess.PIPE,
                                text=True) for worker in range(4)]
    errors = [writer.communicate(timeout=90)[1] for writer in writers]

    assert [writer.returncode for writer in writers] == [0] * 4, errors
    every = records.lium_pods(released=True)
    assert len(every) == 100 and len({pod["id"] for pod in every}) == 100
    assert sum(pod["released_at"] is not None for pod in every) == 20
    assert all(records.load_fleet(tmp_path, f"fleet-{worker}") == [f"w{worker}-{m}" for m in range(25)]
               for worker in range(4))


def test_released_pods_leave_a_fleets_name_and_an_empty_fleet_is_forgotten(tmp_path):
    # pod.down and a campaign's teardown: `--host NAME` must never go on naming released pods.
    from ops_tasks import records

    records.save_fleet(tmp_path, "sweep", ["a", "b", "c"])
    records.fleet_after_release(tmp_path, "sweep", ["b"])
    assert records.load_fleet(tmp_path / "elsewhere", "sweep") == ["a", "c"]
    records.fleet_after_release(tmp_path, "sweep", ["a", "c", "not-a-member"])
    assert records.load_fleet(tmp_path, "sweep") is None
    records.fleet_after_release(tmp_path, "never-recorded", ["a"])  # nothing to do, nothing made up
    assert records.load_fleet(tmp_path, "never-recorded") is None
