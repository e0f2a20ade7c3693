# vllm_launcher.sh: what tmux runs for vllm.start (`bash LAUNCHER ENV_FILE`): the env from the
# 0600 file, output to the log (and the pane), then exec the server (stub_program, set above this
# script by vllm_start.sh: the stand-in it wrote, run in place of argv[0] `ops-vllm-stub`).
# inputs: owner (the OPS_VLLM_OWNER marker), log, command (argv as one line, for the log),
#   argv (the server's argv, a bash array)
# Secrets stay in the env file; they are never in this script.
#
# exec keeps the server as the pane's own process: its pid is the pane pid. OPS_VLLM_OWNER
# marks every process of this start, so vllm.stop finds workers that outlived the server.

# The server runs in the login's locale, not the C locale of the helpers.
restore_locale
env_file=$1
[ -n "${stub_program-}" ] && argv[0]=$stub_program
# tee is marked too: it lives as long as the server's output does.
export OPS_VLLM_OWNER=$owner
# tee must outlive the pane's hang-up to copy the server's last words (its traceback).
trap '' HUP
exec > >(exec tee -a "$log") 2>&1
trap - HUP
printf '[ops-tasks] %s starting: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$command"
# The marker and the argv are put aside before the env file is read: a name in it (--env
# owner=..., --env OPS_VLLM_OWNER=...) must not change what runs or how it is marked.
set -- "$owner" "${argv[@]}"
set -a
. "$env_file"
set +a
export OPS_VLLM_OWNER=$1
shift
exec "$@"
