"""`Host <alias>` blocks in ~/.ssh/config: written, replaced and removed without touching the rest.

The file is treated as text made of a preamble and blocks, each block running from a `Host` or
`Match` line to the next one. Only the one block of the alias changes: every other byte of the
file (comments, spacing, line endings, other entries) stays as it was. Writes are atomic (a temp
file in the same folder, then os.replace) and leave the file mode 0600; a config that is a
symlink (dotfiles) is written through, so the link stays a link.

Values reach the file only after a check: one line, no control characters, no quotes, so that a
value from an API (a host name, a user) can never add an option of its own.
"""

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from . import files
from .errors import ConfigError
from .names import CONTROL_CHARS

# An alias pod.up may write: a plain name, no wildcard or negation (those are patterns).
ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEYWORD = re.compile(r"^\s*([A-Za-z]+)(?:\s*=\s*|\s+)(.*?)\s*$")


def default_path() -> Path:
    return Path("~/.ssh/config").expanduser()


@dataclass
class Block:
    """Lines [start, end) of the file: a Host/Match line up to its last option line.

    Blank lines and comments after the last option belong to no block: they stay where they are
    when a block is replaced or removed (they often introduce the next block).
    """

    kind: str  # "host" or "match"
    patterns: Tuple[str, ...]
    start: int
    end: int


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS.match(alias):
        raise ConfigError(f"--alias {alias!r}: an SSH alias is letters, digits, '.', '_' and '-' "
                          f"(at most 64, starting with a letter or digit)")
    return alias


def _value(key: str, value) -> str:
    """One option value as ssh_config spells it; refuses anything that could break out of it."""
    text = str(value)
    if not text or CONTROL_CHARS.search(text) or '"' in text or text != text.strip():
        raise ConfigError(f"refusing to write {key} {text!r} into ~/.ssh/config: not a single plain value")
    return f'"{text}"' if re.search(r"\s", text) else text


def _split_lines(text: str) -> List[str]:
    return text.splitlines(keepends=True)


def _content(line: str) -> Optional[Tuple[str, str]]:
    """(keyword lower-cased, arguments) of an option line; None for blank lines and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    match = _KEYWORD.match(stripped)
    if not match:
        return (stripped.lower(), "")
    return match.group(1).lower(), match.group(2)


def parse_blocks(text: str) -> List[Block]:
    lines = _split_lines(text)
    blocks: List[Block] = []
    current = None
    for index, line in enumerate(lines):
        content = _content(line)
        if content is None:
            continue
        keyword, args = content
        if keyword in ("host", "match"):
            if current is not None:
                blocks.append(current)
            current = Block(keyword, tuple(args.split()) if keyword == "host" else (args,), index, index + 1)
        elif current is not None:
            current.end = index + 1
    if current is not None:
        blocks.append(current)
    return blocks


def _matches(block: Block, alias: str) -> bool:
    """Would ssh apply this block to alias? (Match blocks: assume they may.)"""
    if block.kind == "match":
        return True
    positive = [p for p in block.patterns if not p.startswith("!")]
    negated = [p[1:] for p in block.patterns if p.startswith("!")]
    return any(fnmatch.fnmatchcase(alias, p) for p in positive) and not any(
        fnmatch.fnmatchcase(alias, p) for p in negated)


def _own(block: Block, alias: str) -> bool:
    """The alias's own block: `Host <alias>` and nothing else on the line."""
    return block.kind == "host" and block.patterns == (alias,)


def read_text(path: Path) -> str:
    try:
        # surrogateescape: whatever bytes the file holds are written back as they were.
        return path.read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return ""


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def write_atomic(path: Path, text: str) -> None:
    """Replace the config at path with text atomically, mode 0600, synced (through a symlink)."""
    folder = _real(Path(path)).parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)  # a new ~/.ssh is private, as ssh wants it
    files.write_atomic(path, text, mode=0o600, sync=True)
    os.chmod(_real(Path(path)), 0o600)  # an existing file keeps no looser mode than ssh accepts


def render_block(alias: str, options: Sequence[Tuple[str, object]], comment: Optional[str] = None,
                 newline: str = "\n") -> str:
    check_alias(alias)
    lines = [f"Host {alias}"]
    if comment:
        if CONTROL_CHARS.search(comment):
            raise ConfigError(f"refusing to write the comment {comment!r} into ~/.ssh/config")
        lines.append(f"  # {comment}")
    for key, value in options:
        lines.append(f"  {key} {_value(key, value)}")
    return newline.join(lines) + newline


def _newline_of(lines: List[str]) -> str:
    return "\r\n" if any(line.endswith("\r\n") for line in lines) else "\n"


def _blank(line: str) -> bool:
    return not line.strip()


def with_host(text: str, alias: str, options: Sequence[Tuple[str, object]], comment: Optional[str] = None) -> str:
    """text with the alias's block set to these options (replaced in place, or added)."""
    lines = _split_lines(text)
    block_text = render_block(alias, options, comment, _newline_of(lines))
    blocks = parse_blocks(text)
    own = [b for b in blocks if _own(b, alias)]
    if own:
        first = own[0]
        text = "".join(lines[:first.start] + [block_text] + lines[first.end:])
        # Duplicates of the same alias (later blocks) would never apply: ssh takes the first value.
        return _without(text, alias, skip_first=True)
    newline = _newline_of(lines)
    shadowing = next((b for b in blocks if _matches(b, alias)), None)
    if shadowing is not None:
        # ssh takes the first value it finds: our block goes before the first one that applies
        # to the alias (a `Host *` with a User, say), or its options would lose.
        return "".join(lines[:shadowing.start] + [block_text, newline] + lines[shadowing.start:])
    if not text:
        return block_text
    # Always one newline and one blank line, whatever the file ends with: removing the block
    # then takes exactly these away again (see _without), so add + remove gives the file back.
    if not text.endswith("\n"):
        text += newline
    return text + newline + block_text


