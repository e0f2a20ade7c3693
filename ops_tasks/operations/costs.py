"""What runs and pods cost: a host's price per hour, each run's share of it, totals, idle time.

Plain functions, nothing printed, nothing asked of Lium or a pod. Where a price comes from
(`price_of`): the Lium pod pod.up rented behind the host (its price as Lium said then, kept by
records.save_lium_pod in the user's state database, whatever folder it was rented from), else
the profile's `price_per_hour`, else nothing: a cost is then
unknown (None), never 0. runs.submit keeps the price and the pod's capacity in the submission's
manifest (`pricing`, by host identity: `pod_pricing`), so a run's cost is known later from its
status.json alone:

    cost = price_per_hour x share x (finished - started) / 3600
    share = the run's GPUs / the pod's GPUs, or on a pod without GPUs 1 / its CPU slots

Moments are epoch seconds; money is US dollars per hour, as Lium bills.
"""

import math
import time
from pathlib import Path
from typing import Iterable, Optional

from .. import defaults, records
from ..settings import host_identity

MAX_GPUS = 4096  # a GPU count from a pod above this is not one


def _number(value) -> Optional[float]:
    """A finite, non-negative number, else None (values come from pods and files: an integer past
    any float too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _count(value) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_GPUS else None


# ---------------------------------------------------------------- prices


def price_of(profile) -> Optional[dict]:
    """{"price_per_hour", "source": "lium" | "profile", "pod_gpus"} of a host, None when no price
    is known. A Lium pod's price is what pod.up recorded for the pod this host leads to (by host
    identity, so an alias and its user@host:port agree); else the profile's price_per_hour."""
    if not profile.is_local:
        record = records.lium_pod_of(host_identity(profile))
        price = _number((record or {}).get("price_per_hour"))
        if price is not None:
            return {"price_per_hour": price, "source": "lium", "pod_gpus": _count(record.get("gpu_count"))}
    price = _number(profile.price_per_hour)
    if price is not None:
        return {"price_per_hour": price, "source": "profile", "pod_gpus": None}
    return None


def pod_pricing(price: Optional[dict], capacity) -> Optional[dict]:
    """A manifest's pricing of one pod: {"price_per_hour", "source", "gpus", "slots"} from the
    price and what the pod said it hands out (runs.submit's `capacity` answer: {"gpus", "slots"},
    checked; Lium's GPU count when the pod did not say). None without a price."""
    if price is None:
        return None
    capacity = capacity if isinstance(capacity, dict) else {}
    gpus = _count(capacity.get("gpus"))
    return {"price_per_hour": price["price_per_hour"], "source": price["source"],
            "gpus": price.get("pod_gpus") if gpus is None else gpus, "slots": _count(capacity.get("slots"))}


def cost_of_time(seconds: Optional[float], price_per_hour: Optional[float], share: float = 1.0) -> Optional[float]:
    """Dollars for `seconds` of a pod at this price (share of it: 0..1); None when either is unknown."""
    if seconds is None or price_per_hour is None:
        return None
    return price_per_hour * share * seconds / 3600


# ---------------------------------------------------------------- runs


def usage_of(status, record=None) -> Optional[dict]:
    """{"submission_id", "started", "finished", "gpus"} of a run, from its status.json (a dict
    already read), the supervisor's record filling in its times; None when it has no usable start."""
    status = status if isinstance(status, dict) else {}
    record = record if isinstance(record, dict) else {}
    started = _number(status.get("started")) or _number(record.get("started_at"))
    finished = _number(status.get("finished")) or _number(record.get("finished_at"))
    submission = status.get("submission_id") or record.get("submission_id")
    if started is None or not isinstance(submission, str):
        return None
    gpus = status.get("gpus") if isinstance(status.get("gpus"), list) else record.get("gpus")
    gpus = gpus if isinstance(gpus, list) and len(gpus) <= MAX_GPUS else None
    return {"submission_id": submission, "started": started,
            "finished": finished if finished is not None and finished >= started else None,
            "gpus": None if gpus is None else len(gpus)}


