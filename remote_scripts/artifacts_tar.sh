# artifacts_tar.sh: the run directories as one tar stream on stdout (the fallback where rsync is
# missing). Each directory enters the archive under its own name. With patterns, find picks the
# members as rsync's --include/--exclude would: a file or directory whose name matches an
# exclude and no include is left out, with everything below it.
# inputs: dirs (array of run directories), includes, excludes (arrays of name globs, no '/')

tar_main() {
  local dir args=()
  if [ ${#excludes[@]} -eq 0 ]; then
    # One -C per directory, and ./name: a name starting with '-' stays a name (GNU tar reads no
    # options after a '--', so that cannot separate several -C's).
    for dir in "${dirs[@]}"; do
      args+=(-C "${dir%/*}" "./${dir##*/}")
    done
    exec tar -cf - "${args[@]}"
  fi
  local pattern kept=() left=()
  for pattern in "${includes[@]}"; do kept+=(${kept[0]+-o} -name "$pattern"); done
  for pattern in "${excludes[@]}"; do left+=(${left[0]+-o} -name "$pattern"); done
  [ ${#kept[@]} -gt 0 ] || kept=(-false)
  # Each directory's members as a NUL-separated list, then one tar of them all (no recursion:
  # the list is the selection).
  tar_lists=$(mktemp -d) || exit 1
  trap 'rm -rf "$tar_lists"' EXIT
  local i=0
  for dir in "${dirs[@]}"; do
    i=$((i + 1))
    (cd "${dir%/*}" && printf './%s\0' "${dir##*/}" \
      && find "./${dir##*/}" -mindepth 1 \( ! \( "${kept[@]}" \) \( "${left[@]}" \) \) -prune -o -print0) \
      > "$tar_lists/$i" || exit 1
    args+=(-C "${dir%/*}" -T "$tar_lists/$i")
  done
  tar -cf - --null --no-recursion "${args[@]}"
}

tar_main; exit $?
