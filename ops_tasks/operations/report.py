"""Report over a local root of run directories: a table of runs, per-run intervals, groups, and a
paired comparison of two runs (or two groups of runs). Plain functions over a path; nothing here
prints. The formulas are in stats.py; this module reads the runs and names what it computed.

What is measured: `--metric NAME` (default avg_reward), a numeric summary.json key (nested keys as
`last_eval.val`); per example, results.jsonl's `reward` for avg_reward, else the lines' own NAME.
Losses (loss, perplexity, error... in the name, or lower_is_better) rank and compare lowest first.

- Per run: the examples' mean with its standard error (sample sd / sqrt(n)) and a 95% interval:
  Wilson's score interval when every example scores 0 or 1, else mean +/- t(0.975, n-1) * se
  (Student's t), inside the metric's range; clustered (CR1, t(G-1)) where lines name a cluster. An example is its `id` (else `example_id`, `index`,
  the line number): its lines (rollouts) are averaged, wherever they are in the file. Streamed:
  one pass, Welford's update; where an id comes back later in the file, the examples' means that
  the same pass gathered (example_means.py: on disk in parts past 200,000 examples) are used.
- Per group (--group-by): the runs' example scores pooled, with a standard error clustered by
  example (CR1) and a t interval with (examples - 1) degrees of freedom; the number of examples
  (clusters) is shown: what the model scores on questions like these. Over the runs' summary
  values: mean, sd and a prediction interval for one more run (a new seed), from two runs up.
- Paired comparison (--compare A,B; --compare-by FIELD for groups): on the examples both share,
  the mean of B - A with mean +/- t(0.975, n-1) * sd / sqrt(n) (Student's t), McNemar's exact
  test when every paired value is 0 or 1 (else the paired t test), the minimum detectable effect
  at 80% power, and a verdict in words.
"""

import functools
import io
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, NamedTuple, Optional, Sequence

from ..tables import markdown_table as pipe_table, markdown_text as md

from ..errors import ConfigError
from ..files import write_atomic
from ..verdicts import run_verdict
from . import ranking, stats
from .costs import group_cost, price_rows, project_of, spent_text, total as total_cost, usage_of
from .example_means import Parts, RunMeans, cluster_of
from .examples import ExampleSpool, example_key
from ..names import RUN_ID
from ..runtime.contract import (DURATION, MEASURE, MOMENT, MOMENT_NAME, SUMMARY_COLUMNS, epoch_seconds,
                                natural_key as text_natural_key, summary_leaves as contract_leaves)
from .validate import (RECORD, RESULTS, BadJsonLine, RunListing, checked_root, json_error, json_lines, json_or_unreadable,
                       run_dirs, winning_attempt, with_supervisor_record)

PLOT_INSTALL = "pip install 'ops-tasks[plot]'"
ID_COLUMNS = ("run_id", "env_id", "model_id", "num_examples", "rollouts", "best_of")
METRIC_COLUMNS = ("avg_reward", "macro_avg_reward")
STAT_COLUMNS = ("mean", "se", "ci95_low", "ci95_high", "n")
DEFAULT_METRIC = "avg_reward"
# Row field -> the names it may carry in run_metadata / summary.json.
FIELD_NAMES = {"rollouts": ("rollouts_per_example", "rollouts"), "num_examples": ("num_examples",),
               "best_of": ("best_of",), "env_id": ("env_id",), "model_id": ("model_id",)}
# Summary keys that are columns already under another name, or are not measurements.
# The verdict's fields: in every row, never a table column of their own (see VERDICT_COLUMN).
VERDICT_FIELDS = ("ok", "state", "failure_class", "reason")
VERDICT_COLUMN = "state"
FACTS = "_facts"
RUN_DIRS = "_run_dirs"  # doc key: where each row's files are (the HTML reads them; never in output)  # a row's header facts, taken out of the row before it is shown
NOT_EXTRA = {"state", "failure_class", "reason", "attempt", "rollouts_per_example", "rollouts", "num_examples", "best_of", "run_id", "env_id", "model_id",
             "exit_code", "signal", *METRIC_COLUMNS, *STAT_COLUMNS}
# Words that make a metric a loss (lower is better), as whole words of its name: val_loss, eval/ppl,
# word_error_rate; never inside another word (answer_accuracy holds "wer", apples "ppl").
LOSS_WORDS = frozenset({"loss", "losses", "perplexity", "ppl", "error", "errors", "err", "mse", "rmse", "mae",
                        "nll", "bpb", "bpc", "wer", "cer", "regret", "latency"})
_NAME_WORDS = re.compile(r"[a-z]+")
ALPHA = stats.ALPHA
# The effect a "would need ~N examples" line plans for: 5% of the metric's range (or of its mean).
PLANNING_EFFECT = 0.05
# One run has no spread to estimate; from two, Student's t holds (t(0.975, 1) = 12.7: the
# prediction from two seeds is wide, and it should be: two seeds say little about a third).
MIN_RUNS_FOR_T = 2
OVER_RUNS = "pi95"  # the runs' summary values give a prediction interval for one more run, not a ci95
BAD_SAMPLES = 5  # bad reward lines named per run
MODELS_BY_TASK = ("a cell's runs' per-example scores pooled, the interval clustered by example as for groups "
                  "(one run: its own interval); without per-example scores, where one more run's summary value "
                  "would fall (a prediction interval over the runs, Student's t)")
INTERVALS = {
    "runs": "per-example scores in results.jsonl (an example's lines averaged): Wilson's score "
            "interval when every example scores 0 or 1, else mean +/- t(0.975, n-1) * se (Student's t), "
            "se = sample sd / sqrt(n); inside the metric's range (a loss has no upper bound); none where "
            "every example scores the same",
    "groups": "the group's per-example scores pooled over its runs: mean +/- t(0.975, G-1) * clustered se "
              "(CR1, clustered by example, G examples; an example is its task and id); Wilson's interval on the "
              "G examples when all score 0 or all score 1; a group of one run, that run's interval: what the "
              "model scores on questions like these. Over the runs' summary values (METRIC_pi95_*): where "
              "one more run (a new seed on these questions) would fall, mean +/- t(0.975, k-1) * sd * "
              f"sqrt(1 + 1/k) (a prediction interval, Student's t, from {MIN_RUNS_FOR_T} runs)",
    "comparison": "paired B - A on shared example ids: mean +/- t(0.975, n-1) * sd / sqrt(n) (Student's t); "
                  "McNemar's exact two-sided binomial test when every score is 0 or 1, else the paired t test; "
                  "minimum detectable effect (z_0.975 + z_0.80) * sd / sqrt(n)",
}


class Metric(NamedTuple):
    """What the report measures: a summary.json key, the per-example field of results.jsonl, and
    which way is better."""

    name: str
    field: str
    lower_is_better: bool
    cluster: str = "cluster"  # the results field that clusters examples (--cluster-by)


def metric_of(name: Optional[str] = None, lower_is_better: Optional[bool] = None,
              cluster_by: Optional[str] = None) -> Metric:
    name = (name or DEFAULT_METRIC).strip()
    if not name:
        raise ConfigError("--metric: expected a summary.json key, e.g. avg_reward or last_eval.val")
    if cluster_by is not None and not cluster_by.strip():
        raise ConfigError("--cluster-by: expected a results.jsonl field, e.g. passage_id")
    field = "reward" if name == DEFAULT_METRIC else name
    return Metric(name, field, is_loss(name) if lower_is_better is None else bool(lower_is_better),
                  (cluster_by or "cluster").strip())


def is_loss(name: str) -> bool:
    """Lower is better for a metric whose name has a loss word (LOSS_WORDS) among its words, split
    at anything not a letter and at camelCase (valLoss); an error-free rate is not one."""
    words = _NAME_WORDS.findall(re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower())
    return any(word in LOSS_WORDS for word in words) and "free" not in words


# ---------------------------------------------------------------- per-example scores


_MISSING = object()


def _number(value) -> Optional[float]:
    """A finite int/float (bools are not numbers here), else None; so is an integer past any float
    (JSON has no limit: a 400-digit one would stop every sum it entered)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return value if math.isfinite(value) else None
    except OverflowError:
        return None


def _measured(value):
    """A summary value for a metric column: a number, finite or not (_drop_non_finite names and
    blanks the others), None when it is no number at all."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if _number(value) is not None or isinstance(value, float) else math.inf


def _score(value) -> Optional[float]:
    """A per-example score: a finite number, or a bool as 0/1."""
    if type(value) is int and -(1 << 53) <= value <= 1 << 53:  # the common 0/1 reward first: exact as a float
        return float(value)
    if isinstance(value, bool):
        return float(value)
    number = _number(value)
    return None if number is None else float(number)


def lookup(record, name: str):
    """record[name], else the nested value that `a.b` names; _MISSING when there is none."""
    if not isinstance(record, dict):
        return _MISSING
    if name in record:
        return record[name]
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


class Tally:
    """Lines of a results.jsonl that carry no usable score: counted, and the first few named."""

    __slots__ = ("bad", "missing", "samples", "clustered")

    def __init__(self):
        self.bad, self.missing, self.samples, self.clustered = 0, 0, [], 0

    def add_bad(self, number: int, value) -> None:
        self.bad += 1
        if len(self.samples) < BAD_SAMPLES:
            self.samples.append(f"line {number}: {json.dumps(value)[:40]}")


def scored_lines(path: str, run_id: str, field: str = "reward", tally: Optional[Tally] = None, sink=None,
                 cluster: str = "cluster"):
    """(example key, score) of each results.jsonl line with a numeric `field`, streamed; the others
    go to tally; BadJsonLine at the first line that does not parse. sink(number, record) sees every
    line parsed (report.html's examples are taken from this one reading). A line whose `cluster`
    field holds a value keys its example as ("cluster", value, key) (tally.clustered counts them)."""
    tally = tally if tally is not None else Tally()
    for number, record in json_lines(path, run_id):
        if sink is not None:
            sink(number, record)
        value = record[field] if type(record) is dict and field in record else lookup(record, field)
        if value is _MISSING:
            tally.missing += 1
            continue
        score = value if type(value) is float and math.isfinite(value) else _score(value)  # the common case first
        if score is None:
            tally.add_bad(number, value)
            continue
        group = record.get(cluster) if type(record) is dict else None
        if group is None or group == "":
            yield example_key(record, number), score
        else:
            tally.clustered += 1
            yield ("cluster", _cluster_text(group), example_key(record, number)), score


def _cluster_text(value) -> str:
    """A cluster value as the key compares it: text as it is, 1 and "1" alike, anything else as JSON."""
    if type(value) is str:
        return value
    return str(value) if isinstance(value, (int, float)) else json.dumps(value, sort_keys=True, default=str)


def _first_pass(lines, seen: "SeenKeys", repeated: list):
    """Each stretch of consecutive lines with one example key, as its mean; `repeated` gets a key
    that may have come before (reward_stats then takes each example's mean from the means it
    gathered). One generator, not two stacked: this loop is most of a report's time."""
    current, total, count = None, 0.0, 0
    for key, score in lines:
        if key != current and count:
            if seen.add(current) and not repeated:
                repeated.append(current)
            yield total / count
            total, count = 0.0, 0
        current, total, count = key, total + score, count + 1
    if count:
        if seen.add(current) and not repeated:
            repeated.append(current)
        yield total / count


