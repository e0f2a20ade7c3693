"""Campaigns: one command from a run config to released pods, resumable (docs/ARCHITECTURE.md,
"Campaigns").

A campaign is the phases below, in order. Each is a small object: `done(state)` says whether it
needs to run again (from what the campaign recorded), `run(state)` does it and returns its
evidence (a dict with `ok`). The campaign records each phase's start, end, outcome and evidence
under artifacts/campaigns/<id>/ before and after it runs, so a campaign killed anywhere (the
laptop asleep, the link gone) resumes at the first phase not done when the same command runs
again; what runs on the pods goes on meanwhile. The phases call the same operations the tasks
do, over one target per pod.

Outcomes: `ok`; `skipped` (nothing to do: no servers asked for, a local host); `not_ok` from a
gate (wait with failed runs, validate): the phases after it still run (fetch, report), but the
pods are kept; `failed`: the campaign stops there (the servers it started are stopped) and keeps
its pods; `interrupted` / a phase left `running`: not done, run again on resume.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .. import defaults, records, ssh_config
from ..errors import ConfigError, Interrupted, OpsError
from ..run_states import COUNTS_AS_FAILURE
from ..settings import host_identity

DONE = ("ok", "skipped", "not_ok")
TEARDOWN_POLICIES = ("release", "keep")
_ID_STEM = re.compile(r"[^A-Za-z0-9_-]+")


# ---------------------------------------------------------------- what a campaign is


@dataclass(frozen=True)
class CampaignSpec:
    """A campaign's checked flags and config: everything decided before any contact."""

    campaign_id: str
    config: str  # the run config, as given
    config_hash: str
    hosts: tuple = ()  # existing hosts (-H); empty when the campaign rents its pods
    pods: int = 0  # pods to rent on Lium
    gpu: Optional[str] = None
    count: Optional[int] = None
    country: Optional[str] = None
    volume_name: Optional[str] = None
    public_key: Optional[str] = None
    private_key: Optional[str] = None
    teardown: str = "keep"
    ready_timeout_s: float = defaults.CAMPAIGN_READY_TIMEOUT_S
    rent_attempts: int = defaults.CAMPAIGN_RENT_ATTEMPTS
    wait_timeout_s: float = defaults.CAMPAIGN_WAIT_TIMEOUT_S
    vllm_timeout_s: float = defaults.VLLM_START_TIMEOUT_S
    idle_release_s: Optional[float] = None
    retry_failed: bool = False  # --retry-failed: the failed runs sent again, the phases after submit run again
    servers: tuple = ()  # ServerSpec, started on every pod
    sync: Optional[dict] = None  # pod_sync's arguments (ref, branch, repo_url, install)
    group_by: Optional[str] = None  # the report's

    @property
    def rents(self) -> bool:
        return self.pods > 0


@dataclass
class Env:
    """What the phases reach outside the pods, given by the task: targets by host name, the
    run config loaded against a pod's profile, the Lium client (opened on first use), a log."""

    project_dir: Path
    target: Callable  # host name -> Target
    submission: Callable  # (Profile, now=None) -> Submission; now stamps generated run ids
    lium: Callable = None  # () -> the SDK's client
    log: Callable = lambda line: None
    _client: object = field(default=None, repr=False)

    def client(self):
        if self._client is None:
            self._client = self.lium()
        return self._client


def campaign_id_of(config_path, content: bytes, where: str) -> str:
    """The campaign a command means, with no id typed: its config (path and content) and where it
    runs (the hosts, or what it rents). The same command finds the same campaign; an edited
    config is a new one."""
    path = str(Path(config_path).expanduser().resolve())
    digest = hashlib.sha256(json.dumps([path, hashlib.sha256(content).hexdigest(), where]).encode()).hexdigest()
    stem = _ID_STEM.sub("-", Path(config_path).stem).strip("-_")[:20] or "campaign"
    return f"{stem}-{digest[:10]}"


def config_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


# ---------------------------------------------------------------- the recorded state


class State:
    """The campaign's record (state.json) and what the phases share while they run."""

    def __init__(self, spec: CampaignSpec, env: Env, record: dict):
        self.spec, self.env, self.record = spec, env, record

    @classmethod
    def load(cls, spec: CampaignSpec, env: Env, *, create: bool = True) -> "State":
        record = records.load_campaign_state(env.project_dir, spec.campaign_id)
        if record is None:
            record = {"campaign_id": spec.campaign_id, "config": spec.config, "config_hash": spec.config_hash,
                      "created_at": time.time(), "hosts": list(spec.hosts), "rented": [], "rent_attempts": [],
                      "submission_id": None, "ids_at": None, "phases": {}}
        return cls(spec, env, record)

    def save(self) -> None:
        if self.env.project_dir is not None:
            records.save_campaign_state(self.env.project_dir, self.record)
            records.save_campaign_file(self.env.project_dir, self.spec.campaign_id, "checklist.md", checklist(self))

    def outcome(self, phase: str) -> Optional[str]:
        return (self.record["phases"].get(phase) or {}).get("outcome")

    @property
    def hosts(self) -> list:
        return list(self.record["hosts"])

    def targets(self) -> list:
        return [self.env.target(name) for name in self.hosts]

    def manifest(self) -> dict:
        manifest = records.load_manifest(self.env.project_dir, self.record.get("submission_id") or "")
        if manifest is None:
            raise OpsError(f"campaign {self.spec.campaign_id}: its submission {self.record.get('submission_id')} "
                           f"is not recorded in {records.manifests_dir(self.env.project_dir)}")
        return manifest

    def runs_on(self, target) -> list:
        """[{run_id, run_dir}] of the campaign's runs this pod holds (the submission's manifest says)."""
        here = host_identity(target.profile)
        return [{"run_id": r["run_id"], "run_dir": r["run_dir"]} for r in self.manifest()["runs"]
                if r.get("host_id") == here]

    def run_ids(self) -> list:
        return [r["run_id"] for r in self.manifest()["runs"]]

    def lost_hosts(self) -> list:
        """The pods the wait gave up on, their runs placed on the others (the submission's Ledger
        keeps it): the phases after it leave them be, and say so."""
        submission_id = self.record.get("submission_id")
        if not submission_id or self.env.project_dir is None:
            return []
        lost = records.Ledger(self.env.project_dir, submission_id).lost_pods
        return [h for h in self.hosts if host_identity(self.env.target(h).profile) in lost] if lost else []

    def price_per_hour(self, host: str) -> Optional[float]:
        """Lium's price of a pod the campaign rented, else the host profile's price_per_hour."""
        from .costs import price_of

        rented = next((p for p in self.record["rented"] if p["alias"] == host), None)
        if rented is not None:
            return rented.get("price_per_hour")
        price = price_of(self.env.target(host).profile)  # pod.up's record of a Lium pod, else the profile's
        return price["price_per_hour"] if price else None


