"""Strings from a pod never reach what people read raw (issue 22; ../shared/cases/bad-day.md,
"Hostile strings, wherever they are shown").

A model id, task, metric name, summary key, run directory name, failure class, log line, tmux
session or hostname is the pod's data. Wherever it is shown it stays what it is:
- in report.md, inside its table cell, as text: no new line or heading, no image fetched, no link,
  no raw HTML (checked on the raw file and on what a CommonMark + tables renderer makes of it);
- in `report --format csv`, a cell a spreadsheet would run as a formula (= + - @, or led by a tab
  or CR) starts with a `'` (a number stays a number);
- in any task's text output, no terminal control reaches the terminal (ESC, BEL, C1 controls:
  OSC 52 clipboard, OSC 0 title, OSC 8 link, CSI 2J), while `--json` keeps the exact strings.
"""

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser

import pytest

from conftest import needs_isolation, one_line_error
from test_report import make_run

# ---------------------------------------------------------------- the payloads

OSC52 = "\x1b]52;c;cHduZWQ=\x07"  # sets the clipboard
OSC0 = "\x1b]0;pwned title\x1b\\"  # sets the window title
OSC8 = "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\"  # a hidden link
CSI = "\x1b[2J\x1b[H"  # clears the screen
C1 = "\x9b2J\x9d0;c1 title\x9c"  # the same through 8-bit controls (CSI, OSC, ST)
TERMINAL = OSC52 + OSC0 + OSC8 + CSI + C1 + "\x07\r"
# Every C0 control but tab and newline, DEL, every C1 control: none may reach a terminal.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

MARKDOWN = {
    "heading": "m1\n# Pwned heading",
    "image": "![x](http://evil.example/pixel.png)",
    "html": "<img src=x onerror=alert(1)><script>alert(2)</script>",
    "pipe": "a|b\\|c",
    "link": "[click](http://evil.example/)",
    "autolink": "<http://evil.example/>",
    "code": "`x|y` &lt;b&gt;",
    "setext": "m2\n===",
    "crlf": "m3\r\n## h2",
    "separator": "m4\u2028# h3",
    "terminal": "m5" + TERMINAL,
}
TASKS = ["<b>task</b>\n# t", "![t](http://evil.example/t.png)|x"]
HOSTILE_KEYS = {"<img src=x>score": 0.25, "![k](http://evil.example/k.png)": 0.5, "acc\n# k": 0.75,
                "loss" + OSC52: 0.125}

FORMULAS = ["=HYPERLINK(\"http://evil.example/\",\"x\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)",
            "\t=1+1", "\r=1+1"]


def raw_controls(text: str) -> list:
    return RAW_CONTROL.findall(text)


def shown_in_a_cell(value: str) -> str:
    """What a value looks like in its cell: its lines joined by spaces; a control character
    appears as a visible escape, never as itself."""
    text = " ".join(value.splitlines()).strip()
    return RAW_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Tables(HTMLParser):
    """The tables of an HTML page as [header cells, [row cells...]], each cell's text; and every
    tag met (so an <img> or <script> a value smuggled in is seen)."""

    def __init__(self):
        super().__init__()
        self.tables, self.tags, self.headings = [], [], []
        self._cell = self._row = None
        self._heading = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([None, []])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            table = self.tables[-1]
            if table[0] is None:
                table[0] = self._row
            else:
                table[1].append(self._row)
            self._row = None
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data):
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)


def rendered(markdown: str) -> Tables:
    """The Markdown as a CommonMark renderer with GitHub's tables shows it (raw HTML allowed, as
    GitHub and most viewers pass some through)."""
    markdown_it = pytest.importorskip("markdown_it")
    page = markdown_it.MarkdownIt("commonmark").enable("table").render(markdown)
    parser = Tables()
    parser.feed(page)
    return parser


def table_of(tables: Tables, *first_headers: str) -> tuple:
    found = [t for t in tables.tables if t[0] and tuple(t[0][:len(first_headers)]) == first_headers]
    assert len(found) == 1, [t[0] for t in tables.tables]
    return found[0]


OUR_HEADINGS = re.compile(r"(# Report: |## (avg_reward: models x tasks|Groups by |Not succeeded: |Warnings$|Errors$|"
                          r"Comparison \(model_id\): ))")


