"""Benchmark: `ops report` over many synthetic runs, against just json.load-ing their summaries.

Creates --runs run directories (summary.json and run_metadata.json each; one in ten with a small
results.jsonl) in a temp folder, then in this process times `ops report --json` (read every run,
stream the results, build the table, write report.md/report.json, print the document to a
discarded stdout) and, as the baseline, a loop that only opens and json.loads every summary.json.
Each measurement runs in a fresh child process (imports first, then the timed call), so that its
peak RSS growth is its own (and its worker processes', that read many runs). Prints both wall
times, their ratio, and the peak RSS growth (target: under 3 s for 10,000 runs with results
files, memory flat); then 1,000 runs whose results files
are 20x longer against the same runs with short ones: memory does not grow with file size. Last,
report.html of 1,000 runs x 100 examples opened in headless chromium (playwright): its first
paint from the browser's performance timing (target: under 2 s), against loading the bare file.

    python bench/report.py [--runs 10000]
"""

import argparse
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops_tasks.cli import program  # noqa: E402


def peak_rss_mib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


def make_runs(root: Path, count: int, examples: int, results_every: int = 10) -> None:
    rng = random.Random(0)
    models = [f"org/model-{i}" for i in range(20)]
    for index in range(count):
        run_id = f"run-{index:05d}"
        run = root / run_id
        run.mkdir(parents=True)
        model, seed = models[index % len(models)], index // len(models)
        config = {"model_id": model, "env_id": "arith", "seed": seed, "num_examples": 50, "temperature": 0.0,
                  "max_tokens": 512, "rollouts_per_example": 1}
        metadata = {"run_id": run_id, "model_id": model, "env_id": "arith", "decoding": {"temperature": 0.0},
                    "dataset": {"num_examples": 50}, "env": {"HF_TOKEN": "***"}, "config": config,
                    "command": "python3 examples/eval_arith.py", "git": {"commit": "0" * 40}}
        summary = {"ok": True, "env_id": "arith", "model_id": model, "num_examples": 50, "seed": seed,
                   "avg_reward": rng.random(), "duration_s": round(rng.uniform(10, 100), 2)}
        (run / "run_metadata.json").write_text(json.dumps(metadata, indent=1))
        (run / "summary.json").write_text(json.dumps(summary, indent=1))
        if index % results_every == 0:
            with (run / "results.jsonl").open("w") as handle:
                for example in range(examples):
                    handle.write(json.dumps({"id": f"arith-{seed}-{example}", "question": "What is 2 + 2?",
                                             "response": "4", "reward": float(rng.random() < 0.6)}) + "\n")


def baseline(root: Path) -> int:
    loaded = 0
    for entry in os.scandir(root):
        with open(os.path.join(entry.path, "summary.json"), "rb") as handle:
            loaded += bool(json.load(handle))
    return loaded


def report(root: Path, out_dir: Path) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        program.run(["ops", "report", "--root", str(root), "--out-dir", str(out_dir), "--json"], exit=False)
    doc = json.loads(out.getvalue())
    assert doc["ok"], doc.get("error")
    return doc


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def first_paint_ms(paths: list) -> list:
    """Each file's first contentful paint (ms after navigation start) in one headless chromium."""
    from playwright.sync_api import sync_playwright

    painted = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for path in paths:
                page = browser.new_page()
                page.goto(Path(path).as_uri(), wait_until="load", timeout=60_000)
                # The paint entry, looked for every 50 ms until the browser has recorded it: a paint
                # that never comes (a throttled page) must not hang the benchmark (NaN after 10 s).
                painted.append(page.evaluate(
                    "() => new Promise(done => { const started = Date.now(); const look = () => {"
                    " const entry = performance.getEntriesByType('paint')"
                    ".find(e => e.name === 'first-contentful-paint');"
                    " if (entry || Date.now() - started > 10000) done(entry ? entry.startTime : NaN);"
                    " else setTimeout(look, 50); }; look(); })"))
                page.close()
        finally:
            browser.close()
    return painted


