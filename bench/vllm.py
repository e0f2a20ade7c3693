"""Benchmark: vllm.status / start --wait / stop against plain SSH on the same pod.

One real sshd pod on loopback with the vLLM stand-in (ops-vllm-stub) and two fake GPUs; every
task runs in this process (`program.run`), so Python start-up is not counted. Reported:

- vllm.status (one round trip: models, /health, session, pid, log) against the naive check,
  `ssh HOST curl -s http://127.0.0.1:PORT/v1/models` (ratio; medians over the rounds);
- readiness lag of `vllm.start --wait`: from the moment /v1/models first lists the model (polled
  every 10 ms from here) to the task's return (the issue asks for at most 2 s);
- vllm.stop (INT, wait for the tree, check the port and GPU memory) against `ssh HOST true`.

    python bench/vllm.py [--rounds 15]
"""

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import threading
import time
import urllib.request

from harness import ALIAS, bench_pod, timed

from ops_tasks.cli import program
from ops_tasks.testing.pods import free_port


def ops(*argv) -> dict:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
        program.run(["ops", *argv, "--json"], exit=False)
    return json.loads(out.getvalue())


def first_ready(url: str, model: str, found: dict, stop: threading.Event) -> None:
    """Record when url first lists model (polled every 10 ms)."""
    while not stop.is_set():
        try:
            body = urllib.request.urlopen(url, timeout=0.5).read()
            if model in [m["id"] for m in json.loads(body)["data"]]:
                found["at"] = time.perf_counter()
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="measurements of each side")
    args = parser.parse_args()

    with bench_pod(gpus=2) as (pod, client, _):
        stub = pod.install_vllm_stub()
        port = free_port()
        url = f"http://127.0.0.1:{port}/v1/models"
        ssh = client.ssh_argv(ALIAS)
        start = ["vllm.start", "--host", ALIAS, "--vllm-bin", stub, "--model-id", "Qwen/Qwen3-4B",
                 "--port", str(port), "--wait", "--env", "OPS_VLLM_STUB_STARTUP_S=1"]
        status_s, curl_s, lags_s, stop_s, true_s = [], [], [], [], []
        subprocess.run(ssh + ["true"], check=True)  # known_hosts
        for _ in range(args.rounds):
            found, stop = {}, threading.Event()
            poller = threading.Thread(target=first_ready, args=(url, "Qwen/Qwen3-4B", found, stop))
            poller.start()
            assert ops(*start)["ok"]
            returned = time.perf_counter()
            stop.set()
            poller.join()
            lags_s.append(returned - found["at"])
            status_s.append(timed(lambda: ops("vllm.status", "--host", ALIAS)))
            curl_s.append(timed(lambda: subprocess.run(ssh + ["curl", "-s", url], check=True,
                                                       stdout=subprocess.DEVNULL)))
            true_s.append(timed(lambda: subprocess.run(ssh + ["true"], check=True)))
            stop_s.append(timed(lambda: ops("vllm.stop", "--host", ALIAS)))

    med = {name: statistics.median(xs) * 1000 for name, xs in
           (("status", status_s), ("curl", curl_s), ("lag", lags_s), ("stop", stop_s), ("true", true_s))}
    print(f"ssh HOST curl /v1/models  median {med['curl']:7.1f} ms  ({args.rounds} rounds)")
    print(f"ops vllm.status           median {med['status']:7.1f} ms")
    print(f"ssh HOST true             median {med['true']:7.1f} ms")
    print(f"ops vllm.stop             median {med['stop']:7.1f} ms")
    print(f"ratio vllm.status / ssh curl:   {med['status'] / med['curl']:.2f}")
    print(f"ratio vllm.stop / ssh true:     {med['stop'] / med['true']:.2f}")
    print(f"start --wait returns after readiness: median {med['lag']:.0f} ms, max {max(lags_s) * 1000:.0f} ms "
          f"(target <= 2000 ms)")


if __name__ == "__main__":
    main()
