"""Artifact operations: archive raw eval files into run directories on the pod, and fetch run
directories to the laptop, recording what was fetched.

Fetching: the system's rsync over OpenSSH with the connection's own parameters, one connection
for all the runs (incremental: unchanged files are not sent; resumable: partial files are kept in
.rsync-partial). Where rsync is missing on either side: a listing, then one tar stream over the
connection, checked member by member before anything is extracted.

Both planes keep the same things (docs/ARCHITECTURE.md, "Fetched run directories"): regular
files, directories, and links that stay inside their run directory. Links leading out, devices,
FIFOs and sockets are dropped and named in a warning. A local run directory mirrors the pod's
(files the pod no longer has are removed), except what --exclude/--include left on the pod.
"""

import fnmatch
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from ..errors import ConfigError, HostError, OpsError
from ..records import claim_fetch, fetch_origin, fetched_from, host_fields, release_fetch_claim, save_fetch_record
from ..scripts import parse_document, render_script
from ..targets import RSYNC_PATH, ConnectionLost, NoAnswer, StartMark

Progress = Optional[Callable[[int, int], None]]  # (bytes done, bytes in all)
_PROGRESS2 = re.compile(rb"^\s*([\d,]+)\s+(\d+)%")
_STATS = {
    "files": re.compile(r"Number of regular files transferred: ([\d,]+)"),
    "bytes": re.compile(r"Total transferred file size: ([\d,]+)"),
    "literal_bytes": re.compile(r"Literal data: ([\d,]+)"),
}


# ---------------------------------------------------------------- archive


def archive_runs(target, *, runs: list, patterns, outputs_dir: str) -> dict:
    """Move <volume>/<pattern> files into the runs' directories (one round trip)."""
    profile = target.profile
    script = render_script("artifacts_archive.sh", volume=profile.volume, outputs_dir=outputs_dir,
                           patterns=list(patterns),
                           run_ids=[r["run_id"] for r in runs], run_dirs=[r["run_dir"] for r in runs])
    facts = parse_document(target.run_script(script), profile.label, "artifacts_archive.sh")
    report = {"ok": not facts["missing"], "host": profile.name, "patterns": list(patterns),
              "moved": facts["moved"], "left": facts["left"], "missing": facts["missing"]}
    if facts["missing"]:
        dirs = {r["run_id"]: r["run_dir"] for r in runs}
        report["error"] = f"{profile.label}: no run directory for " + ", ".join(
            f"{run_id} ({dirs[run_id]})" for run_id in facts["missing"])
    return report


# ---------------------------------------------------------------- fetch


def list_remote(target, *, dirs: list, outputs_dir: str, all_runs: bool = False, filters=None) -> dict:
    """Files and bytes of each run directory; `filters` ({run_dir: {"include", "exclude"}}) counts
    only what a fetch with those patterns takes."""
    filters = filters or {}
    script = render_script("artifacts_list.sh", outputs_dir=outputs_dir, dirs=dirs, all=all_runs,
                           filter_dirs=list(filters),
                           filter_includes=["\n".join(f.get("include") or []) for f in filters.values()],
                           filter_excludes=["\n".join(f.get("exclude") or []) for f in filters.values()])
    return parse_document(target.run_script(script), target.profile.label, "artifacts_list.sh")


# ---------------------------------------------------------------- what a fetch takes


def checked_patterns(flag: str, patterns) -> list:
    """--include/--exclude values: names (globs) of files or directories, matched at any depth
    the same way by rsync, find on the pod and the laptop; a path, a newline or nothing is refused."""
    checked = []
    for pattern in patterns or []:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ConfigError(f"{flag}: expected a file name pattern such as '*.pt', got {pattern!r}")
        if "/" in pattern or "\n" in pattern or "\0" in pattern:
            raise ConfigError(f"{flag} {pattern!r}: a pattern names a file or directory (e.g. '*.pt'), "
                              f"not a path: no '/', no newline")
        checked.append(pattern)
    return checked


def taken(parts, include: list, exclude: list) -> bool:
    """Does a fetch with these patterns take the file at these path parts (inside its run
    directory)? Not when it, or a directory above it, matches an exclude and no include."""
    for name in parts:
        if any(fnmatch.fnmatchcase(name, p) for p in exclude) and not any(
                fnmatch.fnmatchcase(name, p) for p in include):
            return False
    return True


def link_leaves_run(link_path: PurePosixPath, target: str) -> bool:
    """Could a symlink at link_path (relative to its run directory) lead out of it? Yes when its
    target is absolute, climbs above the run's top, or has a `..` after a named part (the named
    part may itself be a link, so only leading `..` can be judged from the text)."""
    path = PurePosixPath(target)
    if not target or path.is_absolute():
        return True
    parts = path.parts
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    return ".." in parts[ups:] or ups > len(link_path.parts) - 1


