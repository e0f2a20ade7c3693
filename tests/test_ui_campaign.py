"""`ops ui` watching a campaign that rents its pods (issue 25's last "Done when"), in a real browser
(Debian's chromium, driven by playwright) on real sshd pods rented through the local fake of
Lium's API (the real SDK talks to it): a new user starts `ops campaign --pods 2`, then `ops ui -H
<the campaign's id>` as soon as the campaign has named itself, while Lium is still starting the
pods; the page says no pod is rented yet, then shows each pod once the campaign has rented it,
with Lium's price per hour and what it has cost so far, the phases advancing, the runs, a run's
log followed, a cancel confirmed in the dialog that stops the run's process on its pod, and at
the end the campaign's report. Also: a fleet's pods are read again each refresh (one added, one
taken away, all released), and a name that is neither a fleet nor a campaign renting its pods is
still bad input.

The server is `ops ui` itself (tests/test_ui_security.py's UiServer). Every wait is bounded;
nothing here measures time."""

import json
import re
import subprocess
import threading

import pytest

from conftest import module_client, module_pod, needs_isolation, one_line_error, ops_argv, pod_pids
from test_report_html import browser  # noqa: F401 (the module's chromium)
from test_ui import confirm, open_page, row
from test_ui_security import WAIT_S, WRITE_SUMMARY, UiServer, until
from ops_tasks.testing.fake_gpu import gpu
from ops_tasks.testing.fake_lium import FakeLium

pytest.importorskip("aiohttp", reason="ops ui needs the ui extra (aiohttp); the test extra installs it")
pytest.importorskip("lium.sdk", reason="the Lium SDK (ops-tasks[lium]) is not installed")
pytestmark = needs_isolation

client = module_client()
pod_a = module_pod("uicamp-a", gpus=[gpu(0), gpu(1)])
pod_b = module_pod("uicamp-b", gpus=[gpu(0), gpu(1)])
WAIT_MS = WAIT_S * 1000
PRICE_PER_GPU, GPUS = 1.25, 8  # each executor of the fake: $10.00/h
GO = "ui-campaign-go"  # in each pod's /root: the campaign's runs end once it is there
WAIT_FOR_GO = f"while [ ! -e /root/{GO} ]; do sleep 0.2; done"


class RentTakesAWhile(FakeLium):
    """Lium starting the pods: each rented pod is PENDING (no SSH yet) until `ready` is set, as a
    real rent takes minutes; then RUNNING at the next listing."""

    def __init__(self):
        super().__init__(pending_polls=1)
        self.ready = threading.Event()

    def _poll_pods(self):
        if not self.ready.is_set():
            return sorted(self.pods.values(), key=lambda p: p["created_at"])
        return super()._poll_pods()


@pytest.fixture(scope="module")
def fake(pod_a, pod_b):
    api = RentTakesAWhile().start()
    api.add_volume("my_volume")
    for _ in range(2):
        api.add_executor("NVIDIA A100-SXM4-80GB", GPUS, PRICE_PER_GPU)
    api.ssh_queue = [{"user": p.user, "host": "127.0.0.1", "port": p.port} for p in (pod_a, pod_b)]
    yield api
    api.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = tmp_path_factory.mktemp("ui-campaign-project")
    metrics = "; ".join(f"echo '{{\"step\": {i}, \"loss\": {10 - i}}}' >> \"$OPS_RUN_DIR/metrics.jsonl\"" for i in range(1, 5))
    runs = [{"run_id": "followed", "gpus": 1,
             "command": f"{metrics}; echo first half; {WAIT_FOR_GO}; echo second half; {WRITE_SUMMARY}"},
            {"run_id": "other", "gpus": 1, "command": f"{WAIT_FOR_GO}; echo other done; {WRITE_SUMMARY}"},
            {"run_id": "stuck", "gpus": 1, "command": "sleep 307"}]
    (path / "sweep.json").write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
    return path


