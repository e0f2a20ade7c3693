"""Lium operations: executors, volumes and pods, through the Lium SDK (PyPI `lium.io`, import `lium`).

The SDK is an optional extra (`pip install 'ops-tasks[lium]'`), imported here on first use only.
Authentication and the API address are the SDK's own: `LIUM_API_KEY` (or `lium init`'s
~/.lium/config.ini), `LIUM_BASE_URL` (default https://lium.io/api). Functions take a client
(`open_client`) as their first argument, as other operations take a target, and return plain
dicts. The API key never appears in what they return or raise.
"""

import contextlib
import math
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from ..errors import ConfigError, HostError, Interrupted, OpsError

INSTALL_HINT = "pip install 'ops-tasks[lium]'"
DEFAULT_BASE_URL = "https://lium.io/api"
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


def _destination(ssh: Optional[dict]) -> Optional[str]:
    return f"{ssh['user']}@{ssh['host']}:{ssh['port']}" if ssh else None


def ssh_destination(pod) -> Optional[str]:
    """user@host:port of the pod's SSH endpoint; None until it has one."""
    return _destination(ssh_endpoint(pod))


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
        "destination": _destination(ssh),
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


def plan_pod(client, *, name: str, selector: Optional[str], listing: Optional[dict], gpu: Optional[str],
             count: Optional[int], country: Optional[str], volume_name: Optional[str],
             volume_id: Optional[str]) -> dict:
    """What pod.up is to do, decided before anything bills: reuse the pod called name, else rent
    the executor named by selector (or the cheapest matching the filters) with this volume.
    {"existing": the SDK's PodInfo or None, "executor": row or None, "volume": {...} or None}."""
    existing = find_pod(client, name)
    if existing is not None:
        executor = executor_row(existing.executor) if existing.executor else None
        return {"existing": existing, "executor": executor, "volume": None}
    executor = find_executor(client, selector, listing) if selector else choose_executor(
        client, gpu=gpu, count=count, country=country)
    volume = None
    if volume_name:
        volume = resolve_volume(client, volume_name)
    elif volume_id:
        volume = check_volume_id(client, volume_id)
    return {"existing": None, "executor": executor, "volume": volume}


def plan_pods(client, *, names: list, gpu: Optional[str], count: Optional[int], country: Optional[str],
              volume_name: Optional[str], volume_id: Optional[str]) -> list:
    """plan_pod for several pods at once (pod.up --pods): one listing of pods, executors and
    volumes whatever their number; a pod of a name that exists is reused, the others each get
    one of the cheapest matching executors (a different one each). Exit 1, nothing rented, when
    fewer executors match than pods are to be rented."""
    with lium_errors(client, "listing pods"):
        existing = {pod.name: pod for pod in client.ps()}
    to_rent = [name for name in names if name not in existing]
    executors = []
    if to_rent:
        rows = list_executors(client, gpu=gpu, count=count)
        rows = sorted((r for r in rows if not country or _country_matches(r, country)),
                      key=lambda r: (r["price_per_hour"], r["id"]))
        if len(rows) < len(to_rent):
            wanted = ", ".join(f"{k} {v}" for k, v in (("gpu", gpu), ("count", count), ("country", country)) if v)
            raise OpsError(f"{len(to_rent)} pods to rent, and {len(rows)} Lium executor(s) are available for "
                           f"{wanted or 'any GPU'} right now (see pod.ls): nothing rented")
        executors = rows[:len(to_rent)]
    volume = None
    if to_rent and volume_name:
        volume = resolve_volume(client, volume_name)
    elif to_rent and volume_id:
        volume = check_volume_id(client, volume_id)
    chosen = dict(zip(to_rent, executors))
    return [{"name": name, "existing": existing.get(name),
             "executor": executor_row(existing[name].executor) if name in existing and existing[name].executor
             else chosen.get(name),
             "volume": None if name in existing else volume} for name in names]


def start_pod(client, plan: dict, *, name: str, public_key: str, ttl_s: Optional[float]) -> dict:
    """{"id", "warnings"} of the planned pod: the one that exists (--ttl is not applied to it),
    else a new rent, which bills from here."""
    existing = plan["existing"]
    if existing is not None:
        removal = existing.removal_scheduled_at or "not scheduled"
        return {"id": existing.id,
                "warnings": [f"pod {name} existed: --ttl not applied (its removal: {removal})"] if ttl_s else []}
    return rent_pod(client, executor_id=plan["executor"]["id"], name=name,
                    volume_id=plan["volume"]["id"] if plan["volume"] else None, public_key=public_key, ttl_s=ttl_s)


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
            try:
                ready = client.wait_ready(pod_id, timeout=max(1, math.ceil(timeout_s)), on_poll=polled)
            except PodStartError as exc:  # a LiumError: named here, before lium_errors makes it generic
                raise OpsError(f"pod {name} ({pod_id}) failed to start: {_scrub(client, str(exc))}; "
                               f"if pod.ps still lists it, remove it with pod.down --name {name}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; pod {name} ({pod_id}) goes on starting and billing: "
                          f"pod.up --name {name} again to wait, or pod.down --name {name}") from None
    if ready is None:
        raise OpsError(f"pod {name} ({pod_id}) is not ready after {timeout_s:.0f}s and is billing: "
                       f"run pod.up again to keep waiting, or pod.down --name {name}")
    return pod_row(ready)


def known_hosts_file(pod_id: str) -> str:
    """The SDK's per-pod pin file (~/.lium/known_hosts/<pod id>): executors reuse host:port for
    new pods, so one known_hosts keyed by address would call every new pod a changed key; the
    SDK forgets the file when the pod is removed."""
    try:
        from lium.sdk.client import known_hosts_path

        return str(known_hosts_path(pod_id))
    except ImportError:
        return str(Path.home() / ".lium" / "known_hosts" / re.sub(r"[^A-Za-z0-9._-]", "_", pod_id))


def pod_ssh_options(pod: dict, private_key: str) -> list:
    """The options of the pod's Host block in ~/.ssh/config: how every other task reaches it."""
    ssh = pod["ssh"]
    return [("HostName", ssh["host"]), ("Port", ssh["port"]), ("User", ssh["user"]),
            # Absolute paths: OpenSSH reads `~` as the passwd home, which need not be $HOME.
            ("IdentityFile", str(Path(private_key).absolute())), ("IdentitiesOnly", "yes"),
            # A fresh pod has a key never seen: trust it on first use, pinned per pod.
            ("StrictHostKeyChecking", "accept-new"), ("UserKnownHostsFile", known_hosts_file(pod["id"]))]


def remove_pod(client, pod) -> dict:
    with lium_errors(client, f"removing pod {pod.name}"):
        client.down(pod)
    return {"id": pod.id, "name": pod.name, "removed": True}

