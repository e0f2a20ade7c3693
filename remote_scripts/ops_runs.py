#!/usr/bin/env python3
"""ops-tasks run queue and supervisor: the pod side of the `runs` tasks (Python 3.8+, stdlib).

One file, shipped to the pod by every runs task and run as `python3 ops_runs.py COMMAND`, with
a JSON request on stdin and one JSON document on stdout:

  submit    queue runs (under the queue lock) and make sure a supervisor runs
  supervise run the queue: start runs on free GPUs, watch them, finish them (long-lived)
  status    the state of runs (by id, by submission, or all)
  wait      block until a submission's runs end, progress lines on stderr
  logs      a run's stdout.log: the tail, or followed until the run ends
  cancel    stop queued or running runs
  resume    queue again the runs a dead supervisor left behind

Layout under the outputs root O (on the volume):

  O/<run_id>/                 the run directory: command.sh, run_metadata.json, stdout.log,
                              status.json, summary.json, attempts/<n>/ (earlier attempts)
  O/.ops/queue.lock           flock: every change of a run's state outside the supervisor
  O/.ops/supervisor.lock      flock held by the live supervisor for its whole life
  O/.ops/queue/<seq>-<id>.json   queued runs, in order
  O/.ops/active/<id>.json     runs the supervisor has started
  O/.ops/cancel/<id>          cancel requests for running runs
  O/.ops/submissions/<sid>.json  submission manifests
  O/.ops/supervisor.log       what the supervisor did

Secret env values never touch the volume: they sit in ~/.ops/runs/env/<sid>.json (mode 0600,
pod-local disk) and reach a run only through its environment.
"""

import errno
import fcntl
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

TOOL_VERSION = "ops-tasks-runs/1"
# state -> class: "active" (not over yet), "succeeded", or "failed" (over, and not a success).
# The laptop holds the same table (ops_tasks/run_states.py); tests/test_run_states.py checks it.
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
# Every field a status.json may hold: set_state refuses others (a misspelt field would be lost).
STATUS_FIELDS = frozenset({
    "run_id", "state", "attempt", "submission_id", "queued_at", "not_before", "retry_of", "started",
    "supervisor_pid", "pid", "pgid", "pid_start", "gpus", "last_output", "heartbeat", "exit_code", "signal",
    "failure_class", "error", "finished", "updated", "tool", "metrics", "survivors"})
# The shapes a status.json's fields must have (anything else marks the run unknown, with why).
STATUS_TYPES = {"run_id": str, "attempt": int, "submission_id": str, "exit_code": (int, type(None)),
                "pid": int, "pgid": int, "pid_start": (int, type(None)), "signal": (int, type(None)),
                "tool": str}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # names.RUN_ID on the laptop
# Folders that are never an outputs root nor hold one: the system's, and where keys live.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
               "/sbin", "/srv", "/sys", "/usr", "/var/lib", "/var/log", "/var/run", "/var/spool", "/var/cache")
KEY_DIRS = (".ssh", "ssh", ".gnupg", ".aws", ".kube", ".docker", ".config")
WRITE_RETRY_S = 2.0  # a bookkeeping write that failed (a full volume) is tried again this often
KILL_GRACE_S = 10.0  # TERM, then KILL this long after
HEARTBEAT_S = 5.0
WAIT_HEARTBEAT_S = 2.0  # runs.wait repeats its progress line this often (to notice the laptop gone)
POLL_S = 0.25
IDLE_EXIT_S = 2.0  # an idle supervisor lingers this long for a submission racing its exit
TAIL_BYTES = 256 * 1024
SECRET_NAMES = {"WANDB_API_KEY", "HF_TOKEN", "OPENAI_API_KEY"}
SECRET_PARTS = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASS|CREDENTIAL", re.IGNORECASE)
MASK = "***"

# Failure classes read from a failed run's log. The lowest matching line wins: the last error
# is the cause, earlier ones were survived.
FAILURE_PATTERNS = (
    ("oom", re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED|Killed process .* out of memory")),
    ("nccl", re.compile(r"NCCL (error|WARN)|ncclInternalError|ncclSystemError|ncclUnhandledCudaError|NCCL timeout",
                        re.IGNORECASE)),
    ("auth", re.compile(r"\b40[13] Client Error|HTTP Error 40[13]|status code:? 40[13]|GatedRepoError|"
                        r"Invalid credentials|AuthenticationError|PermissionDeniedError|wandb: ERROR .*(API key|login)|"
                        r"huggingface-cli login|Unauthorized", re.IGNORECASE)),
    # wandb's own wording when no key is found (wandb.errors.UsageError is also its class for it).
    ("auth", re.compile(r"No API key configured|api_key not configured|wandb\.errors\.(UsageError|AuthenticationError)"
                        r": .*(api[_ ]key|login)", re.IGNORECASE)),
    # The command itself is wrong (argparse, a missing script or program): not the data's fault.
    ("usage", re.compile(r"can't open file|error: unrecognized arguments|error: the following arguments are required|"
                         r"error: argument [-\w/]+: (invalid|expected)|: command not found$")),
    ("data", re.compile(r"FileNotFoundError|No such file or directory|DatasetNotFoundError|"
                        r"DataFilesNotFoundError|EmptyDatasetError")),
)
# A "No such file or directory" naming the command's own program or script is usage, not data.
MISSING_PATH = re.compile(r"No such file or directory:? ?'?([^'\s:]+)'?|([^\s:']+): No such file or directory")

DECODING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "max_new_tokens", "min_p", "best_of",
                 "rollouts_per_example", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty")
DATASET_KEYS = ("env_id", "dataset", "num_examples", "split", "subset", "data_dir", "max_examples")
# In a run directory: the supervisor's own record of the run (record.json, the replayable
# command.sh), where no script writes, so a script that writes the contract's files loses nothing.
RECORD_DIR = ".ops"
CONTRACT_FILES = ("command.sh", "run_metadata.json", "summary.json", "results.jsonl", "metrics.jsonl")
STOP_SIGNALS = ("INT", "TERM", "HUP", "QUIT", "USR1", "USR2")  # a run's stop_signal (TERM, KILL follow)
SUMMARY_FRAMEWORKS = ("verifiers", "lm_eval")  # summary_from: one of these, or python:module:function
PYTHON_SUMMARY = re.compile(r"^python:([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")
PROBE_TIMEOUT_S = 10.0  # the run's interpreter asked for its version and packages
CONVERT_TIMEOUT_S = 300.0  # a summary_from conversion's deadline unless the run's summary_timeout says
PACKAGES = ("torch", "vllm", "verifiers", "lm_eval", "transformers")  # versions in run_metadata
METRICS_CHUNK = 1 << 20  # metrics_from_log reads at most this much new log per look
EXPECT_KEYS = ("files", "log_matches", "log_not_matches", "wandb_synced")  # run_config.EXPECT_KEYS
OUT_MODES = ("volume", "local_sync")  # run_config.OUT_MODES
COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
# wandb's own end-of-run line when it uploaded (`wandb: Synced 5 W&B file(s), ...`), and `wandb sync`'s.
WANDB_SYNCED_LINE = re.compile(r"wandb: Synced \d+ W&B file|^Syncing: .* \.\.\. done\.?$")


# ---------------------------------------------------------------- small helpers


def now():
    return time.time()


def is_secret(name):
    return name.upper() in SECRET_NAMES or bool(SECRET_PARTS.search(name))


def masked_env(env):
    return {k: (MASK if is_secret(k) else v) for k, v in env.items()}


def read_json(path, default=None):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


class BatchedSync:
    """`with BatchedSync():` the writes inside skip their own fsync and the file system is synced
    once at the end: a submission or cancel of thousands of runs pays one sync, not thousands,
    and is as durable once it answers."""

    active = False

    def __enter__(self):
        BatchedSync.active = True
        return self

    def __exit__(self, *exc):
        BatchedSync.active = False
        os.sync()


def write_json(path, data, mode=0o644):
    """Atomic: a reader sees the old file or the new one, never half of one."""
    write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n", mode,
               sync=not BatchedSync.active)


def write_text(path, text, mode=0o644, sync=False):
    """Atomic; a write that fails (a full volume) leaves the old file and no temporary behind."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise


def makedirs(path, mode=0o755):
    os.makedirs(path, mode=mode, exist_ok=True)


def remove_quietly(path):
    """Remove a bookkeeping file that another process may have removed first."""
    try:
        os.remove(path)
    except OSError:
        pass


def tail_text(path, lines):
    """The last `lines` lines of a file, reading at most TAIL_BYTES from its end."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - TAIL_BYTES))
            data = handle.read()
    except OSError:
        return None
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


def last_line(path):
    """The last non-empty line of a file (read from its last 2 KiB), for the status table."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 2048))
            lines = [line for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][-300:] if lines else None


def pid_alive(pid, start_ticks=None):
    """True while pid runs (zombies count as gone); with start_ticks, only that very process."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError):
        return False
    if fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == int(start_ticks)


def start_ticks_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def group_alive(pgid):
    """True while a process of the group runs. Zombies do not count: a container whose init
    reaps nobody keeps them forever, and they hold no GPU."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group_fully(pgid, grace=KILL_GRACE_S):
    """TERM the group, then KILL what is left after grace."""
    kill_group(pgid, signal.SIGTERM)
    deadline = now() + grace
    while group_alive(pgid) and now() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        kill_group(pgid, signal.SIGKILL)


def owner_marker(run_id, submission_id, attempt):
    """The value of OPS_RUN_OWNER in a run's environment: every process the run starts inherits
    it, also one that leaves the process group (setsid), so the run's processes can be found."""
    return "%s/%s/%s" % (submission_id, run_id, attempt)


