"""`ops exec` (issue 24) through the real `ops` program against real sshd pods: output streamed
as it comes (prefixed `[pod] ` over a fleet), the command's exit code, a deadline that ends the
command's whole process group (exit 124), --env secrets masked and never in argv, Ctrl-C stopping
the command, bad input refused before contact, --dry-run, --json (ops_tasks/exec.py,
operations/exec.py, remote_scripts/exec.sh). Two pods shared by the module.

Streaming is shown causally, not by the clock: the command prints a line, then waits for a file
that the test creates only once it has read that line."""

import os
import signal
import subprocess
import time

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error, ops_argv, pod_cmdline, pod_pids

pytestmark = needs_isolation

client = module_client()
NAMES = ("ex0", "ex1")
FLEET = ",".join(NAMES)
SECRET = "hf_Zq8sekritValue42"
WAIT_S = 20  # every wait of this file is bounded


ex0 = module_pod("ex0")
ex1 = module_pod("ex1")


@pytest.fixture(scope="module")
def pods(ex0, ex1):
    return [ex0, ex1]


@pytest.fixture
def pod(pods):
    return pods[0]


@pytest.fixture
def clean_homes(pods):
    """The marker files these tests leave in the pods' homes, removed before and after."""
    names = ("go", "started", "stop", "fail", "bg.pid")

    def clear():
        for pod in pods:
            for name in names:
                (pod.home / name).unlink(missing_ok=True)

    clear()
    yield
    clear()


