"""Safe at the edges of the link: host keys exactly as configured, a deadline for every round
trip, a name for every lost connection. Real sshd pods, the system OpenSSH and rsync; the
delaying proxy plays a dead link (hold) and a dropped one (cut)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import needs_isolation, one_line_error, ops_argv, pod_cmdline, pod_pids, run_ops
from ops_tasks.settings import parse_destination, resolve_profile
from ops_tasks.testing.delay_proxy import DelayProxy
from ops_tasks.testing.pods import ClientHome, SshPod, free_port

pytestmark = needs_isolation

OUT = "/mnt/pod_artifacts/outputs"
TIMEOUT = 2  # the profiles' connect_timeout: how long the pod may take to answer anything


# ---------------------------------------------------------------- one pod for the module


class Laptop:
    """The module's client HOME and project, and `ops` run from there."""

    def __init__(self, root: Path):
        self.client = ClientHome(root / "client-home")
        self.project = root / "project"
        self.project.mkdir()
        self.profiles = {}

    def profile(self, name: str, destination: str, **fields) -> str:
        self.profiles[name] = {"destination": destination, "connect_timeout": TIMEOUT, **fields}
        (self.project / "invoke.yaml").write_text(json.dumps({"ops": {"profiles": self.profiles}}))
        return name

    def popen(self, *args):
        return subprocess.Popen([*ops_argv(), *args], cwd=self.project, env=self.client.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __call__(self, *args, timeout=60):
        proc = run_ops(args, cwd=self.project, env=self.client.env(), timeout=timeout)
        try:
            proc.json = json.loads(proc.stdout)
        except ValueError:
            proc.json = None
        return proc


@pytest.fixture(scope="module")
def laptop(tmp_path_factory):
    return Laptop(tmp_path_factory.mktemp("laptop"))


@pytest.fixture(scope="module")
def pod(laptop, tmp_path_factory):
    pod = SshPod(tmp_path_factory.mktemp("linkpod"), "linkpod", laptop.client.public_key).start()
    laptop.client.add_alias("linkpod", pod)
    laptop.profile("quick", "linkpod")
    laptop.client.known_hosts.write_text(f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}\n")
    yield pod
    pod.stop()


def alias(laptop, pod, name, port=None, known=None, **options):
    """A Host block for the pod (or a proxy in front of it) with its own known_hosts file, which
    knows the pod unless `known` says what it holds instead."""
    known_file = laptop.client.ssh_dir / f"known_hosts.{name}"
    known_file.write_text(f"[127.0.0.1]:{port or pod.port} ssh-ed25519 {pod.host_public_key}\n" if known is None
                          else known)
    known = known_file
    options.setdefault("UserKnownHostsFile", str(known))
    laptop.client.add_alias(name, pod, **options)
    if port is not None:  # add_alias writes the pod's port; the proxy's comes later in the block
        text = laptop.client.config.read_text().replace(f"Host {name}\n  HostName 127.0.0.1\n  Port {pod.port}\n",
                                                        f"Host {name}\n  HostName 127.0.0.1\n  Port {port}\n")
        laptop.client.config.write_text(text)
    return laptop.profile(name, name)


def submit(laptop, host, run_id, command):
    config = laptop.project / f"{run_id}.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": [{"run_id": run_id, "command": command}]}))
    # Slots enough for every test's runs at once: none waits in the queue behind another's.
    submitted = laptop("runs.submit", "--host", host, "--config", str(config), "--slots", "8", "--json")
    assert submitted.returncode == 0, submitted.stderr
    return submitted.json["submission_id"]


