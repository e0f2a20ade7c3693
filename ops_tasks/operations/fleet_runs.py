"""A run submission over a fleet (docs/ARCHITECTURE.md, "Fleets"): spreading one submission over
the pods, the one-round-trip probe of a pod, withdrawing queued runs, and keeping a fleet
submission going (FleetSteer: lost pods, repair, rebalancing) with its Ledger.

Operations like the others: they take targets and return dicts, and reach the pods through the
one fan-out of ops_tasks/fleet.py (a layer below; it imports no operation).
"""

import functools
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

from .. import records
from ..errors import ConfigError, OpsError
from ..fleet import FleetResult, answered, fan_out_targets, fleet_document, gpu_is_free
from ..names import RUN_ID


# ---------------------------------------------------------------- one submission over a fleet


def submit_to_fleet(targets: list, submissions: dict, *, submission_id: str, project_dir, config: str,
                    force: bool = False, retry_failed: bool = False, slots: Optional[int] = None,
                    fail_fast: bool = False, ids_at: Optional[float] = None) -> dict:
    """One submission spread over the pods (docs/ARCHITECTURE.md, "Fleets"), in two fan-outs
    whatever the number of pods and runs: each pod is probed (its GPUs, units in use and what it
    has of these run ids: one round trip, probe_pod), the runs are placed
    (operations/placement.place: a run a pod has stays there; one that succeeded on any pod is not
    sent again unless force), then each pod gets its share under the one submission id (one
    round trip; a pod with no share is not contacted again). The Ledger records which run went
    to which pod, and the local manifest names each run's pod.
    submissions: pod name -> that pod's Submission (each pod's profile fills its own defaults).
    ids_at: the time the config's generated run ids were stamped with (load_submission's now),
    kept in the manifest so that a run placed again is loaded under the same id."""
    probed = fan_out_targets(targets, functools.partial(_probe, submissions, slots))
    if any(p.get("dry_run") for p in probed.pods):
        return fleet_document(probed)
    has = {p["pod"]: {r["run_id"]: r["state"] for r in p["runs"] if r.get("state") not in ("missing", None)}
           for p in probed.pods if p.get("ok") is True}
    succeeded_on = {} if force else {run_id: pod for pod, states in has.items() for run_id, state in states.items()
                                     if state == "succeeded"}
    # Each pod's record fields once: a host's identity reads its ssh config (milliseconds, per run).
    fields = {t.profile.name: records.host_fields(t.profile) for t in targets}
    shares = _placement(probed.pods, has, next(iter(submissions.values())).runs, succeeded_on, slots,
                        order={name: f["host_id"] for name, f in fields.items()})
    reachable = [t for t in targets if t.profile.name in has]
    send = functools.partial(_send_share, submissions, shares, submission_id=submission_id, force=force,
                             retry_failed=retry_failed, slots=slots, fail_fast=fail_fast)
    by_pod = {p["pod"]: p for p in probed.pods if p.get("ok") is not True}
    by_pod.update((p["pod"], p) for p in fan_out_targets(reachable, send).pods)
    held_by = {run_id: fields[name] for name in has for run_id in by_pod[name].get("queued") or []}
    ledger = records.Ledger(project_dir, submission_id)
    ledger.place_all((run_id, pod["host_id"], pod["host"]) for run_id, pod in held_by.items())
    queued = sorted(held_by)
    held_by.update((run_id, fields[pod]) for run_id, pod in succeeded_on.items())
    document = fleet_document(FleetResult([by_pod[t.profile.name] for t in targets]))
    document.update(submission_id=submission_id, ledger=str(ledger.path), already_succeeded=succeeded_on,
                    placed={name: sorted(ids) for name, ids in shares.items()},
                    manifest=str(_save_fleet_manifest(project_dir, submissions, submission_id, fields, held_by,
                                                      queued=queued, config=config, ids_at=ids_at,
                                                      pricing={host_id: pod for p in by_pod.values()
                                                               for host_id, pod in (p.get("pricing") or {}).items()})))
    return document


