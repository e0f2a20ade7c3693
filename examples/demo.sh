#!/usr/bin/env bash
# The main job, end to end on the `local` profile (`make demo`): check the "pod", serve three
# "models" with the vLLM stand-in, run an evaluation sweep through the run queue (3 models x 2
# seeds), archive, fetch, validate, report, and stop the servers, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
OPS=${OPS:-.venv/bin/ops}
STUB=${STUB:-$PWD/.venv/bin/ops-vllm-stub}
MODELS=(Qwen/Qwen3-0.6B Qwen/Qwen3-4B Qwen/Qwen3-32B)  # configs/demo.json: ports 18001-18003

stop_servers() {
  for i in "${!MODELS[@]}"; do "$OPS" vllm.stop --host local --session "demo$i" >/dev/null || true; done
}
trap stop_servers EXIT

"$OPS" pod.status --host local
for i in "${!MODELS[@]}"; do
  "$OPS" vllm.start --host local --session "demo$i" --vllm-bin "$STUB" --model-id "${MODELS[$i]}" \
    --port "$((18001 + i))" --restart --wait
done
# runs.submit waits for its runs; then the chained tasks take the submission with no ids retyped.
"$OPS" runs.submit --host local --config configs/demo.json --remote-repo "$PWD" --wait \
  artifacts.archive --host local \
  artifacts.fetch --host local
# validate and report take the submission just made (the latest recorded): an earlier demo's runs,
# still in artifacts/pod_logs, are not counted again.
"$OPS" validate
plot=()
if .venv/bin/python -c 'import matplotlib' 2>/dev/null; then plot=(--plot artifacts/report.png); fi
"$OPS" report --group-by model_id "${plot[@]}"
echo "report: artifacts/report.md, artifacts/report.json, artifacts/report.html (open it in a browser)${plot:+, artifacts/report.png}"
