"""Several comparisons, equivalence, seeds against questions and clusters (ops_tasks/operations/
stats.py): Holm, paired TOST, the prediction interval for a new seed, the variance split and its
advice, and the clustered difference, each against statsmodels where it is installed (those tests
skip otherwise) and against numpy/scipy or the formula by hand always."""

import math
import random
import statistics

import pytest

from ops_tasks.operations.stats import (clustered, holm, more_seeds_or_questions,
                                        prediction_interval, split_se, t975, t_interval, tost_paired,
                                        variance_split)

np = pytest.importorskip("numpy")
scipy_stats = pytest.importorskip("scipy.stats")

P_SETS = [[0.01, 0.04, 0.03, 0.005, 0.5], [0.2, 0.2, 0.2], [0.001], [0.04, 0.049, 0.03, 0.02],
          [0.9, 0.01, 0.6, 0.011, 0.3, 0.0]]


@pytest.mark.parametrize("p_values", P_SETS)
def test_holm_by_hand(p_values):
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    steps = [min(1.0, (m - rank) * p_values[i]) for rank, i in enumerate(order)]
    expected = [0.0] * m
    for rank, i in enumerate(order):
        expected[i] = max(steps[:rank + 1])
    assert holm(p_values) == pytest.approx(expected, abs=1e-15)
    assert holm([]) == []


@pytest.mark.parametrize("p_values", P_SETS)
def test_holm_matches_statsmodels(p_values):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    expected = multitest.multipletests(p_values, alpha=0.05, method="holm")[1]
    assert holm(p_values) == pytest.approx(list(expected), abs=1e-15)


def paired_data(seed, n=40, shift=0.02):
    rng = random.Random(seed)
    a = [rng.random() for _ in range(n)]
    b = [x + rng.gauss(shift, 0.1) for x in a]
    diffs = [y - x for x, y in zip(a, b)]
    return a, b, statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(n)


