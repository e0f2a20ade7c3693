"""ops_tasks/operations/ranking.py: several models at once (Holm), the ranking with certain places, and
equivalence within a margin (TOST). Comparisons are built by report.paired from per-example scores, as
the report builds them; the simulations use a fast copy of its paired t (checked against it here)."""

import math

import pytest

from ops_tasks.operations import ranking, report, stats

np = pytest.importorskip("numpy")


def scores(shift: float, noise: float = 0.3, n: int = 60, phase: float = 0.0) -> dict:
    """Deterministic per-example scores: a question difficulty shared by every model, the model's
    shift and a model-by-question wiggle (no random generator: the numbers in the lines are fixed)."""
    return {f"q{i}": math.sin(i * 1.7) + shift + noise * math.sin(i * 12.9898 + phase * 78.233 + i * i * 0.1)
            for i in range(n)}


def compare(runs: dict, x: str, y: str, lower: bool = False, metric: str = "avg_reward") -> dict:
    return report.paired(lambda: [(runs[x], runs[y])], x, y, report.metric_of(metric, lower))


def all_pairs(runs: dict, lower: bool = False, metric: str = "avg_reward") -> list:
    names = list(runs)
    return [compare(runs, x, y, lower, metric) for i, x in enumerate(names) for y in names[i + 1:]]


def fast_comparison(a, b, x: str, y: str) -> dict:
    """What report.paired gives for continuous scores (paired t), from numpy arrays."""
    d = b - a
    n = len(d)
    sd = float(d.std(ddof=1))
    se, mean = sd / math.sqrt(n), float(d.mean())
    half = stats.t975(n - 1) * se
    return {"run_a": x, "run_b": y, "metric": "avg_reward", "lower_is_better": False, "n": n,
            "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_diff": mean, "sd_diff": sd, "se_diff": se,
            "ci95_low": mean - half, "ci95_high": mean + half, "test": "paired t",
            "p_value": stats.t_test_p(mean, se, n - 1), "clusters": None}


def test_the_fast_comparison_is_what_report_paired_gives():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 80), rng.normal(0.1, 1, 80)
    slow = report.paired(lambda: [(dict(enumerate(a)), dict(enumerate(b)))], "A", "B", report.metric_of())
    fast = fast_comparison(a, b, "A", "B")
    for key in fast:
        if isinstance(fast[key], float):
            assert fast[key] == pytest.approx(slow[key], rel=1e-12, abs=1e-15), key
        else:
            assert fast[key] == slow[key], key


def test_holm_p_values_are_statsmodels_multipletests_over_the_pairs():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    runs = {"M1": scores(0.12, phase=1), "M2": scores(0.05, phase=2), "M3": scores(0.0, phase=3),
            "M4": scores(0.02, phase=4)}
    comparisons = all_pairs(runs)
    result = ranking.several(comparisons)
    expected = multitest.multipletests([c["p_value"] for c in comparisons], alpha=0.05, method="holm")[1]
    assert [p["p_holm"] for p in result["pairs"]] == pytest.approx(list(expected), abs=1e-15)
    assert [p["p_value"] for p in result["pairs"]] == [c["p_value"] for c in comparisons]
    lines = ranking.several_lines(result)
    assert lines[0] == "4 models compared on avg_reward: 6 pairs (all pairs), Holm-corrected at 5% family-wise"
    for line, pair in zip(lines[1:7], result["pairs"]):
        assert f"p = {pair['p_value']:.2g}, Holm p = {pair['p_holm']:.2g}" in line
        assert line.endswith("(60 shared examples)")
    assert ("note: Holm's correction over the 6 p-values of the family (all pairs) holds the chance that any pair is "
            "declared different when none is at 5% (family-wise)") in lines
    assert ("note: each pair is compared on the examples both of its models share (60 shared examples a pair), "
            "paired as in a two-way comparison") in lines