def marked_pids(marker):
    """Pids of this user's live processes whose environment carries OPS_RUN_OWNER=marker."""
    needle = ("OPS_RUN_OWNER=%s" % marker).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if os.stat("/proc/" + name).st_uid != os.getuid():
                continue
            with open("/proc/%s/environ" % name, "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if needle in environ and pid_alive(int(name)):
            found.append(int(name))
    return found


def kill_marked(marker, grace=2.0):
    """Stop every process carrying the run's marker (TERM, KILL after grace). Returns their pids."""
    pids = marked_pids(marker)
    for pid in pids:
        signal_quietly(pid, signal.SIGTERM)
    deadline = now() + grace
    while now() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            signal_quietly(pid, signal.SIGKILL)
    return pids


def signal_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Lock:
    """An flock on a file: exclusive, blocking or not."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self, blocking=True, shared=False):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            raise
        self.fd = fd
        return True

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- the store


class BadRequest(ValueError):
    """A request the tool refuses whole before it changes anything (bad input: exit 2)."""


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


def check_outputs_root(root):
    """The request's outputs root, refused (BadRequest) when it is no place for run directories;
    symlinks are resolved first, so a link cannot lead the root into /etc."""
    for candidate in (root, os.path.realpath(root) if isinstance(root, str) else root):
        problem = outputs_root_problem(candidate, os.path.expanduser("~"))
        if problem:
            raise BadRequest("outputs root %r %s" % (root, problem))
    return root


def check_run(run_id, run_dir, root):
    """A run id of the one pattern and a run directory strictly below the outputs root (also once
    symlinks are resolved) and outside .ops/: BadRequest otherwise, whatever the laptop sent."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise BadRequest("run id %r: a run id is letters, digits, '.', '_' and '-' (at most 128, starting "
                         "with a letter or digit)" % (run_id,))
    if not isinstance(run_dir, str) or not run_dir.startswith("/"):
        raise BadRequest("%s: run_dir %r must be an absolute path under the outputs root %s" % (run_id, run_dir, root))
    for base, path in ((os.path.normpath(root), os.path.normpath(run_dir)),
                       (os.path.realpath(root), os.path.realpath(run_dir))):
        inside = path.startswith(base.rstrip("/") + "/")
        if not inside or path == os.path.join(base, ".ops") or path.startswith(os.path.join(base, ".ops") + "/"):
            raise BadRequest("%s: run_dir %s is not a run directory under the outputs root %s" % (run_id, run_dir, root))
    return run_id, run_dir


class Store:
    """The outputs root: run directories and the queue's bookkeeping under .ops/.

    Only the commands that change things create it (`create`): reading a root that does not
    exist creates nothing and finds no runs.
    """

    def __init__(self, root, create=False):
        self.root = check_outputs_root(root).rstrip("/") or "/"
        self.ops = os.path.join(self.root, ".ops")
        self.private = os.path.join(os.path.expanduser("~"), ".ops", "runs")
        if create:
            for sub in ("queue", "active", "cancel", "submissions", "specs"):
                makedirs(os.path.join(self.ops, sub))
            makedirs(os.path.join(self.private, "env"), 0o700)
            os.chmod(os.path.join(self.private, "env"), 0o700)

    def names(self, sub):
        """File names in .ops/<sub>/ (none when it does not exist), our temporaries left out."""
        try:
            return sorted(n for n in os.listdir(self.path(sub)) if not TEMPORARY.search(n))
        except OSError:
            return []

    def path(self, *parts):
        return os.path.join(self.ops, *parts)

    def queue_lock(self):
        return Lock(self.path("queue.lock"))

    def supervisor_alive(self):
        """True while some supervisor holds supervisor.lock (the kernel drops it if it dies).

        A shared probe: a supervisor that is starting retries its exclusive lock for a while,
        so a probe in the same instant never makes it give up.
        """
        if not os.path.exists(self.path("supervisor.lock")):
            return False  # never created: no supervisor ever ran here (and a probe creates nothing)
        lock = Lock(self.path("supervisor.lock"))
        if lock.acquire(blocking=False, shared=True):
            lock.release()
            return False
        return True

    # -- queue entries

    def queued(self):
        entries = []
        for name in self.names("queue"):
            entry = read_entry(self.path("queue", name)) if name.endswith(".json") else None
            if entry is not None:
                entry["_file"] = self.path("queue", name)
                entries.append(entry)
        return entries

    def enqueue(self, entry):
        """Queue a run; its spec is also kept (specs/) for runs.resume after a supervisor dies."""
        seq = "%017.6f" % now()
        name = "%s-%s.json" % (seq, entry["run_id"])
        write_json(self.path("specs", entry["run_id"] + ".json"), entry)
        write_json(self.path("queue", name), entry)
        return self.path("queue", name)

    def active(self):
        entries = []
        for name in self.names("active"):
            entry = read_entry(self.path("active", name)) if name.endswith(".json") else None
            if entry is not None:
                entries.append(entry)
        return entries

    def waiting_ids(self, queued=None):
        """Run ids that are queued or claimed by a supervisor: the ones a status may say are waiting."""
        ids = {e["run_id"] for e in (self.queued() if queued is None else queued)}
        ids.update(n[:-5] for n in self.names("active") if n.endswith(".json"))
        return ids

    # -- secrets

    def secret_env(self, submission_id, run_id):
        """The run's secret env values, or None when the file holding them is gone."""
        data = read_json(os.path.join(self.private, "env", submission_id + ".json"))
        return None if data is None else data.get(run_id, {})

    def write_slots(self, slots):
        """The CPU slot count a live supervisor re-reads each loop (runs.submit --slots)."""
        write_text(self.path("slots"), "%d\n" % slots)

    def read_slots(self):
        try:
            with open(self.path("slots")) as handle:
                value = int(handle.read().strip())
        except (OSError, ValueError):
            return None
        return value if value >= 1 else None

    def save_secret_env(self, submission_id, secrets):
        if not secrets:
            return
        path = os.path.join(self.private, "env", submission_id + ".json")
        write_json(path, secrets, mode=0o600)


# ---------------------------------------------------------------- run directories


def status_path(run_dir):
    return os.path.join(run_dir, "status.json")


TEMPORARY = re.compile(r"\.tmp\.\d+$")  # write_text's, while it writes


def read_entry(path):
    """A queue or active entry: a JSON object naming a valid run id, its run_dir, attempt and
    submission, else None (a damaged file is skipped, never a crash of every listing or loop)."""
    entry = read_json(path)
    if not isinstance(entry, dict) or not isinstance(entry.get("run_id"), str) or not RUN_ID.match(entry["run_id"]):
        return None
    shapes = (("run_dir", str), ("submission_id", str), ("attempt", int))
    return entry if all(isinstance(entry.get(key), kind) for key, kind in shapes) else None


def read_status(run_dir, with_problem=False):
    """The run's status.json when it is one (a JSON object with a known state and fields of the
    right types), else None; with_problem: (status, why it is not one, or None)."""
    path = status_path(run_dir)
    status = read_json(path)
    problem = status_shape_problem(status) if status is not None else (
        "status.json is not JSON" if os.path.exists(path) else None)
    if problem:
        status = None
    return (status, problem) if with_problem else status


def status_shape_problem(status):
    if not isinstance(status, dict):
        return "status.json holds a %s, not an object" % type(status).__name__
    if not isinstance(status.get("state"), str) or status["state"] not in STATES:
        return "status.json has no known state (%r)" % (status.get("state"),)
    for key, kind in STATUS_TYPES.items():
        if key in status and (not isinstance(status[key], kind) or isinstance(status[key], bool)):
            return "status.json field %s is a %s" % (key, type(status[key]).__name__)
    for key in ("started", "finished", "updated", "queued_at", "heartbeat", "last_output", "not_before"):
        value = status.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            return "status.json field %s is a %s" % (key, type(value).__name__)
    return None


def owned_by_tool(status, run_dir):
    """True when the supervisor wrote this run directory: its status.json carries the tool's
    version (only the supervisor sets it), or, from before that field, its run_metadata.json."""
    def ours(data):
        return isinstance(data, dict) and str(data.get("tool", "")).startswith("ops-tasks-runs/")

    return ours(status) or ours(read_json(os.path.join(run_dir, "run_metadata.json")))


def set_state(run_dir, run_id, state, kept=None, **fields):
    """The one writer of status.json: the run's new state and fields, checked, written atomically;
    a run that ends gets its contract's summary.json too. Returns the status written.

    A status starts afresh at each step (queued, running, ended), so what one step means (a live
    pid) never outlives it; `kept` is the status a step only adds to (a lost run being
    cancelled keeps the process group that cancel stopped).
    """
    status = checked_status(run_id, state, kept, fields)
    write_json(status_path(run_dir), status)
    if state in TERMINAL:
        write_missing_summary(run_dir, run_id, status)
    return status


def set_attempt_state(entry, state, **fields):
    """set_state for the attempt a queue entry describes (its run, attempt and submission)."""
    return set_state(entry["run_dir"], entry["run_id"], state, attempt=entry["attempt"],
                     submission_id=entry["submission_id"], **fields)


def checked_status(run_id, state, kept, fields):
    """The status to write, or ValueError for one the state machine has no place for."""
    if state not in STATES:
        raise ValueError("%s: unknown run state %r" % (run_id, state))
    unknown = sorted(set(fields) - STATUS_FIELDS)
    if unknown:
        raise ValueError("%s: unknown status field(s) %s" % (run_id, ", ".join(unknown)))
    status = dict(kept or {})
    status.update(fields, run_id=run_id, state=state, updated=now(), tool=TOOL_VERSION)
    required = ("attempt", "submission_id") if kept is None else ()
    missing = [k for k in required + (("finished",) if state in TERMINAL else ()) if k not in status]
    if missing:
        raise ValueError("%s: a %s status needs %s" % (run_id, state, ", ".join(missing)))
    return status


def attempts_done(run_dir):
    folder = os.path.join(run_dir, "attempts")
    try:
        return max([int(n) for n in os.listdir(folder) if n.isdigit()] or [0])
    except OSError:
        return 0


def archive_attempt(run_dir):
    """Move an earlier attempt's files into attempts/<n>/; nothing is deleted. Returns n or None."""
    try:
        # The supervisor's record (.ops/) goes with its attempt; other dotfiles are not ours.
        names = [n for n in os.listdir(run_dir) if n != "attempts" and (n == RECORD_DIR or not n.startswith("."))]
    except OSError:
        return None
    if not names:
        return None
    number = attempts_done(run_dir) + 1
    target = os.path.join(run_dir, "attempts", str(number))
    makedirs(target)
    for name in names:
        os.replace(os.path.join(run_dir, name), os.path.join(target, name))
    return number


def restore_attempt(run_dir, number):
    """Undo archive_attempt: attempts/<number>/ goes back to the top of the run directory."""
    folder = os.path.join(run_dir, "attempts", str(number))
    for name in os.listdir(folder):
        os.replace(os.path.join(folder, name), os.path.join(run_dir, name))
    os.rmdir(folder)
    try:
        os.rmdir(os.path.join(run_dir, "attempts"))  # only when it is empty again
    except OSError:
        pass


def summary_verdict(run_dir):
    """(ok, failure class or None, parsed summary or None) for a run that exited 0."""
    path = os.path.join(run_dir, "summary.json")
    if not os.path.exists(path):
        return False, "no_summary", None
    summary = read_json(path)
    if not isinstance(summary, dict):
        return False, "bad_summary", None
    # ok must be a JSON boolean: 0, "false" or 1 say nothing a verdict can rest on.
    if "ok" in summary and not isinstance(summary["ok"], bool):
        return False, "bad_summary", summary
    if summary.get("ok") is False:
        return False, "summary_not_ok", summary
    return True, None, summary


def failure_class(exit_code, log_tail, command=None):
    """Why a run that exited non-zero failed, from its exit code and the end of its log (and the
    command: a missing file that is its own program or script is a usage error, not data)."""
    own = entrypoint_paths(command)
    lines = (log_tail or "").splitlines()
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        for name, pattern in FAILURE_PATTERNS:
            if pattern.search(line):
                if name == "data" and (names_missing_entrypoint(line, own) or
                                       program_not_found(lines[max(0, index - 3):index])):
                    return "usage"
                return name
    if exit_code in (126, 127):
        return "usage"  # bash: not executable, command not found
    if exit_code == 137:
        return "oom"  # the kernel's OOM killer sends SIGKILL; bash reports 128 + 9
    if exit_code is not None and exit_code < 0:
        return "killed"
    if exit_code is not None and exit_code > 128 and exit_code - 128 in (signal.SIGKILL, signal.SIGTERM,
                                                                       signal.SIGINT, signal.SIGHUP):
        return "killed"
    return "exit_nonzero"


def entrypoint_paths(command):
    """The paths a command names as what it runs: its program, and the script an interpreter
    (python, bash, sh, uv run ...) is given: the ones a "No such file" is the command's own fault."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return set()
    words = [w for w in words if not re.match(r"^[A-Za-z_]\w*=", w)]  # VAR=value prefixes
    found = set()
    interpreter = re.compile(r"^(python[\d.]*|bash|sh|uv|torchrun|accelerate|deepspeed|exec|env|run|launch)$")
    for word in words:
        if word.startswith("-") or word in ("-m",):
            continue
        found.add(word)
        if not interpreter.match(os.path.basename(word)):
            break
    return {p for w in found for p in (w, os.path.basename(w))}


def program_not_found(frames):
    """True when the traceback lines just above a FileNotFoundError say it came from starting a
    program (subprocess's _execute_child, os.exec*): a bad argv, not a missing data file."""
    return any(re.search(r"in _execute_child|\bos\.exec\w*\(|in exec[lv]p?e?$", line) for line in frames)


def names_missing_entrypoint(line, own):
    match = MISSING_PATH.search(line)
    if not match or not own:
        return False
    path = match.group(1) or match.group(2) or ""
    return path in own or os.path.basename(path) in own


def write_missing_summary(run_dir, run_id, status):
    """The contract holds for every ended run: a summary.json, ok false, unless the run wrote one."""
    path = os.path.join(run_dir, "summary.json")
    if os.path.exists(path):
        return
    write_json(path, {
        "ok": False,
        "run_id": run_id,
        "state": status.get("state"),
        "exit_code": status.get("exit_code"),
        "signal": status.get("signal"),
        "failure_class": status.get("failure_class"),
        "written_by": "ops-tasks supervisor (the command wrote no summary.json)",
    })


# ---------------------------------------------------------------- workloads: a run's own files


def workload_problem(run):
    """Why a run's workload settings (summary_from, stop_signal, stop_grace, metrics_from_log,
    meta) cannot be used, or None. The laptop checks them first; the pod trusts no request."""
    source = run.get("summary_from")
    if source is not None and (not isinstance(source, str) or (
            source not in SUMMARY_FRAMEWORKS and not PYTHON_SUMMARY.match(source))):
        return "summary_from %r: use %s or python:module:function" % (source, ", ".join(SUMMARY_FRAMEWORKS))
    if run.get("summary_metric") is not None and not isinstance(run["summary_metric"], str):
        return "summary_metric must be a string (metric or metric,filter)"
    deadline = run.get("summary_timeout")
    if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))
                                 or not 0 < deadline < 1e7):
        return "summary_timeout %r: seconds > 0" % (deadline,)
    if run.get("stop_signal") is not None and run["stop_signal"] not in STOP_SIGNALS:
        return "stop_signal %r: one of %s" % (run["stop_signal"], ", ".join(STOP_SIGNALS))
    grace = run.get("stop_grace")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 < grace < 1e7):
        return "stop_grace %r: seconds > 0" % (grace,)
    pattern = run.get("metrics_from_log")
    if pattern is not None:
        try:
            if not isinstance(pattern, str) or not re.compile(pattern).groupindex:
                return "metrics_from_log must be a regex with named groups, e.g. (?P<loss>[\\d.]+)"
        except re.error as exc:
            return "metrics_from_log %r does not compile: %s" % (pattern, exc)
    if run.get("meta") is not None and not isinstance(run["meta"], dict):
        return "meta must be an object"
    return expect_problem(run.get("expect")) or gate_problem(run)


def expect_problem(expect):
    """Why a run's `expect` cannot be used, or None (the laptop's run_config._expect first)."""
    if expect is None:
        return None
    if not isinstance(expect, dict) or set(expect) - set(EXPECT_KEYS):
        return "expect must be an object of %s" % ", ".join(EXPECT_KEYS)
    files = expect.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) and f and not f.startswith("/")
                                              and ".." not in f.split("/") for f in files):
        return "expect.files must be paths inside the run directory"
    for key in ("log_matches", "log_not_matches"):
        patterns = expect.get(key) or []
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            return "expect.%s must be a list of regexes" % key
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                return "expect.%s %r does not compile: %s" % (key, pattern, exc)
    if not isinstance(expect.get("wandb_synced", False), bool):
        return "expect.wandb_synced must be a boolean"
    return None


def gate_problem(run):
    """Why a run's expect_commit or out_mode (sync_interval, local_dir) cannot be used, or None."""
    pinned = run.get("expect_commit")
    if pinned is not None and not (isinstance(pinned, str) and COMMIT.match(pinned)):
        return "expect_commit %r is not a commit id" % (pinned,)
    mode = run.get("out_mode")
    if mode is None or mode == "volume":
        return None
    if mode not in OUT_MODES:
        return "out_mode %r: one of %s" % (mode, ", ".join(OUT_MODES))
    interval = run.get("sync_interval")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < 1e7:
        return "sync_interval %r: seconds > 0" % (interval,)
    local_dir = run.get("local_dir")
    if not isinstance(local_dir, str) or os.path.normpath(local_dir) != local_dir or not local_dir.startswith("/"):
        return "local_dir %r: an absolute, normal path" % (local_dir,)
    problem = outputs_root_problem(local_dir)
    if problem:
        return "local_dir %s %s" % (local_dir, problem)
    return None


# ---------------------------------------------------------------- gates: expect, the commit pin, a run's identity


def unmet_expectations(entry, run_dir):
    """What a run that exited 0 did not show of its `expect`, one line each ([]: all met). Read
    on the volume's run directory: the contract is judged where fetch reads it."""
    expect = entry.get("expect") or {}
    unmet = ["no %s in the run directory" % pattern for pattern in expect.get("files") or []
             if not files_in_run(run_dir, pattern)]
    log_path = os.path.join(run_dir, "stdout.log")
    must = expect.get("log_matches") or []
    must_not = expect.get("log_not_matches") or []
    if must or must_not:
        found, forbidden = search_log(log_path, must, must_not)
        unmet += ["stdout.log has no line matching %r" % pattern for pattern in must if pattern not in found]
        unmet += ["stdout.log has a line matching %r: %s" % (pattern, line[:160]) for pattern, line in forbidden]
    if expect.get("wandb_synced") and not wandb_synced(entry, run_dir, log_path):
        unmet.append("W&B did not say it synced (no `wandb: Synced` line in stdout.log, no .synced mark "
                     "in the run's wandb directory)")
    return unmet


def files_in_run(run_dir, pattern):
    """The regular files matching pattern (a glob; ** for any depth) inside run_dir, links
    resolved: a link out of the run directory proves nothing."""
    root = os.path.realpath(run_dir)
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), pattern), recursive=True):
        real = os.path.realpath(path)
        if real.startswith(root + os.sep) and os.path.isfile(real):
            found.append(path)
    return found


