"""The commands a request names (cancel, resume, probe, withdraw; submit and the readers from
their modules), and main: one command, its request on stdin, one JSON document on stdout."""

import json
import os
import subprocess
import sys
import time

from .contract import CONTRACT_VERSION, CPU_POOL, GPU_POOL, RUN_ID, run_units
from .handover import ask_to_hand_over, live_supervisor
from .entry import read_entry
from .files import BatchedSync, now, read_json, remove_quietly, write_failure, write_json, write_text
from .procs import KILL_GRACE_S
from .reading import logs, pod_submission, run_report, selected_runs, status, wait, with_latest_submission
from .rundir import (archive_attempt, attempts_done, effective_state, end_as_cancelled, has_files, read_status,
    restore_attempt, set_attempt_state, set_state, status_path, stop_leftover_group)
from .store import BadRequest, Store
from .submit import ensure_supervisor, submit
from .supervisor import cpu_slot_count, stop_stages, supervise
from .workdir import receive as receive_workdir


def cancel(request):
    """Cancel runs: a queued one at once, a running one through its supervisor (which stops its
    process group), a lost one by stopping what is left of it."""
    request, manifest = with_latest_submission(request)
    store = Store(request["outputs_dir"])
    results, waiting_on, ended = [], [], set()
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
                # Claimed but not started when its supervisor died: its queue entry is still there,
                # and a later supervisor would start a cancelled run.
                for queue_file in queue_files.get(run_id, ()):
                    remove_quietly(queue_file)
                remove_quietly(store.path("active", run_id + ".json"))
                end_as_cancelled(run_dir, run_id, status)
                results.append({"run_id": run_id, "was": "lost", "state": "cancelled"})
            else:
                shown = state or ("unknown" if has_files(run_dir) else "missing")
                results.append({"run_id": run_id, "was": shown, "state": shown})
            if state in ("queued", "lost"):
                ended.add(status.get("submission_id"))
        # Nothing of theirs left to run: their secrets leave the pod (a running one's supervisor
        # does this when it ends).
        for submission_id in ended:
            store.forget_secrets_if_done(submission_id)
    # As long as the slowest run's stop takes: its stop_signal and TERM, each with its grace.
    stops = [read_entry(store.path("active", run_id + ".json")) or {} for run_id, _ in waiting_on]
    deadline = now() + max([sum(g for _, g in stop_stages(e)) for e in stops] or [KILL_GRACE_S]) + 5
    for run_id, run_dir in waiting_on:
        while now() < deadline and (read_status(run_dir) or {}).get("state") == "running":
            time.sleep(0.2)
        results.append({"run_id": run_id, "was": "running", "state": (read_status(run_dir) or {}).get("state")})
    return {"runs": results, "pod_submission": pod_submission(manifest)}


def resume(request):
    """Queue again the runs left lost (their supervisor died, or their queue entry is gone)."""
    store = Store(request["outputs_dir"], create=True)
    resumed, leftovers = [], []
    with store.queue_lock():
        live, queued = live_supervisor(store), store.queued()
        alive, waiting = live is not None, store.waiting_ids(queued)
        for run_id, run_dir in selected_runs(store, request):
            status = read_status(run_dir) or {}
            if effective_state(status, alive, waiting) != "lost":
                continue
            entry = read_json(store.path("active", run_id + ".json")) or read_json(store.path("specs", run_id + ".json"))
            if entry is None:
                continue
            if stop_leftover_group(status):
                leftovers.append(run_id)
            # Claimed but not started when its supervisor died: its queue entry is still there, and
            # would start it a second time beside the attempt queued here.
            for left in queued:
                if left["run_id"] == run_id:
                    remove_quietly(left["_file"])
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
        # What this runtime queues, an older live supervisor never sees (store.QUEUE): it hands over.
        behind = bool(resumed) and live is not None and live["contract"] < CONTRACT_VERSION
        if behind:
            ask_to_hand_over(store, live, request.get("submission_id"))
    result = {"resumed": resumed, "stopped_leftovers": leftovers}
    if request.get("slots"):
        store.write_slots(request["slots"])
    if resumed or store.queued():
        result["supervisor"] = ensure_supervisor(store, request, live if behind else None)
    return result


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
    slots = cpu_slot_count(store, len(gpus), request.get("slots"))
    in_use = {GPU_POOL: 0, CPU_POOL: 0}
    for entry in store.active():
        pool, units = run_units(entry.get("gpus"), len(gpus))
        in_use[pool] += units
    capacity, main_pool = (len(gpus), GPU_POOL) if gpus else (slots, CPU_POOL)
    waiting_runs = [{"run_id": e["run_id"], "submission_id": e.get("submission_id"), "gpus": e.get("gpus"),
                     "timeout": e.get("timeout")} for e in queued if e["run_id"] not in claimed]
    manifest = None
    if isinstance(request.get("submission_id"), str) and RUN_ID.match(request["submission_id"]):
        manifest = read_json(store.path("submissions", request["submission_id"] + ".json"))
    return {"runs": runs, "supervisor_running": alive, "outputs_dir": store.root, "gpus": gpus,
            "capacity": capacity, "units_in_use": min(in_use[main_pool], capacity), "queued": waiting_runs,
            "cpu_slots": slots, "cpu_slots_in_use": min(in_use[CPU_POOL], slots),
            "manifest": manifest if isinstance(manifest, dict) else None, "now": now()}


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
            "resume": resume, "logs": logs, "probe": probe, "withdraw": withdraw, "workdir": receive_workdir}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(json.dumps({"error": "usage: COMMAND (%s), the request on stdin" % "|".join(COMMANDS)}))
        return 2
    if argv[0] == "supervise" and len(argv) > 1:
        request = json.loads(argv[1])  # a tmux window has no stdin to read it from
    else:
        request = json.loads(sys.stdin.readline() or "{}")
        if request.get("contract") != CONTRACT_VERSION:
            # The laptop ships the runtime it speaks to: another version here is a bug, never a guess.
            print(json.dumps({"error": "this pod runtime speaks contract %d, the request contract %r" % (
                CONTRACT_VERSION, request.get("contract")), "bad_input": True}))
            return 0
    try:
        result = COMMANDS[argv[0]](request)
    except (LookupError, BadRequest) as exc:
        result = {"error": str(exc), "bad_input": True}
    except OSError as exc:  # the outputs root cannot be created or written (a full volume)
        root = request.get("outputs_dir")
        result = {"error": "outputs root %s: %s" % (root, write_failure(exc, root))}
    if result is not None:
        print(json.dumps(result, default=str), flush=True)
    return 0
