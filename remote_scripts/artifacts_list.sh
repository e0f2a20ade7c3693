# artifacts_list.sh: what the run directories to fetch hold (files, bytes), and whether rsync is
# here. With `all`, every run directory under the outputs root. A directory in filter_dirs is
# counted as a fetch with its patterns takes it (artifacts_tar.sh's rule: a name matching an
# exclude and no include is left out, with everything below it).
# inputs: outputs_dir, dirs (array of run directories), all,
#         filter_dirs, filter_includes, filter_excludes (arrays, same order; patterns one a line)

list_main() {
  local dir json_dir runs='' rsync=false files bytes size path i pattern
  command -v rsync >/dev/null 2>&1 && rsync=true
  if [ -n "$all" ] && [ -d "$outputs_dir" ]; then
    for path in "$outputs_dir"/*/; do
      path=${path%/}
      [ -d "$path" ] && dirs+=("$path")
    done
  fi
  declare -A count=() total=() filtered=()
  for dir in "${filter_dirs[@]}"; do filtered[$dir]=1; done
  local plain=()
  for dir in "${dirs[@]}"; do [ -n "${filtered[$dir]-}" ] || plain+=("$dir"); done
  # One find for every directory without patterns: its starting point (%H) and each file's size.
  if [ ${#plain[@]} -gt 0 ]; then
    while IFS=$'\t' read -r dir size; do
      count[$dir]=$(( ${count[$dir]-0} + 1 ))
      total[$dir]=$(( ${total[$dir]-0} + size ))
    done < <(find "${plain[@]}" -type f -printf '%H\t%s\n' 2>/dev/null)
  fi
  for i in "${!filter_dirs[@]}"; do
    dir=${filter_dirs[$i]}
    local kept=() left=() includes=() excludes=()
    [ -n "${filter_includes[$i]}" ] && readarray -t includes <<< "${filter_includes[$i]}"
    [ -n "${filter_excludes[$i]}" ] && readarray -t excludes <<< "${filter_excludes[$i]}"
    for pattern in "${includes[@]}"; do kept+=(${kept[0]+-o} -name "$pattern"); done
    for pattern in "${excludes[@]}"; do left+=(${left[0]+-o} -name "$pattern"); done
    [ ${#kept[@]} -gt 0 ] || kept=(-false)
    [ ${#left[@]} -gt 0 ] || left=(-false)
    count[$dir]=0 total[$dir]=0
    while read -r size; do
      count[$dir]=$(( ${count[$dir]} + 1 ))
      total[$dir]=$(( ${total[$dir]} + size ))
    done < <(find "$dir" -mindepth 1 \( ! \( "${kept[@]}" \) \( "${left[@]}" \) \) -prune -o -type f -printf '%s\n' 2>/dev/null)
  done
  for dir in "${dirs[@]}"; do
    json_str json_dir "$dir"
    if [ -d "$dir" ]; then
      runs+="${runs:+,}{\"dir\":$json_dir,\"exists\":true,\"files\":${count[$dir]-0},\"bytes\":${total[$dir]-0}}"
    else
      runs+="${runs:+,}{\"dir\":$json_dir,\"exists\":false,\"files\":0,\"bytes\":0}"
    fi
  done
  printf '{"rsync":%s,"runs":[%s]}\n' "$rsync" "$runs"
}

list_main; exit $?
