"""Text tables for people: tabulate (imported at the first table drawn), and the report's
Markdown tables, drawn here.

Importing tabulate costs about 35 ms (it reads its own package metadata); `ops --list`, `--help`,
`--json` and `--dry-run` draw no table, and every task's start-up would pay it otherwise.
"""

MIN_PADDING = 2  # tabulate's: a column is at least its header and two spaces wide


def tabulate(rows, *args, **kwargs) -> str:
    """tabulate.tabulate(rows, ...), the same arguments."""
    from tabulate import tabulate as draw

    return draw(rows, *args, **kwargs)


def markdown_cell(text: str) -> str:
    """A cell's text that cannot break its table: cells come from the pod, and a `|` or a line
    break in one would end the cell or the row (GitHub's escape for a pipe is a backslash)."""
    if "|" in text or "\n" in text or "\r" in text:
        text = " ".join(text.replace("|", "\\|").splitlines())
    return text.strip()


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
