"""What a report's one reading of each run's results.jsonl keeps for later, in a temporary spool:
the run's per-example means by example id (for groups, the models x tasks table and comparisons,
which pool or pair runs by example), and report.html's drill-down items, each line as [run, id,
prompt, answer, reference, reward] encoded as JSON that can sit inside the page's <script>
block. Without it, each of those read every results file again.

The spool is a temporary folder: one file per reading process (the report reads many runs in
worker processes), a block per run and kind in it. It holds at most SPOOL_ITEMS drill-down items
and SPOOL_BYTES per process (what is past that is read again when it is needed), and each run's
means: a dict, or for a run of many examples its parts (example_means). Nothing in it outlives the
report (ExampleSpool is a context manager).
"""

import json
import os
import pickle
import re
import shutil
import tempfile
from typing import Optional

from .example_means import RunMeans, from_dict
from .validate import RESULTS, BadJsonLine, json_lines

# Per-example text fields, first found wins: what the model was asked, what it said, the reference.
PROMPT_FIELDS = ("prompt", "question", "input", "problem")
ANSWER_FIELDS = ("response", "completion", "output", "prediction", "model_answer")
REFERENCE_FIELDS = ("answer", "target", "expected", "ground_truth", "reference")
TEXT_LIMIT = 4000  # characters of one prompt or answer kept in the file
EXAMPLES_PER_RUN = 1000
EXAMPLES_TOTAL = 100_000  # the page stays one a browser opens at once (~6 MiB of short examples)
SPOOL_ITEMS = EXAMPLES_TOTAL  # per reading process: a page never shows more
SPOOL_BYTES = 64 << 20  # per reading process; examples of long texts beyond it are read again
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone surrogate (JSON's \ud800): no UTF-8 spelling


def _text(value) -> str:
    """A prompt or answer as text: chat messages as 'role: content' lines, other JSON as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value):
        text = "\n".join(f"{m.get('role', '')}: {_text(m['content'])}" for m in value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + " [...]"


def _first(record: dict, names) -> Optional[str]:
    for name in names:
        value = record.get(name)
        if value is not None:
            return value if type(value) is str and len(value) <= TEXT_LIMIT else _text(value)
    return None


def example_key(record: dict, number: int):
    """An example's id, as the report pools and pairs it: `id`, else `example_id`, else `index` (an
    empty one is none), else its line number. Compared as text: 1 and "1" are one example
    (frameworks spell ids either way)."""
    for name in ("id", "example_id", "index"):
        value = record.get(name)
        if value is not None and value != "":
            return str(value)
    return ("line", number)


def _example_id(record: dict, number: int) -> str:
    key = example_key(record, number)
    return key if isinstance(key, str) else f"line {number}"


def _reward(record: dict, field: str):
    value = record.get(field)
    if isinstance(value, bool):
        return float(value)
    return value if isinstance(value, (int, float)) and value == value and abs(value) != float("inf") else None


def example_item(run_id: str, number: int, record: dict, field: str) -> list:
    """[run, id, prompt, answer, reference, reward] of one results.jsonl line (an object)."""
    answer = _first(record, ANSWER_FIELDS)
    if answer is not None:  # beside a response field, "answer" is the reference
        reference = _first(record, REFERENCE_FIELDS)
    else:  # without one, "answer" is the model's answer and the reference is the others' (target...)
        answer, reference = _first(record, REFERENCE_FIELDS[:1]), _first(record, REFERENCE_FIELDS[1:])
    return [run_id, _example_id(record, number), _first(record, PROMPT_FIELDS) or "", answer or "",
            reference or "", _reward(record, field)]


def run_examples(run_id: str, path: str, field: str, limit: int):
    """example_item of each object line of a run's results.jsonl, at most limit, streamed; what
    came before a line that does not parse (the report lists the file under its errors)."""
    count = 0
    try:
        for number, record in json_lines(path, run_id):
            if count >= limit:
                return
            if isinstance(record, dict):
                count += 1
                yield example_item(run_id, number, record, field)
    except (BadJsonLine, OSError):
        return


def json_block(data) -> str:
    """JSON that no text inside it can end the <script> element it sits in, and that encodes as
    UTF-8 whatever the pod wrote (a lone surrogate stays a \\u escape)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    text = (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if _SURROGATE.search(text) else text


class RunCollector:
    """One run's examples as its results.jsonl is read (scored_lines' sink): the first
    EXAMPLES_PER_RUN object lines; kept in the spool only once the run's statistics stand."""

    __slots__ = ("run_id", "field", "items")

    def __init__(self, run_id: str, field: str):
        self.run_id, self.field, self.items = run_id, field, []

    def __call__(self, number: int, record) -> None:
        if type(record) is dict and len(self.items) < EXAMPLES_PER_RUN:
            self.items.append(example_item(self.run_id, number, record, self.field))


class ExampleSpool:
    """What the reading of each run kept, by run id, in a temporary folder: `means(run_id)` and,
    when made with drill_down, `items(run_id, limit)`; each None for a run that was not kept (read
    it again).

    Picklable (the report's worker processes get a copy): each process appends to a file of its
    own and records where each run's blocks are in `index`, which the reading returns to the parent
    (`merge`)."""

    def __init__(self, drill_down: bool = True):
        self.folder = tempfile.mkdtemp(prefix="ops-report-examples-")
        self.drill_down = drill_down
        # kind -> run id -> (file name, offset, length, count); "spilled": run id -> RunMeans in parts
        self.index = {"items": {}, "means": {}, "spilled": {}}
        self._file, self._items, self._bytes = None, 0, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._file is not None:  # this process's part (a report read in one process wrote here)
            self._file.close()
            self._file = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def __getstate__(self):
        return {"folder": self.folder, "drill_down": self.drill_down,
                "index": {"items": {}, "means": {}, "spilled": {}}, "_file": None, "_items": 0, "_bytes": 0}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def merge(self, index: dict) -> None:
        """Take in what a reading process kept (its `index`)."""
        for kind, runs in index.items():
            self.index[kind].update(runs)

    def collector(self, run_id: str, field: str) -> Optional[RunCollector]:
        """A sink for one run's drill-down items, or None (no page, or this process's share is full)."""
        if not self.drill_down or self._items >= SPOOL_ITEMS or self._bytes >= SPOOL_BYTES:
            return None
        return RunCollector(run_id, field)

    def means_collector(self) -> RunMeans:
        """Where one run's example means are gathered as its results are read (keep_means keeps them)."""
        return RunMeans(self.folder)

    def keep(self, collected: RunCollector) -> None:
        """Append one run's drill-down items (its statistics were computed from the same lines)."""
        self._append("items", collected.run_id, json_block(collected.items).encode(), len(collected.items))
        self._items += len(collected.items)

    def keep_means(self, run_id: str, collected: RunMeans) -> None:
        """Keep one run's means: spilled ones where they are (their parts' files are in this spool's
        folder), a dict in this process's file while SPOOL_BYTES allow (past it: read again)."""
        if collected.spilled:
            self.index["spilled"][run_id] = collected
        elif self._bytes < SPOOL_BYTES:  # pickle: a key is a str or ("line", n), which JSON would not give back
            means = collected.means()
            self._append("means", run_id, pickle.dumps(means, pickle.HIGHEST_PROTOCOL), len(means))

    def _append(self, kind: str, run_id: str, data: bytes, count: int) -> None:
        if self._file is None:
            # Unbuffered: a worker process ends with os._exit, which flushes no Python buffer.
            self._file = open(os.path.join(self.folder, f"part-{os.getpid()}"), "ab", buffering=0)
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        self.index[kind][run_id] = (os.path.basename(self._file.name), offset, len(data), count)
        self._bytes += len(data)

    def _block(self, kind: str, run_id: str) -> Optional[tuple]:
        where = self.index[kind].get(run_id)
        if where is None:
            return None
        name, offset, length, count = where
        with open(os.path.join(self.folder, name), "rb") as handle:
            handle.seek(offset)
            return handle.read(length), count

    def means(self, run_id: str) -> Optional[RunMeans]:
        """A run's example means, as report.example_means reads them; None when they were not kept."""
        if run_id in self.index["spilled"]:
            return self.index["spilled"][run_id]
        block = self._block("means", run_id)
        return None if block is None else from_dict(pickle.loads(block[0]))  # our own file, written above

    def items(self, run_id: str, limit: int) -> Optional[tuple]:
        """(encoded drill-down items without the list's brackets, count) of a run, at most limit;
        None when they were not kept."""
        block = self._block("items", run_id)
        if block is None:
            return None
        text, count = block[0].decode(), block[1]
        if count > limit:  # the page's last run: cut at the page's total
            text, count = json_block(json.loads(text)[:limit]), limit
        return text[1:-1], count


def examples_of(rows: list, run_dirs: dict, field: str, spool: Optional[ExampleSpool] = None):
    """The drill-down's encoded items (text, count) of the rows the report counts, within
    EXAMPLES_TOTAL, in row order: from the spool where it has them, else read again."""
    left = EXAMPLES_TOTAL
    for row in rows:
        if left <= 0:
            return
        # A row with per-example statistics (n) had its results.jsonl read: the others have none to show.
        if row.get("n") is None or row["run_id"] not in run_dirs:
            continue
        spooled = spool.items(row["run_id"], min(EXAMPLES_PER_RUN, left)) if spool is not None else None
        if spooled is None:
            items = list(run_examples(row["run_id"], os.path.join(run_dirs[row["run_id"]], RESULTS), field,
                                      min(EXAMPLES_PER_RUN, left)))
            spooled = (json_block(items)[1:-1], len(items))
        if spooled[1]:
            left -= spooled[1]
            yield spooled
