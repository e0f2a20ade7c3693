# vllm_logs.sh: the server log of a session: its last lines, or (follow) a stream until the
# caller hangs up.
# inputs: volume, session, lines, follow

logs_main() {
  local log_json text_json
  read_state
  if [ -z "$state_log" ] || [ ! -r "$state_log" ]; then
    json_str log_json "$state_log"
    # Following streams stdout to the user as is: tell the caller on stderr instead.
    if [ -n "$follow" ]; then printf '{"found":false,"log":%s}\n' "$log_json" >&2; return 3; fi
    printf '{"found":false,"log":%s,"text":null}\n' "$log_json"
    return 0
  fi
  if [ -n "$follow" ]; then
    tail -n "$lines" -F "$state_log" 2>/dev/null &
    local tail_pid=$!
    # The caller keeps our stdin open; when it hangs up (Ctrl-C), stop following.
    cat > /dev/null
    kill "$tail_pid" 2>/dev/null
    return 0
  fi
  json_str log_json "$state_log"
  json_str text_json "$(tail -n "$lines" "$state_log")"
  printf '{"found":true,"log":%s,"text":%s}\n' "$log_json" "$text_json"
}

logs_main; exit $?
