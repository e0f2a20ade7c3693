"""Numeric flags, parsed here rather than by Invoke.

A flag with a numeric default makes Invoke convert the value itself and die with a traceback on
`--timeout soon`; these flags default to None, arrive as text, and a bad one is one line, exit 2.
"""

from typing import Optional

from .errors import ConfigError


def seconds_flag(flag: str, value, default: Optional[float], allow_zero: bool = False) -> Optional[float]:
    """A duration in seconds (default when the flag was not given)."""
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{flag} must be a number of seconds, got {value!r}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"{flag} must be {'zero or ' if allow_zero else ''}positive, got {value!r}")
    return number


def count_flag(flag: str, value, default: int, minimum: int = 1) -> int:
    """A whole number of lines, slots, ... (default when the flag was not given)."""
    if value is None:
        return default
    try:
        number = int(str(value), 10)
    except ValueError:
        raise ConfigError(f"{flag} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {number}")
    return number
