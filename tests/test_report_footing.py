"""Comparisons on the same footing (../shared/cases/numbers.md): --compare-by pairs like with like,
a one-sided sweep is a verdict and not a crash, power sentences that add up, a clean repo is clean."""

import json
import math
import random

import pytest

from test_report import make_run

from ops_tasks.errors import ConfigError
from ops_tasks.operations.report import build_report, report_markdown


def sweep(root, runs):
    """runs: (run_id, model, task, temperature, {example: reward})."""
    for run_id, model, task, temperature, rewards in runs:
        make_run(root, run_id, summary={"ok": True, "avg_reward": sum(rewards.values()) / len(rewards)},
                 metadata={"run_id": run_id, "model_id": model, "env_id": task, "temperature": temperature},
                 rewards=rewards)


def scores(seed, n=40, p=0.6):
    rng = random.Random(seed)
    return {f"q{i}": float(rng.random() < p) for i in range(n)}


def test_a_confounded_compare_by_pairs_within_models_and_names_what_it_left_out(tmp_path):
    # The server ignores temperature: each model's results are the same at 0.0 and 0.7. The weak
    # model's 0.7 run was cancelled: pooled, 0.0 (strong + weak) looked worse than 0.7 (strong).
    strong, weak = scores(1, p=0.9), scores(2, p=0.2)
    sweep(tmp_path, [("s0", "m/strong", "t", 0.0, strong), ("s7", "m/strong", "t", 0.7, strong),
                     ("w0", "m/weak", "t", 0.0, weak)])

    c = build_report(tmp_path, compare_by="temperature", compare=["0.0", "0.7"])["comparison"]

    assert c["mean_diff"] == 0 and c["verdict"].startswith("no difference"), c["verdict"]
    assert c["n"] == 40 and c["strata"] == 1
    assert c["strata_left_out"] == ["model_id=m/weak, env_id=t: only temperature=0.0"]


def test_compare_by_a_model_that_also_ran_another_task_compares_the_shared_task(tmp_path):
    a1, b1 = scores(3), scores(4)
    sweep(tmp_path, [("a1", "m/a", "t1", 0, a1), ("a2", "m/a", "t2", 0, scores(5)), ("b1", "m/b", "t1", 0, b1)])

    c = build_report(tmp_path, compare_by="model_id", compare=["m/a", "m/b"])["comparison"]

    assert c["n"] == 40 and c["mean_diff"] == pytest.approx((sum(b1.values()) - sum(a1.values())) / 40)
    assert c["strata_left_out"] == ["env_id=t2: only model_id=m/a"]


def test_compare_by_with_no_stratum_in_common_is_refused_naming_them(tmp_path):
    sweep(tmp_path, [("a1", "m/a", "t1", 0, scores(3)), ("b2", "m/b", "t2", 0, scores(4))])

    with pytest.raises(ConfigError) as refused:
        build_report(tmp_path, compare_by="model_id", compare=["m/a", "m/b"])

    assert "share no stratum of env_id" in str(refused.value)
    assert "env_id=t1: only model_id=m/a" in str(refused.value) and "env_id=t2: only model_id=m/b" in str(refused.value)


def test_over_several_models_the_difference_is_clustered_by_example_as_statsmodels(tmp_path):
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    rng = random.Random(11)
    runs, diffs, groups = [], [], []
    for model in ("m/a", "m/b", "m/c"):
        cold = {f"q{i}": rng.random() for i in range(25)}
        hot = {key: min(1.0, max(0.0, value + rng.gauss(0.03, 0.1))) for key, value in cold.items()}
        runs += [(f"{model[-1]}-cold", model, "t", 0.0, cold), (f"{model[-1]}-hot", model, "t", 1.0, hot)]
        for index, key in enumerate(cold):
            diffs.append(hot[key] - cold[key])
            groups.append(index)  # one question, answered by three models: one cluster
    sweep(tmp_path, runs)

    c = build_report(tmp_path, compare_by="temperature", compare=["0.0", "1.0"])["comparison"]
    fit = sm.OLS(np.array(diffs), np.ones(len(diffs))).fit(cov_type="cluster", cov_kwds={"groups": np.array(groups)},
                                                            use_t=True)

    assert c["strata"] == 3 and c["clusters"] == 25 and c["mcnemar"] is None
    assert c["mean_diff"] == pytest.approx(fit.params[0], abs=1e-12)
    assert c["se_diff"] == pytest.approx(fit.bse[0], rel=1e-10)
    assert c["p_value"] == pytest.approx(fit.pvalues[0], rel=1e-8)
    assert (c["ci95_low"], c["ci95_high"]) == (pytest.approx(fit.conf_int()[0][0], rel=1e-9),
                                               pytest.approx(fit.conf_int()[0][1], rel=1e-9))
    assert c["test"] == "clustered t (CR1, 25 clusters)"
    assert "se clustered by example (CR1), G = 25 examples" in report_markdown(
        build_report(tmp_path, compare_by="temperature", compare=["0.0", "1.0"]))


