# exec.sh: one command (ops exec) in a login shell, in its own process group, its output the
# channel's own stdout and stderr as it comes; a deadline; stopped when the caller hangs up.
# inputs: command, workdir (empty: $HOME), timeout_ms (0: none), grace_ms, env_count, mark
# stdin after this script: env_count lines NAME=<base64 of the value> (may hold secrets: they
# reach the command's environment from here, never argv), then nothing: the caller holds stdin
# open until it is done, so its end (Ctrl-C, a lost link) stops the command.
# The script's own last line on stderr is "<mark> {json}"; mark is a fresh nonce per call, so
# the command's output cannot pass for it.

exec_now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then
    exec_now=$(( ${EPOCHREALTIME/./} / 1000 ))
  else
    exec_now=$(( SECONDS * 1000 ))
  fi
}

# exec_end_group PGID: TERM the process group, KILL what is left after grace_ms.
exec_end_group() {
  kill -TERM -- "-$1" 2>/dev/null || return 0
  exec_now_ms
  local until=$(( exec_now + grace_ms ))
  while kill -0 -- "-$1" 2>/dev/null; do
    exec_now_ms
    if (( exec_now >= until )); then
      kill -KILL -- "-$1" 2>/dev/null
      return 0
    fi
    sleep 0.05
  done
}

exec_report() {  # exec_report EXIT_CODE TIMED_OUT(0/1) STOPPED(0/1) ERROR
  local timed_json stopped_json error_json=null
  json_bool timed_json "$2"
  json_bool stopped_json "$3"
  [ -n "$4" ] && json_str error_json "$4"
  printf '%s {"exit_code":%s,"timed_out":%s,"stopped":%s,"error":%s}\n' \
    "$mark" "$1" "$timed_json" "$stopped_json" "$error_json" >&2
}

exec_main() {
  local line name value i pid rc timed_out=0 stopped=0 deadline=0 status
  trap '' PIPE  # the caller gone: this script must still end the command
  for (( i = 0; i < env_count; i++ )); do
    IFS= read -r line || break
    name=${line%%=*}
    # printf is a builtin and base64 reads a pipe: the value is in no process's argv.
    value=$(printf '%s' "${line#*=}" | base64 -d; printf x)
    export "$name=${value%x}"
  done
  local dir=${workdir:-$HOME}
  if ! cd -- "$dir" 2>/dev/null; then
    exec_report 2 0 0 "no such folder on the pod: $dir"
    return 2
  fi
  if ! command -v setsid >/dev/null 2>&1; then
    exec_report 2 0 0 "setsid (util-linux) is not installed on the pod"
    return 2
  fi
  restore_locale
  # A background job of a non-interactive bash shares our process group, so setsid does not
  # fork: $! is the new group's leader, and its id the group's.
  setsid bash -l -c "$command" </dev/null &
  pid=$!
  if (( timeout_ms > 0 )); then
    exec_now_ms
    deadline=$(( exec_now + timeout_ms ))
  fi
  while kill -0 "$pid" 2>/dev/null; do
    IFS= read -r -t 0.1 line
    status=$?
    if (( status > 0 && status <= 128 )); then  # end of stdin: the caller hung up
      stopped=1
      break
    fi
    if (( deadline > 0 )); then
      exec_now_ms
      if (( exec_now >= deadline )); then
        timed_out=1
        break
      fi
    fi
  done
  # The command's leftovers (its background jobs) end with it: nothing outlives an exec.
  exec_end_group "$pid"
  wait "$pid"
  rc=$?
  (( timed_out )) && rc=124
  exec_report "$rc" "$timed_out" "$stopped" ""
  return "$rc"
}

exec_main; exit $?
