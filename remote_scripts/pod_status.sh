# pod_status.sh: facts about this pod, as one JSON document; the operation judges them.
# inputs: volume (path), tmux_socket (name or empty)

# -- volume: a real mount point? /proc/self/mountinfo lists mount points (spaces as \040).
vol_exists=0 vol_mounted=0 vol_fstype='' vol_size='' vol_free=''
if [ -d "$volume" ]; then
  vol_exists=1
  vol_real=$(cd "$volume" && pwd -P)
  if [ -r /proc/self/mountinfo ]; then
    vol_fstype=$(awk -v mp="$vol_real" '
      { m = $5; gsub(/\\040/, " ", m)
        if (m == mp) for (i = 7; i <= NF; i++) if ($i == "-") { fs = $(i + 1); break } }
      END { print fs }' /proc/self/mountinfo)
    [ -n "$vol_fstype" ] && vol_mounted=1
  fi
  [ -n "$vol_fstype" ] || vol_fstype=$(stat -f -c %T "$volume" 2>/dev/null)
  read -r vol_size vol_free < <(df -Pk "$volume" 2>/dev/null | awk 'NR == 2 { printf "%.0f %.0f\n", $2 * 1024, $4 * 1024 }')
fi

# -- tools: present, where, and which version (first version-like word of its banner).
tool_json() {
  local name=$1 path banner version=''
  shift
  if ! path=$(command -v "$name" 2>/dev/null); then
    printf '%s:{"present":false,"path":null,"version":null}' "$(json_str "$name")"
    return
  fi
  banner=$("$name" "$@" 2>&1)
  [[ $banner =~ ([0-9]+(\.[0-9]+)+[a-z]?) ]] && version=${BASH_REMATCH[1]}
  printf '%s:{"present":true,"path":%s,"version":%s}' "$(json_str "$name")" "$(json_str "$path")" "$(json_str "$version")"
}
tools="{$(tool_json tmux -V),$(tool_json curl --version),$(tool_json python3 --version),$(tool_json rsync --version)}"

# -- GPUs: nvidia-smi's CSV; no nvidia-smi means no GPUs, not an error.
gpus='' gpu_error=''
if command -v nvidia-smi >/dev/null 2>&1; then
  query=index,name,utilization.gpu,memory.used,memory.total
  # A wedged driver can hang nvidia-smi; never let it hang the check.
  if csv=$(timeout 20 nvidia-smi --query-gpu="$query" --format=csv,noheader,nounits 2>&1); then
    while IFS=, read -r idx name util used total; do
      [ -n "$(trim "$idx")" ] || continue
      gpus+="${gpus:+,}{\"index\":$(json_num "$(trim "$idx")"),\"name\":$(json_str "$(trim "$name")"),"
      gpus+="\"utilization_pct\":$(json_num "$(trim "$util")"),\"memory_used_mib\":$(json_num "$(trim "$used")"),"
      gpus+="\"memory_total_mib\":$(json_num "$(trim "$total")")}"
    done <<< "$csv"
  else
    gpu_error="nvidia-smi failed: ${csv%%$'\n'*}"
  fi
fi

# -- the rest: tmux sessions, home disk, load, CPUs.
sessions=()
if command -v tmux >/dev/null 2>&1; then
  mapfile -t sessions < <(tmux_cmd list-sessions -F '#{session_name}' 2>/dev/null)
fi
home_free=$(df -Pk "$HOME" 2>/dev/null | awk 'NR == 2 { printf "%.0f\n", $4 * 1024 }')
read -r load1 load5 load15 _ < /proc/loadavg 2>/dev/null || load1='' load5='' load15=''

printf '{"hostname":%s,"user":%s,' "$(json_str "$(hostname 2>/dev/null || uname -n)")" "$(json_str "$(id -un)")"
printf '"volume":{"path":%s,"exists":%s,"mounted":%s,"fstype":%s,"size_bytes":%s,"free_bytes":%s},' \
  "$(json_str "$volume")" "$(json_bool $vol_exists)" "$(json_bool $vol_mounted)" \
  "$(json_str "$vol_fstype")" "$(json_num "$vol_size")" "$(json_num "$vol_free")"
printf '"tools":%s,"gpus":[%s],"gpu_error":%s,' "$tools" "$gpus" "$(json_str "$gpu_error")"
printf '"tmux_sessions":%s,"disk_free_bytes":%s,' "$(json_strs ${sessions[@]+"${sessions[@]}"})" "$(json_num "$home_free")"
printf '"load":[%s,%s,%s],"cpus":%s}\n' "$(json_num "$load1")" "$(json_num "$load5")" "$(json_num "$load15")" \
  "$(json_num "$(nproc 2>/dev/null)")"
