# artifacts_archive.sh: move the raw eval files at the top of the volume into run directories.
# A file goes to the run whose id is in its name (the longest id that is, among these runs and
# every run directory under the outputs root: another run's file is never taken). A file naming
# no run goes to the run when there is only one. Never overwrites: a clash keeps both (name.1,
# name.2, ...). Each run directory's archived.jsonl records what moved into it.
# inputs: volume, outputs_dir, patterns (array of globs), run_ids (array), run_dirs (array, same order)

archive_main() {
  shopt -s nullglob
  local i file name target dest n moved='' missing='' kept='' json_from json_to json_id now size best
  printf -v now '%(%s)T' -1
  for i in "${!run_ids[@]}"; do
    if [ ! -d "${run_dirs[$i]}" ]; then
      json_str json_id "${run_ids[$i]}"
      missing+="${missing:+,}$json_id"
    fi
  done
  local -a files=()
  for pattern in "${patterns[@]}"; do
    files+=("$volume"/$pattern)
  done
  declare -A seen=() others=()
  local other
  for other in "$outputs_dir"/*/; do other=${other%/}; others[${other##*/}]=1; done
  for file in "${files[@]}"; do
    [ -f "$file" ] && [ -z "${seen[$file]-}" ] || continue
    seen[$file]=1
    name=${file##*/}
    target='' best=0
    for i in "${!run_ids[@]}"; do
      if [[ $name == *"${run_ids[$i]}"* ]] && [ ${#run_ids[$i]} -gt $best ]; then target=$i best=${#run_ids[$i]}; fi
    done
    # A longer id of a run not asked for wins: the file is that run's (r10's file is not r1's).
    for other in "${!others[@]}"; do
      if [[ $name == *"$other"* ]] && [ ${#other} -gt $best ]; then target='' best=${#other}; fi
    done
    if [ -z "$target" ] && [ $best = 0 ] && [ ${#run_ids[@]} -eq 1 ]; then target=0; fi
    if [ -z "$target" ] || [ ! -d "${run_dirs[$target]}" ]; then
      json_str json_from "$file"
      kept+="${kept:+,}$json_from"
      continue
    fi
    dest=${run_dirs[$target]}/$name n=0
    while [ -e "$dest" ]; do n=$((n + 1)); dest=${run_dirs[$target]}/$name.$n; done
    size=$(stat -c %s -- "$file" 2>/dev/null || echo 0)
    if mv -n -- "$file" "$dest" && [ ! -e "$file" ]; then
      json_str json_from "$file"
      json_str json_to "$dest"
      json_str json_id "${run_ids[$target]}"
      printf '{"from":%s,"to":%s,"bytes":%s,"at":%s}\n' "$json_from" "$json_to" "$size" "$now" \
        >> "${run_dirs[$target]}/archived.jsonl"
      moved+="${moved:+,}{\"run_id\":$json_id,\"from\":$json_from,\"to\":$json_to,\"bytes\":$size}"
    fi
  done
  printf '{"moved":[%s],"left":[%s],"missing":[%s]}\n' "$moved" "$kept" "$missing"
}

archive_main; exit $?
