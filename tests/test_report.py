"""`ops report`: the run table, streamed per-run intervals, groups, paired comparisons, the files it writes."""

import csv
import io
import json
import math
import random
import statistics
import tracemalloc

import pytest

from conftest import one_line_error
from test_validate import record_submission

from ops_tasks.operations.report import compare_runs, reward_stats
from ops_tasks.operations.stats import mcnemar_exact_p

Z = 1.959963984540054


def make_run(root, run_id, *, summary=None, metadata=None, rewards=None, results=None):
    """A run directory: summary.json, run_metadata.json (unless metadata is False), results.jsonl
    from rewards ({id: reward} or a list) or raw results text."""
    run = root / run_id
    run.mkdir(parents=True)
    (run / "command.sh").write_text("true\n")
    (run / "stdout.log").write_text("")
    (run / "summary.json").write_text(json.dumps(summary or {"ok": True}))
    if metadata is not False:
        (run / "run_metadata.json").write_text(json.dumps(metadata or {"run_id": run_id}))
    if rewards is not None:
        items = rewards.items() if isinstance(rewards, dict) else enumerate(rewards)
        results = "".join(json.dumps({"id": key, "reward": value}) + "\n" for key, value in items)
    if results is not None:
        (run / "results.jsonl").write_text(results)
    return run


def wilson_by_hand(successes, n, z=1.959963984540054):
    """Wilson's score interval, from its textbook formula."""
    p = successes / n
    denominator = 1 + z ** 2 / n
    centre = (p + z ** 2 / (2 * n)) / denominator
    half = (z / denominator) * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return centre - half, centre + half


def interval(values):
    """mean, se and Student's t 95% interval, computed the textbook way (not streamed; scipy's t)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    critical = t.ppf(0.975, len(values) - 1)
    return mean, se, mean - critical * se, mean + critical * se


# ---------------------------------------------------------------- the math


def test_reward_stats_memory_does_not_grow_with_the_examples(tmp_path, monkeypatch):
    """Streamed: past MEANS_IN_MEMORY examples a run's means go to parts on disk, so memory is
    bounded by that limit (made small here), not by the file; rollouts of an example far apart in
    the file still count as one example."""
    from ops_tasks.operations import example_means

    monkeypatch.setattr(example_means, "MEANS_IN_MEMORY", 1000)
    monkeypatch.setattr(example_means, "BATCH", 1000)
    rng = random.Random(1)
    path = tmp_path / "results.jsonl"
    scores = {}
    with path.open("w") as handle:
        for rollout in range(2):  # the second rollout of every example 30,000 lines after its first
            for index in range(30_000):
                reward = rng.random() < 0.3
                scores.setdefault(index, []).append(float(reward))
                handle.write(json.dumps({"id": index, "response": "x" * 50, "reward": reward}) + "\n")
    assert path.stat().st_size > 5_000_000

    tracemalloc.start()
    try:
        stats, error = reward_stats(str(path), "r")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error is None
    mean, se, low, high = interval([sum(v) / len(v) for v in scores.values()])  # 0, 0.5, 1: Student's t
    assert stats["n"] == 30_000 and stats["interval"] == "student t"
    assert stats["mean"] == pytest.approx(mean) and stats["se"] == pytest.approx(se)
    assert (stats["ci95_low"], stats["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    assert peak < 1_500_000, f"reward_stats held {peak} bytes for a {path.stat().st_size} byte file"


def _numbers_of(value):
    """The numbers of a report's document, rounded to 12 digits (parts sum in another order)."""
    if isinstance(value, float):
        return round(value, 12)
    if isinstance(value, dict):
        return {k: _numbers_of(v) for k, v in value.items() if k not in ("markdown", "generated")}
    if isinstance(value, list):
        return [_numbers_of(v) for v in value]
    return value


@pytest.mark.parametrize("workers", [False, True])
@pytest.mark.parametrize("compare", [{"compare": ["a0", "b0"]}, {"compare": ["m/a", "m/b"], "compare_by": "model_id"}])
def test_runs_of_many_examples_pool_and_pair_as_runs_held_in_memory(tmp_path, monkeypatch, compare, workers):
    """A run past MEANS_IN_MEMORY examples is read back in parts: the groups, the models x tasks
    cells (runs of two tasks keyed by task) and the comparison are those of runs held whole,
    also when worker processes read them (large results files) and hand the parts over."""
    from ops_tasks.operations import example_means, report
    from ops_tasks.operations.report import build_report

    rng = random.Random(7)
    root = tmp_path / "pod_logs"
    for run_id, model, task in [("a0", "m/a", "t1"), ("a1", "m/a", "t2"), ("b0", "m/b", "t1"), ("b1", "m/b", "t2")]:
        lines = [{"id": f"q{i}", "reward": float(rng.random() < 0.6)} for i in range(60)]
        lines += [{"id": f"q{i}", "reward": rng.random()} for i in range(0, 60, 7)]  # rollouts, far apart
        lines += [{"reward": 1.0}, {"reward": 0.0}]  # no id: the line number is the example
        make_run(root, run_id, summary={"ok": True, "avg_reward": 0.5},
                 metadata={"run_id": run_id, "model_id": model, "env_id": task},
                 results="".join(json.dumps(line) + "\n" for line in lines))

    whole = build_report(root, group_by="model_id", **compare)
    monkeypatch.setattr(example_means, "MEANS_IN_MEMORY", 5)
    monkeypatch.setattr(example_means, "BATCH", 3)
    if workers:
        monkeypatch.setattr(report, "PARALLEL_BYTES", 1)
    in_parts = build_report(root, group_by="model_id", **compare)

    assert whole["comparison"]["n"] > 0 and whole["models_by_task"] is not None
    for key in ("rows", "groups", "models_by_task", "comparison"):
        assert _numbers_of(in_parts[key]) == _numbers_of(whole[key]), key


