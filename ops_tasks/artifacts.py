"""`artifacts` namespace: archive raw eval files into run directories on the pod, and fetch run
directories to the laptop (rsync over OpenSSH, or a checked tar stream)."""

import sys
import threading
from pathlib import Path

from invoke import Collection

from .defaults import LOCAL_RUNS_DIR
from .errors import ConfigError
from .flags import count_flag
from .output import json_requested, log, on_each_pod, ops_task
from .settings import host_identity, project_dir_of
# The operations, fleet, records and selection are imported by the functions that use them:
# `ops --list` and `ops TASK --help` load none of them (ARCHITECTURE.md, "Start-up").

SELECTION_HELP = {
    "run_id": "Run id(s), repeated or comma-separated (default: the latest submission's runs).",
    "submission": "Every run of this submission.",
    "remote_outputs_dir": "Outputs root on the pod (default: the submission's, else the profile's).",
}


def _runs_of(selected: dict) -> list:
    """[{run_id, run_dir}] for a selection: ids (where the manifest or outputs root says) or a submission."""
    if selected["run_ids"]:
        return [{"run_id": i, "run_dir": selected["run_dirs"].get(i) or f"{selected['outputs_dir']}/{i}"}
                for i in selected["run_ids"]]
    return selected.get("runs", [])


def _local_path(c, value, default: str) -> Path:
    path = Path(value or default).expanduser()
    return path if path.is_absolute() else project_dir_of(c.config) / path


# ---------------------------------------------------------------- archive


def render_archive(data: dict) -> str:
    lines = [f"{data['host']}: archived {len(data['moved'])} file(s) matching {', '.join(data['patterns'])}"]
    lines += [f"  {m['from']} -> {m['to']}" for m in data["moved"]]
    lines += [f"  left (no run id in its name): {path}" for path in data["left"]]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


@ops_task(human=render_archive, iterable=["run_id"], help=SELECTION_HELP)
def archive(c, host=None, run_id=None, submission=None, remote_outputs_dir=None):
    """Move the raw <volume>/eval_* files into their run directories on the pod (never overwrites)."""
    return on_each_pod(c, host, lambda target: _archive_on(c, target, run_id, submission, remote_outputs_dir))


def _archive_on(c, target, run_id, submission, remote_outputs_dir) -> dict:
    from .operations.artifacts import archive_runs
    from .selection import select_runs
    selected = select_runs(c, target, run_id, submission, False, remote_outputs_dir)
    return archive_runs(target, runs=_runs_on(c, target, selected), patterns=target.profile.archive_patterns,
                        outputs_dir=selected["outputs_dir"])


# ---------------------------------------------------------------- fetch


def render_fetch(data: dict) -> str:
    moved = data["transferred"]
    lines = [f"{data['host']}: fetched {len(data['runs'])} run(s) into {data['local_root']} with {data['method']}: "
             f"{moved['files']} file(s), {moved['bytes']} bytes sent ({data['seconds']:.1f}s)"]
    lines += [f"  {r['run_id']}: {r['files']} files, {r['bytes']} bytes" for r in data["runs"]]
    if data.get("exclude"):
        lines.append(f"  left on the pod: {', '.join(data['exclude'])}"
                     + (f" (except {', '.join(data['include'])})" if data.get("include") else ""))
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


class ByteBar:
    """Bytes fetched, rate and ETA on stderr (tqdm), on a terminal and without --json only: one
    bar over every pod's bytes when a fleet fetches (each pod's transfer reports its own)."""

    def __init__(self):
        self.bar = None
        self.enabled = sys.stderr.isatty() and not json_requested()
        self.pods = {}  # pod -> (done, total)
        self.lock = threading.Lock()  # pods report from their own threads

    def of(self, pod: str):
        """The progress callback of one pod's transfer, or None when no bar is shown."""
        return (lambda done, total: self.update(pod, done, total)) if self.enabled else None

    def update(self, pod: str, done: int, total: int) -> None:
        with self.lock:
            self.pods[pod] = (done, total)
            done, total = (sum(numbers) for numbers in zip(*self.pods.values()))
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="fetch",
                                file=sys.stderr, dynamic_ncols=True)
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


@ops_task(human=render_fetch, iterable=["run_id", "exclude", "include"], help={
    **SELECTION_HELP,
    "all": "Every run directory under the pod's outputs root.",
    "local_root": f"Where run directories land (default: {LOCAL_RUNS_DIR}, one folder per run id).",
    "bwlimit": "Cap the transfer at this many KiB/s (a shared link).",
    "exclude": "Leave files or directories of this name on the pod, e.g. '*.pt' (a glob, no '/'; repeatable).",
    "include": "Fetch files or directories of this name even where an --exclude matches (repeatable).",
    "replace": "A run folder holding another host's copy of the run takes this host's (else refused: "
               "keep both with --local-root).",
})
def fetch(c, host=None, run_id=None, submission=None, all=False, local_root=None, remote_outputs_dir=None,
          bwlimit=None, exclude=None, include=None, replace=False):
    """Fetch run directories from the pod (each pod of a fleet at once): rsync over OpenSSH,
    incremental and resumable."""
    from .operations.artifacts import checked_patterns
    excluded = checked_patterns("--exclude", exclude)
    included = checked_patterns("--include", include)
    bar, claims = ByteBar(), RunClaims()
    try:
        result = on_each_pod(c, host, lambda target: _fetch_from(
            c, target, bar, claims, run_id=run_id, submission=submission, all=all, local_root=local_root,
            remote_outputs_dir=remote_outputs_dir, bwlimit=bwlimit, include=included, exclude=excluded,
            replace=replace))
    finally:
        bar.close()
    return _one_copy_each(result, claims) if result.get("fleet") else result


