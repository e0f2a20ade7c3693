"""Reading state: a run's report (its state as the supervisor sees it), status, wait (progress
lines on stderr until a submission's runs end) and logs (a tail, or followed until the run ends).
"""

import os
import sys
import time

from .contract import COUNTS_AS_FAILURE, RUN_ID, TERMINAL, manifest_order, summary_leaves
from .files import last_line, now, open_regular, read_json, record_path, tail_text
from .rundir import attempts_done, effective_state, has_files, read_status
from .store import BadRequest, Store, check_run, last_submission_root


WAIT_HEARTBEAT_S = 2.0  # runs.wait repeats its progress line this often (to notice the laptop gone)


def run_report(store, run_dir, run_id, supervisor_alive, waiting, tail_lines=0):
    status, problem = read_status(run_dir, with_problem=True)
    if status is None and supervisor_alive and waiting is not None and run_id in waiting:
        # The run removed (or spoilt) its own status.json while its supervisor holds it: it is what
        # its queue or active entry says, and its end is written when it ends.
        claimed = os.path.exists(store.path("active", run_id + ".json"))
        status, problem = {"run_id": run_id, "state": "running" if claimed else "queued"}, None
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


SMALL_SUMMARY = 1 << 20  # a summary.json larger than this is not read for the table


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


def with_latest_submission(request):
    """(request, manifest): a request that asks for the pod's latest submission (the laptop's
    folder has no record of one) made into one that names it, by its outputs root and id (or, for
    run ids it holds, their run directories), and that manifest, to send back; the request as it
    is and None when it asks nothing of the kind. `latest_submission`: "root" looks under the
    request's outputs root (the user named it), "any" also where this user's last submit went."""
    wanted = request.get("latest_submission")
    if wanted not in ("root", "any"):
        return request, None
    roots = [request["outputs_dir"]] + ([last_submission_root()] if wanted == "any" else [])
    found = []
    for root in filter(None, roots):
        try:
            store = Store(root)
        except BadRequest:
            continue  # a pointer to no place for runs is not followed
        manifest = store.latest_submission()
        if manifest is not None:
            found.append((manifest_order(manifest), store.root, manifest))
    ids = request.get("run_ids") or []
    if not found:
        if ids:
            return request, None  # the runs are where the request says
        raise LookupError("no submission is recorded in the laptop's folder, nor on the pod under %s: pass "
                          "--run-id, --submission or --all" % " or ".join(sorted(set(filter(None, roots)))))
    _, root, manifest = max(found, key=lambda item: item[0])
    if not ids:
        return dict(request, outputs_dir=root, submission_id=manifest["submission_id"]), manifest
    dirs = {r.get("run_id"): r.get("run_dir") for r in manifest.get("runs") or [] if isinstance(r, dict)}
    if not all(isinstance(dirs.get(run_id), str) for run_id in ids):
        return request, None  # runs of another submission: where the request says
    return dict(request, outputs_dir=root, run_dirs={run_id: dirs[run_id] for run_id in ids}), manifest


def pod_submission(manifest):
    """What an answer says of the submission taken from the pod: its id, outputs root and time."""
    if manifest is None:
        return None
    return {key: manifest.get(key) for key in ("submission_id", "outputs_dir", "submitted_at", "host")}


def status(request):
    request, manifest = with_latest_submission(request)
    store = Store(request["outputs_dir"])
    alive, waiting = store.supervisor_alive(), store.waiting_ids()
    runs = [run_report(store, run_dir, run_id, alive, waiting, request.get("tail_lines", 0))
            for run_id, run_dir in selected_runs(store, request)]
    # The pod's clock, for a laptop that sets the runs' times against its own (idle time, costs).
    return {"runs": runs, "supervisor_running": alive, "outputs_dir": store.root, "now": now(),
            "pod_submission": pod_submission(manifest)}


def wait(request):
    request, manifest = with_latest_submission(request)
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
            return {"outcome": "done", "runs": runs, "supervisor_running": alive,
                    "pod_submission": pod_submission(manifest)}
        # Nobody to run what is left: say so (after a moment, as a new supervisor may be starting).
        if alive or "running" in states:
            unattended_since = None
        elif unattended_since is None:
            unattended_since = now()
        elif now() - unattended_since > 5:
            return {"outcome": "stuck", "runs": runs, "supervisor_running": alive,
                    "pod_submission": pod_submission(manifest)}
        if deadline is not None and now() > deadline:
            return {"outcome": "timeout", "runs": runs, "supervisor_running": alive,
                    "pod_submission": pod_submission(manifest)}
        time.sleep(0.5)


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
                with open_regular(path) as handle:
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
