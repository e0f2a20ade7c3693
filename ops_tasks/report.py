"""`validate` and `report`: check and summarise the local run directories (artifacts/pod_logs).

Both are local only (no host, no SSH) and top-level tasks: `ops validate`, `ops report`.
"""

import contextlib
import contextvars
import json as jsonlib
from pathlib import Path

from .tables import tabulate

from .defaults import LOCAL_RUNS_DIR, REPORT_DIR
from .errors import ConfigError
from .output import dry_run_requested, log, ops_task
from .settings import project_dir_of
# The operations, records and selection are imported by the functions that use them: `ops --list`
# and `ops TASK --help` load none of them (ARCHITECTURE.md, "Start-up").

DEFAULT_ROOT = LOCAL_RUNS_DIR
DEFAULT_OUT_DIR = REPORT_DIR
FORMATS = ("md", "json", "csv")
# What `report` prints in human mode (--format); read by the renderer, set by the task.
_FORMAT = contextvars.ContextVar("ops_report_format", default="md")


def _in_project(c, path) -> Path:
    """A path flag: as given when absolute, else relative to the project directory."""
    path = Path(path)
    return path if path.is_absolute() else project_dir_of(c.config) / path


def _margin(value):
    """--margin's value: a difference above 0 (None: not given)."""
    if value is None:
        return None
    try:
        margin = float(value)
    except ValueError:
        margin = None
    if margin is None or not margin > 0 or margin == float("inf"):
        raise ConfigError(f"--margin {value!r}: expected a difference above 0, in the metric's units (e.g. 0.02)")
    return margin


def _yes_no(value):
    """--lower-is-better's value: True, False, or None (not given: the metric's name decides)."""
    if value is None:
        return value
    from .operations.report import yes_no

    known = yes_no(value)
    if known is None:
        raise ConfigError(f"--lower-is-better {value!r}: expected true or false")
    return known


# ---------------------------------------------------------------- scope


SCOPE_HELP = {
    "submission": "Only this submission's runs (default: the latest submission recorded in the project, "
                  "the one a chain just made; every run when none is recorded).",
    "run_id": "Only these runs (repeatable, or comma-separated).",
    "all": "Every run directory under the root, whatever submission made it.",
}


def latest_project_manifest(c):
    """The submission this command line just made (a chain), else the newest recorded in the project."""
    from . import records
    project = project_dir_of(c.config)
    chained = c.config.get("ops_last_submission")
    if chained and records.load_manifest(project, chained):
        return records.load_manifest(project, chained)
    folder = records.manifests_dir(project)
    newest = None
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        manifest = records.load_manifest(project, path.stem)
        if manifest is None or not isinstance(manifest.get("runs"), list):
            continue
        key = records.manifest_order(manifest)
        if newest is None or key > newest[0]:
            newest = (key, manifest)
    return newest[1] if newest else None


def _manifest_run_ids(manifest: dict) -> list:
    return list(dict.fromkeys(r["run_id"] for r in manifest.get("runs", [])
                              if isinstance(r, dict) and isinstance(r.get("run_id"), str)))


def scope_of(c, root_given: bool, submission=None, run_id=None, all_runs=False) -> dict:
    """{"run_ids": [...] or None (every run), "label": for the header, "whole": a scope whose report
    is the deliverable} from --submission, --run-id and --all (at most one), else the default."""
    from . import records
    from .selection import run_ids_flag
    given = [name for name, value in (("--submission", submission), ("--run-id", run_id), ("--all", all_runs))
             if value]
    if len(given) > 1:
        raise ConfigError(f"{' and '.join(given)}: pass one of --submission, --run-id or --all")
    if run_id:
        ids = run_ids_flag(run_id)
        if not ids:
            raise ConfigError("--run-id: expected run ids, e.g. --run-id RUN_A,RUN_B")
        return {"run_ids": ids, "label": f"runs {', '.join(ids)} (--run-id)", "whole": False}
    if submission:
        manifest = records.load_manifest(project_dir_of(c.config), submission)
        if manifest is None:
            raise ConfigError(f"--submission {submission}: no such submission is recorded in "
                              f"{records.manifests_dir(project_dir_of(c.config))}")
        return _submission_scope(manifest, "--submission")
    if all_runs:
        return {"run_ids": None, "label": "every run under the root (--all)", "whole": True}
    if root_given:  # a root of the user's own: its runs, not the project's last submission
        return {"run_ids": None, "label": "every run under the root (--root)", "whole": True}
    manifest = latest_project_manifest(c)
    if manifest is None:
        return {"run_ids": None, "label": "every run under the root: no submission is recorded", "whole": True}
    return _submission_scope(manifest, "the latest")


