"""A fake `nvidia-smi` for test pods: the one stand-in for GPUs these machines lack.

It answers `--query-gpu=FIELDS --format=csv[,noheader][,nounits]` and `-L` from a JSON
file beside it, so a test decides what GPUs a pod has. `gpus="driver-error"` makes it
fail the way nvidia-smi does when the driver is gone.
"""

import json
import os
from pathlib import Path

FAKE_NVIDIA_SMI = r'''#!/usr/bin/env python3
# fake nvidia-smi (ops-tasks tests): answers from gpus.json beside this file.
import json, os, sys

state = json.load(open(os.path.join(os.path.dirname(os.path.realpath(__file__)), "gpus.json")))
if state == "driver-error":
    print("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")
    sys.exit(9)
fields = {"index": "index", "name": "name", "utilization.gpu": "utilization_pct",
          "memory.used": "memory_used_mib", "memory.total": "memory_total_mib", "uuid": "uuid"}
units = {"utilization.gpu": " %", "memory.used": " MiB", "memory.total": " MiB"}
args = sys.argv[1:]
if args == ["-L"]:
    for gpu in state:
        print(f"GPU {gpu['index']}: {gpu['name']} (UUID: {gpu['uuid']})")
    sys.exit(0)
query = next((a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")), None)
fmt = next((a.split("=", 1)[1] for a in args if a.startswith("--format=")), "")
if query is None or "csv" not in fmt:
    print("fake nvidia-smi: only --query-gpu=... --format=csv and -L are supported", file=sys.stderr)
    sys.exit(2)
names = query.split(",")
unknown = [n for n in names if n not in fields]
if unknown:
    print(f'Field "{unknown[0]}" is not a valid field to query.')
    sys.exit(2)
if "noheader" not in fmt:
    print(", ".join(names))
for gpu in state:
    cells = []
    for n in names:
        cell = str(gpu[fields[n]])
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
