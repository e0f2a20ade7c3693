# vllm_start.sh: start a vLLM server detached in tmux; with `wait`, follow it until it serves.
# inputs: volume, session, tmux_socket, port, launcher (the launcher script's text), log, owner,
#   state_fields (JSON object of what the state file records), restart, grace_ms, wait,
#   timeout_ms, models_url, served_name, stub_bytes (0, or the size of the vLLM stand-in's program)
# stdin after this script: the stand-in's program (stub_bytes of it), then the env file
# (KEY='value' lines; may hold secrets).
# While waiting, stderr carries "L|<server log line>" and "T|<seconds>" lines for the progress.

start_main() {
  local restart_json=null owner_json state_text pid now hostname_json
  mkdir -p "$log_dir" "$private_dir" && chmod 700 "$private_dir" "$HOME/.ops" || {
    printf '{"started":false,"refused":"volume","error":"cannot create %s"}\n' "$log_dir"
    return 0
  }
  if [ -n "$restart" ]; then
    stop_tree "$grace_ms"
    restart_json="{$stop_report}"
  fi
  read_state
  json_str state_text "$state_json"
  session_owner
  if [ "$session_state" = foreign ]; then
    local foreign_json
    foreign_session_json foreign_json
    printf '{"started":false,"refused":"foreign-session","foreign_session":%s,"state":%s,"restarted":%s}\n' \
      "$foreign_json" "$state_text" "$restart_json"
    return 0
  fi
  if [ "$session_state" = ours ]; then
    printf '{"started":false,"refused":"session","state":%s,"restarted":%s}\n' "$state_text" "$restart_json"
    return 0
  fi
  # The session may be gone while the last server's workers live on (holding GPU memory): a new
  # state file would lose track of them.
  tree_of ${state_pid:+"$state_pid"}
  if [ ${#tree_pids[@]} -gt 0 ]; then
    local left_json
    pids_json left_json "${tree_pids[@]}"
    printf '{"started":false,"refused":"leftovers","leftovers":%s,"state":%s,"restarted":%s}\n' \
      "$left_json" "$state_text" "$restart_json"
    return 0
  fi
  port_owner_json owner_json "$port"
  if [ "$owner_json" != null ]; then
    printf '{"started":false,"refused":"port","port_owner":%s,"state":%s,"restarted":%s}\n' \
      "$owner_json" "$state_text" "$restart_json"
    return 0
  fi
  # --vllm-bin ops-vllm-stub: the stand-in, replaced at each start (head -c reads no byte past it).
  local stub_file=''
  if [ "${stub_bytes:-0}" -gt 0 ]; then
    stub_file=$private_dir/bin/ops-vllm-stub
    mkdir -p "$private_dir/bin" && head -c "$stub_bytes" > "$stub_file.tmp.$$" && chmod 755 "$stub_file.tmp.$$" \
      && mv -f "$stub_file.tmp.$$" "$stub_file" || {
      printf '{"started":false,"refused":"stub","error":"cannot write the vLLM stand-in to %s"}\n' "$stub_file"
      return 0
    }
  fi
  # The env file is 0600 before a byte of it is written; a start always replaces it, so no
  # secret of an earlier start lingers.
  (umask 077 && cat > "$env_file.tmp.$$") && mv -f "$env_file.tmp.$$" "$env_file"
  # The stand-in's path goes in the launcher, not in tmux's command line (a tmux server it starts
  # keeps that line for its life).
  (umask 077 && printf 'stub_program=%q\n%s' "$stub_file" "$launcher" > "$launcher_file")
  : >> "$log"
  local launcher_q env_q owner_q
  printf -v launcher_q '%q' "$launcher_file"
  printf -v env_q '%q' "$env_file"
  printf -v owner_q '%q' "$owner"
  # A tmux server started here passes its environment on to the server: the login's locale.
  # The owner marker is in the pane's environment from its first exec on (the launcher sets
  # it again for the server): a later stop knows the pane for ours.
  # Tried again once: a tmux server whose last session is closing at this instant refuses new
  # clients ("server exited unexpectedly"); the next one starts a server of its own.
  local try
  for try in 1 2; do
    pid=$(restore_locale; tmux_cmd new-session -d -s "$session" -x 200 -y 50 -P -F '#{pane_pid}' \
      "exec env OPS_VLLM_OWNER=$owner_q bash $launcher_q $env_q")
    [ -n "$pid" ] && break
    sleep 0.3
  done
  if [ -z "$pid" ]; then
    forget_env_file
    printf '{"started":false,"refused":"tmux","error":"tmux new-session did not start the server"}\n'
    return 0
  fi
  # A server that died at once (a missing program, a crash on a busy pod) is gone before it can
  # be looked at: it did start, and --wait reports how it ended, with its log. Start time 0
  # matches no live process, so no later stop takes a reused pid for it.
  proc_stat "$pid" || ps_start=0
  printf -v now '%(%s)T' -1
  json_str hostname_json "${HOSTNAME:-}"
  # The pane's process is the server itself (the launcher execs it) and leads its session.
  write_state "{\"pid\":$pid,\"sid\":$pid,\"pid_start\":$ps_start,\"boot_id\":\"$boot_id\",\"hostname\":$hostname_json,\"started_at\":$now,${state_fields#\{}"
  local wait_json=null
  [ -n "$wait" ] && wait_ready "$pid"
  # A start that failed (the server died, or is not serving in time) keeps no secret at rest,
  # once the launcher is past reading the file.
  if [[ $wait_json != null && $wait_json != *'"outcome":"ready"'* ]] && launcher_done "$pid"; then
    forget_env_file
  fi
  mount_of "$volume"
  json_bool mounted "$mounted"
  printf '{"started":true,"pid":%s,"started_at":%s,"volume_mounted":%s,"restarted":%s,"wait":%s}\n' \
    "$pid" "$now" "$mounted" "$restart_json" "$wait_json"
}

# launcher_done PID: true once the pane's launcher has exec'd the server (or is gone): it has
# sourced the env file by then.
launcher_done() {
  local _ops_cmd
  alive "$1" || return 0
  proc_cmdline _ops_cmd "$1"
  [[ $_ops_cmd != *"$launcher_file"* ]]
}

# wait_ready PID: follow the log and poll models_url until it lists served_name, PID dies, or
# timeout_ms passes. Sets wait_json.
wait_ready() {
  local pid=$1 started now last_tick=0 line partial='' outcome='' body served_json api_key='' tail_json cr=$'\r'
  json_str served_json "$served_name"
  # The key (if the server wants one) comes from its env file, into curl's stdin config only.
  api_key=$(. "$env_file" >/dev/null 2>&1; printf '%s' "${VLLM_API_KEY-}")
  now_ms started
  exec 3< "$log"
  while :; do
    while IFS= read -r -u 3 line; do printf 'L|%s\n' "$partial$line" >&2; partial=''; done
    partial+=$line
    # Progress bars redraw one line with \r: pass on what they have drawn so far.
    if [[ $partial == *"$cr"* ]]; then printf 'L|%s\n' "${partial%"$cr"*}" >&2; partial=${partial##*"$cr"}; fi
    now_ms now
    if ! alive "$pid"; then outcome=died; break; fi
    if [ -n "$api_key" ]; then
      body=$(curl_auth_config "$api_key" | curl -s --max-time 2 -K - "$models_url")
    else
      body=$(curl -s --max-time 2 "$models_url")
    fi
    if [[ $body == *"\"id\":$served_json"* || $body == *"\"id\": $served_json"* ]]; then outcome=ready; break; fi
    if [ $((now - started)) -ge "$timeout_ms" ]; then outcome=timeout; break; fi
    if [ $((now - last_tick)) -ge 1000 ]; then printf 'T|%s\n' $(((now - started) / 1000)) >&2; last_tick=$now; fi
    sleep 0.5
  done
  now_ms now
  if [ "$outcome" = died ]; then sleep 0.3; fi  # let tee write the server's last words
  while IFS= read -r -u 3 line; do printf 'L|%s\n' "$partial$line" >&2; partial=''; done
  [ -n "$partial$line" ] && printf 'L|%s\n' "$partial$line" >&2
  exec 3<&-
  tail_json=null
  if [ "$outcome" != ready ]; then json_str tail_json "$(tail -n 60 "$log" 2>/dev/null)"; fi
  wait_json="{\"outcome\":\"$outcome\",\"elapsed_ms\":$((now - started)),\"log_tail\":$tail_json}"
}

start_main; exit $?