def run_share(gpus: Optional[int], pricing: dict) -> Optional[float]:
    """The run's share of its pod: its GPUs of the pod's, else (no GPUs) one of the pod's CPU slots."""
    pod_gpus, slots = pricing.get("gpus"), pricing.get("slots")
    if pod_gpus:
        return min(gpus, pod_gpus) / pod_gpus if gpus else None
    return 1 / slots if slots else None


def run_cost(usage: Optional[dict], pricing: Optional[dict]) -> Optional[float]:
    """A finished run's cost (price x share x duration); None when anything it needs is unknown."""
    if not usage or not pricing or usage["finished"] is None:
        return None
    share = run_share(usage["gpus"], pricing)
    if share is None:
        return None
    return cost_of_time(usage["finished"] - usage["started"], _number(pricing.get("price_per_hour")), share)


def pricing_of_runs(manifest: Optional[dict]) -> dict:
    """{run id: that run's pod pricing} of one local submission manifest (a fleet's names each
    run's pod; a single host's prices every run alike); {} when it holds no price."""
    pricing = (manifest or {}).get("pricing")
    if not isinstance(pricing, dict):
        return {}
    found = {}
    for run in manifest.get("runs") or []:
        if isinstance(run, dict) and isinstance(run.get("run_id"), str):
            pod = pricing.get(run.get("host_id") or manifest.get("host_id"))
            if isinstance(pod, dict):
                found[run["run_id"]] = pod
    return found


def project_of(root) -> Optional[Path]:
    """The project whose manifests price the runs under root: root must be its fetched run
    directories (artifacts/pod_logs); a --root elsewhere has no manifests, so no prices."""
    root = Path(root)
    tail = Path(defaults.LOCAL_RUNS_DIR).parts
    if root.parts[-len(tail):] != tail:
        return None
    return root.parents[len(tail) - 1]


def price_rows(rows: list, usages: list, project_dir) -> None:
    """Set `cost` on each report row whose run's price is known (usages[i] is rows[i]'s usage_of).
    Each submission's manifest is read once, and only for the submissions the runs name."""
    if project_dir is None or not records.manifests_dir(project_dir).is_dir():
        return
    by_submission: dict = {}
    for row, usage in zip(rows, usages):
        if not usage:
            continue
        submission = usage["submission_id"]
        if submission not in by_submission:
            by_submission[submission] = pricing_of_runs(records.load_manifest(project_dir, submission))
        cost = run_cost(usage, by_submission[submission].get(row["run_id"]))
        if cost is not None:
            row["cost"] = cost


def total(costs: Iterable[Optional[float]]) -> dict:
    """{"cost_usd", "priced", "unpriced"} of some runs' costs (None: unknown): cost_usd is the sum
    of those known, None when none is (an unknown cost is never counted as 0)."""
    known, unpriced = [], 0
    for cost in costs:
        if _number(cost) is None:
            unpriced += 1
        else:
            known.append(cost)
    return {"cost_usd": sum(known) if known else None, "priced": len(known), "unpriced": unpriced}


def group_cost(members: list) -> dict:
    """{"cost", "cost_per_correct"} of a report group: the sum of its runs' costs (None unless every
    run's is known), and that over its correct examples (mean x n of runs scored 0/1, Wilson's
    interval), None when a run is not scored 0/1 or none is correct; {} when no run has a price."""
    if not any("cost" in m for m in members):
        return {}  # no price known for any of its runs: no cost columns at all
    costs = [m.get("cost") for m in members]
    if any(_number(c) is None for c in costs):
        return {"cost": None, "cost_per_correct": None}
    cost = sum(costs)
    binary = all(m.get("interval") == "wilson" and m.get("mean") is not None and m.get("n") for m in members)
    correct = sum(round(m["mean"] * m["n"]) for m in members) if binary else 0
    return {"cost": cost, "cost_per_correct": cost / correct if correct else None}


def spent_text(spent: dict) -> str:
    """A total (total()) for people: `$12.35 over 8 runs (2 more without a price)`."""
    text = f"${spent['cost_usd']:.2f} over {spent['priced']} run{'s' if spent['priced'] != 1 else ''}"
    return text + (f" ({spent['unpriced']} more without a price)" if spent["unpriced"] else "")


