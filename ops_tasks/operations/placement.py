"""Where the runs of a fleet submission go, and which queued runs to move: pure functions
(docs/ARCHITECTURE.md, "Fleets").

A pod is {name, gpu_count, free_gpus, slots, free_slots, queued_seconds_estimate} and optionally
`run_ids` (the runs of this submission it has already) and, for rebalance, `queued` (its runs not
started yet, in the order it will start them). A run is {run_id, gpus, expected_s}.

A pod hands out what its supervisor does (runtime/supervisor.py, claim_ready), in two pools: its
GPUs, and its CPU slots (`slots`, at least one; `free_slots` of them free, all when not given).
A run takes what contract.run_units says: `gpus` GPUs (None: all of a pod's), or one CPU slot for
a run of `gpus: 0` and for every run on a pod without GPUs, which takes no run that asks for a GPU.
"""

from ..errors import ConfigError
from ..runtime.contract import CPU_POOL, GPU_POOL, run_units

POOLS = (GPU_POOL, CPU_POOL)

# A unit in use is free again in this many seconds at the earliest, whatever the pod's estimate
# says (0: it does not know): a free unit now always beats a busy one.
MIN_BUSY_S = 1.0


def main_pool(pod: dict) -> str:
    """The pool most runs take: GPUs on a pod with GPUs, else CPU slots."""
    return GPU_POOL if pod.get("gpu_count") else CPU_POOL


def capacity(pod: dict, pool=None) -> int:
    """The units of a pod's pool (default: its main one): its GPUs, or its CPU slots (at least one)."""
    if (pool or main_pool(pod)) == GPU_POOL:
        return pod.get("gpu_count") or 0
    return max(1, pod.get("slots") or 1)


def free_now(pod: dict, pool=None) -> int:
    """Units of a pool (default: the main one) free at once: free GPUs, or free slots
    (`free_slots`, or all when not given)."""
    if (pool or main_pool(pod)) == GPU_POOL:
        return max(0, min(pod.get("free_gpus") or 0, capacity(pod, GPU_POOL)))
    return max(0, min(pod.get("free_slots", capacity(pod, CPU_POOL)), capacity(pod, CPU_POOL)))


def busy_until(pod: dict) -> float:
    """When the units in use now are taken to be free: once the pod's present work is done."""
    return max(MIN_BUSY_S, float(pod.get("queued_seconds_estimate") or 0))


def need(run: dict, pod: dict):
    """(pool, units) run takes on pod, or None when it cannot run there at all."""
    gpus = run.get("gpus")
    if gpus and not pod.get("gpu_count"):
        return None  # a GPU run never goes to a pod without GPUs (its supervisor would run it on a slot)
    pool, units = run_units(gpus, pod.get("gpu_count") or 0)
    return (pool, units) if units <= capacity(pod, pool) else None


def _share(run: dict, pod: dict) -> float:
    """What of its pool a run holds on pod (one unit of the main pool where it cannot run)."""
    needed = need(run, pod)
    pool, units = needed if needed else (None, 1)
    return units / capacity(pod, pool)


def durations(runs: list) -> dict:
    """Each run's expected seconds; a run without an estimate is taken as long as the average
    of those with one (1 s when none has one): unknown runs count as equals."""
    known = [r["expected_s"] for r in runs if _is_seconds(r.get("expected_s"))]
    default = sum(known) / len(known) if known else 1.0
    return {r["run_id"]: float(r["expected_s"]) if _is_seconds(r.get("expected_s")) else default for r in runs}