def assert_markdown_is_inert(markdown: str) -> None:
    """Nothing of a value acts in the raw Markdown: no raw <, no image, no heading line, no
    terminal control."""
    assert "<" not in markdown, [line for line in markdown.splitlines() if "<" in line][:3]
    assert "![" not in markdown and "](" not in markdown.replace("\\](", "")
    headings = [line for line in markdown.splitlines() if line.lstrip().startswith("#")]
    assert all(OUR_HEADINGS.match(line) for line in headings), headings
    assert not [line for line in markdown.splitlines() if re.fullmatch(r"\s*(=+|-+)\s*", line)]  # no setext heading
    assert raw_controls(markdown) == []


# ---------------------------------------------------------------- report.md


def hostile_runs(root, *, failed: bool = True) -> list:
    """A run per Markdown payload as its model id (two tasks, hostile too), summaries holding
    hostile keys; one run failed with a hostile failure class; one run directory named by a
    payload (a hand-fetched root may hold any name)."""
    ids = []
    for index, (name, model) in enumerate(MARKDOWN.items()):
        run_id = f"run-{name}"
        make_run(root, run_id, summary={"ok": True, "avg_reward": index / 20, **HOSTILE_KEYS},
                 metadata={"run_id": run_id, "model_id": model, "env_id": TASKS[index % 2],
                           "temperature": "<b>0.7</b>\n# temp", "max_tokens": "![mt](http://evil.example/m.png)"},
                 rewards={f"e{k}": (index + k) % 2 for k in range(4)})
        ids.append(run_id)
    if failed:
        run = make_run(root, "run-failed", summary={"ok": False, "failure_class": "<b>oom</b>\n# f" + OSC52},
                       metadata={"run_id": "run-failed", "model_id": "m-failed"})
        ids.append(run.name)
    return ids


DIR_NAME = "dir <img src=x>\n# named" + OSC0  # a hand-fetched root may hold any folder name
BROKEN = "broken ![b](evil.png)\n## e"  # (no / in a folder name)


def test_report_md_keeps_every_value_in_its_cell_as_inert_text(ops, project, root):
    hostile_runs(root)
    make_run(root, DIR_NAME, summary={"ok": True, "avg_reward": 0.5}, metadata={"model_id": "m-dir", "env_id": TASKS[0]})
    (make_run(root, BROKEN) / "summary.json").write_text('{"ok": true, "<b>": ')  # listed under Errors

    result = ops("report")

    assert result.returncode == 1, result.stderr  # (the broken run)
    markdown = (project / "artifacts" / "report.md").read_text()
    assert_markdown_is_inert(markdown)
    assert raw_controls(result.stdout) == [] and raw_controls(result.stderr) == []

    page = rendered(markdown)
    assert not {"img", "script", "a", "h3"} & set(page.tags), set(page.tags)
    assert all(OUR_HEADINGS.match(("# " if i == 0 else "## ") + h) for i, h in enumerate(page.headings)), page.headings
    headers, rows = table_of(page, "run_id", "env_id")
    assert sorted(row[0] for row in rows) == sorted([*(f"run-{name}" for name in MARKDOWN), shown_in_a_cell(DIR_NAME)])
    assert all(len(row) == len(headers) for row in rows)
    shown = {row[0]: dict(zip(headers, row)) for row in rows}
    for name, model in MARKDOWN.items():  # each value is shown as itself, in its own cell
        assert shown[f"run-{name}"]["model_id"] == shown_in_a_cell(model), name
        assert shown[f"run-{name}"]["env_id"] in {shown_in_a_cell(t) for t in TASKS}
    for key in HOSTILE_KEYS:  # a summary key is a column, named as it is
        assert shown_in_a_cell(key) in headers, (key, headers)

    by_task_headers, by_task = table_of(page, "model_id", *sorted(shown_in_a_cell(t) for t in TASKS))  # models x tasks: tasks are its headers
    assert sorted(by_task_headers[1:]) == sorted(shown_in_a_cell(t) for t in TASKS)
    assert len(by_task) == len(MARKDOWN) + 1 and all(len(row) == len(by_task_headers) for row in by_task)

    _, listed = table_of(page, "run_id", "state")  # Not succeeded
    assert [row[0] for row in listed] == ["run-failed"]
    assert shown_in_a_cell("<b>oom</b>\n# f" + OSC52) in listed[0]
    errors = markdown.split("## Errors", 1)[1].strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("- broken !\\[b\\](evil.png) ## e: summary.json")


