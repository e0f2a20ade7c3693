"""Text for people, and the one rule for what a string from a pod may do there: nothing.

Model ids, tasks, metric names, summary keys, run directory names, log lines, tmux sessions and
hostnames are the pod's data (issue 22). Shown, each stays inert, by one rule per kind of output:
- a terminal (`inert`, applied by output.emit to every line any task prints): no control
  character reaches it: ESC (every escape sequence: OSC 52 sets the clipboard, OSC 0 the title,
  OSC 8 hides a link, CSI 2J clears the screen), BEL, the C1 controls (0x9b is CSI, 0x9d OSC on
  terminals that take 8-bit controls), DEL, the bidirectional overrides (they reorder what is
  shown) and lone surrogates (bytes that were not UTF-8, which a C locale writes back raw). Each
  is shown as a visible escape (`\\x1b`); newline and tab, which lay text out, stay;
- a text table (`tabulate`, the wrapper every task draws with): a cell's newline, CR and tab
  too, so a value keeps to its row and its column;
- Markdown (`markdown_cell`, `markdown_text`: report.md): a value on one line, inside its cell,
  as text: no heading, image, link, code span or raw HTML can start from it.
`--json` needs none of it: json.dumps escapes every control and non-ASCII character.

tabulate is imported at the first table drawn: importing it costs about 35 ms (it reads its own
package metadata); `ops --list`, `--help`, `--json` and `--dry-run` draw no table, and every
task's start-up would pay it otherwise.
"""

import re

MIN_PADDING = 2  # tabulate's: a column is at least its header and two spaces wide

# What acts on a terminal or hides what is shown (see above); tab (\x09) and newline (\x0a) are not here.
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_ACTING = re.compile(f"[{_CONTROLS}]")
_ACTING_IN_CELL = re.compile(f"[\t\n{_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def inert(text: str) -> str:
    """text that can be written to a terminal: every control character shown as a visible escape
    (ESC as `\\x1b`, CSI 0x9b as `\\x9b`, CR as `\\r`); newlines and tabs kept."""
    return _ACTING.sub(_visible, text) if _ACTING.search(text) else text


def one_line(text: str) -> str:
    """inert, and on one line: line breaks and tabs too as visible escapes (a table cell; an error
    line that names what a pod sent)."""
    return _ACTING_IN_CELL.sub(_visible, text) if _ACTING_IN_CELL.search(text) else text


def _cell(value):
    """A table cell's value on one line."""
    return one_line(value) if isinstance(value, str) else value


def tabulate(rows, *args, **kwargs) -> str:
    """tabulate.tabulate(rows, ...), the same arguments, every text cell and header made inert
    and kept on its row (a newline in a pod's value would start a row of its own)."""
    from tabulate import tabulate as draw

    if isinstance(rows, dict):  # columns by name
        rows = {_cell(name): [_cell(v) for v in column] for name, column in rows.items()}
    else:
        rows = [{_cell(k): _cell(v) for k, v in row.items()} if isinstance(row, dict) else [_cell(v) for v in row]
                for row in rows]
    if args and isinstance(args[0], (list, tuple)):
        args = ([_cell(h) for h in args[0]], *args[1:])
    if isinstance(kwargs.get("headers"), (list, tuple)):
        kwargs["headers"] = [_cell(h) for h in kwargs["headers"]]
    return draw(rows, *args, **kwargs)


# What in a value would act as Markdown: a line break (a new row, heading or list item; str.splitlines'
# separators), \ (it would undo an escape), ` (a code span), | (a cell), [ ] (a link; with ! an image
# fetched from anywhere), < (raw HTML, an autolink), & starting an entity, and the controls.
_MARKDOWN_ACTING = re.compile(f"[\\\\`|\\[\\]<&\u2028\u2029\n{_CONTROLS}]")
_BACKSLASHED = re.compile(r"[\\`|\[\]]")
_ENTITY = re.compile(r"&(?=#[0-9]{1,7};|#[xX][0-9a-fA-F]{1,6};|[A-Za-z][A-Za-z0-9]{1,31};)")


def markdown_text(text: str) -> str:
    """A value as Markdown text that shows as itself and does nothing: its lines joined by spaces,
    \\ ` | [ ] escaped by a backslash (CommonMark's escape for any ASCII punctuation, GitHub's for a
    pipe in a table), < written &lt; (a backslash before < is not honoured by every renderer), an
    entity's & as &amp; (shown as written), and every control as a visible escape (`inert`)."""
    if not _MARKDOWN_ACTING.search(text):
        return text
    text = " ".join(text.splitlines())
    text = _ENTITY.sub("&amp;", text)
    text = _BACKSLASHED.sub(r"\\\g<0>", text).replace("<", "&lt;")
    return inert(text)


def markdown_cell(text: str) -> str:
    """A table cell's text that cannot break its table or act (markdown_text), without the
    spaces around it."""
    return markdown_text(text).strip()


def markdown_table(rows, headers) -> str:
    """A GitHub Markdown table of text cells laid out as tabulate's "github" format does (left
    aligned, each column as wide as its widest cell and at least its header + 2), every cell made
    safe by markdown_cell. Drawn here, not by tabulate: on a 10,000-run report its generic
    per-cell path was a third of the report's time, for a layout this simple."""
    headers = [markdown_cell(str(h)) for h in headers]
    body = [[markdown_cell(cell) for cell in row] for row in rows]
    widths = [len(h) + MIN_PADDING for h in headers]
    for row in body:
        for index, cell in enumerate(row):
            if len(cell) > widths[index]:
                widths[index] = len(cell)

    def line(cells) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), rule, *map(line, body)])
