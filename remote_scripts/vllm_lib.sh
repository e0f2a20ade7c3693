# ---- vllm_lib.sh: a vLLM session's files, its process tree and its port (vllm_*.sh).
# inputs used: volume, session
# Reading /proc with bash builtins: a stop may look at every process several times, and a
# fork per look would cost more than the whole round trip.

vllm_dir=$volume/vllm
log_dir=$vllm_dir/logs
state_file=$vllm_dir/$session.json
# Pod-local disk, never the volume: the env file holds secrets
# (docs/ARCHITECTURE.md, "Quoting, ids and secrets").
private_dir=$HOME/.ops/vllm
env_file=$private_dir/$session.env
launcher_file=$private_dir/$session.sh

boot_id=''
[ -r /proc/sys/kernel/random/boot_id ] && read -r boot_id < /proc/sys/kernel/random/boot_id

# proc_stat PID: ps_state, ps_ppid, ps_sid, ps_start (start time in ticks) of PID; 1 when gone.
proc_stat() {
  local _ops_line
  # An empty PID would read /proc//stat, which is /proc/stat: the system's counters.
  [[ ${1-} =~ ^[0-9]+$ ]] || return 1
  { read -r _ops_line < "/proc/$1/stat"; } 2>/dev/null || return 1
  # The command name is in parentheses and may hold spaces: split after the last ')'.
  set -- ${_ops_line##*) }
  [ $# -ge 20 ] || return 1  # a name with a newline in it: unreadable, and not ours
  ps_state=$1 ps_ppid=$2 ps_sid=$4 ps_start=${20}
}

# alive PID: true while PID runs (a zombie counts as gone).
alive() {
  proc_stat "$1" && [ "$ps_state" != Z ]
}

# proc_cmdline VAR PID: VAR becomes PID's argv joined by spaces (at most 300 characters).
proc_cmdline() {
  local -a _ops_argv=()
  { mapfile -d '' _ops_argv < "/proc/$2/cmdline"; } 2>/dev/null
  local _ops_text="${_ops_argv[*]}"
  printf -v "$1" '%s' "${_ops_text:0:300}"
}

# read_state: state_* of this session's state file; state_pid only while that very process
# runs (same boot, same start time), so that a reused pid is never taken for the server.
# state_owner is the marker (OPS_VLLM_OWNER=...) in the environment of everything that start
# launched: it finds the workers a crashed server left behind, and nothing else.
read_state() {
  state_json='' state_pid='' state_owner='' state_port='' state_log='' state_started=''
  [ -r "$state_file" ] || return 0
  state_json=$(<"$state_file")
  local re_pid='"pid": ?([0-9]+)' re_start='"pid_start": ?([0-9]+)' re_boot='"boot_id": ?"([^"]*)"'
  local re_owner='"owner": ?"([A-Za-z0-9_-]+)"' re_port='"port": ?([0-9]+)' re_log='"log": ?"([^"]*)"'
  local re_at='"started_at": ?([0-9]+)' pid='' start='' boot=''
  [[ $state_json =~ $re_pid ]] && pid=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_start ]] && start=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_boot ]] && boot=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_owner ]] && state_owner=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_port ]] && state_port=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_log ]] && state_log=${BASH_REMATCH[1]}
  [[ $state_json =~ $re_at ]] && state_started=${BASH_REMATCH[1]}
  if [ -n "$pid" ] && [ "$boot" = "$boot_id" ] && alive "$pid" && [ "$ps_start" = "$start" ]; then
    state_pid=$pid
  fi
}

# session_alive: true when this session's tmux session exists ('=' asks for the exact name).
session_alive() {
  tmux_cmd has-session -t "=$session" 2>/dev/null
}

# session_pane_pids: pane_pids = the pids of the session's panes (none when no session).
session_pane_pids() {
  pane_pids=()
  session_alive || return 0
  mapfile -t pane_pids < <(tmux_cmd list-panes -s -t "=$session" -F '#{pane_pid}' 2>/dev/null)
}

# has_owner_mark PID: true when PID's environment carries this start's owner marker
# (OPS_VLLM_OWNER=state_owner); read with builtins, as /proc/PID/stat is.
has_owner_mark() {
  local -a _ops_env=()
  local _ops_var
  [ -n "${state_owner-}" ] || return 1
  { mapfile -d '' _ops_env < "/proc/$1/environ"; } 2>/dev/null || return 1
  for _ops_var in "${_ops_env[@]}"; do
    [ "$_ops_var" = "OPS_VLLM_OWNER=$state_owner" ] && return 0
  done
  return 1
}

