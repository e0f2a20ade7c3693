"""Pod operations: what a pod is, judged against what the tools need."""

from ..errors import HostError
from ..scripts import parse_document, render_script, scripts_dir

REQUIRED_TOOLS = {"tmux": "vllm and runs sessions", "curl": "vllm status checks"}
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
    if not volume_required:
        warnings += volume
    return problems, warnings


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


def pod_sync(target, *, remote_repo: str, repo_url=None, branch=None, pr=None, ref=None, install=None) -> dict:
    """Clone or update the repo on the pod and check out what was asked (one round trip)."""
    script = render_script("pod_sync.sh", remote_repo=remote_repo, repo_url=repo_url, branch=branch, pr=pr,
                           ref=ref, install=install, volume=target.profile.volume)
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