def test_compare_pairs_by_id_and_averages_repeated_ids(tmp_path):
    make_run(tmp_path, "a", results="".join(json.dumps(r) + "\n" for r in [
        {"example_id": "q1", "reward": 1}, {"example_id": "q1", "reward": 0},  # two rollouts: 0.5
        {"example_id": "q2", "reward": 0.25}, {"example_id": "only-a", "reward": 1}]))
    make_run(tmp_path, "b", results="".join(json.dumps(r) + "\n" for r in [
        {"example_id": "q2", "reward": 1.0}, {"example_id": "q1", "reward": 1}]))
    make_run(tmp_path, "c", results="".join(json.dumps(r) + "\n" for r in [
        {"example_id": "q2", "reward": 0.75}, {"example_id": "q1", "reward": 1}]))

    result = compare_runs(tmp_path, "a", "b")

    assert (result["n"], result["only_a"], result["only_b"]) == (2, 1, 0)
    diffs = [1 - 0.5, 1.0 - 0.25]
    assert result["mean_diff"] == pytest.approx(0.625)
    t_1 = 12.706205  # t(0.975) with 1 degree of freedom, from a table
    assert result["ci95_low"] == pytest.approx(0.625 - t_1 * statistics.stdev(diffs) / math.sqrt(2), rel=1e-4)
    assert result["binary"] is False and result["mcnemar"] is None
    # The same difference (0.5) on every shared example: no spread, so no zero-width interval and no p = 0.
    same = compare_runs(tmp_path, "a", "c")
    assert same["mean_diff"] == pytest.approx(0.5) and same["ci95_low"] is None and same["p_value"] is None
    assert same["verdict"] == "c - a is exactly 0.5 on every one of the 2 shared examples (no spread: no interval or p-value)"


# ---------------------------------------------------------------- the command


def test_report_rows_intervals_and_files(ops, project, root):
    a = [1, 0, 1, 1, 0, 1, 1, 1]
    b = [0.5, 0.25, 1.0, 0.75]
    make_run(root, "run-a", summary={"ok": True, "env_id": "arith", "model_id": "m1", "num_examples": 8,
                                     "seed": 0, "avg_reward": 0.75, "duration_s": 2.5, "cached": True},
             metadata={"run_id": "run-a", "model_id": "m1", "env_id": "arith"}, rewards=a)
    make_run(root, "run-b", summary={"ok": True, "avg_reward": 0.625, "rollouts_per_example": 4, "best_of": 2,
                                     "macro_avg_reward": 0.6, "run_metadata": {"model_id": "from-summary",
                                                                               "env_id": "gsm8k"}},
             metadata={"run_id": "run-b", "model_id": "m2", "dataset": {"num_examples": 4}}, rewards=b)
    make_run(root, "no-results", summary={"ok": True, "model_id": "m3", "avg_reward": 0.1}, metadata=False)

    result = ops("report", "--json")

    assert result.returncode == 0, result.stderr
    doc = result.json
    assert doc["ok"] is True and doc["count"] == 3 and doc["errors"] == []
    rows = {r["run_id"]: r for r in doc["rows"]}
    mean, se, _, _ = interval(a)
    low, high = wilson_by_hand(6, 8)
    assert rows["run-a"]["mean"] == pytest.approx(mean) and rows["run-a"]["se"] == pytest.approx(se)
    assert rows["run-a"]["ci95_low"] == pytest.approx(low) and rows["run-a"]["ci95_high"] == pytest.approx(high)
    _, _, low_b, high_b = interval(b)  # rewards between 0 and 1, not all 0/1: Student's t, 3 df
    assert rows["run-b"]["ci95_low"] == pytest.approx(low_b) and rows["run-b"]["ci95_high"] == min(1.0, high_b)
    assert rows["run-a"]["n"] == 8
    # run_metadata.json wins, then summary.json's run_metadata object, then summary.json
    assert (rows["run-b"]["model_id"], rows["run-b"]["env_id"], rows["run-b"]["num_examples"]) == ("m2", "gsm8k", 4)
    assert (rows["run-b"]["rollouts"], rows["run-b"]["best_of"], rows["run-b"]["macro_avg_reward"]) == (4, 2, 0.6)
    assert rows["run-b"]["mean"] == pytest.approx(0.625) and rows["run-b"]["n"] == 4
    assert rows["no-results"]["model_id"] == "m3"
    assert all(rows["no-results"][k] is None for k in ("mean", "se", "ci95_low", "ci95_high", "n"))
    # other numeric summary keys are columns; bools are not
    assert doc["columns"][:8] == ["run_id", "env_id", "model_id", "num_examples", "rollouts", "best_of",
                                  "avg_reward", "macro_avg_reward"]
    assert "seed" in doc["columns"] and "duration_s" in doc["columns"] and "cached" not in doc["columns"]
    assert doc["warnings"] == [{"run_id": "no-results", "file": "run_metadata.json",
                                "warning": "missing: fields from summary.json only"}]
    # written, and the same document
    written = json.loads((project / "artifacts" / "report.json").read_text())
    assert written["rows"] == doc["rows"]
    markdown = (project / "artifacts" / "report.md").read_text()
    assert markdown == doc["markdown"]
    assert "| run_id " in markdown and f"| {low:.4f} " in markdown and "| 0.7500 " in markdown
    assert sorted(p.name for p in (project / "artifacts").iterdir()) == ["pod_logs", "report.html", "report.json", "report.md"]


