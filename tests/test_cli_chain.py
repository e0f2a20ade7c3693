"""Chains on the command line: `ops -H HOST a b c` and `inv a --host HOST b c` run every task of
the chain on one host, over real sshd pods."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from conftest import CHECKOUT, needs_isolation, one_line_error, ops_argv

pytestmark = needs_isolation

WRITE_SUMMARY = "printf '{\"ok\": true, \"avg_reward\": 1}' > \"$OPS_RUN_DIR/summary.json\""


def write_config(folder, run_ids, name="c.json"):
    config = {"remote_repo": "/root", "runs": [{"run_id": r, "command": f"echo hi; {WRITE_SUMMARY}"} for r in run_ids]}
    path = folder / name
    path.write_text(json.dumps(config))
    return path


def json_lines(stdout: str) -> list:
    """One JSON document per task of a chain run with --json."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_ops_dash_h_runs_the_whole_chain_on_one_pod(ops, project, pod):
    write_config(project, ["chain-a", "chain-b"])

    result = ops("-H", pod.alias, "runs.submit", "--config", "c.json", "runs.wait", "--timeout", "60",
                 "artifacts.fetch", "validate", "report")

    assert result.returncode == 0, (result.stdout, result.stderr)
    for run_id in ("chain-a", "chain-b"):
        assert (project / "artifacts" / "pod_logs" / run_id / "summary.json").is_file()
    assert "chain-a" in (project / "artifacts" / "report.md").read_text()
    assert "lium" not in result.stderr  # no task fell back to the default host


def test_a_tasks_own_host_wins_for_that_task_only(ops, project, pod_factory):
    first, second = pod_factory(), pod_factory()

    result = ops("-H", first.alias, "pod.status", "--json", "runs.list", "--host", second.alias, "--json",
                 "runs.list", "--json")

    assert result.returncode == 0, result.stderr
    assert [doc["host"] for doc in json_lines(result.stdout)] == [first.alias, second.alias, first.alias]


def test_ops_without_dash_h_carries_the_last_named_host_down_the_chain(ops, project, pod):
    result = ops("pod.status", "--host", pod.alias, "--json", "runs.list", "--json")

    assert result.returncode == 0, result.stderr
    assert [doc["host"] for doc in json_lines(result.stdout)] == [pod.alias, pod.alias]
    assert pod.accepted_connections() == 1  # the chain shares one connection