def fetch_runs(target, *, runs: list, outputs_dir: str, local_root: Path, records_dir: Path,
               all_runs: bool = False, bwlimit: Optional[int] = None, on_progress: Progress = None,
               include=(), exclude=(), replace: bool = False) -> dict:
    """Fetch run directories into local_root/<run_id>/; record each fetch in records_dir.

    Named runs: rsync goes first, alone (one OpenSSH connection, no listing round trip). --all
    lists the pod's run directories first: only what is on the pod is fetched and recorded.
    Where rsync is missing (here, or on the pod): a listing and a tar stream over the connection.
    include/exclude: name patterns (checked_patterns) of what stays on the pod; include wins.

    What the laptop holds is never replaced unasked (`_clashes`): a run folder holding another
    host's copy of the run is refused unless `replace` (this host's copy wins); a file or link of
    the user's where a run folder goes, always. Named runs are refused before any contact
    (ConfigError, nothing fetched); each run is claimed in the records before anything is written
    into its folder (`claim`), which with --all is where a clash is found, the others fetched.
    """
    profile = target.profile
    chosen = {"include": list(include), "exclude": list(exclude)}
    local_root = Path(local_root)
    if local_root.exists() and not local_root.is_dir():
        raise ConfigError(f"--local-root {_shown(local_root)} is not a folder")
    origin = {**host_fields(profile), "destination": profile.destination}
    started = time.monotonic()
    refused = []
    if all_runs:
        listing = list_remote(target, dirs=[], outputs_dir=outputs_dir, all_runs=True)
        runs = [{"run_id": PurePosixPath(e["dir"]).name, "run_dir": e["dir"]} for e in listing["runs"]]
        if not runs:
            return {"ok": False, "host": profile.name, "local_root": str(local_root), "runs": [], "missing": [],
                    "error": f"{profile.label}: no run directories under {outputs_dir}"}
    else:  # named runs: refused before any contact (--all's are, by the claim, once listed)
        clashes = _clashes(runs, local_root, records_dir, origin, replace)
        if clashes:
            raise ConfigError(_refusal(clashes, profile.name, "nothing fetched"))

    def claim(entries: list) -> list:
        """The entries this fetch may write, each noted in the records as coming from this host
        first; one another fetch claimed meanwhile (a fleet's other pod, another `ops`) is refused."""
        mine = []
        for entry in entries:
            local = local_root / entry["run_id"]
            claimed, current = claim_fetch(
                records_dir, entry["run_id"], local, dict(origin, remote_dir=entry["run_dir"]),
                lambda now: _clash(now, local, origin, entry["run_dir"], replace) is not None)
            if claimed:
                mine.append(entry)
            else:
                refused.append({"run_id": entry["run_id"], "local_dir": str(local),
                                "why": _clash(current, local, origin, entry["run_dir"], replace)})
        return mine

    method, moved, missing, warnings = "rsync", None, [], []
    if shutil.which("rsync"):
        try:
            moved, missing, warnings = _rsync(target, runs, local_root, bwlimit, on_progress, chosen, claim)
        except RemoteRsyncMissing:
            method = "tar"
    else:
        method = "tar"
    if method == "tar":
        dirs = [r["run_dir"] for r in runs]
        listing = list_remote(target, dirs=dirs, outputs_dir=outputs_dir,
                              filters={d: chosen for d in dirs} if chosen["exclude"] else None)
        sizes = {e["dir"]: e["bytes"] for e in listing["runs"] if e["exists"]}
        missing = [r for r in runs if r["run_dir"] not in sizes]
        found = claim([dict(r, bytes=sizes[r["run_dir"]]) for r in runs if r["run_dir"] in sizes])
        moved = {"files": 0, "bytes": 0, "literal_bytes": 0}
        if found:
            moved, warnings = _tar_fetch(target, found, local_root, on_progress, chosen)
    gone = {m["run_dir"] for m in missing}
    for entry in missing:
        release_fetch_claim(records_dir, entry["run_id"], local_root / entry["run_id"])
    kept_out = {c["run_id"] for c in refused}
    present = [r for r in runs if r["run_dir"] not in gone and r["run_id"] not in kept_out]
    fetched = _record_fetches(records_dir, profile, present, local_root, method, chosen)
    report = {
        "ok": not missing and not refused, "host": profile.name, "method": method, "local_root": str(local_root),
        "seconds": round(time.monotonic() - started, 3), "runs": fetched, "transferred": moved,
        "missing": [{"run_id": m["run_id"], "remote_dir": m["run_dir"]} for m in missing], "warnings": warnings,
        **{key: value for key, value in chosen.items() if value},
    }
    errors = []
    if missing:
        errors.append(f"{profile.label}: no run directory " + ", ".join(m["run_dir"] for m in missing) + (
            f" (the other {len(present)} fetched)" if present else ""))
    if refused:
        report["refused"] = [{k: c[k] for k in ("run_id", "local_dir")} for c in refused]
        errors.append(_refusal(refused, profile.name, f"not fetched (the other {len(present)} fetched)"
                               if present else "nothing fetched"))
    if errors:
        report["error"] = "; ".join(errors)
    return report


