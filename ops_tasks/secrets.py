"""Which values are secrets, and how to keep them out of anything printed
(docs/ARCHITECTURE.md, "Quoting, ids and secrets")."""

import os

from .runtime.contract import MASK, SECRET_NAMES
from .runtime.contract import is_secret as is_secret_name  # env names: the pod's rule, one copy

# Values this short would mask ordinary words ("1", "yes") all over the output.
_MIN_MASKED_LENGTH = 4


# Run-config keys are judged by whole words: `max_tokens` and `tokenizer` are ordinary eval flags,
# `hf_token`, `api_key`, `apikey` and `db_password` are secrets. (Env names keep the broad rule
# above: masking a value too many costs nothing, refusing an ordinary flag would.)
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pass", "credential",
                           "credentials"})
_SECRET_ENDINGS = ("apikey", "token", "secret", "password", "passwd")


def is_secret_key(name: str) -> bool:
    """True for a run-config key whose value is a secret (it belongs in the run's env)."""
    words = name.lower().split("_")
    return name.upper() in SECRET_NAMES or any(
        word in _SECRET_WORDS or word.endswith(_SECRET_ENDINGS) for word in words)


def secret_values(*envs) -> list:
    """The secret values present in the given env mappings (default: this process)."""
    envs = envs or (os.environ,)
    found = {
        value
        for env in envs
        for name, value in env.items()
        if value and len(value) >= _MIN_MASKED_LENGTH and is_secret_name(name)
    }
    # Longest first, so a secret containing another is masked whole.
    return sorted(found, key=len, reverse=True)


def redact(text: str, values=None) -> str:
    """Mask every known secret value in text: the last line of defence before printing."""
    for value in secret_values() if values is None else values:
        text = text.replace(value, MASK)
    return text
