"""`campaign`: one command from a run config to released pods, resumable (docs/ARCHITECTURE.md,
"Campaigns"; the phases are operations/campaign.py's).

    ops campaign --config sweep.json --pods 2 --gpu A100 --count 8 --teardown release
    ops campaign --config sweep.json -H pod-a,pod-b          # existing hosts, kept

Running the same command again resumes at the first phase not done: the campaign's id comes
from the config (its path and content) and where it runs, so no id is typed.
"""

import json
from pathlib import Path

from invoke import Collection

from . import defaults, records
from .errors import ConfigError
from .flags import count_flag, seconds_flag
from .output import dry_run_requested, log, ops_task, stopped
from .settings import env_value, project_dir_of
from .tables import tabulate

CAMPAIGN_KEYS = ("servers", "sync", "report")
SYNC_KEYS = ("repo_url", "branch", "ref", "install")
RENTED_POD = "root@rented-pod.invalid:22"  # never contacted: what a config is checked against before renting


def render_campaign(data: dict) -> str:
    if data.get("dry_run"):
        head = f"# dry run: nothing contacted, nothing rented, nothing written (campaign {data['campaign_id']})"
        where = (f"would rent {data['would_rent']['pods']} pod(s) of {data['would_rent']['gpu']}"
                 + (f" x{data['would_rent']['count']}" if data['would_rent']['count'] else "")
                 if data.get("would_rent") else f"on {', '.join(data['hosts'] or [])}")
        rows = [(r["phase"], "run" if r["would_run"] else "done", r["outcome"], r["title"]) for r in data["phases"]]
        return "\n".join([head, f"{where}; teardown {data['teardown']}",
                          tabulate(rows, headers=("phase", "would", "recorded", "what"), tablefmt="simple")])
    verdict = "OK" if data["ok"] else (f"STOPPED at {data['stopped_at']}" if data.get("stopped_at") else "NOT OK")
    lines = [f"campaign {data['campaign_id']}: {verdict} ({data['dir']})"]
    rows = [(r["phase"], r["outcome"], (r.get("error") if r["outcome"] in ("failed", "not_ok") else r.get("summary"))
             or "") for r in data["phases"]]
    lines.append(tabulate(rows, headers=("phase", "outcome", "detail"), tablefmt="simple"))
    for pod in data.get("rented") or []:
        state = "released" if pod.get("released") else "kept, billing"
        price = f"${pod['price_per_hour']:.2f}/h" if pod.get("price_per_hour") is not None else "price unknown"
        lines.append(f"pod {pod['name']} ({pod.get('id')}): {state}, {price}")
    if data.get("error"):
        lines.append(f"error: {data['error']}")
    if not data["ok"]:
        outcomes = {r["phase"]: r["outcome"] for r in data["phases"]}
        if any(o not in ("ok", "skipped", "not_ok") for o in outcomes.values()):
            lines.append("run the same command again to resume at the first phase not done")
        elif outcomes.get("wait") == "not_ok":
            lines.append("every phase has run; runs that failed stay failed: run the same command with "
                         "--retry-failed to run them again (then fetch, validate, report and teardown again)")
        else:
            lines.append("every phase has run: what is not ok is said above")
    return "\n".join(lines)


