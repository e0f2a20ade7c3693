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
from functools import lru_cache
from statistics import NormalDist
from typing import Callable, Iterable, Optional

Z95 = NormalDist().inv_cdf(0.975)  # two-sided 95%
Z_POWER80 = NormalDist().inv_cdf(0.80)  # one-sided 80% power
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


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    term, tail = 1, 1  # C(n, 0); then C(n, i) from C(n, i-1), exact integers
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2 ** n)  # int / int is correctly rounded, even for large n


def minimum_detectable_effect(sd: float, n: int) -> float:
    """The smallest true mean difference that a two-sided 5% test on n paired examples detects
    with 80% power: (z_0.975 + z_0.80) * sd / sqrt(n) (Miller's power formula for paired data)."""
    return (Z95 + Z_POWER80) * sd / math.sqrt(n)


def examples_needed(sd: float, effect: float) -> int:
    """Paired examples needed to detect `effect` at 5% (two-sided) with 80% power."""
    return math.ceil(((Z95 + Z_POWER80) * sd / effect) ** 2)