def test_human_output_is_the_markdown_table(ops, root):
    make_run(root, "run-a", summary={"ok": True, "model_id": "m1", "avg_reward": 2 / 3})

    result = ops("report")

    assert result.returncode == 0
    assert result.stdout.startswith(f"# Report: {root}")
    assert "| run-a " in result.stdout and "0.6667" in result.stdout
    assert "wrote" in result.stderr and "report.md" in result.stderr


def test_a_malformed_summary_is_listed_under_errors(ops, root):
    make_run(root, "good", summary={"ok": True, "avg_reward": 0.5})
    (make_run(root, "broken") / "summary.json").write_text('{"ok": true, "avg_reward": 0.5')
    make_run(root, "bad-results", summary={"ok": True}, results='{"reward": 1}\n{"reward": \n')
    (root / "unfinished").mkdir()

    result = ops("report", "--json")

    assert result.returncode == 1
    doc = result.json
    assert doc["ok"] is False
    errors = {e["run_id"]: e for e in doc["errors"]}
    assert set(errors) == {"broken", "bad-results", "unfinished"}
    assert (errors["broken"]["file"], errors["broken"]["line"], errors["broken"]["column"]) == ("summary.json", 1, 31)
    assert (errors["bad-results"]["file"], errors["bad-results"]["line"]) == ("results.jsonl", 2)
    assert errors["unfinished"]["file"] == "summary.json" and "missing" in errors["unfinished"]["error"]
    assert [r["run_id"] for r in doc["rows"]] == ["bad-results", "good"]
    assert "## Errors" in doc["markdown"] and "broken: summary.json line 1 column 31" in doc["markdown"]


def test_group_by_gives_mean_sd_and_n_over_runs(ops, root):
    rewards = {("m1", 0): 0.5, ("m1", 1): 0.7, ("m1", 2): 0.9, ("m2", 0): 0.2}
    for (model, seed), value in rewards.items():
        make_run(root, f"{model}-s{seed}", summary={"ok": True, "avg_reward": value},
                 metadata={"model_id": model, "env_id": "arith", "config": {"seed": seed}})

    result = ops("report", "--group-by", "model_id,env_id", "--json")

    assert result.returncode == 0, result.stderr
    groups = {g["model_id"]: g for g in result.json["groups"]}
    m1 = [0.5, 0.7, 0.9]
    assert groups["m1"]["env_id"] == "arith" and groups["m1"]["runs"] == 3 and groups["m1"]["avg_reward_n"] == 3
    assert groups["m1"]["avg_reward_mean"] == pytest.approx(0.7)
    assert groups["m1"]["avg_reward_sd"] == pytest.approx(statistics.stdev(m1))
    # where a fourth seed would fall: a prediction interval, t(0.975, 2 df) * sd * sqrt(1 + 1/3)
    half = 4.3027 * statistics.stdev(m1) * math.sqrt(1 + 1 / 3)
    assert groups["m1"]["avg_reward_pi95_low"] == pytest.approx(max(0.0, 0.7 - half), abs=1e-4)
    assert groups["m1"]["avg_reward_pi95_high"] == pytest.approx(min(1.0, 0.7 + half), abs=1e-4)
    assert "avg_reward_ci95_low" not in groups["m1"]  # no confidence interval of the runs' mean called ci95
    assert groups["m2"]["avg_reward_n"] == 1 and groups["m2"]["avg_reward_sd"] is None
    assert "## Groups by model_id, env_id" in result.json["markdown"]


