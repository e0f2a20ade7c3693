"""A run directory: status.json (set_state is the one door), attempts kept under attempts/<n>/,
the contract files the supervisor writes where the command did not, its own record in .ops/, and
the failure class read from a failed run's log.
"""

import json
import os
import platform
import re
import shlex
import signal
import socket
import subprocess

from .contract import (ACTIVE, CONTRACT_FILES, MASK, RECORD_DIR, STATES, SUMMARY_BY_EXIT_CODE, TERMINAL, TOOL_VERSION,
    attempt_number, is_secret, masked_env)
from .files import file_digest, makedirs, now, read_json, record_path, write_if_absent, write_json, write_text
from .gates import write_identity
from .workdir import facts as workdir_facts
from .procs import group_alive, kill_group_fully, kill_marked, owner_marker, pid_alive


# Every field a status.json may hold: set_state refuses others (a misspelt field would be lost).
STATUS_FIELDS = frozenset({
    "run_id", "state", "attempt", "submission_id", "queued_at", "not_before", "retry_of", "started",
    "supervisor_pid", "pid", "pgid", "pid_start", "gpus", "last_output", "heartbeat", "exit_code", "signal",
    "failure_class", "error", "finished", "updated", "tool", "metrics", "survivors"})
# The shapes a status.json's fields must have (anything else marks the run unknown, with why).
STATUS_TYPES = {"run_id": str, "attempt": int, "submission_id": str, "exit_code": (int, type(None)),
                "pid": int, "pgid": int, "pid_start": (int, type(None)), "signal": (int, type(None)),
                "tool": str}
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


def status_path(run_dir):
    return os.path.join(run_dir, "status.json")


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
        return max([attempt_number(n) for n in os.listdir(folder) if attempt_number(n) is not None] or [0])
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


def write_exit_code_summary(run_dir, run_id):
    """`summary: exit_code`, a run that exited 0 and met its expectations: its summary.json, ok
    true, written by the supervisor and saying so (no measurement is made up). A summary.json the
    command wrote is kept, and judges the run. True when this one was written."""
    path = os.path.join(run_dir, "summary.json")
    if os.path.lexists(path):
        return False
    write_json(path, {
        "ok": True,
        "run_id": run_id,
        "state": "succeeded",
        "exit_code": 0,
        "summary": SUMMARY_BY_EXIT_CODE,
        "written_by": "ops-tasks supervisor from the exit code (summary: exit_code; the command wrote no "
                      "summary.json)",
    })
    return True


def files_written_by(run_dir, ours):
    """{contract file: "supervisor" | "command"} for the files the run directory holds; ours is
    {name: sha256 of what the supervisor wrote}."""
    found = {}
    for name in CONTRACT_FILES:
        digest = file_digest(os.path.join(run_dir, name))
        if digest is not None:
            found[name] = "supervisor" if ours.get(name) == digest else "command"
    return found


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
    return digests, dict(record, _texts={"command.sh": script, "run_metadata.json": metadata_text,
                                         "replay": replay_script(entry, env)})


def write_record_end(running, status):
    """The record's end: state, times, the latest step, survivors, and who wrote each file."""
    run_dir = running.entry["run_dir"]
    summary = read_json(os.path.join(run_dir, "summary.json"))
    if isinstance(summary, dict) and str(summary.get("written_by", "")).startswith("ops-tasks supervisor"):
        running.ours["summary.json"] = file_digest(os.path.join(run_dir, "summary.json"))
    record = dict({k: v for k, v in running.record.items() if k != "_texts"}, state=status["state"], exit_code=status.get("exit_code"),
                  signal=status.get("signal"), failure_class=status.get("failure_class"),
                  error=status.get("error"), finished_at=status.get("finished"),
                  metrics_last=running.metrics.latest, survivors=running.survivors,
                  left_behind=running.left_behind, restored=running.restored,
                  files=files_written_by(run_dir, running.ours))
    makedirs(os.path.join(run_dir, RECORD_DIR))
    write_json(record_path(run_dir), record)


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
    """The facts of the repo a run starts in ({commit, branch, dirty, origin}): what pod.sync
    --workdir recorded while its record applies (workdir.facts adds `workdir`: the uncommitted
    change's hash, files changed since), else git's own (checkout_facts)."""
    synced = workdir_facts(repo)
    return synced if synced is not None else checkout_facts(repo)


def checkout_facts(repo):
    """What git says of repo's checkout: HEAD, branch, a changed tracked file, origin."""
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


def restore_contract(running):
    """After the command ended: what it removed of its own run directory (`rm -rf {run_dir}` at a
    run's start is a common idiom) written again: the folder, stdout.log from the supervisor's own
    handle on it, command.sh and run_metadata.json, the .ops/ record. Returns what was restored."""
    entry = running.entry
    run_dir, texts = entry["run_dir"], running.record.get("_texts") or {}
    restored = []
    for folder in {run_dir, os.path.dirname(running.log_path)}:
        if not os.path.isdir(folder):
            makedirs(folder)
            restored.append(folder)
    if running.log_fd is not None and not os.path.lexists(running.log_path):
        with open(running.log_path, "wb") as log:
            os.lseek(running.log_fd, 0, os.SEEK_SET)
            for block in iter(lambda: os.read(running.log_fd, 1 << 20), b""):
                log.write(block)
        restored.append("stdout.log")
    for name, mode in (("command.sh", 0o755), ("run_metadata.json", 0o644)):
        path = os.path.join(run_dir, name)
        if name in texts and not os.path.lexists(path):
            write_text(path, texts[name], mode)
            restored.append(name)
    if not os.path.isdir(os.path.join(run_dir, RECORD_DIR)):
        makedirs(os.path.join(run_dir, RECORD_DIR))
        if "replay" in texts:
            write_text(record_path(run_dir, "command.sh"), texts["replay"], 0o755)
        write_identity(entry)
        restored.append(RECORD_DIR)
    return restored
