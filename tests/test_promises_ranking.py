"""The promises of ops_tasks/operations/ranking.py, word for word where a reader sees them: the family's
checks and errors, Holm over the tested pairs, TOST (df = clusters - 1 for a clustered comparison,
checked against scipy), the places a ranking allows (ties, chains, cycles, lower is better), the notes
naming pairs not tested or not compared, and the lines and digits of the text."""

import math

import pytest

from ops_tasks.operations import ranking, report, stats

scipy_stats = pytest.importorskip("scipy.stats")


def comp(a: str, b: str, diff: float = 0.1, se: float = 0.02, n: int = 100, p="auto", mean_a: float = 0.5,
         clusters=None, test: str = "paired t", lower: bool = False, metric: str = "avg_reward",
         sd=None, mean_b=None) -> dict:
    """A report.paired-shaped comparison with the numbers chosen (B - A = diff)."""
    df = clusters - 1 if clusters else n - 1
    half = stats.t975(df) * se if df >= 1 else None
    if p == "auto":
        p = stats.t_test_p(diff, se, df) if se and df >= 1 else None
    return {"run_a": a, "run_b": b, "metric": metric, "lower_is_better": lower, "n": n, "mean_a": mean_a,
            "mean_b": mean_a + diff if mean_b is None else mean_b, "mean_diff": diff,
            "sd_diff": se * math.sqrt(n) if sd is None else sd, "se_diff": se,
            "ci95_low": None if half is None else diff - half, "ci95_high": None if half is None else diff + half,
            "test": test, "p_value": p, "clusters": clusters}


def scipy_tost(diff: float, se: float, df: int, margin: float) -> float:
    t = scipy_stats.t
    return max(t.sf((diff + margin) / se, df), t.cdf((diff - margin) / se, df))


# ---------------------------------------------------------------- TOST and its df


@pytest.mark.parametrize("diff,se,n,clusters,margin", [
    (0.01, 0.02, 400, 6, 0.1),     # clustered: df 5, not 399
    (0.03, 0.015, 200, 12, 0.05),
    (-0.02, 0.01, 50, None, 0.05),  # not clustered: df n - 1
    (0.0, 0.05, 2, None, 0.2),      # n = 2: df 1, the least that tests
    (0.04, 0.03, 90, 2, 0.3),       # 2 clusters: df 1
])
def test_tost_df_is_clusters_minus_1_for_a_clustered_comparison_else_n_minus_1(diff, se, n, clusters, margin):
    c = comp("A", "B", diff=diff, se=se, n=n, clusters=clusters)
    df = clusters - 1 if clusters else n - 1
    p, got_df = ranking.tost(c, margin)
    assert got_df == df
    assert p == pytest.approx(scipy_tost(diff, se, df, margin), rel=1e-9)
    pair = ranking.several([c], margin=margin)["pairs"][0]
    assert (pair["tost_df"], pair["clusters"]) == (df, clusters)
    assert pair["tost_p"] == pytest.approx(scipy_tost(diff, se, df, margin), rel=1e-9)


def test_a_clustered_report_paired_comparison_tosts_with_clusters_minus_1_df():
    a = {f"q{i}": math.sin(i * 1.3) for i in range(60)}
    b = {k: v + 0.01 + 0.2 * math.sin(i * 7.1) for i, (k, v) in enumerate(a.items())}
    c = report.paired(lambda: [(a, b)], "A", "B", report.metric_of(), cluster_of=lambda key: int(key[1:]) % 8)
    assert c["clusters"] == 8
    p, df = ranking.tost(c, 0.1)
    assert df == 7
    assert p == pytest.approx(scipy_tost(c["mean_diff"], c["se_diff"], 7, 0.1), rel=1e-9)
    text = ranking.equivalence_text(c, 0.1)
    assert text.startswith(f"{'equal' if p < 0.05 else 'not shown equal'} within +/-0.1 (TOST p = {p:.2g}): ")


@pytest.mark.parametrize("change", [
    {"p_value": None}, {"se_diff": None}, {"se_diff": 0.0}, {"mean_diff": None}, {"n": 1},
    {"clusters": 1},  # one cluster: df 0
])
def test_nothing_to_test_gives_no_tost(change):
    c = dict(comp("A", "B", n=40, clusters=1 if "clusters" in change else None), **change)
    assert ranking.tost(c, 0.1) == (None, None)


