"""`runs` namespace: submit runs from a JSON config to the pod's queue, watch, wait, cancel, resume."""

import re
import sys
import time
from typing import Optional

from invoke import Collection
from .tables import tabulate

from .errors import ConfigError
from .defaults import RUNS_SESSION, WAIT_TIMEOUT_S, WATCH_INTERVAL_S
from .flags import count_flag, seconds_flag
from .output import (LineEmitter, announce, emit, fleet_requested, fleet_targets, is_time_key, json_requested, log,
                     on_each_pod, ops_task, stopped, target_of)
from .run_states import ACTIVE
from .runtime.contract import is_moment
from .settings import host_identity, project_dir_of
from .streams import LineBuffer
# The operations, fleet, records, selection and targets are imported by the functions that use them:
# `ops --list` and `ops TASK --help` load none of them (ARCHITECTURE.md, "Start-up").

RUN_SELECTION_HELP = {
    "run_id": "Run id(s), comma-separated or repeated.",
    "submission": "Submission id (default: the latest one made to this host from this project).",
    "all": "Every run directory on the pod.",
    "remote_outputs_dir": "Outputs root on the pod (default: the latest submission's, else "
                          "$OPS_REMOTE_OUTPUTS_DIR, else the profile's).",
}


SLOTS_HELP = ("CPU slots: how many runs without GPUs (gpus: 0, or any run on a pod without GPUs) run at once "
              "(default: 1 on a pod without GPUs, 4 on a pod with GPUs).")


# ---------------------------------------------------------------- helpers


def _select(c, target, run_id, submission, all_runs, remote_outputs_dir):
    """The selection the runs tasks pass to the pod tool (no local run list needed)."""
    from .fleet import NothingHere
    from .records import load_manifest
    from .selection import select_runs
    # A folder with no record of a submission to this pod asks the pod (in the task's own request).
    selected = select_runs(c, target, run_id, submission, all_runs, remote_outputs_dir, ask_pod=True)
    selected.pop("runs", None)
    manifest = load_manifest(project_dir_of(c.config), selected["submission_id"]) if "submission_id" in selected else None
    if (manifest or {}).get("fleet") and host_identity(target.profile) not in {r.get("host_id") for r in manifest["runs"]}:
        raise NothingHere({"ok": True, "host": target.profile.name, "submission_id": selected["submission_id"],
                           "outputs_dir": selected["outputs_dir"], "counts": {}, "runs": [],
                           "note": f"no run of fleet submission {selected['submission_id']} was placed here"})
    return selected


def _said_from_pod(report: dict) -> dict:
    """A report whose submission the pod named (this folder has none recorded): said on stderr."""
    from .selection import from_pod_note
    note = from_pod_note(report)
    if note:
        log(note)
    return report


def _age(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _duration(run: dict):
    if not run.get("started"):
        return None
    return (run.get("finished") or time.time()) - run["started"]


def _when(epoch) -> str:
    """A moment for people: local time, with how long ago."""
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(epoch))} ({_age(time.time() - epoch)} ago)"


# Terminal escapes and control characters in text from the pod (a log line) would redraw the
# user's screen; they are dropped before anything is shown.
_UNPRINTABLE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x1f\x7f-\x9f]")


def _one_line(text, width: int = 60) -> str:
    text = _UNPRINTABLE.sub("", str(text)).strip() if text is not None else ""
    return text if len(text) <= width else text[:width - 1] + "…"


def _reason(run: dict) -> str:
    """Why a run is not ok, in one line: its failure class, exit or signal, the pod's error."""
    if run["state"] in ("succeeded", "queued", "running"):
        return ""
    parts = [run.get("failure_class") or run["state"]]
    if run.get("signal"):
        parts.append(f"signal {run['signal']}")
    elif run.get("exit_code") not in (None, 0):
        parts.append(f"exit {run['exit_code']}")
    if run.get("error"):
        parts.append(_one_line(run["error"], 50))
    return ", ".join(str(part) for part in parts)


def _latest_step(run: dict) -> str:
    """The run's latest logged step (metrics.jsonl or metrics_from_log), `iter=100 loss=3.1`; the
    pod's dict is shown, never trusted: scalars only, on one line."""
    step = run.get("metrics")
    if not isinstance(step, dict):
        return ""
    return _one_line(" ".join(f"{k}={v}" for k, v in step.items() if isinstance(v, (str, int, float))), 60)


def _gpus(run: dict) -> str:
    gpus = run.get("gpus")
    return ",".join(str(g) for g in gpus) if isinstance(gpus, list) else ""


