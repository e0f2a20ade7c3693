"""Clusters (../shared/cases/numbers.md, "No cluster key"): questions that share a passage are not
independent; a results line's `cluster` field (or --cluster-by FIELD) clusters the per-run
interval, groups and comparisons (CR1, t with G - 1 degrees of freedom), as inspect-ai's
stderr(cluster=...) does, and the header says so."""

import json
import math
import random

import pytest

from test_report import make_run

from ops_tasks.operations import report
from ops_tasks.operations.report import build_report, reward_stats


def passages(rng, count=50, per=4, ability=0.0, spread=1.0, field="cluster"):
    """Lines of `count` passages of `per` questions: a passage's shared difficulty makes its
    questions' rewards move together."""
    lines, truth = [], 0.0
    for passage in range(count):
        shift = rng.gauss(0, spread)
        for question in range(per):
            p = 1 / (1 + math.exp(-(ability + shift + rng.gauss(0, 0.3))))
            lines.append({"id": f"p{passage}-q{question}", field: f"p{passage}", "reward": float(rng.random() < p)})
    return lines


def write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_a_runs_interval_is_clustered_by_its_lines_cluster_as_statsmodels(tmp_path):
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    lines = passages(random.Random(1))
    write(tmp_path / "results.jsonl", lines)

    stats, error = reward_stats(str(tmp_path / "results.jsonl"), "r")
    fit = sm.OLS(np.array([line["reward"] for line in lines]), np.ones(len(lines))).fit(
        cov_type="cluster", cov_kwds={"groups": np.array([int(line["cluster"][1:]) for line in lines])}, use_t=True)

    assert error is None and stats["interval"] == "clustered by cluster, 50 clusters" and stats["clusters"] == 50
    assert stats["n"] == 200 and stats["mean"] == pytest.approx(fit.params[0])
    assert stats["se"] == pytest.approx(fit.bse[0], rel=1e-10)
    assert (stats["ci95_low"], stats["ci95_high"]) == (pytest.approx(fit.conf_int()[0][0], rel=1e-9),
                                                       pytest.approx(fit.conf_int()[0][1], rel=1e-9))


def test_cluster_by_names_another_field_and_the_header_says_what_was_clustered(tmp_path):
    rng = random.Random(2)
    for run_id, model in (("a", "m/a"), ("b", "m/b")):
        run = make_run(tmp_path, run_id, metadata={"run_id": run_id, "model_id": model, "env_id": "t"})
        write(run / "results.jsonl", passages(rng, field="passage_id"))

    plain = build_report(tmp_path)
    by_passage = build_report(tmp_path, cluster_by="passage_id", compare=["a", "b"])

    assert {r["interval"] for r in plain["rows"]} == {"wilson"}  # `cluster` is not the field: by example
    assert {r["interval"] for r in by_passage["rows"]} == {"clustered by passage_id, 50 clusters"}
    assert "- intervals clustered by: the results field passage_id (2 of 2 runs name clusters); elsewhere by " \
        "example" in by_passage["markdown"]
    assert "clustered by" not in "\n".join(plain["markdown"].splitlines()[:12])
    c = by_passage["comparison"]
    assert c["test"] == "clustered t (CR1, 50 clusters)" and c["clusters"] == 50 and c["mcnemar"] is None


def test_a_group_of_seeds_pools_its_examples_clustered_by_passage_as_statsmodels(tmp_path):
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    rng = random.Random(3)
    scores, groups = [], []
    for seed in range(3):
        lines = passages(rng)
        run = make_run(tmp_path, f"s{seed}", metadata={"run_id": f"s{seed}", "model_id": "m", "env_id": "t"})
        write(run / "results.jsonl", lines)
        scores += [line["reward"] for line in lines]
        groups += [int(line["cluster"][1:]) for line in lines]

    group = build_report(tmp_path, group_by="model_id")["groups"][0]
    fit = sm.OLS(np.array(scores), np.ones(len(scores))).fit(cov_type="cluster", cov_kwds={"groups": np.array(groups)},
                                                            use_t=True)

    assert group["results_clusters"] == 50 and group["results_interval"] == "clustered by cluster, 50 clusters"
    assert group["results_se"] == pytest.approx(fit.bse[0], rel=1e-10)
    assert group["results_ci95_low"] == pytest.approx(fit.conf_int()[0][0], rel=1e-9)


def test_clustered_intervals_cover_as_promised_where_unclustered_ones_do_not(tmp_path):
    # 50 passages x 4 questions, a strong passage effect: the statistician saw 83% for the
    # interval over examples. The same reading with the cluster field covers ~95%.
    rng, reps = random.Random(5), 400
    path = tmp_path / "results.jsonl"
    covered = {"cluster": 0, "none": 0}
    truth = _true_mean(ability=0.3, spread=1.2)
    for _ in range(reps):
        lines = passages(rng, ability=0.3, spread=1.2)
        for field in covered:
            write(path, lines)
            stats, _ = reward_stats(str(path), "r", cluster=field)
            covered[field] += stats["ci95_low"] <= truth <= stats["ci95_high"]
    se = math.sqrt(0.95 * 0.05 / reps)
    assert abs(covered["cluster"] / reps - 0.95) < 3 * se, covered
    assert covered["none"] / reps < 0.90, covered


def _true_mean(ability, spread, draws=400_000):
    """The population accuracy of passages(): by simulation with a fixed seed (to ~1e-3)."""
    rng = random.Random(0)
    total = 0.0
    for _ in range(draws):
        total += 1 / (1 + math.exp(-(ability + rng.gauss(0, spread) + rng.gauss(0, 0.3))))
    return total / draws
