# artifacts_tar.sh: the run directories as one tar stream on stdout (the fallback where rsync is
# missing). Each directory enters the archive under its own name.
# inputs: dirs (array of run directories)

tar_main() {
  local dir args=()
  # One -C per directory, and ./name: a name starting with '-' stays a name (GNU tar reads no
  # options after a '--', so that cannot separate several -C's).
  for dir in "${dirs[@]}"; do
    args+=(-C "${dir%/*}" "./${dir##*/}")
  done
  exec tar -cf - "${args[@]}"
}

tar_main; exit $?