def test_equivalence_text_says_which_interval_reaches_beyond_the_margin():
    # p >= 5% but the shown 95% interval, clipped to the metric's range, lies inside +/-0.06: the 90% one
    c = dict(comp("A", "B", diff=0.01, se=0.04, n=100), ci95_low=-0.05, ci95_high=0.05)
    p, df = ranking.tost(c, 0.06)
    assert p >= 0.05
    half = stats.t_quantile(0.95, df) * 0.04
    assert ranking.equivalence_text(c, 0.06) == (
        f"not shown equal within +/-0.06 (TOST p = {p:.2g}): the 90% interval "
        f"{ranking._interval(0.01 - half, 0.01 + half)} that TOST needs inside the margin reaches beyond it")
    # the 95% interval touching the margin exactly reaches it
    edge = dict(c, ci95_low=-0.06, ci95_high=0.05)
    assert "the 95% interval [-0.060, 0.050] reaches beyond the margin" in ranking.equivalence_text(edge, 0.06)
    edge = dict(c, ci95_low=-0.04, ci95_high=0.06)
    assert "the 95% interval [-0.040, 0.060] reaches beyond the margin" in ranking.equivalence_text(edge, 0.06)
    # no 95% interval shown: the 90% one
    assert "the 90% interval" in ranking.equivalence_text(dict(c, ci95_low=None, ci95_high=None), 0.06)


@pytest.mark.parametrize("change,words", [
    ({"sd_diff": 0.0, "se_diff": 0.0, "p_value": None}, "no spread in the differences (no standard error)"),
    ({"se_diff": 0.0, "sd_diff": 0.3}, "no spread in the differences (no standard error)"),
    ({"p_value": None, "n": 2}, "no difference test (2 shared examples)"),
    ({"p_value": None, "n": 1}, "no difference test (1 shared example)"),
    ({"p_value": None, "n": 0}, "no difference test (0 shared examples)"),
    ({"p_value": None, "se_diff": 0.0, "sd_diff": 0.3}, "no difference test (100 shared examples)"),
])
def test_equivalence_text_when_there_is_no_tost(change, words):
    c = dict(comp("A", "B"), **change)
    assert ranking.equivalence_text(c, 0.05) == f"no equivalence test within +/-0.05: {words}"


# ---------------------------------------------------------------- the family


def test_the_family_refuses_what_it_cannot_read_in_these_words():
    with pytest.raises(ValueError, match="^several needs at least one comparison$"):
        ranking.several([])
    for margin in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"^an equivalence margin is a positive number$"):
            ranking.several([comp("A", "B")], margin=margin)
    with pytest.raises(ValueError, match="^several compares one metric: avg_reward and loss mixed$"):
        ranking.several([comp("A", "B"), comp("A", "C", metric="loss")])
    with pytest.raises(ValueError, match="^several compares one metric: avg_reward and avg_reward mixed$"):
        ranking.several([comp("A", "B"), comp("A", "C", lower=True)])
    with pytest.raises(ValueError, match="^A vs A: a model against itself, or a pair given twice$"):
        ranking.several([comp("A", "A")])
    with pytest.raises(ValueError, match="^B vs A: a model against itself, or a pair given twice$"):
        ranking.several([comp("A", "B"), comp("B", "A")])
    with pytest.raises(ValueError, match="^B vs C is not a comparison against the baseline A$"):
        ranking.several([comp("A", "B"), comp("B", "C")], baseline="A")
    # truthy flags of one kind are one direction
    assert ranking.several([comp("A", "B", lower=1), comp("A", "C", lower=True)])["lower_is_better"] is True


