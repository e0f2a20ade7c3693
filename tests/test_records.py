"""The laptop's records (ops_tasks.records): keyed by a host's stable identity, so that an
ssh-config alias and the user@host:port it leads to are one host."""

import json

from ops_tasks import records
from ops_tasks.operations import runs as laptop
from ops_tasks.operations.teardown import unfetched_reason
from ops_tasks.settings import Profile, host_identity
from conftest import needs_isolation

OUT = "/mnt/pod_artifacts/outputs"
WRITE_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


def test_the_latest_submission_is_the_last_made_even_within_one_second(tmp_path):
    first, second = laptop.new_submission_id(), laptop.new_submission_id()
    records.save_manifest(tmp_path, {"submission_id": second, "host": "h", "submitted_at": 2.0})
    records.save_manifest(tmp_path, {"submission_id": first, "host": "h", "submitted_at": 1.0})
    records.save_manifest(tmp_path, {"submission_id": "z-other-host", "host": "other", "submitted_at": 3.0})
    assert records.latest_manifest(tmp_path, "h")["submission_id"] == second
    assert first != second


def test_an_alias_resolves_to_the_identity_of_its_address(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text("Host box\n  HostName 203.0.113.7\n  Port 2222\n  User ml\n"
                                              "Host *\n  User nobody\n")

    by_alias = host_identity(Profile(name="box", destination="box"))
    by_address = host_identity(Profile(name="ml@203.0.113.7:2222", destination="ml@203.0.113.7:2222"))

    assert by_alias == by_address == "ml@203.0.113.7:2222"
    assert host_identity(Profile(name="203.0.113.7", destination="203.0.113.7")) == "nobody@203.0.113.7:22"
    assert host_identity(Profile(name="local", destination="local")) == "local"


def test_records_without_an_identity_are_matched_on_the_name_they_were_written_under(tmp_path):
    records.save_manifest(tmp_path, {"submission_id": "old", "host": "lium", "submitted_at": 1.0})
    records.save_manifest(tmp_path, {"submission_id": "new", "host": "lium", "host_id": "root@198.51.100.1:22",
                                     "submitted_at": 2.0})

    assert records.latest_manifest(tmp_path, "lium", "root@203.0.113.7:22")["submission_id"] == "old"
    assert records.latest_manifest(tmp_path, "root@198.51.100.1:22", "root@198.51.100.1:22")["submission_id"] == "new"
    run = {"run_id": "r", "run_dir": f"{OUT}/r"}
    old = {"destination": "lium", "remote_dir": f"{OUT}/r"}
    assert unfetched_reason(run, old, "lium", None, "root@203.0.113.7:22") is None
    new = dict(old, host_id="root@198.51.100.1:22")
    assert unfetched_reason(run, new, "lium", None, "root@203.0.113.7:22").startswith("the fetched copy came from "
                                                                                     "another host")


@needs_isolation
def test_the_alias_and_its_user_host_port_find_the_same_submission(pod, ops, project):
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": [{"run_id": "r1", "command": WRITE_SUMMARY}]}))
    submitted = ops("runs.submit", "--host", pod.alias, "--config", str(config), "--json")
    assert submitted.returncode == 0, submitted.stderr

    waited = ops("runs.wait", "--host", pod.destination, "--timeout", "60", "--json")
    fetched = ops("artifacts.fetch", "--host", pod.alias, "--json")

    assert waited.returncode == 0, waited.stderr
    assert waited.json["submission_id"] == submitted.json["submission_id"]
    assert fetched.returncode == 0, fetched.stderr
    assert [r["run_id"] for r in fetched.json["runs"]] == ["r1"]
    manifest = records.load_manifest(project, submitted.json["submission_id"])
    record = records.load_fetch_record(records.fetch_records_dir(project), "r1")
    assert manifest["host"] == record["host"] == pod.alias
    # What the pod.down check matches a fetch on: the same host, whichever name it is reached by.
    assert manifest["host_id"] == record["host_id"] == pod.destination