def pod_processes(pod, needle: str) -> list:
    """Pids in the pod whose command line holds needle (matched inside the pod's namespace only)."""
    return pod_pids(pod, re.escape(needle))


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def ends_while(proc, condition_holds, timeout=30.0) -> subprocess.CompletedProcess:
    """Wait for proc to end, checking that `condition_holds()` stayed true all along."""
    out, err = proc.communicate(timeout=timeout)
    assert condition_holds()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def link_error(result, code, *fragments) -> str:
    """A waiting task's end: this exit code, its error the last line on stderr (progress lines may
    come before it), no traceback, no internal progress line."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "P|" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    for fragment in fragments:
        assert fragment in line, line
    return line


# ---------------------------------------------------------------- deadlines


def test_a_login_shell_that_hangs_ends_with_no_answer(laptop, pod):
    bashrc = pod.home / ".bashrc"
    bashrc.write_text("sleep 3600\n")
    try:
        result = laptop("runs.list", "--host", "quick")
    finally:
        bashrc.unlink()
        for pid in pod_processes(pod, "sleep 3600"):
            os.kill(pid, signal.SIGKILL)

    one_line_error(result, 1, f"no answer from quick (linkpod) within {TIMEOUT} s", "bashrc")


def test_runs_wait_returns_while_the_connections_sshd_is_stopped(laptop, pod):
    submission = submit(laptop, "quick", "stopped1", "sleep 10")
    sessions = pod.sessions()
    waiting = laptop.popen("runs.wait", "--host", "quick", "--submission", submission, "--timeout", "30")
    assert wait_for(lambda: pod.sessions() > sessions)
    # Stop the link only once the pod-side wait runs (its start mark sent): a stop before that
    # is the hung-login-shell case, tested on its own above.
    assert wait_for(lambda: any("wait" in pod_cmdline(p) for p in pod_processes(pod, "ops_runtime")))
    # The sshd processes serving that connection (not the listener, which the test needs later).
    serving = [p for p in pod_processes(pod, "sshd") if p != pod.proc.pid]
    for pid in serving:
        os.kill(pid, signal.SIGSTOP)
    stopped = [True]
    try:
        result = ends_while(waiting, lambda: stopped[0])
    finally:
        for pid in serving:
            os.kill(pid, signal.SIGCONT)
        stopped[0] = False

    line = link_error(result, 1, f"no answer from quick (linkpod) within {TIMEOUT} s", "keepalive")
    assert f"ops runs.wait --host quick --submission {submission}" in line


def test_runs_wait_timeout_holds_on_a_dead_link(laptop, pod):
    with DelayProxy(pod.port, delay_s=0) as proxy:
        host = alias(laptop, pod, "heldlink", port=proxy.port)
        submission = submit(laptop, host, "held1", "sleep 10")
        sessions = pod.sessions()
        waiting = laptop.popen("runs.wait", "--host", host, "--submission", submission, "--timeout", "3")
        assert wait_for(lambda: pod.sessions() > sessions)
        proxy.hold()  # nothing passes any more, not even the pod's answer at the timeout
        result = ends_while(waiting, lambda: True)
        proxy.release()

    line = link_error(result, 1, "no answer from heldlink within")
    assert "ops runs.wait --host heldlink" in line


# ---------------------------------------------------------------- lost connections


def test_a_connection_cut_during_runs_wait_is_named_and_the_run_goes_on(laptop, pod):
    with DelayProxy(pod.port, delay_s=0) as proxy:
        host = alias(laptop, pod, "cutwait", port=proxy.port)
        submission = submit(laptop, host, "cut1", "sleep 3; printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\"")
        sessions = pod.sessions()
        waiting = laptop.popen("runs.wait", "--host", host, "--submission", submission)
        assert wait_for(lambda: pod.sessions() > sessions and pod_processes(pod, "ops_runtime"))
        assert wait_for(lambda: [p for p in pod_processes(pod, " wait") if p in pod_processes(pod, "ops_runtime")])
        proxy.cut()
        result = ends_while(waiting, lambda: True)

    line = link_error(result, 1, "connection to cutwait lost")
    assert "P|" not in line and f"ops runs.wait --host cutwait --submission {submission}" in line
    # The pod-side wait noticed its laptop gone and stopped polling; the run itself goes on.
    assert wait_for(lambda: not [p for p in pod_processes(pod, "ops_runtime") if p in pod_processes(pod, " wait")], 15)
    waited = laptop("runs.wait", "--host", "quick", "--submission", submission, "--timeout", "30", "--json")
    assert waited.returncode == 0, waited.stdout
    assert [r["state"] for r in waited.json["runs"]] == ["succeeded"]


def test_a_connection_cut_while_following_a_run_log_exits_1(laptop, pod):
    with DelayProxy(pod.port, delay_s=0) as proxy:
        host = alias(laptop, pod, "cutlogs", port=proxy.port)
        submit(laptop, host, "talk1", "for i in $(seq 40); do echo tick$i; sleep 0.2; done")
        following = laptop.popen("runs.logs", "--host", host, "--run-id", "talk1", "--follow")
        assert following.stdout.readline().startswith("tick")
        proxy.cut()
        result = ends_while(following, lambda: True)

    line = link_error(result, 1, "connection to cutlogs lost")
    assert "ops runs.logs --host cutlogs --run-id talk1 --follow" in line


def test_a_connection_cut_while_following_the_vllm_log_exits_1(laptop, pod):
    log = "/mnt/vllm/logs/fake.log"
    pod.sh(f"mkdir -p /mnt/vllm/logs && echo first > {log} && "
           f"printf '{{\"session\": \"vllm\", \"log\": \"{log}\"}}' > /mnt/vllm/vllm.json")
    with DelayProxy(pod.port, delay_s=0) as proxy:
        host = alias(laptop, pod, "cutvllm", port=proxy.port)
        following = laptop.popen("vllm.logs", "--host", host, "--follow")
        assert following.stdout.readline().strip() == "first"
        proxy.cut()
        result = ends_while(following, lambda: True)

    line = link_error(result, 1, "connection to cutvllm lost")
    assert "ops vllm.logs --host cutvllm --follow" in line
    # The pod-side tail stopped with its laptop.
    assert wait_for(lambda: not pod_processes(pod, f"tail -n 100 -F {log}"), 15)


def test_a_connection_cut_during_vllm_start_wait_is_named_and_the_server_goes_on(laptop, pod):
    pod.set_gpus(2)
    stub = pod.install_vllm_stub()
    with DelayProxy(pod.port, delay_s=0) as proxy:
        host = alias(laptop, pod, "cutstart", port=proxy.port)
        starting = laptop.popen("vllm.start", "--host", host, "--vllm-bin", stub, "--model-id", "m", "--port",
                                str(free_port()), "--wait", "--env", "OPS_VLLM_STUB_HANG=loading")
        assert wait_for(lambda: pod_processes(pod, stub))  # the server is up and loading: the wait has begun
        proxy.cut()
        result = ends_while(starting, lambda: True)

    line = link_error(result, 1, "connection to cutstart lost")
    assert "ops vllm.status --host cutstart" in line
    assert pod_processes(pod, stub)  # the server goes on
    assert laptop("vllm.stop", "--host", "quick", "--grace", "1").returncode == 0


# ---------------------------------------------------------------- ports that are not SSH


def test_a_port_that_accepts_and_closes_is_one_quiet_line(laptop):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def close_each():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        result = laptop("runs.list", "--host", f"root@127.0.0.1:{port}")
    finally:
        listener.close()

    line = one_line_error(result, 1, f"127.0.0.1:{port} closed the connection")
    assert "within" not in line and "paramiko" not in result.stderr.lower()


def test_a_bracketed_ipv6_destination_reaches_a_pod_on_loopback(laptop, pod):
    profile = resolve_profile({}, "root@[::1]:2240", laptop.project)
    assert parse_destination(profile.destination).host == "::1"
    try:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()
    threading.Thread(target=_forward, args=(listener, pod.port, stop), daemon=True).start()
    host = f"root@[::1]:{port}"
    try:
        result = laptop("pod.status", "--host", laptop.profile("v6", host), "--json")
    finally:
        stop.set()
        listener.close()

    assert result.json["reachable"] is True, result.json
    assert f"[::1]:{port} ssh-ed25519 {pod.host_public_key}" in laptop.client.known_hosts.read_text()


def _forward(listener, pod_port, stop):
    """Pass each IPv6 connection on to the pod's IPv4 port (sshd listens on 127.0.0.1 only)."""
    def pipe(a, b):
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", pod_port))
        threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()