def _read_config(path) -> tuple:
    """(raw bytes, the config's `campaign` section) of a JSON run config; one line for anything wrong."""
    file = Path(path).expanduser()
    try:
        content = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc.strerror}") from None
    if file.suffix.lower() != ".json":
        return content, {}
    try:
        top = json.loads(content)
    except ValueError:
        return content, {}  # load_submission names the line and column
    section = top.get("campaign") if isinstance(top, dict) else None
    if section is None:
        return content, {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: campaign must be an object of {', '.join(CAMPAIGN_KEYS)}")
    unknown = sorted(set(section) - set(CAMPAIGN_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key campaign.{unknown[0]} (known: {', '.join(CAMPAIGN_KEYS)})")
    return content, section


def _servers(section: dict, path, profile, vllm_bin) -> tuple:
    from .operations.vllm_spec import build_spec

    servers = section.get("servers") or []
    if not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers):
        raise ConfigError(f"{path}: campaign.servers must be a list of objects (model_id, port, session, ...)")
    specs = []
    for index, server in enumerate(servers):
        if "env" in server:
            raise ConfigError(f"{path}: campaign.servers[{index}].env: a server's env (secrets) stays out of the "
                              f"config; set it in the host profile's vllm.env")
        options = {**server, **({"vllm_bin": vllm_bin} if vllm_bin else {})}
        try:
            specs.append(build_spec(options, dict(profile.vllm)))
        except ConfigError as exc:
            raise ConfigError(f"{path}: campaign.servers[{index}]: {exc}") from None
    sessions = [s.session for s in specs]
    if len(set(sessions)) != len(sessions):
        raise ConfigError(f"{path}: campaign.servers: two servers share a tmux session; give each its own session")
    return tuple(specs)


def _sync(section: dict, path, expect_commit) -> dict:
    sync = section.get("sync")
    if sync is None:
        return {"ref": expect_commit} if expect_commit else None
    if not isinstance(sync, dict) or set(sync) - set(SYNC_KEYS) or not all(isinstance(v, str) and v and
                                                                               not v.startswith("-")
                                                                               for v in sync.values()):
        raise ConfigError(f"{path}: campaign.sync must be an object of {', '.join(SYNC_KEYS)}, each a non-empty "
                          f"string without a leading '-'")
    if sum(key in sync for key in ("branch", "ref")) > 1:
        raise ConfigError(f"{path}: campaign.sync: give branch or ref, not both")
    return dict(sync)


def _expect_commit(content: bytes):
    try:
        top = json.loads(content)
    except ValueError:
        return None
    return top.get("expect_commit") if isinstance(top, dict) and isinstance(top.get("expect_commit"), str) else None


HELP = {
    "config": "Run config (JSON): its runs, and a `campaign` section: servers (vLLM), sync (repo_url, branch "
              "or ref, install), report (group_by).",
    "host": "Existing host or fleet to run on (or ops -H); not with --pods.",
    "pods": "Rent this many Lium pods (with --gpu) instead of using hosts.",
    "gpu": "With --pods: GPU type to rent (A100, H100, ...): the cheapest executor that matches.",
    "count": "With --pods: exactly this many GPUs per pod.",
    "country": "With --pods: only executors in this country.",
    "volume": "With --pods: Lium volume to attach (default: $LIUM_DEFAULT_VOLUME, else my_volume).",
    "ssh_key": "With --pods: private SSH key to authorize on the pods (default: the SDK's).",
    "teardown": "release (only once every run is fetched, validated and reported) or keep (default).",
    "ready_timeout": f"Seconds a rented pod has to answer SSH before it is released and another rented, and a "
                     f"pod that stops answering during the wait before its runs go to the other pods "
                     f"(default {defaults.CAMPAIGN_READY_TIMEOUT_S:.0f}).",
    "rent_attempts": f"Rents per pod before giving up (default {defaults.CAMPAIGN_RENT_ATTEMPTS}).",
    "wait_timeout": f"Seconds to wait for the runs (default {defaults.CAMPAIGN_WAIT_TIMEOUT_S:.0f}: 24 h).",
    "vllm_timeout": f"Seconds each vLLM server has to serve (default {defaults.VLLM_START_TIMEOUT_S:.0f}).",
    "idle_release": "With --teardown keep: release a rented pod idle (nothing queued or running) this many "
                    "minutes after its work is fetched; warn about a host that is not the campaign's.",
    "vllm_bin": "The vLLM program for every server of the config (ops-vllm-stub: the stand-in, sent to each pod).",
    "campaign": "Name the campaign explicitly instead of deriving its id from the config and hosts.",
    "retry_failed": "Run the campaign's failed runs again (not cancelled ones), each on its pod, then fetch, "
                    "validate, report and teardown again.",
}


@ops_task(human=render_campaign, help=HELP)
def campaign(c, config, host=None, pods=None, gpu=None, count=None, country=None, volume=None, ssh_key=None,
             teardown=None, ready_timeout=None, rent_attempts=None, wait_timeout=None, vllm_timeout=None,
             idle_release=None, vllm_bin=None, campaign=None, retry_failed=False):
    """Run a config end to end: rent or reuse, bootstrap, sync, vLLM, runs, fetch, validate, report, teardown."""
    from .operations.campaign import run_campaign, would_run

    spec = _spec(c, config, host, pods, gpu, count, country, volume, ssh_key, teardown, ready_timeout,
                 rent_attempts, wait_timeout, vllm_timeout, idle_release, vllm_bin, campaign)
    if retry_failed:
        from dataclasses import replace

        spec = replace(spec, retry_failed=True)
    project = project_dir_of(c.config)
    if dry_run_requested():
        return would_run(spec, project)
    env = _env(c, spec, project)
    try:
        return run_campaign(spec, env)
    except KeyboardInterrupt as exc:
        raise stopped(exc, "the campaign's runs go on on the pods: run the same command again to resume") from None


def _spec(c, config, host, pods, gpu, count, country, volume, ssh_key, teardown, ready_timeout, rent_attempts,
          wait_timeout, vllm_timeout, idle_release, vllm_bin, campaign_id):
    """Every flag and the config checked, before anything is contacted or rented."""
    from .fleet import resolve_hosts
    from .operations.campaign import CampaignSpec, campaign_id_of, check_teardown, config_hash, lium_pod_behind
    from .operations.run_config import load_submission
    from .settings import resolve_profile

    policy = check_teardown(teardown)
    n_pods = count_flag("--pods", pods, 0)
    if n_pods and host:
        raise ConfigError("campaign: --pods rents new pods and --host/-H names existing ones: pass one of them")
    if n_pods and not gpu:
        raise ConfigError("campaign --pods needs --gpu TYPE (A100, H100, ...)")
    if not n_pods and (gpu or count or country or volume or ssh_key):
        raise ConfigError("campaign: --gpu, --count, --country, --volume and --ssh-key go with --pods N")
    gpus = count_flag("--count", count, None) if count is not None else None
    content, section = _read_config(config)
    project = project_dir_of(c.config)
    ops_config = c.config.get("ops")
    # A pod not rented yet is checked as a raw address of no profile (the environment's settings apply).
    if n_pods:
        profiles = [resolve_profile(ops_config, RENTED_POD, project)]
    else:
        profiles = resolve_hosts(ops_config, host, project)
    # The config checked against each host's profile now, before any contact.
    for profile in profiles:
        load_submission(config, profile=profile, project_dir=project)
    where = f"lium:{n_pods}x{gpu}x{gpus}x{country}" if n_pods else ",".join(p.name for p in profiles)
    key = _rent_key(ssh_key) if n_pods else {}
    if policy == "release" and not n_pods and any(lium_pod_behind(p.name) for p in profiles):
        _lium_credentials()  # a pod.up pod among the hosts is released through Lium: checked now
    if campaign_id is not None:
        records.campaign_dir(project, campaign_id)  # the id's shape, checked now
    return CampaignSpec(
        campaign_id=campaign_id or campaign_id_of(config, content, where), config=str(config),
        config_hash=config_hash(content), hosts=() if n_pods else tuple(p.name for p in profiles), pods=n_pods,
        gpu=gpu, count=gpus, country=country,
        volume_name=(volume or env_value("LIUM_DEFAULT_VOLUME") or defaults.LIUM_VOLUME_NAME) if n_pods else None,
        public_key=key.get("public_key"), private_key=key.get("private"), teardown=policy,
        ready_timeout_s=seconds_flag("--ready-timeout", ready_timeout, defaults.CAMPAIGN_READY_TIMEOUT_S),
        rent_attempts=count_flag("--rent-attempts", rent_attempts, defaults.CAMPAIGN_RENT_ATTEMPTS),
        wait_timeout_s=seconds_flag("--wait-timeout", wait_timeout, defaults.CAMPAIGN_WAIT_TIMEOUT_S),
        vllm_timeout_s=seconds_flag("--vllm-timeout", vllm_timeout, defaults.VLLM_START_TIMEOUT_S),
        idle_release_s=None if idle_release is None else 60 * seconds_flag("--idle-release", idle_release, None),
        servers=_servers(section, config, profiles[0], vllm_bin),
        sync=_sync(section, config, _expect_commit(content)),
        group_by=(section.get("report") or {}).get("group_by") if isinstance(section.get("report"), dict) else None,
    )


def _rent_key(ssh_key) -> dict:
    """The SDK, its credentials and the SSH key, checked before anything is rented."""
    from .operations.lium import ssh_key_pair

    _lium_credentials()
    return ssh_key_pair(ssh_key)


def _lium_credentials() -> None:
    from .operations.lium import load_sdk, open_client

    load_sdk("campaign")
    open_client("campaign")  # no key configured: one line, exit 2, nothing contacted


def _env(c, spec, project):
    from .operations.campaign import Env
    from .operations.lium import open_client
    from .operations.run_config import load_submission
    from .settings import resolve_profile
    from .targets import target_for

    ops_config = c.config.get("ops")

    def target(name):
        return target_for(resolve_profile(ops_config, name, project), invoke_config=c.config)

    def submission(profile, now=None):
        return load_submission(spec.config, profile=profile, project_dir=project, now=now)

    return Env(project_dir=project, target=target, submission=submission,
               lium=lambda: open_client("campaign"), log=log)


ns = Collection("campaign")
ns.add_task(campaign, default=True)
