"""The new intervals and tests of ops_tasks/operations/stats.py do what they say, by simulation with a
known truth: seeded, 2,000 replications (1,000 for the paired t at n = 500), each rate asserted within
3 binomial standard errors of its nominal value, so none flakes and each runs in a second or two."""

import math

import pytest

from ops_tasks.operations.stats import (clustered, holm, mcnemar_exact_p, mcnemar_power, of,
                                        paired_t_mde, paired_t_power, prediction_interval, t975,
                                        t_test_p, tost_paired)

np = pytest.importorskip("numpy")


def within_3_se(rate: float, nominal: float, reps: int) -> bool:
    return abs(rate - nominal) <= 3 * math.sqrt(nominal * (1 - nominal) / reps)


def test_prediction_interval_holds_a_new_seed_95_percent_of_the_time():
    rng = np.random.default_rng(11)
    reps, k = 2000, 3
    runs = rng.normal(0.7, 0.02, size=(reps, k + 1))  # k seeds seen, one more to come
    hits = 0
    for row in runs:
        low, high = prediction_interval(row[:k].tolist())
        hits += low <= row[k] <= high
    assert within_3_se(hits / reps, 0.95, reps), hits / reps  # 0.9565 with this seed


def test_clustered_interval_covers_with_correlated_items_and_the_plain_one_does_not():
    rng = np.random.default_rng(12)
    reps, passages, per = 2000, 50, 4
    clustered_hits = plain_hits = 0
    for _ in range(reps):
        # differences B - A: a passage effect shared by its 4 questions (intra-class correlation 0.5)
        diffs = rng.normal(0.0, 0.1, size=(passages, 1)) + rng.normal(0.0, 0.1, size=(passages, per))
        result = clustered((math.fsum(row), len(row)) for row in diffs.tolist())
        clustered_hits += abs(result["mean"]) <= t975(passages - 1) * result["se"]
        plain = of(diffs.ravel().tolist())
        plain_hits += abs(plain.mean) <= t975(plain.n - 1) * plain.se
    assert within_3_se(clustered_hits / reps, 0.95, reps), clustered_hits / reps  # 0.949 with this seed
    assert plain_hits / reps < 0.85, plain_hits / reps  # 0.7775: design effect 1 + 3 * 0.5 = 2.5


def test_tost_size_at_the_margin_is_at_most_5_percent():
    rng = np.random.default_rng(13)
    reps, n, margin = 2000, 30, 0.05
    diffs = rng.normal(margin, 0.1, size=(reps, n))  # the truth on the edge of equivalence
    means, ses = diffs.mean(axis=1), diffs.std(axis=1, ddof=1) / math.sqrt(n)
    rejections = sum(tost_paired(m, s, n - 1, margin) < 0.05 for m, s in zip(means, ses))
    assert rejections / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps), rejections / reps  # 0.0485 with this seed


def test_holm_family_wise_error_over_5_true_nulls_is_at_most_5_percent():
    rng = np.random.default_rng(14)
    reps, n = 2000, 20
    # five models each compared with one baseline on the same 20 examples: correlated p-values
    baseline = rng.normal(0.0, 1.0, size=(reps, 1, n))
    diffs = rng.normal(0.0, 1.0, size=(reps, 5, n)) - baseline
    means, ses = diffs.mean(axis=2), diffs.std(axis=2, ddof=1) / math.sqrt(n)
    any_false = 0
    for row_means, row_ses in zip(means, ses):
        p_values = [t_test_p(m, s, n - 1) for m, s in zip(row_means, row_ses)]
        any_false += min(holm(p_values)) < 0.05
    assert any_false / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps), any_false / reps  # 0.043 with this seed


def test_mcnemar_power_predicts_the_rejection_rate_at_n_50():
    rng = np.random.default_rng(15)
    reps, n, p10, p01 = 2000, 50, 0.04, 0.20
    kinds = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=reps)
    rejections = sum(mcnemar_exact_p(int(b), int(c)) < 0.05 for b, c, _ in kinds)
    predicted = mcnemar_power(p10, p01, n)  # 0.566; simulated 0.5615
    assert within_3_se(rejections / reps, predicted, reps), (rejections / reps, predicted)


def test_paired_t_power_predicts_the_rejection_rate_at_n_500():
    rng = np.random.default_rng(16)
    reps, n, sd = 1000, 500, 0.3
    effect = paired_t_mde(sd, n)  # power 0.8 by construction
    diffs = rng.normal(effect, sd, size=(reps, n))
    means, ses = diffs.mean(axis=1), diffs.std(axis=1, ddof=1) / math.sqrt(n)
    rejections = sum(t_test_p(m, s, n - 1) < 0.05 for m, s in zip(means, ses))
    assert paired_t_power(effect, sd, n) == pytest.approx(0.8, abs=1e-9)
    assert within_3_se(rejections / reps, 0.8, reps), rejections / reps  # 0.812 with this seed
