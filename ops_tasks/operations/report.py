"""Report over a local root of run directories: a table of runs, per-run intervals, groups, and a
paired comparison of two runs. Plain functions over a path; nothing here prints.

Statistics (stdlib only, no scipy):

- Per run, from results.jsonl's per-example `reward` (a number or a bool): n (examples), mean,
  standard error (sample sd / sqrt(n)) and a 95% interval: Wilson's score interval when every
  example scores 0 or 1 (it stays inside [0, 1] and does not collapse at 0/n or n/n), else mean
  +/- 1.96 * se (normal approximation; fine for the tens to thousands of examples an eval has). Rollouts of one
  example (consecutive lines with its id) count once, as their mean. Streamed: one pass,
  Welford's update, one example in memory at a time, whatever the file size.
- Per group (--group-by): mean, sample sd and n over runs, and a 95% interval of the mean with
  Student's t (n - 1 degrees of freedom): groups are a handful of seeds, where 1.96 would claim
  far too much.
- Paired comparison (--compare A B): on the examples both runs share, matched by example id
  (`id`, else `example_id`, else `index`, else the line number), the mean of B - A with a 95%
  interval mean +/- t(0.975, n-1) * sd / sqrt(n) (Student's t: about 1.96 for the hundreds of
  examples of an eval, wider for a handful). Several lines with one id
  (rollouts) are averaged per example first. When every paired value is 0 or 1, McNemar's exact
  test: b = A right and B wrong, c = A wrong and B right, p = min(1, 2 * P(X <= min(b, c))),
  X ~ Binomial(b + c, 1/2); p = 1 when b + c = 0.
"""

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

from tabulate import tabulate

from ..errors import ConfigError
from ..files import write_atomic
from .run_config import RUN_ID
from .validate import RESULTS, BadJsonLine, checked_root, json_error, json_lines, load_json, run_dirs

Z95 = 1.959963984540054
PLOT_INSTALL = "pip install 'ops-tasks[plot]'"
ID_COLUMNS = ("run_id", "env_id", "model_id", "num_examples", "rollouts", "best_of")
METRIC_COLUMNS = ("avg_reward", "macro_avg_reward")
STAT_COLUMNS = ("mean", "se", "ci95_low", "ci95_high", "n")
# Row field -> the names it may carry in run_metadata / summary.json.
FIELD_NAMES = {"rollouts": ("rollouts_per_example", "rollouts"), "num_examples": ("num_examples",),
               "best_of": ("best_of",), "env_id": ("env_id",), "model_id": ("model_id",)}
# Summary keys that are columns already under another name, or are not measurements.
NOT_EXTRA = {"rollouts_per_example", "rollouts", "num_examples", "best_of", "run_id", "env_id", "model_id",
             *METRIC_COLUMNS, *STAT_COLUMNS}
INTERVALS = {
    "runs": "per-example rewards in results.jsonl (an example's rollouts averaged): Wilson's score "
            "interval when every example scores 0 or 1, else mean +/- 1.96 * se, se = sample sd / sqrt(n)",
    "groups": "over the runs of a group: mean +/- t(0.975, n-1) * sd / sqrt(n) (Student's t)",
    "comparison": "paired B - A on shared example ids: mean +/- t(0.975, n-1) * sd / sqrt(n) (Student's t); "
                  "McNemar's exact two-sided binomial test when every reward is 0 or 1",
}
# Student's t, 97.5% quantile, for 1..30 degrees of freedom.
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
        2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
        2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


# ---------------------------------------------------------------- statistics


class Welford:
    """Running n, mean and sum of squared deviations: one pass, constant memory. The mean reported
    is the running total over n (exact for 0/1 rewards); Welford's running mean feeds the variance."""

    __slots__ = ("n", "total", "running_mean", "m2")

    def __init__(self):
        self.n, self.total, self.running_mean, self.m2 = 0, 0.0, 0.0, 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        delta = x - self.running_mean
        self.running_mean += delta / self.n
        self.m2 += delta * (x - self.running_mean)

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.n if self.n else None

    @property
    def sd(self) -> Optional[float]:
        """Sample standard deviation (n - 1); None below two values."""
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else None

    @property
    def se(self) -> Optional[float]:
        sd = self.sd
        return None if sd is None else sd / math.sqrt(self.n)

    def interval(self, critical: float) -> tuple:
        se = self.se
        return (None, None) if se is None else (self.mean - critical * se, self.mean + critical * se)


