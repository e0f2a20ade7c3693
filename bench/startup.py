"""Benchmark: whole-process wall time of `ops --list` against `python -c pass` and `inv --version`.

Each round runs every command one after the other (alternating, so a busy machine slows all of
them alike), as a user's shell would: a new process each, from a project folder with an
invoke.yaml. Two installs are measured, each against its own `python -c pass` and `inv
--version`: this checkout's virtualenv (ops_tasks installed editable: every interpreter of it,
`inv` too, imports setuptools' editable finder at start) and a regular install, a wheel of the
checkout pip-installed into a temporary virtualenv that takes its dependencies from this one
(`--installed-only` / `--editable-only` pick one). Prints the medians and the ratios; the target
is the installed `ops --list` within 1.2x of `inv --version` (Invoke's own start-up, which every
task pays anyway). Then it checks that neither `ops --list`, `ops report --help` nor
`ops pod.status --host local --dry-run` imports paramiko or fabric (only a task that connects
needs them).

Each figure is a median of wall time and of CPU time (user + system: on a busy machine the
steadier one). Bytecode is written before measuring (PYTHONDONTWRITEBYTECODE is dropped), as it is for a user
after the first run: a changed module compiled again in every round is not start-up.

    python bench/startup.py [--rounds 20] [--installed-only | --editable-only]
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_RATIO = 1.2
CONNECTION_MODULES = ("paramiko", "fabric")
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv, cwd) -> tuple:
    """(wall time, CPU time) of one run of argv. CPU time (user + system) is the steadier figure
    on a machine that other work keeps busy: waiting for a core is not in it."""
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, children_cpu() - cpu


def connection_modules_imported(python, argv, cwd) -> list:
    """Which of paramiko and fabric the program run as argv imports (-X importtime names each)."""
    result = subprocess.run([python, "-X", "importtime", *argv], cwd=cwd, env=ENV, capture_output=True, text=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    return [name for name in CONNECTION_MODULES if name in imported]


def regular_install(folder: Path) -> Path:
    """A virtualenv holding a wheel of the checkout (pip-installed, bytecode compiled) and, by a .pth
    line, this virtualenv's site-packages for the dependencies (a plain path: the editable
    finder's .pth there is not run). Returns its bin folder."""
    wheels, venv = folder / "wheel", folder / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(CHECKOUT)],
                   check=True, env=ENV, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                    *map(str, wheels.glob("*.whl"))], check=True, env=ENV, stdout=subprocess.DEVNULL)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "ops-bench-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # `inv` is Invoke's console script; pip made none here (--no-deps): the same script, run by this python.
    inv = venv / "bin" / "inv"
    inv.write_text(f"#!{python}\n" + (BIN / "inv").read_text().split("\n", 1)[1])
    inv.chmod(0o755)
    return venv / "bin"


def commands_of(label: str, bin_dir: Path) -> dict:
    return {
        f"{label}: python -c pass": [str(bin_dir / "python"), "-c", "pass"],
        f"{label}: inv --version": [str(bin_dir / "inv"), "--version"],
        f"{label}: ops --list": [str(bin_dir / "ops"), "--list"],
    }


def measure(commands: dict, rounds: int, cwd) -> dict:
    """{name: (median wall time, median CPU time)}."""
    for argv in commands.values():  # once unmeasured: bytecode written, files in the page cache
        run_once(argv, cwd)
    times = {name: [] for name in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            times[name].append(run_once(argv, cwd))
    return {name: tuple(statistics.median(column) for column in zip(*values)) for name, values in times.items()}


def report(label: str, medians: dict) -> None:
    ops, inv, python = (medians[f"{label}: {what}"] for what in ("ops --list", "inv --version", "python -c pass"))
    for what, (wall, cpu) in (("python -c pass", python), ("inv --version", inv), ("ops --list", ops)):
        print(f"{label:9} {what:16} median {wall * 1000:7.1f} ms wall, {cpu * 1000:7.1f} ms CPU")
    for what, column in (("wall", 0), ("CPU", 1)):
        print(f"{label:9} {what:4} ops --list / inv --version {ops[column] / inv[column]:.2f}x (target <= "
              f"{TARGET_RATIO}x), ops --list / python -c pass {ops[column] / python[column]:.2f}x, "
              f"inv --version / python -c pass {inv[column] / python[column]:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="measurements of each command (alternating)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--installed-only", action="store_true", help="measure the regular install only")
    which.add_argument("--editable-only", action="store_true", help="measure this virtualenv only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ops-startup-") as folder:
        project = Path(folder, "project")
        project.mkdir()
        (project / "invoke.yaml").write_text("ops: {}\n")
        installs = {}
        if not args.installed_only:
            installs["editable"] = BIN
        if not args.editable_only:
            installs["installed"] = regular_install(Path(folder))
        commands = {}
        for label, bin_dir in installs.items():
            commands.update(commands_of(label, bin_dir))
        medians = measure(commands, args.rounds, project)
        for label in installs:
            report(label, medians)

        for label, bin_dir in installs.items():
            python = str(bin_dir / "python")
            for argv in (["--list"], ["report", "--help"], ["pod.status", "--host", "local", "--dry-run"]):
                found = connection_modules_imported(python, [str(bin_dir / "ops"), *argv], project)
                print(f"{label:9} ops {' '.join(argv)}: {', '.join(found) + ' IMPORTED' if found else 'no paramiko, no fabric'}")
        shutil.rmtree(Path(folder, "venv"), ignore_errors=True)


if __name__ == "__main__":
    main()