@pytest.mark.parametrize("seed,shift,margin", [(1, 0.0, 0.3), (2, 0.2, 0.3), (3, 0.05, 0.1), (4, -0.1, 0.25)])
def test_tost_p_is_statsmodels_ttost_paired_on_the_raw_pairs(seed, shift, margin):
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, 40)
    b = a + shift + rng.normal(0, 0.5, 40)
    c = report.paired(lambda: [(dict(enumerate(a)), dict(enumerate(b)))], "A", "B", report.metric_of())
    expected = weightstats.ttost_paired(b, a, -margin, margin)[0]
    result = ranking.several([c], margin=margin)
    pair = result["pairs"][0]
    assert pair["tost_p"] == pytest.approx(expected, rel=1e-9)
    assert pair["tost_p_holm"] == pair["tost_p"]  # a family of one
    text = ranking.equivalence_text(c, margin)
    assert text.startswith(("equal" if expected < 0.05 else "not shown equal") + f" within +/-{margin:g} "
                           f"(TOST p = {expected:.2g})")


def test_a_clear_three_model_case_has_every_place_certain():
    runs = {"M3": scores(0.0, phase=3), "M1": scores(0.6, phase=1), "M2": scores(0.3, phase=2)}
    result = ranking.several(all_pairs(runs))
    assert [(p["place"], p["models"], p["certain"]) for p in result["ranking"]] == [
        ("1", ["M1"], True), ("2", ["M2"], True), ("3", ["M3"], True)]
    assert [p["decided"] for p in result["pairs"]] == ["b better", "b better", "a better"]  # M3-M1, M3-M2, M1-M2
    lines = ranking.several_lines(result)
    places = [line for line in lines if line.startswith("place")]
    assert places[0].startswith("place 1: M1 0.57")
    assert places[0].endswith("(certain: separated from each of the other 2 models, largest Holm p = "
                              f"{max(p['p_holm'] for p in result['pairs'] if 'M1' in (p['a'], p['b'])):.2g})")
    assert places[2].startswith("place 3: M3 ")
    m1_m2 = next(p for p in result["pairs"] if {p["a"], p["b"]} == {"M1", "M2"})
    assert lines[3] == (f"M1 better than M2 by {ranking.effect_text(-m1_m2['mean_diff'], -m1_m2['ci95_high'], -m1_m2['ci95_low'])}, "
                        f"p = {m1_m2['p_value']:.2g}, Holm p = {m1_m2['p_holm']:.2g} (60 shared examples)")


def test_two_inseparable_models_share_a_place_range():
    runs = {"M1": scores(0.6, phase=1), "M2": scores(0.02, phase=2), "M3": scores(0.0, phase=3)}
    result = ranking.several(all_pairs(runs))
    m2_m3 = result["pairs"][2]
    assert m2_m3["decided"] == "no detectable difference" and m2_m3["p_holm"] >= 0.05
    assert [(p["place"], p["models"], p["certain"]) for p in result["ranking"]] == [
        ("1", ["M1"], True), ("2-3", ["M2", "M3"], False)]
    assert result["ranking"][1]["why"] == f"not separated: M2 vs M3 (Holm p = {m2_m3['p_holm']:.2g})"
    lines = ranking.several_lines(result)
    assert lines[3].startswith(f"M2 vs M3: no detectable difference, M3 - M2 = ")
    assert any(line.startswith("places 2-3: M2 ") and line.endswith(
        f"(not certain: not separated: M2 vs M3 (Holm p = {m2_m3['p_holm']:.2g}))") for line in lines)


def test_lower_is_better_reverses_the_order():
    runs = {"M1": scores(0.6, phase=1), "M2": scores(0.3, phase=2), "M3": scores(0.0, phase=3)}
    result = ranking.several(all_pairs(runs, lower=True, metric="loss"))
    assert [p["models"] for p in result["ranking"]] == [["M3"], ["M2"], ["M1"]]
    assert all(p["certain"] for p in result["ranking"])
    lines = ranking.several_lines(result)
    assert lines[0].startswith("3 models compared on loss, lower is better: ")
    assert lines[1].startswith("M2 better than M1 by 0.") and lines[1].endswith("(lower is better) (60 shared examples)")


