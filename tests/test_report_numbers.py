"""Numbers a reader decides from, in the variants a first look at the report got wrong: which way a
metric's name says is better, values that are one value in two spellings, tasks that number
their examples alike, intervals of zero width or past the metric's range, tiny samples, and
values at the float's limits. Each is checked against a hand (or scipy) calculation."""

import json
import math

import pytest
from scipy import stats as scipy_stats

from ops_tasks.operations.report import build_report, is_loss
from test_report import make_run, wilson_by_hand
from conftest import one_line_error


def examples(scores, key="q"):
    return {f"{key}{i}": s for i, s in enumerate(scores)}


@pytest.mark.parametrize("name, loss", [
    ("answer_accuracy", False), ("correct_answers", False), ("power", False), ("lower_bound", False),
    ("apples", False), ("error_free", False), ("val_loss", True), ("eval/ppl", True), ("word_error_rate", True),
    ("nll", True), ("valLoss", True), ("last_eval.val", False), ("train_mse", True)])
def test_a_metric_is_a_loss_by_a_whole_word_of_its_name(name, loss):
    assert is_loss(name) is loss


def test_answer_accuracy_ranks_and_compares_higher_first_and_the_flag_can_say_otherwise(ops, root):
    for run_id, right in (("base", 10), ("tuned", 35)):
        make_run(root, run_id, summary={"ok": True, "answer_accuracy": right / 40},
                 results="".join(json.dumps({"id": f"q{i}", "answer_accuracy": int(i < right)}) + "\n"
                                 for i in range(40)))

    doc = ops("report", "--metric", "answer_accuracy", "--compare", "base,tuned", "--json").json
    flipped = ops("report", "--metric", "answer_accuracy", "--lower-is-better", "true", "--json").json
    bad = ops("report", "--lower-is-better", "maybe")

    assert [r["run_id"] for r in doc["rows"]] == ["tuned", "base"]
    assert doc["comparison"]["verdict"].startswith("tuned better than base by 0.625")
    assert doc["metric"]["lower_is_better"] is False
    assert [r["run_id"] for r in flipped["rows"]] == ["base", "tuned"] and flipped["metric"]["lower_is_better"] is True
    one_line_error(bad, 2, "--lower-is-better 'maybe': expected true or false")


def test_one_value_in_two_spellings_is_one_group_and_one_header_entry(tmp_path):
    for run_id, temperature, reward in (("a", 0, 0.2), ("b", 0.0, 0.4), ("c", 0.7, 0.9)):
        make_run(tmp_path, run_id, summary={"ok": True, "avg_reward": reward},
                 metadata={"model_id": "m", "config": {"temperature": temperature}})

    doc = build_report(tmp_path, group_by="temperature")

    assert [(g["runs"], g["avg_reward_mean"]) for g in doc["groups"]] == [(2, pytest.approx(0.3)), (1, 0.9)]
    assert doc["header"]["temperature"] in (["0", "0.7"], ["0.0", "0.7"])
    assert "| 0.7  " in doc["markdown"] or "| 0.7 " in doc["markdown"]  # a group's own value, not 0.7000


def test_tasks_that_number_their_examples_alike_are_kept_apart(tmp_path):
    # Model m on two tasks, ids q0..q19 in each: 40 examples (clusters), not 20 averaged pairs.
    easy, hard = [1] * 18 + [0] * 2, [1] * 4 + [0] * 16
    for task, scores in (("easy", easy), ("hard", hard)):
        make_run(tmp_path, f"m-{task}", summary={"ok": True, "avg_reward": sum(scores) / 20},
                 metadata={"model_id": "m", "env_id": task}, rewards=examples(scores))

    group = build_report(tmp_path, group_by="model_id")["groups"][0]

    scores = easy + hard
    assert group["results_clusters"] == 40 and group["results_mean"] == pytest.approx(22 / 40)
    assert group["results_se"] == pytest.approx(math.sqrt(40 / 39 * sum((s - 22 / 40) ** 2 for s in scores)) / 40)


