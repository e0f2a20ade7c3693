"""Rules the suite keeps about itself: under CI=true a skipped test fails with its reason
(elsewhere it stays a skip; the hook is in tests/conftest.py), and no test looks processes up
machine-wide."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING_TESTS = '''
import pytest

def test_runs():
    pass

def test_skips_in_its_body():
    pytest.skip("no IPv6 loopback here")

@pytest.mark.skipif(True, reason="needs root and unshare")
def test_skipped_by_marker():
    pass

@pytest.mark.xfail(reason="a known bug", strict=False)
def test_expected_failure():
    assert False
'''

SKIPPING_MODULE = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed", reason="the extra is not installed")

def test_never_collected():
    pass
'''


def run_pytest(tmp_path, ci, source=SKIPPING_TESTS):
    (tmp_path / "test_skipping.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "-c", os.devnull,
         "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def test_under_ci_every_skipped_test_is_a_failure_naming_its_reason(tmp_path):
    result = run_pytest(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    summary = result.stdout.splitlines()[-1]
    # A skipif marker skips at setup, so it fails there: an error rather than a failure.
    assert "1 failed, 1 passed, 1 xfailed, 1 error" in summary, result.stdout
    for reason in ("no IPv6 loopback here", "needs root and unshare"):
        assert f"skipped under CI=true, where every test must run: {reason}" in result.stdout, result.stdout


def test_under_ci_a_module_skipped_at_import_fails_the_run(tmp_path):
    result = run_pytest(tmp_path, "true", SKIPPING_MODULE)
    assert result.returncode != 0, result.stdout
    assert "skipped under CI=true" in result.stdout and "the extra is not installed" in result.stdout, result.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_skip_stays_a_skip(tmp_path, ci):
    result = run_pytest(tmp_path, ci)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in result.stdout.splitlines()[-1], result.stdout
    module = run_pytest(tmp_path, ci, SKIPPING_MODULE)
    assert module.returncode == 5 and "1 skipped" in module.stdout, module.stdout  # 5: no test ran


# ---------------------------------------------------------------- processes are the pod's own

# Process lookups that see the whole machine: another test's pod, or the developer's own work.
MACHINE_WIDE = re.compile(r"\b(pgrep|pkill|killall|pidof)\b|\bps\s+(-e|-A|aux|ax)\b")
# ...allowed only on a line that narrows them to the pod's own processes (its mount namespace).
NARROWED = re.compile(r"namespace_pids|\binside\b")


def test_no_test_looks_processes_up_machine_wide():
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if MACHINE_WIDE.search(line) and not NARROWED.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    assert found == [], "match the pod's own processes (SshPod.namespace_pids), not the machine's:\n" + "\n".join(found)
