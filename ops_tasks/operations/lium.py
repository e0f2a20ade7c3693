"""Lium operations: executors, volumes and pods, through the Lium SDK (PyPI `lium.io`, import `lium`).

The SDK is an optional extra (`pip install 'ops-tasks[lium]'`), imported here on first use only.
Authentication and the API address are the SDK's own: `LIUM_API_KEY` (or `lium init`'s
~/.lium/config.ini), `LIUM_BASE_URL` (default https://lium.io/api). Functions take a client
(`open_client`) as their first argument, as other operations take a target, and return plain
dicts. The API key never appears in what they return or raise.
"""

import contextlib
import json
import math
import os
import posixpath
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError, HostError, OpsError
from .artifacts import list_remote
from .run_config import RUN_ID
from .runs import runs_status

INSTALL_HINT = "pip install 'ops-tasks[lium]'"
DEFAULT_BASE_URL = "https://lium.io/api"
# Pod names: what `ops pod.down --name` and `lium ps` show; also written into ~/.ssh/config comments.
POD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ACTIVE_STATES = ("queued", "running")
_PUBLIC_KEY = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$")


# ---------------------------------------------------------------- the SDK and its client


def load_sdk(task: str):
    """The SDK module (`lium.sdk`), or one line saying how to install it (exit 2)."""
    try:
        import lium.sdk as sdk
    except ImportError:
        raise ConfigError(f"{task} needs the Lium SDK: {INSTALL_HINT}") from None
    return sdk


def base_url() -> str:
    """Where the SDK sends its requests (it reads LIUM_BASE_URL itself; this is for reports)."""
    return os.environ.get("LIUM_BASE_URL") or DEFAULT_BASE_URL


def open_client(task: str):
    """A Lium client with the SDK's own credentials (LIUM_API_KEY, else `lium init`'s config)."""
    sdk = load_sdk(task)
    try:
        return sdk.Lium()
    except ValueError as exc:  # no key configured, or none saved for the requested workspace
        raise ConfigError(f"{task}: {exc} (run `lium init`, or set LIUM_API_KEY)") from None


def _scrub(client, text: str) -> str:
    """An SDK message without the key or its fingerprint (the SDK names them in auth errors)."""
    text = re.sub(r"\s*\(?\bkey \S+ from [^)]*\)?", "", text)  # the SDK's "(key abc123…wxyz from env:...)"
    config = getattr(client, "config", None)
    for secret in (getattr(config, "api_key", None), getattr(config, "api_key_fingerprint", None)):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def lium_errors(client, doing: str):
    """SDK and transport failures as one-line errors: a refused key is configuration (exit 2),
    anything else the API or the network says is exit 1."""
    import requests
    from lium.sdk import LiumAuthError, LiumError, LiumPermissionError

    try:
        yield
    except (LiumAuthError, LiumPermissionError) as exc:
        source = getattr(getattr(client, "config", None), "api_key_source", None) or "the SDK's configuration"
        if isinstance(exc, LiumAuthError):
            raise ConfigError(f"Lium refused the API key from {source} while {doing}: "
                              f"run `lium init`, or set LIUM_API_KEY") from None
        raise ConfigError(f"Lium refused {doing} with the API key from {source}: "
                          f"{_scrub(client, str(exc))}") from None
    except (LiumError, ValueError) as exc:  # ValueError: the SDK's "node not in the listing", "no SSH keys"
        raise OpsError(f"Lium: {doing}: {_scrub(client, str(exc))}") from None
    except requests.Timeout:
        raise HostError(f"the Lium API at {base_url()} timed out while {doing}") from None
    except requests.RequestException as exc:
        reason = type(exc).__name__
        if isinstance(exc, requests.ConnectionError):
            reason = "cannot connect"
        raise HostError(f"the Lium API at {base_url()} is unreachable while {doing}: {reason}") from None


# ---------------------------------------------------------------- executors


def executor_row(executor, index: Optional[int] = None) -> dict:
    location = executor.location or {}
    return {
        "index": index,
        "id": executor.id,
        "huid": executor.huid,
        "gpu_type": executor.gpu_type,
        "gpu_count": executor.gpu_count,
        "price_per_hour": round(float(executor.price_per_hour or 0), 4),
        "price_per_gpu": round(float(executor.price_per_gpu or 0), 4),
        "country": location.get("country") or None,
        "country_code": location.get("country_code") or location.get("iso_code") or None,
        "city": location.get("city") or None,
        "machine_name": executor.machine_name,
        "available_gpu_count": executor.available_gpu_count,
    }


def _order(row: dict) -> tuple:
    return (row["gpu_type"], row["gpu_count"], row["price_per_hour"], row["id"])


