"""`pod` namespace: check a pod, rent and release Lium pods (lium.py), prepare them."""

from invoke import Collection
from tabulate import tabulate

from .errors import ConfigError
from .flags import count_flag
from .lium import down, ls, ps, up
from .operations.pod import pod_bootstrap, pod_status, pod_sync, pod_wandb
from .output import target_of, ops_task
from .secrets import MASK
from .settings import env_value


def human_bytes(count) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def render_status(data: dict) -> str:
    where = data["host"] if data["host"] == data["destination"] else f"{data['host']} ({data['destination']})"
    head = f"{where}: {'OK' if data['ok'] else 'NOT OK'}"
    if not data["reachable"]:
        return "\n".join([head, *(f"  problem: {p}" for p in data["problems"])])
    volume = data["volume"]
    state = "mounted" if volume["mounted"] else ("plain directory" if volume["exists"] else "missing")
    tools = ", ".join(
        f"{name} {tool['version'] or ''}".strip() if tool["present"] else f"{name} MISSING"
        for name, tool in data["tools"].items()
    )
    gpus = ", ".join(
        f"{g['index']}: {g['name']} {g['utilization_pct']}% {g['memory_used_mib']}/{g['memory_total_mib']} MiB"
        for g in data["gpus"]
    )
    rows = [
        ("reachable", f"yes ({data['latency_ms']:.0f} ms round trip, {data['connect_ms'] or 0:.0f} ms connect)"),
        ("hostname", f"{data['hostname']} (user {data['user']})"),
        ("volume", f"{volume['path']}: {state}, {volume['fstype'] or '?'}, "
                   f"{human_bytes(volume['free_bytes'])} free of {human_bytes(volume['size_bytes'])}"),
        ("gpus", gpus or "none"),
        ("tools", tools),
        ("tmux", ", ".join(data["tmux_sessions"]) or "no sessions"),
        ("home disk", f"{human_bytes(data['disk_free_bytes'])} free"),
        ("load", " ".join(str(x) for x in data["load"]) + f" ({data['cpus']} CPUs)"),
    ]
    lines = [head, tabulate(rows, tablefmt="plain")]
    lines += [f"problem: {p}" for p in data["problems"]]
    lines += [f"warning: {w}" for w in data["warnings"]]
    return "\n".join(lines)


@ops_task(human=render_status)
def status(c, host=None):
    """Check a pod: reachable, volume mounted at /mnt, GPUs, tools, tmux sessions."""
    return pod_status(target_of(c, host))


# ---------------------------------------------------------------- preparing a pod


def render_steps(data: dict) -> str:
    head = f"{data['host']}: {'OK' if data['ok'] else 'FAILED'}"
    if data.get("commit"):
        head += f": {data['remote_repo']} at {data['commit'][:12]} ({data['branch']}{', dirty' if data['dirty'] else ''})"
    rows = [(s["step"], s["state"], s["detail"]) for s in data["steps"]]
    return "\n".join([head, tabulate(rows, tablefmt="plain")])


def _remote_only(target, task: str):
    if target.profile.is_local:
        raise ConfigError(f"{task} prepares a rented pod's home, not this machine: pass --host")
    return target


@ops_task(human=render_steps)
def bootstrap(c, host=None):
    """Prepare a pod from its volume: bootstrap-pod.sh, persisted SSH keys, GitHub host keys."""
    return pod_bootstrap(_remote_only(target_of(c, host), "pod.bootstrap"))


@ops_task(human=render_steps, help={
    "remote_repo": "The repo on the pod (default: the profile's remote_repo, or $OPS_REMOTE_REPO).",
    "repo_url": "Clone from here when the repo is not on the pod yet.",
    "branch": "Check out this branch (then pull --ff-only).",
    "pr": "Check out this GitHub pull request (refs/pull/N/head).",
    "ref": "Check out this commit or tag (detached).",
    "install": 'Then run this in the repo, e.g. "uv sync" (package caches on the pod\'s disk, HF_HOME on the volume).',
})
def sync(c, host=None, remote_repo=None, repo_url=None, branch=None, pr=None, ref=None, install=None):
    """Bring the repo on the pod to a branch, PR or ref (clone if missing); report the commit."""
    target = target_of(c, host)
    repo = remote_repo or target.profile.remote_repo
    if not repo:
        raise ConfigError("no repo: pass --remote-repo, set remote_repo in the profile, or export OPS_REMOTE_REPO")
    if not repo.startswith("/") and not target.profile.is_local:
        raise ConfigError(f"--remote-repo must be an absolute path on the pod, got {repo!r}")
    if sum(x is not None for x in (branch, pr, ref)) > 1:
        raise ConfigError("pass at most one of --branch, --pr and --ref")
    for flag, value in (("--repo-url", repo_url), ("--branch", branch), ("--ref", ref)):
        if value is not None and (not value or value.startswith("-")):
            raise ConfigError(f"{flag}: {value!r} is not usable (empty or a leading '-')")
    number = count_flag("--pr", pr, None) if pr is not None else None
    return pod_sync(target, remote_repo=repo, repo_url=repo_url, branch=branch, pr=number, ref=ref, install=install)


def render_wandb(data: dict) -> str:
    if not data["ok"]:
        return f"{data['host']}: W&B NOT set up"
    lines = [f"{data['host']}: {data['result']} (~/.netrc mode {data['netrc_mode']}, key from {data['source']})"]
    if data["upgraded"]:
        lines.append(f"  upgraded the volume's set-wandb-api-key.sh to write ~/.netrc (original: {data['backup']})")
    return "\n".join(lines)


@ops_task(human=render_wandb)
def wandb(c, host=None):
    """Make W&B work in non-interactive sessions: ~/.netrc on the pod (the key never printed)."""
    target = _remote_only(target_of(c, host), "pod.wandb")
    key = env_value("WANDB_API_KEY")
    if key == MASK:
        raise ConfigError("WANDB_API_KEY is '***': that is a masked value, not a key")
    return pod_wandb(target, key=key)


ns = Collection("pod")
for _task in (status, ls, up, ps, down, bootstrap, sync, wandb):
    ns.add_task(_task)
