"""`ops ui` (issue 25), what keeps it safe, through the real `ops ui` against a real sshd pod: no
token, no page; another Host (DNS rebinding) refused; an action only with the token header AND
this server's Origin (no cross-site request can trigger one); bind elsewhere only when asked
twice; a taken port and bad flags refused before any contact; a strict CSP on every response;
no secret in any response; aiohttp never loaded by other tasks. Also the pure pieces: the batch's
framing, a run directory's check, the curves' numbers, an action's request.

The browser's side (the page, its live updates, hostile strings shown as text) is tests/test_ui.py."""

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, parse_qs

import pytest

from conftest import CHECKOUT, module_client, module_pod, needs_isolation, one_line_error, ops_argv

pytest.importorskip("aiohttp", reason="ops ui needs the ui extra (aiohttp); the test extra installs it")

client = module_client()
pod = module_pod("uisec")
SECRET = "wandb-canary-5e6f7a8b9c"
WAIT_S = 30  # every wait of this file is bounded
WRITE_SUMMARY = "printf '{\"ok\": true}' > \"$OPS_RUN_DIR/summary.json\""


def until(predicate, what: str, wait_s: float = WAIT_S):
    deadline = time.monotonic() + wait_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


class UiServer:
    """`ops ui` as a user starts it (its own process, --json so its URL is one line), and plain HTTP
    requests to it with the headers a test chooses."""

    def __init__(self, client, project: Path, hosts: str, *extra, env=None):
        self.proc = subprocess.Popen([*ops_argv(), "ui", "-H", hosts, "--port", "0", "--interval", "0.5", "--json",
                                      *extra], cwd=project, env=client.env(**(env or {})), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, self.proc.stderr.read()
        self.info = json.loads(line)
        self.url = self.info["url"]
        self.port = self.info["port"]
        self.token = parse_qs(urlsplit(self.url).query)["token"][0]
        self.host = f"127.0.0.1:{self.port}"
        self.origin = f"http://{self.host}"

    def request(self, method: str, path: str, *, headers=None, body=None):
        """(status, headers, body text) of one request; Host is this server's unless given."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        try:
            connection.request(method, path, body=body, headers={"Host": self.host, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
        finally:
            connection.close()

    def state(self) -> dict:
        status, _, text = self.request("GET", "/api/state", headers={"X-Ops-Token": self.token})
        assert status == 200, text
        return json.loads(text)

    def run(self, run_id: str):
        return next((r for r in self.state().get("runs") or [] if r["run_id"] == run_id), None)

    def action(self, body: dict, headers=None):
        sent = {"Content-Type": "application/json", "X-Ops-Token": self.token, "Origin": self.origin, **(headers or {})}
        sent = {k: v for k, v in sent.items() if v is not None}
        status, _, text = self.request("POST", "/api/action", headers=sent, body=json.dumps(body))
        return status, text

    def events(self, query: str, until_event: str, wait_s: float = WAIT_S) -> dict:
        """The first event of this name on the feed (?query), with the token header."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=wait_s)
        try:
            connection.request("GET", f"/api/events{query}", headers={"Host": self.host, "X-Ops-Token": self.token})
            response = connection.getresponse()
            assert response.status == 200
            deadline = time.monotonic() + wait_s
            name = None
            while time.monotonic() < deadline:
                line = response.readline().decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: ") and name == until_event:
                    return json.loads(line[len("data: "):])
            raise AssertionError(f"no {until_event} event within {wait_s} s")
        finally:
            connection.close()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-security-project")


@pytest.fixture(scope="module")
def ops_in(client, project):
    """`ops ARGS` in the module's project, as the module's laptop."""

    def run(*args, env=None):
        return subprocess.run([*ops_argv(), *args], cwd=project, env=client.env(**(env or {})), capture_output=True,
                              text=True, timeout=120)

    return run


@pytest.fixture(scope="module")
def server(client, pod, project, ops_in):
    config = project / "runs.json"
    config.write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "long", "command": "sleep 300"},
        {"run_id": "leaky", "command": f"echo token=$WANDB_API_KEY; echo 'step {{\"step\": 1}}'; {WRITE_SUMMARY}",
         "env": {"WANDB_API_KEY": SECRET}},
    ]}))
    submitted = ops_in("runs.submit", "--host", pod.alias, "--config", "runs.json", "--slots", "2", "--json",
                       env={"WANDB_API_KEY": SECRET})
    assert submitted.returncode == 0, submitted.stderr
    running = UiServer(client, project, pod.alias, env={"WANDB_API_KEY": SECRET})
    until(lambda: running.run("long") and running.run("long")["state"] == "running", "the long run to run")
    yield running
    stderr = running.stop()
    assert "Traceback" not in stderr, stderr
    ops_in("runs.cancel", "--host", pod.alias, "--run-id", "long")


