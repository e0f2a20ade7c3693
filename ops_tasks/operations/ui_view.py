"""What `ops ui`'s page shows, as one JSON document: each pod's answers to a refresh
(ui_snapshot) shaped for the page, with what the laptop itself keeps (records.py): submissions,
campaigns, the latest report. Plain functions; nothing here talks to a pod.

Every string in the document is the pod's or a file's data: the page writes each one as text
(ui_static/ui.js builds its DOM with textContent only), and `redacted` masks every secret the
laptop knows (the environment's and OPS_PROJECT_ENV's, secrets.redact) before anything leaves
the server.
"""

import json
import os
import time
from pathlib import Path
from typing import Optional

from .. import defaults, records
from ..run_states import ACTIVE, STATES
from ..runtime.contract import finite_number
from ..secrets import redact
from ..settings import host_identity
from ..tables import inert
from .costs import lium_running_cost, price_of, pricing_of_runs, run_cost, usage_of

MAX_SUBMISSIONS = 50  # newest first
MAX_CAMPAIGNS = 10
MAX_REPORT_ROWS = 500
MAX_TEXT = 4000  # a string from a pod longer than this is cut (a log tail is not one string of these)
GPU_KEYS = ("index", "name", "utilization_pct", "memory_used_mib", "memory_total_mib")
SHOWN_RUN_FIELDS = ("run_id", "submission_id", "state", "attempt", "attempts", "failure_class", "exit_code", "signal",
            "error", "last_line", "started", "finished", "gpus", "metrics", "run_dir")


def _text(value) -> Optional[str]:
    """A pod's string for the page: bounded, and every control character a visible escape
    (tables.inert, as on a terminal: an OSC 52 in a log line shows as `\\x1b]52...`)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return inert(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…")


def _plain(value, depth: int = 0):
    """A pod's JSON value kept as scalars, lists and string-keyed objects, strings bounded."""
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return finite_number(value)
    if depth > 4:
        return None
    if isinstance(value, dict):
        return {_text(k): _plain(v, depth + 1) for k, v in list(value.items())[:64]}
    if isinstance(value, list):
        return [_plain(v, depth + 1) for v in value[:64]]
    return _text(value)


# ---------------------------------------------------------------- pods


def pod_view(target, gathered: dict) -> dict:
    """A pod as the page shows it: health, GPUs, volume, money, vLLM servers (runs: runs_view)."""
    profile = target.profile
    results = gathered["results"]
    status = results.get("pod") or {}
    price = price_of(profile)
    cost = lium_running_cost(profile)
    view = {
        "name": profile.name, "ok": status.get("ok") is True, "reachable": status.get("reachable", False),
        "problems": [_text(p) for p in status.get("problems") or []],
        "warnings": [_text(w) for w in status.get("warnings") or []],
        "latency_ms": finite_number(status.get("latency_ms")), "refresh_ms": gathered.get("elapsed_ms"),
        "round_trips": gathered.get("round_trips"), "hostname": _text(status.get("hostname")),
        "gpus": [{k: _plain(g.get(k)) for k in GPU_KEYS} for g in status.get("gpus") or [] if isinstance(g, dict)],
        "volume": {k: _plain((status.get("volume") or {}).get(k)) for k in ("path", "mounted", "free_bytes", "size_bytes")},
        "load": _plain(status.get("load")), "cpus": finite_number(status.get("cpus")),
        "price_per_hour": price["price_per_hour"] if price else None, "price_source": price["source"] if price else None,
        "cost_usd": cost["cost_usd"] if cost else None, "uptime_s": cost["uptime_s"] if cost else None,
        "vllm": vllm_view(results),
    }
    runs = results.get("runs") or {}
    view["supervisor_running"] = runs.get("supervisor_running")
    view["outputs_dir"] = _text(runs.get("outputs_dir") or gathered.get("outputs_dir"))
    if runs.get("error"):
        view["problems"].append(_text(runs["error"]))
    return view


