"""`ops ui` (issue 25) in a real browser (Debian's chromium, driven by playwright, as report.html's
test does) on two real sshd pods: the page loads with no console error and shows each pod's
GPUs; it updates by itself when a run ends; a followed log grows while it is watched, with its
curves; a cancel takes effect only once confirmed; a fetch is recorded as artifacts.fetch records
it; a vLLM server is stopped from the page; a campaign is watched phase by phase to its report;
hostile strings in every field a pod or a file gives stay text; a browser without the token gets
nothing, and a page of another site in the browser that has the cookie can neither act nor read.

The server is `ops ui` itself, one process for the module (tests/test_ui_security.py's
UiServer). Every wait is bounded; nothing here measures time."""

import json
import shlex

import pytest

from conftest import module_client, module_pod, needs_isolation, ops_argv, pod_pids
from test_report_html import browser  # noqa: F401 (the module's chromium)
from test_ui_security import WAIT_S, WRITE_SUMMARY, UiServer, until
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.pods import free_port

pytest.importorskip("aiohttp", reason="ops ui needs the ui extra (aiohttp); the test extra installs it")
pytestmark = needs_isolation

client = module_client()
pod0 = module_pod("uipod0", gpus=[gpu(0), gpu(1)])
pod1 = module_pod("uipod1")
FLEET = "uipod0,uipod1"
WAIT_MS = WAIT_S * 1000
# Markup, a script, an event handler, an image from elsewhere, and OSC 52 (the clipboard) with BEL.
HOSTILE = ('<img src="http://127.0.0.1:9/x.png" onerror="document.title=\'pwned\'">'
           '<script>document.title="pwned"</script><b id="injected">bold</b>\x1b]52;c;AAAA\x07')
SHOWN = ('<img src="http://127.0.0.1:9/x.png" onerror="document.title=\'pwned\'">'
         '<script>document.title="pwned"</script><b id="injected">bold</b>\\x1b]52;c;AAAA\\x07')


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("ui-project")


