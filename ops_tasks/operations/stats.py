"""The report's formulas: pure functions over numbers (no files, no printing).

They follow Evan Miller, "Adding Error Bars to Evals" (2024, arXiv 2411.00640): the example is the
unit of sampling, so every standard error is over examples (an example's rollouts averaged first);
runs of one setting on the same examples are pooled and clustered by example; two models are
compared on the examples they share (paired), with the smallest effect the eval can see at 80%
power. Student's t and the incomplete beta function are computed here (stdlib only) rather than
taken from scipy: the report is part of the base install, and scipy (with numpy) would be its
heaviest dependency for two functions. tests/test_stats.py checks them against scipy.
"""

import math
import sys
from functools import lru_cache
from statistics import NormalDist
from typing import Callable, Iterable, Optional

ALPHA = 0.05  # the report's level: two-sided 5% (95% intervals), family-wise under Holm
Z95 = NormalDist().inv_cdf(0.975)  # two-sided 95%
UNBOUNDED = (-math.inf, math.inf)


class Welford:
    """Running n, mean and sum of squared deviations: one pass, constant memory. The mean reported
    is the running total over n (exact for 0/1 rewards) unless the total overflows (1e308 rewards),
    where Welford's running mean, which never overflows on finite values, takes over."""

    __slots__ = ("n", "total", "running_mean", "m2")

    def __init__(self):
        self.n, self.total, self.running_mean, self.m2 = 0, 0.0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        delta = x - self.running_mean
        self.running_mean += delta / self.n
        self.m2 += delta * (x - self.running_mean)

    @property
    def mean(self) -> Optional[float]:
        if not self.n:
            return None
        return self.total / self.n if math.isfinite(self.total) else self.running_mean

    @property
    def sd(self) -> Optional[float]:
        """Sample standard deviation (n - 1); None below two values, or where the sum of squares
        overflowed (inf - inf, from values near the float limit, is no spread)."""
        if self.n < 2 or not self.m2 >= 0:
            return None
        return math.sqrt(self.m2 / (self.n - 1))

    @property
    def se(self) -> Optional[float]:
        sd = self.sd
        return None if sd is None else sd / math.sqrt(self.n)

    def interval(self, critical: float) -> tuple:
        se = self.se
        return (None, None) if se is None else (self.mean - critical * se, self.mean + critical * se)


def of(values: Iterable[float]) -> Welford:
    acc = Welford()
    for value in values:
        acc.add(value)
    return acc


def finite(value):
    """value, or None where it is NaN or infinite (JSON has no spelling for them)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


# ---------------------------------------------------------------- ranges and intervals


def metric_range(minimum: float, maximum: float, loss: bool = False) -> tuple:
    """The range a metric's mean may take, judged from the values seen: [0, 1] when all lie in it
    (rewards, accuracies), [0, inf) when none is negative, else unbounded. A loss (lower is
    better) has no upper bound, whatever values this eval happened to give."""
    if minimum >= 0 and maximum <= 1 and not loss:
        return (0.0, 1.0)
    return (0.0, math.inf) if minimum >= 0 else UNBOUNDED


def difference_range(bounds: tuple) -> tuple:
    """The range of B - A for two values of a metric with these bounds."""
    width = bounds[1] - bounds[0]
    return (-width, width)


def clip(low: float, high: float, bounds: tuple) -> tuple:
    return max(low, bounds[0]), min(high, bounds[1])


def wilson(successes: int, n: int, z: float = Z95) -> tuple:
    """Wilson's score interval for a proportion: inside [0, 1], and honest at 0/n and n/n, where
    mean +/- 1.96 se collapses to a point. The bound at 0/n (n/n) is exactly 0 (1), and the
    interval always holds the proportion: rounding would otherwise put 1 - 1e-16 under a mean of 1."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else min(p, centre - half)
    high = 1.0 if successes == n else max(p, centre + half)
    return max(0.0, low), min(1.0, high)


def t_interval(mean: float, se: float, df: int, bounds: tuple = UNBOUNDED) -> tuple:
    """mean +/- t(0.975, df) * se, inside the metric's range: at 1,000 examples the same as
    1.96 se, at a handful honestly wider."""
    critical = t975(df)
    return clip(mean - critical * se, mean + critical * se, bounds)