# ---------------------------------------------------------------- the token


@needs_isolation
@pytest.mark.parametrize("path", ["/", "/api/state", "/api/events", "/static/ui.js", "/static/ui.css", "/report.html",
                                  "/?token=not-the-token"])
def test_a_request_without_the_token_is_refused_and_shows_nothing(server, path):
    status, _, text = server.request("GET", path)

    assert status == 403 and "refused" in text
    assert server.token not in text and "uisec" not in text and "long" not in text


@needs_isolation
def test_the_printed_url_leaves_the_token_in_a_strict_cookie_and_out_of_the_address_bar(server):
    status, headers, _ = server.request("GET", f"/?token={server.token}")

    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"ops_ui_{server.port}={server.token}") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Path=/" in cookie
    page_status, page_headers, page = server.request("GET", "/", headers={"Cookie": f"ops_ui_{server.port}={server.token}"})
    assert page_status == 200 and '<script src="/static/ui.js"' in page
    assert page_headers["Referrer-Policy"] == "no-referrer"


@needs_isolation
def test_a_page_of_another_site_that_resolves_to_this_machine_is_refused(server):
    # DNS rebinding: the browser sends the attacker's name as Host, with whatever the site can get.
    for host in ("evil.example", f"evil.example:{server.port}", f"127.0.0.1:{server.port + 1}"):
        status, _, text = server.request("GET", f"/?token={server.token}", headers={"Host": host})
        assert status == 403 and server.token not in text
        status, _, _ = server.request("GET", "/api/state", headers={"Host": host, "X-Ops-Token": server.token})
        assert status == 403
    assert server.request("GET", "/api/state", headers={"Host": f"localhost:{server.port}",
                                                        "X-Ops-Token": server.token})[0] == 200


@needs_isolation
@pytest.mark.parametrize("headers, expected", [
    ({"X-Ops-Token": None}, 403),  # a form or fetch of another site: the cookie at most, never the header
    ({"X-Ops-Token": "guessed"}, 403),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": None}, 403),
    ({"Origin": "null"}, 403),  # a sandboxed frame's (report.html's)
    ({"Content-Type": "text/plain"}, 415),  # what a cross-site form may send without asking
])
def test_an_action_without_the_token_header_and_this_origin_does_nothing(server, pod, ops_in, headers, expected):
    status, text = server.action({"action": "cancel", "pod": pod.alias, "run_id": "long"},
                                 headers={"Cookie": f"ops_ui_{server.port}={server.token}", **headers})

    assert status == expected, text
    time.sleep(0.5)
    assert server.run("long")["state"] == "running"
    shown = ops_in("runs.status", "--host", pod.alias, "--run-id", "long", "--json")
    assert json.loads(shown.stdout)["run"]["state"] == "running"


@needs_isolation
@pytest.mark.parametrize("body, fragment", [
    ({"action": "rm -rf", "pod": "uisec", "run_id": "long"}, "unknown action"),
    ({"action": "cancel", "pod": "uisec", "run_id": "../../etc"}, "is not a run id"),
    ({"action": "cancel", "pod": "elsewhere", "run_id": "long"}, "no pod 'elsewhere'"),
    ({"action": "cancel", "pod": "uisec", "run_id": "never-shown"}, "no run never-shown on uisec"),
    ({"action": "vllm_stop", "pod": "uisec", "session": "a;b"}, "is not a tmux session name"),
    ({"action": "vllm_stop", "pod": "uisec", "session": "nothere"}, "no vLLM session nothere"),
])
def test_an_action_on_what_the_page_did_not_show_is_refused_naming_it(server, body, fragment):
    status, text = server.action(body)

    assert status == 409 and fragment in json.loads(text)["error"], text


@needs_isolation
def test_each_refresh_is_one_round_trip_per_pod_on_the_connection_it_keeps(server, pod):
    first = server.state()["refresh"]["number"]
    connections, sessions = pod.accepted_connections(), pod.sessions()

    later = until(lambda: server.state()["refresh"]["number"] >= first + 3 and server.state()["refresh"]["number"],
                  "three more refreshes")

    assert pod.accepted_connections() == connections  # no new connection: the one it holds
    made = pod.sessions() - sessions
    # One exec channel each: a refresh in flight at either end counts on one side only.
    assert later - first - 1 <= made <= later - first + 1, (made, first, later)


# ---------------------------------------------------------------- what every response carries