class SeenKeys:
    """A Bloom filter of example keys: no false negatives, so a key it has never seen is new for
    sure, in at most 256 KiB whatever the number of examples (a false alarm costs a pass over the
    gathered means instead of the running total)."""

    def __init__(self, size_hint: int):
        self.bits = min(1 << 21, max(1 << 13, 1 << max(0, 2 * size_hint).bit_length()))
        self.table = bytearray(self.bits // 8)

    def add(self, key) -> bool:
        """Record key; True if it may have been recorded before. Three positions from slices of one
        hash, unrolled: the filter must stay a small part of a line's cost."""
        h, mask, table = hash(key), self.bits - 1, self.table
        a, b, c = h & mask, (h >> 21) & mask, (h >> 42) & mask
        bit_a, bit_b, bit_c = 1 << (a & 7), 1 << (b & 7), 1 << (c & 7)
        a, b, c = a >> 3, b >> 3, c >> 3
        seen = table[a] & bit_a and table[b] & bit_b and table[c] & bit_c
        table[a] |= bit_a
        table[b] |= bit_b
        table[c] |= bit_c
        return bool(seen)


def _score_stats(means, loss: bool = False) -> Optional[dict]:
    acc, successes, binary = stats.Welford(), 0, True
    low, high = math.inf, -math.inf
    for value in means:
        acc.add(value)
        if value < low:
            low = value
        if value > high:
            high = value
        if value == 1.0:
            successes += 1
        elif value != 0.0:
            binary = False
    if not acc.n:
        return None
    return interval_stats(acc, successes if binary else None, stats.metric_range(low, high, loss))


NO_SPREAD = "no spread to estimate an interval from"


def interval_stats(acc: stats.Welford, successes: Optional[int], bounds: tuple) -> dict:
    """n, mean, se and the 95% interval of one run's example scores (successes: 0/1 scores only)."""
    mean, se = acc.mean, acc.se
    low = high = None
    if successes is not None:
        (low, high), method = stats.wilson(successes, acc.n), "wilson"
    elif se is None:
        method = f"too few examples ({acc.n}) for an interval" if acc.n < 2 else "the scores overflow a float"
    elif se == 0:
        method = f"every example scores the same: {NO_SPREAD}"
    else:
        (low, high), method = stats.t_interval(mean, se, acc.n - 1, bounds), "student t"
    return {"mean": stats.finite(mean), "se": stats.finite(se), "ci95_low": stats.finite(low),
            "ci95_high": stats.finite(high), "n": acc.n, "interval": method}


def reward_stats(path: str, run_id: str, field: str = "reward", sink=None,
                 means: Optional[RunMeans] = None, loss: bool = False, cluster: str = "cluster") -> tuple:
    """({n, mean, se, ci95_low, ci95_high, interval, unscored...}, error or None) of results.jsonl.

    The sample is the example: an example's lines (rollouts) count once, as their mean, wherever
    they are in the file; counting each line would shrink the interval by up to sqrt(rollouts).
    sink: see scored_lines; means: where each example's mean is gathered on the way (one is made
    when none is given). The file is read once: where an id may have come before (lines of one
    example apart, or a Bloom false positive), each example's mean is taken from those gathered.
    Where lines name a cluster (`cluster`), the interval is clustered (CR1, t with G - 1 degrees of
    freedom): questions of one passage are not independent evidence.
    """
    tally, repeated = Tally(), []
    means = means if means is not None else RunMeans()
    try:
        lines = means.add_lines(scored_lines(path, run_id, field, tally, sink, cluster))
        result = _score_stats(_first_pass(lines, SeenKeys(os.path.getsize(path)), repeated), loss)
        means.close()
        if repeated:
            result = _score_stats((value for dicts in Parts([means]) for value in dicts[0].values()), loss)
        if tally.clustered and result is not None:
            result.update(_clustered_run(means, result, cluster, loss))
    except BadJsonLine as bad:
        return None, bad.error
    except OSError as exc:
        return None, json_error(run_id, RESULTS, exc)
    if result is None and not tally.bad:
        if tally.missing and field == "reward":  # rewards named otherwise (score?): say so, not a blank row
            return {**dict.fromkeys(STAT_COLUMNS), "unscored": tally.missing,
                    "unscored_lines": f"no line of {tally.missing} has a {field}: no per-example statistics"}, None
        return None, None
    result = result or dict.fromkeys(STAT_COLUMNS)
    unscored = tally.bad + (tally.missing if result["n"] else 0)
    if unscored:
        result.update(unscored=unscored, unscored_lines=_unscored_text(tally, field, bool(result["n"])))
    return result, None


def _clustered_run(means: RunMeans, result: dict, cluster: str, loss: bool) -> dict:
    """A run's mean over its examples with the interval clustered by `cluster` (CR1 over the
    clusters' sums of example means, t with G - 1 degrees of freedom), in place of Wilson's or the
    t over examples, which take a passage's questions as independent."""
    def clusters():
        for dicts in Parts([means]):
            yield _sum_by_key([dicts[0]], cluster_of).values()

    pooled_result = stats.clustered_in_parts(clusters)
    groups, se = pooled_result["clusters"], pooled_result["se"]
    low = high = None
    if se is None or not math.isfinite(se):
        method = f"too few clusters ({groups}) of {cluster} for an interval"
    elif se == 0:
        method = f"every cluster of {cluster} scores the same: {NO_SPREAD}"
    else:
        bounds = stats.metric_range(*_score_range(means), loss)
        low, high = stats.t_interval(pooled_result["mean"], se, groups - 1, bounds)
        method = f"clustered by {cluster}, {groups} clusters"
    return {"se": stats.finite(se), "ci95_low": stats.finite(low), "ci95_high": stats.finite(high),
            "interval": method, "clusters": groups}


def _score_range(means: RunMeans) -> tuple:
    low, high = math.inf, -math.inf
    for dicts in Parts([means]):
        for value in dicts[0].values():
            low, high = min(low, value), max(high, value)
    return low, high


def _unscored_text(tally: Tally, field: str, partial: bool) -> str:
    parts = []
    if tally.bad:
        parts.append(f"{tally.bad} with a {field} that is not a number ({', '.join(tally.samples)}"
                     + (", ..." if tally.bad > len(tally.samples) else "") + ")")
    if partial and tally.missing:
        parts.append(f"{tally.missing} without a {field}")
    return "; ".join(parts) + ": left out of n and the mean"


def example_means(path: str, run_id: str, field: str = "reward", folder: Optional[str] = None,
                  cluster: str = "cluster") -> RunMeans:
    """The mean score of each example's lines in a results.jsonl (spilled to parts under folder
    when they are many: example_means.py); BadJsonLine if it does not parse."""
    means = RunMeans(folder)
    for _ in means.add_lines(scored_lines(path, run_id, field, cluster=cluster)):
        pass
    return means.close()


# ---------------------------------------------------------------- reading runs


def _sources(metadata, summary) -> list:
    """Where run fields are looked up, first match wins: run_metadata.json (top level, config,
    dataset, decoding, meta), then summary.json's own `run_metadata` object likewise, then summary.json."""
    found = []
    record = metadata.get("ops") if isinstance(metadata, dict) else None  # validate.with_supervisor_record
    for meta in (metadata, record, (summary or {}).get("run_metadata")):
        if isinstance(meta, dict):
            found.append(meta)
            found.extend(meta[key] for key in ("config", "dataset", "decoding", "meta")
                         if isinstance(meta.get(key), dict))
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


def _load_object(listing: RunListing, run_id: str, file: str) -> tuple:
    value, error = listing.load_json(file, run_id)
    if error is None and not isinstance(value, dict):
        error = {"run_id": run_id, "file": file, "line": 1, "column": 1,
                 "error": f"not a JSON object ({type(value).__name__})"}
    return (None, error) if error else (value, None)


GIT_COMMIT = re.compile(r"[0-9a-f]{7,64}")  # from the pod: anything else is not shown as a commit


def _facts(sources: list, metadata) -> dict:
    """What the report's header says of a run: sampling settings and the pod repo's commit."""
    git = metadata.get("git") if isinstance(metadata, dict) else None
    if not isinstance(git, dict) and isinstance(metadata, dict) and isinstance(metadata.get("ops"), dict):
        git = metadata["ops"].get("git")  # a script's own run_metadata.json: the supervisor's record has it
    commit = git.get("commit") if isinstance(git, dict) else None
    return {"temperature": _field(sources, ("temperature",)), "max_tokens": _field(sources, ("max_tokens",)),
            "commit": commit if isinstance(commit, str) and GIT_COMMIT.fullmatch(commit) else None,
            "dirty": is_dirty(git.get("dirty")) if isinstance(git, dict) else False}


YES, NO = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def yes_no(value) -> Optional[bool]:
    """True or False for a boolean, or its spelling as text ("false", "0", "no", "off"...); None otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in YES else False if text in NO else None


def is_dirty(value) -> bool:
    """A run_metadata git.dirty: true, 1 or "true"; also any other text (`git status` lines a script
    wrote); not false, 0, "false", "no", "" or null (scripts write booleans as text: train.py's "false")."""
    if value is None or value == "" or value == 0:
        return False
    known = yes_no(value)
    return True if known is None else known


def read_run(run_id: str, path: str, fields: Sequence[str] = (), metric: Optional[Metric] = None,
             include_failed: bool = False, listing: Optional[RunListing] = None,
             spool: Optional[ExampleSpool] = None) -> tuple:
    """(row or None, [errors], [warnings]) of one run directory. `fields` are extra run fields
    (group, filter and sort keys) looked up like the identity columns. The row carries the run's
    verdict (state, failure_class, ok); a run that did not succeed has no per-example statistics
    (its results.jsonl is partial, or an earlier attempt's) unless include_failed. spool: keep
    what the results read tell of each example (its mean; for report.html its text)."""
    metric = metric or metric_of()
    errors, warnings = [], []
    listing = listing or RunListing(path)
    status = json_or_unreadable(listing, "status.json", run_id)
    if listing.is_file("summary.json"):
        summary, error = _load_object(listing, run_id, "summary.json")
        if error:
            return None, [error], warnings
    elif status is None or run_verdict(status, None).ok:
        return None, [{"run_id": run_id, "file": "summary.json", "line": None, "column": None,
                       "error": "missing (run not finished, or not fetched)"}], warnings
    else:  # queued, running, lost, failed before it wrote one: the supervisor's status says which
        summary = None
    metadata = None
    if listing.is_file("run_metadata.json"):
        metadata, error = _load_object(listing, run_id, "run_metadata.json")
        errors.extend([error] if error else [])
    else:
        warnings.append({"run_id": run_id, "file": "run_metadata.json",
                         "warning": "missing: fields from summary.json only"})
    if listing.has(RECORD[0]):
        metadata = with_supervisor_record(metadata, path, run_id)
    sources = _sources(metadata, summary)
    row = _row_of(run_id, summary or {}, sources, fields, metric)
    verdict = run_verdict(status, summary)
    row.update(ok=verdict.ok, state=verdict.state, failure_class=verdict.failure_class, reason=verdict.reason)
    row[FACTS] = _facts(sources, metadata)
    # What the run's cost is worked out from, once its submission's price is looked up (build_report).
    row[FACTS]["usage"] = usage_of(status, metadata.get("ops") if isinstance(metadata, dict) else None)
    warnings.extend(_drop_non_finite(row))
    results = os.path.join(path, RESULTS)
    scored = listing.is_file(RESULTS) and (verdict.ok or include_failed)
    collector, means = (spool.collector(run_id, metric.field), spool.means_collector()) if scored and spool \
        else (None, None)
    run_stats, error = reward_stats(results, run_id, metric.field, collector, means, metric.lower_is_better,
                                    metric.cluster) if scored else (None, None)
    errors.extend([error] if error else [])
    if run_stats is not None and run_stats["n"] is not None:  # the row has statistics: its examples count
        if means is not None:
            spool.keep_means(run_id, means)
        if collector is not None:
            spool.keep(collector)
    if run_stats and run_stats.get("unscored"):
        warnings.append({"run_id": run_id, "file": RESULTS, "warning": run_stats.pop("unscored_lines")})
    row.update(run_stats or dict.fromkeys(STAT_COLUMNS))
    bounds = missing_bounds(row, metric)
    if bounds:
        row["missing_bounds"] = bounds["bounds"]
        warnings.append({"run_id": run_id, "file": RESULTS, "warning": bounds["text"]})
    return row, errors, warnings


def missing_bounds(row: dict, metric: Metric) -> Optional[dict]:
    """What the run's mean could be had its missing examples been scored: every one at the metric's
    worst and at its best (0 and 1 for a score in [0, 1]). Missing: examples the run's
    num_examples counts beyond n, else its unscored lines (NaN, not a number). Said only when it
    matters: the bounds reach beyond the run's 95% interval (sampling error is not the larger doubt)."""
    n, mean = row.get("n"), row.get("mean")
    if not n or mean is None:
        return None
    expected = row.get("num_examples")
    missing = expected - n if type(expected) is int and expected > n else row.get("unscored") or 0
    if not missing:
        return None
    low, high = (0.0, 1.0) if 0.0 <= (row.get("ci95_low") or mean) and (row.get("ci95_high") or mean) <= 1.0 \
        else (None, None)
    if low is None:
        return None  # an unbounded metric: no worst or best case to bound it by
    total = mean * n
    bounds = ((total + missing * low) / (n + missing), (total + missing * high) / (n + missing))
    interval = (row.get("ci95_low"), row.get("ci95_high"))
    if interval[0] is not None and interval[0] <= bounds[0] and bounds[1] <= interval[1]:
        return None
    return {"bounds": [bounds[0], bounds[1]],
            "text": f"{missing} of {n + missing} examples have no {metric.field}: the mean {mean:.3g} of the {n} "
                    f"scored could be anywhere in [{bounds[0]:.3g}, {bounds[1]:.3g}] had they been scored (all "
                    f"{low:g}: {bounds[0]:.3g}; all {high:g}: {bounds[1]:.3g}), wider than its 95% interval"}


def _row_of(run_id: str, summary: dict, sources: list, fields: Sequence[str], metric: Metric) -> dict:
    row = {"run_id": run_id}
    for column in ID_COLUMNS[1:]:
        row[column] = _field(sources, FIELD_NAMES[column])
    for column in METRIC_COLUMNS:
        row[column] = _measured(summary.get(column))
    if metric.name not in row:
        value = lookup(summary, metric.name)
        row[metric.name] = None if value is _MISSING else _measured(value)
    for name in fields:
        if name not in row:
            row[name] = _field(sources, (name,))
            # A nested key (--sort last_eval.val, --group-by config.lr): the summary's, else the metadata's.
            for source in ([summary, *sources] if row[name] is None and "." in name else ()):
                nested = lookup(source, name)
                if nested is not _MISSING and not isinstance(nested, (dict, list)) and nested is not None:
                    row[name] = nested
                    break
    for key, value in summary_columns(summary):
        key = f"summary.{key}" if key in PRICED else key  # the run's own cost measure is not its price
        if key not in row:
            row[key] = value
    return row


PRICED = ("cost", "cost_per_correct")  # what costs.price_rows and group_cost write in a row
# A run's summary values shown as columns: the pod's rule (runtime.contract.summary_leaves, also
# runs.status's columns), without what is a column of the report already (NOT_EXTRA).
_NOT_LEAF_COLUMNS = frozenset(NOT_EXTRA)


def summary_columns(summary: dict, limit: int = SUMMARY_COLUMNS) -> list:
    """[(name, number)] of a summary's measurements, then its times and durations, as columns
    (contract.summary_leaves; a version is none)."""
    return contract_leaves(summary, limit, _NOT_LEAF_COLUMNS, (MEASURE, MOMENT, DURATION))


def _drop_non_finite(row: dict) -> list:
    """NaN and Infinity (which Python's json reads) become null: JSON output must stay JSON."""
    notes = []
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
            notes.append({"run_id": row["run_id"], "file": "summary.json",
                          "warning": f"{key} is not a finite number: shown as null"})
    return notes


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
    """A field as text: JSON spelling for bools, '' for missing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def matches(value, wanted: str) -> bool:
    """--filter's test: the same text, or the same number (temperature=0 matches 0.0)."""
    if cell_text(value) == wanted:
        return True
    number = _number(value)
    if number is None:
        return False
    try:
        return float(wanted) == number
    except ValueError:
        return False


def sort_rows(rows: list, key: str) -> list:
    """By `key` ascending, `-key` descending; missing values last either way."""
    descending = key.startswith("-")
    name = key[1:] if descending else key
    present = [r for r in rows if r.get(name) is not None]
    absent = [r for r in rows if r.get(name) is None]

    def order(row):  # numbers first, by value; then text, naturally (Qwen3-4B before Qwen3-32B)
        value = row[name]
        number = _number(value)
        return (0, number, ()) if number is not None else (1, 0, natural_order(value))

    return sorted(present, key=order, reverse=descending) + absent


def best_first(metric: Metric, column: str) -> str:
    """The --sort key that ranks `column` of this metric best first."""
    return column if metric.lower_is_better else f"-{column}"


def over_runs(values: list, prefix: str, loss: bool = False) -> dict:
    """mean, sd, n of one summary value over a group's runs, and the 95% prediction interval of one
    more run's value (a new seed on these questions: its own spread plus the mean's, Student's t).
    Not a confidence interval of the model's score: that is the pooled one (results_ci95_*),
    over examples; a ci95 of the runs' mean would cover only this question set's mean."""
    acc = stats.of(values)
    low = high = None
    if acc.n < MIN_RUNS_FOR_T:
        method = f"too few runs ({acc.n}) to predict another"
    elif acc.sd is None:
        method = "the values overflow a float"
    elif acc.sd == 0:
        method = f"the runs agree exactly: {NO_SPREAD}"
    else:
        low, high = stats.clip(*stats.prediction_interval(values), stats.metric_range(min(values), max(values), loss))
        method = f"student t prediction of one more run from {acc.n} runs"
    return {f"{prefix}_mean": acc.mean, f"{prefix}_sd": acc.sd, f"{prefix}_n": acc.n,
            f"{prefix}_{OVER_RUNS}_low": low, f"{prefix}_{OVER_RUNS}_high": high, f"{prefix}_interval": method}


def interval_keys(prefix: str) -> tuple:
    """The low and high keys of a group's interval: pooled examples' ci95, or the runs' pi95."""
    kind = "ci95" if prefix == "results" else OVER_RUNS
    return f"{prefix}_{kind}_low", f"{prefix}_{kind}_high"


def pooled(parts: Parts, loss: bool = False, clustered_by: str = "example") -> dict:
    """Per-example scores of several runs pooled, with the SE clustered by example (or by the
    examples' cluster where they name one: clustered_by says which). parts: the runs' {example:
    score}, part by part (read again for each pass when they are many)."""
    def clusters():
        for dicts in parts:
            yield _sum_by_key(dicts, cluster_of).values()

    held = list(clusters()) if parts.single else None
    again = (lambda: held) if held is not None else clusters
    result = stats.clustered_in_parts(again)
    if not result["clusters"]:
        return dict.fromkeys(("results_mean", "results_se", "results_ci95_low", "results_ci95_high",
                              "results_clusters", "results_n", "results_interval"))
    mean, se, groups = result["mean"], result["se"], result["clusters"]
    low = high = None
    if se is None:
        method = f"too few examples ({groups}) for an interval"
    elif not math.isfinite(se) or mean is None or not math.isfinite(mean):
        method = "the scores overflow a float"
    elif se == 0 and mean in (0.0, 1.0) and all(v in (0.0, 1.0) for dicts in parts for d in dicts
                                                for v in d.values()):
        # Every score 0, or every score 1: clustering has no spread to work with, Wilson does.
        (low, high), method = stats.wilson(groups if mean == 1.0 else 0, groups), f"wilson on {groups} examples"
    elif se == 0:
        method = f"every example's pooled score is the same: {NO_SPREAD}"
    else:
        low, high = math.inf, -math.inf
        for part in again():
            for total, count in part:
                low, high = min(low, total / count), max(high, total / count)
        bounds = stats.metric_range(low, high, loss)
        low, high = stats.t_interval(mean, se, groups - 1, bounds)
        method = f"clustered by {clustered_by}, {groups} clusters"
    return {"results_mean": mean, "results_se": se, "results_ci95_low": low, "results_ci95_high": high,
            "results_clusters": groups, "results_n": result["n"], "results_interval": method}


def _run_means(members: list, results: dict, metric: Metric, spool: Optional[ExampleSpool] = None,
               by_task: bool = False) -> Parts:
    """The member runs' example means (kept by the reading, else read again), skipping runs
    without (readable) results; by_task: keyed by (env_id, example)."""
    runs, keyed = [], []
    for row in members:
        path = results.get(row["run_id"])
        if path is None or row.get("n") is None:
            continue
        means = spool.means(row["run_id"]) if spool is not None else None
        if means is None:
            try:
                means = example_means(path, row["run_id"], metric.field, spool.folder if spool else None,
                                      metric.cluster)
            except (BadJsonLine, OSError):
                continue  # listed under errors already
        runs.append(means)
        keyed.append(functools.partial(_keyed_by_task, row) if by_task else _same)
    return Parts(runs, keyed)


def _same(means: dict) -> dict:
    return means


def _uncertainty(parts: Parts) -> Optional[str]:
    """Where a group's uncertainty comes from, for two runs up on shared examples held in memory:
    its question and seed parts and the advice they imply (stats.variance_split, Miller sec. 3, 5).
    Where examples name clusters, a cluster's mean in each run is the unit (the questions of a
    passage share its difficulty: the question part is the passages')."""
    if len(parts.runs) < 2 or not parts.single:
        return None
    scores, clustered = {}, False
    for dicts in parts:
        for means in dicts:
            for cluster, (total, count) in _sum_by_key([means], cluster_of).items():
                scores.setdefault(cluster, []).append(total / count)
                clustered = clustered or count > 1
    split = stats.variance_split(scores)
    if split is None or split["seed_share"] is None:
        return None
    unit = "clusters" if clustered else "questions"
    left = f" ({split['left_out']} {unit} with one run left out)" if split["left_out"] else ""
    return stats.more_seeds_or_questions(split, unit) + left


def _spans_tasks(members: list) -> bool:
    """Runs of several tasks may number their examples alike (q0, q1...): an example is (task, id) then."""
    return len({value_key(r.get("env_id")) for r in members}) > 1


def _keyed_by_task(row: dict, means: dict) -> dict:
    task = cell_text(row.get("env_id"))
    return {("task", task, key): value for key, value in means.items()}


def group_rows(rows: list, keys: Sequence[str], metric: Optional[Metric] = None, results: Optional[dict] = None,
               spool: Optional[ExampleSpool] = None) -> list:
    """Per distinct value of keys: runs; over the runs, mean/sd/n/t-interval of the summary metric;
    pooled over the runs' examples, the mean with a clustered interval."""
    metric = metric or metric_of()
    groups = {}
    for row in rows:
        groups.setdefault(tuple(value_key(row.get(k)) for k in keys), []).append(row)
    out = []
    for members in groups.values():
        group = {k: members[0].get(k) for k in keys}
        group["runs"] = len(members)
        group.update(over_runs([r[metric.name] for r in members if r.get(metric.name) is not None], metric.name,
                               metric.lower_is_better))
        parts = _run_means(members, results or {}, metric, spool, _spans_tasks(members))
        group.update(pooled(parts, metric.lower_is_better,
                            metric.cluster if any(r.get("clusters") for r in members) else "example"))
        group["uncertainty"] = _uncertainty(parts)
        scored = [r for r in members if r.get("n") is not None]
        if len(scored) == 1 and group["results_mean"] is not None:  # one run: its own interval, as its row shows
            group.update(results_ci95_low=scored[0]["ci95_low"], results_ci95_high=scored[0]["ci95_high"],
                         results_interval=f"one run: {scored[0]['interval']}")
        group.update(group_cost(members))
        out.append({k: stats.finite(v) for k, v in group.items()})
    return out


def value_key(value):
    """What groups and lists of distinct values compare a field by: a number by its value (0 and
    0.0 are one temperature), anything else by its text."""
    if type(value) is str:
        return ("text", value)
    number = _number(value)
    return ("number", float(number)) if number is not None else ("text", cell_text(value))


# ---------------------------------------------------------------- comparison


def _run_results(root: Path, run_id: str, dirs: Optional[dict] = None) -> Path:
    """The results.jsonl --compare pairs for a run id: its winning attempt's (dirs), refused for a
    run that did not succeed (dirs maps it to why)."""
    if not RUN_ID.match(run_id):
        raise ConfigError(f"--compare {run_id!r}: not a run id")
    if not (root / run_id).is_dir():
        raise ConfigError(f"--compare: no run {run_id} under {root}")
    where = (dirs or {}).get(run_id, str(root / run_id))
    if dirs is not None and run_id not in dirs:
        raise ConfigError(f"--compare: run {run_id} is not in the report's scope")
    if not os.path.isdir(where):
        raise ConfigError(f"--compare: run {run_id} is {where}: not compared (--include-failed compares it)")
    path = Path(where) / RESULTS
    if not path.is_file():
        raise ConfigError(f"--compare: run {run_id} has no {RESULTS}: no per-example rewards to pair")
    return path


def _means_or_refuse(path: Path, run_id: str, metric: Metric, spool: Optional[ExampleSpool] = None) -> RunMeans:
    kept = spool.means(run_id) if spool is not None else None
    if kept is not None:
        return kept
    try:
        return example_means(str(path), run_id, metric.field, spool.folder if spool else None, metric.cluster)
    except BadJsonLine as bad:
        raise ConfigError(f"--compare: {run_id}/{RESULTS} line {bad.error['line']}: {bad.error['error']}") from None


def compare_runs(root: Path, run_a: str, run_b: str, metric: Optional[Metric] = None,
                 dirs: Optional[dict] = None, spool: Optional[ExampleSpool] = None) -> dict:
    """The paired difference B - A on the examples both runs share (see the module docstring)."""
    metric = metric or metric_of()
    paths = [_run_results(root, run_id, dirs) for run_id in (run_a, run_b)]
    a, b = (_means_or_refuse(path, run_id, metric, spool) for path, run_id in zip(paths, (run_a, run_b)))
    for run_id, means in ((run_a, a), (run_b, b)):
        if not means.count:
            raise ConfigError(f"--compare: run {run_id} has no per-example {metric.field} in its {RESULTS}")
    comparison = paired(lambda: Parts([a, b]), run_a, run_b, metric,
                        cluster_of=cluster_of if a.clustered or b.clustered else None)
    if not comparison["n"]:
        raise ConfigError(f"--compare: runs {run_a} and {run_b} share no example ids")
    return comparison


STRATA = ("model_id", "env_id")  # what --compare-by pairs within, beside the report's --group-by keys


def compare_groups(root: Path, rows: list, by: str, value_a: str, value_b: str,
                   metric: Optional[Metric] = None, dirs: Optional[dict] = None,
                   spool: Optional[ExampleSpool] = None, strata: Sequence[str] = ()) -> dict:
    """B - A where A and B are the runs whose `by` field reads value_a and value_b, like with like:
    runs are paired within strata (model, task and the report's --group-by keys other than `by`), an
    example of a stratum scored on each side as its mean over that side's runs there (seeds). A
    stratum one side has and the other lacks is left out and named (pooling it would compare mixes
    of models, not values of `by`); none shared is refused. Over several strata, the differences are
    clustered by example id (one question answered by several models is one cluster)."""
    metric = metric or metric_of()
    keys = [k for k in dict.fromkeys([*STRATA, *strata]) if k != by]
    sides = []
    for value in (value_a, value_b):
        members = [r for r in rows if matches(r.get(by), value) and r.get("n")]
        if not members:
            raise ConfigError(f"--compare-by {by}: no run with {by}={value} has per-example results")
        by_stratum = {}
        for row in members:
            by_stratum.setdefault(tuple(value_key(row.get(k)) for k in keys), []).append(row)
        sides.append(by_stratum)
    left_out = _unmatched(by, keys, (value_a, value_b), sides)
    strata_order = [stratum for stratum in sides[0] if stratum in sides[1]]
    if not strata_order:
        raise ConfigError(f"--compare-by {by}: {value_a} and {value_b} share no stratum of {', '.join(keys)} "
                          f"({'; '.join(left_out[:4])}): a comparison across them would compare mixes, not {by}")
    runs, keyed, where = [], [], []  # where: (side, stratum index) of each run
    for side, by_stratum in enumerate(sides):
        for index, stratum in enumerate(strata_order):
            for row in by_stratum[stratum]:
                runs.append(_means_or_refuse(Path((dirs or {}).get(row["run_id"], root / row["run_id"])) / RESULTS,
                                             row["run_id"], metric, spool))
                keyed.append(functools.partial(_in_stratum, index))
                where.append(side)

    def pairs():  # each side's (stratum, example) means, part by part
        for dicts in Parts(runs, keyed):
            yield tuple(_side_means([d for d, s in zip(dicts, where) if s == side]) for side in (0, 1))

    clustered = len(strata_order) > 1 or any(r.get("clusters") for side in sides for m in side.values() for r in m)
    comparison = paired(pairs, value_a, value_b, metric, cluster_of=cluster_of if clustered else None)
    if not comparison["n"]:
        raise ConfigError(f"--compare-by {by}: {value_a} and {value_b} share no example ids")
    comparison.update(compare_by=by, strata=len(strata_order), stratified_by=keys, strata_left_out=left_out)
    return comparison


def compare_several(root: Path, rows: list, by: str, metric: Metric, dirs: Optional[dict] = None,
                    spool: Optional[ExampleSpool] = None, strata: Sequence[str] = (),
                    baseline: Optional[str] = None, margin: Optional[float] = None) -> dict:
    """Every value of `by` against every other (or each against `baseline`), each pair as
    compare_groups pairs it (like with like, on the examples it shares), read as one family:
    Holm's correction, a ranking that says which places are certain, and with a margin, which
    pairs are equal within it (ranking.py). A pair with nothing in common is left out and named."""
    seen = {}
    for row in rows:
        if row.get("n") and row.get(by) is not None:
            seen.setdefault(value_key(row[by]), cell_text(row[by]))
    values = sorted(seen.values(), key=natural_order)
    if baseline is not None and not any(matches(v, baseline) for v in values):
        raise ConfigError(f"--baseline {baseline}: no run with {by}={baseline} has per-example results "
                          f"(values of {by}: {', '.join(values[:8]) or '-'})")
    if len(values) < 2:
        raise ConfigError(f"--compare-by {by}: {len(values)} value(s) with per-example results, two or more needed")
    if baseline is not None:
        base = next(v for v in values if matches(v, baseline))
        pairs = [(base, v) for v in values if v != base]
    else:
        pairs = [(a, b) for i, a in enumerate(values) for b in values[i + 1:]]
    comparisons, left_out = [], []
    for a, b in pairs:
        try:
            comparisons.append(compare_groups(root, rows, by, a, b, metric, dirs, spool, strata))
        except ConfigError as refused:
            left_out.append(f"{a} vs {b}: {refused}")
    if not comparisons:
        raise ConfigError(f"--compare-by {by}: no pair of values could be compared ({'; '.join(left_out[:2])})")
    result = ranking.several(comparisons, baseline=base if baseline is not None else None, margin=margin)
    result.update(compare_by=by, left_out=left_out)
    return result


def several_markdown(result: dict) -> str:
    """The several-values section; every name (values of the field) as inert text."""
    family = md(result["family"])
    lines = [md(line) for line in ranking.several_lines(result)]
    lines += [f"left out: {md(line)}" for line in result.get("left_out", [])]
    return "\n".join([f"## Compared by {md(result['compare_by'])}: {family} ({md(result['metric'])})", "",
                      *(f"- {line}" for line in lines)])


def _in_stratum(index: int, means: dict) -> dict:
    return {("stratum", index, key): value for key, value in means.items()}


def _unmatched(by: str, keys: list, values: tuple, sides: list) -> list:
    """The strata one side ran and the other did not, named ("env_id=gsm8k: only model_id=A")."""
    return [f"{', '.join(f'{k}={cell_text(v[1])}' for k, v in zip(keys, stratum)) or 'all runs'}: "
            f"only {by}={values[side]}" for side in (0, 1) for stratum in sides[side] if stratum not in sides[1 - side]]


def _side_means(dicts: list) -> dict:
    return {key: total / count for key, (total, count) in _sum_by_key(dicts).items()}


def _sum_by_key(dicts: Iterable[dict], key_of=None) -> dict:
    """{key: (sum, count)} of the dicts' values; key_of(key) groups keys (cluster_of: by cluster)."""
    sums = {}
    for values in dicts:
        for key, value in values.items():
            key = key_of(key) if key_of is not None else key
            total, count = sums.get(key, (0.0, 0))
            sums[key] = (total + value, count + 1)
    return sums


def paired(parts, name_a: str, name_b: str, metric: Metric, cluster_of=None) -> dict:
    """The paired comparison of two {example: score} on their shared keys. parts(): the two, as
    (a, b) pairs of dicts part by part (one pair when they fit in memory). cluster_of(key): the
    cluster of a key (a part holds whole clusters): the interval and test are then clustered (CR1,
    t with clusters - 1 degrees of freedom), not McNemar's or the paired t."""
    diff, mean_a, mean_b = stats.Welford(), stats.Welford(), stats.Welford()
    binary, b_count, c_count = True, 0, 0
    low_value, high_value = math.inf, -math.inf
    size_a = size_b = 0
    for a, b in parts():
        size_a, size_b = size_a + len(a), size_b + len(b)
        for key in a:
            if key not in b:
                continue
            x, y = a[key], b[key]
            diff.add(y - x)
            mean_a.add(x)
            mean_b.add(y)
            low_value, high_value = min(low_value, x, y), max(high_value, x, y)
            if binary and x in (0.0, 1.0) and y in (0.0, 1.0):
                b_count += x == 1.0 and y == 0.0
                c_count += x == 0.0 and y == 1.0
            else:
                binary = False
    bounds = stats.metric_range(low_value, high_value, metric.lower_is_better)
    comparison = {
        "run_a": name_a, "run_b": name_b, "metric": metric.name, "lower_is_better": metric.lower_is_better,
        "n": diff.n, "only_a": size_a - diff.n, "only_b": size_b - diff.n,
        "mean_a": mean_a.mean, "mean_b": mean_b.mean, "mean_diff": diff.mean, "sd_diff": diff.sd,
        "se_diff": diff.se, "ci95_low": None, "ci95_high": None, "binary": binary, "mcnemar": None,
        "test": None, "p_value": None, "mde80": None, "target_effect": None, "examples_needed": None,
        "clusters": None,
    }
    if diff.n > 1 and diff.sd == 0:  # the same difference on every shared example: nothing to test it against
        comparison["test"] = "none: every shared example differs by exactly the same amount"
    elif diff.n > 1 and diff.sd is not None:
        critical = stats.t975(diff.n - 1)
        low, high = diff.interval(critical)
        comparison["ci95_low"], comparison["ci95_high"] = stats.clip(low, high, stats.difference_range(bounds))
        comparison["test"], comparison["p_value"] = "paired t", stats.t_test_p(diff.mean, diff.se, diff.n - 1)
        comparison.update(_power(bounds, mean_a.mean, mean_b.mean, sd=diff.sd, n=diff.n))
    if cluster_of is not None:
        comparison.update(_clustered_difference(parts, cluster_of, bounds, mean_a.mean, mean_b.mean))
    elif binary and diff.n:
        p_value = stats.mcnemar_exact_p(b_count, c_count)
        comparison["mcnemar"] = {"b": b_count, "c": c_count, "p_value": p_value}
        comparison["test"], comparison["p_value"] = "mcnemar exact", p_value
        comparison.update(_power(bounds, mean_a.mean, mean_b.mean, n=diff.n, discordant=(b_count + c_count) / diff.n))
    comparison = {k: stats.finite(v) for k, v in comparison.items()}
    comparison["verdict"] = verdict(comparison)
    return comparison


def _clustered_difference(parts, cluster_of, bounds: tuple, mean_a: float, mean_b: float) -> dict:
    """The paired differences' mean, CR1 standard error over clusters, t interval and test (G - 1
    degrees of freedom): pairs of one cluster are not independent evidence."""
    def clusters():
        for a, b in parts():
            sums = {}
            for key in a:
                if key in b:
                    total, count = sums.get(cluster_of(key), (0.0, 0))
                    sums[cluster_of(key)] = (total + b[key] - a[key], count + 1)
            yield sums.values()

    result = stats.clustered_in_parts(clusters)
    groups, se = result["clusters"], result["se"]
    found = {"clusters": groups, "ci95_low": None, "ci95_high": None, "p_value": None, "mde80": None,
             "target_effect": None, "examples_needed": None}
    if se is None or not math.isfinite(se):
        return {**found, "test": f"none: too few clusters ({groups}) for a clustered test"}
    if se == 0:
        return {**found, "test": "none: every cluster's difference is the same"}
    low, high = stats.t_interval(result["mean"], se, groups - 1)
    low, high = stats.clip(low, high, stats.difference_range(bounds))
    power = _power(bounds, mean_a, mean_b, sd=se * math.sqrt(groups), n=groups)  # the clusters are the units
    return {**found, "ci95_low": low, "ci95_high": high, "p_value": stats.t_test_p(result["mean"], se, groups - 1),
            "test": f"clustered t (CR1, {groups} clusters)", "se_diff": se, **power, "examples_needed": None}


def _power(bounds: tuple, mean_a: float, mean_b: float, n: int, sd: Optional[float] = None,
           discordant: Optional[float] = None) -> dict:
    """Power of the test the comparison used: the smallest difference it detects 80% of the time at
    5% two-sided (mde80), and the examples it would need for PLANNING_EFFECT of the metric's range.
    Exact McNemar at the pairs' observed discordance (b + c) / n for 0/1 scores (a z formula
    promises 80% where McNemar gives ~72% at n = 50), else the paired t test (noncentral t)."""
    width = bounds[1] - bounds[0]
    target = PLANNING_EFFECT * (width if math.isfinite(width) else max(abs(mean_a), abs(mean_b)))
    if discordant is not None:
        mde = stats.mcnemar_mde(discordant, n) if discordant > 0 else None
        needed = stats.mcnemar_examples_needed(discordant, target) if 0 < target <= discordant else None
    else:
        mde = stats.paired_t_mde(sd, n) if sd and n > 1 else None
        needed = stats.paired_t_examples_needed(sd, target) if sd and target > 0 else None
    return {"mde80": mde, "target_effect": target or None, "examples_needed": needed}


def verdict(c: dict) -> str:
    """The comparison in plain words: which side is better, by how much, how sure."""
    if c["n"] < 2:
        return f"too few shared examples ({c['n']}) to compare"
    if c["mean_diff"] == 0 and c["sd_diff"] == 0:
        return f"no difference: the same score on every one of the {c['n']} shared examples"
    if c["p_value"] is None:
        if c["sd_diff"] == 0:
            return (f"{c['run_b']} - {c['run_a']} is exactly {c['mean_diff']:.3g} on every one of the {c['n']} shared "
                    "examples (no spread: no interval or p-value)")
        return f"the scores overflow a float: no comparison of {c['n']} shared examples"
    sign = -1 if c["lower_is_better"] else 1
    gain = sign * c["mean_diff"]
    if c["p_value"] < ALPHA and gain != 0:
        winner, loser = (c["run_b"], c["run_a"]) if gain > 0 else (c["run_a"], c["run_b"])
        if c["ci95_low"] is None:  # McNemar's test on pairs that all differ alike: no spread for an interval
            return (f"{winner} better than {loser} by {abs(c['mean_diff']):.3g} on every one of the {c['n']} "
                    f"shared examples, p = {c['p_value']:.2g} ({c['test']})")
        towards_winner = sign if gain > 0 else -sign  # the interval of winner - loser
        bounds = sorted(towards_winner * v for v in (c["ci95_low"], c["ci95_high"]))
        return (f"{winner} better than {loser} by {abs(c['mean_diff']):.3g} "
                f"[{bounds[0]:.3g}, {bounds[1]:.3g}], p = {c['p_value']:.2g} ({c['test']})")
    text = f"no detectable difference (p = {c['p_value']:.2g}, {c['test']})"
    if c["ci95_low"] is not None and (c["ci95_low"] > 0 or c["ci95_high"] < 0):
        # McNemar's exact test and the t interval, an approximation, can fall either side of 5%.
        text += (f"; borderline: the approximate interval [{c['ci95_low']:.3g}, {c['ci95_high']:.3g}] "
                 "leaves out 0")
    detect = (f"{c['n']} examples detect {c['mde80']:.2g} at 80% power" if c["mde80"] is not None else
              f"{c['n']} examples are too few to detect any difference at 80% power")
    if c["examples_needed"] and c["examples_needed"] > c["n"]:
        text += f": {detect}; would need ~{c['examples_needed']} examples to see {c['target_effect']:.2g}"
    elif c["mde80"] is not None or c["test"] == "mcnemar exact":
        text += f": {detect}"
    return text


# ---------------------------------------------------------------- rendering and writing


def table_cell(value) -> str:
    """A value as a table shows it: floats to 4 places, JSON spelling for bools, '' for missing."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return cell_text(value)


def _time_cell(value) -> str:
    seconds = epoch_seconds(value)
    return human_time(seconds) if seconds is not None else table_cell(value)


def cell_formats(columns, plain=()) -> list:
    """How each column's cells are written: the plain ones (a group's own values) as they are, a
    time's (contract.MOMENT_NAME) epoch seconds as a date, the rest as table_cell. report.md and
    report.html alike."""
    return [cell_text if c in plain else _time_cell if MOMENT_NAME.search(c) else table_cell for c in columns]


def markdown_table(records: list, columns: Sequence[str], plain: Sequence[str] = ()) -> str:
    """The records as a Markdown table: floats to 4 places, epoch seconds in a time column as dates,
    the plain columns (a group's own values: temperature 0.7) as they are."""
    cells = cell_formats(columns, plain)
    body = [[cell(r.get(c)) for cell, c in zip(cells, columns)] for r in records]
    return pipe_table(body, columns)


# A cell a spreadsheet would run as a formula (OWASP, "CSV Injection"): led by = + - @ (after any
# spaces), or by a tab, CR, LF or NUL. A plain number (-0.25, 1e-05) is data, and stays one.
_FORMULA_LED = re.compile(r"\s*[=+\-@]|[\t\r\n\x00]")
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: one that would start a formula (a model id
    `=HYPERLINK(...)` from a pod) gets a leading ', which spreadsheets take as "text" and hide."""
    if _FORMULA_LED.match(text) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def _csv_field(text: str) -> str:
    """One field as RFC 4180 writes it, quoted when it holds a comma, a quote or a line break. Not
    csv.writer's: with lines ending in LF it leaves a field holding a CR unquoted (Python 3.11), and
    a spreadsheet starts a row there, whose next cell (`x\r=HYPERLINK(...)`) no csv_cell saw."""
    text = csv_cell(text)
    if "," in text or '"' in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_text(records: list, columns: Sequence[str]) -> str:
    """The records as CSV, the header too, every cell through csv_cell (the one CSV writer)."""
    lines = [",".join(_csv_field(str(c)) for c in columns)]
    for record in records:
        lines.append(",".join("" if record.get(c) is None else _csv_field(cell_text(record.get(c))) for c in columns))
    return "\n".join(lines)


def group_columns(keys: Sequence[str], metric: str = DEFAULT_METRIC, groups: Sequence[dict] = ()) -> list:
    """The group table's columns; the cost columns only when some group of `groups` has a price."""
    priced = ["cost", "cost_per_correct"] if any("cost" in g for g in groups) else []
    return [*keys, "runs", f"{metric}_mean", f"{metric}_sd", f"{metric}_n", *interval_keys(metric),
            "results_mean", "results_se", "results_ci95_low", "results_ci95_high", "results_clusters", "results_n",
            *priced]


def _p(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def uncertainty_lines(groups: list, keys: Sequence[str]) -> list:
    """Per group of several runs on shared examples: where its interval's width comes from."""
    return [f"{' / '.join(cell_text(g.get(k)) for k in keys)}: {g['uncertainty']}" for g in groups
            if g.get("uncertainty")]


def uncertainty_markdown(groups: list, keys: Sequence[str]) -> list:
    lines = uncertainty_lines(groups, keys)
    return ["Where the uncertainty comes from (the variance of the pooled mean split into its questions' "
            "and its seeds' parts):", "", *(f"- {md(line)}" for line in lines), ""] if lines else []


def comparison_title(c: dict) -> str:
    what = f" ({c['compare_by']})" if c.get("compare_by") else ""
    return f"Comparison{what}: {c['run_b']} - {c['run_a']}, {c['metric']}" + (
        " (lower is better)" if c["lower_is_better"] else "")


def comparison_lines(c: dict) -> list:
    """The comparison as lines of text, the verdict first, each formula named (markdown and html)."""
    clustered = bool(c.get("clusters"))
    formula = (f"mean +/- t(0.975, G-1) * se, se clustered by example (CR1), G = {c['clusters']} examples"
               if clustered else "mean +/- t(0.975, n-1) * sd / sqrt(n), Student's t")
    lines = [c["verdict"],
             f"shared examples: {c['n']} (only in {c['run_a']}: {c['only_a']}, only in {c['run_b']}: {c['only_b']})",
             f"on the shared examples: mean {c['run_a']} {_p(c['mean_a'])}, mean {c['run_b']} {_p(c['mean_b'])}",
             f"mean difference (B - A): {_p(c['mean_diff'])}, 95% interval "
             f"[{_p(c['ci95_low'])}, {_p(c['ci95_high'])}] ({formula})"]
    if c.get("strata"):
        lines.insert(1, f"paired like with like: within {c['strata']} "
                        f"{'stratum' if c['strata'] == 1 else 'strata'} of {', '.join(c['stratified_by'])}, "
                        "an example scored on each side as its mean over that side's runs there (seeds)"
                        + (f"; left out, run on one side only: {'; '.join(c['strata_left_out'])}"
                           if c["strata_left_out"] else ""))
    if clustered:
        lines.append(f"{c['test']}: p = {c['p_value']:.2g}" if c["p_value"] is not None else c["test"])
    elif c["mcnemar"]:
        m = c["mcnemar"]
        one, zero = ("wrong", "right") if c["lower_is_better"] else ("right", "wrong")  # an error metric's 1 is wrong
        lines.append(f"McNemar exact test: b (A 1 and B 0: A {one}, B {zero}) = {m['b']}, "
                     f"c (A 0 and B 1: A {zero}, B {one}) = {m['c']}, p = {m['p_value']:.4g}")
    elif c["p_value"] is not None:
        lines.append(f"paired t test (scores are not all 0/1, so no McNemar): p = {c['p_value']:.4g}")
    if c.get("equivalence"):
        lines.insert(1, c["equivalence"])
    if c["mde80"] is not None:
        how = ("the t test over the clusters (noncentral t)" if clustered else
               "exact McNemar at the observed share of discordant pairs" if c["mcnemar"] else
               "the paired t test (noncentral t)")
        lines.append(f"minimum detectable effect at 80% power, 5% two-sided, n = {c['n']}: {c['mde80']:.2g} ({how})")
    return lines


def comparison_markdown(comparison: dict) -> str:
    """The comparison's section; the names compared (run ids, or values of --compare-by) as inert text."""
    names = {key: md(str(comparison[key])) for key in ("run_a", "run_b", "metric", "compare_by") if comparison.get(key)}
    names.update({key: [md(str(v)) for v in comparison[key]] for key in ("stratified_by", "strata_left_out")
                  if comparison.get(key)})
    if names:
        comparison = {**comparison, **names}
        comparison["verdict"] = verdict(comparison)
    verdict_line, *rest = comparison_lines(comparison)
    return "\n".join([f"## {comparison_title(comparison)}", "", f"- **{verdict_line}**", *(f"- {line}" for line in rest)])


def _warnings_markdown(warnings: list) -> list:
    scored = [w for w in warnings if w["file"] != "run_metadata.json"]
    if not scored:
        return []
    return ["## Warnings", "", *(f"- {md(w['run_id'])}: {md(w['file'])}: {md(w['warning'])}" for w in scored), ""]


def _listed(values: list, none: str = "-") -> str:
    """Values from the runs (models, tasks, sampling settings) on one Markdown line, each inert."""
    return ", ".join(md(str(value)) for value in values) if values else none


def header_markdown(header: dict) -> list:
    states = ", ".join(f"{n} {md(state)}" for state, n in header["states"].items()) or "none"
    sampling = "; ".join(f"{name} {_listed(header[name])}" for name in ("temperature", "max_tokens", "rollouts"))
    return [f"- generated: {header['generated']}", f"- scope: {md(header['scope'])}",
            f"- pod repo commit: {_listed(header['commits'], 'not recorded')}",
            f"- models: {_listed(header['models'])}", f"- tasks: {_listed(header['tasks'])}",
            f"- sampling: {sampling}", f"- examples per run: {_listed(header['examples'])}",
            f"- runs: {header['runs']} ({states})",
            *([f"- cost: {spent_text(header['cost'])}"] if header.get("cost") else []),
            *([f"- intervals clustered by: {md(header['clustered_by'])}"] if header.get("clustered_by") else []), ""]


def not_succeeded_markdown(doc: dict) -> list:
    listed = doc["not_succeeded"]
    if not listed:
        return []
    what = ("shown above, marked with their state" if doc["include_failed"]
            else "in no mean, interval, group, comparison or plot (--include-failed counts them)")
    lines = [f"## Not succeeded: {len(listed)} ({what})", ""]
    lines += [markdown_table(listed, ("run_id", "state", "failure_class", "reason")), ""]
    return lines


def models_by_task_rows(table: dict) -> list:
    """The models x tasks table as rows of text cells: mean [interval] (runs); in a task whose
    models were scored on different examples, each cell also says on how many, and its mean on
    the examples they all share (the figure to compare)."""
    rows = []
    for model in table["models"]:
        row = {"model_id": model}
        for task in table["tasks"]:
            cell = table["cells"].get(model, {}).get(task)
            if cell:
                interval = (f" [{cell['ci95_low']:.3f}, {cell['ci95_high']:.3f}]"
                            if cell["ci95_low"] is not None else "")
                row[task] = f"{cell['mean']:.3f}{interval} ({cell['n']} run{'s' if cell['n'] != 1 else ''})"
                unequal = table.get("unequal", {}).get(task, {}).get(model)
                if unequal:
                    on_shared = f"{unequal['shared_mean']:.3f}" if unequal["shared_mean"] is not None else "-"
                    row[task] += (f"; {unequal['examples']} examples, on the {unequal['shared']} all models share: "
                                  f"{on_shared}")
        rows.append(row)
    return rows


def unequal_note(table: dict) -> Optional[str]:
    """The warning under a models x tasks table whose models were not scored on the same examples."""
    tasks = table.get("unequal") or {}
    if not tasks:
        return None
    named = "; ".join(f"{task}: " + ", ".join(f"{model} {facts['examples']}" for model, facts in models.items())
                      + f" ({next(iter(models.values()))['shared']} shared)" for task, models in tasks.items())
    return (f"Not the same examples: models were scored on different examples in {named}. Their own means are "
            "not comparable (a model that skipped hard questions looks better): compare them on the shared "
            "examples (the cells' second figure), or with --compare-by model_id, which pairs them there.")


def groups_unequal_note(unequal: dict) -> Optional[str]:
    """The warning under a groups table whose groups were not scored on the same examples."""
    if not unequal:
        return None
    named = "; ".join(f"{task}: " + ", ".join(
        f"{name} {facts['examples']} (on the {facts['shared']} shared: "
        f"{'-' if facts['shared_mean'] is None else format(facts['shared_mean'], '.3f')})"
        for name, facts in groups.items()) for task, groups in unequal.items())
    return (f"Not the same examples: groups were scored on different examples in {named}. Their pooled means "
            "are not comparable as they stand: compare the means on the shared examples given here.")


def models_by_task_markdown(table: Optional[dict]) -> list:
    if not table:
        return []
    note = unequal_note(table)
    return [f"## {md(table['metric'])}: models x tasks", "",
            markdown_table(models_by_task_rows(table), ["model_id", *table["tasks"]]), "",
            f"mean [95% interval] (runs): {MODELS_BY_TASK}.", "", *([f"**{md(note)}**", ""] if note else [])]


def report_markdown(doc: dict) -> str:
    """report.md. Every value from the runs is inert Markdown text (tables.markdown_text): in a
    table through markdown_table, on a line of its own through md; nothing of a pod's can start
    a line, a heading, an image, a link or an HTML tag."""
    parts = [f"# Report: {md(str(doc['root']))}", "", *header_markdown(doc["header"])]
    count = f"{doc['count']} run{'s' if doc['count'] != 1 else ''} in the table"
    if doc["count"] != doc["total"]:
        count += f" of {doc['total']} (filtered)"
    if doc["errors"]:
        count += f", {len(doc['errors'])} error{'s' if len(doc['errors']) != 1 else ''}"
    if doc["not_succeeded"]:
        count += f", {len(doc['not_succeeded'])} not succeeded ({', '.join(map(md, doc['failed'][:10]))}" + \
                 (", ..." if len(doc["failed"]) > 10 else "") + ")"
    parts += [count, ""]
    metric = doc["metric"]
    parts += models_by_task_markdown(doc.get("models_by_task"))
    if doc["rows"]:
        parts += [markdown_table(doc["rows"], doc["columns"]), "",
                  f"mean, se, ci95 ({metric['field']} per example): {INTERVALS['runs']}.", ""]
    if doc.get("groups") is not None:
        keys = doc["group_by"]
        parts += [f"## Groups by {md(', '.join(keys))}", "",
                  markdown_table(doc["groups"], shown_columns(doc["groups"], group_columns(keys, metric["name"], doc["groups"]),
                                                              keys), plain=keys),
                  "",
                  f"{metric['name']}_*: over the runs' summary values (pi95: where one more run would fall); "
                  f"results_*: over their examples (ci95: the model's score on questions like these); "
                  f"{INTERVALS['groups']}.", ""]
        notes = sorted({g[k] for g in doc["groups"] for k in g if k.endswith("_interval") and g[k]
                        and g[k].startswith(("too few", "the runs agree"))})
        parts += ["No interval shown where:", "", *(f"- {md(note)}" for note in notes), ""] if notes else []
        parts += uncertainty_markdown(doc["groups"], keys)
        note = groups_unequal_note(doc.get("groups_unequal"))
        parts += [f"**{md(note)}**", ""] if note else []
    if doc.get("comparison") is not None:
        parts += [comparison_markdown(doc["comparison"]), ""]
    if doc.get("several") is not None:
        parts += [several_markdown(doc["several"]), ""]
    parts += not_succeeded_markdown(doc)
    parts += _warnings_markdown(doc["warnings"])
    if doc["errors"]:
        parts += ["## Errors", ""]
        for e in doc["errors"]:
            where = e["file"] + (f" line {e['line']}" if e.get("line") else "") + \
                    (f" column {e['column']}" if e.get("column") else "")
            parts.append(f"- {md(e['run_id'])}: {md(where)}: {md(str(e['error']))}")
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


def method_name(interval: Optional[str]) -> Optional[str]:
    """The name of the formula an interval's method text names (None: no interval)."""
    text = (interval or "").removeprefix("one run: ")
    for start, name in (("wilson", "Wilson"), ("clustered", "clustered by example"),
                        ("student t prediction", "prediction for one more run"), ("student t", "Student's t")):
        if text.startswith(start):
            return name
    return None


def plot_bars(doc: dict) -> tuple:
    """([(label, mean, low, high)], [the interval methods used, by name]) of each group (pooled
    examples where its runs have them, else the runs' summary values), else of each run; what
    the PNG plot and report.html's chart both draw."""
    bars, methods, name = [], set(), doc["metric"]["name"]
    if doc.get("groups") is not None:
        for g in doc["groups"]:
            label = " / ".join(cell_text(g[k]) for k in doc["group_by"])
            for prefix in ("results", name):
                if g.get(f"{prefix}_mean") is not None:
                    low, high = (g.get(key) for key in interval_keys(prefix))
                    bars.append((label, g[f"{prefix}_mean"], low, high))
                    methods.add(method_name(g.get(f"{prefix}_interval")) if low is not None else None)
                    break
    else:
        for r in doc["rows"]:
            if r.get("mean") is not None:
                bars.append((r["run_id"], r["mean"], r["ci95_low"], r["ci95_high"]))
                methods.add(method_name(r.get("interval")) if r["ci95_low"] is not None else None)
            elif r.get(name) is not None:
                bars.append((r["run_id"], r[name], None, None))
                methods.add(None)
    named = sorted(m for m in methods if m)
    return bars, named + (["none on some bars"] if None in methods and named else [] if named else ["no interval"])


def _short(label: str, width: int = 32) -> str:
    return label if len(label) <= width else label[:width - 3] + "..."


def plot_unequal_note(doc: dict) -> Optional[str]:
    """What a chart says when its bars were scored on different examples (it ranks them by eye)."""
    unequal = doc.get("groups_unequal") if doc.get("groups") is not None else \
        (doc.get("models_by_task") or {}).get("unequal")
    if not unequal:
        return None
    return (f"not the same examples in {', '.join(unequal)}: the bars are not comparable as they stand "
            "(the warning under the table gives each one's mean on the shared examples)")


def plot_report(doc: dict, path: Path) -> None:
    """A PNG bar chart: each group's (else each run's) mean with its 95% interval as error bars
    where there is one; the axis names the metric and the interval method."""
    plt = require_matplotlib()
    bars, methods = plot_bars(doc)
    if not bars:
        raise ConfigError(f"--plot: no run or group has a {doc['metric']['name']} to plot")
    heights = [b[1] for b in bars]
    # An interval holds its mean; max(0, ...) keeps rounding from ever making a negative error bar.
    # A bar without an interval gets none drawn (NaN), not a flat cap that reads as certainty.
    low = [max(0.0, b[1] - b[2]) if b[2] is not None else math.nan for b in bars]
    high = [max(0.0, b[3] - b[1]) if b[3] is not None else math.nan for b in bars]
    ylabel = f"{doc['metric']['name']}: mean, 95% interval ({', '.join(methods)})"
    figure, axes = plt.subplots(figsize=(min(48.0, max(6.0, 0.45 * len(bars) + 2)), 5.2))
    try:
        axes.bar(range(len(bars)), heights, yerr=[low, high], capsize=3, color="#4c72b0")
        axes.set_xticks(range(len(bars)))
        axes.set_xticklabels([_short(b[0]) for b in bars], rotation=45, ha="right", fontsize=8)
        axes.set_ylabel(ylabel, fontsize=8)
        if all(0.0 <= b[1] <= 1.0 and (b[3] is None or b[3] <= 1.0) for b in bars):
            axes.set_ylim(0.0, 1.0)
        unequal = plot_unequal_note(doc)
        axes.set_title(f"Report: {doc['root']}" + (f"\n{unequal}" if unequal else ""), fontsize=9)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(figure)
    write_atomic(Path(path), buffer.getvalue())


# ---------------------------------------------------------------- the report


def _split_keys(text: Optional[str]) -> list:
    return [k.strip() for k in (text or "").split(",") if k.strip()]


def _check_flags(group_by, sort, compare, compare_by, baseline=None, margin=None) -> None:
    if group_by is not None and not _split_keys(group_by):
        raise ConfigError("--group-by: expected field names, e.g. model_id,env_id")
    if sort is not None and not sort.lstrip("-"):
        raise ConfigError("--sort: expected a column name (prefix '-' for descending)")
    if compare and len(compare) != 2:
        raise ConfigError(f"--compare takes two run ids (RUN_A,RUN_B), got {len(compare)}")
    if compare and compare[0] == compare[1]:
        raise ConfigError(f"--compare {compare[0]},{compare[1]}: a run compared with itself says nothing")
    if baseline is not None and (compare_by is None or compare):
        raise ConfigError("--baseline VALUE goes with --compare-by FIELD alone (each value of FIELD against VALUE)")
    if margin is not None and not (isinstance(margin, (int, float)) and not isinstance(margin, bool)
                                   and math.isfinite(margin) and margin > 0):
        raise ConfigError(f"--margin {margin!r}: expected a difference above 0, in the metric's units (e.g. 0.02)")
    if margin is not None and not compare and not compare_by:
        raise ConfigError("--margin D goes with --compare or --compare-by: equal within +/-D or not")


def scoped_runs(root: Path, run_ids: Optional[Sequence[str]]) -> tuple:
    """([(run_id, path)] of the run directories in scope, [run ids in scope with no directory]).
    run_ids None: every run directory under root. Each run id once, however often it is named."""
    runs = run_dirs(root)
    if run_ids is None:
        return runs, []
    present = dict(runs)
    wanted = list(dict.fromkeys(run_ids))
    return [(i, present[i]) for i in wanted if i in present], [i for i in wanted if i not in present]


PARALLEL_FROM = 2000  # runs: fewer are read in this process (starting workers would cost more than they save)
RUNS_PER_WORKER = 1000
MAX_WORKERS = 8
PARALLEL_BYTES = 64 << 20  # of results.jsonl: fewer runs than PARALLEL_FROM are read by workers too (JSON-bound)


def _read_runs(root: Path, fields: list, metric: Metric, run_ids=None, include_failed: bool = False,
               spool: Optional[ExampleSpool] = None) -> tuple:
    """(runs in scope, run ids without a directory, rows, errors, warnings, {run id: directory read}),
    in run order. Many runs (or a few of large results files) are read by worker processes, a
    contiguous slice each: reading is independent per run and CPU-bound (JSON), so a 10,000-run
    report scales with the cores. The examples they spool are indexed in the parent's spool."""
    runs, absent = scoped_runs(root, run_ids)
    read = functools.partial(_read_some, fields=fields, metric=metric, include_failed=include_failed, spool=spool)
    workers = min(os.cpu_count() or 1, MAX_WORKERS, len(runs) // RUNS_PER_WORKER) if len(runs) >= PARALLEL_FROM \
        else min(os.cpu_count() or 1, MAX_WORKERS, len(runs)) if _results_bytes(runs) >= PARALLEL_BYTES else 1
    parts = _in_workers(read, runs, workers) if workers > 1 else None
    rows, errors, warnings, dirs, kept = parts or read(runs)
    for index in kept if spool is not None else ():
        spool.merge(index)
    return runs, absent, rows, errors, warnings, dirs


def _results_bytes(runs: list) -> int:
    """The size of the runs' top results.jsonl files (a few runs of millions of lines are worth workers)."""
    total = 0
    for _, top in runs:
        try:
            total += os.stat(os.path.join(top, RESULTS)).st_size
        except OSError:
            pass
    return total


def _in_workers(read, runs: list, workers: int) -> Optional[tuple]:
    """read over `workers` slices of runs in worker processes, merged in order; None when worker
    processes cannot run here (no semaphores in a sandbox, a worker killed): the caller reads alone."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    size = -(-len(runs) // workers)
    try:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(read, [runs[i:i + size] for i in range(0, len(runs), size)]))
    except (OSError, RuntimeError, BrokenProcessPool):  # RuntimeError: a platform without working semaphores
        return None  # (what a bug in `read` raises, the caller's own reading raises again)
    rows, errors, warnings, dirs, kept = [], [], [], {}, []
    for part_rows, part_errors, part_warnings, part_dirs, part_kept in parts:
        rows += part_rows
        errors += part_errors
        warnings += part_warnings
        dirs.update(part_dirs)
        kept += part_kept
    return rows, errors, warnings, dirs, kept


def _read_some(runs: list, fields: list, metric: Metric, include_failed: bool,
               spool: Optional[ExampleSpool] = None) -> tuple:
    """(rows, errors, warnings, {run id: directory read}, [what the spool kept: its index]) of
    [(run id, directory)]."""
    rows, errors, warnings, dirs = [], [], [], {}
    for run_id, top in runs:
        # The run's winning attempt: the top of its directory, or its latest earlier success.
        listing = RunListing(top)
        path, attempt, _ = winning_attempt(top, run_id) if listing.has("attempts") else (top, None, None)
        row, run_errors, run_warnings = read_run(run_id, path, fields, metric, include_failed,
                                                 listing if path == top else None, spool)
        errors.extend(run_errors)
        warnings.extend(run_warnings)
        if row is not None:
            if attempt:
                row["attempt"] = attempt
            rows.append(row)
            dirs[run_id] = path
    return rows, errors, warnings, dirs, [spool.index] if spool is not None else []


def _columns(rows: list, fields: list, metric: Metric, show_state: bool = False) -> tuple:
    columns = [*ID_COLUMNS, *METRIC_COLUMNS]
    hidden = {*VERDICT_FIELDS, FACTS, *STAT_COLUMNS}
    wanted = [metric.name] if metric.name not in columns else []
    requested = [f for f in [*wanted, *fields] if f not in columns and f not in hidden]
    requested = list(dict.fromkeys(requested))
    extras = list(dict.fromkeys(k for r in rows for k in r
                                if k not in columns and k not in hidden and k not in requested))
    leading = ["run_id", VERDICT_COLUMN] if show_state else ["run_id"]
    return leading + columns[1:] + requested + extras + list(STAT_COLUMNS), requested


def shown_columns(rows: list, columns: list, requested: Sequence[str] = ()) -> list:
    """The columns some row has a value in (and the run id, and those asked for by name): an empty
    column is width with nothing to read."""
    keep = {"run_id", *requested}
    return [c for c in columns if c in keep or any(r.get(c) is not None for r in rows)]


def _refuse_unknown(rows: list, columns: list, requested: list, flags: list, root: Path) -> None:
    """A group, filter, sort or metric key that no run carries is a typo, not an empty answer."""
    if not rows:
        return
    unknown = [f for f in requested if all(r.get(f) is None for r in rows)]
    for flag, names in flags:
        for name in names:
            if name in unknown:
                known = ", ".join(c for c in columns if c not in unknown)
                raise ConfigError(f"{flag} {name}: no run under {root} has that field (columns: {known})")


def _not_succeeded(rows: list, absent: list) -> list:
    """Runs in scope that did not succeed (and those never fetched): each named with its state."""
    listed = [{"run_id": r["run_id"], "state": r["state"], "failure_class": r["failure_class"], "reason": r["reason"]}
              for r in rows if not r["ok"]]
    listed += [{"run_id": run_id, "state": "missing", "failure_class": "missing",
                "reason": "in scope but not fetched: no run directory"} for run_id in absent]
    return listed


def build_report(root, *, spool: Optional[ExampleSpool] = None, **options) -> dict:
    """The report document of the runs in scope under root (run_ids; None: every run), nothing
    written (see write_report). A run that did not succeed is listed, and enters no statistic,
    group, comparison or plot unless include_failed (then its row shows its state). spool: where
    the reading keeps each run's example means (and, for report.html, its examples: see
    report_html.write_report_html); without one, a spool of the means lives as long as this call."""
    if spool is not None:
        return _build_report(root, spool, **options)
    with ExampleSpool(drill_down=False) as own:
        return _build_report(root, own, **options)


def _build_report(root, spool: ExampleSpool, *, group_by: Optional[str] = None, compare: Sequence[str] = (),
                  sort: Optional[str] = None, filters: Iterable[str] = (), metric: Optional[str] = None,
                  lower_is_better: Optional[bool] = None, compare_by: Optional[str] = None,
                  run_ids: Optional[Sequence[str]] = None, include_failed: bool = False,
                  scope: Optional[str] = None, baseline: Optional[str] = None,
                  margin: Optional[float] = None, cluster_by: Optional[str] = None) -> dict:
    root = checked_root(root)
    _check_flags(group_by, sort, compare, compare_by, baseline, margin)
    keys, wanted, measured = _split_keys(group_by), parse_filters(filters), metric_of(metric, lower_is_better, cluster_by)
    sort_key = sort.lstrip("-") if sort else None
    by = [compare_by.strip()] if compare_by else []
    fields = list(dict.fromkeys([*keys, *(k for k, _ in wanted), *([sort_key] if sort_key else []), *by]))

    runs, absent, every_row, errors, warnings, dirs = _read_runs(root, fields, measured, run_ids, include_failed, spool)
    facts = [r.pop(FACTS) for r in every_row]
    price_rows(every_row, [f.pop("usage") for f in facts], project_of(root))
    failed = _not_succeeded(every_row, absent)
    rows = [r for r in every_row if r["ok"] or include_failed]
    columns, requested = _columns(rows, fields, measured, show_state=include_failed and len(rows) > sum(
        r["ok"] for r in rows))
    metric_flag = [measured.name] if metric is not None else []
    _refuse_unknown(every_row, columns, requested, [("--group-by", keys), ("--filter", [k for k, _ in wanted]),
                                                    ("--sort", [sort_key] if sort_key else []),
                                                    ("--compare-by", by), ("--metric", metric_flag)], root)
    total = len(rows)
    for key, value in wanted:
        rows = [r for r in rows if matches(r.get(key), value)]
    rows = sort_rows(rows, sort or best_first(measured, measured.name)) if (sort or metric is not None) \
        else sorted(rows, key=lambda r: natural_order(r["run_id"]))
    results = {r["run_id"]: os.path.join(dirs[r["run_id"]], RESULTS) for r in rows if r.get("n")}

    doc = {"ok": not errors and bool(rows), "root": str(root), "count": len(rows), "total": total,
           "columns": shown_columns(rows, columns, requested), "rows": rows, "errors": errors,
           "warnings": warnings, "failed": [f["run_id"] for f in failed], "not_succeeded": failed,
           "include_failed": include_failed, "intervals": INTERVALS,
           "filters": [f"{k}={v}" for k, v in wanted], "sort": sort,
           "metric": {"name": measured.name, "field": measured.field, "lower_is_better": measured.lower_is_better}}
    doc["header"] = report_header(every_row, facts, failed, scope or f"every run under {root}")
    clustered = sum(1 for r in rows if r.get("clusters"))
    if clustered:  # what an interval treats as one piece of evidence, said before any number
        doc["header"]["clustered_by"] = (f"the results field {measured.cluster} ({clustered} of {len(rows)} runs "
                                         "name clusters); elsewhere by example")
    elif cluster_by is not None:
        doc["header"]["clustered_by"] = f"example: no results line has a {measured.cluster} (--cluster-by)"
    spent = total_cost(r.get("cost") for r in every_row)
    if spent["priced"]:  # no price known: no cost shown at all
        doc["header"]["cost"] = spent
    if keys:
        doc["group_by"] = keys
        groups = group_rows(rows, keys, measured, results, spool)
        doc["groups"] = sort_rows(groups, sort or best_first(measured, f"{measured.name}_mean")) \
            if (sort or metric is not None) else sorted(groups, key=lambda g: [natural_order(g[k]) for k in keys])
        doc["groups_unequal"] = _unequal_examples(rows, measured, results, spool,
                                                  lambda r: " / ".join(cell_text(r.get(k)) for k in keys))
    doc["models_by_task"] = models_by_task(rows, measured, results, spool)
    if compare_by and not compare:
        doc["several"] = compare_several(root, rows, by[0], measured, dirs, spool, keys, baseline, margin)
    elif compare and compare_by:
        doc["comparison"] = compare_groups(root, rows, by[0], compare[0], compare[1], measured, dirs, spool, keys)
    elif compare:
        doc["comparison"] = compare_runs(root, compare[0], compare[1], measured, _compared_dirs(rows, dirs, failed),
                                         spool)
    if doc.get("comparison") and margin is not None:
        doc["comparison"].update(margin=margin, equivalence=ranking.equivalence_text(doc["comparison"], margin))
    if not runs and not absent:
        doc["error"] = f"no run directories under {root}"
    elif not rows and total:
        doc["error"] = "no run matches the filters"
    elif not rows and failed:
        doc["error"] = f"no run in scope succeeded ({len(failed)} did not: --include-failed shows them)"
    elif errors:
        doc["error"] = f"{len(errors)} file{'s' if len(errors) != 1 else ''} under {root} could not be read"
    doc["markdown"] = report_markdown(doc)
    doc[RUN_DIRS] = {r["run_id"]: dirs[r["run_id"]] for r in rows}  # for report.html; the task takes it out
    return doc


def _compared_dirs(rows: list, dirs: dict, failed: list) -> dict:
    """run id -> directory of the runs --compare may pair; the others -> why not."""
    allowed = {r["run_id"]: dirs[r["run_id"]] for r in rows}
    for f in failed:
        allowed.setdefault(f["run_id"], f"{f['state']} ({f['failure_class']})")
    return allowed


# ---------------------------------------------------------------- header, natural order, times


def natural_order(value) -> tuple:
    """Text with its numbers compared as numbers (contract.natural_key): Qwen3-0.6B < Qwen3-4B <
    Qwen3-32B; a number as a number; missing last."""
    if value is None:
        return ((2, 0.0, ""),)
    number = _number(value)
    if number is not None:
        return ((0, float(number), ""),)
    return text_natural_key(cell_text(value))


def human_time(epoch) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")




def _distinct(values, width: int = 60) -> list:
    """The distinct values as text (a number once whatever its spelling: 0 and 0.0), naturally
    sorted; each at most width characters (they come from the pod)."""
    seen = {}
    for value in values:
        if value is not None:
            seen.setdefault(value_key(value), value)
    return sorted({_shown(v, width) for v in seen.values()}, key=natural_order)


def _shown(value, width: int = 60) -> str:
    return cell_text(value)[:width]


def report_header(rows: list, facts: list, failed: list, scope: str) -> dict:
    """What a reader needs before the numbers: when, which runs, which code, which settings."""
    import time

    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    for f in failed:
        if f["state"] == "missing":
            states["missing"] = states.get("missing", 0) + 1
    commits = _distinct(f["commit"][:12] + (" (dirty)" if f["dirty"] else "") for f in facts if f["commit"])
    return {"generated": human_time(time.time()), "scope": scope, "commits": commits,
            "models": _distinct(r.get("model_id") for r in rows), "tasks": _distinct(r.get("env_id") for r in rows),
            "temperature": _distinct(f["temperature"] for f in facts),
            "max_tokens": _distinct(f["max_tokens"] for f in facts),
            "rollouts": _distinct(r.get("rollouts") for r in rows),
            "examples": _distinct(r.get("num_examples") if r.get("num_examples") is not None else r.get("n")
                                  for r in rows),
            "runs": sum(states.values()), "states": dict(sorted(states.items()))}


def models_by_task(rows: list, metric: Metric, results: Optional[dict] = None,
                   spool: Optional[ExampleSpool] = None) -> Optional[dict]:
    """Rows models, columns tasks (env_id); None unless there are several of either. A cell is the
    group of its runs (group_rows): where they have per-example scores, their examples pooled with
    the interval clustered by example (one run: that run's own interval), else the mean of their
    summary metric with the prediction interval of one more run from two runs up (its interval
    text says which)."""
    models = _distinct(r.get("model_id") for r in rows)
    tasks = _distinct(r.get("env_id") for r in rows)
    if len(models) < 2 and len(tasks) < 2:
        return None
    table = {}
    for group in group_rows(rows, ("model_id", "env_id"), metric, results, spool):
        prefix = "results" if group["results_mean"] is not None else metric.name
        if group[f"{prefix}_mean"] is None:
            continue
        cell = {k: group.get(f"{prefix}_{k}") for k in ("mean", "interval", "clusters")}
        cell["ci95_low"], cell["ci95_high"] = (group.get(key) for key in interval_keys(prefix))  # its interval text says which
        table.setdefault(_shown(group["model_id"]), {})[_shown(group["env_id"])] = {**cell, "n": group["runs"]}
    return {"models": models or [""], "tasks": tasks or [""], "cells": table, "metric": metric.name,
            "unequal": _unequal_examples(rows, metric, results or {}, spool)}


def _unequal_examples(rows: list, metric: Metric, results: dict, spool: Optional[ExampleSpool],
                      name_of=lambda row: _shown(row.get("model_id"))) -> dict:
    """{task: {name: {examples, shared, shared_mean}}} for each task whose models (or groups:
    name_of) were scored on different examples (a model that skipped the hardest questions ranks
    first on its own mean): each one's mean over the examples all of the task's have, an example's
    score being its mean over that one's runs. Tasks whose models share every example are left out."""
    by_task = {}
    for row in rows:
        if row.get("n") is not None and row["run_id"] in results:
            by_task.setdefault(_shown(row.get("env_id")), {}).setdefault(name_of(row), []).append(row)
    unequal = {}
    for task, models in by_task.items():
        if len(models) < 2:
            continue
        names, runs, owner = list(models), [], []
        for index, name in enumerate(names):
            parts = _run_means(models[name], results, metric, spool)
            runs += parts.runs
            owner += [index] * len(parts.runs)
        counts, sums, shared = [0] * len(names), [0.0] * len(names), 0
        for dicts in Parts(runs):
            means = [_side_means([d for d, o in zip(dicts, owner) if o == index]) for index in range(len(names))]
            common = set(means[0]).intersection(*means[1:])
            shared += len(common)
            for index, model_means in enumerate(means):
                counts[index] += len(model_means)
                sums[index] += sum(model_means[key] for key in common)
        if any(count != shared for count in counts):
            unequal[task] = {name: {"examples": counts[index], "shared": shared,
                                    "shared_mean": sums[index] / shared if shared else None}
                             for index, name in enumerate(names)}
    return unequal


def write_report(doc: dict, out_dir, html=None) -> dict:
    """Write <out_dir>/report.md and report.json (and report.html: html(path) writes it)
    atomically; record their paths in doc."""
    out_dir = Path(out_dir)
    paths = {"markdown": str(out_dir / "report.md"), "json": str(out_dir / "report.json")}
    if html is not None:
        paths["html"] = str(out_dir / "report.html")
    doc["written"] = paths
    write_atomic(out_dir / "report.md", doc["markdown"])  # a run folder's undecodable name: its own bytes
    if html is not None:
        html(out_dir / "report.html")
    # Compact: json's C encoder only runs without indent (10x faster on 10,000 runs); jq pretty-prints it.
    # allow_nan=False: every number was made finite (or null) upstream; a miss fails loudly, never as NaN.
    write_atomic(out_dir / "report.json",
                 json.dumps(doc, separators=(",", ":"), default=str, allow_nan=False).encode() + b"\n")
    return paths