def test_inv_chain_takes_the_host_of_the_previous_task(tmp_path, client, pod):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(CHECKOUT / "tasks.py", checkout)
    write_config(checkout, ["inv-a"])
    inv = Path(sys.executable).parent / "inv"

    result = subprocess.run([str(inv), "runs.submit", "--host", pod.alias, "--config", "c.json",
                             "runs.wait", "--timeout", "60", "artifacts.fetch"],
                            cwd=checkout, env=client.env(), capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, (result.stdout, result.stderr)
    assert (checkout / "artifacts" / "pod_logs" / "inv-a" / "summary.json").is_file()


def test_a_fleet_is_refused_before_any_contact_by_a_task_not_wired_for_fleets(ops, pod_factory):
    first, second = pod_factory(), pod_factory()

    one_line_error(ops("-H", f"{first.alias},{second.alias}", "runs.logs", "--run-id", "r"), 2, "runs.logs --run-id r")
    assert first.accepted_connections() == 0 and second.accepted_connections() == 0


def test_a_list_of_one_host_is_that_host(ops, pod):
    result = ops("-H", f"{pod.alias},", "pod.status", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["host"] == pod.alias


def _line_within(stream, seconds: float) -> str:
    """The next line of an unbuffered binary stream (select sees what is not read yet)."""
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"nothing printed within {seconds}s"
    return stream.readline().decode().rstrip("\n")


def _started_waiting(proc) -> str:
    """stderr up to the wait's first progress line: the task is waiting on the pod now."""
    seen = ""
    while "done" not in seen:
        line = proc.stderr.readline()
        assert line, seen  # the task ended before it waited
        seen += line
    return seen


def test_sigint_or_sigterm_stops_a_wait_at_once_and_says_the_runs_go_on(ops, project, pod, client):
    (project / "c.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "long", "command": "sleep 120"}]}')
    submitted = ops("runs.submit", "--host", pod.alias, "--config", "c.json", "--json")
    submission = submitted.json["submission_id"]

    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        # SIGINT ignored by the parent, as for a background job of a script or a CI runner.
        proc = subprocess.Popen([*ops_argv(), "runs.wait", "--host", pod.alias], cwd=project, env=client.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        _started_waiting(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)  # bounded: the old code waited for the run to end

        assert proc.returncode == code, err
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err
        assert "runs go on" in last and f"ops runs.wait --host {pod.alias} --submission {submission}" in last
    assert ops("runs.status", "--host", pod.alias, "--json").json["runs"][0]["state"] == "running"
    ops("runs.cancel", "--host", pod.alias, "--submission", submission)


def test_a_submission_whose_runs_were_all_cancelled_is_not_ok(ops, project, pod):
    (project / "c.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "c1", "command": "sleep 120"},'
                                    ' {"run_id": "c2", "command": "sleep 120"}]}')
    ops("runs.submit", "--host", pod.alias, "--config", "c.json")
    assert ops("runs.cancel", "--host", pod.alias, "--run-id", "c1,c2").returncode == 0

    waited = ops("runs.wait", "--host", pod.alias, "--timeout", "30")
    status = ops("runs.status", "--host", pod.alias)

    assert waited.returncode == 1 and "all 2 run(s) were cancelled" in waited.stdout, waited.stdout
    assert status.returncode == 1 and "cancelled" in status.stdout


def test_submit_wait_piped_shows_the_submission_before_waiting_and_the_refused_once(ops, project, pod, client):
    (project / "c.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "w1", "command": "sleep 120"}]}')
    ops("runs.submit", "--host", pod.alias, "--config", "c.json")
    ops("runs.cancel", "--host", pod.alias, "--run-id", "w1")  # failed now: a resubmission is refused
    (project / "d.json").write_text('{"remote_repo": "/root", "runs": [{"run_id": "w1", "command": "true"},'
                                    ' {"run_id": "w2", "command": "sleep 120"}]}')

    proc = subprocess.Popen([*ops_argv(), "runs.submit", "--host", pod.alias, "--config", "d.json", "--wait"],
                            cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            bufsize=0)
    first = _line_within(proc.stdout, 30)  # the old code printed it only after the runs ended
    shown = first + _line_within(proc.stdout, 5)
    proc.terminate()
    rest = proc.communicate(timeout=10)[0].decode()

    assert "submission" in first and "1 queued" in first and "1 refused" in first
    assert "refused w1" in shown
    assert (shown + rest).count("w1") == 1, shown + rest
    ops("runs.cancel", "--host", pod.alias, "--run-id", "w2")


# ---------------------------------------------------------------- what people see


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"{token} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_status_shows_reason_time_gpus_and_last_output_in_human_terms(ops, project, pod):
    (project / "c.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "bad", "command": "echo first; echo 'CUDA out of memory \x1b[31mred\x1b[0m'; exit 3"},
        {"run_id": "nan", "command": "printf '{\"ok\": true, \"avg_reward\": NaN}' > \"$OPS_RUN_DIR/summary.json\""}]}))
    ops("runs.submit", "--host", pod.alias, "--config", "c.json", "--wait", "--timeout", "60")

    table = ops("runs.status", "--host", pod.alias)
    one = ops("runs.status", "--host", pod.alias, "--run-id", "nan")
    document = ops("runs.status", "--host", pod.alias, "--run-id", "nan", "--json")

    bad_row = next(line for line in table.stdout.splitlines() if line.startswith("bad "))
    assert "oom, exit 3" in bad_row and "CUDA out of memory red" in bad_row and "\x1b" not in table.stdout
    assert "last output" in table.stdout and "reason" in table.stdout and "gpus" in table.stdout
    assert "None" not in one.stdout and not re.search(r"\b1[0-9]{9}\.[0-9]", one.stdout), one.stdout
    assert re.search(r"started +20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9:]{8} \(", one.stdout)
    parsed = _strict(document.stdout)  # no NaN token anywhere
    assert parsed["run"]["summary"]["avg_reward"] is None
    assert any("avg_reward was nan" in note for note in parsed["json_notes"])
    assert parsed["run"]["started"].endswith("Z") and "T" in parsed["run"]["started"]


def test_watch_piped_prints_a_line_per_change_and_ends_with_the_runs(ops, project, pod, client):
    # Each run waits for its go file: the test, not the clock, decides when the states change.
    (project / "c.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": f"w-{name}", "command": f"until [ -e /root/go-{name} ]; do sleep 0.1; done; {WRITE_SUMMARY}"}
        for name in ("a", "b")]}))
    ops("runs.submit", "--host", pod.alias, "--config", "c.json")
    before = pod.sessions()

    proc = subprocess.Popen([*ops_argv(), "runs.status", "--host", pod.alias, "--watch", "--interval", "0.2"],
                            cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)
    seen = [_line_within(proc.stdout, 30)]
    for name in ("a", "b"):
        while "w-" + name not in seen[-1]:  # w-a running, then w-b
            seen.append(_line_within(proc.stdout, 30))
        pod.sh(f"touch /root/go-{name}")
    lines = seen + proc.communicate(timeout=30)[0].decode().splitlines()

    assert proc.returncode == 0
    progress = [line for line in lines if "progress:" in line and "done (" in line]
    assert len(progress) >= 3 and all(a != b for a, b in zip(progress, progress[1:]))  # a line per change
    assert any("1 running" in line and line.endswith(": w-a") for line in progress), lines  # running runs by name
    assert any("ETA ~" in line for line in progress)  # once w-a has finished
    assert lines[-1].startswith("w-b ") and "succeeded" in lines[-1]  # the final table last
    assert pod.sessions() - before >= len(progress)  # one round trip per refresh
    as_json = ops("runs.status", "--host", pod.alias, "--watch", "--interval", "0.2", "--json")
    assert [_strict(line)["ok"] for line in as_json.stdout.splitlines()] == [True]  # over already: one document