def _is_seconds(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


# ---------------------------------------------------------------- placing


class _Pod:
    """The simulated clock of one pod: when each unit of each pool is free again."""

    def __init__(self, pod: dict):
        self.pod = pod
        self.free_at = {}
        for pool in POOLS:
            free = free_now(pod, pool)
            self.free_at[pool] = [0.0] * free + [busy_until(pod)] * (capacity(pod, pool) - free)

    def free_now(self, pool: str) -> int:
        return sum(t <= 0 for t in self.free_at[pool])

    def start_time(self, pool: str, units: int) -> float:
        """When `units` units of the pool are free together: the units-th earliest."""
        return sorted(self.free_at[pool])[units - 1] if units else 0.0

    def take(self, pool: str, units: int, finish: float) -> None:
        self.free_at[pool].sort()
        self.free_at[pool][:units] = [finish] * units


def place(runs: list, pods: list) -> dict:
    """{pod name: [run ids]} for every run, each exactly once, each pod's list in the order it
    should start them. A run a pod already has stays there. The others, longest first: onto free
    GPUs at once wherever they fit (the tightest fit), then the rest where each would finish
    soonest, behind the units that free up earliest (LPT). ConfigError for a run that fits no pod."""
    _check_unique([r["run_id"] for r in runs], "run")
    _check_unique([p["name"] for p in pods], "pod")
    placed = {p["name"]: [] for p in pods}
    already = {run_id: p["name"] for p in pods for run_id in p.get("run_ids") or []}
    clocks = [_Pod(p) for p in pods]
    seconds = durations(runs)
    pending = []
    for run in runs:
        if run["run_id"] in already:
            placed[already[run["run_id"]]].append(run["run_id"])
        else:
            pending.append(run)
    longest_first = sorted(pending, key=lambda r: (-seconds[r["run_id"]], -(r.get("gpus") or 0), r["run_id"]))
    queued = []
    for run in longest_first:  # first, every run that can start at once, on the free units
        chosen = _best_fit_now(run, clocks)
        if chosen is None:
            queued.append(run)
            continue
        clock, (pool, units) = chosen
        clock.take(pool, units, seconds[run["run_id"]])
        placed[clock.pod["name"]].append(run["run_id"])
    for run in queued:  # then the rest, each where it finishes soonest
        clock, (pool, units) = _soonest_finish(run, clocks, seconds[run["run_id"]])
        clock.take(pool, units, clock.start_time(pool, units) + seconds[run["run_id"]])
        placed[clock.pod["name"]].append(run["run_id"])
    return placed


def _best_fit_now(run: dict, clocks: list):
    """(pod, (pool, units)): the pod whose units free now fit run most tightly (wide blocks stay
    whole for wide runs), or None when it fits nowhere now."""
    best = None
    for order, clock in enumerate(clocks):
        needed = need(run, clock.pod)
        if needed is None:
            continue
        left = clock.free_now(needed[0]) - needed[1]
        if left >= 0 and (best is None or (left, order) < best[0]):
            best = ((left, order), clock, needed)
    return None if best is None else best[1:]


def _soonest_finish(run: dict, clocks: list, length: float):
    best = None
    for order, clock in enumerate(clocks):
        needed = need(run, clock.pod)
        if needed is None:
            continue
        finish = clock.start_time(*needed) + length
        # Ties: the pod with more units of the pool free at that moment, then the order pods were named in.
        key = (finish, -sum(t <= finish - length for t in clock.free_at[needed[0]]), order)
        if best is None or key < best[0]:
            best = (key, clock, needed)
    if best is None:
        raise ConfigError(f"run {run['run_id']} needs {_asked(run)}, which no pod of the fleet has "
                          f"(largest: {max((p.pod.get('gpu_count') or 0 for p in clocks), default=0)} GPUs)")
    return best[1], best[2]


def _asked(run: dict) -> str:
    return f"{run['gpus']} GPUs" if run.get("gpus") else "a pod"


def _check_unique(names: list, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{what} {name} is named twice")
        seen.add(name)


def makespan(placement: dict, runs: list, pods: list) -> float:
    """When the last run would finish if each pod started its list in order, as `place` reckons."""
    seconds = durations(runs)
    by_id = {r["run_id"]: r for r in runs}
    end = 0.0
    for pod in pods:
        clock = _Pod(pod)
        for run_id in placement.get(pod["name"], []):
            if run_id in (pod.get("run_ids") or []):
                continue  # already there: part of the pod's present work
            pool, units = need(by_id[run_id], pod)
            finish = clock.start_time(pool, units) + seconds[run_id]
            clock.take(pool, units, finish)
            end = max(end, finish)
    return end


# ---------------------------------------------------------------- rebalancing


def rebalance(pods: list) -> list:
    """Moves [(run_id, from pod, to pod)] of queued runs, from the pods with the most backlog to
    pods with units idle now (GPUs or CPU slots) and nothing queued of their own, each run at most
    once and only where it starts at once. Running runs are never in `queued`, so never moved."""
    _check_unique([p["name"] for p in pods], "pod")
    idle = {p["name"]: {pool: free_now(p, pool) for pool in POOLS} for p in pods if not p.get("queued")}
    idle = {name: free for name, free in idle.items() if any(free.values())}
    queues = {p["name"]: list(p.get("queued") or []) for p in pods if p.get("queued")}
    backlog = {name: _backlog(p) for p in pods for name in [p["name"]] if name in queues}
    by_name = {p["name"]: p for p in pods}
    moves = []
    for target in sorted(idle, key=lambda n: -sum(idle[n].values())):
        while any(idle[target].values()):
            move = _next_move(queues, backlog, by_name, by_name[target], idle[target])
            if move is None:
                break
            source, run = move
            queues[source].remove(run)
            backlog[source] -= _run_seconds(run) * _share(run, by_name[source])
            pool, units = need(run, by_name[target])
            idle[target][pool] -= units
            moves.append((run["run_id"], source, target))
    return moves


def _backlog(pod: dict) -> float:
    """Seconds of queued work per unit on a pod: how long its queue keeps it busy."""
    if pod.get("queued_seconds_estimate") is not None:
        return float(pod["queued_seconds_estimate"])
    return sum(_run_seconds(r) * _share(r, pod) for r in pod.get("queued") or [])


def _run_seconds(run: dict) -> float:
    return float(run["expected_s"]) if _is_seconds(run.get("expected_s")) else 1.0


def _next_move(queues: dict, backlog: dict, by_name: dict, target: dict, free: dict):
    """The last-queued run (it waits longest) of the most backlogged pod that fits the units
    `free` ({pool: units}) of target; None when no queued run fits."""
    for source in sorted(queues, key=lambda n: -backlog[n]):
        for run in reversed(queues[source]):
            at_home = need(run, by_name[source])
            if at_home is not None and at_home[1] <= free_now(by_name[source], at_home[0]):
                continue  # its own pod starts it now
            there = need(run, target)
            if there is not None and there[1] <= free[there[0]]:
                return source, run
    return None
