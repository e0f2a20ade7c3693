"""An upgrade in the middle of a sweep (docs/ARCHITECTURE.md, "The pod runtime"): a supervisor of an
older release runs a long run when today's ops submits a run whose gate cannot be met. The gate is
never dropped, the old run finishes where it is, once, and the queue passes to a supervisor that
knows every key; a newer release takes a contract-2 supervisor's queue the same way.

The older releases are this repository's own pod tool at two commits (tests/fixtures/legacy_runtime:
0e41775, before run gates existed, and 3024989, the last release without a contract version),
run on the pod as their laptops ran them.
"""

import json
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest

from conftest import module_client, module_pod, needs_isolation, pod_pids
from ops_tasks.runtime import python_argv
from ops_tasks.runtime.contract import CONTRACT_VERSION

pytestmark = [needs_isolation, pytest.mark.timeout(180)]

OUT = "/mnt/pod_artifacts/outputs"
LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy_runtime"
RUNTIME = Path(__file__).resolve().parents[1] / "ops_tasks" / "runtime"
client = module_client()
pod = module_pod("upod")


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def pod_json(pod, path):
    done = pod.sh(f"cat {path}", check=False)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return None


def counting_command(name, seconds=0, held=False):
    """A run that notes each start in the volume (so a second start shows) and succeeds; a held
    one ends only once the test lets it go (release), however slow the machine."""
    hold = f"until [ -e /mnt/release-{name} ]; do sleep 0.1; done; " if held else ""
    return (f"echo start >> /mnt/starts-{name}; sleep {seconds}; {hold}"
            f"printf '{{\"ok\": true}}' > {OUT}/{name}/summary.json")


def release(pod, name):
    pod.sh(f"touch /mnt/release-{name}")


def legacy_submit(pod, commit, run_id):
    """An older release's laptop submits one run: its own tool, its own request, its supervisor."""
    tool = pod.root / f"ops_runs-{commit}.py"
    shutil.copy(LEGACY / f"ops_runs-{commit}.py", tool)
    request = {"outputs_dir": OUT, "submission_id": f"old-{commit}", "host": pod.alias, "tmux_session": "pilots",
               "runs": [{"run_id": run_id, "run_dir": f"{OUT}/{run_id}", "command": counting_command(run_id, held=True),
                         "cwd": "/root", "env": {}, "gpus": None, "timeout": 600, "stall_timeout": 600,
                         "retries": 0, "retry_on": None, "retry_backoff": 10, "config": {"run_id": run_id}}]}
    path = pod.root / f"request-{commit}.json"
    path.write_text(json.dumps(request) + "\n")
    answer = json.loads(pod.sh(f"cd /root && python3 {shlex.quote(str(tool))} submit < {path}").stdout)
    assert answer["queued"][0]["run_id"] == run_id, answer
    assert wait_for(lambda: (pod_json(pod, f"{OUT}/{run_id}/status.json") or {}).get("pid")), "the old run did not start"
    return pod_json(pod, f"{OUT}/{run_id}/status.json")


def write_config(project, runs, name="runs.json"):
    path = project / name
    path.write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    return str(path)


def starts(pod, name) -> int:
    return pod.sh(f"cat /mnt/starts-{name} 2>/dev/null || true").stdout.count("start")


def clean(pod):
    pod.sh(f"rm -rf {OUT} /mnt/starts-* /mnt/release-*; tmux kill-server 2>/dev/null || true", check=False)


