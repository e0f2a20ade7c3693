"""`pod` namespace: check a pod, prepare it, and rent and release Lium pods.

pod.ls, pod.up, pod.ps and pod.down go through the Lium SDK (optional extra: `pip install
'ops-tasks[lium]'`), which only they import. Authentication is the SDK's own (`lium init`, or
LIUM_API_KEY); LIUM_BASE_URL points it at another API (the tests' fake). pod.up leaves a
`Host <alias>` block in ~/.ssh/config, so every other task reaches the pod with `--host <alias>`
(default alias `lium`, the default host).
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from invoke import Collection
from .tables import one_line, tabulate

from . import defaults, records
from .errors import ConfigError, OpsError
from .flags import count_flag, seconds_flag
from .names import POD_NAME
from .output import target_of, dry_run_requested, log, on_each_pod, ops_task, stopped
from .secrets import MASK
from .settings import env_value, project_dir_of
# The operations and ssh_config are imported by the functions that use them: `ops --list` and
# `ops TASK --help` load none of them (ARCHITECTURE.md, "Start-up").


def render_status(data: dict) -> str:
    from .operations.pod import human_bytes
    where = data["host"] if data["host"] == data["destination"] else f"{data['host']} ({data['destination']})"
    head = f"{where}: {'OK' if data['ok'] else 'NOT OK'}"
    if not data["reachable"]:
        return "\n".join([head, *(f"  problem: {one_line(str(p))}" for p in data["problems"])])
    volume = data["volume"]
    state = "mounted" if volume["mounted"] else ("plain directory" if volume["exists"] else "missing")
    tools = ", ".join(
        f"{name} {tool['version'] or ''}".strip() if tool["present"] else f"{name} MISSING"
        for name, tool in data["tools"].items()
    )
    gpus = ", ".join(
        f"{g['index']}: {g['name']} {g['utilization_pct']}% {g['memory_used_mib']}/{g['memory_total_mib']} MiB"
        for g in data["gpus"]
    )
    rows = [
        ("reachable", f"yes ({data['latency_ms']:.0f} ms round trip, {data['connect_ms'] or 0:.0f} ms connect)"),
        ("hostname", f"{data['hostname']} (user {data['user']})"),
        ("volume", f"{volume['path']}: {state}, {volume['fstype'] or '?'}, "
                   f"{human_bytes(volume['free_bytes'])} free of {human_bytes(volume['size_bytes'])}"),
        ("gpus", gpus or "none"),
        ("tools", tools),
        ("tmux", ", ".join(data["tmux_sessions"]) or "no sessions"),
        ("home disk", f"{human_bytes(data['disk_free_bytes'])} free of {human_bytes(data.get('disk_size_bytes'))}"),
        ("load", " ".join(str(x) for x in data["load"]) + f" ({data['cpus']} CPUs)"),
    ]
    if data.get("cost"):  # a Lium pod pod.up rented: what it has cost so far
        cost = data["cost"]
        rows.append(("cost", f"{_money(cost['cost_usd'])} so far ({_money(cost['price_per_hour'], '/h')} for "
                             f"{_duration(cost['uptime_s'])})"))
    lines = [head, tabulate(rows, tablefmt="plain")]
    lines += [f"problem: {one_line(str(p))}" for p in data["problems"]]  # a pod's text: one line each
    lines += [f"warning: {one_line(str(w))}" for w in data["warnings"]]
    return "\n".join(lines)


@ops_task(human=render_status)
def status(c, host=None):
    """Check a pod (or each pod of a fleet): reachable, volume mounted at /mnt, GPUs, tools, tmux."""
    return on_each_pod(c, host, _status_and_cost)


def _status_and_cost(target) -> dict:
    """pod_status, with a Lium pod's running cost from pod.up's record (no round trip of its own)."""
    from .operations.costs import lium_running_cost
    from .operations.pod import pod_status

    data = pod_status(target)
    cost = lium_running_cost(target.profile)
    if cost is not None:
        data["cost"] = cost
    return data


# ---------------------------------------------------------------- Lium: shared


def _pod_name(name: str, flag: str = "--name") -> str:
    if not POD_NAME.match(name or ""):
        raise ConfigError(f"{flag} {name!r}: a pod name is letters, digits, '.', '_' and '-' "
                          f"(at most 64, starting with a letter or digit)")
    return name


def _ttl(value) -> Optional[float]:
    from .operations.run_config import parse_duration
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
    from .operations.lium import base_url, list_executors, load_sdk, open_client
    count_n = count_flag("--count", count, None) if count is not None else None
    load_sdk("pod.ls")
    filters = {"gpu": gpu, "count": count_n}
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(), "would_list": filters}
    rows = list_executors(open_client("pod.ls"), gpu=gpu, count=count_n)
    records.save_listing(rows, filters)
    return {"ok": True, "filters": filters, "executors": rows}


# ---------------------------------------------------------------- pod.up


def render_up(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    pod = data.get("lium_pod") or data["pod"]  # a fleet's section: `pod` is the pod's name there
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
    "name": "Pod name (default: ops-<alias>). A pod of that name that exists already is reused, not rented again. "
            "With --pods: the fleet's name.",
    "ttl": "Remove the pod after this long: 90m, 12h, 1d (scheduled on Lium right after the rent).",
    "volume": "Lium volume to attach by name (default: $LIUM_DEFAULT_VOLUME, else my_volume).",
    "volume_id": "Lium volume to attach by id (or huid) instead of by name.",
    "no_volume": "Attach no volume (the pod then has no persistent /mnt).",
    "alias": "Host alias written into ~/.ssh/config for the pod (default: lium); use it as --host.",
    "ssh_key": "Private SSH key to authorize on the pod and log in with (default: the SDK's: $LIUM_SSH_KEY_PATH, "
               "`lium init`'s, then ~/.ssh/id_ed25519, id_rsa, id_ecdsa).",
    "timeout": f"Seconds to wait for the pod to be ready (default {defaults.LIUM_READY_TIMEOUT_S:.0f}).",
    "yes": "Rent without asking (required when stdin is not a terminal).",
    "pods": "Rent this many pods at once as the fleet --name NAME: pods and aliases NAME-1..NAME-N, each with "
            "its volume; --host NAME then names them all.",
}


@dataclass(frozen=True)
class UpRequest:
    """pod.up's flags, checked before any contact."""

    alias: str
    name: str
    config: Optional[str]
    gpu: Optional[str]
    count: Optional[int]
    country: Optional[str]
    ttl: Optional[str]
    ttl_s: Optional[float]
    timeout_s: float
    volume_name: Optional[str]
    volume_id: Optional[str]
    key: dict
    listing: Optional[dict]