def start_campaign(client, project, fake):
    """`ops campaign --pods 2` as a user starts it in a terminal: stderr read line by line as it comes."""
    proc = subprocess.Popen([*ops_argv(), "campaign", "--config", "sweep.json", "--pods", "2", "--gpu", "A100",
                             "--count", "8", "--ready-timeout", "90", "--json"], cwd=project,
                            env=client.env(**fake.env(), XDG_CACHE_HOME=str(client.home / ".cache")),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.said = []

    def read():
        for line in proc.stderr:
            proc.said.append(line)

    proc.reader = threading.Thread(target=read, daemon=True)
    proc.reader.start()
    return proc


def test_a_campaign_that_rents_its_pods_is_watched_from_rent_to_report(browser, client, project, fake,  # noqa: F811
                                                                          pod_a, pod_b):
    for pod in (pod_a, pod_b):
        (pod.home / GO).unlink(missing_ok=True)
    campaign = start_campaign(client, project, fake)
    server = None
    try:
        # The campaign's first line names it; Lium is still starting its pods.
        named = lambda: next((m.group(1) for line in list(campaign.said)  # noqa: E731
                              for m in [re.match(r"campaign (\S+): rent: ", line)] if m), None)
        cid = until(named, "the campaign to name itself")
        until(lambda: len(fake.rents()) == 1, "the first rent (each pod is waited for before the next)")
        server = UiServer(client, project, cid)
        assert server.info["pods"] == []
        page, seen = open_page(browser, server)

        waiting = page.wait_for_selector("#pods tr.no-pods", timeout=WAIT_MS)
        assert f"no pod in {cid} yet" in waiting.inner_text()
        page.wait_for_selector(f".campaign[data-campaign='{cid}'] li.phase-running:has-text('rent: running')",
                               timeout=WAIT_MS)
        # Lium bills from the rent on: the pod is on the page while it starts, with its price.
        page.wait_for_selector(f".campaign[data-campaign='{cid}'] .rented:has-text('{cid}-0 $10.00/h starting')",
                               timeout=WAIT_MS)
        assert "(pods not rented yet)" in page.inner_text(f".campaign[data-campaign='{cid}']")

        fake.ready.set()  # Lium has started them: the page adds each pod, priced by Lium, with its runs

        pods = [f"{cid}-0", f"{cid}-1"]
        for name in pods:
            shown = page.wait_for_selector(f"#pods tr[data-pod='{name}']:has(td .ok)", timeout=WAIT_MS)
            cells = shown.query_selector_all("td")
            assert cells[5].inner_text().split("\n") == ["$10.00/h", "Lium"]
            assert re.fullmatch(r"\$\d+\.\d\d", cells[6].inner_text()), cells[6].inner_text()  # cost so far
        assert page.locator("#pods tr.no-pods").count() == 0
        totals = page.inner_text("#totals")
        assert "2/2 pods up" in totals and "$20.00/h" in totals and "spent on pods so far" in totals
        for run_id in ("followed", "other", "stuck"):
            assert row(page, run_id, "running").get_attribute("data-pod") in pods
        page.wait_for_selector(f".campaign[data-campaign='{cid}'] li.phase-running:has-text('wait: running')",
                               timeout=WAIT_MS)
        shown = page.inner_text(f".campaign[data-campaign='{cid}']")
        assert f"on {cid}-0, {cid}-1" in shown and "rent: ok" in shown and "submit: ok" in shown
        assert f"rented on Lium: {cid}-0 $10.00/h ready · {cid}-1 $10.00/h ready" in shown

        # The log of one run, followed; a cancel of another, refused once then confirmed.
        row(page, "followed", "running").query_selector("button.follow").click()
        page.wait_for_selector("#log:has-text('first half')", timeout=WAIT_MS)
        assert "second half" not in page.inner_text("#log")
        page.wait_for_selector("#curves svg.curve[data-metric='loss']", timeout=WAIT_MS)
        stuck_on = row(page, "stuck", "running").get_attribute("data-pod")
        confirm(page, row(page, "stuck", "running").query_selector("button.cancel"), "no")
        later = int(page.get_attribute("body", "data-refresh")) + 2
        until(lambda: int(page.get_attribute("body", "data-refresh")) >= later, "two more refreshes")
        row(page, "stuck", "running")
        assert [p for p in (pod_a, pod_b) if pod_pids(p, "sleep 307", live=True)] != []
        confirm(page, row(page, "stuck", "running").query_selector("button.cancel"), "yes")
        row(page, "stuck", "cancelled")
        assert f"cancel stuck on {stuck_on}: done" in page.inner_text("#notice")
        assert pod_pids(pod_a, "sleep 307", live=True) == [] and pod_pids(pod_b, "sleep 307", live=True) == []

        for pod in (pod_a, pod_b):
            (pod.home / GO).touch()  # the other runs end only now, while the page follows one of them
        page.wait_for_selector("#log:has-text('second half')", timeout=WAIT_MS)
        row(page, "followed", "succeeded")
        out, _ = campaign.communicate(timeout=120)
        campaign.reader.join(timeout=WAIT_S)
        assert campaign.returncode == 1, "".join(campaign.said)  # the cancelled run: validate is not ok
        assert json.loads(out)["campaign_id"] == cid

        try:
            end = page.wait_for_selector(f".campaign[data-campaign='{cid}'] .campaign-end:has-text('every phase done')",
                                         timeout=WAIT_MS)
        except Exception:
            raise AssertionError(page.inner_text("#campaigns") + out)
        assert "not ok: validate" in end.inner_text()
        shown = page.inner_text(f".campaign[data-campaign='{cid}']")
        assert "wait: ok" in shown and "1 cancelled" in shown and "report: ok" in shown and "fetch: ok" in shown
        report = page.wait_for_selector("#report table.report-runs", timeout=WAIT_MS).inner_text()
        assert "followed" in report and "other" in report
        header = page.inner_text("#report ul.header")
        assert f"campaign {cid}" in header and "states: cancelled 1, succeeded 2" in header
        assert re.search(r"cost: cost_usd \$\d+\.\d\d, priced 3, unpriced 0", header), header
        assert "[]" not in header and "{" not in header  # read as words, not JSON
        assert seen == {"errors": [], "elsewhere": [], "dialogs": []}
    finally:
        if campaign.poll() is None:
            campaign.kill()
            campaign.wait()
        if server is not None:
            stderr = server.stop()
            assert "Traceback" not in stderr, stderr
            assert f"ops ui: {cid}: added {cid}-0, {cid}-1" in stderr


def test_a_recorded_fleet_s_pods_are_read_again_at_each_refresh(browser, client, project, pod_a, pod_b,  # noqa: F811
                                                                 monkeypatch):
    from ops_tasks import records

    monkeypatch.setenv("OPS_STATE_DIR", str(client.state_home / "ops-tasks"))  # the laptop's own store
    records.save_fleet(project, "growing", ["uicamp-a"])
    server = UiServer(client, project, "growing")

    def shown() -> list:
        return [p["name"] for p in server.state().get("pods") or []]

    try:
        assert server.info["pods"] == ["uicamp-a"]
        until(lambda: shown() == ["uicamp-a"], "the first refresh")

        records.save_fleet(project, "growing", ["uicamp-a", "uicamp-b"])  # pod.up --name growing, again
        until(lambda: shown() == ["uicamp-a", "uicamp-b"], "the pod added to be shown")
        records.save_fleet(project, "growing", ["uicamp-b"])  # pod.down released one
        until(lambda: shown() == ["uicamp-b"], "the pod taken away to be gone")
        records.save_fleet(project, "growing", ["uicamp-b", "nowhere"])  # a name no longer resolving
        until(lambda: "unknown host 'nowhere'" in (server.state()["watching"]["error"] or ""), "the error shown")
        assert shown() == ["uicamp-b"]
        page, seen = open_page(browser, server)
        said = page.wait_for_selector("#pods tr.pods-error", timeout=WAIT_MS).inner_text()
        assert said.startswith("growing: its pods as last read (") and "unknown host 'nowhere'" in said
        assert page.locator("#pods tr[data-pod]").count() == 1 and seen["errors"] == []
        page.context.close()
        records.forget_fleet(project, "growing")  # every pod released
        until(lambda: shown() == [], "every pod gone")
        assert server.state()["watching"]["hosts"] == "growing"
    finally:
        stderr = server.stop()
    assert "Traceback" not in stderr, stderr
    assert "ops ui: growing: added uicamp-b (watching uicamp-a, uicamp-b)" in stderr
    assert "ops ui: growing: no longer uicamp-a (watching uicamp-b)" in stderr


def test_a_campaign_still_renting_is_watched_and_a_name_that_is_no_fleet_is_still_bad_input(client, project, pod_a):
    import signal

    campaigns = project / "artifacts" / "campaigns"
    for name, hosts in (("renting", []), ("on-hosts", ["uicamp-a"])):  # --pods N; -H hosts (never a fleet)
        (campaigns / name).mkdir(parents=True, exist_ok=True)
        (campaigns / name / "state.json").write_text(json.dumps(
            {"campaign_id": name, "hosts": hosts, "rented": [], "phases": {}}))
    before = pod_a.accepted_connections()

    for name in ("no-such-fleet", "on-hosts"):
        done = subprocess.run([*ops_argv(), "ui", "-H", name, "--port", "0"], cwd=project, env=client.env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        one_line_error(done, 2, f"unknown host '{name}'")
    watching = subprocess.Popen([*ops_argv(), "ui", "-H", "renting", "--port", "0"], cwd=project, env=client.env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = watching.stdout.readline()
    finally:
        watching.send_signal(signal.SIGINT)
        _, stderr = watching.communicate(timeout=WAIT_S)
    assert said.startswith("ops ui: watching campaign renting (no pod rented yet: each shows once the campaign has "
                           "rented it); open http://127.0.0.1:"), (said, stderr)
    assert watching.returncode == 0 and "Traceback" not in stderr, stderr
    assert pod_a.accepted_connections() == before
