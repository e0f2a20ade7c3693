"""What a run must show besides exiting 0 (expect), the commit its repo must be at (the commit
pin), and a run's identity (the same run id with another config is another run).
"""

import glob
import json
import os
import re

from .contract import COMMIT, RECORD_DIR
from .files import makedirs, open_regular, pieces, read_json, record_path, write_json


# wandb's own end-of-run line when it uploaded (`wandb: Synced 5 W&B file(s), ...`), and `wandb sync`'s.
WANDB_SYNCED_LINE = re.compile(r"wandb: Synced \d+ W&B file|^Syncing: .* \.\.\. done\.?$")


def unmet_expectations(entry, run_dir):
    """What a run that exited 0 did not show of its `expect`, one line each ([]: all met). Read
    on the volume's run directory: the contract is judged where fetch reads it."""
    expect = entry.get("expect") or {}
    unmet = ["no %s in the run directory" % pattern for pattern in expect.get("files") or []
             if not files_in_run(run_dir, pattern)]
    log_path = os.path.join(run_dir, "stdout.log")
    must = expect.get("log_matches") or []
    must_not = expect.get("log_not_matches") or []
    if must or must_not:
        found, forbidden = search_log(log_path, must, must_not)
        unmet += ["stdout.log has no line matching %r" % pattern for pattern in must if pattern not in found]
        unmet += ["stdout.log has a line matching %r: %s" % (pattern, line[:160]) for pattern, line in forbidden]
    if expect.get("wandb_synced") and not wandb_synced(entry, run_dir, log_path):
        unmet.append("W&B did not say it synced (no `wandb: Synced` line in stdout.log, no .synced mark "
                     "in the run's wandb directory)")
    return unmet


def files_in_run(run_dir, pattern):
    """The regular files matching pattern (a glob; ** for any depth) inside run_dir, links
    resolved: a link out of the run directory proves nothing."""
    root = os.path.realpath(run_dir)
    found = []
    for path in glob.glob(os.path.join(glob.escape(run_dir), pattern), recursive=True):
        real = os.path.realpath(path)
        if real.startswith(root + os.sep) and os.path.isfile(real):
            found.append(path)
    return found


def search_log(log_path, must, must_not):
    """({pattern of must seen}, [(pattern of must_not, its first line)]), line by line."""
    wanted = [(p, re.compile(p)) for p in must]
    unwanted = [(p, re.compile(p)) for p in must_not]
    found, forbidden = set(), {}
    try:
        with open_regular(log_path) as handle:
            for raw in pieces(handle):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                found.update(p for p, rx in wanted if p not in found and rx.search(line))
                forbidden.update((p, line) for p, rx in unwanted if p not in forbidden and rx.search(line))
    except OSError:
        pass
    return found, sorted(forbidden.items())


def wandb_synced(entry, run_dir, log_path):
    """W&B says it synced: its own end-of-run line in the log (online), or the `.synced` mark
    `wandb sync` leaves in a run's folder under the run directory or the run's WANDB_DIR."""
    found, _ = search_log(log_path, [WANDB_SYNCED_LINE.pattern], [])
    if found:
        return True
    roots = [run_dir]
    wandb_dir = (entry.get("env") or {}).get("WANDB_DIR")
    if isinstance(wandb_dir, str) and wandb_dir.startswith("/"):
        roots.append(wandb_dir)
    for root in roots:
        for folder in ("wandb/*run-*", "*run-*"):
            base = os.path.join(glob.escape(root), folder)
            if glob.glob(os.path.join(base, "*.synced")) or glob.glob(os.path.join(base, ".synced")):
                return True
    return False


def commit_pin(run, request, facts):
    """(commit, where the pin comes from) the run's repo must be at, or (None, None): the task's
    --expect-commit, else the run's expect_commit (null: none), else the laptop's HEAD when the
    pod's repo has the laptop's origin."""
    flag = request.get("expect_commit")
    if flag == "none":
        return None, None
    if isinstance(flag, str) and COMMIT.match(flag):
        return flag, "--expect-commit"
    if "expect_commit" in run:
        return run["expect_commit"], "expect_commit"
    head = request.get("laptop_head")
    if isinstance(head, dict) and isinstance(head.get("commit"), str) and COMMIT.match(head["commit"]) \
            and same_origin(head.get("origin"), facts.get("origin")):
        return head["commit"], "the laptop's HEAD (the pod's repo has its origin)"
    return None, None