def _up_request(gpu, count, country, config, name, ttl, volume, volume_id, no_volume, alias, ssh_key,
                timeout) -> UpRequest:
    from . import ssh_config
    from .operations.lium import ssh_key_pair
    alias = ssh_config.check_alias(alias or defaults.HOST)
    name = _pod_name(name or f"ops-{alias}")
    count_n = count_flag("--count", count, None) if count is not None else None
    ttl_s = _ttl(ttl)
    timeout_s = seconds_flag("--timeout", timeout, defaults.LIUM_READY_TIMEOUT_S)
    if config and (gpu or count_n or country):
        log("warning: pod.up: --config names the executor; --gpu/--count/--country are ignored")
    if not config and not gpu:
        raise ConfigError("pod.up needs --config EXECUTOR (index, id or huid from pod.ls) or --gpu TYPE")
    if no_volume and (volume or volume_id):
        raise ConfigError("pod.up: --no-volume contradicts --volume/--volume-id")
    if volume and volume_id:
        raise ConfigError("pod.up: pass --volume NAME or --volume-id ID, not both")
    volume_name = None if (no_volume or volume_id) else (volume or env_value("LIUM_DEFAULT_VOLUME")
                                                         or defaults.LIUM_VOLUME_NAME)
    key = ssh_key_pair(ssh_key)
    listing = records.load_listing() if config else None
    if config and config.isdigit() and listing is None:
        raise ConfigError(f"--config {config}: an index refers to the last pod.ls listing, and there is none: "
                          f"run pod.ls first, or pass the executor's id or huid")
    return UpRequest(alias=alias, name=name, config=config, gpu=gpu, count=count_n, country=country, ttl=ttl,
                     ttl_s=ttl_s, timeout_s=timeout_s, volume_name=volume_name, volume_id=volume_id, key=key,
                     listing=listing)


def _up_dry_run(want: UpRequest, config_path) -> dict:
    from .operations.lium import base_url
    return {
        "ok": True, "dry_run": True, "lium_base_url": base_url(),
        "would_rent": {
            "executor": want.config,
            "listed_as": records.listed_executor(want.listing, want.config) if want.config else None,
            "filters": None if want.config else {"gpu": want.gpu, "count": want.count, "country": want.country},
            "name": want.name, "ttl_s": want.ttl_s, "timeout_s": want.timeout_s,
            "volume": want.volume_name, "volume_id": want.volume_id, "ssh_key": want.key["private"],
        },
        "would_write": {"ssh_config": str(config_path), "alias": want.alias},
        "then": f"pod.status --host {want.alias}",
    }


def _confirm_rent(plan: dict, want: UpRequest) -> None:
    executor, volume = plan["executor"], plan["volume"]
    _confirm(f"Rent {_gpus(executor)} ({executor['huid']}, {executor['country_code'] or '?'}) at "
             f"{_money(executor['price_per_hour'], '/h')} as pod {want.name}, volume "
             f"{volume['name'] if volume else 'none'}"
             f"{f', removed after {want.ttl}' if want.ttl_s else ', no --ttl'}?", "nothing rented")


def _log_start(plan: dict, name: str, pod_id: str) -> None:
    if plan["existing"] is not None:
        log(f"pod.up: pod {name} exists ({plan['existing'].status}); reusing it, not renting another")
    else:
        executor = plan["executor"]
        log(f"pod.up: rented pod {name} ({pod_id}) on {_gpus(executor)} {executor['huid']}; waiting until ready")


