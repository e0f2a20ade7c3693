"""Run operations: submit runs to the pod's queue, read their state, wait, cancel, resume, logs.

The pod side is the runtime package (ops_tasks/runtime, stdlib only), shipped as an archive to a
pod that does not hold its version yet and kept there under its hash (operations/runtime.py); a
running supervisor keeps its own version. Every operation is one round trip: `bash runs.sh` (+
the archive, when the pod lacks it) + a request.
"""

import posixpath
import time
import uuid
from typing import Callable, Optional

from ..errors import ConfigError, HostError
from ..names import RUN_ID
from ..run_states import COUNTS_AS_FAILURE, STATES
from ..verdicts import UNKNOWN, run_verdict
from ..runtime.contract import outputs_root_problem
from ..runtime.rundir import git_facts
from .runtime import run_command
from ..settings import host_identity
from .costs import pod_pricing, price_of
from ..streams import LineBuffer

def check_outputs_root(outputs_dir, label: str) -> None:
    """ConfigError (exit 2, before any contact) for an outputs root that is no place for run
    directories: /, a system folder, a home directory, a folder of keys. The pod checks again,
    by the same rule (runtime.contract)."""
    problem = outputs_root_problem(outputs_dir)
    if problem:
        raise ConfigError(f"{label}: outputs root {outputs_dir!r} {problem}")


def _checked_runs(runs) -> list:
    """The pod's run reports, trusted in nothing: a state the table does not know is unknown."""
    checked = []
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, dict) or not isinstance(run.get("run_id"), str):
            continue
        state = run.get("state")
        # Classified as validate and report classify (verdicts.py): a state the table lacks is unknown.
        if state not in ("missing", "unknown") and run_verdict({"state": state}, None).state == UNKNOWN:
            run = dict(run, state="unknown", error=f"the pod sent the state {state!r}")
        checked.append(run)
    return checked


def not_ok(state: str) -> bool:
    """A state that fails a status or a wait: failed (not cancelled), missing, or unknown."""
    return state in COUNTS_AS_FAILURE or state == "missing" or state not in STATES


def new_submission_id() -> str:
    """Sortable by time (to the millisecond), unique across laptops: 20261128-121500.123-3f9a."""
    now = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}.{int(now * 1000) % 1000:03d}-{uuid.uuid4().hex[:4]}"


def call_tool(target, command: str, request: dict, *, on_stderr=None, on_stdout=None, hold_stdin=False,
              parse: bool = True) -> Optional[dict]:
    """Run one command of the pod runtime; its JSON answer (HostError for an error answer)."""
    profile = target.profile
    check_outputs_root(request["outputs_dir"], profile.label)
    answer = run_command(target, command, request, label=profile.label, on_stderr=on_stderr, on_stdout=on_stdout,
                         hold_stdin=hold_stdin, parse=parse)
    if not parse:
        return None
    if "error" in answer:
        error = ConfigError if answer.get("bad_input") else HostError
        raise error(f"{profile.label}: {answer['error']}")
    if "runs" in answer:
        answer["runs"] = _checked_runs(answer["runs"])
    return answer


# ---------------------------------------------------------------- submit


def submit_runs(target, submission, *, submission_id: str, force: bool = False, retry_failed: bool = False,
                foreground: bool = False, slots: Optional[int] = None, fail_fast: bool = False, on_stderr=None,
                expect_commit: Optional[str] = None, laptop_head: Optional[dict] = None) -> dict:
    """Queue a submission's runs on the pod in one round trip; start the supervisor if needed.
    expect_commit ("none": no pin) and laptop_head ({commit, origin}) are the commit pin's
    (runtime.gates.commit_pin)."""
    profile = target.profile
    target.describe(manifest=manifest_of(submission, submission_id, profile.name))
    price = price_of(profile)  # from the laptop's records: the pod is asked only what it hands out
    request = {
        "outputs_dir": submission.outputs_dir, "submission_id": submission_id, "host": profile.name,
        "tmux_session": submission.tmux_session, "tmux_socket": profile.tmux_socket, "slots": slots,
        "force": force, "retry_failed": retry_failed, "foreground": foreground, "fail_fast": fail_fast,
        "expect_commit": expect_commit, "laptop_head": laptop_head,
        "runs": [run.to_dict() for run in submission.runs], "capacity": price is not None,
    }
    answer = call_tool(target, "submit", request, on_stderr=on_stderr)
    report = {
        "ok": not answer["refused"], "host": profile.name, "submission_id": submission_id,
        "outputs_dir": submission.outputs_dir, "tmux_session": submission.tmux_session,
        "queued": [q["run_id"] for q in answer["queued"]], "skipped": answer["skipped"],
        "refused": answer["refused"], "supervisor": answer.get("supervisor"),
        # The pod runtime's contract, the one these runs need and the live supervisor's (it handed
        # over when older: docs/ARCHITECTURE.md, "The pod runtime").
        "contract": answer.get("contract"),
        "archived": {q["run_id"]: q["archived_attempt"] for q in answer["queued"] if q["archived_attempt"]},
        # For the manifest: what its runs cost is worked out from this later (operations/costs.py).
        "pricing": {host_identity(profile): pod_pricing(price, answer.get("capacity"))} if price else None,
    }
    if isinstance(answer.get("slots_warning"), str):  # why --slots does not apply there (the pod's words)
        report["slots_warning"] = answer["slots_warning"][:400]
    if foreground:
        report["runs"] = answer["runs"]
        report["counts"] = count_states(answer["runs"])
        report["ok"] = report["ok"] and not any(not_ok(r["state"]) for r in answer["runs"])
    if answer["refused"]:
        report["error"] = (f"{profile.label}: {len(answer['refused'])} run(s) refused (listed); nothing else "
                           f"changed for them: " + "; ".join(f"{r['run_id']}: {r['reason']}" for r in answer["refused"]))
    return report