def test_one_sided_disagreement_on_every_example_is_a_verdict(tmp_path):
    sweep(tmp_path, [("a", "m/a", "t", 0, {f"q{i}": 0.0 for i in range(10)}),
                     ("b", "m/b", "t", 0, {f"q{i}": 1.0 for i in range(10)})])

    c = build_report(tmp_path, compare=["a", "b"])["comparison"]

    assert c["verdict"] == "b better than a by 1 on every one of the 10 shared examples, p = 0.002 (mcnemar exact)"


def test_the_examples_it_would_need_are_said_only_when_more_than_were_run(tmp_path):
    rng = random.Random(5)
    a = {f"q{i}": rng.random() for i in range(2000)}
    b = {key: min(1.0, max(0.0, value + rng.gauss(0, 0.2))) for key, value in a.items()}
    sweep(tmp_path, [("a", "m/a", "t", 0, a), ("b", "m/b", "t", 0, b)])

    c = build_report(tmp_path, compare=["a", "b"])["comparison"]

    assert c["p_value"] > 0.05 and c["examples_needed"] < 2000
    assert "would need" not in c["verdict"] and "2000 examples detect" in c["verdict"]


@pytest.mark.parametrize("dirty, shown", [(False, False), ("false", False), ("0", False), (0, False), (None, False),
                                          ("", False), (True, True), ("true", True), (1, True), (" M train.py", True)])
def test_a_repo_is_dirty_only_when_the_run_says_so(tmp_path, dirty, shown):
    make_run(tmp_path, "r", summary={"ok": True}, metadata={"run_id": "r", "git": {"commit": "a" * 40, "dirty": dirty}})

    header = "\n".join(build_report(tmp_path)["markdown"].splitlines()[:12])

    assert ("a" * 12 + " (dirty)" in header) is shown and "a" * 12 in header


def test_a_shift_that_rounding_leaves_almost_constant_is_a_verdict_not_a_hang(tmp_path):
    # B = A + 0.25 on every example: in floats the differences spread by ~1e-17, which made the
    # power's noncentral t sum ~1e30 terms.
    rng = random.Random(2)
    a = {f"q{i}": rng.random() / 2 for i in range(30)}
    sweep(tmp_path, [("a", "m/a", "t", 0, a), ("b", "m/b", "t", 0, {k: v + 0.25 for k, v in a.items()})])

    c = build_report(tmp_path, compare=["a", "b"])["comparison"]

    assert 0 < c["sd_diff"] < 1e-15 and c["verdict"].startswith("b better than a by 0.25")


def test_too_few_discordant_pairs_to_detect_anything_is_said(tmp_path):
    # 12 examples, one discordant pair: no difference McNemar could see at 80% power.
    a = {f"q{i}": float(i % 2) for i in range(12)}
    sweep(tmp_path, [("a", "m/a", "t", 0, a), ("b", "m/b", "t", 0, {**a, "q0": 1.0})])

    c = build_report(tmp_path, compare=["a", "b"])["comparison"]

    assert c["test"] == "mcnemar exact" and c["mde80"] is None
    assert c["verdict"].startswith("no detectable difference (p = 1, mcnemar exact): 12 examples are too few to "
                                   "detect any difference at 80% power"), c["verdict"]