# ---------------------------------------------------------------- what the laptop already holds


def _clashes(runs: list, local_root: Path, records_dir: Path, origin: dict, replace: bool) -> list:
    """The runs this fetch must not write, each with why: [{run_id, local_dir, why}]."""
    found = []
    for run in runs:
        local = local_root / run["run_id"]
        why = _clash(fetch_origin(records_dir, run["run_id"], local), local, origin, run["run_dir"], replace)
        if why is not None:
            found.append({"run_id": run["run_id"], "local_dir": str(local), "why": why})
    return found


def _clash(current: Optional[dict], local: Path, origin: dict, run_dir: str, replace: bool) -> Optional[dict]:
    """Why local (a run's folder) must not take this host's copy of the run, or None.

    {"user": ...}: a file or a link is there (the user's own: no fetch makes one), never replaced,
    never written through, whatever `replace` says. {"copy": origin}: its recorded origin is
    another host (or run directory), and the folder holds that copy's files, or that fetch is
    still going (its pid alive): refused unless replace. A folder no fetch recorded, or emptied
    since, is taken as it is."""
    if local.is_symlink():
        return {"user": f"{_shown(local)} is a link (to {os.readlink(local)}), not a run folder a fetch made"}
    if local.exists() and not local.is_dir():
        return {"user": f"{_shown(local)} is a file, not a run folder a fetch made"}
    if replace or current is None:
        return None
    same_dir = posixpath.normpath(current.get("remote_dir") or "") == posixpath.normpath(run_dir)
    if fetched_from(current, origin["host_id"], origin["destination"]) and same_dir:
        return None
    going = current.get("fetched_at") is None and isinstance(current.get("pid"), int) and _alive(current["pid"])
    return {"copy": current} if going or _holds_files(local) else None


def _holds_files(local: Path) -> bool:
    """Does the run folder hold anything but rsync's partial folder?"""
    try:
        with os.scandir(local) as entries:
            return any(entry.name != PARTIAL_DIR for entry in entries)
    except OSError:
        return False


def _refusal(clashes: list, host: str, outcome: str) -> str:
    """One line: each refused run and why, what came of it, and the ways on."""
    reasons, ways = [], []
    for clash in clashes:
        why = clash["why"]
        if "user" in why:
            reasons.append(why["user"])
        else:
            was = why["copy"]
            state = "fetched" if was.get("fetched_at") is not None else "being fetched (not finished)"
            reasons.append(f"{_shown(Path(clash['local_dir']))} holds run {clash['run_id']} as {state} from "
                           f"{was.get('host')} ({was.get('host_id') or was.get('destination')}, {was.get('remote_dir')})")
    if any("copy" in c["why"] for c in clashes):
        ways.append(f"fetching {host}'s copy would replace it: keep both with --local-root DIR (a folder of its "
                    f"own for {host}'s copy), or let {host}'s copy win with --replace")
    if any("user" in c["why"] for c in clashes):
        ways.append("nothing of yours is replaced or written through: move it away, or fetch into another "
                    "--local-root")
    return f"{'; '.join(reasons)}: refused, {outcome}; {'; '.join(ways)}"


