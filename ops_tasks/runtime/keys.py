"""The one table of run keys: what a run of a config may say, its type, default and meaning.

Everything about a run key is made from RUN_KEYS: the laptop's sets (reserved keys, workload
keys, identity, top-level keys: operations/run_config.py), the checks both sides apply to a
value (`check`: the laptop runs it after parsing durations and signal names, the pod again on
every request and queue entry), the queue entry's known fields (a supervisor fails an entry with
a field it does not know as bad_input) and the documentation's key reference (`reference_markdown`,
docs/reference/run-keys.md). Adding a key is one row here (docs/ARCHITECTURE.md, "Where a change
goes"); a key that changes how a run is judged also raises contract.CONTRACT_VERSION.
"""

import os
import re
from collections import namedtuple

from .contract import (COMMIT, CONTRACT_VERSION, ENV_NAME, EXPECT_KEYS, FAILURE_CLASSES, OUT_MODES, PYTHON_SUMMARY,
                       STOP_SIGNALS, SUMMARY_BY_EXIT_CODE, SUMMARY_FRAMEWORKS, SUMMARY_MODES, outputs_root_problem)

# kind: "run" (how the run is started, watched and retried), "workload" (what the supervisor does
# with its files: summaries, gates, metrics, stopping; allowed at a config's top level as every
# run's default), "style" (how values are written on its command line; the laptop's only).
# sent: it travels in the request and the queue entry (the others become the command line).
# identity: changing it makes another run of the same run id (RunSpec.identity).
# since: the contract version that introduced it (a supervisor of an older one hands over).
Key = namedtuple("Key", "name kind type default checked identity sent since doc check")


# A run's budgets reach as far as a host's profile may set them (run_timeout: 366 days at most).
LONGEST_BUDGET_S = 366 * 86400


def _seconds(name, most=1e7):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= most:
            return "%s must be a duration of more than 0 and at most %g seconds, got %r" % (name, most, value)
        return None
    return check


def _count(name):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return "%s must be a whole number >= 0, got %r" % (name, value)
        return None
    return check


def _text(name):
    def check(value):
        if not isinstance(value, str) or not value.strip():
            return "%s must be a non-empty string, got %r" % (name, value)
        return None
    return check


def _check_env(value):
    if not isinstance(value, dict):
        return "env must be an object of NAME: value, got %s" % type(value).__name__
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            return "env: %r is not a valid environment variable name" % (name,)
        if not isinstance(item, str):
            return "env.%s must be a string, got %s" % (name, type(item).__name__)
    return None


def _check_retry_on(value):
    if not isinstance(value, list) or any(item not in FAILURE_CLASSES for item in value):
        return "retry_on must be a list of failure classes (%s), got %r" % (", ".join(FAILURE_CLASSES), value)
    return None