# session_owner: who holds this session (call read_state first). session_state is none (no
# such session), ours (every pane runs what the state file's start launched: its very pid, or
# a process carrying its owner marker) or foreign (the user's own session of the same name, or
# one that now runs something else); own_panes and foreign_panes split the panes' pids.
# vLLM tasks act on their own panes only (docs/ARCHITECTURE.md, "vLLM ownership").
session_owner() {
  local _ops_pid
  session_state=none own_panes=() foreign_panes=()
  session_alive || return 0
  session_pane_pids
  for _ops_pid in "${pane_pids[@]}"; do
    if { [ -n "$state_pid" ] && [ "$_ops_pid" = "$state_pid" ]; } || has_owner_mark "$_ops_pid"; then
      own_panes+=("$_ops_pid")
    else
      foreign_panes+=("$_ops_pid")
    fi
  done
  if [ ${#foreign_panes[@]} -gt 0 ] || [ ${#own_panes[@]} -eq 0 ]; then session_state=foreign; else session_state=ours; fi
}

# foreign_session_json VAR: VAR becomes {"panes":[{"pid","command"}..],"state_file":bool} for a
# foreign session (session_owner), else null.
foreign_session_json() {
  if [ "$session_state" != foreign ]; then printf -v "$1" 'null'; return 0; fi
  local _ops_panes _ops_found=0
  pids_json _ops_panes "${foreign_panes[@]}"
  [ -n "$state_json" ] && _ops_found=1
  json_bool _ops_found "$_ops_found"
  printf -v "$1" '{"panes":%s,"state_file":%s}' "$_ops_panes" "$_ops_found"
}

# forget_env_file: remove the env file of secrets (and any half-written one): its server is
# gone, or never started.
forget_env_file() {
  rm -f "$env_file" "$env_file".tmp.*
}

# tree_of PID...: tree_pids = those processes, their descendants, every process of their
# sessions, and every process carrying this start's owner marker (state_owner): vLLM's engine
# and tensor-parallel workers outlive a killed server, re-parented to init and out of reach of
# the tree, but they keep the environment the launcher gave them.
tree_of() {
  tree_pids=()
  local -A _ops_sids=() _ops_parent=() _ops_in=()
  local _ops_pid _ops_dir _ops_self_sid='' _ops_changed=1 _ops_marked
  proc_stat $$ && _ops_self_sid=$ps_sid
  for _ops_pid in "$@"; do
    [ -n "$_ops_pid" ] && [ "$_ops_pid" != 1 ] && alive "$_ops_pid" || continue
    _ops_in[$_ops_pid]=1
    # Never our own session (this script's): only a pane's or the server's.
    [ "$ps_sid" != "$_ops_self_sid" ] && [ "$ps_sid" != 0 ] && _ops_sids[$ps_sid]=1
  done
  if [ -n "${state_owner-}" ]; then
    while IFS= read -r _ops_marked; do
      _ops_pid=${_ops_marked#/proc/} _ops_pid=${_ops_pid%%/*}
      alive "$_ops_pid" && _ops_in[$_ops_pid]=1
    done < <(grep -lzx "OPS_VLLM_OWNER=$state_owner" /proc/[0-9]*/environ 2>/dev/null)
  fi
  [ ${#_ops_in[@]} -gt 0 ] || return 0
  for _ops_dir in /proc/[0-9]*; do
    _ops_pid=${_ops_dir#/proc/}
    alive "$_ops_pid" || continue
    _ops_parent[$_ops_pid]=$ps_ppid
    [ -n "${_ops_sids[$ps_sid]-}" ] && _ops_in[$_ops_pid]=1
  done
  # Descendants that left the session (setsid) still count: a fixed point over parents.
  while [ $_ops_changed = 1 ]; do
    _ops_changed=0
    for _ops_pid in "${!_ops_parent[@]}"; do
      if [ -z "${_ops_in[$_ops_pid]-}" ] && [ -n "${_ops_in[${_ops_parent[$_ops_pid]}]-}" ]; then
        _ops_in[$_ops_pid]=1 _ops_changed=1
      fi
    done
  done
  unset "_ops_in[$$]"
  tree_pids=("${!_ops_in[@]}")
}

# remember_starts PID...: note each process's start time (in tree_start).
# same_of PID...: same_pids = those still running as the very process noted (a pid the kernel
# gave to a new process meanwhile is not ours).
declare -A tree_start=()
remember_starts() {
  local _ops_pid
  for _ops_pid in "$@"; do proc_stat "$_ops_pid" && tree_start[$_ops_pid]=$ps_start; done
  return 0
}
same_of() {
  same_pids=()
  local _ops_pid
  for _ops_pid in "$@"; do
    alive "$_ops_pid" && [ "$ps_start" = "${tree_start[$_ops_pid]-}" ] && same_pids+=("$_ops_pid")
  done
  return 0
}

# alive_of PID...: alive_pids = those still running.
alive_of() {
  alive_pids=()
  local _ops_pid
  for _ops_pid in "$@"; do alive "$_ops_pid" && alive_pids+=("$_ops_pid"); done
  return 0
}

# port_listener PORT: true when a TCP socket listens on PORT; port_inode is its inode.
port_listener() {
  local _ops_hex _ops_local _ops_state _ops_inode
  printf -v _ops_hex '%04X' "$1"
  port_inode=''
  # bash reads /proc files a byte at a time (a busy host lists thousands of sockets there):
  # one grep keeps the listening ones (state 0A), and bash looks at those few.
  while read -r _ _ops_local _ _ops_state _ _ _ _ _ _ops_inode _; do
    if [ "$_ops_state" = 0A ] && [ "${_ops_local##*:}" = "$_ops_hex" ]; then
      port_inode=$_ops_inode
      return 0
    fi
  done < <(grep -h ' 0A ' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  return 1
}

# port_owner_json VAR PORT: VAR becomes {"pid":..,"command":..} of what listens on PORT, or null.
port_owner_json() {
  if ! port_listener "$2"; then printf -v "$1" 'null'; return 0; fi
  local _ops_fd _ops_pid='' _ops_cmd='' _ops_pid_json _ops_cmd_json
  # Only the owner of the socket inode knows it: one find over the fd links.
  _ops_fd=$(find /proc/[0-9]*/fd -lname "socket:?$port_inode?" -print -quit 2>/dev/null)
  if [ -n "$_ops_fd" ]; then
    _ops_pid=${_ops_fd#/proc/} _ops_pid=${_ops_pid%%/*}
    proc_cmdline _ops_cmd "$_ops_pid"
  fi
  json_num _ops_pid_json "$_ops_pid"
  json_str _ops_cmd_json "${_ops_cmd:-unknown (a process of another user)}"
  printf -v "$1" '{"pid":%s,"command":%s}' "$_ops_pid_json" "$_ops_cmd_json"
}

# gpu_memory_json VAR: VAR becomes the MiB used per GPU (a JSON list), or null without nvidia-smi.
gpu_memory_json() {
  local _ops_out _ops_list='' _ops_line
  if ! command -v nvidia-smi >/dev/null 2>&1 \
    || ! _ops_out=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null); then
    printf -v "$1" 'null'
    return 0
  fi
  while read -r _ops_line; do
    [[ $_ops_line =~ ^[0-9]+$ ]] && _ops_list+=${_ops_list:+,}$_ops_line
  done <<< "$_ops_out"
  printf -v "$1" '[%s]' "$_ops_list"
}

# pids_json VAR PID...: VAR becomes [{"pid":..,"command":..},...] for the running ones.
pids_json() {
  local _ops_var=$1 _ops_pid _ops_cmd _ops_cmd_json _ops_list=''
  shift
  for _ops_pid in "$@"; do
    alive "$_ops_pid" || continue
    proc_cmdline _ops_cmd "$_ops_pid"
    json_str _ops_cmd_json "$_ops_cmd"
    _ops_list+="${_ops_list:+,}{\"pid\":$_ops_pid,\"command\":$_ops_cmd_json}"
  done
  printf -v "$_ops_var" '[%s]' "$_ops_list"
}

# now_ms VAR: VAR becomes the time in milliseconds (whole seconds before bash 5).
now_ms() {
  if [ -n "${EPOCHREALTIME-}" ]; then
    local _ops_us=${EPOCHREALTIME/[.,]/}
    printf -v "$1" '%s' "$((_ops_us / 1000))"
  else
    printf -v "$1" '%(%s)T000' -1
  fi
}

# ints_json VAR N...: VAR becomes the JSON list [N,...].
ints_json() {
  local _ops_var=$1 IFS=,
  shift
  printf -v "$_ops_var" '[%s]' "$*"
}

# stop_tree GRACE_MS: interrupt the server, wait up to GRACE_MS, then TERM and KILL what is left
# of its process tree; kill the tmux session. Sets stop_report (JSON object fields).
stop_tree() {
  local grace_ms=$1 term_grace_ms=5000 roots=() gone_int=() gone_term=() gone_kill=() pid
  local all_json int_json term_json kill_json left_json
  read_state
  session_owner
  # A foreign session's panes are no roots: only what this start launched is stopped.
  roots=(${state_pid:+"$state_pid"} "${own_panes[@]}")
  tree_of "${roots[@]}"
  local tree=("${tree_pids[@]}")
  remember_starts "${tree[@]}"
  pids_json all_json "${tree[@]}"
  local main=${state_pid:-${own_panes[0]-}}
  if [ ${#tree[@]} -gt 0 ]; then
    # 1. SIGINT to the server: vLLM shuts its engine down cleanly on Ctrl-C.
    [ -n "$main" ] && kill -INT "$main" 2>/dev/null
    wait_gone "$grace_ms" "$main"
    split_gone gone_int "${tree[@]}"
    # 2. SIGTERM to every process left, 3. SIGKILL to what survives that. Only the very
    # processes found at first: a pid reused meanwhile belongs to someone else.
    same_of "${tree[@]}"
    local left=("${same_pids[@]}")
    if [ ${#left[@]} -gt 0 ]; then
      kill -TERM "${left[@]}" 2>/dev/null
      wait_gone "$term_grace_ms" "${left[@]}"
      split_gone gone_term "${left[@]}"
      same_of "${left[@]}"
      if [ ${#same_pids[@]} -gt 0 ]; then
        local stubborn=("${same_pids[@]}")
        kill -KILL "${stubborn[@]}" 2>/dev/null
        wait_gone 5000 "${stubborn[@]}"
        split_gone gone_kill "${stubborn[@]}"
      fi
    fi
  fi
  local session_killed=0 foreign_json
  if [ "$session_state" = ours ] && session_alive; then
    tmux_cmd kill-session -t "=$session" 2>/dev/null && session_killed=1
  fi
  foreign_session_json foreign_json
  same_of "${tree[@]}"
  pids_json left_json "${same_pids[@]}"
  [ ${#same_pids[@]} -eq 0 ] && forget_env_file
  ints_json int_json "${gone_int[@]}"
  ints_json term_json "${gone_term[@]}"
  ints_json kill_json "${gone_kill[@]}"
  json_bool session_killed "$session_killed"
  stop_report="\"processes\":$all_json,\"ended_by\":{\"INT\":$int_json,\"TERM\":$term_json,\"KILL\":$kill_json},\"left\":$left_json,\"session_killed\":$session_killed,\"foreign_session\":$foreign_json"
  # The state file stays (status and logs still find the log); it records the stop.
  if [ -n "$state_json" ] && [ ${#same_pids[@]} -eq 0 ] && [[ $state_json != *'"stopped_at"'* ]]; then
    local now
    printf -v now '%(%s)T' -1
    write_state "{\"stopped_at\":$now,${state_json#\{}"
  fi
}

# wait_gone MS PID...: wait until none of PID... runs, at most MS milliseconds.
wait_gone() {
  local _ops_limit=$1 _ops_start _ops_now
  shift
  now_ms _ops_start
  while :; do
    alive_of "$@"
    [ ${#alive_pids[@]} -eq 0 ] && return 0
    now_ms _ops_now
    [ $((_ops_now - _ops_start)) -lt "$_ops_limit" ] || return 1
    sleep 0.1
  done
}

# split_gone VAR PID...: VAR (an array) gets the PIDs that no longer run.
split_gone() {
  local -n _ops_gone=$1
  local _ops_pid
  shift
  for _ops_pid in "$@"; do alive "$_ops_pid" || _ops_gone+=("$_ops_pid"); done
}

# write_state TEXT: replace the state file atomically.
write_state() {
  printf '%s\n' "$1" > "$state_file.tmp.$$" && mv -f "$state_file.tmp.$$" "$state_file"
}

# curl_auth_config KEY: a curl config (for -K -) sending KEY as a bearer token; nothing without
# a key. The key travels on curl's stdin, never its argv; \ and " are escaped for the config.
curl_auth_config() {
  [ -n "${1-}" ] || return 0
  local _ops_key=${1//\\/\\\\}
  _ops_key=${_ops_key//\"/\\\"}
  printf 'header = "Authorization: Bearer %s"\n' "$_ops_key"
}