# ---------------------------------------------------------------- Student's t


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def beta_incomplete(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df degrees of freedom."""
    tail = 0.5 * beta_incomplete(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_quantile(p: float, df: int) -> float:
    """The p quantile (p > 0.5) of Student's t, by bisection on t_cdf."""
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    low, high = 0.0, 2.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def t975(df: int) -> float:
    """Student's t 97.5% quantile: the critical value of a two-sided 95% interval."""
    return t_quantile(0.975, df)


def t_test_p(mean: float, se: float, df: int) -> float:
    """Two-sided p-value of a one-sample t test of mean = 0."""
    if se == 0:
        return 1.0 if mean == 0 else 0.0
    return min(1.0, 2.0 * t_cdf(-abs(mean / se), df))


# ---------------------------------------------------------------- pooled runs, pairs, power


def clustered(clusters: Iterable[tuple]) -> dict:
    """Mean and cluster-robust standard error of pooled scores, clustered by example.

    clusters: (sum, count) of each example's scores over the pooled runs. The SE is
    the CR1 estimator of an intercept-only regression, what statsmodels' cov_type="cluster" gives:
    sqrt(G / (G - 1) * sum_g (sum_i (x_gi - mean))^2) / N, G examples, N scores. Seeds of one
    example are not independent samples of the eval, so they cannot shrink the SE like new examples.
    """
    clusters = list(clusters)
    return clustered_in_parts(lambda: (clusters,))


def clustered_in_parts(parts: Callable[[], Iterable]) -> dict:
    """clustered over clusters held in parts, each a sized collection of (sum, count): parts() gives
    them again for the second pass (pooled examples too many for memory, read part by part)."""
    total, count, groups = 0.0, 0, 0
    for part in parts():
        total += sum(s for s, _ in part)
        count += sum(n for _, n in part)
        groups += len(part)
    mean = total / count if count else None
    if groups < 2:
        return {"mean": mean, "se": None, "clusters": groups, "n": count}
    squares = 0.0
    for part in parts():
        squares += sum((s - n * mean) ** 2 for s, n in part)
    se = math.sqrt(groups / (groups - 1) * squares) / count
    return {"mean": mean, "se": se, "clusters": groups, "n": count}


MCNEMAR_EXACT_INTEGERS_UP_TO = 5000  # discordant pairs; past them the tail is the incomplete beta's (1e-13)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if n > MCNEMAR_EXACT_INTEGERS_UP_TO:  # the integer sum grows as n^2 (2 s at 100,000 pairs)
        return min(1.0, 2 * _binomial_at_most(k, n, 0.5))
    term, tail = 1, 1  # C(n, 0); then C(n, i) from C(n, i-1), exact integers
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2 ** n)  # int / int is correctly rounded, even for large n