def test_pairs_with_no_p_value_are_left_out_of_the_family_and_said_so():
    base = {k: round(v * 64) / 64 for k, v in scores(0.0, phase=1).items()}  # + 0.25 exactly, no rounding
    runs = {"A": base, "B": {k: v + 0.25 for k, v in base.items()}, "C": scores(0.12, noise=2.0, phase=3)}
    comparisons = all_pairs(runs)
    assert comparisons[0]["p_value"] is None  # B - A is 0.25 on every example: no spread, no test
    result = ranking.several(comparisons, margin=0.1)
    first = result["pairs"][0]
    assert (first["decided"], first["p_holm"], first["tost_p"], first["equivalence"]) == (
        "not tested", None, None, "no equivalence test")
    tested = [p["p_value"] for p in result["pairs"][1:]]
    assert [p["p_holm"] for p in result["pairs"][1:]] == pytest.approx(stats.holm(tested))
    lines = ranking.several_lines(result)
    assert lines[1] == ("A vs B: not tested, left out of the family (none: every shared example differs by exactly "
                        "the same amount) (60 shared examples)")
    assert ("note: not tested, no p-value, left out of the family: A vs B (none: every shared example differs by "
            "exactly the same amount, 60 shared examples)") in lines
    assert "over the 2 p-values of the family" in " ".join(lines)
    assert "A vs B not tested (none: every shared example differs by exactly the same amount)" in " ".join(
        p["why"] for p in result["ranking"])


def test_a_baseline_family_places_through_chains_and_names_what_was_not_compared():
    runs = {"base": scores(0.3, phase=1), "good": scores(0.9, phase=2), "bad": scores(-0.3, phase=3),
            "same": scores(0.31, phase=4)}
    comparisons = [compare(runs, "base", name) for name in ("good", "bad", "same")]
    result = ranking.several(comparisons, baseline="base")
    assert result["family"] == "each against base"
    # good > base > bad says good > bad; same is not separated from base, and not compared with good or
    # bad: it may be anywhere, and good may be second (behind same)
    assert [(p["place"], p["models"], p["certain"]) for p in result["ranking"]] == [
        ("1-2", ["good"], False), ("1-4", ["same"], False), ("2-3", ["base"], False), ("3-4", ["bad"], False)]
    same_base = result["pairs"][2]
    assert same_base["decided"] == "no detectable difference"
    assert result["ranking"][0]["why"] == "not separated: good vs same not compared"
    assert result["ranking"][1]["why"] == (f"not separated: same vs base (Holm p = {same_base['p_holm']:.2g}); "
                                           "same vs good not compared; same vs bad not compared")
    lines = ranking.several_lines(result)
    assert "places 1-2: good 0.9" in " ".join(lines)
    assert ranking.several_lines(result)[0].startswith("4 models compared on avg_reward: 3 pairs (each against base)")
    with pytest.raises(ValueError, match="not a comparison against the baseline base"):
        ranking.several([compare(runs, "good", "bad")], baseline="base")


def test_a_family_of_one_metric_and_distinct_pairs_only():
    runs = {"A": scores(0.0, phase=1), "B": scores(0.1, phase=2)}
    with pytest.raises(ValueError, match="given twice"):
        ranking.several([compare(runs, "A", "B"), compare(runs, "B", "A")])
    with pytest.raises(ValueError, match="one metric"):
        ranking.several([compare(runs, "A", "B"), compare(runs, "A", "B", metric="loss")])
    with pytest.raises(ValueError, match="positive"):
        ranking.several([compare(runs, "A", "B")], margin=0)


def test_equivalence_text_of_one_comparison():
    a = scores(0.0, noise=0.1, n=400, phase=1)
    b = scores(0.005, noise=0.1, n=400, phase=2)
    c = compare({"A": a, "B": b}, "A", "B")
    p, df = ranking.tost(c, 0.05)
    assert df == 399 and p < 0.05
    half = stats.t_quantile(0.95, 399) * c["se_diff"]
    assert ranking.equivalence_text(c, 0.05) == (
        f"equal within +/-0.05 (TOST p = {p:.2g}): the 90% interval "
        f"{ranking._interval(c['mean_diff'] - half, c['mean_diff'] + half)} lies inside it")
    p2, _ = ranking.tost(c, 0.005)
    assert ranking.equivalence_text(c, 0.005) == (
        f"not shown equal within +/-0.005 (TOST p = {p2:.2g}): the 95% interval "
        f"{ranking._interval(c['ci95_low'], c['ci95_high'])} reaches beyond the margin")
    flat = compare({"A": a, "B": dict(a)}, "A", "B")
    assert ranking.equivalence_text(flat, 0.05) == (
        "no equivalence test within +/-0.05: no spread in the differences (no standard error)")
    one = compare({"A": {"q0": 0.5}, "B": {"q0": 0.7}}, "A", "B")
    assert ranking.equivalence_text(one, 0.05) == "no equivalence test within +/-0.05: no difference test (1 shared example)"


