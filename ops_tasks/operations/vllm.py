"""vLLM operations: start, check, stop and read the log of a vLLM server in tmux on a pod.

What runs where:
- the server runs detached in a tmux session (default `vllm`), started by a launcher script on
  the pod's local disk that sources a 0600 env file (secrets never reach argv or tmux);
- its output goes to a log on the volume, `<volume>/vllm/logs/<session>-<UTC time>.log`, so it
  outlives the pod; `<volume>/vllm/<session>.json` records model, argv, port, pid, log, start.
"""

import json
import re
import shlex
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from .. import defaults
from ..errors import HostError
from ..names import TMUX_SESSION
from ..scripts import parse_document, render_script
from ..streams import LineBuffer
from .vllm_spec import ServerSpec, env_file_text, server_argv

VLLM_LIB = ("vllm_lib.sh",)

# Startup phases in the order vLLM goes through them, each with the log text that shows it
# has begun. vLLM mostly logs when a step ends, so a step's closing line marks the next one:
# profiling follows torch.compile, and the API server follows CUDA graph capture.
PHASES = (
    ("loading weights", ("Starting to load model", "Loading weights", "Loading safetensors", "Model loading took")),
    ("compiling", ("Dynamo bytecode transform", "Compiling a graph", "Start compiling", "torch.compile")),
    ("profiling / KV cache", ("torch.compile takes", "Memory profiling", "KV cache", "# GPU blocks", "# cuda blocks")),
    ("capturing CUDA graphs", ("Capturing CUDA graph", "Capturing cudagraph")),
    ("starting API server", ("Graph capturing finished", "init engine", "Starting vLLM API server",
                             "Started server process", "Waiting for application startup")),
    ("ready", ("Application startup complete",)),
)
PHASE_NAMES = ("starting",) + tuple(name for name, _ in PHASES)

# Why a server died, from its log: (cause, what the user should do, log markers).
FAILURE_CAUSES = (
    ("cuda-out-of-memory", "lower --gpu-memory-utilization or --max-model-len, or use more GPUs",
     ("CUDA out of memory", "OutOfMemoryError", "No available memory for the cache blocks",
      "not enough KV cache", "larger than the available KV cache")),
    ("port-in-use", "another process holds the port: pick --port or stop it",
     ("Address already in use", "address already in use", "[Errno 98]")),
    ("model-not-found-or-gated", "check the model id; for a gated model accept its licence and pass --env HF_TOKEN=...",
     ("GatedRepoError", "RepositoryNotFoundError", "401 Client Error", "403 Client Error", "404 Client Error",
      "Cannot access gated repo", "is not a local folder and is not a valid model identifier", "Repository Not Found")),
    # Hugging Face's own texts only: vLLM's engine-config line also says trust_remote_code=True.
    ("trust-remote-code", "the model ships its own code: add --trust-remote-code if you trust it",
     ("contains custom code which must be executed", "Please pass the argument `trust_remote_code=True`",
      "set the option `trust_remote_code=True`")),
    ("command-not-found", "the pod cannot find the vLLM program: pass --vllm-bin /absolute/path",
     ("command not found", re.compile(r"exec: .*: not found"), re.compile(r"exec: .*: cannot execute"))),
)


def phase_of(line: str) -> Optional[str]:
    """The startup phase a vLLM log line marks, or None (the latest phase whose marker it has)."""
    for name, markers in reversed(PHASES):
        if any(marker in line for marker in markers):
            return name
    return None


def _marks(marker, line: str) -> bool:
    return bool(marker.search(line)) if isinstance(marker, re.Pattern) else marker in line


def classify_failure(log_text: str) -> dict:
    """Why a server died: the cause, advice, and the log line that shows it."""
    lines = (log_text or "").splitlines()
    for cause, advice, markers in FAILURE_CAUSES:
        for line in reversed(lines):
            if "with config:" in line:  # the engine's settings, not an error
                continue
            if any(_marks(marker, line) for marker in markers):
                return {"cause": cause, "advice": advice, "evidence": line.strip()}
    evidence = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return {"cause": "other", "advice": "read the log tail", "evidence": evidence}