def laptop_head(folder) -> Optional[dict]:
    """This checkout's HEAD and origin ({commit, origin}), the default commit pin of a pod's repo
    of the same origin; None outside a git checkout or without an origin."""
    facts = git_facts(str(folder))
    if not facts.get("commit") or not facts.get("origin"):
        return None
    return {"commit": facts["commit"], "origin": facts["origin"]}


def manifest_of(submission, submission_id: str, host: str) -> dict:
    """What a submission is, secrets masked: kept locally and shown by --dry-run."""
    return {
        "submission_id": submission_id, "host": host, "remote_repo": submission.remote_repo,
        "outputs_dir": submission.outputs_dir, "tmux_session": submission.tmux_session,
        "runs": [run.shown() for run in submission.runs],
    }


def count_states(runs: list) -> dict:
    counts = {}
    for run in runs:
        counts[run["state"]] = counts.get(run["state"], 0) + 1
    return counts


# ---------------------------------------------------------------- reading


def pod_submission(target, answer: dict, report: dict) -> dict:
    """The report, naming the submission the pod took as its latest when asked to
    (`latest_submission`: this folder keeps no record of one): its id, checked, and
    `submission_from_pod`. What the pod sent is checked before anything acts on it."""
    taken = answer.get("pod_submission")
    if taken is None:
        return report
    submission_id = taken.get("submission_id") if isinstance(taken, dict) else None
    if not isinstance(submission_id, str) or not RUN_ID.match(submission_id):
        raise HostError(f"{target.profile.label}: the pod named its latest submission {submission_id!r}, "
                        f"which is not a submission id")
    return {**report, "submission_id": submission_id, "submission_from_pod": True}


def runs_status(target, *, outputs_dir: str, run_ids=None, run_dirs=None, submission_id=None,
                tail_lines: int = 0, latest_submission: Optional[str] = None) -> dict:
    """The state of some runs (ids, a submission, or every run directory), one round trip.
    latest_submission ("any", "root"): the pod's own latest submission (selection.select_runs)."""
    request = {"outputs_dir": outputs_dir, "run_ids": run_ids or [], "run_dirs": run_dirs or {},
               "submission_id": submission_id, "tail_lines": tail_lines, "latest_submission": latest_submission}
    answer = call_tool(target, "status", request)
    received = time.time()
    runs = answer["runs"]
    pod_now = answer.get("now")
    # How far the pod's clock is ahead of this one (within the round trip): its runs' times minus
    # this are the laptop's times (operations/costs.idle_time). None from a pod that did not say.
    offset = pod_now - received if isinstance(pod_now, (int, float)) and not isinstance(pod_now, bool) else None
    return pod_submission(target, answer, {
        "ok": not any(not_ok(r["state"]) for r in runs), "host": target.profile.name,
        "outputs_dir": answer["outputs_dir"], "submission_id": submission_id,
        "supervisor_running": answer["supervisor_running"], "counts": count_states(runs), "runs": runs,
        "clock_offset": offset})


def pod_selection(target, selected: dict) -> dict:
    """A selection that asks the pod (select_runs' `latest_submission`) made into one that names
    its runs, by one round trip (the runs' states): the pod's latest submission, or the run ids'
    directories in it. Each run id and directory the pod sent is checked before anything uses it:
    a directory strictly under the outputs root it answered for, which must be the one asked about
    when the user named one."""
    report = runs_status(target, outputs_dir=selected["outputs_dir"], run_ids=selected["run_ids"],
                         latest_submission=selected["latest_submission"])
    root = posixpath.normpath(report["outputs_dir"]) if isinstance(report["outputs_dir"], str) else None
    if root is None or (selected["latest_submission"] == "root" and root != posixpath.normpath(selected["outputs_dir"])):
        raise HostError(f"{target.profile.label}: the pod answered for the outputs root {report['outputs_dir']!r}")
    runs = []
    for run in report["runs"]:
        run_dir = run.get("run_dir")
        if not RUN_ID.match(run["run_id"]) or not isinstance(run_dir, str) or not posixpath.normpath(
                run_dir).startswith(root.rstrip("/") + "/"):
            raise HostError(f"{target.profile.label}: the pod named run {run['run_id']!r} in {run_dir!r}, "
                            f"not a run directory under {root}")
        runs.append({"run_id": run["run_id"], "run_dir": posixpath.normpath(run_dir)})
    chosen = {"outputs_dir": root, "run_ids": selected["run_ids"],
              "run_dirs": {r["run_id"]: r["run_dir"] for r in runs if r["run_id"] in selected["run_ids"]}}
    if report.get("submission_from_pod"):
        chosen.update(submission_id=report["submission_id"], submission_from_pod=True)
    if not selected["run_ids"]:
        chosen["runs"] = runs
    return chosen


