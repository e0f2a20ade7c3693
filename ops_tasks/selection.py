"""Which runs a task is about (--run-id, --submission, --all, else the latest submission), and
where on the pod they live: the submission manifests the laptop keeps (records.py) say so."""

from . import records
from .errors import ConfigError
from .names import RUN_ID
from .settings import host_identity, project_dir_of


def run_ids_flag(values) -> list:
    """--run-id values, repeatable or comma-separated, each checked as a run id."""
    ids = [part.strip() for value in values or [] for part in value.split(",") if part.strip()]
    for run_id in ids:
        if not RUN_ID.match(run_id):
            raise ConfigError(f"--run-id {run_id!r}: a run id is letters, digits, '.', '_' and '-' "
                              f"(at most 128, starting with a letter or digit)")
    return ids


def latest_submission(c, target):
    """The submission this command line just made (chained tasks), else the latest to this host."""
    project = project_dir_of(c.config)
    chained = c.config.get("ops_last_submission")
    return (chained and records.load_manifest(project, chained)) or records.latest_manifest(
        project, target.profile.name, host_identity(target.profile))


def outputs_root(flag, manifest, profile) -> str:
    """The pod's outputs root for a task: the flag, else the submission's, else the profile's."""
    return flag or (manifest or {}).get("outputs_dir") or profile.outputs_dir


def select_runs(c, target, run_id, submission, all_runs, remote_outputs_dir, default_latest=True,
                ask_pod=False) -> dict:
    """{"outputs_dir", "run_ids", "run_dirs"[, "submission_id", "runs"]} for a task's flags.

    With a submission, "runs" lists its runs ({run_id, run_dir}) from the local manifest. ask_pod:
    when this folder has no record of a submission to the host (runs from another folder), the
    selection says `latest_submission` instead, and the pod takes its own latest manifest in the
    request the task makes anyway (runtime/reading.with_latest_submission; no "runs" then).
    """
    project = project_dir_of(c.config)
    ids = run_ids_flag(run_id)
    if submission:
        manifest = records.load_manifest(project, submission)
        if manifest is None:
            raise ConfigError(f"no submission {submission} is recorded in {records.manifests_dir(project)}")
    else:
        # Also for --run-id and --all: the latest submission says where its runs live.
        manifest = latest_submission(c, target)
        if manifest is None and not all_runs and ask_pod and not target.profile.is_local:
            # "root": the user named the outputs root; else also where the pod's last submit went.
            return {"outputs_dir": outputs_root(remote_outputs_dir, None, target.profile), "run_ids": ids,
                    "run_dirs": {}, "latest_submission": "root" if remote_outputs_dir else "any"}
        if manifest is None and not ids and not all_runs and default_latest:
            raise ConfigError(f"no submission to {target.profile.name} is recorded in {records.manifests_dir(project)}"
                              f": pass --run-id, --submission or --all")
    outputs = outputs_root(remote_outputs_dir, manifest, target.profile)
    run_dirs = {r["run_id"]: r["run_dir"] for r in (manifest or {}).get("runs", [])}
    selected = {"outputs_dir": outputs, "run_ids": ids, "run_dirs": {i: run_dirs[i] for i in ids if i in run_dirs}}
    if not ids and not all_runs:
        selected["submission_id"] = submission or manifest["submission_id"]
        selected["runs"] = [{"run_id": r["run_id"], "run_dir": r["run_dir"]} for r in manifest.get("runs", [])]
    return selected


def from_pod_note(report: dict):
    """The line a task says when the pod named the submission (ask_pod), else None."""
    if not report.get("submission_from_pod"):
        return None
    return (f"{report['host']}: submission {report['submission_id']} is the pod's latest, from the pod: "
            f"this folder keeps no record of a submission to it")