# ---------------------------------------------------------------- power of the tests actually used
#
# Miller's z formula, (z_0.975 + z_0.80) * sd / sqrt(n), is not used: the verdict uses a paired t
# test (continuous scores) or the exact McNemar test (0/1 scores), and at small n their power falls
# short of the z formula's promise (an MDE effect was seen 71.6% of the time at n = 50, not 80%). The
# functions below give the power of those two tests themselves.


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _beta_term(a: float, b: float, x: float) -> float:
    """x^a (1 - x)^b / (a B(a, b)): the step between I_x(a, b) and I_x(a + 1, b); 0 at both ends, where
    I_x is 0 or 1 for every a (x is 1 when t^2 / (t^2 + df) rounds up: t = 1e9 at df = 1)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return math.exp(a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a + 1) - math.lgamma(b))


def noncentral_t_cdf(t: float, df: float, delta: float) -> float:
    """P(T <= t) for the noncentral t with df degrees of freedom and noncentrality delta.

    The Poisson-mixture series of Lenth (AS 243), summed outward from the Poisson mode as Benton and
    Krishnamoorthy (2003) do, so that a large delta (exp(-delta^2 / 2) underflows past 38) loses no
    term: F = Phi(-delta) + 1/2 sum_j [p_j I_x(j + 1/2, df/2) + q_j I_x(j + 1, df/2)],
    x = t^2 / (t^2 + df), p_j = Poisson(j; delta^2 / 2), q_j = delta e^(-delta^2/2) (delta^2/2)^j
    / (sqrt(2) Gamma(j + 3/2)). A negative t is read by symmetry: F(t; d) = 1 - F(-t; -d)."""
    if t < 0:
        return 1.0 - noncentral_t_cdf(-t, df, -delta)
    base = _normal_cdf(-delta)
    if t == 0:
        return base
    x, b, mu = t * t / (t * t + df), df / 2.0, delta * delta / 2.0
    k = int(mu)
    log_mu = math.log(mu) if mu > 0 else -math.inf
    # weights and betas at the mode k, then stepped forward and backward by their recurrences
    p_k = math.exp(-mu + k * log_mu - math.lgamma(k + 1)) if mu > 0 else 1.0
    q_k = (delta / math.sqrt(2.0) * math.exp(-mu + k * log_mu - math.lgamma(k + 1.5))) if mu > 0 else \
        delta / math.sqrt(2.0) / math.gamma(1.5)
    ip_k, iq_k = beta_incomplete(k + 0.5, b, x), beta_incomplete(k + 1.0, b, x)
    total = p_k * ip_k + q_k * iq_k
    # forward: I_x(a + 1, b) = I_x(a, b) - term(a). Past the mode the weights fall by mu / (j + 1)
    # a step and the betas fall too, so the terms left sum to less than term / (1 - mu / (j + 1)).
    p, q, ip, iq = p_k, q_k, ip_k, iq_k
    step_p, step_q = _beta_term(k + 0.5, b, x), _beta_term(k + 1.0, b, x)
    j = k
    while True:
        j += 1
        ip, iq = max(ip - step_p, 0.0), max(iq - step_q, 0.0)
        step_p *= x * (j - 0.5 + b) / (j + 0.5)
        step_q *= x * (j + b) / (j + 1.0)
        p *= mu / j
        q *= mu / (j + 0.5)
        term = p * ip + q * iq
        total += term
        if abs(term) < 1e-17 * (1.0 - mu / (j + 1)):
            break
    # backward to j = 0: I_x(a - 1, b) = I_x(a, b) + term(a - 1); a finite sum
    p, q, ip, iq = p_k, q_k, ip_k, iq_k
    step_p, step_q = (_beta_term(k - 0.5, b, x), _beta_term(float(k), b, x)) if k else (0.0, 0.0)
    for j in range(k - 1, -1, -1):
        ip, iq = ip + step_p, iq + step_q
        p *= (j + 1) / mu
        q *= (j + 1.5) / mu
        total += p * ip + q * iq
        if j:  # the steps grow going down; one that underflowed at the mode is computed afresh, and
            # so is a subnormal one: its lost bits, carried down, put 1e-80 tails 10-40% off
            step_p = step_p * (j + 0.5) / (x * (j - 0.5 + b)) if step_p >= sys.float_info.min else \
                _beta_term(j - 0.5, b, x)
            step_q = step_q * (j + 1.0) / (x * (j + b)) if step_q >= sys.float_info.min else _beta_term(float(j), b, x)
    return min(1.0, max(0.0, base + 0.5 * total))


def _find_least(holds: Callable[[float], bool], low: float, high: float, steps: int = 200) -> float:
    """The least x in (low, high] at which a monotone condition holds (holds(high) is True)."""
    for _ in range(steps):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (low, middle) if holds(middle) else (middle, high)
    return high


def _least_n(holds: Callable[[int], bool], start: int) -> int:
    """The least whole n >= start at which a condition that stays true once true holds: doubling,
    then halving the gap."""
    high = start
    while not holds(high):
        high *= 2
    low = high // 2 if high > start else start - 1  # holds(low) was False, or low is below start
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if holds(middle) else (middle, high)
    return high


def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test at level alpha on n pairs whose differences have mean
    `effect` and standard deviation `sd`: P(|T| > t(1 - alpha/2, n - 1)) with T noncentral t,
    n - 1 degrees of freedom, noncentrality effect / sd * sqrt(n) (statsmodels' TTestPower)."""
    if n < 2:
        raise ValueError("a paired t test needs at least two pairs")
    if sd == 0:
        return 1.0 if effect else alpha
    df = n - 1
    critical = t_quantile(1 - alpha / 2, df)
    bound = _certain_shift(critical)
    shift = max(-bound, min(bound, effect / sd * math.sqrt(n)))
    return (1.0 - noncentral_t_cdf(critical, df, shift)) + noncentral_t_cdf(-critical, df, shift)


def _certain_shift(critical: float) -> float:
    """A noncentrality past which a t test with this critical value rejects with probability 1 to
    double precision, whatever its df: T = (Z + delta) / S misses (|T| <= critical) only where S, a
    sqrt(chi-square(df) / df), is above 9 (at most 2.3e-19, at df = 1) or Z is 40 below 0. The
    noncentral t series sums ~delta^2 / 2 terms, so the shift is clamped there. Not a fixed 200: at
    n = 2 and alpha 0.01 (critical 63.7) the power at 200 is 0.9983, not 1."""
    return 9.0 * critical + 40.0


