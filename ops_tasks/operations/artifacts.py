"""Artifact operations: archive raw eval files into run directories on the pod, and fetch run
directories to the laptop, recording what was fetched.

Fetching: one round trip lists the run directories (files, bytes, rsync present?); then the data
moves through the system's rsync over OpenSSH with the connection's own parameters (incremental:
unchanged files are not sent; resumable: partial files are kept in .rsync-partial), or, where
rsync is missing on either side, as one tar stream over the connection, checked member by member
before anything is extracted.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from ..errors import HostError, OpsError
from ..scripts import parse_document, render_script

Progress = Optional[Callable[[int, int], None]]  # (bytes done, bytes in all)
_PROGRESS2 = re.compile(rb"^\s*([\d,]+)\s+\d+%")
_STATS = {
    "files": re.compile(r"Number of regular files transferred: ([\d,]+)"),
    "bytes": re.compile(r"Total transferred file size: ([\d,]+)"),
    "literal_bytes": re.compile(r"Literal data: ([\d,]+)"),
}


# ---------------------------------------------------------------- archive


def archive_runs(target, *, runs: list, patterns) -> dict:
    """Move <volume>/<pattern> files into the runs' directories (one round trip)."""
    profile = target.profile
    script = render_script("artifacts_archive.sh", volume=profile.volume, patterns=list(patterns),
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
    """Fetch run directories into local_root/<run_id>/; record each fetch in records_dir."""
    profile = target.profile
    listing = list_remote(target, dirs=[r["run_dir"] for r in runs], outputs_dir=outputs_dir, all_runs=all_runs)
    ids = {r["run_dir"]: r["run_id"] for r in runs}
    found = [dict(entry, run_id=ids.get(entry["dir"], PurePosixPath(entry["dir"]).name)) for entry in listing["runs"]]
    present = [f for f in found if f["exists"]]
    missing = [f for f in found if not f["exists"]]
    local_root.mkdir(parents=True, exist_ok=True)
    use_rsync = listing["rsync"] and shutil.which("rsync") is not None
    started = time.monotonic()
    if not present:
        moved = {"files": 0, "bytes": 0, "literal_bytes": 0}
    elif use_rsync:
        moved = _rsync(target, present, local_root, bwlimit, on_progress)
    else:
        moved = _tar_fetch(target, present, local_root, on_progress)
    elapsed = time.monotonic() - started
    for entry in present:
        _record(records_dir, profile, entry, local_root, "rsync" if use_rsync else "tar")
    report = {
        "ok": not missing, "host": profile.name, "method": "rsync" if use_rsync else "tar",
        "local_root": str(local_root), "seconds": round(elapsed, 3),
        "runs": [{"run_id": f["run_id"], "remote_dir": f["dir"], "local_dir": str(local_root / f["run_id"]),
                  "files": f["files"], "bytes": f["bytes"]} for f in present],
        "transferred": moved, "missing": [{"run_id": f["run_id"], "remote_dir": f["dir"]} for f in missing],
    }
    if missing:
        report["error"] = f"{profile.label}: no run directory " + ", ".join(f["dir"] for f in missing) + (
            f" (the other {len(present)} fetched)" if present else "")
    return report


def _rsync(target, present: list, local_root: Path, bwlimit, on_progress: Progress) -> dict:
    """rsync the run directories; one connection for those named by their run id."""
    total = sum(f["bytes"] for f in present)
    options = ["rsync", "-a", "--partial", "--partial-dir=.rsync-partial", "--stats"]
    if on_progress is not None:
        options.append("--info=progress2")
    if bwlimit:
        options.append(f"--bwlimit={bwlimit}")
    remote = not target.profile.is_local
    if remote:
        ssh = target.openssh_command()
        host = ssh[-1] if ":" not in ssh[-1] else f"[{ssh[-1]}]"
        options += ["-e", shlex.join(ssh[:-1])]
    plain = [f for f in present if PurePosixPath(f["dir"]).name == f["run_id"]]
    custom = [f for f in present if f not in plain]
    batches = ([(plain, str(local_root) + "/")] if plain else []) + [([f], str(local_root / f["run_id"]) + "/")
                                                                     for f in custom]
    moved = {"files": 0, "bytes": 0, "literal_bytes": 0}
    done = 0
    for entries, dest in batches:
        trailing = "/" if dest != str(local_root) + "/" else ""
        sources = [e["dir"].rstrip("/") + trailing for e in entries]
        if remote:
            sources = [f"{host}:{sources[0]}"] + [f":{s}" for s in sources[1:]]
        stats = _run_rsync(options + sources + [dest], done, total, on_progress)
        done += stats["bytes"]
        for key in moved:
            moved[key] += stats[key]
    return moved


def _run_rsync(argv: list, done_before: int, total: int, on_progress: Progress) -> dict:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = bytearray()
    try:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            out += chunk
            if on_progress is not None:
                for piece in re.split(rb"[\r\n]", chunk):
                    match = _PROGRESS2.match(piece)
                    if match:
                        on_progress(done_before + int(match.group(1).replace(b",", b"")), total)
    except BaseException:
        # Ctrl-C: rsync keeps what it has in .rsync-partial on TERM, for the next fetch to resume.
        proc.terminate()
        proc.wait()
        raise
    err = proc.stderr.read().decode(errors="replace")
    proc.wait()
    if proc.returncode != 0:
        detail = (err.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise HostError(f"rsync failed (exit {proc.returncode}): {detail}")
    text = out.decode(errors="replace")
    return {key: int(m.group(1).replace(",", "")) if (m := pattern.search(text)) else 0
            for key, pattern in _STATS.items()}


def _tar_fetch(target, present: list, local_root: Path, on_progress: Progress) -> dict:
    """The fallback: one tar stream over the connection, checked, then extracted."""
    total = sum(f["bytes"] for f in present)
    script = render_script("artifacts_tar.sh", dirs=[f["dir"].rstrip("/") for f in present])
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
        names = {PurePosixPath(f["dir"].rstrip("/")).name: f["run_id"] for f in present}
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


def _record(records_dir: Path, profile, entry: dict, local_root: Path, method: str) -> None:
    """What was fetched, per run: the check before tearing a pod down reads these."""
    records_dir.mkdir(parents=True, exist_ok=True)
    record = {"run_id": entry["run_id"], "host": profile.name, "destination": profile.destination,
              "remote_dir": entry["dir"], "local_dir": str(local_root / entry["run_id"]),
              "files": entry["files"], "bytes": entry["bytes"], "method": method, "fetched_at": time.time()}
    path = records_dir / f"{entry['run_id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