def test_report_groups_of_hostile_values_stay_one_row_each(ops, project, root):
    hostile_runs(root, failed=False)

    result = ops("report", "--group-by", "model_id,env_id")

    assert result.returncode == 0, result.stderr
    markdown = (project / "artifacts" / "report.md").read_text()
    assert_markdown_is_inert(markdown)
    headers, rows = table_of(rendered(markdown), "model_id", "env_id")
    groups = [row for row in rows if len(row) == len(headers) and row[1] in {shown_in_a_cell(t) for t in TASKS}]
    assert len(groups) == len(MARKDOWN) and all(len(row) == len(headers) for row in rows)
    assert raw_controls(result.stdout) == []

    # A comparison names what it compares (here model ids, by --compare-by) in its heading and verdict.
    compared = ops("report", "--compare-by", "model_id", "--compare", f"{MARKDOWN['html']},{MARKDOWN['link']}")
    assert compared.returncode == 0, compared.stderr
    assert_markdown_is_inert(compared.stdout)
    assert "## Comparison (model_id): \\[click\\](http://evil.example/) - &lt;img" in compared.stdout
    # Models that ran different (hostile) tasks are refused on one line naming them, inert.
    refused = ops("report", "--compare-by", "model_id", "--compare", f"{MARKDOWN['html']},{MARKDOWN['image']}")
    line = one_line_error(refused, 2, "share no stratum of env_id", "<b>task</b>\\n# t: only model_id=<img")
    assert raw_controls(line) == []

    exact = ops("report", "--json")  # --json: the exact strings (JSON escapes the controls itself)
    assert {row["run_id"]: row["model_id"] for row in exact.json["rows"]} == {
        f"run-{name}": model for name, model in MARKDOWN.items()}
    assert raw_controls(exact.stdout) == []


def test_markdown_writer_escapes_what_would_act(tmp_path):
    from ops_tasks.tables import markdown_cell, markdown_table

    for value in [*MARKDOWN.values(), *TASKS, *HOSTILE_KEYS, "\\", "a\\", "\\<b>", "\\[x](y)", "&#60;b&#62;"]:
        cell = markdown_cell(value)
        assert "<" not in cell and "![" not in cell and "\n" not in cell and raw_controls(cell) == [], (value, cell)
        table = markdown_table([[value, "1"]], ["v", "n"])
        assert len(table.splitlines()) == 3, table
        headers, rows = table_of(rendered(table), "v")
        assert rows == [[shown_in_a_cell(value), "1"]], (value, table)


# ---------------------------------------------------------------- report --format csv


def csv_cells(text: str) -> list:
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


def formula_led(cell: str) -> bool:
    """A cell a spreadsheet would run: led by = + - @, or by a tab or CR (OWASP), unless it is a
    plain number."""
    if re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", cell):
        return False
    return cell[:1] in ("=", "+", "-", "@", "\t", "\r")


def test_report_csv_neutralises_formula_cells(ops, root):
    for index, formula in enumerate(FORMULAS):
        make_run(root, f"run-{index}", summary={"ok": True, "avg_reward": -0.5 + index / 10, formula: 1.5,
                                                "delta": -0.25},
                 metadata={"model_id": formula, "env_id": FORMULAS[-1 - index]})

    result = ops("report", "--format", "csv")

    assert result.returncode == 0, result.stderr
    cells = csv_cells(result.stdout)
    assert [cell for cell in cells if formula_led(cell)] == []
    for formula in FORMULAS:  # each shown, neutralised with a leading ': a spreadsheet shows it as text
        assert "'" + formula.replace("\r", "\\r") in cells, formula  # (a CR printed as a visible escape)
    assert "-0.2500" in cells or "-0.25" in cells  # a number stays a number
    assert "-0.5" in cells or "-0.5000" in cells

    grouped = ops("report", "--group-by", "model_id", "--format", "csv")
    assert grouped.returncode == 0, grouped.stderr
    assert [cell for cell in csv_cells(grouped.stdout) if formula_led(cell)] == []
    assert "'@SUM(1+1)" in csv_cells(grouped.stdout)


def test_csv_writer_neutralises_each_led_cell():
    from ops_tasks.operations.report import csv_text

    rows = [{"a": f, "b": -1.5, "c": "-x", "d": "safe=1", "e": "x\r=1+1", "f": ' =1,"2"'} for f in FORMULAS]
    text = csv_text(rows, ["a", "b", "@head", "c", "d", "e", "f"])
    table = list(csv.reader(io.StringIO(text, newline="")))
    assert len(table) == len(rows) + 1 and all(len(row) == 7 for row in table)  # a CR inside a value starts no row
    cells = [cell for row in table for cell in row]
    assert [cell for cell in cells if formula_led(cell)] == []
    assert cells[2] == "'@head" and "-1.5" in cells and "'-x" in cells and "safe=1" in cells
    assert "'" + FORMULAS[0] in cells and "'\t=1+1" in cells and "x\r=1+1" in cells and "' =1,\"2\"" in cells


