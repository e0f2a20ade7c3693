# pod_workdir_receive.sh: the remote command of pod.sync --workdir's rsync (its --rsync-path), run
# before rsync writes anything: it refuses a repo that is /, the pod's home or its volume once
# links are resolved (what the laptop cannot see), makes the repo, and sets its last record aside
# (a half-sent tree has no record to vouch for it; runtime/workdir.py reads the set-aside one for
# the files that left the checkout). Then it becomes rsync.
# inputs: repo, volume, record, set_aside, refused (how a refusal's line begins: the laptop
# reads it); "$@": rsync's server arguments.
real=$(realpath -m -- "$repo") || exit 2
for place in "/:the root of the file system" "$HOME:the home folder" "$volume:the volume"; do
  if [ "$real" = "$(realpath -m -- "${place%%:*}")" ]; then
    printf '%s %s is %s on this pod: sync into a folder below it\n' "$refused" "$repo" "${place#*:}" >&2
    exit 2
  fi
done
mkdir -p -- "$repo" || exit 2
if [ -e "$repo/$record" ]; then mv -f -- "$repo/$record" "$repo/$set_aside" || exit 2; fi
exec rsync "$@"