def _shown(path: Path) -> str:
    """A local path as people read it: relative to the current folder when inside it."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class RemoteRsyncMissing(Exception):
    """The pod has no rsync: the caller falls back to a tar stream."""


_MISSING_SOURCE = re.compile(r'(?:change_dir|link_stat) "([^"]+)" failed: No such file or directory')
# rsync's closing lines, which follow any error and name no file of their own.
_RSYNC_SUMMARY = re.compile(r"^rsync (error|warning):|^rsync: \[generator\]|^\s*$|^Warning: Permanently added")


_DROPPED_BY_RSYNC = re.compile(
    r'^(?:\S+ \S+ \[\d+\] )?(?:ignoring unsafe symlink "(.*?)" -> "|skipping non-regular file "(.*)"$)')
PARTIAL_DIR = ".rsync-partial"  # where rsync keeps an interrupted file, for the next fetch to resume


def rsync_over_ssh(target, rsync_path: str = RSYNC_PATH) -> tuple:
    """How rsync reaches target: (its options, the host as rsync names it, how long its remote
    command may take to start); ([], None, None) on this machine. The system ssh with the
    connection's own parameters (-e), and a remote command (--rsync-path) that prints the start
    mark first (targets.after_start_mark)."""
    options, host, start_s = [], None, None
    if not target.profile.is_local:
        ssh = target.openssh_command()
        host = ssh[-1] if ":" not in ssh[-1] else f"[{ssh[-1]}]"
        # The remote command says when the login shell is through (a ~/.bashrc that hangs only
        # sshd's keepalives would answer for): run_rsync waits for that mark so long only.
        options = ["-e", shlex.join(ssh[:-1]), f"--rsync-path={rsync_path}"]
        start_s = getattr(target, "bulk_start_s", None)
    return options, host, start_s


def _rsync(target, runs: list, local_root: Path, bwlimit, on_progress: Progress, chosen: dict,
           claim: Callable[[list], list]) -> tuple:
    """rsync the run directories: one connection for those named by their run id (the usual
    layout), one more for each run directory named otherwise. (stats, missing runs, warnings).

    As strict as the tar stream: no devices or specials, no link leading out of the transfer
    (--safe-links, enforced by the receiver, here), then _sweep for links to a sibling run;
    --delete inside each run directory, so stale files of an earlier attempt do not linger.
    rsync names what it skipped in a log file of its own (stdout is its stats and progress).
    Each batch's runs are claimed (`claim`) once the command is about to run, never in a dry run."""
    options = ["rsync", "-a", "--no-devices", "--no-specials", "--safe-links", "--delete", "--partial",
               f"--partial-dir={PARTIAL_DIR}", "--stats", "--info=name1", "--log-file-format="]
    if on_progress is not None:
        options += ["--info=progress2", "--no-inc-recursive"]  # a whole-transfer total, for the ETA
    if bwlimit:
        options.append(f"--bwlimit={bwlimit}")
    transport, host, start_s = rsync_over_ssh(target)
    options += transport
    remote = host is not None
    plain = [r for r in runs if PurePosixPath(r["run_dir"]).name == r["run_id"]]
    custom = [r for r in runs if r not in plain]
    # The run directories themselves are always taken: a pattern matches what is inside them.
    options += [f"--include=/{r['run_id']}/" for r in plain]
    options += [f"--include={p}" for p in chosen["include"]] + [f"--exclude={p}" for p in chosen["exclude"]]
    # Plain ones: each directory lands under its own name; custom ones: their contents into <run_id>/.
    batches = ([(plain, str(local_root) + "/", "")] if plain else []) + [
        ([r], str(local_root / r["run_id"]) + "/", "/") for r in custom]
    # rsync's log of what it skipped: a dotfile beside the run directories (not a run), made
    # only once rsync runs, so a dry run writes nothing.
    log = local_root / f".rsync-{os.getpid()}-{threading.get_native_id()}.log"  # pods fetch at once

    def command(entries: list, dest: str, trailing: str) -> list:
        sources = [e["run_dir"].rstrip("/") + trailing for e in entries]
        if remote:
            sources = [f"{host}:{sources[0]}"] + [f":{s}" for s in sources[1:]]
        return options + [f"--log-file={log}"] + sources + [dest]

    moved = {"files": 0, "bytes": 0, "literal_bytes": 0}
    missing, warnings = [], []
    for entries, dest, trailing in batches:
        target.before_command(command(entries, dest, trailing))  # a dry run records the command and stops here
        # Only now: a dry run stops before it, and must leave no folder behind.
        local_root.mkdir(parents=True, exist_ok=True)
        _clear_leftovers(local_root)
        entries = claim(entries)
        if not entries:
            continue
        folders = [local_root / e["run_id"] for e in entries]
        try:
            stats, absent, warning = run_rsync(command(entries, dest, trailing), on_progress,
                                               label=target.profile.label, start_s=start_s)
            skipped = _skipped_by_rsync(log)
        except BaseException:
            _remove_empty_partials(folders)  # what is in them is kept: the next fetch resumes from it
            raise
        finally:
            log.unlink(missing_ok=True)
        missing += [e for e in entries if e["run_dir"].rstrip("/") in absent]
        warnings += [warning] if warning else []
        gone = {e["run_dir"].rstrip("/") for e in missing}
        runs_here = [e for e in entries if e["run_dir"].rstrip("/") not in gone]
        prefix = {e["run_id"]: (e["run_id"] + "/" if trailing == "" else "") for e in runs_here}
        dropped = []
        for entry in runs_here:
            run_local = local_root / entry["run_id"]
            mine = [name[len(prefix[entry["run_id"]]):] for name in skipped
                    if name.startswith(prefix[entry["run_id"]])]
            if run_local.is_symlink():  # the pod's run directory was itself a link: made just now
                run_local.unlink()
                dropped.append(entry["run_id"])
                continue
            dropped += [f"{entry['run_id']}/{name}" for name in _sweep(run_local, mine)]
        if dropped:
            warnings.append(_dropped_warning(dropped))
        for key in moved:
            moved[key] += stats[key]
    return moved, missing, warnings