# ---------------------------------------------------------------- host keys exactly as configured


def other_key(tmp_path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    return (tmp_path / "other.pub").read_text().split()[1]


def known_file(laptop, name) -> Path:
    return laptop.client.ssh_dir / f"known_hosts.{name}"


def test_strict_checking_refuses_an_unknown_host_in_paramiko_and_in_fetch(laptop, pod):
    host = alias(laptop, pod, "strictyes", known="", StrictHostKeyChecking="yes")
    sessions = pod.sessions()

    listed = laptop("runs.list", "--host", host)
    fetched = laptop("artifacts.fetch", "--host", host, "--run-id", "nothing1")

    one_line_error(listed, 1, "not in known_hosts", "StrictHostKeyChecking is yes")
    # fetch's OpenSSH got the user's own `yes` (not accept-new), and its reason is shown.
    one_line_error(fetched, 1, "Host key verification failed")
    assert known_file(laptop, host).read_text() == "" and pod.sessions() == sessions


def test_strict_checking_against_dev_null_is_a_configuration_error(laptop, pod):
    via_ssh_config = alias(laptop, pod, "nullyes", StrictHostKeyChecking="yes", UserKnownHostsFile="/dev/null")
    via_profile = laptop.profile("nullprofile", alias(laptop, pod, "nullalias", UserKnownHostsFile="/dev/null"),
                                 strict_host_keys=True)
    connections = pod.accepted_connections()

    for host in (via_ssh_config, via_profile):
        result = laptop("runs.list", "--host", host)
        one_line_error(result, 2, "strict host key checking", "/dev/null")
    assert pod.accepted_connections() == connections


def test_trust_on_first_use_prints_the_fingerprint_as_ssh_keygen_shows_it(laptop, pod):
    host = alias(laptop, pod, "tofu", known="")
    shown = subprocess.run(["ssh-keygen", "-lf", str(pod.root / "ssh_host_ed25519_key.pub")],
                           capture_output=True, text=True, check=True).stdout.split()[1]

    first = laptop("runs.list", "--host", host, "--remote-outputs-dir", OUT, "--json")
    second = laptop("runs.list", "--host", host, "--remote-outputs-dir", OUT, "--json")

    assert first.returncode == second.returncode == 0, first.stderr
    assert shown.startswith("SHA256:") and shown in first.stderr and "ED25519" in first.stderr
    assert shown not in second.stderr
    assert known_file(laptop, host).read_text() == f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}\n"


