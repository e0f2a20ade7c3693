"""`ops ui`'s server (aiohttp, the `ui` extra): the page, its live feed, its actions.

What is served, and to whom (docs/ARCHITECTURE.md, "ops ui"):
- Every request must name this server by the Host it is bound to (127.0.0.1:PORT or
  localhost:PORT): a page of another site that resolves its own name to 127.0.0.1 (DNS
  rebinding) is refused before anything else.
- The token (secrets.token_urlsafe, in the URL the task prints, as Jupyter's) is checked with
  hmac.compare_digest; GET /?token=... keeps it in a cookie of this port (HttpOnly,
  SameSite=Strict) and redirects to / so the token leaves the address bar. Nothing is served
  without it: the page, its three files, its feed, the report.
- An action is a POST of JSON with the token in a header (the page reads it from its own
  <meta>, which no other site can read) AND an Origin that is this server: no form of another
  site, and no script of one, can make the browser send both.
- Every response carries a strict Content-Security-Policy (scripts and styles from this server
  only, no inline script, no connection elsewhere); report.html, which has its own inline
  script, is served sandboxed (an opaque origin: it cannot reach the page's cookie or API).

The refresh loop: every pod in parallel (fleet.at_once), one round trip each (ui_snapshot), on
the connection each pod keeps across refreshes; the next refresh after max(interval, 3 x the
last one's time), or at once after an action or when a page starts following a log. Pages get
the document by Server-Sent Events when it changed; a page following a run also gets its log
tail and curves. Every document is `redacted` before it leaves.
"""

import asyncio
import hmac
import json
import logging
import time
from pathlib import Path
from typing import Callable, Optional

from aiohttp import web

from ..errors import OpsError
from ..names import RUN_ID
from .ui_actions import ACTIONS, checked_request, run_action
from .ui_snapshot import snapshot_pod
from .ui_view import Records, document, follow_view, known_secrets, redacted, sessions_seen

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui_static"
STATIC = {"ui.js": "text/javascript", "ui.css": "text/css"}
TOKEN_HEADER = "X-Ops-Token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# report.html carries its own inline style and script: in a sandbox, an origin of its own.
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
              "img-src data:; frame-ancestors 'self'")
BACKOFF = 3.0  # the next refresh waits at least this many times the last one's time
IDLE_S = 60.0  # no page open and no state asked for this long: refreshes pause until one is
PING_S = 15.0  # a comment on a quiet feed: a page that went away is noticed


