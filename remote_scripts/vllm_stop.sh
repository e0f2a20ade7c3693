# vllm_stop.sh: stop the server and its whole process tree; check that nothing is left.
# inputs: volume, session, tmux_socket, grace_ms, port (empty: the one the state file records,
#   else default_port)

stop_main() {
  local before after owner_json=null port_free=1 check_port=$port
  read_state
  [ -n "$check_port" ] || check_port=${state_port:-$default_port}
  gpu_memory_json before
  stop_tree "$grace_ms"
  # A closed listening socket frees its port at once; give a dying process a moment.
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do port_listener "$check_port" || break; sleep 0.2; done
  if port_listener "$check_port"; then port_free=0; port_owner_json owner_json "$check_port"; fi
  gpu_memory_json after
  # The driver frees a dead process's memory with a lag: while nothing has been freed yet, give
  # it up to 2 s (a stop that found processes; nothing to wait for otherwise).
  if [ "$before" != null ] && [[ $stop_report != *'"processes":[]'* ]]; then
    local tries
    for tries in 1 2 3 4 5 6 7 8 9 10; do
      [ "$after" = "$before" ] || break
      sleep 0.2
      gpu_memory_json after
    done
  fi
  json_bool port_free "$port_free"
  printf '{%s,"port":%s,"port_free":%s,"port_owner":%s,"gpu_memory_used_mib_before":%s,"gpu_memory_used_mib_after":%s}\n' \
    "$stop_report" "$check_port" "$port_free" "$owner_json" "$before" "$after"
}

stop_main; exit $?
