"""What `ops ui` shows of each pod, gathered in ONE round trip per pod per refresh.

The page shows what pod.status, runs.status (runs.list), vllm.status and runs.logs tell, so each
refresh calls those very operations (pod_status, runs_status, vllm_status, run_logs): their
checks, parsing and judgement are the CLI's. They run against a `_Batch` stand-in for the pod's
target: the first time round each one stops at its first script (as a dry run does) and the
script is noted; every script noted is then sent to the pod at once, in ONE exec channel
(remote_scripts/ui_batch.sh: each part runs with `bash -s` beside the others, its stdin payload
after it, exactly as if sent alone); the second time round each operation is handed its own
part's answer and finishes as it would over SSH. An operation that needs a second script (a pod
that lost the runtime: `need_runtime`) gets it in one more round trip, as on the command line.

The pod's answers are the pod's data: each operation checks its own part (parse_document, the
runs' states through verdicts), and what this module reads itself (the vLLM sessions, a run's
metrics.jsonl) is checked here: names by their patterns, numbers only in a curve.
"""

import base64
import binascii
import json
import re
import time
from pathlib import PurePosixPath
from typing import Callable, Optional

from .. import defaults
from ..errors import HostError, OpsError
from ..names import RUN_ID, TMUX_SESSION
from ..runtime.contract import finite_number
from ..scripts import render_script
from ..settings import env_value
from ..targets import ScriptResult, Target

MAX_ROUND_TRIPS = 3  # the batch, and (once) an operation's second script; never more
_PART = re.compile(r"^PART (\d+) (-?\d+) ([A-Za-z0-9+/=]*) ([A-Za-z0-9+/=]*)$")
LOG_LINES = 200  # of a followed run's stdout.log, each refresh
METRICS_BYTES = 256 * 1024  # of a followed run's metrics.jsonl, from its end
CURVE_POINTS = 200  # a curve is thinned to this many steps
CURVE_SERIES = 8  # metrics drawn per run at most
MAX_NAME = 200  # a metric's name longer than this is not one


class _Wanted(Exception):
    """An operation asked for a script the batch has no answer to yet: it stops there."""


class _Batch(Target):
    """The pod's target as the operations see it during a refresh: each call of each operation
    gets its answer from the batch (by operation and call number), or is noted for the next
    batch and stopped. Connecting and closing are the real target's business."""

    def __init__(self, target, answers: dict, invoke_config=None):
        self.profile = target.profile
        self.connect_ms = target.connect_ms
        # operations/runtime.py reads the project's records of which runtime each host holds.
        self.invoke_config = invoke_config if invoke_config is not None else getattr(target, "invoke_config", None)
        self.answers = answers
        self.wanted: list = []  # [(key, script, payload)]
        self.key = (0, 0)

    def start(self, operation: int) -> None:
        self.key = (operation, 0)

    def run_script(self, script: str, *, stdin_payload: bytes = b"", on_stderr=None, on_stdout=None,
                   hold_stdin: bool = False) -> ScriptResult:
        key = self.key
        self.key = (key[0], key[1] + 1)
        answer = self.answers.get(key)
        if answer is None:
            self.wanted.append((key, script, stdin_payload))
            raise _Wanted()
        if isinstance(answer, Exception):
            raise answer
        if on_stdout is not None and answer.stdout:
            on_stdout(answer.stdout.encode())
        if on_stderr is not None and answer.stderr:
            on_stderr(answer.stderr.encode())
        return answer


def gather(target, asks: dict, invoke_config=None) -> dict:
    """{name: what asks[name](target) returned} for every operation in asks, all of them in one
    round trip to the pod (two when one needs a second script); an operation's expected failure
    (OpsError) is its result {ok: False, error}. `round_trips` and `elapsed_ms` say what it took."""
    answers: dict = {}
    started = time.monotonic()
    trips = 0
    while True:
        batch = _Batch(target, answers, invoke_config)
        results = {}
        for index, (name, ask) in enumerate(asks.items()):
            batch.start(index)
            try:
                results[name] = ask(batch)
            except _Wanted:
                continue
            except OpsError as exc:
                results[name] = {"ok": False, "error": str(exc)}
        if not batch.wanted or trips == MAX_ROUND_TRIPS:
            for name in asks:
                results.setdefault(name, {"ok": False, "error": f"{target.profile.label}: no answer in "
                                                                f"{MAX_ROUND_TRIPS} round trips"})
            return {"results": results, "round_trips": trips,
                    "elapsed_ms": round((time.monotonic() - started) * 1000, 1)}
        answers.update(send_batch(target, batch.wanted))
        trips += 1


def send_batch(target, wanted: list) -> dict:
    """Run every wanted script on the pod in ONE round trip: {key: ScriptResult}, or {key:
    HostError} for every key when the round trip itself failed (the pod unreachable)."""
    script = render_script("ui_batch.sh", scripts=[s for _, s, _ in wanted],
                           payload_bytes=[len(p) for _, _, p in wanted])
    try:
        result = target.run_script(script, stdin_payload=b"".join(p for _, _, p in wanted))
    except HostError as exc:
        return {key: exc for key, _, _ in wanted}
    parts = parse_parts(result.stdout, len(wanted))
    answers = {}
    for index, (key, _, _) in enumerate(wanted):
        part = parts.get(index)
        if part is None:
            detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
            answers[key] = HostError(f"{target.profile.label}: the refresh's part {index} did not answer "
                                     f"(exit {result.exit_code}): {detail}")
        else:
            code, out, err = part
            answers[key] = ScriptResult(out, err, code, result.elapsed_ms)
    return answers


