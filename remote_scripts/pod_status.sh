# pod_status.sh: facts about this pod, as one JSON document; the operation judges them.
# inputs: volume (path), tmux_socket (name or empty)

# -- volume: a real mount point (see mount_of in lib.sh)?
vol_exists=0 vol_mounted=0 vol_fstype='' vol_size='' vol_free='' home_free='' home_size=''
if [ -d "$volume" ]; then
  vol_exists=1
  # The kernel's name from mountinfo (ext4), also for a plain directory: `stat -f` says ext2/ext3.
  mount_of "$volume"
  vol_mounted=$mounted vol_fstype=$mount_fstype
fi
# One df for the volume and the home disk (POSIX format: one line each, sizes in KiB; free is
# what a non-root writer gets).
{
  read -r _
  [ $vol_exists = 1 ] && read -r _ size_k _ free_k _ && vol_size=$((size_k * 1024)) vol_free=$((free_k * 1024))
  read -r _ size_k _ free_k _ && home_size=$((size_k * 1024)) home_free=$((free_k * 1024))
} < <(if [ $vol_exists = 1 ]; then df -Pk "$volume" "$HOME"; else df -Pk "$HOME"; fi 2>/dev/null)

# -- tools: present, where, and which version (first version-like word of its banner).
tools=''
for spec in 'tmux -V' 'curl --version' 'python3 --version' 'rsync --version'; do
  read -r name flag <<< "$spec"
  json_str name_json "$name"
  if path=$(command -v "$name" 2>/dev/null); then
    banner=$("$name" "$flag" 2>&1) version=''
    [[ $banner =~ ([0-9]+(\.[0-9]+)+[a-z]?) ]] && version=${BASH_REMATCH[1]}
    json_str path_json "$path"
    json_str version_json "$version"
    tools+="${tools:+,}$name_json:{\"present\":true,\"path\":$path_json,\"version\":$version_json}"
  else
    tools+="${tools:+,}$name_json:{\"present\":false,\"path\":null,\"version\":null}"
  fi
done

# -- GPUs: nvidia-smi's CSV; no nvidia-smi means no GPUs, not an error.
gpus='' gpu_error=''
if command -v nvidia-smi >/dev/null 2>&1; then
  query=index,name,utilization.gpu,memory.used,memory.total
  # A wedged driver can hang nvidia-smi; never let it hang the check.
  if csv=$(timeout 20 nvidia-smi --query-gpu="$query" --format=csv,noheader,nounits 2>&1); then
    while IFS=, read -r idx name util used total; do
      trim idx "$idx"
      [ -n "$idx" ] || continue
      trim name "$name"; trim util "$util"; trim used "$used"; trim total "$total"
      json_num idx "$idx"; json_str name "$name"; json_num util "$util"; json_num used "$used"; json_num total "$total"
      gpus+="${gpus:+,}{\"index\":$idx,\"name\":$name,\"utilization_pct\":$util,"
      gpus+="\"memory_used_mib\":$used,\"memory_total_mib\":$total}"
    done <<< "$csv"
  else
    gpu_error="nvidia-smi failed: ${csv%%$'\n'*}"
  fi
fi

# -- the rest: tmux sessions, load, CPUs.
sessions=()
if command -v tmux >/dev/null 2>&1; then
  mapfile -t sessions < <(tmux_cmd list-sessions -F '#{session_name}' 2>/dev/null)
fi
load1='' load5='' load15=''
[ -r /proc/loadavg ] && read -r load1 load5 load15 _ < /proc/loadavg
cpus=$(nproc 2>/dev/null)

json_str hostname_json "${HOSTNAME:-$(uname -n)}"
json_str user_json "${USER:-$(id -un)}"
json_str volume_json "$volume"
json_bool exists_json $vol_exists
json_bool mounted_json $vol_mounted
json_str fstype_json "$vol_fstype"
json_num size_json "$vol_size"
json_num free_json "$vol_free"
json_str gpu_error_json "$gpu_error"
json_strs sessions_json ${sessions[@]+"${sessions[@]}"}
json_num home_free_json "$home_free"
json_num home_size_json "$home_size"
json_num load1 "$load1"; json_num load5 "$load5"; json_num load15 "$load15"
json_num cpus_json "$cpus"
printf '{"hostname":%s,"user":%s,' "$hostname_json" "$user_json"
printf '"volume":{"path":%s,"exists":%s,"mounted":%s,"fstype":%s,"size_bytes":%s,"free_bytes":%s},' \
  "$volume_json" "$exists_json" "$mounted_json" "$fstype_json" "$size_json" "$free_json"
printf '"tools":{%s},"gpus":[%s],"gpu_error":%s,' "$tools" "$gpus" "$gpu_error_json"
printf '"tmux_sessions":%s,"disk_free_bytes":%s,"disk_size_bytes":%s,' "$sessions_json" "$home_free_json" "$home_size_json"
printf '"load":[%s,%s,%s],"cpus":%s}\n' "$load1" "$load5" "$load15" "$cpus_json"
