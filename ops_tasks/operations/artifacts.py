"""Artifact operations: archive raw eval files into run directories on the pod, and fetch run
directories to the laptop, recording what was fetched.

Fetching: the system's rsync over OpenSSH with the connection's own parameters, one connection
for all the runs (incremental: unchanged files are not sent; resumable: partial files are kept in
.rsync-partial). Where rsync is missing on either side: a listing, then one tar stream over the
connection, checked member by member before anything is extracted.
"""

import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from ..errors import HostError, OpsError
from ..records import host_fields, save_fetch_record
from ..scripts import parse_document, render_script
from ..targets import ConnectionLost

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


def list_remote(target, *, dirs: list, outputs_dir: str, all_runs: bool = False) -> dict:
    script = render_script("artifacts_list.sh", outputs_dir=outputs_dir, dirs=dirs, all=all_runs)
    return parse_document(target.run_script(script), target.profile.label, "artifacts_list.sh")


def fetch_runs(target, *, runs: list, outputs_dir: str, local_root: Path, records_dir: Path,
               all_runs: bool = False, bwlimit: Optional[int] = None, on_progress: Progress = None) -> dict:
    """Fetch run directories into local_root/<run_id>/; record each fetch in records_dir.

    Named runs: rsync goes first, alone (one OpenSSH connection, no listing round trip). --all
    lists the pod's run directories first: only what is on the pod is fetched and recorded.
    Where rsync is missing (here, or on the pod): a listing and a tar stream over the connection.
    """
    profile = target.profile
    started = time.monotonic()
    if all_runs:
        listing = list_remote(target, dirs=[], outputs_dir=outputs_dir, all_runs=True)
        runs = [{"run_id": PurePosixPath(e["dir"]).name, "run_dir": e["dir"]} for e in listing["runs"]]
        if not runs:
            return {"ok": False, "host": profile.name, "local_root": str(local_root), "runs": [], "missing": [],
                    "error": f"{profile.label}: no run directories under {outputs_dir}"}
    method, moved, missing, warnings = "rsync", None, [], []
    if shutil.which("rsync"):
        try:
            moved, missing, warnings = _rsync(target, runs, local_root, bwlimit, on_progress)
        except RemoteRsyncMissing:
            method = "tar"
    else:
        method = "tar"
    if method == "tar":
        listing = list_remote(target, dirs=[r["run_dir"] for r in runs], outputs_dir=outputs_dir)
        sizes = {e["dir"]: e["bytes"] for e in listing["runs"] if e["exists"]}
        missing = [r for r in runs if r["run_dir"] not in sizes]
        found = [dict(r, bytes=sizes[r["run_dir"]]) for r in runs if r["run_dir"] in sizes]
        moved = _tar_fetch(target, found, local_root, on_progress) if found else {"files": 0, "bytes": 0,
                                                                                   "literal_bytes": 0}
    gone = {m["run_dir"] for m in missing}
    present = [r for r in runs if r["run_dir"] not in gone]
    fetched = _record_fetches(records_dir, profile, present, local_root, method)
    report = {
        "ok": not missing, "host": profile.name, "method": method, "local_root": str(local_root),
        "seconds": round(time.monotonic() - started, 3), "runs": fetched, "transferred": moved,
        "missing": [{"run_id": m["run_id"], "remote_dir": m["run_dir"]} for m in missing], "warnings": warnings,
    }
    if missing:
        report["error"] = f"{profile.label}: no run directory " + ", ".join(m["run_dir"] for m in missing) + (
            f" (the other {len(present)} fetched)" if present else "")
    return report


class RemoteRsyncMissing(Exception):
    """The pod has no rsync: the caller falls back to a tar stream."""


_MISSING_SOURCE = re.compile(r'(?:change_dir|link_stat) "([^"]+)" failed: No such file or directory')
# rsync's closing lines, which follow any error and name no file of their own.
_RSYNC_SUMMARY = re.compile(r"^rsync (error|warning):|^rsync: \[generator\]|^\s*$|^Warning: Permanently added")


def _rsync(target, runs: list, local_root: Path, bwlimit, on_progress: Progress) -> tuple:
    """rsync the run directories: one connection for those named by their run id (the usual
    layout), one more for each run directory named otherwise. (stats, missing runs, warnings)."""
    options = ["rsync", "-a", "--partial", "--partial-dir=.rsync-partial", "--stats"]
    if on_progress is not None:
        options += ["--info=progress2", "--no-inc-recursive"]  # a whole-transfer total, for the ETA
    if bwlimit:
        options.append(f"--bwlimit={bwlimit}")
    remote = not target.profile.is_local
    host = None
    if remote:
        ssh = target.openssh_command()
        host = ssh[-1] if ":" not in ssh[-1] else f"[{ssh[-1]}]"
        options += ["-e", shlex.join(ssh[:-1])]
    plain = [r for r in runs if PurePosixPath(r["run_dir"]).name == r["run_id"]]
    custom = [r for r in runs if r not in plain]
    # Plain ones: each directory lands under its own name; custom ones: their contents into <run_id>/.
    batches = ([(plain, str(local_root) + "/", "")] if plain else []) + [
        ([r], str(local_root / r["run_id"]) + "/", "/") for r in custom]
    moved = {"files": 0, "bytes": 0, "literal_bytes": 0}
    missing, warnings = [], []
    for entries, dest, trailing in batches:
        sources = [e["run_dir"].rstrip("/") + trailing for e in entries]
        if remote:
            sources = [f"{host}:{sources[0]}"] + [f":{s}" for s in sources[1:]]
        argv = options + sources + [dest]
        target.before_command(argv)  # a dry run records the command and stops here
        # Only now: a dry run stops before it, and must leave no folder behind.
        local_root.mkdir(parents=True, exist_ok=True)
        stats, absent, warning = _run_rsync(argv, on_progress, label=target.profile.label)
        missing += [e for e in entries if e["run_dir"].rstrip("/") in absent]
        warnings += [warning] if warning else []
        for key in moved:
            moved[key] += stats[key]
    return moved, missing, warnings


