"""`ops report --filter` narrows every aggregate, not only the run table: the groups of
--group-by, the pooled per-example interval, the comparison of --compare-by and the
models-by-task table count only the runs the filter kept."""

import statistics

import pytest

from ops_tasks.operations.report import build_report
from test_report import make_run

# (run id, model, env, temperature, summary avg_reward, per-example rewards)
RUNS = [
    ("m1-arith-s0", "m1", "arith", 0, 0.2, [0, 0, 1, 0, 0]),
    ("m1-arith-s1", "m1", "arith", 0, 0.4, [0, 1, 1, 0, 0]),
    ("m1-other-s0", "m1", "other", 0, 0.9, [1, 1, 1, 1, 0]),
    ("m1-arith-hot", "m1", "arith", 0.7, 1.0, [1, 1, 1, 1, 1]),
    ("m2-arith-s0", "m2", "arith", 0, 0.6, [1, 1, 1, 0, 0]),
    ("m2-other-s0", "m2", "other", 0, 0.0, [0, 0, 0, 0, 0]),
]


@pytest.fixture
def runs(root):
    for run_id, model, env, temperature, reward, examples in RUNS:
        make_run(root, run_id, summary={"ok": True, "avg_reward": reward},
                 metadata={"model_id": model, "env_id": env, "config": {"temperature": temperature}},
                 rewards={f"q{i}": score for i, score in enumerate(examples)})
    return root


def report(root, *, filters, **flags):
    """The report document, as `ops report` builds it (the CLI is driven once, below)."""
    doc = build_report(root, filters=filters, **flags)
    assert doc["ok"], doc.get("error")
    return doc


def groups_by(doc, key):
    return {g[key]: g for g in doc["groups"]}


def test_a_group_counts_only_the_runs_the_filter_kept(runs):
    doc = report(runs, group_by="model_id", filters=["env_id=arith", "temperature=0"])

    groups = groups_by(doc, "model_id")
    assert doc["count"] == 3 and set(groups) == {"m1", "m2"}
    m1 = groups["m1"]
    assert m1["runs"] == 2 and m1["avg_reward_n"] == 2
    assert m1["avg_reward_mean"] == pytest.approx(0.3)
    assert m1["avg_reward_sd"] == pytest.approx(statistics.stdev([0.2, 0.4]))
    # Pooled over the two kept runs' 5 examples each: 10 scores, 5 clusters, mean 0.3.
    assert m1["results_n"] == 10 and m1["results_clusters"] == 5
    assert m1["results_mean"] == pytest.approx(0.3)
    assert groups["m2"]["runs"] == 1 and groups["m2"]["avg_reward_mean"] == pytest.approx(0.6)


def test_a_group_the_filter_empties_is_not_shown(runs):
    doc = report(runs, group_by="env_id", filters=["model_id=m2"])

    groups = groups_by(doc, "env_id")
    assert {env: g["runs"] for env, g in groups.items()} == {"arith": 1, "other": 1}
    assert groups["other"]["avg_reward_mean"] == 0.0 and groups["arith"]["avg_reward_mean"] == pytest.approx(0.6)
    narrower = report(runs, group_by="env_id", filters=["model_id=m2", "env_id=other"])
    assert [g["env_id"] for g in narrower["groups"]] == ["other"]


def test_the_markdown_and_csv_groups_show_the_filtered_counts(ops, runs):
    doc = report(runs, group_by="model_id", filters=["env_id=other"])
    assert {g["model_id"]: g["runs"] for g in doc["groups"]} == {"m1": 1, "m2": 1}
    table = doc["markdown"].split("## Groups by model_id", 1)[1]
    assert "0.9" in table and "0.45" not in table  # m1's mean over its one kept run, not over all four

    csv = ops("report", "--group-by", "model_id", "--filter", "env_id=other", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    m1_line = next(line for line in csv.stdout.splitlines() if line.startswith("m1,"))
    assert ",1," in m1_line and "0.9" in m1_line, csv.stdout


def test_a_comparison_by_group_pairs_only_the_filtered_runs(runs):
    doc = report(runs, compare_by="model_id", compare=["m1", "m2"], filters=["env_id=arith", "temperature=0"])

    comparison = doc["comparison"]
    # m1's example scores are the mean of its two kept arith runs at temperature 0.
    assert comparison["n"] == 5
    assert comparison["mean_a"] == pytest.approx(0.3) and comparison["mean_b"] == pytest.approx(0.6)


def test_the_models_by_task_table_counts_only_the_filtered_runs(runs):
    doc = report(runs, filters=["temperature=0"])

    cell = doc["models_by_task"]["cells"]["m1"]["arith"]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(0.3)
