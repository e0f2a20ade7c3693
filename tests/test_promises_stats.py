"""ops_tasks/operations/stats.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test held:
the edges of the report's formulas (no example, one example, zero spread, x at 0, unbounded metrics,
McNemar past the float range) give the numbers the report promises, not a crash or a near miss; the
power of the tests the report uses (exact McNemar, Connor's approximation past 200 expected discordant
pairs, the paired t) at a level other than 5%, at the switch between them and at their edges; Holm,
TOST, the variance split and its advice at theirs. Golden values from scipy and statsmodels, or sums
computed here independently of stats.py."""

import math
from fractions import Fraction

import pytest

from ops_tasks.operations import stats


@pytest.fixture(autouse=True)
def computed_afresh():
    """Each test computes the cached critical values itself: a value another test left in the cache
    would hide the code that computes it (under mutmut, a forked worker inherits the parent's cache)."""
    stats.mcnemar_critical.cache_clear()
    stats.t_quantile.cache_clear()


def scipy_stats():
    return pytest.importorskip("scipy.stats")


def exact_mcnemar_p(b: int, c: int) -> float:
    """min(1, 2 P(X <= min(b, c))), X ~ Bin(b + c, 1/2), in exact fractions, rounded once."""
    n = b + c
    return float(min(Fraction(1), 2 * Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2 ** n)))


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
    assert stats.mcnemar_exact_p(560, 640) == exact_mcnemar_p(560, 640)


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


def test_mcnemar_is_the_exact_integer_sum_up_to_5000_discordant_pairs():
    # Promise: up to MCNEMAR_EXACT_INTEGERS_UP_TO discordant pairs the p-value is the exact sum,
    # correctly rounded (mcnemar_critical settles its ties with it); the incomplete beta only past them.
    assert stats.MCNEMAR_EXACT_INTEGERS_UP_TO == 5000
    for b in (2400, 2450, 2499):
        assert stats.mcnemar_exact_p(b, 5000 - b) == exact_mcnemar_p(b, 5000 - b), b


# ---------------------------------------------------------------- McNemar's power


def independent_mcnemar_power(p10: float, p01: float, n: int, alpha: float) -> float:
    """Over m ~ Bin(n, p10 + p01) discordant pairs, the chance that the split c ~ Bin(m, share) is one
    that scipy's binomtest rejects at alpha: no code of stats.py involved."""
    sp = scipy_stats()
    discordant = p10 + p01
    total = 0.0
    for m in range(1, n + 1):
        rejected = [c for c in range(m + 1) if sp.binomtest(c, m, 0.5).pvalue < alpha]
        total += sp.binom.pmf(m, n, discordant) * sum(sp.binom.pmf(c, m, p01 / discordant) for c in rejected)
    return total


@pytest.mark.parametrize("p10,p01,n", [(0.05, 0.25, 40), (0.1, 0.3, 30), (0.0, 0.3, 25)])
def test_mcnemar_power_at_1_percent_is_the_exact_tests_at_1_percent(p10, p01, n):
    # Promise: alpha is the level of the test whose power is given, not always 5%.
    at_1 = independent_mcnemar_power(p10, p01, n, 0.01)
    assert stats.mcnemar_power(p10, p01, n, alpha=0.01) == pytest.approx(at_1, abs=1e-12)
    assert at_1 < independent_mcnemar_power(p10, p01, n, 0.05) - 0.05  # the level matters here


@pytest.mark.parametrize("discordant,n", [(0.2, 300), (0.5, 30), (0.9, 30), (0.05, 2000)])
def test_mcnemar_power_with_every_discordant_pair_one_way_is_a_probability(discordant, n):
    # Promise: a power is never above 1. Every discordant pair one way rejects exactly when there
    # are 6 or more of them (0 against 6: p = 1/32), so the power is P(Bin(n, discordant) >= 6).
    power = stats.mcnemar_power(0.0, discordant, n)
    assert power <= 1.0
    # lgamma(2001) carries ~1e-12 of rounding into each binomial weight at n = 2000
    assert power == pytest.approx(scipy_stats().binom.sf(5, n, discordant), abs=1e-11)


def test_no_split_of_five_or_fewer_discordant_pairs_rejects():
    # Promise: mcnemar_critical answers -1 (nothing rejects) from 0 discordant pairs up, not a math error.
    assert [stats.mcnemar_critical(m) for m in range(6)] == [-1] * 6
    assert stats.mcnemar_critical(6) == 0


