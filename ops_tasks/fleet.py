"""Several pods as one: naming a fleet, and running one operation on each of its pods at once
(docs/ARCHITECTURE.md, "Fleets").

A fleet is SSH fan-out from the laptop, Fabric's model (`fab -H a,b,c`): the same operation,
one target per pod, in a bounded thread pool, each pod with its own deadline. One pod's failure
is that pod's result; it never stops the others. A fleet of one is exactly a single host.

A low layer: operations and tasks import it, and it imports neither (records, settings,
targets, errors only; tests/test_layers.py). What a fleet does with runs (placing a submission,
steering it) is an operation: operations/fleet_runs.py.
"""

import contextvars
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from . import records
from .errors import ConfigError, OpsError
from .settings import check_ops_config, host_identity, resolve_profile
from .targets import DryRunStop, target_for

MAX_WORKERS = 32  # pods contacted at once: threads mostly wait on the network
# A free GPU: at most this fraction of its memory in use (a CUDA context alone holds a few
# hundred MiB, a loaded model gigabytes).
FREE_GPU_MEMORY_FRACTION = 0.05


# ---------------------------------------------------------------- naming a fleet


def host_names(ops_config, spec: Optional[str], project_dir) -> list:
    """The host names a --host value stands for: a comma list, an `ops.fleets.NAME` of
    invoke.yaml, a fleet pod.up recorded, else itself (one host, or the default when None)."""
    ops = check_ops_config(ops_config)
    if spec is None or "," not in spec:
        fleets = ops.get("fleets") or {}
        if spec in fleets:
            return list(fleets[spec])
        recorded = records.load_fleet(project_dir, spec) if spec and spec not in (ops.get("profiles") or {}) else None
        return list(recorded) if recorded else [spec]
    names = [part.strip() for part in spec.split(",")]
    if not all(names):
        raise ConfigError(f"--host {spec!r}: an empty host name in the comma list")
    return names


def resolve_hosts(ops_config, spec: Optional[str], project_dir) -> list:
    """The profiles of every host --host names, in the order given; ConfigError (exit 2, nothing
    contacted) for an unknown host or one host named twice, however it was spelt."""
    profiles = [resolve_profile(ops_config, name, project_dir) for name in host_names(ops_config, spec, project_dir)]
    seen = {}
    for profile in profiles:
        identity = host_identity(profile)
        if identity in seen:
            raise ConfigError(f"--host {spec!r}: {seen[identity]} and {profile.name} are the same host "
                              f"({identity}); name each pod once")
        seen[identity] = profile.name
    return profiles


# ---------------------------------------------------------------- fanning out


class NothingHere(Exception):
    """Raised by an operation, before any contact, when this pod has no part in what was asked
    (a fleet submission put none of its runs there): `result` is the pod's answer, and the pod
    is not contacted."""

    def __init__(self, result: dict):
        super().__init__(result.get("note", "nothing to do on this pod"))
        self.result = result


@dataclass
class FleetResult:
    """Each pod's result in host order: the operation's dict with `pod` (its name), or
    {pod, ok: False, error, exit_code} when it raised an expected failure."""

    pods: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.get("ok") is True for p in self.pods)

    @property
    def failed(self) -> list:
        """The names of the pods whose result is not ok."""
        return [p["pod"] for p in self.pods if p.get("ok") is not True]

    @property
    def exit_code(self) -> int:
        """0 all ok; else the worst of the pods' (a configuration error is 2, anything else 1)."""
        if self.ok:
            return 0
        return max(p.get("exit_code", 1) for p in self.pods if p.get("ok") is not True)

    def as_dict(self) -> dict:
        """The per-pod objects by pod name, with the verdict over them."""
        return {"ok": self.ok, "failed": self.failed, "pods": {p["pod"]: p for p in self.pods}}


def at_once(items: list, one: Callable, *, max_workers: int = MAX_WORKERS, name: str = "fleet",
            on_stop: Optional[Callable] = None) -> list:
    """one(item) for every item in threads, at most max_workers at a time: the results in item
    order. The one way this package does several things at once (each pod of a fan-out, each pod
    pod.up rents). An expected failure (OpsError) is that item's result, {ok: False, error,
    exit_code}, never the others' end; anything else is a bug, raised once every item started
    has finished. Each call sees the caller's context variables (the task's flags: --json,
    --dry-run, the secrets to mask), which threads do not inherit by themselves.

    Ctrl-C (or SIGTERM's exception) reaches the caller at once: the threads are waited for in
    short joins, an item not started yet is never started, on_stop() runs (fan_out closes its
    connections there, so the round trips in flight end now rather than at their deadlines),
    and the threads are daemons, so the process ends without waiting for the calls in flight
    (pod.up's waits on Lium have nothing to close: it names the pods still starting)."""
    items = list(items)
    results: list = [None] * len(items)
    bugs: list = [None] * len(items)
    contexts = [contextvars.copy_context() for _ in items]  # the caller's, copied in its thread
    taken = iter(range(len(items)))
    lock, stop = threading.Lock(), threading.Event()

    def worker():
        while not stop.is_set():
            with lock:
                index = next(taken, None)
            if index is None:
                return
            try:
                results[index] = contexts[index].run(one, items[index])
            except OpsError as exc:
                results[index] = failure(exc)
            except BaseException as exc:  # a bug: the caller raises it once the others are done
                bugs[index] = exc

    threads = [threading.Thread(target=worker, name=f"{name}-{n}", daemon=True)
               for n in range(max(1, min(max_workers, len(items))))] if items else []
    try:  # a Ctrl-C while the threads start is one while they run
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except BaseException:
        stop.set()
        if on_stop is not None:
            on_stop()
        raise
    for bug in bugs:
        if bug is not None:
            raise bug
    return results


