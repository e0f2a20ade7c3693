"""Pod operations: what a pod is, judged against what the tools need."""

from ..errors import HostError
from ..scripts import parse_document, render_script

REQUIRED_TOOLS = {"tmux": "vllm and runs sessions", "curl": "vllm status checks"}
USEFUL_TOOLS = {"python3": "the run supervisor", "rsync": "fast artifact fetch (tar is the fallback)"}


def pod_status(target) -> dict:
    """Check a pod in one round trip: reachable, volume mounted, tools, GPUs, sessions, load."""
    profile = target.profile
    script = render_script("pod_status.sh", volume=profile.volume, tmux_socket=profile.tmux_socket)
    report = {"ok": False, "host": profile.name, "destination": profile.destination}
    try:
        result = target.run_script(script)
    except HostError as exc:
        return {**report, "reachable": False, "problems": [str(exc)], "warnings": []}
    facts = parse_document(result, profile.label, "pod_status.sh")
    problems, warnings = judge_pod(facts, profile)
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


def judge_pod(facts: dict, profile) -> tuple:
    """(problems, warnings) for a pod's facts: a problem makes the check fail."""
    problems, warnings = [], []
    volume = facts["volume"]
    if not volume["exists"]:
        problems.append(f"volume {volume['path']} does not exist")
    elif profile.volume_must_be_mount and not volume["mounted"]:
        problems.append(f"volume {volume['path']} is not mounted (a plain directory): attach the persistent volume")
    for tool, needed_by in REQUIRED_TOOLS.items():
        if not facts["tools"][tool]["present"]:
            problems.append(f"{tool} is not installed (needed by {needed_by})")
    for tool, needed_by in USEFUL_TOOLS.items():
        if not facts["tools"][tool]["present"]:
            warnings.append(f"{tool} is not installed (used by {needed_by})")
    if facts.get("gpu_error"):
        warnings.append(facts["gpu_error"])
    return problems, warnings