# ---------------------------------------------------------------- phases


class Phase(ABC):
    """One step of a campaign. done(state): nothing left to do; run(state): do it, return evidence."""

    name = ""
    title = ""
    gate = False  # a not-ok result is `not_ok` (the phases after it run, the pods are kept), not `failed`

    def done(self, state: State) -> bool:
        return state.outcome(self.name) in DONE

    @abstractmethod
    def run(self, state: State) -> dict:
        """Do the phase; its evidence (a dict with `ok`)."""


def _over_pods(state: State, operation: Callable, deadline_s: Optional[float] = None, skip=()) -> dict:
    """operation(target) on each of the campaign's pods at once (but those in skip):
    {"ok", "pods": {name: result}}."""
    from ..fleet import fan_out_targets

    result = fan_out_targets([t for t in state.targets() if t.profile.name not in skip], operation,
                             deadline_s=deadline_s)
    evidence = {"ok": result.ok, "pods": {p["pod"]: p for p in result.pods}}
    if skip:
        evidence["left_alone"] = {host: "lost during the wait: its runs were placed on the other pods"
                                  for host in skip}
    if not result.ok:
        evidence["error"] = "; ".join(_pod_errors(result.pods))
    return evidence


def _pod_errors(pods: list) -> list:
    """"pod: what is wrong" for each pod not ok, the pod named once (fleet.pod_error)."""
    from ..fleet import pod_error

    return [f"{p['pod']}: {pod_error(p['pod'], p.get('error') or 'not ok')}" for p in pods if p.get("ok") is not True]


class Rent(Phase):
    name, title = "rent", "rent or reuse the pods"

    def run(self, state: State) -> dict:
        spec = state.spec
        if not spec.rents:
            return {"ok": True, "hosts": list(spec.hosts), "rented": [], "note": "existing hosts (-H): nothing rented"}
        for index in range(spec.pods):
            _rent_one(state, index)
        aliases = [p["alias"] for p in state.record["rented"] if not p.get("released")]
        state.record["hosts"] = aliases
        records.save_fleet(state.env.project_dir, spec.campaign_id, aliases)
        return {"ok": True, "hosts": aliases, "rented": state.record["rented"],
                "attempts": state.record["rent_attempts"]}


def _rent_one(state: State, index: int) -> dict:
    """Rent pod <campaign>-<index> (or reuse it: Lium knows it by name), wait until it answers
    SSH within --ready-timeout; a pod that does not is released and another rented, up to
    --rent-attempts, each attempt recorded."""
    from .lium import find_pod, plan_pod, remove_pod, start_pod, wait_ready

    spec, client = state.spec, state.env.client()
    name = f"{spec.campaign_id}-{index}"
    entry = next((p for p in state.record["rented"] if p["name"] == name), None)
    if entry is not None and entry.get("ready") and not entry.get("released"):
        return entry
    reasons = []
    tried = sum(a["pod"] == name for a in state.record["rent_attempts"])
    while tried < spec.rent_attempts:
        tried += 1
        plan = plan_pod(client, name=name, selector=None, listing=None, gpu=spec.gpu, count=spec.count,
                        country=spec.country, volume_name=spec.volume_name, volume_id=None)
        started = start_pod(client, plan, name=name, public_key=spec.public_key, ttl_s=None)
        executor = plan["executor"] or {}
        entry = _record_rented(state, name, started["id"], executor)
        attempt = {"pod": name, "attempt": tried, "id": started["id"], "reused": plan["existing"] is not None,
                   "price_per_hour": executor.get("price_per_hour"), "started_at": time.time()}
        state.env.log(f"campaign: {name}: {'reusing' if attempt['reused'] else 'rented'} pod {started['id']} "
                      f"(attempt {tried} of {spec.rent_attempts}); waiting until it answers SSH")
        deadline = time.monotonic() + spec.ready_timeout_s
        try:
            pod = wait_ready(client, started["id"], name, timeout_s=spec.ready_timeout_s)
            entry.update(price_per_hour=pod.get("price_per_hour") or entry.get("price_per_hour"),
                         gpu_count=pod.get("gpu_count"), gpu_type=pod.get("gpu_type"))
            _write_host_block(spec, name, pod)
            # What Lium said of it (price, GPUs), where operations/costs.py finds a rented pod's price.
            records.save_lium_pod(name, pod, host_identity(state.env.target(name).profile))
            _until_ssh_answers(pod["ssh"], deadline, name, spec.ready_timeout_s)
        except Interrupted:
            raise  # Ctrl-C while waiting: the pod is kept (recorded), not released and replaced
        except OpsError as exc:
            reason = str(exc)
            attempt.update(outcome="released", reason=reason, ended_at=time.time())
            state.record["rent_attempts"].append(attempt)
            found = find_pod(client, name)
            if found is not None:
                remove_pod(client, found)
                records.forget_lium_pod(found.id)
            entry["released"] = True
            state.save()
            state.env.log(f"campaign: {name}: not ready ({reason}); released it")
            reasons.append(reason)
            continue
        attempt.update(outcome="ready", ended_at=time.time())
        state.record["rent_attempts"].append(attempt)
        entry.update(ready=True, released=False, ready_at=time.time())
        state.save()
        return entry
    raise OpsError(f"pod {name}: not ready after {spec.rent_attempts} rent(s) (--rent-attempts): "
                   + ("; ".join(reasons) or "every attempt recorded in the campaign's state"))