def test_0_1_scores_decided_by_mcnemar_get_the_paired_t_tost():
    weightstats = pytest.importorskip("statsmodels.stats.weightstats")
    a = np.array([1.0 if math.sin(i * 3.1) > -0.2 else 0.0 for i in range(300)])
    b = a.copy()
    b[::25] = 1 - b[::25]  # 12 disagreements, split both ways
    c = report.paired(lambda: [(dict(enumerate(a)), dict(enumerate(b)))], "A", "B", report.metric_of())
    assert c["test"] == "mcnemar exact"
    pair = ranking.several([c], margin=0.05)["pairs"][0]
    assert pair["tost_p"] == pytest.approx(weightstats.ttost_paired(b, a, -0.05, 0.05)[0], rel=1e-9)
    assert pair["decided"] == "equal within +/-margin" and pair["equivalence"] == "equal within +/-margin"
    line = ranking.several_lines(ranking.several([c], margin=0.05))[1]
    assert line.startswith("A vs B: equal within +/-0.05, B - A = ")
    assert f"; equal within +/-0.05 (TOST p = {pair['tost_p']:.2g}, Holm {pair['tost_p_holm']:.2g}) (300 shared examples)" in line


def test_effect_text_shows_the_digits_the_interval_vouches_for():
    assert ranking.effect_text(0.0523, 0.0131, 0.0915) == "0.052 [0.013, 0.091]"
    assert ranking.effect_text(0.0012, -0.0301, 0.0324) == "0.001 [-0.030, 0.032]"
    assert ranking.effect_text(0.106, 0.0019, 0.21) == "0.11 [0.0019, 0.21]"  # a bound off 0 is not shown as 0.00
    assert ranking.effect_text(12.34, 2.0, 22.7) == "12 [2, 23]"
    assert ranking.effect_text(0.5, None, None) == "0.5"


def _any_pair_different(rng, models: int, n: int, correct: bool) -> bool:
    question = rng.normal(0, 1, n)
    runs = [question + rng.normal(0, 0.7, n) for _ in range(models)]
    comparisons = [fast_comparison(runs[i], runs[j], f"M{i}", f"M{j}")
                   for i in range(models) for j in range(i + 1, models)]
    if correct:
        return any(p["decided"] in ("a better", "b better") for p in ranking.several(comparisons)["pairs"])
    return any(c["p_value"] < 0.05 for c in comparisons)


def test_with_four_identical_models_holm_holds_the_chance_of_any_false_difference_at_5_percent():
    replications = 1000
    rng = np.random.default_rng(20240611)
    holm = sum(_any_pair_different(rng, 4, 100, True) for _ in range(replications)) / replications
    rng = np.random.default_rng(20240611)  # the same data, read without a correction
    raw = sum(_any_pair_different(rng, 4, 100, False) for _ in range(replications)) / replications
    limit = 0.05 + 3 * math.sqrt(0.05 * 0.95 / replications)
    assert holm <= limit
    assert raw > 0.12  # six pairs at 5% each: well above 5%
    assert raw > holm + 0.08


def test_tost_size_at_the_margin_is_at_most_5_percent():
    replications, margin, n = 2000, 0.2, 60
    rng = np.random.default_rng(7)
    equal = 0
    for _ in range(replications):
        a = rng.normal(0, 1, n)
        b = a + margin + rng.normal(0, 0.6, n)  # the true difference is exactly the margin
        c = fast_comparison(a, b, "A", "B")
        equal += ranking.equivalence_text(c, margin).startswith("equal")
    size = equal / replications
    assert size <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / replications)
    assert size > 0.02  # the test is not empty: at the margin it says "equal" close to 5% of the time