def of(values: Iterable[float]) -> Welford:
    acc = Welford()
    for value in values:
        acc.add(value)
    return acc


def t975(df: int) -> float:
    """Student's t 97.5% quantile: the table to 30 df, then the Cornish-Fisher expansion."""
    if df < 1:
        raise ValueError("t needs at least one degree of freedom")
    if df <= len(T975):
        return T975[df - 1]
    z = Z95
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    term, tail = 1, 1  # C(n, 0); then C(n, i) from C(n, i-1), exact integers
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    return min(1.0, 2 * tail / 2 ** n)  # int / int is correctly rounded, even for large n


def _number(value) -> Optional[float]:
    """A finite int/float (bools are not numbers here), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _reward(value) -> Optional[float]:
    """A per-example reward: a finite number, or a bool as 0/1."""
    if isinstance(value, bool):
        return float(value)
    return _number(value)


def reward_stats(path: str, run_id: str) -> tuple:
    """({n, mean, se, ci95_low, ci95_high}, error or None) of results.jsonl's rewards, streamed.

    The sample is the example: the rollouts of one example (consecutive lines with its id) count
    once, as their mean; counting each line would shrink the interval by up to sqrt(rollouts).
    """
    acc = Welford()
    current, total, count = None, 0.0, 0
    successes = 0  # examples scored 1, while every example so far is 0 or 1
    binary = True
    try:
        for key, reward in scored_lines(path, run_id):
            if key != current and count:
                binary, successes = _add_example(acc, total / count, binary, successes)
                total, count = 0.0, 0
            current, total, count = key, total + reward, count + 1
    except BadJsonLine as bad:
        return None, bad.error
    except OSError as exc:
        return None, json_error(run_id, RESULTS, exc)
    if count:
        binary, successes = _add_example(acc, total / count, binary, successes)
    if not acc.n:
        return None, None
    low, high = wilson(successes, acc.n) if binary else acc.interval(Z95)
    return {"mean": acc.mean, "se": acc.se, "ci95_low": low, "ci95_high": high, "n": acc.n,
            "interval": "wilson" if binary else "normal"}, None


def _add_example(acc, value: float, binary: bool, successes: int) -> tuple:
    acc.add(value)
    return binary and value in (0.0, 1.0), successes + (value == 1.0)


def wilson(successes: int, n: int, z: float = Z95) -> tuple:
    """Wilson's score interval for a proportion: inside [0, 1], and honest at 0/n and n/n, where
    mean +/- 1.96 se collapses to a point."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def scored_lines(path: str, run_id: str):
    """(example key, reward) of each results.jsonl line that has a reward, streamed;
    BadJsonLine at the first line that does not parse."""
    for number, record in json_lines(path, run_id):
        reward = _reward(record.get("reward")) if isinstance(record, dict) else None
        if reward is not None:
            yield example_key(record, number), reward


def example_key(record: dict, number: int):
    """An example's id: `id`, else `example_id`, else `index`, else its line number."""
    for name in ("id", "example_id", "index"):
        if record.get(name) is not None:
            return str(record[name])
    return ("line", number)


# ---------------------------------------------------------------- reading runs


def _sources(metadata, summary) -> list:
    """Where run fields are looked up, first match wins: run_metadata.json (top level, config,
    dataset, decoding), then summary.json's own `run_metadata` object likewise, then summary.json."""
    found = []
    for meta in (metadata, (summary or {}).get("run_metadata")):
        if isinstance(meta, dict):
            found.append(meta)
            found.extend(meta[key] for key in ("config", "dataset", "decoding") if isinstance(meta.get(key), dict))
    if isinstance(summary, dict):
        found.append(summary)
    return found


