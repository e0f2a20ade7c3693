"""The power of the tests the report actually uses (ops_tasks/operations/stats.py): the noncentral t
and the paired t test's power, MDE and sample size against scipy.stats.nct and statsmodels'
TTestPower; the exact McNemar test's power against an independent enumeration of every (b, c) with
scipy's binomtest deciding each. Simulated rejection rates are in tests/test_stats_coverage.py."""

import math

import pytest

from ops_tasks.operations.stats import (mcnemar_critical, mcnemar_examples_needed, mcnemar_exact_p,
                                        mcnemar_mde, mcnemar_power, noncentral_t_cdf,
                                        paired_t_examples_needed, paired_t_mde, paired_t_power)

scipy_stats = pytest.importorskip("scipy.stats")
optimize = pytest.importorskip("scipy.optimize")


def scipy_power(standardized: float, n: int, alpha: float = 0.05) -> float:
    """statsmodels' TTestPower formula, in scipy: nct.sf(crit) + nct.cdf(-crit)."""
    df, shift = n - 1, standardized * math.sqrt(n)
    critical = scipy_stats.t.isf(alpha / 2, df)
    return scipy_stats.nct.sf(critical, df, shift) + scipy_cdf(-critical, df, shift)


def scipy_cdf(t, df, delta):
    """scipy.stats.nct.cdf, read through the symmetry F(t; d) = 1 - F(-t; -d) = sf(-t; -d) where
    scipy 1.17 gives NaN far in a tail (cdf(-2.26, 9, 9.49), about 1e-20)."""
    value = scipy_stats.nct.cdf(t, df, delta)
    return scipy_stats.nct.sf(-t, df, -delta) if math.isnan(value) else value


@pytest.mark.parametrize("df", [1, 2, 4, 9, 49, 499, 10000, 100000])
def test_noncentral_t_cdf_matches_scipy(df):
    for delta in (-40.0, -5.0, -1.0, 0.0, 0.3, 2.8, 8.0, 39.0, 60.0):
        for t in (-50.0, -2.0, -0.1, 0.0, 0.1, 1.96, 2.3, 12.0, 400.0):
            expected = scipy_cdf(t, df, delta)
            if math.isnan(expected):  # scipy gives up both ways far in a tail (t = -50, delta = 8)
                continue
            assert noncentral_t_cdf(t, df, delta) == pytest.approx(expected, abs=1e-10), (t, delta)


@pytest.mark.parametrize("n", [2, 3, 10, 50, 500, 5000])
def test_paired_t_power_matches_the_noncentral_t_formula(n):
    for standardized in (0.0, 0.01, 0.1, 0.5, 1.0, 3.0):
        for alpha in (0.05, 0.01):
            assert paired_t_power(0.3 * standardized, 0.3, n, alpha) == pytest.approx(
                scipy_power(standardized, n, alpha), abs=1e-10)


def test_paired_t_power_matches_statsmodels():
    power = pytest.importorskip("statsmodels.stats.power")
    for n in (5, 50, 500):
        for standardized in (0.05, 0.2, 0.8):
            expected = power.TTestPower().power(effect_size=standardized, nobs=n, alpha=0.05)
            if math.isnan(expected):  # scipy's nct.cdf far in the lower tail (n = 500, 0.8)
                continue
            assert paired_t_power(standardized * 2.0, 2.0, n) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("n", [5, 10, 50, 500, 5000])
def test_paired_t_mde_is_where_the_power_is_80_percent(n):
    sd = 0.4
    exact = optimize.brentq(lambda d: scipy_power(d, n) - 0.8, 1e-6, 10.0, xtol=1e-15, rtol=1e-15) * sd
    assert paired_t_mde(sd, n) == pytest.approx(exact, rel=1e-9)
    assert scipy_power(paired_t_mde(sd, n) / sd, n) == pytest.approx(0.8, abs=1e-9)
    assert paired_t_mde(sd, n, power=0.9) > paired_t_mde(sd, n)
    assert paired_t_mde(0.0, n) == 0.0


def test_paired_t_mde_and_sample_size_match_statsmodels_solve_power():
    power = pytest.importorskip("statsmodels.stats.power")
    solver = power.TTestPower()
    for n in (10, 50, 500):
        expected = solver.solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
        assert paired_t_mde(1.0, n) == pytest.approx(expected, rel=1e-5)  # statsmodels' root tolerance
    for standardized in (0.05, 0.3, 0.8, 1.5):
        expected = solver.solve_power(effect_size=standardized, nobs=None, alpha=0.05, power=0.8)
        assert paired_t_examples_needed(1.0, standardized) == math.ceil(expected)


@pytest.mark.parametrize("effect", [0.02, 0.1, 0.3, 0.8, 1.5])
def test_paired_t_examples_needed_is_the_least_n_with_the_power(effect):
    n = paired_t_examples_needed(1.0, effect)
    assert scipy_power(effect, n) >= 0.8 > scipy_power(effect, n - 1) if n > 2 else scipy_power(effect, n) >= 0.8
    assert paired_t_examples_needed(1.0, 0.0) is None
    assert paired_t_examples_needed(0.0, 0.1) == 2  # no spread: any pair shows it