def list_executors(client, *, gpu: Optional[str] = None, count: Optional[int] = None) -> list:
    """Rentable executors (GPU type and count filters), in a stable order, indexed from 1."""
    with lium_errors(client, "listing executors"):
        executors = client.ls(gpu_type=gpu, gpu_count=count)
    rows = sorted((executor_row(e) for e in executors), key=_order)
    for index, row in enumerate(rows, 1):
        row["index"] = index
    return rows


def _country_matches(row: dict, country: str) -> bool:
    wanted = country.strip().lower()
    return wanted in ((row["country_code"] or "").lower(), (row["country"] or "").lower())


def choose_executor(client, *, gpu: Optional[str], count: Optional[int], country: Optional[str]) -> dict:
    """The cheapest executor matching the filters (per hour; ties by id), or exit 1."""
    rows = list_executors(client, gpu=gpu, count=count)
    if country:
        rows = [r for r in rows if _country_matches(r, country)]
    if not rows:
        wanted = ", ".join(f"{k} {v}" for k, v in (("gpu", gpu), ("count", count), ("country", country)) if v)
        raise OpsError(f"no Lium executor is available for {wanted or 'any GPU'} right now (see pod.ls)")
    return min(rows, key=lambda r: (r["price_per_hour"], r["id"]))


def find_executor(client, selector: str, listing: Optional[dict] = None) -> dict:
    """The executor named by pod.ls's index (from its last listing), its id or its huid; exit 1
    when it is not rentable now."""
    executor_id = selector
    if selector.isdigit():
        if listing is None:
            raise ConfigError(f"--config {selector}: an index refers to the last pod.ls listing, and there "
                              f"is none: run pod.ls first, or pass the executor's id or huid")
        ids = listing.get("ids") or []
        if not 1 <= int(selector) <= len(ids):
            raise ConfigError(f"--config {selector}: the last pod.ls listed {len(ids)} executor(s)")
        executor_id = ids[int(selector) - 1]
    with lium_errors(client, "listing executors"):
        executors = client.ls()
    matches = [e for e in executors if executor_id in (e.id, e.huid)]
    exact = [e for e in matches if e.id == executor_id]
    if len(matches) > 1 and len(exact) != 1:
        raise ConfigError(f"--config {selector}: the huid names {len(matches)} executors; pass the id "
                          f"({', '.join(e.id for e in matches)})")
    if not matches:
        raise OpsError(f"executor {executor_id} is not available now (rented or offline): run pod.ls again")
    return executor_row((exact or matches)[0])


# ---------------------------------------------------------------- the last listing (for --config N)


def save_listing(path: Path, rows: list, filters: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"listed_at": time.time(), "filters": filters, "ids": [r["id"] for r in rows],
                               "executors": rows}, indent=1) + "\n")
    os.replace(tmp, path)


def load_listing(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("ids"), list) else None


def listed_executor(listing: Optional[dict], selector: str) -> Optional[dict]:
    """What the last listing said about an executor (for --dry-run, which contacts nothing)."""
    rows = (listing or {}).get("executors") or []
    if selector.isdigit():
        index = int(selector)
        return rows[index - 1] if 1 <= index <= len(rows) else None
    return next((r for r in rows if selector in (r.get("id"), r.get("huid"))), None)


# ---------------------------------------------------------------- volumes


def resolve_volume(client, name: str) -> dict:
    """{"name", "id", "huid"} of the volume called name; exit 1 saying how to create it."""
    with lium_errors(client, "listing volumes"):
        volumes = client.volumes()
    matches = [v for v in volumes if v.name == name]
    if not matches:
        have = ", ".join(sorted(v.name for v in volumes)) or "none"
        raise OpsError(f"Lium volume {name!r} not found (volumes: {have}); create it with "
                       f"`lium volumes new {name}`, or pass --volume NAME, --volume-id ID or --no-volume")
    if len(matches) > 1:
        raise OpsError(f"{len(matches)} Lium volumes are called {name!r} "
                       f"({', '.join(v.id for v in matches)}): pass --volume-id")
    return {"name": matches[0].name, "id": matches[0].id, "huid": matches[0].huid}


def check_volume_id(client, volume_id: str) -> dict:
    """{"name", "id", "huid"} of the volume with this id (or huid); exit 1 when there is none."""
    with lium_errors(client, "listing volumes"):
        volumes = client.volumes()
    match = next((v for v in volumes if volume_id in (v.id, v.huid)), None)
    if match is None:
        raise OpsError(f"no Lium volume has the id {volume_id!r} (see `lium volumes list`)")
    return {"name": match.name, "id": match.id, "huid": match.huid}