def _field(sources: list, names: Sequence[str]):
    for source in sources:
        for name in names:
            value = source.get(name)
            if value is None or isinstance(value, (dict, list)):
                continue
            if name == "num_examples" and _number(value) is not None and value < 0:
                continue  # -1 is "all examples" in eval configs: a later source has the count
            return value
    return None


def read_run(run_id: str, path: str, fields: Sequence[str] = ()) -> tuple:
    """(row or None, [errors], warning or None) of one run directory. `fields` are extra run fields
    (group, filter and sort keys) looked up like the identity columns."""
    errors = []
    summary_path = os.path.join(path, "summary.json")
    if not os.path.isfile(summary_path):
        return None, [{"run_id": run_id, "file": "summary.json", "line": None, "column": None,
                       "error": "missing (run not finished, or not fetched)"}], None
    summary, error = load_json(summary_path, run_id, "summary.json")
    if error is None and not isinstance(summary, dict):
        error = {"run_id": run_id, "file": "summary.json", "line": 1, "column": 1,
                 "error": f"not a JSON object ({type(summary).__name__})"}
    if error:
        return None, [error], None
    warning, metadata = None, None
    metadata_path = os.path.join(path, "run_metadata.json")
    if os.path.isfile(metadata_path):
        metadata, error = load_json(metadata_path, run_id, "run_metadata.json")
        if error is None and not isinstance(metadata, dict):
            error = {"run_id": run_id, "file": "run_metadata.json", "line": 1, "column": 1,
                     "error": f"not a JSON object ({type(metadata).__name__})"}
        if error:
            errors.append(error)
            metadata = None
    else:
        warning = {"run_id": run_id, "file": "run_metadata.json", "warning": "missing: fields from summary.json only"}
    sources = _sources(metadata, summary)
    row = {"run_id": run_id}
    for column in ID_COLUMNS[1:]:
        row[column] = _field(sources, FIELD_NAMES[column])
    for column in METRIC_COLUMNS:
        row[column] = _number(summary.get(column))
    for name in fields:
        if name not in row:
            row[name] = _field(sources, (name,))
    for key, value in summary.items():
        if key not in NOT_EXTRA and key not in row and _number(value) is not None:
            row[key] = value
    row["ok"] = summary.get("ok") is not False
    stats, error = None, None
    results = os.path.join(path, RESULTS)
    if os.path.isfile(results):
        stats, error = reward_stats(results, run_id)
    if error:
        errors.append(error)
    row.update(stats or dict.fromkeys(STAT_COLUMNS))
    return row, errors, warning


# ---------------------------------------------------------------- selecting and grouping


def parse_filters(filters: Iterable[str]) -> list:
    """['key=value', ...] -> [(key, value)]; a malformed one is refused (exit 2)."""
    parsed = []
    for text in filters or ():
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--filter {text!r}: expected key=value")
        parsed.append((key.strip(), value))
    return parsed


def cell_text(value) -> str:
    """A field as --filter compares it: JSON spelling for bools, '' for missing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sort_rows(rows: list, key: str) -> list:
    """By `key` ascending, `-key` descending; missing values last either way."""
    descending = key.startswith("-")
    name = key[1:] if descending else key
    present = [r for r in rows if r.get(name) is not None]
    absent = [r for r in rows if r.get(name) is None]

    def order(row):
        value = row[name]
        number = _number(value)
        return (0, number, "") if number is not None else (1, 0, cell_text(value))

    return sorted(present, key=order, reverse=descending) + absent


def _summary_stats(values: list, prefix: str) -> dict:
    acc = of(values)
    low, high = acc.interval(t975(acc.n - 1)) if acc.n > 1 else (None, None)
    return {f"{prefix}_mean": acc.mean, f"{prefix}_sd": acc.sd, f"{prefix}_n": acc.n,
            f"{prefix}_ci95_low": low, f"{prefix}_ci95_high": high}


def group_rows(rows: list, keys: Sequence[str]) -> list:
    """Per distinct value of keys: runs, and mean/sd/n/t-interval over runs of avg_reward and of the
    per-run results mean."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(cell_text(row.get(k)) for k in keys), []).append(row)
    out = []
    for members in groups.values():
        group = {k: members[0].get(k) for k in keys}
        group["runs"] = len(members)
        group.update(_summary_stats([r["avg_reward"] for r in members if r.get("avg_reward") is not None],
                                    "avg_reward"))
        group.update(_summary_stats([r["mean"] for r in members if r.get("mean") is not None], "results"))
        out.append(group)
    return out


