"""`validate` and `report`: check and summarise the local run directories (artifacts/pod_logs).

Both are local only (no host, no SSH) and top-level tasks: `ops validate`, `ops report`.
"""

import contextvars
import json as jsonlib
from pathlib import Path

from tabulate import tabulate

from .defaults import LOCAL_RUNS_DIR, REPORT_DIR
from .errors import ConfigError
from .operations.report import (build_report, comparison_markdown, csv_text, group_columns, plot_report,
                                require_matplotlib, write_report)
from .operations.validate import validate_root
from .output import dry_run_requested, log, ops_task
from .settings import project_dir_of

DEFAULT_ROOT = LOCAL_RUNS_DIR
DEFAULT_OUT_DIR = REPORT_DIR
FORMATS = ("md", "json", "csv")
# What `report` prints in human mode (--format); read by the renderer, set by the task.
_FORMAT = contextvars.ContextVar("ops_report_format", default="md")


def _in_project(c, path) -> Path:
    """A path flag: as given when absolute, else relative to the project directory."""
    path = Path(path)
    return path if path.is_absolute() else project_dir_of(c.config) / path


# ---------------------------------------------------------------- validate


def render_validate(data: dict) -> str:
    head = (f"{data['root']}: {'OK' if data['ok'] else 'NOT OK'}: {data['runs']} runs, "
            f"{len(data['complete'])} complete, {len(data['missing'])} missing files, "
            f"{len({e['run_id'] for e in data['invalid']})} invalid, {len(data['failed'])} failed")
    if data.get("error"):
        return f"{head}\nerror: {data['error']}"
    unfinished = set(data.get("unfinished", ()))
    rows = []
    for run_id, files in data["missing"].items():
        note = " (still running or queued)" if run_id in unfinished else ""
        rows.append((run_id, "missing", ", ".join(files) + note))
    for e in data["invalid"]:
        where = e["file"] + (f":{e['line']}" if e.get("line") else "") + (f":{e['column']}" if e.get("column") else "")
        rows.append((e["run_id"], "invalid", f"{where}: {e['error']}"))
    for f in data["failed"]:
        rows.append((f["run_id"], "failed", f["reason"]))
    if not rows:
        return head
    return "\n".join([head, tabulate(sorted(rows), headers=("run", "problem", "detail"), tablefmt="simple")])


@ops_task(human=render_validate, help={
    "root": f"Directory of run directories (default: {DEFAULT_ROOT} in the project).",
})
def validate(c, root=None):
    """Check every local run directory for the contract's files, parseable JSON, and ok summaries."""
    return validate_root(_in_project(c, root or DEFAULT_ROOT))


# ---------------------------------------------------------------- report


def render_report(data: dict) -> str:
    chosen = _FORMAT.get()
    if chosen == "json":
        return jsonlib.dumps(data, indent=2, default=str)
    if chosen == "csv":
        if data.get("groups") is not None:
            text = csv_text(data["groups"], group_columns(data["group_by"], data["metric"]["name"]))
        else:
            text = csv_text(data["rows"], data["columns"])
        return text + ("\n\n" + comparison_markdown(data["comparison"]) if data.get("comparison") else "")
    text = data["markdown"].rstrip("\n")
    return text + (f"\n\nerror: {data['error']}" if data.get("error") and not data["ok"] else "")


@ops_task(human=render_report, iterable=["compare", "filter"], help={
    "root": f"Directory of run directories (default: {DEFAULT_ROOT} in the project).",
    "group_by": "Comma-separated fields, e.g. model_id,env_id: mean, sd and n over each group's runs.",
    "compare": "Two run ids, RUN_A,RUN_B (or the flag twice): paired difference B - A by example id, "
               "McNemar's exact test for 0/1 rewards, the minimum detectable effect and a verdict.",
    "compare_by": "With --compare A,B: compare the runs whose FIELD is A with those whose FIELD is B "
                  "(e.g. model_id), each example's scores averaged over a side's runs.",
    "metric": "The summary.json value to report, group, rank and compare (default avg_reward; nested "
              "keys as last_eval.val); per example, results.jsonl's reward, else the lines' own value.",
    "lower_is_better": "The metric is a loss: lower ranks first (automatic for names with loss, "
                       "perplexity, error...).",
    "sort": "Sort rows by this column, ascending; -COLUMN for descending (missing values last).",
    "filter": "key=value: keep rows whose field reads value, numbers compared as numbers (repeatable; "
              "all must match). A filtered report is printed, not saved, unless --out-dir is given.",
    "format": "What to print: md (default), json (the document) or csv.",
    "plot": "Also write a PNG bar chart of means with 95% intervals here (needs matplotlib: "
            "pip install 'ops-tasks[plot]').",
    "out_dir": f"Where report.md and report.json are written (default: {DEFAULT_OUT_DIR} in the project, "
               "and only for a report of the whole default root).",
})
def report(c, root=None, group_by=None, compare=None, sort=None, filter=None, format=None, plot=None,
           out_dir=None, metric=None, lower_is_better=None, compare_by=None):
    """Table of runs with 95% intervals, groups, paired comparisons; writes artifacts/report.md and .json."""
    chosen = format or "md"
    if chosen not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    ids = [part.strip() for value in compare or [] for part in value.split(",") if part.strip()]
    if compare and len(ids) != 2:
        raise ConfigError(f"--compare takes two run ids, RUN_A,RUN_B, got {len(ids)}: {' '.join(ids) or '-'}")
    if plot:
        require_matplotlib()  # before the work: a missing extra is bad input, exit 2
    doc = build_report(_in_project(c, root or DEFAULT_ROOT), group_by=group_by, compare=ids, sort=sort,
                       filters=filter or (), metric=metric, lower_is_better=lower_is_better or None,
                       compare_by=compare_by)
    _FORMAT.set(chosen)
    if dry_run_requested():  # local only, so nothing to contact: a dry run just writes nothing
        doc["dry_run"], doc["written"] = True, None
        return doc
    if plot and doc["rows"]:
        plot_path = _in_project(c, plot)
        plot_report(doc, plot_path)
        doc["plot"] = str(plot_path)
    if not out_dir and (root or filter):
        # artifacts/report.md is the deliverable: a partial view (--filter, --root) never replaces it.
        doc["written"] = None
        log("not saved (a --filter or --root report): --out-dir DIR saves it")
        return doc
    written = write_report(doc, _in_project(c, out_dir or DEFAULT_OUT_DIR))
    log(f"wrote {written['markdown']} and {written['json']}" + (f" and {doc['plot']}" if doc.get("plot") else ""))
    return doc