# ---------------------------------------------------------------- pods


def idle_time(runs: Iterable[dict], start: float, end: float, clock_offset: Optional[float] = None) -> float:
    """Seconds of [start, end] (the laptop's clock) in which no run ran on the pod, from the runs'
    `started` and `finished` (the pod's clock, `clock_offset` seconds ahead of the laptop's:
    runs_status measures it; a run not finished runs to `end`, one never started is left out).
    Overlapping runs count once: the pod is idle only when nothing runs."""
    shift = _number(clock_offset) or 0.0
    spans = []
    for run in runs:
        began = _number(run.get("started"))
        if began is None:
            continue
        ended = _number(run.get("finished"))
        began, ended = began - shift, None if ended is None else ended - shift
        spans.append((max(began, start), min(end if ended is None else ended, end)))
    busy, reached = 0.0, start
    for began, ended in sorted(spans):
        began = max(began, reached)
        if ended > began:
            busy += ended - began
            reached = ended
    return max(0.0, end - start - busy)


def running_cost(record: Optional[dict], now: Optional[float] = None) -> Optional[dict]:
    """{"price_per_hour", "uptime_s", "cost_usd", "pod"} of a Lium pod so far (uptime x price), from
    what pod.up recorded (records.lium_pod_of); None without a price or a creation time."""
    record = record or {}
    price, created = _number(record.get("price_per_hour")), _number(record.get("created"))
    if price is None or created is None:
        return None
    uptime = max(0.0, (time.time() if now is None else now) - created)
    return {"price_per_hour": price, "uptime_s": uptime, "cost_usd": cost_of_time(uptime, price),
            "pod": record.get("name")}


def released_cost(record: dict) -> Optional[dict]:
    """running_cost of a released pod, from its start to its release (what it cost in all)."""
    released = _number(record.get("released_at"))
    return None if released is None else running_cost(record, now=released)


def rented_pods(listed: list, recorded: list, *, listed_at: float) -> dict:
    """pod.ps's view, from Lium's listing (operations/lium.list_pods rows) and the pods the user's
    state records not released (records.lium_pods): {"pods", "not_listed", "totals"}.

    Each listed pod with what pod.up recorded of it: `rented_from` (the folder, None when pod.up
    did not rent it), and its price when Lium's row has none. `not_listed`: records Lium no longer
    lists (removed elsewhere, by a --ttl, or in another Lium account): kept, and named, never taken
    for released unasked. `totals`: what the listed pods cost an hour and so far, of those known."""
    recorded_by_id = {record["id"]: record for record in recorded if record.get("id")}  # oldest first: newest wins
    pods = []
    for pod in listed:
        record = recorded_by_id.get(pod["id"]) or {}
        price = _number(pod.get("price_per_hour"))
        price = _number(record.get("price_per_hour")) if price is None else price
        cost = _number(pod.get("cost_usd"))
        if cost is None and price is not None and _number(pod.get("uptime_s")) is not None:
            cost = round(cost_of_time(pod["uptime_s"], price), 2)
        pods.append({**pod, "price_per_hour": price, "cost_usd": cost, "rented_from": record.get("project")})
    listed_ids = {pod["id"] for pod in listed}
    # A record written after the listing was asked for is of a pod the listing could not show yet.
    not_listed = [record for record in recorded if record.get("id") and record["id"] not in listed_ids
                  and (_number(record.get("recorded_at")) or 0) < listed_at]
    prices = [pod["price_per_hour"] for pod in pods]
    costs = [pod["cost_usd"] for pod in pods]
    return {"pods": pods, "not_listed": not_listed,
            "totals": {"pods": len(pods), "price_per_hour": sum(p for p in prices if p is not None),
                       "cost_usd": sum(c for c in costs if c is not None),
                       "unpriced": sum(p is None for p in prices)}}


def lium_running_cost(profile) -> Optional[dict]:
    """running_cost of the Lium pod this host leads to (pod.status); None for any other host."""
    if profile.is_local:
        return None
    return running_cost(records.lium_pod_of(host_identity(profile)))
