"""The first hour (../shared/cases/first-hour.md, item 6): runs without GPUs (`gpus: 0`, the clients
of a vLLM server) on a pod with GPUs take a CPU slot, so they are capped: by `runs.submit --slots N`
on any pod, else by a documented default (contract.CPU_SLOTS_BESIDE_GPUS). A --slots that cannot
apply says why. One real sshd pod with two fake GPUs (a fake nvidia-smi); each test its own
outputs root, so its own supervisor. How many ran at once is read from the runs' own start and end
stamps, never from a clock's duration."""

import json
import time

import pytest

from conftest import module_client, module_pod, needs_isolation, run_ops
from ops_tasks.operations.placement import place
from ops_tasks.runtime.contract import CPU_SLOTS_BESIDE_GPUS

pytestmark = needs_isolation

client = module_client()
pod = module_pod("spod", gpus=2)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("project")


def ops(project, client, *args):
    return run_ops(list(args), cwd=project, env=client.env())


def stamped(stamps: str, until_started: int) -> str:
    """A run that stamps its start, waits (bounded) until `until_started` runs have started, so
    that as many as may run together do, then stamps its end and exits 0 (summary: exit_code)."""
    return (f"date +%s.%N > {stamps}/$OPS_RUN_ID.start; for i in $(seq 100); do "
            f"[ $(ls {stamps}/*.start | wc -l) -ge {until_started} ] && break; sleep 0.1; done; "
            f"sleep 0.3; date +%s.%N > {stamps}/$OPS_RUN_ID.end")


def submit(project, client, pod, out, runs, *flags):
    path = project / f"{out.strip('/').replace('/', '-')}.json"
    path.write_text(json.dumps({"remote_repo": "/root", "remote_outputs_dir": out, "summary": "exit_code",
                                "runs": runs}))
    return ops(project, client, "runs.submit", "--host", pod.alias, "--config", str(path), "--json", *flags)


def wait(project, client, pod, out):
    waited = ops(project, client, "runs.wait", "--host", pod.alias, "--remote-outputs-dir", out, "--timeout", "90",
                 "--json")
    assert waited.json is not None, waited.stderr
    return {r["run_id"]: r for r in waited.json["runs"]}


def intervals(pod, stamps: str) -> dict:
    """{run id: (start, end)} from the runs' own stamps on the pod."""
    found = {}
    for line in pod.sh(f"cd {stamps} && grep -H . *.start *.end").stdout.splitlines():
        name, value = line.split(":", 1)
        run_id, which = name.rsplit(".", 1)
        found.setdefault(run_id, {})[which] = float(value)
    return {run_id: (t["start"], t["end"]) for run_id, t in found.items()}


