# pod_sync.sh: the repo on the pod at the wanted commit: clone if missing, fetch, check out a
# branch, a pull request or a ref, pull --ff-only; then, if asked, an install step. A repo that
# pod.sync --workdir filled (workdir=1) has no git step, only the install; once git has brought
# the repo to a commit, the record of an earlier workdir sync no longer speaks for it: removed.
# inputs: remote_repo, repo_url, branch, pr, ref, install, volume, workdir, workdir_records

# git_step NAME COMMAND...: run a git command, record it; false when it failed.
git_step() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1 </dev/null); then add_step "$name" ok "${out##*$'\n'}"; return 0; fi
  add_step "$name" failed "${out##*$'\n'}"
  return 1
}

finish() {
  local commit='' branch='' dirty=false commit_json branch_json
  if [ -d "$remote_repo/.git" ]; then
    commit=$(git -C "$remote_repo" rev-parse HEAD 2>/dev/null)
    branch=$(git -C "$remote_repo" rev-parse --abbrev-ref HEAD 2>/dev/null)
    [ -n "$(git -C "$remote_repo" status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=true
  fi
  json_str commit_json "$commit"
  json_str branch_json "$branch"
  printf '{"steps":[%s],"commit":%s,"branch":%s,"dirty":%s}\n' "$steps" "$commit_json" "$branch_json" "$dirty"
}

# git_main: the git steps; false when one failed.
git_main() {
  if [ ! -d "$remote_repo/.git" ]; then
    if [ -z "$repo_url" ]; then
      add_step clone failed "$remote_repo is not a git checkout: pass --repo-url to clone it"
      return 1
    fi
    mkdir -p "${remote_repo%/*}"
    git_step clone git clone --quiet -- "$repo_url" "$remote_repo" || return 1
  else
    add_step clone skipped "$remote_repo exists"
  fi
  git_step fetch git -C "$remote_repo" fetch --quiet --prune origin || return 1
  if [ -n "$pr" ]; then
    # Into FETCH_HEAD, then the local branch reset to it: a checked-out branch cannot be fetched into.
    git_step fetch-pr git -C "$remote_repo" fetch --quiet origin "pull/$pr/head" || return 1
    git_step checkout git -C "$remote_repo" checkout --quiet -B "ops-pr-$pr" FETCH_HEAD || return 1
  elif [ -n "$ref" ]; then
    git_step checkout git -C "$remote_repo" checkout --quiet --detach "$ref" || return 1
  else
    # `checkout NAME --`: a branch only; a file of that name is never restored over local edits.
    if [ -n "$branch" ]; then git_step checkout git -C "$remote_repo" checkout --quiet "$branch" -- || return 1; fi
    if git -C "$remote_repo" rev-parse --abbrev-ref --symbolic-full-name '@{u}' >/dev/null 2>&1; then
      git_step pull git -C "$remote_repo" pull --quiet --ff-only || return 1
    else
      add_step pull skipped "no upstream branch to pull from"
    fi
  fi
  local record
  for record in "${workdir_records[@]}"; do rm -f -- "$remote_repo/$record"; done  # git's tree now
}

install_step() {
  # Package caches on the pod's own disk (the volume is slower for them); models on the volume.
  local out code
  mkdir -p "$HOME/.ops"
  out=$(cd "$remote_repo" && UV_CACHE_DIR=$HOME/.cache/uv PIP_CACHE_DIR=$HOME/.cache/pip \
    HF_HOME=${HF_HOME:-$volume/hf} bash -c "$install" 2>&1 </dev/null); code=$?
  printf '%s\n' "$out" > "$HOME/.ops/install.log"
  if [ $code = 0 ]; then add_step install ok "done (log: ~/.ops/install.log)"
  else add_step install failed "exit $code: ${out##*$'\n'} (log: ~/.ops/install.log)"; fi
}

sync_main() {
  export GIT_TERMINAL_PROMPT=0  # no one is there to type a password: fail instead of hanging
  if [ -z "$workdir" ]; then git_main || return 0; fi
  if [ -n "$install" ]; then install_step; fi
}

sync_main; finish