_LEFTOVER = re.compile(r"^\.rsync-(\d+)-\d+\.log$|^\.tar-(\d+)-")


def _clear_leftovers(local_root: Path) -> None:
    """Remove what a fetch killed outright left beside the run folders (its rsync log, its tar
    folder): those of processes that are gone. Only these names of ours; links never followed."""
    with os.scandir(local_root) as entries:
        for entry in entries:
            match = _LEFTOVER.match(entry.name)
            if match is None or _alive(int(match.group(1) or match.group(2))):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_empty_partials(folders: list) -> None:
    """After an interrupted rsync: its partial folders that hold nothing to resume from."""
    for folder in folders:
        if not folder.is_dir() or folder.is_symlink():
            continue
        for path in [folder / PARTIAL_DIR, *folder.rglob(PARTIAL_DIR)]:
            if path.is_dir() and not path.is_symlink():
                try:
                    path.rmdir()  # only when empty
                except OSError:
                    pass


def _skipped_by_rsync(log: Path) -> list:
    """Paths (relative to the destination) that rsync's receiver refused: unsafe links, devices,
    specials. rsync writes a name's unprintable bytes as \\#ooo (octal)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return []
    names = []
    for line in text.splitlines():
        match = _DROPPED_BY_RSYNC.match(line)
        if match:
            name = match.group(1) if match.group(1) is not None else match.group(2)
            names.append(re.sub(r"\\#([0-7]{3})", lambda m: chr(int(m.group(1), 8)), name))
    return names


def _sweep(run_local: Path, skipped: list) -> list:
    """Make a fetched run directory hold only what both planes keep: remove links that could lead
    out of it (to a sibling run, say: --safe-links judges the whole transfer), anything neither
    file, directory nor link, and a stale local entry where the pod's was refused; and rsync's
    partial folders, stale once a transfer ended (what it resumed from is gone from them). The
    names (relative to the run directory) of what the pod had and the laptop does not keep."""
    dropped = []
    for name in skipped:
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            continue  # rsync's word about a path outside this run: nothing of ours to touch
        dropped.append(str(rel))
        _remove(run_local / rel)
    if run_local.is_dir() and not run_local.is_symlink():
        dropped += _sweep_folder(str(run_local), PurePosixPath())
    return dropped


def _sweep_folder(folder: str, rel: PurePosixPath) -> list:
    """_sweep's walk: scandir's entry types (no stat per file), links never followed."""
    dropped = []
    with os.scandir(folder) as entries:
        for entry in entries:
            path = rel / entry.name
            if entry.is_symlink():
                unsafe = link_leaves_run(path, os.readlink(entry.path))
            elif entry.name == PARTIAL_DIR and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
                continue
            elif entry.is_dir(follow_symlinks=False):
                dropped += _sweep_folder(entry.path, path)
                continue
            else:
                unsafe = not entry.is_file(follow_symlinks=False)
            if unsafe:
                os.unlink(entry.path)
                dropped.append(str(path))
    return dropped


def _remove(path: Path) -> None:
    """Remove a local entry of any kind, never following a link."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _dropped_warning(dropped: list) -> str:
    shown = ", ".join(json.dumps(name) for name in dropped[:20])
    more = f" and {len(dropped) - 20} more" if len(dropped) > 20 else ""
    return (f"not fetched: {len(dropped)} link(s) leading out of their run directory, device(s), "
            f"FIFO(s) or socket(s): {shown}{more}")


