"""`ops exec`: one shell command on a host, or on every pod of a fleet at once, its output
streamed (each line prefixed `[pod] ` over a fleet), its exit code returned, secrets masked,
under a deadline (operations/exec.py, remote_scripts/exec.sh)."""

import re
import sys
import threading

from .errors import ConfigError
from .flags import seconds_flag
from .output import add_secrets, announce, dry_run_requested, emit, json_requested, log, ops_task, stopped
from .secrets import is_secret_name
# The operations, fleet and targets are imported by the function that uses them (ARCHITECTURE.md,
# "Start-up").

TIMEOUT_S = 600.0  # the command's deadline unless --timeout says (0: none)
_COLOUR = re.compile(r"\x1b\[[0-9;:]*m")  # a command's colours are dropped, not shown as escapes

HELP = {
    "command": "The shell command line to run, quoted as one argument: --command 'nvidia-smi; df -h /mnt'. "
               "It runs in a login shell (bash -l) in the profile's repo folder, else $HOME.",
    "timeout": f"Seconds before the command's whole process group is killed (exit 124); 0: none "
               f"(default {TIMEOUT_S:g}).",
    "env": "KEY=VALUE for the command's environment (repeatable; a bare KEY takes its value from here). "
           "Values go over stdin, never argv; secret ones are masked in the output.",
}


class _Printer:
    """A pod's lines as they come: stdout (stderr under --json, whose stdout is the document) and
    stderr, `[pod] ` before each over a fleet; secrets masked by emit. One lock for all pods, so
    lines of several pods never mix within a line."""

    lock = threading.Lock()

    def __init__(self, prefix: str):
        self.prefix = prefix

    def show(self, line: str, stream) -> None:
        text = self.prefix + _COLOUR.sub("", line.rstrip("\r").rsplit("\r", 1)[-1])
        with self.lock:
            emit(text, stream)

    def stdout(self, line: str) -> None:
        self.show(line, sys.stderr if json_requested() else sys.stdout)

    def stderr(self, line: str) -> None:
        self.show(line, sys.stderr)


def _on_pod(target, *, command: str, timeout_s: float, env: tuple, prefixed: bool) -> dict:
    from .operations.exec import run_command
    name = target.profile.name
    printer = _Printer(f"[{name}] " if prefixed else "")
    result = run_command(target, command=command, timeout_s=timeout_s, env=env, on_stdout=printer.stdout,
                         on_stderr=printer.stderr)
    if result["timed_out"]:
        printer.stderr(f"timed out after {timeout_s:g} s on {name}: the command's process group was killed "
                       f"(exit {result['exit_code']})")
    return result


def _pod_entry(result: dict) -> dict:
    """A pod's part of the --json document (one that raised: its error, no exit code)."""
    if "error" in result:  # the command did not run, or its end is unknown (fleet.failure's exit_code is ours)
        return {"exit_code": None, "output_tail": [], "timed_out": False, "error": result["error"]}
    return {"exit_code": result["exit_code"], "output_tail": result["output_tail"], "timed_out": result["timed_out"]}


def _summary(results: list) -> str:
    parts = []
    for result in results:
        if "error" in result:
            parts.append(f"{result['pod']} error: {result.get('error')}")
        else:
            parts.append(f"{result['pod']} exit {result['exit_code']}" + (" (timed out)" if result["timed_out"] else ""))
    failed = sum(1 for r in results if r.get("ok") is not True)
    verdict = "all exited 0" if not failed else f"{failed} not ok"
    return f"exec: {len(results)} pods, {verdict}: " + ", ".join(parts)


@ops_task(name="exec", help=HELP, iterable=["env"])
def exec_(c, command, host=None, timeout=None, env=None):
    """Run a shell command on a host, or on every pod of a fleet at once; stream its output."""
    from invoke import Exit

    from .operations.exec import parse_env
    from .output import fleet_targets, target_of
    if not str(command).strip():
        raise ConfigError("--command is empty: give the shell command line to run")
    timeout_s = seconds_flag("--timeout", timeout, TIMEOUT_S, allow_zero=True)
    pairs = parse_env(env)
    add_secrets(value for name, value in pairs if is_secret_name(name))
    options = dict(command=str(command), timeout_s=timeout_s, env=pairs)
    fleet = fleet_targets(c, host)
    if not fleet:
        result = _on_pod(target_of(c, host), prefixed=False, **options)
        document = {"ok": result["ok"], "exit_code": result["exit_code"],
                    "pods": {result["host"]: _pod_entry(result)}}
        if json_requested():
            announce(document, "")
        if result["exit_code"]:
            raise Exit(code=result["exit_code"])
        return None
    from .fleet import fan_out_targets, fleet_document
    try:
        outcome = fan_out_targets(fleet, lambda target: _on_pod(target, prefixed=True, **options))
    except KeyboardInterrupt as exc:
        # fan_out closed the connections: each pod's script saw its stdin end and ended the command.
        raise stopped(exc, "the command was stopped on every pod (its process group)") from None
    if dry_run_requested():
        return fleet_document(outcome)
    results = outcome.pods
    code = 0 if outcome.ok else 1
    document = {"ok": outcome.ok, "exit_code": code, "failed": outcome.failed,
                "pods": {r["pod"]: _pod_entry(r) for r in results}}
    if json_requested():
        announce(document, "")
    else:
        log(_summary(results))
    if code:
        raise Exit(code=code)
    return None
