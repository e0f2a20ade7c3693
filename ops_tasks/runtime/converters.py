"""summary_from: the converters of the frameworks' own output (pure: a run directory in, a
summary and results out), the user's python:module:function, and Conversion, which runs one in
a child process so that the supervisor's loop never waits on it."""

import errno
import io
import json
import os
import re
import signal
import subprocess
import sys
import time

from . import python_argv
from .contract import PYTHON_SUMMARY, RECORD_DIR, natural_key, number
from .files import open_regular, read_json, record_path, remove_quietly, tail_text, write_json, write_text
from .interpreter import run_python
from .procs import kill_group


CONVERT_TIMEOUT_S = 300.0  # a summary_from conversion's deadline unless the run's summary_timeout says


class BadOutput(ValueError):
    """A framework's output that cannot be turned into the contract's summary (bad_output)."""


def newest(paths):
    """The newest path, by modification time then name (lm-eval's names carry a timestamp)."""
    return max(paths, key=lambda p: (os.path.getmtime(p), p)) if paths else None


def files_below(run_dir, name_pattern):
    """Regular files below run_dir (not through links, not in attempts/ or .ops/) whose name matches."""
    pattern = re.compile(name_pattern)
    found = []
    for folder, dirs, names in os.walk(run_dir):
        if folder == run_dir:
            dirs[:] = [d for d in dirs if d not in ("attempts", RECORD_DIR)]
        found.extend(os.path.join(folder, n) for n in names
                     if pattern.match(n) and os.path.isfile(os.path.join(folder, n))
                     and not os.path.islink(os.path.join(folder, n)))
    return found