def vllm_view(results: dict) -> list:
    """The vLLM servers of a pod: every session vllm.start recorded there (or the default one,
    when something answers or runs in it), with its health."""
    listed = set((results.get("vllm_sessions") or {}).get("sessions") or [])
    servers = []
    for name, found in results.items():
        if not name.startswith("vllm:") or not isinstance(found, dict):
            continue
        session = name[len("vllm:"):]
        if session not in listed and not found.get("session_alive") and not found.get("status_code"):
            continue  # nothing there: no server to show
        servers.append({
            "session": session, "ok": found.get("ok") is True, "model_id": _text(found.get("model_id")),
            "models": [_text(m.get("id")) for m in found.get("models") or [] if isinstance(m, dict)],
            "health": finite_number(found.get("health")), "status_code": finite_number(found.get("status_code")),
            "port": finite_number(found.get("port")), "uptime_s": finite_number(found.get("uptime_s")),
            "session_alive": found.get("session_alive") is True, "error": _text(found.get("error")),
        })
    return sorted(servers, key=lambda s: s["session"])


def sessions_seen(gathered: dict) -> Optional[list]:
    """The vLLM sessions the pod listed in this refresh (the next refresh probes them), None when
    the listing did not answer."""
    listing = gathered["results"].get("vllm_sessions") or {}
    return list(listing["sessions"]) if listing.get("ok") and isinstance(listing.get("sessions"), list) else None


# ---------------------------------------------------------------- runs


def runs_view(pod_name: str, gathered: dict, pricing: dict, now: float) -> list:
    """The runs of a pod's outputs root, each with its elapsed time (set against this clock by
    the pod's clock offset) and, when its pod's price is known, its cost so far."""
    answer = gathered["results"].get("runs") or {}
    offset = finite_number(answer.get("clock_offset")) or 0.0
    stale_since = finite_number(answer.get("stale_since"))  # the pod did not answer: as last seen
    rows = []
    for run in answer.get("runs") or []:
        row = {k: _plain(run.get(k)) for k in SHOWN_RUN_FIELDS if k in run}
        row["pod"] = pod_name
        state = row.get("state") if row.get("state") in STATES or row.get("state") in ("missing", "unknown") else "unknown"
        row["state"] = state
        started, finished = finite_number(run.get("started")), finite_number(run.get("finished"))
        pod_now = now + offset
        row["elapsed_s"] = None if started is None else max(0.0, (finished or pod_now) - started)
        usage = usage_of({**run, "finished": finished or pod_now}) if state in ACTIVE else usage_of(run)
        row["cost_usd"] = run_cost(usage, pricing.get(row["run_id"])) if usage else None
        if stale_since is not None:
            row["stale_since"] = stale_since
        rows.append(row)
    return rows


# ---------------------------------------------------------------- what the laptop keeps


