"""ops_tasks/operations/stats.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test held:
the edges of the report's formulas (no example, one example, zero spread, x at 0, unbounded metrics,
McNemar past the float range) give the numbers the report promises, not a crash or a near miss."""

import math
from fractions import Fraction

from ops_tasks.operations import stats


def test_an_unbounded_metric_has_an_unbounded_difference():
    # Promise: B - A of a metric with no bounds may take any value (the report never clips it to NaN).
    assert stats.difference_range(stats.UNBOUNDED) == (-math.inf, math.inf)
    assert stats.difference_range((0.0, 1.0)) == (-1.0, 1.0)


def test_the_incomplete_beta_is_zero_at_zero_and_one_at_one():
    # Promise: p-values at the very edge are exact, not a math domain error.
    assert stats.beta_incomplete(2.0, 3.0, 0.0) == 0.0
    assert stats.beta_incomplete(2.0, 3.0, 1.0) == 1.0


def test_a_t_test_with_no_spread_is_certain_either_way():
    # Promise: identical scores (se 0) give p = 1 when the mean difference is 0, p = 0 otherwise.
    assert stats.t_test_p(0.0, 0.0, 5) == 1.0
    assert stats.t_test_p(0.25, 0.0, 5) == 0.0
    assert stats.t_test_p(1.0, 0.0, 5) == 0.0


def test_pooled_runs_of_no_example_or_of_one_example_have_a_mean_and_no_standard_error():
    # Promise: the report's pooled row for 0 or 1 example: its mean, no SE, and its counts.
    assert stats.clustered([]) == {"mean": None, "se": None, "clusters": 0, "n": 0}
    assert stats.clustered([(3.0, 4)]) == {"mean": 0.75, "se": None, "clusters": 1, "n": 4}


def test_mcnemar_stays_exact_with_more_disagreements_than_a_float_can_count():
    # Promise: the paired p-value of two large evals is computed exactly (int arithmetic), no overflow.
    b, c = 560, 640
    n = b + c
    exact = min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(b + 1)), 2 ** n))
    assert stats.mcnemar_exact_p(b, c) == float(exact)


def test_examples_that_all_score_the_same_fraction_have_no_spread():
    # Promise: three examples each scoring 0.1 have mean 0.1 and SE exactly 0 ("every example scores the same").
    acc = stats.of([0.1, 0.1, 0.1])
    assert math.isclose(acc.mean, 0.1)
    assert acc.se == 0.0
    assert stats.of([1e-20, 1e-20]).se == 0.0


def test_a_non_finite_number_is_written_as_null_and_a_finite_one_as_itself():
    # Promise: the report's JSON never carries NaN or Infinity: such a number becomes null.
    assert stats.finite(math.nan) is None
    assert stats.finite(math.inf) is None
    assert stats.finite(-math.inf) is None
    assert stats.finite(0.25) == 0.25
    assert stats.finite(None) is None


def test_a_metric_s_range_is_judged_from_the_values_seen():
    # Promise: the interval is clipped to [0, 1] only for values all in [0, 1] (not a loss), to
    # [0, inf) when none is negative, and not at all otherwise.
    assert stats.metric_range(0.0, 1.0) == (0.0, 1.0)
    assert stats.metric_range(0.0, 1.0, loss=False) == (0.0, 1.0)
    assert stats.metric_range(0.0, 1.0, loss=True) == (0.0, math.inf)
    assert stats.metric_range(0.2, 0.7) == (0.0, 1.0)
    assert stats.metric_range(0.0, 1.5) == (0.0, math.inf)
    assert stats.metric_range(0.5, 2.0) == (0.0, math.inf)
    assert stats.metric_range(0.0, 5.0) == (0.0, math.inf)
    assert stats.metric_range(-1.0, 2.0) == stats.UNBOUNDED
    assert stats.metric_range(-0.5, 0.5) == stats.UNBOUNDED
