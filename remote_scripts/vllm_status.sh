# vllm_status.sh: is the server answering? Its models, /health, session, pid, uptime, log tail.
# inputs: volume, session, tmux_socket, base_url (empty: 127.0.0.1 at port, else the port the
#   state file records, else default_port), port, default_port, tail_lines, find_session (1: no
#   session was named, so the one vllm.start runs on the probed port, when `session` is not there)
# stdin after this script: the API key to send, if any (one line; never in argv).

# session_on_port PORT: the session (and its state) of the live server vllm.start started on PORT,
# when the session asked for has none: "serving" then names what serves. Unchanged when none does.
session_on_port() {
  local file name text re_port='"port": ?([0-9]+)' asked=$session
  for file in "$vllm_dir"/*.json; do
    name=${file##*/}
    name=${name%.json}
    [[ $name =~ ^[A-Za-z0-9_-]{1,64}$ && $name != "$asked" && -r $file ]] || continue
    text=$(<"$file")
    [[ $text =~ $re_port && ${BASH_REMATCH[1]} == "$1" ]] || continue
    session=$name state_file=$file
    read_state
    session_owner
    [ "$session_state" = ours ] && return 0
  done
  session=$asked state_file=$vllm_dir/$asked.json
  read_state
  session_owner
}

status_main() {
  local api_key='' probe codes models_code health_code models_body="" in_session=0 uptime=null now port_json=null
  IFS= read -r api_key || true
  read_state
  session_owner
  # The port: the flag's, else the one start recorded, else the profile's (or 8000). A URL
  # given names its own port (null here).
  if [ -z "$base_url" ]; then
    port_json=${port:-${state_port:-$default_port}}
    base_url=http://127.0.0.1:$port_json/v1
  fi
  local re_local='^https?://(127\.0\.0\.1|localhost):([0-9]+)(/|$)' probed=$port_json
  [[ $probed == null && $base_url =~ $re_local ]] && probed=${BASH_REMATCH[2]}
  if [ -n "$find_session" ] && [ "$session_state" = none ] && [ "$probed" != null ]; then
    session_on_port "$probed"
  fi
  [ "$session_state" != none ] && in_session=1
  local models_url=$base_url/models health_url=${base_url%/v1}/health
  probe=$(mktemp -d) || return 1
  # One curl for both URLs: -w prints each transfer's status code in turn.
  codes=$(curl_auth_config "$api_key" |
    curl -s --max-time 3 -K - -w '%{http_code} ' -o "$probe/models" "$models_url" -o "$probe/health" "$health_url")
  read -r models_code health_code _ <<< "$codes"
  [ -r "$probe/models" ] && models_body=$(<"$probe/models")
  rm -rf "$probe"
  printf -v now '%(%s)T' -1
  [ -n "$state_pid" ] && [ -n "$state_started" ] && uptime=$((now - state_started))
  local tail_json=null state_text body_json log_json pid_json url_json session_json
  if [ "${models_code:-000}" != 200 ] && [ -n "$state_log" ] && [ -r "$state_log" ]; then
    json_str tail_json "$(tail -n "$tail_lines" "$state_log")"
  fi
  json_str state_text "$state_json"
  json_str body_json "$models_body"
  json_str log_json "$state_log"
  json_num pid_json "$state_pid"
  json_bool in_session "$in_session"
  local foreign=0
  [ "$session_state" = foreign ] && foreign=1
  json_bool foreign "$foreign"
  json_str url_json "$base_url"
  json_str session_json "$session"
  printf '{"session":%s,"base_url":%s,"port":%s,"models_status":%s,"health_status":%s,"models_body":%s,"session_alive":%s,"session_foreign":%s,"pid":%s,"uptime_s":%s,"log":%s,"log_tail":%s,"state":%s}\n' \
    "$session_json" "$url_json" "$port_json" "$((10#${models_code:-0}))" "$((10#${health_code:-0}))" "$body_json" "$in_session" "$foreign" "$pid_json" "$uptime" \
    "$log_json" "$tail_json" "$state_text"
}

status_main; exit $?