def _submission_scope(manifest: dict, how: str) -> dict:
    ids = _manifest_run_ids(manifest)
    return {"run_ids": ids, "label": f"submission {manifest.get('submission_id')} ({how}, {len(ids)} runs)",
            "whole": True, "submission_id": manifest.get("submission_id")}


# ---------------------------------------------------------------- validate


def render_validate(data: dict) -> str:
    head = (f"{data['root']}: {'OK' if data['ok'] else 'NOT OK'}: {data['runs']} runs, "
            f"{len(data['complete'])} complete, {len(data['missing'])} missing files, "
            f"{len({e['run_id'] for e in data['invalid']})} invalid, {len(data['failed'])} failed")
    if data.get("error"):
        head += f"\nerror: {data['error']}"
    unfinished = set(data.get("unfinished", ()))
    rows = []
    for run_id, files in data["missing"].items():
        note = " (still running or queued)" if run_id in unfinished else ""
        rows.append((run_id, "missing", ", ".join(files) + note))
    for e in data["invalid"]:
        where = e["file"] + (f":{e['line']}" if e.get("line") else "") + (f":{e['column']}" if e.get("column") else "")
        rows.append((e["run_id"], "invalid", f"{where}: {e['error']}"))
    for f in data["failed"]:
        rows.append((f["run_id"], f.get("state") or "failed", f["reason"]))
    if not rows:
        return head
    return "\n".join([head, tabulate(sorted(rows), headers=("run", "problem", "detail"), tablefmt="simple")])


@ops_task(human=render_validate, iterable=["run_id"], help={
    "root": f"Directory of run directories (default: {DEFAULT_ROOT} in the project).", **SCOPE_HELP,
})
def validate(c, root=None, submission=None, run_id=None, all=False):
    """Gate: every run in scope has the contract's files, parseable JSON, and succeeded (exit 1 if not)."""
    from .operations.validate import validate_root
    scope = scope_of(c, bool(root), submission, run_id, all)
    result = validate_root(_in_project(c, root or DEFAULT_ROOT), scope["run_ids"])
    result["scope"] = scope["label"]
    return result


# ---------------------------------------------------------------- report


def render_report(data: dict) -> str:
    from .operations.report import comparison_markdown, csv_text, group_columns
    chosen = _FORMAT.get()
    if chosen == "json":
        return jsonlib.dumps(data, indent=2, default=str)
    if chosen == "csv":
        if data.get("groups") is not None:
            text = csv_text(data["groups"], group_columns(data["group_by"], data["metric"]["name"], data["groups"]))
        else:
            text = csv_text(data["rows"], data["columns"])
        return text + ("\n\n" + comparison_markdown(data["comparison"]) if data.get("comparison") else "")
    text = data["markdown"].rstrip("\n")
    return text + (f"\n\nerror: {data['error']}" if data.get("error") and not data["ok"] else "")


