"""`vllm` namespace: serve a model with vLLM in tmux on a pod, check it, stop it, read its log."""

import sys

from invoke import Collection
from .tables import tabulate

from . import defaults
from .errors import ConfigError, HostError, Interrupted
from .flags import count_flag, seconds_flag
from .forwarding import LocalForward
from .output import (LineEmitter, add_secrets, announce, fleet_requested, json_requested, log, on_each_pod, ops_task,
                     target_of)
from .secrets import is_secret_name
from .settings import env_value
# The operations, fleet and targets are imported by the functions that use them: `ops --list` and
# `ops TASK --help` load none of them (ARCHITECTURE.md, "Start-up").

START_HELP = {
    "model_id": "Model to serve (Hugging Face id or path on the pod). Required, unless the profile sets vllm.model_id.",
    "vllm_bin": "vLLM program (default: vllm). A path ending in python runs -m vllm.entrypoints.openai.api_server; "
                "ops-vllm-stub: the stand-in (no GPU, no weights), sent to the pod with the start.",
    "tensor_parallel_size": "GPUs to shard each model replica over (--tensor-parallel-size).",
    "pipeline_parallel_size": "Pipeline stages (--pipeline-parallel-size).",
    "gpu_memory_utilization": "Fraction of each GPU's memory vLLM may take, in (0, 1].",
    "max_model_len": "Context length (--max-model-len).",
    "dtype": "Weights dtype: auto, half, float16, bfloat16, float, float32.",
    "quantization": "Quantization method (awq, gptq, fp8, ...).",
    "trust_remote_code": "Allow the model's own code to run (--trust-remote-code).",
    "port": f"Port the server listens on (default: {defaults.VLLM_PORT}).",
    "bind_host": "Address the server binds (default: 127.0.0.1; reach it with vllm.tunnel).",
    "served_model_name": "Name /v1/models lists the model under (default: the model id).",
    "extra_args": 'More vLLM flags, split like a shell line: "--enable-prefix-caching --seed 1".',
    "session": f"tmux session on the pod (default: {defaults.VLLM_SESSION}).",
    "env": "KEY=VALUE for the server's environment (repeatable). Secrets go to a 0600 file, never argv.",
    "restart": "Stop the server of this session first (its whole process tree), then start.",
    "grace": f"With --restart: seconds to let the old server shut down before TERM/KILL "
             f"(default {defaults.VLLM_GRACE_S:g}).",
    "wait": "Wait until /v1/models lists the model, showing the startup phase.",
    "timeout": f"With --wait: seconds to wait (default {defaults.VLLM_START_TIMEOUT_S:g}).",
}


def _session_of(session, profile_vllm: dict) -> str:
    """--session, else the profile's vllm.session, else the built-in one."""
    from .operations.vllm_spec import check_session
    return check_session(session or profile_vllm.get("session") or defaults.VLLM_SESSION)


class PhasePrinter:
    """Startup progress on stderr: one redrawn line on a terminal, else a line per phase (each
    line naming its pod when several start at once: they cannot share one redrawn line)."""

    def __init__(self, stream=None, pod: str = ""):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() and not pod
        self.prefix = f"{pod}: " if pod else ""
        self.last_phase = None
        self.last_line_at = -1e9

    def __call__(self, elapsed: float, phase: str) -> None:
        if self.tty:
            self.stream.write(f"\r\x1b[Kvllm: {elapsed:4.0f}s  {phase}")
            self.stream.flush()
        elif phase != self.last_phase or elapsed - self.last_line_at >= 30:
            log(f"{self.prefix}vllm: {elapsed:.0f}s {phase}")
            self.last_line_at = elapsed
        self.last_phase = phase

    def done(self) -> None:
        if self.tty and self.last_phase is not None:
            self.stream.write("\n")


# ---------------------------------------------------------------- start


def render_start(data: dict) -> str:
    if not data["ok"] and "pid" not in data:
        return f"refused: {data['error']}"
    lines = [f"{data['host']}: vLLM {data['model_id']} in tmux session {data['session']!r}, "
             f"pid {data['pid']}, {data['base_url']}",
             f"  log:     {data['log']}",
             f"  command: {data['command']}"]
    lines += [f"warning: {w}" for w in data.get("warnings", [])]
    waited = data.get("wait")
    if waited and waited["outcome"] == "ready":
        steps = ", ".join(f"{p['phase']} at {p['at_s']:.0f}s" for p in waited["phases"]) or "no phases logged"
        lines.append(f"  serving after {waited['elapsed_s']:.0f}s ({steps})")
    elif waited:
        lines.append(f"error: {data['error']}")
        lines += ["--- log tail ---", (waited.get("log_tail") or "(empty)").rstrip()]
    return "\n".join(lines)


