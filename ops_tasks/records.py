"""What the laptop keeps, in one place: submission manifests, fetch records, the last pod.ls
listing, and where fetched run directories and reports land.

Records are keyed by a host's stable identity (`host_id`: settings.host_identity, e.g.
root@203.0.113.7:2222), not by the string the user typed: an ssh-config alias and the
user@host:port it leads to find the same records. Each record also keeps what was typed
(`host`) for people to read; records written before `host_id` existed are matched on that
(manifests) or on their `destination` (fetch records). Every write is atomic.
"""

import json
import os
import time
from pathlib import Path
from typing import Optional

from . import defaults
from .errors import OpsError
from .files import write_atomic
from .names import RUN_ID
from .settings import host_identity


# ---------------------------------------------------------------- where things are


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
    root = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(root).expanduser() / "ops-tasks" / "lium_ls.json"


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


# ---------------------------------------------------------------- hosts


def host_fields(profile) -> dict:
    """How a record names its host: what was typed, and the stable identity it is matched on."""
    return {"host": profile.name, "host_id": host_identity(profile)}


def _manifest_is_for(manifest: dict, host: str, host_id: Optional[str]) -> bool:
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
        key = (manifest.get("submitted_at") or 0, manifest.get("submission_id", ""))
        if newest is None or key > newest[0]:
            newest = (key, manifest)
    return newest[1] if newest else None


# ---------------------------------------------------------------- fetch records


def save_fetch_record(records_dir, record: dict) -> None:
    """What artifacts.fetch brought over for one run: the check before a pod goes reads it."""
    path = _file_in(Path(records_dir), record["run_id"])
    if path is None:
        raise OpsError(f"refusing to record a fetch of {record['run_id']!r}: not a run id")
    _write_json(path, record)


def load_fetch_record(records_dir, run_id: str) -> Optional[dict]:
    return _read_json(_file_in(Path(records_dir), run_id))


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
