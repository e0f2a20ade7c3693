"""The output contract every task shares, built once: `ops_task` (see docs/ARCHITECTURE.md).

- `--json`: one compact JSON object on stdout, nothing else there; `--pretty`: indented.
- default: human-readable text (tabulate tables); progress and logs go to stderr.
- `--dry-run` (or Invoke's `--dry`): show the rendered scripts and commands, contact nothing.
- exit 0 ok, 1 the checked thing is not ok, 2 bad input; expected failures are one line.
- secrets are masked in everything printed.

How a dry run works: under --dry-run, `target_of` hands the task a `DryRunTarget` instead of
a real one. The task body runs as usual (flags are checked, scripts rendered) until its first
contact with the host: the dry-run target records the script (or the local command, or the
connection) it was asked for and raises `DryRunStop`, which `ops_task` turns into the dry-run
report. Tasks that reach nothing through a target (report, which contacts nothing; the Lium
tasks, which call an API) ask `dry_run_requested()` and return their own dry-run document.
"""

import contextvars
import functools
import inspect
import json as jsonlib
import os
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Optional

from invoke import Exit, task

from .errors import ConfigError, Interrupted, OpsError
from .secrets import redact, secret_values
from .streams import LineBuffer
from .settings import project_env, project_dir_of, resolve_profile
from .targets import DryRunStop, target_for


@dataclass
class TaskContext:
    """What the running task was asked for by the shared flags, for the helpers below."""

    dry_run: bool = False
    # Under --json/--pretty: whether to indent; None for human output.
    pretty: Optional[bool] = None
    # Secret values the task learnt from its flags (vllm.start --env), masked like the environment's.
    secrets: tuple = ()


# Set for one task call and reset after it: chained tasks never see each other's flags.
_TASK = contextvars.ContextVar("ops_task_context")


def _current() -> TaskContext:
    """The running task's context; outside any task, the defaults (human output, no dry run)."""
    return _TASK.get(None) or TaskContext()


COMMON_HELP = {
    "host": "Profile in invoke.yaml, alias in ~/.ssh/config, or user@host:port (default: ops -H, else "
    "the last --host given earlier in the chain, else $OPS_DEFAULT_HOST, ops.default_host, 'lium').",
    "json": "Print one compact JSON object on stdout and nothing else.",
    "pretty": "Print the JSON object indented.",
    "dry_run": "Print the rendered remote scripts and commands; contact nothing.",
}


def _secrets() -> list:
    """Secret values of the environment and of the OPS_PROJECT_ENV file, to mask on output."""
    extra = list(_current().secrets)
    try:
        found = secret_values(os.environ, project_env())
    except ConfigError:  # a missing env file is reported by the task itself
        found = secret_values()
    return sorted(set(found) | {v for v in extra if v and len(v) >= 4}, key=len, reverse=True)


def add_secrets(values) -> None:
    """Mask these values too in everything this task prints."""
    context = _current()
    context.secrets = context.secrets + tuple(values)


def dry_run_requested() -> bool:
    """True under --dry-run (or Invoke's --dry): for tasks that write local files, not scripts."""
    return _current().dry_run


def json_requested() -> bool:
    """True under --json or --pretty (for tasks whose streaming output would break them)."""
    return _current().pretty is not None


def emit(text: str, stream=None) -> None:
    """Print text with every known secret masked."""
    print(redact(text, _secrets()), file=stream or sys.stdout)


def log(message: str) -> None:
    """Progress for humans: stderr, secrets masked."""
    emit(message, sys.stderr)


def _emit_document(data: dict, pretty: bool) -> None:
    if pretty:
        emit(jsonlib.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        emit(jsonlib.dumps(data, separators=(",", ":"), default=str))


class LineEmitter:
    """Streamed text (a followed log) to stdout, whole lines at a time, secrets masked."""

    def __init__(self):
        self.lines = LineBuffer()

    def __call__(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            emit(line)
        sys.stdout.flush()


def announce(data: dict, text: str) -> None:
    """Print a task's result now, for tasks that then keep running (vllm.tunnel): the JSON
    document under --json/--pretty, else the text."""
    pretty = _current().pretty
    if pretty is None:
        emit(text)
    else:
        _emit_document(data, pretty)
    sys.stdout.flush()


# Where the front doors leave the chain's host in the one Config that chained tasks share.
CLI_HOST_KEY = "ops_cli_host"  # `ops -H HOST`: every task of the chain without its own --host
CHAIN_HOST_KEY = "ops_chain_host"  # the last --host a task of the chain named


def chain_host(c, host: Optional[str]) -> Optional[str]:
    """The host a task runs on: its own --host, else `ops -H`, else the last --host named earlier
    in the chain (`inv a --host x b c` runs b and c on x too), else None (the defaults)."""
    if host:
        c.config[CHAIN_HOST_KEY] = host
        return host
    return c.config.get(CLI_HOST_KEY) or c.config.get(CHAIN_HOST_KEY)


def check_runtime_config(path) -> None:
    """ConfigError for Invoke's own -f/--config (a runtime config file) naming nothing, or a run
    config: `ops --config demo.json runs.submit` meant runs.submit's --config."""
    if not path:
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"-f/--config {path}: no such file (Invoke's runtime config; "
                          f"a run config goes after the task: runs.submit --config FILE)")
    if file.suffix.lower() == ".csv" or _holds_runs(file):
        raise ConfigError(f"--config {path} before the task name is Invoke's runtime config file, and this is a "
                          f"run config: write it after the task, runs.submit --config {path}")


def _holds_runs(file: Path) -> bool:
    """True for a JSON file shaped like a run config (a top-level runs or runs_csv key)."""
    if file.suffix.lower() != ".json":
        return False
    try:
        top = jsonlib.loads(file.read_text(errors="replace"))
    except (ValueError, RecursionError, OSError):
        return False
    return isinstance(top, dict) and ("runs" in top or "runs_csv" in top)


def target_of(c, host: Optional[str]):
    """The target of a task: the resolved --host, or a dry-run recorder under --dry-run.

    Nothing is contacted here: an SSH target connects at its first script.
    """
    profile = resolve_profile(c.config.get("ops"), host, project_dir_of(c.config))
    return target_for(profile, dry_run=_current().dry_run, invoke_config=c.config)


def _dry_run_report(target) -> dict:
    """What a stopped dry run would have done: its notes, scripts and local commands."""
    profile = target.profile
    report = {
        "ok": True,
        "dry_run": True,
        "host": profile.name,
        "destination": profile.destination,
        **target.notes,
        "scripts": target.scripts,
    }
    if target.commands:  # only where a local command (rsync) was the first contact
        report["commands"] = target.commands
    return report


def _render_dry_run(data: dict) -> str:
    if data.get("commands") and not data["scripts"]:
        parts = [f"# dry run: nothing contacted. Would run on this machine, for {data['host']}:"]
    else:
        how = "locally with bash -s" if data["destination"] == "local" else f"over SSH to {data['destination']} with bash -s"
        parts = [f"# dry run: nothing contacted. Would run on {data['host']} {how}:"]
    for name, value in data.items():
        if name not in ("ok", "dry_run", "host", "destination", "scripts", "commands"):
            parts.append(f"# {name}:\n{jsonlib.dumps(value, indent=2)}")
    for script in data["scripts"] + data.get("commands", []):
        parts.append(script.rstrip("\n"))
    return "\n".join(parts)


def _with_common_parameters(body, names):
    """body's signature plus the shared flags, so that Invoke parses them for every task."""
    signature = inspect.signature(body)
    params = list(signature.parameters.values())
    taken = {p.name for p in params}
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
        for name, default in names
        if name not in taken
    ]
    return signature.replace(parameters=params + extra)