def test_at_small_n_the_t_test_needs_more_than_the_z_formula_promises():
    # numbers.md point 6: the z MDE is optimistic for the test actually used at small n.
    z_mde = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) / math.sqrt(10)
    assert paired_t_power(z_mde, 1.0, 10) == pytest.approx(scipy_power(z_mde, 10), abs=1e-10)
    assert paired_t_power(z_mde, 1.0, 10) < 0.76
    assert paired_t_mde(1.0, 10) > z_mde


def test_mcnemar_critical_agrees_with_the_exact_p_value():
    for m in range(0, 201):
        k = mcnemar_critical(m)
        assert all((mcnemar_exact_p(j, m - j) < 0.05) == (min(j, m - j) <= k) for j in range(m + 1))
    assert mcnemar_critical(5) == -1  # 0 against 5: p = 0.0625, nothing rejects
    assert mcnemar_critical(6) == 0  # 0 against 6: p = 0.03125


def enumerated_mcnemar_power(p10, p01, n, alpha=0.05):
    """Every (b, c, concordant) cell of the multinomial, scipy's binomtest deciding each."""
    concordant = 1 - p10 - p01
    total = 0.0
    for b in range(n + 1):
        for c in range(n - b + 1):
            if b + c and scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue < alpha:
                total += (math.comb(n, b) * math.comb(n - b, c) * p10 ** b * p01 ** c
                          * concordant ** (n - b - c))
    return total


@pytest.mark.parametrize("p10,p01,n", [(0.05, 0.15, 30), (0.1, 0.1, 24), (0.02, 0.2, 25), (0.3, 0.5, 30),
                                       (0.0, 0.2, 20), (0.5, 0.5, 25), (0.2, 0.0, 12)])
def test_mcnemar_power_matches_brute_force_enumeration(p10, p01, n):
    assert mcnemar_power(p10, p01, n) == pytest.approx(enumerated_mcnemar_power(p10, p01, n), abs=1e-12)


def test_mcnemar_power_edges():
    assert mcnemar_power(0.0, 0.0, 100) == 0.0  # no discordant pair: never rejects
    assert mcnemar_power(0.0, 1.0, 5) == 0.0  # 0 against 5 cannot reach p < 0.05
    assert mcnemar_power(0.0, 1.0, 6) == 1.0
    assert mcnemar_power(0.1, 0.1, 200) < 0.05  # its size: exact tests are conservative


def test_mcnemar_mde_is_where_the_power_is_80_percent():
    for discordant, n in ((0.2, 50), (0.3, 200), (0.1, 1000)):
        effect = mcnemar_mde(discordant, n)
        at = mcnemar_power((discordant - effect) / 2, (discordant + effect) / 2, n)
        step = discordant / 2 ** 15  # to 2-3 significant digits: 16 halvings of (0, discordant]
        below = mcnemar_power((discordant - effect + step) / 2, (discordant + effect - step) / 2, n)
        assert at >= 0.8 > below and at == pytest.approx(0.8, abs=2e-3)
    # At n = 50 with 20% discordant pairs the exact test needs 0.176, the z formula says 0.177;
    # at n = 200 the exact test needs 0.091 where the z formula promises 0.089.
    assert mcnemar_mde(0.2, 50) == pytest.approx(0.17573, abs=1e-4)
    assert mcnemar_mde(0.2, 200) == pytest.approx(0.09116, abs=1e-4)
    assert mcnemar_mde(0.05, 20) is None  # one discordant pair expected: nothing can be seen
    assert mcnemar_mde(0.0, 100) is None


@pytest.mark.parametrize("discordant,effect", [(1.0, 0.4), (0.95, 0.4), (0.5, 0.3), (0.3, 0.2), (0.1, 0.08)])
def test_mcnemar_examples_needed_stays_above_from_there_on(discordant, effect):
    n = mcnemar_examples_needed(discordant, effect)
    powers = [mcnemar_power((discordant - effect) / 2, (discordant + effect) / 2, m) for m in range(1, 3 * n + 1)]
    assert powers[n - 2] < 0.8 and min(powers[n - 1:]) >= 0.8  # checked by a scan to 3n
    assert mcnemar_examples_needed(0.2, 0.0) is None
    assert mcnemar_examples_needed(0.2, 0.3) is None


def test_mcnemar_power_saw_tooths_where_every_pair_is_discordant():
    # The documented reason mcnemar_examples_needed looks past the first crossing.
    assert mcnemar_power(0.3, 0.7, 6) > mcnemar_power(0.3, 0.7, 7)


def test_past_the_exact_range_connors_mcnemar_power_is_what_the_exact_test_does():
    # 1,000 pairs, 30% discordant: 300 expected discordant pairs, past MCNEMAR_EXACT_UP_TO, so
    # mcnemar_mde answers with Connor's approximation (instantly); the exact test, simulated at
    # that difference, rejects 80% of the time within its binomial error.
    import random

    from ops_tasks.operations.stats import MCNEMAR_EXACT_UP_TO, mcnemar_exact_p, mcnemar_mde

    n, discordant = 1000, 0.3
    assert n * discordant > MCNEMAR_EXACT_UP_TO
    effect = mcnemar_mde(discordant, n)
    rng, rejected, reps = random.Random(3), 0, 1000
    for _ in range(reps):
        b = c = 0
        for _ in range(n):
            u = rng.random()
            if u < (discordant - effect) / 2:
                b += 1
            elif u < discordant:
                c += 1
        rejected += mcnemar_exact_p(b, c) < 0.05
    assert abs(rejected / reps - 0.8) < 3 * math.sqrt(0.8 * 0.2 / reps), rejected
