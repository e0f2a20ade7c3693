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


# ---------------------------------------------------------------- reading it as ssh does: Include

# OpenSSH's READCONF_MAX_DEPTH: an Include nested deeper (a file including itself, say) makes
# ssh refuse the whole configuration ("Too many recursive configuration includes").
MAX_INCLUDE_DEPTH = 16
SYSTEM_DIR = Path("/etc/ssh")


@dataclass(frozen=True)
class Entry:
    """One line of the configuration as ssh reads it, Include followed.

    outer: the Host/Match lines ((kind, arguments)) of the blocks whose Include brought this
    line's file in, outermost first: ssh applies the line only where all of them apply.
    block: the Host/Match line of the line's own block in its file (None: the file's top).
    kind: "host" or "match" for a block's own line, "reopen" where the block an Include sat in
    goes on after the included files, else "option" (text: the line itself).
    """

    kind: str
    outer: Tuple[Tuple[str, str], ...]
    block: Optional[Tuple[str, str]]
    text: str = ""


def _words(args: str) -> List[str]:
    import shlex

    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def include_paths(args: str, user: bool = True) -> List[Path]:
    """The files one `Include` line names, as ssh_config(5) says: `~` expanded (user configs),
    a relative path taken in ~/.ssh (user configs) or /etc/ssh (the system one), each glob
    expanded in lexical order. A pattern matching nothing names nothing (ssh is fine with it)."""
    import glob

    found = []
    for word in _words(args):
        word = os.path.expanduser(word) if user else word
        if not os.path.isabs(word):
            word = os.path.join(os.path.expanduser("~/.ssh") if user else str(SYSTEM_DIR), word)
        found += [Path(p) for p in sorted(glob.glob(word)) if os.path.isfile(p)]
    return found


def entries(path: Path, user: bool = True) -> List[Entry]:
    """Every line of the config at path as ssh reads it (see Entry); a missing file has none.

    ConfigError for Includes nested deeper than ssh allows (a loop): ssh refuses the config too."""
    found: List[Entry] = []
    _read(Path(path), user, (), 0, found)
    return found


def _read(path: Path, user: bool, outer: tuple, depth: int, found: List[Entry]) -> None:
    block = None
    found.append(Entry("reopen", outer, None))
    for number, line in enumerate(_split_lines(read_text(path)), 1):
        content = _content(line)
        if content is None:
            continue
        keyword, args = content
        if keyword in ("host", "match"):
            block = (keyword, args)
            found.append(Entry(keyword, outer, block))
        elif keyword == "include":
            if depth >= MAX_INCLUDE_DEPTH:
                raise ConfigError(f"{path} line {number}: Include nested more than {MAX_INCLUDE_DEPTH} deep "
                                  f"(a file that includes itself?); ssh refuses this config as well")
            inner = outer + ((block,) if block else ())
            for included in include_paths(args, user):
                _read(included, user, inner, depth + 1, found)
            found.append(Entry("reopen", outer, block))
        else:
            found.append(Entry("option", outer, block, line.strip()))


def _host_patterns(args: str) -> Tuple[List[str], List[str]]:
    patterns = _words(args)
    return [p for p in patterns if not p.startswith("!")], [p[1:] for p in patterns if p.startswith("!")]


def _host_applies(args: str, alias: str, catch_all: bool = True) -> bool:
    positive, negated = _host_patterns(args)
    if not catch_all:
        positive = [p for p in positive if p != "*"]
    return any(fnmatch.fnmatchcase(alias, p) for p in positive) and not any(
        fnmatch.fnmatchcase(alias, p) for p in negated)


def defines(alias: str, path: Path, user: bool = True) -> bool:
    """True when a Host line of the config at path, or of a file it includes, names alias, and
    every block an Include of that file sits in applies to it (a Match block: unless its
    `originalhost` rules the alias out).

    The catch-all `Host *` does not count: it matches anything, known or not."""
    for entry in entries(path, user):
        if entry.kind != "host" or not _host_applies(entry.block[1], alias, catch_all=False):
            continue
        if all(_host_applies(args, alias) if kind == "host" else _match_may_apply(args, alias)
               for kind, args in entry.outer):
            return True
    return False


def _match_may_apply(args: str, alias: str) -> bool:
    """False only when an `originalhost` criterion of a Match line rules the alias out; the
    other criteria (host, user, exec...) depend on more than the alias: assumed to apply."""
    words = _words(args)
    while words:
        criterion = words.pop(0)
        negated, name = criterion.startswith("!"), criterion.lstrip("!").lower()
        if name in ("all", "canonical", "final") or not words:
            continue
        patterns = words.pop(0)
        if name == "originalhost" and _host_applies(patterns.replace(",", " "), alias) == negated:
            return False
    return True


def _criteria(block: Tuple[str, str]) -> List[str]:
    """A Host/Match line as `Match` criteria that can be joined with others (all of them apply)."""
    kind, args = block
    if kind == "host":
        return ["originalhost " + ",".join(_words(args))]
    return [] if args.strip().lower() == "all" else [args]


def _header(entry: Entry) -> str:
    if not entry.outer:
        if entry.block is None:
            return "Host *"
        return f"{'Host' if entry.block[0] == 'host' else 'Match'} {entry.block[1]}"
    criteria = [c for block in entry.outer + ((entry.block,) if entry.block else ()) for c in _criteria(block)]
    return "Match " + " ".join(criteria) if criteria else "Host *"


def flattened(path: Path, user: bool = True) -> str:
    """The config at path with every Include replaced by what it includes, in one text that a
    reader without Include (paramiko, so fabric) takes the way ssh takes the files: a block
    brought in by an Include inside a Host/Match block becomes a `Match` of both conditions,
    and the block the Include sat in is opened again after it."""
    lines = []
    for entry in entries(path, user):
        lines.append(entry.text if entry.kind == "option" else _header(entry))
    return "\n".join(lines) + "\n"


def paramiko_config(paths: Sequence[Tuple[Path, bool]]):
    """One paramiko SSHConfig of these configs ((path, is a user config), first wins), Include followed."""
    import io

    import paramiko

    config = paramiko.SSHConfig()
    for path, user in paths:
        if Path(path).is_file():
            config.parse(io.StringIO(flattened(Path(path), user)))
    return config


def load_into(fabric_config) -> None:
    """What fabric.Config.load_ssh_config does, but reading the files as ssh does (Include):
    `ssh_config_path` when set (a user config, as `ssh -F`), else ~/.ssh/config then the system's.
    The rules replace any fabric read itself (those lack what the Includes bring)."""
    if fabric_config._given_explicit_object:
        return  # given its SSHConfig object: fabric reads no file either
    runtime = fabric_config.ssh_config_path or getattr(fabric_config, "_runtime_ssh_path", None)
    if runtime:
        runtime = Path(os.path.expanduser(runtime))
        if not runtime.exists():
            raise FileNotFoundError(2, "No such file or directory", str(runtime))
        paths = [(runtime, True)]
    elif fabric_config.load_ssh_configs:
        paths = [(Path(os.path.expanduser(fabric_config._user_ssh_path)), True),
                 (Path(os.path.expanduser(fabric_config._system_ssh_path)), False)]
    else:
        paths = []
    fabric_config.base_ssh_config._config[:] = paramiko_config(paths)._config
