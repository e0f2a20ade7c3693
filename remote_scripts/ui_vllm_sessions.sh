# ui_vllm_sessions.sh: the tmux sessions vllm.start recorded on this pod (a state file each under
# <volume>/vllm/), one name a line, at most 64; the laptop checks each name.
# inputs: volume

sessions_main() {
  local file name count=0
  for file in "$volume"/vllm/*.json; do
    [ -f "$file" ] && [ ! -L "$file" ] || continue
    name=${file##*/}
    printf '%s\n' "${name%.json}"
    count=$((count + 1))
    [ "$count" -lt 64 ] || break
  done
}

sessions_main; exit 0
