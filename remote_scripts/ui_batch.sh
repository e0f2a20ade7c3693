# ui_batch.sh: several scripts in ONE round trip (`ops ui`'s refresh of a pod): each part runs
# with `bash -s` at the same time as the others, its script then its own stdin payload on its
# stdin, as if it had been sent alone; then one line per part, in order:
#   PART <index> <exit code> <stdout, base64> <stderr's last 64 KiB, base64>
# inputs: scripts (array: each part's rendered script), payload_bytes (array: the size of each
#   part's payload)
# stdin after this script: the parts' payloads, one after the other (secrets travel there,
#   never in this text).

batch_main() {
  local i offset=0
  # Global: the EXIT trap runs after this function has returned.
  batch_work=$(mktemp -d) || return 1
  trap 'rm -rf "$batch_work"' EXIT
  local work=$batch_work
  # The payloads, split by their sizes (head -c on a pipe may read past its count: a file may not).
  cat > "$work/stdin"
  for i in "${!scripts[@]}"; do
    tail -c "+$((offset + 1))" "$work/stdin" | head -c "${payload_bytes[$i]}" > "$work/$i.in"
    offset=$((offset + payload_bytes[i]))
  done
  for i in "${!scripts[@]}"; do
    { { printf '%s' "${scripts[$i]}"; cat "$work/$i.in"; } | bash -s > "$work/$i.out" 2> "$work/$i.err"
      echo $? > "$work/$i.code"; } &
  done
  wait
  for i in "${!scripts[@]}"; do
    printf 'PART %d %d ' "$i" "$(< "$work/$i.code")"
    base64 -w0 < "$work/$i.out"
    printf ' '
    tail -c 65536 "$work/$i.err" | base64 -w0
    printf '\n'
  done
}

batch_main; exit $?