def test_the_result_and_each_pair_carry_what_the_docstring_lists():
    cs = [comp("A", "B", diff=0.2, se=0.02, n=80, mean_a=0.4, clusters=9),
          comp("A", "C", diff=-0.01, se=0.02, n=80, mean_a=0.4)]
    result = ranking.several(cs, margin=0.1)
    assert {k: result[k] for k in ("family", "metric", "lower_is_better", "alpha", "margin", "models")} == {
        "family": "all pairs", "metric": "avg_reward", "lower_is_better": False, "alpha": 0.05, "margin": 0.1,
        "models": ["A", "B", "C"]}
    first = result["pairs"][0]
    assert set(first) == {"a", "b", "n", "clusters", "mean_a", "mean_b", "mean_diff", "ci95_low", "ci95_high",
                          "test", "p_value", "p_holm", "decided", "better", "tost_p", "tost_df",
                          "tost_p_holm", "equivalence"}
    for key, source in (("a", "run_a"), ("b", "run_b"), ("n", "n"), ("clusters", "clusters"), ("mean_a", "mean_a"),
                        ("mean_b", "mean_b"), ("mean_diff", "mean_diff"), ("ci95_low", "ci95_low"),
                        ("ci95_high", "ci95_high"), ("test", "test"), ("p_value", "p_value")):
        assert first[key] == cs[0][source], key
    assert (first["decided"], first["better"], first["tost_df"]) == ("b better", "B", 8)
    second = result["pairs"][1]
    assert (second["decided"], second["better"], second["equivalence"], second["tost_df"]) == (
        "equal within +/-margin", None, "equal within +/-margin", 79)
    assert [p["tost_p_holm"] for p in result["pairs"]] == pytest.approx(
        stats.holm([p["tost_p"] for p in result["pairs"]]))
    # no margin: no TOST fields at all
    plain = ranking.several(cs)["pairs"]
    assert all(p[k] is None for p in plain for k in ("tost_p", "tost_df", "tost_p_holm", "equivalence"))
    assert ranking.several(cs, baseline="A")["family"] == "each against A"


@pytest.mark.parametrize("p,diff,lower,decided,better", [
    (0.001, 0.1, False, "b better", "B"),
    (0.001, -0.1, False, "a better", "A"),
    (0.001, 0.1, True, "a better", "A"),    # lower is better: B - A > 0 says A better
    (0.001, -0.1, True, "b better", "B"),
    (0.001, 0.0, False, "no detectable difference", None),  # significant but no difference: no winner
    (0.05, 0.1, False, "no detectable difference", None),   # Holm p of exactly 5% is not below it
    (0.0499, 0.1, False, "b better", "B"),
    (None, 0.1, False, "not tested", None),
])
def test_a_pair_is_decided_by_its_holm_p_and_direction(p, diff, lower, decided, better):
    result = ranking.several([comp("A", "B", diff=diff, p=p, lower=lower)])
    pair = result["pairs"][0]
    assert (pair["p_holm"], pair["decided"], pair["better"]) == (p, decided, better)


def test_holm_runs_over_the_tested_pairs_only_and_tost_over_its_own_family():
    cs = [comp("A", "B", p=0.01), comp("A", "C", p=None, test="none"), comp("B", "C", p=0.02),
          comp("A", "D", p=0.04)]
    result = ranking.several(cs)
    assert [p["p_holm"] for p in result["pairs"]] == [pytest.approx(0.03), None, pytest.approx(0.04),
                                                       pytest.approx(0.04)]
    assert [p["decided"] for p in result["pairs"]] == ["b better", "not tested", "b better", "b better"]


def test_equivalence_needs_the_holm_adjusted_tost_below_5_percent():
    # alone each TOST p is under 5%; Holm over three pushes the largest to 3 * p
    cs = [comp("A", "B", diff=0.0, se=0.02, n=200, p=0.9), comp("A", "C", diff=0.0, se=0.02, n=200, p=0.9),
          comp("B", "C", diff=0.0, se=0.02, n=200, p=0.9)]
    margin = 0.02 * stats.t_quantile(0.98, 199)  # TOST p = 2% each
    result = ranking.several(cs, margin=margin)
    assert all(p["tost_p"] == pytest.approx(0.02, rel=1e-6) for p in result["pairs"])
    assert all(p["tost_p_holm"] == pytest.approx(0.06, rel=1e-6) for p in result["pairs"])
    assert {(p["equivalence"], p["decided"]) for p in result["pairs"]} == {
        ("not shown equal within +/-margin", "no detectable difference")}
    alone = ranking.several(cs[:1], margin=margin)["pairs"][0]
    assert (alone["equivalence"], alone["decided"]) == ("equal within +/-margin", "equal within +/-margin")
    # a pair decided better is not called equal, whatever its TOST
    better = ranking.several([comp("A", "B", diff=0.001, se=0.0001, n=200)], margin=0.1)["pairs"][0]
    assert (better["decided"], better["equivalence"]) == ("b better", "equal within +/-margin")
    # untested: no TOST, no equivalence test
    untested = ranking.several([comp("A", "B", p=None, test="none")], margin=0.1)["pairs"][0]
    assert (untested["decided"], untested["equivalence"], untested["tost_p_holm"]) == (
        "not tested", "no equivalence test", None)


