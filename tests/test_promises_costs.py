"""ops_tasks/operations/costs.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test
held: which prices and counts are believed (0 is a price, a negative or infinite one is not, a GPU
count is an int in 0..4096), the pod's own word on its GPUs and slots in the manifest's pricing,
the supervisor's record filling in what status.json lacks, a 0-second run costing 0, every unknown
giving None (never a crash, never 0), the report's per-correct cost only for 0/1 scores, the total's
wording, idle time at the window's edges and pod.status's running cost."""

import math
import time

import pytest

from ops_tasks import records
from ops_tasks.operations import costs
from ops_tasks.settings import host_identity, resolve_profile

HOUR = 3600.0
LIUM_8 = {"price_per_hour": 8.0, "source": "lium", "pod_gpus": 8}


def test_a_price_of_zero_counts_and_a_negative_or_infinite_one_does_not():
    # Promise: a free run costs $0.00 (priced), a bad price is "without a price" (never summed).
    assert costs.total([0.0]) == {"cost_usd": 0.0, "priced": 1, "unpriced": 0}
    assert costs.total([0.5, 0.25]) == {"cost_usd": 0.75, "priced": 2, "unpriced": 0}
    assert costs.total([-1.0, math.inf, math.nan, None, 2.0]) == {"cost_usd": 2.0, "priced": 1, "unpriced": 4}


def test_the_manifest_s_pricing_takes_the_pod_s_own_gpus_and_slots_over_lium_s_count():
    # Promise: runs.submit keeps the price, its source and what the pod said it hands out.
    assert costs.pod_pricing(None, {"gpus": 2, "slots": 2}) is None
    assert costs.pod_pricing(LIUM_8, {"gpus": 4, "slots": 6}) == {
        "price_per_hour": 8.0, "source": "lium", "gpus": 4, "slots": 6}
    assert costs.pod_pricing(LIUM_8, {"gpus": 0, "slots": 4}) == {
        "price_per_hour": 8.0, "source": "lium", "gpus": 0, "slots": 4}
    assert costs.pod_pricing(LIUM_8, {"gpus": 4096, "slots": 4096})["gpus"] == 4096
    # what is not a count (a bool, past 4096, negative, not an int) leaves Lium's count
    for bad in (True, 4097, -1, 2.0, "4"):
        assert costs.pod_pricing(LIUM_8, {"gpus": bad, "slots": bad}) == {
            "price_per_hour": 8.0, "source": "lium", "gpus": 8, "slots": None}, bad
    for capacity in (None, "junk", {}):
        assert costs.pod_pricing(LIUM_8, capacity) == {
            "price_per_hour": 8.0, "source": "lium", "gpus": 8, "slots": None}


def test_a_cpu_run_on_a_pod_that_says_it_has_no_gpu_is_priced_per_slot():
    # Promise: the pod's "0 GPUs" wins over Lium's 8: a CPU run pays one of its 4 slots.
    pricing = costs.pod_pricing({"price_per_hour": 2.0, "source": "lium", "pod_gpus": 8}, {"gpus": 0, "slots": 4})
    usage = {"submission_id": "s", "started": 0.0, "finished": HOUR, "gpus": 0}
    assert costs.run_cost(usage, pricing) == pytest.approx(0.5)


def test_the_supervisor_s_record_fills_in_what_status_json_lacks():
    # Promise: a run whose status.json lacks its times, submission or GPUs is still priced from the record.
    record = {"started_at": 100.0, "finished_at": 1900.0, "submission_id": "s", "gpus": [0, 1]}
    assert costs.usage_of({}, record) == {"submission_id": "s", "started": 100.0, "finished": 1900.0, "gpus": 2}
    assert costs.usage_of(None, record) == {"submission_id": "s", "started": 100.0, "finished": 1900.0, "gpus": 2}
    assert costs.usage_of({"gpus": "0,1"}, record)["gpus"] == 2
    # a record is no dict: only status.json
    assert costs.usage_of({"started": 5.0, "submission_id": "s"}, ["junk"]) == {
        "submission_id": "s", "started": 5.0, "finished": None, "gpus": None}


def test_gpus_that_are_not_a_list_of_at_most_4096_are_unknown():
    # Promise: a damaged gpus field gives no share (cost unknown), never a wrong count or a crash.
    base = {"started": 1.0, "finished": 2.0, "submission_id": "s"}
    assert costs.usage_of({**base, "gpus": "0,1"}, {"gpus": "01"})["gpus"] is None
    assert costs.usage_of({**base, "gpus": "0,1"}, {})["gpus"] is None
    assert costs.usage_of(base, {})["gpus"] is None
    assert costs.usage_of({**base, "gpus": list(range(4096))})["gpus"] == 4096
    assert costs.usage_of({**base, "gpus": list(range(4097))})["gpus"] is None


def test_a_run_that_took_no_time_costs_zero():
    # Promise: finished == started is a finished run costing $0, not an unknown cost.
    usage = costs.usage_of({"started": 50.0, "finished": 50.0, "submission_id": "s", "gpus": [0]})
    assert usage["finished"] == 50.0
    assert costs.run_cost(usage, {"price_per_hour": 8.0, "gpus": 8, "slots": 8}) == 0.0


