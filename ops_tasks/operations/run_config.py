"""What `runs.submit --config PATH` runs: the config file (the seed's JSON format, or a CSV of
runs) checked and expanded into RunSpecs, each with its command line, run directory and env.

Reads the config file (and the CSV it names) and nothing else: the host's roots come in with its
resolved profile (environment over invoke.yaml, applied by settings.py). No network, no printing.
The whole config is refused on the first error, so a submission is never half made.
"""

import copy
import csv
import difflib
import io
import itertools
import json
import math
import posixpath
import re
import shlex
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..defaults import RUN_LOCAL_DIR, RUN_STALL_TIMEOUT_S, RUN_SYNC_INTERVAL_S, RUN_TIMEOUT_S, RUNS_SESSION
from ..errors import ConfigError
from ..names import CONTROL_CHARS, ENV_NAME, RUN_ID, TMUX_SESSION
from ..runtime.contract import COMMIT, FAILURE_CLASSES, SUMMARY_BY_SCRIPT
from ..runtime.keys import (NOT_IDENTITY, RESERVED, WORKLOAD_KEYS, check_local_dir, run_problem,
                            value_problem)
from ..secrets import MASK, is_secret_key, is_secret_name

# Every run key is a row of runtime/keys.py's RUN_KEYS: the sets below are made from it (docs/concepts/run-configs.md,
# docs/reference/run-keys.md). WORKLOAD_KEYS: what the supervisor does with a run's
# files (checked here, and again on the pod by the same rows' checks). NOT_IDENTITY: keys that say
# how a run is watched, retried, gated or described, not what it computes: a run id submitted
# again with only these changed is the same run (RunSpec.identity). RESERVED: keys that configure
# the run itself; every other key of a run is a flag of its entrypoint.
# How values are written on the command line (docs/concepts/run-configs.md, "Rendering values"; checked by _styles).
FLAG_STYLES = ("--key value", "--key=value", "key=value")
VALUE_STYLES = ("json", "python", "flag")
# A config deeper than this is a mistake (or an attack on the recursion limit), not a sweep.
MAX_DEPTH = 32
# A workload key at the top is the whole config's (summary_from for every run), as if under `defaults`.
TOP_LEVEL_KEYS = ("remote_repo", "remote_outputs_dir", "tmux_session", "defaults", "runs", "runs_csv", "campaign",
                  *WORKLOAD_KEYS)  # campaign: ops campaign's section (servers, sync, report)
DEFAULT_RETRY_BACKOFF = 10.0
# A matrix typo (a list of 1000 where 10 was meant) should not queue a million runs.
MAX_RUNS = 10000

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
# `{{name}}` is the escape for a literal `{name}`; other braces (JSON, dict literals) are text,
# and so is the shell's own `${name}`.
# `{name!python}` / `{name!json}` choose how a boolean, null, list or object is written there.
_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)(?:!(json|python))?\}")
_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
# CSV cells: leading zeros stay text, so "007" keeps its zeros.
_CSV_INT = re.compile(r"^[+-]?(?:0|[1-9][0-9]*)$")
_CSV_FLOAT = re.compile(r"^[+-]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][+-]?\d+)?$")
# CSV columns that are text even when they look like numbers ("1" as a run id or label).
_CSV_TEXT_KEYS = ("run_id", "label", "command", "entrypoint", "run_dir")
# The seed's id scheme: <timestamp>_<env_id>_<model_id>_n<num_examples>_r<rollouts>_b<best_of>_seed<seed>.
_ID_PARTS = (("env_id", ""), ("model_id", ""), ("num_examples", "n"), ("rollouts_per_example", "r"),
             ("best_of", "b"), ("seed", "seed"))
# Keys that are not placeholder values: env (secrets must not leak into command lines), the
# command itself, and the two that are computed (run_id, run_dir).
_NOT_SOURCES = frozenset({"env", "command", "entrypoint", "matrix", "run_id", "run_dir"})


@dataclass(frozen=True)
class RunSpec:
    """One run, checked and ready to ship to the pod's supervisor."""

    run_id: str
    label: Optional[str]
    run_dir: str  # absolute path on the pod
    command: str  # the bash command line, values quoted; no env in it
    cwd: str  # remote_repo
    env: tuple  # ((NAME, value), ...) real values: they travel on stdin only
    gpus: Optional[int]  # None: all GPUs of the pod; 0: CPU only
    timeout: Optional[float]  # seconds, wall clock; None only when the config says `timeout: null`
    stall_timeout: Optional[float]  # seconds without new output; None only when the config says null
    retries: int  # extra attempts
    retry_on: Optional[tuple]  # failure classes; None: any
    retry_backoff: float  # seconds before the first retry, doubled each time
    config: dict  # the effective run config, secret env values masked
    workload: tuple = ()  # ((WORKLOAD_KEYS key, checked value), ...) of the keys the run sets
    warnings: tuple = ()  # lines for the user at submit time (a value a configurator would misread)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "label": self.label,
            "run_dir": self.run_dir,
            "command": self.command,
            "cwd": self.cwd,
            "env": dict(self.env),
            "gpus": self.gpus,
            "timeout": self.timeout,
            "stall_timeout": self.stall_timeout,
            "retries": self.retries,
            "retry_on": None if self.retry_on is None else list(self.retry_on),
            "retry_backoff": self.retry_backoff,
            "config": copy.deepcopy(self.config),
            **copy.deepcopy(dict(self.workload)),
            "identity": self.identity(),
        }

    def identity(self) -> dict:
        """What makes this run the run it is: its command line, its env names and its config
        without the keys of NOT_IDENTITY. The pod refuses a run id it holds with another one."""
        return {"command": self.command, "env_names": sorted(name for name, _ in self.env),
                "config": {key: value for key, value in self.config.items() if key not in NOT_IDENTITY}}

    def shown(self) -> dict:
        """to_dict() as it may be printed or written to a manifest: secret env values masked."""
        data = self.to_dict()
        data["env"] = _masked_env(data["env"])
        return data