# ---------------------------------------------------------------- notes


def test_the_notes_name_sizes_untested_pairs_the_margin_and_pairs_not_compared():
    cs = [comp("A", "B", n=50), comp("A", "C", n=70, p=None, test=None), comp("B", "D", n=60, p=None, test="none", mean_a=0.6)]
    notes = ranking.several(cs, margin=0.05)["notes"]
    assert notes[:5] == [
        "each pair is compared on the examples both of its models share (50 to 70 shared examples a pair), "
        "paired as in a two-way comparison",
        "Holm's correction over the 1 p-values of the family (all pairs) holds the chance that any pair is declared "
        "different when none is at 5% (family-wise)",
        "not tested, no p-value, left out of the family: A vs C (no test, 70 shared examples); "
        "B vs D (none, 60 shared examples)",
        "equivalence within +/-0.05: two one-sided paired t tests (TOST; the same t for 0/1 scores), Holm-adjusted "
        "as a family of their own: the chance of any false 'equal' is at most 5% too",
        "pairs not compared (not in the family): A vs D; B vs C; C vs D",
    ]
    assert len(notes) == 5
    one = ranking.several([comp("A", "B", n=50, diff=0.0), comp("B", "C", n=50, diff=0.0),
                          comp("A", "C", n=50, diff=0.0)])["notes"]
    assert one == [
        "each pair is compared on the examples both of its models share (50 shared examples a pair), "
        "paired as in a two-way comparison",
        "Holm's correction over the 3 p-values of the family (all pairs) holds the chance that any pair is declared "
        "different when none is at 5% (family-wise)"]
    # a baseline family does not list the pairs it never meant to compare
    base = ranking.several([comp("A", "B"), comp("A", "C")], baseline="A")["notes"]
    assert not any("not compared" in note for note in base)
    assert "(each against A)" in base[1]
    assert "equivalence within +/-0.125:" in ranking.several([comp("A", "B")], margin=0.125)["notes"][2]


def test_a_note_says_when_a_model_s_means_differ_between_its_pairs():
    cs = [comp("A", "B", n=50, mean_a=0.52, diff=0.08), comp("A", "C", n=80, mean_a=0.5, diff=0.2),
          comp("B", "C", n=80, mean_a=0.6, diff=0.1)]
    result = ranking.several(cs)
    assert result["notes"][-1] == (
        "the pairs share different example sets: the means of A differ between their comparisons; the order uses "
        "each model's mean on its largest shared set, the places only paired tests")
    # the mean on the largest shared set (80) is the one shown
    a_place = next(p for p in result["ranking"] if "A" in p["models"])
    assert a_place["means"][a_place["models"].index("A")] == 0.5
    # the same means (to 1e-12 relative) need no note
    same = [comp("A", "B", mean_a=0.5), comp("A", "C", mean_a=0.5 + 1e-14)]
    assert not any("different example sets" in n for n in ranking.several(same)["notes"])
    big = [comp("A", "B", mean_a=1000.0), comp("A", "C", mean_a=1000.0 + 1e-10)]
    assert not any("different example sets" in n for n in ranking.several(big)["notes"])
    small = [comp("A", "B", mean_a=0.5), comp("A", "C", mean_a=0.5 + 1e-11)]
    assert any("the means of A differ" in n for n in ranking.several(small)["notes"])


# ---------------------------------------------------------------- the ranking


def places(result) -> list:
    return [(p["place"], p["low"], p["high"], p["models"], p["certain"]) for p in result["ranking"]]


