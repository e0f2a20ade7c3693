"""ops_tasks/operations/report_html.py's promises that mutmut (bench/mutmut_fast.py) showed no fast
test held (tests/test_report_html.py checks them in Chromium, which the in-process runner cannot
run): the page built from the report's data and read back with html.parser and json, as a reader
(or a browser) gets it. Every string from a pod is text in each place it appears (title, header,
tables, plot, curves, comparison, not-succeeded list, the examples' JSON), with hostile payloads;
nothing on the page loads a URL; the plot's bars and whiskers sit at their values on the axis
its ticks label, its intervals named; the tables' numbers, columns and row limit; the curves' x
(the step keys in order), y (the metric, else the first logged number), thinning and colors."""

import json
import os
from html.parser import HTMLParser

import pytest

from ops_tasks.operations import report_html
from ops_tasks.operations.examples import ExampleSpool
from ops_tasks.operations.report import (MODELS_BY_TASK, RUN_DIRS, build_report, comparison_lines, comparison_title,
                                         models_by_task_rows)
from ops_tasks.operations.report_html import render_html, write_report_html

PAYLOADS = ['</script><script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "javascript:alert('x')",
            "a\u2028b\u2029c &amp; <!-- d", "'><svg onload=alert(1)>"]
VOID = {"meta", "br", "input", "img", "link", "hr", "source", "embed", "wbr", "area", "base", "col", "param", "track"}


