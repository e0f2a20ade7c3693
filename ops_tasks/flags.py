"""Numeric flags, parsed here rather than by Invoke.

A flag with a numeric default makes Invoke convert the value itself and die with a traceback on
`--timeout soon`; these flags default to None, arrive as text, and a bad one is one line, exit 2.
"""

import math
from typing import Optional

from .errors import ConfigError

MAX_SECONDS = 10_000_000  # about 115 days


def seconds_flag(flag: str, value, default: Optional[float], allow_zero: bool = False) -> Optional[float]:
    """A duration in seconds (default when the flag was not given)."""
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{flag} must be a number of seconds, got {value!r}") from None
    # nan and inf parse as floats; scripts take whole milliseconds (bash arithmetic is 64-bit).
    if not math.isfinite(number) or number > MAX_SECONDS:
        raise ConfigError(f"{flag} must be a finite number of seconds, at most {MAX_SECONDS}, got {value!r}")
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
