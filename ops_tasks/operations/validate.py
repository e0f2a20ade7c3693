"""Validate a local root of run directories against the run artifact contract (docs/ARCHITECTURE.md).

A gate: every run directory directly under the root must hold the contract's files, its JSON
files must parse, its results.jsonl (when there is one) must parse line by line, and its summary
must not say `ok: false`. Dotfiles and entries that are not directories are not runs; a run's
earlier attempts (attempts/<n>/) are not looked at.

The readers (load_json, json_lines) are what validate and report both read a run's files with:
they refuse a file reached through a link out of its run directory (its folder), or that is not a
regular file (a FIFO would block), so no laptop file can leak into a report.
"""

import json
import os
import re
import stat
from pathlib import Path
from typing import Optional

from ..runtime.contract import MAX_JSON_BYTES, RECORD_DIR, attempt_number
from ..errors import ConfigError
from ..verdicts import UNFINISHED, UNREADABLE, Verdict, run_verdict

REQUIRED = ("command.sh", "run_metadata.json", "summary.json", "stdout.log")
JSON_FILES = ("run_metadata.json", "summary.json", "status.json")
RESULTS = "results.jsonl"
# The supervisor's own record of a run, where no script writes.
RECORD = (RECORD_DIR, "record.json")


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


class OutsideRunDir(OSError):
    """A run's file that is a link out of its run directory, or not a regular file."""


def _open_run_fd(path: str, dir_is_link: Optional[bool] = None, is_link: Optional[bool] = None) -> tuple:
    """(fd, size) of path open for reading under open_run_file's rules."""
    run_dir = os.path.dirname(os.path.abspath(path))
    if os.path.islink(run_dir) if dir_is_link is None else dir_is_link:
        raise OutsideRunDir("the run directory is a link: refused")
    flags = os.O_RDONLY | os.O_NONBLOCK
    if os.path.islink(path) if is_link is None else is_link:
        real_dir, real = os.path.realpath(run_dir), os.path.realpath(path)
        if os.path.commonpath([real_dir, real]) != real_dir:
            raise OutsideRunDir("a link leading out of its run directory: refused")
    else:
        flags |= os.O_NOFOLLOW
    fd = os.open(path, flags)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OutsideRunDir("not a regular file: refused")
    return fd, info.st_size


def open_run_file(path: str, *, dir_is_link: Optional[bool] = None, is_link: Optional[bool] = None):
    """path open for reading (binary), when reading it stays inside its run directory (the folder
    holding it, itself no link) and reaches a regular file; else OutsideRunDir naming why.

    The common case, a plain file, costs one lstat and an open that refuses a link swapped in
    meanwhile (O_NOFOLLOW); only a link is resolved, and kept when it stays inside. The type is
    read from the open file, so a FIFO is refused without blocking on it. dir_is_link and is_link,
    when a listing (RunListing) already knows them, save their lstat.
    """
    return os.fdopen(_open_run_fd(path, dir_is_link, is_link)[0], "rb")


def read_run_file(path: str, limit: Optional[int] = None, **known) -> bytes:
    """The whole of a run's file, under open_run_file's rules, without a file object: a report
    reads two small JSON files of each of thousands of runs. Past `limit` bytes: TooLarge."""
    fd, size = _open_run_fd(path, **known)
    if limit is not None and size > limit:
        os.close(fd)
        raise TooLarge(f"{size / 2**20:.0f} MiB: larger than the {limit // 2**20} MiB a run's JSON file may be; not read")
    try:
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        with os.fdopen(os.dup(fd), "rb") as rest:  # it grew since fstat: read on to its end
            return data + rest.read()
    finally:
        os.close(fd)


class TooLarge(ValueError):
    """A run's JSON file past contract.MAX_JSON_BYTES: the pod reads it as unreadable too."""


