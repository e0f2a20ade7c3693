"""Lium provisioning for the `pod` namespace: pod.ls, pod.up, pod.ps, pod.down.

Through the Lium SDK (optional extra: `pip install 'ops-tasks[lium]'`), imported by these tasks
only. Authentication is the SDK's own (`lium init`, or LIUM_API_KEY); LIUM_BASE_URL points it at
another API (the tests' fake). pod.up leaves a `Host <alias>` block in ~/.ssh/config, so every
other task reaches the pod with `--host <alias>` (default alias `lium`, the default host).
"""

import os
import sys
from pathlib import Path
from typing import Optional

from tabulate import tabulate

from . import ssh_config
from .errors import ConfigError, Interrupted, OpsError
from .flags import count_flag, seconds_flag
from .operations.lium import (
    POD_NAME, base_url, check_volume_id, choose_executor, down_check, executor_row, find_executor, find_pod,
    list_executors, list_pods, listed_executor, load_listing, load_sdk, open_client, remove_pod, rent_pod,
    resolve_volume, save_listing, ssh_key_pair, wait_ready,
)
from .operations.pod import pod_status
from .operations.run_config import parse_duration
from .output import target_of, dry_run_requested, log, ops_task
from .settings import DEFAULT_HOST, env_value, project_dir_of

DEFAULT_ALIAS = DEFAULT_HOST
DEFAULT_VOLUME_NAME = "my_volume"
DEFAULT_TIMEOUT_S = 900
# Written into the pod's Host block, and read back by pod.down and pod.ps to find it again.
MARKER = "ops pod.up: Lium pod"


# ---------------------------------------------------------------- shared


def listing_path() -> Path:
    """Where pod.ls keeps its last listing, so that `pod.up --config N` means its row N."""
    root = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(root).expanduser() / "ops-tasks" / "lium_ls.json"


def _pod_name(name: str, flag: str = "--name") -> str:
    if not POD_NAME.match(name or ""):
        raise ConfigError(f"{flag} {name!r}: a pod name is letters, digits, '.', '_' and '-' "
                          f"(at most 64, starting with a letter or digit)")
    return name


def _ttl(value) -> Optional[float]:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text.replace(".", "", 1).isdigit():
        raise ConfigError(f"--ttl {value!r} needs a unit: 90m, 12h, 1d or 1h30m")
    return parse_duration(text, "--ttl", "pod.up")


def _ask_or_refuse(task: str, yes: bool, what: str) -> None:
    """Before any contact: without --yes, a confirmation needs a terminal to ask on."""
    if not yes and not sys.stdin.isatty():
        raise ConfigError(f"{task} {what}: pass --yes to confirm (stdin is not a terminal, so it cannot ask)")


def _confirm(question: str, refused: str) -> None:
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise OpsError(f"not confirmed: {refused}")


def known_hosts_file(pod_id: str) -> str:
    """The SDK's per-pod pin file (~/.lium/known_hosts/<pod id>): executors reuse host:port for
    new pods, so one known_hosts keyed by address would call every new pod a changed key; the
    SDK forgets the file when the pod is removed."""
    try:
        from lium.sdk.client import known_hosts_path

        return str(known_hosts_path(pod_id))
    except ImportError:
        import re

        return str(Path.home() / ".lium" / "known_hosts" / re.sub(r"[^A-Za-z0-9._-]", "_", pod_id))


def _marked_aliases(pod_id: Optional[str] = None, name: Optional[str] = None) -> list:
    """Aliases whose block pod.up wrote for this pod (by id, else by name)."""
    found = []
    for block in ssh_config.host_blocks(ssh_config.read_text(ssh_config.default_path())):
        for comment in block["comments"]:
            if not comment.startswith(MARKER):
                continue
            words = comment[len(MARKER):].split()
            marked_name = words[0] if words else None
            marked_id = words[1].strip("()") if len(words) > 1 else None
            if (pod_id and marked_id == pod_id) or (name and marked_name == name):
                found.append(block["alias"])
    return found


def _gpus(row: dict) -> str:
    return f"{row.get('gpu_count') or '?'}x {row.get('gpu_type') or '?'}"