@dataclass(frozen=True)
class Submission:
    remote_repo: str
    outputs_dir: str
    tmux_session: str
    runs: tuple  # of RunSpec


# ---------------------------------------------------------------- loading


def load_submission(path, *, profile, remote_repo=None, outputs_dir=None, tmux_session=None, now=None,
                    project_dir=None) -> Submission:
    """The checked Submission of a config file (.json or .csv); ConfigError for anything wrong.

    remote_repo / outputs_dir / tmux_session are the task's flags (None: not given); profile is
    the host's resolved Profile, whose remote_repo and outputs_dir already hold the environment's
    OPS_REMOTE_REPO / OPS_REMOTE_OUTPUTS_DIR when set.
    now (a datetime, UTC when naive) stamps generated run ids; default: the current time.
    project_dir: on the `local` profile (this machine), a relative remote_repo ("." too) is taken
    from there.
    """
    shown = str(path)
    file = Path(path).expanduser()
    suffix = file.suffix.lower()
    if suffix == ".json":
        top = _read_json(file, shown)
        defaults, raw_runs = _json_runs(top, file, shown)
        defaults = {**{key: top[key] for key in WORKLOAD_KEYS if key in top}, **defaults}
    elif suffix == ".csv":
        # A CSV holds runs only; everything else comes from flags, the environment or the profile.
        top, defaults, raw_runs = {}, {}, _csv_runs(file, shown, 0)
    else:
        raise ConfigError(f"{shown}: a run config must be a .json or .csv file")

    in_file = f"set remote_repo in {shown}" if suffix == ".json" else "set remote_repo in the host's profile"
    repo = _root("remote_repo", [
        (remote_repo, "--remote-repo"),
        (top.get("remote_repo"), f"remote_repo in {shown}"),
        (profile.remote_repo, f"OPS_REMOTE_REPO or profile {profile.name}"),
    ], f"remote_repo is not set: pass --remote-repo, {in_file}, or export OPS_REMOTE_REPO",
        base=str(Path(project_dir).resolve()) if project_dir is not None and profile.is_local else None)
    outputs = _root("outputs dir", [
        (outputs_dir, "--remote-outputs-dir"),
        (top.get("remote_outputs_dir"), f"remote_outputs_dir in {shown}"),
        (profile.outputs_dir, f"OPS_REMOTE_OUTPUTS_DIR or profile {profile.name}"),
    ], f"the outputs dir is not set: pass --remote-outputs-dir, set remote_outputs_dir in {shown}, "
       f"or export OPS_REMOTE_OUTPUTS_DIR")
    session = tmux_session or top.get("tmux_session") or RUNS_SESSION
    if not TMUX_SESSION.match(session):
        source = "--tmux-session" if tmux_session else f"tmux_session in {shown}"
        raise ConfigError(f"{source} must be 1-64 letters, digits, '_' or '-', got {session!r}")

    expanded = []
    for position, raw in raw_runs:
        merged = _merge(defaults, raw)
        expanded.extend(_expand_matrix(merged, position, f"{shown}: {position}"))
        if len(expanded) > MAX_RUNS:
            raise ConfigError(f"{shown}: more than {MAX_RUNS} runs after matrix expansion")

    roots = {"remote_repo": repo, "outputs_dir": outputs}
    stamp = _utc(now)
    # The host's budgets (its profile's run_timeout / run_stall_timeout), else the built-in 24 h and 30 min.
    budgets = (getattr(profile, "run_timeout", RUN_TIMEOUT_S), getattr(profile, "run_stall_timeout", RUN_STALL_TIMEOUT_S))
    runs = [_build_run(shown, position, run, roots, stamp, budgets) for position, run in expanded]
    _check_distinct(shown, [position for position, _ in expanded], runs)
    return Submission(remote_repo=repo, outputs_dir=outputs, tmux_session=session, runs=tuple(runs))


def _read_text(file: Path, shown: str) -> str:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror}") from None
    try:
        # utf-8-sig: spreadsheet exports start with a byte order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown}: not UTF-8 text (byte {exc.start})") from None


def _read_json(file: Path, shown: str):
    def no_duplicates(pairs):
        # Python keeps the last of two equal keys: a second "run_id" would silently win.
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise ConfigError(f"{shown}: key {key!r} appears twice in one JSON object")
        return dict(pairs)

    def no_constant(name):
        raise ConfigError(f"{shown}: invalid JSON: {name} is not a number")

    text = _read_text(file, shown)
    try:
        data = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{shown}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: nested deeper than {MAX_DEPTH} levels") from None
    _check_depth(data, shown)
    return data