def test_a_chain_of_decisions_makes_places_certain_and_the_why_says_so():
    # A > B and B > C decided; A vs C not (its own p 0.5): the chain places A above C
    cs = [comp("A", "B", diff=-0.3, p=0.001, mean_a=0.9), comp("B", "C", diff=-0.3, p=0.001, mean_a=0.6),
          comp("A", "C", diff=-0.6, p=0.5, mean_a=0.9)]
    result = ranking.several(cs)
    assert places(result) == [("1", 1, 1, ["A"], True), ("2", 2, 2, ["B"], True), ("3", 3, 3, ["C"], True)]
    assert [p["why"] for p in result["ranking"]] == [
        "separated from each of the other 2 models, largest Holm p = 0.003; from C through a chain of decided pairs",
        "separated from each of the other 2 models, largest Holm p = 0.003",
        "separated from each of the other 2 models, largest Holm p = 0.003; from A through a chain of decided pairs"]
    lines = ranking.several_lines(result)
    assert lines[5:8] == [
        "place 1: A 0.9 (certain: separated from each of the other 2 models, largest Holm p = 0.003; from C through "
        "a chain of decided pairs)",
        "place 2: B 0.6 (certain: separated from each of the other 2 models, largest Holm p = 0.003)",
        "place 3: C 0.3 (certain: separated from each of the other 2 models, largest Holm p = 0.003; from A through "
        "a chain of decided pairs)"]


def test_lower_is_better_orders_lowest_first_and_ties_keep_the_models_order():
    cs = [comp("A", "B", diff=-0.3, p=0.001, mean_a=0.9, mean_b=0.6, lower=True, metric="loss"),
          comp("B", "C", diff=0.0, p=0.7, mean_a=0.6, lower=True, metric="loss"),
          comp("A", "C", diff=-0.3, p=0.001, mean_a=0.9, mean_b=0.6, lower=True, metric="loss")]
    result = ranking.several(cs)
    assert places(result) == [("1-2", 1, 2, ["B", "C"], False), ("3", 3, 3, ["A"], True)]
    assert result["ranking"][0]["means"] == [0.6, 0.6]
    assert result["ranking"][0]["why"] == "not separated: B vs C (Holm p = 0.7)"
    assert result["ranking"][1]["why"] == "separated from each of the other 2 models, largest Holm p = 0.003"
    lines = ranking.several_lines(result)
    assert lines[0] == "3 models compared on loss, lower is better: 3 pairs (all pairs), Holm-corrected at 5% family-wise"
    assert lines[4:7] == [
        "ranking (best first; a place is certain when the model is decided better than every model below it and "
        "worse than every one above):",
        "places 1-2: B 0.6, C 0.6 (not certain: not separated: B vs C (Holm p = 0.7))",
        "place 3: A 0.9 (certain: separated from each of the other 2 models, largest Holm p = 0.003)"]
    higher = ranking.several([dict(c, lower_is_better=False) for c in cs])
    assert places(higher) == [("1", 1, 1, ["A"], True), ("2-3", 2, 3, ["B", "C"], False)]


def test_a_cycle_of_decisions_is_said_and_places_come_from_direct_decisions():
    # A > B, B > C, C > A, all decided (pairs on different example sets can do this); D below all
    cs = [comp("A", "B", diff=-0.1, p=0.001, mean_a=0.7), comp("B", "C", diff=-0.1, p=0.001, mean_a=0.6),
          comp("C", "A", diff=-0.1, p=0.001, mean_a=0.5), comp("A", "D", diff=-0.5, p=0.001, mean_a=0.7)]
    result = ranking.several(cs)
    assert ("the decisions contradict one another (a cycle of 'better'): places from direct decisions only"
            in result["notes"])
    # direct only: A above B and D, below C
    ranges = {name: (p["low"], p["high"]) for p in result["ranking"] for name in p["models"]}
    assert ranges == {"A": (2, 2), "B": (2, 3), "C": (2, 3), "D": (2, 4)}
    acyclic = ranking.several(cs[:2] + cs[3:])
    assert not any("cycle" in note for note in acyclic["notes"])


def test_models_not_compared_are_open_and_named_once_within_an_entry():
    cs = [comp("A", "B", diff=0.0, p=0.6, mean_a=0.5), comp("C", "D", diff=0.0, p=None, test=None, mean_a=0.5)]
    result = ranking.several(cs)
    assert places(result) == [("1-4", 1, 4, ["A", "B", "C", "D"], False)]
    assert result["ranking"][0]["why"] == (
        "not separated: A vs B (Holm p = 0.6); A vs C not compared; A vs D not compared; B vs C not compared; "
        "B vs D not compared; C vs D not tested (no p-value)")
    assert ranking.place_line(result["ranking"][0]) == (
        "places 1-4: A 0.5, B 0.5, C 0.5, D 0.5 (not certain: " + result["ranking"][0]["why"] + ")")


