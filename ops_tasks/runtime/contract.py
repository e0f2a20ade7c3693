"""The contract the laptop and the pod share: every rule both sides apply, written once.

The laptop imports this module as `ops_tasks.runtime.contract`; on the pod it travels inside
the runtime archive (docs/ARCHITECTURE.md, "The pod runtime"). Standard library only, Python 3.8+.

CONTRACT_VERSION numbers what a request and a queue entry may say. It goes up whenever a run key,
an entry field, a state or a rule that changes how a run is judged is added or changes meaning;
a supervisor honours the entries of its own version and older ones, and hands its queue over to a
newer one (runtime/handover.py) instead of running what it does not understand.
"""

import math
import os
import re


# 1: every release before the contract had a number (their supervisors wrote "ops-tasks-runs/1",
#    whatever keys they knew). 2: versioned requests and entries, the hand-over, bad_input.
# 3: the run key `summary` (exit_code: the exit code is the verdict, the supervisor writes summary.json).
# 4: a repo filled by pod.sync --workdir is known by its record (the commit pin accepts the sync, a
#    run's metadata names it): an older supervisor would judge a pinned run there "not a git repository".
CONTRACT_VERSION = 4
LEGACY_CONTRACT = 1
TOOL_VERSION = "ops-tasks-runs/%d" % CONTRACT_VERSION
# state -> class: "active" (not over yet), "succeeded", or "failed" (over, and not a success).
# ops_tasks/run_states.py re-exports it for the laptop.
STATES = {
    "queued": "active",
    "running": "active",
    "succeeded": "succeeded",
    "failed": "failed",
    "timeout": "failed",
    "stalled": "failed",
    "cancelled": "failed",
    "lost": "failed",
}
ACTIVE = tuple(s for s, kind in STATES.items() if kind == "active")
TERMINAL = tuple(s for s, kind in STATES.items() if kind != "active")
FAILED = tuple(s for s, kind in STATES.items() if kind == "failed")
# A cancelled run was stopped on request: it does not fail its submission (wait's failed count,
# --fail-fast, the exit code).
COUNTS_AS_FAILURE = tuple(s for s in FAILED if s != "cancelled")
# What the supervisor retries itself: a run that ended badly under its watch. A lost run's
# supervisor is gone; runs.resume queues it again.
RETRYABLE = tuple(s for s in COUNTS_AS_FAILURE if s != "lost")
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a run id: also a folder name on both sides
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an environment variable's name (and a run key's)
# Folders that are never an outputs root nor hold one: the system's, and where keys live.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
               "/sbin", "/srv", "/sys", "/usr", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/cache")