def _probe(submissions: dict, slots: Optional[int], target) -> dict:
    """A pod's GPUs, its units in use and its runs of these ids (missing where it has none): one
    round trip."""
    submission = submissions[target.profile.name]
    return probe_pod(target, outputs_dir=submission.outputs_dir, run_ids=[run.run_id for run in submission.runs],
                     run_dirs={run.run_id: run.run_dir for run in submission.runs}, slots=slots)


def _placement(probed: list, has: dict, runs: tuple, succeeded_on: dict, slots: Optional[int],
               order: Optional[dict] = None) -> dict:
    """{pod: set of run ids} for the runs not already succeeded somewhere, over the pods that answered.
    The pods are placed on in the order of their host identities (`order`), not as the fleet was
    spelt: two checkouts naming one fleet `-H a,b` and `-H b,a` place each run on the same pod, whose
    queue then keeps it once."""
    from .placement import place

    to_place = [run for run in runs if run.run_id not in succeeded_on]
    wanted = {run.run_id for run in to_place}
    answered = sorted((p for p in probed if p["pod"] in has), key=lambda p: (order or {}).get(p["pod"], p["pod"]))
    pods = [dict(placement_pod(p["pod"], p, slots=slots), run_ids=[r for r in has[p["pod"]] if r in wanted])
            for p in answered]
    if not pods or not to_place:
        return {}
    placed = place([{"run_id": r.run_id, "gpus": r.gpus, "expected_s": r.timeout} for r in to_place], pods)
    return {name: set(ids) for name, ids in placed.items()}


def _send_share(submissions: dict, shares: dict, target, *, submission_id: str, **flags) -> dict:
    """Queue this pod's share of the runs (one round trip); a pod with none is not contacted."""
    from .runs import submit_runs

    name = target.profile.name
    submission = submissions[name]
    share = tuple(run for run in submission.runs if run.run_id in shares.get(name, ()))
    if not share:
        return {"ok": True, "host": name, "submission_id": submission_id, "queued": [], "skipped": [],
                "refused": [], "share": []}
    report = submit_runs(target, replace(submission, runs=share), submission_id=submission_id, **flags)
    return {**report, "share": [run.run_id for run in share]}


def _save_fleet_manifest(project_dir, submissions: dict, submission_id: str, fields: dict, held_by: dict, *,
                         queued: list, config: str, pricing: Optional[dict] = None, ids_at: Optional[float] = None):
    """The local manifest of a fleet submission: every pod (`host_ids`, so each pod's later tasks
    find it), each run with the pod that holds it (fetch takes it from there)."""
    from .runs import manifest_of

    manifest = manifest_of(next(iter(submissions.values())), submission_id, ",".join(fields))
    manifest["runs"] = [dict(run, **held_by[run["run_id"]]) if run["run_id"] in held_by else run
                        for run in manifest["runs"]]
    manifest.update(fleet=True, hosts=list(fields), host_ids=[pod["host_id"] for pod in fields.values()],
                    config=config, queued=queued, pricing=pricing or None,
                    submitted_at=time.time(), **({"ids_at": ids_at} if ids_at is not None else {}))
    return records.save_manifest(project_dir, manifest)


# ---------------------------------------------------------------- one round trip to see a pod