def _up_report(plan: dict, started: dict, pod: dict, want: UpRequest, config_path, changed: bool,
               status: dict) -> dict:
    report = {
        "ok": bool(status["ok"]), "rented": plan["existing"] is None, "pod": pod, "executor": plan["executor"],
        "volume": plan["volume"], "alias": want.alias, "ssh_config": str(config_path), "ssh_config_changed": changed,
        "ssh_key": want.key["private"], "warnings": started["warnings"], "status": status,
    }
    if not status["ok"]:
        report["error"] = f"pod {want.name} is up, but its check failed: " + "; ".join(status["problems"])
    return report


@ops_task(human=render_up, help=UP_HELP)
def up(c, gpu=None, count=None, country=None, config=None, name=None, ttl=None, volume=None, volume_id=None,
       no_volume=False, alias=None, ssh_key=None, timeout=None, yes=False, pods=None):
    """Rent a Lium pod (or --pods N as a fleet; volume attached), wait until ready, write its alias, check it."""
    from . import ssh_config
    from .operations.lium import load_sdk, open_client, plan_pod, pod_ssh_options, start_pod, wait_ready
    from .operations.pod import pod_status
    task = "pod.up"
    load_sdk(task)
    if pods is not None:
        fleet = _fleet_request(c, pods, name, alias, config)
        want = _up_request(gpu, count, country, None, fleet["names"][0], ttl, volume, volume_id, no_volume,
                           fleet["names"][0], ssh_key, timeout)
        return _up_fleet(c, want, fleet, no_volume=no_volume, yes=yes)
    want = _up_request(gpu, count, country, config, name, ttl, volume, volume_id, no_volume, alias, ssh_key, timeout)
    config_path = ssh_config.default_path()
    ssh_config.refuse_foreign_block(config_path, want.alias)
    if dry_run_requested():
        return _up_dry_run(want, config_path)
    _ask_or_refuse(task, yes, "rents a billed pod")

    client = open_client(task)
    plan = plan_pod(client, name=want.name, selector=want.config, listing=want.listing, gpu=want.gpu,
                    count=want.count, country=want.country, volume_name=want.volume_name, volume_id=want.volume_id)
    if plan["existing"] is None and not yes:
        _confirm_rent(plan, want)  # the last moment before anything bills
    started = start_pod(client, plan, name=want.name, public_key=want.key["public_key"], ttl_s=want.ttl_s)
    _log_start(plan, want.name, started["id"])
    pod = wait_ready(client, started["id"], want.name, timeout_s=want.timeout_s, on_poll=PollPrinter(want.name))

    options = pod_ssh_options(pod, want.key["private"])
    changed = ssh_config.set_pod_host(config_path, want.alias, options, want.name, pod["id"])
    _remember_pod(c, want.alias, pod, plan)
    # --no-volume: no persistent /mnt was asked for, so its absence is not a failure here.
    status = pod_status(target_of(c, want.alias), volume_required=not no_volume)
    return _up_report(plan, started, pod, want, config_path, changed, status)


# ---------------------------------------------------------------- pod.up --pods N: a fleet


def _fleet_request(c, pods, name, alias, config) -> dict:
    """{"name", "names"} of pod.up --pods N --name NAME, checked before any contact: the fleet's
    name must be free (not a profile nor a fleet of invoke.yaml, which --host would find first)."""
    from . import ssh_config
    from .settings import check_ops_config

    count_n = count_flag("--pods", pods, None)
    if not name:
        raise ConfigError("pod.up --pods needs --name NAME: the fleet's name (pods NAME-1..NAME-N)")
    if alias:
        raise ConfigError("pod.up --pods: the aliases are NAME-1..NAME-N; --alias names one pod")
    if config:
        raise ConfigError("pod.up --pods: --config names one executor; pass --gpu TYPE (and --count) to rent "
                          "the cheapest that match")
    names = [_pod_name(f"{name}-{index}") for index in range(1, count_n + 1)]
    _pod_name(name)
    for each in names:
        ssh_config.check_alias(each)
    ops = check_ops_config(c.config.get("ops"))
    for kind in ("profiles", "fleets"):
        if name in (ops.get(kind) or {}):
            raise ConfigError(f"pod.up --name {name}: invoke.yaml has a {kind[:-1]} of that name, which --host "
                              f"{name} would mean; pick another name")
    return {"name": name, "names": names}