# ---------------------------------------------------------------- terminal text: report, validate


def test_report_and_validate_print_no_terminal_control(ops, root):
    make_run(root, "run-t", summary={"ok": True, "avg_reward": 0.5, "acc" + OSC52: 0.5},
             metadata={"model_id": "model" + TERMINAL, "env_id": "task" + OSC8})
    make_run(root, "failed" + OSC0, summary={"ok": False, "failure_class": "oom" + CSI + C1})
    (make_run(root, "broken" + CSI) / "summary.json").write_text('{"ok": true, "x": "' + OSC52 + '"')

    for args in (["report"], ["report", "--include-failed"], ["report", "--format", "csv"],
                 ["report", "--group-by", "model_id"], ["validate"], ["validate", "--all"]):
        result = ops(*args)
        assert result.returncode in (0, 1), (args, result.stderr)
        assert raw_controls(result.stdout) == [] and raw_controls(result.stderr) == [], (args, result.stdout)
        assert "\\x1b" in result.stdout, (args, result.stdout)  # shown, as a visible escape

    validated = ops("validate", "--json")
    assert {f["run_id"] for f in validated.json["failed"]} >= {"failed" + OSC0}  # exact in JSON


def test_text_output_escapes_every_control_once():
    from ops_tasks.output import inert

    assert inert("a\x1b]52;c;x\x07b") == "a\\x1b]52;c;x\\x07b"
    assert inert("line one\n\tline two") == "line one\n\tline two"  # layout stays
    assert inert("\x9b2J \x7f \r x") == "\\x9b2J \\x7f \\r x"
    assert inert("\udc9b") == "\\udc9b"  # a byte that was not UTF-8 (surrogateescape): never written raw
    assert inert("plain: Qwen/Qwen3-4B, 0.5 [0.1, 0.9]") == "plain: Qwen/Qwen3-4B, 0.5 [0.1, 0.9]"
    assert raw_controls(inert(TERMINAL)) == []


def test_a_followed_log_line_keeps_its_colours_and_nothing_else():
    from ops_tasks.output import log_line

    assert log_line("\x1b[1;31mERROR\x1b[0m disk full") == "\x1b[1;31mERROR\x1b[0m disk full\x1b[0m"
    assert log_line("\x1b[32mgreen" + OSC52 + CSI) == "\x1b[32mgreen\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\x1b[H\x1b[0m"
    assert log_line(" 10%|#   |\r 50%|##  |\r100%|####|\r") == "100%|####|"  # what the terminal drew last
    assert log_line("windows line\r") == "windows line"
    assert raw_controls(log_line(TERMINAL).replace("\x1b[0m", "")) == []


def test_tables_keep_a_value_on_its_row():
    from ops_tasks.tables import tabulate

    for fmt in ("simple", "plain"):
        text = tabulate([("evil\nsecond" + OSC52, "x\ry"), ("b", "c")], headers=("h" + CSI, "k\tv"), tablefmt=fmt)
        assert len(text.splitlines()) == (4 if fmt == "simple" else 3), text
        assert raw_controls(text) == [] and "\t" not in text


# ---------------------------------------------------------------- pods: pod.status, runs.*


FAKE_TMUX = """#!/bin/bash
# A hostile pod's tmux: its session names carry terminal escapes (the real one escapes them itself).
for arg in "$@"; do
  if [ "$arg" = list-sessions ] || [ "$arg" = ls ]; then
    printf 'vllm\\033]52;c;cHduZWQ=\\007\\n\\033[2Jclear\\n\\302\\233title\\n'
    exit 0
  fi
done
exec /usr/bin/tmux "$@"
"""


@needs_isolation
def test_pod_status_prints_a_hostile_hostname_and_tmux_session_inert(pod, ops):
    hostname = "pod" + OSC0 + CSI + "\u009b2J"
    (pod.home / ".bashrc").write_text(f"export HOSTNAME=$'{_bash_c(hostname)}'\n")
    (pod.bin / "tmux").write_text(FAKE_TMUX)
    (pod.bin / "tmux").chmod(0o755)

    shown = ops("pod.status", "--host", pod.alias)
    exact = ops("pod.status", "--host", pod.alias, "--json")

    # --json: the exact string the pod sent (its script drops C0 controls itself; the C1 ones pass)
    assert exact.json["hostname"] == re.sub("[\x00-\x1f]", "", hostname)
    assert "\x9btitle" in exact.json["tmux_sessions"]
    assert "hostname" in shown.stdout and "vllm" in shown.stdout, shown.stdout + shown.stderr
    assert raw_controls(shown.stdout) == [] and raw_controls(shown.stderr) == [], shown.stdout
    assert "\\x9b2J" in shown.stdout and "\\x9btitle" in shown.stdout  # shown, as visible escapes


