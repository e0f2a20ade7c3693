"""The report's formulas (ops_tasks/operations/stats.py), each against numbers computed by hand or
by scipy in the test."""

import math
import random
import statistics
from math import comb

import pytest

from ops_tasks.operations.stats import Welford, clustered, mcnemar_exact_p, t975, t_cdf, t_test_p, wilson

scipy_stats = pytest.importorskip("scipy.stats")

Z = 1.959963984540054


def test_mcnemar_exact_p_by_hand():
    # b=1, c=6: p = 2 * (C(7,0) + C(7,1)) / 2^7
    assert mcnemar_exact_p(1, 6) == pytest.approx(2 * (comb(7, 0) + comb(7, 1)) / 2 ** 7) == 0.125
    assert mcnemar_exact_p(6, 1) == 0.125
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(4, 4) == 1.0  # 2 * P(X <= 4) > 1, capped
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 2 ** 10)
    assert 0.0 < mcnemar_exact_p(400, 600) < 1e-9  # exact integers: no overflow for large b + c


# Past 5,000 discordant pairs the tail is the incomplete beta's, not a sum of exact integers.
@pytest.mark.parametrize("b,c", [(1, 6), (3, 12), (20, 31), (7, 7), (0, 25), (2450, 2551), (49800, 50200),
                                 (3000, 3300), (60000, 60000)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    expected = scipy_stats.binomtest(min(b, c), b + c, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9)


def test_welford_matches_the_textbook_formulas():
    rng = random.Random(7)
    values = [rng.gauss(3.0, 2.0) for _ in range(1000)]
    acc = Welford()
    for value in values:
        acc.add(value)
    assert acc.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
    assert acc.sd == pytest.approx(statistics.stdev(values), rel=1e-12)
    assert acc.se == pytest.approx(statistics.stdev(values) / math.sqrt(1000), rel=1e-12)
    one = Welford()
    one.add(1.0)
    assert one.sd is None and one.interval(Z) == (None, None)


def test_huge_values_give_a_finite_mean():
    acc = Welford()
    for _ in range(3):
        acc.add(1e308)
    assert acc.mean == 1e308 and acc.sd == 0.0


def test_t_quantiles():
    assert t975(1) == pytest.approx(12.706, abs=1e-3)
    assert t975(4) == pytest.approx(2.776, abs=1e-3)
    assert t975(40) == pytest.approx(2.0211, abs=1e-4)
    assert t975(120) == pytest.approx(1.9799, abs=1e-4)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 29, 30, 31, 45, 100, 1000, 100000])
def test_t_quantile_and_cdf_match_scipy(df):
    assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)
    for t in (-3.0, -0.5, 0.0, 0.7, 2.2, 8.0):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-14)


def test_paired_t_p_matches_scipy():
    rng = random.Random(3)
    a = [rng.random() for _ in range(40)]
    b = [x + rng.gauss(0.05, 0.2) for x in a]
    diffs = [y - x for x, y in zip(a, b)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert t_test_p(statistics.fmean(diffs), se, len(diffs) - 1) == pytest.approx(
        scipy_stats.ttest_rel(b, a).pvalue, rel=1e-8)


@pytest.mark.parametrize("successes,n", [(0, 10), (3, 10), (10, 10), (13, 13), (25, 25), (27, 30), (1, 1)])
def test_wilson_matches_scipy_and_holds_the_proportion(successes, n):
    expected = scipy_stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    low, high = wilson(successes, n)
    assert (low, high) == (pytest.approx(expected.low, abs=1e-12), pytest.approx(expected.high, abs=1e-12))
    assert low <= successes / n <= high
    if successes == n:
        assert high == 1.0  # exactly: 0.9999999999999999 put the mean above its interval
    if successes == 0:
        assert low == 0.0


def test_clustered_se_by_hand():
    # Three examples, scored by two seeds each: sums per example, then CR1 (G / (G - 1)).
    scores = {"e1": [1.0, 1.0], "e2": [0.0, 1.0], "e3": [0.0, 0.0]}
    result = clustered((sum(v), len(v)) for v in scores.values())
    mean = 3 / 6
    residual_sums = [sum(x - mean for x in v) for v in scores.values()]  # 1, 0, -1
    se = math.sqrt(3 / 2 * sum(r * r for r in residual_sums)) / 6
    assert result == {"mean": pytest.approx(mean), "se": pytest.approx(se), "clusters": 3, "n": 6}
    # With one score per example it is the ordinary SE (sd / sqrt(n)).
    values = [0.2, 0.9, 0.4, 0.7]
    single = clustered((v, 1) for v in values)
    assert single["se"] == pytest.approx(statistics.stdev(values) / 2)
    assert clustered([(1.0, 2)])["se"] is None  # one cluster: no SE
