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

import contextlib
import contextvars
import functools
import inspect
import json as jsonlib
import math
import os
import re
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from invoke import Exit, task
from .tables import inert, one_line, tabulate

from .errors import ConfigError, Interrupted, OpsError
from .secrets import redact, secret_values
from .streams import LineBuffer
from .settings import project_env, project_dir_of
# fleet, scripts and targets are imported by the functions that use them: every task module imports
# this one, and `ops --list` or `ops TASK --help` needs none of them (ARCHITECTURE.md, "Start-up").


@dataclass
class TaskContext:
    """What the running task was asked for by the shared flags, for the helpers below."""

    dry_run: bool = False
    # Under --json/--pretty: whether to indent; None for human output.
    pretty: Optional[bool] = None
    # Secret values the task learnt from its flags (vllm.start --env), masked like the environment's.
    secrets: tuple = ()
    # --verbose: a dry run shows the shared shell library too, not one line for it.
    verbose: bool = False
    # The task's name as typed (runs.status), for messages about the task itself.
    task: str = ""
    # True while the task runs over several pods at once (their progress cannot share a line).
    fleet: bool = False
    # The values to mask, worked out at the task's first printed line (the environment and the
    # OPS_PROJECT_ENV file do not change under a task), again after add_secrets: a followed log
    # prints many lines, and scanning the environment per line was most of its cost.
    masked: Optional[list] = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the task is, as Ctrl-C raises KeyboardInterrupt."""


class TerminatedError(Interrupted):
    """Stopped by SIGTERM: exit 143, as a shell reports it."""

    exit_code = 143


def stopped(exc: KeyboardInterrupt, hint: str = "") -> Interrupted:
    """The one-line error of a task stopped by Ctrl-C/SIGINT (exit 130) or SIGTERM (143)."""
    terminated = isinstance(exc, Terminated)
    message = ("terminated" if terminated else "interrupted") + (f": {hint}" if hint else "")
    return TerminatedError(message) if terminated else Interrupted(message)


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _signals_stop_the_task():
    """SIGINT and SIGTERM stop the task where it is, even when the parent ignored SIGINT (a
    background job of a script, CI runners, `timeout -s INT`), which Python would inherit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGTERM,
                                                                                       _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


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
    "verbose": "With --dry-run: print the shared shell library (lib.sh) too, not one line for it.",
}


def _secrets() -> list:
    """Secret values of the environment, of the OPS_PROJECT_ENV file and of the task's flags, to
    mask on output (longest first, so a secret holding another is masked whole)."""
    context = _current()
    if context.masked is None:
        try:
            found = secret_values(os.environ, project_env())
        except ConfigError:  # a missing env file is reported by the task itself
            found = secret_values()
        extra = {v for v in context.secrets if v and len(v) >= 4}
        context.masked = sorted(set(found) | extra, key=len, reverse=True)
    return context.masked


def add_secrets(values) -> None:
    """Mask these values too in everything this task prints."""
    context = _current()
    context.secrets = context.secrets + tuple(values)
    context.masked = None


def dry_run_requested() -> bool:
    """True under --dry-run (or Invoke's --dry): for tasks that write local files, not scripts."""
    return _current().dry_run


def fleet_requested() -> bool:
    """True while the task runs over several pods at once: no progress redrawn in place."""
    return _current().fleet


def json_requested() -> bool:
    """True under --json or --pretty (for tasks whose streaming output would break them)."""
    return _current().pretty is not None


def emit(text: str, stream=None) -> None:
    """Print text with every known secret masked and nothing in it acting on the terminal
    (tables.inert: the one rule for every line a task prints, its result, its errors quoting a
    pod's string, its progress), flushed: a closed pipe is found here."""
    _write(inert(redact(text, _secrets())), stream)


def _write(text: str, stream=None) -> None:
    """Print text as it is (emit and log_line made it safe), flushed; a closed pipe ends quietly."""
    stream = stream or sys.stdout
    try:
        try:
            print(text, file=stream, flush=True)
        except UnicodeEncodeError:  # a folder name that is not UTF-8, say: shown as escapes, not a traceback
            encoding = getattr(stream, "encoding", None) or "utf-8"
            print(text.encode(encoding, "backslashreplace").decode(encoding), file=stream, flush=True)
    except BrokenPipeError:
        quit_on_closed_pipe(stream)


def quit_on_closed_pipe(stream=None) -> None:
    """The reader went away (`ops runs.list | head`): stop quietly, as `git log | head` does.

    The stream is pointed at /dev/null first, so Python's own flush at exit finds no pipe to
    complain about; exit 141 is what a shell reports for a process ended by SIGPIPE.
    """
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), (stream or sys.stdout).fileno())
    except (OSError, ValueError):
        pass
    raise Exit(code=141)