@ops_task(human=render_report, iterable=["compare", "filter", "run_id"], help={
    "root": f"Directory of run directories (default: {DEFAULT_ROOT} in the project).", **SCOPE_HELP,
    "include_failed": "Count runs that did not succeed (failed, timeout, unfinished...) in the statistics, "
                      "groups, comparisons and plots, marked with their state (default: listed only).",
    "group_by": "Comma-separated fields, e.g. model_id,env_id: mean, sd and n over each group's runs.",
    "compare": "Two run ids, RUN_A,RUN_B (or the flag twice): paired difference B - A by example id, "
               "McNemar's exact test for 0/1 rewards, the minimum detectable effect and a verdict.",
    "compare_by": "With --compare A,B: compare the runs whose FIELD is A with those whose FIELD is B "
                  "(e.g. model_id), like with like (within model, task and --group-by strata), each example's "
                  "scores averaged over a side's runs. Alone: every value of FIELD against every other (Holm's "
                  "correction, a ranking that says which places are certain).",
    "baseline": "With --compare-by FIELD alone: each value of FIELD against this one (Holm over those pairs).",
    "cluster_by": "The results.jsonl field whose value groups examples that are not independent (questions of "
                  "one passage, turns of one dialogue): intervals, groups and comparisons are clustered by it "
                  "(CR1, t with clusters - 1 degrees of freedom). Default: a line's `cluster` field, where it has one.",
    "margin": "A difference D in the metric's units (e.g. 0.02): also say whether the compared sides are "
              "equal within +/-D (two one-sided paired t tests, TOST).",
    "metric": "The summary.json value to report, group, rank and compare (default avg_reward; nested "
              "keys as last_eval.val); per example, results.jsonl's reward, else the lines' own value.",
    "lower_is_better": "true: the metric is a loss, lower ranks first; false: higher ranks first (default: "
                       "true for names with the word loss, perplexity, ppl, error, nll, mse..., e.g. val_loss).",
    "sort": "Sort rows by this column, ascending; -COLUMN for descending (missing values last).",
    "filter": "key=value: keep rows whose field reads value, numbers compared as numbers (repeatable; "
              "all must match). A filtered report is printed, not saved, unless --out-dir is given.",
    "format": "What to print: md (default), json (the document) or csv.",
    "plot": "Also write a PNG bar chart of means with 95% intervals here (needs matplotlib: "
            "pip install 'ops-tasks[plot]').",
    "out_dir": f"Where report.md, report.json and report.html are written (default: {DEFAULT_OUT_DIR} in "
               "the project, and only for a report of a whole scope of the default root).",
})
def report(c, root=None, group_by=None, compare=None, sort=None, filter=None, format=None, plot=None,
           out_dir=None, metric=None, lower_is_better=None, compare_by=None, submission=None, run_id=None,
           all=False, include_failed=False, baseline=None, margin=None, cluster_by=None):
    """Runs with 95% intervals, groups, comparisons; writes artifacts/report.{md,json,html}."""
    from .operations.examples import ExampleSpool
    from .operations.report import RUN_DIRS, build_report, plot_report, require_matplotlib, write_report
    from .operations.report_html import write_report_html
    chosen = format or "md"
    if chosen not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    lower = _yes_no(lower_is_better)
    margin = _margin(margin)
    ids = [part.strip() for value in compare or [] for part in value.split(",") if part.strip()]
    if compare and len(ids) != 2:
        raise ConfigError(f"--compare takes two run ids, RUN_A,RUN_B, got {len(ids)}: {' '.join(ids) or '-'}")
    scope = scope_of(c, bool(root), submission, run_id, all)
    if plot:
        require_matplotlib()  # before the work: a missing extra is bad input, exit 2
    # artifacts/report.* is the deliverable: a partial view (--filter, --root, --run-id) never replaces it.
    saved = not dry_run_requested() and bool(out_dir or not (root or filter or not scope["whole"]))
    with ExampleSpool() if saved else contextlib.nullcontext() as spool:  # report.html's examples, read once
        doc = build_report(_in_project(c, root or DEFAULT_ROOT), group_by=group_by, compare=ids, sort=sort,
                           filters=filter or (), metric=metric, lower_is_better=lower,
                           compare_by=compare_by, run_ids=scope["run_ids"], include_failed=bool(include_failed),
                           scope=scope["label"], spool=spool, baseline=baseline, margin=margin,
                           cluster_by=cluster_by)
        run_dirs = doc.pop(RUN_DIRS)
        _FORMAT.set(chosen)
        if dry_run_requested():  # local only, so nothing to contact: a dry run just writes nothing
            doc["dry_run"], doc["written"] = True, None
            return doc
        if plot and doc["rows"]:
            plot_path = _in_project(c, plot)
            plot_report(doc, plot_path)
            doc["plot"] = str(plot_path)
        if not saved:
            doc["written"] = None
            log("not saved (a --filter, --root or --run-id report): --out-dir DIR saves it")
            return doc
        if not (doc["total"] or doc["not_succeeded"] or doc["errors"]):  # an empty scope replaces nothing
            doc["written"] = None
            log("not saved: no run in scope (the saved report is left as it was)")
            return doc
        target_dir = _in_project(c, out_dir or DEFAULT_OUT_DIR)
        written = write_report(doc, target_dir, html=lambda path: write_report_html(doc, run_dirs, path, spool))
    log(f"wrote {written['markdown']}, {written['json']} and {written['html']}"
        + (f" and {doc['plot']}" if doc.get("plot") else ""))
    return doc