@needs_isolation
def test_every_response_carries_a_strict_content_security_policy(server):
    for path in ("/", "/static/ui.js", "/api/state"):
        _, headers, _ = server.request("GET", path, headers={"X-Ops-Token": server.token})
        policy = headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
        assert "connect-src 'self'" in policy and headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
    report = server.request("GET", "/report.html", headers={"X-Ops-Token": server.token})
    assert report[0] == 404  # none written yet; once there, it is served sandboxed (test_ui.py)


@needs_isolation
def test_no_secret_reaches_the_document_a_log_or_an_action(server, pod):
    until(lambda: (server.run("leaky") or {}).get("state") == "succeeded", "the leaky run to end")
    document = json.dumps(server.state())
    assert SECRET not in document
    log = server.events(f"?follow={pod.alias}/leaky", "log")
    assert "token=***" in log["text"] and SECRET not in json.dumps(log)
    status, text = server.action({"action": "fetch", "pod": pod.alias, "run_id": "leaky"})
    assert status == 200 and SECRET not in text, text


# ---------------------------------------------------------------- before any contact


@needs_isolation
@pytest.mark.parametrize("args, fragments", [
    (["--bind", "0.0.0.0"], ["--bind 0.0.0.0", "--i-know-its-exposed"]),
    (["--bind", "192.0.2.7"], ["reachable from other machines"]),
    (["--bind", "example.com"], ["give an IP address"]),
    (["--port", "70000"], ["--port must be at most 65535"]),
    (["--port", "eighty"], ["--port must be a whole number"]),
    (["--interval", "0"], ["--interval must be positive"]),
])
def test_bad_flags_and_an_exposed_bind_are_refused_before_any_contact(pod, ops_in, args, fragments):
    before = pod.accepted_connections()

    one_line_error(ops_in("ui", "--host", pod.alias, *args), 2, *fragments)
    assert pod.accepted_connections() == before


@needs_isolation
def test_a_taken_port_is_bad_input_before_any_contact(pod, ops_in):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = pod.accepted_connections()

        one_line_error(ops_in("ui", "--host", pod.alias, "--port", str(port)), 2, f"--port {port}",
                       "pick another --port")
    assert pod.accepted_connections() == before


def test_other_tasks_never_load_the_server_library(project, client):
    probe = """if True:
        import sys
        from ops_tasks.cli import program
        program.run(["ops", "--list"], exit=False)
        program.run(["ops", "ui", "--help"], exit=False)
        program.run(["ops", "pod.status", "--host", "local", "--dry-run"], exit=False)
        print("loaded", sorted(m for m in sys.modules if m.split(".")[0] == "aiohttp"
                                or m.startswith("ops_tasks.operations.ui")), file=sys.stderr)
    """
    result = subprocess.run([sys.executable, "-c", probe], cwd=project, env=client.env(), capture_output=True,
                            text=True, timeout=60)

    assert result.stderr.splitlines()[-1] == "loaded []", result.stderr


def test_the_page_files_are_package_data():
    # An installed `ops ui` serves them from the package: a file pyproject does not ship would 404 there.
    patterns = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ops_tasks"]
    folder = CHECKOUT / "ops_tasks" / "ui_static"
    files = sorted(p.relative_to(folder.parent) for p in folder.iterdir())
    assert files and all(any(path.match(pattern) for pattern in patterns) for path in files), (files, patterns)
    for name in ("ui.js", "index.html"):  # our own code only: nothing fetched from elsewhere at run time
        text = (folder / name).read_text()
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in text
    # No markup is ever made from text: the page's DOM is built with createElement and textContent.
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|eval\(|new Function",
                         (folder / "ui.js").read_text())
    assert "<script>" not in (folder / "index.html").read_text()


# ---------------------------------------------------------------- the pure pieces


def test_the_batch_reads_only_its_own_framed_parts():
    import base64

    from ops_tasks.operations.ui_snapshot import parse_parts

    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    answer = '{"ok": 1}'
    stdout = "\n".join([
        "Welcome to the pod!",  # a login shell's noise
        f"PART 0 0 {b64(answer)} ",
        f"PART 1 3 {b64('')} {b64('boom')}",
        f"PART 7 0 {b64('x')} ",  # not asked for
        "PART 2 0 not-base64!! ",
    ])

    assert parse_parts(stdout, 3) == {0: (0, '{"ok": 1}', ""), 1: (3, "", "boom")}


def test_a_run_directory_outside_its_outputs_root_is_never_read():
    from ops_tasks.operations.ui_snapshot import run_dir_inside

    root = "/mnt/pod_artifacts/outputs"
    assert run_dir_inside(f"{root}/r1", root) and run_dir_inside(f"{root}/sub/r1", root)
    for bad in (root, f"{root}/../../etc", "/etc", "relative/r1", f"{root}/r1\n", None, f"{root}x/r1"):
        assert not run_dir_inside(bad, root), bad