def _up_fleet(c, want: UpRequest, fleet: dict, *, no_volume: bool, yes: bool) -> dict:
    """Rent the fleet's pods at once, wait for each, write each alias, record the fleet, then
    pod.status over it (--host NAME). A pod that fails to start is its own row; the others
    come up and are recorded."""
    from . import ssh_config
    from .operations.lium import open_client, plan_pods, pod_ssh_options
    import dataclasses

    from .fleet import FleetResult, fleet_document

    task = "pod.up"
    config_path = ssh_config.default_path()
    for alias in fleet["names"]:
        ssh_config.refuse_foreign_block(config_path, alias)
    if dry_run_requested():
        report = _up_dry_run(want, config_path)
        report["would_rent"]["name"] = fleet["names"]
        report["would_write"] = {"ssh_config": str(config_path), "aliases": fleet["names"], "fleet": fleet["name"]}
        report["then"] = f"pod.status --host {fleet['name']}"
        return report
    _ask_or_refuse(task, yes, "rents billed pods")
    plans = plan_pods(open_client(task), names=fleet["names"], gpu=want.gpu, count=want.count, country=want.country,
                      volume_name=want.volume_name, volume_id=want.volume_id)
    if not yes and any(plan["existing"] is None for plan in plans):
        _confirm_fleet(plans, want, fleet["name"])
    wants = {plan["name"]: dataclasses.replace(want, name=plan["name"], alias=plan["name"]) for plan in plans}
    started = _in_parallel(plans, lambda plan: _start_one(plan, wants[plan["name"]]))
    ready = {}
    for plan in plans:  # one writer of ~/.ssh/config at a time
        result = started[plan["name"]]
        if result.get("ok"):
            options = pod_ssh_options(result["pod"], want.key["private"])
            result["changed"] = ssh_config.set_pod_host(config_path, plan["name"], options, plan["name"],
                                                        result["pod"]["id"])
            _remember_pod(c, plan["name"], result["pod"], plan)
            ready[plan["name"]] = result
    recorded = records.save_fleet(project_dir_of(c.config), fleet["name"], list(ready)) if ready else None
    statuses = _fleet_status(c, fleet["name"], not no_volume) if ready else {}
    rows = []
    for plan in plans:
        result, status = started[plan["name"]], statuses.get(plan["name"]) or {}
        if result.get("ok") and "problems" not in status:  # its check raised: that error is the pod's
            result = {"ok": False, "error": status.get("error"), "exit_code": status.get("exit_code", 1)}
        if result.get("ok"):
            report = _up_report(plan, result["started"], result["pod"], wants[plan["name"]], config_path,
                                result["changed"], status)
            # In a fleet's document `pod` is each pod's name (fleet.FleetResult); the Lium pod moves over.
            rows.append({**report, "pod": plan["name"], "lium_pod": report["pod"]})
        else:
            rows.append({"pod": plan["name"], "ok": False, "error": result["error"], "exit_code": result["exit_code"]})
    extra = {"fleet_name": fleet["name"], "fleet_record": str(recorded) if recorded else None}
    if len(rows) == 1:  # a fleet of one is the single pod's report
        if "status" not in rows[0]:
            raise (ConfigError if rows[0]["exit_code"] == 2 else OpsError)(rows[0]["error"])
        single = dict(rows[0], pod=rows[0].pop("lium_pod"))
        return {**single, **extra}
    return {**fleet_document(FleetResult(rows)), **extra}


def _confirm_fleet(plans: list, want: UpRequest, name: str) -> None:
    new = [plan for plan in plans if plan["existing"] is None]
    price = sum(plan["executor"]["price_per_hour"] or 0 for plan in new)
    volume = new[0]["volume"]
    _confirm(f"Rent {len(new)} pods as fleet {name} ({', '.join(_gpus(p['executor']) for p in new)}) at "
             f"{_money(price, '/h')} in all, volume {volume['name'] if volume else 'none'} each"
             f"{f', removed after {want.ttl}' if want.ttl_s else ', no --ttl'}?", "nothing rented")


def _in_parallel(plans: list, one) -> dict:
    """one(plan) for every plan at once (fleet.at_once: a thread each, as each waits on Lium's
    API): name -> its result, an expected failure being {"ok": False, "error", "exit_code"} of
    that pod only. Daemon threads: after Ctrl-C the process ends at once, not when the last wait
    would have, and says the pods go on starting."""
    from .fleet import at_once

    try:
        results = at_once(plans, one, max_workers=max(1, len(plans)), name="pod-up")
    except KeyboardInterrupt as exc:
        names = ", ".join(plan["name"] for plan in plans)
        raise stopped(exc, f"pods {names} go on starting and billing: run the same pod.up again to wait, "
                           f"or pod.down --name for each") from None
    return {plan["name"]: result for plan, result in zip(plans, results)}


def _start_one(plan: dict, want: UpRequest) -> dict:
    """Rent (or reuse) one pod of the fleet and wait until it is ready; its own client (the
    SDK's HTTP session is not shared between threads)."""
    from .operations.lium import open_client, start_pod, wait_ready
    client = open_client("pod.up")
    started = start_pod(client, plan, name=want.name, public_key=want.key["public_key"], ttl_s=want.ttl_s)
    _log_start(plan, want.name, started["id"])
    pod = wait_ready(client, started["id"], want.name, timeout_s=want.timeout_s, on_poll=PollPrinter(want.name))
    return {"ok": True, "started": started, "pod": pod}


def _fleet_status(c, name: str, volume_required: bool) -> dict:
    """pod.status of the fleet just recorded, as `--host NAME` finds it: pod name -> its status."""
    from .operations.pod import pod_status
    import functools

    from .fleet import fan_out, resolve_hosts

    profiles = resolve_hosts(c.config.get("ops"), name, project_dir_of(c.config))
    result = fan_out(profiles, functools.partial(pod_status, volume_required=volume_required),
                     invoke_config=c.config)
    return {pod["pod"]: {k: v for k, v in pod.items() if k != "pod"} for pod in result.pods}