def parse_parts(stdout: str, count: int) -> dict:
    """{index: (exit code, stdout, stderr)} of ui_batch.sh's PART lines; a line of another shape
    (a login shell's noise), an index out of range or text that is not base64 is left out."""
    parts = {}
    for line in stdout.splitlines():
        match = _PART.match(line)
        if not match or int(match.group(1)) >= count:
            continue
        try:
            out, err = (base64.b64decode(match.group(n), validate=True).decode("utf-8", "replace") for n in (3, 4))
        except (binascii.Error, ValueError):
            continue
        parts[int(match.group(1))] = (int(match.group(2)), out, err)
    return parts


# ---------------------------------------------------------------- what is asked of each pod


def vllm_sessions(target) -> dict:
    """The tmux sessions vllm.start recorded on the pod (its state files), each a valid name."""
    result = target.run_script(render_script("ui_vllm_sessions.sh", volume=target.profile.volume))
    names = [line for line in result.stdout.splitlines() if TMUX_SESSION.match(line)]
    return {"ok": True, "sessions": sorted(set(names))[:64]}


def run_metrics(target, *, run_dir: str) -> dict:
    """A run's curves from the end of its metrics.jsonl on the pod (curves_of)."""
    script = render_script("ui_metrics.sh", path=f"{run_dir}/metrics.jsonl", max_bytes=METRICS_BYTES)
    return {"ok": True, **curves_of(target.run_script(script).stdout)}


def curves_of(text: str) -> dict:
    """{"x": the step's name, "series": {metric: [[step, value], ...]}} of metrics.jsonl lines:
    JSON objects, numbers only (a value that is not one is skipped), a torn first or last line
    dropped, at most CURVE_SERIES metrics, each thinned to CURVE_POINTS steps."""
    steps = []
    for line in text.splitlines():
        try:
            step = json.loads(line)
        except ValueError:
            continue  # a line cut by the window, or torn while written
        if isinstance(step, dict):
            steps.append(step)
    x_name = next((k for k in ("step", "iter", "iteration", "global_step", "epoch")
                   if any(finite_number(s.get(k)) is not None for s in steps)), None)
    series: dict = {}
    for index, step in enumerate(steps):
        x = finite_number(step.get(x_name)) if x_name else float(index)
        if x is None:
            continue
        for name, value in step.items():
            y = finite_number(value)
            if name == x_name or y is None or not isinstance(name, str) or len(name) > MAX_NAME:
                continue
            if name not in series and len(series) == CURVE_SERIES:
                continue
            series.setdefault(name, []).append([x, y])
    return {"x": x_name or "line", "series": {name: _thinned(points) for name, points in series.items()}}


def _thinned(points: list) -> list:
    if len(points) <= CURVE_POINTS:
        return points
    step = (len(points) - 1) / (CURVE_POINTS - 1)
    return [points[round(i * step)] for i in range(CURVE_POINTS)]


def run_dir_inside(run_dir, outputs_dir: str) -> bool:
    """True for a run directory the pod reported that is strictly below the outputs root, with
    no `..` and no control character: the only place ui_metrics.sh is pointed at."""
    if not isinstance(run_dir, str) or not isinstance(outputs_dir, str) or re.search(r"[\x00-\x1f\x7f]", run_dir):
        return False
    path, root = PurePosixPath(run_dir), PurePosixPath(outputs_dir)
    return path.is_absolute() and ".." not in path.parts and root in path.parents


def asks_for(profile, *, outputs_dir: str, sessions: list, follows: list) -> dict:
    """What one refresh asks of a pod: {name: operation(target)}. follows: [(run_id, run_dir)],
    the runs a page follows (their log tails and curves)."""
    from .pod import pod_status
    from .runs import run_logs, runs_status
    from .vllm import vllm_status
    from .vllm_spec import check_port

    default_port = check_port(dict(profile.vllm).get("port", defaults.VLLM_PORT))
    api_key = env_value("VLLM_API_KEY")
    asks: dict = {
        "pod": pod_status,
        "runs": lambda t: runs_status(t, outputs_dir=outputs_dir),
        "vllm_sessions": vllm_sessions,
    }
    for session in sessions:
        asks[f"vllm:{session}"] = (lambda s: lambda t: vllm_status(t, session=s, default_port=default_port,
                                                                   api_key=api_key))(session)
    for run_id, run_dir in follows:
        if RUN_ID.match(run_id) and run_dir_inside(run_dir, outputs_dir):
            asks[f"log:{run_id}"] = (lambda r, d: lambda t: run_logs(t, outputs_dir=outputs_dir, run_id=r, run_dir=d,
                                                                     lines=LOG_LINES))(run_id, run_dir)
            asks[f"metrics:{run_id}"] = (lambda d: lambda t: run_metrics(t, run_dir=d))(run_dir)
    return asks


def snapshot_pod(target, *, outputs_dir: str, sessions: list, follows: list, invoke_config=None,
                 on_asked: Optional[Callable[[dict], None]] = None) -> dict:
    """One pod's answers to one refresh (gather over asks_for), in one round trip."""
    asks = asks_for(target.profile, outputs_dir=outputs_dir, sessions=sessions, follows=follows)
    if on_asked is not None:
        on_asked(asks)
    gathered = gather(target, asks, invoke_config)
    gathered["outputs_dir"] = outputs_dir
    return gathered