@pytest.fixture(scope="module")
def ops_in(client, project):
    import subprocess

    def run(*args, timeout=120):
        done = subprocess.run([*ops_argv(), *args], cwd=project, env=client.env(), capture_output=True, text=True,
                              timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


@pytest.fixture(scope="module")
def server(client, project, pod0, pod1):
    running = UiServer(client, project, FLEET)
    yield running
    stderr = running.stop()
    assert "Traceback" not in stderr, stderr


def submit(ops_in, project, pod, name: str, runs: list):
    (project / f"{name}.json").write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    done = ops_in("runs.submit", "--host", pod.alias, "--config", f"{name}.json", "--slots", "4", "--json")
    assert done.returncode == 0, done.stderr


def open_page(browser, server):  # noqa: F811
    """The page as a person opens the printed URL, every console error, request elsewhere and
    native dialog recorded."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    seen = {"errors": [], "elsewhere": [], "dialogs": []}
    page.on("console", lambda m: m.type == "error" and seen["errors"].append(m.text))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("request", lambda r: not r.url.startswith(server.origin) and seen["elsewhere"].append(r.url))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.goto(server.url)
    page.wait_for_selector("body[data-refresh]", timeout=WAIT_MS)
    return page, seen


def row(page, run_id: str, state: str = None):
    selector = f"#runs tbody tr[data-run='{run_id}']" + (f"[data-state='{state}']" if state else "")
    return page.wait_for_selector(selector, timeout=WAIT_MS)


def confirm(page, button, answer: str):
    """Click an action's button, then the dialog's Confirm or Cancel."""
    button.click()
    page.wait_for_selector("dialog#confirm[open]", timeout=WAIT_MS)
    page.click("#confirm-yes" if answer == "yes" else "#confirm-no")


def test_the_page_shows_every_pod_and_its_gpus_with_no_console_error(browser, server):  # noqa: F811
    page, seen = open_page(browser, server)

    page.wait_for_selector("#pods tbody tr[data-pod='uipod1']", timeout=WAIT_MS)
    assert page.url == f"{server.origin}/"  # the token left the address bar
    gpus = page.inner_text("#pods tbody tr[data-pod='uipod0'] td:nth-child(3)")
    assert "0: 0%" in gpus and "1: 0%" in gpus and "80.0 GiB" in gpus
    assert page.inner_text("#pods tbody tr[data-pod='uipod1'] td:nth-child(3)") == "none"
    assert "on /mnt" in page.inner_text("#pods tbody tr[data-pod='uipod0']")
    assert "2/2 pods up" in page.inner_text("#totals") and "2/2 GPUs free" in page.inner_text("#totals")
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_the_page_updates_by_itself_when_a_run_ends(browser, server, ops_in, project, pod0):  # noqa: F811
    page, seen = open_page(browser, server)
    page.evaluate("() => { window.loadedOnce = true; }")
    end = pod0.home / "ui-end"
    end.unlink(missing_ok=True)

    submit(ops_in, project, pod0, "ends", [{"run_id": "ends", "command": "while [ ! -e /root/ui-end ]; do sleep 0.2; done; "
                                                                      f"echo all done; {WRITE_SUMMARY}"}])
    row(page, "ends", "running")
    end.touch()  # it ends only now, while the page is open

    done = row(page, "ends", "succeeded")
    assert "all done" in done.inner_text() and page.evaluate("() => window.loadedOnce") is True  # no reload
    assert "succeeded" in page.inner_text("#submissions")
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_a_followed_log_grows_while_watched_and_draws_its_curves(browser, server, ops_in, project, pod0):  # noqa: F811
    more = pod0.home / "ui-more"
    more.unlink(missing_ok=True)
    command = ("for i in 1 2 3 4 5; do echo \"{\\\"step\\\": $i, \\\"loss\\\": $((10 - i))}\" >> \"$OPS_RUN_DIR/metrics.jsonl\"; done; "
               "echo first half; while [ ! -e /root/ui-more ]; do sleep 0.2; done; echo second half; "
               f"{WRITE_SUMMARY}")
    submit(ops_in, project, pod0, "follow", [{"run_id": "followed", "command": command}])
    page, seen = open_page(browser, server)

    row(page, "followed", "running").query_selector("button.follow").click()
    page.wait_for_selector("#log:has-text('first half')", timeout=WAIT_MS)
    assert "second half" not in page.inner_text("#log")
    curve = page.wait_for_selector("#curves svg.curve[data-metric='loss'] polyline", timeout=WAIT_MS)
    assert len(curve.get_attribute("points").split()) == 5
    more.touch()  # the run goes on only now: what follows can only come by the live feed

    page.wait_for_selector("#log:has-text('second half')", timeout=WAIT_MS)
    row(page, "followed", "succeeded")
    assert "followed on uipod0: succeeded" in page.inner_text("#detail-title")
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_a_cancel_takes_effect_only_once_confirmed(browser, server, ops_in, project, pod1):  # noqa: F811
    submit(ops_in, project, pod1, "cancel", [{"run_id": "to-cancel", "command": "sleep 300"}])
    page, seen = open_page(browser, server)
    running = row(page, "to-cancel", "running")

    confirm(page, running.query_selector("button.cancel"), "no")
    later = int(page.get_attribute("body", "data-refresh")) + 2
    until(lambda: int(page.get_attribute("body", "data-refresh")) >= later, "two more refreshes")
    row(page, "to-cancel", "running")  # the dialog's Cancel sent nothing

    confirm(page, row(page, "to-cancel", "running").query_selector("button.cancel"), "yes")

    row(page, "to-cancel", "cancelled")
    assert "cancel to-cancel on uipod1: done" in page.inner_text("#notice")
    status = json.loads(ops_in("runs.status", "--host", pod1.alias, "--run-id", "to-cancel", "--json").stdout)
    assert status["run"]["state"] == "cancelled" and pod_pids(pod1, "sleep 300", live=True) == []
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_a_fetch_from_the_page_is_recorded_as_artifacts_fetch_records_it(browser, server, ops_in, project, pod1):  # noqa: F811
    submit(ops_in, project, pod1, "fetch", [{"run_id": "to-fetch", "command": f"echo fetched me; {WRITE_SUMMARY}"}])
    page, seen = open_page(browser, server)

    confirm(page, row(page, "to-fetch", "succeeded").query_selector("button.fetch"), "yes")

    page.wait_for_selector("#notice:has-text('fetch to-fetch on uipod1: done')", timeout=WAIT_MS)
    assert "fetched me" in (project / "artifacts" / "pod_logs" / "to-fetch" / "stdout.log").read_text()
    record = json.loads((project / "artifacts" / "fetched" / "to-fetch.json").read_text())
    assert record["host"] == "uipod1" and record["run_id"] == "to-fetch"
    assert ops_in("validate", "--run-id", "to-fetch").returncode == 0  # the same files the CLI's fetch leaves
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_a_vllm_server_is_shown_serving_and_stopped_from_the_page(browser, server, ops_in, pod1):  # noqa: F811
    stub = pod1.install_vllm_stub()
    started = ops_in("vllm.start", "--host", pod1.alias, "--vllm-bin", stub, "--model-id", "org/served-model",
                     "--session", "uivllm", "--port", str(free_port()), "--env", "OPS_VLLM_STUB_STARTUP_S=0.2",
                     "--wait", "--json")
    assert started.returncode == 0, started.stderr
    page, seen = open_page(browser, server)

    serving = page.wait_for_selector("#pods tr[data-pod='uipod1'] .server[data-session='uivllm']:has(.ok)",
                                     timeout=WAIT_MS)
    assert "org/served-model" in serving.inner_text()
    confirm(page, serving.query_selector("button"), "yes")

    page.wait_for_selector("#notice:has-text('vllm_stop uivllm on uipod1: done')", timeout=WAIT_MS)
    page.wait_for_selector("#pods tr[data-pod='uipod1'] .server[data-session='uivllm']:has(.bad)", timeout=WAIT_MS)
    assert pod_pids(pod1, "ops-vllm-stub", live=True) == []
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_a_campaign_is_watched_phase_by_phase_to_its_report(browser, server, client, project, pod0, pod1):  # noqa: F811
    import subprocess

    # The runs end only once the page has shown the campaign waiting for them: a campaign quicker than
    # a refresh (3 x its time on a busy machine) would otherwise never be seen running.
    for pod in (pod0, pod1):
        (pod.home / "ui-campaign-go").unlink(missing_ok=True)
    runs = [{"run_id": f"c{i}", "command": f"while [ ! -e /root/ui-campaign-go ]; do sleep 0.2; done; {WRITE_SUMMARY}"}
            for i in range(3)]
    (project / "sweep.json").write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    page, seen = open_page(browser, server)

    campaign = subprocess.Popen([*ops_argv(), "campaign", "--config", "sweep.json", "--host", FLEET, "--json"],
                                cwd=project, env=client.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.wait_for_selector("#campaigns .campaign li.phase-running:has-text('wait: running')",
                               timeout=WAIT_MS)  # seen while it runs
        for pod in (pod0, pod1):
            (pod.home / "ui-campaign-go").touch()
        out, err = campaign.communicate(timeout=120)
    finally:
        if campaign.poll() is None:
            campaign.kill()
    assert campaign.returncode == 0, err

    try:
        page.wait_for_selector("#campaigns .campaign:has-text('every phase done')", timeout=WAIT_MS)
    except Exception:
        raise AssertionError(page.inner_text("header") + page.inner_text("#campaigns") + out)
    shown = page.inner_text("#campaigns .campaign")
    assert "report: ok" in shown and "wait: ok" in shown and json.loads(out)["campaign_id"] in shown
    table = page.wait_for_selector("#report table.report-runs", timeout=WAIT_MS)
    assert all(f"c{i}" in table.inner_text() for i in range(3))
    report = page.request.get(f"{server.origin}/report.html")  # the page's cookie goes with it
    assert report.status == 200 and report.headers["content-security-policy"].startswith("sandbox allow-scripts")
    assert seen == {"errors": [], "elsewhere": [], "dialogs": []}


def test_hostile_strings_from_pods_and_files_stay_text(browser, server, ops_in, project, pod0):  # noqa: F811
    # A run whose last log line is hostile; then its status.json, metric names and a vLLM state file
    # made hostile on the pod, as a hostile pod would send them; a campaign and a report too.
    printed = HOSTILE.replace("\x1b", "\\033").replace("\x07", "\\007")
    submit(ops_in, project, pod0, "hostile", [{"run_id": "hostile", "command": f"printf '%b\\n' {shlex.quote(printed)}; exit 3"}])
    until(lambda: (server.run("hostile") or {}).get("state") == "failed", "the hostile run to fail")
    pod0.sh("python3 - <<'EOF'\nimport json\n"
            f"hostile = {HOSTILE!r}\n"
            "run = '/mnt/pod_artifacts/outputs/hostile/'\n"
            "status = json.load(open(run + 'status.json'))\n"
            "status.update(failure_class=hostile, error=hostile)\n"
            "json.dump(status, open(run + 'status.json', 'w'))\n"
            "open(run + 'metrics.jsonl', 'w').write(json.dumps({'step': 1, hostile: 2}) + '\\n')\n"
            "json.dump({'session': 'evil', 'model_id': hostile, 'port': 9}, open('/mnt/vllm/evil.json', 'w'))\n"
            "EOF", check=True) if pod0.sh("mkdir -p /mnt/vllm").returncode == 0 else None
    campaign = project / "artifacts" / "campaigns" / "evil"
    campaign.mkdir(parents=True)
    (campaign / "state.json").write_text(json.dumps({"campaign_id": "evil", "hosts": [HOSTILE], "config": HOSTILE,
                                                     "phases": {"rent": {"outcome": HOSTILE, "error": HOSTILE},
                                                                "ready": {"outcome": "ok", "summary": HOSTILE}}}))
    report = project / "artifacts" / "report.json"
    kept = report.read_text() if report.exists() else None
    report.write_text(json.dumps({"header": {HOSTILE: HOSTILE}, "columns": ["run_id", HOSTILE],
                                  "rows": [{"run_id": HOSTILE, HOSTILE: HOSTILE}], "error": HOSTILE}))
    try:
        page, seen = open_page(browser, server)
        row(page, "hostile", "failed").query_selector("button.follow").click()
        page.wait_for_selector("#pods .server[data-session='evil']", timeout=WAIT_MS)
        page.wait_for_selector("#curves svg.curve", timeout=WAIT_MS)
        page.wait_for_selector("#log:has-text('<b id=')", timeout=WAIT_MS)
        page.wait_for_selector("#campaigns .campaign[data-campaign='evil']", timeout=WAIT_MS)
        page.wait_for_selector("#report table.report-runs", timeout=WAIT_MS)

        where = {"last line": "#runs tr[data-run='hostile'] td.text", "failure": "#runs tr[data-run='hostile']",
                 "log": "#log", "metric name": "#curves", "model": "#pods tr[data-pod='uipod0']",
                 "campaign": ".campaign[data-campaign='evil']", "report": "#report"}
        for what, selector in where.items():
            assert SHOWN in page.text_content(selector), what
        assert page.locator("#injected").count() == 0 and page.locator("main img").count() == 0
        assert page.title() == "ops ui"
        assert seen == {"errors": [], "elsewhere": [], "dialogs": []}
    finally:
        report.unlink()
        if kept is not None:
            report.write_text(kept)
        (campaign / "state.json").unlink()
        campaign.rmdir()
        pod0.sh("rm -f /mnt/vllm/evil.json")


def test_a_browser_without_the_token_or_on_another_site_gets_nothing_done(browser, server, ops_in, project, pod1):  # noqa: F811
    import http.server
    import threading

    submit(ops_in, project, pod1, "crosssite", [{"run_id": "not-yours", "command": "sleep 300"}])
    until(lambda: (server.run("not-yours") or {}).get("state") == "running", "the run to run")
    stranger = browser.new_context()  # another browser profile: no cookie
    refused = stranger.new_page().goto(f"{server.origin}/api/state")
    assert refused.status == 403 and "not-yours" not in refused.text()
    stranger.close()

    # A page of another site (another port of this machine: the same "site" to the cookie, so
    # SameSite alone would not stop it) in the browser that has the page's cookie, trying a form,
    # a fetch with the cookie, and reading the state.
    action = f"{server.origin}/api/action"
    evil = ("<!DOCTYPE html><html><body><form id=f method=POST enctype=text/plain action='" + action + "'>"
            "<input name='{\"action\":\"cancel\",\"pod\":\"uipod1\",\"run_id\":\"not-yours\",\"x\":\"' value='\"}'>"
            "</form><script>"
            f"fetch({json.dumps(action)}, {{method: 'POST', credentials: 'include', headers: {{'Content-Type': "
            "'application/json'}, body: JSON.stringify({action: 'cancel', pod: 'uipod1', run_id: 'not-yours'})})"
            ".catch(() => null)"
            f".then(() => fetch({json.dumps(server.origin + '/api/state')}, {{credentials: 'include'}})).catch(() => null)"
            ".then(() => document.getElementById('f').submit());</script></body></html>").encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args):
            pass

    site = http.server.HTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        page, _ = open_page(browser, server)  # the person's own tab: the cookie is set
        other = page.context.new_page()
        said = []
        other.on("console", lambda m: said.append(m.text))
        other.on("pageerror", lambda e: said.append(str(e)))
        other.goto(f"http://127.0.0.1:{site.server_address[1]}/")
        other.wait_for_url(action, timeout=WAIT_MS)  # its script ran to the end: the form was sent last
        assert "refused: an action needs this page's token header and origin" in other.content()
        blocked = [line for line in said if "blocked by CORS policy" in line]
        assert len(blocked) == 2 and "/api/action" in blocked[0] and "/api/state" in blocked[1], said
    finally:
        site.shutdown()
    later = int(page.get_attribute("body", "data-refresh")) + 2
    until(lambda: int(page.get_attribute("body", "data-refresh")) >= later, "two more refreshes")
    row(page, "not-yours", "running")
    assert json.loads(ops_in("runs.status", "--host", pod1.alias, "--run-id", "not-yours", "--json").stdout)[
        "run"]["state"] == "running"
    ops_in("runs.cancel", "--host", pod1.alias, "--run-id", "not-yours")
