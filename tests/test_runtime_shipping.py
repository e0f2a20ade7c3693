"""The pod runtime travels once per version (operations/runtime.py, runtime/boot.py): a host the
laptop has seen hold it is sent the request alone, still one round trip; a host that lost it is
sent the archive again; the pod keeps each version under its id, with its bytecode."""

import json

from conftest import module_client, module_pod, needs_isolation
from ops_tasks.operations.runtime import POD_PACKAGE, runtime_archive

pytestmark = needs_isolation

client = module_client()
pod = module_pod("spod")
OUT = "/mnt/pod_artifacts/outputs"


def runtime_dir() -> str:
    return f"/root/.ops/runtime/{runtime_archive()[0]}"


def call(ops, pod):
    """One runs task; the SSH sessions (round trips) it took."""
    before = pod.sessions()
    listed = ops("runs.list", "--host", pod.alias, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return pod.sessions() - before


def known_hosts_of_runtimes(project) -> dict:
    path = project / "artifacts" / "runtimes.json"  # the project's records, nothing outside them
    return json.loads(path.read_text()) if path.exists() else {}


def test_the_runtime_is_sent_once_kept_under_its_id_and_sent_again_to_a_host_that_lost_it(pod, ops, client, project):
    pod.sh("rm -rf /root/.ops/runtime")
    assert call(ops, pod) == 1  # the first call ships it, in the same round trip
    assert pod.sh(f"test -f {runtime_dir()}/{POD_PACKAGE}/commands.py", check=False).returncode == 0
    assert any(runtime_archive()[0] in ids for ids in known_hosts_of_runtimes(project).values())
    assert not (client.home / ".cache" / "ops-tasks" / "runtimes.json").exists()

    assert call(ops, pod) == 1  # the request alone: the pod holds it
    assert pod.sh(f"ls {runtime_dir()}/{POD_PACKAGE}/__pycache__ | grep -c pyc").stdout.strip() != "0"

    pod.sh("rm -rf /root/.ops/runtime")  # a new pod at the old address
    assert call(ops, pod) == 2  # asked without it, told it is missing, sent it
    assert pod.sh(f"test -d {runtime_dir()}/{POD_PACKAGE}", check=False).returncode == 0
    assert call(ops, pod) == 1


def test_an_archive_cut_short_is_refused_and_nothing_half_unpacked_is_kept(pod):
    runtime_id, archive = runtime_archive()
    pod.sh("rm -rf /root/.ops/runtime && mkdir -p /root/.ops/runtime")
    cut = pod.root / "cut.tgz"
    cut.write_bytes(archive[: len(archive) // 2] + b'{"contract": 2}\n')
    from ops_tasks.operations.runtime import boot_source

    boot = pod.root / "boot.py"
    boot.write_text(boot_source())
    done = pod.sh(f"python3 {boot} /root/.ops/runtime {runtime_id} {len(archive)} status < {cut}", check=False)
    assert "could not unpack" in done.stdout or "does not match" in done.stdout, done.stdout + done.stderr
    assert pod.sh("ls -A /root/.ops/runtime").stdout.strip() == ""  # no runtime, no temporary folder