def _record_rented(state: State, name: str, pod_id: str, executor: dict) -> dict:
    """The rented pod is recorded before the wait: whatever happens next, the campaign knows
    what bills."""
    entry = next((p for p in state.record["rented"] if p["name"] == name), None)
    if entry is None:
        entry = {"name": name, "alias": name}
        state.record["rented"].append(entry)
    entry.update(id=pod_id, released=False, ready=False, price_per_hour=executor.get("price_per_hour"),
                 gpu_count=executor.get("gpu_count"), gpu_type=executor.get("gpu_type"), rented_at=time.time())
    state.save()
    return entry


def _write_host_block(spec: CampaignSpec, name: str, pod: dict) -> None:
    from .lium import pod_ssh_options

    ssh_config.set_pod_host(ssh_config.default_path(), name, pod_ssh_options(pod, spec.private_key), name,
                            pod["id"])


def _until_ssh_answers(ssh: dict, deadline: float, name: str, timeout_s: float) -> None:
    """Lium says RUNNING before sshd listens: wait (to the ready deadline) until its port accepts."""
    while True:
        try:
            with socket.create_connection((ssh["host"], int(ssh["port"])), timeout=2):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise OpsError(f"pod {name}: SSH at {ssh['host']}:{ssh['port']} did not answer within "
                               f"{timeout_s:.0f}s (--ready-timeout)") from None
            time.sleep(0.5)


class Ready(Phase):
    name, title = "ready", "every pod reachable, volume mounted"

    def run(self, state: State) -> dict:
        from .pod import pod_status

        return _over_pods(state, pod_status)


class Bootstrap(Phase):
    name, title = "bootstrap", "bootstrap the pods from their volume"

    def run(self, state: State) -> dict:
        from .pod import pod_bootstrap

        if all(t.profile.is_local for t in state.targets()):
            return {"ok": True, "skipped": True, "note": "this machine (local): nothing to bootstrap"}
        return _over_pods(state, lambda target: {"ok": True, "skipped": True} if target.profile.is_local
                          else pod_bootstrap(target))


class Sync(Phase):
    name, title = "sync", "the repo at the pinned commit"

    def run(self, state: State) -> dict:
        from .pod import pod_sync

        wanted = state.spec.sync
        if not wanted:
            return {"ok": True, "skipped": True, "note": "the config asks for no sync (campaign.sync)"}

        def sync(target):
            repo = state.env.submission(target.profile).remote_repo
            return pod_sync(target, remote_repo=repo, **wanted)

        return _over_pods(state, sync)


def _on_each_server(state: State, call: Callable, none: str) -> dict:
    """call(target, spec) for each server of the config, on each pod; skipped when there is none."""
    if not state.spec.servers:
        return {"ok": True, "skipped": True, "note": none}

    def every_server(target):
        results = [call(target, spec) for spec in state.spec.servers]
        failed = [r for r in results if not r["ok"]]
        return {"ok": not failed, "servers": results,
                **({"error": "; ".join(r.get("error") or r["session"] for r in failed)} if failed else {})}

    return _over_pods(state, every_server, skip=state.lost_hosts())


class VllmStart(Phase):
    name, title = "vllm_start", "start the vLLM servers the config asks for"

    def run(self, state: State) -> dict:
        from .vllm import vllm_start

        return _on_each_server(state, lambda target, spec: vllm_start(
            target, spec, restart=True, wait=True, timeout_s=state.spec.vllm_timeout_s),
            "the config asks for no servers (campaign.servers)")


class Submit(Phase):
    name, title = "submit", "queue the runs"

    def done(self, state: State) -> bool:
        return super().done(state) and records.load_manifest(state.env.project_dir,
                                                             state.record.get("submission_id") or "") is not None

    def run(self, state: State) -> dict:
        from .fleet_runs import submit_to_fleet
        from .runs import new_submission_id

        if state.record.get("retry"):
            return _send_failed_again(state)
        targets = state.targets()
        # Kept before the runs are sent: a submit cut short is sent again as the same runs, under the
        # same id; run ids the config leaves to be generated (<timestamp>_...) are stamped with ids_at.
        if not state.record.get("submission_id") or state.record.get("ids_at") is None:
            state.record["submission_id"] = state.record.get("submission_id") or new_submission_id()
            state.record["ids_at"] = time.time()
            state.save()
        ids_at = state.record["ids_at"]
        submissions = {t.profile.name: state.env.submission(t.profile, now=ids_at) for t in targets}
        return submit_to_fleet(targets, submissions, submission_id=state.record["submission_id"],
                               project_dir=state.env.project_dir, config=state.spec.config, ids_at=ids_at)


