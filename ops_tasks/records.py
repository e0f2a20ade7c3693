"""What the laptop keeps, in one place: submission manifests, fetch records, the last pod.ls
listing, the ledgers of fleet submissions, and where fetched run directories and reports land;
the Lium pods pod.up rented (their prices) and the fleets it named, which are the user's and not
one project's, through the user's state database (state.py).

Records are keyed by a host's stable identity (`host_id`: settings.host_identity, e.g.
root@203.0.113.7:2222), not by the string the user typed: an ssh-config alias and the
user@host:port it leads to find the same records. Each record also keeps what was typed
(`host`) for people to read; records written before `host_id` existed are matched on that
(manifests) or on their `destination` (fetch records). Every write is atomic.
"""

import contextlib
import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from . import defaults, state
from .errors import ConfigError, OpsError
from .files import write_atomic
from .names import RUN_ID
from .run_states import TERMINAL
from .runtime.contract import manifest_order
from .settings import host_identity
from .state import fleet_after_release, forget_fleet, load_fleet, save_fleet  # noqa: F401 (callers name them records.*)


# ---------------------------------------------------------------- where things are


_runtimes_lock = threading.Lock()  # a fleet's threads remember their pods at once


def local_runs_dir(project_dir) -> Path:
    """Fetched run directories, one per run id (what validate and report read)."""
    return Path(project_dir) / defaults.LOCAL_RUNS_DIR


def report_dir(project_dir) -> Path:
    return Path(project_dir) / defaults.REPORT_DIR


def manifests_dir(project_dir) -> Path:
    return Path(project_dir) / defaults.SUBMISSIONS_DIR


def fetch_records_dir(project_dir) -> Path:
    return Path(project_dir) / defaults.FETCH_RECORDS_DIR


def listing_path() -> Path:
    """Where pod.ls keeps its last listing, so that `pod.up --config N` means its row N."""
    return state.cache_dir() / "lium_ls.json"


def _file_in(folder: Path, name: str) -> Optional[Path]:
    """folder/<name>.json, or None when name could lead out of folder (it may come from a pod)."""
    if not isinstance(name, str) or not RUN_ID.match(name):  # run and submission ids alike
        return None
    return Path(folder) / f"{name}.json"


def _read_json(path: Optional[Path]) -> Optional[dict]:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict, sort_keys: bool = True) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=sort_keys) + "\n")


# ---------------------------------------------------------------- the pod runtime each host holds

RUNTIMES_FILE = "artifacts/runtimes.json"  # {host identity: [runtime ids it was seen to hold]}


def runtimes_held(project_dir, identity: str) -> list:
    """The pod runtime versions (operations/runtime.py) this host was seen to hold."""
    held = (_read_json(Path(project_dir) / RUNTIMES_FILE) or {}).get(identity)
    return [i for i in held if isinstance(i, str)] if isinstance(held, list) else []


def remember_runtime(project_dir, identity: str, runtime_id: str) -> None:
    """The host holds this runtime: later calls send the request alone. Replaced whole; two
    processes racing lose an entry at worst (one more archive sent). The last few per host."""
    path = Path(project_dir) / RUNTIMES_FILE
    with _runtimes_lock:
        known = _read_json(path) or {}
        known[identity] = [i for i in runtimes_held(project_dir, identity) if i != runtime_id][-4:] + [runtime_id]
        try:
            _write_json(path, known)
        except OSError:
            pass  # a read-only project: every call sends the archive, nothing else changes


# ---------------------------------------------------------------- hosts


def host_fields(profile) -> dict:
    """How a record names its host: what was typed, and the stable identity it is matched on."""
    return {"host": profile.name, "host_id": host_identity(profile)}


def _manifest_is_for(manifest: dict, host: str, host_id: Optional[str]) -> bool:
    if host_id and isinstance(manifest.get("host_ids"), list):  # a fleet submission: each of its pods
        return host_id in manifest["host_ids"]
    if host_id and manifest.get("host_id"):
        return manifest["host_id"] == host_id
    return manifest.get("host") == host


