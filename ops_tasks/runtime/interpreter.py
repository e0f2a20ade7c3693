"""The run's own python: run in the run's environment, asked once at start for its version and
the versions of the packages a report names (run_metadata.json).
"""

import json
import os
import re
import shlex
import shutil
import subprocess


PROBE_TIMEOUT_S = 10.0  # the run's interpreter asked for its version and packages
PACKAGES = ("torch", "vllm", "verifiers", "lm_eval", "transformers")  # versions in run_metadata


def run_python(entry, env):
    """The run's own interpreter: the command's first word when it is a python, else python3 on
    the run's PATH (its virtualenv's), else None."""
    try:
        words = [w for w in shlex.split(entry.get("command") or "") if not re.match(r"^[A-Za-z_]\w*=", w)]
    except ValueError:
        words = []
    if words and re.match(r"^python[\d.]*$", os.path.basename(words[0])):
        first = words[0]
        if "/" in first:
            return os.path.join(entry["cwd"], first) if not first.startswith("/") else first
        return shutil.which(first, path=env.get("PATH")) or first
    return shutil.which("python3", path=env.get("PATH"))


PROBE = r"""
import json, platform, sys
try:
    from importlib import metadata
except ImportError:
    metadata = None
versions = {}
for name in sys.argv[1:]:
    try:
        versions[name] = metadata.version(name.replace("_", "-")) if metadata else None
    except Exception:
        try:
            versions[name] = metadata.version(name)
        except Exception:
            pass
print(json.dumps({"executable": sys.executable, "version": platform.python_version(),
                  "implementation": platform.python_implementation(), "packages": versions}))
"""


def probe_interpreter(entry, env):
    """{executable, version, packages} of the run's python, asked in a subprocess in the run's
    environment (short timeout); {"error": why} when there is none or it does not answer."""
    python = run_python(entry, env)
    if not python:
        return {"error": "no python on the run's PATH"}
    try:
        done = subprocess.run([python, "-c", PROBE] + list(PACKAGES), cwd=entry["cwd"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              timeout=PROBE_TIMEOUT_S, universal_newlines=True)
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        return {"error": "%s did not answer: %s" % (python, exc)}
    return found if isinstance(found, dict) else {"error": "%s answered no object" % python}