@pytest.mark.parametrize("commit", ["0e41775", "3024989"])
def test_an_older_supervisor_never_drops_a_gate_and_finishes_its_own_run_once(pod, ops, project, commit):
    clean(pod)
    old = legacy_submit(pod, commit, "long")
    config = write_config(project, [{"run_id": "gate", "gpus": 0, "command": counting_command("gate", 0),
                                     "expect": {"files": ["never-written.txt"]}}])

    submitted = ops("runs.submit", "--host", pod.alias, "--config", config, "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "handing over" in submitted.json["supervisor"] and "contract 1" in submitted.json["supervisor"]
    # The old run is not disturbed: the same process, still running, under the old supervisor.
    now = pod_json(pod, f"{OUT}/long/status.json")
    assert (now["state"], now["pid"], now["attempt"]) == ("running", old["pid"], 1)
    assert pod_json(pod, f"{OUT}/gate/status.json")["state"] == "queued"
    release(pod, "long")

    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "90", "--json")
    gate = {r["run_id"]: r for r in waited.json["runs"]}["gate"]
    assert (gate["state"], gate["failure_class"]) == ("failed", "expectation"), gate
    assert waited.returncode == 1
    long = pod_json(pod, f"{OUT}/long/status.json")
    assert (long["state"], long["attempt"]) == ("succeeded", 1)
    assert starts(pod, "long") == 1 and starts(pod, "gate") == 1  # each run once: nothing twice, nothing dropped
    assert pod_json(pod, f"{OUT}/.ops/supervisor.json")["contract"] == CONTRACT_VERSION
    assert pod.sh(f"test -e {OUT}/.ops/handover.json", check=False).returncode == 1
    log = pod.sh(f"cat {OUT}/.ops/supervisor.log").stdout
    assert "waiting for the older supervisor to hand over" in log


def test_no_tmux_under_an_older_supervisor_is_refused_naming_both_versions(pod, ops, project):
    clean(pod)
    legacy_submit(pod, "3024989", "long")
    config = write_config(project, [{"run_id": "fg", "gpus": 0, "command": "true"}], name="fg.json")
    refused = ops("runs.submit", "--host", pod.alias, "--config", config, "--no-tmux")
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert "contract 1" in line and f"contract {CONTRACT_VERSION}" in line and "runs.wait" in line, line
    assert "Traceback" not in refused.stderr
    assert pod.sh(f"test -e {OUT}/fg", check=False).returncode == 1  # nothing queued
    release(pod, "long")


def newer_runtime(folder: Path) -> Path:
    """This runtime as a newer release would ship it: contract CONTRACT_VERSION + 1."""
    package = folder / "ops_runtime"
    shutil.copytree(RUNTIME, package, ignore=shutil.ignore_patterns("__pycache__"))
    contract = package / "contract.py"
    text = contract.read_text()
    contract.write_text(re.sub(r"^CONTRACT_VERSION = \d+$", f"CONTRACT_VERSION = {CONTRACT_VERSION + 1}", text,
                               flags=re.M))
    return folder


def test_a_contract_2_supervisor_hands_its_queue_to_a_newer_one(pod, ops, project):
    clean(pod)
    config = write_config(project, [{"run_id": "now", "gpus": 0, "command": counting_command("now", held=True)}], name="a.json")
    assert ops("runs.submit", "--host", pod.alias, "--config", config, "--json").returncode == 0
    assert wait_for(lambda: (pod_json(pod, f"{OUT}/now/status.json") or {}).get("pid"))
    running = pod_json(pod, f"{OUT}/now/status.json")
    first = pod_json(pod, f"{OUT}/.ops/supervisor.json")["pid"]

    # A newer release's submit: it asks for the queue (under the queue lock) and starts its successor.
    newer = newer_runtime(pod.root / "newer")
    ask = (f"import json, sys; sys.path.insert(0, {str(newer)!r}); "
           "from ops_runtime.store import Store; from ops_runtime.handover import ask_to_hand_over, live_supervisor; "
           f"s = Store({OUT!r}); l = s.queue_lock(); l.acquire(); ask_to_hand_over(s, live_supervisor(s), 'newer')")
    pod.sh(f"python3 -c {shlex.quote(ask)}")
    later = write_config(project, [{"run_id": "later", "gpus": 0, "command": counting_command("later", 0)}],
                         name="b.json")
    assert ops("runs.submit", "--host", pod.alias, "--config", later, "--json").returncode == 0
    argv = python_argv("python3", "commands", "main", "supervise",
                       json.dumps({"outputs_dir": OUT, "slots": 2, "successor": True}))
    argv[3], argv[4] = str(newer), "ops_runtime.commands"
    pod.sh("tmux new-session -d -s successor " + shlex.quote(" ".join(shlex.quote(a) for a in argv)))

    # The contract-2 supervisor claims nothing more: `later` waits for the successor.
    time.sleep(1.5)
    assert pod_json(pod, f"{OUT}/later/status.json")["state"] == "queued"
    assert pod_json(pod, f"{OUT}/now/status.json")["pid"] == running["pid"]
    release(pod, "now")
    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "60", "--json")
    assert waited.returncode == 0, waited.stdout
    assert starts(pod, "now") == 1 and starts(pod, "later") == 1
    info = pod_json(pod, f"{OUT}/.ops/supervisor.json")
    assert info["contract"] == CONTRACT_VERSION + 1 and info["pid"] != first
    assert first not in pod_pids(pod, "supervise", live=True)  # the contract-2 one exited