def pin_problem(commit, source, facts, repo):
    """Why a repo is not at its pinned commit (another commit, or uncommitted changes), or None."""
    if not commit:
        return None
    if facts.get("workdir"):
        return synced_pin_problem(commit, source, facts, repo)
    at = facts.get("commit")
    if at is None:
        return "pinned to %s (%s), but %s is not a git repository" % (commit[:12], source, repo)
    if not at.startswith(commit):
        return "the pod's repo %s is at %s, not at %s (%s)" % (repo, at[:12], commit[:12], source)
    if facts.get("dirty"):
        return ("the pod's repo %s is at %s (%s) but has uncommitted changes: commit or stash them on the pod, "
                "or pin another commit" % (repo, at[:12], source))
    return None


def synced_pin_problem(commit, source, facts, repo):
    """The pin of a repo pod.sync --workdir filled (runtime/workdir.py): the laptop's HEAD it was
    sent from must be the pinned commit. Its uncommitted change is no refusal: the record holds
    its hash, and run_metadata.json shows it. A file changed on the pod since the sync is."""
    synced = facts["workdir"]
    if synced.get("error"):
        return "the pod's repo %s has a pod.sync --workdir record that cannot be read (%s): sync again" % (
            repo, synced["error"])
    if synced.get("changed_count"):
        return ("the pod's repo %s changed on the pod after pod.sync --workdir (%d file(s): %s): sync again"
                % (repo, synced["changed_count"], ", ".join(synced["changed"])))
    at = facts.get("commit")
    change = " + uncommitted change %s" % synced["change"][7:19] if synced.get("change") else ""
    if at is None:
        return ("pinned to %s (%s), but %s was sent by pod.sync --workdir from a folder outside git%s"
                % (commit[:12], source, repo, change))
    if not at.startswith(commit):
        return ("the pod's repo %s holds pod.sync --workdir of %s%s, not %s (%s)"
                % (repo, at[:12], change, commit[:12], source))
    return None


def same_origin(one, other):
    """Two remote URLs naming one repository (ssh or https spelling, .git or not)."""
    def plain(url):
        if not isinstance(url, str) or not url.strip():
            return None
        url = re.sub(r"^[a-z+]+://", "", url.strip())
        url = re.sub(r"^[^@/]*@", "", url)  # a user (or a token) before the host
        url = url.replace(":", "/", 1) if re.match(r"^[^/]+:[^/0-9]", url) else url
        return re.sub(r"\.git$", "", url.rstrip("/")).lower()

    return plain(one) is not None and plain(one) == plain(other)


def identity_digest(identity):
    import hashlib

    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def write_identity(entry):
    """.ops/identity.json: what the run in this directory is (run_config's RunSpec.identity)."""
    identity = entry.get("identity")
    if isinstance(identity, dict):
        makedirs(os.path.join(entry["run_dir"], RECORD_DIR))
        write_json(record_path(entry["run_dir"], "identity.json"), dict(identity, digest=identity_digest(identity)))


def identity_difference(run_dir, identity, queued=None):
    """How the run in run_dir (its started attempt's .ops/identity.json, else `queued`, its queue
    entry's) differs from identity (one line), or None: the same run, or one never recorded."""
    old = read_json(record_path(run_dir, "identity.json"))
    old = old if isinstance(old, dict) else queued
    if not isinstance(old, dict) or not isinstance(identity, dict):
        return None
    old = {k: v for k, v in old.items() if k != "digest"}
    if identity_digest(old) == identity_digest(identity):
        return None
    before, after = old.get("config"), identity.get("config")
    before, after = (before if isinstance(before, dict) else {}), (after if isinstance(after, dict) else {})
    changes = ["%s: %s -> %s" % (key, shown_value(before, key), shown_value(after, key))
               for key in sorted(set(before) | set(after), key=str)
               if key not in ("command", "entrypoint") and before.get(key, MISSING_VALUE) != after.get(key, MISSING_VALUE)]
    names_before = set(old.get("env_names") or []) if isinstance(old.get("env_names"), list) else set()
    names_after = set(identity.get("env_names") or [])
    changes += ["env +%s" % n for n in sorted(names_after - names_before, key=str)]
    changes += ["env -%s" % n for n in sorted(names_before - names_after, key=str)]
    if not changes:
        changes = ["command %s -> %s" % (shown_value(old, "command"), shown_value(identity, "command"))]
    return "; ".join(changes[:6]) + ("; ..." if len(changes) > 6 else "")


MISSING_VALUE = object()


def shown_value(holder, key):
    if key not in holder:
        return "(unset)"
    text = json.dumps(holder[key], sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:59] + "…"
