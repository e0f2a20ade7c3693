# artifacts_tar.sh: the run directories as one tar stream on stdout (the fallback where rsync is
# missing). Each directory enters the archive under its own name.
# inputs: dirs (array of run directories)

tar_main() {
  local dir args=()
  for dir in "${dirs[@]}"; do
    args+=(-C "${dir%/*}" -- "${dir##*/}")
  done
  exec tar -cf - "${args[@]}"
}

tar_main; exit $?
