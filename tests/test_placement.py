"""Placement of a fleet submission's runs and rebalancing of queued ones (operations/placement.py):
examples, then properties over generated fleets (hypothesis)."""

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from ops_tasks.errors import ConfigError
from ops_tasks.operations.placement import POOLS, busy_until, capacity, free_now, makespan, need, place, rebalance


def pod(name, gpu_count=0, free_gpus=None, slots=1, queued_s=None, **extra):
    return {"name": name, "gpu_count": gpu_count, "free_gpus": gpu_count if free_gpus is None else free_gpus,
            "slots": slots, "queued_seconds_estimate": queued_s, **extra}


def run(run_id, expected_s=10.0, gpus=1):
    return {"run_id": run_id, "gpus": gpus, "expected_s": expected_s}


def timeline(placement, runs, pods):
    """{run_id: (pod, start, finish, pool, units)}: each pod starting its list in order, each run
    on the units of its pool (GPUs or CPU slots) free earliest (a reference written apart from the
    module's own clock)."""
    by_id = {r["run_id"]: r for r in runs}
    out = {}
    for p in pods:
        free_at = {pool: [0.0] * free_now(p, pool) + [busy_until(p)] * (capacity(p, pool) - free_now(p, pool))
                   for pool in POOLS}
        for run_id in placement[p["name"]]:
            if run_id in p.get("run_ids", []):
                continue
            pool, units = need(by_id[run_id], p)
            free_at[pool].sort()
            start = free_at[pool][units - 1] if units else 0.0
            finish = start + by_id[run_id]["expected_s"]
            free_at[pool][:units] = [finish] * units
            out[run_id] = (p["name"], start, finish, pool, units)
    return out


# ---------------------------------------------------------------- examples


def test_free_gpus_are_filled_first_then_the_rest_queue_where_they_finish_soonest():
    pods = [pod("a", gpu_count=2, free_gpus=1, queued_s=100), pod("b", gpu_count=2)]
    runs = [run("r1", 50), run("r2", 40), run("r3", 30), run("r4", 20)]
    placed = place(runs, pods)
    when = timeline(placed, runs, pods)
    assert sorted(r for r, (_, start, _, _, _) in when.items() if start == 0) == ["r1", "r2", "r3"]
    assert when["r4"][:2] == ("b", 30)  # behind r3 on b (done at 30), not behind a's backlog of 100


def test_a_run_asking_for_more_gpus_goes_where_they_are():
    pods = [pod("small", gpu_count=2), pod("big", gpu_count=8)]
    placed = place([run("wide", 10, gpus=8), run("narrow", 10, gpus=1)], pods)
    assert placed["big"] == ["wide"] and placed["small"] == ["narrow"]


def test_a_run_with_no_gpu_count_takes_the_whole_pod():
    pods = [pod("a", gpu_count=4, free_gpus=3), pod("b", gpu_count=4)]
    assert place([run("all", 10, gpus=None)], pods) == {"a": [], "b": ["all"]}


def test_cpu_pods_take_cpu_runs_on_their_slots_and_never_a_gpu_run():
    pods = [pod("cpu", slots=3), pod("gpu", gpu_count=1)]
    placed = place([run("c1", 5, gpus=0), run("c2", 5, gpus=0), run("g", 5, gpus=1)], pods)
    assert placed["gpu"][0] == "g" and set(placed["cpu"]) >= {"c1", "c2"} - set(placed["gpu"])


def test_runs_a_pod_has_already_stay_there():
    pods = [pod("a", gpu_count=1, free_gpus=0, queued_s=1000, run_ids=["old"]), pod("b", gpu_count=4)]
    placed = place([run("old", 10), run("new", 10)], pods)
    assert placed == {"a": ["old"], "b": ["new"]}


def test_a_run_that_fits_no_pod_is_refused_naming_it():
    with pytest.raises(ConfigError, match="run huge needs 16 GPUs.*largest: 8 GPUs"):
        place([run("huge", gpus=16)], [pod("a", gpu_count=8)])
    with pytest.raises(ConfigError, match="run g needs 1 GPUs"):
        place([run("g", gpus=1)], [pod("cpu", slots=4)])


def test_runs_without_an_estimate_count_as_the_average():
    pods = [pod("a", gpu_count=1), pod("b", gpu_count=1)]
    placed = place([run("known", 100), {"run_id": "unknown", "gpus": 1}], pods)
    assert sorted(map(len, placed.values())) == [1, 1]


def test_the_same_run_or_pod_twice_is_refused():
    with pytest.raises(ConfigError, match="run r is named twice"):
        place([run("r"), run("r")], [pod("a", gpu_count=1)])
    with pytest.raises(ConfigError, match="pod a is named twice"):
        rebalance([pod("a"), pod("a")])


def test_rebalance_moves_the_last_queued_runs_of_the_longest_backlog_to_idle_gpus():
    pods = [pod("busy", gpu_count=2, free_gpus=0, queued=[run("q1"), run("q2"), run("q3")], running=["r1", "r2"]),
            pod("short", gpu_count=2, free_gpus=0, queued_s=5, queued=[run("s1")]),
            pod("idle", gpu_count=2)]
    assert rebalance(pods) == [("q3", "busy", "idle"), ("q2", "busy", "idle")]


def test_rebalance_leaves_a_run_its_own_pod_starts_now_and_one_that_fits_nowhere_idle():
    pods = [pod("a", gpu_count=4, free_gpus=2, queued=[run("fits-here", gpus=2), run("wide", gpus=4)]),
            pod("b", gpu_count=2)]
    assert rebalance(pods) == []


