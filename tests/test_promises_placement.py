"""ops_tasks/operations/placement.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test
held: a pod's units (its GPUs, else its CPU slots, of which `free_slots` are free), runs' expected
seconds (an unknown one taken as the average of the known), a run needing no GPU starting at once,
a queued run going where it starts soonest and on a tie where more units are free then, the error
for a duplicated pod name or a run no pod fits, and rebalance taking from the most backlogged pod
(per unit, counted again after each move) onto the most idle pod first, skipping only the runs
their own pod starts now."""

import pytest

from ops_tasks.errors import ConfigError
from ops_tasks.operations.placement import _backlog, _Pod, capacity, durations, free_now, need, place, rebalance
from ops_tasks.runtime.contract import CPU_POOL, GPU_POOL


def gpu_pod(name, gpus, free, **more):
    return {"name": name, "gpu_count": gpus, "free_gpus": free, **more}


def run(run_id, gpus, seconds=None):
    return {"run_id": run_id, "gpus": gpus, **({} if seconds is None else {"expected_s": seconds})}


def test_a_cpu_pod_runs_as_many_runs_at_once_as_its_slots_and_at_least_one():
    # Promise: a pod without GPUs hands out its CPU slots (1 when it does not say), free_slots of them free now.
    assert capacity({"name": "c", "gpu_count": 0, "slots": 4}) == 4
    assert capacity({"name": "c", "gpu_count": 0, "slots": 1}) == 1
    assert capacity({"name": "c", "gpu_count": 0}) == 1
    assert capacity({"name": "c", "gpu_count": 0, "slots": 0}) == 1
    assert free_now({"name": "c", "gpu_count": 0, "slots": 4, "free_slots": 2}) == 2
    assert free_now({"name": "c", "gpu_count": 0, "slots": 4, "free_slots": 0}) == 0
    assert free_now({"name": "c", "gpu_count": 0, "slots": 4}) == 4


def test_a_run_without_an_estimate_counts_as_long_as_the_average_known_one():
    # Promise: unknown runs count as equals of the known ones (1 s when none is known); 0 s is an estimate.
    assert durations([run("a", 1, 10), run("b", 1, 30), run("c", 1)]) == {"a": 10.0, "b": 30.0, "c": 20.0}
    assert durations([run("a", 1)]) == {"a": 1.0}
    assert durations([run("a", 1, 0), run("b", 1)]) == {"a": 0.0, "b": 0.0}
    assert durations([run("a", 1, 0.5), run("b", 1)]) == {"a": 0.5, "b": 0.5}


def test_a_run_needing_no_gpu_starts_at_once_on_a_pod_whose_gpus_are_busy():
    # Promise: a CPU run (gpus 0) takes no GPU, so it is first in the busy pod's list, before the GPU run.
    assert place([run("gpu", 1), run("cpu", 0, 3)], [gpu_pod("p", 1, 0)]) == {"p": ["cpu", "gpu"]}


def test_a_queued_run_goes_where_more_units_are_free_when_it_can_start():
    # Promise: both pods free a GPU at 10 s; the one with two free then takes the run.
    pods = [gpu_pod("one", 1, 0, queued_seconds_estimate=10), gpu_pod("two", 2, 0, queued_seconds_estimate=10)]
    assert place([run("r", 1, 100)], pods) == {"one": [], "two": ["r"]}
    # a tie at 10 s again: x has both units free at 10 s, y one (its other runs a 15 s job to 15 s)
    pods = [gpu_pod("x", 2, 0, queued_seconds_estimate=10), gpu_pod("y", 3, 2, queued_seconds_estimate=10)]
    assert place([run("y1", 1, 15), run("y2", 1, 15), run("r", 1, 10)], pods) == {"x": ["r"], "y": ["y1", "y2"]}


def test_a_fleet_naming_a_pod_twice_or_without_a_pod_big_enough_is_refused_in_words():
    # Promise: the ConfigError names what is wrong: the pod named twice; the GPUs asked and the largest pod.
    with pytest.raises(ConfigError, match=r"^pod p is named twice$"):
        place([run("r", 1)], [gpu_pod("p", 1, 1), gpu_pod("p", 1, 1)])
    cpu_only = [{"name": "c", "gpu_count": 0, "slots": 2}]
    with pytest.raises(ConfigError, match=r"^run r needs 2 GPUs, which no pod of the fleet has \(largest: 0 GPUs\)$"):
        place([run("r", 2)], cpu_only)


def test_the_pod_with_most_idle_units_takes_moved_runs_first():
    # Promise: rebalance fills the most idle pod first (here both runs go to the two-GPU pod).
    pods = [gpu_pod("a-small", 1, 1), gpu_pod("b-big", 2, 2),
            gpu_pod("s", 1, 0, queued=[run("s1", 1, 10), run("s2", 1, 10)])]
    assert rebalance(pods) == [("s2", "s", "b-big"), ("s1", "s", "b-big")]