@ops_task(human=render_start, help=START_HELP, iterable=["env"])
def start(c, host=None, model_id=None, vllm_bin=None, tensor_parallel_size=None, pipeline_parallel_size=None,
          gpu_memory_utilization=None, max_model_len=None, dtype=None, quantization=None,
          trust_remote_code=False, port=None, bind_host=None, served_model_name=None, extra_args=None,
          session=None, env=None, restart=False, grace=None, wait=False, timeout=None):
    """Start vLLM detached in tmux on the pod (one server per pod of a fleet, the same flags:
    data-parallel replicas); --wait until it serves."""
    options = dict(
        model_id=model_id, vllm_bin=vllm_bin, tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len, dtype=dtype, quantization=quantization,
        trust_remote_code=trust_remote_code or None, port=port, bind_host=bind_host,
        served_model_name=served_model_name, extra_args=extra_args, session=session, env=env,
    )
    return on_each_pod(c, host, lambda target: _start_on(target, options, restart=restart, grace=grace, wait=wait,
                                                         timeout=timeout))


def _start_on(target, options: dict, *, restart, grace, wait, timeout) -> dict:
    # Each pod's profile's `vllm:` defaults, under the flags.
    from .operations.vllm import vllm_start
    from .operations.vllm_spec import build_spec
    from .targets import LinkDown
    spec = build_spec(options, dict(target.profile.vllm))
    # A secret given with --env may come back in the server's log tail: mask it there too.
    add_secrets(value for name, value in spec.env if is_secret_name(name))
    grace_s = seconds_flag("--grace", grace, defaults.VLLM_GRACE_S, allow_zero=True)
    timeout_s = seconds_flag("--timeout", timeout, defaults.VLLM_START_TIMEOUT_S)
    printer = PhasePrinter(pod=target.profile.name if fleet_requested() else "")
    try:
        with target.round_trip_budget(grace_s + timeout_s if wait else None):
            return vllm_start(target, spec, restart=restart, grace_s=grace_s, wait=wait, timeout_s=timeout_s,
                              on_progress=printer)
    except LinkDown as lost:
        raise lost.with_hint(f"the server may still be starting in tmux session {spec.session!r}: see it with "
                             f"ops vllm.status --host {target.profile.name}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the server goes on starting in tmux session {spec.session!r} "
                          f"(vllm.logs to follow it, vllm.stop to stop it)") from None
    finally:
        printer.done()


# ---------------------------------------------------------------- status


def render_status(data: dict) -> str:
    head = f"{data['host']}: vLLM {'serving' if data['ok'] else 'NOT serving'} at {data['base_url']}"
    models = ", ".join(f"{m['id']} (max_model_len {m['max_model_len']})" for m in data["models"]) or "none"
    uptime = f"{data['uptime_s']}s" if data["uptime_s"] is not None else "-"
    rows = [("models", models), ("http", data["status_code"] or "no answer"), ("health", data["health"] or "no answer"),
            ("session", f"{data['session']} ({_session_state(data)})"),
            ("pid", data["pid"] or "-"), ("uptime", uptime), ("log", data["log"] or "-")]
    lines = [head, tabulate(rows, tablefmt="plain")]
    if not data["ok"]:
        lines.append(f"error: {data['error']}")
        if data.get("log_tail"):
            lines += ["--- log tail ---", data["log_tail"].rstrip()]
    return "\n".join(lines)


def _session_state(data: dict) -> str:
    if not data["session_alive"]:
        # What answers was started otherwise (by hand, another tool), or in a session on another port.
        return "none: what answers is no server vllm.start runs" if data["ok"] else "none"
    return "alive, NOT started by ops-tasks: vllm.stop leaves it alone" if data["session_foreign"] else "alive"


def _base_url(api_base_url):
    from .operations.vllm_spec import normalize_base_url
    for flag, value in (("--api-base-url", api_base_url), ("VLLM_BASE_URL", env_value("VLLM_BASE_URL")),
                        ("OPENAI_API_BASE", env_value("OPENAI_API_BASE"))):
        if value:
            return normalize_base_url(value, flag)
    return None