def _without(text: str, alias: str, skip_first: bool = False) -> str:
    lines = _split_lines(text)
    own = [b for b in parse_blocks(text) if _own(b, alias)]
    if skip_first:
        own = own[1:]
    for block in reversed(own):
        start, end = block.start, block.end
        if end < len(lines) and _blank(lines[end]):
            end += 1  # the blank line that separated it from what follows
        elif end >= len(lines) and start > 0 and _blank(lines[start - 1]):
            start -= 1  # the last block: the blank line that separated it from what precedes
        del lines[start:end]
    return "".join(lines)


def without_host(text: str, alias: str) -> str:
    """text without the alias's own block(s); comments and blank lines around others kept."""
    return _without(text, alias)


def set_host(path: Path, alias: str, options: Sequence[Tuple[str, object]], comment: Optional[str] = None) -> bool:
    """Write the alias's block into the config at path; True when the file changed."""
    path = Path(path)
    before = read_text(path)
    after = with_host(before, alias, options, comment)
    mode_ok = path.exists() and (os.stat(path).st_mode & 0o777) == 0o600
    if after == before and mode_ok:
        return False
    write_atomic(path, after)
    return after != before


def remove_host(path: Path, alias: str) -> bool:
    """Remove the alias's block from the config at path; True when there was one."""
    path = Path(path)
    before = read_text(path)
    after = without_host(before, alias)
    if after == before:
        return False
    write_atomic(path, after)
    return True


def host_blocks(text: str) -> List[dict]:
    """Every single-alias `Host` block: {"alias", "options" (keyword -> value), "comments"}."""
    lines = _split_lines(text)
    found = []
    for block in parse_blocks(text):
        if block.kind != "host" or len(block.patterns) != 1:
            continue
        options, comments = {}, []
        for line in lines[block.start + 1:block.end]:
            stripped = line.strip()
            if stripped.startswith("#"):
                comments.append(stripped.lstrip("#").strip())
                continue
            content = _content(line)
            if content is not None:
                options.setdefault(content[0], content[1].strip('"'))
        found.append({"alias": block.patterns[0], "options": options, "comments": comments})
    return found


def find_host(path: Path, alias: str) -> Optional[dict]:
    """The alias's own block ({"alias", "options", "comments"}), or None."""
    return next((b for b in host_blocks(read_text(Path(path))) if b["alias"] == alias), None)


# ---------------------------------------------------------------- the blocks pod.up writes

# Written into the Host block of each pod pod.up rents, and read back to find that block again
# (pod.ps, pod.down): a block without it is the user's own, never replaced nor removed.
POD_MARKER = "ops pod.up: Lium pod"


def _pod_marks(block: dict) -> list:
    """(pod name, pod id) of each marker comment in a block."""
    marks = []
    for comment in block["comments"]:
        if comment.startswith(POD_MARKER):
            words = comment[len(POD_MARKER):].split()
            marks.append((words[0] if words else None, words[1].strip("()") if len(words) > 1 else None))
    return marks


def set_pod_host(path: Path, alias: str, options: Sequence[Tuple[str, object]], name: str, pod_id: str) -> bool:
    """Write the alias's block for a rented pod, marked as pod.up's; True when the file changed."""
    return set_host(path, alias, options, comment=f"{POD_MARKER} {name} ({pod_id})")


def pod_aliases(path: Path, pod_id: Optional[str] = None, name: Optional[str] = None) -> List[str]:
    """Aliases whose block pod.up wrote for this pod (by id, else by name)."""
    return [block["alias"] for block in host_blocks(read_text(Path(path)))
            for marked_name, marked_id in _pod_marks(block)
            if (pod_id and marked_id == pod_id) or (name and marked_name == name)]


def pod_up_aliases(path: Path) -> List[str]:
    """Every alias whose block pod.up wrote (what `--host` completes with)."""
    return [block["alias"] for block in host_blocks(read_text(Path(path))) if _pod_marks(block)]


def written_by_pod_up(path: Path, alias: str) -> bool:
    block = find_host(path, alias)
    return block is not None and bool(_pod_marks(block))


def refuse_foreign_block(path: Path, alias: str) -> None:
    """A `Host <alias>` block of the user's own is never replaced: checked before anything is rented."""
    if find_host(path, alias) is not None and not written_by_pod_up(path, alias):
        raise ConfigError(f"{path} already has a Host {alias} block that pod.up did not write: "
                          f"pass --alias with another name, or remove that block yourself")


def forget_pod_hosts(path: Path, aliases: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Remove the blocks pod.up wrote for these aliases: (removed, kept as the user's own)."""
    ours = [alias for alias in aliases if written_by_pod_up(path, alias)]
    removed = [alias for alias in ours if remove_host(path, alias)]
    return removed, sorted(set(aliases) - set(ours))