def test_compare_gives_the_paired_difference_and_mcnemar(ops, root):
    # b = 1 (A right, B wrong), c = 6 (A wrong, B right), 2 both right, 1 both wrong; one id only in A
    pairs = [(1, 0)] + [(0, 1)] * 6 + [(1, 1)] * 2 + [(0, 0)]
    make_run(root, "model-a", rewards={f"q{i}": a for i, (a, _) in enumerate(pairs)} | {"extra": 1})
    make_run(root, "model-b", rewards={f"q{i}": b for i, (_, b) in reversed(list(enumerate(pairs)))})

    result = ops("report", "--compare", "model-a,model-b", "--json")

    assert result.returncode == 0, result.stderr
    comparison = result.json["comparison"]
    diffs = [b - a for a, b in pairs]
    half = 2.262157 * statistics.stdev(diffs) / math.sqrt(len(diffs))  # t(0.975) with 9 degrees of freedom
    assert (comparison["n"], comparison["only_a"], comparison["only_b"]) == (10, 1, 0)
    assert comparison["mean_diff"] == pytest.approx(0.5)
    assert comparison["ci95_low"] == pytest.approx(0.5 - half, rel=1e-4)
    assert comparison["ci95_high"] == pytest.approx(min(1.0, 0.5 + half), rel=1e-4)  # B - A lies in [-1, 1]
    assert comparison["mcnemar"] == {"b": 1, "c": 6, "p_value": pytest.approx(0.125)}

    again = ops("report", "--compare", "model-a", "--compare", "model-b")
    assert again.returncode == 0
    assert "McNemar exact test: b (A 1 and B 0: A right, B wrong) = 1, c (A 0 and B 1: A wrong, B right) = 6, p = 0.125" \
        in again.stdout


def test_compare_refuses_bad_runs_inone_line_error(ops, root):
    make_run(root, "a", rewards=[1, 0])
    make_run(root, "no-results")
    one_line_error(ops("report", "--compare", "a,ghost"), 2, "no run ghost under")
    one_line_error(ops("report", "--compare", "a,no-results"), 2, "no-results has no results.jsonl")
    one_line_error(ops("report", "--compare", "a"), 2, "--compare takes two run ids")
    one_line_error(ops("report", "--compare", "a,../etc"), 2, "not a run id")


def test_sort_and_filter(ops, root):
    for run_id, model, value in [("r1", "m1", 0.2), ("r2", "m2", 0.9), ("r3", "m1", 0.5), ("r4", "m1", None)]:
        make_run(root, run_id, summary={"ok": True, "model_id": model, "avg_reward": value})

    descending = ops("report", "--sort", "-avg_reward", "--json").json
    ascending = ops("report", "--sort", "avg_reward", "--filter", "model_id=m1", "--json").json

    assert [r["run_id"] for r in descending["rows"]] == ["r2", "r3", "r1", "r4"]  # missing last
    assert [r["run_id"] for r in ascending["rows"]] == ["r1", "r3", "r4"]
    assert (ascending["count"], ascending["total"]) == (3, 4)
    none = ops("report", "--filter", "model_id=m9", "--json")
    assert none.returncode == 1 and none.json["error"] == "no run matches the filters"
    one_line_error(ops("report", "--filter", "model_id"), 2, "--filter 'model_id': expected key=value")
    one_line_error(ops("report", "--filter", "modle_id=m1"), 2, "--filter modle_id: no run", "has that field")
    one_line_error(ops("report", "--sort", "-nope"), 2, "--sort nope: no run")


def test_formats(ops, root):
    make_run(root, "r1", summary={"ok": True, "model_id": "m1", "avg_reward": 0.25}, rewards=[0, 1])

    as_csv = ops("report", "--format", "csv")
    as_json = ops("report", "--format", "json")

    table = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert table[0]["run_id"] == "r1" and table[0]["avg_reward"] == "0.25" and table[0]["n"] == "2"
    assert json.loads(as_json.stdout)["rows"][0]["run_id"] == "r1"
    one_line_error(ops("report", "--format", "xml"), 2, "--format must be one of md, json, csv")


def test_an_empty_or_missing_root(ops, project, root):
    empty = ops("report", "--json")
    assert empty.returncode == 1 and empty.json["ok"] is False and empty.json["count"] == 0
    assert empty.json["error"] == f"no run directories under {root}"
    one_line_error(ops("report", "--root", "elsewhere"), 2, str(project / "elsewhere"), "no such directory")


def test_out_dir_and_dry_run(ops, project, root, tmp_path):
    make_run(root, "r1", summary={"ok": True, "avg_reward": 1.0})

    dry = ops("report", "--dry-run", "--out-dir", "reports", "--json")
    assert dry.returncode == 0 and dry.json["written"] is None and not (project / "reports").exists()

    real = ops("report", "--out-dir", "reports", "--json")
    assert real.json["written"] == {"markdown": str(project / "reports" / "report.md"),
                                    "json": str(project / "reports" / "report.json"),
                                    "html": str(project / "reports" / "report.html")}
    assert sorted(p.name for p in (project / "reports").iterdir()) == ["report.html", "report.json", "report.md"]  # no temp files


