"""Benchmark: whole-process wall time of `ops --list` against `python -c pass` and `inv --version`.

Each round runs the three commands one after the other (alternating, so a busy machine slows
all of them alike), as a user's shell would: a new process each, from a project folder with an
invoke.yaml. Prints the medians and the ratios; the target is `ops --list` within 1.2x of
`inv --version` (Invoke's own start-up, which every task pays anyway). Then it checks that
neither `ops --list` nor `ops pod.status --host local --dry-run` imports paramiko (only a task
that connects needs it).

    python bench/startup.py [--rounds 20]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET_RATIO = 1.2


def wall(argv, cwd) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def imports_paramiko(argv, cwd) -> bool:
    """True when the program run as argv imports paramiko (python -X importtime names every import)."""
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, capture_output=True, text=True)
    return any(line.rstrip().endswith("| paramiko") for line in result.stderr.splitlines())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measurements of each command (alternating)")
    args = parser.parse_args()

    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "inv --version": [str(BIN / "inv"), "--version"],
        "ops --list": [str(BIN / "ops"), "--list"],
    }
    with tempfile.TemporaryDirectory(prefix="ops-startup-") as folder:
        Path(folder, "invoke.yaml").write_text("ops: {}\n")
        times = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(wall(argv, folder))
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, median in medians.items():
            print(f"{name:16} median {median * 1000:7.1f} ms")
        versus_inv = medians["ops --list"] / medians["inv --version"]
        print(f"ops --list / inv --version   {versus_inv:.2f}x (target <= {TARGET_RATIO}x)")
        print(f"ops --list / python -c pass  {medians['ops --list'] / medians['python -c pass']:.2f}x")
        print(f"inv --version / python -c pass  {medians['inv --version'] / medians['python -c pass']:.2f}x")

        ops_module = ["-m", "ops_tasks"]
        for what, argv in (("ops --list", [*ops_module, "--list"]),
                           ("ops pod.status --host local --dry-run", [*ops_module, "pod.status", "--host", "local",
                                                                      "--dry-run"])):
            print(f"{what}: paramiko {'IMPORTED' if imports_paramiko(argv, folder) else 'not imported'}")


if __name__ == "__main__":
    main()