# ---------------------------------------------------------------- comparison


def example_rewards(path: str, run_id: str) -> dict:
    """{example key: (sum of rewards, count)} of a results.jsonl; ConfigError if it does not parse."""
    rewards = {}
    try:
        for key, reward in scored_lines(path, run_id):
            total, count = rewards.get(key, (0.0, 0))
            rewards[key] = (total + reward, count + 1)
    except BadJsonLine as bad:
        raise ConfigError(f"--compare: {run_id}/{RESULTS} line {bad.error['line']}: {bad.error['error']}") from None
    return rewards


def compare_runs(root: Path, run_a: str, run_b: str) -> dict:
    """The paired difference B - A on the examples both runs share (see the module docstring)."""
    per_run = []
    for run_id in (run_a, run_b):
        if not RUN_ID.match(run_id):
            raise ConfigError(f"--compare {run_id!r}: not a run id")
        path = root / run_id / RESULTS
        if not (root / run_id).is_dir():
            raise ConfigError(f"--compare: no run {run_id} under {root}")
        if not path.is_file():
            raise ConfigError(f"--compare: run {run_id} has no {RESULTS}: no per-example rewards to pair")
        per_run.append(example_rewards(str(path), run_id))
    a, b = per_run
    shared = [key for key in a if key in b]
    if not shared:
        raise ConfigError(f"--compare: runs {run_a} and {run_b} share no example ids")
    diff, mean_a, mean_b = Welford(), Welford(), Welford()
    binary, b_count, c_count = True, 0, 0
    for key in shared:
        x = a[key][0] / a[key][1]
        y = b[key][0] / b[key][1]
        diff.add(y - x)
        mean_a.add(x)
        mean_b.add(y)
        if binary and x in (0.0, 1.0) and y in (0.0, 1.0):
            b_count += x == 1.0 and y == 0.0
            c_count += x == 0.0 and y == 1.0
        else:
            binary = False
    low, high = diff.interval(t975(diff.n - 1)) if diff.n > 1 else (None, None)
    comparison = {
        "run_a": run_a, "run_b": run_b, "n": diff.n, "only_a": len(a) - diff.n, "only_b": len(b) - diff.n,
        "mean_a": mean_a.mean, "mean_b": mean_b.mean, "mean_diff": diff.mean, "sd_diff": diff.sd,
        "se_diff": diff.se, "ci95_low": low, "ci95_high": high, "binary": binary, "mcnemar": None,
    }
    if binary:
        comparison["mcnemar"] = {"b": b_count, "c": c_count, "p_value": mcnemar_exact_p(b_count, c_count)}
    return comparison


# ---------------------------------------------------------------- rendering and writing


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return cell_text(value)


def markdown_table(records: list, columns: Sequence[str]) -> str:
    # Cells are formatted here and numparse is off: tabulate's per-cell type sniffing is most of
    # its cost on 10,000 rows.
    body = [[_cell(r.get(c)) for c in columns] for r in records]
    return tabulate(body, headers=list(columns), tablefmt="github", disable_numparse=True)


def csv_text(records: list, columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record.get(c) is None else cell_text(record.get(c)) for c in columns])
    return out.getvalue().rstrip("\n")


def group_columns(keys: Sequence[str]) -> list:
    return [*keys, "runs", "avg_reward_mean", "avg_reward_sd", "avg_reward_n", "avg_reward_ci95_low",
            "avg_reward_ci95_high", "results_mean", "results_sd", "results_n"]