def html_figures(tmp: Path, rounds: int) -> dict:
    root, out_dir = tmp / "html_runs", tmp / "html_out"
    make_runs(root, 1000, 100, results_every=1)
    report(root, out_dir)
    html = out_dir / "report.html"
    bare = tmp / "bare.html"
    bare.write_text("<!DOCTYPE html><title>bare</title><p>nothing</p>")
    paints = [first_paint_ms([html, bare]) for _ in range(rounds)]
    return {"bytes": html.stat().st_size, "report_ms": min(p[0] for p in paints),
            "bare_ms": min(p[1] for p in paints)}


def timed(action):
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def measure(side: str, root: str, out_dir: str) -> None:
    """Child mode: one side, timed in a fresh process (imports done first), so that its peak RSS
    (ru_maxrss never goes down) is its own. Prints {seconds, rss_growth_mib, count}."""
    rss_before = peak_rss_mib()
    if side == "report":
        seconds, doc = timed(lambda: report(Path(root), Path(out_dir)))
        count = doc["count"]
    else:
        seconds, count = timed(lambda: baseline(Path(root)))
    # The report reads many runs in worker processes: their peak (the largest one's) is reported too.
    print(json.dumps({"seconds": seconds, "rss_growth_mib": peak_rss_mib() - rss_before, "count": count,
                      "worker_peak_mib": peak_rss_mib(resource.RUSAGE_CHILDREN)}))


def child(side: str, root: Path, out_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", side, str(root), str(out_dir)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000, help="synthetic run directories")
    parser.add_argument("--examples", type=int, default=50, help="lines in each results.jsonl")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each side (best is kept)")
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "ROOT", "OUT_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure(*args.child)

    with tempfile.TemporaryDirectory(prefix="ops-bench-report-") as tmp:
        root, out_dir = Path(tmp) / "pod_logs", Path(tmp) / "artifacts"
        made, _ = timed(lambda: make_runs(root, args.runs, args.examples))
        print(f"created {args.runs} runs ({args.runs // 10} with results.jsonl of {args.examples} lines) "
              f"in {made:.1f} s")
        baseline(root)  # warm the page cache for both sides
        base, ours = [], []
        for _ in range(args.rounds):  # alternating
            base.append(child("baseline", root, out_dir))
            ours.append(child("report", root, out_dir))
        assert all(r["count"] == args.runs for r in base + ours)

        # Memory does not grow with results.jsonl size: 1,000 runs, all with results, 50 vs 1,000 lines.
        small, large = Path(tmp) / "small", Path(tmp) / "large"
        make_runs(small, 1000, args.examples, results_every=1)
        make_runs(large, 1000, args.examples * 20, results_every=1)
        small_r, large_r = child("report", small, out_dir), child("report", large, out_dir)
        html = html_figures(Path(tmp), args.rounds)

    base_s, ours_s = min(r["seconds"] for r in base), min(r["seconds"] for r in ours)
    rss = min(r["rss_growth_mib"] for r in ours)
    print(f"json.load of every summary.json   {base_s:6.2f} s  (best of {args.rounds})")
    print(f"ops report --json                 {ours_s:6.2f} s  (best of {args.rounds}; target < 3 s for 10,000 runs)")
    print(f"ratio report / baseline:          {ours_s / base_s:6.1f}")
    print(f"peak RSS growth during report:    {rss:6.1f} MiB  (rows, table and document of {args.runs} runs); "
          f"largest worker process {max(r['worker_peak_mib'] for r in ours):.1f} MiB")
    print(f"1,000 runs with results.jsonl of {args.examples} lines: {small_r['seconds']:.2f} s, "
          f"RSS growth {small_r['rss_growth_mib']:.1f} MiB")
    print(f"1,000 runs with results.jsonl of {args.examples * 20} lines: {large_r['seconds']:.2f} s, "
          f"RSS growth {large_r['rss_growth_mib']:.1f} MiB  (each run streamed; a cell holds its distinct examples)")
    print(f"report.html of 1,000 runs x 100 examples ({html['bytes'] / 2 ** 20:.1f} MiB): first paint "
          f"{html['report_ms']:.0f} ms in headless chromium (target < 2,000 ms); a bare page {html['bare_ms']:.0f} ms, "
          f"ratio {html['report_ms'] / max(html['bare_ms'], 1):.1f}")


if __name__ == "__main__":
    main()