def test_no_interval_has_zero_width_and_a_wilson_interval_is_for_0_1_scores_only(tmp_path):
    # Two seeds that disagree on every example but pool to 0.5 each; rollouts 0 and 1 on every example.
    make_run(tmp_path, "swap0", summary={"ok": True}, metadata={"model_id": "swap"}, rewards={"q1": 1, "q2": 0})
    make_run(tmp_path, "swap1", summary={"ok": True}, metadata={"model_id": "swap"}, rewards={"q1": 0, "q2": 1})
    make_run(tmp_path, "pm0", summary={"ok": True}, metadata={"model_id": "pm"}, rewards={"q1": -1, "q2": 1})
    make_run(tmp_path, "pm1", summary={"ok": True}, metadata={"model_id": "pm"}, rewards={"q1": 1, "q2": -1})
    make_run(tmp_path, "halves", summary={"ok": True}, metadata={"model_id": "halves"},
             results="".join(json.dumps({"id": f"q{i}", "reward": r}) + "\n" for i in range(20) for r in (0, 1)))

    doc = build_report(tmp_path, group_by="model_id")
    groups = {g["model_id"]: g for g in doc["groups"]}
    halves = next(r for r in doc["rows"] if r["run_id"] == "halves")

    for group in (groups["swap"], groups["pm"]):
        assert group["results_ci95_low"] is None and group["results_ci95_high"] is None
        assert "no spread" in group["results_interval"]
    assert halves["mean"] == 0.5 and halves["ci95_low"] is None and "no spread" in halves["interval"]
    assert "No interval shown where" in doc["markdown"] or halves["interval"] in doc["markdown"]


def test_a_loss_between_0_and_1_is_not_cut_at_1(tmp_path):
    for run_id, loss in (("a", 0.5), ("b", 0.8)):
        make_run(tmp_path, run_id, summary={"ok": True, "val_loss": loss}, metadata={"model_id": "m"})

    group = build_report(tmp_path, group_by="model_id", metric="val_loss")["groups"][0]

    half = scipy_stats.t.ppf(0.975, 1) * 0.3 / 2 ** 0.5 * (1 + 1 / 2) ** 0.5  # one more run: sd * sqrt(1 + 1/k)
    assert group["val_loss_pi95_low"] == 0.0 and group["val_loss_pi95_high"] == pytest.approx(0.65 + half)


def test_a_few_examples_get_students_t_and_a_run_alone_in_its_group_keeps_its_own_interval(tmp_path):
    make_run(tmp_path, "two", summary={"ok": True}, metadata={"model_id": "two"}, rewards={"q1": 0.5, "q2": 0.7})
    make_run(tmp_path, "one", summary={"ok": True}, metadata={"model_id": "one"}, rewards=examples([1] * 4 + [0] * 6))

    doc = build_report(tmp_path, group_by="model_id")
    rows = {r["run_id"]: r for r in doc["rows"]}
    groups = {g["model_id"]: g for g in doc["groups"]}

    se = 0.1  # sd 0.1414 / sqrt(2)
    critical = scipy_stats.t.ppf(0.975, 1)
    assert (rows["two"]["ci95_low"], rows["two"]["ci95_high"]) == pytest.approx(
        (max(0.0, 0.6 - critical * se), min(1.0, 0.6 + critical * se)))
    assert rows["two"]["interval"] == "student t"
    assert (groups["one"]["results_ci95_low"], groups["one"]["results_ci95_high"]) == pytest.approx(wilson_by_hand(4, 10))
    assert (rows["one"]["ci95_low"], rows["one"]["ci95_high"]) == pytest.approx(wilson_by_hand(4, 10))


def test_mcnemar_counts_name_right_and_wrong_the_metrics_way_round(tmp_path):
    for run_id, wrong in (("a", 30), ("b", 5)):  # an error metric: 1 is a wrong answer
        make_run(tmp_path, run_id, summary={"ok": True, "error": wrong / 40},
                 results="".join(json.dumps({"id": f"q{i}", "error": int(i < wrong)}) + "\n" for i in range(40)))

    doc = build_report(tmp_path, metric="error", compare=["a", "b"])

    assert doc["comparison"]["verdict"].startswith("b better than a by 0.625")
    assert "b (A 1 and B 0: A wrong, B right) = 25" in doc["markdown"]