def _p(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def comparison_markdown(comparison: dict) -> str:
    c = comparison
    lines = [f"## Comparison: {c['run_b']} - {c['run_a']}", "",
             f"- shared examples: {c['n']} (only in {c['run_a']}: {c['only_a']}, only in {c['run_b']}: {c['only_b']})",
             f"- mean {c['run_a']}: {_p(c['mean_a'])}, mean {c['run_b']}: {_p(c['mean_b'])}",
             f"- mean difference (B - A): {_p(c['mean_diff'])}, 95% interval "
             f"[{_p(c['ci95_low'])}, {_p(c['ci95_high'])}] (mean +/- 1.96 * sd / sqrt(n))"]
    if c["mcnemar"]:
        m = c["mcnemar"]
        lines.append(f"- McNemar exact test: b (A right, B wrong) = {m['b']}, c (A wrong, B right) = {m['c']}, "
                     f"p = {m['p_value']:.4g}")
    else:
        lines.append("- McNemar: not applicable (rewards are not all 0/1)")
    return "\n".join(lines)


def report_markdown(doc: dict) -> str:
    parts = [f"# Report: {doc['root']}", ""]
    count = f"{doc['count']} run{'s' if doc['count'] != 1 else ''}"
    if doc["count"] != doc["total"]:
        count += f" of {doc['total']} (filtered)"
    if doc["errors"]:
        count += f", {len(doc['errors'])} error{'s' if len(doc['errors']) != 1 else ''}"
    if doc["failed"]:
        count += f", {len(doc['failed'])} with ok: false ({', '.join(doc['failed'][:10])}" + \
                 (", ..." if len(doc["failed"]) > 10 else "") + ")"
    parts += [count, ""]
    if doc["rows"]:
        parts += [markdown_table(doc["rows"], doc["columns"]), "",
                  f"mean, se, ci95: {INTERVALS['runs']}.", ""]
    if doc.get("groups") is not None:
        keys = doc["group_by"]
        parts += [f"## Groups by {', '.join(keys)}", "", markdown_table(doc["groups"], group_columns(keys)), "",
                  f"sd: sample standard deviation over runs; ci95: {INTERVALS['groups']}.", ""]
    if doc.get("comparison") is not None:
        parts += [comparison_markdown(doc["comparison"]), ""]
    if doc["errors"]:
        parts += ["## Errors", ""]
        for e in doc["errors"]:
            where = e["file"] + (f" line {e['line']}" if e.get("line") else "") + \
                    (f" column {e['column']}" if e.get("column") else "")
            parts.append(f"- {e['run_id']}: {where}: {e['error']}")
        parts.append("")
    return "\n".join(parts)


def require_matplotlib():
    """matplotlib.pyplot on the Agg backend, or exit 2 with the install command."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(f"--plot needs matplotlib, which is not installed: {PLOT_INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_report(doc: dict, path: Path) -> None:
    """A PNG bar chart: each group's mean avg_reward (else each run's mean reward, else its
    avg_reward) with its 95% interval as error bars where there is one."""
    plt = require_matplotlib()
    bars = []
    if doc.get("groups") is not None:
        for g in doc["groups"]:
            label = " / ".join(cell_text(g[k]) for k in doc["group_by"])
            for prefix in ("avg_reward", "results"):
                if g[f"{prefix}_mean"] is not None:
                    bars.append((label, g[f"{prefix}_mean"], g[f"{prefix}_ci95_low"], g[f"{prefix}_ci95_high"]))
                    break
        ylabel = "mean over runs (95% interval, Student's t)"
    else:
        for r in doc["rows"]:
            if r.get("mean") is not None:
                bars.append((r["run_id"], r["mean"], r["ci95_low"], r["ci95_high"]))
            elif r.get("avg_reward") is not None:
                bars.append((r["run_id"], r["avg_reward"], None, None))
        ylabel = "mean reward (95% interval, normal approximation)"
    if not bars:
        raise ConfigError("--plot: no run or group has a mean reward to plot")
    labels = [b[0] for b in bars]
    heights = [b[1] for b in bars]
    low = [b[1] - b[2] if b[2] is not None else 0.0 for b in bars]
    high = [b[3] - b[1] if b[3] is not None else 0.0 for b in bars]
    figure, axes = plt.subplots(figsize=(min(48.0, max(6.0, 0.45 * len(bars) + 2)), 4.8))
    try:
        axes.bar(range(len(bars)), heights, yerr=[low, high], capsize=3, color="#4c72b0")
        axes.set_xticks(range(len(bars)))
        axes.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        axes.set_ylabel(ylabel)
        axes.set_title(f"Report: {doc['root']}", fontsize=9)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(figure)
    write_atomic(Path(path), buffer.getvalue())


# ---------------------------------------------------------------- the report


def _split_keys(text: Optional[str]) -> list:
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def build_report(root, *, group_by: Optional[str] = None, compare: Sequence[str] = (), sort: Optional[str] = None,
                 filters: Iterable[str] = ()) -> dict:
    """The report document of every run under root (nothing written; see write_report)."""
    root = checked_root(root)
    keys = _split_keys(group_by)
    if group_by is not None and not keys:
        raise ConfigError("--group-by: expected field names, e.g. model_id,env_id")
    wanted = parse_filters(filters)
    if sort is not None and not sort.lstrip("-"):
        raise ConfigError("--sort: expected a column name (prefix '-' for descending)")
    if compare and len(compare) != 2:
        raise ConfigError(f"--compare takes two run ids (RUN_A,RUN_B), got {len(compare)}")
    sort_key = sort.lstrip("-") if sort else None
    fields = list(dict.fromkeys([*keys, *(k for k, _ in wanted), *([sort_key] if sort_key else [])]))

    rows, errors, warnings = [], [], []
    runs = run_dirs(root)
    for run_id, path in runs:
        row, run_errors, warning = read_run(run_id, path, fields)
        errors.extend(run_errors)
        if warning:
            warnings.append(warning)
        if row is not None:
            rows.append(row)

    columns = [*ID_COLUMNS, *METRIC_COLUMNS]
    requested = [f for f in fields if f not in columns and f not in STAT_COLUMNS and f != "ok"]
    extras = list(dict.fromkeys(k for r in rows for k in r
                                if k not in columns and k not in STAT_COLUMNS and k != "ok" and k not in requested))
    columns += requested + extras + list(STAT_COLUMNS)
    if rows:
        # A group, filter or sort key that no run carries is a typo, not an empty answer.
        unknown = [f for f in requested if all(r.get(f) is None for r in rows)]
        for flag, names in (("--group-by", keys), ("--filter", [k for k, _ in wanted]),
                            ("--sort", [sort_key] if sort_key else [])):
            for name in names:
                if name in unknown:
                    known = ", ".join(c for c in columns if c not in unknown)
                    raise ConfigError(f"{flag} {name}: no run under {root} has that field (columns: {known})")
    total = len(rows)
    for key, value in wanted:
        rows = [r for r in rows if cell_text(r.get(key)) == value]
    if sort_key:
        rows = sort_rows(rows, sort)

    doc = {"ok": not errors and bool(rows), "root": str(root), "count": len(rows), "total": total,
           "columns": columns, "rows": rows, "errors": errors, "warnings": warnings,
           "failed": [r["run_id"] for r in rows if not r["ok"]], "intervals": INTERVALS,
           "filters": [f"{k}={v}" for k, v in wanted], "sort": sort}
    if keys:
        doc["group_by"] = keys
        doc["groups"] = group_rows(rows, keys)
    if compare:
        doc["comparison"] = compare_runs(root, compare[0], compare[1])
    if not runs:
        doc["error"] = f"no run directories under {root}"
    elif not rows and total:
        doc["error"] = "no run matches the filters"
    elif errors:
        doc["error"] = f"{len(errors)} file{'s' if len(errors) != 1 else ''} under {root} could not be read"
    doc["markdown"] = report_markdown(doc)
    return doc


def write_report(doc: dict, out_dir) -> dict:
    """Write <out_dir>/report.md and report.json atomically; record their paths in doc."""
    out_dir = Path(out_dir)
    paths = {"markdown": str(out_dir / "report.md"), "json": str(out_dir / "report.json")}
    doc["written"] = paths
    write_atomic(out_dir / "report.md", doc["markdown"].encode())
    # Compact: json's C encoder only runs without indent (10x faster on 10,000 runs); jq pretty-prints it.
    write_atomic(out_dir / "report.json", json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n")
    return paths