def _send_failed_again(state: State) -> dict:
    """--retry-failed: each run the retry names is queued again on the pod whose attempt failed
    (runs.submit --retry-failed of those runs, under the campaign's submission id), a new attempt
    in the Ledger; the manifest is unchanged. Sent again after a kill: the pod skips what it
    queued already."""
    from dataclasses import replace

    from ..fleet import fan_out_targets
    from .runs import submit_runs

    project, submission_id = state.env.project_dir, state.record["submission_id"]
    ledger = records.Ledger(project, submission_id)
    targets = [t for t in state.targets() if t.profile.name not in state.lost_hosts()]
    names = {host_identity(t.profile): t.profile.name for t in targets}
    wanted: dict = {}
    for run_id in state.record["retry"]["runs"]:
        pod = names.get((ledger.current(run_id) or {}).get("host_id"))
        if pod is not None:
            wanted.setdefault(pod, []).append(run_id)

    def one(target):
        submission = state.env.submission(target.profile, now=state.record.get("ids_at"))
        share = tuple(run for run in submission.runs if run.run_id in wanted[target.profile.name])
        return submit_runs(target, replace(submission, runs=share), submission_id=submission_id, retry_failed=True)

    result = fan_out_targets([t for t in targets if t.profile.name in wanted], one)
    fields = {t.profile.name: records.host_fields(t.profile) for t in targets}
    queued = {p["pod"]: p.get("queued") or [] for p in result.pods}
    ledger.place_all((run_id, fields[pod]["host_id"], fields[pod]["host"]) for pod, ids in queued.items() for run_id in ids)
    placed = {pod: sorted(ids) for pod, ids in wanted.items()}
    missed = sorted(set(state.record["retry"]["runs"]) - {r for ids in wanted.values() for r in ids})
    evidence = {"ok": result.ok and not missed, "submission_id": submission_id, "retried": queued, "placed": placed,
                "pods": {p["pod"]: p for p in result.pods},
                "note": f"sent again {sum(map(len, placed.values()))} failed run(s) (--retry-failed): "
                        + ", ".join(f"{pod}: {', '.join(ids)}" for pod, ids in placed.items())}
    errors = _pod_errors(result.pods)
    errors += [f"{', '.join(missed)}: on no pod of the campaign that answers"] if missed else []
    if errors:
        evidence["error"] = "; ".join(errors)
    return evidence


class Wait(Phase):
    name, title = "wait", "wait until the runs end"
    gate = True

    def run(self, state: State) -> dict:
        """The runs kept going as runs.wait keeps a fleet submission going (fleet_runs.FleetSteer),
        unattended: a pod that answers with no supervisor (rebooted) has its runs resumed there; a
        pod that does not answer is waited for up to --ready-timeout, then its runs are placed on
        the other pods (with those that ended there and are not fetched yet: their results went
        with it), or, with none to take them, the campaign stops here saying so (a rerun waits
        again); every look within --wait-timeout."""
        from .fleet_runs import STEER_INTERVAL_S, FleetSteer

        spec, targets = state.spec, state.targets()
        adopted = _adopt_runs(state, targets)
        fetched = records.fetch_records_dir(state.env.project_dir)

        def only_there(run_id, host_id):  # a run that ended on the pod, not fetched from it: only there
            record = records.load_fetch_record(fetched, run_id)
            return not (isinstance(record, dict) and records.fetched_from(record, host_id))

        steering = FleetSteer(targets, state.manifest(), state.env.project_dir, lost_after_s=spec.ready_timeout_s,
                              resume=True, keep_alone=True, only_there=only_there)
        started, outages, said = time.monotonic(), {}, 0
        while True:
            steering.look()
            for hid, since in steering.unreachable_since.items():
                name = steering.names[hid]
                outages[name] = round(max(outages.get(name, 0.0), time.monotonic() - since), 1)
            for note in steering.notes[said:]:
                state.env.log(f"campaign {spec.campaign_id}: wait: {note}")
            said = len(steering.notes)
            if steering.done():
                outcome = "done"
            elif steering.stranded:
                outcome = "stranded"
            elif time.monotonic() - started >= spec.wait_timeout_s:
                outcome = "timeout"
            else:
                time.sleep(STEER_INTERVAL_S)
                continue
            break
        return _wait_evidence(state, steering, steering.document(outcome), outcome, outages, adopted)


def _adopt_runs(state: State, targets: list) -> list:
    """The campaign's runs its record places on no pod, taken where a pod holds them (its one
    round trip, the probe): a pod had them already (queued or run by a submit of this campaign
    cut short, or by another checkout's), so this submission's own queued none of them. Each
    goes into the submission's Ledger and manifest, and is waited for, fetched and reported here."""
    from ..fleet import answered, fan_out_targets
    from .fleet_runs import probe_pod

    project, manifest = state.env.project_dir, state.manifest()
    ledger = records.Ledger(project, manifest["submission_id"])
    unplaced = {r["run_id"]: r.get("run_dir") for r in manifest["runs"] if r["run_id"] not in ledger.runs}
    if not unplaced:
        return []
    result = fan_out_targets(targets, lambda target: probe_pod(
        target, outputs_dir=manifest["outputs_dir"], run_ids=list(unplaced),
        run_dirs={r: d for r, d in unplaced.items() if isinstance(d, str)}))
    held: dict = {}
    for target, probed in zip(targets, result.pods):
        for run in probed.get("runs") or [] if answered(probed) else []:
            if run.get("state") not in (None, "missing", "unknown") and run["run_id"] in unplaced and (
                    run["run_id"] not in held or run["state"] == "succeeded"):
                held[run["run_id"]] = records.host_fields(target.profile)
    silent = [p["pod"] for p in result.pods if not answered(p)]
    if silent and len(held) < len(unplaced):
        raise OpsError(f"campaign {state.spec.campaign_id}: cannot tell where runs "
                       f"{', '.join(sorted(set(unplaced) - set(held)))} are: {', '.join(silent)} did not answer "
                       f"({'; '.join(p.get('error') or 'no answer' for p in result.pods if not answered(p))}); "
                       f"run the same command again to resume")
    ledger.place_all((run_id, pod["host_id"], pod["host"]) for run_id, pod in held.items())
    for run in manifest["runs"]:
        if run["run_id"] in held:
            run.update(held[run["run_id"]])
    records.save_manifest(project, manifest)
    return sorted(held)