def test_known_hosts_files_as_people_have_them(laptop, pod, tmp_path):
    ca = other_key(tmp_path)
    first, second = laptop.client.ssh_dir / "kh.first", laptop.client.ssh_dir / "kh.second"
    first.write_text(f"@cert-authority *.example.com ssh-ed25519 {ca}\n"
                     "broken.example.com ssh-ed25519 not-base64!!\n"
                     f"other.example.com ssh-ed25519 {ca}\n")
    second.write_text(f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}\n")
    subprocess.run(["ssh-keygen", "-H", "-f", str(second)], check=True, capture_output=True)
    host = alias(laptop, pod, "messy", StrictHostKeyChecking="yes", UserKnownHostsFile=f"{first} {second}")

    listed = laptop("runs.list", "--host", host, "--remote-outputs-dir", OUT, "--json")
    fetched = laptop("artifacts.fetch", "--host", host, "--run-id", "absent1", "--json")

    assert listed.returncode == 0, listed.stderr
    warnings = listed.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {first}:2: skipped"), listed.stderr
    assert "Traceback" not in listed.stderr + fetched.stderr
    # OpenSSH read the same two files: the host key was fine (whatever came of the missing run).
    assert "verification failed" not in fetched.stderr and "ssh" not in fetched.stderr, fetched.stderr