def test_an_equal_pair_says_so_in_the_why_and_a_missing_mean_comes_last():
    cs = [comp("A", "B", diff=0.0, se=0.001, n=200, p=0.9, mean_a=0.5), comp("A", "C", p=0.9, mean_a=0.5, mean_b=None)]
    cs[1]["mean_b"] = None
    result = ranking.several(cs, margin=0.1)
    assert [p["models"] for p in result["ranking"]] == [["A", "B", "C"]]
    assert result["ranking"][0]["means"] == [0.5, 0.5, None]
    assert result["ranking"][0]["why"] == (
        "not separated: A vs B (Holm p = 1) equal within the margin; A vs C (Holm p = 1); B vs C not compared")
    assert ranking.place_line(result["ranking"][0]).startswith("places 1-3: A 0.5, B 0.5, C (not certain: ")
    order = ranking.several([comp("A", "B", mean_a=None, mean_b=0.2, p=0.9), comp("A", "C", mean_a=0.3, mean_b=-5.0, p=0.9)])
    assert order["ranking"][0]["models"] == ["B", "C", "A"]


def test_a_certain_place_without_direct_decisions_and_one_by_chain_only():
    # A vs C never compared: the chain A > B > C still places A first, and the why says how
    cs = [comp("A", "B", diff=-0.3, p=0.001, mean_a=0.9), comp("B", "C", diff=-0.3, p=0.001, mean_a=0.6)]
    result = ranking.several(cs)
    assert places(result) == [("1", 1, 1, ["A"], True), ("2", 2, 2, ["B"], True), ("3", 3, 3, ["C"], True)]
    assert result["ranking"][0]["why"] == ("separated from each of the other 2 models, largest Holm p = 0.002; "
                                           "from C through a chain of decided pairs")


# ---------------------------------------------------------------- lines and digits


def test_pair_lines_word_for_word():
    better = ranking.several([comp("A", "B", diff=0.05, se=0.01, n=200, p=0.003, clusters=20)], margin=0.02)
    pair = better["pairs"][0]
    p_tost = pair["tost_p"]
    assert ranking.pair_line(pair, False, 0.02) == (
        f"B better than A by {ranking.effect_text(0.05, pair['ci95_low'], pair['ci95_high'])}, p = 0.003, "
        f"Holm p = 0.003; not shown equal within +/-0.02 (TOST p = {p_tost:.2g}, Holm {p_tost:.2g}) "
        "(200 shared examples, 20 clusters)")
    a_wins = ranking.several([comp("A", "B", diff=-0.05, se=0.01, n=200, p=0.003, lower=False)])["pairs"][0]
    low, high = a_wins["ci95_low"], a_wins["ci95_high"]
    assert ranking.pair_line(a_wins, False) == (
        f"A better than B by {ranking.effect_text(0.05, -high, -low)}, p = 0.003, Holm p = 0.003 (200 shared examples)")
    lower = ranking.several([comp("A", "B", diff=0.05, se=0.01, n=200, p=0.003, lower=True)])["pairs"][0]
    assert ranking.pair_line(lower, True) == (
        f"A better than B by {ranking.effect_text(0.05, -high, -low)}, p = 0.003, Holm p = 0.003 (lower is better) "
        "(200 shared examples)")
    lower_b = ranking.several([comp("A", "B", diff=-0.05, se=0.01, n=200, p=0.003, lower=True)])["pairs"][0]
    assert ranking.pair_line(lower_b, True).startswith(
        f"B better than A by {ranking.effect_text(0.05, -high, -low)}, p = 0.003")
    no_ci = dict(pair, ci95_low=None, ci95_high=None)
    assert ranking.pair_line(no_ci, False).startswith("B better than A by 0.05, p = 0.003, Holm p = 0.003 (200 ")
    none = ranking.several([comp("A", "B", diff=0.01, se=0.01, n=200, p=0.3)], margin=0.005)["pairs"][0]
    assert none["decided"] == "no detectable difference"
    assert ranking.pair_line(none, True, 0.005) == (
        f"A vs B: no detectable difference, B - A = {ranking.effect_text(0.01, none['ci95_low'], none['ci95_high'])}, "
        f"p = 0.3, Holm p = 0.3; not shown equal within +/-0.005 (TOST p = {none['tost_p']:.2g}, "
        f"Holm {none['tost_p']:.2g}) (200 shared examples)")
    untested = ranking.several([comp("A", "B", p=None, test=None, clusters=0)], margin=0.05)["pairs"][0]
    assert ranking.pair_line(untested, False, 0.05) == (
        "A vs B: not tested, left out of the family (no p-value) (100 shared examples)")
    assert ranking.pair_line(dict(untested, test="none: no spread"), False) == (
        "A vs B: not tested, left out of the family (none: no spread) (100 shared examples)")
    no_tost = dict(none, tost_p=None)
    assert ranking.pair_line(no_tost, False, 0.005).endswith(
        "; no equivalence test (no spread in the differences, or no test) (200 shared examples)")