def _wait_evidence(state: State, steering, doc: dict, outcome: str, outages: dict, adopted: list) -> dict:
    """The steering's document as the wait's evidence: ok, `finished` (every run's current attempt
    over: failed runs are the gate's not_ok, anything else stops the campaign), and an error
    saying what is left and how to go on."""
    from ..records import FINISHED_STATES

    spec = state.spec
    current = {run_id: steering.ledger.current(run_id) for run_id in steering.ledger.runs}
    unfinished = sorted(r for r, attempt in current.items() if attempt["state"] not in FINISHED_STATES)
    failed = sorted(r["run_id"] for r in doc["runs"] if r.get("state") in COUNTS_AS_FAILURE)
    evidence = {**doc, "outcome": outcome, "finished": outcome == "done" and not unfinished,
                "outages": outages, "adopted": adopted}
    evidence["ok"] = evidence["finished"] and not failed
    errors = []
    if outcome == "timeout":
        errors.append(f"runs still going after {spec.wait_timeout_s:.0f}s (--wait-timeout): {', '.join(unfinished)}")
    for pod, why in sorted(steering.stranded.items()):
        errors.append(f"{pod}: {why} (--ready-timeout {spec.ready_timeout_s:g} s) and no other pod to take its "
                      f"runs: they go on there; run the same command again to resume")
    if outcome == "done" and unfinished:
        errors.append(f"runs no pod could take: {', '.join(unfinished)} ({'; '.join(steering.notes) or 'lost'})")
    if failed:
        errors.append(f"{len(failed)} of {len(current)} runs failed: {', '.join(failed)}")
    if errors:
        evidence["error"] = "; ".join(errors)
    else:
        evidence.pop("error", None)
    return evidence


class Fetch(Phase):
    name, title = "fetch", "fetch the campaign's runs"

    def run(self, state: State) -> dict:
        from .artifacts import fetch_runs

        outputs_dir = state.manifest()["outputs_dir"]
        project = state.env.project_dir

        def fetch_here(target):
            runs = state.runs_on(target)
            if not runs:
                return {"ok": True, "host": target.profile.name, "runs": [], "note": "no run of the campaign here"}
            return fetch_runs(target, runs=runs, outputs_dir=outputs_dir, local_root=records.local_runs_dir(project),
                              records_dir=records.fetch_records_dir(project))

        return _over_pods(state, fetch_here)


class Validate(Phase):
    name, title = "validate", "every run complete and succeeded"
    gate = True

    def run(self, state: State) -> dict:
        from .validate import validate_root

        result = validate_root(records.local_runs_dir(state.env.project_dir), state.run_ids())
        if not result["ok"]:
            failed = ", ".join(f["run_id"] for f in result["failed"])
            result.setdefault("error", f"{len(result['failed'])} failed ({failed}), {len(result['missing'])} with "
                                       f"files missing, {len({e['run_id'] for e in result['invalid']})} invalid")
        return result


class Report(Phase):
    name, title = "report", "report.md, report.json, report.html"

    def run(self, state: State) -> dict:
        from .examples import ExampleSpool
        from .report import RUN_DIRS, build_report, write_report
        from .report_html import write_report_html

        project = state.env.project_dir
        with ExampleSpool() as spool:
            doc = build_report(records.local_runs_dir(project), group_by=state.spec.group_by, run_ids=state.run_ids(),
                               scope=f"campaign {state.spec.campaign_id} (submission {state.record['submission_id']})",
                               spool=spool)
            run_dirs = doc.pop(RUN_DIRS)
            # The project's deliverable (artifacts/report.*, as `ops report` writes it) and the campaign's own copy.
            written = [write_report(doc, folder, html=lambda path: write_report_html(doc, run_dirs, path, spool))
                       for folder in (records.campaign_dir(project, state.spec.campaign_id),
                                      records.report_dir(project))]
        return {"ok": True, "runs": len(doc["rows"]), "written": written, "cost": cost_summary(state, doc)}


class VllmStop(Phase):
    name, title = "vllm_stop", "stop the vLLM servers"

    def run(self, state: State) -> dict:
        from .vllm import vllm_stop

        return _on_each_server(state, lambda target, spec: vllm_stop(target, session=spec.session, port=spec.port),
                               "no servers to stop")


class Teardown(Phase):
    name, title = "teardown", "the teardown policy"

    def run(self, state: State) -> dict:
        spec = state.spec
        if spec.teardown == "keep":
            kept = [_kept(state, host, "--teardown keep") for host in state.hosts]
            if spec.idle_release_s is not None:
                return _release_when_idle(state, kept)
            return {"ok": True, "policy": "keep", "kept": kept, "released": []}
        unmet = [phase for phase in ("fetch", "validate", "report") if state.outcome(phase) != "ok"]
        if unmet:
            why = f"{', '.join(unmet)} not passed ({', '.join(str(state.outcome(p)) for p in unmet)})"
            return _kept_all(state, why)
        return _release(state)


def _kept(state: State, host: str, why: str) -> dict:
    return {"host": host, "reason": why, "price_per_hour": state.price_per_hour(host)}


def _kept_all(state: State, why: str) -> dict:
    kept = [_kept(state, host, why) for host in state.hosts]
    return {"ok": False, "policy": state.spec.teardown, "kept": kept, "released": [],
            "error": f"pods kept: {why}; keeping them costs {_per_hour(kept)}"}


def _per_hour(kept: list) -> str:
    prices = [k["price_per_hour"] for k in kept]
    if not prices or any(p is None for p in prices):
        known = [p for p in prices if p is not None]
        return (f"${sum(known):.2f}/h and more (no price for some: set price_per_hour in their profile)"
                if known else "an unknown amount per hour (no price: set price_per_hour in the profile)")
    return f"${sum(prices):.2f}/h"


