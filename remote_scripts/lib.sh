# ---- lib.sh: helpers shared by every remote script (bash 4+, coreutils, awk).
set -u
export LC_ALL=C

# json_str TEXT: TEXT as a JSON string literal.
json_str() {
  local s=${1-}
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\r'/\\r}
  s=${s//$'\t'/\\t}
  case $s in *[[:cntrl:]]*) s=$(printf '%s' "$s" | tr -d '\000-\037') ;; esac
  printf '"%s"' "$s"
}

# json_num TEXT: TEXT if it is a number, else null.
json_num() {
  if [[ ${1-} =~ ^-?[0-9]+(\.[0-9]+)?$ ]]; then printf '%s' "$1"; else printf 'null'; fi
}

# json_bool FLAG: true for 1, else false.
json_bool() {
  if [ "${1-}" = 1 ]; then printf 'true'; else printf 'false'; fi
}

# json_strs ITEM...: a JSON array of strings.
json_strs() {
  local item sep=''
  printf '['
  for item in "$@"; do printf '%s' "$sep"; json_str "$item"; sep=','; done
  printf ']'
}

# trim TEXT: TEXT without leading and trailing blanks.
trim() {
  local s=${1-}
  s=${s#"${s%%[![:space:]]*}"}
  printf '%s' "${s%"${s##*[![:space:]]}"}"
}

# tmux_cmd ARGS...: tmux on the profile's socket (tmux -L), or the default one.
tmux_cmd() {
  if [ -n "${tmux_socket-}" ]; then tmux -L "$tmux_socket" "$@"; else tmux "$@"; fi
}
