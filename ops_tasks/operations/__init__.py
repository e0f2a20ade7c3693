"""Operations: plain functions over a target, returning plain dicts; they never print."""