def probe_pod(target, *, outputs_dir: str, run_ids=(), run_dirs=None, submission_id=None,
              slots: Optional[int] = None) -> dict:
    """A pod's GPUs, its units (GPUs, else CPU slots) and those in use, its queued runs in start
    order, the states of run_ids and its manifest of submission_id: one round trip (the pod's
    run tool, `probe`). What the pod sends is checked: a queue entry or GPU of the wrong shape is
    left out, counts are bounded."""
    from .runs import call_tool

    answer = call_tool(target, "probe", {"outputs_dir": outputs_dir, "run_ids": list(run_ids),
                                         "run_dirs": run_dirs or {}, "submission_id": submission_id, "slots": slots})
    pod_now, received = answer.get("now"), time.time()
    gpus = [g for g in answer.get("gpus") or [] if isinstance(g, dict)] if isinstance(answer.get("gpus"), list) else []
    capacity = _count(answer.get("capacity"), 1)
    cpu_slots = max(1, _count(answer.get("cpu_slots"), 1))
    queued = [q for q in answer.get("queued") or [] if isinstance(q, dict) and isinstance(q.get("run_id"), str)
              and RUN_ID.match(q["run_id"])] if isinstance(answer.get("queued"), list) else []
    return {"ok": True, "host": target.profile.name, "outputs_dir": outputs_dir, "gpus": gpus,
            "capacity": capacity, "units_in_use": min(capacity, _count(answer.get("units_in_use"), 0)),
            # runs without GPUs (gpus: 0, or any on a pod without GPUs): its CPU slots and those in use
            "cpu_slots": cpu_slots, "cpu_slots_in_use": min(cpu_slots, _count(answer.get("cpu_slots_in_use"), 0)),
            "queued": queued, "runs": answer.get("runs") or [],
            "supervisor_running": answer.get("supervisor_running") is True,
            "manifest": answer.get("manifest") if isinstance(answer.get("manifest"), dict) else None,
            # the pod's clock ahead of this one (runs_status's clock_offset): for idle time
            "clock_offset": pod_now - received if isinstance(pod_now, (int, float))
            and not isinstance(pod_now, bool) else None}


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
    """A probed pod as operations/placement sees one: its GPUs and its CPU slots (--slots, when
    given, is what the pod takes from this submission on)."""
    cpu_slots = slots or probed.get("cpu_slots") or 1
    pod = {"name": name, "gpu_count": len(probed["gpus"]), "free_gpus": free_units(probed) if probed["gpus"] else 0,
           "slots": cpu_slots, "free_slots": max(0, cpu_slots - (probed.get("cpu_slots_in_use") or 0))}
    if queued is not None:
        pod["queued"] = queued
    return pod


