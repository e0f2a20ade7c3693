"""ops_tasks/secrets.py's promises that mutmut (bench/mutmut_fast.py) showed no fast test held: which
values are masked, in which order, and that a caller's own list of secrets is the one applied."""

from ops_tasks.runtime.contract import MASK
from ops_tasks.secrets import redact, secret_values


def test_a_secret_inside_a_longer_secret_never_leaves_the_longer_ones_tail_visible():
    # Promise: a secret containing another is masked whole (longest first, whatever their spelling).
    env = {"API_TOKEN": "abcd", "DB_PASSWORD": "0abcd"}
    assert secret_values(env) == ["0abcd", "abcd"]
    assert redact("pw=0abcd tok=abcd", secret_values(env)) == f"pw={MASK} tok={MASK}"


def test_a_secret_of_four_characters_is_masked_and_a_shorter_one_is_not():
    # Promise: values of at least 4 characters are secrets; shorter ones would mask ordinary words.
    assert secret_values({"HF_TOKEN": "abcd"}) == ["abcd"]
    assert secret_values({"HF_TOKEN": "abc"}) == []


def test_redact_masks_the_values_it_is_given_even_when_the_environment_holds_none(monkeypatch):
    # Promise: a caller's own secrets (a project env file's) are masked, not only this process's.
    for name in [n for n in __import__("os").environ if "KEY" in n.upper() or "TOKEN" in n.upper()]:
        monkeypatch.delenv(name)
    assert redact("token=s3cr3t-value", ["s3cr3t-value"]) == f"token={MASK}"
