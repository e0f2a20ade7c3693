# runs.sh: run one command of the pod-side run tool (ops_runs.py: queue and supervisor).
# inputs: tool_name (ops_runs-<hash>.py), tool_bytes, command, outputs_dir
# stdin after this script: the tool's source (tool_bytes bytes), then the JSON request line,
# which may hold secrets: neither ever appears in argv.

runs_main() {
  local source dir=$HOME/.ops/runs tool
  # read -N counts characters: bytes only under lib.sh's LC_ALL=C, which tool_bytes counts.
  IFS= read -r -d '' -N "$tool_bytes" source
  if ! command -v python3 >/dev/null 2>&1; then
    printf '{"error":"python3 is not installed on this pod (the run supervisor needs it)"}\n'
    return 0
  fi
  # The outputs root is made by the tool itself, once it has checked it, and only by commands
  # that change things: a read (status, list, logs, wait) creates nothing on the pod.
  mkdir -p "$dir" && chmod 700 "$HOME/.ops" "$dir"
  # Versioned by content: a supervisor that is running keeps its own file.
  tool=$dir/$tool_name
  if [ ! -f "$tool" ]; then
    (umask 077 && printf '%s' "$source" > "$tool.tmp.$$") && mv -f "$tool.tmp.$$" "$tool"
  fi
  restore_locale
  # Imported, not run as a script: Python keeps an imported module's bytecode (in the tool's
  # folder), so each task does not compile its 2,000 lines again.
  exec python3 -c 'import importlib, sys
sys.path.insert(0, sys.argv.pop(1))
sys.exit(importlib.import_module(sys.argv.pop(1)).main())' "$dir" "${tool_name%.py}" "$command"
}

runs_main; exit $?
