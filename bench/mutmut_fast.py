"""Mutation testing of the fast modules with mutmut: every mutant the tool makes, not a hand list.

    .venv/bin/python bench/mutmut_fast.py                      # every fast module (`make mutants`)
    .venv/bin/python bench/mutmut_fast.py --module stats --module costs   # some of them
    .venv/bin/python bench/mutmut_fast.py --keep               # keep the copy (mutmut show/apply there)
    .venv/bin/python bench/mutmut_fast.py --head               # on the last commit, not the working tree

bench/mutants.py plants a fixed list of bugs and runs the tests named for each; this runner lets
mutmut (pinned below, installed into the project venv on first use: it is no dependency of the
product nor of `make test`) make every mutant of the modules whose tests run in seconds, and runs
the tests that reach each one.

How: the checkout's tracked and untracked-but-not-ignored files (--head: the last commit) are
copied to a temporary folder; the [tool.mutmut] section is written into the copy's pyproject.toml
(never the checkout's) and a collection hook appended to the copy's tests/conftest.py that keeps
only the tests needing no pod and no `ops` process (no `client`, `pod`, `pod_factory`,
`report_html`, `browser` fixture in their closure, not `needs_isolation`): those run in-process, where mutmut sees what they call.
The hook also empties every functools cache of the mutated modules before each test (see CACHE_HOOK).
`mutmut run` then mutates MODULES there, maps each function to the tests that call it and runs
them per mutant in a forked worker. The checkout is never written.

The fork pitfall: a worker is forked after the modules were imported, so a mutant of a function
the import itself runs (a table built at import, a parametrize list made by product code at
collection) is never active there and reads as survived or "no tests". The runner records which
functions run during import and collection (a fresh `pytest --collect-only` with the trampoline's
hit recorder patched) and runs each such mutant that did not die again in a fresh interpreter with
MUTANT_UNDER_TEST set, over all the fast tests.

Then a score per module (killed / all mutants; timeouts and crashes count as killed, "no tests"
as alive) and overall. Every mutant left alive must be answered in bench/mutmut_answers/<module>.txt
("<mutant name> <one-line reason it is equivalent>"); one that is killed by a test is not listed.
Exit 1 when the overall score is below --target (85%) or a live mutant has no answer; answers
naming mutants that no longer live are listed as stale (a warning: renumbered after a code change,
or now killed).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
VENV_PYTHON = CHECKOUT / ".venv" / "bin" / "python"
ANSWERS = CHECKOUT / "bench" / "mutmut_answers"  # one <module>.txt per short name
MUTMUT = "mutmut==3.8.1"

# Short name -> the module mutated. Their tests (FAST_TESTS, filtered by the hook) run in seconds.
MODULES = {
    "stats": "ops_tasks/operations/stats.py",
    "verdicts": "ops_tasks/verdicts.py",
    "validate": "ops_tasks/operations/validate.py",
    "costs": "ops_tasks/operations/costs.py",
    "placement": "ops_tasks/operations/placement.py",
    "secrets": "ops_tasks/secrets.py",
    "run_config": "ops_tasks/operations/run_config.py",
    "known_hosts": "ops_tasks/known_hosts.py",
    "report_html": "ops_tasks/operations/report_html.py",
    "contract": "ops_tasks/runtime/contract.py",
    "keys": "ops_tasks/runtime/keys.py",
    "ranking": "ops_tasks/operations/ranking.py",
}

# The test files that reach these modules; tests/test_promises_*.py (written for this runner) join
# them. The hook keeps only their fast tests; mutmut picks, per function, those that call it.
FAST_TESTS = [
    "tests/test_stats.py", "tests/test_report_numbers.py", "tests/test_report.py", "tests/test_report_filters.py",
    "tests/test_verdicts.py", "tests/test_run_states.py", "tests/test_validate.py",
    "tests/test_run_config.py", "tests/test_contract.py", "tests/test_runs_units.py", "tests/test_workloads.py",
    "tests/test_fleet_rebalance.py", "tests/test_placement.py", "tests/test_layers.py", "tests/test_fleet.py",
    "tests/test_costs.py", "tests/test_units.py", "tests/test_known_hosts.py", "tests/test_report_html.py",
    "tests/test_contract_rules.py",
    # issue 23: the power, multiplicity, equivalence and variance functions of stats.py, ranking.py,
    # and the report's readings that use them (report_html renders several of them)
    "tests/test_stats_power.py", "tests/test_stats_multi.py", "tests/test_stats_coverage.py", "tests/test_ranking.py",
    "tests/test_report_footing.py", "tests/test_report_clusters.py", "tests/test_report_coverage.py",
]
# Not meant for a mutant: a test of the tree's own source (it reads the mutated copy's files).
DESELECT = [
    # mutmut's rewritten copy imports mutmut: not the standard library, by design of the copy.
    "tests/test_contract.py::test_the_runtime_is_stdlib_only_relative_imports_and_python_3_8",
    # A test of the source's structure: mutmut's rewritten modules define x_<name>__mutmut_N
    # copies of every function, alike in two modules that each have a `_count`.
    "tests/test_contract.py::test_no_rule_shared_by_laptop_and_pod_is_written_twice",
    # A child process Ctrl-C'd while its threads run: under mutmut's stats pass (every call
    # recorded) the child passed its own 30 s deadline and stopped the whole run; it tests
    # fleet.py, none of the modules mutated here.
    "tests/test_fleet.py::test_ctrl_c_reaches_the_caller_at_once_starts_nothing_more_and_leaves_no_thread_to_wait_for",
]

KILLED = {"killed", "timeout", "segfault", "caught by type check"}
FRESH_TIMEOUT_S = 300

CONFTEST_HOOK = '''

# -- appended by bench/mutmut_fast.py to its temporary copy: only the tests needing no pod and no
# `ops` process run under mutmut (they run in-process, where mutmut sees what they call).
# `report_html` and `browser` (tests/test_report_html.py): `ops report` in a subprocess, then Chromium.
_MUTMUT_SLOW_FIXTURES = {"client", "pod", "pod_factory", "report_html", "browser"}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        slow = bool(_MUTMUT_SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
        slow = slow or any(str(mark.kwargs.get("reason", "")).startswith("needs root")
                           for mark in item.iter_markers("skipif"))
        (drop if slow else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
'''

# Appended after CONFTEST_HOOK, with the mutated modules' names. A worker forked from the parent
# inherits the lru caches the parent filled while the code was unmutated (stats.t_quantile,
# stats.mcnemar_critical): a mutant of a function they call would be read from the cache, never run.
CACHE_HOOK = '''

import sys as _mutmut_sys

import pytest as _mutmut_pytest

_MUTMUT_MUTATED_MODULES = {modules!r}


@_mutmut_pytest.fixture(autouse=True)
def _mutmut_caches_cleared():
    """Every functools cache of the mutated modules is emptied before each test: what a test reads
    from one, the active mutant computed."""
    for name in _MUTMUT_MUTATED_MODULES:
        module = _mutmut_sys.modules.get(name)  # not imported yet: nothing cached
        for value in list(vars(module).values()) if module else ():
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                value.cache_clear()
'''

# Run in a fresh interpreter in the copy: which mutated functions run during import and collection.
IMPORT_TIME_PROBE = '''
import json, os, sys
os.environ["MUTANT_UNDER_TEST"] = "stats"
sys.path.insert(0, os.path.abspath("mutants"))
import mutmut.mutation.trampoline as trampoline
hits = set()
trampoline.record_trampoline_hit = lambda name, caller=None: hits.add(name)
import pytest
os.chdir("mutants")
pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", *sys.argv[2:]])
open(sys.argv[1], "w").write(json.dumps(sorted(hits)))
'''

# Run in the copy: the diff of each named mutant, as `mutmut show` prints it.
DIFFS = '''
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.loads(open(sys.argv[1]).read())
out = {}
for name, path in names:
    try:
        out[name] = get_diff_for_mutant(name, path=path)
    except Exception as error:
        out[name] = f"(no diff: {error})"
open(sys.argv[2], "w").write(json.dumps(out))
'''


def ensure_mutmut(python: Path) -> None:
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('mutmut'))"],
                           capture_output=True, text=True)
    if probe.returncode == 0 and probe.stdout.strip() == MUTMUT.split("==")[1]:
        return
    print(f"installing {MUTMUT} into {python.parent.parent} (used only by this runner)", flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", MUTMUT], check=True)


def copy_checkout(destination: Path, head: bool) -> None:
    if head:
        destination.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=CHECKOUT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=CHECKOUT, capture_output=True, check=True).stdout
    for name in sorted({n for n in listed.decode().split("\0") if n}):
        source = CHECKOUT / name
        if not source.is_file():  # deleted in the working tree, not yet in the index
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def toml_list(values) -> str:
    return "[" + ", ".join(json.dumps(str(v)) for v in values) + "]"


def configure(copy: Path, modules: list, tests: list) -> None:
    pyproject = copy / "pyproject.toml"
    text = pyproject.read_text()
    if "[tool.mutmut]" in text:
        raise SystemExit("pyproject.toml already has a [tool.mutmut] section: this runner writes its own")
    also_copy = sorted(p.name for p in copy.iterdir() if p.name not in {"ops_tasks", "mutants", ".git"})
    args = ["-p", "no:cacheprovider"] + [f"--deselect={d}" for d in DESELECT]
    pyproject.write_text(text + "\n[tool.mutmut]\n"
                         f'source_paths = ["ops_tasks"]\n'
                         f"only_mutate = {toml_list(MODULES[m] for m in modules)}\n"
                         f"also_copy = {toml_list(also_copy)}\n"
                         f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
                         f"pytest_add_cli_args = {toml_list(args)}\n"
                         "use_git_change_detection = false\n")
    with open(copy / "tests" / "conftest.py", "a") as conftest:
        conftest.write(CONFTEST_HOOK + CACHE_HOOK.format(modules=sorted(module_name(m) for m in modules)))


def module_name(short: str) -> str:
    """'stats' -> 'ops_tasks.operations.stats', the dotted name mutmut's mutant names start with."""
    return MODULES[short][:-len(".py")].replace("/", ".")


