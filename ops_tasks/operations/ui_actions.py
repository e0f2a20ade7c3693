"""What a user does from `ops ui`'s page: cancel a run, resume a lost one, fetch a run, stop a
vLLM server. Each calls the operation its command-line task calls (runs.cancel: cancel_runs,
runs.resume: resume_runs, artifacts.fetch: fetch_runs, vllm.stop: vllm_stop), on the pod's
connection the page already uses, so that each writes what the task writes (a fetch its records
in artifacts/fetched/) and refuses what the task refuses.

The page names only what to act on (an action, a pod, a run id or a vLLM session); where the run
lives (its outputs root and directory) comes from what the pod itself said in the latest
refresh, never from the request, and a name the refresh did not show is refused.
"""

from typing import Optional

from .. import defaults, records
from ..errors import ConfigError
from ..names import RUN_ID, TMUX_SESSION

ACTIONS = {
    "cancel": "runs.cancel",
    "resume": "runs.resume",
    "fetch": "artifacts.fetch",
    "vllm_stop": "vllm.stop",
}


def checked_request(body) -> dict:
    """{action, pod, run_id | session} of a page's request; ConfigError naming what is wrong."""
    if not isinstance(body, dict):
        raise ConfigError("the request is not a JSON object")
    action, pod = body.get("action"), body.get("pod")
    if action not in ACTIONS:
        raise ConfigError(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
    if not isinstance(pod, str):
        raise ConfigError("the request names no pod")
    if action == "vllm_stop":
        session = body.get("session")
        if not isinstance(session, str) or not TMUX_SESSION.match(session):
            raise ConfigError(f"vllm_stop: {session!r} is not a tmux session name")
        return {"action": action, "pod": pod, "session": session}
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise ConfigError(f"{action}: {run_id!r} is not a run id")
    return {"action": action, "pod": pod, "run_id": run_id}


def _shown_run(document: dict, pod: str, run_id: str) -> dict:
    run = next((r for r in document.get("runs") or [] if r.get("pod") == pod and r.get("run_id") == run_id), None)
    if run is None:
        raise ConfigError(f"no run {run_id} on {pod} in the page's latest refresh")
    return run


def _outputs_dir(document: dict, pod: str) -> str:
    shown = next((p for p in document.get("pods") or [] if p.get("name") == pod), None)
    if not shown or not shown.get("outputs_dir"):
        raise ConfigError(f"{pod}: its outputs root is not known yet (no answer from it so far)")
    return shown["outputs_dir"]


def run_action(request: dict, *, target, document: dict, project_dir) -> dict:
    """Carry out a checked request on the pod's target; the operation's own result."""
    from .artifacts import fetch_runs
    from .runs import cancel_runs, resume_runs
    from .vllm import vllm_stop
    from .vllm_spec import check_port

    pod, action = request["pod"], request["action"]
    if action == "vllm_stop":
        servers = next((p.get("vllm") or [] for p in document.get("pods") or [] if p.get("name") == pod), [])
        if request["session"] not in {s.get("session") for s in servers}:
            raise ConfigError(f"no vLLM session {request['session']} on {pod} in the page's latest refresh")
        default_port = check_port(dict(target.profile.vllm).get("port", defaults.VLLM_PORT))
        return vllm_stop(target, session=request["session"], default_port=default_port)
    run = _shown_run(document, pod, request["run_id"])
    outputs_dir = _outputs_dir(document, pod)
    run_id, run_dir = run["run_id"], run.get("run_dir")
    dirs = {run_id: run_dir} if isinstance(run_dir, str) else {}
    if action == "cancel":
        return cancel_runs(target, outputs_dir=outputs_dir, run_ids=[run_id], run_dirs=dirs)
    if action == "resume":
        return resume_runs(target, outputs_dir=outputs_dir, tmux_session=_session_of(project_dir, run),
                           run_ids=[run_id], run_dirs=dirs)
    return fetch_runs(target, runs=[{"run_id": run_id, "run_dir": run_dir or f"{outputs_dir}/{run_id}"}],
                      outputs_dir=outputs_dir, local_root=records.local_runs_dir(project_dir),
                      records_dir=records.fetch_records_dir(project_dir))


def _session_of(project_dir, run: dict) -> str:
    """The supervisor's tmux session, as runs.resume picks it: the run's submission's, else the default."""
    manifest: Optional[dict] = None
    if isinstance(run.get("submission_id"), str) and RUN_ID.match(run["submission_id"]):
        manifest = records.load_manifest(project_dir, run["submission_id"])
    session = (manifest or {}).get("tmux_session")
    return session if isinstance(session, str) and TMUX_SESSION.match(session) else defaults.RUNS_SESSION
