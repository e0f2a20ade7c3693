"""Built-in defaults, in one table: what a flag, a profile key or an environment variable means
when nobody set it (precedence: docs/ARCHITECTURE.md, "Hosts and configuration")."""

# Hosts and volumes
HOST = "lium"  # the seed's alias in ~/.ssh/config, also pod.up's default alias
VOLUME = "/mnt"
OUTPUTS_SUBDIR = "pod_artifacts/outputs"  # under the volume
CONNECT_TIMEOUT_S = 10.0

# vLLM
VLLM_SESSION = "vllm"
VLLM_PORT = 8000
VLLM_GRACE_S = 30.0  # SIGINT, then this long before TERM and KILL
VLLM_START_TIMEOUT_S = 900.0  # vllm.start --wait
WAIT_TIMEOUT_S = 86400.0  # runs.wait, runs.submit --wait: no wait is endless (the runs go on after it)

# The run queue
RUNS_SESSION = "pilots"  # the supervisor's tmux session
WATCH_INTERVAL_S = 3.0  # runs.status --watch: seconds between refreshes
RUN_TIMEOUT_S = 24 * 3600.0  # a run's wall-clock budget unless its config says (`timeout: null` opts out)
RUN_STALL_TIMEOUT_S = 30 * 60.0  # a run silent this long is stalled unless its config says
RUN_SYNC_INTERVAL_S = 60.0  # out_mode local_sync: the run directory reaches the volume this often
RUN_LOCAL_DIR = "/tmp/ops-runs"  # out_mode local_sync: runs write under here, on the pod's own disk

# Lium
LIUM_VOLUME_NAME = "my_volume"
LIUM_READY_TIMEOUT_S = 900.0  # pod.up waits this long for SSH

# The laptop's records, under the project directory (ops_tasks/records.py)
LOCAL_RUNS_DIR = "artifacts/pod_logs"  # fetched run directories, one per run id
REPORT_DIR = "artifacts"  # report.md / report.json
SUBMISSIONS_DIR = "artifacts/submissions"  # one manifest per runs.submit
FETCH_RECORDS_DIR = "artifacts/fetched"  # one record per fetched run id, read before a pod goes

# Campaigns (ops campaign: operations/campaign.py)
CAMPAIGNS_DIR = "artifacts/campaigns"  # one folder per campaign: state, each phase's evidence, checklist
CAMPAIGN_READY_TIMEOUT_S = 300.0  # a rented pod reachable over SSH within this, else released and replaced
CAMPAIGN_RENT_ATTEMPTS = 3  # rents per pod before the campaign gives up
CAMPAIGN_WAIT_TIMEOUT_S = WAIT_TIMEOUT_S  # the runs' wait: never infinite
CAMPAIGN_IDLE_POLL_S = 30.0  # --idle-release: seconds between looks at an idle pod
