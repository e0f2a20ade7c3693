"""Tasks over a fleet, through the real `ops` program: `--host a,b,c` (or -H, or a fleet's name)
runs the task on every pod at once, one connection each; the output is each pod's result, a
row per pod and the totals; exit 1 names the pods that are not ok (ops_tasks/output.py,
on_each_pod; ops_tasks/fleet.py). Three real sshd pods shared by the module, pod0 with two
fake GPUs."""

import contextlib
import json

import pytest

from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import SshPod
from conftest import module_client, needs_isolation, one_line_error

pytestmark = needs_isolation

client = module_client()
NAMES = ("fa0", "fa1", "fa2")


@pytest.fixture(scope="module")
def pods(tmp_path_factory, client):
    started = []
    try:
        for index, name in enumerate(NAMES):
            pod = SshPod(tmp_path_factory.mktemp(name) / "pod", name, client.public_key,
                         gpus=[gpu(0), gpu(1, used_mib=40000)] if index == 0 else None).start()
            client.add_alias(name, pod)
            pod.alias = name
            started.append(pod)
        yield started
    finally:
        for pod in started:
            pod.stop()


FLEET = ",".join(NAMES)


def connections(pods) -> list:
    return [pod.accepted_connections() for pod in pods]


def new_connections(pods, before) -> list:
    return [now - then for now, then in zip(connections(pods), before)]


@contextlib.contextmanager
def stopped(pod):
    """The pod's sshd down for the block (nothing listens on its port), then up again."""
    port = pod.port
    pod.stop()
    try:
        yield pod
    finally:
        pod.start(port=port)


# ---------------------------------------------------------------- pod.status


def test_pod_status_of_a_fleet_answers_for_every_pod_over_one_connection_each(ops, pods):
    before = connections(pods)

    result = ops("pod.status", "--host", FLEET, "--json")

    assert result.returncode == 0, result.stderr
    document = result.json
    assert document["ok"] is True and document["failed"] == [] and document["hosts"] == list(NAMES)
    assert [document["pods"][name]["host"] for name in NAMES] == list(NAMES)
    assert all(document["pods"][name]["volume"]["mounted"] for name in NAMES)
    assert document["totals"] == {"pods": 3, "pods_up": 3, "pods_not_ok": 0, "gpus": 2, "gpus_free": 1,
                                  "runs_by_state": {}}
    assert new_connections(pods, before) == [1, 1, 1]


def test_a_stopped_pod_is_its_own_row_the_others_answer_and_exit_1_names_it(ops, pods):
    with stopped(pods[1]):
        result = ops("pod.status", "--host", FLEET)
        as_json = ops("pod.status", "--host", FLEET, "--json")

    assert result.returncode == 1 and "Traceback" not in result.stderr
    text = result.stdout
    assert text.startswith("fa0: OK") and "\nfa2: OK" in text  # each pod's own section
    row = next(line for line in text.splitlines() if line.startswith("fa1 "))
    assert "NOT OK" in row and "connection refused" in row
    assert "fleet: 3 pods, 2 up, 1 not ok; 2 GPUs, 1 free" in text
    assert "error: not ok on 1 of 3 pods: fa1" in text
    assert as_json.returncode == 1
    assert as_json.json["failed"] == ["fa1"] and as_json.json["pods"]["fa1"]["reachable"] is False
    assert as_json.json["pods"]["fa0"]["ok"] is True and as_json.json["pods"]["fa2"]["ok"] is True


def test_a_fleet_named_in_invoke_yaml_and_one_given_to_ops_h_are_the_same_fleet(ops, pods, project):
    (project / "invoke.yaml").write_text("ops:\n  fleets:\n    trio: [fa0, fa1, fa2]\n")

    by_name = ops("pod.status", "--host", "trio", "--json")
    by_cli = ops("-H", FLEET, "pod.status", "--json")

    for result in (by_name, by_cli):
        assert result.returncode == 0, result.stderr
        assert result.json["hosts"] == list(NAMES)


def test_a_fleet_of_one_is_exactly_the_single_host(ops, pods, project):
    (project / "invoke.yaml").write_text("ops:\n  fleets:\n    solo: [fa2]\n")

    result = ops("pod.status", "--host", "solo", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["host"] == "fa2" and "fleet" not in result.json and "pods" not in result.json


def test_a_dry_run_over_a_fleet_shows_each_pods_script_and_contacts_nothing(ops, pods):
    before = connections(pods)

    text = ops("pod.status", "--host", FLEET, "--dry-run")
    as_json = ops("pod.status", "--host", FLEET, "--dry-run", "--json")

    assert text.returncode == 0, text.stderr
    for name in NAMES:
        assert f"# dry run: nothing contacted. Would run on {name} over SSH" in text.stdout
    assert as_json.json["dry_run"] is True
    assert all(as_json.json["pods"][name]["scripts"][0].startswith("# ops-tasks remote script: pod_status.sh")
               for name in NAMES)
    assert new_connections(pods, before) == [0, 0, 0]


def test_an_unknown_host_in_a_fleet_is_refused_before_any_contact(ops, pods):
    before = connections(pods)

    one_line_error(ops("pod.status", "--host", "fa0,nosuch-pod", "--json"), 2, "nosuch-pod")
    assert new_connections(pods, before) == [0, 0, 0]


def test_a_task_not_wired_for_fleets_refuses_one_naming_itself_before_any_contact(ops, pods):
    before = connections(pods)

    one_line_error(ops("-H", FLEET, "pod.sync"), 2, "pod.sync over a fleet is not supported yet", "fa0, fa1, fa2")
    assert new_connections(pods, before) == [0, 0, 0]


def test_json_of_a_fleet_is_one_strict_document(ops, pods):
    result = ops("pod.status", "--host", FLEET, "--pretty")

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