def json_lines_of(path):
    rows = []
    with open_regular(path) as binary, io.TextIOWrapper(binary, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise BadOutput("%s line %d is not JSON: %s" % (os.path.basename(path), number, exc))
    return rows


def convert_verifiers(run_dir, metric=None):
    """vf-eval 0.4's traces.jsonl -> (summary, results): one result per example (the task's id,
    not the rollout's), its rollouts grouped; a rollout's reward is the sum of score x weight; ok
    is false when any rollout errored (vf-eval exits 0 regardless)."""
    traces = newest(files_below(run_dir, r"^traces\.jsonl$"))
    if traces is None:
        raise BadOutput("no traces.jsonl below the run directory (vf-eval ... -o {run_dir})")
    examples, order, errored, model_id, env_id = {}, [], 0, None, None
    for number_, episode in enumerate(json_lines_of(traces), 1):
        task = (episode.get("task") or {}).get("data") if isinstance(episode, dict) else None
        if not isinstance(task, dict) or not isinstance(task.get("id"), (str, int)):
            raise BadOutput("traces.jsonl line %d has no task.data.id" % number_)
        trace = (episode.get("traces") or [{}])[0] if isinstance(episode.get("traces"), list) else {}
        trace = trace if isinstance(trace, dict) else {}
        failed = episode.get("ok") is False or bool(trace.get("errors")) or bool(episode.get("errors"))
        rewards = trace.get("rewards") if isinstance(trace.get("rewards"), dict) else {}
        parts = [(number(r.get("score")), number(r.get("weight", 1.0))) for r in rewards.values() if isinstance(r, dict)]
        if any(score is None or weight is None for score, weight in parts):
            raise BadOutput("traces.jsonl line %d: a reward without a numeric score and weight" % number_)
        reward = None if failed or not parts else sum(score * weight for score, weight in parts)
        errors = [e.get("type") or e.get("message") for e in (trace.get("errors") or []) if isinstance(e, dict)]
        errored += bool(failed)
        key = str(task["id"])
        if key not in examples:
            order.append(key)
            examples[key] = {"id": key, "index": task.get("idx"), "rollouts": []}
        examples[key]["rollouts"].append({"reward": reward, "ok": not failed, "errors": errors,
                                          "stop": trace.get("stop_condition")})
        model_id = model_id or ((trace.get("agent") or {}).get("config") or {}).get("model")
        env_id = env_id or (episode.get("env") or {}).get("id")
    if not examples:
        raise BadOutput("traces.jsonl holds no rollouts")
    resolved = read_json(os.path.join(os.path.dirname(traces), "configs", "resolved", "eval.json")) or {}
    counts = {len(e["rollouts"]) for e in examples.values()}
    per_example = resolved.get("num_rollouts") if isinstance(resolved, dict) else None
    results = []
    for key in sorted(order, key=natural_key):
        example = examples[key]
        scored = [r["reward"] for r in example["rollouts"] if r["reward"] is not None]
        example["reward"] = sum(scored) / len(scored) if scored else None
        example["n_rollouts"] = len(example["rollouts"])
        results.append(example)
    means = [e["reward"] for e in results if e["reward"] is not None]
    summary = {
        "ok": errored == 0 and bool(means), "avg_reward": sum(means) / len(means) if means else None,
        "num_examples": len(results),
        "rollouts_per_example": per_example if number(per_example) else (counts.pop() if len(counts) == 1 else None),
        "num_rollouts": sum(e["n_rollouts"] for e in results), "errored_rollouts": errored,
        "model_id": model_id or (resolved.get("model") if isinstance(resolved, dict) else None),
        "env_id": env_id, "summary_from": "verifiers", "source": os.path.relpath(traces, run_dir),
    }
    if errored:
        summary["failure_class"] = "rollouts_errored"
    return summary, results


def convert_lm_eval(run_dir, metric=None):
    """lm-eval 0.4's newest results_<time>.json and its samples_<task>_<time>.jsonl -> (summary,
    results): one metric and filter (`metric` as "name" or "name,filter", else the task's
    first), its stderr kept; each document's id is its own `id` when it has one, else doc_id."""
    found = files_below(run_dir, r"^results_.+\.json$")
    results_file = max(found, key=lambda p: (os.path.basename(p), os.path.getmtime(p))) if found else None
    if results_file is None:
        raise BadOutput("no results_*.json below the run directory (lm_eval --output_path {run_dir}/... --log_samples)")
    data = read_json(results_file)
    tasks = data.get("results") if isinstance(data, dict) else None
    if not isinstance(tasks, dict) or not tasks:
        raise BadOutput("%s has no results" % os.path.basename(results_file))
    task = next(iter(tasks))
    scores = tasks[task] if isinstance(tasks[task], dict) else {}
    keys = [k for k in scores if "," in k and "_stderr," not in k and number(scores[k]) is not None]
    wanted = [k for k in keys if metric in (k, k.split(",")[0])] if metric else keys
    if not wanted:
        raise BadOutput("%s: task %s has no metric %s (it has %s)" % (
            os.path.basename(results_file), task, metric or "", ", ".join(keys) or "none"))
    name, filter_name = wanted[0].split(",", 1)
    stamp = os.path.basename(results_file)[len("results_"):-len(".json")]
    samples_file = os.path.join(os.path.dirname(results_file), "samples_%s_%s.jsonl" % (task, stamp))
    if not os.path.isfile(samples_file):
        raise BadOutput("no %s beside %s (run lm_eval with --log_samples)" % (
            os.path.basename(samples_file), os.path.basename(results_file)))
    results = []
    for row in json_lines_of(samples_file):
        if not isinstance(row, dict) or row.get("filter", filter_name) != filter_name:
            continue
        doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
        own_id = doc.get("id")
        value = number(row.get(name))
        if value is None:
            raise BadOutput("%s: doc_id %s has no numeric %s" % (os.path.basename(samples_file), row.get("doc_id"), name))
        results.append({"id": str(own_id) if isinstance(own_id, (str, int)) else row.get("doc_id"),
                        "doc_id": row.get("doc_id"), "reward": value, name: value, "target": row.get("target"),
                        "filtered_resps": row.get("filtered_resps"), "filter": filter_name})
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = config.get("model_args")
    model_id = model_args.get("model") if isinstance(model_args, dict) else None
    if model_id is None and isinstance(model_args, str):
        found_model = re.search(r"(?:^|,)(?:model|pretrained)=([^,]+)", model_args)
        model_id = found_model.group(1) if found_model else None
    samples = (data.get("n-samples") or {}).get(task) or {}
    summary = {
        "ok": True, "avg_reward": scores[wanted[0]], "metric": name, "filter": filter_name,
        "metric_stderr": number(scores.get("%s_stderr,%s" % (name, filter_name))),
        "num_examples": samples.get("effective", len(results)) if isinstance(samples, dict) else len(results),
        "model_id": model_id or data.get("model_name"), "env_id": task, "tasks": list(tasks),
        "lm_eval_version": data.get("lm_eval_version"), "summary_from": "lm_eval",
        "source": os.path.relpath(results_file, run_dir),
    }
    return summary, results


CONVERTERS = {"verifiers": convert_verifiers, "lm_eval": convert_lm_eval}

PYTHON_CONVERTER = r"""
import importlib, json, sys
module, function, run_dir, out = sys.argv[1:5]
sys.path.insert(0, ".")
answer = getattr(importlib.import_module(module), function)(run_dir)
summary, results = (answer if isinstance(answer, (tuple, list)) and len(answer) == 2 else (answer, None))
with open(out, "w") as handle:
    json.dump({"summary": summary, "results": None if results is None else list(results)}, handle)
"""


def convert_with_python(entry, env, spec):
    """summary_from python:module:function: the user's function, called with the run directory
    by the run's own python in its cwd and environment (a subprocess, in the run's Conversion); it
    returns a summary dict or (summary, results)."""
    module, function = PYTHON_SUMMARY.match(spec).groups()
    python = run_python(entry, env) or "python3"
    out = record_path(entry["run_dir"], "converted.json")
    try:
        # Inside a Conversion, whose deadline stops it and all it started; this later one holds
        # only when no supervisor is left to (it died hard while the function ran).
        done = subprocess.run([python, "-c", PYTHON_CONVERTER, module, function, entry["run_dir"], out],
                              cwd=entry["cwd"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True,
                              timeout=convert_deadline(entry) + CHILD_DEADLINE_GRACE_S)
    except subprocess.TimeoutExpired:
        raise BadOutput("%s did not return within %.0fs" % (spec, convert_deadline(entry)))
    except OSError as exc:
        raise BadOutput("%s could not run: %s" % (spec, exc))
    if done.returncode != 0:
        lines = (done.stdout or "").strip().splitlines()
        raise BadOutput("%s failed: %s" % (spec, lines[-1][-300:] if lines else "exit %d" % done.returncode))
    answer = read_json(out)
    remove_quietly(out)
    if not isinstance(answer, dict):
        raise BadOutput("%s returned nothing JSON can hold" % spec)
    return answer.get("summary"), answer.get("results")


def convert_summary(entry, env):
    """summary_from after the command exited 0: writes summary.json and results.jsonl from the
    framework's own output (never over a summary.json the command wrote). Returns None, or the
    reason the conversion failed (the run fails with class bad_output)."""
    spec, run_dir = entry.get("summary_from"), entry["run_dir"]
    if not spec or os.path.lexists(os.path.join(run_dir, "summary.json")):
        return None
    try:
        if spec in CONVERTERS:
            summary, results = CONVERTERS[spec](run_dir, entry.get("summary_metric"))
        else:
            summary, results = convert_with_python(entry, env, spec)
        if not isinstance(summary, dict):
            raise BadOutput("%s gave a %s, not a summary object" % (spec, type(summary).__name__))
        if results is not None and not (isinstance(results, list) and all(isinstance(r, dict) for r in results)):
            raise BadOutput("%s gave results that are not a list of objects" % spec)
        summary.setdefault("ok", True)
        summary.setdefault("run_id", entry["run_id"])
        if results is not None and not os.path.lexists(os.path.join(run_dir, "results.jsonl")):
            write_text(os.path.join(run_dir, "results.jsonl"),
                       "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in results))
        write_json(os.path.join(run_dir, "summary.json"), summary)
    except (BadOutput, OSError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise  # a full volume: the end is written again later, not judged
        return "summary_from %s: %s" % (spec, exc)
    return None


CHILD_DEADLINE_GRACE_S = 5.0  # a conversion's own deadlines, after the supervisor's


def convert_deadline(entry):
    """Seconds a run's summary_from conversion may take: its summary_timeout, else CONVERT_TIMEOUT_S."""
    return entry.get("summary_timeout") or CONVERT_TIMEOUT_S


def conversion_child(argv):
    """The child a Conversion starts (this package imported where it lies; stdin: the run's entry
    and env, which may hold secrets: never argv): convert_summary's answer into argv[0]."""
    conversion_answer(argv[0])


def conversion_answer(answer_path):
    """In the child: convert_summary of the entry on stdin, its answer into answer_path; a full
    volume is answered as `retry` (the end is judged again later, as before)."""
    request = json.load(sys.stdin)
    # A backstop: the supervisor ends a conversion at its deadline, unless it is gone itself.
    signal.alarm(int(convert_deadline(request["entry"]) + 2 * CHILD_DEADLINE_GRACE_S))
    try:
        answer = {"problem": convert_summary(request["entry"], request["env"])}
    except OSError as exc:
        answer = {"retry": "%s" % exc}
    with open(answer_path, "w") as handle:
        json.dump(answer, handle)


class Conversion:
    """A run's summary_from conversion in a child process of its own session, with its own
    deadline (convert_deadline), so the supervisor's loop goes on (other runs' timeouts, stalls,
    heartbeats, cancels) while a converter works or hangs. A run with nothing to convert is done
    at once. poll() is PENDING until the child ends; then None or the problem (bad_output)."""

    PENDING = object()

    def __init__(self, entry, env):
        self.entry, self.env, self.spec = entry, env, entry.get("summary_from")
        run_dir = entry["run_dir"]
        self.absent = [n for n in ("summary.json", "results.jsonl") if not os.path.lexists(os.path.join(run_dir, n))]
        self.needed = bool(self.spec) and "summary.json" in self.absent
        self.answer_path, self.log_path = record_path(run_dir, "conversion.json"), record_path(run_dir, "conversion.log")
        self.proc = self.deadline = None
        if self.needed:
            self.start()

    def start(self):
        remove_quietly(self.answer_path)
        self.deadline = time.monotonic() + convert_deadline(self.entry)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                python_argv(sys.executable or "python3", "converters", "conversion_child", self.answer_path),
                stdin=subprocess.PIPE, stdout=log, stderr=log, cwd="/", start_new_session=True,
                universal_newlines=True)
        try:
            self.proc.stdin.write(json.dumps({"entry": self.entry, "env": self.env}))
            self.proc.stdin.close()
        except OSError:
            pass  # the child died at once: its exit says so

    def poll(self):
        if not self.needed:
            return None
        if self.proc is None:
            self.start()  # after a full volume: tried again
        code = self.proc.poll()
        if code is None:
            if time.monotonic() < self.deadline:
                return self.PENDING
            self.stop()
            return "summary_from %s: did not finish within its deadline of %.0fs (summary_timeout)" % (
                self.spec, convert_deadline(self.entry))
        answer = read_json(self.answer_path)
        remove_quietly(self.answer_path)
        if isinstance(answer, dict) and answer.get("retry"):
            self.proc = None
            raise OSError(errno.ENOSPC, "summary_from %s: %s" % (self.spec, answer["retry"]))
        if not isinstance(answer, dict) or "problem" not in answer:
            return "summary_from %s: the conversion exited %s without an answer: %s" % (
                self.spec, code, tail_text(self.log_path, 1).strip()[-300:] or "no output")
        remove_quietly(self.log_path)
        return answer["problem"]

    def stop(self):
        """The child and whatever it started (a python: converter's own process), by its session."""
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
