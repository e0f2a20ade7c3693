"""The output contract every task shares, built once: `ops_task` (DESIGN.md, output contract).

- `--json`: one compact JSON object on stdout, nothing else there; `--pretty`: indented.
- default: human-readable text (tabulate tables); progress and logs go to stderr.
- `--dry-run` (or Invoke's `--dry`): show the rendered scripts, contact nothing.
- exit 0 ok, 1 the checked thing is not ok, 2 bad input; expected failures are one line.
- secrets are masked in everything printed.
"""

import contextvars
import functools
import inspect
import json as jsonlib
import os
import sys
from typing import Callable, Optional

from invoke import Exit, task

from .errors import ConfigError, Interrupted, OpsError
from .secrets import redact, secret_values
from .streams import LineBuffer
from .settings import project_env, project_dir_of, resolve_profile
from .targets import DryRunStop, target_for

_DRY_RUN = contextvars.ContextVar("ops_dry_run", default=False)
# Under --json/--pretty: whether to indent; None for human output.
_JSON = contextvars.ContextVar("ops_json", default=None)
# Secret values a task learnt from its flags (vllm.start --env), masked like the environment's.
_TASK_SECRETS = contextvars.ContextVar("ops_task_secrets", default=())

COMMON_HELP = {
    "host": "Profile in invoke.yaml, alias in ~/.ssh/config, or user@host:port "
    "(default: $OPS_DEFAULT_HOST, then ops.default_host, then 'lium').",
    "json": "Print one compact JSON object on stdout and nothing else.",
    "pretty": "Print the JSON object indented.",
    "dry_run": "Print the rendered remote scripts and commands; contact nothing.",
}


def _secrets() -> list:
    """Secret values of the environment and of the OPS_PROJECT_ENV file, to mask on output."""
    extra = list(_TASK_SECRETS.get())
    try:
        found = secret_values(os.environ, project_env())
    except ConfigError:  # a missing env file is reported by the task itself
        found = secret_values()
    return sorted(set(found) | {v for v in extra if v and len(v) >= 4}, key=len, reverse=True)


def add_secrets(values) -> None:
    """Mask these values too in everything this task prints."""
    _TASK_SECRETS.set(tuple(_TASK_SECRETS.get()) + tuple(values))


def dry_run_requested() -> bool:
    """True under --dry-run (or Invoke's --dry): for tasks that write local files, not scripts."""
    return _DRY_RUN.get()


def json_requested() -> bool:
    """True under --json or --pretty (for tasks whose streaming output would break them)."""
    return _JSON.get() is not None


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
    pretty = _JSON.get()
    if pretty is None:
        emit(text)
    else:
        _emit_document(data, pretty)
    sys.stdout.flush()


def target_of(c, host: Optional[str]):
    """The target of a task: the resolved --host, or a dry-run recorder under --dry-run."""
    profile = resolve_profile(c.config.get("ops"), host, project_dir_of(c.config))
    return target_for(profile, dry_run=_DRY_RUN.get(), invoke_config=c.config)


def _dry_run_report(target) -> dict:
    profile = target.profile
    return {
        "ok": True,
        "dry_run": True,
        "host": profile.name,
        "destination": profile.destination,
        **target.notes,
        "scripts": target.scripts,
    }


def _render_dry_run(data: dict) -> str:
    how = "locally with bash -s" if data["destination"] == "local" else f"over SSH to {data['destination']} with bash -s"
    parts = [f"# dry run: nothing contacted. Would run on {data['host']} {how}:"]
    for name, value in data.items():
        if name not in ("ok", "dry_run", "host", "destination", "scripts"):
            parts.append(f"# {name}:\n{jsonlib.dumps(value, indent=2)}")
    for script in data["scripts"]:
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


def _run_and_print(body, human, c, args, kwargs, as_json: bool, pretty: bool):
    """Run a task body and print its result by the output contract; Exit with its code."""
    try:
        try:
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
    printed its result already (with `announce`) returns None.
    """

    def decorate(body):
        @functools.wraps(body)
        def wrapper(c, *a, json=False, pretty=False, dry_run=False, **kw):
            as_json = json or pretty
            tokens = (_DRY_RUN.set(bool(dry_run or c.config.run.dry)), _JSON.set(pretty if as_json else None),
                      _TASK_SECRETS.set(()))
            try:
                return _run_and_print(body, human, c, a, kw, as_json, pretty)
            finally:
                for var, token in zip((_DRY_RUN, _JSON, _TASK_SECRETS), tokens):
                    var.reset(token)

        wrapper.__signature__ = _with_common_parameters(
            body, [("json", False), ("pretty", False), ("dry_run", False)]
        )
        helps = {k: v for k, v in COMMON_HELP.items() if k in wrapper.__signature__.parameters}
        helps.update(help or {})
        # No automatic short flags: `-h` must stay --help, and flags read the same everywhere.
        task_kwargs.setdefault("auto_shortflags", False)
        return task(wrapper, help=helps, **task_kwargs)

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
