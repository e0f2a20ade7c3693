"""`ops ui`: a live page of every pod, run, GPU and dollar, served on this machine
(operations/ui_server.py; the page is ui_static/, the pods' view operations/ui_snapshot.py).

    ops ui -H fleet            # prints http://127.0.0.1:8787/?token=...; Ctrl-C ends it

It binds 127.0.0.1 only, unless --bind names another address AND --i-know-its-exposed is given;
the token in the printed URL is what lets a browser in. The server needs the `ui` extra
(aiohttp), imported here only when the task runs.
"""

import ipaddress
import secrets

from .errors import ConfigError
from .flags import count_flag, seconds_flag
from .output import announce, dry_run_requested, log, ops_task
# The server, the operations, fleet and targets are imported by the function (ARCHITECTURE.md, "Start-up").

PORT = 8787
INTERVAL_S = 2.0  # between refreshes at least; more when pods are far or many (3 x a refresh's time)

HELP = {
    "port": f"Port on this machine to serve the page on (default {PORT}; 0: any free port).",
    "bind": "Address to listen on (default 127.0.0.1). Anything but a loopback address also needs "
            "--i-know-its-exposed: whoever reaches it and has the token can cancel your runs.",
    "i_know_its_exposed": "Allow --bind on an address other machines can reach.",
    "interval": f"Seconds between refreshes, one round trip per pod each (default {INTERVAL_S:g}; the server "
                f"waits longer when a refresh takes long: 3 x its time).",
}


def checked_port(value) -> int:
    number = count_flag("--port", value, PORT, minimum=0)
    if number > 65535:
        raise ConfigError(f"--port must be at most 65535, got {number}")
    return number


def checked_bind(value, exposed: bool) -> str:
    """The address to listen on: a loopback one, or any with --i-know-its-exposed."""
    address = "127.0.0.1" if value in (None, "", "localhost") else str(value)
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise ConfigError(f"--bind {value!r}: give an IP address (127.0.0.1, ::1, ...)") from None
    if not parsed.is_loopback and not exposed:
        raise ConfigError(f"--bind {value}: this address is reachable from other machines; the page can cancel "
                          f"runs and stop servers: add --i-know-its-exposed to serve it there anyway")
    return str(parsed)


def page_hosts(bind: str, port: int) -> set:
    """The Host header values a browser sends to this server (any other is refused: DNS rebinding)."""
    literal = f"[{bind}]" if ":" in bind else bind
    names = {f"{literal}:{port}"}
    if ipaddress.ip_address(bind).is_loopback:
        names |= {f"localhost:{port}", f"127.0.0.1:{port}"} if "." in bind else {f"localhost:{port}"}
    return names


def recorded_members(c, host, project_dir):
    """For --host naming a fleet pod.up or a campaign records (in the user's state, so its pods can
    change while the page is open): a function giving the fleet's targets as recorded now. None
    for anything else (a comma list, a profile, invoke.yaml's ops.fleets, one host): those pods
    are the ones named at the start."""
    from . import records
    from .names import RUN_ID
    from .settings import check_ops_config

    ops = check_ops_config(c.config.get("ops"))
    if not isinstance(host, str) or not RUN_ID.match(host) or host in (ops.get("fleets") or {}) \
            or host in (ops.get("profiles") or {}):
        return None
    if records.load_fleet(project_dir, host) is None and not campaign_renting(project_dir, host):
        return None

    def members() -> list:
        from .fleet import resolve_hosts
        from .targets import target_for

        names = records.load_fleet(project_dir, host) or []
        profiles = resolve_hosts(c.config.get("ops"), ",".join(names), project_dir) if names else []
        return [target_for(profile, invoke_config=c.config) for profile in profiles]

    return members


def campaign_renting(project_dir, name) -> bool:
    """True for a campaign of this project that rents its pods and has recorded none yet (its
    fleet, named by its id, is written once the rent phase has them)."""
    from . import records

    try:
        state = records.load_campaign_state(project_dir, name)
    except (ConfigError, OSError, ValueError):
        return False
    return isinstance(state, dict) and not state.get("hosts") and "rented" in state


@ops_task(name="ui", help=HELP)
def ui(c, host=None, port=None, bind=None, i_know_its_exposed=False, interval=None):
    """Serve a live page of the pods, runs, GPUs and costs on 127.0.0.1 (a token in its URL); Ctrl-C ends it."""
    from .output import fleet_targets, on_each_pod, target_of
    from .settings import project_dir_of

    listen = checked_bind(bind, bool(i_know_its_exposed))
    number = checked_port(port)
    every = seconds_flag("--interval", interval, INTERVAL_S)
    if dry_run_requested():  # what one refresh would send each pod; nothing served, nothing contacted
        from .operations.ui_snapshot import snapshot_pod
        return on_each_pod(c, host, lambda t: snapshot_pod(t, outputs_dir=t.profile.outputs_dir, sessions=[],
                                                           follows=[]))
    import importlib.util
    if importlib.util.find_spec("aiohttp") is None:
        raise ConfigError("ops ui needs the ui extra (aiohttp is not installed): pip install 'ops-tasks[ui]'")
    from .operations import ui_server
    project = project_dir_of(c.config)
    members = recorded_members(c, host, project)
    try:
        targets = fleet_targets(c, host) or [target_of(c, host)]
    except ConfigError:
        if members is None or not campaign_renting(project, host):
            raise
        targets = []  # a campaign of this project still renting its pods: they are added once recorded
    token = secrets.token_urlsafe(32)
    watch = ui_server.Watch(targets, project_dir=project, interval_s=every, invoke_config=c.config, log=log,
                            members=members, spec=host)
    server = ui_server.Server(watch, token=token, hosts=set(), any_host=ipaddress.ip_address(listen).is_unspecified)
    running = ui_server.Running(server, listen, number)
    try:
        bound = running.bind()  # before any pod is contacted: a taken port is bad input
    except OSError as exc:
        raise ConfigError(f"--port {number}: cannot listen on {listen}:{number} ({exc.strerror or exc}); "
                          f"pick another --port (0: any free one)") from None
    server.hosts = page_hosts(listen, bound)
    literal = f"[{listen}]" if ":" in listen else listen
    url = f"http://{literal}:{bound}/?token={token}"
    watching = (", ".join(t.profile.name for t in targets) if targets else
                f"campaign {host} (no pod rented yet: each shows once the campaign has rented it)")
    # Ctrl-C from the moment the URL is out is a stop like any other (it came once between the
    # URL and the loop, exit 130 with the socket left open): the socket and loop closed, exit 0.
    try:
        announce({"ok": True, "url": url, "port": bound, "bind": listen, "pods": [t.profile.name for t in targets]},
                 f"ops ui: watching {watching}; open {url}")
        log("ops ui: Ctrl-C stops it (the runs and servers go on on the pods)")
        running.serve()
    except KeyboardInterrupt:
        running.close()
        log("ops ui: stopped")
    return None