def progress_line(data: dict) -> str:
    """done/failed/running/queued, an ETA from the finished runs' times, the running runs by name."""
    from .operations.runs import not_ok
    runs = data["runs"]
    running = [r["run_id"] for r in runs if r["state"] == "running"]
    queued = sum(r["state"] == "queued" for r in runs)
    done = len(runs) - len(running) - queued
    failed = sum(not_ok(r["state"]) and r["state"] not in ACTIVE for r in runs)
    line = f"{done}/{len(runs)} done ({failed} failed), {len(running)} running, {queued} queued"
    took = [_duration(r) for r in runs if r["state"] not in ACTIVE and r.get("started") and r.get("finished")]
    if took and (running or queued):
        # The runs left, at the mean time of those finished, as many at a time as run now.
        eta = sum(took) / len(took) * (len(running) + queued) / max(len(running), 1)
        line += f", ETA ~{_age(eta)}"
    if running:
        line += ": " + _one_line(", ".join(running), 80)
    return line


def _human_value(key, value) -> str:
    """A summary value for people: moments as times, booleans as yes/no, text on one line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if (is_time_key(key) and isinstance(value, (int, float)) and value > 0) or is_moment(key, value):
        return _when(value)  # the tool's own times, and a summary's (end_time: contract.is_moment)
    return _one_line(value, 80)


STATUS_METRIC_COLUMNS = 4  # of the runs' summary_metrics (the pod sends 8 a run): the table stays readable


def _metric_columns(runs: list) -> list:
    """The first STATUS_METRIC_COLUMNS names of the runs' summary_metrics, in the order met."""
    names = {}
    for run in runs:
        metrics = run.get("summary_metrics")
        for name in metrics if isinstance(metrics, dict) else ():
            names.setdefault(name, None)
            if len(names) == STATUS_METRIC_COLUMNS:
                return list(names)
    return list(names)


def _metric_cell(run: dict, name: str) -> str:
    """A run's summary value for the table: a number (from the pod: anything else is left blank)."""
    metrics = run.get("summary_metrics")
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return f"{value:.6g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def render_table(data: dict) -> str:
    metric_names = _metric_columns(data["runs"])
    rows = [(r["run_id"], r["state"], r.get("attempt", "-"), _reason(r), _age(_duration(r)), _gpus(r),
             *(_metric_cell(r, name) for name in metric_names),
             _latest_step(r) or _one_line(r.get("last_line"))) for r in data["runs"]]
    where = f"submission {data['submission_id']}" if data.get("submission_id") else data.get("outputs_dir", "")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(data["counts"].items())) or "no runs"
    lines = [f"{data['host']}: {where}: {counts}"]
    if data["runs"]:
        lines.append(f"progress: {progress_line(data)}")
    headers = ("run", "state", "attempt", "reason", "time", "gpus", *(_one_line(n, 24) for n in metric_names),
               "last output")
    lines += [tabulate(rows, headers=headers, tablefmt="simple")]
    if "supervisor_running" in data and not data["supervisor_running"] and any(
            r["state"] in ACTIVE + ("lost",) for r in data["runs"]):
        lines.append("warning: no supervisor is running on the pod: runs.resume starts one")
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