def test_env_values_from_run_metadata_are_never_printed(ops, project, root):
    make_run(root, "r1", summary={"ok": True, "avg_reward": 1.0},
             metadata={"model_id": "m", "env": {"MY_SETTING": "plain-visible-value", "HF_TOKEN": "hf_abcdefgh1234"}})

    shown = ops("report", "--json").stdout + ops("report").stdout
    written = (project / "artifacts" / "report.json").read_text()

    for text in (shown, written):
        assert "plain-visible-value" not in text and "hf_abcdefgh1234" not in text


def test_plot_without_matplotlib_names_the_install_command(ops, root, tmp_path):
    # A machine without matplotlib: a package of that name on the path that fails to import.
    missing = tmp_path / "no-matplotlib" / "matplotlib"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    make_run(root, "r1", summary={"ok": True, "avg_reward": 1.0})

    result = ops("report", "--plot", "chart.png", env={"PYTHONPATH": str(missing.parent)})

    one_line_error(result, 2, "pip install 'ops-tasks[plot]'")
    assert result.stderr.strip() == "error: --plot needs matplotlib, which is not installed: pip install 'ops-tasks[plot]'"


def test_plot_writes_a_png(ops, project, root):
    pytest.importorskip("matplotlib")
    make_run(root, "r1", summary={"ok": True, "avg_reward": 0.5}, rewards=[1, 0, 1])
    make_run(root, "r2", summary={"ok": True, "avg_reward": 0.25})

    result = ops("report", "--plot", "chart.png", "--json")

    assert result.returncode == 0, result.stderr
    assert result.json["plot"] == str(project / "chart.png")
    assert (project / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rollouts_of_one_example_count_once_in_its_interval(tmp_path):
    from ops_tasks.operations.report import reward_stats

    path = tmp_path / "results.jsonl"
    lines = [{"id": f"e{i // 4}", "reward": r} for i, r in enumerate([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    stats, error = reward_stats(str(path), "r")

    assert error is None
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(0.5)  # examples 1, 0 and 0.5
    assert stats["se"] == pytest.approx(0.5 / 3 ** 0.5)  # sd of (1, 0, 0.5) is 0.5


def test_an_all_correct_run_still_has_a_real_interval(tmp_path):
    from ops_tasks.operations.report import reward_stats

    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps({"id": i, "reward": 1}) + "\n" for i in range(20)))

    stats, _ = reward_stats(str(path), "r")

    assert stats["mean"] == 1.0 and stats["ci95_high"] == pytest.approx(1.0)
    assert stats["ci95_low"] == pytest.approx(wilson_by_hand(20, 20)[0]) and stats["ci95_low"] < 0.9


# ---------------------------------------------------------------- honest numbers


def test_ids_are_grouped_whatever_the_line_order(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [{"id": f"e{i % 3}", "reward": r} for i, r in enumerate([1, 0, 0, 1, 0, 1])]  # e0: 1,1 e1: 0,0 e2: 0,1
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    stats, error = reward_stats(str(path), "r")

    assert error is None and stats["n"] == 3 and stats["mean"] == pytest.approx(0.5)
    assert stats["se"] == pytest.approx(statistics.stdev([1, 0, 0.5]) / math.sqrt(3))


def test_rewards_that_are_not_numbers_are_counted_and_named(ops, root):
    results = "".join(json.dumps(line) + "\n" for line in [
        {"id": 1, "reward": "0"}, {"id": 2, "reward": None}, {"id": 3, "reward": [1]}, {"id": 4, "reward": {"v": 1}},
        {"id": 5, "reward": 1}, {"id": 6, "reward": 0}])
    make_run(root, "r1", results=results)

    doc = ops("report", "--json").json

    row = doc["rows"][0]
    assert row["n"] == 2 and row["mean"] == pytest.approx(0.5) and row["unscored"] == 4
    warning = next(w["warning"] for w in doc["warnings"] if w["file"] == "results.jsonl")
    assert 'line 1: "0"' in warning and "line 2: null" in warning and "4 with a reward that is not a number" in warning
    assert "line 1: \"0\"" in doc["markdown"]


def test_json_never_holds_nan_or_infinity(ops, project, root):
    make_run(root, "huge", rewards=[1e308, 1e308, 1e308])
    run = make_run(root, "nan")
    (run / "summary.json").write_text('{"ok": true, "avg_reward": NaN, "seed": Infinity}')
    (run / "run_metadata.json").write_text('{"temperature": NaN}')
    make_run(root, "plain", metadata={"temperature": 0.5})

    result = ops("report", "--json", "--group-by", "temperature")

    text = result.stdout + (project / "artifacts" / "report.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = {r["run_id"]: r for r in result.json["rows"]}
    assert rows["huge"]["mean"] == 1e308
    assert any("temperature" in w["warning"] and "null" in w["warning"] for w in result.json["warnings"])


def test_filter_compares_numbers_and_a_filtered_report_is_not_saved(ops, project, root):
    make_run(root, "r1", summary={"ok": True, "avg_reward": 0.5}, metadata={"decoding": {"temperature": 0.0}})
    make_run(root, "r2", summary={"ok": True, "avg_reward": 0.7}, metadata={"decoding": {"temperature": 0.7}})

    result = ops("report", "--filter", "temperature=0", "--json")

    assert result.returncode == 0 and [r["run_id"] for r in result.json["rows"]] == ["r1"]
    assert result.json["written"] is None and not (project / "artifacts" / "report.md").exists()
    assert "not saved" in result.stderr
    saved = ops("report", "--filter", "temperature=0", "--out-dir", "partial", "--json")
    assert (project / "partial" / "report.md").exists() and saved.json["written"]
    empty = project / "empty"
    empty.mkdir()
    assert ops("report", "--root", "empty").returncode == 1 and not (project / "artifacts" / "report.md").exists()


def test_seeds_pool_their_examples_with_a_clustered_interval_inside_the_range(ops, root):
    # Two seeds of one setting on the same 10 examples; seed 0 and 1 agree exactly.
    scores = [1, 1, 1, 0, 1, 1, 0, 1, 1, 1]
    for seed in (0, 1):
        make_run(root, f"s{seed}", summary={"ok": True, "avg_reward": 0.8},
                 metadata={"model_id": "m", "config": {"seed": seed}}, rewards={f"q{i}": s for i, s in enumerate(scores)})

    group = ops("report", "--group-by", "model_id", "--json").json["groups"][0]

    # Clustered by example: each example's two identical scores are one cluster, so the SE is that
    # of one run's 10 examples (CR1), not of 20 independent scores, and not zero.
    mean = 0.8
    sums = [2 * (s - mean) for s in scores]
    se = math.sqrt(10 / 9 * sum(x * x for x in sums)) / 20
    assert group["results_clusters"] == 10 and group["results_n"] == 20
    assert group["results_se"] == pytest.approx(se)
    assert group["results_ci95_high"] == pytest.approx(min(1.0, mean + 2.262157 * se), abs=1e-6)
    assert 0.0 <= group["results_ci95_low"] < mean < group["results_ci95_high"] <= 1.0
    # Two identical run summaries: no spread, so no interval, and the report says why.
    assert group["avg_reward_pi95_low"] is None and "agree exactly" in group["avg_reward_interval"]


@pytest.mark.parametrize("n", [10, 13, 25])
def test_plot_of_all_correct_runs_stays_in_range(ops, project, root, n):
    pytest.importorskip("matplotlib")
    make_run(root, "perfect", rewards=[1] * n)

    result = ops("report", "--plot", "chart.png", "--json")

    assert result.returncode == 0, result.stderr
    row = result.json["rows"][0]
    assert row["ci95_high"] == 1.0 and row["ci95_low"] <= row["mean"] <= row["ci95_high"]


def test_compare_says_which_is_better_and_what_it_could_detect(ops, root):
    rng = random.Random(5)
    a = {f"q{i}": float(rng.random() < 0.5) for i in range(200)}
    b = {key: 1.0 if value == 1.0 or rng.random() < 0.5 else 0.0 for key, value in a.items()}
    make_run(root, "base", rewards=a)
    make_run(root, "tuned", rewards=b)

    c = ops("report", "--compare", "base,tuned", "--json").json["comparison"]

    assert c["test"] == "mcnemar exact" and c["p_value"] < 0.001
    assert c["verdict"].startswith("tuned better than base by ")
    # The power of the test used: exact McNemar at the observed discordance, which a simulation
    # of pairs that discordant, with that difference, rejects 80% of the time (not the z formula).
    discordant = (c["mcnemar"]["b"] + c["mcnemar"]["c"]) / 200
    effect, rejected = c["mde80"], 0
    for _ in range(1000):
        draws = [rng.random() for _ in range(200)]
        b_count = sum(u < (discordant - effect) / 2 for u in draws)
        c_count = sum((discordant - effect) / 2 <= u < discordant for u in draws)
        rejected += mcnemar_exact_p(b_count, c_count) < 0.05
    assert abs(rejected / 1000 - 0.8) < 3 * math.sqrt(0.8 * 0.2 / 1000), rejected
    assert effect > 2.8015852 * c["sd_diff"] / math.sqrt(200)  # the z formula promised a smaller one
    one_line_error(ops("report", "--compare", "base,base"), 2, "a run compared with itself says nothing")


def test_lower_is_better_metrics_rank_and_compare_the_right_way_round(ops, root):
    for run_id, losses in (("small", [2.0, 2.2, 2.4, 2.1]), ("large", [1.0, 1.1, 1.3, 1.2])):
        make_run(root, run_id, summary={"ok": True, "last_eval": {"val_loss": statistics.fmean(losses)}},
                 results="".join(json.dumps({"id": i, "last_eval": {"val_loss": x}}) + "\n"
                                 for i, x in enumerate(losses)))

    doc = ops("report", "--metric", "last_eval.val_loss", "--compare", "small,large", "--json").json

    assert [r["run_id"] for r in doc["rows"]] == ["large", "small"]  # lowest loss first
    assert doc["metric"]["lower_is_better"] is True
    assert doc["comparison"]["mean_diff"] == pytest.approx(-1.025)
    assert doc["comparison"]["verdict"].startswith("large better than small by 1.03 [0.873, 1.18]")


def test_compare_by_pools_each_sides_runs(ops, root):
    for model, seed, scores in (("m1", 0, [1, 0, 0, 1]), ("m1", 1, [1, 0, 1, 1]), ("m2", 0, [1, 1, 1, 1])):
        make_run(root, f"{model}-{seed}", metadata={"model_id": model},
                 rewards={f"q{i}": s for i, s in enumerate(scores)})

    c = ops("report", "--compare-by", "model_id", "--compare", "m1,m2", "--json").json["comparison"]

    assert c["n"] == 4 and c["mean_a"] == pytest.approx(0.625) and c["mean_b"] == 1.0
    assert c["binary"] is False and c["test"] == "paired t"  # m1's example means are 0.5 for q2


# ---------------------------------------------------------------- one verdict, scope, header


def test_report_reads_the_supervisors_status_and_keeps_failed_runs_out_of_groups(ops, root):
    make_run(root, "liar", summary={"ok": True, "avg_reward": 1.0, "model_id": "m"}, rewards=[1] * 10)
    (root / "liar" / "status.json").write_text(json.dumps({"state": "failed", "failure_class": "oom"}))
    make_run(root, "fine", summary={"ok": True, "avg_reward": 0.5, "model_id": "m"}, rewards=[1, 0] * 5)
    make_run(root, "zero", summary={"ok": 0, "avg_reward": 0.9, "model_id": "m"}, rewards=[1] * 10)

    result = ops("report", "--group-by", "model_id", "--json")

    assert [r["run_id"] for r in result.json["rows"]] == ["fine"]
    [group] = result.json["groups"]
    assert group["runs"] == 1 and group["results_mean"] == 0.5 and group["avg_reward_mean"] == 0.5
    assert {f["run_id"]: f["state"] for f in result.json["not_succeeded"]} == {"liar": "failed",
                                                                                "zero": "bad_summary"}


def test_a_rerun_counts_each_seed_once_the_latest_submission_by_default(ops, project, root):
    for prefix, value in (("first", 1), ("second", 0)):
        for seed in (0, 1):
            make_run(root, f"{prefix}-seed{seed}", summary={"ok": True, "avg_reward": float(value), "seed": seed,
                                                            "model_id": "Qwen/Qwen3-32B"},
                     rewards=[value, value, 1 - value])
    record_submission(project, "sub-1", ["first-seed0", "first-seed1"], 100.0)
    record_submission(project, "sub-2", ["second-seed0", "second-seed1"], 200.0)

    every = ops("report", "--group-by", "model_id", "--all", "--json")
    latest = ops("report", "--group-by", "model_id", "--json")
    picked = ops("report", "--run-id", "first-seed0", "--json")

    assert latest.returncode == 0, latest.stderr
    assert latest.json["groups"][0]["runs"] == 2 and latest.json["groups"][0]["results_clusters"] == 3
    assert latest.json["header"]["scope"].startswith("submission sub-2")
    assert every.json["groups"][0]["runs"] == 4
    assert [r["run_id"] for r in picked.json["rows"]] == ["first-seed0"] and picked.json["written"] is None
    saved = json.loads((project / "artifacts" / "report.json").read_text())
    assert saved["header"]["scope"].startswith("submission sub-2")  # --run-id did not replace it


def test_report_header_natural_order_no_empty_columns_and_dates(ops, root):
    for model in ("Qwen/Qwen3-32B", "Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B"):
        for task in ("arith", "gsm8k"):
            run_id = f"{task}-{model.split('-')[-1]}"
            make_run(root, run_id, summary={"ok": True, "avg_reward": 0.5, "finished": 1764619200.5},
                     metadata={"run_id": run_id, "model_id": model, "env_id": task,
                               "decoding": {"temperature": 0.7, "max_tokens": 64}, "dataset": {"num_examples": 2},
                               "git": {"commit": "0123456789abcdef" * 2, "dirty": False}},
                     rewards=[1, 0])

    result = ops("report", "--group-by", "model_id", "--json")

    doc = result.json
    header = doc["header"]
    assert header["models"] == ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "Qwen/Qwen3-32B"]
    assert header["commits"] == ["0123456789ab"] and header["temperature"] == ["0.7"]
    assert header["max_tokens"] == ["64"] and header["runs"] == 6 and header["states"] == {"succeeded": 6}
    assert [g["model_id"] for g in doc["groups"]] == header["models"]
    assert doc["models_by_task"]["models"] == header["models"] and doc["models_by_task"]["tasks"] == ["arith", "gsm8k"]
    assert "best_of" not in doc["columns"] and "rollouts" not in doc["columns"]
    markdown = doc["markdown"]
    assert "- pod repo commit: 0123456789ab" in markdown and "- sampling: temperature 0.7; max_tokens 64" in markdown
    assert "2025-12-01 20:00:00 UTC" in markdown and "1764619200" not in markdown
    assert markdown.index("| Qwen/Qwen3-0.6B") < markdown.index("| Qwen/Qwen3-4B") < markdown.index("| Qwen/Qwen3-32B")
    assert max(len(line) for line in markdown.splitlines() if line.startswith("| arith")) < 200


def test_markdown_tables_are_laid_out_as_tabulate_and_a_pipe_from_the_pod_cannot_break_one():
    from tabulate import tabulate

    from ops_tasks.tables import markdown_table

    rows = [["run-1", "Qwen/Qwen3-0.6B", "0.5000", ""], ["a-much-longer-run-id", "m", "", " padded "]]
    headers = ["run_id", "model_id", "avg_reward", "x"]
    assert markdown_table(rows, headers) == tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    table = markdown_table([["evil|model\nsecond line", "1"]], ["model_id", "n"]).splitlines()
    assert len(table) == 3  # header, rule, one row: the line break did not start a row
    assert all(line.replace("\\|", "").count("|") == 3 for line in table)  # the pipe did not add a column
    assert "evil\\|model second line" in table[2]


def test_many_runs_are_read_by_worker_processes_with_the_same_rows_and_errors(tmp_path):
    from ops_tasks.operations import report

    root = tmp_path / "pod_logs"
    for index in range(40):
        make_run(root, f"run-{index:02d}", summary={"ok": True, "avg_reward": index / 40},
                 metadata={"run_id": f"run-{index:02d}", "model_id": f"m{index % 3}"},
                 rewards={f"e{k}": (index + k) % 2 for k in range(5)})
    (root / "run-07" / "summary.json").write_text("{not json")
    runs, _ = report.scoped_runs(root, None)
    read = report.functools.partial(report._read_some, fields=["model_id"], metric=report.metric_of(),
                                    include_failed=False)

    alone = read(runs)
    in_workers = report._in_workers(read, runs, 3)

    assert in_workers is not None, "the worker processes did not run"
    assert in_workers == alone
    assert len(alone[0]) == 39 and alone[1][0]["run_id"] == "run-07"


def test_a_models_by_task_cell_pools_its_seeds_examples_instead_of_a_t_interval_over_two_means(tmp_path):
    from ops_tasks.operations.report import build_report

    root = tmp_path / "pod_logs"
    seeds = {0: [1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0], 1: [1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1]}  # 12 shared examples
    for seed, scores in seeds.items():
        make_run(root, f"big-{seed}", summary={"ok": True, "avg_reward": sum(scores) / 12},
                 metadata={"model_id": "big", "env_id": "arith", "config": {"seed": seed}},
                 rewards={f"q{i}": s for i, s in enumerate(scores)})
    make_run(root, "small-0", summary={"ok": True, "avg_reward": 0.5}, metadata={"model_id": "small", "env_id": "arith"},
             rewards={f"q{i}": i % 2 for i in range(12)})
    for seed, value in ((0, 0.40), (1, 0.46)):  # a training task: summary values only
        make_run(root, f"big-train-{seed}", summary={"ok": True, "avg_reward": value},
                 metadata={"model_id": "big", "env_id": "train"})

    cells = build_report(root)["models_by_task"]["cells"]

    # Two seeds on the same 12 examples: 24 scores in 12 clusters, CR1 by hand, t with 11 df.
    pooled = [seeds[0][i] + seeds[1][i] for i in range(12)]
    mean = sum(pooled) / 24
    se = math.sqrt(12 / 11 * sum((s - 2 * mean) ** 2 for s in pooled)) / 24
    big = cells["big"]["arith"]
    assert big["mean"] == pytest.approx(mean) and big["n"] == 2 and big["clusters"] == 12
    assert (big["ci95_low"], big["ci95_high"]) == pytest.approx((mean - 2.200985 * se, mean + 2.200985 * se), abs=1e-6)
    # (Student's t over the two seed means, 0.708 and 0.667, would say [0.44, 0.95].)
    # One run: its own Wilson interval, as its row shows it.
    assert (cells["small"]["arith"]["ci95_low"], cells["small"]["arith"]["ci95_high"]) == pytest.approx(
        wilson_by_hand(6, 12))
    # No per-example scores: where one more run would fall, from the runs' summary values, t(0.975, 1) = 12.706.
    train = cells["big"]["train"]
    half = 12.7062047 * 0.03 * math.sqrt(2) * math.sqrt(1 + 1 / 2)  # sd 0.03 * sqrt(2), one more run of two
    assert train["mean"] == pytest.approx(0.43) and train["ci95_low"] == pytest.approx(max(0.0, 0.43 - half))
    assert train["ci95_high"] == 1.0  # clipped to the metric's range
    assert train["interval"] == "student t prediction of one more run from 2 runs"
    assert train["ci95_high"] == pytest.approx(min(1.0, 0.43 + half))