KEY_DIRS = (".ssh", "ssh", ".gnupg", ".aws", ".kube", ".docker", ".config")
# Env names whose values are secrets: travel on stdin, never in argv, a file or a page.
SECRET_NAMES = frozenset({"WANDB_API_KEY", "HF_TOKEN", "OPENAI_API_KEY"})
SECRET_PARTS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASS|CREDENTIAL", re.IGNORECASE)
MASK = "***"
# In a run directory: the supervisor's own record of the run (record.json, the replayable
# command.sh), where no script writes, so a script that writes the contract's files loses nothing.
RECORD_DIR = ".ops"
CONTRACT_FILES = ("command.sh", "run_metadata.json", "summary.json", "results.jsonl", "metrics.jsonl")
STOP_SIGNALS = ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2")  # a run's stop_signal (TERM, KILL follow)
SUMMARY_FRAMEWORKS = ("verifiers", "lm_eval")  # summary_from: one of these, or python:module:function
# `summary`: who writes summary.json. script (the default): the command, else the run fails no_summary;
# exit_code: exit 0 is the verdict, and the supervisor writes it where the command did not.
SUMMARY_BY_SCRIPT, SUMMARY_BY_EXIT_CODE = "script", "exit_code"
SUMMARY_MODES = (SUMMARY_BY_SCRIPT, SUMMARY_BY_EXIT_CODE)
PYTHON_SUMMARY = re.compile(r"^python:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
# `expect`: what a run that exited 0 must also show to succeed (gates.unmet_expectations).
EXPECT_KEYS = ("files", "log_matches", "log_not_matches", "wandb_synced")
OUT_MODES = ("volume", "local_sync")
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
# pod.sync --workdir's record at the top of the repo it filled (runtime/workdir.py writes and reads
# it; the laptop never sends a file of either name), set aside under the second while a sync runs.
WORKDIR_RECORD = ".ops-workdir.json"
WORKDIR_SET_ASIDE = ".ops-workdir.json.syncing"
WORKDIR_CONTRACT = 4  # the least supervisor that reads the record (runtime/submit.needed_for)
# A run's status, summary or queue entry larger than this is unreadable, on the pod and on the
# laptop alike (a 500 MB summary.json would take the supervisor's memory, and a report's, with it).
MAX_JSON_BYTES = 64 * 1024 * 1024
# Every failure class a run can end with (rundir.failure_class and the supervisor write them;
# a run's retry_on names them).
FAILURE_CLASSES = ("oom", "nccl", "auth", "data", "timeout", "stalled", "killed", "no_summary",
                   "bad_summary", "summary_not_ok", "exit_nonzero", "lost", "unschedulable", "secrets_missing",
                   "usage", "bad_output", "expectation", "commit", "bad_input")


# What a run holds of its pod: the supervisor hands out two pools. A run of `gpus: N` takes N GPUs
# (null: all of them) on a pod with GPUs; a run of `gpus: 0`, and every run on a pod without GPUs,
# takes one CPU slot (runs.submit --slots N sets how many there are, on any pod).
GPU_POOL, CPU_POOL = "gpu", "cpu"
# CPU slots unless --slots says. Without GPUs a run is the pod's whole work (a CPU training run
# takes every core): one at a time. Beside GPUs, runs without one are clients of the pod's server
# (an eval against vLLM) or light steps: four keep a server's batches full without twenty clients
# timing out in its queue, and the same on a 1- and an 8-GPU pod (its CPU count would cap nothing).
CPU_SLOTS_WITHOUT_GPUS, CPU_SLOTS_BESIDE_GPUS = 1, 4


def default_cpu_slots(gpu_count):
    return CPU_SLOTS_BESIDE_GPUS if gpu_count else CPU_SLOTS_WITHOUT_GPUS


def run_units(gpus, gpu_count):
    """(pool, units) a run of `gpus` takes of a pod with gpu_count GPUs: the supervisor's claim,
    the pod's probe and the laptop's placement count alike."""
    if gpu_count and gpus != 0:
        return GPU_POOL, gpu_count if gpus is None else gpus
    return CPU_POOL, 1


ATTEMPT_NAME = re.compile(r"^[0-9]{1,9}$")


def attempt_number(name):
    """The attempt an `attempts/<n>/` folder's name says, or None (only ASCII digits: a pod's `²`
    passes str.isdigit and would stop int())."""
    return int(name) if isinstance(name, str) and ATTEMPT_NAME.match(name) else None


def is_secret(name):
    """An env name whose value is a secret (HF_TOKEN, MY_API_KEY, DB_PASSWORD)."""
    return name.upper() in SECRET_NAMES or bool(SECRET_PARTS.search(name))


def masked_env(env):
    return {k: (MASK if is_secret(k) else v) for k, v in env.items()}


def outputs_root_problem(root, home=None):
    """Why root cannot be an outputs root (a run directory lies below it, and --force archives
    there), or None. The laptop asks the same function before it contacts the pod."""
    if not isinstance(root, str) or not root.startswith("/") or "\0" in root:
        return "must be an absolute path"
    norm = os.path.normpath(root)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    homes = {"/root"} | ({os.path.normpath(home)} if home else set())
    if norm in homes or os.path.dirname(norm) == "/home":
        return "is a home directory"
    if norm.count("/") < 2:  # /, /mnt (the volume itself: its keys, its data), /tmp, /opt, ...
        return "is / or a folder at the top of the file system: use a folder below the volume"
    for system in SYSTEM_DIRS:
        if norm == system or norm.startswith(system + "/"):
            return "lies in the system folder %s" % system
    parts = norm.split("/")
    if any(part in KEY_DIRS for part in parts):
        return "lies in a folder of keys or settings (%s)" % next(p for p in parts if p in KEY_DIRS)
    return None


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def finite_number(value):
    """A finite int or float (not a bool, not an integer past any float), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:  # a 400-digit integer: JSON has no limit
        return None


NUMBER_PART = re.compile(r"(\d+(?:\.\d+)?)")


def natural_key(text):
    """Text with its numbers compared as numbers: Qwen3-0.6B < Qwen3-4B < Qwen3-32B, r2 < r10
    (lm-eval's tasks on the pod, the report's rows and groups on the laptop)."""
    parts = NUMBER_PART.split(str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p.lower()) for i, p in enumerate(parts) if p)


SUMMARY_COLUMNS = 8  # summary values shown as columns: a table stays readable
# Top-level summary keys that say which run it is, not what it measured (report.NOT_EXTRA's, but
# avg_reward: a column of runs.status); objects that describe the run.
NOT_MEASURES = ("ok", "run_id", "env_id", "model_id", "state", "failure_class", "reason", "attempt", "num_examples",
                "rollouts_per_example", "rollouts", "best_of", "exit_code", "signal", "mean", "se", "ci95_low",
                "ci95_high", "n")
NOT_LEAVES = ("run_metadata", "ops")
# What a summary's numeric leaf is (leaf_kind), the one rule of runs.status's columns (measures)
# and the report's (measures, then times and durations). A leaf that names a moment (end_time,
# finished_at, timing.started) and holds epoch seconds is a time, shown as a date wherever a time
# is shown (report.md, report.html, runs.status): EPOCH_RANGE is 2001..2286, seconds since 1970
# that are a date (an iter_time of 0.3 s is a measure). The run's own duration (elapsed_s) is the
# run's bookkeeping, as its status's times are; a version of the file's format (contract_version)
# is none of them, and no column.
MOMENT_NAME = re.compile(r"(^|[_.])(at|started|finished|updated|time|timestamp|heartbeat)$")
EPOCH_RANGE = (1e9, 1e10)
DURATION_NAME = re.compile(r"(^|[_.])(elapsed|duration|runtime|wall_?time)(_s|_sec|_seconds)?$")
VERSION_NAME = re.compile(r"(^|[_.])\w*version$")
MEASURE, MOMENT, DURATION, VERSION = "measure", "moment", "duration", "version"


def epoch_seconds(value):
    """value when it is a number of seconds since 1970 that is a date (EPOCH_RANGE), else None."""
    number = finite_number(value)
    return number if number is not None and EPOCH_RANGE[0] <= number < EPOCH_RANGE[1] else None


def is_moment(name, value):
    """A leaf (or column) that names a moment and holds epoch seconds."""
    return epoch_seconds(value) is not None and bool(MOMENT_NAME.search(str(name)))


def leaf_kind(name, value):
    """MEASURE, MOMENT, DURATION or VERSION of a summary leaf that is a finite number (not a
    boolean), else None."""
    if finite_number(value) is None:
        return None
    if is_moment(name, value):
        return MOMENT
    if VERSION_NAME.search(str(name)):
        return VERSION
    return DURATION if DURATION_NAME.search(str(name)) else MEASURE


def summary_leaves(summary, limit=SUMMARY_COLUMNS, skip=NOT_MEASURES, kinds=(MEASURE,)):
    """[(name, number)] of a summary's leaves of these kinds (leaf_kind), kind by kind, each in file
    order, nested keys joined by '.' (`last_eval.val`), three levels deep at most, not the top-level
    keys of `skip` nor the objects of NOT_LEAVES; the first `limit`. runs.status's columns on the
    pod (measures) and the report's on the laptop (measures, then moments and durations; without
    its own columns)."""
    found = {kind: [] for kind in kinds}
    if isinstance(summary, dict):
        _collect_leaves(summary, "", 1, limit, skip, found)
    return [leaf for kind in kinds for leaf in found[kind]][:limit]


def _collect_leaves(value, prefix, depth, limit, skip, found):
    # A plain loop, not generators: the report runs it once per run. Once the first kind has
    # `limit` leaves, no later leaf could be shown.
    first = next(iter(found.values()))
    for key, item in value.items():
        if len(first) >= limit:
            return
        if depth == 1 and (key in skip or key in NOT_LEAVES):
            continue
        name = prefix + str(key)
        if type(item) is dict:
            if depth < 3:
                _collect_leaves(item, name + ".", depth + 1, limit, skip, found)
            continue
        kind = leaf_kind(name, item)
        if kind in found:
            found[kind].append((name, item))


def manifest_order(manifest):
    """A submission manifest's place among a host's submissions, newest last: its time (0 unless a
    number: a manifest edited by hand must not stop every task that looks for the newest), then
    its id. The laptop's latest submission to a host and the pod's own latest (asked for by a
    folder that has no record of one) are both the greatest by this."""
    submitted = manifest.get("submitted_at")
    if isinstance(submitted, bool) or not isinstance(submitted, (int, float)):
        submitted = 0
    return submitted, str(manifest.get("submission_id", ""))
