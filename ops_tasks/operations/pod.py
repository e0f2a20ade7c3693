"""Pod operations: what a pod is, judged against what the tools need."""

from ..errors import HostError
from ..runtime.contract import WORKDIR_RECORD, WORKDIR_SET_ASIDE
from ..scripts import parse_document, render_script, scripts_dir

REQUIRED_TOOLS = {"tmux": "vllm and runs sessions", "curl": "vllm status checks"}
# A disk is low on space below 5% of its size free, and never needs more than 2 GiB free to be
# fine: 2 GiB is a checkpoint or two; 5% is what a small disk can spare.
LOW_DISK_FRACTION = 0.05
LOW_DISK_BYTES = 2 * 1024 ** 3
USEFUL_TOOLS = {"python3": "the run supervisor", "rsync": "fast artifact fetch (tar is the fallback)"}


def pod_status(target, volume_required: bool = True) -> dict:
    """Check a pod in one round trip: reachable, volume mounted, tools, GPUs, sessions, load.

    volume_required=False (a pod rented without a volume): a missing or unmounted volume is a
    warning, not a failure."""
    profile = target.profile
    script = render_script("pod_status.sh", volume=profile.volume, tmux_socket=profile.tmux_socket)
    report = {"ok": False, "host": profile.name, "destination": profile.destination}
    try:
        result = target.run_script(script)
    except HostError as exc:
        return {**report, "reachable": False, "problems": [str(exc)], "warnings": []}
    facts = parse_document(result, profile.label, "pod_status.sh")
    problems, warnings = judge_pod(facts, profile, volume_required)
    report.update(
        ok=not problems,
        reachable=True,
        latency_ms=round(result.elapsed_ms, 1),
        connect_ms=None if target.connect_ms is None else round(target.connect_ms, 1),
        **facts,
        problems=problems,
        warnings=warnings,
    )
    report["volume"]["must_be_mount"] = profile.volume_must_be_mount
    report.pop("gpu_error", None)
    return report


def _volume_problems(volume: dict, profile) -> list:
    if not volume["exists"] and not profile.volume_must_be_mount:
        return []  # a plain folder (the `local` stand-in): made by the first task that writes there
    if not volume["exists"]:
        return [f"volume {volume['path']} does not exist"]
    if profile.volume_must_be_mount and not volume["mounted"]:
        return [f"volume {volume['path']} is not mounted (a plain directory): attach the persistent volume"]
    return []


def judge_pod(facts: dict, profile, volume_required: bool = True) -> tuple:
    """(problems, warnings) for a pod's facts: a problem makes the check fail."""
    volume = _volume_problems(facts["volume"], profile)
    problems = list(volume) if volume_required else []
    warnings = []
    for tool, needed_by in REQUIRED_TOOLS.items():
        if not facts["tools"][tool]["present"]:
            problems.append(f"{tool} is not installed (needed by {needed_by})")
    for tool, needed_by in USEFUL_TOOLS.items():
        if not facts["tools"][tool]["present"]:
            warnings.append(f"{tool} is not installed (used by {needed_by})")
    if facts.get("gpu_error"):
        warnings.append(facts["gpu_error"])
    if facts["volume"]["exists"]:
        warnings += _low_disk(f"volume {facts['volume']['path']}", facts["volume"]["free_bytes"],
                              facts["volume"]["size_bytes"])
    warnings += _low_disk("home disk", facts.get("disk_free_bytes"), facts.get("disk_size_bytes"))
    if not volume_required:
        warnings += volume
    return problems, warnings


def human_bytes(count) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def low_disk_threshold(size: int) -> float:
    """Free bytes below which a disk of this size is low: 5% of it, at most 2 GiB."""
    return min(size * LOW_DISK_FRACTION, LOW_DISK_BYTES)


def _low_disk(what: str, free, size) -> list:
    """A warning when a disk is (nearly) full, naming its free bytes exactly."""
    if not isinstance(free, int) or not isinstance(size, int) or size <= 0 or free >= low_disk_threshold(size):
        return []
    used = 100 - 100 * free / size
    state = "full" if free == 0 else f"{used:.0f}% full" if used < 99.5 else "nearly full"
    return [f"{what} is {state}: {free} bytes ({human_bytes(free)}) free of {human_bytes(size)}; "
            f"writes there (runs, logs, checkpoints) will fail"]


# ---------------------------------------------------------------- preparing a pod


def _steps_report(target, facts: dict, **extra) -> dict:
    failed = [s for s in facts["steps"] if s["state"] == "failed"]
    report = {"ok": not failed, "host": target.profile.name, "steps": facts["steps"], **extra}
    if failed:
        report["error"] = f"{target.profile.label}: " + "; ".join(f"{s['step']}: {s['detail']}" for s in failed)
    return report


def pod_bootstrap(target) -> dict:
    """Run the volume's bootstrap script, copy persisted SSH keys in, trust GitHub (one round trip)."""
    github = (scripts_dir() / "github_known_hosts.txt").read_text()
    script = render_script("pod_bootstrap.sh", volume=target.profile.volume, github_keys=github)
    facts = parse_document(target.run_script(script), target.profile.label, "pod_bootstrap.sh")
    return _steps_report(target, facts)


def pod_sync(target, *, remote_repo: str, repo_url=None, branch=None, pr=None, ref=None, install=None,
             workdir: bool = False) -> dict:
    """Clone or update the repo on the pod and check out what was asked (one round trip).
    workdir: the repo holds a pod.sync --workdir (operations/workdir.py): no git step, the install only."""
    script = render_script("pod_sync.sh", remote_repo=remote_repo, repo_url=repo_url, branch=branch, pr=pr,
                           ref=ref, install=install, volume=target.profile.volume, workdir=workdir,
                           workdir_records=[WORKDIR_RECORD, WORKDIR_SET_ASIDE])
    facts = parse_document(target.run_script(script), target.profile.label, "pod_sync.sh")
    return _steps_report(target, facts, remote_repo=remote_repo, commit=facts["commit"] or None,
                         branch=facts["branch"] or None, dirty=facts["dirty"])


def pod_wandb(target, *, key=None) -> dict:
    """~/.netrc for W&B on the pod, from key (sent on stdin) or the volume's script."""
    writer = (scripts_dir() / "wandb_netrc.sh").read_text()
    script = render_script("pod_wandb.sh", volume=target.profile.volume, netrc_writer=writer)
    payload = (key + "\n").encode() if key else b""
    facts = parse_document(target.run_script(script, stdin_payload=payload), target.profile.label, "pod_wandb.sh")
    report = {"host": target.profile.name, **facts}
    if not facts["ok"]:
        report["error"] = f"{target.profile.label}: {facts['error']}"
    return report