@ops_task(human=render_status, help={
    "api_base_url": "Base URL to probe from the pod (default: $VLLM_BASE_URL, $OPENAI_API_BASE, "
                    "then http://127.0.0.1:<port>/v1).",
    "port": f"Port of the server when no URL is given (default: the one vllm.start recorded, else "
            f"{defaults.VLLM_PORT}).",
    "session": f"tmux session of the server (default: {defaults.VLLM_SESSION}, else the one vllm.start runs on "
               f"the probed port).",
    "tail_lines": "Log lines to show when the server is not serving (default 40).",
})
def status(c, host=None, api_base_url=None, port=None, session=None, tail_lines=None):
    """Check that vLLM serves: /v1/models, /health, session, pid, uptime (one round trip)."""
    return on_each_pod(c, host, lambda target: _status_on(target, api_base_url, port, session, tail_lines))


def _status_on(target, api_base_url, port, session, tail_lines) -> dict:
    from .operations.vllm import vllm_status
    from .operations.vllm_spec import check_port
    profile_vllm = dict(target.profile.vllm)
    base_url = _base_url(api_base_url)
    port = check_port(port) if port is not None else None
    default_port = check_port(profile_vllm.get("port", defaults.VLLM_PORT))
    named = session is not None or profile_vllm.get("session") is not None
    session = _session_of(session, profile_vllm)
    lines = count_flag("--tail-lines", tail_lines, 40)
    return vllm_status(target, base_url=base_url, port=port, default_port=default_port, session=session,
                       tail_lines=lines, api_key=env_value("VLLM_API_KEY"), find_session=not named)


# ---------------------------------------------------------------- stop