def fetched_from(record: dict, host_id: Optional[str] = None, destination: Optional[str] = None) -> bool:
    """Did this fetch record come from this host? By identity when the record has one; an older
    record by its destination (a record that names none counts as this host's)."""
    if host_id and record.get("host_id"):
        return record["host_id"] == host_id
    return destination is None or record.get("destination") in (None, destination)


# ---------------------------------------------------------------- submission manifests


def save_manifest(project_dir, manifest: dict) -> Path:
    """Keep the submission locally, so that later tasks (wait, fetch, report) need no ids."""
    path = manifests_dir(project_dir) / f"{manifest['submission_id']}.json"
    _write_json(path, manifest)
    return path


def load_manifest(project_dir, submission_id: str) -> Optional[dict]:
    return _read_json(_file_in(manifests_dir(project_dir), submission_id))


def latest_manifest(project_dir, host: str, host_id: Optional[str] = None) -> Optional[dict]:
    """The newest submission made to this host from this project (by the time it was made)."""
    folder = manifests_dir(project_dir)
    newest = None
    for path in folder.glob("*.json") if folder.is_dir() else []:
        manifest = _read_json(path)
        if manifest is None or not _manifest_is_for(manifest, host, host_id):
            continue
        key = manifest_order(manifest)
        if newest is None or key > newest[0]:
            newest = (key, manifest)
    return newest[1] if newest else None


# ---------------------------------------------------------------- fetch records
#
# artifacts/fetched/<run_id>.json: the run's latest complete fetch (host, remote and local
# directory, files, bytes, time, patterns: what the check before a pod goes reads), and `copies`:
# for each local folder the run was fetched into, that folder's latest fetch (a claim while one
# runs: its host and run directory, `fetched_at` null, its pid), so that a fetch from another
# host never replaces them unasked (docs/ARCHITECTURE.md, "Fetched run directories").

ORIGIN_KEYS = ("host", "host_id", "destination", "remote_dir")


def save_fetch_record(records_dir, record: dict) -> None:
    """What artifacts.fetch brought over for one run: the check before a pod goes reads it. The
    copies of the run in other local folders stay recorded beside it."""
    path = _fetch_record_path(records_dir, record["run_id"])
    with _records_locked(records_dir):
        copies = _copies(_read_json(path), records_dir)
        copies[_copy_key(records_dir, record["local_dir"])] = {k: v for k, v in record.items() if k != "copies"}
        _write_json(path, {**record, "copies": copies})


def load_fetch_record(records_dir, run_id: str, host_id: Optional[str] = None,
                      destination: Optional[str] = None) -> Optional[dict]:
    """The run's latest complete fetch (None when none ended: a fetch begun and stopped counts as
    none); given a host, its latest complete fetch from that host (a copy kept in another local
    folder beside another host's counts), else None."""
    record = _read_json(_file_in(Path(records_dir), run_id))
    if record is None or (host_id is None and destination is None):
        return record if record is not None and record.get("fetched_at") is not None else None
    mine = [copy for copy in _copies(record, records_dir).values()
            if isinstance(copy.get("fetched_at"), (int, float)) and fetched_from(copy, host_id, destination)]
    return max(mine, key=lambda copy: copy["fetched_at"], default=None)


def fetch_origin(records_dir, run_id: str, local_dir) -> Optional[dict]:
    """Where the files of the local folder local_dir came from (its latest fetch's record: host,
    host_id, destination, remote_dir, fetched_at, which is None while that fetch has not ended),
    or None when no fetch of run_id into it is recorded."""
    return _copies(_read_json(_file_in(Path(records_dir), run_id)), records_dir).get(_copy_key(records_dir, local_dir))