def _remember_pod(c, alias: str, pod: dict, plan: dict) -> None:
    """Record the pod's price and GPUs under its alias, and this folder (records.save_lium_pod: the
    user's state, so its costs and pod.ps know it from any folder)."""
    from .settings import host_identity

    price = pod.get("price_per_hour") or (plan.get("executor") or {}).get("price_per_hour")
    records.save_lium_pod(alias, {**pod, "price_per_hour": price}, host_identity(target_of(c, alias).profile),
                          project_dir_of(c.config))


# ---------------------------------------------------------------- pod.ps


def _folder(path) -> str:
    """A folder for people: under the home as ~/..."""
    if not path:
        return "-"
    home = str(Path.home())
    return "~" + path[len(home):] if path == home or path.startswith(home + "/") else path


def render_ps(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    lines = []
    if data["pods"]:
        table = [(p["name"], p["huid"], _gpus(p), p["status"], p["destination"] or "-", ", ".join(p["aliases"]) or "-",
                  _money(p["price_per_hour"], "/h"), _duration(p["uptime_s"]), _money(p["cost_usd"]),
                  _folder(p["rented_from"]), p["termination_at"] or "-") for p in data["pods"]]
        lines.append(tabulate(table, headers=["name", "huid", "GPUs", "state", "ssh", "alias", "price", "uptime",
                                              "cost", "rented from", "terminates"]))
        totals = data["totals"]
        lines.append(f"{totals['pods']} pod(s): {_money(totals['price_per_hour'], '/h')} in all, "
                     f"{_money(totals['cost_usd'])} so far"
                     + (f" ({totals['unpriced']} without a price)" if totals["unpriced"] else ""))
    else:
        lines.append("no Lium pods")
    for record in data["not_listed"]:
        lines.append(f"warning: {record['name'] or record['alias']} ({record['id']}, rented from "
                     f"{_folder(record['project'])}) is recorded but Lium does not list it: removed elsewhere, by "
                     f"its --ttl, or in another Lium account? pod.down --name {record['name'] or record['id']} "
                     f"marks it released")
    if "history" in data:
        rows = [(r["name"] or "-", r["alias"], _gpus(r), _money(r["price_per_hour"], "/h"),
                 _duration((r.get("spent") or {}).get("uptime_s")), _money((r.get("spent") or {}).get("cost_usd")),
                 _folder(r["project"]), time.strftime("%Y-%m-%d %H:%M", time.localtime(r["released_at"])))
                for r in data["history"]]
        lines.append("released:" if rows else "released: none")
        if rows:
            lines.append(tabulate(rows, headers=["name", "alias", "GPUs", "price", "uptime", "cost", "rented from",
                                                 "released"]))
    return "\n".join(lines)


@ops_task(human=render_ps, help={"history": "Also list the pods released (pod.down), with what each cost in all."})
def ps(c, history=False):
    """List your Lium pods (from any folder): GPUs, state, SSH, alias, price, cost so far, the folder that rented it."""
    from . import ssh_config
    from .operations.costs import released_cost, rented_pods
    from .operations.lium import base_url, list_pods, load_sdk, open_client
    load_sdk("pod.ps")
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(), "would_list": "your pods"}
    listed_at = time.time()
    pods = list_pods(open_client("pod.ps"))
    config_path = ssh_config.default_path()
    for pod in pods:
        pod["aliases"] = ssh_config.pod_aliases(config_path, pod_id=pod["id"])
    report = {"ok": True, **rented_pods(pods, records.lium_pods(), listed_at=listed_at)}
    if history:
        report["history"] = [{**record, "spent": released_cost(record)}
                             for record in records.lium_pods(released=True) if record["released_at"] is not None]
    return report


# ---------------------------------------------------------------- pod.down


def render_down(data: dict) -> str:
    if data.get("dry_run"):
        return _render_dry_run(data)
    if not data["found"]:
        lines = [f"no Lium pod named {data['name']}: nothing to remove"]
        if data.get("released_records"):
            lines.append(f"  its record ({', '.join(data['released_records'])}) is marked released")
    elif not data["removed"]:
        lines = [f"refused: pod {data['name']} keeps runs that are not done or not fetched "
                 f"(on {data['checked_on']}, {data['check']['outputs_dir']}"
                 + (f"; fetches recorded here or in {data['records_of']}" if data.get("records_of") else "") + "):"]
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
            lines.append(f"  runs on {data['checked_on']}: " + (f"{runs}, all done and fetched" if runs else "none")
                         + (f" (fetches recorded here or in {data['records_of']}, which rented it)" if data.get("records_of")
                            else ""))
    if data.get("forgot"):
        lines.append(f"  removed Host {', '.join(data['forgot'])} from {data['ssh_config']}")
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    return "\n".join(lines)