def test_runs_move_from_the_most_backlogged_pod_per_unit():
    # Promise: an idle pod takes from the pod whose queue keeps each of its units busy longest.
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1, 40)])            # 40 s per unit
    b = gpu_pod("b", 4, 0, queued=[run("b1", 2, 100)])           # 200 GPU-s over 4 GPUs: 50 s per unit
    assert rebalance([a, b, gpu_pod("t", 2, 2)]) == [("b1", "b", "t")]
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1, 100)])           # 100 s per unit
    b = gpu_pod("b", 4, 0, queued=[run(f"b{i}", 1, 100) for i in range(3)])  # 300 over 4: 75
    assert rebalance([a, b, gpu_pod("t", 1, 1)]) == [("a1", "a", "t")]
    # a run without an estimate weighs 1 s, less than a known 1.5 s
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 1.5)])
    assert rebalance([a, b, gpu_pod("t", 1, 1)]) == [("b1", "b", "t")]
    # a queued CPU run (it needs no GPU) weighs as one unit's worth: 40 + 20 = 60 s, under b's 80
    a = gpu_pod("a", 1, 0, queued=[run("a1", 0, 40), run("a2", 1, 20)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 80)])
    assert rebalance([a, b, gpu_pod("t", 1, 1)]) == [("b1", "b", "t")]


def test_a_pod_s_backlog_is_counted_again_after_each_run_moved_off_it():
    # Promise: after a's 100 s run moves, a has 30 s left, under b's 50: b's run moves next.
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1, 30), run("a2", 1, 100)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 50)])
    assert rebalance([a, b, gpu_pod("t", 2, 2)]) == [("a2", "a", "t"), ("b1", "b", "t")]
    # a two-GPU run off a two-GPU pod takes 2 x 100 s / 2 GPUs = 100 s of its 130 s per unit
    a = gpu_pod("a", 2, 0, queued=[run("a1", 2, 30), run("a2", 2, 100)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 50)])
    assert rebalance([a, b, gpu_pod("t", 4, 4)]) == [("a2", "a", "t"), ("b1", "b", "t")]
    # a run its pod is too small for (2 GPUs on 1) weighs one unit, 100 s: 80 s left, over b's 50
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1, 80), run("a2", 2, 100)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 50)])
    assert rebalance([a, b, gpu_pod("t", 4, 3)]) == [("a2", "a", "t"), ("a1", "a", "t")]


def test_a_pod_with_no_unit_left_takes_no_more_runs():
    # Promise: moves go only where a unit is idle: once t's GPU is taken (its CPU slot is busy), the
    # full CPU pod's run stays; with t's CPU slot idle, that run (gpus: 0) moves there too.
    a = gpu_pod("a", 1, 0, queued=[run("a1", 1, 100)])
    cpu = {"name": "c", "gpu_count": 0, "slots": 1, "free_slots": 0, "queued": [run("c1", 0, 10)]}
    assert rebalance([a, cpu, gpu_pod("t", 1, 1, free_slots=0)]) == [("a1", "a", "t")]
    assert rebalance([a, cpu, gpu_pod("t", 1, 1, slots=1)]) == [("a1", "a", "t"), ("c1", "c", "t")]


def test_a_run_behind_one_its_pod_starts_now_may_still_move():
    # Promise: s starts its 1-GPU run on its free GPU; the 2-GPU run queued before it moves to t.
    s = gpu_pod("s", 2, 1, queued=[run("s1", 2, 50), run("s2", 1, 10)])
    assert rebalance([s, gpu_pod("t", 2, 2)]) == [("s1", "s", "t")]


def test_a_pod_s_own_estimate_of_its_queue_is_its_backlog():
    # Promise: a pod that says its queue takes 500 s is more backlogged than b's 100 s run, whatever a1's 10 s.
    a = gpu_pod("a", 1, 0, queued_seconds_estimate=500, queued=[run("a1", 1, 10)])
    b = gpu_pod("b", 1, 0, queued=[run("b1", 1, 100)])
    assert rebalance([a, b, gpu_pod("t", 1, 1)]) == [("a1", "a", "t")]


# ---------------------------------------------------------------- the two pools of a pod with GPUs


def test_a_gpu_pod_counts_its_gpus_and_its_cpu_slots_apart():
    # Promise: on a pod with GPUs the main pool is its GPUs; its CPU slots are a pool of their own
    # (all free when free_slots is not given), never capped by its GPU count.
    pod = gpu_pod("g", 2, 1, slots=4)
    assert free_now(pod) == 1 and capacity(pod) == 2
    assert capacity(pod, CPU_POOL) == 4 and free_now(pod, CPU_POOL) == 4
    # a pod without GPUs has no GPU free, whatever a stale free_gpus says
    assert capacity({"name": "c", "slots": 2}, GPU_POOL) == 0
    assert free_now({"name": "c", "slots": 4, "free_gpus": 3}, GPU_POOL) == 0


def test_a_run_asking_no_gpu_count_takes_one_slot_of_a_cpu_pod():
    assert need({"run_id": "a", "gpus": None}, {"name": "c", "slots": 2}) == (CPU_POOL, 1)


def test_a_gpu_pod_s_cpu_slots_all_wait_behind_its_present_work():
    # 4 slots, 1 free: 3 busy until the pod's estimate, not gpu_count - 1 of them.
    clock = _Pod(gpu_pod("g", 2, 2, slots=4, free_slots=1, queued_seconds_estimate=50))
    assert sorted(clock.free_at[CPU_POOL]) == [0.0, 50.0, 50.0, 50.0]


def test_a_backlog_counts_a_cpu_run_per_slot_and_a_run_too_big_per_main_unit():
    # Promise: backlog is seconds per unit of the pool a run takes: a gpus: 0 run over the CPU
    # slots; a run the pod cannot hold as one unit of its main pool.
    cpu_run = gpu_pod("g", 2, 0, slots=4, queued=[run("a", 0, 8)])
    too_big = gpu_pod("g", 2, 0, queued=[run("a", 4, 10)])
    assert _backlog(cpu_run) == 2.0
    assert _backlog(too_big) == 5.0