class RunClaims:
    """Which pod of a fleet's fetch takes each run id: the first that named it. Two pods' rsyncs
    into one run folder at once would delete each other's files (--delete) and fail at random;
    a run id two pods hold is fetched once, from its first pod, and both pods are named."""

    def __init__(self):
        self.lock, self.holders = threading.Lock(), {}

    def take(self, pod: str, runs: list) -> list:
        """The runs of `runs` this pod fetches (those no other pod named first)."""
        with self.lock:
            for run in runs:
                names = self.holders.setdefault(run["run_id"], [])
                if pod not in names:
                    names.append(pod)
            return [run for run in runs if self.holders[run["run_id"]][0] == pod]

    def clashes(self) -> dict:
        """{run id: [pods]} of the run ids more than one pod holds."""
        with self.lock:
            return {run_id: list(names) for run_id, names in self.holders.items() if len(names) > 1}


def _fetch_from(c, target, bar: ByteBar, claims: RunClaims, *, run_id, submission, all, local_root,
                remote_outputs_dir, bwlimit, include, exclude, replace) -> dict:
    from .operations.artifacts import fetch_runs
    from .operations.runs import pod_selection
    from .records import fetch_records_dir
    from .selection import from_pod_note, select_runs
    selected = select_runs(c, target, run_id, submission, all, remote_outputs_dir, ask_pod=True)
    # This folder keeps no record of a submission to the pod: the pod names its latest (one round
    # trip more). Run ids named are fetched from the outputs root given, as ever (--dry-run: no contact).
    latest = selected.pop("latest_submission", None)
    if latest and not selected["run_ids"]:
        selected = pod_selection(target, {**selected, "latest_submission": latest})
    # --all names its runs on the pod: those clashes are found after the fetch (_one_copy_each).
    runs = [] if all else claims.take(target.profile.name, _runs_on(c, target, selected))
    limit = count_flag("--bwlimit", bwlimit, None) if bwlimit is not None else None
    if not runs and not all and _runs_of(selected):  # a fleet submission put none of its runs here
        return {"ok": True, "host": target.profile.name, "method": "none", "runs": [], "seconds": 0.0,
                "local_root": str(_local_path(c, local_root, LOCAL_RUNS_DIR)),
                "transferred": {"files": 0, "bytes": 0, "literal_bytes": 0}, "missing": [], "warnings": []}
    if not runs and not all:
        raise ConfigError("no runs to fetch: the submission lists none")
    report = fetch_runs(target, runs=runs, outputs_dir=selected["outputs_dir"], all_runs=all,
                        local_root=_local_path(c, local_root, LOCAL_RUNS_DIR),
                        records_dir=fetch_records_dir(project_dir_of(c.config)), bwlimit=limit,
                        on_progress=bar.of(target.profile.name), include=include, exclude=exclude, replace=replace)
    if selected.get("submission_from_pod"):
        report.update(submission_id=selected["submission_id"], submission_from_pod=True)
        log(from_pod_note(report))
    return report


def _runs_on(c, target, selected: dict) -> list:
    """The selected runs this pod holds: a fleet submission's manifest says which pod has each."""
    from .records import load_manifest
    runs = _runs_of(selected)
    manifest = load_manifest(project_dir_of(c.config), selected["submission_id"]) if "submission_id" in selected else None
    if not (manifest or {}).get("fleet"):
        return runs
    here = host_identity(target.profile)
    ours = {r["run_id"] for r in manifest.get("runs", []) if r.get("host_id") == here}
    return [run for run in runs if run["run_id"] in ours]


def _one_copy_each(document: dict, claims: RunClaims) -> dict:
    """A fleet's fetch lands every run in one folder per run id: a run id two pods hold has the
    local copy of one of them, and neither pod's fetch is ok. (With --all, fetch_runs keeps the
    copy of the pod that claimed it first and refuses the other's: that pod is the one not ok.)"""
    from .fleet import FleetResult, fleet_document
    fetched_from = claims.clashes()
    for name, pod in document["pods"].items():
        for run in pod.get("runs") or []:
            names = fetched_from.setdefault(run["run_id"], [])
            if name not in names:
                names.append(name)
    twice = {run_id: sorted(names) for run_id, names in fetched_from.items() if len(names) > 1}
    for pod_name in sorted({name for names in twice.values() for name in names}):
        pod = document["pods"][pod_name]
        clash = ", ".join(f"{run_id} (from {' and '.join(names)})" for run_id, names in twice.items()
                          if pod_name in names)
        pod["ok"] = False
        pod["error"] = "; ".join(filter(None, (pod.get("error"), f"{pod_name}: run id also fetched from another "
                                               f"pod: {clash}; fetch each pod with its own --local-root")))
    return fleet_document(FleetResult(list(document["pods"].values()))) if twice else document


ns = Collection("artifacts")
ns.add_task(archive)
ns.add_task(fetch)