def claim_fetch(records_dir, run_id: str, local_dir, origin: dict, refuse: Callable) -> tuple:
    """Note, before a fetch writes into local_dir, where the files it brings come from (origin,
    fetched_at None, the pid of the fetch), unless refuse(the folder's recorded origin or None)
    says no. (claimed, the origin recorded before). One fetch at a time decides (a lock on the
    folder of records): two pods fetching one run id into one folder at once never both go ahead."""
    path = _fetch_record_path(records_dir, run_id)
    with _records_locked(records_dir):
        record = _read_json(path) or {"run_id": run_id}
        copies = _copies(record, records_dir)
        key = _copy_key(records_dir, local_dir)
        current = copies.get(key)
        if refuse(current):
            return False, current
        copies[key] = {**{k: origin.get(k) for k in ORIGIN_KEYS}, "fetched_at": None, "pid": os.getpid()}
        _write_json(path, {**record, "copies": copies})
    return True, current


def release_fetch_claim(records_dir, run_id: str, local_dir) -> None:
    """Forget a claim whose fetch brought nothing (the run directory was not on the pod)."""
    path = _fetch_record_path(records_dir, run_id)
    with _records_locked(records_dir):
        record = _read_json(path)
        copies = _copies(record, records_dir)
        key = _copy_key(records_dir, local_dir)
        if record is None or key not in copies or copies[key].get("fetched_at") is not None:
            return
        del copies[key]
        if copies or record.get("fetched_at") is not None:
            _write_json(path, {**record, "copies": copies})
        else:
            path.unlink(missing_ok=True)


def _fetch_record_path(records_dir, run_id: str) -> Path:
    path = _file_in(Path(records_dir), run_id)
    if path is None:
        raise OpsError(f"refusing to record a fetch of {run_id!r}: not a run id")
    return path


def _copy_key(records_dir, local_dir) -> str:
    """A local folder as the records name it: relative to the folder of records, so that a
    project moved whole keeps them true."""
    return os.path.relpath(os.path.realpath(local_dir), os.path.realpath(records_dir))


def _copies(record: Optional[dict], records_dir) -> dict:
    """A record's copies by local folder; a record older than copies names its own folder."""
    if record is None:
        return {}
    copies = record.get("copies")
    copies = {k: v for k, v in copies.items() if isinstance(v, dict)} if isinstance(copies, dict) else {}
    if not copies and isinstance(record.get("local_dir"), str) and record.get("fetched_at") is not None:
        copies[_copy_key(records_dir, record["local_dir"])] = dict(record)
    return copies