def _money(value, suffix="") -> str:
    return "-" if value is None else f"${value:.2f}{suffix}"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _render_dry_run(data: dict) -> str:
    lines = [f"# dry run: nothing contacted (neither the Lium API at {data['lium_base_url']} nor SSH)"]

    def add(key, value, indent):
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            for inner, item in value.items():
                add(inner, item, indent + "  ")
        elif value is not None:
            lines.append(f"{indent}{key}: {value}")

    for key, value in data.items():
        if key not in ("ok", "dry_run", "lium_base_url"):
            add(key, value, "")
    return "\n".join(lines)


# ---------------------------------------------------------------- pod.ls


def render_ls(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    rows = data["executors"]
    if not rows:
        return "no Lium executor is available for these filters"
    table = [(r["index"], r["huid"], r["id"], _gpus(r), _money(r["price_per_hour"], "/h"),
              _money(r["price_per_gpu"], "/GPU/h"),
              ", ".join(x for x in (r["city"], r["country_code"] or r["country"]) if x) or "-") for r in rows]
    return tabulate(table, headers=["#", "huid", "id", "GPUs", "price", "per GPU", "location"])


@ops_task(human=render_ls, help={
    "gpu": "GPU type, e.g. A100, H100, RTX4090 (the SDK's short names).",
    "count": "Exactly this many GPUs per executor.",
})
def ls(c, gpu=None, count=None):
    """List rentable Lium executors: index, id, GPU type and count, price per hour, location."""
    count_n = count_flag("--count", count, None) if count is not None else None
    load_sdk("pod.ls")
    filters = {"gpu": gpu, "count": count_n}
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(), "would_list": filters}
    rows = list_executors(open_client("pod.ls"), gpu=gpu, count=count_n)
    save_listing(listing_path(), rows, filters)
    return {"ok": True, "filters": filters, "executors": rows}


# ---------------------------------------------------------------- pod.up