def test_output_into_a_closed_pipe_ends_quietly(ops, project, client):
    for argv in (["--list"], ["runs.list", "--host", "local"], ["pod.status", "--host", "local", "--json"]):
        proc = subprocess.Popen([*ops_argv(), *argv], cwd=project, env=client.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before anything was written (as `| head` ends)
        err = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert "Traceback" not in err and "BrokenPipe" not in err and err == "", (argv, err)


def test_dry_run_shows_the_script_and_one_line_for_lib_sh(ops):
    short = ops("pod.status", "--host", "local", "--dry-run")
    full = ops("pod.status", "--host", "local", "--dry-run", "--verbose")
    library = (CHECKOUT / "remote_scripts" / "lib.sh").read_text()

    assert "# (lib.sh: the shared helpers" in short.stdout and "pod_status.sh" in short.stdout
    assert library not in short.stdout and library in full.stdout
    assert len(short.stdout.splitlines()) < len(full.stdout.splitlines()) - 40


def test_dry_run_of_a_runs_task_shows_the_runtime_loader_as_one_line(ops):
    from ops_tasks.operations.runtime import boot_source

    short = ops("runs.list", "--host", "local", "--dry-run")
    full = ops("runs.list", "--host", "local", "--dry-run", "--verbose")
    assert "# (boot: ops_tasks/runtime/boot.py, the runtime's loader" in short.stdout and "runs.sh" in short.stdout
    assert "def unpack(" not in short.stdout and "def unpack(" in full.stdout
    assert boot_source().splitlines()[-1] in full.stdout


def test_wait_on_a_terminal_redraws_the_table_in_place(ops, project, pod, client):
    import pty
    (project / "c.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "t-a", "command": f"sleep 4; {WRITE_SUMMARY}"}]}))
    ops("runs.submit", "--host", pod.alias, "--config", "c.json")
    master, slave = pty.openpty()

    proc = subprocess.Popen([*ops_argv(), "runs.wait", "--host", pod.alias, "--timeout", "60"], cwd=project,
                            env=client.env(), stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, seen
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side closed: the task ended
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(timeout=30)
    text = seen.decode(errors="replace")

    assert proc.returncode == 0, text
    assert "progress: 0/1 done (0 failed), 1 running, 0 queued: t-a" in text  # the live table
    assert "\x1b[" in text and "F\x1b[J" in text  # redrawn in place
    assert text.rstrip().splitlines()[-1].startswith("t-a ") and "succeeded" in text.splitlines()[-1]