def _release(state: State) -> dict:
    """Release each rented pod whose runs are all done and fetched (teardown_check: the fetch
    records agree with the pod); a host the campaign did not rent is never released."""
    from .lium import find_pod, remove_pod
    from .teardown import teardown_check

    project = state.env.project_dir
    kept, released = [], []
    lost = state.lost_hosts()
    for host in state.hosts:
        rented = next((p for p in state.record["rented"] if p["alias"] == host), None)
        if host in lost:
            kept.append(_kept(state, host, "lost during the wait (no answer; its runs were placed on the other "
                                           "pods): not checked, so not released; release it yourself"))
            continue
        if rented is None and lium_pod_behind(host) is None:
            kept.append(_kept(state, host, "not a Lium pod that ops rented (no pod.up block for it in "
                                           "~/.ssh/config): release it yourself"))
            continue
        if rented is None:  # a -H host pod.up rented: released as pod.down would, and remembered
            rented = {"alias": host, "name": lium_pod_behind(host), "by": "pod.up"}
            state.record["rented"].append(rented)
        if rented.get("released"):  # by an earlier teardown of this campaign
            released.append(host)
            continue
        target = state.env.target(host)
        try:
            check = teardown_check(target, outputs_dir=target.profile.outputs_dir,
                                   records_dir=records.fetch_records_dir(project))
        except OpsError as exc:
            kept.append(_kept(state, host, f"the teardown check did not answer ({exc})"))
            continue
        if check["active"] or check["unfetched"]:
            names = [f"{r['run_id']} ({r['state']})" for r in check["active"]] + [
                f"{r['run_id']} ({r['reason']})" for r in check["unfetched"]]
            kept.append({**_kept(state, host, "runs not done or not fetched: " + ", ".join(names)), "check": check})
            continue
        pod = find_pod(state.env.client(), rented["name"])
        if pod is not None:
            rented["id"] = pod.id
            remove_pod(state.env.client(), pod)
            records.forget_lium_pod(pod.id)
        ssh_config.forget_pod_hosts(ssh_config.default_path(), [host])
        rented.update(released=True, released_at=time.time())
        released.append(host)
        state.save()
    if released:  # the campaign's fleet name goes on naming only the pods that stay
        records.fleet_after_release(project, state.spec.campaign_id, released)
    evidence = {"ok": not kept, "policy": "release", "kept": kept, "released": released}
    if kept:
        evidence["error"] = (f"kept {len(kept)} pod(s), costing {_per_hour(kept)}: "
                             + "; ".join(f"{k['host']}: {k['reason']}" for k in kept))
    return evidence


def lium_pod_behind(host: str) -> Optional[str]:
    """The name of the Lium pod whose Host block pod.up wrote for this alias, or None (a host of
    another kind: a profile, a raw address, a block of the user's own)."""
    block = ssh_config.find_host(ssh_config.default_path(), host)
    for comment in (block or {}).get("comments", []):
        if comment.startswith(ssh_config.POD_MARKER):
            words = comment[len(ssh_config.POD_MARKER):].split()
            if words:
                return words[0]
    return None


def _release_when_idle(state: State, kept: list) -> dict:
    """--idle-release with --teardown keep: a pod with nothing queued or running for that long is
    released (a rented one whose runs are all fetched), else warned about, costing what it does."""
    from .runs import runs_status

    spec = state.spec
    idle_since = {host: time.monotonic() for host in state.hosts if host not in state.lost_hosts()}
    deadline = time.monotonic() + spec.wait_timeout_s
    while time.monotonic() < deadline:
        for host in list(idle_since):
            target = state.env.target(host)
            try:
                busy = any(r["state"] in ("queued", "running")
                           for r in runs_status(target, outputs_dir=target.profile.outputs_dir)["runs"])
            except OpsError:
                busy = True  # not answering: not known to be idle
            if busy:
                idle_since[host] = time.monotonic()
        idle = [h for h, since in idle_since.items() if time.monotonic() - since >= spec.idle_release_s]
        if idle:
            break
        time.sleep(min(defaults.CAMPAIGN_IDLE_POLL_S, spec.idle_release_s / 4))
    else:
        return {"ok": True, "policy": "keep", "kept": kept, "released": [], "note": "never idle before the deadline"}
    released = _release(state)
    warnings = [f"{k['host']} idle for {spec.idle_release_s / 60:g} min and kept ({k['reason']}): "
                f"it costs {_per_hour([k])}" for k in released["kept"]]
    return {"ok": True, "policy": "keep", "idle_release_s": spec.idle_release_s, "kept": released["kept"],
            "released": released["released"], "warnings": warnings}


PHASES = (Rent(), Ready(), Bootstrap(), Sync(), VllmStart(), Submit(), Wait(), Fetch(), Validate(), Report(),
          VllmStop(), Teardown())


# ---------------------------------------------------------------- costs


def cost_summary(state: State, doc: dict) -> dict:
    """What the campaign cost (operations/costs.py does the arithmetic): each pod's price per
    hour (Lium's for a rented pod, else the profile's), the runs' total (the report's rows, each
    run's share of its pod's GPUs times its duration), and each pod's idle time so far."""
    from .costs import cost_of_time, idle_time, total

    wait = _evidence(state, "wait")
    now = time.time()
    pods = {}
    for host in state.hosts:
        rented = next((p for p in state.record["rented"] if p["alias"] == host), None)
        since = (rented or {}).get("ready_at") or state.record["created_at"]
        waited = (wait.get("pods") or {}).get(host) or {}
        # The runs' times are the pod's clock: set against ours (a pod an hour off, idle > wall time).
        idle = idle_time(waited.get("runs") or [], since, now, clock_offset=waited.get("clock_offset"))
        price = state.price_per_hour(host)
        pods[host] = {"price_per_hour": price, "since": since, "idle_s": round(idle, 1),
                      "idle_cost_usd": cost_of_time(idle, price)}
    return {"pods": pods, "runs": total(row.get("cost") for row in doc["rows"] + doc.get("not_succeeded", [])
                                        if isinstance(row, dict))}


