"""report.html: the report as one self-contained file to open or mail (no network, no server):
the header, the tables, an SVG plot of each group (else each run) with its 95% interval, the
runs' logged metric over their steps (metrics.jsonl: a polyline per run, a color per group), and a
drill-down of the examples (prompt, the model's answer, reward) filtered by run, by outcome and,
with --compare, by disagreement between the two runs.

Tables and the plot are drawn here, escaped; the examples travel as JSON in a
<script type="application/json"> block with <, > and & written as \\u escapes, so nothing a
model said can close the block, and the page's script shows them with textContent only.
"""

import html
import os
from pathlib import Path
from typing import Optional

from .costs import spent_text
from .examples import ExampleSpool, examples_of, json_block
from .ranking import several_lines
from .report import (MODELS_BY_TASK, cell_formats, cell_text, comparison_lines, comparison_title, groups_unequal_note,
                     interval_keys, models_by_task_rows, plot_bars, plot_unequal_note, uncertainty_lines, unequal_note)
from .validate import BadJsonLine, json_lines

METRICS = "metrics.jsonl"  # a run's logged steps (the script's, or the supervisor's from metrics_from_log)
STEP_KEYS = ("iter", "step", "global_step", "epoch")  # the x of a curve, first found; else the line's order
CURVE_RUNS = 50  # runs drawn as curves (the first, in the table's order)
CURVE_POINTS = 400  # points of one curve: longer logs are thinned evenly
CURVE_LINES = 200_000  # lines of one metrics.jsonl read at most
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974",
           "#64b5cd")

PLOT_BARS = 200
ROW_LIMIT = 5000  # runs drawn in the HTML table (all of them are in report.json)


# ---------------------------------------------------------------- drawing


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def table_html(records: list, columns, css_class: str = "", plain=()) -> str:
    """An escaped table: floats to 4 places, epoch seconds in a time column as dates (as report.md),
    the plain columns (a group's own values) as they are."""
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    cells = cell_formats(columns, plain)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell(r.get(c)))}</td>" for cell, c in zip(cells, columns)) + "</tr>"
                   for r in records)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def plot_svg(doc: dict) -> str:
    """A bar per group (or run) with its 95% interval as a whisker, on an axis that holds them all."""
    every, methods = plot_bars(doc)
    if not every:
        return ""
    bars = every[:PLOT_BARS]
    values = [v for b in bars for v in b[1:] if v is not None]
    low, high = min(0.0, *values), max(1.0 if max(values) <= 1 else max(values), *values)
    width, height, left, bottom, step = max(420, 60 + 34 * len(bars)), 300, 50, 90, 34
    scale = (height - bottom - 20) / ((high - low) or 1.0)

    def y(value):
        return height - bottom - (value - low) * scale

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{_e(doc["metric"]["name"])} by group">',
             f'<line x1="{left}" y1="{y(low):.1f}" x2="{width - 10}" y2="{y(low):.1f}" class="axis"/>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" class="tick" text-anchor="end">{tick:.2f}</text>')
    for index, (label, mean, ci_low, ci_high) in enumerate(bars):
        x = left + 10 + index * step
        top = y(max(mean, low))
        whisker = ci_low is not None and ci_high is not None  # a bound past a float is None: no interval drawn
        parts.append(f'<rect x="{x}" y="{top:.1f}" width="{step - 10}" height="{max(0.0, y(low) - top):.1f}" '
                     f'class="bar"><title>{_e(label)}: {mean:.4f}'
                     + (f' [{ci_low:.4f}, {ci_high:.4f}]' if whisker else '') + '</title></rect>')
        if whisker:
            middle = x + (step - 10) / 2
            parts.append(f'<line x1="{middle}" y1="{y(ci_low):.1f}" x2="{middle}" y2="{y(ci_high):.1f}" class="ci"/>')
            for end in (ci_low, ci_high):
                parts.append(f'<line x1="{middle - 5}" y1="{y(end):.1f}" x2="{middle + 5}" y2="{y(end):.1f}" class="ci"/>')
        short = label if len(label) <= 24 else label[:21] + "..."
        parts.append(f'<text x="{x + 4}" y="{height - bottom + 12}" class="label" '
                     f'transform="rotate(40 {x + 4} {height - bottom + 12})">{_e(short)}</text>')
    parts.append("</svg>")
    what = "per group: its runs' examples pooled (else their summary values)" if doc.get("groups") is not None \
        else "per run"
    note = f"{_e(doc['metric']['name'])}: mean and 95% interval, {what} ({_e(', '.join(methods))})"
    if len(every) > PLOT_BARS:
        note += f"; the first {PLOT_BARS} shown"
    if plot_unequal_note(doc):
        note += f'. <b class="warning">{_e(plot_unequal_note(doc))}</b>'
    return f'<figure>{"".join(parts)}<figcaption>{note}</figcaption></figure>'


