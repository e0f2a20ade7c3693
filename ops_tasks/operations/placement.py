"""Where the runs of a fleet submission go, and which queued runs to move: pure functions
(docs/ARCHITECTURE.md, "Fleets").

A pod is {name, free_gpus, gpu_count, slots, queued_seconds_estimate} and optionally
`run_ids` (the runs of this submission it has already) and, for rebalance, `queued` (its runs not
started yet, in the order it will start them). A run is {run_id, gpus, expected_s}.

A pod's capacity is what its supervisor hands out (runtime/supervisor.py, claim_ready):
its GPUs, or on a pod without GPUs its CPU slots. A run needs `gpus` of them (None: all of a
pod's GPUs), or one slot on a pod without GPUs, which takes no run that asks for a GPU.
"""

from ..errors import ConfigError

# A unit in use is free again in this many seconds at the earliest, whatever the pod's estimate
# says (0: it does not know): a free unit now always beats a busy one.
MIN_BUSY_S = 1.0


def capacity(pod: dict) -> int:
    """The units a pod's supervisor hands out: its GPUs, else its CPU slots (at least one)."""
    return pod["gpu_count"] if pod.get("gpu_count") else max(1, pod.get("slots") or 1)


def free_now(pod: dict) -> int:
    """Units free at once: free GPUs, else free slots (`free_slots`, or all when not given)."""
    if pod.get("gpu_count"):
        return max(0, min(pod.get("free_gpus") or 0, pod["gpu_count"]))
    return max(0, min(pod.get("free_slots", capacity(pod)), capacity(pod)))


def busy_until(pod: dict) -> float:
    """When the units in use now are taken to be free: once the pod's present work is done."""
    return max(MIN_BUSY_S, float(pod.get("queued_seconds_estimate") or 0))


def need(run: dict, pod: dict):
    """Units run takes on pod, or None when it cannot run there at all."""
    gpus = run.get("gpus")
    if not pod.get("gpu_count"):
        return 1 if not gpus else None  # a GPU run never goes to a pod without GPUs
    wanted = pod["gpu_count"] if gpus is None else gpus
    return wanted if wanted <= pod["gpu_count"] else None


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
    """The simulated clock of one pod: when each of its units is free again."""

    def __init__(self, pod: dict):
        self.pod = pod
        free = free_now(pod)
        self.free_at = [0.0] * free + [busy_until(pod)] * (capacity(pod) - free)

    def free_now(self) -> int:
        return sum(t <= 0 for t in self.free_at)

    def start_time(self, units: int) -> float:
        """When `units` units are free together: the units-th earliest."""
        return sorted(self.free_at)[units - 1] if units else 0.0

    def take(self, units: int, finish: float) -> None:
        self.free_at.sort()
        self.free_at[:units] = [finish] * units


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
        clock, units = chosen
        clock.take(units, seconds[run["run_id"]])
        placed[clock.pod["name"]].append(run["run_id"])
    for run in queued:  # then the rest, each where it finishes soonest
        clock, units = _soonest_finish(run, clocks, seconds[run["run_id"]])
        clock.take(units, clock.start_time(units) + seconds[run["run_id"]])
        placed[clock.pod["name"]].append(run["run_id"])
    return placed


def _best_fit_now(run: dict, clocks: list):
    """The pod whose units free now fit run most tightly (wide blocks stay whole for wide runs),
    or None when it fits nowhere now."""
    best = None
    for order, clock in enumerate(clocks):
        units = need(run, clock.pod)
        left = clock.free_now() - (units or 0)
        if units is not None and left >= 0 and (best is None or (left, order) < best[0]):
            best = ((left, order), clock, units)
    return None if best is None else best[1:]


def _soonest_finish(run: dict, clocks: list, length: float):
    best = None
    for order, clock in enumerate(clocks):
        units = need(run, clock.pod)
        if units is None:
            continue
        finish = clock.start_time(units) + length
        # Ties: the pod with more units free at that moment, then the order pods were named in.
        key = (finish, -sum(t <= finish - length for t in clock.free_at), order)
        if best is None or key < best[0]:
            best = (key, clock, units)
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
            units = need(by_id[run_id], pod)
            finish = clock.start_time(units) + seconds[run_id]
            clock.take(units, finish)
            end = max(end, finish)
    return end


# ---------------------------------------------------------------- rebalancing


def rebalance(pods: list) -> list:
    """Moves [(run_id, from pod, to pod)] of queued runs, from the pods with the most backlog to
    pods with units idle now and nothing queued of their own, each run at most once and only
    where it starts at once. Running runs are never in `queued`, so never moved."""
    _check_unique([p["name"] for p in pods], "pod")
    idle = {p["name"]: free_now(p) for p in pods if not p.get("queued") and free_now(p) > 0}
    queues = {p["name"]: list(p.get("queued") or []) for p in pods if p.get("queued")}
    backlog = {name: _backlog(p) for p in pods for name in [p["name"]] if name in queues}
    by_name = {p["name"]: p for p in pods}
    moves = []
    for target in sorted(idle, key=lambda n: -idle[n]):
        while idle[target] > 0:
            move = _next_move(queues, backlog, by_name, by_name[target], idle[target])
            if move is None:
                break
            source, run = move
            queues[source].remove(run)
            backlog[source] -= _run_seconds(run) * (need(run, by_name[source]) or 1) / capacity(by_name[source])
            idle[target] -= need(run, by_name[target])
            moves.append((run["run_id"], source, target))
    return moves


def _backlog(pod: dict) -> float:
    """Seconds of queued work per unit on a pod: how long its queue keeps it busy."""
    if pod.get("queued_seconds_estimate") is not None:
        return float(pod["queued_seconds_estimate"])
    return sum(_run_seconds(r) * (need(r, pod) or 1) for r in pod.get("queued") or []) / capacity(pod)


def _run_seconds(run: dict) -> float:
    return float(run["expected_s"]) if _is_seconds(run.get("expected_s")) else 1.0


def _next_move(queues: dict, backlog: dict, by_name: dict, target: dict, free: int):
    """The last-queued run (it waits longest) of the most backlogged pod that fits `free` units
    of target; None when no queued run fits."""
    for source in sorted(queues, key=lambda n: -backlog[n]):
        for run in reversed(queues[source]):
            at_home = need(run, by_name[source])
            if at_home is not None and at_home <= free_now(by_name[source]):
                continue  # its own pod starts it now
            units = need(run, target)
            if units is not None and units <= free:
                return source, run
    return None