def run_rsync(argv: list, on_progress: Progress, label: str = "localhost", start_s: Optional[float] = None) -> tuple:
    """Run rsync; (its --stats, the source directories that do not exist, a warning or None).

    start_s: how long its remote command may take to start (RSYNC_PATH's mark): a login shell
    that hangs ends it as NoAnswer, naming the pod and how to pick up again."""
    session = _RsyncSession(argv, start_s)
    proc = session.guard
    out = bytearray()
    try:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            out += chunk
            if on_progress is not None:
                _report_progress(chunk, on_progress)
        proc.wait()
    except BaseException:
        session.stop()  # Ctrl-C: rsync keeps what it has in .rsync-partial, for the next fetch to resume
        raise
    err = session.end()
    if session.late:
        raise NoAnswer(f"no answer from {label} within {start_s:g} s: the login shell did not start rsync (a "
                       f"~/.bashrc that waits, such as a conda or module init on a network file system?) or the "
                       f"host stopped answering; fetch again once it answers: it resumes where it stopped")
    absent = {path.rstrip("/") for path in _MISSING_SOURCE.findall(err)}
    if proc.returncode in (12, 127) and ("command not found" in err or "rsync: not found" in err):
        raise RemoteRsyncMissing()
    other_errors = [line for line in err.splitlines()
                    if not _MISSING_SOURCE.search(line) and not _RSYNC_SUMMARY.search(line)]
    warning = None
    if proc.returncode == 24:
        # Files that vanished while being sent (temp files of runs still going): not a failure.
        warning = "some files vanished during the transfer (a run still writing?): fetch again when it ends"
    elif proc.returncode == 23 and absent and not other_errors:
        pass  # only missing run directories: reported as missing, the others were fetched
    elif proc.returncode in RSYNC_LINK_EXITS:
        raise _link_failure(err, label)
    elif proc.returncode != 0:
        detail = (other_errors or err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise HostError(f"rsync failed (exit {proc.returncode}): {detail}")
    text = out.decode(errors="replace")
    stats = {key: int(m.group(1).replace(",", "")) if (m := pattern.search(text)) else 0
             for key, pattern in _STATS.items()}
    return stats, absent, warning


# rsync never outlives the fetch that started it, however that fetch ends (Ctrl-C, a deadline,
# SIGKILL): it runs under this guard, in a session of its own with its ssh. The guard stops them
# once its stdin ends: when the fetch closes it, or dies. TERM first (rsync keeps its partial
# file), then the rest of the group (an ssh waiting on a login that hangs outlives its rsync).
_GUARD = """
import os, signal, subprocess, sys, threading
rsync = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL)
def stop():
    while os.read(0, 4096):
        pass
    rsync.terminate()
    try:
        rsync.wait(5)
    except subprocess.TimeoutExpired:
        rsync.kill()
threading.Thread(target=stop, daemon=True).start()
code = rsync.wait()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.killpg(0, signal.SIGTERM)
os._exit(code if code >= 0 else 128 - code)
"""


class _RsyncSession:
    """One rsync under its guard: stderr read on its own thread (rsync blocks once a pipe we do
    not read fills up), RSYNC_PATH's mark cut out of it, and the start's deadline kept."""

    def __init__(self, argv: list, start_s: Optional[float]):
        self.guard = subprocess.Popen([sys.executable, "-I", "-S", "-c", _GUARD, *argv], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.mark = StartMark() if start_s else None
        self.err = bytearray()
        self.late = False
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name="rsync-stderr", daemon=True)
        self.reader.start()
        self.timer = threading.Timer(start_s, self._too_late) if start_s else None
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()

    def _read(self) -> None:
        for chunk in iter(lambda: self.guard.stderr.read1(65536), b""):
            if self.mark is not None:
                chunk = self.mark.feed(chunk)
                if self.mark.found and self.timer is not None:
                    self.timer.cancel()
            self.err += chunk

    def _too_late(self) -> None:
        if not self.mark.found:
            self.late = True
            self.release()

    def release(self) -> None:
        """The guard's stdin ends: it stops rsync, if rsync still runs."""
        with self.lock:
            if not self.guard.stdin.closed:
                self.guard.stdin.close()

    def stop(self) -> None:
        self.release()
        try:
            self.guard.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.guard.pid, signal.SIGKILL)
            self.guard.wait()
        self.end()

    def end(self) -> str:
        """rsync's stderr, the mark cut out (what came before a mark that never came kept)."""
        if self.timer is not None:
            self.timer.cancel()
        self.release()
        self.reader.join(timeout=10)
        pending = bytes(self.mark.pending) if self.mark is not None and not self.mark.found else b""
        return (bytes(self.err) + pending).decode(errors="replace")


REMOTE_REFUSAL = "ops-tasks refused:"  # how a remote command of ours that says no begins its line
RSYNC_LINK_EXITS = (12, 255)  # the stream to the pod broke, or ssh itself failed
# What rsync and OpenSSH's banners add around ssh's own reason.
_NOT_SSH_REASON = re.compile(r"^@|^\s*$|^rsync[:\s]|^Warning: Permanently added")