@contextlib.contextmanager
def _records_locked(records_dir):
    """flock on the folder of fetch records itself (no lock file among the records)."""
    folder = Path(records_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the last pod.ls listing


def save_listing(rows: list, filters: dict, path: Optional[Path] = None) -> None:
    data = {"listed_at": time.time(), "filters": filters, "ids": [r["id"] for r in rows], "executors": rows}
    _write_json(path or listing_path(), data, sort_keys=False)


def load_listing(path: Optional[Path] = None) -> Optional[dict]:
    data = _read_json(path or listing_path())
    return data if data is not None and isinstance(data.get("ids"), list) else None


def listed_executor(listing: Optional[dict], selector: str) -> Optional[dict]:
    """What the last listing said about an executor (for --dry-run, which contacts nothing)."""
    rows = (listing or {}).get("executors") or []
    if selector.isdigit():
        index = int(selector)
        return rows[index - 1] if 1 <= index <= len(rows) else None
    return next((r for r in rows if selector in (r.get("id"), r.get("huid"))), None)


# ---------------------------------------------------------------- Lium pods and fleets pod.up rented
#
# Per person, not per project: kept in the user's state database (state.py), so that pod.ps,
# costs, `--host FLEET` and pod.down work from any folder. These are the names callers use.


def save_lium_pod(alias: str, pod: dict, host_id: str, project_dir=None) -> None:
    """Keep what Lium said of the pod behind an alias (its price, GPUs, creation time) and the folder
    it was rented from, so that costs need not ask Lium again. host_id: where the alias leads now."""
    state.record_pod(alias, pod, host_id, project_dir)


def lium_pod_of(host_id: str) -> Optional[dict]:
    """The newest record of a Lium pod, not released, that this host identity leads to; None when
    pod.up rented none there (a host of another kind, or a pod pod.down released)."""
    return state.pod_behind(host_id)


def lium_pods(released: bool = False) -> list:
    """The Lium pods pod.up recorded, from any folder, not released (with released, every one)."""
    return state.rented_pods(released)


def forget_lium_pod(pod_id: str) -> None:
    """pod.down removed the pod: its price no longer goes with its address (which Lium may hand
    on), and its record stays as history (state.rented_pods(released=True))."""
    state.release_pod(pod_id)


# ---------------------------------------------------------------- the ledger of a fleet submission

LEDGERS_DIR = "artifacts/ledgers"  # one append-only log per fleet submission
FINISHED_STATES = TERMINAL


def ledgers_dir(project_dir) -> Path:
    return Path(project_dir) / LEDGERS_DIR


class Ledger:
    """Which run of one fleet submission is on which pod, in which attempt (docs/ARCHITECTURE.md,
    "Fleets").

    An append-only JSON-lines log, one event a line, replayed on load: an event is one write()
    followed by fsync, so a crash (or a kill) mid-write can only leave a torn last line, which the
    replay skips and the next append cuts off. Pods are keyed by host identity (`host_id`); each
    run's attempts are numbered 1, 2, ... across the fleet (a rebalancing move is not an attempt:
    the run never started on the pod it left)."""

    def __init__(self, project_dir, submission_id: str):
        path = _file_in(ledgers_dir(project_dir), submission_id)
        if path is None:
            raise ConfigError(f"not a submission id: {submission_id!r}")
        self.path = path.with_suffix(".jsonl")
        self.submission_id = submission_id
        self.runs: dict = {}  # run_id -> [attempt dicts], oldest first
        self.lost_pods: set = set()
        for event in self._read_events():
            self._apply(event)

    # -- writing

    def place(self, run_id: str, host_id: str, host: str) -> int:
        """A new attempt of run_id on a pod; its attempt number."""
        attempt = len(self.runs.get(run_id, [])) + 1
        self._append({"event": "placed", "run_id": run_id, "host_id": host_id, "host": host, "attempt": attempt})
        return attempt

    def move(self, run_id: str, to_host_id: str, to_host: str) -> None:
        """A queued run withdrawn from its pod and queued on another: the same attempt, elsewhere."""
        self.move_all([(run_id, to_host_id, to_host)])

    def record_state(self, run_id: str, host_id: str, state: str) -> None:
        """What a pod said of its attempt of run_id (a pod that came back keeps its attempt)."""
        if self._attempt_on(run_id, host_id) is None:
            raise OpsError(f"ledger {self.submission_id}: {run_id} has no attempt on {host_id}")
        self._append({"event": "state", "run_id": run_id, "host_id": host_id, "state": state})

    def record_states(self, changes) -> None:
        """record_state() of many (run_id, host_id, state) in one write and one fsync (a look at a
        fleet hears of hundreds of runs); a change for a pod the run has no attempt on is left out."""
        self._append_all([{"event": "state", "run_id": run_id, "host_id": host_id, "state": state}
                          for run_id, host_id, state in changes if self._attempt_on(run_id, host_id) is not None])

    def move_all(self, moves) -> None:
        """move() of many (run_id, to_host_id, to_host) in one write and one fsync."""
        events = []
        for run_id, host_id, host in moves:
            current = self.current(run_id)
            if current is None:
                raise OpsError(f"ledger {self.submission_id}: cannot move {run_id}: it was never placed")
            events.append({"event": "moved", "run_id": run_id, "from": current["host_id"], "host_id": host_id,
                           "host": host, "attempt": current["attempt"]})
        self._append_all(events)

    def mark_lost(self, host_id: str) -> list:
        """A pod unreachable too long: recorded; the run ids whose current attempt it held unfinished
        (to place again as new attempts)."""
        self._append({"event": "lost", "host_id": host_id})
        return self.unfinished_on(host_id)

    # -- reading

    def current(self, run_id: str) -> Optional[dict]:
        attempts = self.runs.get(run_id)
        return dict(attempts[-1]) if attempts else None

    def winning(self, run_id: str) -> Optional[dict]:
        """The attempt that counts, once: the latest that succeeded, else the latest."""
        attempts = self.runs.get(run_id) or []
        succeeded = [a for a in attempts if a.get("state") == "succeeded"]
        chosen = (succeeded or attempts or [None])[-1]
        return dict(chosen) if chosen else None

    def attempt_on(self, run_id: str, host_id: str) -> Optional[dict]:
        """The latest attempt of run_id on this pod (None when it never had one)."""
        attempt = self._attempt_on(run_id, host_id)
        return dict(attempt) if attempt else None

    def runs_on(self, host_id: str) -> list:
        """Run ids whose current attempt is on this pod, in placement order."""
        return [r for r, attempts in self.runs.items() if attempts[-1]["host_id"] == host_id]

    def unfinished_on(self, host_id: str) -> list:
        return [r for r in self.runs_on(host_id) if self.runs[r][-1].get("state") not in FINISHED_STATES]

    def as_dict(self) -> dict:
        return {"submission_id": self.submission_id, "lost_pods": sorted(self.lost_pods),
                "runs": {r: [dict(a) for a in attempts] for r, attempts in self.runs.items()}}

    # -- rebuilding from the pods

    def rebuild(self, manifests: list) -> "Ledger":
        """The ledger again from the pods' own manifests of this submission: each item
        {"host_id", "host", "manifest": the pod's manifest, "states": {run_id: state}}. A pod's
        attempts are ordered by when it was submitted to; what a pod sent is checked (a manifest
        of another submission, a run id that is not one, are left out). The log is rewritten whole."""
        entries = []
        for item in manifests:
            manifest = item.get("manifest")
            if not isinstance(manifest, dict) or manifest.get("submission_id") != self.submission_id:
                continue
            entries.append((manifest_order(manifest)[0], item, _manifest_run_ids(manifest)))
        events = []
        attempts: dict = {}
        for _, item, run_ids in sorted(entries, key=lambda e: e[0]):
            states = item.get("states") if isinstance(item.get("states"), dict) else {}
            for run_id in run_ids:
                attempts[run_id] = attempts.get(run_id, 0) + 1
                events.append({"event": "placed", "run_id": run_id, "host_id": item["host_id"],
                               "host": item.get("host") or item["host_id"], "attempt": attempts[run_id]})
                if isinstance(states.get(run_id), str):
                    events.append({"event": "state", "run_id": run_id, "host_id": item["host_id"],
                                   "state": states[run_id]})
        write_atomic(self.path, "".join(_event_line(e) for e in events), sync=True)
        self.runs, self.lost_pods = {}, set()
        for event in events:
            self._apply(event)
        return self

    # -- the log

    def _attempt_on(self, run_id: str, host_id: str) -> Optional[dict]:
        return next((a for a in reversed(self.runs.get(run_id) or []) if a["host_id"] == host_id), None)

    def _apply(self, event: dict) -> None:
        kind, run_id, host_id = event.get("event"), event.get("run_id"), event.get("host_id")
        if kind == "lost" and isinstance(host_id, str):
            self.lost_pods.add(host_id)
            return
        if not isinstance(run_id, str) or not isinstance(host_id, str):
            return  # not an event of ours: skipped, as a torn line is
        if kind == "placed":
            self.runs.setdefault(run_id, []).append(
                {"attempt": event.get("attempt"), "host_id": host_id, "host": event.get("host"), "state": None})
        elif kind == "moved" and self.runs.get(run_id):
            self.runs[run_id][-1].update(host_id=host_id, host=event.get("host"), moved_from=event.get("from"))
        elif kind == "state":
            attempt = self._attempt_on(run_id, host_id)
            if attempt is not None:
                attempt["state"] = event.get("state")

    def _read_events(self):
        try:
            text = self.path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        events = []
        for line in text.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a torn last line (a crash mid-write)
            if isinstance(event, dict):
                events.append(event)
        return events

    def place_all(self, placements) -> None:
        """place() of many (run_id, host_id, host) in one write and one fsync (a fleet submission
        places hundreds of runs at once; a torn write leaves whole lines before it)."""
        counts: dict = {}
        events = []
        for run_id, host_id, host in placements:
            counts[run_id] = counts.get(run_id, len(self.runs.get(run_id, []))) + 1
            events.append({"event": "placed", "run_id": run_id, "host_id": host_id, "host": host,
                           "attempt": counts[run_id]})
        self._append_all(events)

    def _append(self, event: dict) -> None:
        self._append_all([event])

    def _append_all(self, events: list) -> None:
        if not events:
            return
        events = [{**event, "at": time.time()} for event in events]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another `ops` appending at once waits its turn
            _cut_torn_tail(fd)
            os.write(fd, "".join(_event_line(event) for event in events).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        for event in events:
            self._apply(event)


def _event_line(event: dict) -> str:
    return json.dumps(event, sort_keys=True) + "\n"


def _cut_torn_tail(fd: int) -> None:
    """A log whose last line has no newline was cut mid-write: drop that partial line, so that the
    next event starts a line of its own instead of being glued to it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    chunk = 65536
    end = size
    while end > 0:
        start = max(0, end - chunk)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            os.ftruncate(fd, start + at + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def _manifest_run_ids(manifest: dict) -> list:
    """The run ids a pod's manifest says it holds (queued, or there already): checked, in order."""
    runs = manifest.get("runs")
    if not isinstance(runs, list):
        return []
    refused = {r.get("run_id") for r in manifest.get("refused") or [] if isinstance(r, dict)}
    found = []
    for run in runs:
        run_id = run.get("run_id") if isinstance(run, dict) else None
        if isinstance(run_id, str) and RUN_ID.match(run_id) and run_id not in refused and run_id not in found:
            found.append(run_id)
    return found


# ---------------------------------------------------------------- campaigns (ops campaign)


def campaign_dir(project_dir, campaign_id: str) -> Path:
    """artifacts/campaigns/<id>/: the campaign's state.json, each phase's evidence, checklist.md."""
    if not isinstance(campaign_id, str) or not RUN_ID.match(campaign_id):
        raise ConfigError(f"--campaign {campaign_id!r}: a campaign id is letters, digits, '.', '_' and '-' "
                          f"(at most 128, starting with a letter or digit)")
    return Path(project_dir) / defaults.CAMPAIGNS_DIR / campaign_id


def load_campaign_state(project_dir, campaign_id: str) -> Optional[dict]:
    """The campaign's state (its pods, submission, each phase's start, end and outcome), or None."""
    path = campaign_dir(project_dir, campaign_id) / "state.json"
    if not path.exists():
        return None
    state = _read_json(path)
    if not isinstance(state, dict) or not isinstance(state.get("phases"), dict):
        raise ConfigError(f"{path}: damaged campaign state (no phases); remove the folder to start it again")
    return state


def save_campaign_state(project_dir, state: dict) -> Path:
    path = campaign_dir(project_dir, state["campaign_id"]) / "state.json"
    _write_json(path, state)
    return path


def save_campaign_file(project_dir, campaign_id: str, name: str, data) -> Path:
    """One file of the campaign's folder (a phase's evidence as JSON, the checklist as text), atomically."""
    path = campaign_dir(project_dir, campaign_id) / name
    text = data if isinstance(data, str) else json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    write_atomic(path, text)
    return path
