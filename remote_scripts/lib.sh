# ---- lib.sh: helpers shared by every remote script (bash 4+).
# The JSON helpers assign to a variable (printf -v) instead of printing: a $(...) per
# value would fork a subshell each time, and forks are most of a small script's cost.
# Their locals are _ops_-prefixed: bash scoping is dynamic, and `json_str s ...` must not
# assign to a local named s.
set -u
# C locale for the script itself (byte-wise text, stable tool output); restore_locale gives
# long-lived processes started from here (servers, supervisors, runs) the login's own.
_ops_saved_lc_all=${LC_ALL-__unset__}
export LC_ALL=C

restore_locale() {
  if [ "$_ops_saved_lc_all" = __unset__ ]; then unset LC_ALL; else export LC_ALL=$_ops_saved_lc_all; fi
}

# json_str VAR TEXT: VAR becomes TEXT as a JSON string literal.
json_str() {
  local _ops_s=${2-}
  _ops_s=${_ops_s//\\/\\\\}
  _ops_s=${_ops_s//\"/\\\"}
  _ops_s=${_ops_s//$'\n'/\\n}
  _ops_s=${_ops_s//$'\r'/\\r}
  _ops_s=${_ops_s//$'\t'/\\t}
  case $_ops_s in *[[:cntrl:]]*) _ops_s=$(printf '%s' "$_ops_s" | tr -d '\000-\037') ;; esac
  printf -v "$1" '"%s"' "$_ops_s"
}

# json_num VAR TEXT: VAR becomes TEXT if it is a number, else null.
json_num() {
  if [[ ${2-} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then printf -v "$1" '%s' "$2"; else printf -v "$1" 'null'; fi
}

# json_bool VAR FLAG: VAR becomes true for 1, else false.
json_bool() {
  if [ "${2-}" = 1 ]; then printf -v "$1" 'true'; else printf -v "$1" 'false'; fi
}

# json_strs VAR ITEM...: VAR becomes a JSON array of strings.
json_strs() {
  local _ops_var=$1 _ops_item _ops_one _ops_list=''
  shift
  for _ops_item in "$@"; do json_str _ops_one "$_ops_item"; _ops_list+=${_ops_list:+,}$_ops_one; done
  printf -v "$_ops_var" '[%s]' "$_ops_list"
}

# trim VAR TEXT: VAR becomes TEXT without leading and trailing blanks.
trim() {
  local _ops_s=${2-}
  _ops_s=${_ops_s#"${_ops_s%%[![:space:]]*}"}
  printf -v "$1" '%s' "${_ops_s%"${_ops_s##*[![:space:]]}"}"
}

# tmux_cmd ARGS...: tmux on the profile's socket (tmux -L), or the default one.
tmux_cmd() {
  if [ -n "${tmux_socket-}" ]; then tmux -L "$tmux_socket" "$@"; else tmux "$@"; fi
}

# mount_of DIR: mounted=1 when DIR is itself a mount point (a volume that is attached, not a
# plain directory); mount_fstype is the type of the filesystem DIR is on either way, as the
# kernel names it (ext4; `stat -f` says "ext2/ext3"). /proc/self/mountinfo lists mount points
# with spaces as \040; the deepest one holding DIR wins, and of equal ones the last (on top).
mount_of() {
  local _ops_real _ops_point _ops_prefix _ops_rest _ops_depth=-1
  mounted=0 mount_fstype=''
  _ops_real=$(cd "$1" 2>/dev/null && pwd -P) || return 0
  [ -r /proc/self/mountinfo ] || return 0
  while read -r _ _ _ _ _ops_point _ops_rest; do
    _ops_point=${_ops_point//\\040/ } _ops_prefix=${_ops_point%/}
    case $_ops_real/ in "$_ops_prefix"/*) ;; *) continue ;; esac
    [ ${#_ops_point} -ge $_ops_depth ] || continue
    _ops_depth=${#_ops_point} mount_fstype=${_ops_rest#* - } mount_fstype=${mount_fstype%% *}
    if [ "$_ops_point" = "$_ops_real" ]; then mounted=1; else mounted=0; fi
  done < /proc/self/mountinfo
}

# add_step NAME STATE DETAIL: one more {"step","state","detail"} in $steps (a JSON list's
# items), for scripts that report what each of their steps did.
steps=''
add_step() {
  local _ops_name _ops_detail
  json_str _ops_name "$1"
  json_str _ops_detail "$3"
  steps+="${steps:+,}{\"step\":$_ops_name,\"state\":\"$2\",\"detail\":$_ops_detail}"
}
