"""May this pod go? What keeps a pod from being removed: runs still queued or running on it, and
run directories the laptop has no current copy of (by artifacts.fetch's records). Any pod, any
provider: pod.down asks it before it removes a Lium pod."""

import posixpath
from pathlib import Path
from typing import Optional

from ..records import fetched_from, load_fetch_record
from ..verdicts import is_unfinished, run_verdict
from ..settings import host_identity
from .artifacts import list_remote
from .runs import runs_status


def _same_dir(a: str, b: str) -> bool:
    return posixpath.normpath(a or "") == posixpath.normpath(b or "")


def unfetched_reason(run: dict, record: Optional[dict], destination: Optional[str] = None,
                     on_pod: Optional[dict] = None, host_id: Optional[str] = None) -> Optional[str]:
    """Why a run directory on the pod is not safely on the laptop (None when it is).

    A record of another host does not count: two pods with the same config have run
    directories of the same names and paths. Hosts are told apart by identity (host_id), or by
    destination for records older than identities.
    """
    if record is None:
        return "never fetched"
    if not fetched_from(record, host_id, destination):
        return f"the fetched copy came from another host ({record.get('host_id') or record.get('destination')})"
    if not _same_dir(record.get("remote_dir", ""), run.get("run_dir", "")):
        return f"the fetched copy came from {record.get('remote_dir')}"
    # The pod's times against the pod's times: the fetched copy's status.json, never the laptop's
    # clock (a pod an hour ahead would have every run "finished after it was fetched", and be kept).
    fetched = _fetched_status(record)
    if fetched is not None and (run.get("finished"), run.get("attempt")) != (fetched.get("finished"),
                                                                             fetched.get("attempt")):
        return "finished again after it was fetched"
    if on_pod is not None and (on_pod["files"], on_pod["bytes"]) != (record.get("files"), record.get("bytes")):
        return (f"changed after it was fetched ({on_pod['files']} files, {on_pod['bytes']} bytes on the pod; "
                f"{record.get('files')} files, {record.get('bytes')} bytes fetched)")
    return None


def _fetched_status(record: dict) -> Optional[dict]:
    """The status.json of the run's fetched copy, or None."""
    from .validate import load_json

    local = record.get("local_dir")
    if not isinstance(local, str):
        return None
    value, error = load_json(str(Path(local) / "status.json"), record.get("run_id") or "", "status.json")
    return value if error is None and isinstance(value, dict) else None


def teardown_check(target, *, outputs_dir: str, records_dir: Path, also_records: tuple = ()) -> dict:
    """What keeps the pod from being removed: runs queued or running on it, and run directories
    that artifacts.fetch has not recorded (or that changed after it did). Two round trips: the
    runs' states, then what their directories hold. also_records: other folders of fetch records
    whose copy of a run counts as well (pod.down from a folder other than the one that rented it)."""
    status = runs_status(target, outputs_dir=outputs_dir)
    host_id, destination = host_identity(target.profile), target.profile.destination

    def fetched(run_id: str) -> Optional[dict]:
        # This pod's copy of the run (kept beside another pod's with --local-root) in any of the
        # folders, else the latest copy here, whose host then says why it does not count.
        mine = (load_fetch_record(folder, run_id, host_id, destination) for folder in (records_dir, *also_records))
        return next(filter(None, mine), None) or load_fetch_record(records_dir, run_id)

    records = {run["run_id"]: fetched(run["run_id"]) for run in status["runs"]}
    # What each run directory holds now, against what the fetch recorded (an archive after it...),
    # counted with the fetch's own --include/--exclude: what it left on purpose is not unfetched.
    filters = {run["run_dir"]: {"include": record.get("include") or [], "exclude": record.get("exclude")}
               for run in status["runs"] if (record := records[run["run_id"]]) and record.get("exclude")}
    listing = list_remote(target, dirs=[run["run_dir"] for run in status["runs"]], outputs_dir=outputs_dir,
                          filters=filters)
    on_pod = {entry["dir"]: entry for entry in listing["runs"] if entry["exists"]}
    active, unfetched = [], []
    for run in status["runs"]:
        if is_unfinished(run_verdict(run, None)):  # one judgement of a run: verdicts.py
            active.append({"run_id": run["run_id"], "state": run["state"], "run_dir": run["run_dir"]})
            continue
        reason = unfetched_reason(run, records[run["run_id"]], target.profile.destination,
                                  on_pod.get(run["run_dir"]), host_id)
        if reason:
            unfetched.append({"run_id": run["run_id"], "state": run["state"], "run_dir": run["run_dir"],
                              "reason": reason})
    return {"outputs_dir": status["outputs_dir"], "runs": len(status["runs"]), "active": active,
            "unfetched": unfetched}