def connor_power(p10: float, p01: float, n: int, alpha: float = 0.05) -> float:
    """Connor (1987): Phi((|p01 - p10| sqrt(n) - z sqrt(d)) / sqrt(d - (p01 - p10)^2)), d = p10 + p01."""
    sp = scipy_stats()
    discordant, effect = p10 + p01, abs(p01 - p10)
    z = sp.norm.isf(alpha / 2)
    return sp.norm.cdf((effect * math.sqrt(n) - z * math.sqrt(discordant)) / math.sqrt(discordant - effect ** 2))


def connor_sample_size(discordant: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    sp = scipy_stats()
    z, z_power = sp.norm.isf(alpha / 2), sp.norm.ppf(power)
    return math.ceil((z * math.sqrt(discordant) + z_power * math.sqrt(discordant - effect ** 2)) ** 2 / effect ** 2)


@pytest.mark.parametrize("p10,p01,n", [(0.05, 0.15, 500), (0.1, 0.2, 1000), (0.02, 0.3, 800), (0.3, 0.1, 300)])
def test_connors_power_is_his_formula_at_5_percent_unless_told(p10, p01, n):
    assert stats.mcnemar_power_normal(p10, p01, n) == pytest.approx(connor_power(p10, p01, n), abs=1e-12)
    assert stats.mcnemar_power_normal(p10, p01, n, 0.01) == pytest.approx(connor_power(p10, p01, n, 0.01), abs=1e-12)


def assert_exact_mde(effect: float, discordant: float, n: int, alpha: float = 0.05):
    """The exact test has 80% power at effect and less one step of the bisection below it."""
    step = discordant / 2 ** 15
    at = stats.mcnemar_power((discordant - effect) / 2, (discordant + effect) / 2, n, alpha)
    below = stats.mcnemar_power((discordant - effect + step) / 2, (discordant + effect - step) / 2, n, alpha)
    assert at >= 0.8 > below, (effect, at, below)


def test_the_mcnemar_mde_is_the_exact_tests_up_to_200_expected_discordant_pairs_and_connors_past():
    # Promise (MCNEMAR_EXACT_UP_TO): at 200 expected discordant pairs the exact test's own MDE,
    # past them Connor's, solved here by scipy.
    assert 1000 * 0.2 == stats.MCNEMAR_EXACT_UP_TO
    assert_exact_mde(stats.mcnemar_mde(0.2, 1000), 0.2, 1000)
    optimize = pytest.importorskip("scipy.optimize")
    discordant, n = 0.3, 1000
    connor = optimize.brentq(lambda e: connor_power((discordant - e) / 2, (discordant + e) / 2, n) - 0.8,
                             1e-6, discordant - 1e-9, xtol=1e-14)
    assert stats.mcnemar_mde(discordant, n) == pytest.approx(connor, abs=discordant / 2 ** 15)


def test_the_mcnemar_mde_at_1_percent_is_the_exact_tests_at_1_percent():
    effect = stats.mcnemar_mde(0.2, 60, alpha=0.01)
    assert_exact_mde(effect, 0.2, 60, alpha=0.01)
    assert effect > stats.mcnemar_mde(0.2, 60)


def assert_least_stable_n(n: int, discordant: float, effect: float, alpha: float = 0.05, upto: int = 0):
    """mcnemar_examples_needed's definition: power below 80% at n - 1, at least 80% from n to upto
    (n + 30 at least)."""
    p10, p01 = (discordant - effect) / 2, (discordant + effect) / 2
    powers = {m: stats.mcnemar_power(p10, p01, m, alpha) for m in range(n - 1, max(upto, n + 30) + 1)}
    assert powers[n - 1] < 0.8 <= min(powers[m] for m in powers if m >= n), powers


@pytest.mark.parametrize("discordant,effect", [(1.0, 0.45), (0.1, 0.1), (0.25, 0.25)])
def test_mcnemar_examples_needed_where_the_power_saw_tooths_or_every_discordant_pair_goes_one_way(
        discordant, effect):
    # Promise: an effect as large as the discordance (p10 = 0) has an answer; at discordance 1 the
    # power dips at n + 1 after its first crossing (40 -> 41), and the answer is past the dip.
    n = stats.mcnemar_examples_needed(discordant, effect)
    assert_least_stable_n(n, discordant, effect, upto=3 * n)


def test_mcnemar_examples_needed_at_1_percent_is_the_exact_tests_at_1_percent():
    n = stats.mcnemar_examples_needed(0.3, 0.2, alpha=0.01)
    assert_least_stable_n(n, 0.3, 0.2, alpha=0.01, upto=2 * n)


@pytest.mark.parametrize("discordant,effect,alpha", [(0.3, 0.05, 0.05), (0.5, 0.08, 0.05), (0.2, 0.03, 0.05),
                                                     (0.3, 0.06, 0.01)])
def test_past_200_expected_discordant_pairs_the_examples_needed_are_connors(discordant, effect, alpha):
    # Promise: Connor's (1987) sample size, where the exact test has 78.5-79% power (his formula is
    # that much optimistic past 200 expected discordant pairs).
    n = connor_sample_size(discordant, effect, alpha)
    assert n * discordant > stats.MCNEMAR_EXACT_UP_TO
    assert stats.mcnemar_examples_needed(discordant, effect, alpha=alpha) == n
    exact = stats.mcnemar_power((discordant - effect) / 2, (discordant + effect) / 2, n, alpha)
    assert exact == pytest.approx(0.8, abs=0.02)


def test_at_exactly_200_expected_discordant_pairs_the_exact_test_counts_the_examples_needed():
    # Every pair discordant, effect 0.197: Connor's n is 200, 200 expected discordant pairs, not past
    # MCNEMAR_EXACT_UP_TO: the exact test's least n, which Connor's 200 falls short of.
    assert connor_sample_size(1.0, 0.197) * 1.0 == stats.MCNEMAR_EXACT_UP_TO
    n = stats.mcnemar_examples_needed(1.0, 0.197)
    assert_least_stable_n(n, 1.0, 0.197)


# ---------------------------------------------------------------- the noncentral t's cdf


def scipy_nct_cdf(t: float, df: float, delta: float) -> float:
    value = float(scipy_stats().nct.cdf(t, df, delta))
    assert not math.isnan(value), "scipy gives NaN here: no golden value"
    return value


@pytest.mark.parametrize("t, df, delta", [
    (1e-200, 5, 3.0), (-1e-200, 5, 3.0), (1e-200, 30, 10.0),  # t^2 underflows: x = t^2 / (t^2 + df) is 0
    (1e-160, 5, 3.0), (1e-160, 30, 10.0),  # t^2 is subnormal, and so is x
    (1.0, 5, 0.5), (1.0, 30, 3.0),
])
def test_the_noncentral_t_cdf_near_t_0_is_scipys(t, df, delta):
    # Promise: P(T <= t) for any t, however small: next to 0 it is Phi(-delta), not a math domain
    # error (log 0) or a division by x = 0 in the sum's steps.
    assert stats.noncentral_t_cdf(t, df, delta) == pytest.approx(scipy_nct_cdf(t, df, delta), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("t, df, delta", [(50.0, 5, 200.0), (30.0, 8, 100.0), (20.0, 1, 150.0)])
def test_far_in_the_lower_tail_the_sum_stops_only_when_what_is_left_is_below_1e_17(t, df, delta):
    # Promise: the series stops when its next terms cannot add 1e-17: a cdf of ~1e-15 (t far below
    # a large delta) is right to 2e-17. Stopping at terms 10x larger leaves out ~3e-16 here.
    assert stats.noncentral_t_cdf(t, df, delta) == pytest.approx(scipy_nct_cdf(t, df, delta), rel=0, abs=2e-17)


def test_a_cdf_summed_from_large_terms_of_both_signs_is_right_to_1e_12_and_never_above_1():
    # Promise: a negative delta makes the series' terms cancel (p_j I_x - |q_j| I_x'); it still
    # sums to the cdf, here 1 to double precision, and rounding never takes it above 1.
    for t, df, delta in ((50.0, 5, -150.0), (30.0, 100000, -30.0), (100.0, 100000, -90.0)):
        value = stats.noncentral_t_cdf(t, df, delta)
        assert value <= 1.0 and value == pytest.approx(scipy_nct_cdf(t, df, delta), rel=0, abs=1e-12), (t, df, delta)
        assert stats.noncentral_t_cdf(-t, df, -delta) == pytest.approx(0.0, abs=1e-12), (t, df, delta)


@pytest.mark.parametrize("t, df, delta", [(1.0, 100, 20.0), (0.3, 5, 20.0), (0.5, 30, 20.0)])
def test_a_tail_of_1e_80_below_the_poisson_mode_is_right_to_1e_9_relative(t, df, delta):
    # Promise: where the sum's mass lies far below the Poisson mode (small t, delta 20: mode 200),
    # the steps carried down from the mode start subnormal; they are computed afresh until they are
    # normal floats, so the cdf keeps its digits (carried down, their lost bits put it 10-40% off).
    assert stats.noncentral_t_cdf(t, df, delta) == pytest.approx(scipy_nct_cdf(t, df, delta), rel=1e-9, abs=0)


def test_a_t_so_large_that_x_rounds_to_1_gives_a_cdf_not_a_math_domain_error():
    # Promise: at df = 1 a t of 1e9 makes t^2 / (t^2 + df) exactly 1.0 in floats (log(1 - x) fails);
    # the cdf is then 1 - P(T > t), P(T > t) below 2e-9 here. A paired t test on 2 pairs at a level of
    # 1e-9 has such a critical value (6.4e8): its power is a probability too (scipy: 1.8e-8; this
    # far out 1 - x has lost its digits, so the tails keep ~1e-8 absolute, not relative, accuracy).
    for delta in (2.0, -3.0):
        assert stats.noncentral_t_cdf(1e9, 1, delta) == pytest.approx(scipy_nct_cdf(1e9, 1, delta), rel=0, abs=1e-8)
    assert 0.0 <= stats.paired_t_power(10.0, 1.0, 2, 1e-9) <= 1e-7


# ---------------------------------------------------------------- the paired t test's power


def scipy_paired_t_power(standardized: float, n: int, alpha: float) -> float:
    """P(T > critical) + P(T < -critical), the second as P(T' > critical) with T' of noncentrality
    -shift (scipy's nct.cdf gives NaN far in that tail)."""
    sp = scipy_stats()
    df, shift = n - 1, standardized * math.sqrt(n)
    critical = sp.t.isf(alpha / 2, df)
    return sp.nct.sf(critical, df, shift) + sp.nct.sf(critical, df, -shift)


def test_the_paired_t_mde_and_examples_needed_at_1_percent_match_statsmodels():
    power = pytest.importorskip("statsmodels.stats.power").TTestPower()
    # n = 12: the 5% MDE is below one sd (0.89), the 1% one above it (1.17)
    assert stats.paired_t_mde(1.0, 12, alpha=0.01) == pytest.approx(
        power.solve_power(effect_size=None, nobs=12, alpha=0.01, power=0.8), rel=1e-5)
    assert stats.paired_t_examples_needed(1.0, 0.5, alpha=0.01) == math.ceil(
        power.solve_power(effect_size=0.5, nobs=None, alpha=0.01, power=0.8))


@pytest.mark.timeout(60)
def test_at_two_pairs_and_a_strict_level_a_large_effect_has_the_t_tests_power():
    # Promise: the power is the noncentral t's for any level. At n = 2 and 1% the power at a
    # noncentrality of 200 is 0.9983, not 1: a fixed clamp there gave 0.9983 for every larger effect,
    # and the MDE at 0.4% (a noncentrality of ~205) was never reached (the bracket doubled forever).
    for shift in (250.0, 300.0, 400.0, 600.0):
        effect = shift / math.sqrt(2)
        assert stats.paired_t_power(effect, 1.0, 2, 0.01) == pytest.approx(
            scipy_paired_t_power(effect, 2, 0.01), abs=1e-9), shift
    optimize = pytest.importorskip("scipy.optimize")
    mde = optimize.brentq(lambda e: scipy_paired_t_power(e, 2, 0.004) - 0.8, 1.0, 1000.0, xtol=1e-12)
    assert stats.paired_t_mde(1.0, 2, alpha=0.004) == pytest.approx(mde, rel=1e-8)


def test_the_paired_t_power_without_spread_is_certain_and_without_effect_is_the_level():
    # Promise: identical differences show any effect every time; no effect is rejected at the
    # test's level, whatever the spread.
    assert stats.paired_t_power(0.1, 0.0, 10) == 1.0
    assert stats.paired_t_power(0.0, 0.0, 10, 0.01) == 0.01
    assert stats.paired_t_power(0.0, 1.0, 10, 0.01) == pytest.approx(0.01, abs=1e-12)


def test_refusals_of_the_power_and_equivalence_functions_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"^a paired t test needs at least two pairs$"):
        stats.paired_t_power(0.1, 1.0, 1)
    with pytest.raises(ValueError, match=r"^an equivalence margin is a positive number$"):
        stats.tost_paired(0.0, 0.01, 10, 0.0)


# ---------------------------------------------------------------- equivalence, seeds and questions


def test_differences_exactly_at_the_margin_are_not_shown_equivalent():
    # Promise: "equivalent within +/- margin" excludes the margin: H0 "difference >= margin" holds
    # at the margin, so with no spread p is 1 there, 0 just inside.
    assert stats.tost_paired(0.05, 0.0, 10, 0.05) == 1.0
    assert stats.tost_paired(-0.05, 0.0, 10, 0.05) == 1.0
    assert stats.tost_paired(0.0499, 0.0, 10, 0.05) == 0.0


def test_two_examples_with_two_runs_each_split_their_variance():
    # Promise: "None when fewer than 2 examples have 2 runs": 2 are enough. By hand: within =
    # (0.5 + 0) / 2; the example means 0.5 and 1 vary by 0.125, less within / k = 0.125: between 0.
    split = stats.variance_split({"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0]})
    assert (split["n"], split["k"], split["left_out"]) == (2, 2, 1)
    assert split["within"] == pytest.approx(0.25) and split["between"] == 0.0
    assert split["seed_part"] == pytest.approx(0.25 / 4) and split["seed_share"] == 1.0


def test_runs_missing_some_examples_use_the_harmonic_mean_of_their_counts():
    # Two examples scored by 2 and by 3 runs: k = 2 / (1/2 + 1/3) = 2.4, and the advice quotes 2k.
    split = stats.variance_split({"a": [1.0, 0.0], "b": [1.0, 1.0, 0.0]})
    assert split["k"] == pytest.approx(2.4, rel=1e-15)
    assert "with twice the seeds (4.8 each)" in stats.more_seeds_or_questions(split)


def test_scores_that_never_vary_have_no_seed_share_and_seeds_that_never_vary_have_none_of_it():
    # Promise: no variance at all gives seed_share None (not a division by zero); runs that agree on
    # every example while the examples differ give a seed share of 0, and the advice says so.
    assert stats.variance_split({"a": [1.0, 1.0], "b": [1.0, 1.0]})["seed_share"] is None
    split = stats.variance_split({"a": [0.0, 0.0], "b": [1.0, 1.0], "c": [1.0, 1.0]})
    assert split["seed_share"] == 0.0
    text = stats.more_seeds_or_questions(split)
    assert text.startswith("more seeds will not narrow this interval much; more questions will: seeds make 0% ")


def test_the_advice_changes_past_a_fifth_and_past_three_fifths_of_the_variance():
    # Promise: under 20% seeds "will not narrow much", above 60% "nearly as much", from 20% to 60%
    # (both included) "both help".
    split = stats.variance_split({"a": [0.0, 1.0], "b": [1.0, 1.0], "c": [0.0, 0.0]})
    def advice(share):
        return stats.more_seeds_or_questions(dict(split, seed_share=share)).split(":")[0]
    assert advice(0.19) == "more seeds will not narrow this interval much; more questions will"
    assert advice(0.2) == advice(0.6) == "more questions narrow this interval more than more seeds, but both help"
    assert advice(0.61) == "more seeds will narrow this interval nearly as much as more questions"


def test_where_seeds_are_all_the_variance_the_advice_quotes_the_se_with_twice_the_seeds():
    # Four examples whose two runs disagree (0, 1): within = 1/2, the example means are all 1/2, so
    # between = 0; SE = sqrt(within / (n k)) = sqrt(1/16) now and sqrt(1/32) with twice the seeds.
    split = stats.variance_split({q: [0.0, 1.0] for q in ("a", "b", "c", "d")})
    text = stats.more_seeds_or_questions(split)
    assert f"SE {math.sqrt(1 / 16):.3g} now, {math.sqrt(1 / 32):.3g} with twice the seeds (4 each)" in text
    assert text.startswith("more seeds will narrow this interval nearly as much as more questions")