def _check_runs(c, name: str, host: Optional[str], remote_outputs_dir) -> dict:
    """The teardown check through host: {"checked_on", "check"}, with ok false and an error when
    runs keep the pod; a pod that cannot be checked is refused (--force removes it unchecked)."""
    if host is None:
        raise OpsError(f"pod {name} has no SSH address yet, so its runs cannot be checked: "
                       f"pass --force to remove it anyway")
    return _check_runs_on(c, name, target_of(c, host), remote_outputs_dir)


def _rented_from(target) -> Optional[Path]:
    """The folder pod.up rented the pod behind this host from, when it is there still."""
    from .settings import host_identity

    folder = (records.lium_pod_of(host_identity(target.profile)) or {}).get("project")
    return Path(folder) if folder and Path(folder).is_dir() else None


def _check_runs_on(c, name: str, target, remote_outputs_dir) -> dict:
    from .operations.teardown import teardown_check
    from .selection import latest_submission, outputs_root
    from .settings import host_identity

    host = target.profile.name
    here = project_dir_of(c.config)
    # pod.down works from any folder: the folder that rented the pod keeps records of its runs too.
    rented_from = _rented_from(target)
    rented_from = None if rented_from is None or rented_from.resolve() == here.resolve() else rented_from
    latest = latest_submission(c, target) or (rented_from and records.latest_manifest(
        rented_from, host, host_identity(target.profile)))
    # The outputs root of the latest submission to the pod (its runs may live elsewhere than the
    # profile's root), unless --remote-outputs-dir names one.
    outputs = outputs_root(remote_outputs_dir, latest, target.profile)
    try:
        check = teardown_check(target, outputs_dir=outputs, records_dir=records.fetch_records_dir(here),
                               also_records=(records.fetch_records_dir(rented_from),) if rented_from else ())
    except OpsError as exc:
        raise OpsError(f"cannot check the runs of pod {name} ({exc}): pass --force to remove it "
                       f"anyway") from None
    result = {"checked_on": host, "check": check}
    if rented_from:
        result["records_of"] = str(rented_from)  # said: that folder's fetches count too
    if check["active"] or check["unfetched"]:
        names = [f"{r['run_id']} ({r['state']})" for r in check["active"]] + [
            f"{r['run_id']} ({r['reason']})" for r in check["unfetched"]]
        result.update(ok=False, error=f"pod {name} keeps runs not done or not fetched: "
                                      f"{', '.join(names)}; pass --force to remove it anyway")
    return result


@ops_task(human=render_down, help={
    "name": "The pod to remove: its name (or huid, or id) as pod.ps shows it, or a fleet pod.up --pods named "
            "(each of its pods). Required.",
    "alias": "SSH alias or --host to check its runs through (default: the Host block pod.up wrote for it, "
             "else the pod's own address).",
    "remote_outputs_dir": "Outputs root on the pod to check (default: the latest submission's to it, else the profile's).",
    "force": "Remove it even with runs queued, running or not fetched, or when the pod cannot be checked.",
    "forget": "Also remove the pod's Host block from ~/.ssh/config.",
    "yes": "Remove without asking (required when stdin is not a terminal).",
})
def down(c, name=None, alias=None, remote_outputs_dir=None, force=False, forget=False, yes=False):
    """Remove a Lium pod, refusing while its runs are queued, running or not fetched (--force)."""
    from . import ssh_config
    from .operations.lium import base_url, find_pod, load_sdk, open_client, remove_pod, ssh_destination
    task = "pod.down"
    load_sdk(task)
    if not name:
        raise ConfigError("pod.down needs --name (see pod.ps)")
    name = _pod_name(name)
    alias = ssh_config.check_alias(alias) if alias else None
    config_path = ssh_config.default_path()
    members = records.load_fleet(project_dir_of(c.config), name)
    if members:
        if alias:
            raise ConfigError(f"pod.down --name {name}: a fleet's pods are checked through their own aliases "
                              f"({', '.join(members)}); --alias names one pod")
        return _down_fleet(c, name, members, remote_outputs_dir, force=force, forget=forget, yes=yes)
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(),
                "would_remove": name, "would_check_runs": not force,
                "would_forget": (alias or "the alias pod.up wrote") if forget else None}
    _ask_or_refuse(task, yes, "removes a pod")

    client = open_client(task)
    pod = find_pod(client, name)
    report = {"ok": True, "name": name, "found": pod is not None, "removed": False, "check": None,
              "checked_on": None, "ssh_config": str(config_path), "warnings": []}
    marked = ssh_config.pod_aliases(config_path, pod_id=pod.id) if pod else ssh_config.pod_aliases(
        config_path, name=name)
    if pod is not None:
        report["id"] = pod.id
        if not force:
            # Checked through the alias given, else the block pod.up wrote, else the pod's own address.
            report.update(_check_runs(c, name, alias or (marked[0] if marked else None) or ssh_destination(pod),
                                      remote_outputs_dir))
            if not report["ok"]:
                return report
        if not yes:
            _confirm(f"Remove pod {name} ({pod.huid}, id {pod.id})?", "nothing removed")
        report.update(remove_pod(client, pod))
        records.forget_lium_pod(pod.id)  # its address may go to another pod: its price goes with it
    else:  # gone already (elsewhere, by its --ttl): what pod.up recorded of it is released too
        report["released_records"] = _release_records_named(name)
    if forget:
        # Only blocks pod.up wrote: a Host block of the user's own is never removed.
        report["forgot"], kept = ssh_config.forget_pod_hosts(config_path, [alias] if alias else marked)
        if kept:
            report["kept_blocks"] = kept
    return report