def test_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "MUTANT_UNDER_TEST", "PYTHONPATH"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def read_results(copy: Path, modules: list) -> dict:
    """{module short name: {mutant name: status}} from mutmut's .meta files."""
    from_status = status_table(copy)
    results = {}
    for short in modules:
        meta = copy / "mutants" / (MODULES[short] + ".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
        results[short] = {name: from_status(code) for name, code in codes.items()}
    return results


def status_table(copy: Path):
    out = subprocess.run([str(VENV_PYTHON), "-c", "import json; from mutmut.stats import status_by_exit_code as s;"
                          "print(json.dumps({str(k): v for k, v in s.items()}))"],
                         cwd=copy, capture_output=True, text=True, check=True).stdout
    table = json.loads(out)
    return lambda code: table.get(str(code), "suspicious")


def function_of(mutant: str) -> str:
    """'ops_tasks.x.x_f__mutmut_3' -> 'ops_tasks.x.x_f' (mutmut's mangled function name)."""
    return mutant.rsplit("__mutmut_", 1)[0]


def import_time_functions(copy: Path, tests: list) -> set:
    out = copy / "import-time.json"
    subprocess.run([str(VENV_PYTHON), "-c", IMPORT_TIME_PROBE, str(out), *tests,
                    *[f"--deselect={d}" for d in DESELECT]],
                   cwd=copy, env=test_env(), capture_output=True, text=True, timeout=FRESH_TIMEOUT_S)
    if not out.exists():
        raise SystemExit("the import-time probe wrote nothing")
    return set(json.loads(out.read_text()))


def fresh_run(copy: Path, mutant: str, tests: list) -> bool:
    """True when the tests fail with the mutant active from the start (killed)."""
    env = test_env()
    env["MUTANT_UNDER_TEST"] = mutant
    env["PYTHONPATH"] = str(copy / "mutants")
    try:
        done = subprocess.run([str(VENV_PYTHON), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                               *[f"--deselect={d}" for d in DESELECT], *tests],
                              cwd=copy / "mutants", env=env, capture_output=True, text=True,
                              timeout=FRESH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return True
    return done.returncode not in (0, 5)


def diffs(copy: Path, wanted: list) -> dict:
    if not wanted:
        return {}
    names, out = copy / "diff-names.json", copy / "diffs.json"
    names.write_text(json.dumps(wanted))
    subprocess.run([str(VENV_PYTHON), "-c", DIFFS, str(names), str(out)], cwd=copy, env=test_env(),
                   capture_output=True, text=True)
    return json.loads(out.read_text()) if out.exists() else {}


def read_answers() -> dict:
    answers = {}
    for path in sorted(ANSWERS.glob("*.txt")):
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                answers[name] = reason.strip()
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(MODULES), help="only these (repeatable)")
    parser.add_argument("--target", type=float, default=85.0, help="least overall score, in %% (85)")
    parser.add_argument("--head", action="store_true", help="the last commit, not the working tree")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and say where")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--show", action="store_true", help="print the diff of every unanswered live mutant")
    options = parser.parse_args()
    modules = options.module or list(MODULES)

    ensure_mutmut(VENV_PYTHON)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ops-mutmut-"))
    copy = workdir / "checkout"
    try:
        copy_checkout(copy, options.head)
        tests = FAST_TESTS + sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("test_promises_*.py"))
        tests = [t for t in tests if (copy / t).exists()]
        configure(copy, modules, tests)
        env = test_env()
        print(f"mutmut over {len(modules)} module(s) in {copy}", flush=True)
        run = subprocess.run([str(VENV_PYTHON), "-m", "mutmut", "run", "--max-children", str(options.max_children)],
                             cwd=copy, env=env, capture_output=True, text=True)
        (workdir / "mutmut-run.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print((run.stdout + run.stderr)[-4000:])
            print(f"mutmut run failed (exit {run.returncode}); log: {workdir / 'mutmut-run.log'}")
            options.keep = True
            return 1
        results = read_results(copy, modules)
        first = {short: dict(statuses) for short, statuses in results.items()}

        # The fork pitfall: mutants of functions run at import or collection, again in a fresh process.
        at_import = import_time_functions(copy, tests)
        again = [(short, name) for short, statuses in results.items() for name, status in statuses.items()
                 if status not in KILLED and function_of(name) in at_import]
        if again:
            print(f"{len(again)} live mutant(s) of functions run at import time: again in fresh processes", flush=True)
            with ThreadPoolExecutor(max_workers=options.max_children) as pool:
                verdicts = list(pool.map(lambda pair: fresh_run(copy, pair[1], tests), again))
            for (short, name), killed in zip(again, verdicts):
                if killed:
                    results[short][name] = "killed"

        answers = read_answers()
        live = {name: (short, status) for short, statuses in results.items() for name, status in statuses.items()
                if status not in KILLED}
        unanswered = sorted(name for name in live if name not in answers)
        everyone = {name for statuses in results.values() for name in statuses}
        stale = sorted(name for name in answers
                       if name not in live and any(name.startswith(module_name(m) + ".") for m in modules))

        print(f"\n{'module':<12} {'killed':>7} {'total':>6} {'score':>7} {'(mutmut alone)':>15} {'live':>5} "
              f"{'answered':>9}")
        all_killed = all_total = 0
        for short in modules:
            statuses = results[short]
            total = len(statuses)
            killed = sum(1 for s in statuses.values() if s in KILLED)
            alone = sum(1 for s in first[short].values() if s in KILLED)
            alive = [n for n, s in statuses.items() if s not in KILLED]
            answered = sum(1 for n in alive if n in answers)
            all_killed += killed
            all_total += total
            share = 100.0 * killed / total if total else 100.0
            print(f"{short:<12} {killed:>7} {total:>6} {share:>6.1f}% {alone:>15} {len(alive):>5} {answered:>9}")
        overall = 100.0 * all_killed / all_total if all_total else 100.0
        print(f"{'overall':<12} {all_killed:>7} {all_total:>6} {overall:>6.1f}%   "
              f"(answers file: {len(answers)} line(s); {time.monotonic() - started:.0f} s)")

        if unanswered:
            print(f"\n{len(unanswered)} live mutant(s) without an answer in {ANSWERS.relative_to(CHECKOUT)}/<module>.txt:")
            shown = diffs(copy, [(n, MODULES[live[n][0]]) for n in unanswered]) if options.show else {}
            for name in unanswered:
                print(f"  {name}  ({live[name][1]})")
                if name in shown:
                    print("    " + "\n    ".join(shown[name].splitlines()[2:]))
        if stale:
            print(f"\nwarning: {len(stale)} answer(s) name no live mutant (renumbered, or killed now): "
                  + " ".join(stale[:20]) + (" ..." if len(stale) > 20 else ""))
        if not everyone:
            print("no mutants were made")
            return 1
        if overall < options.target:
            print(f"\nFAIL: {overall:.1f}% killed, below the {options.target:.0f}% target")
            return 1
        if unanswered:
            print("\nFAIL: live mutants without an answer")
            return 1
        print(f"\nOK: {overall:.1f}% killed (target {options.target:.0f}%), every live mutant answered")
        return 0
    finally:
        if options.keep:
            print(f"kept: {copy} (cd there; {VENV_PYTHON} -m mutmut show|apply NAME)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