def test_a_revoked_host_key_is_refused_even_when_checking_is_off(laptop, pod):
    revoked = (f"[127.0.0.1]:{pod.port} ssh-ed25519 {pod.host_public_key}\n"
               f"@revoked * ssh-ed25519 {pod.host_public_key}\n")
    for name, options in (("revoked", {}), ("revokedoff", {"StrictHostKeyChecking": "no"})):
        host = alias(laptop, pod, name, known=revoked, **options)
        result = laptop("runs.list", "--host", host)
        one_line_error(result, 1, "REVOKED", f"{known_file(laptop, name)}:2")


def test_checking_off_accepts_a_changed_key_and_remembers_nothing(laptop, pod, tmp_path):
    stale = f"[127.0.0.1]:{pod.port} ssh-ed25519 {other_key(tmp_path)}\n"
    host = alias(laptop, pod, "offalias", known=stale, StrictHostKeyChecking="off")

    result = laptop("runs.list", "--host", host, "--remote-outputs-dir", OUT, "--json")

    assert result.returncode == 0, result.stderr
    assert known_file(laptop, host).read_text() == stale


def test_fetch_shows_openssh_reason_not_rsyncs(laptop, pod, tmp_path):
    stale = f"[127.0.0.1]:{pod.port} ssh-ed25519 {other_key(tmp_path)}\n"
    changed = alias(laptop, pod, "changedkey", known=stale)
    with laptop.client.config.open("a") as config:
        config.write(f"Host wronguser\n  HostName 127.0.0.1\n  Port {pod.port}\n  User nobody\n"
                     f"  IdentityFile {laptop.client.key}\n  IdentitiesOnly yes\n"
                     f"  UserKnownHostsFile {laptop.client.known_hosts}\n\n")
    denied = laptop.profile("wronguser", "wronguser")

    changed_line = one_line_error(laptop("artifacts.fetch", "--host", changed, "--run-id", "x1"), 1,
                                  "REMOTE HOST IDENTIFICATION HAS CHANGED", "ssh-keygen")
    denied_line = one_line_error(laptop("artifacts.fetch", "--host", denied, "--run-id", "x1"), 1,
                                 "Permission denied")
    assert "unexpectedly closed" not in changed_line + denied_line


# ---------------------------------------------------------------- following with flat memory


# bench/follow.py's `follow` mode: the laptop side of runs.logs --follow with a sink that counts
# and keeps nothing, so what the target itself keeps is measured, not the terminal's printing.
FOLLOWER = Path(__file__).resolve().parent.parent / "bench" / "follow.py"


def _follow_peak_rss_mb(laptop, pod, run_id) -> tuple:
    """(peak RSS in MiB while following run_id, bytes streamed). The run says `ready`, then
    waits for a go file: it writes its log only once following has begun, so all of it streams."""
    proc = subprocess.Popen([sys.executable, str(FOLLOWER), "follow", "linkpod", OUT, run_id], cwd=laptop.project,
                            env=laptop.client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    pod.sh(f"touch {OUT}/{run_id}/go")
    streamed = int(proc.stdout.readline())
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read()
    return usage.ru_maxrss / 1024, streamed


def test_following_a_big_log_keeps_the_laptops_memory_flat(laptop, pod):
    line = "a line of a long log, as an evaluation prints them by the million"
    peaks = {}
    for run_id, size in (("tiny1", 100), ("big1", 16_000_000)):
        submit(laptop, "quick", run_id, f"echo ready; until [ -e \"$OPS_RUN_DIR/go\" ]; do sleep 0.1; done; "
                                        f"yes '{line}' | head -c {size}")
        peaks[run_id] = _follow_peak_rss_mb(laptop, pod, run_id)
    (tiny, _), (big, streamed) = peaks["tiny1"], peaks["big1"]

    assert streamed >= 16_000_000  # all of it streamed
    assert big - tiny < 8, (tiny, big)  # kept chunks would add the 16 MB log two or three times over