def load_json(path: str, run_id: str, file: str, **known):
    """(value, None), or (None, error dict) when the file cannot be read, does not parse (nested
    past what the parser takes, too), is larger than a run's JSON file may be, or lies outside its
    run directory (open_run_file, given what is `known` of it)."""
    try:
        data = read_run_file(path, MAX_JSON_BYTES, **known)
        return text_safe(json.loads(data), data), None
    except (OSError, ValueError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError, TooLarge
        return None, json_error(run_id, file, exc)
    except RecursionError:
        return None, json_error(run_id, file, ValueError("nested deeper than a JSON parser takes"))


# A surrogate as an escape, or as UTF-8 bytes (json.loads reads bytes with surrogatepass: b"\xed\xa0\x80").
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def text_safe(value, raw: bytes):
    """A parsed JSON value with every lone surrogate (JSON's "\\ud800", which no UTF-8 text holds)
    as U+FFFD: a pod's strings go into report.md, report.html and the terminal, where one would
    stop the report with an encoding error. Looked for only where the raw text may hold one: such
    an escape, a surrogate written as UTF-8 bytes, or a NUL byte (UTF-16 or UTF-32, which json.loads
    detects); a pair, as json.dumps writes an emoji, parses to one character and is left as it is."""
    if b"\0" not in raw and (b"\\u" not in raw and b"\xed" not in raw or not _SURROGATE_ESCAPE.search(raw)):
        return value
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    stack = [value] if isinstance(value, (dict, list)) else []  # in place, not recursive: JSON nests deeper
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if isinstance(node, dict):
            node.clear()
        for key, item in items:
            if isinstance(item, str):
                item = _LONE_SURROGATE.sub("\ufffd", item)
            elif isinstance(item, (dict, list)):
                stack.append(item)
            node[_LONE_SURROGATE.sub("\ufffd", key) if isinstance(key, str) else key] = item
    return value


class RunListing:
    """A run directory's entries, read once (one scandir): which files it has and what they are,
    without a stat per file; its files are loaded by open_run_file's rules. Reading 10,000 runs,
    the stats and lstats of one file at a time were a third of the time."""

    def __init__(self, path: str):
        self.path = path
        self.linked = os.path.islink(path)
        try:
            with os.scandir(path) as entries:
                self.entries = {entry.name: entry for entry in entries}
        except OSError:
            self.entries = {}

    def has(self, name: str) -> bool:
        return name in self.entries

    def is_file(self, name: str) -> bool:
        """A regular file, or a link to one (open_run_file judges where it leads)."""
        entry = self.entries.get(name)
        return entry is not None and entry.is_file()

    def load_json(self, name: str, run_id: str) -> tuple:
        """load_json of the entry name."""
        entry = self.entries.get(name)
        known = {"dir_is_link": self.linked, "is_link": entry.is_symlink()} if entry is not None else {}
        return load_json(os.path.join(self.path, name), run_id, name, **known)


def with_supervisor_record(metadata, path: str, run_id: str):
    """run_metadata.json as found (the script's own, or the supervisor's) with the supervisor's
    record of the run (.ops/record.json: its config, submission, attempt, times, GPUs, the
    replayable command) under `ops`, and who wrote each contract file under `files_written_by`.
    A record that is missing or unreadable adds nothing; metadata None and no record stay None."""
    value, error = load_json(os.path.join(path, *RECORD), run_id, "/".join(RECORD))
    if error is not None or not isinstance(value, dict):
        return metadata
    merged = dict(metadata) if isinstance(metadata, dict) else {}
    merged["ops"] = value
    files = value.get("files")
    if isinstance(files, dict):
        merged["files_written_by"] = {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}
    return merged


class BadJsonLine(ValueError):
    """A line of a JSON-lines file that is not JSON; .error is its error dict."""

    def __init__(self, error: dict):
        super().__init__(error["error"])
        self.error = error


def json_lines(path: str, run_id: str):
    """(line number, value) of each non-blank line of a JSON-lines file, one line in memory at a
    time; BadJsonLine at the first line that does not parse, or when the file lies outside its
    run directory (open_run_file)."""
    try:
        handle = open_run_file(path)
    except OutsideRunDir as exc:
        raise BadJsonLine(json_error(run_id, os.path.basename(path), exc)) from None
    with handle:
        for number, line in enumerate(handle, 1):
            try:
                value = _json_line(line)
            except ValueError as exc:
                raise BadJsonLine(json_error(run_id, RESULTS, exc, line=number)) from None
            if value is not _BLANK:
                yield number, value


_BLANK = object()
JSON_BLANKS = " \t\n\r"  # what JSON allows around a value (str.isspace allows more)
_raw_decode = json.JSONDecoder().raw_decode


def _json_line(line: bytes):
    """One line's JSON value (_BLANK for a blank line), as json.loads reads it; ValueError
    (JSONDecodeError, UnicodeDecodeError) when it is not one. The common line, a value and its
    newline, takes raw_decode alone: half the cost of json.loads, which a report pays per example;
    any other line gets json.loads' own answer and error."""
    try:
        text = line.decode()
        value, end = _raw_decode(text)
        if end == len(text) or not text[end:].strip(JSON_BLANKS):
            return text_safe(value, line)
    except ValueError:
        pass
    except RecursionError:
        raise ValueError("nested deeper than a JSON parser takes") from None
    if not line.strip():
        return _BLANK
    try:
        return text_safe(json.loads(line), line)
    except RecursionError:
        raise ValueError("nested deeper than a JSON parser takes") from None


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


def json_or_unreadable(listing: RunListing, name: str, run_id: str):
    """What run_verdict is given for a run's JSON file: its value, UNREADABLE when it is there but
    does not parse (or is no regular file), None when there is none."""
    if not listing.is_file(name):
        return UNREADABLE if listing.has(name) else None
    value, error = listing.load_json(name, run_id)
    return UNREADABLE if error else value


def listing_verdict(listing: RunListing, run_id: str) -> Verdict:
    """The verdict of one run directory, from its status.json and summary.json (verdicts.py)."""
    return run_verdict(json_or_unreadable(listing, "status.json", run_id),
                       json_or_unreadable(listing, "summary.json", run_id))


def dir_verdict(path: str, run_id: str) -> Verdict:
    return listing_verdict(RunListing(path), run_id)


def attempt_dirs(path: str) -> list:
    """[(attempt number, path)] of a run directory's earlier attempts (attempts/<n>/), newest first."""
    folder = os.path.join(path, "attempts")
    if not os.path.isdir(folder) or os.path.islink(folder):
        return []
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            number = attempt_number(entry.name)
            if number is not None and entry.is_dir(follow_symlinks=False):
                found.append((number, entry.path))
    return sorted(found, reverse=True)


def winning_attempt(path: str, run_id: str) -> tuple:
    """(directory, attempt number or None, verdict) that stands for a run: the latest attempt
    (the top of its directory) unless it did not succeed and an earlier attempt did, so a run id
    counts once, by its latest success. A latest attempt still queued or running stands itself
    (unfinished): a re-run in flight is not done, whatever an earlier attempt said."""
    verdict = dir_verdict(path, run_id)
    if verdict.ok or verdict.state == UNFINISHED:
        return path, None, verdict
    for number, attempt in attempt_dirs(path):
        earlier = dir_verdict(attempt, run_id)
        if earlier.ok:
            return attempt, number, earlier
    return path, None, verdict


def validate_root(root, run_ids=None) -> dict:
    """Check every run directory under root (or those of run_ids: one not there is missing);
    the result dict's `ok` is the gate: every run complete, readable, and succeeded."""
    root = checked_root(root)
    runs = run_dirs(root)
    complete, missing, invalid, failed, unfinished, earlier = [], {}, [], [], [], {}
    if run_ids is not None:
        present = dict(runs)
        runs = [(run_id, present[run_id]) for run_id in dict.fromkeys(run_ids) if run_id in present]
        missing.update({run_id: ["the run directory (not fetched)"] for run_id in run_ids if run_id not in present})
    for run_id, top in runs:
        path, attempt, verdict = winning_attempt(top, run_id)
        listing = RunListing(path)
        absent = [name for name in REQUIRED if not listing.is_file(name)]
        if absent:
            missing[run_id] = absent
        bad = []
        for name in JSON_FILES:
            if not listing.is_file(name):
                continue
            value, error = listing.load_json(name, run_id)
            if error:
                bad.append(error)
            elif name in ("summary.json", "run_metadata.json") and not isinstance(value, dict):
                bad.append({"run_id": run_id, "file": name, "line": 1, "column": 1,
                            "error": f"not a JSON object ({type(value).__name__})"})
        if listing.is_file(RESULTS):
            error = first_bad_line(os.path.join(path, RESULTS), run_id)
            if error:
                bad.append(error)
        invalid.extend(bad)
        if verdict.state == UNFINISHED:
            unfinished.append(run_id)
        if not verdict.ok:
            failed.append({"run_id": run_id, "state": verdict.state, "failure_class": verdict.failure_class,
                           "reason": verdict.reason})
        if not absent and not bad and verdict.ok:
            complete.append(run_id)
        if attempt:
            earlier[run_id] = attempt
    ok = bool(runs) and not missing and not invalid and not failed
    report = {"ok": ok, "root": str(root), "runs": len(runs), "complete": complete, "missing": missing,
              "invalid": invalid, "failed": failed, "unfinished": unfinished,
              "earlier_attempts": earlier}
    if not runs:
        report["error"] = (f"none of the {len(missing)} runs in scope is under {root} (not fetched?)" if missing
                           else "no run in scope: the submission names none" if run_ids is not None
                           else f"no run directories under {root}")
    return report