def test_curves_keep_numbers_only_and_are_thinned():
    from ops_tasks.operations.ui_snapshot import CURVE_POINTS, curves_of

    lines = ['"step": 0, "loss": 9}',  # cut by the window
             *(json.dumps({"step": i, "loss": 1 / (i + 1), "note": "<b>x</b>", "ok": True, "lr": float("nan")})
               for i in range(3 * CURVE_POINTS)), '{"step": 1e999, "loss": 1}', '{"step": 5, "lo']

    curves = curves_of("\n".join(lines))

    assert curves["x"] == "step" and list(curves["series"]) == ["loss"]
    points = curves["series"]["loss"]
    assert len(points) == CURVE_POINTS and points[0] == [0.0, 1.0] and points[-1][0] == 3 * CURVE_POINTS - 1


def test_an_action_request_is_checked_before_anything_is_looked_up():
    from ops_tasks.errors import ConfigError
    from ops_tasks.operations.ui_actions import checked_request

    assert checked_request({"action": "cancel", "pod": "p", "run_id": "r-1", "extra": 1}) == {
        "action": "cancel", "pod": "p", "run_id": "r-1"}
    for body in ([], {"action": "cancel"}, {"action": "cancel", "pod": "p", "run_id": "-x"},
                 {"action": "vllm_stop", "pod": "p", "session": "a.b"}, {"action": "__class__", "pod": "p"}):
        with pytest.raises(ConfigError):
            checked_request(body)


def test_the_host_names_a_page_may_use_are_this_server_s_only():
    from ops_tasks.ui import checked_bind, page_hosts

    assert page_hosts("127.0.0.1", 8787) == {"127.0.0.1:8787", "localhost:8787"}
    assert page_hosts("::1", 9000) == {"[::1]:9000", "localhost:9000"}
    assert page_hosts("192.0.2.7", 80) == {"192.0.2.7:80"}
    assert checked_bind(None, False) == "127.0.0.1" and checked_bind("127.0.0.5", False) == "127.0.0.5"
    assert checked_bind("192.0.2.7", True) == "192.0.2.7"


def test_refreshes_back_off_when_one_takes_long():
    from ops_tasks.operations.ui_server import Watch

    watch = Watch([], project_dir=CHECKOUT, interval_s=2.0)
    for took, interval in ((0.0, 2.0), (0.5, 2.0), (1.0, 3.0), (4.0, 12.0)):  # far or many pods: 3 x a refresh
        watch.last_took_s = took
        assert watch.next_interval() == interval


def test_refreshes_pause_while_no_page_is_open_and_resume_when_one_looks(tmp_path):
    import asyncio

    from ops_tasks.operations.ui_server import Watch

    watch = Watch([], project_dir=tmp_path, interval_s=0.05, idle_s=0.3)
    refreshes = []
    watch.gather = lambda plan: refreshes.append(plan) or {}  # the pods are not the point here

    async def nobody_then_a_page():
        watch.wake, watch.changed = asyncio.Event(), asyncio.Condition()
        loop = asyncio.ensure_future(watch.run())
        await asyncio.sleep(1.0)  # nobody has looked for longer than idle_s
        paused = len(refreshes)
        await asyncio.sleep(0.5)
        still = len(refreshes)
        watch.seen()  # a page asks for the state
        await asyncio.sleep(0.5)
        loop.cancel()
        return paused, still, len(refreshes)

    paused, still, resumed = asyncio.run(nobody_then_a_page())
    assert paused >= 2 and still == paused and resumed > still


@needs_isolation
def test_a_pod_that_stops_answering_keeps_its_runs_shown_as_last_seen(pod_factory, client, tmp_path):
    lost = pod_factory(alias="uilost")
    project = tmp_path / "lost-project"
    project.mkdir()
    (project / "runs.json").write_text(json.dumps({"remote_repo": "/root", "runs": [
        {"run_id": "still", "command": "sleep 300"}]}))
    submitted = subprocess.run([*ops_argv(), "runs.submit", "--host", "uilost", "--config", "runs.json"], cwd=project,
                               env=client.env(), capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    server = UiServer(client, project, "uilost")
    try:
        until(lambda: (server.run("still") or {}).get("state") == "running", "the run to run")
        lost.stop()  # its sshd and everything in it: no answer any more

        state = until(lambda: (shown := server.state())["pods"][0]["reachable"] is False and shown,
                      "the pod to be shown unreachable")
    finally:
        assert "Traceback" not in server.stop()
    (run,) = state["runs"]
    assert run["run_id"] == "still" and run["state"] == "running" and run["stale_since"] < state["at"]
    assert any("uilost" in problem for problem in state["pods"][0]["problems"])