class ProgressBar:
    """runs done of total on stderr (tqdm on a terminal, a line per change otherwise)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.last = None

    def __call__(self, done, total, failed, running):
        if not self.enabled:
            return
        if sys.stderr.isatty():
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total, unit="run", desc="runs", file=sys.stderr, dynamic_ncols=True)
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix(running=running, failed=failed, refresh=False)
            self.bar.refresh()
        elif (done, failed, running) != self.last:
            log(f"runs: {done}/{total} done ({failed} failed), {running} running, {total - done - running} queued")
        self.last = (done, failed, running)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class SupervisorEcho:
    """--no-tmux: the supervisor's lines go to stderr as they come (its progress lines do not)."""

    def __init__(self):
        self.lines = LineBuffer()

    def __call__(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            if not line.startswith("P|"):
                log(line)


# ---------------------------------------------------------------- submit


def _submission_lines(data: dict) -> list:
    """What a submission did: its id, and each run skipped or refused (once) with the reason."""
    lines = [f"{data['host']}: submission {data['submission_id']}: {len(data['queued'])} queued, "
             f"{len(data['skipped'])} skipped, {len(data['refused'])} refused"]
    lines += [f"  skipped {s['run_id']}: {s['reason']}" for s in data["skipped"]]
    lines += [f"  refused {s['run_id']}: {s['reason']}" for s in data["refused"]]
    lines += [f"  {run_id}: earlier attempt kept in attempts/{n}/" for run_id, n in data.get("archived", {}).items()]
    if data.get("supervisor"):
        lines.append(f"  supervisor: {data['supervisor']}")
    return lines


def render_submit(data: dict) -> str:
    if data.get("dry_run"):
        return ""
    # Under --wait the submission was printed before the wait began (_announce_submission).
    lines = [] if data.get("announced") else _submission_lines(data)
    if data.get("runs"):
        lines.append(render_table({**data, "counts": data.get("counts", {}), "error": data.get("wait_error")}))
    elif data.get("error") and not data["refused"]:  # the refused runs are listed with their reasons
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


def _announce_submission(report: dict) -> None:
    """Show the submission id and what was refused now, before a wait that may last hours: a
    piped log (CI, tee) has them at once. Under --json on stderr, the document stays whole."""
    if json_requested():
        refused = "".join(f"; refused {r['run_id']}: {r['reason']}" for r in report["refused"])
        log(f"{report['host']}: submission {report['submission_id']}: {len(report['queued'])} queued{refused}; "
            f"waiting")
    else:
        emit("\n".join(_submission_lines(report)))
        report["announced"] = True
    sys.stdout.flush()
    sys.stderr.flush()


def _all_cancelled(report: dict) -> dict:
    """A selection whose runs were all cancelled did not do what it was for: not ok (exit 1)."""
    runs = report.get("runs") or []
    if runs and all(r["state"] == "cancelled" for r in runs):
        report["ok"] = False
        report.setdefault("error", f"{report['host']}: all {len(runs)} run(s) were cancelled; none ran to the end")
    return report


@ops_task(human=render_submit, help={
    "config": "Run config: the seed's JSON format (or a CSV of runs).",
    "remote_repo": "Repo on the pod the commands run in (default: the config's, $OPS_REMOTE_REPO, the profile's).",
    "remote_outputs_dir": "Outputs root on the pod (default: the config's, $OPS_REMOTE_OUTPUTS_DIR, "
                          "<volume>/pod_artifacts/outputs).",
    "tmux_session": f"tmux session of the supervisor (default: the config's, else {RUNS_SESSION}).",
    "force": "Run again even runs that succeeded or failed; earlier files move to attempts/<n>/.",
    "retry_failed": "Run again the runs that failed (timeout, stalled, cancelled, lost too).",
    "no_tmux": "Supervise in the foreground over this connection, streaming; exit 1 if a run failed.",
    "slots": SLOTS_HELP,
    "fail_fast": "Cancel the submission's queued runs once one of its runs has failed.",
    "wait": "Then wait until the runs end (like runs.wait).",
    "timeout": f"With --wait: seconds to wait at most (default {WAIT_TIMEOUT_S:.0f}: 24 h; the runs go on after it).",
    "expect_commit": "Start runs only while the pod's repo is at this commit and clean (default: the config's "
                     "expect_commit, else this checkout's HEAD when the pod's repo has its origin; none: no pin).",
})
def submit(c, config, host=None, remote_repo=None, remote_outputs_dir=None, tmux_session=None, force=False,
           retry_failed=False, no_tmux=False, slots=None, fail_fast=False, wait=False, timeout=None,
           expect_commit=None):
    """Queue runs from a config on the pod (one round trip), or spread over a fleet's pods."""
    from .operations.fleet_runs import submit_to_fleet
    from .operations.run_config import load_submission
    from .operations.runs import manifest_of, new_submission_id, submit_runs, wait_runs
    from .records import host_fields, save_manifest
    from .targets import LinkDown
    fleet = fleet_targets(c, host)
    if fleet:
        if wait or no_tmux:
            raise ConfigError("runs.submit over a fleet: --wait and --no-tmux take one host (chain runs.wait)")
        if expect_commit is not None:
            raise ConfigError("runs.submit over a fleet: --expect-commit takes one host (set expect_commit in the config)")
        submissions = {t.profile.name: load_submission(config, profile=t.profile, remote_repo=remote_repo,
                                                       outputs_dir=remote_outputs_dir, tmux_session=tmux_session,
                                                       project_dir=project_dir_of(c.config)) for t in fleet}
        report = submit_to_fleet(fleet, submissions, submission_id=new_submission_id(), config=str(config),
                                 project_dir=project_dir_of(c.config), force=force, retry_failed=retry_failed,
                                 slots=count_flag("--slots", slots, None), fail_fast=fail_fast)
        c.config.ops_last_submission = report.get("submission_id")
        return report
    target = target_of(c, host)
    submission = load_submission(config, profile=target.profile, remote_repo=remote_repo,
                                 outputs_dir=remote_outputs_dir, tmux_session=tmux_session,
                                 project_dir=project_dir_of(c.config))
    from .operations.run_config import expected_commit_flag
    pin = expected_commit_flag(expect_commit)  # bad input: one line, before the warnings and any contact
    warnings = [line for run in submission.runs for line in run.warnings]
    for line in warnings:  # before any contact: on stderr, so a --json document stays whole
        log(f"warning: {line}")
    cpu_slots = count_flag("--slots", slots, None)  # not given: a live supervisor keeps its own
    timeout_s = seconds_flag("--timeout", timeout, WAIT_TIMEOUT_S)
    submission_id = new_submission_id()
    from .operations.runs import laptop_head
    # The local profile runs in this very checkout: pinning it to its own HEAD would refuse every edit.
    head = None if pin or target.profile.is_local else laptop_head(project_dir_of(c.config))
    report = submit_runs(target, submission, submission_id=submission_id, force=force, retry_failed=retry_failed,
                         foreground=no_tmux, slots=cpu_slots, fail_fast=fail_fast,
                         on_stderr=SupervisorEcho() if no_tmux else None, expect_commit=pin, laptop_head=head)
    manifest = manifest_of(submission, submission_id, target.profile.name)
    manifest.update(queued=report["queued"], skipped=report["skipped"], refused=report["refused"],
                    config=str(config), submitted_at=time.time(), pricing=report.get("pricing"),
                    **host_fields(target.profile))
    report["manifest"] = str(save_manifest(project_dir_of(c.config), manifest))
    if report.get("slots_warning"):  # after contact: the pod knows its GPUs and its supervisor
        log(f"warning: {target.profile.label}: {report['slots_warning']}")
        warnings = [*warnings, f"{target.profile.label}: {report.pop('slots_warning')}"]
    report["warnings"] = warnings
    c.config.ops_last_submission = submission_id  # chained tasks (runs.wait, artifacts.fetch) take it
    if wait and not no_tmux and report["queued"]:
        _announce_submission(report)
        bar = ProgressBar()
        try:
            with target.round_trip_budget(timeout_s):
                waited = wait_runs(target, outputs_dir=submission.outputs_dir, submission_id=submission_id,
                                   timeout_s=timeout_s, on_progress=bar)
        except LinkDown as lost:
            raise lost.with_hint(_wait_hint(target, submission_id, None)) from None
        except KeyboardInterrupt as exc:
            raise stopped(exc, _wait_hint(target, submission_id, None)) from None
        finally:
            bar.close()
        waited = _all_cancelled(waited)
        report.update(runs=waited["runs"], counts=waited["counts"], outcome=waited["outcome"])
        report["ok"] = report["ok"] and waited["ok"]
        if waited.get("error"):
            report["wait_error"] = waited["error"]
            report["error"] = "; ".join(filter(None, (report.get("error"), waited["error"])))
    return report


# ---------------------------------------------------------------- status and list


def render_status(data: dict) -> str:
    if "run" not in data:
        return render_table(data)
    run = data["run"]
    rows = [(k, run[k]) for k in ("state", "attempt", "failure_class", "exit_code", "signal", "submission_id",
                                  "run_dir") if run.get(k) is not None]
    rows += [("reason", _reason(run) or "-"), ("started", _when(run["started"]) if run.get("started") else "-"),
             ("time", _age(_duration(run))), ("gpus", _gpus(run) or "-"),
             ("last output", _when(run["last_output"]) if run.get("last_output") else "-")]
    rows += [("latest step", _latest_step(run))] if _latest_step(run) else []
    if isinstance(run.get("survivors"), list) and run["survivors"]:  # alive after TERM and KILL
        rows.append(("survivors", _one_line(", ".join(str(p) for p in run["survivors"]), 60)))
    lines = [f"{data['host']}: run {run['run_id']}: {run['state'].upper()}", tabulate(rows, tablefmt="plain")]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    if run.get("summary") is not None:
        shown = [(k, v) for k, v in run["summary"].items() if v is not None and not isinstance(v, (dict, list))]
        nested = run.get("summary_metrics") if isinstance(run.get("summary_metrics"), dict) else {}
        shown += [(k, v) for k, v in nested.items() if "." in str(k)]  # last_eval.val: nested, flattened
        lines.append("summary: " + ", ".join(f"{_one_line(k, 40)}={_human_value(k, v)}" for k, v in shown)[:400])
    if run.get("stdout_tail"):
        lines += ["--- stdout.log tail ---", run["stdout_tail"]]
    return "\n".join(lines)


@ops_task(human=render_status, iterable=["run_id"], help={
    **RUN_SELECTION_HELP,
    "tail_lines": "With one --run-id: lines of stdout.log to show (default 60).",
    "watch": "Keep showing the table until the runs end: redrawn in place on a terminal, "
             "else one line per change (one JSON document per change under --json).",
    "interval": f"With --watch: seconds between refreshes, one round trip each (default {WATCH_INTERVAL_S:g}).",
    "rebuild": "Over a fleet submission: rebuild its ledger (which run is on which pod) from the pods' manifests.",
})
def status(c, host=None, run_id=None, submission=None, all=False, remote_outputs_dir=None, tail_lines=None,
           watch=False, interval=None, rebuild=False):
    """State of runs: one run in detail (--run-id), or a submission's table; exit 1 if any failed."""
    if rebuild:
        from .operations.fleet_runs import rebuild_ledger

        steered = _fleet_submission(c, host, run_id, submission, remote_outputs_dir)
        if not steered:
            raise ConfigError("runs.status --rebuild rebuilds a fleet submission's ledger: name its pods with --host")
        return rebuild_ledger(*steered)
    return on_each_pod(c, host, lambda target: _status_on(c, target, run_id, submission, all, remote_outputs_dir,
                                                          tail_lines, watch, interval))


def _status_on(c, target, run_id, submission, all, remote_outputs_dir, tail_lines, watch, interval):
    from .operations.runs import runs_status
    if watch and fleet_requested():
        raise ConfigError("runs.status --watch redraws one pod's table: give one host (runs.wait waits on a fleet)")
    selected = _select(c, target, run_id, submission, all, remote_outputs_dir)
    lines = count_flag("--tail-lines", tail_lines, 60)
    every = seconds_flag("--interval", interval, WATCH_INTERVAL_S)
    one = len(selected["run_ids"]) == 1 and not watch
    if watch:
        try:
            return _said_from_pod(_all_cancelled(_watch(target, selected, every)))
        except KeyboardInterrupt as exc:
            raise stopped(exc, "stopped watching; the runs go on on the pod") from None
    report = _said_from_pod(_all_cancelled(runs_status(target, **selected, tail_lines=lines if one else 0)))
    if one:
        report["run"] = report["runs"][0]
        if report["run"]["state"] == "missing":
            report["error"] = f"{target.profile.label}: no run {report['run']['run_id']} under {report['outputs_dir']}"
    return report


@ops_task(human=render_table, help={"remote_outputs_dir": RUN_SELECTION_HELP["remote_outputs_dir"]})
def list_(c, host=None, remote_outputs_dir=None):
    """Every run directory on the pod (each pod of a fleet) with its state."""
    return on_each_pod(c, host, lambda target: _list_on(c, target, remote_outputs_dir))


def _list_on(c, target, remote_outputs_dir):
    from .operations.runs import runs_status
    from .selection import latest_submission, outputs_root
    outputs = outputs_root(remote_outputs_dir, latest_submission(c, target), target.profile)
    report = runs_status(target, outputs_dir=outputs)
    report["ok"] = True  # a listing is not a verdict
    return report


def _watch(target, selected: dict, interval: float, deadline: Optional[float] = None) -> dict:
    """Refresh the status (one round trip each time) until no run is queued or running (or no
    supervisor is left to run them, or the deadline passed); the last report is the result.
    A terminal sees the table redrawn in place; a pipe or a log gets a line only when
    something changed (a JSON document each under --json)."""
    from .operations.runs import runs_status
    redraw = sys.stdout.isatty() and not json_requested()
    drawn, last = 0, None
    while True:
        report = runs_status(target, **selected)
        active = any(r["state"] in ACTIVE for r in report["runs"])
        stuck = active and not report.get("supervisor_running", True)
        if not active or stuck or (deadline is not None and time.monotonic() >= deadline):
            if drawn:
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")  # the final table replaces the live one
            return report
        if redraw:
            text = render_table(report)
            if drawn:
                sys.stdout.write(f"\x1b[{drawn}F\x1b[J")  # back to the table's first line, clear below
            emit(text)
            drawn = text.count("\n") + 1
        else:
            change = [(r["run_id"], r["state"]) for r in report["runs"]]
            if change != last:
                if json_requested():
                    announce(report, "")
                else:
                    emit(f"{report['host']}: progress: {progress_line(report)}")
            last = change
        time.sleep(interval)


# ---------------------------------------------------------------- logs, wait, cancel, resume


@ops_task(human=lambda data: data["text"], help={
    "run_id": "The run.",
    "lines": "How many of the last lines to print (default 100).",
    "follow": "Keep printing until the run ends (or Ctrl-C).",
    "submission": RUN_SELECTION_HELP["submission"],
    "remote_outputs_dir": RUN_SELECTION_HELP["remote_outputs_dir"],
})
def logs(c, run_id, host=None, lines=None, follow=False, submission=None, remote_outputs_dir=None):
    """Print a run's stdout.log (over a fleet: from the pod holding it); --follow streams it until the run ends."""
    from .operations.runs import run_logs
    from .targets import LinkDown
    fleet = fleet_targets(c, host)
    target = _pod_holding(c, fleet, run_id, submission) if fleet else target_of(c, host)
    selected = _select(c, target, [run_id], submission, False, remote_outputs_dir)
    count = count_flag("--lines", lines, 100)
    (only,) = selected["run_ids"]
    kwargs = dict(outputs_dir=selected["outputs_dir"], run_id=only, run_dir=selected["run_dirs"].get(only),
                  lines=count)
    if not follow:
        return run_logs(target, **kwargs)
    try:
        run_logs(target, **kwargs, follow=True, on_output=LineEmitter())
    except LinkDown as lost:
        raise lost.with_hint(f"the run goes on on the pod: follow it again with ops runs.logs --host "
                             f"{target.profile.name} --run-id {only} --follow") from None
    return None


def _pod_holding(c, targets: list, run_id, submission):
    """The pod of a fleet that holds run_id, by the records of this project (the ledger of a
    fleet submission, else the manifest naming the run's pod), before any contact; exit 2 when
    no record places it on one of these pods."""
    from .records import load_manifest, manifest_order
    from .selection import latest_submission
    from .selection import run_ids_flag

    ids = run_ids_flag([run_id])
    if len(ids) != 1:
        raise ConfigError(f"runs.logs --run-id {run_id!r}: one run at a time")
    only, project = ids[0], project_dir_of(c.config)
    by_identity = {host_identity(t.profile): t for t in targets}
    if submission:
        manifests = [load_manifest(project, submission)]
        if manifests[0] is None:
            raise ConfigError(f"no submission {submission} is recorded in this project")
    else:  # each pod's latest submission, newest first: the run's latest placement wins
        manifests = sorted(filter(None, (latest_submission(c, t) for t in targets)),
                           key=manifest_order, reverse=True)
    for manifest in filter(None, manifests):
        holder = _holder_in(project, manifest, only)
        if holder in by_identity:
            log(f"runs.logs: run {only} is on {by_identity[holder].profile.name} "
                f"(submission {manifest.get('submission_id')})")
            return by_identity[holder]
    names = ", ".join(t.profile.name for t in targets)
    raise ConfigError(f"runs.logs --run-id {only}: no submission recorded in this project placed it on one of "
                      f"the fleet's pods ({names}); give its pod with --host")


def _holder_in(project, manifest: dict, run_id: str):
    """The host identity holding run_id in this submission: the ledger's current attempt (a run
    moved by rebalancing is where it went), else the manifest's own record of its pod."""
    run = next((r for r in manifest.get("runs") or [] if isinstance(r, dict) and r.get("run_id") == run_id), None)
    if run is None:
        return None
    if manifest.get("fleet"):
        from .records import Ledger

        current = Ledger(project, manifest["submission_id"]).current(run_id)
        if current:
            return current["host_id"]
    return run.get("host_id") or manifest.get("host_id")


FLEET_STEER_HELP = {
    "lost_after": "Over a fleet submission: seconds a pod may stay unreachable before its unfinished runs "
                  "are placed on the other pods (default 600).",
    "no_rebalance": "Over a fleet submission: leave queued runs where they are (no moves to idle pods).",
}


@ops_task(human=render_table, iterable=["run_id"], help={
    **{k: v for k, v in RUN_SELECTION_HELP.items() if k != "all"},
    "timeout": f"Seconds to wait at most (default {WAIT_TIMEOUT_S:.0f}: 24 h; the runs go on after it).",
    **FLEET_STEER_HELP,
})
def wait(c, host=None, run_id=None, submission=None, remote_outputs_dir=None, timeout=None, lost_after=None,
         no_rebalance=False):
    """Wait until a submission's runs end, with a progress bar; exit 1 if any failed."""
    from .operations.fleet_runs import LOST_AFTER_S

    timeout_s = seconds_flag("--timeout", timeout, WAIT_TIMEOUT_S)
    lost_after_s = seconds_flag("--lost-after", lost_after, LOST_AFTER_S)
    steered = _fleet_submission(c, host, run_id, submission, remote_outputs_dir)
    if steered:
        return _steer(steered, timeout_s=timeout_s, lost_after_s=lost_after_s, rebalance=not no_rebalance)
    return on_each_pod(c, host, lambda target: _wait_on(c, target, run_id, submission, remote_outputs_dir, timeout))


def render_balance(data: dict) -> str:
    lines = [f"moved {m['run_id']}: {m['from']} -> {m['to']}" for m in data.get("moves") or []]
    lines += [f"placed again {m['run_id']}: {m['from']} (lost) -> {m['to']}" for m in data.get("replaced") or []]
    return "\n".join(lines) or f"{data.get('host', 'fleet')}: {data.get('note') or 'nothing to move'}"


@ops_task(human=render_balance, help={"submission": RUN_SELECTION_HELP["submission"],
                                      "lost_after": FLEET_STEER_HELP["lost_after"]})
def balance(c, host=None, submission=None, lost_after=None):
    """Over a fleet submission, once: move queued runs to idle pods, place a lost pod's runs again."""
    from .operations.fleet_runs import LOST_AFTER_S

    lost_after_s = seconds_flag("--lost-after", lost_after, LOST_AFTER_S)
    steered = _fleet_submission(c, host, None, submission, None)
    if steered:
        return _steer(steered, once=True, lost_after_s=lost_after_s)
    return on_each_pod(c, host, lambda target: _balance_one(c, target, submission))


def _balance_one(c, target, submission):
    """One pod, or a submission that is not a fleet's: its queue is its own (the probe shows it)."""
    from .operations.fleet_runs import probe_pod
    from .records import load_manifest
    from .selection import latest_submission, outputs_root

    manifest = load_manifest(project_dir_of(c.config), submission) if submission else latest_submission(c, target)
    probed = probe_pod(target, outputs_dir=outputs_root(None, manifest, target.profile))
    return {"ok": True, "host": target.profile.name, "moves": [], "replaced": [], "queued": len(probed["queued"]),
            "note": "not a fleet submission: nothing to move"}


def _fleet_submission(c, host, run_id, submission, remote_outputs_dir):
    """(targets, manifest, project) when the task is over a fleet submission made from this
    project, all its pods named; else None (each pod waits on its own)."""
    from .records import load_manifest
    from .selection import latest_submission

    if run_id or remote_outputs_dir:
        return None
    targets = fleet_targets(c, host)
    if not targets:
        return None
    project = project_dir_of(c.config)
    manifest = load_manifest(project, submission) if submission else latest_submission(c, targets[0])
    if submission and manifest is None:
        raise ConfigError(f"no submission {submission} is recorded in this project")
    named = {host_identity(t.profile) for t in targets}
    if not (manifest or {}).get("fleet") or not set(manifest.get("host_ids") or []) <= named:
        return None
    return targets, manifest, project


def _steer(steered, **options) -> dict:
    """Keep a fleet submission going (fleet_runs.steer), saying each move and lost pod on stderr."""
    from .operations.fleet_runs import steer

    targets, manifest, project = steered
    said = {"moves": 0, "replaced": 0, "notes": 0}

    def on_look(steering):
        for key, lines in (("moves", [f"moved {m['run_id']}: {m['from']} -> {m['to']}" for m in steering.moves]),
                           ("replaced", [f"placed again {m['run_id']}: {m['from']} (lost) -> {m['to']}"
                                         for m in steering.replaced]),
                           ("notes", list(steering.notes))):
            for line in lines[said[key]:]:
                log(line)
            said[key] = len(lines)

    try:
        return steer(targets, manifest, project, on_look=on_look, **options)
    except KeyboardInterrupt as exc:
        raise stopped(exc, f"the runs go on on the pods: wait again with ops runs.wait --host "
                           f"{','.join(t.profile.name for t in targets)} --submission {manifest['submission_id']}") from None


def _wait_on(c, target, run_id, submission, remote_outputs_dir, timeout):
    from .operations.runs import wait_runs
    from .targets import LinkDown
    selected = _select(c, target, run_id, submission, False, remote_outputs_dir)
    timeout_s = seconds_flag("--timeout", timeout, WAIT_TIMEOUT_S)
    bar = ProgressBar(enabled=not fleet_requested())  # several pods' bars cannot share stderr
    try:
        if sys.stdout.isatty() and not json_requested() and not fleet_requested():
            # A person watching: the table redrawn in place, one round trip per refresh; the
            # verdict (timeout, stuck, failed) is then the pod's wait's, which returns at once
            # once the runs are over.
            started = time.monotonic()
            _watch(target, selected, WATCH_INTERVAL_S, None if timeout_s is None else started + timeout_s)
            left = None if timeout_s is None else max(0.1, timeout_s - (time.monotonic() - started))
            timeout_s = left
        with target.round_trip_budget(timeout_s):
            report = _said_from_pod(_all_cancelled(wait_runs(
                target, outputs_dir=selected["outputs_dir"], submission_id=selected.get("submission_id"),
                run_ids=selected["run_ids"], timeout_s=timeout_s, on_progress=bar,
                latest_submission=selected.get("latest_submission"))))
        if report["outcome"] == "timeout":  # the whole wait's limit, not what was left
            limit = seconds_flag("--timeout", timeout, WAIT_TIMEOUT_S)
            report["error"] = f"{target.profile.label}: runs still going after {limit:.0f}s"
        return report
    except LinkDown as lost:
        raise lost.with_hint(_wait_hint(target, selected.get("submission_id"), run_id and selected["run_ids"])) from None
    except KeyboardInterrupt as exc:
        raise stopped(exc, _wait_hint(target, selected.get("submission_id"), run_id and selected["run_ids"])) from None
    finally:
        bar.close()


def _wait_hint(target, submission_id, run_ids) -> str:
    """How to wait again after the link went: the runs themselves go on on the pod."""
    which = f" --run-id {','.join(run_ids)}" if run_ids else (f" --submission {submission_id}" if submission_id else "")
    return f"the runs go on on the pod: wait again with ops runs.wait --host {target.profile.name}{which}"


def render_cancel(data: dict) -> str:
    lines = [f"{data['host']}: cancel"] + [f"  {r['run_id']}: {r['was']} -> {r['state']}" for r in data["runs"]]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


@ops_task(human=render_cancel, iterable=["run_id"], help={
    "run_id": "Run id(s) to cancel.",
    "submission": "Cancel every run of this submission.",
    "remote_outputs_dir": RUN_SELECTION_HELP["remote_outputs_dir"],
})
def cancel(c, host=None, run_id=None, submission=None, remote_outputs_dir=None):
    """Cancel queued or running runs (their whole process group); state cancelled."""
    result = on_each_pod(c, host, lambda target: _cancel_on(c, target, run_id, submission, remote_outputs_dir))
    return _found_somewhere(result) if result.get("fleet") else result


def _cancel_on(c, target, run_id, submission, remote_outputs_dir):
    from .operations.runs import cancel_runs
    from .output import fleet_requested
    if not run_id and not submission:
        raise ConfigError("runs.cancel needs --run-id or --submission")
    selected = _select(c, target, run_id, submission, False, remote_outputs_dir)
    return _said_from_pod(cancel_runs(target, **selected, missing_ok=fleet_requested()))


def _found_somewhere(document: dict) -> dict:
    """A fleet's cancel: a run id is on one pod, so it is missing on the others; it is not ok only
    when no pod holds it."""
    held = {r["run_id"] for r in document["runs"] if r.get("state") != "missing"}
    nowhere = sorted({r["run_id"] for r in document["runs"] if r.get("state") == "missing"} - held)
    if nowhere:
        document.update(ok=False, exit_code=max(document.get("exit_code") or 0, 1))
        document["error"] = "; ".join(filter(None, [document.get("error"), f"on no pod: {', '.join(nowhere)}"]))
    return document


@ops_task(human=lambda d: f"{d['host']}: resumed {len(d['resumed'])} lost run(s): {', '.join(d['resumed']) or '-'}"
          + (f"\n  supervisor: {d['supervisor']}" if d.get("supervisor") else ""), help={
    "remote_outputs_dir": RUN_SELECTION_HELP["remote_outputs_dir"],
    "tmux_session": f"tmux session for the supervisor (default: the latest submission's, else {RUNS_SESSION}).",
    "slots": SLOTS_HELP,
})
def resume(c, host=None, remote_outputs_dir=None, tmux_session=None, slots=None):
    """Queue again the runs left `lost` by a dead supervisor (each pod of a fleet; succeeded runs untouched)."""
    cpu_slots = count_flag("--slots", slots, None)
    return on_each_pod(c, host, lambda target: _resume_on(c, target, remote_outputs_dir, tmux_session, cpu_slots))


def _resume_on(c, target, remote_outputs_dir, tmux_session, cpu_slots):
    from .operations.runs import resume_runs
    from .selection import latest_submission, outputs_root
    latest = latest_submission(c, target) or {}
    outputs = outputs_root(remote_outputs_dir, latest, target.profile)
    return resume_runs(target, outputs_dir=outputs, tmux_session=tmux_session or latest.get("tmux_session") or RUNS_SESSION,
                       slots=cpu_slots)


ns = Collection("runs")
for _task in (submit, status, logs, wait, balance, cancel, resume):
    ns.add_task(_task)
ns.add_task(list_, name="list")