# ---------------------------------------------------------------- reading the page


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent, self.children = tag, dict(attrs), parent, []

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def all(self, tag=None, cls=None, **attrs) -> list:
        """Every element under this one of that tag (and class, and attribute values)."""
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if ((tag is None or child.tag == tag) and (cls is None or cls in child.attrs.get("class", "").split())
                        and all(child.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())):
                    found.append(child)
                found += child.all(tag, cls, **attrs)
        return found

    def one(self, tag=None, cls=None, **attrs) -> "Node":
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, (tag, cls, attrs, len(found))
        return found[0]

    def elements(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.elements()


class Page(HTMLParser):
    """The document as a tree of Nodes: html.parser splits tags, attributes and text as a browser's
    tokenizer does (a <script>'s content is raw text up to the first </script)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.root = self.open = Node("#document", {})
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.open)
        self.open.children.append(node)
        if tag not in VOID:
            self.open = node

    def handle_startendtag(self, tag, attrs):
        self.open.children.append(Node(tag, attrs, self.open))

    def handle_endtag(self, tag):
        node = self.open
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"</{tag}> closes nothing open"
        self.open = node.parent

    def handle_data(self, data):
        self.open.children.append(data)


def parse(text: str) -> Node:
    return Page(text).root


def table(node: Node) -> tuple:
    """(header cells, [[row cells]]) of a <table> as text."""
    head = [th.text for th in node.one("thead").all("th")]
    return head, [[td.text for td in tr.all("td")] for tr in node.one("tbody").all("tr")]


BLOCKS = {"html", "head", "body", "ul", "table", "thead", "tbody", "tr", "svg", "figure", "select", "div"}


def stray_text(page: Node) -> list:
    """Text a reader would see between the page's blocks (in a list, a table, a chart, a legend), where
    the page writes only elements."""
    stray = [t for e in page.elements() if e.tag in BLOCKS for t in e.children if isinstance(t, str) and t.strip()]
    for caption in page.all("figcaption"):
        legend = caption.children[:next((i for i, c in enumerate(caption.children) if getattr(c, "tag", "") == "br"), 0)]
        stray += [c for c in legend if isinstance(c, str)]
    return stray


def data_of(page: Node) -> dict:
    return json.loads(page.one("script", id="report-data").text)


def header_items(page: Node) -> dict:
    return dict(li.text.split(": ", 1) for li in page.one("ul", cls="header").all("li"))


def section(page: Node, heading: str) -> Node:
    """The element right after the <h2> whose text starts with heading."""
    body = page.one("body")
    children = [c for c in body.children if isinstance(c, Node)]
    index = next(i for i, c in enumerate(children) if c.tag == "h2" and c.text.startswith(heading))
    return children[index + 1]


# ---------------------------------------------------------------- a report as `ops report` builds it


def write_run(root, run_id, *, model, task="arith", rewards=(1, 0, 1, 1), summary=None, texts=None, steps=None,
              extra=None):
    """A fetched run: summary, metadata, results.jsonl ({i: (prompt, answer)} in texts) and metrics.jsonl."""
    run = root / run_id
    run.mkdir(parents=True)
    (run / "command.sh").write_text("true\n")
    (run / "stdout.log").write_text("")
    (run / "summary.json").write_text(json.dumps(summary or {"ok": True, "avg_reward": sum(rewards) / len(rewards),
                                                            **(extra or {})}))
    (run / "run_metadata.json").write_text(json.dumps({"run_id": run_id, "model_id": model, "env_id": task}))
    (run / "results.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": (texts or {}).get(i, (f"What is {i} + {i}?",))[0],
                    "response": (texts or {}).get(i, (None, str(2 * i)))[1], "answer": str(2 * i), "reward": r}) + "\n"
        for i, r in enumerate(rewards)))
    if steps is not None:
        (run / "metrics.jsonl").write_text("".join(json.dumps(s) + "\n" for s in steps))
    return run


def renamed(value, names: dict):
    """The document with each old string of names spelled as its new one (run ids, the payload for TOKEN)."""
    if isinstance(value, dict):
        return {renamed(k, names): renamed(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [renamed(v, names) for v in value]
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
    return value


# 20 examples a run (13, 15 and 5 right): a and b disagree on some, as a comparison's pairs do.
REWARDS = {"a": tuple(0 if i % 3 == 1 else 1 for i in range(20)), "b": tuple(0 if i % 4 == 3 else 1 for i in range(20)),
           "c": tuple(1 if i % 4 == 2 else 0 for i in range(20))}


TOKEN = "PAYLOAD"  # stands for the payload in the report built once (a comparison's power takes seconds)


def write_runs(root, payload: str) -> None:
    """Three runs of two models on two tasks, one failed run: the payload in every string a pod
    writes (model and task names, a summary column, a logged metric, a failure class, prompts and
    answers)."""
    steps = [{"iter": 10 * i, f"loss{payload}": 4.0 / (i + 1)} for i in range(3)]
    write_run(root, "run-a", model=f"m-4B{payload}", rewards=REWARDS["a"], extra={f"col{payload}": 0.5},
              texts={1: (f"Q{payload}", f"A{payload}")}, steps=steps)
    write_run(root, "run-b", model=f"m-32B{payload}", task=f"t{payload}", rewards=REWARDS["b"], steps=steps)
    write_run(root, "run-c", model=f"m-4B{payload}", rewards=REWARDS["c"])
    write_run(root, "run-x", model="m-1B", summary={"ok": False, "failure_class": f"oom{payload}"})


@pytest.fixture(scope="module")
def token_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("token") / "pod_logs"
    write_runs(root, TOKEN)
    doc = build_report(root, group_by="model_id", compare=["run-a", "run-b"], scope=f"scope{TOKEN}")
    doc.pop(RUN_DIRS)
    return doc


@pytest.fixture
def hostile_report(tmp_path, token_report):
    """(doc, run dirs) of write_runs' report, grouped by model and comparing run-a with run-b, as
    build_report makes it: the payload in each string from the pod, in the run ids and the scope."""

    def report(payload: str) -> tuple:
        root = tmp_path / "pod_logs"
        write_runs(root, payload)  # the files the page reads itself: examples and curves
        names = {TOKEN: payload, **{f"run-{k}": f"run-{k}{payload}" for k in "abcx"}}
        doc = renamed(token_report, names)
        doc["root"] = f"root{payload}"
        return doc, {names[f"run-{k}"]: str(root / f"run-{k}") for k in "abc"}

    return report


@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_string_from_a_pod_is_text_in_each_place_it_shows(tmp_path, hostile_report, payload):
    doc, dirs = hostile_report(payload)
    path = write_report_html(doc, dirs, tmp_path / "out" / "report.html")
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    run = {k: f"run-{k}{payload}" for k in "abcx"}

    # Only the page's own elements: no element, attribute or script a payload would have made.
    assert {e.tag for e in page.elements()} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "ul", "li", "b", "p", "table", "thead",
        "tbody", "tr", "th", "td", "svg", "line", "text", "rect", "title", "figure", "figcaption", "polyline",
        "span", "br", "div", "label", "select", "option", "input", "script"}
    assert [s.attrs.get("type") for s in page.all("script")] == ["application/json", None]
    assert not [a for e in page.elements() for a in e.attrs if a.startswith("on")]
    assert stray_text(page) == []

    assert page.one("head").one("title").text == page.one("h1").text == (
        f"Report: m-1B, m-4B{payload}, m-32B{payload} on arith, t{payload} (4 runs)")
    header = header_items(page)
    assert header["root"] == f"root{payload}"
    assert header["scope"] == f"scope{payload}"
    assert header["models"] == f"m-1B, m-4B{payload}, m-32B{payload}"
    assert header["tasks"] == f"arith, t{payload}"
    # The runs' table: a summary column named by the pod, run ids and model ids, cell by cell.
    head, rows = table(page.one("table", cls="runs"))
    assert f"col{payload}" in head
    by_run = {r[head.index("run_id")]: dict(zip(head, r)) for r in rows}
    assert sorted(by_run) == sorted([run["a"], run["b"], run["c"]])
    assert by_run[run["a"]]["model_id"] == f"m-4B{payload}" and by_run[run["a"]][f"col{payload}"] == "0.5000"
    assert by_run[run["b"]]["env_id"] == f"t{payload}"
    # The groups' table and the plot of them.
    head, rows = table(page.one("table", cls="groups"))
    assert [r[0] for r in rows] == [f"m-4B{payload}", f"m-32B{payload}"]
    bars = page.all("figure")[0].one("svg")
    assert [t.text.split(": ")[0] for t in bars.all("title")] == [f"m-4B{payload}", f"m-32B{payload}"]
    assert [t.text for t in bars.all("text", cls="label")] == [
        label if len(label) <= 24 else label[:21] + "..." for label in (f"m-4B{payload}", f"m-32B{payload}")]
    # models x tasks: its tasks as columns.
    head, rows = table(page.one("table", cls="models-by-task"))
    assert head == ["model_id", "arith", f"t{payload}"] and [r[0] for r in rows] == [f"m-4B{payload}", f"m-32B{payload}"]
    # The curves: the logged metric's name, a polyline per run named by its run id and group.
    curves = page.one("svg", cls="curves")
    assert curves.attrs["aria-label"] == f"loss{payload} over steps"
    assert [h.text for h in page.all("h2")] == [
        "avg_reward: models x tasks", f"Curves: loss{payload} by step", "Runs (3)", "Groups by model_id",
        f"Comparison: {run['b']} - {run['a']}, avg_reward", "Not succeeded (1)", "Examples"]
    assert sorted((p.attrs["data-run"], p.attrs["data-group"]) for p in curves.all("polyline")) == [
        (run["a"], f"m-4B{payload}"), (run["b"], f"m-32B{payload}")]
    assert sorted(p.one("title").text for p in curves.all("polyline")) == [
        f"{run['a']} (m-4B{payload})", f"{run['b']} (m-32B{payload})"]
    assert [s.text for s in page.all("span", cls="legend")] == [f"m-4B{payload}", f"m-32B{payload}"]
    # The comparison names the runs; the failed run its failure class.
    lines = [li.text for li in page.one("ul", cls="comparison").all("li")]
    assert lines[1].startswith(f"shared examples: 20 (only in {run['a']}: 0, only in {run['b']}: 0)")
    head, rows = table(page.one("table", cls="failed"))
    assert rows == [[run["x"], "failed", f"oom{payload}", f"summary.json says ok: false, failure_class oom{payload}"]]
    # The examples' JSON: nothing in it ends the block, and it reads back as the pod wrote it.
    raw = page.one("script", id="report-data").text
    assert "<" not in raw and ">" not in raw and "\u2028" not in raw and "\u2029" not in raw
    data = json.loads(raw)
    assert data["compare"] == [run["a"], run["b"]]
    assert [run["a"], "q1", f"Q{payload}", f"A{payload}", "2", 0] in data["examples"]
    assert {e[0] for e in data["examples"]} == {run["a"], run["b"], run["c"]} and len(data["examples"]) == 60
    # No URL is loaded: the one http in the page is the SVG namespace's name.
    urls = [(e.tag, k, v) for e in page.elements() for k, v in e.attrs.items() if v and "http" in v.lower()]
    assert {(tag, key) for tag, key, _ in urls} <= {("svg", "xmlns"), ("meta", "http-equiv")}
    assert render_html(doc, data["examples"], dirs) == text


# ---------------------------------------------------------------- the page's frame, header and tables


def small_doc(**extra) -> dict:
    """A report's document as build_report leaves it, two runs, nothing grouped or compared."""
    rows = [{"run_id": "r1", "model_id": "m", "n": 4, "mean": 0.75, "ci95_low": 0.3, "ci95_high": 0.95,
             "interval": "wilson score interval", "avg_reward": 0.75},
            {"run_id": "r2", "model_id": "m", "n": 4, "mean": 0.25, "ci95_low": 0.05, "ci95_high": 0.7,
             "interval": "wilson score interval", "avg_reward": 0.25}]
    header = {"generated": "2026-12-07 21:00:00 UTC", "scope": "submission s1", "commits": [], "models": ["m"],
              "tasks": [], "temperature": ["0.7"], "max_tokens": [], "rollouts": ["1", "4"], "examples": ["4"],
              "runs": 3, "states": {"failed": 1, "succeeded": 2}}
    return {"root": "/p/pod_logs", "count": 2, "rows": rows, "columns": ["run_id", "model_id", "mean", "n"],
            "not_succeeded": [], "metric": {"name": "avg_reward", "field": "reward", "lower_is_better": False},
            "header": header, "models_by_task": None, **extra}


def test_the_page_is_one_self_contained_document_that_loads_nothing():
    text = render_html(small_doc(), [["r1", "q0", "p", "a", "r", 1], ["r2", "q0", "p", "b", "r", 0]])
    assert text.startswith("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">") and text.endswith(
        "</html>\n")
    page = parse(text)
    assert stray_text(page) == []
    assert page.one("html").attrs == {"lang": "en"} and page.one("head").one("meta", charset="utf-8")
    policy = page.one("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert policy == "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    assert page.one("head").one("style").text == report_html.STYLE
    scripts = page.all("script")
    assert [s.attrs for s in scripts] == [{"type": "application/json", "id": "report-data"}, {}]
    assert scripts[1].text == report_html.SCRIPT
    assert data_of(page) == {"compare": None, "examples": [["r1", "q0", "p", "a", "r", 1], ["r2", "q0", "p", "b", "r", 0]]}
    assert json.loads(parse(render_html(small_doc(), [])).one("script", id="report-data").text) == {
        "compare": None, "examples": []}
    # The drill-down's controls, which the page's script finds by id.
    assert [(o.attrs["value"], o.text) for o in page.one("select", id="filter-run").all("option")] == [("", "all runs")]
    assert [(o.attrs["value"], o.text) for o in page.one("select", id="filter-outcome").all("option")] == [
        ("", "all"), ("correct", "correct (reward 1)"), ("incorrect", "incorrect")]
    box = page.one("input", id="filter-disagree")
    assert box.attrs == {"type": "checkbox", "id": "filter-disagree"}
    assert box.parent.tag == "label" and box.parent.text == " only where the two compared runs disagree"
    assert [label.text.split(" ")[0] for label in page.one("div", cls="controls").all("label")] == ["run", "outcome", ""]
    assert page.one("span", id="examples-count").text == ""
    examples = page.one("table", cls="examples")
    assert table(examples) == (["run", "id", "prompt", "answer", "reference", "reward"], [])
    assert examples.one("tbody").attrs == {"id": "examples-body"}
    assert section(page, "Examples") is page.one("div", cls="controls")
    # Nothing refers to anything outside the file.
    assert not [(e.tag, k) for e in page.elements() for k in e.attrs if k in ("src", "href", "action", "srcset")]


def test_the_header_lists_what_a_reader_needs_before_the_numbers():
    page = parse(render_html(small_doc(), []))
    items = page.one("ul", cls="header").all("li")
    assert [li.children[0].text for li in items] == [
        "generated", "scope", "root", "pod repo commit", "models", "tasks", "sampling", "examples per run", "runs"]
    assert header_items(page) == {
        "generated": "2026-12-07 21:00:00 UTC", "scope": "submission s1", "root": "/p/pod_logs",
        "pod repo commit": "not recorded",
        "models": "m", "tasks": "-", "sampling": "temperature 0.7; max_tokens -; rollouts 1, 4",
        "examples per run": "4", "runs": "3 (1 failed, 2 succeeded)"}
    doc = small_doc()
    doc["header"].update(commits=["0123456789ab (dirty)", "fedcba987654"], states={},
                         cost={"cost_usd": 12.345, "priced": 2, "unpriced": 1})
    items = header_items(parse(render_html(doc, [])))
    assert items["pod repo commit"] == "0123456789ab (dirty), fedcba987654" and items["runs"] == "3 (none)"
    assert items["cost"] == "$12.35 over 2 runs (1 more without a price)"
    doc["header"]["cost"] = None
    assert "cost" not in header_items(parse(render_html(doc, [])))


def test_the_runs_table_shows_rounded_numbers_dates_and_the_first_rows_only(monkeypatch):
    rows = [{"run_id": f"r{i}", "model_id": None, "ok": i % 2 == 0, "avg_reward": i / 3, "n": i,
             "finished": 1765000000.5, "timing.started_at": 1765000000, "iter": 1765000000} for i in range(4)]
    columns = ["run_id", "model_id", "ok", "avg_reward", "n", "finished", "timing.started_at", "iter"]
    doc = small_doc(rows=rows, count=4, columns=columns)
    page = parse(render_html(doc, []))
    assert section(page, "Runs (4)") is page.one("table", cls="runs")
    head, cells = table(page.one("table", cls="runs"))
    assert head == columns
    # Floats to 4 places, bools as JSON spells them, nothing for None; epoch seconds in a time column
    # (finished, *_at) as the UTC date report.md prints, a number in any other column as it is.
    assert cells[1] == ["r1", "", "false", "0.3333", "1", "2025-12-06 05:46:40 UTC", "2025-12-06 05:46:40 UTC",
                        "1765000000"]
    assert [c[0] for c in cells] == ["r0", "r1", "r2", "r3"]
    assert page.all("p") == []

    monkeypatch.setattr(report_html, "ROW_LIMIT", 4)
    assert parse(render_html(doc, [])).all("p") == []
    monkeypatch.setattr(report_html, "ROW_LIMIT", 3)
    page = parse(render_html(doc, []))
    assert [c[0] for c in table(page.one("table", cls="runs"))[1]] == ["r0", "r1", "r2"]
    assert [p.text for p in page.all("p")] == ["first 3 of 4 runs; all are in report.json"]
    # No rows (a filter left none): no table.
    assert parse(render_html(small_doc(rows=[], count=0), [])).all("table", cls="runs") == []


def test_groups_comparison_models_by_task_and_failed_runs_each_have_their_section(tmp_path, hostile_report):
    doc, dirs = hostile_report("")
    page = parse(render_html(doc, [], dirs))
    # Groups: the group's own values as they are (plain), each figure to 4 places with its interval.
    assert section(page, "Groups by model_id") is page.one("table", cls="groups")
    head, rows = table(page.one("table", cls="groups"))
    assert head == ["model_id", "runs", "avg_reward over examples", "avg_reward over runs"]
    assert [(r[0], r[1], r[2].split()[0]) for r in rows] == [("m-4B", "2", "0.4500"), ("m-32B", "1", "0.7500")]
    # The comparison: its title, the verdict in bold, then each line with its formula.
    lines = page.one("ul", cls="comparison").all("li")
    assert section(page, "Comparison: run-b - run-a, avg_reward") is page.one("ul", cls="comparison")
    assert [li.text for li in lines] == comparison_lines(doc["comparison"])
    assert lines[0].children[0].tag == "b" and [li.all("b") for li in lines[1:]] == [[]] * (len(lines) - 1)
    assert data_of(page)["compare"] == ["run-a", "run-b"]
    # models x tasks: mean [interval] (runs), its formula named under it.
    grid = page.one("table", cls="models-by-task")
    assert section(page, "avg_reward: models x tasks") is grid
    cells = [[r.get(k, "") for k in ("model_id", "arith", "t")] for r in models_by_task_rows(doc["models_by_task"])]
    assert table(grid) == (["model_id", "arith", "t"], cells) and cells[1][2].startswith("0.750 [")
    assert grid.parent.children[grid.parent.children.index(grid) + 1].text == f"mean [95% interval] (runs): {MODELS_BY_TASK}."
    # The runs that did not succeed, each with its state, class and reason.
    assert section(page, "Not succeeded (1)") is page.one("table", cls="failed")
    assert table(page.one("table", cls="failed")) == (["run_id", "state", "failure_class", "reason"], [
        ["run-x", "failed", "oom", "summary.json says ok: false, failure_class oom"]])

    # Sides of --compare-by are groups, not two runs: the drill-down has no pair to filter on.
    root = tmp_path / "same_task"
    for run_id, model, rewards in (("p1", "m-4B", REWARDS["a"]), ("p2", "m-32B", REWARDS["b"])):
        write_run(root, run_id, model=model, rewards=rewards)
    by = build_report(root, compare=["m-4B", "m-32B"], compare_by="model_id")
    dirs = by.pop(RUN_DIRS)
    page = parse(render_html(by, [], dirs))
    assert data_of(page)["compare"] is None
    assert page.one("ul", cls="comparison") and [h.text for h in page.all("h2") if h.text.startswith("Comp")] == [
        comparison_title(by["comparison"])] and comparison_title(by["comparison"]).startswith("Comparison (model_id): ")
    # A group's own values as the runs gave them (lr 0.1, not 0.1000); only the columns it has a value in.
    doc = small_doc(group_by=["lr"], groups=[{"lr": 0.1, "runs": 2, "avg_reward_mean": 0.5, "avg_reward_sd": None},
                                             {"lr": 2, "runs": 1, "avg_reward_mean": 1 / 3, "avg_reward_sd": None}])
    page = parse(render_html(doc, []))
    assert table(page.one("table", cls="groups")) == (
        ["lr", "runs", "avg_reward over runs"], [["0.1", "2", "0.5000"], ["2", "1", "0.3333"]])
    assert section(page, "Groups by lr") is page.one("table", cls="groups")
    # Grouped by two keys, one of them no run has: both columns stay (a group is named by them); priced
    # groups add their cost columns.
    doc = small_doc(group_by=["lr", "seed"], groups=[
        {"lr": 0.1, "seed": None, "runs": 2, "avg_reward_mean": 0.5, "cost": 1.5, "cost_per_correct": 0.75},
        {"lr": 0.2, "seed": None, "runs": 1, "avg_reward_mean": 0.25}])
    page = parse(render_html(doc, []))
    assert table(page.one("table", cls="groups")) == (["lr", "seed", "runs", "avg_reward over runs", "cost", "cost_per_correct"], [
        ["0.1", "", "2", "0.5000", "1.5000", "0.7500"], ["0.2", "", "1", "0.2500", "", ""]])
    assert section(page, "Groups by lr, seed") is page.one("table", cls="groups")
    # Nothing grouped, compared or failed: no such section.
    page = parse(render_html(small_doc(), []))
    assert [h.text for h in page.all("h2")] == ["Runs (2)", "Examples"]
    assert page.all("table", cls="groups") == page.all("ul", cls="comparison") == page.all("table", cls="failed") == []


# ---------------------------------------------------------------- the plot


def run_rows(*bars) -> list:
    """Rows of runs with (mean, low, high) each; a None mean: the run has its summary value only."""
    return [{"run_id": f"run-{i}", "mean": mean, "ci95_low": low, "ci95_high": high, "avg_reward": value,
             "interval": None if low is None else "wilson score interval"}
            for i, (mean, low, high, value) in enumerate((*b, b[0]) if len(b) == 3 else b for b in bars)]


def chart(svg: Node) -> dict:
    """What a reader reads off the bar chart: the ticks' labels, and each bar's value, whisker and
    caps measured against the axis the ticks label."""
    ticks = [(float(t.attrs["y"]) - 4, t.text) for t in svg.all("text", cls="tick")]
    (y0, v0), (y1, v1) = (ticks[0][0], float(ticks[0][1])), (ticks[-1][0], float(ticks[-1][1]))

    def value(y):
        return v0 + (float(y) - y0) * (v1 - v0) / (y1 - y0)

    axis = svg.one("line", cls="axis")
    bars, whiskers = [], [line for line in svg.all("line", cls="ci")]
    for rect in svg.all("rect", cls="bar"):
        x, top, height = (float(rect.attrs[k]) for k in ("x", "y", "height"))
        middle = x + float(rect.attrs["width"]) / 2
        mine = [w for w in whiskers if float(w.attrs["x1"]) in (middle, middle - 5)]
        stem = [w for w in mine if w.attrs["x1"] == w.attrs["x2"]]
        caps = sorted(value(w.attrs["y1"]) for w in mine if w.attrs["x1"] != w.attrs["x2"])
        assert all(float(w.attrs["x2"]) == middle + 5 and w.attrs["y1"] == w.attrs["y2"]
                   for w in mine if w.attrs["x1"] != w.attrs["x2"])
        bars.append({"title": rect.one("title").text, "top": value(top), "bottom": value(top + height),
                     "whisker": sorted(value(stem[0].attrs[k]) for k in ("y1", "y2")) if stem else None,
                     "caps": caps or None})
    return {"ticks": [t for _, t in ticks], "axis": value(axis.attrs["y1"]), "bars": bars,
            "axis_flat": axis.attrs["y1"] == axis.attrs["y2"], "whiskers": len(whiskers)}


@pytest.mark.parametrize("bars, ticks", [
    ([(0.75, 0.3, 0.95), (0.25, 0.05, 0.7), (0.0, 0.0, 0.4), (1.0, 0.6, 1.0)], ["0.00", "0.50", "1.00"]),
    ([(2.5, 2.0, 3.0), (3.2, 2.4, 4.0)], ["0.00", "2.00", "4.00"]),  # a loss: past 1, the axis to its largest
    ([(-0.5, -1.0, 0.2), (0.5, 0.1, 0.9)], ["-1.00", "0.00", "1.00"]),
    ([(0.2, 0.1, 0.3)], ["0.00", "0.50", "1.00"]),  # a rate below 1: the axis still to 1
])
def test_each_bar_and_whisker_sits_at_its_value_on_the_axis_its_ticks_label(bars, ticks):
    svg = parse(report_html.plot_svg({"metric": {"name": "avg_reward"}, "rows": run_rows(*bars)})).one("svg")
    read = chart(svg)
    assert read["ticks"] == ticks and read["axis_flat"]
    # Whatever the range, the axis spans the plot area: its low end on the axis line, its high end at the top.
    assert [(t.attrs["y"], t.text) for t in svg.all("text", cls="tick")][::2] == [("214.0", ticks[0]), ("24.0", ticks[2])]
    low = float(ticks[0])
    assert read["axis"] == pytest.approx(low, abs=0.01)
    assert read["whiskers"] == 3 * len(bars)
    for (mean, ci_low, ci_high), bar in zip(bars, read["bars"]):
        assert bar["top"] == pytest.approx(mean, abs=0.01) and bar["bottom"] == pytest.approx(low, abs=0.01)
        assert bar["whisker"] == bar["caps"] == pytest.approx([ci_low, ci_high], abs=0.01)
        assert bar["title"].endswith(f": {mean:.4f} [{ci_low:.4f}, {ci_high:.4f}]")


def test_the_chart_s_layout_labels_and_caption():
    rows = run_rows((0.5, 0.25, 0.75), (0.0, 0.0, 0.25), (0.9, None, None, 0.9))
    rows[0]["run_id"], rows[1]["run_id"] = "x" * 24, "y" * 25
    figure = parse(report_html.plot_svg({"metric": {"name": "avg_reward"}, "rows": rows})).one("figure")
    svg = figure.one("svg")
    assert svg.attrs == {"xmlns": "http://www.w3.org/2000/svg", "width": "420", "height": "300", "role": "img",
                         "aria-label": "avg_reward by group"}
    # The plot area from y = 20 to the axis at y = 210 (90 px under it for the turned labels);
    # a bar every 34 px from x = 60, 24 px wide; the ticks right-aligned left of the axis.
    assert svg.one("line", cls="axis").attrs == {"x1": "50", "y1": "210.0", "x2": "410", "y2": "210.0", "class": "axis"}
    assert [(t.attrs["x"], t.attrs["y"], t.attrs["text-anchor"]) for t in svg.all("text", cls="tick")] == [
        ("44", "214.0", "end"), ("44", "119.0", "end"), ("44", "24.0", "end")]
    rects = svg.all("rect", cls="bar")
    assert [(r.attrs["x"], r.attrs["y"], r.attrs["width"], r.attrs["height"]) for r in rects] == [
        ("60", "115.0", "24", "95.0"), ("94", "210.0", "24", "0.0"), ("128", "39.0", "24", "171.0")]
    assert [line.attrs for line in svg.all("line", cls="ci")][:3] == [
        {"x1": "72.0", "y1": "162.5", "x2": "72.0", "y2": "67.5", "class": "ci"},
        {"x1": "67.0", "y1": "162.5", "x2": "77.0", "y2": "162.5", "class": "ci"},
        {"x1": "67.0", "y1": "67.5", "x2": "77.0", "y2": "67.5", "class": "ci"}]
    # A run's label under its bar, turned 40 degrees; past 24 characters cut to 21 and "...".
    labels = svg.all("text", cls="label")
    assert [(t.attrs["x"], t.attrs["y"], t.attrs["transform"], t.text) for t in labels] == [
        ("64", "222", "rotate(40 64 222)", "x" * 24), ("98", "222", "rotate(40 98 222)", "y" * 21 + "..."),
        ("132", "222", "rotate(40 132 222)", "run-2")]
    # The title has the whole label; a bar without an interval says none, and has no whisker.
    assert [r.one("title").text for r in rects] == [
        f"{'x' * 24}: 0.5000 [0.2500, 0.7500]", f"{'y' * 25}: 0.0000 [0.0000, 0.2500]", "run-2: 0.9000"]
    assert len(svg.all("line", cls="ci")) == 6
    assert figure.one("figcaption").text == (
        "avg_reward: mean and 95% interval, per run (Wilson, none on some bars)")


def test_a_bar_whose_interval_passes_a_float_is_drawn_without_one(tmp_path):
    # Scores near the largest float: the interval's upper end overflows (ci95_high None, ci95_low 0.0).
    # The page still builds (it stopped with a TypeError), the bar with its mean and no whisker.
    root = tmp_path / "pod_logs"
    for run_id, model in (("run-a", "m1"), ("run-b", "m2")):
        write_run(root, run_id, model=model, rewards=(1.70e308, 1.78e308, 1.60e308, 1.79e308))
    doc = build_report(root)
    assert [(r["ci95_low"], r["ci95_high"]) for r in doc["rows"]] == [(0.0, None)] * 2
    svg = parse(render_html(doc, [], doc.pop(RUN_DIRS))).all("figure")[0].one("svg")
    assert [r.one("title").text.split(": ")[1] for r in svg.all("rect")] == [f"{1.7175e308:.4f}"] * 2
    assert svg.all("line", cls="ci") == []
    rows = run_rows((0.5, 0.25, None, 0.5), (0.5, None, 0.75, 0.5))
    svg = parse(report_html.plot_svg({"metric": {"name": "m"}, "rows": rows})).one("svg")
    assert [r.one("title").text for r in svg.all("rect")] == ["run-0: 0.5000", "run-1: 0.5000"]
    assert svg.all("line", cls="ci") == []


@pytest.mark.parametrize("count, width, shown", [(10, 420, 10), (11, 434, 11), (200, 6860, 200), (201, 6860, 200)])
def test_the_chart_widens_with_its_bars_and_says_when_it_shows_the_first_200(count, width, shown):
    rows = run_rows(*[(0.5, None, None, 0.5)] * count)
    figure = parse(report_html.plot_svg({"metric": {"name": "m"}, "rows": rows})).one("figure")
    assert figure.one("svg").attrs["width"] == str(width) and len(figure.all("rect")) == shown
    assert figure.one("figcaption").text == "m: mean and 95% interval, per run (no interval)" + (
        "; the first 200 shown" if count > 200 else "")


def test_a_chart_of_groups_says_what_each_bar_pools_and_no_bar_no_chart():
    groups = [{"lr": 0.1, "model_id": "a", "results_mean": 0.5, "results_ci95_low": 0.4, "results_ci95_high": 0.6,
               "results_interval": "clustered by example"},
              {"lr": 0.2, "model_id": "a", "results_mean": 0.3, "results_ci95_low": 0.1, "results_ci95_high": 0.5,
               "results_interval": "wilson score interval"}]
    doc = {"metric": {"name": "avg_reward"}, "rows": [], "groups": groups, "group_by": ["lr", "model_id"]}
    figure = parse(report_html.plot_svg(doc)).one("figure")
    assert [r.one("title").text for r in figure.all("rect")] == [
        "0.1 / a: 0.5000 [0.4000, 0.6000]", "0.2 / a: 0.3000 [0.1000, 0.5000]"]
    assert figure.one("figcaption").text == ("avg_reward: mean and 95% interval, per group: its runs' examples pooled "
                                             "(else their summary values) (Wilson, clustered by example)")
    assert report_html.plot_svg({**doc, "groups": []}) == ""
    assert report_html.plot_svg({"metric": {"name": "m"}, "rows": [{"run_id": "r", "mean": None}]}) == ""


# ---------------------------------------------------------------- the curves


def logged(tmp_path, runs: dict) -> dict:
    """Run directories with a metrics.jsonl of the given lines (text, or objects as JSON lines)."""
    dirs = {}
    for run_id, lines in runs.items():
        folder = tmp_path / "logs" / run_id
        folder.mkdir(parents=True)
        if lines is not None:
            (folder / "metrics.jsonl").write_text("".join(
                (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
        dirs[run_id] = str(folder)
    return dirs


def test_a_curve_s_x_is_the_first_step_key_it_logs_else_its_line_and_its_y_the_report_s_metric(tmp_path):
    dirs = logged(tmp_path, {"r1": [
        {"iter": 5, "step": 50, "global_step": 500, "epoch": 0.1, "loss": 9, "avg_reward": 0.1},
        {"step": 60, "global_step": 600, "epoch": 0.2, "avg_reward": 0.2},
        {"global_step": 700, "epoch": 0.3, "avg_reward": 0.3},
        {"epoch": 0.4, "avg_reward": 0.4},
        {"iter": "x", "step": True, "global_step": float("nan"), "avg_reward": 0.5},  # no step: its line, 4
        {"loss": 1.0},  # no avg_reward: no point
        {"iter": 99, "avg_reward": "0.7"}, {"iter": 98, "avg_reward": True}, {"iter": 97, "avg_reward": float("inf")},
        [1, 2], 3, {"iter": 96, "avg_reward": 0.9}]})
    doc = {"rows": [{"run_id": "r1"}], "metric": {"name": "avg_reward"}}
    assert report_html.curves_of(doc, dirs) == ("avg_reward", [
        ("r1", "r1", [(5.0, 0.1), (60.0, 0.2), (700.0, 0.3), (0.4, 0.4), (4.0, 0.5), (96.0, 0.9)])])


@pytest.mark.parametrize("lines, metric", [
    ([{"iter": 1, "step": 2, "global_step": 3, "epoch": 4, "ok": True, "name": "x", "nan": float("nan"),
       "inf": float("-inf"), "loss": 2.5, "lr": 0.1}], "loss"),  # the first number that is not a step
    ([{"iter": 1, "loss": None}, {"iter": 2, "lr": 0.1, "loss": 1.0}], "lr"),
    ([{"iter": 1}, {"step": 2, "epoch": 1}], None),  # only steps: no curve
])
def test_without_the_report_s_metric_a_curve_is_of_the_first_number_logged(tmp_path, lines, metric):
    dirs = logged(tmp_path, {"r1": lines})
    found, curves = report_html.curves_of({"rows": [{"run_id": "r1"}], "metric": {"name": "avg_reward"}}, dirs)
    assert found == metric and bool(curves) == (metric is not None)
    if metric is None:
        assert report_html.curves_svg({"rows": [{"run_id": "r1"}], "metric": {"name": "avg_reward"}}, dirs) == ""


def test_the_first_50_runs_with_a_log_are_drawn_and_a_bad_log_ends_its_curve(tmp_path, monkeypatch):
    runs = {"none": None, "elsewhere": [{"loss": 1}], **{f"r{i:02}": [{"loss": i}] for i in range(51)}}
    dirs = logged(tmp_path, runs)
    rows = [{"run_id": run_id} for run_id in runs] + [{"run_id": "not-fetched"}]
    del dirs["elsewhere"]  # a run whose directory the report did not give
    metric, curves = report_html.curves_of({"rows": rows, "metric": {"name": "loss"}}, dirs)
    assert [c[0] for c in curves] == [f"r{i:02}" for i in range(50)]
    assert report_html.curves_of({"rows": rows, "metric": {"name": "loss"}}, None or {}) == (None, [])
    # A line that does not parse ends the curve (what came before stays); at most CURVE_LINES read.
    dirs = logged(tmp_path / "bad", {"torn": [{"loss": 1}, {"loss": 2}, "{torn", {"loss": 3}],
                                     "long": [{"loss": i} for i in range(6)]})
    monkeypatch.setattr(report_html, "CURVE_LINES", 4)
    _, curves = report_html.curves_of({"rows": [{"run_id": "torn"}, {"run_id": "long"}], "metric": {"name": "loss"}},
                                      dirs)
    assert curves == [("torn", "torn", [(0.0, 1.0), (1.0, 2.0)]), ("long", "long", [(float(i), float(i)) for i in range(4)])]
    # A log of no object line at all: no curve for that run.
    dirs = logged(tmp_path / "empty", {"a": ["[1]", "2"], "b": [{"loss": 1}]})
    assert report_html.curves_of({"rows": [{"run_id": "a"}, {"run_id": "b"}], "metric": {"name": "loss"}}, dirs)[1] == [
        ("b", "b", [(0.0, 1.0)])]


@pytest.mark.parametrize("count, kept", [(400, list(range(400))), (401, [int(i * 401 / 400) for i in range(399)] + [400]),
                                         (800, list(range(0, 798, 2)) + [799])])
def test_a_long_log_is_thinned_evenly_to_400_points_keeping_its_ends(tmp_path, count, kept):
    dirs = logged(tmp_path, {"r": [{"step": 10 * i, "loss": i} for i in range(count)]})
    _, [(_, _, points)] = report_html.curves_of({"rows": [{"run_id": "r"}], "metric": {"name": "loss"}}, dirs)
    assert points == [(10.0 * i, float(i)) for i in kept] and points[0] == (0.0, 0.0)


def curve_points(polyline: Node) -> list:
    """[x, y, x, y...] of a polyline's points."""
    return [float(v) for pair in polyline.attrs["points"].split() for v in pair.split(",")]


def test_curves_span_their_axes_a_color_per_group_in_order_and_a_legend(tmp_path):
    runs = {f"r{i}": [{"step": 100 + 10 * k, "loss": 2.0 + i - k / 2} for k in range(3)] for i in range(12)}
    dirs = logged(tmp_path, runs)
    rows = [{"run_id": f"r{i}", "lr": [0.1, 0.1, *[0.2 + i / 100 for i in range(10)]][i], "seed": i % 2 if i < 2 else 0}
            for i in range(12)]
    text = report_html.curves_svg({"rows": rows, "metric": {"name": "loss"}, "group_by": ["lr"]}, dirs)
    page = parse(text)
    assert page.children[0].tag == "h2" and page.children[0].text == "Curves: loss by step"
    svg = page.one("svg", cls="curves")
    assert {k: svg.attrs[k] for k in ("width", "height", "role", "aria-label")} == {
        "width": "640", "height": "300", "role": "img", "aria-label": "loss over steps"}
    # The axes: x from 60 to 630 at y 270, y from 10 to 270 at x 60; the ends of each labelled.
    assert [line.attrs for line in svg.all("line", cls="axis")] == [
        {"x1": "60", "y1": "270", "x2": "630", "y2": "270", "class": "axis"},
        {"x1": "60", "y1": "10", "x2": "60", "y2": "270", "class": "axis"}]
    assert [(t.attrs["x"], t.attrs["y"], t.attrs["text-anchor"], t.text) for t in svg.all("text", cls="tick")] == [
        ("54", "274.0", "end", "1"), ("54", "14.0", "end", "13"), ("60.0", "284", "start", "100"),
        ("630.0", "284", "end", "120")]
    lines = svg.all("polyline", cls="curve")
    assert [p.attrs["data-run"] for p in lines] == [f"r{i}" for i in range(12)]
    # Each point where the axes' labels put it: x 100..120 over 60..630, y 1..13 over 270..10.
    for i, line in enumerate(lines):
        assert curve_points(line) == pytest.approx(
            [v for k in range(3) for v in (60 + (10 * k) / 20 * 570, 270 - (2.0 + i - k / 2 - 1.0) / 12 * 260)], abs=0.06)
        assert line.attrs["fill"] == "none" and line.attrs["stroke-width"] == "1.5"
    # One color per group, in the palette's order, again from its start past ten groups.
    strokes = [p.attrs["stroke"] for p in lines]
    assert strokes == [report_html.PALETTE[0], *report_html.PALETTE, report_html.PALETTE[0]]
    groups = ["0.1", *[str(0.2 + i / 100) for i in range(10)]]
    assert [p.attrs["data-group"] for p in lines] == [groups[0], *groups]
    legend = page.one("figcaption").all("span", cls="legend")
    assert [(s.text, s.one("span", cls="swatch").attrs["style"]) for s in legend] == [
        (g, f"background:{c}") for g, c in zip(groups, [*report_html.PALETTE, report_html.PALETTE[0]])]
    assert page.one("figcaption").children[-1] == (
        "loss from each run's metrics.jsonl (a line per run, a color per lr; the first 50 runs)")
    # Grouped by two keys: a group is their values, as the groups' table and the plot name it.
    text = report_html.curves_svg({"rows": rows[:2], "metric": {"name": "loss"}, "group_by": ["lr", "seed"]}, dirs)
    assert [p.attrs["data-group"] for p in parse(text).all("polyline")] == ["0.1 / 0", "0.1 / 1"]
    assert parse(text).one("figcaption").children[-1].endswith("a color per lr, seed; the first 50 runs)")


def test_a_curve_of_one_point_or_a_flat_one_stays_on_the_axes(tmp_path):
    dirs = logged(tmp_path, {"one": [{"step": 5, "loss": 2.0}]})
    page = parse(report_html.curves_svg({"rows": [{"run_id": "one"}], "metric": {"name": "loss"}}, dirs))
    assert curve_points(page.one("polyline")) == [60.0, 270.0]
    assert page.one("figcaption").children[-1].endswith("a color per run; the first 50 runs)")
    assert page.one("polyline").attrs["stroke"] == report_html.PALETTE[0]
    assert page.one("polyline").one("title").text == "one (one)"


# ---------------------------------------------------------------- writing the file


def test_the_page_is_written_whole_or_not_at_all(tmp_path, monkeypatch, hostile_report):
    doc, dirs = hostile_report("")
    target = tmp_path / "new" / "artifacts" / "report.html"
    with ExampleSpool() as spool:
        spooled = build_report(tmp_path / "pod_logs", group_by="model_id", spool=spool)
        spooled_dirs = spooled.pop(RUN_DIRS)
        assert write_report_html(spooled, spooled_dirs, target, spool) == target  # its folders made
    data = data_of(parse(target.read_text()))
    assert [e[:2] for e in data["examples"]] == [[r, f"q{i}"] for r in ("run-a", "run-b", "run-c") for i in range(20)]
    # Again over the same file (the folder is there): the new page, nothing else beside it.
    first = target.read_text()
    write_report_html(spooled, spooled_dirs, target)
    assert target.read_text() == first and sorted(p.name for p in target.parent.iterdir()) == ["report.html"]

    # While it is written the reader's file is the old one; the new page is a hidden file beside it.
    seen = []

    def examples_of(rows, run_dirs, field, spool):
        seen.append(sorted(p.name for p in target.parent.iterdir()))
        yield json.dumps(["r", "q", "p", "a", "b", 1]), None
        seen.append(target.read_text() == first)
        raise KeyboardInterrupt

    monkeypatch.setattr(report_html, "examples_of", examples_of)
    with pytest.raises(KeyboardInterrupt):
        write_report_html(doc, dirs, target)
    assert seen == [[f".report.html.{os.getpid()}.partial", "report.html"], True]
    assert target.read_text() == first and sorted(p.name for p in target.parent.iterdir()) == ["report.html"]

    # A file that cannot be opened: its own error, and nothing left behind.
    def refused(*args, **kwargs):
        raise PermissionError("denied")

    monkeypatch.setattr(report_html, "open", refused, raising=False)
    with pytest.raises(PermissionError):
        write_report_html(doc, dirs, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


def test_a_local_root_that_is_not_utf_8_still_gets_its_page(tmp_path):
    doc = small_doc(root="/data/caf\udce9/pod_logs")  # os.fsdecode of a Latin-1 file name
    path = write_report_html(doc, {}, tmp_path / "report.html")
    assert b"<li><b>root</b>: /data/caf\xe9/pod_logs</li>" in path.read_bytes()


def test_the_examples_are_those_the_report_read_though_the_run_was_fetched_again_since(tmp_path):
    write_run(tmp_path / "pod_logs", "run-a", model="m", rewards=(1, 0))
    with ExampleSpool() as spool:
        doc = build_report(tmp_path / "pod_logs", spool=spool)
        (tmp_path / "pod_logs" / "run-a" / "results.jsonl").write_text(
            json.dumps({"id": "q9", "question": "new", "reward": 1}) + "\n")
        path = write_report_html(doc, doc.pop(RUN_DIRS), tmp_path / "report.html", spool)
    assert [e[:2] for e in data_of(parse(path.read_text()))["examples"]] == [["run-a", "q0"], ["run-a", "q1"]]


def test_the_page_is_utf_8_whatever_the_locale(tmp_path, monkeypatch):
    import builtins

    def latin_1_locale(file, mode="r", encoding=None, **options):  # open() on a laptop whose locale is Latin-1
        return builtins.open(file, mode, encoding=encoding or "latin-1", **options)

    monkeypatch.setattr(report_html, "open", latin_1_locale, raising=False)
    path = write_report_html(small_doc(root="/données/вычисления"), {}, tmp_path / "report.html")
    assert "<li><b>root</b>: /données/вычисления</li>" in path.read_bytes().decode("utf-8")


# ---------------------------------------------------------------- the page's title


def _title(models, tasks, runs):
    return report_html.page_title({"header": {"models": models, "tasks": tasks, "runs": runs}})


def test_title_names_how_many_models_it_leaves_out():
    shown = report_html.SHOWN_IN_TITLE
    models = [f"m{i}" for i in range(shown + 2)]
    title = _title(models, ["qa"], 4)
    assert title == f"Report: {', '.join(models[:shown])}, 2 more on qa (4 runs)"


def test_title_without_tasks_says_no_task_and_without_models_only_the_runs():
    assert _title(["llama"], [], 3) == "Report: llama (3 runs)"
    assert _title([], [], 3) == "Report: 3 runs"


def test_title_says_run_for_one_and_runs_for_two():
    assert _title(["llama"], ["qa"], 1) == "Report: llama on qa (1 run)"
    assert _title(["llama"], ["qa"], 2) == "Report: llama on qa (2 runs)"


# ---------------------------------------------------------------- a group's figure in the groups table


def test_figure_over_runs_shows_mean_sd_interval_and_count():
    low, high = report_html.interval_keys("acc")
    group = {"acc_mean": 0.5, "acc_sd": 0.125, low: 0.25, high: 0.75, "acc_n": 3}
    assert report_html._figure(group, "acc", "sd", "runs") == "0.5000 ± 0.1250 [0.2500, 0.7500] (3 runs)"


def test_figure_over_examples_shows_no_sd_and_its_own_interval():
    low, high = report_html.interval_keys("results")
    group = {"results_mean": 0.5, "results_sd": 0.125, low: 0.25, high: 0.75, "results_n": 40}
    assert report_html._figure(group, "results", "n", "examples") == "0.5000 [0.2500, 0.7500] (40 examples)"


def test_figure_without_a_mean_is_a_dash_and_half_an_interval_is_none():
    assert report_html._figure({"acc_n": 3}, "acc", "sd", "runs") == "-"
    low, _ = report_html.interval_keys("acc")
    assert report_html._figure({"acc_mean": 0.5, low: 0.25}, "acc", "sd", "runs") == "0.5000"


# ---------------------------------------------------------------- the header's clustering line


def _header(**extra):
    header = {"states": {"succeeded": 2}, "generated": "2026-01-01", "scope": "all", "commits": [], "models": ["m"],
              "tasks": ["qa"], "temperature": ["0"], "max_tokens": ["64"], "rollouts": ["1"], "examples": ["10"],
              "runs": 2}
    return report_html._header_html({**header, **extra}, "/runs")


def test_header_names_what_the_intervals_are_clustered_by_and_only_then():
    assert "<li><b>intervals clustered by</b>: passage &lt;id&gt;</li>" in _header(clustered_by="passage <id>")
    assert "clustered" not in _header()


def test_the_caption_of_a_chart_of_unequal_examples_keeps_what_it_shows_and_adds_the_warning():
    doc = {"metric": {"name": "avg_reward"}, "rows": run_rows((0.5, 0.25, 0.75)),
           "models_by_task": {"unequal": {"arith": {}}}}
    caption = parse(report_html.plot_svg(doc)).one("figure").text
    assert "avg_reward: mean and 95% interval, per run" in caption
    assert "not the same examples in arith" in caption


def test_a_models_by_task_table_of_equal_examples_has_no_warning_under_it():
    table = {"metric": "avg_reward", "models": ["m"], "tasks": ["arith"], "cells": {}}
    html_text = report_html._models_by_task_html(table)
    assert "models x tasks" in html_text and "warning" not in html_text


# ---------------------------------------------------------------- the groups table


def _groups_doc(group_by, tasks):
    low, high = report_html.interval_keys("acc")
    rlow, rhigh = report_html.interval_keys("results")
    group = {"model_id": "m", "runs": 2, "acc_mean": 0.5, "acc_sd": 0.125, low: 0.25, high: 0.75, "acc_n": 2,
             "results_mean": 0.5, rlow: 0.375, rhigh: 0.625, "results_n": 40}
    return {"group_by": group_by, "metric": {"name": "acc"}, "groups": [group],
            "models_by_task": {"tasks": tasks}}


def test_groups_table_cells_over_examples_and_over_runs():
    columns, rows = report_html.group_rows(_groups_doc(["model_id"], ["qa", "math"]))
    assert columns == ["model_id", "runs", "acc over examples", "acc over runs"]
    assert rows[0]["acc over examples"] == "0.5000 [0.3750, 0.6250] (40 examples)"
    assert rows[0]["acc over runs"] == "0.5000 ± 0.1250 [0.2500, 0.7500] (2 runs)"


def test_groups_table_leaves_out_the_examples_only_when_the_models_x_tasks_table_shows_the_same_groups():
    assert "acc over examples" not in report_html.group_rows(_groups_doc(["model_id"], ["qa"]))[0]
    assert "acc over examples" in report_html.group_rows(_groups_doc(["model_id", "task"], ["qa"]))[0]


def test_groups_of_unequal_examples_get_the_warning_and_equal_ones_none():
    group = {"model_id": "m", "runs": 2, "avg_reward_mean": 0.5, "avg_reward_n": 2}
    unequal = {"qa": {"m": {"examples": 10, "shared": 5, "shared_mean": 0.5}}}
    warned = report_html.page_parts(small_doc(group_by=["model_id"], groups=[group], groups_unequal=unequal))[0]
    assert "groups were scored on different examples in qa: m 10 (on the 5 shared: 0.500)" in warned
    page = report_html.page_parts(small_doc(group_by=["model_id"], groups=[group]))[0]
    assert 'class="warning"' not in page


def _several(**extra):
    return {"lower_is_better": False, "models": ["a", "b"], "metric": "acc", "pairs": [], "family": "pairwise",
            "margin": None, "ranking": [], "notes": ["n1"], "compare_by": "model_id", **extra}


def test_the_several_compared_section_heading_its_lines_and_what_was_left_out():
    page = parse(report_html.page_parts(small_doc(several=_several(left_out=["c: no runs"])))[0])
    heading = [h.text for h in page.all("h2") if h.text.startswith("Compared by")]
    assert heading == ["Compared by model_id: pairwise (acc)"]
    items = [li.text for li in page.one("ul", cls="several").all("li")]
    assert items[0].startswith("2 models compared on acc: 0 pairs (pairwise)")
    assert items[-2:] == ["note: n1", "left out: c: no runs"] and len(items) == 4
    without = parse(report_html.page_parts(small_doc(several=_several()))[0])
    assert [li.text for li in without.one("ul", cls="several").all("li")][-1] == "note: n1"


def test_the_groups_table_says_how_its_figures_were_made():
    group = {"model_id": "m", "runs": 2, "avg_reward_mean": 0.5, "avg_reward_n": 2}
    page = report_html.page_parts(small_doc(group_by=["model_id"], groups=[group]))[0]
    assert ("<p>over examples: the groups' per-example scores pooled, ci95; over runs: the runs' summary values, "
            "mean ± sd, pi95 (where one more run would fall). Every figure is in report.json.</p>") in page


def test_the_groups_uncertainty_list_names_each_group_and_where_its_width_comes_from():
    group = {"model_id": "m", "runs": 2, "avg_reward_mean": 0.5, "avg_reward_n": 2, "uncertainty": "questions 80%"}
    page = parse(report_html.page_parts(small_doc(group_by=["model_id"], groups=[group]))[0])
    assert [li.text for li in page.one("ul", cls="uncertainty").all("li")] == ["m: questions 80%"]
    assert any(p.text.startswith("Where the uncertainty comes from") for p in page.all("p"))


def test_a_group_s_own_values_show_as_they_are_next_to_its_cost():
    group = {"model_id": "m", "task": "qa", "temperature": 0.7, "runs": 2, "avg_reward_mean": 0.5, "avg_reward_n": 2,
             "cost": 1.5, "cost_per_correct": 0.25}
    page = parse(report_html.page_parts(small_doc(group_by=["model_id", "task", "temperature"], groups=[group]))[0])
    assert table(page.one("table", cls="groups"))[1][0][:3] == ["m", "qa", "0.7"]
