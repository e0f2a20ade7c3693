# ui_batch.sh: several scripts in ONE round trip (`ops ui`'s refresh of a pod): each part runs
# with `bash -s` at the same time as the others, its script then its own stdin payload on its
# stdin, as if it had been sent alone; then one line per part, in order:
#   PART <index> <exit code> <stdout, base64> <stderr's last 64 KiB, base64>
# inputs: scripts (array: each part's rendered script), payload_bytes (array: the size of each
#   part's payload)
# stdin after this script: the parts' payloads, one after the other (secrets travel there,
#   never in this text). Few processes per part: a refresh's cost on the pod is mostly forks.

batch_main() {
  local i total=0 offset=0 code pids=()
  # Global: the EXIT trap runs after this function has returned.
  batch_work=$(mktemp -d) || return 1
  trap 'rm -rf "$batch_work"' EXIT
  local work=$batch_work
  for i in "${!payload_bytes[@]}"; do total=$((total + payload_bytes[i])); done
  # The payloads, split by their sizes (head -c on a pipe may read past its count: a file may not).
  [ "$total" -eq 0 ] || cat > "$work/stdin"
  for i in "${!scripts[@]}"; do
    if [ "${payload_bytes[$i]}" -gt 0 ]; then
      { printf '%s' "${scripts[$i]}"; tail -c "+$((offset + 1))" "$work/stdin" | head -c "${payload_bytes[$i]}"; } |
        bash -s > "$work/$i.out" 2> "$work/$i.err" &
    else
      printf '%s' "${scripts[$i]}" | bash -s > "$work/$i.out" 2> "$work/$i.err" &
    fi
    pids[i]=$!
    offset=$((offset + payload_bytes[i]))
  done
  for i in "${!scripts[@]}"; do
    wait "${pids[$i]}"
    code=$?
    printf 'PART %d %d ' "$i" "$code"
    [ -s "$work/$i.out" ] && base64 -w0 < "$work/$i.out"
    printf ' '
    [ -s "$work/$i.err" ] && tail -c 65536 "$work/$i.err" | base64 -w0
    printf '\n'
  done
}

batch_main; exit $?