def log(message: str) -> None:
    """Progress for humans: stderr, secrets masked."""
    emit(message, sys.stderr)


def _emit_document(data: dict, pretty: bool) -> None:
    data = strict_json(data)
    if pretty:
        emit(jsonlib.dumps(data, indent=2, sort_keys=False, default=str, allow_nan=False))
    else:
        emit(jsonlib.dumps(data, separators=(",", ":"), default=str, allow_nan=False))


# Keys whose numbers are moments (epoch seconds): ISO 8601 in JSON, human in text.
TIME_KEYS = frozenset({"started", "finished", "last_output", "heartbeat", "updated", "not_before"})


def is_time_key(key) -> bool:
    return isinstance(key, str) and (key in TIME_KEYS or key.endswith("_at"))


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def strict_json(data: dict) -> dict:
    """data as the JSON output shows it: every NaN/Infinity (not JSON: strict parsers refuse the
    whole document) as null with a note naming where it was (`json_notes`), and every moment
    (TIME_KEYS, `*_at`) as an ISO 8601 UTC string instead of epoch seconds."""
    notes = []

    def where(path: tuple) -> str:  # only spelled out for a note: most documents need none
        return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")

    def number(value, path: tuple, key):
        if type(value) is not int and not math.isfinite(value):  # an int has no NaN, and may not fit a float
            notes.append(f"{where(path)} was {value}, written as null")
            return None
        if value > 0 and is_time_key(key):
            try:
                return iso_time(value)
            except (OverflowError, OSError, ValueError):
                return value
        return value

    def clean(value, path: tuple, depth: int, key=None):
        """value cleaned; the leaves of a container are looked at in its own loop (a report's
        document has some 300,000 of them: a call and a path each was most of this walk)."""
        kind = type(value)
        if kind is str or kind is bool or value is None:
            return value
        if kind is float:
            return number(value, path, key)
        if kind is int:
            return value if value <= 0 or not is_time_key(key) else number(value, path, key)
        if depth > 100:  # deeper than anything a task builds: left to json.dumps as it is
            return value
        if isinstance(value, dict):
            out = {}
            for name, item in value.items():
                kind = type(item)
                if kind is str or kind is bool or item is None or (kind is int and (item <= 0 or not is_time_key(name))):
                    out[name] = item
                else:
                    out[name] = clean(item, (*path, name), depth + 1, name)
            return out
        if isinstance(value, (list, tuple)):
            return [item if type(item) is str or item is None else clean(item, (*path, index), depth + 1)
                    for index, item in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):  # a float subclass
            notes.append(f"{where(path)} was {value}, written as null")
            return None
        return value

    cleaned = clean(data, (), 0)
    if notes:
        cleaned["json_notes"] = notes
    return cleaned


# SGR: colours and bold, the only escape sequence a followed log may keep (see log_line).
_COLOUR = re.compile(r"(\x1b\[[0-9;:]*m)")


def log_line(line: str) -> str:
    """One line of a followed log (a run's or vLLM's own output, runs.logs/vllm.logs --follow) as
    it is printed: the log is shown as the program wrote it, as `tail -f` would, but the terminal
    stays the user's. Colours (SGR) pass, as `less -R` lets them, reset at the line's end so none
    outlives it; a line a progress bar rewrote with CR shows what a terminal would have drawn, its
    last state (not thousands of visible `\\r`); every other control (OSC 52 setting the
    clipboard, a title, a hidden link, a screen clear, the C1 controls) is shown as a visible
    escape, as in all other output. The exact bytes are the run's stdout.log (artifacts.fetch)."""
    line = line.rstrip("\r")
    if "\r" in line:
        line = line.rsplit("\r", 1)[1]
    if "\x1b[" not in line:
        return inert(line)
    parts = _COLOUR.split(line)  # text, colour, text, ...: the colours at the odd places
    coloured = any(parts[1::2])
    return "".join(part if index % 2 else inert(part) for index, part in enumerate(parts)) + (
        "\x1b[0m" if coloured else "")