def _count(items, one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def render_stop(data: dict) -> str:
    if not data["running"]:
        lines = [f"{data['host']}: vLLM session {data['session']!r} not running"]
        if data.get("error"):
            lines.append(f"error: {data['error']}")
        return "\n".join(lines)
    ended = ", ".join(f"{len(pids)} by SIG{sig}" for sig, pids in data["ended_by"].items() if pids) or "none"
    lines = [f"{data['host']}: stopped vLLM session {data['session']!r}: "
             f"{_count(data['processes'], 'process', 'processes')} ({ended})"]
    lines += [f"  {p['pid']}: {p['command']}" for p in data["processes"]]
    lines.append(f"  port {data['port']}: {'free' if data['port_free'] else 'STILL TAKEN'}")
    if data["gpu_memory_used_mib_before"] is not None:
        lines.append(f"  GPU memory used (MiB): {data['gpu_memory_used_mib_before']} before, "
                     f"{data['gpu_memory_used_mib_after']} after")
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    return "\n".join(lines)


@ops_task(human=render_stop, help={
    "session": f"tmux session of the server (default: {defaults.VLLM_SESSION}).",
    "grace": f"Seconds to let the server shut down after SIGINT before TERM, then KILL "
             f"(default {defaults.VLLM_GRACE_S:g}).",
    "port": "Port to check is free afterwards (default: the one vllm.start recorded).",
})
def stop(c, host=None, session=None, grace=None, port=None):
    """Stop vLLM and its whole process tree (engine, workers), and free its port."""
    return on_each_pod(c, host, lambda target: _stop_on(target, session, grace, port))


def _stop_on(target, session, grace, port) -> dict:
    from .operations.vllm import vllm_stop
    from .operations.vllm_spec import check_port
    profile_vllm = dict(target.profile.vllm)
    session = _session_of(session, profile_vllm)
    grace_s = seconds_flag("--grace", grace, defaults.VLLM_GRACE_S, allow_zero=True)
    port = check_port(port) if port is not None else None
    return vllm_stop(target, session=session, grace_s=grace_s, port=port,
                     default_port=check_port(profile_vllm.get("port", defaults.VLLM_PORT)))


# ---------------------------------------------------------------- logs


@ops_task(human=lambda data: data["text"].rstrip("\n"), help={
    "session": f"tmux session of the server (default: {defaults.VLLM_SESSION}).",
    "lines": "How many of the last lines to print (default 100).",
    "follow": "Keep printing new lines until Ctrl-C.",
})
def logs(c, host=None, session=None, lines=None, follow=False):
    """Print the vLLM server log (kept on the volume); --follow streams it."""
    return on_each_pod(c, host, lambda target: _logs_on(target, session, lines, follow))


def _logs_on(target, session, lines, follow):
    from .operations.vllm import vllm_logs
    from .targets import LinkDown
    session = _session_of(session, dict(target.profile.vllm))
    count = count_flag("--lines", lines, 100)
    if follow and json_requested():
        raise ConfigError("--follow streams the log as text: it cannot be combined with --json or --pretty")
    if follow and fleet_requested():
        raise ConfigError("vllm.logs --follow streams one pod's log: give one host (without --follow, each "
                          "pod's log is shown in turn)")
    if not follow:
        return vllm_logs(target, session=session, lines=count)
    try:
        vllm_logs(target, session=session, lines=count, follow=True, on_output=LineEmitter())
    except LinkDown as lost:
        raise lost.with_hint(f"the server goes on: follow it again with ops vllm.logs --host {target.profile.name} "
                             f"--follow") from None
    return None


# ---------------------------------------------------------------- tunnel


@ops_task(help={
    "port": f"The server's port on the pod (default: the profile's vllm.port, else the port vllm.start "
            f"recorded for the session, else {defaults.VLLM_PORT}).",
    "local_port": f"Port to listen on here (default: --port, else the profile's vllm.port, else "
                  f"{defaults.VLLM_PORT}).",
    "session": f"tmux session of the server, whose recorded port is used (default: {defaults.VLLM_SESSION}).",
})
def tunnel(c, host=None, port=None, local_port=None, session=None):
    """Forward a local port to the pod's vLLM over SSH (one port per pod of a fleet); prints OPENAI_API_BASE."""
    from .operations.vllm import vllm_status
    from .operations.vllm_spec import check_port
    from .output import fleet_targets

    fleet = fleet_targets(c, host)
    if fleet:
        return _fleet_tunnel(fleet, port, local_port, session)
    target = target_of(c, host)
    profile_vllm = dict(target.profile.vllm)
    fixed = port if port is not None else profile_vllm.get("port")
    remote_port = check_port(fixed) if fixed is not None else None
    here = check_port(local_port if local_port is not None else fixed if fixed is not None else defaults.VLLM_PORT,
                      "--local-port")
    session = _session_of(session, profile_vllm)
    if target.profile.is_local:
        url = f"http://127.0.0.1:{remote_port or defaults.VLLM_PORT}/v1"
        announce({"ok": True, "host": target.profile.name, "openai_api_base": url, "tunnel": False},
                 f"OPENAI_API_BASE={url}  (the local host needs no tunnel)")
        return None
    # The local port first: a busy one is bad input, found before anything is contacted.
    forward = LocalForward(here, remote_port or defaults.VLLM_PORT)
    target.describe(forward=f"127.0.0.1:{here} -> {target.profile.destination} 127.0.0.1:"
                            f"{remote_port or 'the port vllm.start recorded'}")
    try:
        forward.attach(target.open().transport)
        if remote_port is None:
            # The port the session's server was started on (one round trip), and whether it serves.
            found = vllm_status(target, session=session, default_port=defaults.VLLM_PORT)
            remote_port = found["port"]
            forward.remote = ("127.0.0.1", remote_port)
            if not found["ok"]:
                log(f"warning: {found['error']}")
    except BaseException:
        forward.close()
        raise
    forward.on_refused = lambda exc: log(f"{target.profile.label}: nothing answers on port {remote_port} "
                                         f"there (is vLLM running?)")
    url = f"http://127.0.0.1:{here}/v1"
    announce({"ok": True, "host": target.profile.name, "openai_api_base": url, "tunnel": True,
              "local_port": here, "remote_port": remote_port}, f"OPENAI_API_BASE={url}")
    log(f"tunnel 127.0.0.1:{here} -> {target.profile.label} 127.0.0.1:{remote_port} open; Ctrl-C to close")
    try:
        forward.serve()
    except KeyboardInterrupt:
        return None
    raise HostError(f"{target.profile.label}: connection lost; the tunnel is closed")


def _fleet_tunnel(targets: list, port, local_port, session):
    """One local port per pod, in host order from --local-port (default: the first pod's vLLM
    port, else the built-in one), every port bound before any pod is contacted; the pods are
    reached at once, and the tunnels that opened serve until Ctrl-C. A pod that cannot be
    reached is named, and the others' tunnels still open."""
    from .fleet import fan_out_targets, fleet_document
    from .operations.vllm_spec import check_port
    import functools

    remote = {t.profile.name: _fixed_port(port, t.profile) for t in targets}
    sessions = {t.profile.name: _session_of(session, dict(t.profile.vllm)) for t in targets}
    first = check_port(local_port if local_port is not None else remote[targets[0].profile.name] or defaults.VLLM_PORT,
                       "--local-port")
    if first + len(targets) - 1 > 65535:
        raise ConfigError(f"--local-port {first}: {len(targets)} pods need ports {first}-{first + len(targets) - 1}, "
                          f"past 65535")
    forwards = {}
    try:
        for index, target in enumerate(targets):
            if not target.profile.is_local:
                forwards[target.profile.name] = LocalForward(first + index, remote[target.profile.name]
                                                             or defaults.VLLM_PORT)
        document = fleet_document(fan_out_targets(targets, functools.partial(_open_tunnel, forwards, remote, sessions)))
    except BaseException:
        _close_forwards(forwards.values())
        raise
    failed = set(document["failed"])
    _close_forwards(f for name, f in forwards.items() if name in failed or document.get("dry_run"))
    live = {name: f for name, f in forwards.items() if name not in failed}
    if document.get("dry_run") or not live:
        return document
    announce(document, render_fleet_tunnel(document))
    return _serve_tunnels(live, {t.profile.name: t for t in targets}, document)


def _fixed_port(port, profile):
    from .operations.vllm_spec import check_port
    fixed = port if port is not None else dict(profile.vllm).get("port")
    return check_port(fixed) if fixed is not None else None


def _open_tunnel(forwards: dict, remote: dict, sessions: dict, target) -> dict:
    """One pod's tunnel over its connection (its port found with one round trip when not fixed)."""
    from .operations.vllm import vllm_status
    name = target.profile.name
    remote_port = remote[name]
    forward = forwards.get(name)
    if forward is None:  # the local host: nothing to forward
        return {"ok": True, "host": name, "tunnel": False,
                "openai_api_base": f"http://127.0.0.1:{remote_port or defaults.VLLM_PORT}/v1"}
    target.describe(forward=f"127.0.0.1:{forward.port} -> {target.profile.destination} 127.0.0.1:"
                            f"{remote_port or 'the port vllm.start recorded'}")
    forward.attach(target.open().transport)
    result = {"ok": True, "host": name, "tunnel": True, "local_port": forward.port}
    if remote_port is None:
        found = vllm_status(target, session=sessions[name], default_port=defaults.VLLM_PORT)
        remote_port = found["port"]
        forward.remote = ("127.0.0.1", remote_port)
        if not found["ok"]:
            result["warning"] = found["error"]
    forward.on_refused = lambda exc: log(f"{target.profile.label}: nothing answers on port {remote_port} "
                                         f"there (is vLLM running?)")
    return {**result, "remote_port": remote_port, "openai_api_base": f"http://127.0.0.1:{forward.port}/v1"}


def render_fleet_tunnel(document: dict) -> str:
    lines = []
    for name, pod in document["pods"].items():
        if pod.get("ok") is True:
            lines.append(f"{name}: OPENAI_API_BASE={pod['openai_api_base']}"
                         + (f"  (warning: {pod['warning']})" if pod.get("warning") else ""))
        else:
            lines.append(f"{name}: error: {pod.get('error')}")
    if document.get("error"):
        lines.append(f"error: {document['error']}")
    return "\n".join(lines)


def _serve_tunnels(live: dict, targets: dict, document: dict) -> None:
    """Serve every open tunnel until Ctrl-C; a pod whose link drops is named, the others go on."""
    import threading

    threads = {name: threading.Thread(target=forward.serve, name=f"tunnel-{name}", daemon=True)
               for name, forward in live.items()}
    for thread in threads.values():
        thread.start()
    log(f"{len(threads)} tunnels open ({', '.join(threads)}); Ctrl-C to close")
    try:
        while threads:
            for name, thread in list(threads.items()):
                thread.join(0.2)
                if not thread.is_alive():
                    log(f"{targets[name].profile.label}: connection lost; its tunnel is closed")
                    del threads[name]
    except KeyboardInterrupt:
        for name in threads:
            targets[name].close()  # ends its serve loop, which closes its port
        if document["failed"]:
            raise HostError(f"tunnels closed; none was opened to {', '.join(document['failed'])}") from None
        return None
    raise HostError("the connection to every pod was lost; the tunnels are closed")


def _close_forwards(forwards) -> None:
    for forward in forwards:
        forward.close()


ns = Collection("vllm")
for _task in (start, status, stop, logs, tunnel):
    ns.add_task(_task)