def _link_failure(err: str, label: str) -> Exception:
    """OpenSSH's own reason, which rsync passes through on its stderr, instead of rsync's
    "connection unexpectedly closed": a changed host key, a refused key, a name that does not
    resolve; no reason from ssh is a connection lost during the transfer."""
    lines = [line.strip() for line in err.splitlines() if not _NOT_SSH_REASON.search(line.strip())]
    refusal = next((line for line in lines if line.startswith(REMOTE_REFUSAL)), None)
    if refusal:  # our own remote command (an --rsync-path) said no before rsync started
        return HostError(f"{label}: {refusal[len(REMOTE_REFUSAL):].strip()}")
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
        offending = next((line for line in lines if line.startswith("Offending")), "")
        forget = next((line for line in lines if line.startswith("ssh-keygen")), "")
        return HostError(f"{label}: ssh refused the pod: its host key has CHANGED (REMOTE HOST IDENTIFICATION HAS "
                         f"CHANGED; {offending}); if the pod was re-created, forget the old key with: {forget}")
    if not lines:
        return ConnectionLost(f"connection to {label} lost during the fetch; fetch again: it resumes where it stopped")
    reason = lines[-1]
    if "Could not resolve hostname" in reason:
        return ConfigError(f"{label}: {reason}")
    return HostError(f"{label}: ssh could not connect for rsync: {reason}")


def _report_progress(chunk: bytes, on_progress) -> None:
    """progress2 lines: bytes so far and a percentage of the whole, hence the total."""
    for piece in re.split(rb"[\r\n]", chunk):
        match = _PROGRESS2.match(piece)
        if match:
            done = int(match.group(1).replace(b",", b""))
            percent = int(match.group(2))
            on_progress(done, done * 100 // percent if percent else 0)


def _tar_fetch(target, present: list, local_root: Path, on_progress: Progress, chosen: dict) -> tuple:
    """The fallback: one tar stream over the connection, checked, then extracted; each local run
    directory then mirrors the extracted one. (stats, warnings)."""
    total = sum(f["bytes"] for f in present)
    local_root.mkdir(parents=True, exist_ok=True)
    script = render_script("artifacts_tar.sh", dirs=[f["run_dir"].rstrip("/") for f in present],
                           includes=chosen["include"], excludes=chosen["exclude"])
    _clear_leftovers(local_root)
    with tempfile.TemporaryDirectory(dir=local_root, prefix=f".tar-{os.getpid()}-") as tmp:
        archive = Path(tmp) / "runs.tar"
        received = [0]
        with archive.open("wb") as sink:
            def write(chunk: bytes) -> None:
                sink.write(chunk)
                received[0] += len(chunk)
                if on_progress is not None:
                    on_progress(min(received[0], total), total)

            result = target.run_script(script, on_stdout=write)
        if result.exit_code != 0:
            detail = (result.stderr.strip().splitlines() or [f"exit {result.exit_code}"])[-1]
            raise HostError(f"{target.profile.label}: tar failed on the pod: {detail}")
        names = {PurePosixPath(f["run_dir"].rstrip("/")).name: f["run_id"] for f in present}
        extracted = Path(tmp) / "x"
        files, dropped = safe_extract(archive, extracted, set(names))
        dropped += _ignored_by_tar(result.stderr, set(names))
        for name, run_id in names.items():
            _mirror(extracted / name, local_root / run_id, chosen)
    warnings = [_dropped_warning([f"{names[PurePosixPath(d).parts[0]]}/{PurePosixPath(*PurePosixPath(d).parts[1:])}"
                                  for d in dropped])] if dropped else []
    return {"files": files, "bytes": total, "literal_bytes": received[0]}, warnings


_IGNORED_BY_TAR = re.compile(r"^tar: (.*): socket ignored$")


def _ignored_by_tar(stderr: str, tops: set) -> list:
    """Members GNU tar left out of the stream by itself (sockets), named like the others."""
    names = []
    for line in (stderr or "").splitlines():
        match = _IGNORED_BY_TAR.match(line)
        if match and PurePosixPath(match.group(1)).parts[:1] and PurePosixPath(match.group(1)).parts[0] in tops:
            names.append(match.group(1))
    return names


def _mirror(source: Path, local: Path, chosen: dict) -> None:
    """Make local hold what source holds: what the pod no longer has goes (what the patterns
    left on the pod stays), an entry of another kind is replaced, never written through. A link
    at local itself was refused before (_clash): none is written through here either."""
    if local.is_symlink():
        raise OpsError(f"{_shown(local)} became a link during the fetch: not written through")
    local.mkdir(parents=True, exist_ok=True)
    for folder, dirs, files in os.walk(local):
        for name in list(dirs) + files:
            path = Path(folder) / name
            rel = path.relative_to(local)
            if rel.parts[0] == ".rsync-partial" or not taken(rel.parts, chosen["include"], chosen["exclude"]):
                if name in dirs:
                    dirs.remove(name)
                continue
            twin = source / rel
            # A link is made anew from the stream (copytree cannot write over one).
            same_kind = not path.is_symlink() and not twin.is_symlink() and twin.exists() and (
                twin.is_dir() == path.is_dir())
            if not same_kind:
                _remove(path)
                if name in dirs:
                    dirs.remove(name)
    if source.is_dir():
        shutil.copytree(source, local, dirs_exist_ok=True, symlinks=True)


class UnsafeArchive(OpsError):
    """A tar stream with a member that would land outside its run directory."""


def safe_extract(archive: Path, dest: Path, allowed_tops: set) -> tuple:
    """Extract archive into dest after checking EVERY member first: (files extracted, names of
    the members dropped).

    Refused whole (nothing extracted): absolute paths, `..`, members outside the run directories
    asked for, a member below a link (no tar of a real directory has one). Dropped, the rest
    extracted: links that could lead out of their run directory, devices, FIFOs, anything else
    that is neither file, directory nor link.
    """
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            check_member_path(member, allowed_tops)
        refuse_members_below_links(members)
        kept, dropped = [], []
        for member in members:
            (dropped if member_dropped(member, kept) else kept).append(member)
        dest.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):  # a second line of defence where Python has it
            tar.extractall(dest, members=kept, filter="data")
        else:
            tar.extractall(dest, members=kept)
    return sum(1 for m in kept if m.isfile()), [m.name for m in dropped]