class LineEmitter:
    """Streamed text (a followed log) to stdout, whole lines at a time, secrets masked, each line
    as log_line shows it."""

    def __init__(self):
        self.lines = LineBuffer()

    def __call__(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            _write(log_line(redact(line, _secrets())))


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


def _targets_of(c, host: Optional[str]) -> list:
    """A target for each pod --host names (one for a single host), or dry-run recorders under
    --dry-run. Nothing is contacted here: an SSH target connects at its first script."""
    from .fleet import resolve_hosts
    from .targets import target_for
    profiles = resolve_hosts(c.config.get("ops"), host, project_dir_of(c.config))
    return [target_for(profile, dry_run=_current().dry_run, invoke_config=c.config) for profile in profiles]


def target_of(c, host: Optional[str]):
    """The target of a task that runs on one host; a fleet is refused (exit 2, nothing
    contacted), naming the task, for the tasks not wired for fleets (see on_each_pod)."""
    targets = _targets_of(c, host)
    if len(targets) > 1:
        names = ", ".join(t.profile.name for t in targets)
        raise ConfigError(f"{_current().task or 'this task'} over a fleet is not supported yet: --host {host!r} "
                          f"names {len(targets)} pods ({names}); give one host")
    return targets[0]


def fleet_targets(c, host: Optional[str]) -> list:
    """The targets of the pods --host names when it names several (a fleet), else []; for the
    tasks whose fleet path is their own (runs.submit places runs over the pods)."""
    targets = _targets_of(c, host)
    if len(targets) > 1:
        _current().fleet = True
        return targets
    return []


def on_each_pod(c, host: Optional[str], operation: Callable) -> dict:
    """operation(target) on the host --host names: its result, unchanged. Over several pods, the
    fleet's document (fleet.fleet_document: each pod's result, the merged runs, totals, the pods
    not ok), the pods contacted at once, one connection each, one pod's failure its own row.

    Bad input is refused before any pod is contacted: each pod's operation first runs as a dry
    run (against a recorder, up to its first contact: what a task does before contact is only
    checking flags and rendering scripts), so a flag wrong for any pod's profile is exit 2 with
    nothing contacted, as it is for one host.
    """
    from .fleet import NothingHere, fan_out_targets, fleet_document
    targets = _targets_of(c, host)
    if len(targets) == 1:
        try:
            return operation(targets[0])
        except NothingHere as nothing:
            return nothing.result
    _current().fleet = True
    if not _current().dry_run:
        for target in targets:
            _check_without_contact(operation, target.profile, c.config)
    return fleet_document(fan_out_targets(targets, operation))


def _check_without_contact(operation: Callable, profile, invoke_config) -> None:
    """Run operation on a dry-run recorder of the pod's profile: it stops at the first contact;
    a ConfigError (bad input) on the way is raised here, before any pod is reached."""
    from .fleet import NothingHere
    from .targets import DryRunStop, target_for
    try:
        operation(target_for(profile, dry_run=True, invoke_config=invoke_config))
    except (DryRunStop, NothingHere):
        pass


def _dry_run_report(target) -> dict:
    """What a stopped dry run would have done: its notes, scripts and local commands."""
    from .fleet import dry_run_record
    return dry_run_record(target)


def _shared_libraries() -> dict:
    """The text of each shared shell library a rendered script may carry: name -> text."""
    from .scripts import scripts_dir
    folder = scripts_dir()
    return {path.name: path.read_text() for path in sorted(folder.glob("*lib.sh"))}


def _summarised(script: str) -> str:
    """A script as a dry run shows it: the shared libraries as one line each (--verbose: whole)."""
    if _current().verbose:
        return script
    for name, text in _shared_libraries().items():
        if text and text in script:
            lines = text.count("\n") + 1
            script = script.replace(text, f"# ({name}: the shared helpers, {lines} lines; --verbose shows them)", 1)
    if "runs.sh" in script:
        from .operations.runtime import boot_as_shown
        for text, shown in boot_as_shown().items():
            script = script.replace(f"boot={text}", shown, 1)
    return script


def _render_dry_run(data: dict) -> str:
    if data.get("commands") and not data["scripts"]:
        parts = [f"# dry run: nothing contacted. Would run on this machine, for {data['host']}:"]
    else:
        how = "locally with bash -s" if data["destination"] == "local" else f"over SSH to {data['destination']} with bash -s"
        parts = [f"# dry run: nothing contacted. Would run on {data['host']} {how}:"]
    for name, value in data.items():
        if name not in ("ok", "dry_run", "host", "destination", "scripts", "commands", "pod"):
            parts.append(f"# {name}:\n{jsonlib.dumps(value, indent=2)}")
    for script in data["scripts"]:
        parts.append(_summarised(script).rstrip("\n"))
    for command in data.get("commands", []):
        parts.append(command.rstrip("\n"))
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
    from .targets import DryRunStop
    pretty = _current().pretty
    as_json = pretty is not None
    try:
        try:
            kwargs = _checked_flags(body, helps, c, kwargs)
            data = body(c, *args, **kwargs)
        except KeyboardInterrupt as exc:
            raise stopped(exc) from None
        render = functools.partial(render_fleet, human=human) if data is not None and data.get("fleet") else human
    except DryRunStop as stop:
        data, render = _dry_run_report(stop.target), _render_dry_run
    except OpsError as exc:
        message = one_line(str(exc))  # one line, whatever a pod's names in it hold
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
        raise Exit(code=data.get("exit_code", 1) if data.get("fleet") else 1)
    return data


# ---------------------------------------------------------------- a task over a fleet, for people


def render_fleet(data: dict, human: Optional[Callable[[dict], str]]) -> str:
    """Any task's fleet document for people: each pod's section as the task renders one host (or
    its error, or its dry run), then a table with a row per pod and the fleet's totals."""
    from .fleet import RAISED_KEYS, pod_error
    sections = []
    for name, pod in data["pods"].items():
        if pod.get("dry_run"):
            sections.append(_render_dry_run(pod))
        elif set(pod) <= RAISED_KEYS:  # the pod raised: only its error
            sections.append(f"{name}: error: {one_line(pod_error(name, pod.get('error')))}")
        elif human is not None:
            section = human(pod)
            # A section that does not say whose it is (a log's text) gets the pod's name above it.
            sections.append(section if section.startswith(name) else f"--- {name} ---\n{section}")
    if not data.get("dry_run"):
        sections.append(_fleet_summary(data))
    return "\n\n".join(section for section in sections if section)


def _fleet_summary(data: dict) -> str:
    """A row per pod (ok, GPUs free, runs by state, the first problem), then the totals."""
    from .fleet import totals
    columns = {"pod": [], "ok": [], "gpus free": [], "runs": [], "problem": []}
    for name, pod in data["pods"].items():
        counts = totals([pod])
        columns["pod"].append(name)
        columns["ok"].append("ok" if pod.get("ok") is True else "NOT OK")
        columns["gpus free"].append(f"{counts['gpus_free']}/{counts['gpus']}" if isinstance(pod.get("gpus"), list) else "")
        columns["runs"].append(_by_state(counts["runs_by_state"]))
        columns["problem"].append(_first_problem(pod))
    shown = {k: v for k, v in columns.items() if k in ("pod", "ok") or any(v)}
    rows = list(zip(*shown.values()))
    fleet = data["totals"]
    line = f"fleet: {fleet['pods']} pods, {fleet['pods_up']} up, {fleet['pods_not_ok']} not ok"
    if any(isinstance(pod.get("gpus"), list) for pod in data["pods"].values()):  # a task that looked at GPUs
        line += f"; {fleet['gpus']} GPUs, {fleet['gpus_free']} free"
    if fleet["runs_by_state"]:
        line += f"; runs: {_by_state(fleet['runs_by_state'])}"
    lines = [tabulate(rows, headers=list(shown), tablefmt="simple"), line]
    if data.get("error"):
        lines.append(f"error: {one_line(str(data['error']))}")
    return "\n".join(lines)


def _by_state(counts: dict) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def _first_problem(pod: dict) -> str:
    """What is wrong with a pod, on one line: its error, else its first problem."""
    problems = pod.get("problems") if isinstance(pod.get("problems"), list) else []
    text = pod.get("error") or (problems[0] if problems else "")
    text = " ".join(str(text).split())
    return text if len(text) <= 90 else text[:87] + "..."


def ops_task(*args, human: Optional[Callable[[dict], str]] = None, help=None, **task_kwargs):
    """@task with the output contract: --json/--pretty/--dry-run, exit codes, one-line errors.

    The body returns a dict with at least `ok`; `human` renders it for people. A body that
    printed its result already (with `announce`) returns None. The body never sees the shared
    flags: the wrapper takes them, and they reach the helpers above through the task context.
    """

    def decorate(body):
        @functools.wraps(body)
        def wrapper(c, *a, json=False, pretty=False, dry_run=False, verbose=False, **kw):
            context = TaskContext(dry_run=bool(dry_run or c.config.run.dry), pretty=pretty if json or pretty else None,
                                  verbose=bool(verbose), task=task_name)
            token = _TASK.set(context)
            try:
                with _signals_stop_the_task():
                    return _run_and_print(body, human, c, a, kw, flag_help)
            finally:
                _TASK.reset(token)

        # Invoke builds a task's flags from its signature: the body's own, plus the shared ones.
        wrapper.__signature__ = _with_common_parameters(
            body, [("json", False), ("pretty", False), ("dry_run", False), ("verbose", False)]
        )
        helps = {k: v for k, v in COMMON_HELP.items() if k in wrapper.__signature__.parameters}
        helps.update(help or {})
        flag_help = dict(helps)  # Invoke consumes the dict it is given
        task_name = f"{body.__module__.rsplit('.', 1)[-1]}.{task_kwargs.get('name') or body.__name__.rstrip('_')}"
        # No automatic short flags: `-h` must stay --help, and flags read the same everywhere.
        task_kwargs.setdefault("auto_shortflags", False)
        # No positional arguments: a required one would swallow `--help` (`ops runs.submit --help`
        # ran the task with config="--help"); required flags are checked by _checked_flags.
        task_kwargs.setdefault("positional", [])
        return task(wrapper, help=helps, **task_kwargs)

    if args and callable(args[0]):
        return decorate(args[0])
    return decorate