class Watch:
    """The refresh loop's state: the pods, what each is asked, the latest document."""

    def __init__(self, targets: list, *, project_dir, interval_s: float, invoke_config=None, log=None,
                 idle_s: float = IDLE_S, members: Optional[Callable[[], list]] = None, spec: Optional[str] = None):
        self.targets = {t.profile.name: t for t in targets}
        self.order = [t.profile.name for t in targets]
        # A recorded fleet's pods are read again before each refresh (members(): their targets; an
        # OpsError keeps the pods as they were, said on the page): a campaign records its pods once
        # it has rented them, pod.up --name adds some, pod.down takes some away.
        self.members = members
        self.spec = spec
        self.members_error: Optional[str] = None
        self.project_dir = project_dir
        self.interval_s = interval_s
        self.invoke_config = invoke_config
        self.records = Records(project_dir)
        self.sessions: dict = {}  # pod -> the vLLM sessions it listed last time
        self.follows: dict = {}  # client id -> (pod, run_id)
        self.logs: dict = {}  # (pod, run_id) -> its follow_view as an event, of the latest refresh
        self.state_event = b""
        self._roots: dict = {}  # pod -> (the manifests folder's mtime, its outputs root)
        self.last_runs: dict = {}  # pod -> (when, its last runs answer): shown, marked, while it does not answer
        self.idle_s = idle_s
        self.open_pages = 0
        self.seen_at = time.monotonic()
        self.paused = False
        self.document: Optional[dict] = None
        self.version = 0
        self.refreshes = 0
        self.last_took_s = 0.0
        self.answered_at: Optional[float] = None
        self.wake = asyncio.Event()
        self.changed = asyncio.Condition()
        self.log = log or (lambda text: None)
        self._clients = 0

    # -- which pods

    def read_members(self) -> Optional[list]:
        """The fleet's targets now (blocking: run in a thread); None when its pods are not re-read."""
        if self.members is None:
            return None
        try:
            found = self.members()
        except OpsError as exc:
            return [exc]
        return found

    def set_members(self, found: Optional[list]) -> None:
        """Watch the pods found from now on (in the loop's thread): new ones from this refresh, the
        ones gone left alone (their connection closed); what is known of the others kept."""
        if found is None:
            return
        if found and isinstance(found[0], OpsError):
            self.members_error = str(found[0])
            return
        self.members_error = None
        names = [t.profile.name for t in found]
        same = [n for n, t in zip(names, found) if n in self.targets and self.targets[n].profile == t.profile]
        if names == self.order and len(same) == len(names):
            return
        added = [n for n in names if n not in same]
        gone = [n for n in self.order if n not in same]  # a name that leads elsewhere now is gone, then added
        for name in gone:
            self.targets[name].close()
            for kept in (self.sessions, self.last_runs, self._roots):
                kept.pop(name, None)
        self.targets = {t.profile.name: (self.targets[t.profile.name] if t.profile.name in same else t) for t in found}
        self.order = names
        said = [f"added {', '.join(added)}" if added else "", f"no longer {', '.join(gone)}" if gone else ""]
        self.log(f"ops ui: {self.spec}: {'; '.join(s for s in said if s)} (watching "
                 f"{', '.join(names) or 'no pod'})")

    # -- what a refresh asks

    def plan(self) -> dict:
        """{pod: (vLLM sessions, [(run_id, run_dir)] followed)} for the next refresh."""
        from ..defaults import VLLM_SESSION

        followed: dict = {}
        runs = {(r["pod"], r["run_id"]): r for r in (self.document or {}).get("runs") or []}
        for pod, run_id in set(self.follows.values()):
            run = runs.get((pod, run_id))
            if run is not None and isinstance(run.get("run_dir"), str):
                followed.setdefault(pod, []).append((run_id, run["run_dir"]))
        plan = {}
        for name, target in self.targets.items():
            default = dict(target.profile.vllm).get("session") or VLLM_SESSION
            plan[name] = (self.sessions.get(name, [default]), sorted(followed.get(name, [])))
        return plan

    def outputs_dir(self, target) -> str:
        """The pod's outputs root as runs.list picks it: its latest submission's, else the profile's
        (the manifests read again only when their folder changed)."""
        from .. import records
        from ..selection import outputs_root
        from ..settings import host_identity

        folder = records.manifests_dir(self.project_dir)
        try:
            stamp = folder.stat().st_mtime_ns
        except OSError:
            stamp = None
        cached = self._roots.get(target.profile.name)
        if cached is None or cached[0] != stamp or stamp is None:
            latest = records.latest_manifest(self.project_dir, target.profile.name, host_identity(target.profile))
            cached = (stamp, outputs_root(None, latest, target.profile))
            self._roots[target.profile.name] = cached
        return cached[1]

    def gather(self, plan: dict) -> dict:
        """Every pod at once, one round trip each (blocking: run in a thread)."""
        from ..fleet import at_once

        def one(name):
            target = self.targets[name]
            sessions, follows = plan[name]
            return snapshot_pod(target, outputs_dir=self.outputs_dir(target), sessions=sessions, follows=follows,
                                invoke_config=self.invoke_config)

        answers = at_once(self.order, one, name="ui")
        gathered = {}
        for name, answer in zip(self.order, answers):
            if "results" not in answer:  # the pod's target raised before any round trip (its host key, say)
                answer = {"results": {"pod": {"ok": False, "reachable": False, "problems": [answer.get("error")]}},
                          "round_trips": 0, "elapsed_ms": None}
            gathered[name] = answer
        return gathered

    def take(self, gathered: dict, plan: dict) -> None:
        """A refresh's answers become the document and the followed logs (in the loop's thread)."""
        secrets = known_secrets()
        for name, answer in gathered.items():
            runs = answer["results"].get("runs") or {}
            if isinstance(runs.get("runs"), list):
                self.last_runs[name] = (self.answered_at, runs)
            elif name in self.last_runs:  # a pod that does not answer: its runs as last seen, said so
                since, last = self.last_runs[name]
                answer["results"]["runs"] = {**last, "stale_since": since, "error": runs.get("error")}
            seen = sessions_seen(answer)
            if seen is not None:  # from now on the sessions the pod lists (the default one only until then)
                self.sessions[name] = seen
        shown = document([self.targets[n] for n in self.order], gathered, self.records)
        shown["refresh"] = {"took_s": round(self.last_took_s, 3), "interval_s": round(self.next_interval(), 3),
                            "answered_at": self.answered_at, "number": self.refreshes}
        shown["watching"] = {"hosts": self.spec, "error": self.members_error}  # what --host said; its record's problem
        self.document = redacted(shown, secrets)
        self.state_event = _event("state", self.document)  # encoded once, however many pages are open
        logs = {}
        for name, (_, follows) in plan.items():
            for run_id, _ in follows:
                view = follow_view(gathered[name], run_id)
                if view is not None:
                    logs[(name, run_id)] = _event("log", redacted({**view, "pod": name}, secrets))
        self.logs = logs
        self.version += 1

    def next_interval(self) -> float:
        return max(self.interval_s, BACKOFF * self.last_took_s)

    async def run(self) -> None:
        """Refresh for ever: every pod in parallel, then wait max(interval, 3 x the refresh)."""
        loop = asyncio.get_running_loop()
        while True:
            self.wake.clear()
            started = time.monotonic()
            try:
                self.set_members(await loop.run_in_executor(None, self.read_members))
                plan = self.plan()
                gathered = await loop.run_in_executor(None, self.gather, plan)
                self.answered_at = time.time()
                self.last_took_s = time.monotonic() - started
                self.refreshes += 1
                self.take(gathered, plan)
            except Exception as exc:  # a bug: said, and the page keeps its last document; the next refresh tries again
                self.last_took_s = time.monotonic() - started
                self.log(f"ops ui: a refresh failed ({type(exc).__name__}: {exc}); trying again")
            async with self.changed:
                self.changed.notify_all()
            if not self.watched():  # nobody looks: the pods are left alone until a page is open again
                self.paused = True
                self.log(f"ops ui: no page open for {self.idle_s:g} s: refreshes paused until one is")
                self.wake.clear()
                await self.wake.wait()
                self.paused = False
                continue
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.next_interval())
            except asyncio.TimeoutError:
                pass

    def watched(self) -> bool:
        return self.open_pages > 0 or time.monotonic() - self.seen_at < self.idle_s

    def seen(self) -> None:
        """A page or a client looked: refreshes go on (at once, if they were paused)."""
        self.seen_at = time.monotonic()
        if self.paused:
            self.wake.set()

    # -- pages

    def follow(self, client: int, pod: Optional[str], run_id: Optional[str]) -> None:
        if pod is None:
            self.follows.pop(client, None)
            return
        known = (pod, run_id) in set(self.follows.values())
        self.follows[client] = (pod, run_id)
        if not known:
            self.wake.set()  # its first lines now, not at the next refresh

    def new_client(self) -> int:
        self._clients += 1
        return self._clients


