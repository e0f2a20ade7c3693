"""`pod` namespace: check a pod (rent, release and prepare come with the pod lifecycle issue)."""

from invoke import Collection
from tabulate import tabulate

from .operations.pod import pod_status
from .output import connect, ops_task


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
    return pod_status(connect(c, host))


ns = Collection("pod")
ns.add_task(status)