def test_a_borderline_mcnemar_verdict_says_the_approximate_interval_leaves_out_0(tmp_path):
    a = [1] * 15 + [0] * 35
    b = list(a)
    for i in range(7):  # b: A right, B wrong
        b[i] = 0
    for i in range(15, 32):  # c: A wrong, B right
        b[i] = 1
    make_run(tmp_path, "ra", summary={"ok": True}, rewards=examples(a))
    make_run(tmp_path, "rb", summary={"ok": True}, rewards=examples(b))

    c = build_report(tmp_path, compare=["ra", "rb"])["comparison"]

    assert c["mcnemar"]["b"] == 7 and c["mcnemar"]["c"] == 17
    assert c["p_value"] == pytest.approx(scipy_stats.binomtest(7, 24).pvalue) and c["p_value"] > 0.05
    assert c["ci95_low"] > 0 and c["verdict"].startswith("no detectable difference")
    assert "borderline: the approximate interval" in c["verdict"]


def test_values_at_the_float_limit_are_named_never_a_traceback(ops, root):
    make_run(root, "huge", summary={"ok": True, "avg_reward": 1.0}, rewards=[1e308, 1e308, -1e308])
    digits = "9" * 400
    run = make_run(root, "long", rewards={"q1": 1, "q2": 0})
    (run / "summary.json").write_text('{"ok": true, "avg_reward": %s, "steps": %s}' % (digits, digits))
    (run / "results.jsonl").write_text('{"id": "q1", "reward": %s}\n{"id": "q2", "reward": 1}\n' % digits)
    (run / "status.json").write_text('{"state": "succeeded", "started": 1, "finished": %s, "submission_id": "s"}'
                                     % digits)
    nan = make_run(root, "nan")
    (nan / "summary.json").write_text('{"ok": true, "avg_reward": NaN}')

    result = ops("report", "--group-by", "model_id", "--json")

    assert result.returncode == 0, result.stderr
    warnings = {(w["run_id"], w["warning"]) for w in result.json["warnings"]}
    assert ("long", "avg_reward is not a finite number: shown as null") in warnings
    assert ("nan", "avg_reward is not a finite number: shown as null") in warnings
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout


def test_a_summarys_own_cost_is_not_the_price_of_the_run(tmp_path):
    make_run(tmp_path, "api", summary={"ok": True, "avg_reward": 0.5, "cost": 123.45})

    doc = build_report(tmp_path)

    assert doc["rows"][0]["summary.cost"] == 123.45 and "cost" not in doc["rows"][0]
    assert "cost" not in doc["header"]


def test_sorting_nested_keys_ids_and_what_a_compare_cannot_pair(tmp_path):
    from ops_tasks.errors import ConfigError

    for run_id, model, lr in (("r1", "Qwen3-32B", 0.1), ("r2", "Qwen3-4B", 0.2), ("r10", "Qwen3-0.6B", 0.1)):
        make_run(tmp_path, run_id, summary={"ok": True, "avg_reward": 0.5, "timing": {"finished": 1.75e9}},
                 metadata={"model_id": model, "config": {"optim": {"lr": lr}}},
                 results="".join(json.dumps({"id": "", "reward": i % 2}) + "\n" for i in range(6)))
    make_run(tmp_path, "scored-otherwise", summary={"ok": True}, metadata={"model_id": "other"},
             results='{"id": "q1", "score": 1}\n')

    doc = build_report(tmp_path, sort="model_id", group_by="config.optim.lr")
    rows = {r["run_id"]: r for r in doc["rows"]}

    assert [r["run_id"] for r in doc["rows"] if r["run_id"] in rows and r["model_id"] != "other"] == [
        "r10", "r2", "r1"]  # 0.6B, 4B, 32B
    assert sorted((g["config.optim.lr"], g["runs"]) for g in doc["groups"] if g["config.optim.lr"]) == [(0.1, 2), (0.2, 1)]
    assert rows["r1"]["n"] == 6  # an empty id is no id: each line is its own example
    assert "2025-06-15" in doc["markdown"]  # timing.finished is a time column
    assert {"run_id": "scored-otherwise", "file": "results.jsonl",
            "warning": "no line of 1 has a reward: no per-example statistics"} in doc["warnings"]
    assert "6" in doc["header"]["examples"]  # num_examples unknown: the examples counted
    with pytest.raises(ConfigError, match="compared with itself"):
        build_report(tmp_path, compare=["r1", "r1"])
    with pytest.raises(ConfigError, match="run scored-otherwise has no per-example reward"):
        build_report(tmp_path, compare=["r1", "scored-otherwise"])