def _check_depth(data, shown: str) -> None:
    """ConfigError for objects and lists nested deeper than MAX_DEPTH (checked without recursion,
    so the check itself cannot hit Python's recursion limit)."""
    pending = [(data, 1)]
    while pending:
        value, depth = pending.pop()
        if not isinstance(value, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(f"{shown}: nested deeper than {MAX_DEPTH} levels")
        items = value.values() if isinstance(value, dict) else value
        pending.extend((item, depth + 1) for item in items)


def _json_runs(top, file: Path, shown: str):
    """(defaults, [(position, run), ...]) of the seed's JSON format."""
    if not isinstance(top, dict):
        raise ConfigError(f"{shown}: expected a JSON object at the top, got {_type(top)}")
    for key in top:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{shown}: unknown top-level key {key!r} (known: {', '.join(TOP_LEVEL_KEYS)})")
    for key in ("remote_repo", "remote_outputs_dir", "tmux_session", "runs_csv"):
        if top.get(key) is not None and not isinstance(top[key], str):
            raise ConfigError(f"{shown}: {key} must be a string, got {_type(top[key])}")
    defaults = top.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{shown}: defaults must be an object, got {_type(defaults)}")
    runs = top.get("runs")
    runs = [] if runs is None and top.get("runs_csv") else runs
    if not isinstance(runs, list):
        raise ConfigError(f"{shown}: runs must be a non-empty list of objects, got {_type(runs)}")
    raw_runs = []
    for index, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ConfigError(f"{shown}: run {index}: expected an object, got {_type(run)}")
        raw_runs.append((f"run {index}", run))
    if top.get("runs_csv"):
        csv_file = file.parent / Path(top["runs_csv"]).expanduser()
        raw_runs += _csv_runs(csv_file, str(csv_file), len(raw_runs))
    if not raw_runs:
        raise ConfigError(f"{shown}: runs must be a non-empty list of objects")
    return defaults, raw_runs


def _csv_runs(file: Path, shown: str, start: int) -> list:
    """The rows of a CSV as runs: a header row, then one run per row."""
    reader = csv.reader(io.StringIO(_read_text(file, shown), newline=""))
    runs = []
    try:
        header = next(reader, None)
        if not header:
            raise ConfigError(f"{shown}: empty CSV (expected a header row)")
        names = [name.strip() for name in header]
        for name in names:
            if not ENV_NAME.match(name):
                raise ConfigError(f"{shown}: column {name!r} is not a valid key (letters, digits and '_')")
            if names.count(name) > 1:
                raise ConfigError(f"{shown}: column {name!r} appears twice")
        for row in reader:
            if not row:
                continue
            if len(row) > len(names):
                raise ConfigError(f"{shown} line {reader.line_num}: {len(row)} cells, header has {len(names)}")
            run = {name: cell if name in _CSV_TEXT_KEYS else _csv_value(cell)
                   for name, cell in zip(names, row) if cell != ""}
            runs.append((f"run {start + len(runs)} ({shown} line {reader.line_num})", run))
    except csv.Error as exc:
        raise ConfigError(f"{shown} line {reader.line_num}: invalid CSV: {exc}") from None
    if not runs:
        raise ConfigError(f"{shown}: no runs (only a header row)")
    return runs


def _csv_value(cell: str):
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    if _CSV_INT.match(cell):
        return int(cell)
    if _CSV_FLOAT.match(cell):
        return float(cell)
    return cell


def _root(name: str, candidates: list, missing: str, base: Optional[str] = None) -> str:
    """The first value set among (value, where it came from); absolute, no control characters.
    With base (a folder of this machine), a relative value is taken from there."""
    for value, source in candidates:
        if value:
            if base and isinstance(value, str):
                value = posixpath.join(base, value)  # an absolute value stays itself
            if not isinstance(value, str) or not value.startswith("/") or CONTROL_CHARS.search(value):
                raise ConfigError(f"{name} {value!r} (from {source}) must be an absolute path "
                                  f"without control characters")
            # normpath keeps a leading "//" (POSIX allows it); one slash is what we mean.
            return "/" + posixpath.normpath(value).lstrip("/")
    raise ConfigError(missing)


def _merge(defaults: dict, run: dict) -> dict:
    """defaults then the run (the run wins); env, meta and styles merged name by name."""
    merged = {**defaults, **run}
    for key in ("env", "meta", "styles", "expect"):
        if isinstance(defaults.get(key), dict) and isinstance(run.get(key), dict):
            merged[key] = {**defaults[key], **run[key]}
    return merged


def _expand_matrix(run: dict, position: str, where: str) -> list:
    """[(position, run)] for each combination of the run's matrix (just the run without one)."""
    matrix = run.get("matrix")
    if matrix is None:
        return [(position, run)]
    if not isinstance(matrix, dict):
        raise ConfigError(f"{where}: matrix must be an object of key: [values], got {_type(matrix)}")
    for key, values in matrix.items():
        if not ENV_NAME.match(key) or key == "matrix":
            raise ConfigError(f"{where}: matrix key {key!r} is not a usable key")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: matrix.{key} must be a non-empty list of values")
    if math.prod(len(values) for values in matrix.values()) > MAX_RUNS:
        raise ConfigError(f"{where}: matrix makes more than {MAX_RUNS} runs")
    base = {key: value for key, value in run.items() if key != "matrix"}
    expanded = []
    for combination in itertools.product(*matrix.values()):
        chosen = dict(zip(matrix, combination))
        label = ", ".join(f"{key}={_text(value)}" for key, value in chosen.items())
        expanded.append((f"{position} [{label}]", {**base, **chosen}))
    return expanded


# ---------------------------------------------------------------- one run


def _build_run(shown: str, position: str, run: dict, roots: dict, now: datetime, budgets: tuple) -> RunSpec:
    given = run.get("run_id")
    where = f"{shown}: {position}" + (f" ({given!r})" if isinstance(given, str) else "")
    _check_keys(run, where)
    sources = {key: value for key, value in run.items() if key not in _NOT_SOURCES}
    sources.update(_meta_sources(run, where))
    sources.update(roots)
    style_of = _styles(run, sources, where)
    value_styles = {name: placeholder_value_style(style_of(name)) for name in sources}

    if given is None:
        run_id = generate_run_id(run, now)
    elif not isinstance(given, str):
        raise ConfigError(f"{where}: run_id must be a string, got {_type(given)}")
    else:
        # Inserted values are made id-safe ("Qwen/Qwen3-4B" -> "Qwen-Qwen3-4B"); the text the
        # user wrote is checked, never changed.
        safe = {key: _UNSAFE_ID.sub("-", _text(value)) for key, value in sources.items()}
        run_id = fill_placeholders(given, safe, quote=False, where=where)
    if not RUN_ID.match(run_id):
        raise ConfigError(f"{where}: run_id must match {RUN_ID.pattern} (letters, digits, '.', '_', '-', "
                          f"at most 128), got {run_id!r}")
    where = f"{shown}: {position} ({run_id!r})"
    sources["run_id"] = run_id
    run_dir = _run_dir(run.get("run_dir"), sources, roots["outputs_dir"], where)
    # local_sync: the command writes into its directory on the pod's own disk; the supervisor
    # copies it into run_dir on the volume (runtime.local_sync.LocalSync). Their placeholders are
    # filled first (not {run_dir}: it is made from them), so the command and the pod name one folder.
    out_keys = {key: _fill_deep(run[key], sources, where, value_styles)
                for key in ("out_mode", "sync_interval", "local_dir") if key in run}
    out_mode = _out_mode(out_keys, where, roots["outputs_dir"])
    writes_to = local_work_dir(out_mode, run_id) or run_dir
    sources["run_dir"] = writes_to

    # A regex's braces ({3}, {n,m}) are never placeholders: metrics_from_log and expect are taken as written.
    filled = {key: value if key in ("metrics_from_log", "expect") else _fill_deep(value, sources, where, value_styles)
              for key, value in run.items() if key not in ("run_id", "run_dir", "command", "entrypoint")}
    command, shown_command = _command(run, filled, sources, writes_to, where, style_of)
    env = _env(filled.get("env"), where)
    label = filled.get("label")
    if label is not None and (not isinstance(label, str) or CONTROL_CHARS.search(label)):
        raise ConfigError(f"{where}: label must be one line of text, got {label!r}")
    retry_on = filled.get("retry_on")
    if retry_on is not None:
        if not isinstance(retry_on, list) or any(item not in FAILURE_CLASSES for item in retry_on):
            raise ConfigError(f"{where}: retry_on must be a list of failure classes "
                              f"({', '.join(FAILURE_CLASSES)}), got {retry_on!r}")
        retry_on = tuple(dict.fromkeys(retry_on))
    backoff = parse_duration(filled.get("retry_backoff"), "retry_backoff", where)

    config = {"run_id": run_id}
    for key, value in run.items():
        if key == "command":
            config[key] = shown_command
        elif key == "entrypoint":
            config[key] = fill_placeholders(value, sources, quote=False, where=where, value_styles=value_styles)
        elif key == "env":
            config[key] = _masked_env(dict(env))
        elif key not in ("run_id", "run_dir"):
            config[key] = filled[key]
    config["run_dir"] = run_dir
    spec = RunSpec(
        run_id=run_id,
        label=label,
        run_dir=run_dir,
        command=command,
        cwd=roots["remote_repo"],
        env=env,
        gpus=_count(filled.get("gpus"), "gpus", where),
        timeout=_budget(filled, "timeout", budgets[0], where),
        stall_timeout=_budget(filled, "stall_timeout", budgets[1], where),
        retries=_count(filled.get("retries"), "retries", where) or 0,
        retry_on=retry_on,
        retry_backoff=DEFAULT_RETRY_BACKOFF if backoff is None else backoff,
        config=config,
        workload=_workload(filled, where, out_mode),
        warnings=tuple(configurator_warnings(run, filled, sources, style_of, where) + _budget_warnings(run, where)),
    )
    # What the pod will be sent, checked by the key table as the pod checks it: a value the
    # parsing above let through is refused here, before contact, not on the pod.
    problem = run_problem(spec.to_dict())
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return spec


def _budget(run: dict, key: str, default: float, where: str) -> Optional[float]:
    """A run's timeout or stall_timeout: as set, the host's default (its profile's run_timeout /
    run_stall_timeout, else the built-in one) when not set at all, None only for an explicit
    `null` (no limit: _budget_warnings says so at submit)."""
    if key not in run:
        return default
    return parse_duration(run[key], key, where)


def _budget_warnings(run: dict, where: str) -> list:
    return [f"{where}: {key}: null: this run has no {what} limit; it can hold the pod's GPUs for ever"
            for key, what in (("timeout", "wall-clock"), ("stall_timeout", "stall"))
            if key in run and run[key] is None]


def local_work_dir(workload: dict, run_id: str) -> Optional[str]:
    """Where an out_mode local_sync run writes on the pod's own disk (runtime.local_sync.work_dir_of), or None."""
    if workload.get("out_mode") != "local_sync":
        return None
    return posixpath.join(workload["local_dir"], run_id)


def _workload(run: dict, where: str, out_mode: dict) -> tuple:
    """The run's WORKLOAD_KEYS, parsed (durations in seconds, signal names without SIG, log
    patterns as lists; out_mode's keys as _out_mode made them), to be checked by their rows of the key
    table with the whole run (_build_run's run_problem, as the pod applies it): ((key, value), ...)
    for the pod's supervisor."""
    found = {}
    if run.get("expect") is not None:
        found["expect"] = _expect(run["expect"])
    if "expect_commit" in run:
        # null is said on purpose: no pin for this run, not even the laptop's HEAD.
        found["expect_commit"] = _expected_commit(run["expect_commit"], f"{where}: expect_commit")
    found.update(out_mode)
    for key in ("summary_from", "meta"):
        if run.get(key) is not None:
            found[key] = run[key]
    if run.get("summary") not in (None, SUMMARY_BY_SCRIPT):  # the default: a supervisor of any contract does it
        found["summary"] = run["summary"]
    if run.get("summary_metric") is not None:
        found["summary_metric"] = run["summary_metric"].strip() if isinstance(run["summary_metric"], str) \
            else run["summary_metric"]
    for key in ("summary_timeout", "stop_grace"):
        seconds = parse_duration(run.get(key), key, where)
        if seconds is not None:
            found[key] = seconds
    if run.get("stop_signal") is not None:
        signal = run["stop_signal"]
        found["stop_signal"] = signal.upper().removeprefix("SIG") if isinstance(signal, str) else signal
    if run.get("metrics_from_log") is not None:
        found["metrics_from_log"] = run["metrics_from_log"]
    return tuple(found.items())


def _expect(value):
    """`expect` as the pod takes it (a log pattern given as one string becomes a list of one), to be
    checked by its row of the key table (_build_run's run_problem): files (paths in the run directory), log_matches /
    log_not_matches (regexes, each searched line by line in stdout.log), wandb_synced."""
    if isinstance(value, dict):
        value = {key: [item] if key in ("log_matches", "log_not_matches") and isinstance(item, str) else item
                 for key, item in value.items() if item is not None}
    return value


def _expected_commit(value, source: str) -> Optional[str]:
    """A commit to pin the pod's repo to (hex, 7 to 40 digits), or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not COMMIT.match(value.strip().lower()):
        raise ConfigError(f"{source} must be a commit id (7 to 40 hex digits), got {value!r}")
    return value.strip().lower()


def expected_commit_flag(value) -> Optional[str]:
    """--expect-commit, checked before any contact: a commit id, or `none` (no pin at all)."""
    if value is None:
        return None
    if str(value).lower() == "none":
        return "none"
    return _expected_commit(str(value), "--expect-commit")


def _out_mode(run: dict, where: str, outputs_dir: str) -> dict:
    """out_mode and, for local_sync, its sync_interval and local_dir (on the pod's own disk)."""
    mode = run.get("out_mode")
    if mode is None or mode == "volume":
        for key in ("sync_interval", "local_dir"):
            if run.get(key) is not None:
                raise ConfigError(f"{where}: {key} applies to out_mode \"local_sync\" only")
        return {}
    interval = parse_duration(run.get("sync_interval"), "sync_interval", where)
    local_dir = run.get("local_dir", RUN_LOCAL_DIR)
    problem = value_problem("out_mode", mode) or check_local_dir(local_dir)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    local_dir = "/" + posixpath.normpath(local_dir).lstrip("/")
    if local_dir == outputs_dir or local_dir.startswith(outputs_dir.rstrip("/") + "/") \
            or outputs_dir.startswith(local_dir.rstrip("/") + "/"):
        raise ConfigError(f"{where}: local_dir {local_dir!r} must be outside the outputs root {outputs_dir} "
                          f"(local_sync writes to the pod's own disk, then copies to the volume)")
    return {"out_mode": "local_sync", "sync_interval": RUN_SYNC_INTERVAL_S if interval is None else interval,
            "local_dir": local_dir}


def _check_keys(run: dict, where: str) -> None:
    declared = _declared_flags(run.get("flags"), where)
    for key, value in run.items():
        # Keys become flags (--key) and placeholder names: nothing a shell or argparse could misread.
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise ConfigError(f"{where}: key {key!r} is not a valid name (letters, digits and '_', "
                              f"not starting with a digit)")
        problem = run_key_problem(key, declared)
        if problem:
            raise ConfigError(f"{where}: {problem}")
        # A flag's (or meta's) structured value: the run settings' own values are checked by their rows.
        secret = nested_secret(value, key) if key not in RESERVED or key == "meta" else None
        if secret:
            raise ConfigError(f"{where}: {secret} names a secret: inside {key} it would be written into the command "
                              f"line (visible in ps) and the run's files; pass it in env instead, which reaches the "
                              f"pod on stdin only, and let the command read it from there")
        if _has_nul(value):
            raise ConfigError(f"{where}: {key}: a value contains a NUL byte")


# `key=value` pairs inside a string value (lm-eval's --model_args "pretrained=m,api_key=sk-...").
_PAIR_KEY = re.compile(r"(?:^|[,\s;&?])([A-Za-z_][A-Za-z0-9_.-]*)=")


def nested_secret(value, path: str, depth: int = 0) -> Optional[str]:
    """The path of a secret inside a structured value (a nested key, or a key=value pair of a
    string, named by the word rule of secrets.is_secret_key), or None."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            if is_secret_key(name.replace("-", "_")):
                return f"{path}.{name}"
            found = nested_secret(item, f"{path}.{name}", depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nested_secret(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
    elif isinstance(value, str) and "=" in value:
        for name in _PAIR_KEY.findall(value):
            if is_secret_key(name.replace("-", "_").replace(".", "_")):
                return f"{path} ({name}=...)"
    return None


def run_key_problem(key: str, declared_flags=frozenset()) -> Optional[str]:
    """Why a run key may not be used as written, or None: the one rule for what a key can be.

    A reserved key configures the run. A key that names a secret (hf_token, api_key: the word
    rule of secrets.is_secret_key) is refused: as a flag or placeholder its value would reach
    argv, command.sh, run_metadata.json and the manifest; it belongs in `env`. A key one typo
    away from a reserved one (`timout`, `gpu`) is refused naming the intended key, unless the run
    lists it in `flags: [...]`, which says it really is a flag of the command. Every other key is
    a flag of the entrypoint (and a placeholder name).
    """
    if key in RESERVED:
        return None
    if is_secret_key(key):
        return (f"key {key!r} names a secret: as a flag or placeholder it would be written into the command line "
                f"and the run's files; pass it in env instead (env: {{\"{key.upper()}\": ...}}), "
                f"which reaches the pod on stdin only")
    if key in declared_flags:
        return None
    intended = _near_reserved(key)
    if intended:
        return (f"key {key!r} is not a run setting; did you mean {intended!r}? (if it really is a flag of the "
                f"command, list it: \"flags\": [\"{key}\"])")
    return None


def key_role(key: str, run: dict) -> str:
    """What a key of a run is: "reserved" (it configures the run: RESERVED), "metadata" (a key of
    the run's `meta`: a placeholder, kept in run_metadata.json and the config, never in argv) or
    "flag" (every other key: a flag of the entrypoint and a placeholder)."""
    if key in RESERVED:
        return "reserved"
    meta = run.get("meta")
    if isinstance(meta, dict) and key in meta:
        return "metadata"
    return "flag"


def _meta_sources(run: dict, where: str) -> dict:
    """The run's `meta` keys as placeholder values; a key that is also a key of the run, or a
    run setting, is refused: which of the two a placeholder means would be a guess."""
    meta = run.get("meta")
    if not isinstance(meta, dict):
        return {}
    for key in meta:
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise ConfigError(f"{where}: meta key {key!r} is not a valid name (letters, digits and '_', "
                              f"not starting with a digit)")
        if key in run or key in RESERVED or key in ("remote_repo", "outputs_dir"):
            raise ConfigError(f"{where}: meta.{key} is also a key of the run (or a run setting): keep one")
    return dict(meta)


def _styles(run: dict, sources: dict, where: str):
    """The run's styles, checked: a function of a key (None: the run's own) to its
    (flag_style, value_style); value_style None means "by use" (entrypoint_value_style,
    placeholder_value_style). `styles: {key: {flag_style, value_style}}` overrides one key."""
    flag_style = _style_value(run, "flag_style", FLAG_STYLES, where, "flag_style") or "--key value"
    value_style = _style_value(run, "value_style", VALUE_STYLES, where, "value_style")
    per_key = run.get("styles")
    if per_key is None:
        per_key = {}
    if not isinstance(per_key, dict):
        raise ConfigError(f"{where}: styles must be an object of key: {{flag_style, value_style}}, "
                          f"got {_type(per_key)}")
    chosen = {}
    for key, style in per_key.items():
        if key not in sources or key in RESERVED:
            raise ConfigError(f"{where}: styles.{key} names no flag, placeholder or meta key of the run")
        if not isinstance(style, dict) or not style or set(style) - {"flag_style", "value_style"}:
            raise ConfigError(f"{where}: styles.{key} must be an object of flag_style and/or value_style, "
                              f"got {style!r}")
        chosen[key] = (_style_value(style, "flag_style", FLAG_STYLES, where, f"styles.{key}.flag_style") or flag_style,
                       _style_value(style, "value_style", VALUE_STYLES, where, f"styles.{key}.value_style")
                       or value_style)
    default = (flag_style, value_style)
    for key, (key_flag_style, key_value_style) in {None: default, **chosen}.items():
        if key_flag_style == "key=value" and key_value_style == "flag":
            named = "the run" if key is None else f"styles.{key}"
            raise ConfigError(f"{where}: {named}: value_style \"flag\" needs a flag style with '--' "
                              f"(a key=value argument has no bare form); use json or python")
    return lambda key: chosen.get(key, default)


def _style_value(holder: dict, key: str, allowed: tuple, where: str, named: str) -> Optional[str]:
    value = holder.get(key)
    if value is not None and value not in allowed:
        raise ConfigError(f"{where}: {named} must be one of {', '.join(repr(item) for item in allowed)}, "
                          f"got {value!r}")
    return value


def _declared_flags(value, where: str) -> frozenset:
    """The run's `flags`: keys it declares to be flags of its command, whatever they look like."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: flags must be a list of key names, got {value!r}")
    return frozenset(value)


def _near_reserved(key: str) -> Optional[str]:
    """The reserved key this one is a typo of: same first letter, one edit away (two for long
    names: `retrys`), so that ordinary flags (`metric`, `n_gpus`, `max_retries`) stay flags."""
    for reserved in sorted(RESERVED):
        if key[:1] != reserved[:1]:
            continue
        distance = _edit_distance(key, reserved)
        # Two edits only between long names that still share most of their letters in order
        # (`retrys`/`retries`, not `metric`/`matrix`).
        alike = difflib.SequenceMatcher(None, key, reserved).ratio() >= 0.75
        if distance == 1 or (distance == 2 and min(len(key), len(reserved)) >= 6 and alike):
            return reserved
    return None


def _edit_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of neighbours turning a into b."""
    previous2, previous = None, list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            if i > 1 and j > 1 and char_a == b[j - 2] and a[i - 2] == char_b:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    return False


def _run_dir(value, sources: dict, outputs_dir: str, where: str) -> str:
    if value is None:
        return posixpath.join(outputs_dir, sources["run_id"])
    if not isinstance(value, str):
        raise ConfigError(f"{where}: run_dir must be a string, got {_type(value)}")
    text = fill_placeholders(value, sources, quote=False, where=where)
    # Relative to the outputs root only: an absolute run_dir (/root/.ssh) would let --force move
    # what is there into attempts/, and a fetch copy it to the laptop. The pod checks again.
    if text.startswith("/"):
        raise ConfigError(f"{where}: run_dir must be relative to the outputs root {outputs_dir}, got {text!r}")
    if ".." in text.split("/") or CONTROL_CHARS.search(text) or not text.strip():
        raise ConfigError(f"{where}: run_dir must be a path without '..' or control characters, got {text!r}")
    path = "/" + posixpath.normpath(posixpath.join(outputs_dir, text)).lstrip("/")
    # The outputs root (or /) as a run directory would mix every run's files together; and a
    # --force moves whatever a run directory holds into attempts/: never the queue's own files.
    if path == outputs_dir:
        raise ConfigError(f"{where}: run_dir {text!r} is the outputs root itself, not a run directory")
    queue = posixpath.join(outputs_dir, ".ops")
    if path == queue or path.startswith(queue + "/"):
        raise ConfigError(f"{where}: run_dir {path!r} is the run queue's own folder")
    for other in (outputs_dir, sources["remote_repo"]):
        if other == path or other.startswith(path + "/"):
            raise ConfigError(f"{where}: run_dir {path!r} holds {other}: a run directory must be a folder of its own")
    return path


def _command(run: dict, filled: dict, sources: dict, run_dir: str, where: str, style_of):
    """(the command line, the command as the config shows it)."""
    value_styles = {name: placeholder_value_style(style_of(name)) for name in sources}
    command, entrypoint = run.get("command"), run.get("entrypoint")
    if command is not None and entrypoint is not None:
        raise ConfigError(f"{where}: has both command and entrypoint; keep one")
    if command is None and entrypoint is None:
        raise ConfigError(f"{where}: no command: set command (a string or list) or entrypoint")
    if command is not None and "run_dir_flag" in run:
        raise ConfigError(f"{where}: run_dir_flag is for the entrypoint form; a command writes {{run_dir}} "
                          f"where it wants it")
    if isinstance(command, str):
        if not command.strip():
            raise ConfigError(f"{where}: command is empty")
        line = fill_placeholders(command, sources, quote=True, where=where, value_styles=value_styles)
        return line, line
    if command is not None:
        if not isinstance(command, list) or not command or not all(isinstance(item, str) for item in command):
            raise ConfigError(f"{where}: command must be a string or a non-empty list of strings")
        argv = [fill_placeholders(item, sources, quote=False, where=where, value_styles=value_styles)
                for item in command]
        return shlex.join(argv), argv
    if not isinstance(entrypoint, str):
        raise ConfigError(f"{where}: entrypoint must be a string, got {_type(entrypoint)}")
    try:
        pieces = shlex.split(entrypoint)
    except ValueError as exc:
        raise ConfigError(f"{where}: entrypoint: {exc}") from None
    if not pieces:
        raise ConfigError(f"{where}: entrypoint is empty")
    # Filled piece by piece: a value with spaces stays one argument, as in the list form.
    filled_entrypoint = shlex.join(fill_placeholders(piece, sources, quote=False, where=where,
                                                     value_styles=value_styles) for piece in pieces)
    line = render_entrypoint(filled_entrypoint, {**filled, "run_dir_flag": _run_dir_flag(run, where)}, run_dir,
                             style_of)
    return line, line


def _run_dir_flag(run: dict, where: str) -> Optional[str]:
    """The flag the entrypoint form gives the run directory as: `run_dir` unless the run names its
    own (`run_dir_flag: out_dir`, what nanoGPT's train.py reads) or none (`run_dir_flag: null`)."""
    if "run_dir_flag" not in run:
        return "run_dir"
    flag = run["run_dir_flag"]
    if flag is not None and (not isinstance(flag, str) or not ENV_NAME.match(flag)):
        raise ConfigError(f"{where}: run_dir_flag must be a flag name (letters, digits and '_', e.g. out_dir) "
                          f"or null (no run directory flag), got {flag!r}")
    if flag in run and key_role(flag, run) == "flag":
        raise ConfigError(f"{where}: run_dir_flag {flag!r} is also a flag of the run: keep one")
    return flag


def _env(value, where: str) -> tuple:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: env must be an object of NAME: value, got {_type(value)}")
    pairs = {}
    for name, item in value.items():
        if not ENV_NAME.match(name):
            raise ConfigError(f"{where}: env: {name!r} is not a valid environment variable name")
        if isinstance(item, bool):
            pairs[name] = "true" if item else "false"
        elif isinstance(item, (str, int, float)):
            pairs[name] = str(item)
        else:
            raise ConfigError(f"{where}: env.{name} must be a string, number or boolean, got {_type(item)}")
    return tuple(sorted(pairs.items()))


def _count(value, key: str, where: str) -> Optional[int]:
    if value is None:
        return None
    # bool is an int in Python; `gpus: true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}: {key} must be a whole number >= 0, got {value!r}")
    return value


def _check_distinct(shown: str, positions: list, runs: list) -> None:
    """Two runs sharing an id or a directory would overwrite each other's files."""
    by_id = {}
    for position, run in zip(positions, runs):
        if run.run_id in by_id:
            raise ConfigError(f"{shown}: duplicate run_id {run.run_id!r} in {by_id[run.run_id]} and {position} "
                              f"(give each run its own run_id, e.g. with placeholders such as {{seed}})")
        by_id[run.run_id] = position
    owners = sorted((run.run_dir, position) for position, run in zip(positions, runs))
    for (outer, outer_position), (inner, inner_position) in zip(owners, owners[1:]):
        if inner == outer or inner.startswith(outer + "/"):
            raise ConfigError(f"{shown}: {inner_position} has run_dir {inner!r}, "
                              f"the same as or inside {outer_position}'s {outer!r}")


# ---------------------------------------------------------------- rendering


def render_entrypoint(entrypoint: str, run: dict, run_dir: str, style_of=None) -> str:
    """entrypoint + every flag key of the run (key_role) in key order, then the run directory (as
    the run's `run_dir_flag`, default run_dir; None: left out); all quoted. style_of(key) is the
    key's (flag_style, value_style) (_styles); default `--key value`
    with booleans as bare flags, false and null left out."""
    style_of = style_of or (lambda key: ("--key value", None))
    argv = shlex.split(entrypoint)
    for key, value in run.items():
        if key_role(key, run) == "flag":
            argv += _flag_arguments(key, value, *style_of(key))
    flag = run.get("run_dir_flag", "run_dir")  # _run_dir_flag: None gives no run directory flag
    if flag is not None:
        argv += _flag_arguments(flag, run_dir, style_of(None)[0], "json")
    return shlex.join(argv)


def _flag_arguments(key: str, value, flag_style: str, value_style: Optional[str]) -> list:
    """The arguments of one flag. `--key value` is argparse's (underscores become dashes);
    `--key=value` and `key=value` keep the key as written: the configurators that take them
    (nanoGPT's) look the key up as a Python variable."""
    value_style = value_style or entrypoint_value_style(flag_style)
    if value_style == "flag" and (value is None or value is False):
        return []
    name = "--" + key.replace("_", "-") if flag_style == "--key value" else key
    if value_style == "flag" and value is True:
        return [name if flag_style == "--key value" else "--" + key]
    text = render_value(value, value_style)
    if flag_style == "--key value":
        return [name, text]
    return [f"--{key}={text}" if flag_style == "--key=value" else f"{key}={text}"]


def entrypoint_value_style(flag_style: str) -> str:
    """How a flag's boolean or null is written when the config does not say: `--key value` keeps
    the seed's bare flag (false and null left out); the `=` styles have no bare form, so JSON."""
    return "flag" if flag_style == "--key value" else "json"


def placeholder_value_style(style: tuple) -> str:
    """A placeholder's value style from its key's (flag_style, value_style): `flag` has no
    meaning inside a text, so it (and no style at all) writes JSON."""
    return "python" if style[1] == "python" else "json"


def render_value(value, value_style: str = "json") -> str:
    """A value as one argument: text as is, numbers as written; booleans, null, lists and objects
    as JSON (true/false/null) or, in the python style, as Python literals (True/False/None), which
    a configurator that evals its arguments (ast.literal_eval) reads back as the same value."""
    if value_style == "python" and not isinstance(value, str) and (
            isinstance(value, (bool, list, dict)) or value is None):
        return repr(value)
    return _text(value)


def configurator_warnings(run: dict, filled: dict, sources: dict, style_of, where: str) -> list:
    """Warnings for booleans written `true`/`false` where a Python configurator reads them: a
    `key=value` or `--key=value` flag in the JSON style, or a `{name}` placeholder in a
    `key={name}` argument or in a command naming a configurator. Such a configurator
    (ast.literal_eval, falling back to the text) reads 'false' as a non-empty string: true."""
    found = []
    if run.get("entrypoint") is not None:
        for key, value in filled.items():
            flag_style, value_style = style_of(key)
            if (key_role(key, filled) == "flag" and isinstance(value, bool) and flag_style != "--key value"
                    and (value_style or entrypoint_value_style(flag_style)) == "json"):
                found.append(_configurator_warning(where, key, value, flag_style))
        return found
    command = run.get("command")
    texts = [command] if isinstance(command, str) else command  # _command let only these through
    for text in (item for item in texts if isinstance(item, str)):
        for match in _PLACEHOLDER.finditer(text):
            name = match.group(2)
            if name is None or match.group(3) or not isinstance(sources.get(name), bool):
                continue
            if placeholder_value_style(style_of(name)) != "json":
                continue
            if _KEY_EQUALS_BEFORE.search(text[:match.start()]) or "configurator" in " ".join(texts):
                found.append(_configurator_warning(where, name, sources[name], "{" + name + "}"))
    return found


# A placeholder right after `key=` (a lower-case Python name: `FOO=` is an environment variable).
_KEY_EQUALS_BEFORE = re.compile(r"(?:^|[\s'\"]|--)[a-z_][A-Za-z0-9_]*=$")


def _configurator_warning(where: str, key: str, value: bool, written: str) -> str:
    text = render_value(value, "json")
    return (f"{where}: {key} is written {text!r} ({written}); a Python configurator (key=value read with "
            f"ast.literal_eval) reads that as the string {text!r}, which is true: set \"value_style\": \"python\" "
            f"(or \"styles\": {{\"{key}\": {{\"value_style\": \"python\"}}}}, or write {{{key}!python}}) "
            f"to pass {render_value(value, 'python')}")


def fill_placeholders(text: str, values: dict, quote: bool, where: str = "", value_styles=None) -> str:
    """Replace `{name}` for the names in values (each shell-quoted when quote), once, no recursion.

    A value is written in its value style (render_value): `{name!python}` / `{name!json}` as
    written there, `{name}` as value_styles says for that name (json when it says nothing).

    `{{name}}` is a literal `{name}`; other brace text (a JSON or dict literal, nested or not,
    the shell's `${name}`) is left exactly as written. A `{name}` of no known value is refused
    (ConfigError naming where and the known names): `{modle_id}` would otherwise run literally.
    """

    def one(match):
        if match.group(1) is not None:
            return "{" + match.group(1) + "}"
        name = match.group(2)
        if name not in values:
            raise ConfigError(f"{where + ': ' if where else ''}unknown placeholder {{{name}}} (known: "
                              f"{', '.join(sorted(values))}; write {{{{{name}}}}} for a literal {{{name}}})")
        style = match.group(3) or (value_styles or {}).get(name, "json")
        rendered = render_value(values[name], style)
        return shlex.quote(rendered) if quote else rendered

    return _PLACEHOLDER.sub(one, text)


def generate_run_id(run: dict, now) -> str:
    """The seed's id: <timestamp>_<env_id>_<model_id>_n<num_examples>_r<rollouts>_b<best_of>_seed<seed>.

    Missing keys are left out; characters outside [A-Za-z0-9._-] become '-'.
    """
    parts = [_utc(now).strftime("%Y%m%d-%H%M%S")]
    parts += [prefix + _text(run[key]) for key, prefix in _ID_PARTS if run.get(key) not in (None, "")]
    return _UNSAFE_ID.sub("-", "_".join(parts))[:128]


def parse_duration(value, key: str, where: str) -> Optional[float]:
    """Seconds from a number (> 0) or a text such as "90", "90s", "30m", "2h", "1h30m", "1d"."""
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION.match(text)
        if _SECONDS.match(text):
            seconds = float(text)
        elif text and match:
            days, hours, minutes, secs = (float(part or 0) for part in match.groups())
            seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    elif value is None:
        return None
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"{where}: {key} must be a number of seconds > 0 or a duration such as "
                          f"90s, 30m, 2h or 1h30m, got {value!r}")
    return seconds


def _text(value) -> str:
    """A value as one argument: text as is, numbers as written, everything else as compact JSON
    (true/false/null, lists, objects), as the config spells them."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _fill_deep(value, sources: dict, where: str, value_styles=None):
    if isinstance(value, str):
        return fill_placeholders(value, sources, quote=False, where=where, value_styles=value_styles)
    if isinstance(value, list):
        return [_fill_deep(item, sources, where, value_styles) for item in value]
    if isinstance(value, dict):
        return {key: _fill_deep(item, sources, where, value_styles) for key, item in value.items()}
    return value


def _masked_env(env: dict) -> dict:
    return {name: MASK if is_secret_name(name) else value for name, value in env.items()}


def _utc(now) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if isinstance(now, (int, float)):
        return datetime.fromtimestamp(now, timezone.utc)
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)


def _type(value) -> str:
    """A JSON (or CSV) value's kind, as a config's author would name it."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