def test_a_model_that_skipped_its_hardest_questions_is_not_ranked_on_its_own_mean(tmp_path):
    # B is A on every question but skipped the 60 hardest of 500: alone, B's mean is higher.
    rng = random.Random(9)
    difficulty = sorted(rng.random() for _ in range(500))  # q0 the hardest
    a = {f"q{i}": float(rng.random() > d * 0.9) for i, d in enumerate(reversed(difficulty))}
    b = {key: value for key, value in a.items() if int(key[1:]) >= 60}
    sweep(tmp_path, [("a", "m/a", "t1", 0, a), ("b", "m/b", "t1", 0, b),
                     ("a2", "m/a", "t2", 0, scores(1)), ("b2", "m/b", "t2", 0, scores(1))])

    doc = build_report(tmp_path)
    table = doc["models_by_task"]

    shared = sum(b.values()) / 440
    assert table["cells"]["m/b"]["t1"]["mean"] > table["cells"]["m/a"]["t1"]["mean"]  # what misled
    assert table["unequal"] == {"t1": {"m/a": {"examples": 500, "shared": 440, "shared_mean": pytest.approx(shared)},
                                       "m/b": {"examples": 440, "shared": 440, "shared_mean": pytest.approx(shared)}}}
    markdown = doc["markdown"]
    assert f"500 examples, on the 440 all models share: {shared:.3f}" in markdown
    assert "Not the same examples: models were scored on different examples in t1: m/a 500, m/b 440 (440 shared)" \
        in markdown
    assert "t2:" not in markdown.split("Not the same examples")[1].split("\n")[0]  # t2's sets are equal
    from ops_tasks.operations.report import RUN_DIRS
    from ops_tasks.operations.report_html import render_html

    page = render_html(doc, [], doc[RUN_DIRS])
    assert '<p class="warning"><b>Not the same examples: models were scored on different examples in t1' in page

    assert "not the same examples in t1: the bars are not comparable as they stand" in page  # the chart's caption
    grouped = build_report(tmp_path, group_by="model_id,env_id")
    assert list(grouped["groups_unequal"]) == ["t1"]
    grouped_page = render_html(grouped, [], grouped[RUN_DIRS])
    assert '<b class="warning">not the same examples in t1: the bars are not comparable' in grouped_page
    assert (f"Not the same examples: groups were scored on different examples in t1: m/a / t1 500 (on the 440 "
            f"shared: {shared:.3f}), m/b / t1 440 (on the 440 shared: {shared:.3f})") in grouped["markdown"]


def test_several_models_at_once_holm_and_a_ranking_that_says_which_places_are_certain(root, ops):
    rng = random.Random(4)
    base = {f"q{i}": float(rng.random() < 0.5) for i in range(300)}
    strong = {k: 1.0 if v or rng.random() < 0.6 else 0.0 for k, v in base.items()}
    twin = {k: v if rng.random() < 0.9 else 1.0 - v for k, v in base.items()}
    sweep(root, [("s", "m/strong", "t", 0, strong), ("b", "m/base", "t", 0, base),
                                                ("w", "m/twin", "t", 0, twin)])

    doc = ops("report", "--compare-by", "model_id", "--json").json
    several = doc["several"]

    assert several["family"] == "all pairs" and len(several["pairs"]) == 3
    assert several["ranking"][0] == {**several["ranking"][0], "place": "1", "models": ["m/strong"], "certain": True}
    assert several["ranking"][1]["place"] == "2-3" and not several["ranking"][1]["certain"]
    assert "## Compared by model_id: all pairs (avg_reward)" in doc["markdown"]
    assert "Holm" in doc["markdown"]

    against = ops("report", "--compare-by", "model_id", "--baseline", "m/base", "--margin", "0.2", "--json",
                  ).json["several"]
    assert against["family"] == "each against m/base" and len(against["pairs"]) == 2
    assert {p["b"] if p["a"] == "m/base" else p["a"]: p["equivalence"] for p in against["pairs"]}["m/twin"] \
        == "equal within +/-margin"

    two = ops("report", "--compare-by", "model_id", "--compare", "m/base,m/twin", "--margin", "0.01", "--json",
              ).json["comparison"]
    assert two["equivalence"].startswith("not shown equal within +/-0.01")


@pytest.mark.parametrize("flags, words", [
    (["--margin", "0"], "--margin '0': expected a difference above 0"),
    (["--margin", "abc", "--compare", "a,b"], "--margin 'abc': expected a difference above 0"),
    (["--margin", "0.1"], "--margin D goes with --compare or --compare-by"),
    (["--baseline", "m/a"], "--baseline VALUE goes with --compare-by FIELD alone"),
    (["--compare-by", "model_id", "--baseline", "m/zzz"], "--baseline m/zzz: no run with model_id=m/zzz"),
])
def test_several_and_margin_flags_refuse_bad_input_in_one_line(root, ops, flags, words):
    from conftest import one_line_error

    sweep(root, [("a", "m/a", "t", 0, scores(1)), ("b", "m/b", "t", 0, scores(2))])

    one_line_error(ops("report", *flags), 2, words)


def test_several_values_compared_are_inert_in_the_page_and_in_markdown(tmp_path):
    from ops_tasks.operations.report import RUN_DIRS
    from ops_tasks.operations.report_html import render_html

    hostile = "<img src=x onerror=alert(1)>\n# h"
    sweep(tmp_path, [("a", hostile, "t", 0, scores(1)), ("b", "m/b", "t", 0, scores(2)), ("c", "m/c", "t", 0, scores(3))])

    doc = build_report(tmp_path, compare_by="model_id")
    page = render_html(doc, [], doc[RUN_DIRS])

    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    section = doc["markdown"].split("## Compared by model_id")[1]
    assert "<img" not in section and "\n# h" not in section