def test_an_entry_with_a_field_this_supervisor_does_not_know_fails_as_bad_input(pod, ops, project):
    clean(pod)
    config = write_config(project, [{"run_id": "known", "gpus": 0, "command": "true"}], name="k.json")
    assert ops("runs.submit", "--host", pod.alias, "--config", config, "--json").returncode == 0
    spec = pod_json(pod, f"{OUT}/.ops/specs/known.json")
    # A newer laptop's entry, with a gate this supervisor has never heard of.
    entry = dict(spec, run_id="future", run_dir=f"{OUT}/future", contract=CONTRACT_VERSION + 1,
                 expect_gpu_hours={"max": 1})
    path = pod.root / "future.json"
    path.write_text(json.dumps(entry))
    pod.sh(f"mkdir -p {OUT}/future && cp {path} {OUT}/.ops/pending/0000000000.000000-future.json")
    assert ops("runs.resume", "--host", pod.alias, "--json").returncode == 0  # sees a supervisor runs for the queue
    waited = ops("runs.wait", "--host", pod.alias, "--run-id", "future", "--timeout", "30", "--json")
    future = waited.json["runs"][0]
    assert (future["state"], future["failure_class"]) == ("failed", "bad_input"), future
    assert "expect_gpu_hours" in future["error"]
    assert waited.returncode == 1


@pytest.fixture(scope="module")
def second(tmp_path_factory, client):
    """A second pod, for a fleet: no supervisor on it yet."""
    from ops_tasks.testing.pods import SshPod

    started = SshPod(tmp_path_factory.mktemp("upod2") / "pod", "upod2", client.public_key).start()
    client.add_alias("upod2", started)
    started.alias = "upod2"
    yield started
    started.stop()


def test_over_a_fleet_each_pod_hands_over_for_itself(pod, second, ops, project):
    clean(pod)
    clean(second)
    legacy_submit(pod, "0e41775", "long")
    runs = [{"run_id": f"g{i}", "gpus": 0, "command": counting_command(f"g{i}", 0),
             "expect": {"files": ["never-written.txt"]}} for i in range(4)]
    config = write_config(project, runs, name="fleet.json")
    fleet = f"{pod.alias},{second.alias}"
    submitted = ops("runs.submit", "-H", fleet, "--config", config, "--json")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    per_pod = submitted.json["pods"]  # {pod name: its submission}
    assert per_pod[pod.alias]["queued"], per_pod  # the older pod was given runs: it had to hand over
    assert "handing over" in per_pod[pod.alias]["supervisor"]
    assert "handing over" not in (per_pod[second.alias].get("supervisor") or "")
    release(pod, "long")

    # The fleet's wait may move queued runs to the idle pod; wherever each ran, it ran once, gated.
    waited = ops("runs.wait", "-H", fleet, "--timeout", "90", "--json")
    ended = {r["run_id"]: r for r in waited.json["runs"]}
    assert sorted(ended) == ["g0", "g1", "g2", "g3"]
    assert {(r["state"], r["failure_class"]) for r in ended.values()} == {("failed", "expectation")}, ended
    for run_id in ended:
        assert starts(pod, run_id) + starts(second, run_id) == 1, run_id
    assert wait_for(lambda: pod_json(pod, f"{OUT}/long/status.json")["state"] == "succeeded")
    assert starts(pod, "long") == 1
    # The older pod's queue went to a supervisor of this contract once its own run ended.
    assert wait_for(lambda: (pod_json(pod, f"{OUT}/.ops/supervisor.json") or {}).get("contract") == CONTRACT_VERSION)