def most_at_once(spans) -> int:
    """The largest number of the (start, end) spans open at one moment."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    open_now = most = 0
    for _, step in events:
        open_now += step
        most = max(most, open_now)
    return most


def test_six_cpu_runs_on_a_two_gpu_pod_with_slots_2_never_run_more_than_2_at_once(pod, project, client):
    out, stamps = "/mnt/slots2/out", "/mnt/slots2/stamps"
    pod.sh(f"mkdir -p {stamps}")
    runs = [{"run_id": f"client{i}", "gpus": 0, "command": stamped(stamps, 2)} for i in range(6)]

    submitted = submit(project, client, pod, out, runs, "--slots", "2")

    assert submitted.returncode == 0 and submitted.json["warnings"] == [], submitted.stdout + submitted.stderr
    ended = wait(project, client, pod, out)
    assert {r["state"] for r in ended.values()} == {"succeeded"}
    spans = intervals(pod, stamps)
    assert len(spans) == 6 and most_at_once(spans.values()) == 2  # two at a time: capped, and not one by one
    info = json.loads(pod.sh(f"cat {out}/.ops/supervisor.json").stdout)
    assert info["cpu_slots"] == 2 and info["slots"] == [0, 1]  # its GPUs are still what the GPU runs share
    assert all(r.get("gpus") in ([], None) for r in ended.values())  # a CPU slot is no GPU (what costs count)


def test_without_slots_cpu_runs_beside_gpus_take_the_default_and_gpu_runs_are_not_held_up(pod, project, client):
    out, stamps = "/mnt/default/out", "/mnt/default/stamps"
    pod.sh(f"mkdir -p {stamps}")
    assert CPU_SLOTS_BESIDE_GPUS < 6  # else these six would say nothing about a cap
    runs = [{"run_id": f"client{i}", "gpus": 0, "command": stamped(stamps, CPU_SLOTS_BESIDE_GPUS)} for i in range(6)]
    runs.append({"run_id": "train", "gpus": 2, "command": stamped(stamps, CPU_SLOTS_BESIDE_GPUS + 1)})

    submitted = submit(project, client, pod, out, runs)

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    ended = wait(project, client, pod, out)
    assert {r["state"] for r in ended.values()} == {"succeeded"}
    spans = intervals(pod, stamps)
    clients = [span for run_id, span in spans.items() if run_id.startswith("client")]
    assert most_at_once(clients) == CPU_SLOTS_BESIDE_GPUS
    # The GPU run held both GPUs while the CPU slots were full: the pools are apart.
    assert most_at_once(spans.values()) == CPU_SLOTS_BESIDE_GPUS + 1
    assert ended["train"]["gpus"] == [0, 1]


def test_slots_where_no_run_takes_a_cpu_slot_says_why_it_changes_nothing(pod, project, client):
    out = "/mnt/allgpu/out"
    runs = [{"run_id": f"g{i}", "gpus": 1, "command": "true"} for i in range(2)]

    submitted = submit(project, client, pod, out, runs, "--slots", "3")

    assert submitted.returncode == 0, submitted.stderr
    assert len(submitted.json["warnings"]) == 1, submitted.json["warnings"]
    warning = submitted.json["warnings"][0]
    assert warning.startswith("spod: --slots 3") and "gpus: 0" in warning and "changes nothing" in warning
    assert f"warning: {warning}" in submitted.stderr
    wait(project, client, pod, out)


def test_slots_given_to_a_live_supervisor_on_a_gpu_pod_apply_from_its_next_loop(pod, project, client):
    out, release = "/mnt/live/out", "/mnt/live/release"
    holder = [{"run_id": "holder", "gpus": 0,
               "command": f"for i in $(seq 300); do [ -e {release} ] && break; sleep 0.1; done"}]
    assert submit(project, client, pod, out, holder).returncode == 0
    later = [{"run_id": "later", "gpus": 0, "command": "true"}]

    submitted = submit(project, client, pod, out, later, "--slots", "1")

    assert submitted.json["supervisor"] == "running; slots now 1 (it reads them again each loop)"
    assert submitted.json["warnings"] == []
    deadline = time.monotonic() + 20
    while json.loads(pod.sh(f"cat {out}/.ops/supervisor.json").stdout)["cpu_slots"] != 1:
        assert time.monotonic() < deadline, pod.sh(f"cat {out}/.ops/supervisor.log").stdout
        time.sleep(0.2)
    time.sleep(1)  # several loops: `later` must still wait for the one slot the holder has
    assert pod.sh(f"cat {out}/later/status.json").stdout.count('"queued"') == 1
    pod.sh(f"touch {release}")
    assert {r["state"] for r in wait(project, client, pod, out).values()} == {"succeeded"}
    assert f"CPU slots: {CPU_SLOTS_BESIDE_GPUS} -> 1" in pod.sh(f"cat {out}/.ops/supervisor.log").stdout


def test_a_fleet_spreads_cpu_runs_over_the_cpu_slots_of_its_gpu_pods():
    pods = [{"name": n, "gpu_count": 2, "free_gpus": 2, "slots": 2, "free_slots": 2} for n in ("a", "b")]
    runs = [{"run_id": f"c{i}", "gpus": 0, "expected_s": 10.0} for i in range(8)]
    placed = place(runs, pods)
    assert sorted(map(len, placed.values())) == [4, 4]  # not all eight behind one pod's two slots
    full = [dict(pods[0], free_slots=0), pods[1]]
    assert place(runs[:2], full) == {"a": [], "b": ["c0", "c1"]}  # free slots first, though a's GPUs are free
