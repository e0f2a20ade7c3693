"""The shapes a name must have before it may reach a shell, tmux or a file path."""

import re

from .runtime.contract import ENV_NAME, RUN_ID

# RUN_ID (the pod's contract): run ids name directories on the pod and on the laptop: no '/', no
# leading '.' or '-'.
# tmux session names: '.' and ':' are target syntax in tmux, so neither is allowed.
TMUX_SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
__all__ = ["ENV_NAME", "RUN_ID", "TMUX_SESSION", "CONTROL_CHARS", "POD_NAME"]
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
# Lium pod names: what `ops pod.down --name` and `lium ps` show; also written into ~/.ssh/config comments.
POD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