@pytest.mark.parametrize("question_spread, seed_noise, advice", [
    (0.3, 0.02, "more seeds will not narrow this interval much; more questions will"),
    (0.0, 0.3, "more seeds will narrow this interval nearly as much as more questions"),
])
def test_a_group_says_whether_more_seeds_or_more_questions_would_narrow_it(tmp_path, question_spread, seed_noise,
                                                                           advice):
    rng = random.Random(6)
    difficulty = {f"q{i}": 0.5 + rng.uniform(-question_spread, question_spread) for i in range(200)}
    runs = []
    for seed in range(3):
        runs.append((f"s{seed}", "m/a", "t", 0, {k: min(1.0, max(0.0, d + rng.gauss(0, seed_noise)))
                                                   for k, d in difficulty.items()}))
    sweep(tmp_path, runs)

    doc = build_report(tmp_path, group_by="model_id")

    line = doc["groups"][0]["uncertainty"]
    assert line.startswith(advice + ": seeds make "), line
    assert f"Where the uncertainty comes from" in doc["markdown"] and f"- m/a: {advice}" in doc["markdown"]
    # its figures are the split's own: SE now is the pooled interval's order of magnitude
    se_now = float(line.split("; SE ")[1].split(" now")[0])
    assert se_now == pytest.approx(doc["groups"][0]["results_se"], rel=0.5)


def test_missing_scores_bound_the_mean_when_they_could_move_it_beyond_its_interval(tmp_path):
    # The hardest 30 of 200 questions scored NaN: dropped, the mean rises; the bounds say how far
    # the truth could be. A run missing 2 of 1000 is inside its interval: nothing said.
    rng = random.Random(8)
    lines = [{"id": f"q{i}", "reward": float(rng.random() < 0.7)} for i in range(170)]
    lines += [{"id": f"h{i}", "reward": float("nan")} for i in range(30)]
    make_run(tmp_path, "nan", summary={"ok": True, "avg_reward": 0.7},
             metadata={"run_id": "nan", "model_id": "m/a", "env_id": "t"},
             results="".join(json.dumps(line) + "\n" for line in lines))
    make_run(tmp_path, "few", summary={"ok": True, "avg_reward": 0.5, "num_examples": 1000},
             metadata={"run_id": "few", "model_id": "m/b", "env_id": "t"}, rewards=scores(3, n=998, p=0.5))

    doc = build_report(tmp_path)
    rows = {r["run_id"]: r for r in doc["rows"]}

    scored = sum(line["reward"] for line in lines[:170])
    assert rows["nan"]["missing_bounds"] == [pytest.approx(scored / 200), pytest.approx((scored + 30) / 200)]
    said = [w["warning"] for w in doc["warnings"] if w["run_id"] == "nan" and "have no reward" in w["warning"]]
    assert said == [f"30 of 200 examples have no reward: the mean {scored / 170:.3g} of the 170 scored could be "
                    f"anywhere in [{scored / 200:.3g}, {(scored + 30) / 200:.3g}] had they been scored (all 0: "
                    f"{scored / 200:.3g}; all 1: {(scored + 30) / 200:.3g}), wider than its 95% interval"]
    assert "missing_bounds" not in rows["few"]
    assert "have no reward" in doc["markdown"]


def test_at_fifty_examples_the_mcnemar_mde_is_the_exact_tests_not_a_z_formulas(tmp_path):
    # The statistician's case: at n = 50 the z formula's MDE is detected ~72% of the time by the
    # exact McNemar test the verdict uses; the report's is detected 80% of the time.
    from ops_tasks.operations.stats import mcnemar_exact_p

    # B right where A was wrong on 12 questions, wrong where A was right on 2: a strong one-way
    # effect, so the paired differences' sd (what a z or t formula uses) is small.
    rng = random.Random(12)
    a = {f"q{i}": float(i % 2) for i in range(50)}
    b = {k: (1.0 if int(k[1:]) < 24 and v == 0.0 else 0.0 if k in ("q1", "q3") else v) for k, v in a.items()}
    sweep(tmp_path, [("a", "m/a", "t", 0, a), ("b", "m/b", "t", 0, b)])

    c = build_report(tmp_path, compare=["a", "b"])["comparison"]
    assert (c["mcnemar"]["b"], c["mcnemar"]["c"]) == (2, 12)
    discordant, effect = (c["mcnemar"]["b"] + c["mcnemar"]["c"]) / 50, c["mde80"]
    rejected, reps = 0, 3000
    for _ in range(reps):
        draws = [rng.random() for _ in range(50)]
        rejected += mcnemar_exact_p(sum(u < (discordant - effect) / 2 for u in draws),
                                    sum((discordant - effect) / 2 <= u < discordant for u in draws)) < 0.05
    assert abs(rejected / reps - 0.8) < 3 * math.sqrt(0.8 * 0.2 / reps), (rejected, effect)
