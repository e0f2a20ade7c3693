# pod_bootstrap.sh: prepare a fresh pod from its volume, step by step, idempotently.
# 1. run <volume>/bootstrap-pod.sh if present;
# 2. copy the persisted SSH keys, config and known_hosts from <volume>/.ssh (or <volume>/ssh)
#    INTO ~/.ssh: ~/.ssh stays a real directory and authorized_keys is never touched (linking
#    ~/.ssh to the volume once replaced the provider's authorized_keys and locked people out);
# 3. add GitHub's published host keys (shipped with the tool) to ~/.ssh/known_hosts.
# inputs: volume, github_keys (known_hosts lines)

# add_lines FILE LINES: append each line of LINES not already in FILE; added = how many.
add_lines() {
  local line
  added=0
  touch "$1"
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    if ! grep -qxF -- "$line" "$1"; then printf '%s\n' "$line" >> "$1"; added=$((added + 1)); fi
  done <<< "$2"
}

bootstrap_main() {
  local script=$volume/bootstrap-pod.sh keys='' out code name dest copied=0 same=0 skipped=''
  if [ -f "$script" ]; then
    mkdir -p "$HOME/.ops"
    # Into a file, not a pipe: a script that starts something in the background (a notebook
    # server, say) would otherwise hold the pipe open and this step forever.
    bash "$script" </dev/null >"$HOME/.ops/bootstrap.log" 2>&1; code=$?
    out=$(tail -n 1 "$HOME/.ops/bootstrap.log")
    if [ $code = 0 ]; then add_step bootstrap-script ok "$script ran (log: ~/.ops/bootstrap.log)"
    else add_step bootstrap-script failed "$script exited $code: $out (log: ~/.ops/bootstrap.log)"; fi
  else
    add_step bootstrap-script skipped "no $script"
  fi

  if [ -L "$HOME/.ssh" ]; then
    add_step ssh-keys failed "~/.ssh is a link (to $(readlink "$HOME/.ssh")): make it a directory again first"
  else
    mkdir -p "$HOME/.ssh" && chmod 700 "$HOME/.ssh"
    for dir in "$volume/.ssh" "$volume/ssh"; do [ -d "$dir" ] && { keys=$dir; break; }; done
    if [ -z "$keys" ]; then
      add_step ssh-keys skipped "no $volume/.ssh or $volume/ssh"
    else
      for file in "$keys"/*; do
        [ -f "$file" ] || continue
        name=${file##*/} dest=$HOME/.ssh/$name
        case $name in
          authorized_keys*) skipped+="${skipped:+, }$name"; continue ;;
          known_hosts) add_lines "$dest" "$(<"$file")"; copied=$((copied + added)); continue ;;
        esac
        if [ -f "$dest" ] && cmp -s "$file" "$dest"; then same=$((same + 1)); else cp -- "$file" "$dest"; copied=$((copied + 1)); fi
        case $name in
          *.pub) chmod 644 "$dest" ;;
          *) chmod 600 "$dest" ;;  # private keys, config: owner only (ssh refuses looser keys)
        esac
      done
      add_step ssh-keys ok "from $keys: $copied copied, $same unchanged${skipped:+; left alone: $skipped}"
    fi
    add_lines "$HOME/.ssh/known_hosts" "$github_keys"
    chmod 600 "$HOME/.ssh/known_hosts"
    add_step github-known-hosts ok "$added GitHub host key(s) added"
  fi
  printf '{"steps":[%s]}\n' "$steps"
}

bootstrap_main; exit $?
