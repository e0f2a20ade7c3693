"""Benchmark: `ops ui` over 8 pods, each 100 ms away (issue 25).

Real sshd pods on loopback, each behind a DelayProxy holding every chunk 50 ms each way (a 100 ms
round trip: bench/fleet.py's far_pods), each pod holding runs (one of them followed by the page,
printing a line and a metrics step a second). Three figures:

1. One refresh against one `pod.status` of the fleet, medians of --rounds (in this process: the
   server's own Watch.gather on the connections it keeps, against fleet.fan_out of pod_status on
   fresh connections, as a new `ops pod.status` makes them, and on kept ones, like for like).
   A refresh does more (pod.status, runs.status, vllm.status, the followed run's log and
   metrics) in the same one round trip per pod.
2. How soon the page shows what the pods said: `ops ui` itself (its own process) and Chromium on
   its page; for each refresh, the moment the page applied it minus the moment the last pod
   answered (both this machine's clock), median and worst.
3. The server's memory over time: its resident size sampled every --sample-s while the page is
   open and following a run, over --minutes (the issue's hour, shortened: a slope), fitted by
   least squares after the first minute, in KiB per minute and as KiB over an hour.

    python bench/ui.py [--rounds 10] [--minutes 5] [--pods 8]
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import timed
from fleet import ONE_WAY_DELAY_S, far_pods

from invoke import Config

from ops_tasks import targets
from ops_tasks.fleet import fan_out, resolve_hosts
from ops_tasks.operations.pod import pod_status

CHROMIUM = "/usr/bin/chromium"
LINES = ("for i in $(seq 1 100000); do echo \"line $i\"; "
         "echo \"{\\\"step\\\": $i, \\\"loss\\\": $((100000 / i))}\" >> \"$OPS_RUN_DIR/metrics.jsonl\"; sleep 1; done")


def submit_runs(aliases: list, folder: Path) -> None:
    """On each pod a few ended runs and one that runs for the whole benchmark (`follow-<pod>`)."""
    ops = Path(sys.executable).parent / "ops"
    for alias in aliases:
        runs = [{"run_id": f"done-{alias}-{i}", "command": "echo done; printf '{\"ok\": true}' > "
                 "\"$OPS_RUN_DIR/summary.json\""} for i in range(5)]
        runs.append({"run_id": f"follow-{alias}", "command": LINES})
        (folder / f"{alias}.json").write_text(json.dumps({"remote_repo": "/root", "runs": runs}))
        done = subprocess.run([str(ops), "runs.submit", "--host", alias, "--config", f"{alias}.json", "--slots", "6",
                               "--json"], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def refresh_against_status(aliases: list, folder: Path, rounds: int) -> None:
    from ops_tasks.operations.ui_server import Watch

    config = Config()
    profiles = resolve_hosts({}, ",".join(aliases), folder)
    pool = [targets.target_for(p, invoke_config=config) for p in profiles]
    watch = Watch(pool, project_dir=folder, interval_s=2.0, invoke_config=config)
    followed = {aliases[0]: ([], [(f"follow-{aliases[0]}", f"/mnt/pod_artifacts/outputs/follow-{aliases[0]}")])}
    plan = {name: followed.get(name, ([], [])) for name in watch.order}
    watch.gather(plan)  # first contact: connections, host keys, the runtime shipped once

    def refresh():
        gathered = watch.gather(plan)
        assert all(g["round_trips"] == 1 for g in gathered.values()), {n: g["round_trips"] for n, g in gathered.items()}

    def status_fresh():
        targets.close_all()
        assert fan_out(profiles, pod_status).ok

    def status_kept():
        assert fan_out(profiles, pod_status).ok

    status_fresh()
    fresh, kept, refreshes = [], [], []
    for _ in range(rounds):
        fresh.append(timed(status_fresh))
        kept.append(timed(status_kept))
        refreshes.append(timed(refresh))
    for target in pool:
        target.close()
    fresh_ms, kept_ms, refresh_ms = (statistics.median(xs) * 1000 for xs in (fresh, kept, refreshes))
    print(f"pod.status of {len(aliases)} pods, new connections   median {fresh_ms:7.1f} ms  ({rounds} rounds)")
    print(f"pod.status of {len(aliases)} pods, kept connections  median {kept_ms:7.1f} ms")
    print(f"ops ui refresh of {len(aliases)} pods (kept)          median {refresh_ms:7.1f} ms  (one round trip per pod)")
    print(f"ratio refresh / pod.status (new connections):  {refresh_ms / fresh_ms:.2f}")
    print(f"ratio refresh / pod.status (kept connections): {refresh_ms / kept_ms:.2f}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def slope_per_minute(samples: list) -> float:
    """Least-squares slope of (seconds, KiB) samples, in KiB per minute."""
    xs, ys = [s for s, _ in samples], [k for _, k in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def page_and_memory(aliases: list, folder: Path, minutes: float, sample_s: float) -> None:
    from playwright.sync_api import sync_playwright

    ops = Path(sys.executable).parent / "ops"
    server = subprocess.Popen([str(ops), "ui", "--host", ",".join(aliases), "--port", "0", "--json", "--interval", "1"],
                              cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = json.loads(server.stdout.readline())["url"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--headless=new", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(f"#runs tr[data-run='follow-{aliases[0]}'] button.follow", timeout=60000).click()
            lags, seen = [], None
            samples, started = [], time.monotonic()
            next_sample = started
            while time.monotonic() - started < minutes * 60:
                number = page.get_attribute("body", "data-refresh")
                if number != seen:
                    seen = number
                    applied, answered = (page.get_attribute("body", name) for name in ("data-applied-at",
                                                                                        "data-answered-at"))
                    if applied and answered:
                        lags.append(float(applied) - float(answered))
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - started, rss_kib(server.pid)))
                    next_sample += sample_s
                page.wait_for_timeout(50)
            refreshes = int(seen or 0)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    lags = lags[1:]  # the first one waited for the page itself to load
    print(f"page updated after the pods' answer: median {statistics.median(lags) * 1000:.0f} ms, "
          f"worst {max(lags) * 1000:.0f} ms ({len(lags)} refreshes seen)")
    settled = [s for s in samples if s[0] >= 60] or samples
    slope = slope_per_minute(settled)
    print(f"server memory: {samples[0][1]} KiB at start, {samples[-1][1]} KiB after {minutes:g} min "
          f"({refreshes} refreshes); slope after the first minute {slope:+.1f} KiB/min, "
          f"{slope * 60:+.0f} KiB over an hour")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="refreshes and pod.status calls measured")
    parser.add_argument("--pods", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the page is watched (memory)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory samples")
    args = parser.parse_args()
    print(f"{args.pods} pods, each {2 * ONE_WAY_DELAY_S * 1000:.0f} ms away")
    with far_pods(args.pods) as (aliases, folder):
        os.chdir(folder)
        submit_runs(aliases, folder)
        refresh_against_status(aliases, folder, args.rounds)
        page_and_memory(aliases, folder, args.minutes, args.sample_s)


if __name__ == "__main__":
    main()