def _evidence(state: State, phase: str) -> dict:
    path = records.campaign_dir(state.env.project_dir, state.spec.campaign_id) / f"{phase}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- running it


def run_campaign(spec: CampaignSpec, env: Env) -> dict:
    """Every phase not done yet, in order, each recorded before and after it runs; the campaign's
    document (its phases, pods, what was kept or released, the first failure). One at a time:
    the same campaign started again while it runs (a second terminal, cron) is refused."""
    with _running_alone(spec, env.project_dir):
        state = State.load(spec, env)
        if spec.retry_failed:
            _ask_for_retry(state)
        state.save()
        env.log(f"campaign {spec.campaign_id}: watch it live: ops ui -H {watch_name(spec)}")
        stopped_at = None
        for phase in PHASES:
            if phase.done(state):
                continue
            outcome = _run_phase(state, phase)
            if outcome == "failed":
                stopped_at = phase.name
                _stop_servers_after_failure(state)
                break
        return document(state, stopped_at)


def watch_name(spec: CampaignSpec) -> str:
    """What `ops ui -H` takes to watch this campaign's pods: its id (the fleet it rents, named
    by the id from the first pod on), or the hosts it was given."""
    return spec.campaign_id if spec.pods else ",".join(spec.hosts)


def _ask_for_retry(state: State) -> None:
    """--retry-failed: the campaign's runs whose attempt failed (the wait's word for them; not
    cancelled ones) are to be sent again: submit and every phase after it run again (the servers
    too, stopped at the campaign's end); each phase's earlier entry is kept under `earlier`."""
    if state.outcome("wait") not in DONE:
        return  # not waited for yet: the campaign goes on as it is
    runs = [run for pod in (_evidence(state, "wait").get("pods") or {}).values() for run in pod.get("runs") or []]
    failed = sorted({run["run_id"] for run in runs if run.get("state") in COUNTS_AS_FAILURE})
    if not failed:
        state.env.log(f"campaign {state.spec.campaign_id}: --retry-failed: no run of it failed: nothing to run again")
        return
    again = ["submit", "wait", "fetch", "validate", "report", "vllm_stop", "teardown"]
    if state.spec.servers:
        again.append("vllm_start")
    state.record.setdefault("earlier", []).append(
        {phase: state.record["phases"].pop(phase) for phase in again if phase in state.record["phases"]})
    state.record["retry"] = {"runs": failed, "asked_at": time.time()}
    state.env.log(f"campaign {state.spec.campaign_id}: --retry-failed: {len(failed)} failed run(s) to run again: "
                  f"{', '.join(failed)}")