class Records:
    """The project's records as the page shows them, read again only when a file changed."""

    def __init__(self, project_dir):
        self.project = Path(project_dir)
        self._cache: dict = {}  # path -> (mtime_ns, size, value)
        self._touched: set = set()

    def sweep(self) -> None:
        """Forget the files this refresh did not read (a memory that stays flat for hours)."""
        for key in [k for k in self._cache if k not in self._touched]:
            del self._cache[key]
        self._touched = set()

    def _json(self, path: Path):
        self._touched.add(path)
        try:
            info = path.stat()
        except OSError:
            self._cache.pop(path, None)
            return None
        cached = self._cache.get(path)
        if cached and cached[:2] == (info.st_mtime_ns, info.st_size):
            return cached[2]
        try:
            value = json.loads(path.read_text(errors="replace"))
        except (OSError, ValueError, RecursionError):
            value = None
        self._cache[path] = (info.st_mtime_ns, info.st_size, value)
        return value

    def _newest(self, folder: Path, pattern: str, count: int) -> list:
        try:
            paths = [(p.stat().st_mtime, p) for p in folder.glob(pattern)]
        except OSError:
            return []
        return [p for _, p in sorted(paths, key=lambda item: item[0], reverse=True)[:count]]

    def manifests(self, identities: set) -> list:
        """The newest submissions made from this project to any of these hosts."""
        found = []
        for path in self._newest(records.manifests_dir(self.project), "*.json", 4 * MAX_SUBMISSIONS):
            manifest = self._json(path)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("submission_id"), str):
                continue
            hosts = manifest.get("host_ids") if isinstance(manifest.get("host_ids"), list) else [manifest.get("host_id")]
            if identities & set(h for h in hosts if isinstance(h, str)):
                found.append(manifest)
        return found[:MAX_SUBMISSIONS]

    def pricing(self, manifests: list) -> dict:
        """{run id: its pod's pricing} over these submissions (costs.pricing_of_runs), oldest first
        so that a run's latest submission wins."""
        priced = {}
        for manifest in reversed(manifests):
            priced.update(pricing_of_runs(manifest))
        return priced

    def campaigns(self) -> list:
        from .campaign import DONE, PHASES

        folder = self.project / defaults.CAMPAIGNS_DIR
        shown = []
        for path in self._newest(folder, "*/state.json", MAX_CAMPAIGNS):
            state = self._json(path)
            if not isinstance(state, dict) or not isinstance(state.get("phases"), dict):
                continue
            phases = []
            for phase in PHASES:
                entry = state["phases"].get(phase.name) if isinstance(state["phases"].get(phase.name), dict) else {}
                phases.append({"phase": phase.name, "title": phase.title, "outcome": _text(entry.get("outcome")) or "pending",
                               "started_at": finite_number(entry.get("started_at")), "ended_at": finite_number(entry.get("ended_at")),
                               "summary": _text(entry.get("summary")), "error": _text(entry.get("error"))})
            shown.append({"campaign_id": _text(state.get("campaign_id") or path.parent.name),
                          "config": _text(state.get("config")), "hosts": _plain(state.get("hosts")),
                          "submission_id": _text(state.get("submission_id")),
                          "created_at": finite_number(state.get("created_at")), "phases": phases,
                          "left": [p["phase"] for p in phases if p["outcome"] not in DONE],
                          "not_ok": [p["phase"] for p in phases if p["outcome"] in ("failed", "not_ok")],
                          "rented": rented_view(state.get("rented"))})
        return shown

    def report(self) -> Optional[dict]:
        """The latest report (artifacts/report.json), as tables: its header, groups with their
        intervals, runs, the comparison's lines; None before the first `ops report`."""
        path = records.report_dir(self.project) / "report.json"
        doc = self._json(path)
        if not isinstance(doc, dict):
            return None
        self._touched.add(("view", path))
        cached = self._cache.get(("view", path))
        if cached and cached[0] is doc:
            return cached[1]
        try:
            view = report_view(doc, path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # edited by hand, or another release's
            view = {"error": _text(f"{path} could not be shown ({type(exc).__name__}: {exc})"), "columns": [], "rows": []}
        self._cache[("view", path)] = (doc, view)
        return view


def rented_view(rented) -> list:
    """The pods a campaign rented on Lium, as its state.json says (each recorded before it is
    waited for: what bills shows while Lium starts it): name, price per hour, ready or released."""
    shown = []
    for pod in (rented if isinstance(rented, list) else [])[:64]:
        if isinstance(pod, dict):
            shown.append({"name": _text(pod.get("name")), "price_per_hour": finite_number(pod.get("price_per_hour")),
                          "ready": pod.get("ready") is True, "released": pod.get("released") is True})
    return shown


def report_view(doc: dict, path: Path) -> dict:
    from .report import comparison_lines, comparison_title, group_columns

    rows = [r for r in doc.get("rows") or [] if isinstance(r, dict)][:MAX_REPORT_ROWS]
    columns = [c for c in doc.get("columns") or [] if isinstance(c, str)]
    view = {"written_at": path.stat().st_mtime if path.exists() else None, "html": path.with_suffix(".html").is_file(),
            "header": {_text(k): _plain(v) for k, v in (doc.get("header") or {}).items()} if isinstance(doc.get("header"), dict) else {},
            "metric": _plain(doc.get("metric")), "columns": columns, "rows": [{c: _plain(r.get(c)) for c in columns} for r in rows],
            "count": finite_number(doc.get("count")), "failed": _plain(doc.get("failed")), "error": _text(doc.get("error"))}
    groups = doc.get("groups")
    if isinstance(groups, list) and isinstance(doc.get("group_by"), list):
        metric = (doc.get("metric") or {}).get("name") or "avg_reward"
        group_cols = [c for c in group_columns(doc["group_by"], metric, groups) if any(
            isinstance(g, dict) and g.get(c) is not None for g in groups)]
        view["group_columns"] = group_cols
        view["groups"] = [{c: _plain(g.get(c)) for c in group_cols} for g in groups if isinstance(g, dict)]
    comparison = doc.get("comparison")
    if isinstance(comparison, dict):
        try:
            view["comparison"] = [comparison_title(comparison), *comparison_lines(comparison)]
        except (KeyError, TypeError, ValueError):  # a report.json of another release, or edited
            view["comparison"] = None
    return view


def submissions_view(manifests: list, runs: list) -> list:
    """Each submission with its runs counted by state, as the pods said in this refresh."""
    by_submission: dict = {}
    for run in runs:
        counts = by_submission.setdefault(run.get("submission_id"), {})
        counts[run["state"]] = counts.get(run["state"], 0) + 1
    shown = []
    for manifest in manifests:
        listed = manifest.get("runs") if isinstance(manifest.get("runs"), list) else []
        shown.append({"submission_id": _text(manifest["submission_id"]), "config": _text(manifest.get("config")),
                      "submitted_at": finite_number(manifest.get("submitted_at")),
                      "hosts": _plain(manifest.get("hosts") or [manifest.get("host")]),
                      "runs": len(listed), "by_state": by_submission.get(manifest["submission_id"], {})})
    return shown


def totals_view(pods: list, runs: list) -> dict:
    gpus = [g for p in pods for g in p["gpus"]]
    from ..fleet import gpu_is_free

    by_state: dict = {}
    for run in runs:
        by_state[run["state"]] = by_state.get(run["state"], 0) + 1
    prices = [p["price_per_hour"] for p in pods if p["price_per_hour"] is not None]
    costs = [p["cost_usd"] for p in pods if p["cost_usd"] is not None]
    return {"pods": len(pods), "pods_up": sum(p["reachable"] is True for p in pods),
            "pods_not_ok": sum(not p["ok"] for p in pods), "gpus": len(gpus), "gpus_free": sum(map(gpu_is_free, gpus)),
            "runs_by_state": by_state, "price_per_hour": sum(prices) if prices else None,
            "unpriced_pods": len(pods) - len(prices), "cost_usd": sum(costs) if costs else None}


def document(targets: list, gathered: dict, records_view: Records, *, now: Optional[float] = None) -> dict:
    """The page's whole document for one refresh (gathered: pod name -> snapshot_pod's answer)."""
    now = time.time() if now is None else now
    identities = {host_identity(t.profile) for t in targets}
    manifests = records_view.manifests(identities)
    pricing = records_view.pricing(manifests)
    pods, runs = [], []
    for target in targets:
        answer = gathered.get(target.profile.name)
        if answer is None:
            continue
        pods.append(pod_view(target, answer))
        runs += runs_view(target.profile.name, answer, pricing, now)
    shown = {"at": now, "pods": pods, "runs": runs, "totals": totals_view(pods, runs),
             "submissions": submissions_view(manifests, runs), "campaigns": records_view.campaigns(),
             "report": records_view.report(), "project": str(records_view.project)}
    records_view.sweep()
    return shown


def follow_view(gathered: dict, run_id: str) -> Optional[dict]:
    """A followed run's log tail and curves from one refresh of its pod; None when not asked."""
    results = gathered["results"]
    log = results.get(f"log:{run_id}")
    if log is None:
        return None
    curves = results.get(f"metrics:{run_id}") or {}
    return {"run_id": run_id, "text": _text_tail(log.get("text")), "error": _text(log.get("error")),
            "curves": {"x": _text(curves.get("x")),
                       "series": {_text(name): points for name, points in (curves.get("series") or {}).items()}}}


def _text_tail(text) -> Optional[str]:
    return inert(text[-256 * 1024:]) if isinstance(text, str) else None


# ---------------------------------------------------------------- secrets


def redacted(value, secrets: list):
    """value with every secret masked in every string (keys too): the last step before the page."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redacted(k, secrets): redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, secrets) for v in value]
    return value


def known_secrets() -> list:
    """The secret values this process knows: its environment's and OPS_PROJECT_ENV's."""
    from ..errors import ConfigError
    from ..secrets import secret_values
    from ..settings import project_env

    try:
        return secret_values(os.environ, project_env())
    except ConfigError:
        return secret_values()