def failure(exc: OpsError) -> dict:
    """An expected failure as the result of the one item (pod) it happened to."""
    return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}


def fan_out(profiles: list, operation: Callable, *, max_workers: int = MAX_WORKERS,
            deadline_s: Optional[float] = None, dry_run: bool = False, invoke_config=None) -> FleetResult:
    """operation(target) on every pod at once, at most max_workers at a time; each pod's round
    trips end by deadline_s (its own clock, from when it starts). Expected failures (OpsError) stay
    in that pod's result; anything else is a bug and is raised once every pod has finished."""
    targets = [target_for(p, dry_run=dry_run, invoke_config=invoke_config) for p in profiles]
    return fan_out_targets(targets, operation, max_workers=max_workers, deadline_s=deadline_s)


def fan_out_targets(targets: list, operation: Callable, *, max_workers: int = MAX_WORKERS,
                    deadline_s: Optional[float] = None) -> FleetResult:
    """fan_out over targets already made (a task checks its flags against each pod's profile
    first, without contact), through at_once. On Ctrl-C the pods not started yet are not
    contacted, and the connections in use are closed."""

    def close_all():
        for target in targets:
            target.close()

    return FleetResult(at_once(targets, lambda target: _one_pod(target, operation, deadline_s),
                               max_workers=max_workers, name="fleet", on_stop=close_all))


def _one_pod(target, operation: Callable, deadline_s: Optional[float]) -> dict:
    name = target.profile.name
    try:
        with target.round_trip_budget(deadline_s):
            result = operation(target)
    except DryRunStop as stop:
        return {"pod": name, **dry_run_record(stop.target)}
    except NothingHere as nothing:
        return {"pod": name, **nothing.result}
    except OpsError as exc:
        return {"pod": name, **failure(exc)}
    return {"pod": name, **result}


def dry_run_record(target) -> dict:
    """What a stopped dry run would have done on one host: its notes, scripts and local commands."""
    profile = target.profile
    record = {"ok": True, "dry_run": True, "host": profile.name, "destination": profile.destination,
              **target.notes, "scripts": list(target.scripts)}
    if target.commands:  # only where a local command (rsync) was the first contact
        record["commands"] = list(target.commands)
    return record


# ---------------------------------------------------------------- merging


def merged_rows(results: list, key: str) -> list:
    """One table of every pod's rows (its result's `key` list, runs say), each with a `pod`
    column first; a pod that failed has no rows (its error is in the pod table)."""
    rows = []
    for result in results:
        pod_rows = result.get(key)
        for row in pod_rows if isinstance(pod_rows, list) else []:
            if isinstance(row, dict):
                rows.append({"pod": result["pod"], **{k: v for k, v in row.items() if k != "pod"}})
    return rows


def gpu_is_free(gpu: dict) -> bool:
    used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (used, total)) or total <= 0:
        return False  # what cannot be judged is not counted as free
    return used <= FREE_GPU_MEMORY_FRACTION * total


RAISED_KEYS = frozenset({"pod", "ok", "error", "exit_code"})  # the whole result of a pod that raised


def pod_error(name: str, error) -> str:
    """A pod's error as it reads after the pod's name: operations name their host first (`nc1:
    ...`, `nc1 (root@host:22): ...`), which a line already naming the pod leaves off ("nc1: nc1: ...")."""
    text = str(error)
    if text.startswith(f"{name}: "):
        return text[len(name) + 2:]
    if text.startswith(f"{name} (") and "): " in text:
        return text.split("): ", 1)[1]
    return text


def answered(result: dict) -> bool:
    """True when the pod's operation came back with its own result (ok or not: a failed run's
    `error` is an answer), False when it raised or found the pod unreachable."""
    return not set(result) <= RAISED_KEYS and result.get("reachable") is not False


def totals(results: list, runs_key: str = "runs") -> dict:
    """The fleet at a glance: pods (up = answered), GPUs and free GPUs, runs by state."""
    up = [r for r in results if answered(r)]
    gpus = [g for r in up for g in (r.get("gpus") if isinstance(r.get("gpus"), list) else []) if isinstance(g, dict)]
    by_state: dict = {}
    for row in merged_rows(up, runs_key):
        if "state" not in row:  # a run that was fetched or archived, not a run's status
            continue
        state = row.get("state") if isinstance(row.get("state"), str) else "unknown"
        by_state[state] = by_state.get(state, 0) + 1
    return {"pods": len(results), "pods_up": len(up), "pods_not_ok": sum(r.get("ok") is not True for r in results),
            "gpus": len(gpus), "gpus_free": sum(gpu_is_free(g) for g in gpus), "runs_by_state": by_state}


def fleet_document(result: FleetResult) -> dict:
    """What a task over several pods returns: each pod's own result (`pods`, by name), the merged
    view (`runs`: every pod's runs with a pod column; `totals`), and the verdict naming the pods
    that are not ok. A pod's result is kept whole, so `--json` of a fleet holds each pod's answer
    exactly as a single-host run of the task would give it."""
    document = {"ok": result.ok, "fleet": True, "hosts": [p["pod"] for p in result.pods], **result.as_dict(),
                "exit_code": result.exit_code, "runs": merged_rows(result.pods, "runs"),
                "totals": totals(result.pods)}
    if all(p.get("dry_run") for p in result.pods):
        document["dry_run"] = True
    if result.failed:
        document["error"] = f"not ok on {len(result.failed)} of {len(result.pods)} pods: {', '.join(result.failed)}"
    return document