def _steps(run_id: str, path: str) -> list:
    """The logged steps of a run's metrics.jsonl (objects only, at most CURVE_LINES), [] if unreadable."""
    steps = []
    try:
        for _, record in json_lines(path, run_id):
            if isinstance(record, dict):
                steps.append(record)
            if len(steps) >= CURVE_LINES:
                break
    except (BadJsonLine, OSError):
        return steps  # what came before a bad line is still the run's curve
    return steps


def _curve_metric(doc: dict, runs: list) -> Optional[str]:
    """The y of the curves: the report's metric when the steps log it, else the first number a step
    logs that is not its step."""
    if any(_number_of(s.get(doc["metric"]["name"])) is not None for _, _, steps in runs for s in steps):
        return doc["metric"]["name"]
    for _, _, steps in runs:
        for step in steps:
            for key, value in step.items():
                if key not in STEP_KEYS and _number_of(value) is not None:
                    return key
    return None


def _number_of(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
        return None
    return float(value)


def _points(steps: list, metric: str) -> list:
    """[(x, y)] of the steps that log the metric, x its step (else its order), thinned to CURVE_POINTS."""
    points = []
    for index, step in enumerate(steps):
        y = _number_of(step.get(metric))
        if y is None:
            continue
        x = next((_number_of(step.get(k)) for k in STEP_KEYS if _number_of(step.get(k)) is not None), float(index))
        points.append((x, y))
    if len(points) > CURVE_POINTS:
        stride = len(points) / CURVE_POINTS
        points = [points[int(i * stride)] for i in range(CURVE_POINTS - 1)] + [points[-1]]
    return points


def curves_of(doc: dict, run_dirs: dict) -> tuple:
    """(metric, [(run id, group label, [(x, y)])]) of the first CURVE_RUNS rows with a metrics.jsonl."""
    runs = []
    for row in doc["rows"]:
        if len(runs) >= CURVE_RUNS:
            break
        path = os.path.join(run_dirs.get(row["run_id"], ""), METRICS)
        if row["run_id"] in run_dirs and os.path.isfile(path):
            label = " / ".join(cell_text(row.get(k)) for k in doc.get("group_by") or ["run_id"])  # as the plot's
            runs.append((row["run_id"], label, _steps(row["run_id"], path)))
    metric = _curve_metric(doc, runs)
    if metric is None:
        return None, []
    curves = [(run_id, label, _points(steps, metric)) for run_id, label, steps in runs]
    return metric, [c for c in curves if c[2]]


def curves_svg(doc: dict, run_dirs: Optional[dict]) -> str:
    """The runs' logged metric over their steps: an SVG polyline per run, one color per group."""
    metric, curves = curves_of(doc, run_dirs or {})
    if not curves:
        return ""
    xs = [x for _, _, points in curves for x, _ in points]
    ys = [y for _, _, points in curves for _, y in points]
    x_low, x_high, y_low, y_high = min(xs), max(xs), min(ys), max(ys)
    width, height, left, bottom, top, right = 640, 300, 60, 30, 10, 10

    def at(x, y):
        return (left + (x - x_low) / ((x_high - x_low) or 1.0) * (width - left - right),
                height - bottom - (y - y_low) / ((y_high - y_low) or 1.0) * (height - bottom - top))

    colors = {}
    for _, label, _ in curves:
        colors.setdefault(label, PALETTE[len(colors) % len(PALETTE)])
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'class="curves" aria-label="{_e(metric)} over steps">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" class="axis"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" class="axis"/>']
    for value in (y_low, y_high):
        parts.append(f'<text x="{left - 6}" y="{at(x_low, value)[1] + 4:.1f}" class="tick" '
                     f'text-anchor="end">{value:.4g}</text>')
    for value, anchor in ((x_low, "start"), (x_high, "end")):
        parts.append(f'<text x="{at(value, y_low)[0]:.1f}" y="{height - bottom + 14}" class="tick" '
                     f'text-anchor="{anchor}">{value:g}</text>')
    for run_id, label, points in curves:
        drawn = " ".join(f"{px:.1f},{py:.1f}" for px, py in (at(x, y) for x, y in points))
        parts.append(f'<polyline class="curve" data-run="{_e(run_id)}" data-group="{_e(label)}" fill="none" '
                     f'stroke="{colors[label]}" stroke-width="1.5" points="{drawn}"><title>{_e(run_id)} '
                     f'({_e(label)})</title></polyline>')
    parts.append("</svg>")
    legend = "".join(f'<span class="legend"><span class="swatch" style="background:{color}"></span>{_e(label)}</span>'
                     for label, color in colors.items())
    grouped = ", ".join(doc.get("group_by") or []) or "run"
    return (f'<h2>Curves: {_e(metric)} by step</h2><figure>{"".join(parts)}<figcaption>{legend}<br>'
            f'{_e(metric)} from each run\'s {METRICS} (a line per run, a color per {_e(grouped)}; '
            f'the first {CURVE_RUNS} runs)</figcaption></figure>')


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.text{white-space:pre-wrap;max-width:36em;font-family:ui-monospace,monospace;font-size:12px}
.bar{fill:#4c72b0}.ci{stroke:#222;stroke-width:1.5}.axis{stroke:#888}.tick,.label{font-size:10px}
.controls label{margin-right:1em}.failed td{color:#a33}ul.header{list-style:none;padding:0}
.legend{margin-right:1em}.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}
"""

SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var examples = data.examples, compare = data.compare;
  var runSelect = document.getElementById("filter-run"), outcome = document.getElementById("filter-outcome");
  var disagree = document.getElementById("filter-disagree"), body = document.getElementById("examples-body");
  var count = document.getElementById("examples-count"), PAGE = 500;
  var runs = [];
  examples.forEach(function (e) { if (runs.indexOf(e[0]) < 0) runs.push(e[0]); });
  runs.forEach(function (r) { var o = document.createElement("option"); o.value = r; o.textContent = r; runSelect.appendChild(o); });
  function correct(e) { return e[5] !== null && e[5] >= 1; }
  var disagreeing = {};
  if (compare) {
    var a = {}, b = {};
    examples.forEach(function (e) { if (e[0] === compare[0]) a[e[1]] = correct(e); if (e[0] === compare[1]) b[e[1]] = correct(e); });
    Object.keys(a).forEach(function (id) { if (id in b && a[id] !== b[id]) disagreeing[id] = true; });
  } else { disagree.parentNode.style.display = "none"; }
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
  function show() {
    var run = runSelect.value, want = outcome.value, only = disagree.checked, shown = 0, matched = 0;
    body.textContent = "";
    for (var i = 0; i < examples.length; i++) {
      var e = examples[i];
      if (run && e[0] !== run) continue;
      if (want === "correct" && !correct(e)) continue;
      if (want === "incorrect" && correct(e)) continue;
      if (only && !(disagreeing[e[1]] && (e[0] === compare[0] || e[0] === compare[1]))) continue;
      matched++;
      if (shown >= PAGE) continue;
      shown++;
      var tr = document.createElement("tr");
      tr.className = "example";
      cell(tr, e[0]); cell(tr, e[1]); cell(tr, e[2], "text"); cell(tr, e[3], "text"); cell(tr, e[4], "text");
      cell(tr, e[5] === null ? "" : String(e[5]));
      body.appendChild(tr);
    }
    count.textContent = matched + " example" + (matched === 1 ? "" : "s") + (matched > shown ? " (first " + shown + " shown)" : "");
  }
  [runSelect, outcome, disagree].forEach(function (el) { el.addEventListener("change", show); });
  show();
})();
"""


def _header_html(header: dict, root: str) -> str:
    states = ", ".join(f"{n} {s}" for s, n in header["states"].items()) or "none"

    def listed(values, none="-"):
        return _e(", ".join(values) if values else none)

    items = [("generated", _e(header["generated"])), ("scope", _e(header["scope"])), ("root", _e(root)),
             ("pod repo commit", listed(header["commits"], "not recorded")), ("models", listed(header["models"])),
             ("tasks", listed(header["tasks"])),
             ("sampling", "; ".join(f"{n} {listed(header[n])}" for n in ("temperature", "max_tokens", "rollouts"))),
             ("examples per run", listed(header["examples"])), ("runs", _e(f"{header['runs']} ({states})"))]
    items += [("cost", _e(spent_text(header["cost"])))] if header.get("cost") else []
    items += [("intervals clustered by", _e(header["clustered_by"]))] if header.get("clustered_by") else []
    return '<ul class="header">' + "".join(f"<li><b>{k}</b>: {v}</li>" for k, v in items) + "</ul>"


def _models_by_task_html(table: Optional[dict]) -> str:
    if not table:
        return ""
    return (f"<h2>{_e(table['metric'])}: models x tasks</h2>"
            + table_html(models_by_task_rows(table), ["model_id", *table["tasks"]], "models-by-task")
            + f"<p>mean [95% interval] (runs): {_e(MODELS_BY_TASK)}.</p>"
            + (f'<p class="warning"><b>{_e(unequal_note(table))}</b></p>' if unequal_note(table) else ""))


SHOWN_IN_TITLE = 3  # models named in the page's title; the header lists them all


def page_title(doc: dict) -> str:
    """What the page is about, for its tab and heading: its models and tasks and how many runs (the
    folder it was read from is in the header)."""
    header = doc["header"]
    models = header["models"][:SHOWN_IN_TITLE] + (
        [f"{len(header['models']) - SHOWN_IN_TITLE} more"] if len(header["models"]) > SHOWN_IN_TITLE else [])
    about = ", ".join(models) + (f" on {', '.join(header['tasks'])}" if header["tasks"] else "")
    runs = f"{header['runs']} run{'s' if header['runs'] != 1 else ''}"
    return f"Report: {about} ({runs})" if about else f"Report: {runs}"


def group_rows(doc: dict) -> tuple:
    """(columns, rows) of the groups table, a cell a figure with its interval: over the examples
    (left out when the models x tasks table above shows the very same groups) and over the runs,
    then the cost; a few columns, not one a number (report.json has every one of them); the
    examples' column only where some group pooled its examples."""
    keys, metric, groups = doc["group_by"], doc["metric"]["name"], doc["groups"]
    by_models = doc.get("models_by_task") or {}
    repeated = keys == ["model_id"] and len(by_models.get("tasks") or []) == 1
    pooled = any(isinstance(g.get("results_mean"), (int, float)) for g in groups)
    examples, runs = f"{metric} over examples", f"{metric} over runs"
    columns = [*keys, "runs", *([examples] if pooled and not repeated else []), runs]
    columns += [c for c in ("cost", "cost_per_correct") if any(c in g for g in groups)]
    rows = []
    for group in groups:
        row = {key: group.get(key) for key in columns if key in group}
        row[examples] = _figure(group, "results", "n", "examples")
        row[runs] = _figure(group, metric, "sd", "runs")
        rows.append(row)
    return columns, rows


def _figure(group: dict, prefix: str, spread: str, unit: str) -> str:
    """mean [interval] (n unit), or mean ± sd [interval] (n unit) over runs; "-" without a mean."""
    mean = group.get(f"{prefix}_mean")
    if not isinstance(mean, (int, float)):
        return "-"
    low, high = (group.get(key) for key in interval_keys(prefix))
    text = f"{mean:.4f}" + (f" ± {group[prefix + '_sd']:.4f}" if spread == "sd" and isinstance(
        group.get(prefix + "_sd"), (int, float)) else "")
    text += f" [{low:.4f}, {high:.4f}]" if isinstance(low, (int, float)) and isinstance(high, (int, float)) else ""
    count = group.get(f"{prefix}_n")
    return text + (f" ({count} {unit})" if isinstance(count, int) else "")


def render_html(doc: dict, examples, run_dirs: Optional[dict] = None) -> str:
    """The whole page as one string (write_report_html streams the same parts to the file)."""
    head, tail = page_parts(doc, run_dirs)
    return head + ",".join(json_block(e) for e in examples) + tail


def page_parts(doc: dict, run_dirs: Optional[dict] = None) -> tuple:
    """(everything before the examples' JSON array items, everything after them); run_dirs (run id
    -> directory) gives the runs' curves."""
    parts = [f"<h1>{_e(page_title(doc))}</h1>", _header_html(doc["header"], doc["root"]),
             _models_by_task_html(doc.get("models_by_task")), plot_svg(doc), curves_svg(doc, run_dirs)]
    if doc["rows"]:
        shown = doc["rows"][:ROW_LIMIT]
        parts.append(f"<h2>Runs ({doc['count']})</h2>" + table_html(shown, doc["columns"], "runs")
                     + (f"<p>first {ROW_LIMIT} of {doc['count']} runs; all are in report.json</p>"
                        if doc["count"] > ROW_LIMIT else ""))
    if doc.get("groups") is not None:
        keys = doc["group_by"]
        columns, rows = group_rows(doc)
        parts.append(f"<h2>Groups by {_e(', '.join(keys))}</h2>" + table_html(rows, columns, "groups", columns[:-2] if "cost" in columns else columns)
                     + "<p>over examples: the groups' per-example scores pooled, ci95; over runs: the runs' summary "
                       "values, mean ± sd, pi95 (where one more run would fall). Every figure is in report.json.</p>")
        note = groups_unequal_note(doc.get("groups_unequal"))
        parts.append(f'<p class="warning"><b>{_e(note)}</b></p>' if note else "")
        spread = uncertainty_lines(doc["groups"], keys)
        if spread:
            parts.append("<p>Where the uncertainty comes from (the variance of the pooled mean split into its "
                         "questions' and its seeds' parts):</p><ul class=\"uncertainty\">"
                         + "".join(f"<li>{_e(line)}</li>" for line in spread) + "</ul>")
    if doc.get("comparison"):
        verdict_line, *rest = comparison_lines(doc["comparison"])
        parts.append(f"<h2>{_e(comparison_title(doc['comparison']))}</h2><ul class=\"comparison\">"
                     f"<li><b>{_e(verdict_line)}</b></li>" + "".join(f"<li>{_e(line)}</li>" for line in rest) + "</ul>")
    if doc.get("several"):
        several = doc["several"]
        lines = several_lines(several) + [f"left out: {line}" for line in several.get("left_out", [])]
        parts.append(f"<h2>Compared by {_e(several['compare_by'])}: {_e(several['family'])} ({_e(several['metric'])})"
                     "</h2><ul class=\"several\">" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>")
    if doc["not_succeeded"]:
        parts.append(f"<h2>Not succeeded ({len(doc['not_succeeded'])})</h2>"
                     + table_html(doc["not_succeeded"], ("run_id", "state", "failure_class", "reason"), "failed"))
    compare = [doc["comparison"]["run_a"], doc["comparison"]["run_b"]] \
        if doc.get("comparison") and not doc["comparison"].get("compare_by") else None
    parts.append(
        "<h2>Examples</h2><div class=\"controls\">"
        "<label>run <select id=\"filter-run\"><option value=\"\">all runs</option></select></label>"
        "<label>outcome <select id=\"filter-outcome\"><option value=\"\">all</option>"
        "<option value=\"correct\">correct (reward 1)</option><option value=\"incorrect\">incorrect</option>"
        "</select></label><label><input type=\"checkbox\" id=\"filter-disagree\"> only where the two compared "
        "runs disagree</label> <span id=\"examples-count\"></span></div>"
        "<table class=\"examples\"><thead><tr><th>run</th><th>id</th><th>prompt</th><th>answer</th>"
        "<th>reference</th><th>reward</th></tr></thead><tbody id=\"examples-body\"></tbody></table>")
    head = json_block({"compare": compare})[:-1] + ',"examples":['
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(page_title(doc))}</title><style>{STYLE}</style></head><body>"
            + "".join(parts)
            + f'<script type="application/json" id="report-data">{head}'), \
        f']}}</script><script>{SCRIPT}</script></body></html>\n'


def write_report_html(doc: dict, run_dirs: dict, path, spool: Optional[ExampleSpool] = None) -> Path:
    """Write report.html through a temporary file and a rename, the examples streamed into it a run
    at a time (copied from the spool the report's reading filled, else read again): memory stays
    flat whatever the size of the results files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head, tail = page_parts(doc, run_dirs)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(head)
            separator = ""
            for items, _ in examples_of(doc["rows"], run_dirs, doc["metric"]["field"], spool):
                out.write(separator + items)
                separator = ","
            out.write(tail)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