@contextlib.contextmanager
def _running_alone(spec: CampaignSpec, project_dir):
    """The campaign's lock (running.lock in its folder, held while it runs; the kernel lets go of
    it when the process ends, however it ends), with who holds it written in it: a second start
    of the same campaign from this checkout is refused, naming the first one's pid and host."""
    if project_dir is None:
        yield
        return
    folder = records.campaign_dir(project_dir, spec.campaign_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "running.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            raise OpsError(f"campaign {spec.campaign_id} is already running (pid {holder.get('pid', '?')} on "
                           f"{holder.get('host', '?')}, since {_clock(holder['since']) if holder.get('since') else '?'}): "
                           f"let it end or stop it, then run the same command again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode(), 0)
        yield
    finally:
        os.close(fd)


def _lock_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _run_phase(state: State, phase: Phase) -> str:
    project, campaign_id = state.env.project_dir, state.spec.campaign_id
    entry = {"outcome": "running", "started_at": time.time(), "title": phase.title}
    state.record["phases"][phase.name] = entry
    try:
        # Inside the try: a signal while the start is being written still records the phase as interrupted.
        state.save()
        state.env.log(f"campaign {campaign_id}: {phase.name}: {phase.title}")
        evidence = phase.run(state)
    except (KeyboardInterrupt, Interrupted):
        entry.update(outcome="interrupted", ended_at=time.time())
        state.save()
        raise
    except OpsError as exc:
        evidence = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
    if evidence.get("skipped"):
        outcome = "skipped"
    elif evidence.get("ok") is True:
        outcome = "ok"
    else:
        outcome = "not_ok" if phase.gate and evidence.get("finished", True) else "failed"
    path = records.save_campaign_file(project, campaign_id, f"{phase.name}.json", evidence)
    entry.update(outcome=outcome, ended_at=time.time(), evidence=path.name,
                 error=evidence.get("error"), summary=_summary(phase.name, evidence))
    state.save()
    return outcome


def _stop_servers_after_failure(state: State) -> None:
    """A failure keeps the pods, but not the servers the campaign started on them."""
    if state.outcome("vllm_start") == "ok" and state.outcome("vllm_stop") not in DONE:
        outcome = _run_phase(state, PHASES[[p.name for p in PHASES].index("vllm_stop")])
        # Neither is done now: a resumed campaign starts the servers again, and stops them at its end.
        state.record["phases"]["vllm_start"]["outcome"] = "stopped"
        state.record["phases"]["vllm_stop"]["outcome"] = f"{outcome} after the failure"
        state.save()


def _summary(name: str, evidence: dict) -> str:
    """One line for the checklist."""
    if evidence.get("note"):
        return evidence["note"]
    if name == "rent":
        replaced = sum(a.get("outcome") == "released" for a in evidence.get("attempts", []))
        return f"{', '.join(evidence.get('hosts', []))}" + (f" ({replaced} not ready, replaced)" if replaced else "")
    if name == "submit":
        already = evidence.get("already_succeeded") or {}
        return f"submission {evidence.get('submission_id')}: " + ", ".join(
            [f"{pod}: {len(ids)} runs" for pod, ids in (evidence.get("placed") or {}).items()]
            + ([f"{len(already)} succeeded before, not sent again"] if already else []))
    if name in ("wait", "fetch"):
        counts = {}
        for pod in (evidence.get("pods") or {}).values():
            for run in pod.get("runs") or []:
                key = run.get("state") or "fetched"
                counts[key] = counts.get(key, 0) + 1
        # What the wait did on its own to get there (an unattended campaign says so).
        done = [f"{pod} unreachable for {s:g} s" for pod, s in sorted((evidence.get("outages") or {}).items())]
        done += [f"resumed {', '.join(r['runs']) or 'nothing lost'} on {r['pod']} (no supervisor)"
                 for r in evidence.get("resumed") or []]
        done += [f"placed again {m['run_id']}: {m['from']} (lost) -> {m['to']}" for m in evidence.get("replaced") or []]
        done += [f"took up {len(evidence['adopted'])} run(s) a pod held already"] if evidence.get("adopted") else []
        return "; ".join([", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no runs", *done])
    if name == "validate":
        return f"{evidence.get('runs')} runs, {len(evidence.get('complete') or [])} complete"
    if name == "report":
        return f"{evidence.get('runs')} runs: {evidence['written'][-1]['markdown']}" if evidence.get("written") else ""
    if name == "teardown":
        return "; ".join([f"released {', '.join(evidence.get('released') or []) or 'none'}",
                          f"kept {', '.join(k['host'] for k in evidence.get('kept') or []) or 'none'}",
                          *(evidence.get("warnings") or [])])
    if isinstance(evidence.get("pods"), dict):
        return ", ".join(f"{pod}: {'ok' if result.get('ok') else 'NOT OK'}"
                         + (f" ({len(result['servers'])} servers)" if result.get("servers") else "")
                         for pod, result in evidence["pods"].items())
    return evidence.get("error") or ""


def document(state: State, stopped_at: Optional[str] = None) -> dict:
    """What the campaign command prints: where it stands, phase by phase."""
    phases = [{"phase": p.name, "title": p.title, **{k: v for k, v in (state.record["phases"].get(p.name) or {}).items()
                                                     if k != "title"}} for p in PHASES]
    for row in phases:
        row.setdefault("outcome", "pending")
    outcomes = [row["outcome"] for row in phases]
    doc = {"ok": all(o in ("ok", "skipped") for o in outcomes), "campaign_id": state.spec.campaign_id,
           "dir": str(records.campaign_dir(state.env.project_dir, state.spec.campaign_id)),
           "config": state.spec.config, "hosts": state.hosts, "rented": state.record["rented"],
           "rent_attempts": state.record["rent_attempts"], "submission_id": state.record.get("submission_id"),
           "teardown": state.spec.teardown, "phases": phases, "stopped_at": stopped_at}
    failed = [row for row in phases if row["outcome"] in ("failed", "not_ok")]
    if failed:
        doc["error"] = "; ".join(f"{row['phase']}: {row.get('error') or row['outcome']}" for row in failed)
    return doc


def would_run(spec: CampaignSpec, project_dir) -> dict:
    """--dry-run: each phase and whether it would run, from the campaign's record; nothing contacted,
    nothing written."""
    record = records.load_campaign_state(project_dir, spec.campaign_id) or {"phases": {}}
    rows = []
    for phase in PHASES:
        outcome = (record["phases"].get(phase.name) or {}).get("outcome")
        rows.append({"phase": phase.name, "title": phase.title, "outcome": outcome or "pending",
                     "would_run": outcome not in DONE})
    return {"ok": True, "dry_run": True, "campaign_id": spec.campaign_id, "config": spec.config,
            "hosts": list(spec.hosts) or None,
            "would_rent": {"pods": spec.pods, "gpu": spec.gpu, "count": spec.count, "country": spec.country,
                           "volume": spec.volume_name} if spec.rents else None,
            "teardown": spec.teardown, "phases": rows}


def checklist(state: State) -> str:
    """checklist.md: where the campaign stands, for people."""
    lines = [f"# campaign {state.spec.campaign_id}", "",
             f"config: {state.spec.config} (sha256 {state.spec.config_hash})",
             f"hosts: {', '.join(state.hosts) or '(not rented yet)'}; teardown: {state.spec.teardown}", ""]
    for phase in PHASES:
        entry = state.record["phases"].get(phase.name) or {}
        outcome = entry.get("outcome", "pending")
        mark = _mark(outcome)
        when = ""
        if entry.get("started_at"):
            when = f" ({_clock(entry['started_at'])}" + (f" to {_clock(entry['ended_at'])})" if entry.get("ended_at")
                                                         else ", still running)")
        detail = entry.get("error") if outcome in ("failed", "not_ok") else entry.get("summary")
        lines.append(f"- [{mark}] {phase.name}: {outcome}{when}" + (f": {detail}" if detail else ""))
    return "\n".join(lines) + "\n"


def _mark(outcome: str) -> str:
    """A phase's box in the checklist: [x] done and ok, [!] not ok (not_ok: done, its runs are
    run again by --retry-failed; failed: run again by a resumed campaign), [ ] still to do."""
    if outcome in ("failed", "not_ok"):
        return "!"
    return "x" if outcome in DONE or outcome.startswith("ok") else " "


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def check_teardown(value: Optional[str]) -> str:
    policy = value or "keep"
    if policy not in TEARDOWN_POLICIES:
        raise ConfigError(f"--teardown must be one of {', '.join(TEARDOWN_POLICIES)}, got {value!r}")
    return policy
