"""`ops exec`: one command on a pod, its output streamed as it comes, its exit code back
(remote_scripts/exec.sh; docs/ARCHITECTURE.md, "Layers").

The command runs in a login shell in the profile's repo folder (else $HOME), in a process group
of its own: the deadline, the caller hanging up (Ctrl-C) and the command's own end all end that
whole group. --env values travel on stdin, never argv.
"""

import base64
import json
import secrets as token_source
from collections import deque
from typing import Callable

from ..errors import ConfigError, HostError, Interrupted
from ..names import ENV_NAME
from ..scripts import render_script
from ..secrets import is_secret_name
from ..settings import env_value
from ..streams import LineBuffer

GRACE_MS = 2000  # after TERM, what the command's group gets before KILL
TAIL_LINES = 20  # of each pod's output, kept for --json
TIMED_OUT_EXIT = 124  # as coreutils timeout


def parse_env(items) -> tuple:
    """--env KEY=VALUE items as ((KEY, VALUE), ...); a bare KEY takes its value from here (or
    OPS_PROJECT_ENV), so a secret need not be typed on the laptop's command line either."""
    pairs = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        if not ENV_NAME.match(name):
            raise ConfigError(f"--env {name!r}: not a valid environment variable name (KEY=VALUE)")
        if not sep:
            value = env_value(name)
            if value is None:
                raise ConfigError(f"--env {name}: not set here; pass {name}=VALUE or export {name}")
        pairs[name] = value
    return tuple(pairs.items())


def env_shown(env: tuple) -> dict:
    """The env as a dry run may show it: secret values masked."""
    from ..runtime.contract import MASK
    return {name: MASK if is_secret_name(name) else value for name, value in env}


def env_payload(env: tuple) -> bytes:
    """What follows the script on stdin: NAME=<base64 of the value> per line (any byte survives)."""
    return "".join(f"{name}={base64.b64encode(value.encode()).decode()}\n" for name, value in env).encode()


class _Stream:
    """One stream of the command: whole lines to `show` as they come, the last ones kept."""

    def __init__(self, show: Callable[[str], None], tail: deque):
        self.lines = LineBuffer()
        self.show = show
        self.tail = tail

    def __call__(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            self.line(line)

    def line(self, line: str) -> None:
        self.tail.append(line)
        self.show(line)

    def flush(self) -> None:
        """A last line without its newline."""
        rest = self.lines.feed(b"\n")
        for line in rest:
            if line:
                self.line(line)


class _Stderr(_Stream):
    """The command's stderr, less the script's own report line (the mark, then JSON)."""

    def __init__(self, show, tail, mark: str):
        super().__init__(show, tail)
        self.mark = mark + " "
        self.report = None

    def line(self, line: str) -> None:
        if line.startswith(self.mark):
            try:
                self.report = json.loads(line[len(self.mark):])
            except ValueError:
                pass
            return
        super().line(line)


def run_command(target, *, command: str, timeout_s: float, env: tuple = (),
                on_stdout: Callable[[str], None], on_stderr: Callable[[str], None],
                grace_ms: int = GRACE_MS) -> dict:
    """Run command on target, each line of its stdout/stderr handed to on_stdout/on_stderr as it
    comes. {ok, host, exit_code, timed_out, output_tail}; Interrupted when Ctrl-C stopped it."""
    mark = "OPS-EXEC-" + token_source.token_hex(12)
    script = render_script("exec.sh", command=command, workdir=target.profile.remote_repo or "",
                           timeout_ms=int(round(timeout_s * 1000)), grace_ms=grace_ms, env_count=len(env),
                           mark=mark)
    target.describe(command=command, workdir=target.profile.remote_repo or "$HOME",
                    timeout_s=timeout_s or None, env=env_shown(env))
    tail: deque = deque(maxlen=TAIL_LINES)
    out, err = _Stream(on_stdout, tail), _Stderr(on_stderr, tail, mark)
    # The pod ends the command by its deadline; this bounds the round trip should the pod not.
    budget = timeout_s + grace_ms / 1000 + 30 if timeout_s else None
    with target.round_trip_budget(budget):
        result = target.run_script(script, stdin_payload=env_payload(env), on_stdout=out, on_stderr=err,
                                   hold_stdin=True)
    out.flush()
    err.flush()
    report = err.report
    label = target.profile.label
    if report is None:
        if result.exit_code == 130:  # the target saw Ctrl-C and hung up: the pod ended the command
            raise Interrupted(f"interrupted: the command on {label} was stopped (its process group)")
        raise HostError(f"{label}: the command's shell ended without its report (exit {result.exit_code})")
    if report.get("error"):
        raise HostError(f"{label}: {report['error']}")
    exit_code = report.get("exit_code")
    if not isinstance(exit_code, int):
        raise HostError(f"{label}: the command's report has no exit code")
    return {"ok": exit_code == 0, "host": target.profile.name, "exit_code": exit_code,
            "timed_out": bool(report.get("timed_out")), "timeout_s": timeout_s or None,
            "output_tail": list(tail)}
