# pod_wandb.sh: make W&B work in non-interactive sessions (tmux, detached runs): ~/.netrc with
# `machine api.wandb.ai` (mode 0600). The key comes on stdin (from the laptop's WANDB_API_KEY),
# else from <volume>/set-wandb-api-key.sh; a script of the seed's kind that only exports the key
# is upgraded (after a backup) to write ~/.netrc too. The key is never printed nor in argv.
# inputs: volume, upgrade_script (what an upgraded script gains at its end: the ~/.netrc writer)
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
    { cat -- "$script"; printf '\n%s\n' "$upgrade_script"; } > "$script.tmp.$$"
    chmod --reference="$backup" "$script.tmp.$$" 2>/dev/null || chmod 600 "$script.tmp.$$"
    mv -f "$script.tmp.$$" "$script"
    upgraded=true
  fi
  # Replace only the api.wandb.ai entry of ~/.netrc; other machines stay as they were.
  printf '%s' "$key" | python3 -c '
import netrc, os, re, sys
key = sys.stdin.read()
path = os.path.expanduser("~/.netrc")
text = open(path).read() if os.path.exists(path) else ""
text = re.sub(r"(?s)(^|\s)machine\s+api\.wandb\.ai\s.*?(?=\smachine\s|\sdefault\s|\Z)", r"\1", text).strip()
entry = "machine api.wandb.ai\n  login user\n  password " + key + "\n"
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as handle:
    handle.write((text + "\n" if text else "") + entry)
os.replace(path + ".tmp", path)
os.chmod(path, 0o600)
found = netrc.netrc(path).authenticators("api.wandb.ai")
sys.exit(0 if found and found[2] == key else 3)
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
