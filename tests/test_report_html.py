"""report.html in a real headless browser (Debian's chromium, driven by playwright): what a person
sees: the tables, the plot, the runs' curves, the drill-down after a filter, a hostile answer shown as text, and no
console error or network request."""

import json
import os
import re
import shutil

import pytest

from conftest import run_ops
from test_validate import record_submission

from ops_tasks.operations.examples import json_block
from ops_tasks.operations.report_html import CURVE_POINTS, curves_svg, write_report_html

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
HOSTILE = '</script><script>alert(1)</script><b id="injected">bold</b><img src="http://127.0.0.1:9/x.png">'

sync_api = pytest.importorskip("playwright.sync_api")  # the test extra; in CI a skip fails (conftest)


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: make system-deps installs it")
        pytest.skip(f"{CHROMIUM} is missing")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


def open_page(browser, path):
    """The page, with every console error and every request that is not the file itself recorded."""
    page = browser.new_page()
    seen = {"errors": [], "requests": [], "dialogs": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: r.url != path.as_uri() and seen["requests"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(path.as_uri())
    return page, seen


def make_run(root, run_id, model, rewards, answers=None):
    run = root / run_id
    run.mkdir(parents=True)
    for name, text in (("command.sh", "true\n"), ("stdout.log", "")):
        (run / name).write_text(text)
    (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": model, "env_id": "arith"}))
    (run / "summary.json").write_text(json.dumps({"ok": True, "avg_reward": sum(rewards) / len(rewards)}))
    (run / "results.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?",
                    "response": (answers or {}).get(i, str(2 * i)), "answer": str(2 * i), "reward": r}) + "\n"
        for i, r in enumerate(rewards)))


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    """One report of three runs (one with a hostile answer), compared A vs B, as `ops report` writes it."""
    project = tmp_path_factory.mktemp("html") / "project"
    root = project / "artifacts" / "pod_logs"
    root.mkdir(parents=True)
    make_run(root, "run-a", "Qwen/Qwen3-4B", [1, 0, 1, 1], answers={1: HOSTILE})
    make_run(root, "run-b", "Qwen/Qwen3-32B", [1, 1, 1, 0])
    make_run(root, "run-c", "Qwen/Qwen3-0.6B", [0, 0, 1, 0])
    for number, run_id in enumerate(("run-a", "run-b", "run-c")):  # a training log each: the curves
        (root / run_id / "metrics.jsonl").write_text("".join(
            json.dumps({"iter": 10 * i, "loss": 4.0 / (i + 1) + number, "tok_per_s": 33495}) + "\n" for i in range(5)))
    record_submission(project, "sub-1", ["run-a", "run-b", "run-c"], 100.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPS_")}
    proc = run_ops(["report", "--compare", "run-a,run-b", "--group-by", "model_id", "--json"], cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    return project / "artifacts" / "report.html"


def test_the_json_block_cannot_be_closed_from_inside():
    text = json_block({"answer": HOSTILE + "\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"answer": HOSTILE + "\u2028&"}


def test_the_report_shows_its_tables_plot_curves_and_header(browser, report_html):
    page, seen = open_page(browser, report_html)

    assert page.title().startswith("Report: ")
    header = page.inner_text("ul.header")
    assert "submission sub-1" in header and "Qwen/Qwen3-0.6B, Qwen/Qwen3-4B, Qwen/Qwen3-32B" in header
    groups = page.locator("table.groups tbody tr")
    assert [groups.nth(i).locator("td").first.inner_text() for i in range(groups.count())] == [
        "Qwen/Qwen3-0.6B", "Qwen/Qwen3-4B", "Qwen/Qwen3-32B"]
    assert page.locator("table.runs tbody tr", has_text="run-a").locator("td", has_text="0.7500").count() >= 1
    assert page.locator("svg rect.bar").count() == 3 and page.locator("svg line.ci").count() == 9
    assert "run-b better than" in page.inner_text("body") or "no detectable difference" in page.inner_text("body")
    # Each run's logged curve (metrics.jsonl), a color per group.
    curves = page.locator("svg.curves polyline.curve")
    assert curves.count() == 3 and page.locator("svg.curves").is_visible()
    assert sorted(curves.nth(i).get_attribute("data-run") for i in range(3)) == ["run-a", "run-b", "run-c"]
    assert len({curves.nth(i).get_attribute("stroke") for i in range(3)}) == 3  # three models, three groups
    assert all(len(curves.nth(i).get_attribute("points").split()) == 5 for i in range(3))
    assert "Curves: loss by step" in page.inner_text("body")  # the report's metric is not logged: the log's
    assert seen == {"errors": [], "requests": [], "dialogs": []}


def test_runs_of_one_group_share_a_color_and_long_logs_are_thinned(tmp_path):
    dirs = {}
    for run_id, steps in (("a", 3), ("b", 3), ("c", 5 * CURVE_POINTS)):
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "metrics.jsonl").write_text(
            "".join(json.dumps({"step": i, "last_eval": 1.0 / (i + 1)}) + "\n" for i in range(steps)) + "{torn")
        dirs[run_id] = str(tmp_path / run_id)
    doc = {"rows": [{"run_id": "a", "lr": 0.1}, {"run_id": "b", "lr": 0.1}, {"run_id": "c", "lr": 0.2}],
           "group_by": ["lr"], "metric": {"name": "last_eval"}}
    svg = curves_svg(doc, dirs)
    drawn = {run: (stroke, points.split()) for run, stroke, points in
             re.findall(r'data-run="([^"]+)"[^>]*stroke="([^"]+)"[^>]*points="([^"]*)"', svg)}
    assert sorted(drawn) == ["a", "b", "c"] and drawn["a"][0] == drawn["b"][0] != drawn["c"][0]
    assert len(drawn["a"][1]) == 3 and len(drawn["c"][1]) == CURVE_POINTS  # a torn last line is no step
    assert curves_svg({**doc, "rows": []}, dirs) == ""


def test_the_drill_down_filters_by_run_outcome_and_disagreement(browser, report_html):
    page, seen = open_page(browser, report_html)
    rows = page.locator("#examples-body tr.example")
    assert rows.count() == 12

    page.select_option("#filter-run", "run-c")
    page.select_option("#filter-outcome", "correct")
    assert rows.count() == 1
    assert [rows.first.locator("td").nth(i).inner_text() for i in (0, 1, 2, 5)] == ["run-c", "q2", "What is 2 + 2?", "1"]

    page.select_option("#filter-run", "")
    page.select_option("#filter-outcome", "")
    page.check("#filter-disagree")  # run-a and run-b disagree on q1 and q3
    assert sorted(rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())) == ["q1", "q1", "q3", "q3"]
    assert page.inner_text("#examples-count") == "4 examples"
    assert seen == {"errors": [], "requests": [], "dialogs": []}


def test_a_hostile_answer_shows_as_text(browser, report_html):
    page, seen = open_page(browser, report_html)
    page.select_option("#filter-run", "run-a")
    page.select_option("#filter-outcome", "incorrect")

    rows = page.locator("#examples-body tr.example")
    assert rows.count() == 1 and rows.first.locator("td").nth(3).inner_text() == HOSTILE
    assert page.locator("#injected").count() == 0 and page.locator("img").count() == 0
    assert page.locator("script").count() == 2  # the data block and the page's own script
    assert seen == {"errors": [], "requests": [], "dialogs": []}


def page_examples(path):
    text = path.read_text()
    block = text[text.index('id="report-data">') + len('id="report-data">'):text.index("</script>")]
    return json.loads(block)["examples"]


@pytest.mark.parametrize("limits", [{}, {"EXAMPLES_TOTAL": 7}, {"SPOOL_ITEMS": 5}, {"SPOOL_BYTES": 1}])
def test_the_examples_kept_while_reading_are_the_page_a_second_reading_gives(tmp_path, monkeypatch, limits):
    # report.html's examples come from the report's one reading of each results.jsonl (in its
    # worker processes), else (past the spool's share) from reading the file again: one page either way.
    from ops_tasks.operations import examples, report

    root = tmp_path / "pod_logs"
    for index in range(6):
        make_run(root, f"run-{index}", f"m{index % 2}", [(index + k) % 2 for k in range(4)])
    make_run(root, "run-rollouts", "m0", [1, 0, 0, 1])
    with (root / "run-rollouts" / "results.jsonl").open("a") as handle:  # q0 again at the end: two passes
        handle.write(json.dumps({"id": "q0", "question": "again", "response": "2", "reward": 0}) + "\n")
    make_run(root, "run-crashed", "m1", [1, 1])
    (root / "run-crashed" / "summary.json").write_text(json.dumps({"ok": False}))
    make_run(root, "run-torn", "m1", [1])
    with (root / "run-torn" / "results.jsonl").open("a") as handle:
        handle.write("{torn\n")
    monkeypatch.setattr(report, "PARALLEL_FROM", 2)  # read by two worker processes, as 2,000 runs are
    monkeypatch.setattr(report, "RUNS_PER_WORKER", 4)
    for name, value in limits.items():
        monkeypatch.setattr(examples, name, value)

    with examples.ExampleSpool() as spool:
        doc = report.build_report(root, sort="-avg_reward", spool=spool)  # rows in another order than read
        dirs = doc.pop(report.RUN_DIRS)
        spooled = write_report_html(doc, dirs, tmp_path / "spooled.html", spool)
        again = write_report_html(doc, dirs, tmp_path / "again.html")
        kept, folder = dict(spool.index["items"]), spool.folder
        # The examples' means kept by the same reading pool and pair as the files read again do.
        results = {r["run_id"]: os.path.join(dirs[r["run_id"]], "results.jsonl") for r in doc["rows"] if r.get("n")}
        metric = report.metric_of()
        assert report.group_rows(doc["rows"], ["model_id"], metric, results, spool) == \
            report.group_rows(doc["rows"], ["model_id"], metric, results)
        means_kept = len(spool.index["means"])
        assert 0 < means_kept < 7 if "SPOOL_BYTES" in limits else means_kept == 7

    assert spooled.read_bytes() == again.read_bytes()
    shown = page_examples(spooled)
    assert len(shown) == min(6 * 4 + 5, limits.get("EXAMPLES_TOTAL", 100))
    assert {e[0] for e in shown} <= {r["run_id"] for r in doc["rows"]} and "run-crashed" not in kept
    spooling = {"SPOOL_ITEMS", "SPOOL_BYTES"} & set(limits)
    assert 0 < len(kept) < 7 if spooling else len(kept) == 7  # every scored run, unless past the share
    assert not os.path.exists(folder)