def _run_rsync(argv: list, on_progress: Progress, label: str = "localhost") -> tuple:
    """Run rsync; (its --stats, the source directories that do not exist, a warning or None)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors = []
    # stderr on its own thread: rsync blocks once a pipe we do not read fills up.
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()), daemon=True)
    reader.start()
    out = bytearray()
    try:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            out += chunk
            if on_progress is not None:
                _report_progress(chunk, on_progress)
    except BaseException:
        # Ctrl-C: rsync keeps what it has in .rsync-partial on TERM, for the next fetch to resume.
        proc.terminate()
        proc.wait()
        raise
    proc.wait()
    reader.join()
    err = b"".join(errors).decode(errors="replace")
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


RSYNC_LINK_EXITS = (12, 255)  # the stream to the pod broke, or ssh itself failed
# What rsync and OpenSSH's banners add around ssh's own reason.
_NOT_SSH_REASON = re.compile(r"^@|^\s*$|^rsync[:\s]|^Warning: Permanently added")


def _link_failure(err: str, label: str) -> Exception:
    """OpenSSH's own reason, which rsync passes through on its stderr, instead of rsync's
    "connection unexpectedly closed": a changed host key, a refused key, a name that does not
    resolve; no reason from ssh is a connection lost during the transfer."""
    lines = [line.strip() for line in err.splitlines() if not _NOT_SSH_REASON.search(line.strip())]
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


def _tar_fetch(target, present: list, local_root: Path, on_progress: Progress) -> dict:
    """The fallback: one tar stream over the connection, checked, then extracted."""
    total = sum(f["bytes"] for f in present)
    local_root.mkdir(parents=True, exist_ok=True)
    script = render_script("artifacts_tar.sh", dirs=[f["run_dir"].rstrip("/") for f in present])
    with tempfile.TemporaryDirectory(dir=local_root, prefix=".tar-") as tmp:
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
        files = safe_extract(archive, extracted, set(names))
        for name, run_id in names.items():
            shutil.copytree(extracted / name, local_root / run_id, dirs_exist_ok=True, symlinks=True)
    return {"files": files, "bytes": total, "literal_bytes": received[0]}


class UnsafeArchive(OpsError):
    """A tar stream with a member that would land outside its run directory."""


def safe_extract(archive: Path, dest: Path, allowed_tops: set) -> int:
    """Extract archive into dest after checking EVERY member first; returns the files extracted.

    Refused (and nothing extracted): absolute paths, `..`, members outside the run directories
    asked for, links leading out of their run directory, devices and fifos.
    """
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, allowed_tops)
        dest.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):  # a second line of defence where Python has it
            tar.extractall(dest, members=members, filter="data")
        else:
            tar.extractall(dest, members=members)
    return sum(1 for m in members if m.isfile())


def _check_member(member: tarfile.TarInfo, allowed_tops: set) -> None:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts or path.parts[0] not in allowed_tops:
        raise UnsafeArchive(f"refused the tar stream: member {member.name!r} would land outside its run directory")
    if member.isdev() or member.isfifo():
        raise UnsafeArchive(f"refused the tar stream: member {member.name!r} is a device or fifo")
    if member.issym() or member.islnk():
        link = PurePosixPath(member.linkname)
        resolved = link if link.is_absolute() or member.islnk() else path.parent / link
        parts = []
        for part in resolved.parts:
            if part == "..":
                if not parts:
                    parts = [".."]
                    break
                parts.pop()
            elif part not in (".", ""):
                parts.append(part)
        if link.is_absolute() or not parts or parts[0] != path.parts[0]:
            raise UnsafeArchive(f"refused the tar stream: link {member.name!r} -> {member.linkname!r} "
                                f"leads out of its run directory")


# ---------------------------------------------------------------- fetch records


def _record_fetches(records_dir: Path, profile, runs: list, local_root: Path, method: str) -> list:
    """What was fetched, per run (counted in the local copy, which mirrors the pod's): the check
    before tearing a pod down reads these records, matched on the host's identity."""
    host = {**host_fields(profile), "destination": profile.destination}
    return [_record(records_dir, host, run, local_root, method) for run in runs]


def _record(records_dir: Path, host: dict, run: dict, local_root: Path, method: str) -> dict:
    local = local_root / run["run_id"]
    files = [p for p in local.rglob("*") if p.is_file() and not p.is_symlink() and ".rsync-partial" not in p.parts]
    record = {"run_id": run["run_id"], **host, "remote_dir": run["run_dir"], "local_dir": str(local),
              "files": len(files), "bytes": sum(p.stat().st_size for p in files), "method": method,
              "fetched_at": time.time()}
    save_fetch_record(records_dir, record)
    return {k: record[k] for k in ("run_id", "remote_dir", "local_dir", "files", "bytes")}