def _required_flags(body) -> list:
    """The body's parameters without a default (after the Context): flags the task needs."""
    params = list(inspect.signature(body).parameters.values())[1:]
    return [p.name for p in params if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD]


def _checked_flags(body, helps: dict, c, kwargs: dict) -> dict:
    """kwargs with the chain's host filled in; ConfigError for a required flag not given or a
    runtime config file that is not one. Runs before the body, so before any contact."""
    check_runtime_config(getattr(c.config, "_runtime_path", None))
    for name in _required_flags(body):
        if kwargs.get(name) in (None, [], ""):
            flag = "--" + name.replace("_", "-")
            what = helps.get(name, "a value")
            raise ConfigError(f"missing required flag {flag}: {what[0].lower() + what[1:]}")
    if "host" in inspect.signature(body).parameters:
        kwargs = dict(kwargs, host=chain_host(c, kwargs.get("host")))
    return kwargs


def _run_and_print(body, human, c, args, kwargs, helps):
    """Run a task body and print its result by the output contract; Exit with its code.

    Three ways out of the body: its result dict (printed, exit 1 if not ok), `DryRunStop` at
    its first contact under --dry-run (the dry-run report, exit 0), or an `OpsError` (one line
    on stderr, and the error document under --json; exit with the error's code).
    """
    pretty = _current().pretty
    as_json = pretty is not None
    try:
        try:
            kwargs = _checked_flags(body, helps, c, kwargs)
            data = body(c, *args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None
        render = human
    except DryRunStop as stop:
        data, render = _dry_run_report(stop.target), _render_dry_run
    except OpsError as exc:
        message = str(exc)
        emit(f"error: {message}", sys.stderr)
        if as_json:
            _emit_document({"ok": False, "error": message, "exit_code": exc.exit_code}, pretty)
        raise Exit(code=exc.exit_code) from None
    if data is None:  # the body printed its result itself (announce)
        return None
    if as_json:
        _emit_document(data, pretty)
    elif render is not None:
        emit(render(data))
    if not data.get("ok", True):
        raise Exit(code=1)
    return data


def ops_task(*args, human: Optional[Callable[[dict], str]] = None, help=None, **task_kwargs):
    """@task with the output contract: --json/--pretty/--dry-run, exit codes, one-line errors.

    The body returns a dict with at least `ok`; `human` renders it for people. A body that
    printed its result already (with `announce`) returns None. The body never sees the shared
    flags: the wrapper takes them, and they reach the helpers above through the task context.
    """

    def decorate(body):
        @functools.wraps(body)
        def wrapper(c, *a, json=False, pretty=False, dry_run=False, **kw):
            context = TaskContext(dry_run=bool(dry_run or c.config.run.dry), pretty=pretty if json or pretty else None)
            token = _TASK.set(context)
            try:
                return _run_and_print(body, human, c, a, kw, flag_help)
            finally:
                _TASK.reset(token)

        # Invoke builds a task's flags from its signature: the body's own, plus the shared ones.
        wrapper.__signature__ = _with_common_parameters(
            body, [("json", False), ("pretty", False), ("dry_run", False)]
        )
        helps = {k: v for k, v in COMMON_HELP.items() if k in wrapper.__signature__.parameters}
        helps.update(help or {})
        flag_help = dict(helps)  # Invoke consumes the dict it is given
        # No automatic short flags: `-h` must stay --help, and flags read the same everywhere.
        task_kwargs.setdefault("auto_shortflags", False)
        # No positional arguments: a required one would swallow `--help` (`ops runs.submit --help`
        # ran the task with config="--help"); required flags are checked by _checked_flags.
        task_kwargs.setdefault("positional", [])
        return task(wrapper, help=helps, **task_kwargs)

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
