"""Several pods as one: naming a fleet, and running one operation on each of its pods at once
(docs/ARCHITECTURE.md, "Fleets").

A fleet is SSH fan-out from the laptop, Fabric's model (`fab -H a,b,c`): the same operation,
one target per pod, in a bounded thread pool, each pod with its own deadline. One pod's failure
is that pod's result; it never stops the others. A fleet of one is exactly a single host.
"""

import contextvars
import functools
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
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
    first, without contact). Each pod's call sees the caller's context variables (the task's
    flags: --json, --dry-run, the secrets to mask), which threads do not inherit by themselves."""
    if not targets:
        return FleetResult([])
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(targets))), thread_name_prefix="fleet")
    try:
        futures = [pool.submit(contextvars.copy_context().run, _one_pod, target, operation, deadline_s)
                   for target in targets]
        wait(futures)
    except BaseException:
        # Ctrl-C: pods not started yet are not contacted; the connections in use are closed, so
        # their round trips end now rather than at their deadlines.
        pool.shutdown(wait=False, cancel_futures=True)
        for target in targets:
            target.close()
        raise
    pool.shutdown()
    results = []
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
        results.append(future.result())
    return FleetResult(results)


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
        return {"pod": name, "ok": False, "error": str(exc), "exit_code": exc.exit_code}
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


# ---------------------------------------------------------------- one submission over a fleet


def submit_to_fleet(targets: list, submissions: dict, *, submission_id: str, project_dir, config: str,
                    force: bool = False, retry_failed: bool = False, slots: Optional[int] = None,
                    fail_fast: bool = False) -> dict:
    """One submission spread over the pods (docs/ARCHITECTURE.md, "Fleets"), in two fan-outs
    whatever the number of pods and runs: each pod is probed (its GPUs and what it has of these
    run ids: two round trips over its one connection), the runs are placed
    (operations/placement.place: a run a pod has stays there; one that succeeded on any pod is not
    sent again unless force), then each pod gets its share under the one submission id (one
    round trip; a pod with no share is not contacted again). The Ledger records which run went
    to which pod, and the local manifest names each run's pod.
    submissions: pod name -> that pod's Submission (each pod's profile fills its own defaults)."""
    probed = fan_out_targets(targets, functools.partial(_probe, submissions))
    if any(p.get("dry_run") for p in probed.pods):
        return fleet_document(probed)
    has = {p["pod"]: {r["run_id"]: r["state"] for r in p["runs"] if r.get("state") not in ("missing", None)}
           for p in probed.pods if p.get("ok") is True}
    succeeded_on = {} if force else {run_id: pod for pod, states in has.items() for run_id, state in states.items()
                                     if state == "succeeded"}
    shares = _placement(probed.pods, has, next(iter(submissions.values())).runs, succeeded_on, slots)
    reachable = [t for t in targets if t.profile.name in has]
    send = functools.partial(_send_share, submissions, shares, submission_id=submission_id, force=force,
                             retry_failed=retry_failed, slots=slots, fail_fast=fail_fast)
    by_pod = {p["pod"]: p for p in probed.pods if p.get("ok") is not True}
    by_pod.update((p["pod"], p) for p in fan_out_targets(reachable, send).pods)
    # Each pod's record fields once: a host's identity reads its ssh config (milliseconds, per run).
    fields = {t.profile.name: records.host_fields(t.profile) for t in targets}
    held_by = {run_id: fields[name] for name in has for run_id in by_pod[name].get("queued") or []}
    ledger = records.Ledger(project_dir, submission_id)
    ledger.place_all((run_id, pod["host_id"], pod["host"]) for run_id, pod in held_by.items())
    queued = sorted(held_by)
    held_by.update((run_id, fields[pod]) for run_id, pod in succeeded_on.items())
    document = fleet_document(FleetResult([by_pod[t.profile.name] for t in targets]))
    document.update(submission_id=submission_id, ledger=str(ledger.path), already_succeeded=succeeded_on,
                    placed={name: sorted(ids) for name, ids in shares.items()},
                    manifest=str(_save_fleet_manifest(project_dir, submissions, submission_id, fields, held_by,
                                                      queued=queued, config=config)))
    return document


def _probe(submissions: dict, target) -> dict:
    """A pod's GPUs and its runs of these ids (missing where it has none)."""
    # Imported here, as only a fleet submission needs them (an `ops` that does not start fast).
    from .operations.pod import pod_status
    from .operations.runs import runs_status

    submission = submissions[target.profile.name]
    found = runs_status(target, outputs_dir=submission.outputs_dir, run_ids=[run.run_id for run in submission.runs])
    return {"ok": True, "gpus": pod_status(target).get("gpus") or [], "runs": found["runs"]}


def _placement(probed: list, has: dict, runs: tuple, succeeded_on: dict, slots: Optional[int]) -> dict:
    """{pod: set of run ids} for the runs not already succeeded somewhere, over the pods that answered."""
    from .operations.placement import place

    to_place = [run for run in runs if run.run_id not in succeeded_on]
    wanted = {run.run_id for run in to_place}
    pods = [{"name": p["pod"], "gpu_count": len(p["gpus"]), "free_gpus": sum(gpu_is_free(g) for g in p["gpus"]),
             "slots": slots or 1, "run_ids": [r for r in has[p["pod"]] if r in wanted]}
            for p in probed if p["pod"] in has]
    if not pods or not to_place:
        return {}
    placed = place([{"run_id": r.run_id, "gpus": r.gpus, "expected_s": r.timeout} for r in to_place], pods)
    return {name: set(ids) for name, ids in placed.items()}


def _send_share(submissions: dict, shares: dict, target, *, submission_id: str, **flags) -> dict:
    """Queue this pod's share of the runs (one round trip); a pod with none is not contacted."""
    from .operations.runs import submit_runs

    name = target.profile.name
    submission = submissions[name]
    share = tuple(run for run in submission.runs if run.run_id in shares.get(name, ()))
    if not share:
        return {"ok": True, "host": name, "submission_id": submission_id, "queued": [], "skipped": [],
                "refused": [], "share": []}
    report = submit_runs(target, replace(submission, runs=share), submission_id=submission_id, **flags)
    return {**report, "share": [run.run_id for run in share]}


def _save_fleet_manifest(project_dir, submissions: dict, submission_id: str, fields: dict, held_by: dict, *,
                         queued: list, config: str):
    """The local manifest of a fleet submission: every pod (`host_ids`, so each pod's later tasks
    find it), each run with the pod that holds it (fetch takes it from there)."""
    from .operations.runs import manifest_of

    manifest = manifest_of(next(iter(submissions.values())), submission_id, ",".join(fields))
    manifest["runs"] = [dict(run, **held_by[run["run_id"]]) if run["run_id"] in held_by else run
                        for run in manifest["runs"]]
    manifest.update(fleet=True, hosts=list(fields), host_ids=[pod["host_id"] for pod in fields.values()],
                    config=config, queued=queued,
                    submitted_at=time.time())
    return records.save_manifest(project_dir, manifest)