def search_log(log_path, must, must_not):
    """({pattern of must seen}, [(pattern of must_not, its first line)]), line by line."""
    wanted = [(p, re.compile(p)) for p in must]
    unwanted = [(p, re.compile(p)) for p in must_not]
    found, forbidden = set(), {}
    try:
        with open(log_path, "rb") as handle:
            for raw in handle:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                found.update(p for p, rx in wanted if p not in found and rx.search(line))
                forbidden.update((p, line) for p, rx in unwanted if p not in forbidden and rx.search(line))
    except OSError:
        pass
    return found, sorted(forbidden.items())


def wandb_synced(entry, run_dir, log_path):
    """W&B says it synced: its own end-of-run line in the log (online), or the `.synced` mark
    `wandb sync` leaves in a run's folder under the run directory or the run's WANDB_DIR."""
    found, _ = search_log(log_path, [WANDB_SYNCED_LINE.pattern], [])
    if found:
        return True
    roots = [run_dir]
    wandb_dir = (entry.get("env") or {}).get("WANDB_DIR")
    if isinstance(wandb_dir, str) and wandb_dir.startswith("/"):
        roots.append(wandb_dir)
    for root in roots:
        for folder in ("wandb/*run-*", "*run-*"):
            base = os.path.join(glob.escape(root), folder)
            if glob.glob(os.path.join(base, "*.synced")) or glob.glob(os.path.join(base, ".synced")):
                return True
    return False


def commit_pin(run, request, facts):
    """(commit, where the pin comes from) the run's repo must be at, or (None, None): the task's
    --expect-commit, else the run's expect_commit (null: none), else the laptop's HEAD when the
    pod's repo has the laptop's origin."""
    flag = request.get("expect_commit")
    if flag == "none":
        return None, None
    if isinstance(flag, str) and COMMIT.match(flag):
        return flag, "--expect-commit"
    if "expect_commit" in run:
        return run["expect_commit"], "expect_commit"
    head = request.get("laptop_head")
    if isinstance(head, dict) and isinstance(head.get("commit"), str) and COMMIT.match(head["commit"]) \
            and same_origin(head.get("origin"), facts.get("origin")):
        return head["commit"], "the laptop's HEAD (the pod's repo has its origin)"
    return None, None


def pin_problem(commit, source, facts, repo):
    """Why a repo is not at its pinned commit (another commit, or uncommitted changes), or None."""
    if not commit:
        return None
    at = facts.get("commit")
    if at is None:
        return "pinned to %s (%s), but %s is not a git repository" % (commit[:12], source, repo)
    if not at.startswith(commit):
        return "the pod's repo %s is at %s, not at %s (%s)" % (repo, at[:12], commit[:12], source)
    if facts.get("dirty"):
        return ("the pod's repo %s is at %s (%s) but has uncommitted changes: commit or stash them on the pod, "
                "or pin another commit" % (repo, at[:12], source))
    return None


def same_origin(one, other):
    """Two remote URLs naming one repository (ssh or https spelling, .git or not)."""
    def plain(url):
        if not isinstance(url, str) or not url.strip():
            return None
        url = re.sub(r"^[a-z+]+://", "", url.strip())
        url = re.sub(r"^[^@/]*@", "", url)  # a user (or a token) before the host
        url = url.replace(":", "/", 1) if re.match(r"^[^/]+:[^/0-9]", url) else url
        return re.sub(r"\.git$", "", url.rstrip("/")).lower()

    return plain(one) is not None and plain(one) == plain(other)


def identity_digest(identity):
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def write_identity(entry):
    """.ops/identity.json: what the run in this directory is (run_config's RunSpec.identity)."""
    identity = entry.get("identity")
    if isinstance(identity, dict):
        makedirs(os.path.join(entry["run_dir"], RECORD_DIR))
        write_json(record_path(entry["run_dir"], "identity.json"), dict(identity, digest=identity_digest(identity)))


def identity_difference(run_dir, identity, queued=None):
    """How the run in run_dir (its started attempt's .ops/identity.json, else `queued`, its queue
    entry's) differs from identity (one line), or None: the same run, or one never recorded."""
    old = read_json(record_path(run_dir, "identity.json"))
    old = old if isinstance(old, dict) else queued
    if not isinstance(old, dict) or not isinstance(identity, dict):
        return None
    old = {k: v for k, v in old.items() if k != "digest"}
    if identity_digest(old) == identity_digest(identity):
        return None
    before, after = old.get("config"), identity.get("config")
    before, after = (before if isinstance(before, dict) else {}), (after if isinstance(after, dict) else {})
    changes = ["%s: %s -> %s" % (key, shown_value(before, key), shown_value(after, key))
               for key in sorted(set(before) | set(after), key=str)
               if key not in ("command", "entrypoint") and before.get(key, MISSING_VALUE) != after.get(key, MISSING_VALUE)]
    names_before = set(old.get("env_names") or []) if isinstance(old.get("env_names"), list) else set()
    names_after = set(identity.get("env_names") or [])
    changes += ["env +%s" % n for n in sorted(names_after - names_before, key=str)]
    changes += ["env -%s" % n for n in sorted(names_before - names_after, key=str)]
    if not changes:
        changes = ["command %s -> %s" % (shown_value(old, "command"), shown_value(identity, "command"))]
    return "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")


MISSING_VALUE = object()