def paired_t_mde(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest |mean difference| that the two-sided paired t test on n pairs detects with this
    power: the t test's own MDE, larger than Miller's z formula's at small n
    (the t's critical value is larger and its tails heavier). Bisection on paired_t_power."""
    if sd == 0:
        return 0.0
    high = sd
    while paired_t_power(high, sd, n, alpha) < power:
        high *= 2
    return _find_least(lambda effect: paired_t_power(effect, sd, n, alpha) >= power, 0.0, high)


def paired_t_examples_needed(sd: float, effect: float, power: float = 0.8, alpha: float = 0.05) -> Optional[int]:
    """The least number of pairs at which the two-sided paired t test detects a true mean difference
    `effect` with this power (power rises with n, so every larger n has it too); None for no effect."""
    if effect == 0:
        return None
    return _least_n(lambda n: paired_t_power(effect, sd, n, alpha) >= power, 2)


def _binomial_pmf(m: int, n: int, p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return float(m == (n if p >= 1.0 else 0))
    return math.exp(math.lgamma(n + 1) - math.lgamma(m + 1) - math.lgamma(n - m + 1)
                    + m * math.log(p) + (n - m) * math.log1p(-p))


def _binomial_at_most(k: int, m: int, p: float) -> float:
    """P(X <= k), X ~ Bin(m, p): I_{1-p}(m - k, k + 1)."""
    if k < 0:
        return 0.0
    return 1.0 if k >= m else beta_incomplete(m - k, k + 1, 1.0 - p)


@lru_cache(maxsize=8192)
def mcnemar_critical(m: int, alpha: float = 0.05) -> int:
    """The largest k for which mcnemar_exact_p(k, m - k) < alpha (the test rejects when the smaller
    of the two discordant counts is k or less); -1 when no split of m discordant pairs rejects.
    Found from the normal guess by the tail P(X <= k), X ~ Bin(m, 1/2), in floats; a tail within
    1e-9 of alpha / 2 is settled by mcnemar_exact_p's exact integers, so the two never disagree."""
    def rejects(k: int) -> bool:
        tail = _binomial_at_most(k, m, 0.5)
        if abs(2 * tail - alpha) <= 1e-9 * alpha:
            return mcnemar_exact_p(k, m - k) < alpha
        return 2 * tail < alpha
    k = min(max(int(m / 2 - Z95 * math.sqrt(m) / 2), -1), m)
    while k >= 0 and not rejects(k):
        k -= 1
    while k + 1 < m and rejects(k + 1):
        k += 1
    return k


def _mcnemar_power_given(m: int, share: float, alpha: float) -> float:
    """P(reject) given m discordant pairs, each split the second way with probability share."""
    k = mcnemar_critical(m, alpha)
    if k < 0:
        return 0.0
    # c <= k or c >= m - k (disjoint: 2k < m wherever the test can reject)
    return _binomial_at_most(k, m, share) + _binomial_at_most(k, m, 1.0 - share)


def mcnemar_power(p10: float, p01: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided exact McNemar test (mcnemar_exact_p, rejecting at p < alpha) on n
    pairs, a pair being discordant one way (A right, B wrong) with probability p10 and the other
    way with probability p01: the sum over m ~ Bin(n, p10 + p01) discordant pairs of P(m) times the
    conditional power, the split being Bin(m, p01 / (p10 + p01)). Only the m within 12 standard
    deviations (+ 10) of n (p10 + p01) are summed: the mass left out is far below 1e-12."""
    discordant = p10 + p01
    if n < 1 or discordant <= 0:
        return 0.0
    share = p01 / discordant
    centre, spread = n * discordant, math.sqrt(n * discordant * max(0.0, 1.0 - discordant))
    low = max(1, int(centre - 12 * spread - 10))
    high = min(n, int(centre + 12 * spread + 10) + 1)
    total = sum(_binomial_pmf(m, n, discordant) * _mcnemar_power_given(m, share, alpha)
                for m in range(low, high + 1))
    return min(1.0, total)


MCNEMAR_EXACT_UP_TO = 200  # expected discordant pairs: past them, Connor's normal approximation


def mcnemar_power_normal(p10: float, p01: float, n: int, alpha: float = 0.05) -> float:
    """Connor's (1987) normal approximation of McNemar's power: Phi((|p01 - p10| sqrt(n) - z
    sqrt(d)) / sqrt(d - (p01 - p10)^2)), d = p10 + p01. Past MCNEMAR_EXACT_UP_TO expected
    discordant pairs the exact test's steps are fine enough that it agrees (tests/test_stats_power.py
    checks by simulation), and the exact sum would cost seconds."""
    discordant, effect = p10 + p01, abs(p01 - p10)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    spread = math.sqrt(max(discordant - effect * effect, 1e-300))
    return NormalDist().cdf((effect * math.sqrt(n) - z * math.sqrt(discordant)) / spread)


def mcnemar_mde(discordant: float, n: int, power: float = 0.8, alpha: float = 0.05) -> Optional[float]:
    """The smallest |p01 - p10| that the exact McNemar test on n pairs detects with this power when a
    pair is discordant with probability `discordant` (estimated as (b + c) / n): bisection over
    (0, discordant], as the power rises with |p01 - p10| at a fixed discordance, to 2-3 significant
    digits (a sample's MDE varies more than that). None when even the largest possible difference
    (every discordant pair one way) falls short of the power. Connor's approximation past
    MCNEMAR_EXACT_UP_TO expected discordant pairs."""
    exact = n * discordant <= MCNEMAR_EXACT_UP_TO
    of = mcnemar_power if exact else mcnemar_power_normal

    def power_at(effect: float) -> float:
        return of((discordant - effect) / 2, (discordant + effect) / 2, n, alpha)
    if discordant <= 0 or power_at(discordant) < power:
        return None
    return _find_least(lambda effect: power_at(effect) >= power, 0.0, discordant, steps=16)


def mcnemar_examples_needed(discordant: float, effect: float, power: float = 0.8, alpha: float = 0.05,
                            window: int = 30) -> Optional[int]:
    """Pairs needed for the exact McNemar test to detect |p01 - p10| = effect with this power, a
    pair being discordant with probability `discordant`.

    An exact test's power is not monotone in n: where nearly every pair is discordant it saw-tooths
    as the critical count steps (at discordance 1, effect 0.4 it falls from 0.118 at n = 6 to 0.083
    at n = 7). Returned: the least n at which the power reaches `power` and stays there for each of
    the next `window` values of n, with the power below it at n - 1. Where pairs are mostly
    concordant the binomial spread of the discordant count smooths the saw-tooth away and this is
    simply the least n with that power. None where effect is 0 or above the discordance."""
    if not 0 < effect <= discordant:
        return None
    p10, p01 = (discordant - effect) / 2, (discordant + effect) / 2
    z, z_power = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    connor = math.ceil((z * math.sqrt(discordant) + z_power * math.sqrt(discordant - effect * effect)) ** 2
                       / effect ** 2)
    if connor * discordant > MCNEMAR_EXACT_UP_TO:
        return connor  # Connor's (1987) sample size: the exact test's steps are fine there

    def reaches(n: int) -> bool:
        return mcnemar_power(p10, p01, n, alpha) >= power
    start = 1
    while True:
        n = _least_n(reaches, start)
        dip = next((m for m in range(n + 1, n + window + 1) if not reaches(m)), None)
        if dip is None:
            return n
        start = dip + 1  # a dip after the crossing: look again past it


# ---------------------------------------------------------------- several comparisons, equivalence


def holm(p_values: Iterable[float]) -> list:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p is multiplied by
    (m - i + 1), made non-decreasing along that order (a later p never adjusts below an earlier one)
    and capped at 1. Rejecting where adjusted p < alpha keeps the chance of any false "better" among
    m comparisons at or below alpha, whatever their dependence (statsmodels' multipletests "holm")."""
    p_values = list(p_values)
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(sorted(range(m), key=p_values.__getitem__)):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def tost_paired(mean_diff: float, se: float, df: int, margin: float) -> float:
    """p-value of equivalence within +/- margin by two one-sided t tests (TOST) on paired
    differences: H0 "true difference <= -margin" and H0 "true difference >= +margin", each tested at
    the same level; p is the larger of the two one-sided p-values, and p < alpha says the two are
    equivalent within the margin (the 1 - 2 alpha interval lies inside it). mean_diff and se are the
    paired differences' mean and standard error, df = n - 1 (statsmodels' ttost_paired). The report
    uses this paired t for 0/1 scores too, where there is no exact TOST: at the sample sizes that can
    show equivalence the t is close to its normal limit."""
    if margin <= 0:
        raise ValueError("an equivalence margin is a positive number")
    if se == 0:
        return 0.0 if abs(mean_diff) < margin else 1.0
    above_lower = 1.0 - t_cdf((mean_diff + margin) / se, df)  # H0: diff <= -margin
    below_upper = t_cdf((mean_diff - margin) / se, df)  # H0: diff >= +margin
    return max(above_lower, below_upper)


# ---------------------------------------------------------------- seeds and questions


def prediction_interval(values: Iterable[float], level: float = 0.95) -> Optional[tuple]:
    """The interval that holds ONE NEW run's value (a new seed on the same questions) with
    probability `level`, from k runs' values: mean +/- t((1 + level) / 2, k - 1) * sd * sqrt(1 + 1/k).
    Not the confidence interval of the mean (which shrinks as runs are added): a new run varies by
    sd on its own, plus the uncertainty of the mean. None below 2 values."""
    acc = of(values)
    if acc.n < 2:
        return None
    half = t_quantile((1 + level) / 2, acc.n - 1) * acc.sd * math.sqrt(1 + 1 / acc.n)
    return acc.mean - half, acc.mean + half


def variance_split(scores: dict) -> Optional[dict]:
    """Split the variance of an eval's mean into its question part and its seed part (Miller,
    sections 3 and 5), from {example: [its score in each run]}.

    Examples scored by fewer than 2 runs tell nothing of the seed variance and are left out
    (`left_out` counts them). Of the n examples kept: `within` (sampling, seed) variance = the mean
    over examples of the sample variance across runs, the one-way ANOVA mean square within on
    balanced data; `between` (question) variance = the variance of the example means less
    within / k, floored at 0, where k is the harmonic mean of the runs per example (the number of
    runs when all examples have the same, and what makes within / k the seed noise left in an
    example mean). The grand mean (of the example means) has variance between / n (question part)
    plus within / (n k) (seed part); `seed_share` is the seed part's share, None when both are 0.
    None when fewer than 2 examples have 2 runs."""
    kept = [of(v) for v in scores.values() if len(v) >= 2]
    n = len(kept)
    if n < 2:
        return None
    counts = {acc.n for acc in kept}
    k = counts.pop() if len(counts) == 1 else n / math.fsum(1 / acc.n for acc in kept)
    within = math.fsum(acc.sd ** 2 for acc in kept) / n
    means = of(acc.mean for acc in kept)
    between = max(0.0, means.sd ** 2 - within / k)
    question_part, seed_part = between / n, within / (n * k)
    variance = question_part + seed_part
    return {"mean": means.mean, "n": n, "k": k, "left_out": len(scores) - n,
            "within": within, "between": between, "variance_of_mean": variance,
            "question_part": question_part, "seed_part": seed_part,
            "seed_share": seed_part / variance if variance > 0 else None}


def split_se(split: dict, questions: float = 1.0, seeds: float = 1.0) -> float:
    """The SE of the mean that `split` predicts with `questions` times the examples and `seeds`
    times the runs on each: sqrt(between / (q n) + within / (q n s k))."""
    n, k = split["n"] * questions, split["k"] * seeds
    return math.sqrt(split["between"] / n + split["within"] / (n * k))


def more_seeds_or_questions(split: dict, unit: str = "questions") -> str:
    """Advice from a variance_split: whether more seeds or more questions would narrow the mean's
    interval, with the SE now, with twice the runs on each question and with twice the questions.
    Twice the questions always divides the SE by sqrt(2); twice the seeds only shrinks the seed part,
    so it is worth as much only where the seed part is nearly all of the variance. unit: what the
    split's examples are (clusters, where a passage's questions are one)."""
    now, seeds, questions = split_se(split), split_se(split, seeds=2), split_se(split, questions=2)
    share = split["seed_share"] or 0.0
    figures = (f"seeds make {share:.0%} of the mean's variance; SE {now:.3g} now, {seeds:.3g} with twice "
               f"the seeds ({2 * split['k']:.3g} each), {questions:.3g} with twice the {unit} "
               f"({2 * split['n']})")
    if share < 0.2:
        advice = f"more seeds will not narrow this interval much; more {unit} will"
    elif share > 0.6:
        advice = f"more seeds will narrow this interval nearly as much as more {unit}"
    else:
        advice = f"more {unit} narrow this interval more than more seeds, but both help"
    return f"{advice}: {figures}"
