"""Fixtures shared by every test: real sshd pods, an isolated client HOME, and the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops_tasks.testing.pods import ClientHome, SshPod, can_isolate

CHECKOUT = Path(__file__).resolve().parent.parent
ISOLATED = can_isolate()
needs_isolation = pytest.mark.skipif(
    not ISOLATED, reason="needs root and unshare: pods get a real tmpfs volume and a private home"
)


@pytest.fixture(autouse=True)
def _own_state(tmp_path_factory, monkeypatch):
    """No test reads or writes the developer's store of rented pods (ops_tasks/state.py): calls
    in this process get a store of their own; `ops` runs get their client HOME's (ClientHome.env)."""
    monkeypatch.setenv("OPS_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def client(tmp_path):
    """The laptop: its own HOME with an SSH key, ~/.ssh/config and known_hosts."""
    return ClientHome(tmp_path / "client-home")


@pytest.fixture
def pod_factory(tmp_path, client):
    """Start real sshd pods; each gets an alias `podN` in the client's ~/.ssh/config."""
    pods = []

    def start(*, volume=True, gpus=None, hide_tools=(), alias=None, **alias_options):
        name = alias or f"pod{len(pods)}"
        pod = SshPod(tmp_path / name, name, client.public_key, volume=volume, gpus=gpus, hide_tools=hide_tools)
        pods.append(pod)
        pod.start()
        client.add_alias(name, pod, **alias_options)
        pod.alias = name
        return pod

    yield start
    for pod in pods:
        pod.stop()


@pytest.fixture
def pod(pod_factory):
    return pod_factory()


@pytest.fixture
def project(tmp_path):
    """An empty project directory (somewhere other than the checkout) to run `ops` from."""
    path = tmp_path / "project"
    path.mkdir()
    return path


def ops_argv() -> list:
    script = Path(sys.executable).parent / "ops"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ops_tasks"]


_SERVER = []  # this worker's fork server, started at its first `ops` call


def run_ops(args, *, cwd, env: dict, input=None, timeout=120) -> subprocess.CompletedProcess:
    """`ops ARGS` run as a user runs it, its own process with this cwd and environment, as
    subprocess.run(..., capture_output=True, text=True) gives it, with .json when stdout is JSON.

    Each call is a child forked from a process that has imported the tool once
    (ops_tasks/testing/ops_server.py): the program, its argv, environment and streams are the
    installed `ops`'s; only the ~0.45 s of CPU its imports cost is not paid again each time.
    A call whose PYTHON* variables differ from this process's (PYTHONPATH shadowing a package, to
    play a machine without it) needs an interpreter started with them: it, and every call under
    OPS_TESTS_SUBPROCESS=1, starts the console script itself."""
    program = ops_argv()
    if os.environ.get("OPS_TESTS_SUBPROCESS") == "1" or _interpreter_env(env) != _interpreter_env(os.environ):
        proc = subprocess.run([*program, *map(str, args)], cwd=cwd, env=env, input=input, capture_output=True,
                              text=True, timeout=timeout)
    else:  # argv[0] names the program, as the console script's does
        proc = _server().run([program[0] if len(program) == 1 else "ops", *map(str, args)], cwd=cwd, env=env,
                             input=input, timeout=timeout)
    proc.json = _json_or_none(proc.stdout)
    return proc


def _interpreter_env(env) -> dict:
    """The variables a Python interpreter reads when it starts (sys.path, flags, hash seed...)."""
    return {key: value for key, value in env.items() if key.startswith("PYTHON")}


def _server():
    from ops_tasks.testing.ops_server import OpsServer

    if not _SERVER or not _SERVER[0].alive():
        import atexit
        import tempfile

        _SERVER[:] = [OpsServer.start(tempfile.mkdtemp(prefix="ops-server-"))]
        atexit.register(_SERVER[0].stop)
    return _SERVER[0]


@pytest.fixture
def ops(client, project):
    """Run the installed `ops` command as a user would (run_ops), in `project`, HOME=client."""

    def run(*args, cwd=None, env=None, input=None, timeout=120):
        return run_ops(args, cwd=cwd or project, env=client.env(**(env or {})), input=input, timeout=timeout)

    return run


def _json_or_none(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


@pytest.fixture
def root(project):
    """The project's artifacts/pod_logs, where fetched run directories land (validate, report)."""
    path = project / "artifacts" / "pod_logs"
    path.mkdir(parents=True)
    return path


def one_line_error(result, code, *fragments) -> str:
    """Assert an expected failure: this exit code, one line on stderr holding fragments, no traceback."""
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# Under CI (CI=true) a skip is a failure: a test that cannot run there (no root, no unshare, an
# extra not installed) would otherwise pass silently (docs/ARCHITECTURE.md, "Testing").
def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)
    return reason.removeprefix("Skipped: ")


def _fail_skip_under_ci(report, what: str) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and _under_ci():
        report.outcome = "failed"
        report.longrepr = f"{what} skipped under CI=true, where every test must run: {_skip_reason(report)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result(), collector.nodeid)


# One pod for a whole module (a module's tests then keep to their own outputs roots):
#     client = module_client()
#     pod = module_pod("rpod", gpus=1)
def module_client():
    @pytest.fixture(scope="module")
    def client(tmp_path_factory):
        """The module's laptop (conftest's `ops` runs with it)."""
        return ClientHome(tmp_path_factory.mktemp("laptop") / "client-home")

    return client


def module_pod(alias: str, **options):
    @pytest.fixture(scope="module")
    def pod(tmp_path_factory, client):
        """The module's one real sshd pod, reached as `alias`."""
        started = SshPod(tmp_path_factory.mktemp(alias) / "pod", alias, client.public_key, **options).start()
        client.add_alias(alias, started)
        started.alias = alias
        yield started
        started.stop()

    return pod


def pod_cmdline(pid: int) -> str:
    """A process's command line, words joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True  # gone


def pod_pids(pod, pattern: str, *, live: bool = False) -> list:
    """Pids of the pod's own processes (its namespace, never the machine's) whose command line
    matches the regular expression pattern, as `pgrep -f` would inside the pod; with live, not
    zombies either."""
    import re

    return [pid for pid in pod.namespace_pids()
            if re.search(pattern, pod_cmdline(pid)) and not (live and _zombie(pid))]