class StartupProgress:
    """Reads the start script's stderr stream: server log lines and elapsed-time ticks.

    Calls on_progress(elapsed_s, phase) when the phase moves on, and on every tick.
    """

    def __init__(self, on_progress: Optional[Callable[[float, str], None]] = None):
        self.on_progress = on_progress
        self.phase = "starting"
        self.phases = []  # [{"phase", "at_s"}], in the order they were reached
        self.started = time.monotonic()
        self.other_stderr = []
        self._lines = LineBuffer()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def feed(self, chunk: bytes) -> None:
        for line in self._lines.feed(chunk):
            self._line(line)

    def _line(self, line: str) -> None:
        if line.startswith("L|"):
            phase = phase_of(line[2:])
            # Phases only move forward: a later line may mention an earlier phase's words.
            if phase and PHASE_NAMES.index(phase) > PHASE_NAMES.index(self.phase):
                self.phase = phase
                self.phases.append({"phase": phase, "at_s": round(self.elapsed(), 1)})
                self._report()
        elif line.startswith("T|"):
            self._report()
        elif line.strip():
            self.other_stderr.append(line)

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.elapsed(), self.phase)


def models_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/models"


def _state(text: Optional[str]) -> Optional[dict]:
    try:
        state = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None


def stub_program() -> bytes:
    """The stand-in's program as the pod runs it (its first line `#!/usr/bin/env python3`): read as
    a file, never imported (ops_tasks/testing serves the tests; no layer imports it)."""
    return (Path(__file__).resolve().parent.parent / "testing" / "vllm_stub.py").read_bytes()


def launcher_text(argv: list, log_path: str, owner: str) -> str:
    """The script tmux runs (`bash LAUNCHER ENV_FILE`): remote_scripts/vllm_launcher.sh."""
    return render_script("vllm_launcher.sh", owner=owner, log=log_path, command=shlex.join(argv), argv=argv)


def vllm_start(target, spec: ServerSpec, *, restart: bool = False, grace_s: float = defaults.VLLM_GRACE_S,
               wait: bool = False, timeout_s: float = defaults.VLLM_START_TIMEOUT_S,
               on_progress: Optional[Callable[[float, str], None]] = None) -> dict:
    """Start the server in tmux (one round trip, the wait included); refuse a busy session or port."""
    profile = target.profile
    argv = server_argv(spec)
    stub = stub_program() if spec.ships_stub else b""
    owner = f"{spec.session}-{uuid.uuid4().hex[:12]}"
    # One log per start, on the volume: an earlier start's log is never overwritten.
    log_path = f"{profile.volume}/vllm/logs/{spec.session}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log"
    base_url = f"http://127.0.0.1:{spec.port}/v1"
    state_fields = {
        "session": spec.session,
        "model_id": spec.model_id,
        "served_model_name": spec.served_name,
        "port": spec.port,
        "bind_host": spec.bind_host,
        "base_url": base_url,
        "log": log_path,
        "argv": argv,
        "command": shlex.join(argv),
        "env": spec.env_shown(),
        "owner": owner,
    }
    script = render_script(
        "vllm_start.sh", include=VLLM_LIB,
        volume=profile.volume, session=spec.session, tmux_socket=profile.tmux_socket, port=spec.port,
        launcher=launcher_text(argv, log_path, owner), log=log_path, owner=owner,
        state_fields=json.dumps(state_fields, separators=(",", ":")),
        restart=restart, grace_ms=int(grace_s * 1000), wait=wait, timeout_ms=int(timeout_s * 1000),
        models_url=models_url(base_url), served_name=spec.served_name, stub_bytes=len(stub),
    )
    progress = StartupProgress(on_progress)
    # The stand-in travels in the same round trip, ahead of the env file on stdin.
    result = target.run_script(script, stdin_payload=stub + env_file_text(spec.env), on_stderr=progress.feed)
    facts = parse_document(result, profile.label, "vllm_start.sh")
    report = {
        "ok": False, "host": profile.name, "session": spec.session, "model_id": spec.model_id,
        "served_model_name": spec.served_name, "port": spec.port, "base_url": base_url,
        "log": log_path, "command": shlex.join(argv), "restarted": facts.get("restarted"),
    }
    if not facts.get("started"):
        report["refused"] = facts.get("refused")
        report["error"] = _refusal(facts, spec, profile)
        return report
    report.update(pid=facts["pid"], started_at=facts["started_at"], ok=True, warnings=[])
    if profile.volume_must_be_mount and not facts["volume_mounted"]:
        report["warnings"].append(f"{profile.volume} is not a mounted volume: the server log is on the pod's "
                                  f"own disk and goes with it")
    waited = facts.get("wait")
    if waited:
        report["wait"] = _wait_report(waited, progress)
        report["ok"] = waited["outcome"] == "ready"
        if not report["ok"]:
            report["error"] = _wait_error(report["wait"], profile.label, spec)
    return report


