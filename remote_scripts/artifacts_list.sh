# artifacts_list.sh: what the run directories to fetch hold (files, bytes), and whether rsync is
# here. With `all`, every run directory under the outputs root.
# inputs: outputs_dir, dirs (array of run directories), all

list_main() {
  local dir json_dir runs='' rsync=false files bytes size path
  command -v rsync >/dev/null 2>&1 && rsync=true
  if [ -n "$all" ] && [ -d "$outputs_dir" ]; then
    for path in "$outputs_dir"/*/; do
      path=${path%/}
      [ -d "$path" ] && dirs+=("$path")
    done
  fi
  declare -A count=() total=()
  # One find for every directory: its starting point (%H) and each file's size.
  if [ ${#dirs[@]} -gt 0 ]; then
    while IFS=$'\t' read -r dir size; do
      count[$dir]=$(( ${count[$dir]-0} + 1 ))
      total[$dir]=$(( ${total[$dir]-0} + size ))
    done < <(find "${dirs[@]}" -type f -printf '%H\t%s\n' 2>/dev/null)
  fi
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
