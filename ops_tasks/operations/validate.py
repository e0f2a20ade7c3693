"""Validate a local root of run directories against the run artifact contract (docs/ARCHITECTURE.md).

A gate: every run directory directly under the root must hold the contract's files, its JSON
files must parse, its results.jsonl (when there is one) must parse line by line, and its summary
must not say `ok: false`. Dotfiles and entries that are not directories are not runs; a run's
earlier attempts (attempts/<n>/) are not looked at.
"""

import json
import os
from pathlib import Path
from typing import Optional

from ..errors import ConfigError
from ..run_states import ACTIVE, FAILED

REQUIRED = ("command.sh", "run_metadata.json", "summary.json", "stdout.log")
JSON_FILES = ("run_metadata.json", "summary.json", "status.json")
RESULTS = "results.jsonl"


def checked_root(root) -> Path:
    """root as a Path, refused (exit 2, one line) when it is not an existing directory."""
    path = Path(root)
    if not path.exists():
        raise ConfigError(f"{path}: no such directory")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a directory")
    return path


def run_dirs(root: Path) -> list:
    """[(run_id, path)] of the run directories directly under root, sorted by run id."""
    found = []
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.name.startswith(".") and entry.is_dir():
                found.append((entry.name, entry.path))
    found.sort()
    return found


def json_error(run_id: str, file: str, exc: Exception, line: Optional[int] = None) -> dict:
    """{run_id, file, line, column, error} of a file that does not parse."""
    if isinstance(exc, json.JSONDecodeError):
        return {"run_id": run_id, "file": file, "line": line or exc.lineno, "column": exc.colno, "error": exc.msg}
    return {"run_id": run_id, "file": file, "line": line, "column": None, "error": str(exc)}


def load_json(path: str, run_id: str, file: str):
    """(value, None), or (None, error dict) when the file cannot be read or does not parse."""
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read()), None
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None, json_error(run_id, file, exc)


class BadJsonLine(ValueError):
    """A line of a JSON-lines file that is not JSON; .error is its error dict."""

    def __init__(self, error: dict):
        super().__init__(error["error"])
        self.error = error


def json_lines(path: str, run_id: str):
    """(line number, value) of each non-blank line of a JSON-lines file, one line in memory at a
    time; BadJsonLine at the first line that does not parse."""
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise BadJsonLine(json_error(run_id, RESULTS, exc, line=number)) from None
            yield number, value


def first_bad_line(path: str, run_id: str) -> Optional[dict]:
    """The first line of a JSON-lines file that is not a JSON object, as an error dict; None if all are.
    Blank lines are allowed."""
    try:
        for number, value in json_lines(path, run_id):
            if not isinstance(value, dict):
                return {"run_id": run_id, "file": RESULTS, "line": number, "column": 1,
                        "error": f"not a JSON object ({type(value).__name__})"}
    except BadJsonLine as bad:
        return bad.error
    except OSError as exc:
        return json_error(run_id, RESULTS, exc)
    return None


def failure_reason(summary: Optional[dict], status: Optional[dict]) -> Optional[str]:
    """Why a run counts as failed (its summary says ok: false, or the supervisor's status.json
    says it ended badly), else None."""
    status = status if isinstance(status, dict) else {}
    state = status.get("state")
    if isinstance(summary, dict) and summary.get("ok") is False:
        parts = ["summary.json says ok: false"]
        for key in ("state", "failure_class", "exit_code", "error"):
            value = summary.get(key, status.get(key))
            if value not in (None, ""):
                parts.append(f"{key} {value}")
        return ", ".join(parts)
    if state in FAILED:  # a cancelled run is no success either: the gate fails on it
        klass = status.get("failure_class")
        return f"status.json says state {state}" + (f", failure_class {klass}" if klass else "")
    return None


def validate_root(root) -> dict:
    """Check every run directory under root; the result dict's `ok` is the gate."""
    root = checked_root(root)
    runs = run_dirs(root)
    complete, missing, invalid, failed, unfinished = [], {}, [], [], []
    for run_id, path in runs:
        absent = [name for name in REQUIRED if not os.path.isfile(os.path.join(path, name))]
        if absent:
            missing[run_id] = absent
        parsed, bad = {}, []
        for name in JSON_FILES:
            file_path = os.path.join(path, name)
            if name in absent or not os.path.isfile(file_path):
                continue
            value, error = load_json(file_path, run_id, name)
            if error:
                bad.append(error)
            elif name in ("summary.json", "run_metadata.json") and not isinstance(value, dict):
                bad.append({"run_id": run_id, "file": name, "line": 1, "column": 1,
                            "error": f"not a JSON object ({type(value).__name__})"})
            else:
                parsed[name] = value
        results = os.path.join(path, RESULTS)
        if os.path.isfile(results):
            error = first_bad_line(results, run_id)
            if error:
                bad.append(error)
        invalid.extend(bad)
        status = parsed.get("status.json")
        if isinstance(status, dict) and status.get("state") in ACTIVE:
            unfinished.append(run_id)
        reason = failure_reason(parsed.get("summary.json"), status)
        if reason:
            failed.append({"run_id": run_id, "reason": reason})
        if not absent and not bad and not reason:
            complete.append(run_id)
    ok = bool(runs) and not missing and not invalid and not failed
    report = {"ok": ok, "root": str(root), "runs": len(runs), "complete": complete, "missing": missing,
              "invalid": invalid, "failed": failed, "unfinished": unfinished}
    if not runs:
        report["error"] = f"no run directories under {root}"
    return report