def wait_runs(target, *, outputs_dir: str, submission_id=None, run_ids=None, timeout_s=None,
              on_progress: Optional[Callable[[int, int, int, int], None]] = None,
              latest_submission: Optional[str] = None) -> dict:
    """Block (in one round trip) until the runs end; on_progress(done, total, failed, running)."""
    progress = _ProgressLines(on_progress)
    request = {"outputs_dir": outputs_dir, "submission_id": submission_id, "run_ids": run_ids or [],
               "timeout": timeout_s, "latest_submission": latest_submission}
    answer = call_tool(target, "wait", request, on_stderr=progress.feed)
    runs = answer["runs"]
    failed = [r["run_id"] for r in runs if not_ok(r["state"]) and r["state"] != "missing"]
    report = pod_submission(target, answer, {
        "ok": answer["outcome"] == "done" and not failed, "host": target.profile.name,
        "submission_id": submission_id, "outcome": answer["outcome"], "counts": count_states(runs),
        "failed": failed, "runs": runs})
    if answer["outcome"] == "timeout":
        report["error"] = f"{target.profile.label}: runs still going after {timeout_s:.0f}s"
    elif answer["outcome"] == "stuck":
        report["error"] = (f"{target.profile.label}: runs are left but no supervisor is running (killed? see "
                           f"{outputs_dir}/.ops/supervisor.log): runs.resume queues them again")
    elif failed:
        report["error"] = f"{target.profile.label}: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)}"
    return report


class _ProgressLines:
    """Reads `P|done|total|failed|running` lines from the tool's stderr."""

    def __init__(self, on_progress):
        self.on_progress = on_progress
        self.lines = LineBuffer()

    def feed(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            parts = line.split("|")
            if parts[0] == "P" and len(parts) == 5 and self.on_progress is not None:
                self.on_progress(*(int(p) for p in parts[1:]))


def cancel_runs(target, *, outputs_dir: str, run_ids=None, run_dirs=None, submission_id=None,
                missing_ok: bool = False, latest_submission: Optional[str] = None) -> dict:
    """Cancel runs on one pod. missing_ok: a run this pod does not hold is not this pod's failure
    (over a fleet a run is on one pod; the task asks that each was found on some pod)."""
    request = {"outputs_dir": outputs_dir, "run_ids": run_ids or [], "run_dirs": run_dirs or {},
               "submission_id": submission_id, "latest_submission": latest_submission}
    answer = call_tool(target, "cancel", request)
    runs = answer["runs"]
    # A run that was waiting or running and is not cancelled now, or no run at all: not ok.
    missed = [r["run_id"] for r in runs if (r["state"] == "missing" and not missing_ok)
              or (r["was"] in ("queued", "running", "lost") and r["state"] != "cancelled")]
    report = pod_submission(target, answer, {"ok": not missed, "host": target.profile.name, "runs": runs})
    if missed:
        report["error"] = f"{target.profile.label}: not cancelled: {', '.join(missed)}"
    return report


def resume_runs(target, *, outputs_dir: str, tmux_session: str, slots: Optional[int] = None, submission_id=None,
                run_ids=None, run_dirs=None) -> dict:
    """Queue again the runs a dead supervisor left `lost` (of run_ids when given, else of the
    submission, else every run under the outputs root), and start a supervisor."""
    request = {"outputs_dir": outputs_dir, "submission_id": submission_id, "tmux_session": tmux_session,
               "tmux_socket": target.profile.tmux_socket, "slots": slots, "run_ids": run_ids or [],
               "run_dirs": run_dirs or {}}
    answer = call_tool(target, "resume", request)
    return {"ok": True, "host": target.profile.name, "resumed": answer["resumed"],
            "stopped_leftovers": answer["stopped_leftovers"], "supervisor": answer.get("supervisor")}


def run_logs(target, *, outputs_dir: str, run_id: str, run_dir=None, lines: int = 100, follow: bool = False,
             on_output=None) -> dict:
    request = {"outputs_dir": outputs_dir, "run_ids": [run_id], "run_dirs": {run_id: run_dir} if run_dir else {},
               "lines": lines, "follow": follow}
    if follow:
        call_tool(target, "logs", request, on_stdout=on_output, hold_stdin=True, parse=False)
        return {"ok": True, "host": target.profile.name, "run_id": run_id, "followed": True}
    answer = call_tool(target, "logs", request)
    if answer["text"] is None:
        raise HostError(f"{target.profile.label}: run {run_id} has no stdout.log ({answer['log']})")
    return {"ok": True, "host": target.profile.name, "run_id": run_id, "log": answer["log"], "text": answer["text"]}
