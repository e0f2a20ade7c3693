# ---- added by ops-tasks pod.wandb (the original is kept beside this file as .bak.*).
# Exporting WANDB_API_KEY is not enough for non-interactive sessions (tmux, detached runs):
# W&B reads ~/.netrc there, so this also writes the api.wandb.ai entry of ~/.netrc (mode 0600),
# replacing only that entry: other machines stay as they were.
export WANDB_API_KEY
python3 - <<'PY'
import os, re
key = os.environ["WANDB_API_KEY"]
path = os.path.expanduser("~/.netrc")
text = open(path).read() if os.path.exists(path) else ""
text = re.sub(r"(?s)(^|\s)machine\s+api\.wandb\.ai\s.*?(?=\smachine\s|\sdefault\s|\Z)", r"\1", text).strip()
fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as handle:
    handle.write((text + "\n" if text else "") + "machine api.wandb.ai\n  login user\n  password " + key + "\n")
os.replace(path + ".tmp", path)
os.chmod(path, 0o600)
PY