# ---------------------------------------------------------------- SSH key


def ssh_key_pair(flag: Optional[str]) -> dict:
    """The private key to log in with and its public half, which the pod authorizes.

    --ssh-key PATH (the private key, or its .pub), else the SDK's own choice: LIUM_SSH_KEY_PATH,
    `lium init`'s [ssh] key_path, then ~/.ssh/id_ed25519, id_rsa, id_ecdsa.
    """
    if flag:
        path = Path(flag).expanduser()
        if path.name.endswith(".pub"):
            path = path.with_name(path.name[:-4])
        source = "--ssh-key"
    else:
        from lium.sdk.config import resolve_ssh_key_path

        path, source = resolve_ssh_key_path()
        if path is None:
            raise ConfigError("no SSH key: none of ~/.ssh/id_ed25519, id_rsa, id_ecdsa exists; "
                              "pass --ssh-key PATH (or set LIUM_SSH_KEY_PATH)")
    public = path.with_name(path.name + ".pub")
    if not path.is_file():
        raise ConfigError(f"SSH key {path} (from {source}): no such file")
    try:
        lines = [line.strip() for line in public.read_text().splitlines()]
    except OSError:
        raise ConfigError(f"SSH key {path}: no public key {public} "
                          f"(make it with: ssh-keygen -y -f {path} > {public})") from None
    keys = [line for line in lines if _PUBLIC_KEY.match(line)]
    if not keys:
        raise ConfigError(f"{public}: not an OpenSSH public key")
    return {"private": str(path), "public_path": str(public), "public_key": keys[0], "source": source}


# ---------------------------------------------------------------- pods


def _iso(value: Optional[str]) -> Optional[datetime]:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def ssh_endpoint(pod) -> Optional[dict]:
    """{"user", "host", "port"} from the pod's `ssh <user>@<host> -p <port>`; None until it has one."""
    command = pod.ssh_cmd
    if not command:
        return None
    match = re.fullmatch(r"\s*ssh\s+([A-Za-z0-9_][A-Za-z0-9._-]*)@([A-Za-z0-9.:_-]+)(?:\s+-p\s+([0-9]{1,5}))?\s*",
                         command)
    if not match or not 0 < int(match.group(3) or 22) < 65536:
        raise OpsError(f"Lium gave pod {pod.name} an SSH command of an unexpected shape: {command!r}")
    return {"user": match.group(1), "host": match.group(2), "port": int(match.group(3) or 22)}


def pod_row(pod, now: Optional[datetime] = None) -> dict:
    now = now or datetime.now(timezone.utc)
    executor = pod.executor
    created = _iso(pod.created_at)
    uptime = max(0.0, (now - created).total_seconds()) if created else None
    price = float(executor.price_per_hour) if executor and executor.price_per_hour is not None else None
    ssh = ssh_endpoint(pod)
    return {
        "name": pod.name,
        "id": pod.id,
        "huid": pod.huid,
        "status": (pod.status or "unknown").upper(),
        "gpu_type": executor.gpu_type if executor else None,
        "gpu_count": pod.gpu_count or (executor.gpu_count if executor else None),
        "ssh": ssh,
        "destination": f"{ssh['user']}@{ssh['host']}:{ssh['port']}" if ssh else None,
        "created_at": pod.created_at or None,
        "uptime_s": None if uptime is None else round(uptime),
        "price_per_hour": price,
        "cost_usd": None if uptime is None or price is None else round(uptime / 3600 * price, 2),
        "termination_at": pod.removal_scheduled_at,
    }


def list_pods(client) -> list:
    with lium_errors(client, "listing pods"):
        pods = client.ps()
    return [pod_row(p) for p in sorted(pods, key=lambda p: (p.name or "", p.id))]


def find_pod(client, name: str):
    """The pod called name (or with that huid or id), as the SDK's PodInfo; None when there is none."""
    with lium_errors(client, "listing pods"):
        return client.pod_by_name(name)


def rent_pod(client, *, executor_id: str, name: str, volume_id: Optional[str], public_key: str,
             ttl_s: Optional[float]) -> dict:
    """Rent the executor as pod `name` (the key authorized, the volume attached); schedule its
    removal after ttl_s. Returns {"id", "name", "termination_at", "warnings"}: the pod bills from here."""
    with lium_errors(client, f"renting executor {executor_id}"):
        created = client.up(executor_id=executor_id, name=name, volume_id=volume_id, ssh_keys=[public_key])
    pod_id = str(created.get("id"))
    report = {"id": pod_id, "name": name, "termination_at": None, "warnings": []}
    if ttl_s:
        # Scheduled at once, not when ready: a pod that never comes up bills all the same.
        when = (datetime.now(timezone.utc) + timedelta(seconds=ttl_s)).strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            with lium_errors(client, f"scheduling the removal of pod {name}"):
                client.schedule_termination(pod_id, termination_time=when)
            report["termination_at"] = when
        except OpsError as exc:
            report["warnings"].append(f"the pod's removal was NOT scheduled ({exc}); remove it with pod.down")
    return report