def withdraw_runs(target, *, outputs_dir: str, submission_id: str, run_ids: list, run_dirs=None) -> list:
    """Take these runs off the pod's queue if they have not started (one round trip, under its
    queue lock); the run ids withdrawn (a run the supervisor claimed first stays, and runs there)."""
    from .runs import call_tool

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
        from .run_config import load_submission
        from ..secrets import MASK

        name = target.profile.name
        if name not in self.loaded:
            try:
                self.loaded[name] = load_submission(
                    self.manifest.get("config"), profile=target.profile, remote_repo=self.manifest.get("remote_repo"),
                    outputs_dir=self.manifest["outputs_dir"], tmux_session=self.manifest.get("tmux_session"),
                    project_dir=self.project_dir, now=self.manifest.get("ids_at"))
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
        from .run_config import Submission

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
    first, recorded, then queued on the target: never on two pods at once).

    For an unattended campaign (operations/campaign.py), two options: `resume` takes up in place
    the runs of a pod that answers with no supervisor (rebooted: runs.resume's operation, before
    it could count as lost); `keep_alone` never marks lost a pod whose runs no other pod could
    take (`stranded` says why), so its runs stay its own for when it answers again;
    `only_there(run_id, host_id)` says a run that ended on a pod has its results there alone (not
    fetched yet): when that pod is lost, such a run (unless cancelled) is placed again too."""

    def __init__(self, targets: list, manifest: dict, project_dir, *, lost_after_s: float = LOST_AFTER_S,
                 rebalance: bool = True, slots: Optional[int] = None, clock=time.monotonic,
                 resume: bool = False, keep_alone: bool = False, only_there: Optional[Callable] = None):
        self.targets = {records.host_fields(t.profile)["host_id"]: t for t in targets}
        self.names = {hid: t.profile.name for hid, t in self.targets.items()}
        self.manifest, self.project_dir = manifest, project_dir
        self.submission_id = manifest["submission_id"]
        self.outputs_dir = manifest["outputs_dir"]
        self.ledger = records.Ledger(project_dir, self.submission_id)
        self.lost_after_s, self.rebalance, self.slots, self.clock = lost_after_s, rebalance, slots, clock
        self.resume, self.keep_alone, self.only_there = resume, keep_alone, only_there
        self.resumed: list = []  # [{pod, runs, supervisor}]: what `resume` took up
        self.stranded: dict = {}  # pod name -> why it would be lost, with no pod to take its runs (keep_alone)
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
        if self.resume:
            self._resume_unattended()
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
        self.stranded = {}
        for hid in list(self.targets):
            if hid in self.ledger.lost_pods:
                if hid in self._answering():
                    self._withdraw_returned(hid)
                continue
            if not self._is_lost(hid):
                continue
            self._probe_the_others()  # where its runs can go
            if self.keep_alone and not [h for h in self._live_pods() if h != hid]:
                self.stranded[self.names[hid]] = self._why_lost(hid)
                continue
            # Unfinished, or `lost` there (its supervisor died): each is placed again.
            lost_there = [r for r in self.ledger.runs_on(hid) if self.ledger.current(r)["state"] == "lost"]
            orphans = self.ledger.mark_lost(hid) + lost_there
            if self.only_there is not None:  # ended there, its results not fetched: gone with the pod
                orphans += [r for r in self.ledger.runs_on(hid) if r not in orphans and self.ledger.current(r)[
                    "state"] != "cancelled" and self.only_there(r, hid)]
            self.notes.append(f"{self.names[hid]} lost: {len(orphans)} run(s) placed again")
            self._place_again(orphans, hid)

    def _why_lost(self, hid: str) -> str:
        since = self.unreachable_since.get(hid)
        if since is not None:
            return f"no answer for {self.clock() - since:.0f} s"
        return "no supervisor, and its runs lost"

    def _resume_unattended(self) -> None:
        """A pod that answers with no supervisor while runs of ours wait or were lost there (its tmux
        server and supervisor gone: a reboot) has them queued again and a supervisor started
        (runs.resume's operation, on our runs only), then is looked at again."""
        from ..defaults import RUNS_SESSION
        from .runs import resume_runs

        left = {}
        for hid in self._live_pods():
            probed = self.probes[hid]
            ours = [r["run_id"] for r in probed["runs"] if r.get("state") in ("queued", "lost")
                    and (self.ledger.current(r["run_id"]) or {}).get("host_id") == hid]
            if ours and not probed.get("supervisor_running"):
                left[hid] = ours
        if not left:
            return
        run_dirs = {r["run_id"]: r["run_dir"] for r in self.manifest.get("runs") or []
                    if isinstance(r, dict) and isinstance(r.get("run_dir"), str)}
        by_name = {t.profile.name: hid for hid, t in self.targets.items()}

        def one(target):
            ids = left[by_name[target.profile.name]]
            return resume_runs(target, outputs_dir=self.outputs_dir, slots=self.slots,
                               tmux_session=self.manifest.get("tmux_session") or RUNS_SESSION,
                               submission_id=self.submission_id, run_ids=ids,
                               run_dirs={r: run_dirs[r] for r in ids if r in run_dirs})

        for answer in fan_out_targets([self.targets[hid] for hid in left], one).pods:
            if answer.get("ok") is True:
                self.resumed.append({"pod": answer["pod"], "runs": answer["resumed"],
                                     "supervisor": answer.get("supervisor")})
                self.notes.append(f"{answer['pod']}: no supervisor: resumed {len(answer['resumed'])} lost run(s)"
                                  + (f" ({', '.join(answer['resumed'])})" if answer["resumed"] else "")
                                  + f"; supervisor {answer.get('supervisor') or 'not started'}")
            else:
                self.notes.append(f"{answer['pod']}: no supervisor, and resuming failed: {answer.get('error')}")
        self._probe(list(left))
        self._record_states()

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
        from .placement import place

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
        from .placement import rebalance

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
        from .runs import submit_runs

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
        from .runs import count_states, not_ok

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
                             "outcome": outcome, "clock_offset": probed.get("clock_offset")})
        document = fleet_document(FleetResult(pods))
        document.update(submission_id=self.submission_id, outcome=outcome, ledger=str(self.ledger.path),
                        moves=self.moves, replaced=self.replaced, resumed=self.resumed, stranded=self.stranded,
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