@pytest.mark.parametrize("seed,margin", [(1, 0.05), (2, 0.03), (3, 0.1), (4, 0.01)])
def test_tost_paired_by_scipy_t(seed, margin):
    a, b, mean, se = paired_data(seed)
    df = len(a) - 1
    lower = scipy_stats.t.sf((mean + margin) / se, df)
    upper = scipy_stats.t.cdf((mean - margin) / se, df)
    assert tost_paired(mean, se, df, margin) == pytest.approx(max(lower, upper), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("seed,margin", [(1, 0.05), (2, 0.03), (3, 0.1), (4, 0.01)])
def test_tost_paired_matches_statsmodels_ttost_paired(seed, margin):
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    a, b, mean, se = paired_data(seed)
    expected = weightstats.ttost_paired(np.array(b), np.array(a), -margin, margin)[0]
    assert tost_paired(mean, se, len(a) - 1, margin) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_tost_edges():
    assert tost_paired(0.01, 0.0, 10, 0.05) == 0.0  # no spread, inside the margin
    assert tost_paired(0.06, 0.0, 10, 0.05) == 1.0
    assert tost_paired(0.0, 0.01, 1000, 0.05) < 1e-6  # clearly equivalent
    assert tost_paired(0.05, 0.01, 1000, 0.05) == pytest.approx(0.5)  # at the margin: p = 1/2
    with pytest.raises(ValueError):
        tost_paired(0.0, 0.01, 10, 0.0)


@pytest.mark.parametrize("values", [[0.70, 0.72, 0.69], [0.5, 0.6], [1.0, 2.0, 4.0, 8.0, 3.0]])
def test_prediction_interval_matches_the_formula_with_scipy_t(values):
    k = len(values)
    half = scipy_stats.t.ppf(0.975, k - 1) * statistics.stdev(values) * math.sqrt(1 + 1 / k)
    low, high = prediction_interval(values)
    mean = statistics.fmean(values)
    assert (low, high) == (pytest.approx(mean - half, rel=1e-9), pytest.approx(mean + half, rel=1e-9))
    half90 = scipy_stats.t.ppf(0.95, k - 1) * statistics.stdev(values) * math.sqrt(1 + 1 / k)
    assert prediction_interval(values, level=0.9)[1] == pytest.approx(mean + half90, rel=1e-9)
    assert prediction_interval([0.7]) is None and prediction_interval([]) is None


def seeded_scores(seed, n=30, k=3, question_sd=0.2, seed_sd=0.1):
    rng = random.Random(seed)
    scores = {}
    for i in range(n):
        level = rng.gauss(0.6, question_sd)
        scores[f"q{i}"] = [level + rng.gauss(0.0, seed_sd) for _ in range(k)]
    return scores


def test_variance_split_by_hand():
    scores = {"e1": [1.0, 0.0, 1.0], "e2": [1.0, 1.0, 1.0], "e3": [0.0, 0.0, 1.0], "e4": [0.0, 0.0, 0.0],
              "lonely": [1.0]}
    split = variance_split(scores)
    within = (1 / 3 + 0 + 1 / 3 + 0) / 4  # sample variances of (1,0,1), (1,1,1), (0,0,1), (0,0,0)
    means = [2 / 3, 1.0, 1 / 3, 0.0]
    between = statistics.variance(means) - within / 3
    assert split["within"] == pytest.approx(within) and split["between"] == pytest.approx(between)
    assert (split["n"], split["k"], split["left_out"]) == (4, 3, 1)
    assert split["mean"] == pytest.approx(0.5)
    assert split["question_part"] == pytest.approx(between / 4)
    assert split["seed_part"] == pytest.approx(within / 12)
    assert split["variance_of_mean"] == pytest.approx(between / 4 + within / 12)
    assert split["seed_share"] == pytest.approx((within / 12) / (between / 4 + within / 12))
    # Balanced data: the variance of the mean is the variance of the example means over n.
    assert split["variance_of_mean"] == pytest.approx(statistics.variance(means) / 4)
    assert variance_split({"a": [1.0, 0.0], "b": [1.0]}) is None


def test_variance_split_within_is_the_anova_mean_square_within_numpy():
    scores = seeded_scores(5)
    data = np.array(list(scores.values()))
    ss_within = ((data - data.mean(axis=1, keepdims=True)) ** 2).sum()
    ms_within = ss_within / (data.size - data.shape[0])
    ms_between = data.shape[1] * data.mean(axis=1).var(ddof=1)
    split = variance_split(scores)
    assert split["within"] == pytest.approx(ms_within, rel=1e-12)
    # The textbook one-way random-effects estimate: (MS between - MS within) / k.
    assert split["between"] == pytest.approx((ms_between - ms_within) / data.shape[1], rel=1e-12)


def test_variance_split_within_matches_statsmodels_anova():
    smf = pytest.importorskip("statsmodels.formula.api")
    sm = pytest.importorskip("statsmodels.api")
    pandas = pytest.importorskip("pandas")
    scores = seeded_scores(6)
    rows = [(example, score) for example, values in scores.items() for score in values]
    frame = pandas.DataFrame(rows, columns=["example", "score"])
    table = sm.stats.anova_lm(smf.ols("score ~ C(example)", data=frame).fit())
    assert variance_split(scores)["within"] == pytest.approx(table["mean_sq"]["Residual"], rel=1e-12)
    k = 3
    between = (table["mean_sq"]["C(example)"] - table["mean_sq"]["Residual"]) / k
    assert variance_split(scores)["between"] == pytest.approx(between, rel=1e-12)


def test_unbalanced_runs_use_the_harmonic_mean_of_the_counts():
    scores = {"a": [1.0, 0.0], "b": [1.0, 1.0, 0.0, 1.0], "c": [0.0, 0.0, 0.0, 1.0]}
    assert variance_split(scores)["k"] == pytest.approx(3 / (1 / 2 + 1 / 4 + 1 / 4))


def test_advice_names_the_cheaper_way_to_a_narrower_interval():
    questions_matter = variance_split(seeded_scores(7, question_sd=0.3, seed_sd=0.05))
    seeds_matter = variance_split(seeded_scores(8, question_sd=0.0, seed_sd=0.3))
    assert questions_matter["seed_share"] < 0.2 < 0.6 < seeds_matter["seed_share"]
    text = more_seeds_or_questions(questions_matter)
    assert text.startswith("more seeds will not narrow this interval much; more questions will")
    now = math.sqrt(questions_matter["variance_of_mean"])
    assert f"SE {now:.3g} now" in text
    assert f"{split_se(questions_matter, seeds=2):.3g} with twice the seeds (6 each)" in text
    assert f"{now / math.sqrt(2):.3g} with twice the questions (60)" in text
    assert more_seeds_or_questions(seeds_matter).startswith(
        "more seeds will narrow this interval nearly as much as more questions")
    both = dict(questions_matter, seed_share=0.4)
    assert more_seeds_or_questions(both).startswith("more questions narrow this interval more")
    # The SEs the advice quotes, from the components.
    n, k = questions_matter["n"], questions_matter["k"]
    b, w = questions_matter["between"], questions_matter["within"]
    assert split_se(questions_matter, seeds=2) == pytest.approx(math.sqrt(b / n + w / (2 * n * k)))
    assert split_se(questions_matter, questions=2) == pytest.approx(math.sqrt(b / (2 * n) + w / (2 * n * k)))


def clustered_diffs(seed, clusters=12):
    rng = random.Random(seed)
    groups = {}
    for g in range(clusters):
        passage = rng.gauss(0.03, 0.1)
        groups[f"p{g}"] = [passage + rng.gauss(0.0, 0.1) for _ in range(rng.randint(2, 6))]
    return groups


def clustered_from(values_by_cluster: dict) -> dict:
    """clustered over raw values grouped by cluster: each cluster's (sum, count)."""
    return clustered((math.fsum(v), len(v)) for v in values_by_cluster.values())


def test_clustered_by_the_sandwich_in_numpy():
    groups = clustered_diffs(4)
    values = np.concatenate([np.array(v) for v in groups.values()])
    residual_sums = np.array([np.sum(np.array(v) - values.mean()) for v in groups.values()])
    g = len(groups)
    se = math.sqrt(g / (g - 1) * (residual_sums ** 2).sum()) / len(values)
    result = clustered_from(groups)
    assert result["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-12)
    assert (result["clusters"], result["n"]) == (g, len(values))


def test_clustered_matches_statsmodels_ols_cluster():
    sm = pytest.importorskip("statsmodels.api")
    groups = clustered_diffs(5)
    values = np.concatenate([np.array(v) for v in groups.values()])
    labels = np.concatenate([[i] * len(v) for i, v in enumerate(groups.values())])
    fit = sm.OLS(values, np.ones(len(values))).fit(cov_type="cluster", cov_kwds={"groups": labels}, use_t=True)
    result = clustered_from(groups)
    assert result["se"] == pytest.approx(fit.bse[0], rel=1e-10)
    low, high = fit.conf_int(0.05)[0]
    assert t_interval(result["mean"], result["se"], result["clusters"] - 1) == (
        pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert t975(result["clusters"] - 1) == pytest.approx(scipy_stats.t.ppf(0.975, len(groups) - 1), rel=1e-9)


def test_advice_names_its_unit():
    split = variance_split({f"p{i}": [0.1 * (i % 5), 0.1 * (i % 5) + 0.01] for i in range(20)})
    text = more_seeds_or_questions(split, "clusters")
    assert text.startswith("more seeds will not narrow this interval much; more clusters will: ")
    assert "with twice the clusters (40)" in text