def render_up(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    pod = data["pod"]
    executor = data.get("executor") or {}
    volume = data.get("volume")
    head = "rented" if data["rented"] else "already running"
    lines = [f"{head}: pod {pod['name']} ({pod['huid']}, id {pod['id']}), {_gpus(pod)}, "
             f"{_money(pod['price_per_hour'], '/h')}"
             + (f", executor {executor.get('huid')}" if executor.get("huid") else ""),
             f"  volume:     {volume['name']} ({volume['id']})" if volume else
             ("  volume:     none (--no-volume)" if data["rented"] else "  volume:     as rented"),
             f"  terminates: {pod['termination_at'] or 'never (no --ttl)'}",
             f"  ssh:        Host {data['alias']} -> {pod['destination']} in {data['ssh_config']}"
             + ("" if data["ssh_config_changed"] else " (unchanged)")]
    lines += [f"warning: {w}" for w in data["warnings"]]
    try:
        from .pod import render_status  # lazily: pod.py wires these tasks in
    except ImportError:  # pragma: no cover - pod.py is someone else's to change
        def render_status(status):
            return f"{status['host']}: {'OK' if status['ok'] else 'NOT OK'}"

    lines.append(render_status(data["status"]))
    return "\n".join(lines)


class PollPrinter:
    """Progress of the wait on stderr: a line when the status or phase changes, else every 30 s."""

    def __init__(self, name: str):
        self.name = name
        self.last = None
        self.last_at = -1e9

    def __call__(self, phase, status, elapsed) -> None:
        now = (status, phase)
        if now != self.last or elapsed - self.last_at >= 30:
            log(f"pod.up: {self.name}: {status} after {elapsed:.0f}s" + (f" ({phase})" if phase else ""))
            self.last, self.last_at = now, elapsed


UP_HELP = {
    "gpu": "GPU type to rent (A100, H100, ...): the cheapest executor that matches is taken.",
    "count": "With --gpu: exactly this many GPUs.",
    "country": "With --gpu: only executors in this country (code such as US, or name).",
    "config": "The executor: its index in the last pod.ls listing, its id or its huid (--gpu/--count/--country "
              "are then ignored).",
    "name": "Pod name (default: ops-<alias>). A pod of that name that exists already is reused, not rented again.",
    "ttl": "Remove the pod after this long: 90m, 12h, 1d (scheduled on Lium right after the rent).",
    "volume": "Lium volume to attach by name (default: $LIUM_DEFAULT_VOLUME, else my_volume).",
    "volume_id": "Lium volume to attach by id (or huid) instead of by name.",
    "no_volume": "Attach no volume (the pod then has no persistent /mnt).",
    "alias": "Host alias written into ~/.ssh/config for the pod (default: lium); use it as --host.",
    "ssh_key": "Private SSH key to authorize on the pod and log in with (default: the SDK's: $LIUM_SSH_KEY_PATH, "
               "`lium init`'s, then ~/.ssh/id_ed25519, id_rsa, id_ecdsa).",
    "timeout": f"Seconds to wait for the pod to be ready (default {DEFAULT_TIMEOUT_S}).",
    "yes": "Rent without asking (required when stdin is not a terminal).",
}


def _written_by_up(config_path, alias: str) -> bool:
    block = ssh_config.find_host(config_path, alias)
    return block is not None and any(c.startswith(MARKER) for c in block["comments"])


def _refuse_foreign_block(config_path, alias: str) -> None:
    """A `Host <alias>` block of the user's own is never replaced: found before anything is rented."""
    if ssh_config.find_host(config_path, alias) is not None and not _written_by_up(config_path, alias):
        raise ConfigError(f"{config_path} already has a Host {alias} block that pod.up did not write: "
                          f"pass --alias with another name, or remove that block yourself")


@ops_task(human=render_up, help=UP_HELP)
def up(c, gpu=None, count=None, country=None, config=None, name=None, ttl=None, volume=None, volume_id=None,
       no_volume=False, alias=None, ssh_key=None, timeout=None, yes=False):
    """Rent a Lium pod (volume attached), wait until ready, write its ~/.ssh/config alias, check it."""
    task = "pod.up"
    load_sdk(task)
    alias = ssh_config.check_alias(alias or DEFAULT_ALIAS)
    name = _pod_name(name or f"ops-{alias}")
    count_n = count_flag("--count", count, None) if count is not None else None
    ttl_s = _ttl(ttl)
    timeout_s = seconds_flag("--timeout", timeout, DEFAULT_TIMEOUT_S)
    if config and (gpu or count_n or country):
        log("warning: pod.up: --config names the executor; --gpu/--count/--country are ignored")
    if not config and not gpu:
        raise ConfigError("pod.up needs --config EXECUTOR (index, id or huid from pod.ls) or --gpu TYPE")
    if no_volume and (volume or volume_id):
        raise ConfigError("pod.up: --no-volume contradicts --volume/--volume-id")
    if volume and volume_id:
        raise ConfigError("pod.up: pass --volume NAME or --volume-id ID, not both")
    volume_name = None if (no_volume or volume_id) else (volume or env_value("LIUM_DEFAULT_VOLUME")
                                                         or DEFAULT_VOLUME_NAME)
    key = ssh_key_pair(ssh_key)
    listing = load_listing(listing_path()) if config else None
    if config and config.isdigit() and listing is None:
        raise ConfigError(f"--config {config}: an index refers to the last pod.ls listing, and there is none: "
                          f"run pod.ls first, or pass the executor's id or huid")
    config_path = ssh_config.default_path()
    _refuse_foreign_block(config_path, alias)

    if dry_run_requested():
        return {
            "ok": True, "dry_run": True, "lium_base_url": base_url(),
            "would_rent": {
                "executor": config, "listed_as": listed_executor(listing, config) if config else None,
                "filters": None if config else {"gpu": gpu, "count": count_n, "country": country},
                "name": name, "ttl_s": ttl_s, "timeout_s": timeout_s,
                "volume": volume_name, "volume_id": volume_id, "ssh_key": key["private"],
            },
            "would_write": {"ssh_config": str(config_path), "alias": alias},
            "then": f"pod.status --host {alias}",
        }
    _ask_or_refuse(task, yes, "rents a billed pod")

    client = open_client(task)
    warnings = []
    existing = find_pod(client, name)
    attached = None
    executor = None
    if existing is not None:
        pod_id = existing.id
        executor = executor_row(existing.executor) if existing.executor else None
        log(f"pod.up: pod {name} exists ({existing.status}); reusing it, not renting another")
        if ttl_s:
            warnings.append(f"pod {name} existed: --ttl not applied (its removal: "
                            f"{existing.removal_scheduled_at or 'not scheduled'})")
    else:
        executor = find_executor(client, config, listing) if config else choose_executor(
            client, gpu=gpu, count=count_n, country=country)
        if volume_name:
            attached = resolve_volume(client, volume_name)
        elif volume_id:
            attached = check_volume_id(client, volume_id)
        if not yes:
            _confirm(f"Rent {_gpus(executor)} ({executor['huid']}, {executor['country_code'] or '?'}) at "
                     f"{_money(executor['price_per_hour'], '/h')} as pod {name}, volume "
                     f"{attached['name'] if attached else 'none'}"
                     f"{f', removed after {ttl}' if ttl_s else ', no --ttl'}?", "nothing rented")
        rented = rent_pod(client, executor_id=executor["id"], name=name,
                          volume_id=attached["id"] if attached else None, public_key=key["public_key"], ttl_s=ttl_s)
        pod_id = rented["id"]
        warnings += rented["warnings"]
        log(f"pod.up: rented pod {name} ({pod_id}) on {_gpus(executor)} {executor['huid']}; waiting until ready")

    try:
        pod = wait_ready(client, pod_id, name, timeout_s=timeout_s, on_poll=PollPrinter(name))
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; pod {name} ({pod_id}) goes on starting and billing: "
                          f"pod.up --name {name} again to wait, or pod.down --name {name}") from None

    ssh = pod["ssh"]
    options = [("HostName", ssh["host"]), ("Port", ssh["port"]), ("User", ssh["user"]),
               # Absolute paths: OpenSSH reads `~` as the passwd home, which need not be $HOME.
               ("IdentityFile", str(Path(key["private"]).absolute())), ("IdentitiesOnly", "yes"),
               # A fresh pod has a key never seen: trust it on first use, pinned per pod.
               ("StrictHostKeyChecking", "accept-new"), ("UserKnownHostsFile", known_hosts_file(pod["id"]))]
    changed = ssh_config.set_host(config_path, alias, options, comment=f"{MARKER} {name} ({pod['id']})")

    status = pod_status(target_of(c, alias))
    if no_volume and status.get("reachable"):
        # --no-volume: no persistent /mnt was asked for, so its absence is not a failure here.
        volume_problems = [p for p in status["problems"] if p.startswith(f"volume {status['volume']['path']}")]
        status["problems"] = [p for p in status["problems"] if p not in volume_problems]
        status["warnings"] = status["warnings"] + volume_problems
        status["ok"] = not status["problems"]
    report = {
        "ok": bool(status["ok"]), "rented": existing is None, "pod": pod, "executor": executor,
        "volume": attached, "alias": alias, "ssh_config": str(config_path), "ssh_config_changed": changed,
        "ssh_key": key["private"], "warnings": warnings, "status": status,
    }
    if not status["ok"]:
        report["error"] = f"pod {name} is up, but its check failed: " + "; ".join(status["problems"])
    return report