# ---------------------------------------------------------------- the HTTP side


class Server:
    """The aiohttp application around a Watch: the checks every request passes, the routes."""

    def __init__(self, watch: Watch, *, token: str, hosts: set, any_host: bool = False):
        self.watch = watch
        self.token = token
        self.hosts = hosts  # the Host header values that name this server
        self.any_host = any_host  # bound to every address (--bind 0.0.0.0 --i-know-its-exposed)
        self.port = None
        self.app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        self.app.router.add_get("/", self.index)
        self.app.router.add_get("/static/{name}", self.static)
        self.app.router.add_get("/api/state", self.state)
        self.app.router.add_get("/api/events", self.events)
        self.app.router.add_post("/api/action", self.action)
        self.app.router.add_get("/report.html", self.report_html)
        self.app.router.add_get("/favicon.ico", self.no_icon)

    @property
    def cookie(self) -> str:
        return f"ops_ui_{self.port}"  # a cookie is the host's, whatever the port: each server its own

    def _is_token(self, given: Optional[str]) -> bool:
        return isinstance(given, str) and hmac.compare_digest(given.encode(), self.token.encode())

    def _host_ok(self, request) -> bool:
        return self.any_host or request.headers.get("Host", "") in self.hosts

    def _origin_ok(self, request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return False
        return origin == f"http://{request.headers.get('Host', '')}" and self._host_ok(request)

    @web.middleware
    async def guard(self, request, handler):
        if not self._host_ok(request):
            response = web.Response(status=403, text="refused: this server answers only to its own address "
                                                     f"({', '.join(sorted(self.hosts))})\n")
        elif not (self._is_token(request.cookies.get(self.cookie)) or self._is_token(request.headers.get(TOKEN_HEADER))
                  or (request.path == "/" and self._is_token(request.query.get("token")))):
            response = web.Response(status=403, text="refused: open the URL `ops ui` printed (it carries the "
                                                     "token)\n")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        if response.prepared:  # the event stream sent its headers already
            return response
        response.headers.setdefault("Content-Security-Policy", CSP)
        for name, value in (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                            ("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"),
                            ("Cross-Origin-Opener-Policy", "same-origin"),
                            ("Cross-Origin-Resource-Policy", "same-origin")):
            response.headers.setdefault(name, value)
        return response

    async def index(self, request):
        if "token" in request.query:  # keep it in the cookie, and take it out of the address bar
            response = web.HTTPSeeOther("/")
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/")
            return response
        page = (STATIC_DIR / "index.html").read_text().replace("{{token}}", self.token)
        return web.Response(text=page, content_type="text/html", charset="utf-8")

    async def static(self, request):
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC_DIR / name).read_bytes(), content_type=STATIC[name], charset="utf-8")

    async def no_icon(self, request):
        return web.Response(status=204)  # the browser asks for one; there is none (no 404 in its console)

    async def state(self, request):
        self.watch.seen()
        return _json_response(self.watch.document or {"pending": True})

    async def report_html(self, request):
        from .. import records

        path = records.report_dir(self.watch.project_dir) / "report.html"
        if not path.is_file():
            raise web.HTTPNotFound(text="no report.html yet: ops report writes it\n")
        response = web.Response(body=path.read_bytes(), content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = REPORT_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    def _followed(self, request):
        """The run a page follows (?follow=POD/RUN_ID), checked: a pod of this watch, a run id."""
        value = request.query.get("follow")
        if not value:
            return None, None
        pod, _, run_id = value.rpartition("/")
        if pod not in self.watch.targets or not RUN_ID.match(run_id):
            raise web.HTTPBadRequest(text=f"follow={value!r}: not POD/RUN_ID of this watch\n")
        return pod, run_id

    async def events(self, request):
        pod, run_id = self._followed(request)
        watch = self.watch
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})
        await response.prepare(request)
        client = watch.new_client()
        watch.follow(client, pod, run_id)
        watch.open_pages += 1
        watch.seen()
        sent_version, sent_log = None, None
        try:
            while True:
                if watch.document is not None and watch.version != sent_version:
                    sent_version = watch.version
                    await response.write(watch.state_event)
                    log = watch.logs.get((pod, run_id))
                    if log is not None and log is not sent_log:
                        sent_log = log
                        await response.write(log)
                async with watch.changed:
                    try:
                        await asyncio.wait_for(watch.changed.wait_for(lambda: watch.version != sent_version), PING_S)
                    except asyncio.TimeoutError:
                        await response.write(b": ping\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watch.follow(client, None, None)
            watch.open_pages -= 1
            watch.seen_at = time.monotonic()
        return response

    async def action(self, request):
        if not (self._origin_ok(request) and self._is_token(request.headers.get(TOKEN_HEADER))):
            return web.Response(status=403, text="refused: an action needs this page's token header and origin\n")
        if request.content_type != "application/json":
            return web.Response(status=415, text="an action is JSON\n")
        try:
            body = await request.json()
        except ValueError:
            return _json_response({"ok": False, "error": "the request is not JSON"}, status=400)
        watch = self.watch
        try:
            checked = checked_request(body)
            target = watch.targets.get(checked["pod"])
            if target is None:
                raise OpsError(f"no pod {checked['pod']!r} in this watch")
            shown = watch.document or {}
            result = await asyncio.get_running_loop().run_in_executor(
                None, lambda: run_action(checked, target=target, document=shown, project_dir=watch.project_dir))
        except OpsError as exc:
            result = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
        what = checked_name(body)
        watch.log(f"ops ui: {ACTIONS.get(body.get('action'), 'action') if isinstance(body, dict) else 'action'} "
                  f"{what}: {'ok' if result.get('ok') else 'NOT OK: ' + str(result.get('error'))}")
        watch.wake.set()  # the page sees its effect at once
        return _json_response(redacted(result, known_secrets()), status=200 if result.get("ok") else 409)


def checked_name(body) -> str:
    """What an action was about, for the server's own log line."""
    if not isinstance(body, dict):
        return ""
    return " ".join(str(body.get(k)) for k in ("pod", "run_id", "session") if isinstance(body.get(k), str))[:200]


def _json_response(data, status: int = 200):
    return web.Response(text=json.dumps(data, default=str, separators=(",", ":")), status=status,
                        content_type="application/json")


def _event(name: str, data) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n".encode()


# ---------------------------------------------------------------- running it


class Running:
    """A server bound to its address (bind() before any pod is contacted: a taken port is bad
    input), then serve() until the task is stopped."""

    def __init__(self, server: Server, bind: str, port: int):
        self.server, self.bind_address, self.port = server, bind, port
        self.runner = None
        self.loop = None

    def bind(self) -> int:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        # No access log: the first request's URL carries the token. A page's open event stream
        # must not hold the end up: a second, then it is closed.
        self.runner = web.AppRunner(self.server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.bind_address, self.port, reuse_address=True)
        try:
            self.loop.run_until_complete(site.start())
        except OSError:
            self.close()
            raise
        sockets = site._server.sockets if site._server else []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.server.port = self.port
        return self.port

    def serve(self) -> None:
        """Refresh and serve until Ctrl-C (KeyboardInterrupt here) or SIGTERM."""
        watch = self.server.watch
        quiet_aiohttp(watch.log)
        watch.wake, watch.changed = asyncio.Event(), asyncio.Condition()
        try:
            self.loop.run_until_complete(watch.run())
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving: the listening socket and the connections (a page's open feed too), then
        every task of the loop ended before the loop is closed (none left half-run)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            if self.runner is not None:
                loop.run_until_complete(asyncio.wait_for(self.runner.cleanup(), 5))
        except (asyncio.TimeoutError, RuntimeError, KeyboardInterrupt):
            pass
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        try:
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        except (RuntimeError, KeyboardInterrupt):
            pass
        loop.close()


class _OneLine(logging.Handler):
    """aiohttp's own log (a request that failed in its machinery): one line through the task's
    log, never a traceback."""

    def __init__(self, log):
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record):
        cause = f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})" if record.exc_info else ""
        self.log(f"ops ui: {record.getMessage()}{cause}")


def quiet_aiohttp(log) -> None:
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [_OneLine(log)]
        logger.propagate = False
