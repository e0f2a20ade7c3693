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
from .names import RUN_ID
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
    whatever the number of pods and runs: each pod is probed (its GPUs, units in use and what it
    has of these run ids: one round trip, probe_pod), the runs are placed
    (operations/placement.place: a run a pod has stays there; one that succeeded on any pod is not
    sent again unless force), then each pod gets its share under the one submission id (one
    round trip; a pod with no share is not contacted again). The Ledger records which run went
    to which pod, and the local manifest names each run's pod.
    submissions: pod name -> that pod's Submission (each pod's profile fills its own defaults)."""
    probed = fan_out_targets(targets, functools.partial(_probe, submissions, slots))
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
                                                      queued=queued, config=config,
                                                      pricing={host_id: pod for p in by_pod.values()
                                                               for host_id, pod in (p.get("pricing") or {}).items()})))
    return document


def _probe(submissions: dict, slots: Optional[int], target) -> dict:
    """A pod's GPUs, its units in use and its runs of these ids (missing where it has none): one
    round trip."""
    submission = submissions[target.profile.name]
    return probe_pod(target, outputs_dir=submission.outputs_dir, run_ids=[run.run_id for run in submission.runs],
                     run_dirs={run.run_id: run.run_dir for run in submission.runs}, slots=slots)


def _placement(probed: list, has: dict, runs: tuple, succeeded_on: dict, slots: Optional[int]) -> dict:
    """{pod: set of run ids} for the runs not already succeeded somewhere, over the pods that answered."""
    from .operations.placement import place

    to_place = [run for run in runs if run.run_id not in succeeded_on]
    wanted = {run.run_id for run in to_place}
    pods = [dict(placement_pod(p["pod"], p, slots=slots), run_ids=[r for r in has[p["pod"]] if r in wanted])
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
                         queued: list, config: str, pricing: Optional[dict] = None):
    """The local manifest of a fleet submission: every pod (`host_ids`, so each pod's later tasks
    find it), each run with the pod that holds it (fetch takes it from there)."""
    from .operations.runs import manifest_of

    manifest = manifest_of(next(iter(submissions.values())), submission_id, ",".join(fields))
    manifest["runs"] = [dict(run, **held_by[run["run_id"]]) if run["run_id"] in held_by else run
                        for run in manifest["runs"]]
    manifest.update(fleet=True, hosts=list(fields), host_ids=[pod["host_id"] for pod in fields.values()],
                    config=config, queued=queued, pricing=pricing or None,
                    submitted_at=time.time())
    return records.save_manifest(project_dir, manifest)


# ---------------------------------------------------------------- one round trip to see a pod


def probe_pod(target, *, outputs_dir: str, run_ids=(), run_dirs=None, submission_id=None,
              slots: Optional[int] = None) -> dict:
    """A pod's GPUs, its units (GPUs, else CPU slots) and those in use, its queued runs in start
    order, the states of run_ids and its manifest of submission_id: one round trip (the pod's
    run tool, `probe`). What the pod sends is checked: a queue entry or GPU of the wrong shape is
    left out, counts are bounded."""
    from .operations.runs import call_tool

    answer = call_tool(target, "probe", {"outputs_dir": outputs_dir, "run_ids": list(run_ids),
                                         "run_dirs": run_dirs or {}, "submission_id": submission_id, "slots": slots})
    gpus = [g for g in answer.get("gpus") or [] if isinstance(g, dict)] if isinstance(answer.get("gpus"), list) else []
    capacity = _count(answer.get("capacity"), 1)
    queued = [q for q in answer.get("queued") or [] if isinstance(q, dict) and isinstance(q.get("run_id"), str)
              and RUN_ID.match(q["run_id"])] if isinstance(answer.get("queued"), list) else []
    return {"ok": True, "host": target.profile.name, "outputs_dir": outputs_dir, "gpus": gpus,
            "capacity": capacity, "units_in_use": min(capacity, _count(answer.get("units_in_use"), 0)),
            "queued": queued, "runs": answer.get("runs") or [],
            "supervisor_running": answer.get("supervisor_running") is True,
            "manifest": answer.get("manifest") if isinstance(answer.get("manifest"), dict) else None}


def _count(value, default: int) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100_000
    return value if ok else default


def free_units(probed: dict) -> int:
    """Units a new run could start on now: not in use by a run, and, on a GPU, not holding memory."""
    left = probed["capacity"] - probed["units_in_use"]
    if probed["gpus"]:
        left = min(left, sum(gpu_is_free(g) for g in probed["gpus"]))
    return max(0, left)


def placement_pod(name: str, probed: dict, queued=None, slots: Optional[int] = None) -> dict:
    """A probed pod as operations/placement sees one (GPUs, else CPU slots)."""
    pod = {"name": name, "gpu_count": len(probed["gpus"]), "free_gpus": free_units(probed),
           "slots": probed["capacity"] if not probed["gpus"] else (slots or 1), "free_slots": free_units(probed)}
    if queued is not None:
        pod["queued"] = queued
    return pod


def withdraw_runs(target, *, outputs_dir: str, submission_id: str, run_ids: list, run_dirs=None) -> list:
    """Take these runs off the pod's queue if they have not started (one round trip, under its
    queue lock); the run ids withdrawn (a run the supervisor claimed first stays, and runs there)."""
    from .operations.runs import call_tool

    answer = call_tool(target, "withdraw", {"outputs_dir": outputs_dir, "submission_id": submission_id,
                                            "run_ids": list(run_ids), "run_dirs": run_dirs or {}})
    asked = set(run_ids)
    withdrawn = answer.get("withdrawn") if isinstance(answer.get("withdrawn"), list) else []
    return [r for r in withdrawn if r in asked]  # a pod can only give back what it was asked for


# ---------------------------------------------------------------- steering a fleet submission


LOST_AFTER_S = 600.0  # a pod unreachable this long has lost its runs (runs.wait --lost-after)
STEER_INTERVAL_S = 1.0  # between looks at the fleet while waiting (an idle GPU waits at most this long)


class _RunSpecs:
    """The runs of a fleet submission, to queue on a pod other than the one first given them:
    from the config again (its secrets, from this laptop's environment), else the manifest's
    copy when it holds no secret (which it keeps masked)."""

    def __init__(self, manifest: dict, project_dir):
        self.manifest, self.project_dir = manifest, project_dir
        self.loaded: dict = {}

    def submission(self, target, run_ids: list):
        """The submission of these runs for this pod (each pod's profile fills its own defaults),
        and the run ids that cannot be queued again (their secret is not in the config any more)."""
        from .operations.run_config import load_submission
        from .secrets import MASK

        name = target.profile.name
        if name not in self.loaded:
            try:
                self.loaded[name] = load_submission(
                    self.manifest.get("config"), profile=target.profile, remote_repo=self.manifest.get("remote_repo"),
                    outputs_dir=self.manifest["outputs_dir"], tmux_session=self.manifest.get("tmux_session"),
                    project_dir=self.project_dir)
            except (OpsError, TypeError):
                self.loaded[name] = None
        loaded = self.loaded[name]
        fresh = {run.run_id: run for run in (loaded.runs if loaded else ())}
        shown = {r["run_id"]: r for r in self.manifest.get("runs") or [] if isinstance(r, dict)}
        runs, missing = [], []
        for run_id in run_ids:
            if run_id in fresh:
                runs.append(fresh[run_id])
            elif run_id in shown and MASK not in (shown[run_id].get("env") or {}).values():
                runs.append(_ShownRun(shown[run_id]))
            else:
                missing.append(run_id)
        from .operations.run_config import Submission

        base = loaded or Submission(remote_repo=self.manifest.get("remote_repo"),
                                    outputs_dir=self.manifest["outputs_dir"],
                                    tmux_session=self.manifest.get("tmux_session"), runs=())
        return replace(base, runs=tuple(runs)), missing


@dataclass(frozen=True)
class _ShownRun:
    """A run as the manifest keeps it (no secret in it), for the pod's submit request."""

    spec: dict

    @property
    def run_id(self) -> str:
        return self.spec["run_id"]

    def to_dict(self) -> dict:
        return {k: v for k, v in self.spec.items() if k not in ("host", "host_id")}

    def shown(self) -> dict:
        return self.to_dict()


class FleetSteer:
    """One fleet submission kept going from the laptop (docs/ARCHITECTURE.md, "Fleets"): each
    look probes every pod at once (one round trip each, over its one connection), records what
    the pods say in the Ledger, places again the runs of a pod that is lost, queues again a run
    its pod does not have (a move or a placement cut short by a crash), and moves queued runs
    from pods with a backlog to pods with idle units (withdrawn under the source's queue lock
    first, recorded, then queued on the target: never on two pods at once)."""

    def __init__(self, targets: list, manifest: dict, project_dir, *, lost_after_s: float = LOST_AFTER_S,
                 rebalance: bool = True, slots: Optional[int] = None, clock=time.monotonic):
        self.targets = {records.host_fields(t.profile)["host_id"]: t for t in targets}
        self.names = {hid: t.profile.name for hid, t in self.targets.items()}
        self.manifest, self.project_dir = manifest, project_dir
        self.submission_id = manifest["submission_id"]
        self.outputs_dir = manifest["outputs_dir"]
        self.ledger = records.Ledger(project_dir, self.submission_id)
        self.lost_after_s, self.rebalance, self.slots, self.clock = lost_after_s, rebalance, slots, clock
        self.specs = _RunSpecs(manifest, project_dir)
        self.unreachable_since: dict = {}
        self.probes: dict = {}  # host_id -> its latest probe (or its error)
        self.reports: dict = {}  # run_id -> the pod's report of its current attempt
        self.moves: list = []
        self.replaced: list = []
        self.notes: list = []
        self.dry_run: Optional[dict] = None  # what a dry run would have sent, once it stopped

    # -- one look

    def look(self) -> None:
        """Probe, record, recover, repair and rebalance once (a dry run stops at the probe)."""
        self._probe_holders()
        if any(p.get("dry_run") for p in self.probes.values()):
            self.dry_run = fleet_document(FleetResult([{**p, "pod": self.names[h]} for h, p in self.probes.items()]))
            return
        self._record_states()
        self._recover_lost()
        self._repair_missing()
        if self.rebalance:
            self._rebalance()
        self._save_manifest()

    def done(self) -> bool:
        """Every run's current attempt over (or on a lost pod, where no pod left could take it)."""
        return all(current["state"] in records.FINISHED_STATES or current["host_id"] in self.ledger.lost_pods
                   for current in map(self.ledger.current, self.ledger.runs))

    def _asked_of(self, host_id: str) -> list:
        return [r for r, attempts in self.ledger.runs.items() if any(a["host_id"] == host_id for a in attempts)]

    def _probe(self, host_ids: list) -> None:
        """Probe these pods at once (one round trip each): each about the runs it ever held here."""
        run_dirs = {r["run_id"]: r["run_dir"] for r in self.manifest.get("runs") or []
                    if isinstance(r, dict) and isinstance(r.get("run_dir"), str)}
        by_name = {t.profile.name: hid for hid, t in self.targets.items()}

        def one(target):
            asked = self._asked_of(by_name[target.profile.name])
            return probe_pod(target, outputs_dir=self.outputs_dir, run_ids=asked,
                             run_dirs={r: run_dirs[r] for r in asked if r in run_dirs},
                             submission_id=self.submission_id, slots=self.slots)

        result = fan_out_targets([self.targets[hid] for hid in host_ids], one)
        now = self.clock()
        for hid, probed in zip(host_ids, result.pods):
            self.probes[hid] = probed
            if answered(probed):
                self.unreachable_since.pop(hid, None)
            else:
                self.unreachable_since.setdefault(hid, now)

    def _probe_holders(self) -> None:
        """Each look starts with the pods that hold (or held) runs of the submission; a pod given
        none is asked only when there is something to give it (_probe_the_others)."""
        self.probes = {}
        self._probe([hid for hid in self.targets if self._asked_of(hid) or hid in self.unreachable_since])

    def _probe_the_others(self) -> None:
        unprobed = [hid for hid in self.targets if hid not in self.probes]
        if unprobed:
            self._probe(unprobed)

    def _answering(self) -> list:
        return [hid for hid in self.targets if answered(self.probes.get(hid) or {})]

    def _record_states(self) -> None:
        changes = []
        for hid in self._answering():
            for report in self.probes[hid]["runs"]:
                run_id, state = report["run_id"], report.get("state")
                attempt = self.ledger.attempt_on(run_id, hid)
                if attempt is None or state in (None, "missing", "unknown"):
                    continue
                if attempt.get("state") != state:
                    changes.append((run_id, hid, state))
                if (self.ledger.current(run_id) or {}).get("host_id") == hid:
                    self.reports[run_id] = {**report, "pod": self.names[hid]}
        self.ledger.record_states(changes)

    def _is_lost(self, hid: str) -> bool:
        since = self.unreachable_since.get(hid)
        if since is not None:
            return self.clock() - since >= self.lost_after_s
        probed = self.probes.get(hid) or {}
        # Its supervisor gone and runs of ours `lost` on it: nobody there will run them.
        return not probed.get("supervisor_running") and any(
            r.get("state") == "lost" and (self.ledger.current(r["run_id"]) or {}).get("host_id") == hid
            for r in probed.get("runs") or [])

    def _recover_lost(self) -> None:
        """A pod lost: its unfinished runs are new attempts on the pods that answer (placed as a
        submission places runs); a lost pod that answers again has its queued runs withdrawn,
        so none of them runs a second time there."""
        for hid in list(self.targets):
            if hid in self.ledger.lost_pods:
                if hid in self._answering():
                    self._withdraw_returned(hid)
                continue
            if not self._is_lost(hid):
                continue
            self._probe_the_others()  # where its runs can go
            # Unfinished, or `lost` there (its supervisor died): each is placed again.
            lost_there = [r for r in self.ledger.runs_on(hid) if self.ledger.current(r)["state"] == "lost"]
            orphans = self.ledger.mark_lost(hid) + lost_there
            self.notes.append(f"{self.names[hid]} lost: {len(orphans)} unfinished run(s) placed again")
            self._place_again(orphans, hid)

    def _withdraw_returned(self, hid: str) -> None:
        probed = self.probes[hid]
        moved = [r["run_id"] for r in probed["queued"] if r.get("submission_id") == self.submission_id
                 and (self.ledger.current(r["run_id"]) or {}).get("host_id") != hid]
        if moved:
            withdraw_runs(self.targets[hid], outputs_dir=self.outputs_dir, submission_id=self.submission_id,
                          run_ids=moved)

    def _live_pods(self) -> list:
        return [hid for hid in self._answering() if hid not in self.ledger.lost_pods]

    def _place_again(self, run_ids: list, lost_hid: str) -> None:
        from .operations.placement import place

        pods = [placement_pod(hid, self.probes[hid], slots=self.slots) for hid in self._live_pods()]
        shown = {r["run_id"]: r for r in self.manifest.get("runs") or [] if isinstance(r, dict)}
        runs = [{"run_id": r, "gpus": shown.get(r, {}).get("gpus"), "expected_s": shown.get(r, {}).get("timeout")}
                for r in run_ids]
        if not pods or not runs:
            return
        try:
            placed = place(runs, pods)
        except ConfigError as exc:  # a run that fits no pod left: it stays lost, and says why
            self.notes.append(str(exc))
            return
        self.ledger.place_all((run_id, hid, self.names[hid]) for hid, ids in placed.items() for run_id in ids)
        self.replaced += [{"run_id": run_id, "from": self.names[lost_hid], "to": self.names[hid]}
                          for hid, ids in placed.items() for run_id in ids]
        self._queue_on({hid: ids for hid, ids in placed.items() if ids})

    def _repair_missing(self) -> None:
        """A run the ledger puts on a pod that answers without it (a crash after the ledger's
        move or placement, before the pod's submit) is queued there: the ledger is what holds."""
        missing: dict = {}
        for hid in self._live_pods():
            for report in self.probes[hid]["runs"]:
                current = self.ledger.current(report["run_id"]) or {}
                if report.get("state") == "missing" and current.get("host_id") == hid and current.get("state") is None:
                    missing.setdefault(hid, []).append(report["run_id"])
        if missing:
            self._queue_on(missing)

    def _rebalance(self) -> None:
        from .operations.placement import rebalance

        if not any(q.get("submission_id") == self.submission_id for hid in self._live_pods()
                   for q in self.probes[hid]["queued"]):
            return  # nothing of ours waits anywhere: the pods without runs are not asked
        self._probe_the_others()
        shown = {r["run_id"]: r for r in self.manifest.get("runs") or [] if isinstance(r, dict)}
        pods = []
        for hid in self._live_pods():
            probed = self.probes[hid]
            ours = [{"run_id": q["run_id"], "gpus": q.get("gpus"), "expected_s": shown.get(q["run_id"], {}).get("timeout")}
                    for q in probed["queued"] if q.get("submission_id") == self.submission_id
                    and (self.ledger.current(q["run_id"]) or {}).get("host_id") == hid]
            pod = placement_pod(hid, probed, queued=ours, slots=self.slots)
            if len(ours) < len(probed["queued"]):  # another submission's runs take what is free there
                pod.update(free_gpus=0, free_slots=0)
            pods.append(pod)
        plan = rebalance(pods)
        if not plan:
            return
        by_source: dict = {}
        for run_id, source, target in plan:
            by_source.setdefault(source, []).append(run_id)
        withdrawn = set()
        sources = [self.targets[hid] for hid in by_source]
        by_name = {t.profile.name: hid for hid, t in self.targets.items()}
        result = fan_out_targets(sources, lambda t: {"ok": True, "withdrawn": withdraw_runs(
            t, outputs_dir=self.outputs_dir, submission_id=self.submission_id, run_ids=by_source[by_name[t.profile.name]])})
        for probed in result.pods:
            withdrawn.update(probed.get("withdrawn") or [])
        moved = [(run_id, source, target) for run_id, source, target in plan if run_id in withdrawn]
        # Recorded before the target's submit: a crash between the two leaves the run on no pod,
        # and the next look queues it where the ledger says (_repair_missing), never on two.
        self.ledger.move_all((run_id, target, self.names[target]) for run_id, _, target in moved)
        self.moves += [{"run_id": run_id, "from": self.names[s], "to": self.names[t]} for run_id, s, t in moved]
        shares: dict = {}
        for run_id, _, target in moved:
            shares.setdefault(target, []).append(run_id)
        self._queue_on(shares)

    def _queue_on(self, shares: dict) -> None:
        """Queue each pod's runs of this submission (one round trip each, pods at once)."""
        from .operations.runs import submit_runs

        by_name = {t.profile.name: hid for hid, t in self.targets.items()}

        def one(target):
            submission, missing = self.specs.submission(target, shares[by_name[target.profile.name]])
            if missing:
                self.notes.append(f"{target.profile.name}: cannot queue {', '.join(missing)}: not in the config "
                                  f"{self.manifest.get('config')} any more (its secrets are kept nowhere else)")
            if not submission.runs:
                return {"ok": True, "queued": []}
            return submit_runs(target, submission, submission_id=self.submission_id, slots=self.slots)

        fan_out_targets([self.targets[hid] for hid in shares], one)

    def _save_manifest(self) -> None:
        """The local manifest names each run's current pod (fetch takes it from there)."""
        changed = False
        for run in self.manifest.get("runs") or []:
            current = self.ledger.current(run.get("run_id")) if isinstance(run, dict) else None
            if current and run.get("host_id") != current["host_id"]:
                run.update(host=current["host"], host_id=current["host_id"])
                changed = True
        if changed:
            records.save_manifest(self.project_dir, self.manifest)

    # -- the answer

    def document(self, outcome: str) -> dict:
        """The fleet's document: each pod's runs (the current attempt of each run, once), the
        moves, the runs placed again, the lost pods."""
        from .operations.runs import count_states, not_ok

        pods = []
        for hid, target in self.targets.items():
            probed = self.probes.get(hid)
            mine = [self.reports[r] for r in self.ledger.runs_on(hid) if r in self.reports]
            if probed is None:  # given no run, and nothing to give it: not asked
                pods.append({"pod": target.profile.name, "ok": True, "host": target.profile.name,
                             "submission_id": self.submission_id, "outputs_dir": self.outputs_dir, "runs": [],
                             "counts": {}, "note": f"no run of fleet submission {self.submission_id} is here"})
            elif hid in self.ledger.lost_pods and not self.ledger.runs_on(hid):
                pods.append({"pod": target.profile.name, "ok": True, "lost": True, "host": target.profile.name,
                             "submission_id": self.submission_id, "outputs_dir": self.outputs_dir, "runs": [],
                             "counts": {}, "note": "lost: its runs were placed on the other pods"})
            elif not answered(probed):
                pods.append({**probed, "pod": target.profile.name})
            else:
                runs = [{k: v for k, v in r.items() if k != "pod"} for r in mine]
                pods.append({"pod": target.profile.name, "ok": not any(not_ok(r["state"]) for r in runs),
                             "host": target.profile.name, "submission_id": self.submission_id,
                             "outputs_dir": self.outputs_dir, "runs": runs, "counts": count_states(runs),
                             "outcome": outcome})
        document = fleet_document(FleetResult(pods))
        document.update(submission_id=self.submission_id, outcome=outcome, ledger=str(self.ledger.path),
                        moves=self.moves, replaced=self.replaced,
                        lost_pods=sorted(self.names[h] for h in self.ledger.lost_pods if h in self.names),
                        notes=self.notes)
        if outcome == "timeout":
            document["ok"] = False
            document["exit_code"] = max(document["exit_code"], 1)
            document["error"] = "; ".join(filter(None, (document.get("error"), "runs still going at the timeout")))
        return document


def steer(targets: list, manifest: dict, project_dir, *, timeout_s: Optional[float] = None, once: bool = False,
          interval_s: float = STEER_INTERVAL_S, on_look: Optional[Callable] = None, **options) -> dict:
    """runs.wait (and, once, runs.balance) over a fleet submission: FleetSteer's looks until
    every run's current attempt is over (or the timeout); the fleet's document."""
    steering = FleetSteer(targets, manifest, project_dir, **options)
    started = time.monotonic()
    while True:
        steering.look()
        if steering.dry_run is not None:
            return steering.dry_run
        if on_look is not None:
            on_look(steering)
        if once:
            return steering.document("balanced")
        if steering.done():
            return steering.document("done")
        if timeout_s is not None and time.monotonic() - started >= timeout_s:
            return steering.document("timeout")
        time.sleep(interval_s)


def rebuild_ledger(targets: list, manifest: dict, project_dir) -> dict:
    """The Ledger of a fleet submission again from the pods' own manifests of it (one round
    trip each, pods at once): what each pod holds, in the order each was sent its runs."""
    submission_id = manifest["submission_id"]
    ids = [r["run_id"] for r in manifest.get("runs") or [] if isinstance(r, dict) and isinstance(r.get("run_id"), str)]
    result = fan_out_targets(targets, lambda t: probe_pod(t, outputs_dir=manifest["outputs_dir"], run_ids=ids,
                                                          submission_id=submission_id))
    if any(p.get("dry_run") for p in result.pods):
        return fleet_document(result)  # a dry run writes nothing
    items = []
    for target, probed in zip(targets, result.pods):
        if probed.get("manifest"):
            fields = records.host_fields(target.profile)
            items.append({**fields, "manifest": probed["manifest"],
                          "states": {r["run_id"]: r["state"] for r in probed["runs"] if r.get("state") != "missing"}})
    ledger = records.Ledger(project_dir, submission_id).rebuild(items)
    document = fleet_document(FleetResult([{k: v for k, v in p.items() if k != "manifest"} for p in result.pods]))
    document.update(submission_id=submission_id, ledger=str(ledger.path), rebuilt=ledger.as_dict(),
                    pods_read=[item["host"] for item in items])
    return document
