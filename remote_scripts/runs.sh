# runs.sh: run one command of the pod runtime (ops_tasks/runtime: the run queue and supervisor).
# inputs: runtime_id (the archive's hash), runtime_bytes (its size on stdin; 0 when the laptop
#         believes the pod holds it), command, boot (runtime/boot.py's source: unpacks and runs)
# stdin after this script: the archive (runtime_bytes bytes), then the JSON request line, which
# may hold secrets: neither ever appears in argv.

runs_main() {
  local dir=$HOME/.ops/runtime
  if ! command -v python3 >/dev/null 2>&1; then
    printf '{"error":"python3 is not installed on this pod (the run supervisor needs it)"}\n'
    return 0
  fi
  # The outputs root is made by the runtime itself, once it has checked it, and only by commands
  # that change things: a read (status, list, logs, wait) creates nothing on the pod.
  mkdir -p "$dir" && chmod 700 "$HOME/.ops" "$dir"
  restore_locale
  # Kept under its id, unpacked once (so Python keeps its bytecode): a supervisor that is running
  # keeps its own version.
  exec python3 -c "$boot" "$dir" "$runtime_id" "$runtime_bytes" "$command"
}

runs_main; exit $?
