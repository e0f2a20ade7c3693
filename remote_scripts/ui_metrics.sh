# ui_metrics.sh: the end of a run's metrics.jsonl (its curves), as it is: at most max_bytes from
# its end, only from a regular file (never through a link). Nothing when there is none.
# inputs: path, max_bytes

if [ -f "$path" ] && [ ! -L "$path" ]; then
  tail -c "$max_bytes" -- "$path"
fi
exit 0
