#!/usr/bin/env bash
# The main job, end to end on the `local` profile (`make demo`), as one campaign
# (examples/demo_campaign.json): check the "pod", serve three "models" with the vLLM stand-in,
# run an evaluation sweep through the run queue (3 models x 2 seeds), fetch, validate, report,
# and stop the servers, also when a phase fails. No rent, no teardown (--teardown keep).
# Each `make demo` starts the campaign afresh; RESTART=0 resumes it at its first phase not done instead.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${OPS:-.venv/bin/ops}
STUB=${STUB:-$PWD/.venv/bin/ops-vllm-stub}
CONFIG=examples/demo_campaign.json

"$OPS" pod.status --host local
if [ "${RESTART:-1}" = 1 ]; then
  # A demo shows every phase: the campaign this config and host name is started afresh.
  id=$("$OPS" campaign --host local --config "$CONFIG" --dry-run --json | .venv/bin/python -c \
    'import json, sys; print(json.load(sys.stdin)["campaign_id"])')
  rm -rf "artifacts/campaigns/$id"
fi
"$OPS" campaign --host local --config "$CONFIG" --vllm-bin "$STUB" --teardown keep
cat artifacts/report.md
echo "report: artifacts/report.md, artifacts/report.json, artifacts/report.html (open it in a browser)"
echo "campaign record: artifacts/campaigns/ (state.json, each phase's evidence, checklist.md)"