def test_whatever_is_unknown_gives_an_unknown_cost_not_a_crash():
    # Promise: no price, no slots, a bad price in a manifest: the cost is None.
    assert costs.cost_of_time(3600.0, None) is None
    assert costs.cost_of_time(None, 2.0) is None
    assert costs.run_share(None, {"gpus": None, "slots": None}) is None
    assert costs.run_share(None, {"gpus": 0, "slots": 0}) is None
    usage = {"submission_id": "s", "started": 0.0, "finished": HOUR, "gpus": 1}
    assert costs.run_cost(usage, {"price_per_hour": "cheap", "gpus": 1, "slots": 1}) is None


def test_a_manifest_s_damaged_runs_are_skipped_and_the_others_priced():
    # Promise: a hand-edited manifest's odd entries do not stop the report pricing the rest.
    pod = {"price_per_hour": 2.0, "gpus": 1, "slots": 1}
    manifest = {"host_id": "h", "pricing": {"h": pod}, "runs": ["junk", {"run_id": 5}, {"run_id": "a"}]}
    assert costs.pricing_of_runs(manifest) == {"a": pod}


def test_a_row_without_a_usage_does_not_stop_the_next_being_priced(tmp_path):
    # Promise: the report prices every run it can, whichever rows before it had no start.
    records.save_manifest(tmp_path, {"submission_id": "s", "host_id": "h", "runs": [{"run_id": "b"}],
                                     "pricing": {"h": {"price_per_hour": 2.0, "gpus": 1, "slots": 1}}})
    rows = [{"run_id": "a"}, {"run_id": "b"}]
    usages = [None, {"submission_id": "s", "started": 0.0, "finished": HOUR, "gpus": 1}]
    costs.price_rows(rows, usages, tmp_path)
    assert "cost" not in rows[0]
    assert rows[1]["cost"] == pytest.approx(2.0)


def _member(cost, mean, n, interval="wilson"):
    return {"cost": cost, "mean": mean, "n": n, "interval": interval}


def test_cost_per_correct_example_only_for_runs_scored_0_or_1_with_one_correct():
    # Promise: the report's cost per correct example: cost over correct 0/1 examples, else blank.
    assert costs.group_cost([_member(3.0, 0.5, 4)]) == {"cost": 3.0, "cost_per_correct": 1.5}
    assert costs.group_cost([_member(3.0, 0.5, 10, "student t")]) == {"cost": 3.0, "cost_per_correct": None}
    assert costs.group_cost([_member(3.0, None, 10, "student t")]) == {"cost": 3.0, "cost_per_correct": None}
    assert costs.group_cost([_member(3.0, 0.5, 10), _member(1.0, 0.5, 10, "student t")]) == {
        "cost": 4.0, "cost_per_correct": None}
    assert costs.group_cost([_member(3.0, 0.0, 10)]) == {"cost": 3.0, "cost_per_correct": None}


def test_the_total_reads_as_english():
    # Promise: `$12.35 over 8 runs (2 more without a price)`, "1 run" singular, no empty parenthesis.
    assert costs.spent_text({"cost_usd": 1.5, "priced": 1, "unpriced": 0}) == "$1.50 over 1 run"
    assert costs.spent_text({"cost_usd": 3.0, "priced": 2, "unpriced": 0}) == "$3.00 over 2 runs"
    assert costs.spent_text({"cost_usd": 12.345, "priced": 8, "unpriced": 2}) == \
        "$12.35 over 8 runs (2 more without a price)"


def test_idle_time_at_the_window_s_edges():
    # Promise: with no clock offset the runs' times are taken as they are; a pod busy throughout is idle 0 s.
    assert costs.idle_time([{"started": 0.0, "finished": 200.0}], 0.0, 300.0) == 100.0
    assert costs.idle_time([{"started": 0.0, "finished": 300.0}], 0.0, 300.0) == 0.0
    assert costs.idle_time([{"started": 0.0}], 0.0, 300.0) == 0.0


def test_a_lium_pod_s_running_cost_is_its_uptime_times_its_price():
    # Promise: pod.status shows price, uptime, cost so far and the pod's name; nothing without price and creation.
    record = {"price_per_hour": 10.0, "created": 1000.0, "name": "ops-mypod"}
    assert costs.running_cost(record, now=1000.0 + 2 * HOUR) == {
        "price_per_hour": 10.0, "uptime_s": 2 * HOUR, "cost_usd": pytest.approx(20.0), "pod": "ops-mypod"}
    assert costs.running_cost(record, now=1000.0)["uptime_s"] == 0.0
    assert costs.running_cost(record, now=500.0)["uptime_s"] == 0.0  # the laptop's clock behind
    assert costs.running_cost({"created": 1000.0}) is None
    assert costs.running_cost({"price_per_hour": 10.0}) is None
    now = time.time()
    so_far = costs.running_cost({"price_per_hour": 10.0, "created": now - HOUR})
    assert HOUR <= so_far["uptime_s"] < HOUR + 60


def test_pod_status_shows_the_running_cost_of_the_lium_pod_behind_a_host(tmp_path, monkeypatch):
    # Promise: pod.status of a host pod.up rented on Lium shows what that pod has cost so far.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    profile = resolve_profile({"profiles": {"p": {"destination": "root@203.0.113.9:2200"}}}, "p", tmp_path)
    records.save_lium_pod("mypod", {"id": "p1", "name": "ops-mypod", "price_per_hour": 10.0, "gpu_count": 8,
                                    "uptime_s": 7200}, host_identity(profile))
    shown = costs.lium_running_cost(profile)
    assert shown["pod"] == "ops-mypod" and shown["price_per_hour"] == 10.0
    assert shown["cost_usd"] == pytest.approx(20.0, abs=0.1)