def check_member_path(member: tarfile.TarInfo, allowed_tops: set) -> None:
    """UnsafeArchive unless the member lands inside one of the run directories asked for."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] not in allowed_tops:
        raise UnsafeArchive(f"refused the tar stream: member {member.name!r} would land outside its run directory")


def refuse_members_below_links(members: list) -> None:
    """UnsafeArchive when a member's path runs through a link member: extracting it would write
    wherever that link points."""
    links = {PurePosixPath(m.name) for m in members if m.issym() or m.islnk()}
    for member in members:
        path = PurePosixPath(member.name)
        if any(parent in links for parent in path.parents):
            raise UnsafeArchive(f"refused the tar stream: member {member.name!r} lies below a link")


def member_dropped(member: tarfile.TarInfo, kept: list) -> bool:
    """Is this member one the laptop does not keep? A symlink that could lead out of its run
    directory; a hard link to anything but a file kept before it in the same run directory;
    anything neither file, directory nor link."""
    path = PurePosixPath(member.name)
    if member.issym():
        return link_leaves_run(PurePosixPath(*path.parts[1:]), member.linkname)
    if member.islnk():
        other = PurePosixPath(member.linkname)
        return not (other.parts and other.parts[0] == path.parts[0]
                    and any(PurePosixPath(k.name) == other and k.isfile() for k in kept))
    return not (member.isfile() or member.isdir())


# ---------------------------------------------------------------- fetch records


def _record_fetches(records_dir: Path, profile, runs: list, local_root: Path, method: str, chosen: dict) -> list:
    """What was fetched, per run (counted in the local copy, which mirrors the pod's): the check
    before tearing a pod down reads these records, matched on the host's identity."""
    host = {**host_fields(profile), "destination": profile.destination}
    return [_record(records_dir, host, run, local_root, method, chosen) for run in runs]


def _record(records_dir: Path, host: dict, run: dict, local_root: Path, method: str, chosen: dict) -> dict:
    """Counted like the pod's listing with the same patterns: what was left on the pod on purpose
    (include/exclude, kept in the record) does not make the run look unfetched."""
    local = local_root / run["run_id"]
    sizes = list(_file_sizes(str(local), (), chosen)) if local.is_dir() and not local.is_symlink() else []
    record = {"run_id": run["run_id"], **host, "remote_dir": run["run_dir"], "local_dir": str(local),
              "files": len(sizes), "bytes": sum(sizes), "method": method,
              "include": chosen["include"], "exclude": chosen["exclude"], "fetched_at": time.time()}
    save_fetch_record(records_dir, record)
    return {k: record[k] for k in ("run_id", "remote_dir", "local_dir", "files", "bytes")}


def _file_sizes(folder: str, parts: tuple, chosen: dict):
    """Sizes of the regular files below folder that a fetch with these patterns takes (links not
    followed, .rsync-partial left out), from scandir's entries: one stat per file."""
    with os.scandir(folder) as entries:
        for entry in entries:
            path = parts + (entry.name,)
            if (chosen["exclude"] and not taken(path[-1:], chosen["include"], chosen["exclude"])) or (
                    entry.name == ".rsync-partial"):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _file_sizes(entry.path, path, chosen)
            elif entry.is_file(follow_symlinks=False):
                yield entry.stat(follow_symlinks=False).st_size