def _foreign_session(foreign: dict, session: str, profile) -> str:
    """What holds a session vllm.start did not start, and that it was left alone."""
    where = f"on socket {profile.tmux_socket}" if profile.tmux_socket else "on the default socket"
    why = "its processes carry no owner mark" if foreign.get("state_file") else "no state file"
    panes = ", ".join(f"pid {p['pid']}: {p['command'][:60]}" for p in foreign.get("panes", []))
    return (f"{profile.label}: tmux session {session!r} {where} was not started by ops-tasks ({why}; "
            f"{panes or 'no pane'}): left alone; stop it yourself or pick another --session")


def _foreign_port(port: int, holder: Optional[dict], label: str, verb: str = "is already taken") -> str:
    """A port held by a process vllm.start did not start (it is never stopped)."""
    holder = holder or {}
    who = f"pid {holder['pid']} ({holder.get('command')})" if holder.get("pid") else holder.get("command", "?")
    return (f"{label}: port {port} {verb} by {who}, which vllm.start did not start: left alone; "
            f"stop it yourself or pick another --port")


def _refusal(facts: dict, spec: ServerSpec, profile) -> str:
    label = profile.label
    state = _state(facts.get("state")) or {}
    if facts.get("refused") == "foreign-session":
        return _foreign_session(facts["foreign_session"], spec.session, profile)
    if facts.get("refused") == "session":
        what = f" (serving {state['model_id']} on port {state.get('port')})" if state.get("model_id") else ""
        return f"{label}: tmux session {spec.session!r} already exists{what}; use --restart to replace it"
    if facts.get("refused") == "port":
        # Anything of ours on the port was found first (the session, or its leftovers).
        return _foreign_port(spec.port, facts.get("port_owner"), label)
    if facts.get("refused") == "leftovers":
        pids = ", ".join(f"{p['pid']} ({p['command'][:60]})" for p in facts.get("leftovers", []))
        return (f"{label}: processes of the previous server in session {spec.session!r} still run: {pids}; "
                f"vllm.stop first (or --restart)")
    return f"{label}: {facts.get('error') or 'could not start the server'}"


def _wait_report(waited: dict, progress: StartupProgress) -> dict:
    report = {
        "outcome": waited["outcome"],
        "elapsed_s": round(waited["elapsed_ms"] / 1000, 1),
        "phase": progress.phase if waited["outcome"] != "ready" else "ready",
        "phases": progress.phases,
    }
    if waited["outcome"] != "ready":
        report["log_tail"] = waited.get("log_tail") or ""
    if waited["outcome"] == "died":
        report.update(classify_failure(report["log_tail"]))
    return report


def _wait_error(waited: dict, label: str, spec: ServerSpec) -> str:
    if waited["outcome"] == "died":
        return (f"{label}: the vLLM server died after {waited['elapsed_s']:.0f}s "
                f"({waited['cause']}: {waited['evidence']}); {waited['advice']}")
    return (f"{label}: not serving {spec.served_name} after {waited['elapsed_s']:.0f}s "
            f"(last phase: {waited['phase']}); it is still running: vllm.logs to look, vllm.stop to stop it")


def vllm_status(target, *, base_url: Optional[str] = None, port: Optional[int] = None,
                default_port: int = defaults.VLLM_PORT, session: str = defaults.VLLM_SESSION, tail_lines: int = 40,
                api_key: Optional[str] = None, find_session: bool = False) -> dict:
    """Probe the server from the pod (one round trip): models, /health, session, pid, log tail.

    base_url None: 127.0.0.1 at port, else the port the state file records, else default_port;
    the report's port is the one probed (None when base_url was given). find_session (no session
    was named): where `session` has none, the session vllm.start runs on the probed port is the
    one reported.
    """
    profile = target.profile
    script = render_script(
        "vllm_status.sh", include=VLLM_LIB,
        volume=profile.volume, session=session, tmux_socket=profile.tmux_socket,
        base_url=base_url, port=port, default_port=default_port, tail_lines=tail_lines, find_session=find_session,
    )
    payload = (api_key + "\n").encode() if api_key else b""
    facts = parse_document(target.run_script(script, stdin_payload=payload), profile.label, "vllm_status.sh")
    models = _models(facts["models_body"]) if facts["models_status"] == 200 else []
    ok = facts["models_status"] == 200 and bool(models)
    state = _state(facts["state"]) or {}
    report = {
        "ok": ok, "host": profile.name, "base_url": facts["base_url"], "port": facts["port"], "status_code": facts["models_status"] or None,
        "models": models, "health": facts["health_status"] or None, "session": _session_named(facts, session),
        "session_alive": facts["session_alive"], "session_foreign": facts["session_foreign"], "pid": facts["pid"], "uptime_s": facts["uptime_s"],
        "model_id": state.get("model_id"), "log": facts["log"] or None,
    }
    if not ok:
        report["log_tail"] = facts["log_tail"]
        report["error"] = _not_serving(report, profile.label)
    return report