def _release_records_named(name: str) -> list:
    """Mark released the recorded pods (not released yet) of this name, huid or id: their ids."""
    named = [record["id"] for record in records.lium_pods() if record["id"] and name in
             (record["name"], record["huid"], record["id"])]
    for pod_id in named:
        records.forget_lium_pod(pod_id)
    return named


def _down_fleet(c, name: str, members: list, remote_outputs_dir, *, force: bool, forget: bool, yes: bool) -> dict:
    """pod.down of a fleet pod.up recorded: each pod behind its own teardown check (the pods
    checked at once, one connection each), one question for all, each removal its own: a pod
    that is refused or fails is named in its row, and the others are released all the same."""
    import functools

    from . import ssh_config
    from .fleet import FleetResult, fan_out, fleet_document, resolve_hosts
    from .operations.lium import base_url, open_client, remove_pod

    task = "pod.down"
    config_path = ssh_config.default_path()
    if dry_run_requested():
        return {"ok": True, "dry_run": True, "lium_base_url": base_url(), "would_remove": members,
                "fleet_name": name, "would_check_runs": not force, "would_forget": members if forget else None}
    _ask_or_refuse(task, yes, "removes pods")
    client = open_client(task)
    pods = _fleet_pods(client, config_path, members)
    profiles = resolve_hosts(c.config.get("ops"), name, project_dir_of(c.config))
    checked = fan_out(profiles, functools.partial(_down_check, c, pods, remote_outputs_dir, force, config_path),
                      invoke_config=c.config)
    rows = {row["pod"]: row for row in checked.pods}
    going = [alias for alias, row in rows.items() if row.get("ok") is True and row.get("found")]
    if going and not yes:
        _confirm(f"Remove pods {', '.join(going)} of fleet {name}?", "nothing removed")
    for alias in going:
        try:
            rows[alias].update(remove_pod(client, pods[alias]))
            records.forget_lium_pod(pods[alias].id)  # its address may go to another pod: its price goes with it
        except OpsError as exc:
            rows[alias].update(ok=False, error=str(exc), exit_code=exc.exit_code)
    gone = [alias for alias in members if rows[alias].get("removed") or rows[alias].get("found") is False]
    if forget:
        forgot, _ = ssh_config.forget_pod_hosts(config_path, gone)
        for alias in forgot:
            rows[alias]["forgot"] = [alias]
    records.fleet_after_release(project_dir_of(c.config), name, gone)
    return {**fleet_document(FleetResult([rows[alias] for alias in members])), "fleet_name": name}


def _fleet_pods(client, config_path, members: list) -> dict:
    """alias -> the Lium pod behind it (the pod its Host block names, else the pod of its name)."""
    from . import ssh_config
    from .operations.lium import lium_errors

    with lium_errors(client, "listing pods"):
        listed = client.ps()
    by_block = {}
    for pod in listed:
        for alias in ssh_config.pod_aliases(config_path, pod_id=pod.id):
            by_block.setdefault(alias, pod)
    by_name = {pod.name: pod for pod in listed}
    return {alias: by_block.get(alias) or by_name[alias] for alias in members if alias in by_block or alias in by_name}


def _down_check(c, pods: dict, remote_outputs_dir, force: bool, config_path, target) -> dict:
    """One pod's part of pod.down of a fleet before anything is removed: found, its runs checked."""
    alias = target.profile.name
    pod = pods.get(alias)
    report = {"ok": True, "name": alias, "found": pod is not None, "removed": False, "check": None,
              "checked_on": None, "ssh_config": str(config_path), "warnings": []}
    if pod is None:
        return report
    report["id"] = pod.id
    return report if force else {**report, **_check_runs_on(c, alias, target, remote_outputs_dir)}


# ---------------------------------------------------------------- preparing a pod


def render_steps(data: dict) -> str:
    head = f"{data['host']}: {'OK' if data['ok'] else 'FAILED'}"
    if data.get("commit"):
        head += f": {data['remote_repo']} at {data['commit'][:12]} ({data['branch']}{', dirty' if data['dirty'] else ''})"
    rows = [(s["step"], s["state"], s["detail"]) for s in data["steps"]]
    return "\n".join([head, tabulate(rows, tablefmt="plain")])


def _remote_only(target, task: str):
    if target.profile.is_local:
        raise ConfigError(f"{task} prepares a rented pod's home, not this machine: pass --host")
    return target


@ops_task(human=render_steps)
def bootstrap(c, host=None):
    """Prepare a pod (each pod of a fleet) from its volume: bootstrap-pod.sh, SSH keys, GitHub host keys."""
    from .operations.pod import pod_bootstrap
    return on_each_pod(c, host, lambda target: pod_bootstrap(_remote_only(target, "pod.bootstrap")))