def shown_value(holder, key):
    if key not in holder:
        return "(unset)"
    text = json.dumps(holder[key], sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


# ---------------------------------------------------------------- out_mode local_sync


def work_dir_of(entry):
    """Where an out_mode local_sync run writes on the pod's own disk (run_config.local_work_dir)."""
    if entry.get("out_mode") != "local_sync":
        return None
    return os.path.join(entry["local_dir"], entry["run_id"])


class LocalSync:
    """out_mode local_sync: the run writes into work_dir (the pod's own disk), and its files are
    copied into run_dir on the volume every `interval` and once more after it ends, before its
    verdict: a pod that dies loses at most one interval. Only what changed (size, mtime) is
    copied, each file atomically; the supervisor's own files there (status.json, .ops/,
    attempts/) are never written from work_dir."""

    OWN = ("status.json", RECORD_DIR, "attempts")

    def __init__(self, work_dir, run_dir, interval):
        self.work_dir, self.run_dir, self.interval = work_dir, run_dir, interval
        self.copied = {}  # relative path -> (size, mtime_ns) or the link's target
        self.last = time.monotonic()
        self.count = 0

    def due(self):
        return time.monotonic() - self.last >= self.interval

    def sync(self):
        self.last = time.monotonic()
        for folder, dirs, files in os.walk(self.work_dir):
            relative = os.path.relpath(folder, self.work_dir)
            if relative == ".":
                dirs[:] = [d for d in dirs if d not in self.OWN]
                files = [f for f in files if f not in self.OWN]
            for name in dirs + files:
                self.copy_one(os.path.normpath(os.path.join(relative, name)))
        self.count += 1

    def copy_one(self, relative):
        source, target = os.path.join(self.work_dir, relative), os.path.join(self.run_dir, relative)
        try:
            info = os.lstat(source)
        except OSError:
            return  # gone since the listing
        if stat_is(info, "S_ISDIR"):
            makedirs(target)
            return
        if stat_is(info, "S_ISLNK"):
            seen = os.readlink(source)
        elif stat_is(info, "S_ISREG"):
            seen = (info.st_size, info.st_mtime_ns)
        else:
            return  # a socket or fifo is no file of the contract
        if self.copied.get(relative) == seen:
            return
        makedirs(os.path.dirname(target))
        temporary = "%s.tmp.%d" % (target, os.getpid())
        try:
            if isinstance(seen, str):
                os.symlink(seen, temporary)
            else:
                shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        except FileNotFoundError:
            remove_quietly(temporary)  # the run removed it meanwhile: the next sync sees what is there
            return
        except BaseException:
            remove_quietly(temporary)
            raise
        self.copied[relative] = seen


def stat_is(info, test):
    import stat

    return getattr(stat, test)(info.st_mode)


def record_path(run_dir, name="record.json"):
    return os.path.join(run_dir, RECORD_DIR, name)


def write_if_absent(path, text, mode=0o644):
    """The contract's file, only where the command has not written its own: never overwritten."""
    if not os.path.lexists(path):
        write_text(path, text, mode)


def file_digest(path):
    import hashlib

    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def files_written_by(run_dir, ours):
    """{contract file: "supervisor" | "command"} for the files the run directory holds; ours is
    {name: sha256 of what the supervisor wrote}."""
    found = {}
    for name in CONTRACT_FILES:
        digest = file_digest(os.path.join(run_dir, name))
        if digest is not None:
            found[name] = "supervisor" if ours.get(name) == digest else "command"
    return found


def run_python(entry, env):
    """The run's own interpreter: the command's first word when it is a python, else python3 on
    the run's PATH (its virtualenv's), else None."""
    try:
        words = [w for w in shlex.split(entry.get("command") or "") if not re.match(r"^[A-Za-z_]\w*=", w)]
    except ValueError:
        words = []
    if words and re.match(r"^python[\d.]*$", os.path.basename(words[0])):
        first = words[0]
        if "/" in first:
            return os.path.join(entry["cwd"], first) if not first.startswith("/") else first
        return shutil.which(first, path=env.get("PATH")) or first
    return shutil.which("python3", path=env.get("PATH"))


PROBE = r"""
import json, platform, sys
try:
    from importlib import metadata
except ImportError:
    metadata = None
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name.replace("_", "-")) if metadata else None
    except Exception:
        try:
            versions[name] = metadata.version(name)
        except Exception:
            pass
print(json.dumps({"executable": sys.executable, "version": platform.python_version(),
                  "implementation": platform.python_implementation(), "packages": versions}))
"""


def probe_interpreter(entry, env):
    """{executable, version, packages} of the run's python, asked in a subprocess in the run's
    environment (short timeout); {"error": why} when there is none or it does not answer."""
    python = run_python(entry, env)
    if not python:
        return {"error": "no python on the run's PATH"}
    try:
        done = subprocess.run([python, "-c", PROBE] + list(PACKAGES), cwd=entry["cwd"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=PROBE_TIMEOUT_S, universal_newlines=True)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": "%s did not answer: %s" % (python, exc)}
    return found if isinstance(found, dict) else {"error": "%s answered no object" % python}


class BadOutput(ValueError):
    """A framework's output that cannot be turned into the contract's summary (bad_output)."""


def newest(paths):
    """The newest path, by modification time then name (lm-eval's names carry a timestamp)."""
    return max(paths, key=lambda p: (os.path.getmtime(p), p)) if paths else None


def files_below(run_dir, name_pattern):
    """Regular files below run_dir (not through links, not in attempts/ or .ops/) whose name matches."""
    pattern = re.compile(name_pattern)
    found = []
    for folder, dirs, names in os.walk(run_dir):
        if folder == run_dir:
            dirs[:] = [d for d in dirs if d not in ("attempts", RECORD_DIR)]
        found.extend(os.path.join(folder, n) for n in names
                     if pattern.match(n) and os.path.isfile(os.path.join(folder, n))
                     and not os.path.islink(os.path.join(folder, n)))
    return found


def json_lines_of(path):
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise BadOutput("%s line %d is not JSON: %s" % (os.path.basename(path), number, exc))
    return rows


def number(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def convert_verifiers(run_dir, metric=None):
    """vf-eval 0.4's traces.jsonl -> (summary, results): one result per example (the task's id,
    not the rollout's), its rollouts grouped; a rollout's reward is the sum of score x weight; ok
    is false when any rollout errored (vf-eval exits 0 regardless)."""
    traces = newest(files_below(run_dir, r"^traces\.jsonl$"))
    if traces is None:
        raise BadOutput("no traces.jsonl below the run directory (vf-eval ... -o {run_dir})")
    examples, order, errored, model_id, env_id = {}, [], 0, None, None
    for number_, episode in enumerate(json_lines_of(traces), 1):
        task = (episode.get("task") or {}).get("data") if isinstance(episode, dict) else None
        if not isinstance(task, dict) or not isinstance(task.get("id"), (str, int)):
            raise BadOutput("traces.jsonl line %d has no task.data.id" % number_)
        trace = (episode.get("traces") or [{}])[0] if isinstance(episode.get("traces"), list) else {}
        trace = trace if isinstance(trace, dict) else {}
        failed = episode.get("ok") is False or bool(trace.get("errors")) or bool(episode.get("errors"))
        rewards = trace.get("rewards") if isinstance(trace.get("rewards"), dict) else {}
        parts = [(number(r.get("score")), number(r.get("weight", 1.0))) for r in rewards.values() if isinstance(r, dict)]
        if any(score is None or weight is None for score, weight in parts):
            raise BadOutput("traces.jsonl line %d: a reward without a numeric score and weight" % number_)
        reward = None if failed or not parts else sum(score * weight for score, weight in parts)
        errors = [e.get("type") or e.get("message") for e in (trace.get("errors") or []) if isinstance(e, dict)]
        errored += bool(failed)
        key = str(task["id"])
        if key not in examples:
            order.append(key)
            examples[key] = {"id": key, "index": task.get("idx"), "rollouts": []}
        examples[key]["rollouts"].append({"reward": reward, "ok": not failed, "errors": errors,
                                          "stop": trace.get("stop_condition")})
        model_id = model_id or ((trace.get("agent") or {}).get("config") or {}).get("model")
        env_id = env_id or (episode.get("env") or {}).get("id")
    if not examples:
        raise BadOutput("traces.jsonl holds no rollouts")
    resolved = read_json(os.path.join(os.path.dirname(traces), "configs", "resolved", "eval.json")) or {}
    counts = {len(e["rollouts"]) for e in examples.values()}
    per_example = resolved.get("num_rollouts") if isinstance(resolved, dict) else None
    results = []
    for key in sorted(order, key=natural_key):
        example = examples[key]
        scored = [r["reward"] for r in example["rollouts"] if r["reward"] is not None]
        example["reward"] = sum(scored) / len(scored) if scored else None
        example["n_rollouts"] = len(example["rollouts"])
        results.append(example)
    means = [e["reward"] for e in results if e["reward"] is not None]
    summary = {
        "ok": errored == 0 and bool(means), "avg_reward": sum(means) / len(means) if means else None,
        "num_examples": len(results),
        "rollouts_per_example": per_example if number(per_example) else (counts.pop() if len(counts) == 1 else None),
        "num_rollouts": sum(e["n_rollouts"] for e in results), "errored_rollouts": errored,
        "model_id": model_id or (resolved.get("model") if isinstance(resolved, dict) else None),
        "env_id": env_id, "summary_from": "verifiers", "source": os.path.relpath(traces, run_dir),
    }
    if errored:
        summary["failure_class"] = "rollouts_errored"
    return summary, results


def natural_key(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(text))]


def convert_lm_eval(run_dir, metric=None):
    """lm-eval 0.4's newest results_<time>.json and its samples_<task>_<time>.jsonl -> (summary,
    results): one metric and filter (`metric` as "name" or "name,filter", else the task's
    first), its stderr kept; each document's id is its own `id` when it has one, else doc_id."""
    found = files_below(run_dir, r"^results_.+\.json$")
    results_file = max(found, key=lambda p: (os.path.basename(p), os.path.getmtime(p))) if found else None
    if results_file is None:
        raise BadOutput("no results_*.json below the run directory (lm_eval --output_path {run_dir}/... --log_samples)")
    data = read_json(results_file)
    tasks = data.get("results") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise BadOutput("%s has no results" % os.path.basename(results_file))
    task = next(iter(tasks))
    scores = tasks[task] if isinstance(tasks[task], dict) else {}
    keys = [k for k in scores if "," in k and "_stderr," not in k and number(scores[k]) is not None]
    wanted = [k for k in keys if metric in (k, k.split(",")[0])] if metric else keys
    if not wanted:
        raise BadOutput("%s: task %s has no metric %s (it has %s)" % (
            os.path.basename(results_file), task, metric or "", ", ".join(keys) or "none"))
    name, filter_name = wanted[0].split(",", 1)
    stamp = os.path.basename(results_file)[len("results_"):-len(".json")]
    samples_file = os.path.join(os.path.dirname(results_file), "samples_%s_%s.jsonl" % (task, stamp))
    if not os.path.isfile(samples_file):
        raise BadOutput("no %s beside %s (run lm_eval with --log_samples)" % (
            os.path.basename(samples_file), os.path.basename(results_file)))
    results = []
    for row in json_lines_of(samples_file):
        if not isinstance(row, dict) or row.get("filter", filter_name) != filter_name:
            continue
        doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
        own_id = doc.get("id")
        value = number(row.get(name))
        if value is None:
            raise BadOutput("%s: doc_id %s has no numeric %s" % (os.path.basename(samples_file), row.get("doc_id"), name))
        results.append({"id": str(own_id) if isinstance(own_id, (str, int)) else row.get("doc_id"),
                        "doc_id": row.get("doc_id"), "reward": value, name: value, "target": row.get("target"),
                        "filtered_resps": row.get("filtered_resps"), "filter": filter_name})
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = config.get("model_args")
    model_id = model_args.get("model") if isinstance(model_args, dict) else None
    if model_id is None and isinstance(model_args, str):
        found_model = re.search(r"(?:^|,)(?:model|pretrained)=([^,]+)", model_args)
        model_id = found_model.group(1) if found_model else None
    samples = (data.get("n-samples") or {}).get(task) or {}
    summary = {
        "ok": True, "avg_reward": scores[wanted[0]], "metric": name, "filter": filter_name,
        "metric_stderr": number(scores.get("%s_stderr,%s" % (name, filter_name))),
        "num_examples": samples.get("effective", len(results)) if isinstance(samples, dict) else len(results),
        "model_id": model_id or data.get("model_name"), "env_id": task, "tasks": list(tasks),
        "lm_eval_version": data.get("lm_eval_version"), "summary_from": "lm_eval",
        "source": os.path.relpath(results_file, run_dir),
    }
    return summary, results


CONVERTERS = {"verifiers": convert_verifiers, "lm_eval": convert_lm_eval}

PYTHON_CONVERTER = r"""
import importlib, json, sys
module, function, run_dir, out = sys.argv[1:5]
sys.path.insert(0, ".")
answer = getattr(importlib.import_module(module), function)(run_dir)
summary, results = (answer if isinstance(answer, (tuple, list)) and len(answer) == 2 else (answer, None))
with open(out, "w") as handle:
    json.dump({"summary": summary, "results": None if results is None else list(results)}, handle)
"""


def convert_with_python(entry, env, spec):
    """summary_from python:module:function: the user's function, called with the run directory
    by the run's own python in its cwd and environment (a subprocess, in the run's Conversion); it
    returns a summary dict or (summary, results)."""
    module, function = PYTHON_SUMMARY.match(spec).groups()
    python = run_python(entry, env) or "python3"
    out = record_path(entry["run_dir"], "converted.json")
    try:
        # Inside a Conversion, whose deadline stops it and all it started; this later one holds
        # only when no supervisor is left to (it died hard while the function ran).
        done = subprocess.run([python, "-c", PYTHON_CONVERTER, module, function, entry["run_dir"], out],
                              cwd=entry["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=convert_deadline(entry) + CHILD_DEADLINE_GRACE_S)
    except subprocess.TimeoutExpired:
        raise BadOutput("%s did not return within %.0fs" % (spec, convert_deadline(entry)))
    except OSError as exc:
        raise BadOutput("%s could not run: %s" % (spec, exc))
    if done.returncode != 0:
        lines = (done.stdout or "").strip().splitlines()
        raise BadOutput("%s failed: %s" % (spec, lines[-1][-300:] if lines else "exit %d" % done.returncode))
    answer = read_json(out)
    remove_quietly(out)
    if not isinstance(answer, dict):
        raise BadOutput("%s returned nothing JSON can hold" % spec)
    return answer.get("summary"), answer.get("results")


def convert_summary(entry, env):
    """summary_from after the command exited 0: writes summary.json and results.jsonl from the
    framework's own output (never over a summary.json the command wrote). Returns None, or the
    reason the conversion failed (the run fails with class bad_output)."""
    spec, run_dir = entry.get("summary_from"), entry["run_dir"]
    if not spec or os.path.lexists(os.path.join(run_dir, "summary.json")):
        return None
    try:
        if spec in CONVERTERS:
            summary, results = CONVERTERS[spec](run_dir, entry.get("summary_metric"))
        else:
            summary, results = convert_with_python(entry, env, spec)
        if not isinstance(summary, dict):
            raise BadOutput("%s gave a %s, not a summary object" % (spec, type(summary).__name__))
        if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) for r in results)):
            raise BadOutput("%s gave results that are not a list of objects" % spec)
        summary.setdefault("ok", True)
        summary.setdefault("run_id", entry["run_id"])
        if results is not None and not os.path.lexists(os.path.join(run_dir, "results.jsonl")):
            write_text(os.path.join(run_dir, "results.jsonl"),
                       "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in results))
        write_json(os.path.join(run_dir, "summary.json"), summary)
    except (BadOutput, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full volume: the end is written again later, not judged
        return "summary_from %s: %s" % (spec, exc)
    return None


CHILD_DEADLINE_GRACE_S = 5.0  # a conversion's own deadlines, after the supervisor's


def convert_deadline(entry):
    """Seconds a run's summary_from conversion may take: its summary_timeout, else CONVERT_TIMEOUT_S."""
    return entry.get("summary_timeout") or CONVERT_TIMEOUT_S


# The child a Conversion starts: this very file imported by path (stdin: the run's entry and env,
# which may hold secrets: never argv), convert_summary's answer written to a file of .ops/.
CONVERSION_CHILD = r"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("ops_runs_conversion", sys.argv[1])
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)
tool.conversion_child(sys.argv[2])
"""


def conversion_child(answer_path):
    """In the child: convert_summary of the entry on stdin, its answer into answer_path; a full
    volume is answered as `retry` (the end is judged again later, as before)."""
    request = json.load(sys.stdin)
    # A backstop: the supervisor ends a conversion at its deadline, unless it is gone itself.
    signal.alarm(int(convert_deadline(request["entry"]) + 2 * CHILD_DEADLINE_GRACE_S))
    try:
        answer = {"problem": convert_summary(request["entry"], request["env"])}
    except OSError as exc:
        answer = {"retry": "%s" % exc}
    with open(answer_path, "w") as handle:
        json.dump(answer, handle)


class Conversion:
    """A run's summary_from conversion in a child process of its own session, with its own
    deadline (convert_deadline), so the supervisor's loop goes on (other runs' timeouts, stalls,
    heartbeats, cancels) while a converter works or hangs. A run with nothing to convert is done
    at once. poll() is PENDING until the child ends; then None or the problem (bad_output)."""

    PENDING = object()

    def __init__(self, entry, env):
        self.entry, self.env, self.spec = entry, env, entry.get("summary_from")
        run_dir = entry["run_dir"]
        self.absent = [n for n in ("summary.json", "results.jsonl") if not os.path.lexists(os.path.join(run_dir, n))]
        self.needed = bool(self.spec) and "summary.json" in self.absent
        self.answer_path, self.log_path = record_path(run_dir, "conversion.json"), record_path(run_dir, "conversion.log")
        self.proc = self.deadline = None
        if self.needed:
            self.start()

    def start(self):
        remove_quietly(self.answer_path)
        self.deadline = time.monotonic() + convert_deadline(self.entry)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable or "python3", "-c", CONVERSION_CHILD, os.path.abspath(__file__), self.answer_path],
                stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/", start_new_session=True,
                universal_newlines=True)
        try:
            self.proc.stdin.write(json.dumps({"entry": self.entry, "env": self.env}))
            self.proc.stdin.close()
        except OSError:
            pass  # the child died at once: its exit says so

    def poll(self):
        if not self.needed:
            return None
        if self.proc is None:
            self.start()  # after a full volume: tried again
        code = self.proc.poll()
        if code is None:
            if time.monotonic() < self.deadline:
                return self.PENDING
            self.stop()
            return "summary_from %s: did not finish within its deadline of %.0fs (summary_timeout)" % (
                self.spec, convert_deadline(self.entry))
        answer = read_json(self.answer_path)
        remove_quietly(self.answer_path)
        if isinstance(answer, dict) and answer.get("retry"):
            self.proc = None
            raise OSError(errno.ENOSPC, "summary_from %s: %s" % (self.spec, answer["retry"]))
        if not isinstance(answer, dict) or "problem" not in answer:
            return "summary_from %s: the conversion exited %s without an answer: %s" % (
                self.spec, code, tail_text(self.log_path, 1).strip()[-300:] or "no output")
        remove_quietly(self.log_path)
        return answer["problem"]

    def stop(self):
        """The child and whatever it started (a python: converter's own process), by its session."""
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def last_json_line(path, window=64 * 1024):
    """The last non-empty line of a JSON-lines file (from its last `window` bytes), whole: a step
    with many metrics is longer than last_line's 300 characters."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - window))
            lines = [line for line in handle.read().split(b"\n") if line.strip()]
    except OSError:
        return None
    return lines[-1].decode("utf-8", "replace") if lines else None


def metric_step(match):
    """A metrics_from_log match as a step: numbers where the text is one."""
    step = {}
    for name, text in match.groupdict().items():
        if text is None:
            continue
        try:
            step[name] = int(text) if re.match(r"^[+-]?\d+$", text) else float(text)
        except ValueError:
            step[name] = text
    return step


class MetricsWatch:
    """A run's latest logged step: the last line of its metrics.jsonl (the script's), else the
    last metrics_from_log match in stdout.log, read incrementally."""

    def __init__(self, run_dir, log_path, pattern):
        self.run_dir, self.log_path = run_dir, log_path
        self.pattern = re.compile(pattern) if pattern else None
        self.offset, self.partial, self.latest = 0, b"", None

    def look(self):
        own = last_json_line(os.path.join(self.run_dir, "metrics.jsonl"))
        if own:
            try:
                step = json.loads(own)
            except ValueError:
                step = None
            if isinstance(step, dict):
                self.latest = step
                return self.latest
        if self.pattern is None:
            return self.latest
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(METRICS_CHUNK)
        except OSError:
            return self.latest
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        for line in reversed(lines):
            match = self.pattern.search(line.decode("utf-8", "replace"))
            if match:
                self.latest = metric_step(match)
                break
        return self.latest

    def write_curve(self):
        """metrics.jsonl from the whole log, when the script wrote none: True when written."""
        path = os.path.join(self.run_dir, "metrics.jsonl")
        if self.pattern is None or os.path.lexists(path):
            return False
        steps = []
        with open(self.log_path, "rb") as handle:
            for line in handle:
                match = self.pattern.search(line.decode("utf-8", "replace"))
                if match:
                    steps.append(json.dumps(metric_step(match), sort_keys=True) + "\n")
        if steps:
            write_text(path, "".join(steps))
            self.latest = json.loads(steps[-1])
        return bool(steps)


# ---------------------------------------------------------------- submit


def submit(request):
    runs = [dict(run, run_id=check_run(run.get("run_id"), run.get("run_dir"), request["outputs_dir"])[0])
            for run in request["runs"]]
    for run in runs:
        problem = workload_problem(run)
        if problem:
            raise BadRequest("%s: %s" % (run["run_id"], problem))
    store = Store(request["outputs_dir"], create=True)
    if not request.get("foreground") and not shutil.which("tmux"):
        # Before anything is queued: runs nobody will start must not block later submissions.
        return {"error": "tmux is not installed on this pod: install it, or submit with --no-tmux"}
    submission_id = request["submission_id"]
    force, retry_failed = request.get("force"), request.get("retry_failed")
    queued, skipped, refused = [], [], []
    secrets = {}
    repos = {cwd: git_facts(cwd) for cwd in {run.get("cwd") for run in runs} if isinstance(cwd, str)}
    with store.queue_lock(), BatchedSync():
        supervisor = store.supervisor_alive()
        entries = store.queued()
        waiting = store.waiting_ids(entries)
        identities = {e["run_id"]: e.get("identity") for e in entries}
        for run in runs:
            run_id, run_dir = run["run_id"], run["run_dir"]
            decision = admission(run, supervisor, waiting, force, retry_failed, identities)
            if decision[0] == "skip":
                skipped.append({"run_id": run_id, "reason": decision[1]})
                continue
            pinned, source = commit_pin(run, request, repos.get(run.get("cwd")) or {})
            problem = pin_problem(pinned, source, repos.get(run.get("cwd")) or {}, run.get("cwd"))
            if decision[0] == "refuse" or problem:
                refused.append({"run_id": run_id, "reason": decision[1] or problem})
                continue
            run = dict(run, expect_commit=pinned, expect_commit_source=source)
            try:
                queued.append(queue_run(store, run, request, secrets))
            except OSError as exc:  # a full volume: this run is refused, the others go on
                refused.append({"run_id": run_id, "reason": "could not be queued: %s" % exc})
        store.save_secret_env(submission_id, secrets)
        if request.get("slots") and not request.get("foreground"):
            store.write_slots(request["slots"])
        manifest = {
            "submission_id": submission_id, "host": request.get("host"), "submitted_at": now(),
            "outputs_dir": store.root, "tmux_session": request.get("tmux_session"),
            "runs": [{"run_id": r["run_id"], "run_dir": r["run_dir"]} for r in runs],
            "queued": [q["run_id"] for q in queued], "skipped": skipped, "refused": refused,
        }
        write_json(store.path("submissions", submission_id + ".json"), with_earlier_runs(store, manifest))
    result = {"queued": queued, "skipped": skipped, "refused": refused}
    if request.get("capacity"):  # the laptop prices runs: their share is of what is handed out here
        result["capacity"] = pod_capacity(store, request)
    if request.get("foreground"):
        result.update(run_in_foreground(store, request))
    elif queued or store.queued():
        result["supervisor"] = ensure_supervisor(store, request)
    return result


def queue_run(store, run, request, secrets):
    """Queue one admitted run (under the queue lock): its earlier files archived, its status
    queued, its queue entry written. A write that fails undoes what this run changed."""
    run_id, run_dir = run["run_id"], run["run_dir"]
    created = not os.path.isdir(run_dir)
    makedirs(run_dir)
    # A lost run's processes may still run (its supervisor was killed): stop them first.
    stop_leftover_group(read_status(run_dir) or {})
    archived = archive_attempt(run_dir)
    entry = dict(run, env=masked_env(run["env"]), submission_id=request["submission_id"],
                 fail_fast=bool(request.get("fail_fast")), retries_used=0,
                 attempt=attempts_done(run_dir) + 1, queued_at=now(), not_before=0,
                 host=request.get("host"), tmux_session=request.get("tmux_session"))
    queue_file = None
    try:
        queue_file = store.enqueue(entry)
        set_attempt_state(entry, "queued", queued_at=entry["queued_at"])
    except OSError:
        if queue_file:
            remove_quietly(queue_file)
        if archived:
            restore_attempt(run_dir, archived)
        if created:
            try:
                os.rmdir(run_dir)
            except OSError:
                pass
        raise
    run_secrets = {k: v for k, v in run["env"].items() if is_secret(k)}
    if run_secrets:
        secrets[run_id] = run_secrets
    return {"run_id": run_id, "run_dir": run_dir, "archived_attempt": archived}


def pod_capacity(store, request):
    """{"gpus", "slots"} the runs share: the live supervisor's (supervisor.json), else the GPUs
    nvidia-smi lists and the CPU slots a new supervisor would take."""
    info = read_json(store.path("supervisor.json")) if store.supervisor_alive() else None
    if isinstance(info, dict) and isinstance(info.get("slots"), list):
        return {"gpus": len(info["slots"]) if info.get("gpus") else 0, "slots": len(info["slots"])}
    gpus = len(detect_gpus())
    return {"gpus": gpus, "slots": gpus or request.get("slots") or store.read_slots() or 1}


def ensure_supervisor(store, request):
    """Start a supervisor in the tmux session unless one runs, and see that it came up.

    Two racing starts are harmless: the second cannot take the lock and exits.
    """
    if store.supervisor_alive():
        return "running" + slots_note(store, request)
    tmux = ["tmux"] + (["-L", request["tmux_socket"]] if request.get("tmux_socket") else [])
    session = request.get("tmux_session") or "pilots"
    args = json.dumps({"outputs_dir": store.root, "slots": request.get("slots") or store.read_slots() or 1})
    command = "exec python3 %s supervise %s" % (shlex.quote(os.path.abspath(__file__)), shlex.quote(args))
    try:
        exists = subprocess.run(tmux + ["has-session", "-t", "=" + session], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
        if exists:
            argv = tmux + ["new-window", "-d", "-t", "=" + session + ":", "-n", "supervisor", command]
        else:
            argv = tmux + ["new-session", "-d", "-s", session, "-n", "supervisor", command]
        started = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except OSError as exc:
        return "failed to start: %s" % exc
    # A racing submission may have started one first (tmux then says "duplicate session"):
    # what counts is whether a supervisor runs, whoever started it.
    deadline = now() + 5
    while now() < deadline:
        if store.supervisor_alive():
            if started.returncode != 0:
                return "already running (started by another submission)" + slots_note(store, request)
            return "started in tmux session %s" % session
        time.sleep(0.05)
    if started.returncode != 0:
        return "failed to start: " + (started.stderr.strip() or "tmux exited %d" % started.returncode)
    return "failed to start: see %s" % store.path("supervisor.log")


def slots_note(store, request):
    """What --slots does to a supervisor that already runs: it re-reads .ops/slots each loop."""
    if not request.get("slots"):
        return ""
    info = read_json(store.path("supervisor.json")) or {}
    if isinstance(info, dict) and info.get("gpus"):
        return "; --slots %d does not apply: its runs share the pod's %d GPUs" % (
            request["slots"], len(info.get("slots") or []))
    return "; slots now %d (it reads them again each loop)" % request["slots"]


def run_in_foreground(store, request):
    """--no-tmux: supervise here, over the connection; if a supervisor already runs, wait for it."""
    outcome = supervise({"outputs_dir": store.root, "slots": request.get("slots") or store.read_slots() or 1,
                         "foreground": True})
    if not outcome.get("started"):
        print("a supervisor is already running on this pod: waiting for it", file=sys.stderr, flush=True)
    waited = wait({"outputs_dir": store.root, "submission_id": request["submission_id"]})
    return {"foreground": True, "runs": waited["runs"]}


def admission(run, supervisor_alive, waiting, force, retry_failed, identities=None):
    """("queue"|"skip"|"refuse", reason) for one run, under the queue lock. identities: the
    queue's entries' ({run id: identity}), for a run not started yet."""
    run_dir = run["run_dir"]
    status = read_status(run_dir)
    state = effective_state(status, supervisor_alive, waiting)
    # A run id names one run: the same id with another command or config is another run, never
    # "done" (a campaign reusing ids); --force archives the old one and runs the new.
    difference = None if status is None or force else identity_difference(
        run_dir, run.get("identity"), (identities or {}).get(run["run_id"]))
    if difference:
        return "refuse", ("already on the pod (%s) with another config: %s; give it another run_id, or --force "
                          "(the old attempt is kept in attempts/)" % (state, difference))
    if state in ACTIVE:
        return "skip", "already %s (attempt %s)" % (state, status.get("attempt"))
    if state == "succeeded" and not force:
        return "skip", "succeeded"
    if state in FAILED and not (force or retry_failed):
        return "refuse", "%s (%s): use --retry-failed or --force" % (state, (status or {}).get("failure_class") or state)
    # --force archives only what the supervisor wrote: anything else is the user's, never moved.
    if (status is None and has_files(run_dir)) or (status is not None and not owned_by_tool(status, run_dir)):
        return "refuse", ("its directory %s holds files ops-tasks did not write (no status.json of its "
                          "supervisor): nothing was moved; move them away or pick another run_dir" % run_dir)
    return "queue", None


# What an interrupted atomic write of ours may leave (a kill between open and rename).
OUR_TEMPORARY = re.compile(r"^(status|summary|run_metadata)\.json\.tmp\.\d+$|^command\.sh\.tmp\.\d+$")


def has_files(run_dir):
    try:
        return any(not n.startswith(".") and not OUR_TEMPORARY.match(n) for n in os.listdir(run_dir))
    except OSError:
        return False


def effective_state(status, supervisor_alive, waiting=None):
    """A run's state as it really is. `running` with no supervisor alive, or `queued`/`running`
    with no queue or active entry behind it, is `lost`: nobody will run or watch it."""
    if not status:
        return None
    state = status.get("state")
    if state == "running" and not supervisor_alive:
        return "lost"
    if state in ACTIVE and waiting is not None and status.get("run_id") not in waiting:
        return "lost"
    return state


# ---------------------------------------------------------------- the supervisor


class Running:
    """A run the supervisor started: its process, GPUs and deadlines (monotonic clock: a wall
    clock that jumps must not time a run out)."""

    def __init__(self, entry, proc, gpus, log_path):
        self.entry = entry
        self.proc = proc
        self.gpus = gpus
        self.log_path = log_path
        self.marker = owner_marker(entry["run_id"], entry["submission_id"], entry["attempt"])
        self.started = now()
        self.started_mono = self.last_output_mono = time.monotonic()
        self.last_output = self.started
        self.last_size = 0
        self.last_heartbeat = 0
        self.kill_reason = None  # timeout | stalled | cancelled
        self.kill_deadline = None
        self.stop_stages = stop_stages(entry)  # [(signal, grace after it)]: stop_signal, TERM, KILL
        work_dir = work_dir_of(entry)
        self.metrics = MetricsWatch(work_dir or entry["run_dir"], log_path, entry.get("metrics_from_log"))
        self.sync = LocalSync(work_dir, entry["run_dir"], entry["sync_interval"]) if work_dir else None
        self.metrics_at = 0.0  # monotonic time the latest step was last written into status.json
        self.env = {}  # the run's full environment (a summary_from python:... runs in it)
        self.ours = {}  # {contract file: sha256} of what the supervisor wrote
        self.record = {}  # .ops/record.json as written at start
        self.ended = None  # (exit code, finished at, log tail) once it exited: kept while its status waits to be written
        self.conversion = None  # its summary_from Conversion, once the command exited 0
        self.judged = None  # (state, failure class, error), once judged
        self.survivors = []


class Supervisor:
    def __init__(self, store, slots=1, foreground=False):
        self.store = store
        self.lock = Lock(store.path("supervisor.lock"))
        self.slots = slots
        self.gpu_ids, self.capacity = [], []
        self.running = {}
        self.unstarted = {}  # run_id -> (entry, class, reason): a failure whose status waits to be written
        self.claim_after = {}  # run_id -> monotonic time: a start that failed to write is tried again then
        self.foreground = foreground
        self.stopping = False
        self.log_file = open(store.path("supervisor.log"), "a")

    def say(self, message):
        line = "%s %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message)
        try:
            self.log_file.write(line + "\n")
            self.log_file.flush()
        except OSError:
            pass  # a full volume: the line is lost, the supervisor goes on
        try:
            print(line, file=sys.stderr if self.foreground else sys.stdout, flush=True)
        except OSError:
            # --no-tmux and the laptop went away: keep supervising, the log has it all.
            self.foreground = False

    def take_lock(self):
        """The supervisor lock, retried for a while: a status probe may hold it an instant."""
        deadline = now() + 5
        while not self.lock.acquire(blocking=False):
            if now() > deadline:
                return False
            time.sleep(0.05)
        return True

    def run(self):
        if not self.take_lock():
            self.say("supervisor %d: another supervisor is running; this one exits" % os.getpid())
            return {"started": False, "reason": "another supervisor is running"}
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        # After the lock: whoever started us sees us alive at once; nvidia-smi can be slow.
        self.gpu_ids = detect_gpus()
        self.slots = self.store.read_slots() or self.slots
        self.capacity = list(self.gpu_ids) if self.gpu_ids else cpu_slots(self.slots)
        self.guarded(self.write_info)
        self.say("supervisor %d up: %s" % (os.getpid(), ", ".join(
            ("GPU %s" % s) if self.gpu_ids else s for s in self.capacity)))
        crashed = False
        try:
            self.guarded(self.mark_orphans_lost)
            idle_since = None
            while not self.stopping:
                for step in (self.refresh_slots, self.write_unstarted, self.handle_cancels, self.watch,
                             self.start_ready):
                    self.guarded(step)
                if self.running or self.unstarted or self.store.queued():
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= IDLE_EXIT_S and self.guarded(self.exit_if_idle):
                    break
                time.sleep(POLL_S)
        except BaseException:
            crashed = True
            raise
        finally:
            if self.stopping or crashed:
                self.abandon_all()
            self.lock.release()
        return {"started": True}

    def write_info(self):
        write_json(self.store.path("supervisor.json"), {
            "pid": os.getpid(), "started": now(), "hostname": socket.gethostname(), "tool": TOOL_VERSION,
            "slots": self.capacity, "gpus": bool(self.gpu_ids)})

    def guarded(self, step):
        """One step of the loop; an error in it is logged, and the supervisor goes on (its runs
        would otherwise go on unwatched). Returns the step's result (None after an error)."""
        try:
            return step()
        except Exception as exc:
            if isinstance(exc, OSError):  # a full volume, most likely: one line, tried again
                self.say("%s: could not write (tried again): %s" % (step.__name__, exc))
            else:
                import traceback

                self.say("error in %s (the supervisor goes on):\n%s" % (step.__name__, traceback.format_exc()))
            time.sleep(1)
            return None

    def _on_signal(self, signum, frame):
        self.stopping = True

    def exit_if_idle(self):
        """Exit only while holding the queue lock, so a submission never lands unseen."""
        with self.store.queue_lock():
            if self.store.queued() or self.running or self.unstarted:
                return False
            self.say("queue empty: supervisor exits")
            self.lock.release()
            return True

    def refresh_slots(self):
        """runs.submit --slots N on a pod without GPUs: the new count applies from this loop on
        (runs above it finish where they are; no new one starts there)."""
        slots = self.store.read_slots()
        if self.gpu_ids or not slots or slots == len(self.capacity):
            return
        self.say("slots: %d -> %d (runs.submit --slots)" % (len(self.capacity), slots))
        self.slots, self.capacity = slots, cpu_slots(slots)
        self.guarded(self.write_info)

    def free_slots(self):
        busy = {s for r in self.running.values() for s in r.gpus}
        return [s for s in self.capacity if s not in busy]

    def mark_orphans_lost(self):
        """Runs in active/ belonged to a supervisor that died: stop what is left of them (it would
        hold GPUs this supervisor hands out) and mark them lost for runs.resume."""
        with self.store.queue_lock():
            for entry in self.store.active():
                run_dir = entry["run_dir"]
                status = read_status(run_dir) or {}
                if stop_leftover_group(status):
                    self.say("%s: stopped what its dead supervisor left running" % entry["run_id"])
                if status.get("state") == "running":
                    set_state(run_dir, entry["run_id"], "lost", kept=status, failure_class="lost", finished=now())
                    self.say("%s: lost (its supervisor died)" % entry["run_id"])
                remove_quietly(self.store.path("active", entry["run_id"] + ".json"))

    # -- starting

    def start_ready(self):
        for entry, slots in self.claim_ready():
            try:
                self.launch(entry, slots)
            except OSError as exc:
                # Nothing started (a full volume, say): the run goes back to the queue, as it was.
                self.unclaim(entry, exc)
            except Exception:
                self.running.pop(entry["run_id"], None)
                self.end_unstarted(entry, "exit_nonzero", "could not start: %s" % sys.exc_info()[1])
                raise

    def claim_ready(self):
        """Claim the runs that fit, under the queue lock: a cancel or a submission sees each run
        either queued or claimed, never half of it. The queue entry stays until the run starts,
        so a claim that could not be written (or a start that failed) leaves it queued."""
        claimed = []
        with self.store.queue_lock():
            free = self.free_slots()
            for entry in self.store.queued():
                run_id = entry["run_id"]
                if entry.get("not_before", 0) > now() or run_id in self.running or run_id in self.unstarted:
                    continue
                if self.claim_after.get(run_id, 0) > time.monotonic():
                    continue
                need = entry.get("gpus")
                need = (len(self.gpu_ids) if need is None else need) if self.gpu_ids else 1
                if need > len(self.capacity):
                    self.end_unstarted(entry, "unschedulable",
                                       "needs %d GPUs, the pod has %d" % (need, len(self.capacity)))
                    remove_quietly(entry["_file"])
                    continue
                if need > len(free):
                    continue  # first fit: a later, smaller run may use what is free
                try:
                    write_json(self.store.path("active", run_id + ".json"),
                               {k: v for k, v in entry.items() if k != "_file"})
                    set_attempt_state(entry, "running", started=now(), supervisor_pid=os.getpid())
                except OSError as exc:
                    self.unclaim(entry, exc)
                    continue
                slots, free = free[:need], free[need:]
                claimed.append((entry, slots))
        return claimed

    def unclaim(self, entry, exc):
        """A claim or start that could not be written: the run is queued again (its queue entry
        never went), tried again after WRITE_RETRY_S."""
        run_id = entry["run_id"]
        self.running.pop(run_id, None)
        self._drop_active(run_id)
        self.claim_after[run_id] = time.monotonic() + WRITE_RETRY_S
        try:
            set_attempt_state(entry, "queued", queued_at=entry.get("queued_at") or now())
        except OSError:
            pass  # its status may say running a while: the queue entry is what counts, and it is there
        self.say("%s: could not start (%s): queued again" % (run_id, exc))

    def end_unstarted(self, entry, klass, reason):
        """A claimed or queued run that cannot start: failed, with its reason, contract complete.
        Written now or, on a full volume, by a later loop (write_unstarted) until it is."""
        run_id = entry["run_id"]
        self.unstarted[run_id] = (entry, klass, reason)
        makedirs(entry["run_dir"])
        set_attempt_state(entry, "failed", failure_class=klass, error=reason, finished=now())
        if entry.get("_file"):
            remove_quietly(entry["_file"])
        self._drop_active(run_id)
        del self.unstarted[run_id]
        self.say("%s: failed: %s" % (run_id, reason))

    def write_unstarted(self):
        for entry, klass, reason in list(self.unstarted.values()):
            self.end_unstarted(entry, klass, reason)

    def launch(self, entry, slots):
        run_id, run_dir = entry["run_id"], entry["run_dir"]
        makedirs(run_dir)
        gpus = [s for s in slots if not str(s).startswith("cpu")]
        secrets = self.store.secret_env(entry["submission_id"], run_id)
        missing = [k for k, v in entry["env"].items() if v == MASK and k not in (secrets or {})]
        if missing:
            # Never run with "***" where a secret belongs (a new pod on the same volume, say).
            self.end_unstarted(entry, "secrets_missing", "secret env %s is gone from this pod "
                                                         "(~/.ops/runs/env): submit again" % ", ".join(missing))
            return
        # The repo may have moved since the run was queued (hours ago, by another submission).
        moved = pin_problem(entry.get("expect_commit"), entry.get("expect_commit_source"), git_facts(entry["cwd"]),
                            entry["cwd"]) if entry.get("expect_commit") else None
        if moved:
            self.end_unstarted(entry, "commit", moved)
            return
        work_dir = work_dir_of(entry)
        if work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)  # an earlier attempt's: it reached the volume then
            makedirs(work_dir)
        env = dict(entry["env"])
        env.update(secrets or {})
        env.update(OPS_RUN_ID=run_id, OPS_RUN_DIR=work_dir or run_dir, OPS_SUBMISSION_ID=entry["submission_id"],
                   PYTHONUNBUFFERED="1")
        if work_dir:
            env["OPS_VOLUME_RUN_DIR"] = run_dir
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        full_env = dict(os.environ)
        full_env.update(env)
        interpreter = probe_interpreter(entry, full_env) if os.path.isdir(entry["cwd"]) else {
            "error": "remote_repo %s does not exist" % entry["cwd"]}
        ours, record = write_contract_start(entry, env, gpus, interpreter)
        log_path = os.path.join(work_dir or run_dir, "stdout.log")
        if not os.path.isdir(entry["cwd"]):
            with open(log_path, "ab") as log:
                log.write(("ops-tasks: remote_repo %s does not exist on this pod\n" % entry["cwd"]).encode())
            self.end_unstarted(entry, "data", "remote_repo %s does not exist" % entry["cwd"])
            return
        run_env = dict(full_env)
        # The marker every process of this attempt inherits, even one that leaves its group.
        full_env["OPS_RUN_OWNER"] = owner_marker(run_id, entry["submission_id"], entry["attempt"])
        with open(log_path, "ab", buffering=0) as log:
            proc = subprocess.Popen(["bash", "-c", entry["command"]], cwd=entry["cwd"], env=full_env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        remove_quietly(entry["_file"])  # started: from now on its active entry and status say so
        entry = {k: v for k, v in entry.items() if k != "_file"}
        running = Running(entry, proc, slots, log_path)
        running.env, running.ours, running.record = run_env, ours, record
        self.running[run_id] = running
        self.claim_after.pop(run_id, None)
        self.say("%s: started (attempt %d, pid %d%s)" % (
            run_id, entry["attempt"], proc.pid, ", GPUs " + ",".join(map(str, gpus)) if gpus else ""))
        self.heartbeat(running, force=True)

    def heartbeat(self, running, force=False):
        if not force and time.monotonic() - running.last_heartbeat < HEARTBEAT_S:
            return
        running.last_heartbeat = time.monotonic()
        latest = {"metrics": running.metrics.latest} if running.metrics.latest is not None else {}
        try:
            set_attempt_state(running.entry, "running", pid=running.proc.pid, pgid=running.proc.pid,
                              pid_start=start_ticks_of(running.proc.pid), gpus=running.gpus,
                              started=running.started, last_output=running.last_output, heartbeat=now(),
                              supervisor_pid=os.getpid(), **latest)
        except OSError as exc:
            self.say("%s: heartbeat not written (tried again): %s" % (running.entry["run_id"], exc))

    # -- watching

    def watch(self):
        for run_id, running in list(self.running.items()):
            try:
                self.watch_one(running)
            except Exception as exc:
                # One run's trouble (its directory removed, the disk full) must not stop the rest;
                # a run that ended stays here until its end is written.
                if isinstance(exc, OSError):
                    self.say("%s: could not write its end (tried again): %s" % (run_id, exc))
                else:
                    import traceback

                    self.say("%s: error while watching it:\n%s" % (run_id, traceback.format_exc()))

    def watch_one(self, running):
        entry = running.entry
        try:
            size = os.path.getsize(running.log_path)
        except OSError:
            size = running.last_size
        if size != running.last_size:
            running.last_size, running.last_output = size, now()
            running.last_output_mono = time.monotonic()
        code = running.proc.poll()
        if code is not None:
            self.finish(running, code)
            return
        self.note_metrics(running)
        if running.sync is not None and running.sync.due():
            try:
                running.sync.sync()
            except OSError as exc:  # a full or slow volume: tried again at the next interval
                self.say("%s: local_sync to the volume failed (tried again): %s" % (entry["run_id"], exc))
        if running.kill_reason is None:
            if entry.get("timeout") and time.monotonic() - running.started_mono > entry["timeout"]:
                self.stop_run(running, "timeout")
            elif entry.get("stall_timeout") and time.monotonic() - running.last_output_mono > entry["stall_timeout"]:
                self.stop_run(running, "stalled")
        elif time.monotonic() > running.kill_deadline:
            self.next_stop_stage(running)
        self.heartbeat(running)

    def note_metrics(self, running):
        """The run's latest logged step into status.json (at most once a second), so runs.status
        shows it while the run goes."""
        if time.monotonic() - running.metrics_at < 1.0:
            return
        before = running.metrics.latest
        if running.metrics.look() != before:
            running.metrics_at = time.monotonic()
            self.heartbeat(running, force=True)

    def stop_run(self, running, reason):
        running.kill_reason = reason
        self.say("%s: %s: stopping its processes" % (running.entry["run_id"], reason))
        self.next_stop_stage(running)

    def next_stop_stage(self, running):
        """The next signal for a run being stopped: its stop_signal, TERM, then KILL, each after
        its grace; sent to its process group and what left it (found by its marker)."""
        if not running.stop_stages:
            kill_group(running.proc.pid, signal.SIGKILL)
            self.stop_marked(running, grace=0)
            running.kill_deadline = time.monotonic() + 1.0
            return
        sig, grace = running.stop_stages.pop(0)
        running.kill_deadline = time.monotonic() + grace
        self.say("%s: SIG%s to its processes (next step in %.0fs)" % (
            running.entry["run_id"], signal.Signals(sig).name[3:], grace))
        kill_group(running.proc.pid, sig)
        for pid in marked_pids(running.marker):  # and what left the group (setsid daemons)
            signal_quietly(pid, sig)

    def stop_marked(self, running, grace=2.0):
        """Stop the run's processes outside its group (setsid daemons), found by its marker."""
        stopped = kill_marked(running.marker, grace)
        if stopped:
            self.say("%s: stopped %d process(es) it left outside its process group: pids %s" % (
                running.entry["run_id"], len(stopped), ", ".join(map(str, stopped))))

    def handle_cancels(self):
        for name in self.store.names("cancel"):
            running = self.running.get(name)
            if running is not None and running.kill_reason is None and running.ended is None:
                self.stop_run(running, "cancelled")
            elif running is None:
                remove_quietly(self.store.path("cancel", name))

    def finish(self, running, code):
        """The run exited: stop what it left, judge it, write its end (or, on a full volume, keep
        it and try again next loop: its exit code and cause are kept until written)."""
        entry = running.entry
        run_id, run_dir = entry["run_id"], entry["run_dir"]
        if running.ended is None:
            # The command's children may live on in its group or outside it: they would keep
            # GPUs busy and write into a finished run's log.
            if group_alive(running.proc.pid):
                kill_group_fully(running.proc.pid, grace=2)
            self.stop_marked(running)
            running.survivors = self.survivors(running)
            running.ended = (code, now(), tail_text(running.log_path, 200))
        code, finished, log_tail = running.ended
        exit_code = code if code >= 0 else None
        sig = -code if code < 0 else None
        if running.judged is None:  # once: a conversion is not run again after a failed write
            running.judged = self.judge(running, code, log_tail)
        if running.judged is None:  # its conversion goes on: looked at again next loop, the others meanwhile
            self.heartbeat(running)
            return
        state, klass, error = running.judged
        extra = {key: value for key, value in (("error", error), ("metrics", running.metrics.latest),
                                                ("survivors", running.survivors)) if value}
        with self.store.queue_lock():
            status = set_attempt_state(entry, state, exit_code=exit_code, signal=sig, failure_class=klass,
                                       started=running.started, finished=finished, last_output=running.last_output,
                                       gpus=running.gpus, **extra)
            write_record_end(running, status)
            remove_quietly(self.store.path("cancel", run_id))
            del self.running[run_id]
            retried = state in RETRYABLE and self.retry(entry, klass, status)
            self._drop_active(run_id)
        if running.sync is not None:
            shutil.rmtree(running.sync.work_dir, ignore_errors=True)  # all of it is on the volume now
        if retried:
            return
        if state in COUNTS_AS_FAILURE and entry.get("fail_fast"):
            self.guarded(lambda: self.cancel_submission(entry["submission_id"], run_id))
        self.forget_secrets_when_done(entry["submission_id"])
        self.say("%s: %s%s (exit %s)" % (run_id, state, " [%s]" % klass if klass else "", exit_code if sig is None
                                          else "signal %d" % sig))

    def judge(self, running, code, log_tail):
        """(state, failure class, error) of a run that exited: its stop reason, else its exit code,
        its framework's output converted (summary_from) and its summary; None while the conversion
        goes on (a Conversion: a child with its own deadline). Also writes metrics.jsonl from the
        log when the script wrote none."""
        entry, run_dir = running.entry, running.entry["run_dir"]
        if running.conversion is None:
            wrote_curve = running.metrics.write_curve()
            running.metrics.look()
            if running.sync is not None:
                running.sync.sync()  # the last copy, before any verdict: the run is judged on the volume
            if wrote_curve:
                running.ours["metrics.jsonl"] = file_digest(os.path.join(run_dir, "metrics.jsonl"))
            if running.kill_reason in ("timeout", "stalled"):
                return running.kill_reason, running.kill_reason, None
            if running.kill_reason == "cancelled":
                return "cancelled", None, None
            if code != 0:
                return "failed", failure_class(code, log_tail, entry.get("command")), None
            running.conversion = Conversion(entry, running.env)
        problem = running.conversion.poll()
        if problem is Conversion.PENDING:
            if not os.path.exists(self.store.path("cancel", entry["run_id"])):
                return None
            running.conversion.stop()  # cancelled while converting
            return "cancelled", None, None
        for name in running.conversion.absent:
            if os.path.lexists(os.path.join(run_dir, name)):
                running.ours[name] = file_digest(os.path.join(run_dir, name))
        if problem:
            self.say("%s: %s" % (entry["run_id"], problem))
            return "failed", "bad_output", problem
        unmet = unmet_expectations(entry, run_dir)
        if unmet:
            return "failed", "expectation", "expect: " + "; ".join(unmet)
        ok, klass, _ = summary_verdict(run_dir)
        return ("succeeded" if ok else "failed"), klass, None

    def survivors(self, running):
        """Pids of the run's processes still alive after TERM and KILL (stuck in the kernel, say):
        said in the log and the status, never silently left."""
        left = marked_pids(running.marker)
        if left:
            self.say("%s: %d process(es) survived TERM and KILL: pids %s" % (
                running.entry["run_id"], len(left), ", ".join(map(str, left))))
        return left

    def retry(self, entry, klass, status):
        """Queue the next attempt when retries remain for this class (under the queue lock). A
        write that fails undoes the retry: the attempt's end stands, and is said."""
        retries, retry_on = entry.get("retries") or 0, entry.get("retry_on")
        used = entry.get("retries_used", 0)
        if used >= retries or (retry_on is not None and klass not in retry_on):
            return False
        run_dir = entry["run_dir"]
        backoff = (entry.get("retry_backoff") or 0) * (2 ** used)
        again = dict(entry, attempt=attempts_done(run_dir) + 2, retries_used=used + 1,
                     not_before=now() + backoff, retry_of=klass)
        queue_file = archived = None
        try:
            queue_file = self.store.enqueue(again)
            archived = archive_attempt(run_dir)
            set_attempt_state(again, "queued", queued_at=now(), retry_of=klass, not_before=again["not_before"])
        except OSError as exc:
            if queue_file:
                remove_quietly(queue_file)
            if archived:
                restore_attempt(run_dir, archived)
            self.say("%s: retry not queued (%s): it stays %s" % (entry["run_id"], exc, status["state"]))
            return False
        self.say("%s: %s [%s]: retry %d of %d in %.0fs" % (entry["run_id"], status["state"], klass,
                                                           used + 1, retries, backoff))
        return True

    def forget_secrets_when_done(self, submission_id):
        """A submission's secret env file goes once none of its runs waits or runs any more (a
        resume after that asks for a new submission, which brings the secrets again)."""
        if any(r.entry["submission_id"] == submission_id for r in self.running.values()):
            return
        with self.store.queue_lock():
            if any(e.get("submission_id") == submission_id for e in self.store.queued()):
                return
            remove_quietly(os.path.join(self.store.private, "env", submission_id + ".json"))

    def cancel_submission(self, submission_id, failed_run):
        """--fail-fast: the submission's runs still queued are cancelled, never started."""
        with self.store.queue_lock():
            for entry in self.store.queued():
                if entry.get("submission_id") != submission_id or entry["run_id"] in self.running:
                    continue
                set_attempt_state(entry, "cancelled", finished=now(), error="fail-fast: %s failed" % failed_run)
                remove_quietly(entry["_file"])
                self.say("%s: cancelled (fail-fast: %s failed)" % (entry["run_id"], failed_run))

    def _drop_active(self, run_id):
        remove_quietly(self.store.path("active", run_id + ".json"))

    def abandon_all(self):
        """Told to stop (tmux killed, SIGTERM) or crashed: stop every run's group, leave them
        lost for runs.resume."""
        for run_id, running in list(self.running.items()):
            kill_group_fully(running.proc.pid, grace=3)
            kill_marked(running.marker, grace=1)
            if running.conversion is not None:
                running.conversion.stop()
            running.proc.poll()
            if running.sync is not None:
                try:
                    running.sync.sync()  # what it wrote since the last interval
                except OSError:
                    pass
            try:
                set_attempt_state(running.entry, "lost", failure_class="lost", started=running.started,
                                  finished=now(), gpus=running.gpus)
            except OSError:
                pass  # its status says running, and no supervisor runs: it reads as lost anyway
            self._drop_active(run_id)
            self.say("%s: lost (the supervisor stopped; runs.resume queues it again)" % run_id)


def stop_stages(entry):
    """[(signal, grace)] a stop sends before KILL: the run's stop_signal, then TERM."""
    grace = entry.get("stop_grace") or KILL_GRACE_S
    first = getattr(signal, "SIG" + (entry.get("stop_signal") or "TERM"))
    return [(first, grace)] + ([(signal.SIGTERM, grace)] if first != signal.SIGTERM else [])


def write_contract_start(entry, env, gpus, interpreter):
    """At a run's start: the supervisor's own record (.ops/record.json, .ops/command.sh: always),
    and the contract's command.sh and run_metadata.json where the command has not written its
    own. Returns ({file: sha256 of ours}, the record)."""
    run_dir = entry["run_dir"]
    makedirs(os.path.join(run_dir, RECORD_DIR))
    script = command_script(entry, env)
    metadata = run_metadata(entry, env, gpus, now(), interpreter)
    metadata_text = json.dumps(metadata, indent=1, sort_keys=True, default=str) + "\n"
    write_text(record_path(run_dir, "command.sh"), replay_script(entry, env), 0o755)
    record = dict(metadata, written_by="ops-tasks supervisor", replay=RECORD_DIR + "/command.sh")
    write_json(record_path(run_dir), record)
    write_identity(entry)  # each attempt's own: a queued one is known by its queue entry
    write_if_absent(os.path.join(run_dir, "command.sh"), script, 0o755)
    write_if_absent(os.path.join(run_dir, "run_metadata.json"), metadata_text)
    import hashlib

    digests = {"command.sh": hashlib.sha256(script.encode()).hexdigest(),
               "run_metadata.json": hashlib.sha256(metadata_text.encode()).hexdigest()}
    return digests, record


def write_record_end(running, status):
    """The record's end: state, times, the latest step, survivors, and who wrote each file."""
    run_dir = running.entry["run_dir"]
    summary = read_json(os.path.join(run_dir, "summary.json"))
    if isinstance(summary, dict) and str(summary.get("written_by", "")).startswith("ops-tasks supervisor"):
        running.ours["summary.json"] = file_digest(os.path.join(run_dir, "summary.json"))
    record = dict(running.record, state=status["state"], exit_code=status.get("exit_code"),
                  signal=status.get("signal"), failure_class=status.get("failure_class"),
                  error=status.get("error"), finished_at=status.get("finished"),
                  metrics_last=running.metrics.latest, survivors=running.survivors,
                  files=files_written_by(run_dir, running.ours))
    makedirs(os.path.join(run_dir, RECORD_DIR))
    write_json(record_path(run_dir), record)


def cpu_slots(count):
    return ["cpu%d" % i for i in range(max(1, count))]


def detect_gpus():
    """GPU indices from nvidia-smi -L ([] without nvidia-smi or GPUs)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             timeout=30, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [int(m.group(1)) for m in re.finditer(r"^GPU (\d+):", out.stdout, re.MULTILINE)]


def command_script(entry, env):
    """command.sh: the exact command with its cd and environment; secrets as ***."""
    lines = ["#!/usr/bin/env bash",
             "# run %s, attempt %d, submission %s (written by the ops-tasks supervisor)" % (
                 entry["run_id"], entry["attempt"], entry["submission_id"]),
             "cd %s" % shlex.quote(entry["cwd"])]
    for name in sorted(env):
        value = MASK if is_secret(name) else env[name]
        lines.append("export %s=%s" % (name, shlex.quote(str(value))))
    lines.append(entry["command"])
    return "\n".join(lines) + "\n"


def replay_script(entry, env):
    """.ops/command.sh: `bash` on it in a clean environment replays the run (its cd, its env).
    Secrets are never in it: each is taken from the replaying shell's environment, and the
    replay stops naming it when it is not set."""
    lines = ["#!/usr/bin/env bash",
             "# Replay of run %s, attempt %d, submission %s (written by the ops-tasks supervisor)." % (
                 entry["run_id"], entry["attempt"], entry["submission_id"]),
             "# Secrets are *** here: export them before replaying."]
    for name in sorted(n for n in env if is_secret(n)):
        lines.append(': "${%s:?is a secret (*** in this file): export %s before replaying}"' % (name, name))
    lines.append("cd %s || exit 1" % shlex.quote(entry["cwd"]))
    for name in sorted(env):
        if not is_secret(name):
            lines.append("export %s=%s" % (name, shlex.quote(str(env[name]))))
    lines.append(entry["command"])
    return "\n".join(lines) + "\n"


def git_facts(repo):
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", repo] + list(args), stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, timeout=20, universal_newlines=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "branch": None, "dirty": None, "origin": None}
    origin = git("config", "--get", "remote.origin.url")
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            # A token in an https URL (https://user:TOKEN@host/...) never reaches run_metadata.
            "origin": re.sub(r"//[^/@]*@", "//", origin) if origin else None}


def run_metadata(entry, env, gpus, started, interpreter=None):
    config = entry.get("config") or {}
    interpreter = interpreter or {}
    return {
        "run_id": entry["run_id"], "label": entry.get("label"), "submission_id": entry["submission_id"],
        "attempt": entry["attempt"], "host": entry.get("host"), "hostname": socket.gethostname(),
        "git": git_facts(entry["cwd"]), "remote_repo": entry["cwd"], "run_dir": entry["run_dir"],
        "model_id": config.get("model_id"), "env_id": config.get("env_id"),
        "decoding": {k: config[k] for k in DECODING_KEYS if k in config},
        "dataset": {k: config[k] for k in DATASET_KEYS if k in config},
        "env": masked_env(env), "config": config, "command": entry["command"], "gpus": gpus,
        # The run's own interpreter (probe_interpreter), not the supervisor's.
        "python": interpreter.get("version"), "python_executable": interpreter.get("executable"),
        "packages": interpreter.get("packages") or {}, "python_probe_error": interpreter.get("error"),
        "supervisor_python": platform.python_version(), "tool": TOOL_VERSION,
        "summary_from": entry.get("summary_from"), "stop_signal": entry.get("stop_signal") or "TERM",
        "meta": entry.get("meta") or {},
        "queued_at": entry.get("queued_at"), "started_at": started,
    }


def supervise(request):  # the tmux window's command
    store = Store(request["outputs_dir"], create=True)
    try:
        return Supervisor(store, slots=request.get("slots") or 1, foreground=request.get("foreground")).run()
    except Exception:
        # A tmux window that dies takes its traceback with it: keep it where people look.
        import traceback

        with open(store.path("supervisor.log"), "a") as log:
            log.write("supervisor %d crashed:\n%s" % (os.getpid(), traceback.format_exc()))
        raise


# ---------------------------------------------------------------- reading state


def run_report(store, run_dir, run_id, supervisor_alive, waiting, tail_lines=0):
    status, problem = read_status(run_dir, with_problem=True)
    state = effective_state(status, supervisor_alive, waiting) if status else (
        "unknown" if problem or has_files(run_dir) else "missing")
    report = {"run_id": run_id, "run_dir": run_dir, "state": state}
    if state == "unknown":
        report["error"] = problem or "files but no status.json: ops-tasks did not supervise this run"
    if status:
        for key in ("attempt", "submission_id", "exit_code", "signal", "failure_class", "started", "finished",
                    "queued_at", "last_output", "heartbeat", "gpus", "error", "not_before", "retry_of", "metrics",
                    "survivors"):
            if key in status:
                report[key] = status[key]
        if state == "lost":
            report["failure_class"] = "lost"
    report["attempts"] = attempts_done(run_dir) + (1 if status else 0)
    if status and state != "queued":
        report["last_line"] = last_line(os.path.join(run_dir, "stdout.log"))
    if state in TERMINAL:
        leaves = summary_leaves(read_summary_small(run_dir))
        if leaves:
            report["summary_metrics"] = dict(leaves)  # runs.status's metric columns
    if tail_lines:
        summary = read_json(os.path.join(run_dir, "summary.json"))
        report["summary"] = summary if isinstance(summary, dict) else None
        record = read_json(record_path(run_dir))
        if isinstance(record, dict) and isinstance(record.get("files"), dict):
            report["files_written_by"] = record["files"]  # the command's own files, or the supervisor's
        report["stdout_tail"] = tail_text(os.path.join(run_dir, "stdout.log"), tail_lines)
    return report


SUMMARY_COLUMNS = 8  # report.SUMMARY_COLUMNS
# Top-level summary keys that say which run it is, not what it measured (report.NOT_EXTRA's, but
# avg_reward: a column of runs.status); objects that describe the run.
NOT_MEASURES = ("ok", "run_id", "env_id", "model_id", "state", "failure_class", "reason", "attempt", "num_examples",
                "rollouts_per_example", "rollouts", "best_of", "exit_code", "signal", "mean", "se", "ci95_low",
                "ci95_high", "n")
NOT_LEAVES = ("run_metadata", "ops")
SMALL_SUMMARY = 1 << 20  # a summary.json larger than this is not read for the table


def summary_leaves(summary, limit=SUMMARY_COLUMNS):
    """[(name, number)] of a summary's measurements: its numeric leaves in file order, nested keys
    joined by '.' (`last_eval.val`), three levels deep at most, not booleans nor NOT_MEASURES; the
    first `limit`. The same rule as the report's columns (report.summary_leaves)."""
    found = []

    def walk(value, prefix, depth):
        for key, item in value.items():
            if len(found) >= limit:
                return
            if isinstance(item, dict):
                if depth < 3 and not (depth == 1 and key in NOT_LEAVES):
                    walk(item, "%s%s." % (prefix, key), depth + 1)
            elif (depth > 1 or key not in NOT_MEASURES) and isinstance(item, (int, float)) \
                    and not isinstance(item, bool) and item == item and abs(item) != float("inf"):
                found.append((prefix + str(key), item))

    if isinstance(summary, dict):
        walk(summary, "", 1)
    return found


def read_summary_small(run_dir):
    """summary.json parsed when it is a small regular file (the pod's data: bounded), else None."""
    path = os.path.join(run_dir, "summary.json")
    try:
        if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > SMALL_SUMMARY:
            return None
    except OSError:
        return None
    return read_json(path)


def selected_runs(store, request):
    """[(run_id, run_dir)] for run ids, a submission, or every run directory under the root;
    each checked (check_run), whoever named it: the laptop, a manifest, a folder name."""
    if request.get("run_ids"):
        dirs = request.get("run_dirs") or {}
        return [check_run(r, dirs.get(r) or os.path.join(store.root, str(r)), store.root) for r in request["run_ids"]]
    if request.get("submission_id"):
        submission_id = request["submission_id"]
        if not isinstance(submission_id, str) or not RUN_ID.match(submission_id):
            raise BadRequest("submission id %r is not one" % (submission_id,))
        manifest = read_json(store.path("submissions", submission_id + ".json"))
        if manifest is None:
            raise LookupError("no submission %s under %s" % (submission_id, store.root))
        runs = manifest.get("runs") if isinstance(manifest, dict) else None
        if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
            raise LookupError("submission %s: its manifest under %s is damaged" % (submission_id, store.ops))
        return [check_run(r.get("run_id"), r.get("run_dir"), store.root) for r in runs]
    try:
        names = sorted(os.listdir(store.root))
    except OSError:
        return []  # no outputs root: no runs (and nothing is created to say so)
    found = []
    for name in names:
        path = os.path.join(store.root, name)
        # A link is never a run directory: it could lead anywhere (--force archives there).
        if not name.startswith(".") and RUN_ID.match(name) and os.path.isdir(path) and not os.path.islink(path):
            found.append((name, path))
    return found


def status(request):
    store = Store(request["outputs_dir"])
    alive, waiting = store.supervisor_alive(), store.waiting_ids()
    runs = [run_report(store, run_dir, run_id, alive, waiting, request.get("tail_lines", 0))
            for run_id, run_dir in selected_runs(store, request)]
    return {"runs": runs, "supervisor_running": alive, "outputs_dir": store.root}


def wait(request):
    store = Store(request["outputs_dir"])
    deadline = now() + request["timeout"] if request.get("timeout") else None
    last = unattended_since = None
    said_at = 0.0
    while True:
        alive, waiting = store.supervisor_alive(), store.waiting_ids()
        runs = [run_report(store, d, r, alive, waiting) for r, d in selected_runs(store, request)]
        states = [r["state"] for r in runs]
        # unknown (a damaged status.json) never changes by waiting: it is over, and not ok; nor
        # does missing (a run the submission refused before it had a directory: nothing will run it).
        done = sum(s in TERMINAL + ("unknown", "missing") for s in states)
        failed = sum(s in COUNTS_AS_FAILURE + ("unknown",) for s in states)
        progress = (done, len(runs), failed, states.count("running"))
        # Said again now and then: the write fails once the laptop is gone (sshd closed our
        # pipes), and a wait nobody reads must not poll for ever.
        if progress != last or now() - said_at > WAIT_HEARTBEAT_S:
            try:
                print("P|%d|%d|%d|%d" % progress, file=sys.stderr, flush=True)
            except BrokenPipeError:
                return None
            last, said_at = progress, now()
        if done == len(runs):
            return {"outcome": "done", "runs": runs, "supervisor_running": alive}
        # Nobody to run what is left: say so (after a moment, as a new supervisor may be starting).
        if alive or "running" in states:
            unattended_since = None
        elif unattended_since is None:
            unattended_since = now()
        elif now() - unattended_since > 5:
            return {"outcome": "stuck", "runs": runs, "supervisor_running": alive}
        if deadline is not None and now() > deadline:
            return {"outcome": "timeout", "runs": runs, "supervisor_running": alive}
        time.sleep(0.5)


def cancel(request):
    """Cancel runs: a queued one at once, a running one through its supervisor (which stops its
    process group), a lost one by stopping what is left of it."""
    store = Store(request["outputs_dir"])
    results, waiting_on = [], []
    if not os.path.isdir(store.ops):
        return {"runs": [{"run_id": r, "was": "missing", "state": "missing"} for r, _ in selected_runs(store, request)]}
    with store.queue_lock(), BatchedSync():
        # The queue is read once: a cancel of n runs is linear, the lock held for one pass.
        queue_files = {}
        for entry in store.queued():
            queue_files.setdefault(entry["run_id"], []).append(entry["_file"])
        alive, waiting = store.supervisor_alive(), store.waiting_ids(queued=[{"run_id": r} for r in queue_files])
        for run_id, run_dir in selected_runs(store, request):
            status = read_status(run_dir) or {}
            state = effective_state(status, alive, waiting) if status else None
            if state == "queued":
                for queue_file in queue_files.get(run_id, ()):
                    remove_quietly(queue_file)
                end_as_cancelled(run_dir, run_id, status)
                results.append({"run_id": run_id, "was": "queued", "state": "cancelled"})
            elif state == "running":
                write_text(store.path("cancel", run_id), "")
                waiting_on.append((run_id, run_dir))
            elif state == "lost":
                stop_leftover_group(status)
                remove_quietly(store.path("active", run_id + ".json"))
                end_as_cancelled(run_dir, run_id, status)
                results.append({"run_id": run_id, "was": "lost", "state": "cancelled"})
            else:
                shown = state or ("unknown" if has_files(run_dir) else "missing")
                results.append({"run_id": run_id, "was": shown, "state": shown})
    # As long as the slowest run's stop takes: its stop_signal and TERM, each with its grace.
    stops = [read_entry(store.path("active", run_id + ".json")) or {} for run_id, _ in waiting_on]
    deadline = now() + max([sum(g for _, g in stop_stages(e)) for e in stops] or [KILL_GRACE_S]) + 5
    for run_id, run_dir in waiting_on:
        while now() < deadline and (read_status(run_dir) or {}).get("state") == "running":
            time.sleep(0.2)
        results.append({"run_id": run_id, "was": "running", "state": (read_status(run_dir) or {}).get("state")})
    return {"runs": results}


def end_as_cancelled(run_dir, run_id, status):
    set_state(run_dir, run_id, "cancelled", kept=status, finished=now())


def stop_leftover_group(status):
    """A lost run's processes may still run (its supervisor was SIGKILLed): stop them, its
    process group and what left it (found by the attempt's marker).

    The group is ours if its leader is the very process started (same start time), or if the
    leader is gone and the group lives on: Linux never reuses a pid still naming a group.
    """
    marked = []
    if status.get("run_id") and status.get("submission_id") and status.get("attempt"):
        marked = kill_marked(owner_marker(status["run_id"], status["submission_id"], status["attempt"]))
    pgid, start = status.get("pgid"), status.get("pid_start")
    if not pgid or not start:
        return bool(marked)
    leader_alive = pid_alive(pgid)
    if leader_alive and not pid_alive(pgid, start):
        return bool(marked)  # the pid now belongs to another process
    if not group_alive(pgid):
        return bool(marked)
    kill_group_fully(pgid, grace=5)
    return True


def resume(request):
    """Queue again the runs left lost (their supervisor died, or their queue entry is gone)."""
    store = Store(request["outputs_dir"], create=True)
    resumed, leftovers = [], []
    with store.queue_lock():
        alive, waiting = store.supervisor_alive(), store.waiting_ids()
        for run_id, run_dir in selected_runs(store, request):
            status = read_status(run_dir) or {}
            if effective_state(status, alive, waiting) != "lost":
                continue
            entry = read_json(store.path("active", run_id + ".json")) or read_json(store.path("specs", run_id + ".json"))
            if entry is None:
                continue
            if stop_leftover_group(status):
                leftovers.append(run_id)
            remove_quietly(store.path("active", run_id + ".json"))
            set_state(run_dir, run_id, "lost", kept=status, failure_class="lost",
                      finished=status.get("finished") or now())
            archive_attempt(run_dir)
            entry = {k: v for k, v in entry.items() if k != "_file"}
            entry.update(attempt=attempts_done(run_dir) + 1, queued_at=now(), not_before=0, resumed=True,
                         retries_used=0)
            set_attempt_state(entry, "queued", queued_at=now())
            store.enqueue(entry)
            resumed.append(run_id)
    result = {"resumed": resumed, "stopped_leftovers": leftovers}
    if request.get("slots"):
        store.write_slots(request["slots"])
    if resumed or store.queued():
        result["supervisor"] = ensure_supervisor(store, request)
    return result


def logs(request):
    store = Store(request["outputs_dir"])
    (run_id, run_dir), = selected_runs(store, {"run_ids": request["run_ids"][:1], "run_dirs": request.get("run_dirs")})
    path = os.path.join(run_dir, "stdout.log")
    if not os.path.isdir(run_dir):
        return {"error": "no run %s (no directory %s)" % (run_id, run_dir)}
    if not request.get("follow"):
        return {"run_id": run_id, "log": path, "text": tail_text(path, request.get("lines", 100))}
    follow_log(store, run_dir, path, request.get("lines", 100))
    return None


def follow_log(store, run_dir, path, lines):
    """Stream path until the run ends or the caller hangs up (its stdin ends). A retry replaces
    the log: a new file (or a shorter one) is followed from its start."""
    import threading

    hung_up = threading.Event()

    def watch_stdin():  # the caller keeps our stdin open; its end means Ctrl-C on the laptop
        try:
            sys.stdin.read()
        finally:
            hung_up.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    out = sys.stdout.buffer
    text = tail_text(path, lines) or ""
    try:
        out.write((text + "\n").encode() if text else b"")
        out.flush()
        inode, offset = file_identity(path)
        while not hung_up.is_set():
            current, size = file_identity(path)
            if current != inode or size < offset:
                inode, offset = current, 0
                out.write(b"--- a new attempt's stdout.log ---\n")
            if size > offset:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(min(size - offset, 1 << 20))  # a MiB at a time: flat memory
                offset += len(chunk)
                out.write(chunk)
                out.flush()
                if offset < size:
                    continue
            state = effective_state(read_status(run_dir), store.supervisor_alive(), store.waiting_ids())
            if state in TERMINAL + (None,) and file_identity(path) == (inode, offset):
                return
            time.sleep(0.3)
    except BrokenPipeError:
        return


def file_identity(path):
    """(inode, size) of path, (None, 0) when it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None, 0
    return info.st_ino, info.st_size


# ---------------------------------------------------------------- a fleet's requests


def with_earlier_runs(store, manifest):
    """A submission sent to this pod again under its id (a fleet moves a run here, or places a
    lost pod's run again) adds to the pod's manifest of it: its earlier runs stay named."""
    earlier = read_json(store.path("submissions", manifest["submission_id"] + ".json"))
    if not isinstance(earlier, dict) or not isinstance(earlier.get("runs"), list):
        return manifest
    new_ids = {r["run_id"] for r in manifest["runs"]}
    runs = [r for r in earlier["runs"] if isinstance(r, dict) and r.get("run_id") not in new_ids]
    queued = [q for q in earlier.get("queued") or [] if q not in new_ids]
    return dict(manifest, runs=runs + manifest["runs"], queued=queued + manifest["queued"],
                submitted_at=earlier.get("submitted_at") or manifest["submitted_at"])


def gpu_memory():
    """[{index, memory_used_mib, memory_total_mib}] from nvidia-smi ([] without it)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used,memory.total",
                              "--format=csv,noheader,nounits"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=20, universal_newlines=True)
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        try:
            gpus.append({"index": int(parts[0]), "memory_used_mib": float(parts[1]),
                         "memory_total_mib": float(parts[2])})
        except (ValueError, IndexError):
            continue
    return gpus


def units_needed(gpus, gpu_count):
    """What a run takes of what the supervisor hands out (as claim_ready counts it)."""
    if not gpu_count:
        return 1
    return gpu_count if gpus is None else gpus


def probe(request):
    """All a fleet places and rebalances by, in one answer: the pod's GPUs, the units its
    supervisor hands out and those in use, its queued runs in the order they start, the state
    of the runs asked about, and its manifest of the submission."""
    store = Store(request["outputs_dir"])
    alive, queued = store.supervisor_alive(), store.queued()
    claimed = {n[:-5] for n in store.names("active") if n.endswith(".json")}
    waiting = store.waiting_ids(queued)
    runs = [run_report(store, d, r, alive, waiting)
            for r, d in selected_runs(store, request)] if request.get("run_ids") else []
    gpus = gpu_memory()
    info = read_json(store.path("supervisor.json")) or {}
    slots = store.read_slots() or request.get("slots") or len(info.get("slots") or []) or 1
    capacity = len(gpus) if gpus else slots
    in_use = sum(units_needed(e.get("gpus"), len(gpus)) for e in store.active())
    waiting_runs = [{"run_id": e["run_id"], "submission_id": e.get("submission_id"), "gpus": e.get("gpus"),
                     "timeout": e.get("timeout")} for e in queued if e["run_id"] not in claimed]
    manifest = None
    if isinstance(request.get("submission_id"), str) and RUN_ID.match(request["submission_id"]):
        manifest = read_json(store.path("submissions", request["submission_id"] + ".json"))
    return {"runs": runs, "supervisor_running": alive, "outputs_dir": store.root, "gpus": gpus,
            "capacity": capacity, "units_in_use": min(in_use, capacity), "queued": waiting_runs,
            "manifest": manifest if isinstance(manifest, dict) else None}


def withdraw(request):
    """Take runs off this pod's queue that have not started (the laptop queues them on another
    pod), under the queue lock: the supervisor claims a run under it too, so each run is either
    claimed here first (kept, it runs here) or withdrawn (it will never start here). A withdrawn
    run's directory is as it was before it was queued, and it leaves the pod's manifest."""
    store = Store(request["outputs_dir"])
    asked = selected_runs(store, {"run_ids": request.get("run_ids") or [], "run_dirs": request.get("run_dirs") or {}})
    if not os.path.isdir(store.ops):
        return {"withdrawn": [], "kept": [{"run_id": r, "reason": "not queued here"} for r, _ in asked]}
    submission_id = request.get("submission_id")
    if not isinstance(submission_id, str) or not RUN_ID.match(submission_id):
        raise BadRequest("submission id %r is not one" % (submission_id,))
    withdrawn, kept = [], []
    with store.queue_lock(), BatchedSync():
        claimed = {n[:-5] for n in store.names("active") if n.endswith(".json")}
        entries = {}
        for entry in store.queued():
            entries.setdefault(entry["run_id"], []).append(entry)
        for run_id, run_dir in asked:
            mine = [e for e in entries.get(run_id, ()) if e.get("submission_id") == submission_id]
            if run_id in claimed or not mine:
                kept.append({"run_id": run_id, "reason": "started" if run_id in claimed else "not queued here"})
                continue
            for entry in mine:
                remove_quietly(entry["_file"])
            forget_queued_attempt(store, run_dir, run_id)
            withdrawn.append(run_id)
        if withdrawn:
            leave_manifest(store, submission_id, set(withdrawn))
    return {"withdrawn": withdrawn, "kept": kept}


def forget_queued_attempt(store, run_dir, run_id):
    """The run directory as before queue_run: its queued status gone, an earlier attempt back."""
    remove_quietly(status_path(run_dir))
    remove_quietly(store.path("specs", run_id + ".json"))
    earlier = attempts_done(run_dir)
    if earlier:
        restore_attempt(run_dir, earlier)
        return
    try:
        os.rmdir(run_dir)  # only when nothing else is in it
    except OSError:
        pass


def leave_manifest(store, submission_id, run_ids):
    path = store.path("submissions", submission_id + ".json")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        return
    manifest["runs"] = [r for r in manifest.get("runs") or [] if not (isinstance(r, dict) and r.get("run_id") in run_ids)]
    manifest["queued"] = [q for q in manifest.get("queued") or [] if q not in run_ids]
    manifest["withdrawn"] = sorted(set(manifest.get("withdrawn") or []) | run_ids)
    write_json(path, manifest)


COMMANDS = {"submit": submit, "supervise": supervise, "status": status, "wait": wait, "cancel": cancel,
            "resume": resume, "logs": logs, "probe": probe, "withdraw": withdraw}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(json.dumps({"error": "usage: ops_runs.py %s < request.json" % "|".join(COMMANDS)}))
        return 2
    if argv[0] == "supervise" and len(argv) > 1:
        request = json.loads(argv[1])  # a tmux window has no stdin to read it from
    else:
        request = json.loads(sys.stdin.readline() or "{}")
    try:
        result = COMMANDS[argv[0]](request)
    except (LookupError, BadRequest) as exc:
        result = {"error": str(exc), "bad_input": True}
    except OSError as exc:  # the outputs root cannot be created or written (a full volume)
        result = {"error": "outputs root %s: %s" % (request.get("outputs_dir"), exc)}
    if result is not None:
        print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