def until(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def start_ops(client, project, *args) -> subprocess.Popen:
    """`ops ARGS` as its own process (its own session: a Ctrl-C goes to it alone), output piped."""
    return subprocess.Popen([*ops_argv(), *args], cwd=project, env=client.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def leftovers(pod, marker: str) -> list:
    return pod_pids(pod, marker, live=True)


# ---------------------------------------------------------------- one host


def test_output_streams_line_by_line_while_the_command_runs(client, project, pod, clean_homes):
    # The second line can only be printed after the test has read the first: buffering until the
    # command's end would never show the first line, and the bounded wait would fail.
    proc = start_ops(client, project, "exec", "--host", pod.alias, "--command",
                     'echo first; while [ ! -e "$HOME/go" ]; do sleep 0.05; done; echo second')
    try:
        assert proc.stdout.readline() == "first\n"
        (pod.home / "go").touch()
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "second\n"  # stdout is the command's own: nothing of ours on it


def test_exit_code_is_the_commands_and_stderr_stays_stderr(ops, pod):
    result = ops("exec", "--host", pod.alias, "--command", "echo out; echo oops >&2; exit 7")

    assert result.returncode == 7
    assert result.stdout == "out\n"
    assert result.stderr == "oops\n"
    assert ops("exec", "--host", pod.alias, "--command", "true").returncode == 0


def test_the_command_runs_in_a_login_shell_in_home(ops, pod):
    result = ops("exec", "--host", pod.alias, "--command", 'pwd; shopt -q login_shell && echo login')

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/root" if pod.isolated else os.path.expanduser("~"), "login"]


def test_the_deadline_kills_the_commands_process_group(ops, pod, clean_homes):
    marker = "sleep 3217"
    before = pod.accepted_connections()

    result = ops("exec", "--host", pod.alias, "--timeout", "1", "--command",
                 f'{marker} & echo $! > "$HOME/bg.pid"; echo started; {marker}; echo never')

    assert result.returncode == 124, result.stderr
    assert result.stdout == "started\n"
    assert "timed out after 1 s" in result.stderr and "process group was killed" in result.stderr
    assert (pod.home / "bg.pid").read_text().strip().isdigit()
    assert leftovers(pod, marker) == []  # the background sleep went with the group
    assert pod.accepted_connections() - before == 1


def test_background_jobs_end_with_the_command(ops, pod):
    marker = "sleep 3218"
    result = ops("exec", "--host", pod.alias, "--command", f"{marker} & echo done")

    assert result.returncode == 0 and result.stdout == "done\n"
    assert leftovers(pod, marker) == []


def test_an_env_secret_is_masked_and_never_in_argv(client, project, pod, clean_homes):
    proc = start_ops(client, project, "exec", "--host", pod.alias, "--env", f"HF_TOKEN={SECRET}",
                     "--env", "PLAIN=visible", "--command",
                     'echo "token=$HF_TOKEN plain=$PLAIN"; touch "$HOME/started"; '
                     'while [ ! -e "$HOME/stop" ]; do sleep 0.05; done')
    try:
        until(lambda: (pod.home / "started").exists(), "the command to start")
        argvs = [pod_cmdline(pid) for pid in pod.namespace_pids()]
        (pod.home / "stop").touch()
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert any("while [ ! -e" in argv for argv in argvs)  # the command itself was seen running
    assert not any(SECRET in argv for argv in argvs)
    assert proc.returncode == 0, err
    assert out == "token=*** plain=visible\n"
    assert SECRET not in out + err


def test_ctrl_c_stops_the_remote_command(client, project, pod, clean_homes):
    marker = "sleep 3219"
    proc = start_ops(client, project, "exec", "--host", pod.alias, "--command",
                     f'touch "$HOME/started"; {marker}')
    try:
        until(lambda: (pod.home / "started").exists() and leftovers(pod, marker), "the command to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    until(lambda: not leftovers(pod, marker), "the remote command to end")


def test_json_gives_each_pods_exit_code_and_output_tail(ops, pod):
    result = ops("exec", "--host", pod.alias, "--json", "--env", f"API_KEY={SECRET}", "--command",
                 'for i in $(seq 1 30); do echo "line $i"; done; echo "key $API_KEY"; exit 3')

    assert result.returncode == 3
    document = result.json
    assert document["ok"] is False and document["exit_code"] == 3
    entry = document["pods"][pod.alias]
    assert entry["exit_code"] == 3 and entry["timed_out"] is False
    assert entry["output_tail"][-2:] == ["line 30", "key ***"] and len(entry["output_tail"]) == 20
    assert SECRET not in result.stdout + result.stderr
    assert "line 1\n" in result.stderr  # under --json the stream goes to stderr


# ---------------------------------------------------------------- a fleet


def test_a_fleet_prefixes_each_line_with_its_pod(ops, pods):
    result = ops("exec", "--host", FLEET, "--command", "echo hello; echo warn >&2")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == ["[ex0] hello", "[ex1] hello"]
    assert "[ex0] warn" in result.stderr and "[ex1] warn" in result.stderr
    assert "exec: 2 pods, all exited 0" in result.stderr


def test_a_fleet_pods_really_run_at_once(client, project, pods, clean_homes):
    # Each pod's command waits until every pod's command has started (the test sees both marker
    # files, then lets them go): one after the other, the first would never end.
    proc = start_ops(client, project, "exec", "-H", FLEET, "--command",
                     'touch "$HOME/started"; while [ ! -e "$HOME/go" ]; do sleep 0.05; done; echo went')
    try:
        until(lambda: all((pod.home / "started").exists() for pod in pods), "every pod's command to start")
        for pod in pods:
            (pod.home / "go").touch()
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert sorted(out.splitlines()) == ["[ex0] went", "[ex1] went"]


def test_a_fleet_exits_1_naming_each_pods_exit_code(ops, pods, clean_homes):
    (pods[1].home / "fail").touch()
    result = ops("exec", "--host", FLEET, "--command", '[ -e "$HOME/fail" ] && exit 3; echo fine')

    assert result.returncode == 1
    assert result.stdout == "[ex0] fine\n"
    assert "exec: 2 pods, 1 not ok: ex0 exit 0, ex1 exit 3" in result.stderr.splitlines()[-1]

    as_json = ops("exec", "--host", FLEET, "--json", "--command", '[ -e "$HOME/fail" ] && exit 3; echo fine')
    assert as_json.returncode == 1
    document = as_json.json
    assert document["ok"] is False and document["failed"] == ["ex1"]
    assert {name: pod["exit_code"] for name, pod in document["pods"].items()} == {"ex0": 0, "ex1": 3}
    assert document["pods"]["ex0"]["output_tail"] == ["fine"]


def test_a_fleet_deadline_is_each_pods(ops, pods):
    result = ops("exec", "--host", FLEET, "--timeout", "0.5", "--command", "sleep 3220")

    assert result.returncode == 1
    assert "[ex0] timed out" in result.stderr and "[ex1] timed out" in result.stderr
    assert "ex0 exit 124 (timed out), ex1 exit 124 (timed out)" in result.stderr
    assert all(leftovers(pod, "sleep 3220") == [] for pod in pods)


def test_a_pod_that_cannot_be_reached_has_no_exit_code_and_the_others_run(ops, pod):
    result = ops("exec", "--host", f"{pod.alias},root@127.0.0.1:1", "--json", "--command", "echo up")

    assert result.returncode == 1
    document = result.json
    assert document["pods"][pod.alias] == {"exit_code": 0, "output_tail": ["up"], "timed_out": False}
    unreachable = document["pods"]["root@127.0.0.1:1"]
    assert unreachable["exit_code"] is None and "127.0.0.1:1" in unreachable["error"]


# ---------------------------------------------------------------- before any contact


@pytest.mark.parametrize("args, fragments", [
    ((), ("--command",)),
    (("--command", "  "), ("--command is empty",)),
    (("--command", "true", "--timeout", "soon"), ("--timeout", "soon")),
    (("--command", "true", "--timeout", "-1"), ("--timeout",)),
    (("--command", "true", "--env", "1BAD=x"), ("--env", "1BAD")),
    (("--command", "true", "--env", "OPS_SURELY_UNSET_VAR"), ("OPS_SURELY_UNSET_VAR", "not set")),
])
def test_bad_input_is_refused_before_contact(ops, pods, args, fragments):
    before = [pod.accepted_connections() for pod in pods]

    result = ops("exec", "--host", FLEET, *args)

    one_line_error(result, 2, *fragments)
    assert [pod.accepted_connections() for pod in pods] == before


def test_an_unknown_host_is_refused_before_contact(ops, pods):
    before = [pod.accepted_connections() for pod in pods]

    one_line_error(ops("exec", "--host", "ex0,nosuchpod", "--command", "true"), 2, "nosuchpod")
    assert [pod.accepted_connections() for pod in pods] == before


def test_dry_run_shows_the_command_masks_secrets_and_contacts_nothing(ops, pods):
    before = [pod.accepted_connections() for pod in pods]

    result = ops("exec", "--host", pods[0].alias, "--dry-run", "--env", f"HF_TOKEN={SECRET}",
                 "--command", "nvidia-smi -L")
    fleet = ops("exec", "--host", FLEET, "--dry-run", "--json", "--env", f"HF_TOKEN={SECRET}",
                "--command", "nvidia-smi -L")

    assert result.returncode == 0, result.stderr
    assert "nvidia-smi -L" in result.stdout and '"HF_TOKEN": "***"' in result.stdout
    assert fleet.returncode == 0, fleet.stderr
    assert set(fleet.json["pods"]) == set(NAMES) and all(p["dry_run"] for p in fleet.json["pods"].values())
    assert SECRET not in result.stdout + result.stderr + fleet.stdout + fleet.stderr
    assert [pod.accepted_connections() for pod in pods] == before