def test_an_equal_pair_line_and_the_family_lines():
    cs = [comp("A", "B", diff=0.0, se=0.001, n=200, p=0.9, mean_a=0.5)]
    result = ranking.several(cs, margin=0.1)
    pair = result["pairs"][0]
    assert pair["decided"] == "equal within +/-margin"
    lines = ranking.several_lines(result)
    assert lines[0] == "2 models compared on avg_reward: 1 pairs (all pairs), Holm-corrected at 5% family-wise"
    assert lines[1] == (
        f"A vs B: equal within +/-0.1, B - A = {ranking.effect_text(0.0, pair['ci95_low'], pair['ci95_high'])}, "
        f"p = 0.9, Holm p = 0.9; equal within +/-0.1 (TOST p = {pair['tost_p']:.2g}, Holm {pair['tost_p']:.2g}) "
        "(200 shared examples)")
    assert lines[2].startswith("ranking (best first;")
    assert lines[3] == "places 1-2: A 0.5, B 0.5 (not certain: not separated: A vs B (Holm p = 0.9) equal within the margin)"
    assert lines[4:] == [f"note: {note}" for note in result["notes"]]


@pytest.mark.parametrize("half,places", [(0.04, 3), (0.4, 2), (4.0, 1), (40.0, 0), (400.0, 0), (0.0, 3),
                                         (-1.0, 3), (float("inf"), 3), (float("nan"), 3), (0.01, 3), (0.0099, 4)])
def test_decimals_show_the_half_width_to_2_significant_digits(half, places):
    assert ranking._decimals(half) == places


@pytest.mark.parametrize("args,text", [
    ((0.0523, 0.0131, 0.0915), "0.052 [0.013, 0.091]"),
    ((-0.0004, -0.0301, 0.0324), "-0.0004 [-0.030, 0.032]"),    # an effect that rounds to 0 keeps 2 digits
    ((0.0, -0.03, 0.03), "0.000 [-0.030, 0.030]"),
    ((0.106, -0.0019, 0.21), "0.11 [-0.0019, 0.21]"),
    ((1234.5, 1000.0, 1500.0), "1234 [1000, 1500]"),
    ((0.5, 0.5, 0.5), "0.500 [0.500, 0.500]"),   # no width: 3 decimals
    ((0.12345, None, 0.2), "0.12"),
    ((0.12345, 0.1, None), "0.12"),
])
def test_effect_text_digits(args, text):
    assert ranking.effect_text(*args) == text


def test_place_line_labels_a_single_place_and_a_range():
    assert ranking.place_line({"place": "1", "low": 1, "high": 1, "models": ["M"], "means": [0.123456],
                               "certain": True, "why": "w"}) == "place 1: M 0.1235 (certain: w)"
    assert ranking.place_line({"place": "2-3", "low": 2, "high": 3, "models": ["M", "N"], "means": [None, 12346.0],
                               "certain": False, "why": "w"}) == "places 2-3: M, N 1.235e+04 (not certain: w)"


# ---------------------------------------------------------------- edges: 5% exactly, tolerances, zeros


def test_a_p_of_exactly_5_percent_shows_nothing(monkeypatch):
    pair = {"a": "A", "b": "B", "p_holm": 0.5, "tost_p_holm": 0.05, "equivalence": None, "better": None}
    ranking._decide(pair, {"mean_diff": 0.0}, False, 0.1)
    assert (pair["equivalence"], pair["decided"]) == ("not shown equal within +/-margin", "no detectable difference")
    c = comp("A", "B", diff=0.01, se=0.01, n=100)
    monkeypatch.setattr(ranking, "tost", lambda c, margin: (0.05, 99))
    assert ranking.equivalence_text(c, 0.5).startswith("not shown equal within +/-0.5 (TOST p = 0.05): ")