def render_sync(data: dict) -> str:
    from .operations.pod import human_bytes
    text = render_steps(data)
    synced = data.get("workdir")
    if not synced:
        return text
    lines = [text, f"  from {synced['path']}: {synced['files']} files, {human_bytes(synced['bytes'])}"]
    lines += [f"  warning: {one_line(str(w))}" for w in data.get("warnings") or []]
    return "\n".join(lines)


@ops_task(human=render_sync, optional=["workdir"], help={
    "remote_repo": "The repo on the pod (default: the profile's remote_repo, or $OPS_REMOTE_REPO).",
    "repo_url": "Clone from here when the repo is not on the pod yet.",
    "branch": "Check out this branch (then pull --ff-only).",
    "pr": "Check out this GitHub pull request (refs/pull/N/head).",
    "ref": "Check out this commit or tag (detached).",
    "install": 'Then run this in the repo, e.g. "uv sync" (package caches on the pod\'s disk, HF_HOME on the volume).',
    "workdir": "Instead of git on the pod: send this folder (alone: the git checkout you are in), its files as "
               "git shows them, uncommitted changes too; runs record its HEAD and the change's hash.",
})
def sync(c, host=None, remote_repo=None, repo_url=None, branch=None, pr=None, ref=None, install=None, workdir=None):
    """Bring the repo on the pod (each pod of a fleet) to a branch, PR or ref, or send a local checkout (--workdir)."""
    if workdir is not None:
        checkout = _workdir_checkout(workdir, repo_url=repo_url, branch=branch, pr=pr, ref=ref)
        return on_each_pod(c, host, lambda target: _sync_workdir_on(target, checkout, remote_repo, install))
    return on_each_pod(c, host, lambda target: _sync_on(target, remote_repo, repo_url, branch, pr, ref, install))


def _repo_of(target, remote_repo) -> str:
    repo = remote_repo or target.profile.remote_repo
    if not repo:
        raise ConfigError("no repo: pass --remote-repo, set remote_repo in the profile, or export OPS_REMOTE_REPO")
    if not repo.startswith("/") and not target.profile.is_local:
        raise ConfigError(f"--remote-repo must be an absolute path on the pod, got {repo!r}")
    return repo


def _sync_on(target, remote_repo, repo_url, branch, pr, ref, install) -> dict:
    from .operations.pod import pod_sync
    repo = _repo_of(target, remote_repo)
    if sum(x is not None for x in (branch, pr, ref)) > 1:
        raise ConfigError("pass at most one of --branch, --pr and --ref")
    for flag, value in (("--repo-url", repo_url), ("--branch", branch), ("--ref", ref)):
        if value is not None and (not value or value.startswith("-")):
            raise ConfigError(f"{flag}: {value!r} is not usable (empty or a leading '-')")
    number = count_flag("--pr", pr, None) if pr is not None else None
    return pod_sync(target, remote_repo=repo, repo_url=repo_url, branch=branch, pr=number, ref=ref, install=install)


def _workdir_checkout(workdir, **git_flags):
    """--workdir's folder as it will be sent (read once for every pod of a fleet): bad input,
    a git flag beside it included, is exit 2 before any pod is contacted."""
    from .operations.workdir import read_checkout
    given = [f"--{name.replace('_', '-')}" for name, value in git_flags.items() if value is not None]
    if given:
        raise ConfigError(f"--workdir sends a local folder: it takes no {', '.join(given)} (git on the pod)")
    return read_checkout(None if workdir is True else workdir)


def _sync_workdir_on(target, checkout, remote_repo, install) -> dict:
    from .operations.workdir import checked_remote_repo, sync_workdir
    if target.profile.is_local:
        raise ConfigError("pod.sync --workdir sends a folder to a pod; the local profile runs in this checkout "
                          "already: pass --host")
    repo = checked_remote_repo(_repo_of(target, remote_repo), target.profile)
    return sync_workdir(target, checkout, remote_repo=repo, install=install)


def render_wandb(data: dict) -> str:
    if not data["ok"]:
        return f"{data['host']}: W&B NOT set up"
    lines = [f"{data['host']}: {data['result']} (~/.netrc mode {data['netrc_mode']}, key from {data['source']})"]
    if data["upgraded"]:
        lines.append(f"  upgraded the volume's set-wandb-api-key.sh to write ~/.netrc (original: {data['backup']})")
    return "\n".join(lines)


@ops_task(human=render_wandb)
def wandb(c, host=None):
    """Make W&B work in non-interactive sessions: ~/.netrc on the pod, each pod of a fleet (key never printed)."""
    from .operations.pod import pod_wandb
    key = env_value("WANDB_API_KEY")
    if key == MASK:
        raise ConfigError("WANDB_API_KEY is '***': that is a masked value, not a key")
    return on_each_pod(c, host, lambda target: pod_wandb(_remote_only(target, "pod.wandb"), key=key))


ns = Collection("pod")
for _task in (status, ls, up, ps, down, bootstrap, sync, wandb):
    ns.add_task(_task)