def _check_backoff(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e7:
        return "retry_backoff must be a duration of 0 or more seconds and less than 1e+07, got %r" % (value,)
    return None


def _check_summary_from(value):
    if not isinstance(value, str) or not (value in SUMMARY_FRAMEWORKS or PYTHON_SUMMARY.match(value)):
        return "summary_from must be %s or python:module:function, got %r" % (", ".join(SUMMARY_FRAMEWORKS), value)
    return None


def _check_summary(value):
    if value not in SUMMARY_MODES:
        return ("summary must be \"script\" (the command writes summary.json) or \"exit_code\" (exit 0 is the "
                "verdict, the supervisor writes summary.json), got %r" % (value,))
    return None


def _check_summary_metric(value):
    if not isinstance(value, str) or not value.strip():
        return "summary_metric must be a metric name (or metric,filter), got %r" % (value,)
    return None


def _check_stop_signal(value):
    if value not in STOP_SIGNALS:
        return "stop_signal must be one of %s (TERM, then KILL, follow it), got %r" % (", ".join(STOP_SIGNALS), value)
    return None


def _check_metrics_from_log(value):
    try:
        compiled = re.compile(value) if isinstance(value, str) else None
    except re.error as exc:
        return "metrics_from_log %r does not compile: %s" % (value, exc)
    if compiled is None or not compiled.groupindex:
        return ("metrics_from_log must be a regex with named groups, e.g. 'iter (?P<iter>\\d+): loss "
                "(?P<loss>[\\d.]+)', got %r" % (value,))
    return None


def _check_meta(value):
    if not isinstance(value, dict):
        return "meta must be an object (kept in run_metadata.json), got %s" % type(value).__name__
    return None


def check_expect(expect):
    """Why an `expect` (as the laptop sends it: log patterns as lists) cannot be used, or None."""
    if not isinstance(expect, dict):
        return "expect must be an object of %s, got %s" % (", ".join(EXPECT_KEYS), type(expect).__name__)
    for key in expect:
        if key not in EXPECT_KEYS:
            return "expect.%s is not known (known: %s)" % (key, ", ".join(EXPECT_KEYS))
    files = expect.get("files")
    if files is not None:
        if not isinstance(files, list) or not all(isinstance(item, str) and item.strip() for item in files):
            return "expect.files must be a list of paths in the run directory, got %r" % (files,)
        for item in files:
            if item.startswith("/") or ".." in item.split("/") or re.search(r"[\x00-\x1f\x7f]", item):
                return "expect.files: %r must be a path inside the run directory (relative, no '..')" % (item,)
    for key in ("log_matches", "log_not_matches"):
        patterns = expect.get(key)
        if patterns is None:
            continue
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
            return "expect.%s must be a regex or a list of regexes, got %r" % (key, patterns)
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                return "expect.%s %r does not compile: %s" % (key, pattern, exc)
    if "wandb_synced" in expect and not isinstance(expect["wandb_synced"], bool):
        return "expect.wandb_synced must be true or false, got %r" % (expect["wandb_synced"],)
    return None


def _check_commit(value):
    if not isinstance(value, str) or not COMMIT.match(value):
        return "expect_commit must be a commit id (7 to 40 hex digits), got %r" % (value,)
    return None


def _check_out_mode(value):
    if value not in OUT_MODES:
        return "out_mode must be one of %s, got %r" % (", ".join(OUT_MODES), value)
    return None


def check_local_dir(value):
    if not isinstance(value, str) or not value.startswith("/") or re.search(r"[\x00-\x1f\x7f]", value) \
            or ".." in value.split("/"):
        return "local_dir must be an absolute path on the pod's own disk, got %r" % (value,)
    problem = outputs_root_problem(os.path.normpath(value))
    if problem:
        return "local_dir %s %s" % (value, problem)
    return None


LAPTOP, BOTH = "laptop", "laptop and pod"
RUN_KEYS = (
    # -- the run
    Key("run_id", "run", "string", "<timestamp>_<env_id>_<model_id>_n<num_examples>_r<rollouts>_b<best_of>_seed<seed>", BOTH, False, True, 2,
        "The run's name and its folder under the outputs root; {placeholders} allowed.", None),
    Key("label", "run", "string", None, BOTH, False, True, 2, "One line shown beside the run id.", None),
    Key("command", "run", "string", None, BOTH, True, True, 2,
        "A shell command (bash, in the pod's repo); {key} placeholders are filled shell-quoted.", _text("command")),
    Key("entrypoint", "run", "string", None, LAPTOP, True, False, 2,
        "A program; the run's other keys become its --flags (instead of command).", None),
    Key("env", "run", "object of strings", "{}", BOTH, True, True, 2,
        "Environment of the run; secret names (KEY, TOKEN, ...) travel on stdin, never in a file.", _check_env),
    Key("gpus", "run", "integer >= 0", "all the pod's GPUs (one run at a time)", BOTH, True, True, 2,
        "GPUs the run holds (its own CUDA_VISIBLE_DEVICES); without GPUs, a run takes a CPU slot.", _count("gpus")),
    Key("timeout", "run", "duration or null", "profile run_timeout, else 24h", BOTH, False, True, 2,
        "Wall-clock limit: the run is stopped and ends `timeout`. null: no limit (warned).",
        _seconds("timeout", LONGEST_BUDGET_S)),
    Key("stall_timeout", "run", "duration or null", "profile run_stall_timeout, else 30m", BOTH, False, True, 2,
        "Stopped as `stalled` after this long without output. null: no limit (warned).",
        _seconds("stall_timeout", LONGEST_BUDGET_S)),
    Key("retries", "run", "integer >= 0", "0", BOTH, False, True, 2,
        "Attempts after a failure (each kept under attempts/<n>/).", _count("retries")),
    Key("retry_on", "run", "list of failure classes", "every class", BOTH, False, True, 2,
        "Retry only failures of these classes (oom, nccl, ...).", _check_retry_on),
    Key("retry_backoff", "run", "duration", "10s, doubled each retry", BOTH, False, True, 2,
        "Wait before a retry.", _check_backoff),
    Key("matrix", "run", "object of lists", None, LAPTOP, True, False, 2,
        "One run per combination of the listed values (run_id needs their placeholders).", None),
    Key("run_dir", "run", "path", "<outputs root>/<run_id>", BOTH, False, True, 2,
        "The run directory; must lie under the outputs root.", None),
    Key("run_dir_flag", "run", "flag name", None, LAPTOP, True, False, 2,
        "entrypoint only: the flag that receives the run directory (--output_dir).", None),
    Key("flags", "run", "list of names", None, LAPTOP, True, False, 2,
        "Keys that really are flags of the command even though they look like a reserved key.", None),
    # -- how values are written
    Key("flag_style", "style", "'--key value' | '--key=value' | 'key=value'", "--key value", LAPTOP, True, False, 2,
        "How an entrypoint's flags are written.", None),
    Key("value_style", "style", "json | python | flag", "json", LAPTOP, True, False, 2,
        "How a flag's value is written (booleans, lists, null).", None),
    Key("styles", "style", "object", None, LAPTOP, True, False, 2,
        "Per-key flag_style / value_style.", None),
    # -- the workload: what the supervisor does with the run's files
    Key("summary_from", "workload", "verifiers | lm_eval | python:module:function", None, BOTH, True, True, 2,
        "Write summary.json and results.jsonl from the tool's own output once the command exits 0.",
        _check_summary_from),
    Key("summary", "workload", "script | exit_code", "script", BOTH, False, True, 3,
        "Who writes summary.json. exit_code: a run that exits 0 succeeds, and the supervisor writes its summary.json "
        "(ok: true, written_by says so) unless the command wrote its own, which is kept and judges the run.",
        _check_summary),
    Key("summary_metric", "workload", "string", "the tool's first metric", BOTH, False, True, 2,
        "The metric summary_from takes (lm-eval: metric,filter).", _check_summary_metric),
    Key("summary_timeout", "workload", "duration", "5m", BOTH, False, True, 2,
        "Deadline of the summary_from conversion (then bad_output).", _seconds("summary_timeout")),
    Key("stop_signal", "workload", "INT | TERM | HUP | QUIT | USR1 | USR2", "TERM", BOTH, False, True, 2,
        "First signal of a stop (cancel, timeout); TERM, then KILL follow.", _check_stop_signal),
    Key("stop_grace", "workload", "duration", "10s", BOTH, False, True, 2,
        "Time between a stop's signals.", _seconds("stop_grace")),
    Key("metrics_from_log", "workload", "regex with named groups", None, BOTH, False, True, 2,
        "Read the latest step's metrics from stdout.log (without metrics.jsonl).", _check_metrics_from_log),
    Key("meta", "workload", "object", None, BOTH, False, True, 2,
        "Your own metadata, kept in run_metadata.json (never argv; no secret names).", _check_meta),
    Key("expect", "workload", "object: files, log_matches, log_not_matches, wandb_synced", None, BOTH, False, True, 2,
        "What a run that exited 0 must also show to succeed; else it fails as `expectation`.", check_expect),
    Key("expect_commit", "workload", "commit id or null", "the laptop's HEAD when the pod's repo has its origin",
        BOTH, False, True, 2, "The commit the pod's repo must be at, clean; else refused (`commit`).",
        _check_commit),
    Key("out_mode", "workload", "volume | local_sync", "volume", BOTH, False, True, 2,
        "local_sync: the run writes to the pod's own disk, copied to the volume as it goes.", _check_out_mode),
    Key("sync_interval", "workload", "duration", "60s", BOTH, False, True, 2,
        "local_sync: how often the run directory is copied to the volume.", _seconds("sync_interval")),
    Key("local_dir", "workload", "absolute path", "/tmp/ops-runs", BOTH, False, True, 2,
        "local_sync: where runs write on the pod's own disk.", check_local_dir),
)
BY_NAME = {key.name: key for key in RUN_KEYS}
WORKLOAD_KEYS = tuple(key.name for key in RUN_KEYS if key.kind == "workload")
STYLE_KEYS = tuple(key.name for key in RUN_KEYS if key.kind == "style")
RESERVED = frozenset(BY_NAME)
NOT_IDENTITY = frozenset(key.name for key in RUN_KEYS if not key.identity)

# A run's fields in a request that are not config keys (the laptop makes them), and what a queue
# entry adds. A supervisor knows exactly these and the keys sent: anything else is bad_input.
REQUEST_FIELDS = ("cwd", "config", "identity")
ENTRY_FIELDS = ("contract", "submission_id", "fail_fast", "retries_used", "attempt", "queued_at", "not_before",
                "host", "tmux_session", "expect_commit_source", "retry_of", "resumed")
SENT_KEYS = tuple(key.name for key in RUN_KEYS if key.sent)
KNOWN_ENTRY_FIELDS = frozenset(SENT_KEYS + REQUEST_FIELDS + ENTRY_FIELDS)


def value_problem(name, value):
    """Why a sent key's value (as the laptop sends it) cannot be used, or None; null is unset."""
    key = BY_NAME.get(name)
    if key is None or key.check is None or value is None:
        return None
    return key.check(value)


def unknown_fields(entry):
    """The fields of a request's run or a queue entry this contract does not know, sorted."""
    return sorted(str(name) for name in entry if name not in KNOWN_ENTRY_FIELDS and name != "_file")


def needed_contract(run):
    """The lowest contract version that knows every key the run sets."""
    return max([BY_NAME[name].since for name in run if name in BY_NAME and run[name] is not None] + [2])


def run_problem(run):
    """Why a run sent to the pod (a request's, or a queue entry) cannot be run as written, or
    None: a field this contract does not know, or a sent key's value out of its table row."""
    unknown = unknown_fields(run)
    if unknown:
        return ("it holds %s this supervisor (contract %d) does not know: %s; upgrade the pod's runtime "
                "(any newer ops submits it)" % ("a field" if len(unknown) == 1 else "fields", CONTRACT_VERSION,
                                                ", ".join(unknown)))
    for name in SENT_KEYS:
        problem = value_problem(name, run.get(name))
        if problem:
            return problem
    if run.get("summary") == SUMMARY_BY_EXIT_CODE and run.get("summary_from") is not None:
        return ("summary: exit_code and summary_from %s both say where summary.json comes from: keep one"
                % (run["summary_from"],))
    if run.get("out_mode") == "local_sync" and (run.get("sync_interval") is None or run.get("local_dir") is None):
        return "out_mode local_sync needs sync_interval and local_dir"
    return None


REFERENCE_HEAD = """# Run keys

<!-- Made from ops_tasks/runtime/keys.py (RUN_KEYS) by `make docs`; tests/test_contract.py fails when it differs. -->

Every key a run of a config may set ([run configs](../concepts/run-configs.md)). A key a run sets that is not here is
a flag of its `entrypoint` (and a `{placeholder}` name). "Checked on": the laptop refuses a bad
value before anything is contacted; "laptop and pod": the pod's runtime applies the same check to
every request and queue entry, and a supervisor fails an entry holding a field it does not know as
`bad_input`. Durations are seconds or `1h30m`-style text.

"""


def reference_markdown():
    """The documentation's key reference: one row per key of RUN_KEYS."""
    lines = ["| key | type | default | checked on | what it does |", "|---|---|---|---|---|"]
    for key in RUN_KEYS:
        cells = (key.name, key.type, key.default or "", key.checked, key.doc)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return REFERENCE_HEAD + "\n".join(lines) + "\n"


if __name__ == "__main__":  # make docs
    print(reference_markdown(), end="")
