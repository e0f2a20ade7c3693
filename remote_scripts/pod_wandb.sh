# pod_wandb.sh: make W&B work in non-interactive sessions (tmux, detached runs): ~/.netrc with
# `machine api.wandb.ai` (mode 0600). The key comes on stdin (from the laptop's WANDB_API_KEY),
# else from <volume>/set-wandb-api-key.sh; a script of the seed's kind that only exports the key
# is upgraded (after a backup) to write ~/.netrc too. The key is never printed nor in argv.
# inputs: volume, netrc_writer (wandb_netrc.sh: writes ~/.netrc from $WANDB_API_KEY; it is also
# what an upgraded script gains at its end, so the two never differ)
# stdin after this script: the key, one line (or nothing).

wandb_main() {
  local key='' source=stdin script=$volume/set-wandb-api-key.sh upgraded=false backup=''
  IFS= read -r key || true
  if [ -z "$key" ] && [ -f "$script" ]; then
    key=$(bash -c '. "$1" >/dev/null 2>&1; printf "%s" "${WANDB_API_KEY-}"' _ "$script")
    source=$script
  fi
  if [ -z "$key" ]; then
    printf '{"ok":false,"error":"no W&B key: export WANDB_API_KEY here, or put %s on the volume"}\n' "$script"
    return 0
  fi
  if [ "$source" = "$script" ] && ! grep -q netrc "$script"; then
    printf -v backup '%s.bak.%(%Y%m%d%H%M%S)T' "$script" -1
    cp -p -- "$script" "$backup"
    # The upgraded script is the original, every line of it, and then the ~/.netrc writer.
    { cat -- "$script"; printf '\n%s\n' "$netrc_writer"; } > "$script.tmp.$$"
    chmod --reference="$backup" "$script.tmp.$$" 2>/dev/null || chmod 600 "$script.tmp.$$"
    mv -f "$script.tmp.$$" "$script"
    upgraded=true
  fi
  # The key in the writer's environment only (a subshell), never in argv.
  ( WANDB_API_KEY=$key; eval "$netrc_writer" )
  printf '%s' "$key" | python3 -c '
import netrc, os, sys
found = netrc.netrc(os.path.expanduser("~/.netrc")).authenticators("api.wandb.ai")
sys.exit(0 if found and found[2] == sys.stdin.read() else 3)
'
  local verified=$?
  local mode
  mode=$(stat -c %a "$HOME/.netrc" 2>/dev/null)
  local source_json backup_json
  json_str source_json "$source"
  json_str backup_json "$backup"
  if [ $verified = 0 ]; then
    printf '{"ok":true,"result":"WANDB_NETRC_OK","source":%s,"netrc_mode":"%s","upgraded":%s,"backup":%s}\n' \
      "$source_json" "$mode" "$upgraded" "$backup_json"
  else
    printf '{"ok":false,"error":"~/.netrc was written but does not read back api.wandb.ai","source":%s}\n' "$source_json"
  fi
}

wandb_main; exit $?