def _bash_c(text: str) -> str:
    """text for bash's $'...' quoting: its UTF-8 bytes, each but letters and digits as \\xHH."""
    return "".join(chr(b) if chr(b).isalnum() and b < 0x80 else f"\\x{b:02x}" for b in text.encode())


OUT = "/mnt/pod_artifacts/outputs"


def _lay_run(pod, run_id: str, files: dict) -> None:
    """A run directory on the pod as a hostile pod would hold it (written inside the pod)."""
    script = [f"mkdir -p {OUT}/{run_id}"]
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        script.append(f"echo {base64.b64encode(data).decode()} | base64 -d > {OUT}/{run_id}/{name}")
    pod.sh(" && ".join(script))


@needs_isolation
def test_runs_status_list_and_logs_print_what_a_run_wrote_inert(pod, ops):
    status = {"state": "failed", "attempt": 1, "failure_class": "oom" + OSC52, "error": "died" + CSI + C1,
              "started": 1_700_000_000, "finished": 1_700_000_060, "exit_code": 1,
              "submission_id": "sub" + OSC0, "tool": "ops-tasks-runs/0"}
    summary = {"ok": False, "avg_reward": 0.5, "acc" + OSC8: 0.25, "loss\n# x" + C1: 1.5,
               "note": "text" + OSC52}
    log = ("step 1\n\x1b[31mred\x1b[0m " + OSC52 + "\n" + "last" + OSC0 + CSI + "\n").encode()
    _lay_run(pod, "hostile", {"status.json": json.dumps(status), "summary.json": json.dumps(summary),
                              "stdout.log": log})

    for args in (["runs.status", "--all"], ["runs.status", "--run-id", "hostile"], ["runs.list"],
                 ["runs.logs", "--run-id", "hostile"]):
        result = ops(*args, "--host", pod.alias)
        assert result.returncode in (0, 1), (args, result.stderr)
        assert "hostile" in result.stdout or "step 1" in result.stdout, (args, result.stdout, result.stderr)
        assert raw_controls(result.stdout) == [] and raw_controls(result.stderr) == [], (args, result.stdout)

    exact = ops("runs.status", "--run-id", "hostile", "--host", pod.alias, "--json")
    run = exact.json["runs"][0]
    assert run["failure_class"] == "oom" + OSC52 and OSC0 + CSI in run["stdout_tail"]

    # A followed log is the run's own output: its colours pass (as `less -R` lets them), every
    # other control (the clipboard, the title, a screen clear) is shown as a visible escape.
    followed = ops("runs.logs", "--run-id", "hostile", "--follow", "--host", pod.alias, timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert "\x1b[31mred\x1b[0m" in followed.stdout
    assert "\x1b]" not in followed.stdout and "\x1b[2J" not in followed.stdout and "\x07" not in followed.stdout
    assert "\\x1b]52;c;cHduZWQ=\\x07" in followed.stdout


def test_pod_status_problems_and_warnings_stay_one_line_each():
    from ops_tasks.pod import render_status

    hostile = "tmux session <x>\n# Pwned" + OSC52
    data = {"host": "p", "destination": "p", "ok": False, "reachable": True, "latency_ms": 3, "connect_ms": 10,
            "hostname": "h", "user": "root", "volume": {"path": "/mnt", "mounted": True, "exists": True,
                                                        "fstype": "tmpfs", "free_bytes": 1, "size_bytes": 2},
            "gpus": [], "tools": {}, "tmux_sessions": [], "disk_free_bytes": 1, "disk_size_bytes": 2, "load": [0.1],
            "cpus": 2, "problems": [hostile], "warnings": [hostile]}
    for shown in (render_status(data), render_status({**data, "reachable": False})):
        lines = shown.splitlines()
        assert not any(line.startswith("# Pwned") for line in lines), shown
        assert sum("problem: tmux session <x>\\n# Pwned" in line for line in lines) == 1
        assert raw_controls(shown) == []