# ---------------------------------------------------------------- properties


# Enough examples to find a bad fleet in a few seconds; no example database left in the checkout.
PROPERTY = settings(max_examples=100, deadline=None, database=None)
run_ids = (f"r{i}" for i in itertools.count())


@st.composite
def fleets(draw, max_runs=16):
    pods = []
    for index in range(draw(st.integers(1, 4))):
        gpu_count = draw(st.sampled_from([0, 1, 2, 4, 8]))
        pods.append(pod(f"p{index}", gpu_count=gpu_count, free_gpus=draw(st.integers(0, gpu_count)),
                        slots=draw(st.integers(1, 4)), queued_s=draw(st.floats(0, 500))))
    largest = max(p["gpu_count"] for p in pods)
    runs = []
    for index in range(draw(st.integers(0, max_runs))):
        gpus = draw(st.sampled_from([0, None, *range(1, largest + 1)])) if largest else 0
        runs.append(run(f"r{index}", draw(st.floats(1, 1000)), gpus))
    present = draw(st.lists(st.sampled_from([r["run_id"] for r in runs]), unique=True)) if runs else []
    for run_id in present:
        home = draw(st.sampled_from(pods))
        home.setdefault("run_ids", []).append(run_id)
    return runs, pods


@given(fleets())
@PROPERTY
def test_every_run_is_placed_exactly_once_and_what_a_pod_has_stays(fleet):
    runs, pods = fleet
    placed = place(runs, pods)
    every = [r for ids in placed.values() for r in ids]
    assert sorted(every) == sorted(r["run_id"] for r in runs)
    for p in pods:
        assert set(p.get("run_ids", [])) <= set(placed[p["name"]])


@given(fleets())
@PROPERTY
def test_no_pod_is_over_its_units_at_any_moment_nor_over_its_free_gpus_at_start(fleet):
    runs, pods = fleet
    when = timeline(place(runs, pods), runs, pods)
    for p, pool in itertools.product(pods, POOLS):
        mine = [w for w in when.values() if w[0] == p["name"] and w[3] == pool]
        for moment in {start for _, start, _, _, _ in mine}:
            in_use = sum(units for _, start, finish, _, units in mine if start <= moment < finish)
            assert in_use <= capacity(p, pool)
            if moment < busy_until(p):
                assert in_use <= free_now(p, pool)


@given(fleets())
@PROPERTY
def test_no_run_waits_while_a_pod_where_it_fits_keeps_units_idle_from_the_start(fleet):
    runs, pods = fleet
    placed = place(runs, pods)
    when = timeline(placed, runs, pods)
    by_id = {r["run_id"]: r for r in runs}
    for p, pool in itertools.product(pods, POOLS):
        idle_from_start = free_now(p, pool) - sum(w[4] for w in when.values()
                                                  if w[0] == p["name"] and w[3] == pool and w[1] == 0)
        for run_id, (_, start, _, _, _) in when.items():
            needed = need(by_id[run_id], p)
            if start > 0 and needed is not None and needed[0] == pool:
                assert needed[1] > idle_from_start, (run_id, p["name"])
    assert makespan(placed, runs, pods) == max((w[2] for w in when.values()), default=0.0)


def optimal_makespan(lengths, machines):
    best = float("inf")
    for assignment in itertools.product(range(machines), repeat=len(lengths)):
        loads = [0.0] * machines
        for length, machine in zip(lengths, assignment):
            loads[machine] += length
        best = min(best, max(loads))
    return best


@given(st.integers(1, 3), st.lists(st.integers(1, 60), min_size=1, max_size=7))
@PROPERTY
def test_on_identical_gpus_the_makespan_is_within_the_lpt_bound_of_the_optimum(machines, lengths):
    pods = [pod(f"p{i}", gpu_count=1) for i in range(machines)]
    runs = [run(f"r{i}", float(length)) for i, length in enumerate(lengths)]
    bound = (4 / 3 - 1 / (3 * machines)) * optimal_makespan(lengths, machines)
    assert makespan(place(runs, pods), runs, pods) <= bound + 1e-9


@st.composite
def busy_fleets(draw):
    pods = []
    for index in range(draw(st.integers(1, 4))):
        gpu_count = draw(st.sampled_from([0, 1, 2, 4]))
        queued = [run(next(run_ids), draw(st.floats(1, 100)),
                      draw(st.sampled_from([0, None, *range(1, gpu_count + 1)])) if gpu_count else 0)
                  for _ in range(draw(st.integers(0, 6)))]
        pods.append(pod(f"p{index}", gpu_count=gpu_count, free_gpus=draw(st.integers(0, gpu_count)),
                        slots=draw(st.integers(1, 3)), queued=queued, running=[next(run_ids)]))
    return pods


@given(busy_fleets())
@PROPERTY
def test_rebalance_moves_queued_runs_once_to_idle_pods_that_start_them_and_never_a_running_one(pods):
    moves = rebalance(pods)
    by_name = {p["name"]: p for p in pods}
    moved = [run_id for run_id, _, _ in moves]
    assert len(moved) == len(set(moved))
    running = {r for p in pods for r in p["running"]}
    assert not running & set(moved)
    taken = {}
    for run_id, source, target in moves:
        queued = {r["run_id"]: r for r in by_name[source]["queued"]}
        assert run_id in queued and source != target and not by_name[target].get("queued")
        pool, units = need(queued[run_id], by_name[target])
        taken[target, pool] = taken.get((target, pool), 0) + units
    for (target, pool), units in taken.items():
        assert units <= free_now(by_name[target], pool)