def wait_ready(client, pod_id: str, name: str, *, timeout_s: float,
               on_poll: Optional[Callable[[Optional[dict], str, float], None]] = None) -> dict:
    """Wait until the pod runs with an SSH endpoint; its pod_row. Exit 1 if it fails or times out."""
    from lium.sdk import PodStartError

    def polled(pod, status, elapsed):
        if on_poll is not None:
            phase = pod.eta_hint() if pod is not None and hasattr(pod, "eta_hint") else None
            on_poll(phase, status, elapsed)

    try:
        with lium_errors(client, f"waiting for pod {name}"):
            ready = client.wait_ready(pod_id, timeout=max(1, math.ceil(timeout_s)), on_poll=polled)
    except PodStartError as exc:
        raise OpsError(f"pod {name} ({pod_id}) failed to start: {_scrub(client, str(exc))}; "
                       f"if pod.ps still lists it, remove it with pod.down --name {name}") from None
    if ready is None:
        raise OpsError(f"pod {name} ({pod_id}) is not ready after {timeout_s:.0f}s and is billing: "
                       f"run pod.up again to keep waiting, or pod.down --name {name}")
    return pod_row(ready)


def remove_pod(client, pod) -> dict:
    with lium_errors(client, f"removing pod {pod.name}"):
        client.down(pod)
    return {"id": pod.id, "name": pod.name, "removed": True}


# ---------------------------------------------------------------- before pod.down


def _same_dir(a: str, b: str) -> bool:
    return posixpath.normpath(a or "") == posixpath.normpath(b or "")


def fetch_record(records_dir: Path, run_id: str) -> Optional[dict]:
    if not RUN_ID.match(run_id):
        return None  # not a run id: no record can be named after it
    try:
        record = json.loads((Path(records_dir) / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def unfetched_reason(run: dict, record: Optional[dict], destination: Optional[str] = None,
                     on_pod: Optional[dict] = None) -> Optional[str]:
    """Why a run directory on the pod is not safely on the laptop (None when it is).

    A record of another host does not count: two pods with the same config have run
    directories of the same names and paths.
    """
    if record is None:
        return "never fetched"
    if destination is not None and record.get("destination") not in (None, destination):
        return f"the fetched copy came from another host ({record.get('destination')})"
    if not _same_dir(record.get("remote_dir", ""), run.get("run_dir", "")):
        return f"the fetched copy came from {record.get('remote_dir')}"
    finished, fetched = run.get("finished"), record.get("fetched_at")
    if isinstance(finished, (int, float)) and isinstance(fetched, (int, float)) and finished > fetched:
        return "finished again after it was fetched"
    if on_pod is not None and (on_pod["files"], on_pod["bytes"]) != (record.get("files"), record.get("bytes")):
        return (f"changed after it was fetched ({on_pod['files']} files, {on_pod['bytes']} bytes on the pod; "
                f"{record.get('files')} files, {record.get('bytes')} bytes fetched)")
    return None


def down_check(target, *, outputs_dir: str, records_dir: Path) -> dict:
    """What keeps a pod from being removed: runs queued or running on it, and run directories
    that artifacts.fetch has not recorded (or that changed after it did). Two round trips: the
    runs' states, then what their directories hold."""
    status = runs_status(target, outputs_dir=outputs_dir)
    # What each run directory holds now, against what the fetch recorded (an archive after it...).
    listing = list_remote(target, dirs=[run["run_dir"] for run in status["runs"]], outputs_dir=outputs_dir)
    on_pod = {entry["dir"]: entry for entry in listing["runs"] if entry["exists"]}
    active, unfetched = [], []
    for run in status["runs"]:
        if run["state"] in ACTIVE_STATES:
            active.append({"run_id": run["run_id"], "state": run["state"], "run_dir": run["run_dir"]})
            continue
        reason = unfetched_reason(run, fetch_record(records_dir, run["run_id"]), target.profile.destination,
                                  on_pod.get(run["run_dir"]))
        if reason:
            unfetched.append({"run_id": run["run_id"], "state": run["state"], "run_dir": run["run_dir"],
                              "reason": reason})
    return {"outputs_dir": status["outputs_dir"], "runs": len(status["runs"]), "active": active,
            "unfetched": unfetched}