def _session_named(facts: dict, asked: str) -> str:
    """The session the pod reported on (another one vllm.start runs on the probed port, when none
    was named), checked: a name of another shape is not taken."""
    named = facts.get("session")
    return named if isinstance(named, str) and TMUX_SESSION.match(named) else asked


def _models(body: str) -> list:
    try:
        data = json.loads(body).get("data") or []
    except (json.JSONDecodeError, AttributeError):
        return []
    return [{"id": m.get("id"), "max_model_len": m.get("max_model_len")} for m in data if isinstance(m, dict)]


def _not_serving(report: dict, label: str) -> str:
    code = report["status_code"]
    if code is None:
        why = "nothing answers"
    elif code == 401:
        why = "HTTP 401: the server wants an API key (set VLLM_API_KEY)"
    else:
        why = f"HTTP {code}"
    if report["pid"] and code is None:
        why += " yet (the server is still starting)"
    return f"{label}: vLLM is not serving at {report['base_url']}: {why}"


def vllm_stop(target, *, session: str = defaults.VLLM_SESSION, grace_s: float = defaults.VLLM_GRACE_S,
              port: Optional[int] = None, default_port: int = defaults.VLLM_PORT) -> dict:
    """Stop the server: INT, TERM, then KILL its whole process tree; verify nothing is left."""
    profile = target.profile
    script = render_script(
        "vllm_stop.sh", include=VLLM_LIB,
        volume=profile.volume, session=session, tmux_socket=profile.tmux_socket,
        grace_ms=int(grace_s * 1000), port=port, default_port=default_port,
    )
    facts = parse_document(target.run_script(script), profile.label, "vllm_stop.sh")
    facts["processes"].sort(key=lambda p: p["pid"])
    running = bool(facts["processes"]) or facts["session_killed"]
    report = {"ok": True, "host": profile.name, "session": session, "running": running, **facts}
    if not running:
        report["message"] = "not running"
    errors = _stop_errors(facts, session, profile)
    if errors:
        report.update(ok=False, error="; ".join(errors))
    return report


def _stop_errors(facts: dict, session: str, profile) -> list:
    """What keeps a stop from being clean: survivors, a session or port held by someone else."""
    errors = []
    if facts["left"]:
        errors.append(f"{profile.label}: processes survived SIGKILL: " + ", ".join(
            f"{p['pid']} ({p['command']})" for p in facts["left"]))
    if facts["foreign_session"]:
        errors.append(_foreign_session(facts["foreign_session"], session, profile))
    if not facts["port_free"]:
        holder = facts["port_owner"] or {}
        ours = holder.get("pid") in {p["pid"] for p in facts["processes"]}
        if ours:
            errors.append(f"{profile.label}: port {facts['port']} is still taken by pid {holder['pid']} "
                          f"({holder.get('command')})")
        elif not facts["left"]:
            errors.append(_foreign_port(facts["port"], holder, profile.label, verb="is held"))
    return errors


def vllm_logs(target, *, session: str = defaults.VLLM_SESSION, lines: int = 100, follow: bool = False,
              on_output: Optional[Callable[[bytes], None]] = None) -> dict:
    """The server log's last lines; with follow, stream it to on_output until interrupted."""
    profile = target.profile
    script = render_script("vllm_logs.sh", include=VLLM_LIB, volume=profile.volume, session=session,
                           lines=lines, follow=follow)
    if follow:
        result = target.run_script(script, on_stdout=on_output, hold_stdin=True)
        if result.exit_code == 3:  # no log: the script says so on stderr
            return _no_log(parse_document(_stderr_as_stdout(result), profile.label, "vllm_logs.sh"), profile, session)
        return {"ok": True, "host": profile.name, "session": session, "followed": True}
    facts = parse_document(target.run_script(script), profile.label, "vllm_logs.sh")
    if not facts["found"]:
        return _no_log(facts, profile, session)
    return {"ok": True, "host": profile.name, "session": session, "log": facts["log"], "text": facts["text"]}


def _stderr_as_stdout(result):
    return type(result)(result.stderr, "", result.exit_code, result.elapsed_ms)


def _no_log(facts: dict, profile, session: str) -> dict:
    where = f"its log {facts['log']} is gone" if facts.get("log") else "no vllm.start recorded for it"
    raise HostError(f"{profile.label}: no log for session {session!r}: {where}")
