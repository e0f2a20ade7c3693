"""A fake `nvidia-smi` for test pods: the one stand-in for GPUs these machines lack.

It answers `--query-gpu=FIELDS --format=csv[,noheader][,nounits]`, `--query-compute-apps=FIELDS
--format=csv...` and `-L` from a JSON file beside it, so a test decides what GPUs a pod has.
`gpus="driver-error"` makes it fail the way nvidia-smi does when the driver is gone.

Processes "hold GPU memory" by registering in `procs/<pid>.json` beside it: {"gpus": [indexes],
"fraction": F}. While that pid is alive (in /proc and not a zombie), each listed GPU's memory.used
grows by round(F * memory.total) (capped at the total) and --query-compute-apps lists the pid.
Files of dead pids are ignored. The vLLM stub's engine child registers itself this way when
OPS_FAKE_GPU_DIR names the directory (ops_tasks/testing/vllm_stub.py), so a leaked engine shows up.
"""

import json
import os
from pathlib import Path

FAKE_GPU_DIR_ENV = "OPS_FAKE_GPU_DIR"  # what the vLLM stub's engine reads to find procs/

FAKE_NVIDIA_SMI = r'''#!/usr/bin/env python3
# fake nvidia-smi (ops-tasks tests): answers from gpus.json beside this file, plus the memory
# held by live processes registered in procs/<pid>.json beside it.
import glob, json, os, sys

here = os.path.dirname(os.path.realpath(__file__))
state = json.load(open(os.path.join(here, "gpus.json")))
if state == "driver-error":
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    sys.exit(9)


def alive(pid):
    """Running: in /proc and not a zombie (exited, not yet reaped: its memory is freed)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def registered_processes():
    """[(pid, gpu indexes, fraction)] of live registered processes."""
    procs = []
    for path in sorted(glob.glob(os.path.join(here, "procs", "*.json"))):
        name = os.path.basename(path)[:-len(".json")]
        if not name.isdigit() or not alive(int(name)):
            continue
        try:
            with open(path) as f:
                registration = json.load(f)
            procs.append((int(name), [int(i) for i in registration["gpus"]], float(registration["fraction"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a registration
    return procs


def held_mib(fraction, gpu):
    return min(gpu["memory_total_mib"], int(round(fraction * gpu["memory_total_mib"])))


def process_name(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "[Not Found]"


procs = registered_processes()
for gpu in state:
    held = sum(held_mib(fraction, gpu) for _, indexes, fraction in procs if gpu["index"] in indexes)
    gpu["memory_used_mib"] = min(gpu["memory_total_mib"], gpu["memory_used_mib"] + held)

args = sys.argv[1:]
if args == ["-L"]:
    for gpu in state:
        print(f"GPU {gpu['index']}: {gpu['name']} (UUID: {gpu['uuid']})")
    sys.exit(0)


def option(prefix):
    return next((a.split("=", 1)[1] for a in args if a.startswith(prefix)), None)


gpu_query, apps_query, fmt = option("--query-gpu="), option("--query-compute-apps="), option("--format=") or ""
if (gpu_query is None) == (apps_query is None) or "csv" not in fmt:
    print("fake nvidia-smi: only --query-gpu=... or --query-compute-apps=... with --format=csv, and -L are supported",
          file=sys.stderr)
    sys.exit(2)
if gpu_query is not None:
    names = gpu_query.split(",")
    valid = ("index", "name", "utilization.gpu", "memory.used", "memory.total", "uuid")
    rows = [{"index": g["index"], "name": g["name"], "utilization.gpu": g["utilization_pct"],
             "memory.used": g["memory_used_mib"], "memory.total": g["memory_total_mib"], "uuid": g["uuid"]}
            for g in state]
else:
    names = apps_query.split(",")
    valid = ("pid", "process_name", "used_memory", "used_gpu_memory", "gpu_uuid", "gpu_name")
    rows = [{"pid": pid, "process_name": process_name(pid), "used_memory": held_mib(fraction, g),
             "used_gpu_memory": held_mib(fraction, g), "gpu_uuid": g["uuid"], "gpu_name": g["name"]}
            for g in state for pid, indexes, fraction in procs if g["index"] in indexes]
units = {"utilization.gpu": " %", "memory.used": " MiB", "memory.total": " MiB", "used_memory": " MiB",
         "used_gpu_memory": " MiB"}
unknown = [n for n in names if n not in valid]
if unknown:
    print(f'Field "{unknown[0]}" is not a valid field to query.')
    sys.exit(2)
if "noheader" not in fmt:
    print(", ".join(names))
for row in rows:
    cells = []
    for n in names:
        cell = str(row[n])
        cells.append(cell if "nounits" in fmt else cell + units.get(n, ""))
    print(", ".join(cells))
'''


def gpu(index: int, name: str = "NVIDIA A100-SXM4-80GB", total_mib: int = 81920, used_mib: int = 1,
        utilization_pct: int = 0) -> dict:
    return {"index": index, "name": name, "memory_total_mib": total_mib, "memory_used_mib": used_mib,
            "utilization_pct": utilization_pct, "uuid": f"GPU-fake-{index:04d}"}


def install_fake_nvidia_smi(bin_dir, gpus) -> Path:
    """Write nvidia-smi and its gpus.json into bin_dir; gpus: an int, a list of gpu(), or 'driver-error'."""
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(gpus, int):
        gpus = [gpu(i) for i in range(gpus)]
    (bin_dir / "gpus.json").write_text(json.dumps(gpus))
    script = bin_dir / "nvidia-smi"
    script.write_text(FAKE_NVIDIA_SMI)
    os.chmod(script, 0o755)
    return script


def register_gpu_process(bin_dir, pid: int, gpus, fraction: float) -> Path:
    """Make `pid` hold `fraction` of each listed GPU's memory while it lives, as the stub's engine does."""
    procs = Path(bin_dir) / "procs"
    procs.mkdir(parents=True, exist_ok=True)
    path = procs / f"{pid}.json"
    path.write_text(json.dumps({"gpus": list(gpus), "fraction": fraction}))
    return path