# ---------------------------------------------------------------- pod.ps


def render_ps(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    if not data["pods"]:
        return "no Lium pods"
    table = [(p["name"], p["huid"], _gpus(p), p["status"], p["destination"] or "-", ", ".join(p["aliases"]) or "-",
              _duration(p["uptime_s"]), _money(p["cost_usd"]), p["termination_at"] or "-") for p in data["pods"]]
    return tabulate(table, headers=["name", "huid", "GPUs", "state", "ssh", "alias", "uptime", "cost", "terminates"])


@ops_task(human=render_ps)
def ps(c):
    """List your Lium pods: name, id, GPUs, state, SSH destination, uptime, cost, termination time."""
    load_sdk("pod.ps")
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(), "would_list": "your pods"}
    pods = list_pods(open_client("pod.ps"))
    for pod in pods:
        pod["aliases"] = _marked_aliases(pod_id=pod["id"])
    return {"ok": True, "pods": pods}


# ---------------------------------------------------------------- pod.down


def render_down(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    if not data["found"]:
        lines = [f"no Lium pod named {data['name']}: nothing to remove"]
    elif not data["removed"]:
        lines = [f"refused: pod {data['name']} keeps runs that are not done or not fetched "
                 f"(on {data['checked_on']}, {data['check']['outputs_dir']}):"]
        lines += [f"  {r['run_id']}: {r['state']}" for r in data["check"]["active"]]
        lines += [f"  {r['run_id']}: {r['state']}, {r['reason']}" for r in data["check"]["unfetched"]]
        lines.append("wait for them (runs.wait), fetch them (artifacts.fetch), or pass --force")
        return "\n".join(lines)
    else:
        lines = [f"removed pod {data['name']} ({data['id']})"]
        if data["check"] is None:
            lines.append("  runs not checked (--force)")
        else:
            runs = data["check"]["runs"]
            lines.append(f"  runs on {data['checked_on']}: " + (f"{runs}, all done and fetched" if runs else "none"))
    if data.get("forgot"):
        lines.append(f"  removed Host {', '.join(data['forgot'])} from {data['ssh_config']}")
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    return "\n".join(lines)


@ops_task(human=render_down, help={
    "name": "The pod to remove: its name (or huid, or id) as pod.ps shows it. Required.",
    "alias": "SSH alias or --host to check its runs through (default: the Host block pod.up wrote for it, "
             "else the pod's own address).",
    "remote_outputs_dir": "Outputs root on the pod to check (default: the profile's).",
    "force": "Remove it even with runs queued, running or not fetched, or when the pod cannot be checked.",
    "forget": "Also remove the pod's Host block from ~/.ssh/config.",
    "yes": "Remove without asking (required when stdin is not a terminal).",
})
def down(c, name=None, alias=None, remote_outputs_dir=None, force=False, forget=False, yes=False):
    """Remove a Lium pod, refusing while its runs are queued, running or not fetched (--force)."""
    task = "pod.down"
    load_sdk(task)
    if not name:
        raise ConfigError("pod.down needs --name (see pod.ps)")
    name = _pod_name(name)
    if alias:
        alias = ssh_config.check_alias(alias)
    config_path = ssh_config.default_path()
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(),
                "would_remove": name, "would_check_runs": not force,
                "would_forget": (alias or "the alias pod.up wrote") if forget else None}
    _ask_or_refuse(task, yes, "removes a pod")

    client = open_client(task)
    pod = find_pod(client, name)
    report = {"ok": True, "name": name, "found": pod is not None, "removed": False, "check": None,
              "checked_on": None, "ssh_config": str(config_path), "warnings": []}
    if pod is None:
        forget_aliases = [alias] if alias else _marked_aliases(name=name)
    else:
        report["id"] = pod.id
        marked = _marked_aliases(pod_id=pod.id)
        forget_aliases = [alias] if alias else marked
        host = alias or (marked[0] if marked else None)
        if host is None:
            from .operations.lium import ssh_endpoint

            ssh = ssh_endpoint(pod)
            host = f"{ssh['user']}@{ssh['host']}:{ssh['port']}" if ssh else None
        if not force:
            if host is None:
                raise OpsError(f"pod {name} has no SSH address yet, so its runs cannot be checked: "
                               f"pass --force to remove it anyway")
            target = target_of(c, host)
            report["checked_on"] = host
            try:
                check = down_check(target, outputs_dir=remote_outputs_dir or target.profile.outputs_dir,
                                   records_dir=project_dir_of(c.config) / "artifacts" / "fetched")
            except OpsError as exc:
                raise OpsError(f"cannot check the runs of pod {name} ({exc}): pass --force to remove it "
                               f"anyway") from None
            report["check"] = check
            if check["active"] or check["unfetched"]:
                names = [f"{r['run_id']} ({r['state']})" for r in check["active"]] + [
                    f"{r['run_id']} ({r['reason']})" for r in check["unfetched"]]
                report.update(ok=False, error=f"pod {name} keeps runs not done or not fetched: "
                                              f"{', '.join(names)}; pass --force to remove it anyway")
                return report
        if not yes:
            _confirm(f"Remove pod {name} ({pod.huid}, id {pod.id})?", "nothing removed")
        report.update(remove_pod(client, pod))
    if forget:
        # Only blocks pod.up wrote: a Host block of the user's own is never removed.
        ours = [a for a in forget_aliases if _written_by_up(config_path, a)]
        report["forgot"] = [a for a in ours if ssh_config.remove_host(config_path, a)]
        kept = sorted(set(forget_aliases) - set(ours))
        if kept:
            report["kept_blocks"] = kept
    return report
