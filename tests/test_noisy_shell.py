"""A pod's shell may print before a script's result (a banner in ~/.bashrc, a motd helper): the
result is the last JSON line the script printed, never the first thing on stdout."""

import pytest

from conftest import needs_isolation
from ops_tasks.errors import HostError
from ops_tasks.scripts import parse_document
from ops_tasks.targets import ScriptResult

BANNER = '{"motd": "welcome to the pod", "ok": false}'


def result(stdout, stderr="", exit_code=0):
    return ScriptResult(stdout=stdout, stderr=stderr, exit_code=exit_code, elapsed_ms=1.0)


def test_the_last_json_line_is_the_result_whatever_printed_above_it():
    printed = f"{BANNER}\nLast login: today\n\n" + '{"ok": true, "volume": "/mnt"}\n\n'
    assert parse_document(result(printed), "pod0", "pod_status.sh") == {"ok": True, "volume": "/mnt"}


def test_no_json_at_the_end_is_one_error_naming_the_script_and_the_last_stderr_line():
    with pytest.raises(HostError) as raised:
        parse_document(result(f"{BANNER}\nsomething else\n", "first\nbash: jq: command not found\n", 127),
                       "pod0", "pod_status.sh")
    message = str(raised.value)
    assert "pod_status.sh" in message and "exit 127" in message and "jq: command not found" in message


@needs_isolation
def test_a_pod_whose_shell_prints_a_banner_still_answers(pod, ops):
    (pod.home / ".bashrc").write_text(f"echo '{BANNER}'\necho 'Welcome!'\n")
    status = ops("pod.status", "--host", pod.alias, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert status.json["ok"] is True and "motd" not in status.json, status.stdout
