"""submit: queue runs under the queue lock, and see that a supervisor that can run them runs."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from .contract import ACTIVE, CONTRACT_VERSION, FAILED, GPU_POOL, WORKDIR_CONTRACT, is_secret, run_units
from .entry import new_entry
from .files import BatchedSync, write_failure, makedirs, now, read_json, remove_quietly, write_json
from .gates import commit_pin, identity_difference, pin_problem
from .keys import needed_contract, run_problem
from .handover import ask_to_hand_over, describe, live_supervisor, successor_waiting
from . import python_argv
from .reading import wait
from .rundir import (archive_attempt, attempts_done, effective_state, git_facts, has_files, owned_by_tool,
    read_status, restore_attempt, set_attempt_state, stop_leftover_group)
from .store import BadRequest, Store, check_run
from .supervisor import cpu_slot_count, detect_gpus, supervise


def needed_for(runs, repos):
    """The least supervisor contract that judges these runs as this one does: every key they set,
    and a repo filled by pod.sync --workdir (an older supervisor reads git only, and would fail a
    pinned run there as "not a git repository" where this one accepts the sync)."""
    synced = any(isinstance(facts, dict) and "workdir" in facts for facts in repos.values())
    return max([needed_contract(run) for run in runs] + [WORKDIR_CONTRACT if synced else 1])


def submit(request):
    runs = [dict(run, run_id=check_run(run.get("run_id"), run.get("run_dir"), request["outputs_dir"])[0])
            for run in request["runs"]]
    for run in runs:
        problem = run_problem(run)
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
    need = needed_for(runs, repos)
    with store.queue_lock(), BatchedSync():
        live = live_supervisor(store)
        supervisor = live is not None
        # The live supervisor must know every key of these runs, else it hands its queue over
        # (asked before anything is queued: it never claims an entry it cannot honour).
        behind = live is not None and live["contract"] < need
        if behind and request.get("foreground"):
            raise BadRequest(
                "the pod's supervisor (%s) predates these runs (contract %d): it would not honour them, and "
                "--no-tmux cannot hand its queue over; wait for its runs to end (runs.wait), or submit "
                "without --no-tmux: a contract %d supervisor then takes the queue once its runs end"
                % (describe(live), need, CONTRACT_VERSION))
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
                reason = "could not be queued: %s" % write_failure(exc, store.root)
                refused.append({"run_id": run_id, "reason": reason})
        # Still under the queue lock the older supervisor claims under: it never sees these entries
        # claimable. Asked only when something was queued (nothing else needs a successor).
        behind = behind and bool(queued)
        if behind:
            ask_to_hand_over(store, live, submission_id)
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
        store.note_last_submission()
    result = {"queued": queued, "skipped": skipped, "refused": refused}
    warning = slots_warning(store, request, runs)
    if warning:
        result["slots_warning"] = warning
    if request.get("capacity"):  # the laptop prices runs: their share is of what is handed out here
        result["capacity"] = pod_capacity(store, request)
    if request.get("foreground"):
        result.update(run_in_foreground(store, request))
    elif queued or store.queued():
        result["supervisor"] = ensure_supervisor(store, request, live if behind else None)
    result["contract"] = {"runtime": CONTRACT_VERSION, "needed": need,
                          "supervisor": None if live is None else live["contract"], "handed_over": behind}
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
    entry = new_entry(run, request, attempts_done(run_dir) + 1)
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
    return {"gpus": gpus, "slots": gpus or cpu_slot_count(store, 0, request.get("slots"))}


def ensure_supervisor(store, request, behind=None):
    """Start a supervisor in the tmux session unless one runs, and see that it came up; with
    `behind` (the live supervisor, of an older contract, asked to hand over) start its successor,
    which waits for the supervisor lock, unless one waits already.

    Two racing starts are harmless: the second cannot take the lock and exits.
    """
    if behind is not None:
        said = "%s finishes the runs it started, then a contract %d supervisor takes the queue" % (
            describe(behind), CONTRACT_VERSION)
        if successor_waiting(store):
            return "running (%s; its successor waits already)" % said
        started = start_in_tmux(store, request, successor=True)
        return _came_up(store, started, lambda: successor_waiting(store) or not store.supervisor_alive(),
                        "handing over (%s: started in tmux session %s)" % (said, _session(request)))
    if store.supervisor_alive():
        return "running" + slots_note(store, request)
    started = start_in_tmux(store, request)
    said = "started in tmux session %s" % _session(request)
    if not isinstance(started, str) and started.returncode != 0:
        # A racing submission started one first (tmux: "duplicate session"): what counts is
        # whether a supervisor runs, whoever started it.
        said = "already running (started by another submission)" + slots_note(store, request)
    return _came_up(store, started, store.supervisor_alive, said)


def _session(request):
    return request.get("tmux_session") or "pilots"


def start_in_tmux(store, request, successor=False):
    """A supervisor's tmux window (a new session when there is none): the completed tmux call,
    or why it could not be made."""
    tmux = ["tmux"] + (["-L", request["tmux_socket"]] if request.get("tmux_socket") else [])
    session = _session(request)
    args = json.dumps({"outputs_dir": store.root, "slots": request.get("slots"), "successor": successor})
    command = "exec " + " ".join(shlex.quote(a) for a in python_argv("python3", "commands", "main", "supervise", args))
    new_window = tmux + ["new-window", "-d", "-t", "=" + session + ":", "-n", "supervisor", command]
    new_session = tmux + ["new-session", "-d", "-s", session, "-n", "supervisor", command]
    try:
        exists = subprocess.run(tmux + ["has-session", "-t", "=" + session], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL).returncode == 0
        # The session may end between the two calls (its last window, an idle supervisor of another
        # outputs root, exiting), or appear (a racing submission): each way is tried in turn.
        for argv in ([new_window, new_session, new_window] if exists else [new_session, new_window, new_session]):
            started = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
            if started.returncode == 0:
                return started
            time.sleep(0.2)
        return started
    except OSError as exc:
        return "failed to start: %s" % exc


def _came_up(store, started, is_up, said):
    """`said` once is_up() holds (within 5 s), else why the start failed."""
    if isinstance(started, str):
        return started
    deadline = now() + 5
    while now() < deadline:
        if is_up():
            return said
        time.sleep(0.05)
    if started.returncode != 0:
        return "failed to start: " + (started.stderr.strip() or "tmux exited %d" % started.returncode)
    return "failed to start: see %s" % store.path("supervisor.log")


def slots_note(store, request):
    """What --slots does to a supervisor that already runs: it re-reads .ops/slots each loop
    (one that predates CPU slots beside GPUs does not: slots_warning says so)."""
    if not request.get("slots") or older_beside_gpus(read_json(store.path("supervisor.json"))):
        return ""
    return "; slots now %d (it reads them again each loop)" % request["slots"]


def older_beside_gpus(info):
    """A live supervisor's supervisor.json from before contract 3: beside GPUs, it ran runs
    without GPUs uncapped, and reads no --slots."""
    return isinstance(info, dict) and bool(info.get("gpus")) and "cpu_slots" not in info


def slots_warning(store, request, runs):
    """Why runs.submit --slots N (the CPU slots: how many runs without GPUs run at once) does not
    apply to this submission, or None."""
    asked = request.get("slots")
    if not asked:
        return None
    alive = store.supervisor_alive()
    if alive and request.get("foreground"):
        return ("--slots %d not applied: a supervisor already runs this queue, and --no-tmux only waits for it; "
                "submit without --no-tmux to change its slots" % asked)
    info = read_json(store.path("supervisor.json")) if alive else None
    if older_beside_gpus(info):
        return ("--slots %d not applied yet: the pod's supervisor (contract %s) runs gpus: 0 runs beside its GPUs "
                "without a cap; the next supervisor (once its queue is done) takes %d CPU slots"
                % (asked, info.get("contract", 1), asked))
    gpu_count = len(info.get("slots") or []) if isinstance(info, dict) and info.get("gpus") else (
        0 if isinstance(info, dict) else len(detect_gpus()))
    if gpu_count and all(run_units(run.get("gpus"), gpu_count)[0] == GPU_POOL for run in runs):
        return ("--slots %d sets the CPU slots, for runs without GPUs (gpus: 0); every run of this submission "
                "holds GPUs (the pod has %d), so it changes nothing for them" % (asked, gpu_count))
    return None


def run_in_foreground(store, request):
    """--no-tmux: supervise here, over the connection; if a supervisor already runs, wait for it."""
    outcome = supervise({"outputs_dir": store.root, "slots": request.get("slots"), "foreground": True})
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