def test_a_margin_of_0_is_refused_even_when_no_pair_can_be_tested():
    with pytest.raises(ValueError, match="^an equivalence margin is a positive number$"):
        ranking.several([comp("A", "B", p=None, test=None)], margin=0)


def test_a_ranking_of_models_with_no_pairs_given_has_every_place_open():
    places_, notes = ranking.ranking(["A", "B"], [], [comp("A", "B", diff=0.1, mean_a=0.5)], False)
    assert notes == []
    assert [(p["place"], p["models"], p["certain"], p["why"]) for p in places_] == [
        ("1-2", ["B", "A"], False, "not separated: A vs B not compared")]


def test_a_chain_through_two_models_names_both():
    # A > B, B > C, B > D decided; C vs D not: A is first through chains to C and D
    cs = [comp("A", "B", diff=-0.2, p=0.001, mean_a=0.9, mean_b=0.7), comp("B", "C", diff=-0.3, p=0.001, mean_a=0.7, mean_b=0.4),
          comp("B", "D", diff=-0.3, p=0.002, mean_a=0.7, mean_b=0.4), comp("C", "D", diff=0.0, p=0.8, mean_a=0.4)]
    result = ranking.several(cs)
    assert places(result) == [("1", 1, 1, ["A"], True), ("2", 2, 2, ["B"], True), ("3-4", 3, 4, ["C", "D"], False)]
    assert result["ranking"][0]["why"] == ("separated from each of the other 3 models, largest Holm p = 0.004; "
                                           "from C, D through a chain of decided pairs")


@pytest.mark.parametrize("first,other,differ", [
    (1e-12, 0.0, False),        # exactly the tolerance (1e-12 below 1): the same mean
    (0.5, 0.5 + 1.5e-12, True),  # above 1e-12 for a mean below 1
    (0.5, 0.5 + 0.5e-12, False),
    (1000.0, 1000.0 + 5e-10, False),  # relative above 1: 1e-12 * 1000
])
def test_means_differ_beyond_a_tolerance_of_1e_12_relative(first, other, differ):
    cs = [comp("A", "B", n=100, mean_a=first, mean_b=0.3), comp("A", "C", n=50, mean_a=other, mean_b=0.3)]
    notes = ranking.several(cs)["notes"]
    assert any("the means of A differ" in note for note in notes) is differ


def test_the_note_on_differing_means_names_every_model_whose_means_differ():
    cs = [comp("A", "B", n=100, mean_a=0.5, mean_b=0.6), comp("A", "C", n=50, mean_a=0.51, mean_b=0.3),
          comp("B", "C", n=40, mean_a=0.62, mean_b=0.3)]
    assert ranking.several(cs)["notes"][-1].startswith(
        "the pairs share different example sets: the means of A, B differ between their comparisons; ")


@pytest.mark.parametrize("lower,order", [(False, ["B", "A", "C"]), (True, ["C", "A", "B"])])
def test_a_mean_of_0_is_ordered_as_0(lower, order):
    cs = [comp("A", "B", mean_a=0.0, mean_b=0.5, p=0.5, lower=lower), comp("A", "C", mean_a=0.0, mean_b=-0.5, p=0.5, lower=lower)]
    assert ranking.several(cs)["ranking"][0]["models"] == order


def test_no_place_is_certain_among_models_whose_decisions_go_round_in_a_cycle():
    # A > B > C > A, all decided: each model's direct range is place 2 alone, yet none of them holds it.
    cs = [comp("A", "B", diff=-0.1, p=0.001, mean_a=0.7), comp("B", "C", diff=-0.1, p=0.001, mean_a=0.6),
          comp("C", "A", diff=-0.1, p=0.001, mean_a=0.5)]
    result = ranking.several(cs)
    assert [(p["place"], p["models"], p["certain"]) for p in result["ranking"]] == [("2", ["A", "B", "C"], False)]
    assert result["ranking"][0]["why"] == ("the decisions about them contradict one another (a cycle of 'better'): "
                                           "no place is certain")
